"""The guard around a command that writes into a folder (train.py, evaluate.py --out-dir, benchmarks/seeds.py).

One process at a time in a folder (its .lock); a new run never writes where another run's files are, unless told to
(--overwrite), and then the old run goes only when the new one saves an epoch; each expected failure ends as one
`error:` line; Ctrl-C or SIGTERM ends as the command that continues, and a folder left empty is removed.
"""
import contextlib
import os
import pathlib
import shlex
import shutil
import signal
import sys
import time

from plumbing.runs import STUDY_FILES, Run, refuse_to_replace


@contextlib.contextmanager
def held(folder, wait=False):
    """folder/.lock held for the length of a `with` (yields its descriptor), the folder made if need be;
    BlockingIOError if another process holds it, or with wait, wait for it. The OS releases a lock however its
    process ends, a kill too. At the end a folder that holds nothing but its lock goes, with the folders made for it."""
    path, made = os.path.join(folder, ".lock"), []
    while True:  # the folders made again after a holder that left the folder empty removed it
        made = [f for f in (folder, *pathlib.Path(folder).absolute().parents) if not os.path.isdir(f)] or made
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            reason = "a file, not a folder" if os.path.isfile(folder) else e.strerror
            raise OSError(f"cannot write to {folder}: {reason}") from None
        try:
            if os.name == "nt":  # untested (no Windows here): byte 0 locked; the holder's pid after it, readable
                import msvcrt
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = "pid unknown"
            with contextlib.suppress(OSError):
                os.lseek(fd, 1, os.SEEK_SET)
                holder = os.read(fd, 100).decode(errors="replace") or holder
            os.close(fd)
            if not wait:
                raise BlockingIOError(f"{folder} is in use by another process ({holder}): wait for it, or choose "
                                      "another --out-dir") from None
            time.sleep(0.1)  # and try again
            continue
        with contextlib.suppress(OSError):  # the file locked is still the folder's: its holder, leaving the folder
            if os.path.samestat(os.fstat(fd), os.stat(path)):  # empty, removes it, and the next one makes it anew
                break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.lseek(fd, 1, os.SEEK_SET)
    os.write(fd, f"pid {os.getpid()}".encode())
    try:
        yield fd
    finally:
        with contextlib.suppress(OSError):
            if os.listdir(folder) == [".lock"]:
                os.remove(path)
                for empty in made:
                    os.rmdir(empty)
        os.close(fd)


def stop(signum, frame):
    """The handler of Ctrl-C and SIGTERM: a KeyboardInterrupt, with the shell's exit code for the signal."""
    raise KeyboardInterrupt(128 + signum)


def interrupted(e, message):
    """The way out of train.py and seeds.py after Ctrl-C or SIGTERM (e): every later one ignored to the exit, so
    that a key held down cannot break it; the message; the shell's exit code for the signal."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    print(f"\ninterrupted. {message}", file=sys.stderr)
    sys.exit(e.args[0] if e.args else 130)


def quote(path):
    """path as one shell word that names it: a leading dash kept from looking like a flag, bytes that are not UTF-8
    written as $'\\xNN' (bash, zsh)."""
    raw = os.fsencode(os.path.join(".", path) if path.startswith("-") else path)
    if raw.decode(errors="replace") == os.fsdecode(raw):  # UTF-8
        return shlex.quote(os.fsdecode(raw))
    return "$'" + "".join(chr(b) if 32 <= b < 127 and b not in b"\\'" else f"\\x{b:02x}" for b in raw) + "'"


@contextlib.contextmanager
def open_run(args, given, recipe, command=None, held_lock=None):
    """The Run in args.out_dir, its folder made if need be and locked (held_lock: the caller holds the lock), for
    the length of a `with`. Each expected failure ends as one `error:` line; Ctrl-C or SIGTERM as the command that
    continues (command, if given). A save in progress finishes first, so that what is said then is true."""
    resume = f"python train.py --resume --out-dir {quote(args.out_dir)}"  # as it can be pasted
    where = (f" --data-dir {quote(args.data_dir)}" if args.data_dir != "data" else "") + (
        f" --device {shlex.quote(args.device)}" if args.device else "")
    run, replaced = None, os.path.lexists(os.path.join(args.out_dir, "state.pt"))

    def stop_after_save(signum, frame):
        if run is not None and run.saving:
            run.stopped = 128 + signum  # Run.save raises it once done
        else:
            stop(signum, frame)
    previous = {sig: signal.signal(sig, stop_after_save) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with held(args.out_dir) if held_lock is None else contextlib.nullcontext():
            refuse_to_replace(args.out_dir, "it is a study's (benchmarks/seeds.py): choose another --out-dir",
                              STUDY_FILES)
            if not (args.resume or args.overwrite):
                refuse_to_replace(args.out_dir, f"continue its run with {resume}{where}, replace it with --overwrite, "
                                  "or choose another --out-dir")
            run = Run(args, given, recipe)
            yield run
    except (OSError, ValueError, FloatingPointError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        previous = {}  # the handlers stay ignoring to the exit
        if command or (run and run.saved and not args.dry_run):
            interrupted(e, f"Continue with: {command or f'{resume} --epochs {args.epochs}{where}'}")
        said = "the run there is as it was" if replaced and not args.dry_run else "nothing to resume"
        interrupted(e, f"No epoch of this run was saved: {said}.")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.dry_run:  # its own temporary folder, made by mkdtemp
            shutil.rmtree(args.out_dir, ignore_errors=True)
