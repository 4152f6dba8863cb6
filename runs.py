"""Where a run computes, and the bookkeeping of its folder: one record of the run, read for every decision.

A run's folder (train.py's --out-dir) holds:
    run.json       the record: settings, data checksums, per-epoch history, best epoch, and the SHA-256 of each
                   file it vouches for. Rewritten after each epoch and after the test, always last.
    resume-E.pt    all that --resume needs after epoch E: model, Adam, every generator, and the best checkpoint
    checkpoint.pt  the best epoch's weights, and learning_curves.png: both written from the two above
    metrics.json, confusion_matrix.png, misclassified.png: the test of checkpoint.pt
    .lock          held by the train.py working in the folder
A file the record does not vouch for is never trusted. Each epoch's state goes under a new name before the
record that points to it, and what comes after the record can be written again from the state: a kill at any
moment leaves the last recorded epoch whole, and --resume goes on from there.
"""
import contextlib
import hashlib
import io
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import sys
import tempfile

import torch
import torchvision
from torchvision.io import encode_png

from pictures import curves_picture

RUN_FILES = ("run.json", "checkpoint.pt", "metrics.json", "misclassified.png", "confusion_matrix.png",
             "learning_curves.png", "history.json", "resume.pt")  # the last two: earlier versions' run files


def pick_device(name=None):
    """torch.device(name), checked to work here; by default CUDA, else another accelerator, else the CPU."""
    if name is None:
        if torch.accelerator.is_available():  # CUDA first, then MPS, XPU, ...
            return torch.accelerator.current_accelerator()
        print("note: no GPU found, running on the CPU")
        return torch.device("cpu")
    try:
        device = torch.device(name)
        torch.ones(1, device=device).sum().item()  # a device PyTorch knows but cannot compute on here fails
    except (RuntimeError, AssertionError, NotImplementedError) as e:
        reason = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise ValueError(f"device {name!r} is not available here ({reason})") from None
    if device.type == "cpu" and device.index not in (None, 0):  # torch accepts cpu:1 but there is one CPU device
        raise ValueError(f"device {name!r} is not available here (use cpu)")
    return device


def use_strict_fp32():
    """train.py's and evaluate.py's numeric settings, one place for both, so that they compute the same test.

    fp32 everywhere, as on a CPU: cuDNN's default TF32 convolutions would round their inputs to 10 bits of mantissa
    on recent GPUs, for a model that runs in seconds. Deterministic kernels: same seed, same device, same bits.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for deterministic results
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)  # warns, naming any op that has no deterministic kernel


def run_info(device):
    """Where a result was computed: the exact numbers of a run depend on the device and the library versions."""
    if device.type == "cpu":  # the instruction set decides which kernels, and so which roundings, PyTorch uses
        name = f"{platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()}), " \
               f"{torch.get_num_threads()} threads"
    else:
        module = torch.get_device_module(device)  # MPS has no device names; CUDA and XPU have
        name = f"{device.type}: {module.get_device_name(device)}" if hasattr(module, "get_device_name") else device.type
    return {"device": name, "torch": torch.__version__, "torchvision": torchvision.__version__}


def write_atomically(path, content):
    """Write bytes under a temporary name, then rename: a kill mid-write leaves the previous file whole.
    Returns their SHA-256. On OSError (a full disk, say) the temporary file is removed."""
    try:
        with open(path + ".tmp", "wb") as f:
            f.write(content)
        os.replace(path + ".tmp", path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None
    return hashlib.sha256(content).hexdigest()


def json_bytes(obj):
    return json.dumps(obj, indent=2, allow_nan=False).encode()  # strict JSON: a NaN is a bug to hear about


def torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_png(path, picture):
    """A (3, H, W) uint8 picture as a PNG file, through a temporary name."""
    return write_atomically(path, encode_png(picture).numpy().tobytes())


def sha256(path):
    """The SHA-256 of a file, or None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def read_record(folder):
    """The record of the run in folder, or None if there is none; ValueError if it cannot be read."""
    path = os.path.join(folder, "run.json")
    if not os.path.lexists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        if not {"id", "settings", "data", "epochs", "best_epoch", "state", "files"} <= record.keys():
            raise KeyError
    except (OSError, ValueError, KeyError, AttributeError):
        raise ValueError(f"{path} cannot be read: damaged, or not written by this train.py") from None
    return record


def vouched(folder, record, name):
    """Whether folder/name is the file the record vouches for (same SHA-256)."""
    return record["files"].get(name) is not None and sha256(os.path.join(folder, name)) == record["files"][name]


