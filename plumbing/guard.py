"""Around every command that writes into a folder (train.py, evaluate.py --out-dir, benchmarks/seeds.py): the
folder's lock, whatever is done to its files (held); its files written whole or not at all (write_file); the one
refusal of a folder holding a run's or a test's files (refuse_to_replace); Ctrl-C and SIGTERM, however many, as one
message (catch_signals, interrupted)."""
import contextlib
import io
import json
import os
import pathlib
import shlex
import signal
import sys
import tempfile

import torch

from plumbing.pictures import confusion_picture, mistakes_picture

RUN_FILES = ("state.pt", "run.json", "checkpoint.pt", "learning_curves.png")
TEST_FILES = ("metrics.json", "confusion_matrix.png", "misclassified.png")
STUDY_FILES = ("study.json", "study.png")  # benchmarks/seeds.py's, in a study's folder


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


def write_file(path, obj, before_rename=None, lock=None):
    """obj as path's kind of file (.json, .png of a PIL image, else torch.save) under a temporary name made anew
    (O_EXCL: a link planted there is never written through), on disk (fsync), then renamed: a kill or a power cut
    leaves the old file or the new one, a failure no half file. before_rename: called once the new one is on disk.
    lock: the descriptor of the folder held (held()), where the file goes, wherever the folder has been moved."""
    name, at = (os.path.basename(path), lock) if lock is not None else (path, None)
    buffer = io.BytesIO()
    if path.endswith(".json"):
        buffer.write(json.dumps(obj, indent=2, allow_nan=False).encode())  # a NaN is a bug to hear about
    else:
        obj.save(buffer, format="PNG") if path.endswith(".png") else torch.save(obj, buffer)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name + ".tmp", dir_fd=at)  # what a kill left, or a link
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        with open(os.open(name + ".tmp", flags, 0o666, dir_fd=at), "wb") as f:  # 0o666: not executable, less umask
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        if before_rename:
            before_rename()
        os.replace(name + ".tmp", name, src_dir_fd=at, dst_dir_fd=at)
        if os.name != "nt":  # the rename on disk too (Windows cannot open a folder)
            folder = at if at is not None else os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            os.fsync(folder)
            if at is None:
                os.close(folder)
    except BaseException as e:  # a full disk, or Ctrl-C
        with contextlib.suppress(OSError):
            os.remove(name + ".tmp", dir_fd=at)
        if not isinstance(e, OSError):
            raise
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def write_test(folder, report, images, lock=None):
    """A test's files, all or none; images: the (K, 1, 28, 28) test images of the report's misclassified examples."""
    try:
        if examples := report["misclassified_examples"]:
            write_file(os.path.join(folder, "misclassified.png"), mistakes_picture(images, examples), lock=lock)
        write_file(os.path.join(folder, "confusion_matrix.png"), confusion_picture(report), lock=lock)
        write_file(os.path.join(folder, "metrics.json"), report, lock=lock)
    except BaseException:
        remove(folder, TEST_FILES, lock)
        raise


def remove(folder, names, lock=None):  # lock: as write_file's
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(name if lock is not None else os.path.join(folder, name), dir_fd=lock)


def refuse_to_replace(folder, hint, names=RUN_FILES + TEST_FILES):
    """The one guard of every command's output: a folder that holds a run's or a test's files is not written into."""
    found = [name for name in names if os.path.lexists(os.path.join(folder, name))]
    if found:
        raise ValueError(f"{folder} already holds {', '.join(found)}: not replaced; {hint}")
