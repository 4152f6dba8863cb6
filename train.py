"""Train the CNN of the original Fashion-MNIST write-up, keep the best checkpoint, and test it.

    python train.py                          # the recipe: Adam, lr 0.001, batch 64, dropout 0.5, 10 epochs
    python train.py --dry-run                # two batches, then validation and test: checks the set-up
    python train.py --resume --out-dir runs  # continues a stopped run exactly where its last epoch ended

Writes to --out-dir (default runs/), and never over another run unless told to (--overwrite):
checkpoint.pt (the weights of the epoch with the best validation accuracy), resume.pt (everything needed to
continue after the last finished epoch), history.json (per-epoch losses and accuracies), and, from testing
checkpoint.pt as evaluate.py does, metrics.json and misclassified.png.
"""
import argparse
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from data import make_loaders, pick_device, run_info
from evaluate import predict, test_run
from metrics import accuracy
from model import FashionCNN, read_checkpoint

RUN_FILES = ("checkpoint.pt", "resume.pt", "history.json", "metrics.json", "misclassified.png")
# What --resume lets change: where things are, and how long to train. Anything else would make another run.
FREE_ON_RESUME = {"data_dir", "device", "out_dir", "log_interval", "epochs", "resume"}


def parse_args(argv=None):
    """(args, the names of the flags given on the command line)."""
    parser = argparse.ArgumentParser(description="Train the CNN on Fashion-MNIST and test it.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="holds FashionMNIST/raw; downloaded there if missing")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the 48,000 training images")
    parser.add_argument("--batch-size", type=int, default=64, help="for training (evaluation uses 256: same results)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--dropout", type=float, default=0.5, help="dropout probability in the head")
    parser.add_argument("--seed", type=int, default=1, help="fixes weights, split, batch order and dropout")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps, cpu, ...; None picks CUDA, else another "
                        "accelerator, else the CPU")
    parser.add_argument("--out-dir", default="runs", help="where the run's files go")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out-dir with its own settings")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out-dir")
    parser.add_argument("--log-interval", type=int, default=100, help="batches between progress lines")
    parser.add_argument("--dry-run", action="store_true", help="one epoch of two batches into a temporary folder")
    args = parser.parse_args(argv)
    for flag in ("epochs", "batch_size", "lr", "log_interval"):
        if not 0 < getattr(args, flag) < math.inf:
            parser.error(f"--{flag.replace('_', '-')} must be a positive number, got {getattr(args, flag)}")
    if not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be at least 0 and below 1, got {args.dropout}")
    if not 0 <= args.seed < 2**64:  # torch takes -2**63 to 2**64 - 1, but a negative s is the same seed as 2**64 + s
        parser.error(f"--seed must be between 0 and 2**64 - 1, got {args.seed}")
    if args.dry_run and (args.resume or args.overwrite):
        parser.error("--dry-run writes to a temporary folder of its own: leave out --resume and --overwrite")
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in --out-dir and --overwrite replaces it: choose one")
    parser.set_defaults(**dict.fromkeys(vars(args)))  # the same command line again, with no defaults to fill in
    return args, {name for name, value in vars(parser.parse_args(argv)).items() if value is not None}


def train_one_epoch(model, loader, optimizer, device, epoch, log_interval, max_batches=None):
    """One pass of Adam over the training loader; returns (mean loss, accuracy) over the images seen."""
    model.train()  # dropout on
    total_loss = correct = seen = 0
    for batch, (images, targets) in enumerate(loader, start=1):
        images, targets = images.to(device), targets.to(device)  # (B, 1, 28, 28), (B,)
        logits = model(images)  # (B, 10)
        loss = F.cross_entropy(logits, targets)  # what nn.CrossEntropyLoss computes: mean over the batch
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # Summed on the device and read only at the log lines: .item() every step would stall a GPU.
        total_loss += loss.detach() * len(targets)
        correct += (logits.argmax(dim=1) == targets).sum()
        seen += len(targets)
        if batch % log_interval == 0 or batch in (len(loader), max_batches):
            if not torch.isfinite(total_loss):  # from here on every weight would be NaN: stop before saving any
                raise FloatingPointError(f"the training loss became {loss.item()} in epoch {epoch}, by batch "
                                         f"{batch}: training diverged; try a lower --lr")
            print(f"Train Epoch: {epoch} [{seen}/{len(loader.dataset)} ({100 * batch / len(loader):.0f}%)]"
                  f"\tLoss: {loss.item():.4f}")
        if batch == max_batches:
            break
    return total_loss.item() / seen, correct.item() / seen


