"""Train the CNN of the original Fashion-MNIST write-up, keep the epoch best on validation, and test it.

    python train.py                          # the recipe: Adam, lr 0.001, batch 64, dropout 0.5, 10 epochs
    python train.py --dry-run                # two batches each of training, validation and test: the set-up
    python train.py --resume --out-dir runs  # continues a stopped run exactly where its last saved epoch ended
    python train.py --epochs 20 --augment --schedule onecycle --label-smoothing 0.1 --dropout 0.25 --lr 0.002 --tta
                                             # 0.932 over 5 seeds, in twice the recipe's time

Read top to bottom: the recipe (RECIPE, train_one_epoch, train), then the command line. Writes to --out-dir (runs/):
checkpoint.pt, the best epoch's weights; metrics.json and two pictures, its test; state.pt, the whole run.
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

from data import checksums, make_loaders
from evaluate import format_report, predict, test
from metrics import accuracy
from model import FashionCNN
from plumbing import runs
from plumbing.devices import pick_device, use_strict_fp32
from plumbing.settings import check_settings

# The original write-up's recipe: the flags' defaults (a resumed run keeps its own).
RECIPE = {
    "epochs": 10,  # passes over the 48,000 training images
    "batch_size": 64,
    "lr": 1e-3,  # Adam's learning rate
    "dropout": 0.5,  # in the head, which holds 76% of the weights
    "seed": 1,  # fixes the initial weights, the split, the batch order and the dropout masks
    # Beyond the write-up, each off by default (what each buys, measured over seeds: benchmarks/README.md):
    "augment": False,  # shift each training image by up to 2 pixels and flip half of them left to right
    "schedule": "constant",  # or "onecycle": the rate warms up to --lr, then decays, a step a batch (and Adam's beta1
    #                          cycles the other way, 0.95 to 0.85 and back, as OneCycleLR does by default)
    "label_smoothing": 0.0,  # cross-entropy against targets of 1 - s on the class and s / 10 spread over all
    "batch_norm": False,  # BatchNorm after each convolution
    "weight_decay": 0.0,  # AdamW's: each step shrinks the weights by lr * weight_decay, apart from the gradients
    "tta": False,  # the test also sees each image mirrored, the two logits averaged: a gain only with --augment
}


def train_one_epoch(model, loader, optimizer, device, epoch, log_interval, scheduler=None, label_smoothing=0.0):
    """One pass of Adam over the training loader; returns (mean loss, accuracy) over the images seen."""
    model.train()  # dropout on
    total_loss = correct = seen = checked = 0  # checked: the last batch at which the loss was seen finite
    for batch, (images, targets) in enumerate(loader, start=1):
        images, targets = images.to(device), targets.to(device)  # (B, 1, 28, 28), (B,)
        logits = model(images)  # (B, 10)
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)  # nn.CrossEntropyLoss: batch mean
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()  # a learning rate for every batch
        # Summed on the device and read only at the log lines: .item() every step would stall a GPU.
        total_loss += loss.detach() * len(targets)
        correct += (logits.argmax(dim=1) == targets).sum()
        seen += len(targets)
        if batch % log_interval == 0 or batch == len(loader):
            if not torch.isfinite(total_loss):  # from here on every weight would be NaN: stop before saving any
                raise FloatingPointError(f"the training loss became {loss.item()} in epoch {epoch}, between batches "
                                         f"{checked + 1} and {batch}: training diverged; try a lower --lr")
            checked = batch
            print(f"Train Epoch: {epoch} [{seen}/{len(loader.dataset)} ({100 * batch / len(loader):.0f}%)]"
                  f"\tLoss: {loss.item():.4f}")
    return total_loss.item() / seen, correct.item() / seen


def train(args, run):
    """The recipe: the data, the model, Adam; each epoch trained and validated, the best one kept; then its test.
    run (plumbing/runs.py) is told what happened and keeps it all; a stopped run it hands back as it was saved."""
    device = pick_device(args.device)  # CUDA if there is one
    train_loader, val_loader, test_loader = make_loaders(args.data_dir, args.batch_size, args.seed, device,
                                                         args.augment, max_batches=2 if args.dry_run else None)
    torch.manual_seed(args.seed)  # the initial weights and the dropout masks
    # channels_last (NHWC) keeps each pixel's channels together: about 1.4x faster a step on a CPU.
    model = FashionCNN(dropout=args.dropout, batch_norm=args.batch_norm).to(device, memory_format=torch.channels_last)
    optimizer = (torch.optim.AdamW if args.weight_decay else torch.optim.Adam)(  # Adam is the recipe
        model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = None if args.schedule == "constant" else torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * len(train_loader))
    data = checksums(args.data_dir)  # the MD5s of the files read: a stopped run goes on only on its own
    if run.history:  # --resume: the model, Adam, the schedule and every generator as its last saved epoch left them
        run.restore(model, optimizer, scheduler, train_loader, data)
    else:
        run.state["data"] = data

    print(f"FashionCNN, {sum(p.numel() for p in model.parameters()):,} parameters, on {device} | "
          f"{len(train_loader.dataset)} train, {len(val_loader.dataset)} validation, "
          f"{len(test_loader.dataset)} test images | writing to {args.out_dir}"
          + (f" | resuming after epoch {len(run.history)}" if run.history else ""))
    start = time.perf_counter()
    for epoch in range(len(run.history) + 1, args.epochs + 1):
        epoch_start = time.perf_counter()
        train_loss, train_acc = train_one_epoch(model, train_loader, optimizer, device, epoch, args.log_interval,
                                                scheduler, args.label_smoothing)
        val_loss, y_true, y_pred = predict(model, val_loader, device)
        if not math.isfinite(val_loss):  # nothing diverged is saved
            raise FloatingPointError(f"the validation loss became {val_loss} in epoch {epoch}: training diverged; "
                                     "try a lower --lr")
        val_acc = accuracy(y_true, y_pred)
        best = val_acc > run.best_accuracy()  # the epoch best on validation is the one kept (the first of equals)
        seconds = time.perf_counter() - epoch_start
        record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
                  "val_accuracy": val_acc, "seconds": seconds}
        # The epoch into state.pt, whole; a best one's weights also kept apart: state.pt's "best", checkpoint.pt.
        run.save_epoch(record, model=model, optimizer=optimizer, scheduler=scheduler, loader=train_loader, best=best)
        print(f"Epoch {epoch}/{args.epochs}: train loss {train_loss:.4f}, accuracy {train_acc:.4f} | validation loss "
              f"{val_loss:.4f}, accuracy {val_acc:.4f} | {seconds:.1f} s" + (" | best so far, saved" if best else ""))

    kept = run.state["best"]  # the epoch best on validation
    if run.state["test"] is None:
        print(f"\nTraining done in {time.perf_counter() - start:.1f} s. Testing the checkpoint of epoch "
              f"{kept['epoch']} (validation accuracy {kept['val_accuracy']:.4f}):\n")
        model.load_state_dict(kept["model"])
        report, images = test(model, test_loader, device, args.tta)
        print(format_report(report))  # before the files, so that a full disk costs them, not this
        run.save_test(report, images)
    else:  # nothing to train: the files are written again from the state, a lost or damaged one restored
        further = "a onecycle run is not trained further" if args.schedule != "constant" else \
            f"--epochs {len(run.history) + 1} or more trains it further"
        print(f"The run has trained its {len(run.history)} epochs and been tested; its files are written again "
              f"from state.pt ({further}):\n")
        print(format_report(run.state["test"]["report"]))
        run.write_files()
    print(f"\nTotal time {time.perf_counter() - start:.1f} s" + ("" if args.dry_run else f", in {args.out_dir}"))


def parse_args(argv=None, parser=None, **defaults):
    """(args, given): the flags, RECIPE filling in those left out; given, the recipe's as given (None: left out),
    which --resume checks against the run's own. seeds.py passes its parser and defaults."""
    parser = parser or argparse.ArgumentParser(description="Train the CNN on Fashion-MNIST and test it.")
    # The recipe's flags: left out, None, so that a new run takes RECIPE's value and a resumed one keeps its own.
    parser.add_argument("--epochs", type=int, help="passes over the 48,000 training images (default: 10)")
    parser.add_argument("--batch-size", type=int, help="for training; evaluating takes 256 (default: 64)")
    parser.add_argument("--lr", type=float, help="Adam's learning rate (default: 0.001)")
    parser.add_argument("--dropout", type=float, help="dropout probability in the head (default: 0.5)")
    parser.add_argument("--seed", type=int, help="weights, split, batch order, dropout, augmentation (default: 1)")
    parser.add_argument("--augment", action="store_true", default=None, help="shift and flip each training image")
    parser.add_argument("--schedule", choices=("constant", "onecycle"), help="the learning rate (default: constant)")
    parser.add_argument("--label-smoothing", type=float, help="0 to below 1 (default: 0)")
    parser.add_argument("--batch-norm", action="store_true", default=None, help="BatchNorm after each convolution")
    parser.add_argument("--weight-decay", type=float, help="AdamW's, 0 to below 1 (default: 0, Adam)")
    parser.add_argument("--tta", action="store_true", default=None, help="test each image and its mirror, averaged")
    # The run's own.
    parser.add_argument("--data-dir", default="data", help="has FashionMNIST/raw, else downloads it (default: data)")
    parser.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: CUDA, else another accelerator, else CPU)")
    parser.add_argument("--out-dir", default="runs", help="the run's folder (default: runs)")
    parser.add_argument("--log-interval", type=int, default=100, help="batches between progress lines (default: 100)")
    one = parser.add_mutually_exclusive_group()  # the run in --out-dir continued, replaced, or (a dry run) not touched
    one.add_argument("--resume", action="store_true", help="continue the run in --out-dir, with its own settings")
    one.add_argument("--overwrite", action="store_true", help="replace the run in --out-dir once this one saves")
    one.add_argument("--dry-run", action="store_true", help="one epoch of two batches, in a temporary folder")
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    given = {name: getattr(args, name) for name in RECIPE}
    for name, value in given.items():
        setattr(args, name, RECIPE[name] if value is None else value)
    try:
        check_settings(vars(args))  # the limits, which a resumed run's own settings meet too
    except ValueError as e:
        parser.error(str(e))
    if not 0 < args.log_interval < 2**31:
        parser.error(f"--log-interval must be from 1 to 2**31 - 1, got {args.log_interval}")
    args.epochs = 1 if args.dry_run else args.epochs
    return args, given


def main(argv=None):
    """The command line: the flags checked, the numerics set, the run opened (plumbing/runs.py): train()."""
    args, given = parse_args(argv)
    use_strict_fp32()  # as evaluate.py, so that both compute the same test; before any CUDA work
    with runs.open_run(args, given, RECIPE) as run:
        train(args, run)


if __name__ == "__main__":
    main()
