"""The guard around a command that writes into a folder (train.py, evaluate.py --out-dir, benchmarks/seeds.py).

One command at a time in a folder, whatever is done to its files; a new run never where another run's files are,
unless told to (--overwrite), and then the old run goes only when the new one saves an epoch; each expected failure
one `error:` line; Ctrl-C or SIGTERM, however many, the command that continues; no folder it made left empty.
"""
import contextlib
import os
import pathlib
import shlex
import shutil
import signal
import sys
import tempfile

from plumbing.runs import STUDY_FILES, Run, refuse_to_replace


@contextlib.contextmanager
def held(folder, wait=False):
    """folder locked for the length of a `with` (yields its descriptor), made if need be: a lock on the folder itself
    (flock of a descriptor of it), which nothing done to the files in it can lose; the OS releases it however its
    process ends, a kill too. BlockingIOError if another process holds it, or with wait, a note and a wait for it.
    At the end, however it comes, a folder it made and left empty goes, with the folders made for it."""
    made, said, fd = [], False, None
    try:
        while True:  # made again if a holder that left it empty removed it meanwhile
            made = [f for f in (folder, *pathlib.Path(folder).absolute().parents) if not os.path.isdir(f)] or made
            try:
                os.makedirs(folder, exist_ok=True)
                try:
                    tempfile.TemporaryFile(dir=folder).close()  # can be written, which opening it does not show
                    fd = None if os.name == "nt" else os.open(folder, os.O_RDONLY)  # Windows has no flock, nor a
                except FileNotFoundError:  # descriptor of a folder: there it is not locked (README: Runs)
                    if not os.path.lexists(folder):  # removed since it was made, by a holder that left it empty
                        continue
                    raise
            except OSError as e:
                reason = "a file, not a folder" if os.path.isfile(folder) else e.strerror
                raise OSError(f"cannot write to {folder}: {reason}") from None
            if fd is None:
                break
            import fcntl
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    made = []  # its holder's, not to remove
                    raise BlockingIOError(f"{folder} is in use by another command (`lsof {quote(str(folder))}` "
                                          "names it): wait for it, or choose another --out-dir") from None
                if not said:
                    said = print(f"waiting for {folder}: another command is working in it") or True
                fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(OSError):  # still the folder of that name, not one its last holder removed
                if os.path.samestat(os.fstat(fd), os.stat(folder)):
                    break
            os.close(fd)
            fd = None
        yield fd
    finally:
        with contextlib.suppress(OSError):
            for empty in made if not os.listdir(folder) else ():
                os.rmdir(empty)
        if fd is not None:
            os.close(fd)


def catch_signals(run=lambda: None):
    """Ctrl-C and SIGTERM from here on: the first a KeyboardInterrupt with the shell's exit code for it (in a save
    of run(), once the save has ended: Run.save raises it), every later one ignored, so that a key held down cannot
    break the way out. Returns the handlers it replaced."""
    caught = []

    def stop(signum, frame):  # sets no handler: CPython would report a signal already on its way as a race
        if not caught:
            caught.append(128 + signum)
            if getattr(run(), "saving", False):
                run().stopped = caught[0]
            else:
                raise KeyboardInterrupt(caught[0])
    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def interrupted(e, message):
    """The way out after Ctrl-C or SIGTERM (e): one message, the shell's exit code for the signal. The later ones
    ignored to the very end: at its exit Python puts back the default action of a signal it handles, a kill."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    print(f"\ninterrupted. {message}", file=sys.stderr)
    sys.exit(e.args[0] if e.args else 130)


def quote(word):
    """word as one shell word that means it: bytes that are not UTF-8 written as $'\\xNN' (bash, zsh)."""
    raw = os.fsencode(word)
    if raw.decode(errors="replace") == os.fsdecode(raw):  # UTF-8
        return shlex.quote(word)
    return "$'" + "".join(chr(b) if 32 <= b < 127 and b not in b"\\'" else f"\\x{b:02x}" for b in raw) + "'"


@contextlib.contextmanager
def open_run(args, given, recipe, command=None, lock=None):
    """The Run in args.out_dir (a dry run's: a private folder made for it), the folder made if need be and locked
    (lock: the caller holds it, this is it), for the length of a `with`. Each expected failure ends as one `error:`
    line; Ctrl-C or SIGTERM as the command that continues (command, if given), once a save in progress has ended."""
    if args.dry_run:  # private and new, removed at its end
        args.out_dir = tempfile.mkdtemp(prefix="fashion-cnn-dry-run-")

    def path(p):  # as it can be pasted: a leading dash kept from looking like a flag
        return quote(os.path.join(".", p) if p.startswith("-") else p)
    resume = f"python train.py --resume --out-dir {path(args.out_dir)}"
    where = (f" --data-dir {path(args.data_dir)}" if args.data_dir != "data" else "") + (
        f" --device {shlex.quote(args.device)}" if args.device else "")
    run, replaced = None, os.path.lexists(os.path.join(args.out_dir, "state.pt"))
    previous = catch_signals(lambda: run)
    try:
        with held(args.out_dir) if lock is None else contextlib.nullcontext(lock) as lock:
            refuse_to_replace(args.out_dir, "it is a study's (benchmarks/seeds.py): choose another --out-dir",
                              STUDY_FILES)
            if not (args.resume or args.overwrite):
                refuse_to_replace(args.out_dir, f"continue its run with {resume}{where}, replace it with --overwrite, "
                                  "or choose another --out-dir")
            run = Run(args, given, recipe, lock)
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
