"""A run (train.py's --out-dir): state.pt, the whole run (settings, data checksums, history, model, Adam, schedule,
every generator, the best epoch's weights, the test once done), replaced whole after each epoch and the test, is the
truth; run.json, checkpoint.pt, learning_curves.png and a test's files are drawn from it, never read back. The rules
for continuing a run (or a study), and open_run, which opens one for train.py and benchmarks/seeds.py."""
import contextlib
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile

import torch

from model import read_checkpoint
from plumbing.devices import run_info
from plumbing import guard
from plumbing.pictures import curves_picture

FORMAT = "fashion-cnn run state 4"  # in every state.pt: one of another program, or of an earlier version, is refused
KEYS = {"id", "settings", "data", "history", "test", "model", "optimizer", "scheduler", "rng", "best", "run"}


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

    def best_accuracy(self):  # the best epoch's validation accuracy so far
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

    def save_test(self, report, images):  # images: those misclassified.png shows
        self.state["test"] = {"report": report, "images": images}
        self.save()

    def save(self):
        """state.pt replaced, the files drawn from it removed just before (once the new one is on disk) and written
        after: a kill at any moment leaves each of them the state's or absent, which the next save writes. Ctrl-C and
        SIGTERM wait for its end (guard.catch_signals; blocking them would not do: torch's threads would take them)."""
        self.saving = True
        try:
            guard.write_file(os.path.join(self.folder, "state.pt"), self.state,
                             lambda: guard.remove(self.folder, guard.RUN_FILES[1:] + guard.TEST_FILES, self.lock),
                             self.lock)
            self.saved = True
            self.write_files()
        finally:
            self.saving = False
        if self.stopped:
            raise KeyboardInterrupt(self.stopped)

    def write_files(self):
        """Every file but state.pt, from it, into the folder locked (wherever it has been moved)."""
        s, path = self.state, lambda name: os.path.join(self.folder, name)
        guard.write_file(path("run.json"), {"id": s["id"], "settings": s["settings"], "data": s["data"],
                                            "run": s["run"], "epochs": s["history"], "best_epoch": s["best"]["epoch"],
                                            "tested": bool(s["test"])}, lock=self.lock)
        guard.write_file(path("checkpoint.pt"), s["best"], lock=self.lock)
        guard.write_file(path("learning_curves.png"), curves_picture(s["history"], s["best"]["epoch"]), lock=self.lock)
        if s["test"]:
            guard.write_test(self.folder, s["test"]["report"], s["test"]["images"], self.lock)


@contextlib.contextmanager
def open_run(args, given, recipe, command=None, lock=None):
    """The Run in args.out_dir (a dry run's: a private folder made for it), the folder made if need be and locked
    (lock: the caller holds it, this is it), for the length of a `with`. Each expected failure ends as one `error:`
    line; Ctrl-C or SIGTERM as the command that continues (command, if given), once a save in progress has ended."""
    if args.dry_run:  # private and new, removed at its end
        args.out_dir = tempfile.mkdtemp(prefix="fashion-cnn-dry-run-")

    def path(p):  # as it can be pasted: a leading dash kept from looking like a flag
        return guard.quote(os.path.join(".", p) if p.startswith("-") else p)
    resume = f"python train.py --resume --out-dir {path(args.out_dir)}"
    where = (f" --data-dir {path(args.data_dir)}" if args.data_dir != "data" else "") + (
        f" --device {guard.quote(args.device)}" if args.device else "")
    run, replaced = None, os.path.lexists(os.path.join(args.out_dir, "state.pt"))
    previous = guard.catch_signals(lambda: run)
    try:
        with guard.held(args.out_dir) if lock is None else contextlib.nullcontext(lock) as lock:
            guard.refuse_to_replace(args.out_dir, "it is a study's (benchmarks/seeds.py): choose another --out-dir",
                                    guard.STUDY_FILES)
            if not (args.resume or args.overwrite):
                guard.refuse_to_replace(args.out_dir, f"continue its run with {resume}{where}, replace it with "
                                        "--overwrite, or choose another --out-dir")
            run = Run(args, given, recipe, lock)
            yield run
    except (OSError, ValueError, FloatingPointError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        previous = {}  # the handlers stay ignoring to the exit
        if command or (run and run.saved and not args.dry_run):
            guard.interrupted(e, f"Continue with: {command or f'{resume} --epochs {args.epochs}{where}'}")
        said = "the run there is as it was" if replaced and not args.dry_run else "nothing to resume"
        guard.interrupted(e, f"No epoch of this run was saved: {said}.")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.dry_run:  # its own temporary folder, made by mkdtemp
            shutil.rmtree(args.out_dir, ignore_errors=True)
