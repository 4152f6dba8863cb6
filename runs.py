"""The bookkeeping of a run's folder (train.py's --out-dir): one state file is the truth, the rest is drawn from it.

    state.pt       the whole run: id, settings, data checksums, history, model, Adam, schedule, every generator, the
                   best epoch's weights, the test once done; replaced whole after each epoch and after the test
    run.json, checkpoint.pt, learning_curves.png, and once tested metrics.json, confusion_matrix.png and
    misclassified.png: written from state.pt after each save, and again by --resume; never read back
    .lock          held by the train.py working in the folder
A kill at any moment leaves the last saved state whole. A command writes into a folder that holds a run's files
only to continue it (--resume) or when told to (--overwrite): then the old run goes when the new one saves an epoch.
"""
import contextlib
import io
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import sys

import torch
import torchvision
from torchvision.io import encode_png

from model import read_checkpoint
from pictures import confusion_picture, curves_picture, mistakes_picture

FORMAT = "fashion-cnn run state 4"  # in every state.pt: one of another program, or of an earlier version, is refused
RUN_FILES = ("state.pt", "run.json", "checkpoint.pt", "learning_curves.png")
TEST_FILES = ("metrics.json", "confusion_matrix.png", "misclassified.png")


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
        assert device.type != "cpu" or device.index in (None, 0), "there is one, cpu"  # torch takes cpu:1
    except Exception as e:  # each backend fails its own way (RuntimeError, AssertionError, ModuleNotFoundError, ...)
        reason = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise ValueError(f"device {name!r} is not available here ({reason})") from None
    return device


def use_strict_fp32():
    """train.py's and evaluate.py's numerics, so that both compute the same test; called before any CUDA work.

    fp32 everywhere, as on a CPU: cuDNN's default TF32 convolutions would round their inputs to 10 bits of mantissa
    on recent GPUs, for a model that runs in seconds. Deterministic kernels: same seed, same device, same bits.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: its deterministic mode
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
    return {"device": name, "torch": str(torch.__version__), "torchvision": torchvision.__version__}


def write_file(path, obj):
    """obj as path's kind of file: .json strict JSON, .png a (3, H, W) picture, else torch.save. Written under a
    temporary name made anew (O_EXCL: a link planted there is removed, never written through), then renamed: a
    kill mid-write leaves the previous file whole."""
    if path.endswith(".json"):
        content = json.dumps(obj, indent=2, allow_nan=False).encode()  # a NaN is a bug to hear about
    elif path.endswith(".png"):
        content = encode_png(obj).numpy().tobytes()
    else:
        torch.save(obj, buffer := io.BytesIO())
        content = buffer.getvalue()
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".tmp")  # what a kill left, or a link
        with open(os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)), "wb") as f:
            f.write(content)
        os.replace(path + ".tmp", path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def write_test(folder, report, images):
    """A test's files; images: the (K, 1, 28, 28) test images of the report's misclassified examples."""
    if report["misclassified_examples"]:
        write_file(os.path.join(folder, "misclassified.png"),
                   mistakes_picture(images, report["misclassified_examples"]))
    write_file(os.path.join(folder, "confusion_matrix.png"), confusion_picture(report))
    write_file(os.path.join(folder, "metrics.json"), report)


def make_folder(path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot write to {path}: {e.strerror}") from None


def refuse_to_replace(folder, hint):
    """The one guard of every command's output: a folder that holds a run's or a test's files is not written into."""
    found = [name for name in RUN_FILES + TEST_FILES if os.path.lexists(os.path.join(folder, name))]
    if found:
        raise ValueError(f"{folder} already holds {', '.join(found)}: not replaced; {hint}")


def continued_settings(given, fixed, done, where):
    """The one rule for continuing a run (train.py --resume) or a study (seeds.py): its settings stay its first
    call's, which a flag may repeat, not change; --epochs may go past those done, unless a schedule is laid over the
    run's length. given: {name: value, None if not given}; returns the settings to continue with."""
    for name, value in given.items():
        if name != "epochs" and value is not None and value != fixed[name]:
            raise ValueError(f"--{name.replace('_', '-')} {value}: {where} has {fixed[name]}, fixed by its first call; "
                             "leave the flag out to continue it, or choose another --out-dir")
    epochs = given.get("epochs") or fixed["epochs"]
    if epochs != fixed["epochs"] and fixed["schedule"] != "constant":
        raise ValueError(f"--epochs {epochs}: {where} lays its {fixed['schedule']} schedule over {fixed['epochs']} "
                         "epochs, and cannot be made longer or shorter")
    if epochs < done:
        raise ValueError(f"--epochs {epochs} is fewer than the {done} {where} has trained")
    return {**fixed, "epochs": epochs}


def check_data(state, data, folder):
    """The one rule for data: a run goes on, and is measured, only on what it trained on (moved files are fine)."""
    different = sorted(name for name in data if data[name] != state["data"].get(name))
    if different:
        raise ValueError(f"--data-dir holds other data than the run in {folder} trained on ({', '.join(different)} "
                         "differ): moved files are fine, changed ones make another run")