class Run:
    """The run in one folder, as train.py trains it: restored from its record, saved after each epoch."""

    def __init__(self, folder, record, replacing):
        self.folder, self.record, self.replacing = folder, record, replacing

    def path(self, name):
        return os.path.join(self.folder, name)

    def restore(self, model, optimizer, scheduler, train_loader, data):
        """The history so far ([] for a new run), with model, Adam and every generator as after its last epoch."""
        if self.record is None:
            self.data = data
            return []
        different = sorted(name for name in data if data[name] != self.record["data"].get(name))
        if different:
            raise ValueError(f"--data-dir holds other data than the run in {self.folder} trained on ("
                             f"{', '.join(different)} differ): moved files are fine, changed ones make another run")
        name = self.record["state"]
        if not vouched(self.folder, self.record, name):
            raise ValueError(f"{self.path(name)} is missing, or not the state the run's record vouches for (damaged, "
                             "or copied from another run): cannot continue")
        state = torch.load(self.path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        train_loader.generator.set_state(state["rng"]["shuffle"])
        torch.set_rng_state(state["rng"]["torch"])
        device = next(model.parameters()).device
        if state["rng"]["device_type"] == device.type != "cpu":
            torch.get_device_module(device).set_rng_state(state["rng"]["accelerator"], device)
        elif state["rng"]["device_type"] != device.type:
            print(f"note: the run trained on {state['rng']['device_type']} and continues on {device.type}: its "
                  "later dropout masks differ from an uninterrupted run's")
        self.checkpoint = state["checkpoint"]
        if not vouched(self.folder, self.record, "checkpoint.pt"):  # missing, damaged, or a kill came mid-save
            print(f"note: {self.path('checkpoint.pt')} was not the record's: written again from {name}")
            if write_atomically(self.path("checkpoint.pt"), torch_bytes(self.checkpoint)) != \
                    self.record["files"]["checkpoint.pt"]:
                raise ValueError(f"{self.path(name)} holds another checkpoint than its record says: not used")
        write_png(self.path("learning_curves.png"), curves_picture(self.record["epochs"], self.checkpoint["epoch"]))
        return [dict(h) for h in self.record["epochs"]]

    def save_epoch(self, model, optimizer, scheduler, train_loader, history, settings, device):
        """The state after this epoch under a new name (it holds the best checkpoint too), then the record that
        vouches for it, then what can be rewritten from those two: checkpoint.pt and the learning curves."""
        epoch = history[-1]["epoch"]
        if self.replacing:  # --overwrite: the old run goes only now, when the new one has an epoch to show
            for name in os.listdir(self.folder):
                if name in RUN_FILES:
                    os.remove(self.path(name))
            self.record, self.replacing = None, False
        record = self.record or {"id": secrets.token_hex(8), "data": self.data, "files": {}}
        weights = {k: v.to("cpu", copy=True) for k, v in model.state_dict().items()}  # not the live parameters
        if epoch == max(history, key=lambda h: h["val_accuracy"])["epoch"]:  # the first of equals stays the best
            self.checkpoint = {"model": weights, "epoch": epoch, "val_accuracy": history[-1]["val_accuracy"],
                               "run": record["id"], "settings": settings}
        accelerator = torch.get_device_module(device).get_rng_state(device) if device.type != "cpu" else None
        state = {"model": weights, "optimizer": optimizer.state_dict(), "checkpoint": self.checkpoint,
                 "scheduler": None if scheduler is None else scheduler.state_dict(),
                 # every generator the run draws from: the batch order, and the dropout masks on the CPU or device
                 "rng": {"shuffle": train_loader.generator.get_state(), "torch": torch.get_rng_state(),
                         "device_type": device.type, "accelerator": accelerator}}
        name, checkpoint = f"resume-{epoch}.pt", torch_bytes(self.checkpoint)
        files = {name: write_atomically(self.path(name), torch_bytes(state)),  # metrics.json: not tested yet
                 "checkpoint.pt": hashlib.sha256(checkpoint).hexdigest()}
        record.update(settings=settings, run=run_info(device), epochs=history, best_epoch=self.checkpoint["epoch"],
                      state=name, files=files)
        try:
            write_atomically(self.path("run.json"), json_bytes(record))
        except OSError:  # a full disk, say: a state no record vouches for is no one's
            os.remove(self.path(name))
            raise
        self.record = record
        for old in os.listdir(self.folder):  # earlier states, and any a kill left before its record
            if old.startswith("resume-") and old != name:
                os.remove(self.path(old))
        if not vouched(self.folder, record, "checkpoint.pt"):
            write_atomically(self.path("checkpoint.pt"), checkpoint)
        write_png(self.path("learning_curves.png"), curves_picture(history, self.checkpoint["epoch"]))

    def tested(self, metrics_sha256):
        """metrics.json now holds the test of checkpoint.pt: the record says so, last."""
        self.record["files"]["metrics.json"] = metrics_sha256
        write_atomically(self.path("run.json"), json_bytes(self.record))


def lock(folder):
    """Hold folder/.lock until release(); ValueError if another process holds it. The operating system releases a
    lock when its process ends, however it ends, so a killed run's lock is simply taken over."""
    path = os.path.join(folder, ".lock")
    while True:
        try:
            f = open(path, "a+")
        except OSError as e:
            raise OSError(f"cannot write to {folder}: {e.strerror}") from None
        try:
            if os.name == "nt":
                import msvcrt
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ValueError(f"{folder} is in use by another train.py ({holder}): wait for it to end, or choose "
                             "another --out-dir") from None
        if os.path.exists(path) and os.path.samefile(path, f.fileno()):  # not a file its last holder just removed
            break
        f.close()
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f


def release(lock_file):
    with contextlib.suppress(OSError):  # Windows cannot remove an open file: there the lock file stays
        os.remove(lock_file.name)
    lock_file.close()


def open_run(args, recipe):
    """Refuse a used folder for a new run, or read the run that --resume continues; fills args from the record."""
    folder, record = args.out_dir, read_record(args.out_dir)
    if args.resume:
        if record is None:
            raise ValueError(f"--resume: no run to continue in {folder} (no run.json: no epoch was finished there)")
        for name in recipe:  # a setting earlier versions did not record has its recipe value
            value = record["settings"].get(name, recipe[name])
            if name != "epochs" and getattr(args, name) not in (None, value):
                raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} contradicts the run in {folder}, "
                                 f"which has {value}: leave it out to continue that run")
            if getattr(args, name) is None:
                setattr(args, name, value)
        done = len(record["epochs"])
        if args.schedule != "constant" and args.epochs != record["settings"]["epochs"]:
            raise ValueError(f"--epochs {args.epochs}: the run in {folder} lays its {args.schedule} schedule over "
                             f"{record['settings']['epochs']} epochs, and cannot be made longer or shorter")
        if args.epochs < done:
            raise ValueError(f"--epochs {args.epochs} is fewer than the {done} the run in {folder} has trained")
        if args.epochs == done and vouched(folder, record, "metrics.json") and vouched(folder, record, "checkpoint.pt"):
            raise ValueError(f"the run in {folder} has trained its {done} epochs and been tested: nothing to do "
                             f"(--epochs {done + 1} or more trains it further)")
        return Run(folder, record, replacing=False)
    if record is not None and not args.overwrite:
        done, best = len(record["epochs"]), record["epochs"][record["best_epoch"] - 1]["val_accuracy"]
        raise ValueError(f"{folder} already holds a run ({done} epoch{'s' * (done != 1)} done, best validation "
                         f"accuracy {best:.4f}, {'' if vouched(folder, record, 'metrics.json') else 'not '}tested). "
                         f"Continue it with python train.py --resume --out-dir {shlex.quote(folder)}, choose another "
                         "--out-dir, or replace it with --overwrite")
    found = sorted(name for name in os.listdir(folder) if name in RUN_FILES)  # a state with no record is no one's
    if found and not args.overwrite:
        raise ValueError(f"{folder} holds a run's files but no record of a run ({', '.join(found)}): not replaced; "
                         "choose another --out-dir, or replace them with --overwrite")
    for name, value in recipe.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return Run(folder, None, replacing=bool(found or record))


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: nothing new is saved, and the command that continues is printed."""


def terminate(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def run_folder(args, recipe, resume_command=None):
    """The run in args.out_dir, locked, for the length of a `with`: each expected failure ends as one `error:`
    line, an interruption as the command that continues; the lock goes, and a folder left empty is removed."""
    previous = signal.signal(signal.SIGTERM, terminate)
    created, handle = not os.path.exists(args.out_dir), None
    try:
        if args.dry_run:  # a temporary folder of its own, removed at the end
            args.out_dir, created = tempfile.mkdtemp(prefix="fashion-cnn-dry-run-"), True
        if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
            raise ValueError(f"--out-dir {args.out_dir} is a file, not a folder")
        os.makedirs(args.out_dir, exist_ok=True)
        handle = lock(args.out_dir)
        yield open_run(args, recipe)
    except (OSError, ValueError, FloatingPointError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        saved = not args.dry_run and os.path.exists(os.path.join(args.out_dir, "run.json"))
        command = resume_command or f"python train.py --resume --out-dir {shlex.quote(args.out_dir)}" + \
            (f" --epochs {args.epochs}" if args.epochs else "")
        print("\ninterrupted. " + (f"Continue with: {command}" if saved or resume_command else
                                    "No epoch was finished, so there is nothing to resume."), file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)  # the shell's codes for SIGTERM and Ctrl-C
    finally:
        signal.signal(signal.SIGTERM, previous)
        if handle is not None:
            release(handle)
        with contextlib.suppress(OSError):
            if args.dry_run:
                shutil.rmtree(args.out_dir)
            elif created and not os.listdir(args.out_dir):  # nothing written: leave nothing behind
                os.rmdir(args.out_dir)
