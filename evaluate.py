"""Test a trained checkpoint on the 10,000 Fashion-MNIST test images, or classify pictures of your own.

    python evaluate.py --checkpoint runs/checkpoint.pt                    # prints the report
    python evaluate.py --checkpoint runs/checkpoint.pt --out-dir retest   # and writes it, with its pictures
    python evaluate.py --checkpoint runs/checkpoint.pt --image shirt.jpg boot.png

The report: accuracy, weighted precision/recall/F1, a per-class table, the confusion matrix, the most-confused
pairs; train.py tests its best epoch with test() below, so both compute the same report.
"""
import argparse
import contextlib
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import metrics
from data import CLASSES, EVAL_BATCH_SIZE, RAW_FILES, TensorLoader, checksums, fashion_mnist
from model import load_checkpoint, read_checkpoint
from plumbing import guard, runs
from plumbing.devices import pick_device, run_info, use_strict_fp32
from plumbing.images import read_image

PICTURE_ROWS, PICTURE_COLUMNS = 4, 6  # misclassified.png: the 4 most-confused pairs, 6 test images each


@torch.inference_mode()  # no_grad, and no version counters either: about 5% faster here
def predict(model, loader, device, tta=False):
    """(mean cross-entropy loss, true labels, predicted labels) over a loader, labels as numpy arrays. tta: each
    image's logits averaged with its mirror image's (garments are nearly symmetric; the training saw no mirrors
    unless --augment)."""
    model.eval()  # dropout off
    total_loss, labels, predictions = 0.0, [], []
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images) if not tta else (model(images) + model(images.flip(-1))) / 2  # (B, 10)
        # Kept on the device until the end: reading each batch back would stall a GPU.
        total_loss += F.cross_entropy(logits, targets, reduction="sum")
        labels.append(targets)
        predictions.append(logits.argmax(dim=1))
    y_true, y_pred = torch.cat(labels).cpu().numpy(), torch.cat(predictions).cpu().numpy()
    return float(total_loss) / len(y_true), y_true, y_pred


def classification_report(y_true, y_pred, class_names=CLASSES, most_confused=5):
    """Everything metrics.json holds, as a dict of plain Python values."""
    n = len(class_names)
    precision, recall, f1 = metrics.precision_recall_f1(y_true, y_pred, n, average="weighted")
    per_class = metrics.precision_recall_f1(y_true, y_pred, n, average=None)
    cm = metrics.confusion_matrix(y_true, y_pred, n)
    pairs = sorted(((int(cm[i, j]), i, j) for i in range(n) for j in range(n) if i != j and cm[i, j]),
                   key=lambda pair: (-pair[0], pair[1], pair[2]))[:most_confused]  # ties in class order
    # misclassified.png: a row for each of the most-confused pairs, its first test images in file order.
    examples = []
    for row, (_, i, j) in enumerate(pairs[:PICTURE_ROWS]):
        for column, index in enumerate(np.flatnonzero((y_true == i) & (y_pred == j))[:PICTURE_COLUMNS]):
            examples.append({"index": int(index), "true": class_names[i], "predicted": class_names[j],
                             "row": row, "column": column})
    return {
        "num_images": len(y_true),
        "accuracy": metrics.accuracy(y_true, y_pred),
        "precision": precision, "recall": recall, "f1": f1,  # weighted by each class's support
        "per_class": {name: {"precision": float(per_class[0][i]), "recall": float(per_class[1][i]),
                             "f1": float(per_class[2][i]), "support": int(cm[i].sum())}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": cm.tolist(),  # rows: true class, columns: predicted class
        "most_confused": [{"true": class_names[i], "predicted": class_names[j], "count": count}
                          for count, i, j in pairs],
        "misclassified_examples": examples,
    }


def format_report(report):
    """The report as the text a person reads."""
    names = list(report["per_class"])
    lines = [f"Test accuracy {report['accuracy']:.4f} | weighted precision {report['precision']:.4f}, "
             f"recall {report['recall']:.4f}, F1 {report['f1']:.4f} ({report['num_images']} images)",
             "", f"{'class':<12} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for name, m in report["per_class"].items():
        lines.append(f"{name:<12} {m['precision']:>9.4f} {m['recall']:>7.4f} {m['f1']:>7.4f} {m['support']:>8}")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted)",
              " " * 12 + "".join(f"{name[:7]:>8}" for name in names)]
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name:<12}" + "".join(f"{count:>8}" for count in row))
    lines += ["", "Most confused:"]
    lines += [f"  {p['true']} predicted as {p['predicted']}: {p['count']}" for p in report["most_confused"]]
    return "\n".join(lines)  # misclassified.png shows the first few of each pair; metrics.json lists them


