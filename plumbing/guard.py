"""The guard around a command that writes a run's folder (train.py, and benchmarks/seeds.py for each seed).

One process at a time in a folder (its .lock); a new run never writes where another run's files are, unless told to
(--overwrite), and then the old run goes only when the new one saves an epoch; each expected failure ends as one
`error:` line; Ctrl-C or SIGTERM ends as the command that continues, and a folder left empty is removed.
"""
import contextlib
import os
import shlex
import shutil
import signal
import sys

from plumbing.runs import Run, make_folder, refuse_to_replace


def lock(folder, wait=False):
    """Hold folder/.lock, the folder made if need be, while this process lives (returns its descriptor); ValueError
    if another holds it, or with wait, wait for it. The OS releases a lock however its process ends: a kill too."""
    make_folder(folder)
    path = os.path.join(folder, ".lock")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise OSError(f"cannot write to {folder}: {e.strerror}") from None
        try:
            if os.name == "nt":
                import msvcrt
                msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)  # byte 0, the same for everyone
            else:
                import fcntl
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            holder = os.read(fd, 100).decode(errors="replace") or "another process"
            os.close(fd)
            if wait and os.name == "nt":  # msvcrt's LK_LOCK gives up after 10 s: wait on
                continue
            raise ValueError(f"{folder} is in use by another train.py ({holder}): wait for it, or choose another "
                             "--out-dir") from None
        with contextlib.suppress(OSError):  # the file locked is still the folder's: its holder, leaving the folder
            if os.path.samestat(os.fstat(fd), os.stat(path)):  # empty, removes it, and the next one makes it anew
                break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    return fd


@contextlib.contextmanager
def locked(folder):
    """folder/.lock held for the length of a `with`, waiting for whoever holds it."""
    fd = lock(folder, wait=True)
    try:
        yield
    finally:
        os.close(fd)


def stop(signum, frame):
    """The handler of Ctrl-C and SIGTERM: the first one ends the run; more, a key held down, find the way out open."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(128 + signum)  # as Ctrl-C, with the shell's exit code for the signal


def interrupted(e, message):
    """The way out of train.py and seeds.py after Ctrl-C or SIGTERM (e): every later one ignored to the exit, so
    that a key held down cannot break it; the message; the shell's exit code for the signal."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    print(f"\ninterrupted. {message}", file=sys.stderr)
    sys.exit(e.args[0] if e.args else 130)


@contextlib.contextmanager
def open_run(args, given, recipe, command=None, held=None):
    """The Run in args.out_dir, its folder made if need be and locked (held: its lock, taken by the caller), for the
    length of a `with`. Each expected failure ends as one `error:` line; Ctrl-C or SIGTERM as the command that
    continues (command, if given)."""
    resume = f"python train.py --resume --out-dir {shlex.quote(args.out_dir)}"  # as it can be pasted
    where = (f" --data-dir {shlex.quote(args.data_dir)}" if args.data_dir != "data" else "") + (
        f" --device {shlex.quote(args.device)}" if args.device else "")
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    created, fd, run = not os.path.isdir(args.out_dir), None, None
    try:
        fd = lock(args.out_dir) if held is None else held
        if not (args.resume or args.overwrite):
            refuse_to_replace(args.out_dir, f"continue its run with {resume}{where}, replace it with --overwrite, or "
                              "choose another --out-dir")
        run = Run(args, given, recipe)
        yield run
    except (OSError, ValueError, FloatingPointError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        previous = {}  # the handlers stay ignoring to the exit
        if command or (run and run.saved and not args.dry_run):
            interrupted(e, f"Continue with: {command or f'{resume} --epochs {args.epochs}{where}'}")
        said = "the run there is as it was" if args.overwrite and not args.dry_run else "nothing to resume"
        interrupted(e, f"No epoch of this run was saved: {said}.")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if fd is not None:
            with contextlib.suppress(OSError):
                if args.dry_run:
                    shutil.rmtree(args.out_dir)
                elif os.listdir(args.out_dir) == [".lock"]:  # nothing saved: nothing left behind
                    os.remove(os.path.join(args.out_dir, ".lock"))
                    if created:
                        os.rmdir(args.out_dir)
            if held is None:
                os.close(fd)
