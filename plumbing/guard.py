"""Around every command that writes into a folder (train.py, evaluate.py --out-dir, benchmarks/seeds.py): the
folder's lock (held), its files written whole or not at all (write_file), the one refusal of a folder holding a
run's or a test's files (refuse_to_replace), and the terminal: Ctrl-C, SIGTERM, a closed terminal or output, as one
message (catch_signals, interrupted). What they promise, and what not: README.md, "What a run promises"."""
import atexit
import contextlib
import fcntl
import io
import json
import os
import pathlib
import shlex
import signal
import sys
import tempfile

import torch

RUN_FILES = ("state.pt", "run.json", "checkpoint.pt", "learning_curves.png")
TEST_FILES = ("metrics.json", "confusion_matrix.png", "misclassified.png")
STUDY_FILES = ("study.json", "study.png")  # benchmarks/seeds.py's, in a study's folder
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill's default, a closed terminal


def command(script, *words):
    """The command line that runs the project's script (train.py, benchmarks/seeds.py) with words, as it can be
    pasted here: the script's path from this folder, each word quoted for the shell."""
    here = os.path.relpath(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), script))
    return " ".join(["python", *map(shlex.quote, (here, *words))])


@contextlib.contextmanager
def held(folder, wait=False):
    """folder (made if need be) locked for a `with`, yielding its descriptor: a flock of the folder itself, which no
    file put in or taken out can lose, let go however its process ends. BlockingIOError if another command holds
    it, or with wait a note and a wait. The folders it made go again if left empty."""
    made, fd = [], None
    try:
        while fd is None:
            made = [f for f in (folder, *pathlib.Path(folder).absolute().parents) if not os.path.isdir(f)]
            try:
                os.makedirs(folder, exist_ok=True)
                tempfile.TemporaryFile(dir=folder).close()  # can be written, which opening it does not show
                fd = os.open(folder, os.O_RDONLY)
            except OSError as e:
                raise OSError(f"cannot write to {folder}: "
                              f"{'a file, not a folder' if os.path.isfile(folder) else e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                made = []  # its holder's
                if not wait:
                    raise BlockingIOError(f"{folder} is in use by another command (`lsof {shlex.quote(str(folder))}` "
                                          "names it): wait for it, or choose another --out-dir") from None
                print(f"waiting for {folder}: another command is working in it")
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not is_held(folder, fd):  # the command waited for made it, left it empty and removed it: made again
                os.close(fd)
                fd = None
        yield fd
    finally:  # however it ends, Ctrl-C in its own lines too
        for empty in made if fd is None or is_held(folder, fd) else ():
            with contextlib.suppress(OSError):  # rmdir removes only an empty folder
                os.rmdir(empty)
        if fd is not None:
            os.close(fd)


def is_held(folder, fd):  # whether folder is still the one locked as fd: not moved, removed or replaced since
    with contextlib.suppress(OSError):
        return os.path.samestat(os.fstat(fd), os.stat(folder))
    return False


def check_held(folder, fd):
    """Before a command writes into its folder: one moved or removed under it (outside the promise) ends the
    command here, and nothing is written into another folder of that name."""
    if not is_held(folder, fd):
        raise OSError(f"{folder} was moved or removed while this command worked in it: nothing more is written")


def catch_signals(run=lambda: None):
    """Ctrl-C, SIGTERM and a closed terminal (SIGHUP) from here on: the first a KeyboardInterrupt with the shell's
    exit code (in a save of run(), once the save has ended: Run.save raises it), every later one ignored, so that a
    key held down cannot break the way out. The output line by line (a closed pipe fails at the line printed), and
    a name it cannot encode printed escaped."""
    for stream in (sys.stdout, sys.stderr):
        getattr(stream, "reconfigure", lambda **kw: None)(line_buffering=True, errors="backslashreplace")
    caught = []

    def stop(signum, frame):  # sets no handler: CPython would report a signal already on its way as a race
        if not caught:
            caught.append(128 + signum)
            if getattr(run(), "saving", False):
                run().stopped = caught[0]
            else:
                raise KeyboardInterrupt(caught[0])
    for sig in SIGNALS:
        signal.signal(sig, stop)
    atexit.register(ignore_signals)  # once the command is done, none in Python's own shutdown either


def ignore_signals():  # to the very end: at its exit Python would put back their default action, a kill
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def interrupted(e, message):
    """The way out after a signal (KeyboardInterrupt) or a closed output (BrokenPipeError, `| head`): one message,
    the shell's exit code, and no signal heard after it."""
    ignore_signals()
    closed = isinstance(e, BrokenPipeError)
    if closed:  # what is left for stdout goes nowhere, not into an error at the exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    with contextlib.suppress(OSError):  # stderr may be closed too
        print(f"\n{'its output was closed' if closed else 'interrupted'}. {message}", file=sys.stderr)
    sys.exit(128 + signal.SIGPIPE if closed else e.args[0] if e.args else 130)


def encode(name, obj):
    """obj as the bytes of name's kind of file: .json (a NaN refused), .png of a PIL image, else torch.save's."""
    if name.endswith(".json"):
        return json.dumps(obj, indent=2, allow_nan=False).encode()
    buffer = io.BytesIO()
    obj.save(buffer, format="PNG") if name.endswith(".png") else torch.save(obj, buffer)
    return buffer.getvalue()


def write_file(path, data, before_rename=None):
    """data (bytes) to path: under a temporary name made anew (x: never through a planted link), on disk (fsync), then
    renamed, so that a kill or a power cut leaves the old file or the new one. before_rename: once it is on disk."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + ".tmp")  # what a kill left, or a link
        with open(path + ".tmp", "xb") as f:  # mode 666 less the umask: never executable
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_rename:
            before_rename()
        os.replace(path + ".tmp", path)
        folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY)  # the rename on disk too
        os.fsync(folder)
        os.close(folder)
    except BaseException as e:  # a full disk, or Ctrl-C
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        if not isinstance(e, OSError):
            raise
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def remove(folder, names):
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))


def refuse_to_replace(folder, hint, names=RUN_FILES + TEST_FILES):
    """The one guard of every command's output: a folder that holds a run's or a test's files is not written into."""
    found = [name for name in names if os.path.lexists(os.path.join(folder, name))]
    if found:
        raise ValueError(f"{folder} already holds {', '.join(found)}: not replaced; {hint}")
