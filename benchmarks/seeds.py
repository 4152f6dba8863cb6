"""Train the recipe once per random seed and report its results as a distribution, not one number.

    python benchmarks/seeds.py --seeds 1 2 3 4 5 6 7 8 9 10 --out-dir seeds-study
    python benchmarks/seeds.py --seeds 1 2 3 4 5 --out-dir dropout0-study --dropout 0

Any other flag goes to train.py as it is (--epochs, --data-dir, --dropout, ...). Each seed trains through
train.py's own code into OUT_DIR/seed-S, one after the other. A seed whose run finished there is read, not
trained again, and a stopped one is resumed: a long study can be stopped and started again at any moment.

Prints a row per seed, then mean, sample standard deviation, min, max and a 95% confidence interval of the mean
for the test accuracy and F1; validation accuracy per epoch; per class F1; and the most-confused pairs.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's files
import train  # noqa: E402
from data import CLASSES  # noqa: E402

# Student's t quantile t(0.975; df), for a two-sided 95% interval of a mean from n = df + 1 runs (any t table).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042}


def summarize(values):
    """{mean, std (sample, n - 1), min, max, ci: 95% interval of the mean, mean +- t * std / sqrt(n)}."""
    values = np.asarray(values, dtype=float)
    n, mean = len(values), float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    # Beyond 30 runs the normal quantile 1.96 is within 4% of t's; with one run there is no interval.
    half = T_975.get(n - 1, 1.96) * std / np.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "min": float(values.min()), "max": float(values.max()),
            "ci": (mean - half, mean + half)}


def format_summary(name, values):
    s = summarize(values)
    return (f"{name:<26} mean {s['mean']:.4f}  std {s['std']:.4f}  min {s['min']:.4f}  max {s['max']:.4f}  "
            f"95% CI [{s['ci'][0]:.4f}, {s['ci'][1]:.4f}]  (n={len(values)})")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def run_seed(seed, folder, flags, epochs):
    """Train one seed into folder, or resume it, or do nothing if it finished with these flags."""
    argv = flags + ["--seed", str(seed), "--out-dir", folder, "--log-interval", "10000"]
    if not os.path.exists(os.path.join(folder, "resume.pt")):
        return train.main(argv + ["--overwrite"])  # nothing to keep: at most a run stopped before its first epoch
    if os.path.exists(os.path.join(folder, "metrics.json")) and \
            len(read_json(os.path.join(folder, "history.json"))["epochs"]) == epochs:
        return print(f"seed {seed}: finished in {folder}, read")  # train.py --resume checks its flags below
    train.main(argv + ["--resume", "--epochs", str(epochs)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other flags go to train.py.",
                                     allow_abbrev=False)  # else --seed would be taken for --seeds
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="the random seeds to train")
    parser.add_argument("--out-dir", required=True, help="one folder per seed goes in here")
    args, flags = parser.parse_known_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    for flag in ("--seed", "--out-dir", "--resume", "--overwrite", "--dry-run", "--log-interval"):
        if any(f == flag or f.startswith(flag + "=") for f in flags):
            parser.error(f"{flag} is set by seeds.py itself")
    train_args, _ = train.parse_args(flags)  # train.py's own check of its flags, before anything trains
    folders = {seed: os.path.join(args.out_dir, f"seed-{seed}") for seed in args.seeds}
    for seed, folder in folders.items():
        run_seed(seed, folder, flags, train_args.epochs)
        args_saved = read_json(os.path.join(folder, "history.json"))["args"]
        differ = [k for k in ("lr", "batch_size", "dropout") if args_saved[k] != getattr(train_args, k)]
        if differ:  # train.py --resume catches this for a run it continues; a finished run is checked here
            sys.exit(f"error: the run in {folder} was trained with other settings ({', '.join(differ)}): "
                     "use another --out-dir")
    print_study(folders)


def print_study(folders):
    """The table and the summaries, from each run's metrics.json and history.json."""
    metrics = {s: read_json(os.path.join(f, "metrics.json")) for s, f in folders.items()}
    history = {s: read_json(os.path.join(f, "history.json"))["epochs"] for s, f in folders.items()}
    run = metrics[next(iter(metrics))]["run"]
    print(f"\n{len(metrics)} runs on {run['device']}, PyTorch {run['torch']}, torchvision {run['torchvision']}\n")
    print(f"{'seed':>6} {'best epoch':>10} {'val. acc.':>9} {'test acc.':>9} {'test F1':>8} "
          f"{'last-epoch test':>15} {'train-val gap':>13}")
    gaps = {}
    for seed, m in metrics.items():
        best = max(history[seed], key=lambda h: h["val_accuracy"])
        # How much better the final weights fit their training images than unseen ones, both with dropout off.
        gaps[seed] = m["last_epoch"]["train_accuracy"] - history[seed][-1]["val_accuracy"]
        print(f"{seed:>6} {best['epoch']:>10} {best['val_accuracy']:>9.4f} {m['accuracy']:>9.4f} {m['f1']:>8.4f} "
              f"{m['last_epoch']['test_accuracy']:>15.4f} {gaps[seed]:>13.4f}")
    print()
    print(format_summary("test accuracy", [m["accuracy"] for m in metrics.values()]))
    print(format_summary("test F1 (weighted)", [m["f1"] for m in metrics.values()]))
    print(format_summary("last-epoch test accuracy", [m["last_epoch"]["test_accuracy"] for m in metrics.values()]))
    print(format_summary("last-epoch train accuracy", [m["last_epoch"]["train_accuracy"] for m in metrics.values()]))
    print(format_summary("train-val gap, last epoch", list(gaps.values())))
    not_last = sum(max(h, key=lambda e: e["val_accuracy"])["epoch"] != len(h) for h in history.values())
    print(f"best validation epoch is not the last in {not_last} of {len(history)} runs")

    print("\nValidation accuracy per epoch, mean and std over seeds:")
    for epoch in range(1, min(len(h) for h in history.values()) + 1):
        s = summarize([h[epoch - 1]["val_accuracy"] for h in history.values()])
        print(f"  epoch {epoch:>2}: {s['mean']:.4f} +- {s['std']:.4f}")

    print(f"\n{'class':<12} {'F1 mean':>8} {'std':>7} {'min':>7} {'max':>7}")
    for name in CLASSES:
        s = summarize([m["per_class"][name]["f1"] for m in metrics.values()])
        print(f"{name:<12} {s['mean']:>8.4f} {s['std']:>7.4f} {s['min']:>7.4f} {s['max']:>7.4f}")

    counts = np.array([m["confusion_matrix"] for m in metrics.values()])  # (runs, 10, 10)
    off = counts.sum(axis=0) * (1 - np.eye(len(CLASSES), dtype=int))  # the mistakes only
    print("\nMost confused, summed over seeds (per run: mean +- std):")
    for flat in np.argsort(off, axis=None, kind="stable")[::-1][:8]:
        i, j = divmod(int(flat), len(CLASSES))
        if off[i, j] == 0:
            break
        per_run = counts[:, i, j]
        print(f"  {CLASSES[i]} predicted as {CLASSES[j]}: {off[i, j]} ({per_run.mean():.1f} +- "
              f"{per_run.std(ddof=1) if len(per_run) > 1 else 0:.1f})")


if __name__ == "__main__":
    main()
