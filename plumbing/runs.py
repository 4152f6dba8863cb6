"""A run's folder (train.py's --out-dir): state.pt, the whole run (settings, data checksums, history, model, Adam,
schedule, every generator, the best epoch's weights, the test once done), replaced whole after each epoch and the
test, is the truth; run.json, checkpoint.pt, learning_curves.png and a test's files are drawn from it, never read."""
import contextlib
import io
import json
import math
import os
import secrets

import torch

from model import read_checkpoint
from plumbing.devices import run_info
from plumbing.pictures import confusion_picture, curves_picture, mistakes_picture

FORMAT = "fashion-cnn run state 4"  # in every state.pt: one of another program, or of an earlier version, is refused
RUN_FILES = ("state.pt", "run.json", "checkpoint.pt", "learning_curves.png")
TEST_FILES = ("metrics.json", "confusion_matrix.png", "misclassified.png")
STUDY_FILES = ("study.json", "study.png")  # benchmarks/seeds.py's, in a study's folder
KEYS = {"id", "settings", "data", "history", "test", "model", "optimizer", "scheduler", "rng", "best", "run"}


def write_file(path, obj, before_rename=None):
    """obj as path's kind of file (.json, .png of a PIL image, else torch.save) under a temporary name made anew
    (O_EXCL: a link planted there is never written through), on disk (fsync), then renamed: a kill or a power cut
    leaves the old file or the new one, a failure no half file. before_rename: called once the new one is on disk."""
    buffer = io.BytesIO()
    if path.endswith(".json"):
        buffer.write(json.dumps(obj, indent=2, allow_nan=False).encode())  # a NaN is a bug to hear about
    else:
        obj.save(buffer, format="PNG") if path.endswith(".png") else torch.save(obj, buffer)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".tmp")  # what a kill left, or a link
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        with open(os.open(path + ".tmp", flags, 0o666), "wb") as f:  # 0o666: not executable, less the umask
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        if before_rename:
            before_rename()
        os.replace(path + ".tmp", path)
        if os.name != "nt":  # the rename on disk too (Windows cannot open a folder)
            folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            os.fsync(folder)
            os.close(folder)
    except BaseException as e:  # a full disk, or Ctrl-C
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        if not isinstance(e, OSError):
            raise
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def write_test(folder, report, images):
    """A test's files, all or none; images: the (K, 1, 28, 28) test images of the report's misclassified examples."""
    try:
        if examples := report["misclassified_examples"]:
            write_file(os.path.join(folder, "misclassified.png"), mistakes_picture(images, examples))
        write_file(os.path.join(folder, "confusion_matrix.png"), confusion_picture(report))
        write_file(os.path.join(folder, "metrics.json"), report)
    except BaseException:
        remove(folder, TEST_FILES)
        raise


def remove(folder, names):
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))


def refuse_to_replace(folder, hint, names=RUN_FILES + TEST_FILES):
    """The one guard of every command's output: a folder that holds a run's or a test's files is not written into."""
    found = [name for name in names if os.path.lexists(os.path.join(folder, name))]
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


def check_data(state, data, where):
    """The one rule for data: a run or a study goes on, and is compared, only on what it trained on (moved is fine)."""
    different = sorted(name for name in data if data[name] != state["data"].get(name))
    if different:
        raise ValueError(f"--data-dir holds other data than {where} trained on ({', '.join(different)} differ): "
                         "moved files are fine, changed ones make another run")


def read_state(folder, recipe=None):
    """The state of the run in folder, or None if there is none; ValueError if this train.py did not write it (with
    recipe, train.RECIPE: settings of other names or kinds are another version's)."""
    path = os.path.join(folder, "state.pt")
    if not os.path.lexists(path):
        return None
    state, kinds = read_checkpoint(path), lambda settings: {name: type(v) for name, v in settings.items()}
    if state.get("format") == FORMAT and isinstance(state.get("settings"), dict):
        state["settings"].setdefault("weight_decay", 0.0)  # saved before --weight-decay existed: trained without it
    if not (state.get("format") == FORMAT and KEYS <= state.keys() and isinstance(state["settings"], dict)
            and isinstance(state["best"], dict) and isinstance(state["history"], list)
            and all(isinstance(epoch, dict) and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                    for v in epoch.values()) for epoch in state["history"])
            and (recipe is None or kinds(state["settings"]) == kinds(recipe))):
        raise ValueError(f"{path} is not a run state of this train.py (damaged, or from another program or version): "
                         "--overwrite replaces the run, or choose another --out-dir")
    return state