def resume_state(model, optimizer, train_loader, history, settings):
    """All that --resume needs to go on after this epoch exactly as if the run had never stopped."""
    device = next(model.parameters()).device
    return {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "optimizer": optimizer.state_dict(),
            "history": history, "args": settings,
            # Every generator the run draws from: the loader's orders the batches, torch's draws the dropout masks
            # on the CPU, and the accelerator's draws them there.
            "rng": {"shuffle": train_loader.generator.get_state(), "torch": torch.get_rng_state(),
                    "accelerator": None if device.type == "cpu" else torch.get_device_module(device).get_rng_state()}}


def restore(state, model, optimizer, train_loader):
    """Undo resume_state(): the model, Adam's moments and every generator as they were after the saved epoch."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    train_loader.generator.set_state(state["rng"]["shuffle"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["accelerator"] is not None:
        torch.get_device_module(next(model.parameters()).device).set_rng_state(state["rng"]["accelerator"])


def save(obj, path):
    """torch.save or JSON through a temporary file and a rename: a kill mid-write leaves the previous file whole."""
    if path.endswith(".json"):
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f, indent=2, allow_nan=False)  # strict JSON: a NaN is a bug to hear about
    else:
        torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def check_out_dir(args, given):
    """Before anything is written: refuse to replace a run, or read the one to resume (None for a new run)."""
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise ValueError(f"--out-dir {args.out_dir} is a file, not a folder")
    found = [name for name in RUN_FILES if os.path.exists(os.path.join(args.out_dir, name))]
    if not args.resume:
        if found and not args.overwrite:
            try:
                with open(os.path.join(args.out_dir, "history.json")) as f:
                    epochs = json.load(f)["epochs"]
                found = f"{len(epochs)} epochs done, best validation accuracy " \
                        f"{max(h['val_accuracy'] for h in epochs):.4f}"
            except (OSError, ValueError, KeyError, TypeError):  # no history, or not ours: say which files are there
                found = ", ".join(found)
            raise ValueError(f"{args.out_dir} already holds a run ({found}). Continue it with python train.py "
                             f"--resume --out-dir {shlex.quote(args.out_dir)}, choose another --out-dir, "
                             "or replace it with --overwrite")
        return None
    if "resume.pt" not in found:
        raise FileNotFoundError(f"--resume: no run to continue in {args.out_dir} (it has no resume.pt)")
    state = read_checkpoint(os.path.join(args.out_dir, "resume.pt"))
    if set(state) != {"model", "optimizer", "history", "args", "rng"} or not isinstance(state["history"], list) \
            or not isinstance(state["args"], dict) or set(state["args"]) != set(vars(args)) - {"resume", "overwrite"}:
        raise ValueError(f"{os.path.join(args.out_dir, 'resume.pt')} is not a resume state of this train.py")
    for name in sorted(given - FREE_ON_RESUME):
        if getattr(args, name) != state["args"][name]:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} contradicts the run in {args.out_dir}, "
                             f"which has {state['args'][name]}: leave it out to continue that run")
    for name in set(state["args"]) - given - {"out_dir"}:  # the run's own settings, but for what was given
        setattr(args, name, state["args"][name])
    done = len(state["history"])
    if args.epochs < done:
        raise ValueError(f"--epochs {args.epochs} is fewer than the {done} the run in {args.out_dir} has trained")
    if args.epochs == done and "metrics.json" in found:
        raise ValueError(f"the run in {args.out_dir} has trained its {done} epochs and been tested: nothing to do "
                         f"(--epochs {done + 1} or more trains it further)")
    return state


def setup(args, given):
    """Everything the user's input decides, checked before training: (device, loaders, out_dir, model, optimizer,
    history). OSError or ValueError, with nothing written, when the folder, the device or the data are wrong."""
    state = None if args.dry_run else check_out_dir(args, given)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for deterministic results
    device = pick_device(args.device)
    loaders = make_loaders(args.data_dir, args.batch_size, args.seed, device)  # all data on the device, once
    out_dir = tempfile.mkdtemp(prefix="fashion-cnn-dry-run-") if args.dry_run else args.out_dir
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):  # an unwritable folder is found now, not after an epoch
        pass
    for name in RUN_FILES if args.overwrite else ():
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))

    # Same seed, same device, same versions: same bits. And fp32 everywhere, as on a CPU: cuDNN's default TF32
    # convolutions would round their inputs to 10 bits of mantissa on recent GPUs, for a model that runs in seconds.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)  # warns, naming any op that has no deterministic kernel
    torch.manual_seed(args.seed)  # the initial weights and the dropout masks
    # channels_last (NHWC) keeps each pixel's channels together: about 1.4x faster a step on a CPU. Only the order
    # of the sums inside the convolutions changes, so the numbers differ from NCHW's at the last bits.
    model = FashionCNN(dropout=args.dropout).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    if state is not None:
        try:
            restore(state, model, optimizer, loaders[0])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{os.path.join(out_dir, 'resume.pt')} is damaged or not from this train.py "
                             f"({type(e).__name__})") from None
    return device, loaders, out_dir, model, optimizer, [] if state is None else state["history"]


def train(args, device, loaders, out_dir, model, optimizer, history):
    """The epochs from where history ends to args.epochs, a save after each, then the test of the best epoch."""
    train_loader, val_loader, test_loader = loaders
    checkpoint_path = os.path.join(out_dir, "checkpoint.pt")
    settings = {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite")}  # what makes the run
    print(f"FashionCNN, {sum(p.numel() for p in model.parameters()):,} parameters, on {device} | "
          f"{len(train_loader.dataset)} train, {len(val_loader.dataset)} validation, "
          f"{len(test_loader.dataset)} test images | writing to {out_dir}"
          + (f" | resuming after epoch {len(history)}" if history else ""))
    start = time.perf_counter()
    epochs = 1 if args.dry_run else args.epochs
    for epoch in range(len(history) + 1, epochs + 1):
        epoch_start = time.perf_counter()
        train_loss, train_acc = train_one_epoch(model, train_loader, optimizer, device, epoch, args.log_interval,
                                                max_batches=2 if args.dry_run else None)
        val_loss, y_true, y_pred = predict(model, val_loader, device)
        val_acc = accuracy(y_true, y_pred)
        is_best = not history or val_acc > max(h["val_accuracy"] for h in history)
        history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                        "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - epoch_start})
        if is_best:
            save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "epoch": epoch,
                  "val_accuracy": val_acc, "args": settings}, checkpoint_path)
        save({"run": run_info(device), "args": settings, "epochs": history}, os.path.join(out_dir, "history.json"))
        save(resume_state(model, optimizer, train_loader, history, settings), os.path.join(out_dir, "resume.pt"))
        print(f"Epoch {epoch}/{epochs}: train loss {train_loss:.4f}, accuracy {train_acc:.4f} | "
              f"validation loss {val_loss:.4f}, accuracy {val_acc:.4f} | {history[-1]['seconds']:.1f} s"
              + (" | best so far, saved" if is_best else ""))

    best = max(history, key=lambda h: h["val_accuracy"])  # the first of equals, as saved
    print(f"\nTraining done in {time.perf_counter() - start:.1f} s. Testing the checkpoint of epoch {best['epoch']} "
          f"(validation accuracy {best['val_accuracy']:.4f}):\n")
    test_run(checkpoint_path, model, loaders, device, out_dir)
    print(f"Total time {time.perf_counter() - start:.1f} s")
    if args.dry_run:
        shutil.rmtree(out_dir)


def main(argv=None):
    args, given = parse_args(argv)
    try:
        try:  # only here is the user's input read; an error anywhere else is a bug, and shows its traceback
            device, loaders, out_dir, model, optimizer, history = setup(args, given)
        except (OSError, ValueError) as e:
            sys.exit(f"error: {e}")
        train(args, device, loaders, out_dir, model, optimizer, history)
    except FloatingPointError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        saved = os.path.exists(os.path.join(args.out_dir, "resume.pt")) and not args.dry_run
        print("\ninterrupted. " + (f"Continue with: python train.py --resume --out-dir {shlex.quote(args.out_dir)}"
                                    if saved else "No epoch was finished, so there is nothing to resume."),
              file=sys.stderr)
        sys.exit(130)  # the shell's code for a program stopped by Ctrl-C


if __name__ == "__main__":
    main()
