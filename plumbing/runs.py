"""A run (train.py's --out-dir): state.pt, the whole run (settings, data checksums, history, model, Adam, schedule,
every generator, the best epoch, the test once done), replaced whole after each epoch, is the truth; the other files
are drawn from it, never read back. open_run opens one for train.py and benchmarks/seeds.py."""
import contextlib
import os
import secrets
import shutil
import sys
import tempfile

import torch

from data import CLASSES
from model import FashionCNN, read_checkpoint
from plumbing import guard
from plumbing.devices import run_info
from plumbing.pictures import confusion_picture, curves_picture, mistakes_picture
from plumbing.settings import check_data, check_settings, continued_settings

FORMAT = "fashion-cnn run state 4"  # in every state.pt: one of another program, or of an earlier version, is refused


def read_state(folder, recipe):
    """The state of the run in folder, or None; ValueError if it is not one of this train.py, whatever the file holds:
    every part a command reads of it is read here, once (recipe: train.RECIPE, whose names and kinds it has)."""
    path = os.path.join(folder, "state.pt")
    if not os.path.lexists(path):
        return None
    s, reason = read_checkpoint(path), "from another program or version"
    try:
        if s.get("format") == FORMAT:
            s["settings"].setdefault("weight_decay", 0.0)  # saved before --weight-decay existed: trained without it
            kinds, reason = [{name: type(v) for name, v in d.items()} for d in (s["settings"], recipe)], "damaged"
            if kinds[0] == kinds[1] and isinstance(s["data"], dict) and s["best"]["epoch"] > 0 and (
                    s["history"][s["best"]["epoch"] - 1]["val_accuracy"] == s["best"]["val_accuracy"]) and (
                    s["test"] is None or list(s["test"]["report"]["per_class"]) == list(CLASSES)):
                check_settings(s["settings"])
                FashionCNN(batch_norm=s["settings"]["batch_norm"]).load_state_dict(s["best"]["model"])
                for name, contents in drawn_files(s).items():  # all that is drawn from it, drawn once here: the
                    guard.encode(name, contents)  # pictures, and json that refuses a NaN
                return s
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, RuntimeError) as e:
        reason = f"damaged: {type(e).__name__}"
    raise ValueError(f"{path} is not a run state of this train.py ({reason}): --overwrite replaces the run, or "
                     "choose another --out-dir")


def test_files(report, images):
    """A test's files ({name: contents}, metrics.json last); images: those of its misclassified examples."""
    mistakes = report["misclassified_examples"]
    return {**({"misclassified.png": mistakes_picture(images, mistakes)} if mistakes else {}),
            "confusion_matrix.png": confusion_picture(report), "metrics.json": report}


def drawn_files(state):
    """Every file of a run but state.pt, drawn from its state: {name: contents}."""
    s = state
    return {"run.json": {"id": s["id"], "settings": s["settings"], "data": s["data"], "run": s["run"],
                         "epochs": s["history"], "best_epoch": s["best"]["epoch"], "tested": bool(s["test"])},
            "checkpoint.pt": s["best"],  # the kept epoch's weights, with its number, accuracy and settings
            "learning_curves.png": curves_picture(s["history"], s["best"]["epoch"]),
            **(test_files(s["test"]["report"], s["test"]["images"]) if s["test"] else {})}


def write_files(folder, files):
    """files ({name: contents}) into folder, each whole, all encoded before any is written; a test's all or none."""
    files = {name: guard.encode(name, contents) for name, contents in files.items()}
    try:
        for name, data in files.items():
            guard.write_file(os.path.join(folder, name), data)
    except BaseException:
        guard.remove(folder, guard.TEST_FILES)
        raise


