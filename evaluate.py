"""Evaluate a trained checkpoint on the 10,000 Fashion-MNIST test images.

    python evaluate.py --checkpoint runs/checkpoint.pt --data-dir ../shared/data

Prints accuracy, weighted precision/recall/F1, a per-class table, the confusion matrix and
the most-confused pairs; writes metrics.json and misclassified.png beside the checkpoint.
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

import metrics
from data import CLASSES, EVAL_BATCH_SIZE, make_test_loader
from model import FashionCNN


def pick_device(name=None):
    """torch.device(name), checked to exist here; by default CUDA, else another accelerator, else the CPU."""
    if name is None:
        if torch.accelerator.is_available():  # CUDA first, then MPS, XPU, ...
            return torch.accelerator.current_accelerator()
        print("note: no GPU found, running on the CPU")
        return torch.device("cpu")
    try:
        device = torch.device(name)
        torch.zeros(1, device=device)  # raises if this device type is unknown or absent here
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"device {name!r} is not available here ({short_reason(e)})") from None
    return device


def short_reason(error):
    """'Type: first sentence' of an exception, to fit in a one-line error message."""
    first = str(error).strip().split(". ")[0].split("\n")[0][:120]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def load_checkpoint(path, device):
    """FashionCNN in eval mode with the weights saved at path; ValueError if path holds anything else."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path} (train one with: python train.py)")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before it refuses them
            warnings.simplefilter("ignore")
            # weights_only: unpickle tensors and plain containers only, so a checkpoint can never run code.
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint: damaged, not PyTorch's, or holding objects "
                         f"that weights_only loading refuses ({short_reason(e)})") from None
    # train.py saves {"model": state_dict, ...}; a bare state_dict is accepted too.
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    model = FashionCNN().to(device, memory_format=torch.channels_last)  # as train.py: faster
    expected = model.state_dict()
    if not isinstance(state, dict) or state.keys() != expected.keys() or any(
            getattr(state[k], "shape", None) != v.shape for k, v in expected.items()):
        raise ValueError(f"{path} does not hold FashionCNN weights (another model, or not a checkpoint)")
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def predict(model, loader, device):
    """(mean cross-entropy loss, true labels, predicted labels) over a loader, labels as numpy arrays."""
    model.eval()  # dropout off
    total_loss, labels, predictions = 0.0, [], []
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images)  # (B, 10)
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
    off_diagonal = cm - np.diag(np.diag(cm))
    pairs = sorted(((int(off_diagonal[i, j]), i, j) for i in range(n) for j in range(n) if off_diagonal[i, j]),
                   reverse=True)[:most_confused]
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
    return "\n".join(lines)


def save_misclassified(dataset, y_true, y_pred, path, count=32):
    """Save the first `count` misclassified images as a grid, 4 a row; return their index, true and predicted class."""
    wrong = np.flatnonzero(y_true != y_pred)[:count]
    if len(wrong) == 0:
        return []
    images = torch.stack([dataset[i][0] for i in wrong])  # (K, 1, 28, 28), normalized to [-1, 1]
    save_image(make_grid(images * 0.5 + 0.5, nrow=4, padding=2, pad_value=1.0), path)
    return [{"index": int(i), "true": CLASSES[y_true[i]], "predicted": CLASSES[y_pred[i]]} for i in wrong]


def write_json(obj, path):
    """Write JSON through a temporary file, so that a crash mid-write never leaves a half file at path."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def evaluate_checkpoint(checkpoint_path, test_loader, device):
    """Test a checkpoint: print the report, write metrics.json and misclassified.png beside it; return the report."""
    model = load_checkpoint(checkpoint_path, device)
    _, y_true, y_pred = predict(model, test_loader, device)
    report = classification_report(y_true, y_pred)
    out_dir = os.path.dirname(os.path.abspath(checkpoint_path))
    image_path = os.path.join(out_dir, "misclassified.png")
    report["misclassified_examples"] = save_misclassified(test_loader.dataset, y_true, y_pred, image_path)
    write_json(report, os.path.join(out_dir, "metrics.json"))
    print(format_report(report))
    if report["misclassified_examples"]:
        print(f"\nMisclassified test images in {image_path}, row by row (true -> predicted):")
        examples = [f"{m['true']} -> {m['predicted']}" for m in report["misclassified_examples"]]
        for row in range(0, len(examples), 4):
            print("  " + " | ".join(examples[row:row + 4]))
    print(f"\nWrote {os.path.join(out_dir, 'metrics.json')}")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/checkpoint.pt", help="as train.py writes it")
    parser.add_argument("--data-dir", default="data",
                        help="folder holding FashionMNIST/raw; downloaded there if missing")
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE, help="does not change the results")
    parser.add_argument("--device", default=None,
                        help="cuda, cuda:1, mps, cpu, ...; None picks CUDA, else another accelerator, else the CPU")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        device = pick_device(args.device)
        evaluate_checkpoint(args.checkpoint, make_test_loader(args.data_dir, args.batch_size, device), device)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