def read_state(folder):
    """The state of the run in folder, or None if there is none; ValueError if this train.py did not write it."""
    path = os.path.join(folder, "state.pt")
    state = read_checkpoint(path) if os.path.lexists(path) else None
    if state is not None and state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a run state of this train.py (damaged, or from another program or version): "
                         "--overwrite replaces the run, or choose another --out-dir")
    return state


class Run:
    """The run in args.out_dir: a new state, or with --resume the saved one, whose settings args take; saved whole
    after each epoch and after the test."""

    def __init__(self, args, given, recipe):
        self.folder, self.saved = args.out_dir, args.resume  # saved: whether state.pt is this run's
        if args.resume:
            self.state = read_state(self.folder)
            if self.state is None:
                raise ValueError(f"--resume: no run to continue in {self.folder} (no state.pt: no epoch was saved)")
            settings = continued_settings(given, self.state["settings"], len(self.state["history"]),
                                          f"the run in {self.folder}")
            if settings["epochs"] > len(self.state["history"]):
                self.state["test"] = None  # trained further, tested again
        else:
            settings = {name: getattr(args, name) for name in recipe}
            self.state = {"format": FORMAT, "id": secrets.token_hex(8), "history": [], "test": None}
        self.state["settings"] = settings
        vars(args).update(settings)

    def restore(self, model, optimizer, scheduler, loader, data):
        """Model, Adam, the schedule and every generator as after the last saved epoch; a new run keeps them."""
        s = self.state
        if not s["history"]:
            s["data"] = data
            return
        check_data(s, data, self.folder)
        model.load_state_dict(s["model"])
        optimizer.load_state_dict(s["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(s["scheduler"])
        for name, generator in loader.generators.items():
            generator.set_state(s["rng"][name])
        torch.set_rng_state(s["rng"]["torch"])
        device = next(model.parameters()).device
        if s["rng"]["device_type"] == device.type != "cpu":
            torch.get_device_module(device).set_rng_state(s["rng"]["accelerator"], device)
        elif s["rng"]["device_type"] != device.type:
            print(f"note: the run trained on {s['rng']['device_type']} and continues on {device.type}: its later "
                  "dropout masks differ from an uninterrupted run's")

    def save_epoch(self, model, optimizer, scheduler, loader, epoch, device):
        """The state after this epoch (epoch: its line of history), with the best epoch's weights."""
        s, weights = self.state, {k: v.to("cpu", copy=True) for k, v in model.state_dict().items()}
        if epoch["val_accuracy"] > max((h["val_accuracy"] for h in s["history"]), default=-1):  # the first of equals
            s["best"] = {"model": weights, "epoch": epoch["epoch"], "val_accuracy": epoch["val_accuracy"],
                         "run": s["id"], "settings": s["settings"]}
        s["history"].append(epoch)
        s.update(model=weights, optimizer=optimizer.state_dict(), run=run_info(device),
                 scheduler=None if scheduler is None else scheduler.state_dict(),
                 # every generator the run draws from: batch order, augmentation, dropout masks on the CPU or device
                 rng={**{name: g.get_state() for name, g in loader.generators.items()}, "torch": torch.get_rng_state(),
                      "device_type": device.type, "accelerator": None if device.type == "cpu" else
                      torch.get_device_module(device).get_rng_state(device)})
        self.save()

    def save_test(self, report, images):
        self.state["test"] = {"report": report, "images": images}
        self.save()

    def save(self):
        write_file(os.path.join(self.folder, "state.pt"), self.state)
        self.saved = True
        self.write_files()

    def write_files(self):
        """Every file but state.pt, from it; a test file beside an untested state is an old run's, and goes."""
        s, path = self.state, lambda name: os.path.join(self.folder, name)
        write_file(path("run.json"), {"id": s["id"], "settings": s["settings"], "data": s["data"], "run": s["run"],
                                      "epochs": s["history"], "best_epoch": s["best"]["epoch"],
                                      "tested": bool(s["test"])})
        write_file(path("checkpoint.pt"), s["best"])
        write_file(path("learning_curves.png"), curves_picture(s["history"], s["best"]["epoch"]))
        if s["test"]:
            write_test(self.folder, s["test"]["report"], s["test"]["images"])
        for name in () if s["test"] else TEST_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path(name))


def lock(folder, wait=False):
    """Hold folder/.lock while this process lives (returns its descriptor); ValueError if another holds it, or with
    wait, wait for it. The operating system releases a lock however its process ends: a killed one is taken over."""
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: nothing new is saved, and the command that continues is printed."""


def stop(signum, frame):
    """The handler of Ctrl-C and SIGTERM: the first one ends the run; more, a key held down, find the way out open."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def interrupted(e, message):
    """The way out of train.py and seeds.py after Ctrl-C or SIGTERM (e): every later one ignored to the exit, so
    that a key held down cannot break it; the message; the shell's exit code for the signal."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    print(f"\ninterrupted. {message}", file=sys.stderr)
    sys.exit(143 if isinstance(e, Terminated) else 130)


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
        make_folder(args.out_dir)
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