def test(model, loader, device, tta=False):
    """The test, as train.py and main() run it: (the report, the (K, 1, 28, 28) images misclassified.png shows)."""
    report = classification_report(*predict(model, loader, device, tta)[1:])
    report["run"] = run_info(device)
    return report, loader.dataset.tensors[0][[m["index"] for m in report["misclassified_examples"]]].cpu()


@torch.no_grad()
def classify_images(model, paths, device, invert=None, tta=False):
    """Print each picture's three most likely classes (tta: as the test computes them); exit 1 after the others if
    one could not be read."""
    failed = False
    for path in paths:
        try:
            image, inverted = read_image(path, invert)  # (1, 28, 28), as the test images are
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed = True
            continue
        image = image[None].to(device)  # (1, 1, 28, 28)
        top = F.softmax((model(image) + model(image.flip(-1))) / 2 if tta else model(image), dim=1)[0].topk(3)
        print(f"{path}: " + ", ".join(f"{CLASSES[i]} {p:.3f}" for p, i in zip(*(t.tolist() for t in top)))
              + (" (inverted: light background)" if inverted else ""))
    if failed:
        sys.exit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/checkpoint.pt", help="as train.py writes it")
    parser.add_argument("--data-dir", default="data", help="holds FashionMNIST/raw; downloaded there if missing")
    either = parser.add_mutually_exclusive_group()  # --image prints each picture's classes and writes nothing
    either.add_argument("--out-dir", help="write the report and its pictures into this new folder (None: print only)")
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE, help="does not change the results")
    parser.add_argument("--device", help="cuda, cuda:1, mps, cpu, ... (None: CUDA, else another accelerator, else CPU)")
    either.add_argument("--image", nargs="+", metavar="FILE", help="classify these pictures instead of the test set")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, help="average each image's logits with its "
                        "mirror image's (None: as the run that saved the checkpoint tested it)")
    parser.add_argument("--no-invert", action="store_true", help="with --image: never invert a light background")
    args = parser.parse_args(argv)
    if not 0 < args.batch_size < 2**31:
        parser.error(f"--batch-size must be from 1 to 2**31 - 1, got {args.batch_size}")
    guard.catch_signals()  # Ctrl-C, SIGTERM, a closed output: one message, whatever follows
    try:
        use_strict_fp32()  # as train.py, so that testing its checkpoint again gives its results
        device = pick_device(args.device)
        model = load_checkpoint(args.checkpoint, device)
        saved = read_checkpoint(args.checkpoint)  # a dict, as load_checkpoint has read it
        settings = saved.get("best", saved).get("settings")  # the run's that saved it (a bare state_dict has none)
        if args.tta is None and isinstance(settings, dict) and settings.get("tta") is True:
            args.tta = True
            print("note: with --tta, as its run tested it (--no-tta: without)")
        if args.image:
            return classify_images(model, args.image, device, False if args.no_invert else None, args.tta)
        # The folder locked and checked before the test, not after it; nothing locked without --out-dir.
        with contextlib.nullcontext() if args.out_dir is None else guard.held(args.out_dir) as lock:
            if lock is not None:
                guard.refuse_to_replace(args.out_dir, "choose another --out-dir",
                                        guard.RUN_FILES + guard.TEST_FILES + guard.STUDY_FILES)
            test_set = fashion_mnist(args.data_dir, train=False, device=device)
            checksums(args.data_dir, RAW_FILES[2:])  # warns if these are not the published files
            report, images = test(model, TensorLoader(test_set, args.batch_size), device, args.tta)
            print(format_report(report))
            if lock is not None:
                guard.check_held(args.out_dir, lock)
                runs.write_files(args.out_dir, runs.test_files(report, images))
                print(f"\nWrote {os.path.join(args.out_dir, 'metrics.json')} and its pictures")
    except (KeyboardInterrupt, BrokenPipeError) as e:
        guard.interrupted(e, "Nothing written.")
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