class Run:
    """The run in args.out_dir: a new state, or with --resume the saved one, whose settings args take; train.py
    tells it what happened (save_epoch, save_test)."""

    def __init__(self, args, given, recipe, lock=None):
        self.folder, self.lock, self.saved = args.out_dir, lock, args.resume  # saved: whether state.pt is this run's
        self.saving, self.stopped = False, None  # stopped: a Ctrl-C or SIGTERM during a save, raised after it
        if args.resume:
            self.state = read_state(self.folder, recipe)
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
        self.history = self.state["history"]  # a line of record per epoch saved

    def best_accuracy(self):
        return self.state["best"]["val_accuracy"] if self.history else -1.0

    def restore(self, model, optimizer, scheduler, loader, data):
        """A stopped run's model, Adam, schedule and every generator as after its last saved epoch; ValueError if
        data (the MD5s of the files read) are not those it trained on."""
        s, device = self.state, next(model.parameters()).device
        check_data(s, data, f"the run in {self.folder}")
        try:  # what read_state cannot check but loading can
            for part, saved in ((model, s["model"]), (optimizer, s["optimizer"]), (scheduler, s["scheduler"])):
                if part is not None:
                    part.load_state_dict(saved)
            for name, generator in loader.generators.items():
                generator.set_state(s["rng"][name])
            torch.set_rng_state(s["rng"]["torch"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"{os.path.join(self.folder, 'state.pt')} is damaged ({type(e).__name__}): "
                             "--overwrite replaces the run") from None
        if s["rng"]["device_type"] == device.type != "cpu":
            torch.get_device_module(device).set_rng_state(s["rng"]["accelerator"], device)
        elif s["rng"]["device_type"] != device.type:
            print(f"note: the run trained on {s['rng']['device_type']} and continues on {device.type}: its later "
                  "dropout masks differ from an uninterrupted run's")

    def save_epoch(self, model, optimizer, scheduler, loader, device, best, record):
        """The state after an epoch (record: its line of history); best: its weights are the ones to keep."""
        s, weights = self.state, {k: v.to("cpu", copy=True) for k, v in model.state_dict().items()}
        if best:
            s["best"] = {"model": weights, "epoch": record["epoch"], "val_accuracy": record["val_accuracy"],
                         "run": s["id"], "settings": s["settings"]}
        s["history"].append(record)
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
        """state.pt replaced, the files drawn from it removed just before (once the new one is on disk) and written
        after: a kill at any moment leaves each of them the state's or absent, which the next save writes. Ctrl-C and
        SIGTERM wait for its end (guard.catch_signals; blocking them would not do: torch's threads would take them)."""
        if self.lock is not None and not os.path.samestat(os.fstat(self.lock), os.stat(self.folder)):
            raise OSError(f"{self.folder} was moved or removed while this run worked in it: its epoch is not saved")
        self.saving = True
        try:
            write_file(os.path.join(self.folder, "state.pt"), self.state, self.remove_files)
            self.saved = True
            self.write_files()
        finally:
            self.saving = False
        if self.stopped:
            raise KeyboardInterrupt(self.stopped)

    def remove_files(self):
        remove(self.folder, RUN_FILES[1:] + TEST_FILES)

    def write_files(self):
        """Every file but state.pt, from it."""
        s, path = self.state, lambda name: os.path.join(self.folder, name)
        write_file(path("run.json"), {"id": s["id"], "settings": s["settings"], "data": s["data"], "run": s["run"],
                                      "epochs": s["history"], "best_epoch": s["best"]["epoch"],
                                      "tested": bool(s["test"])})
        write_file(path("checkpoint.pt"), s["best"])
        write_file(path("learning_curves.png"), curves_picture(s["history"], s["best"]["epoch"]))
        if s["test"]:
            write_test(self.folder, s["test"]["report"], s["test"]["images"])