class Run:
    """The run in args.out_dir, new or (--resume) saved, whose settings args take; train.py tells it what happened."""

    def __init__(self, args, given, recipe, lock):
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
        self.history = self.state["history"]  # the saved epochs' lines (save_epoch adds each)

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
            if s["rng"]["device_type"] == device.type != "cpu":
                torch.get_device_module(device).set_rng_state(s["rng"]["accelerator"], device)
            elif s["rng"]["device_type"] != device.type:
                print(f"note: the run trained on {s['rng']['device_type']} and continues on {device.type}: its later "
                      "dropout masks differ from an uninterrupted run's")
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"{os.path.join(self.folder, 'state.pt')} is damaged ({type(e).__name__}): "
                             "--overwrite replaces the run") from None

    def save_epoch(self, record, *, model, optimizer, scheduler, loader, best):
        """The state after an epoch: record, its line of history, added; the model, Adam, the schedule and every
        generator (loader's and torch's) as they are now; best: its weights are the ones kept (checkpoint.pt)."""
        s, device = self.state, next(model.parameters()).device
        weights = {k: v.to("cpu", copy=True) for k, v in model.state_dict().items()}
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

    def write_files(self):  # the files drawn from state.pt written again: one lost or damaged is as it was
        write_files(self.folder, drawn_files(self.state))

    def save_test(self, report, images):  # images: those misclassified.png shows
        self.state["test"] = {"report": report, "images": images}
        self.save()

    def save(self):
        """state.pt replaced, the files drawn from it removed just before (once the new one is on disk) and written
        after: a kill at any moment leaves each of them the state's or absent, which the next save writes. Ctrl-C and
        SIGTERM wait for its end (guard.catch_signals; blocking them would not do: torch's threads would take them)."""
        self.saving = True
        try:
            guard.check_held(self.folder, self.lock)
            files = drawn_files(self.state)
            guard.write_file(os.path.join(self.folder, "state.pt"), guard.encode("state.pt", self.state),
                             lambda: guard.remove(self.folder, guard.RUN_FILES[1:] + guard.TEST_FILES))
            self.saved = True
            write_files(self.folder, files)
        finally:
            self.saving = False
        if self.stopped:
            raise KeyboardInterrupt(self.stopped)


@contextlib.contextmanager
def open_run(args, given, recipe, command=None, lock=None):
    """The Run in args.out_dir (a dry run's: a private folder), the folder locked (lock: the caller holds it) for a
    `with`. Each expected failure ends in one `error:` line; Ctrl-C, SIGTERM or a closed output in the command that
    continues (command, if given), once a save in progress has ended."""
    if args.dry_run:  # private and new, removed at its end
        args.out_dir = tempfile.mkdtemp(prefix="fashion-cnn-dry-run-")

    where = ([f"--data-dir={args.data_dir}"] if args.data_dir != "data" else []) + (  # =: for a name like -x
        [f"--device={args.device}"] if args.device else [])
    resume = guard.command("train.py", "--resume", f"--out-dir={args.out_dir}", *where)
    run, replaced = None, os.path.lexists(os.path.join(args.out_dir, "state.pt"))
    guard.catch_signals(lambda: run)
    try:
        with guard.held(args.out_dir) if lock is None else contextlib.nullcontext(lock) as lock:
            guard.refuse_to_replace(args.out_dir, "it is a study's (benchmarks/seeds.py): choose another --out-dir",
                                    guard.STUDY_FILES)
            if not (args.resume or args.overwrite):
                guard.refuse_to_replace(args.out_dir, f"continue its run with {resume}, replace it with "
                                        "--overwrite, or choose another --out-dir")
            run = Run(args, given, recipe, lock)
            yield run
    except (KeyboardInterrupt, BrokenPipeError) as e:
        if command or (run and run.saved and not args.dry_run):
            guard.interrupted(e, f"Continue with: {command or f'{resume} --epochs {args.epochs}'}")
        said = "the run there is as it was" if replaced and not args.dry_run else "nothing to resume"
        guard.interrupted(e, f"No epoch of this run was saved: {said}.")
    except (OSError, ValueError, FloatingPointError) as e:
        sys.exit(f"error: {e}")
    finally:
        if args.dry_run:  # its own temporary folder, made by mkdtemp
            shutil.rmtree(args.out_dir, ignore_errors=True)
