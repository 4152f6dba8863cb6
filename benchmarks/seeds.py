"""Train the recipe once per random seed and report its results as a distribution, not one number.

    python benchmarks/seeds.py --seeds 1 2 3 4 5 6 7 8 9 10 --out-dir seeds-study
    python benchmarks/seeds.py --seeds 1 2 3 4 5 --out-dir dropout0-study --dropout 0 --against seeds-study

Other flags go to train.py (--epochs, --batch-size, --lr, --dropout, --data-dir). Each seed trains through
train.py's own code into OUT_DIR/seed-S, one after the other, and is read from its state.pt. The study's settings
are fixed by its first call (OUT_DIR/study.json): a later call may leave them out or repeat them, and another
value is refused, but for a larger --epochs, which trains every seed further. A finished seed is read, a stopped
one resumed, and no run is ever replaced: the same command continues a study stopped at any moment.

Several workers may share one study (the same command in several processes, on one machine or on many sharing
the folder): a seed's folder lock is the claim, so a worker passes over a seed another one trains, then waits for
it at the end, and continues it if that worker died. Each prints the study once every seed of its --seeds is done.

Prints a row per seed; then mean, sample standard deviation, min, max, a 95% confidence interval of the mean and
a 95% prediction interval for one more run; validation accuracy per epoch; per class F1; the most-confused pairs.
With --against OTHER_STUDY, also the test accuracy's difference from the same seeds there, seed by seed: pairing
takes out what a seed does to both, so the interval of a change's effect is narrower than the two studies' apart.
Draws OUT_DIR/study.png: each seed's test accuracy, their mean and its interval, and the mean validation curve.
"""
import argparse
import contextlib
import json
import os
import shlex
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's files
import guard  # noqa: E402
import runs  # noqa: E402
import train  # noqa: E402
from data import CLASSES, EVAL_BATCH_SIZE, TensorLoader, checksums, fashion_mnist, split_train_val  # noqa: E402
from evaluate import predict  # noqa: E402
from metrics import accuracy  # noqa: E402
from model import FashionCNN  # noqa: E402
from pictures import study_picture  # noqa: E402

WRITE_UP = 0.9140  # the original write-up's single test accuracy, marked in study.png
# Student's t quantile t(0.975; df), for a two-sided 95% interval from n = df + 1 runs (any t table).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042}


def summarize(values):
    """{mean, std (sample, n - 1), min, max, ci: 95% interval of the mean, mean +- t * std / sqrt(n),
    pi: 95% prediction interval for one more run, mean +- t * std * sqrt(1 + 1/n)}; std None from one value."""
    values = np.asarray(values, dtype=float)
    n, mean = len(values), float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else None
    t = T_975.get(n - 1, 1.96)  # beyond 30 runs the normal quantile is within 4% of t's
    return {"mean": mean, "std": std, "min": float(values.min()), "max": float(values.max()), "n": n,
            "ci": None if std is None else (mean - t * std / np.sqrt(n), mean + t * std / np.sqrt(n)),
            "pi": None if std is None else (mean - t * std * np.sqrt(1 + 1 / n), mean + t * std * np.sqrt(1 + 1 / n))}


def format_summary(name, values):
    s = summarize(values)
    if s["n"] < 3:  # t(0.975; 1) = 12.7: from two runs an interval is wider than anything they can tell
        spread = f"std {s['std']:.4f}  95% CI n/a (two seeds)" if s["std"] is not None else "std n/a (one seed)"
    else:
        spread = f"std {s['std']:.4f}  95% CI [{s['ci'][0]:.4f}, {s['ci'][1]:.4f}]"
    return f"{name:<26} mean {s['mean']:.4f}  {spread}  min {s['min']:.4f}  max {s['max']:.4f}  (n={s['n']})"


def study_settings(out_dir, given):
    """The study's settings, from its study.json, checked against what was given by runs.continued_settings (the
    rule train.py --resume follows); at its first call, the recipe's with what was given."""
    path = os.path.join(out_dir, "study.json")
    try:
        with open(path) as f:
            fixed = json.load(f)
    except FileNotFoundError:
        return {name: train.RECIPE[name] if value is None else value for name, value in given.items()}
    except (OSError, ValueError):
        fixed = None
    types = {name: type(train.RECIPE[name]) for name in given}
    if not isinstance(fixed, dict) or {name: type(value) for name, value in fixed.items()} != types:
        raise ValueError(f"{path} cannot be read: damaged, or not a study's")
    return runs.continued_settings(given, fixed, fixed["epochs"], f"the study in {out_dir}")


def seed_state(seed, folder, settings):
    """The state of the seed's run, None if it has none; ValueError if it is not this study's (checked, not touched)."""
    state = runs.read_state(folder) if os.path.isdir(folder) else None
    if state is not None:
        runs.continued_settings({**settings, "seed": seed}, state["settings"], len(state["history"]),
                                f"the run in {folder}")
    return state


def run_seed(seed, folder, settings, given, command, wait=False):
    """Train one seed into folder through train.py's own code, a new run or continued: "trained". Its folder's lock
    is the claim: "busy" if another worker holds it, unless wait, which waits for it. A finished seed: "read"."""
    runs.make_folder(folder)
    try:
        fd = guard.lock(folder, wait)
    except ValueError as e:
        print(f"seed {seed}: {str(e).split(': wait')[0]}; on to the next free seed")
        return "busy"
    try:
        state = seed_state(seed, folder, settings)  # read under the claim: what another worker left is known
        if state is not None and len(state["history"]) == settings["epochs"] and state["test"] is not None:
            print(f"seed {seed}: finished in {folder}, read")
            return "read"
        recipe = [f"--{name.replace('_', '-')}" if value is True else f"--{name.replace('_', '-')}={value}"
                  for name, value in settings.items() if value is not False]
        train.main(["--data-dir", given.data_dir, "--out-dir", folder, "--log-interval", "10000", "--seed", str(seed)]
                   + recipe + (["--device", given.device] if given.device else []) + (["--resume"] if state else []),
                   command, fd)
        return "trained"
    finally:
        os.close(fd)


@contextlib.contextmanager
def study_lock(out_dir):
    """The study's own files (study.json, last_epoch.json, study.png), read and written by one worker at a time."""
    fd = guard.lock(out_dir, wait=True)
    try:
        yield
    finally:
        os.close(fd)


def run_key(state):
    return f"{state['id']} epoch {len(state['history'])}"


def last_epoch(folder, state, data_dir, cache):
    """The last epoch's weights (not the checkpoint's) on the test set and on the seed's training images, dropout off:
    how far the final weights fit their training images better than unseen ones. Kept in cache (the study's
    last_epoch.json) under the run's id and epoch, so that reading a finished study again takes seconds, not minutes."""
    key = run_key(state)
    if not (isinstance(cache.get(key), dict) and cache[key].keys() == {"test", "train"}):
        different = sorted(name for name, md5 in checksums(data_dir).items() if state["data"].get(name) != md5)
        if different:
            raise ValueError(f"--data-dir holds other data than the run in {folder} trained on ({', '.join(different)}"
                             " differ): its last epoch's figures are not computed on them")
        model = FashionCNN(batch_norm=state["settings"]["batch_norm"])
        model.load_state_dict(state["model"])
        train_images = split_train_val(fashion_mnist(data_dir, train=True), state["settings"]["seed"])[0]
        test_images = fashion_mnist(data_dir, train=False)
        cache[key] = {name: accuracy(*predict(model, TensorLoader(images, EVAL_BATCH_SIZE), "cpu")[1:])
                      for name, images in (("test", test_images), ("train", train_images))}
    return cache[key]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other flags go to train.py.",
                                     allow_abbrev=False)  # else --seed would be taken for --seeds
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="the random seeds to train")
    parser.add_argument("--out-dir", required=True, help="one folder per seed goes in here")
    parser.add_argument("--against", help="another study's --out-dir: compare with its runs of the same seeds")
    args, flags = parser.parse_known_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    for flag in ("--seed", "--out-dir", "--resume", "--overwrite", "--dry-run", "--log-interval"):
        if any(f == flag or f.startswith(flag + "=") for f in flags):
            parser.error(f"{flag} is set by seeds.py itself")
    for seed in args.seeds:  # train.py's own checks, for every seed before any trains
        train.parse_args(flags + ["--seed", str(seed)])
    given, recipe_given = train.parse_args(flags)
    command = "python benchmarks/seeds.py " + shlex.join(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the first one ends the study with its command; more are ignored
        signal.signal(sig, guard.stop)
    try:
        against = None if args.against is None else tested_accuracies(args.against, args.seeds)  # before training
        runs.make_folder(args.out_dir)
        with study_lock(args.out_dir):  # two workers' first calls: the one that comes first fixes the settings
            settings = study_settings(args.out_dir, {k: v for k, v in recipe_given.items() if k != "seed"})
            folders = {seed: os.path.join(args.out_dir, f"seed-{seed}") for seed in args.seeds}
            for seed, folder in folders.items():  # a refused call changes nothing: every check before a write
                seed_state(seed, folder, settings)
            runs.write_file(os.path.join(args.out_dir, "study.json"), settings)
        # Each free seed, then each another worker held: waited for, and continued if its worker died.
        done = {seed: run_seed(seed, folder, settings, given, command) for seed, folder in folders.items()}
        for seed in [seed for seed, outcome in done.items() if outcome == "busy"]:
            print(f"seed {seed}: waiting for the worker that holds it")
            done[seed] = run_seed(seed, folders[seed], settings, given, command, wait=True)
        trained = [seed for seed, outcome in done.items() if outcome == "trained"]
        print(f"\nEvery seed is finished; this call trained {', '.join(map(str, trained)) or 'none of them'}.")
        states = {seed: runs.read_state(folder) for seed, folder in folders.items()}
        with study_lock(args.out_dir):
            cache_path = os.path.join(args.out_dir, "last_epoch.json")
            try:
                with open(cache_path) as f:
                    cache = dict(json.load(f))
            except (OSError, ValueError, TypeError):  # none yet, or damaged: computed again
                cache = {}
            last = {seed: last_epoch(folders[seed], state, given.data_dir, cache) for seed, state in states.items()}
            runs.write_file(cache_path, {run_key(s): last[seed] for seed, s in states.items()})
            metrics = {seed: state["test"]["report"] for seed, state in states.items()}
            print_study(states, metrics, last)
            if against is not None:
                print_against(args.against, metrics, against)
            runs.write_file(os.path.join(args.out_dir, "study.png"), draw_study(states, metrics))
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        guard.interrupted(e, f"Continue the study with: {command}")
    print(f"\nWrote {os.path.join(args.out_dir, 'study.png')}")


def tested_accuracies(study_dir, seeds):
    """{seed: test accuracy} of another study's finished runs; ValueError naming the first seed it lacks."""
    accuracies = {}
    for seed in seeds:
        state = runs.read_state(os.path.join(study_dir, f"seed-{seed}"))
        if state is None or state["test"] is None:
            raise ValueError(f"--against {study_dir}: it has no finished run of seed {seed}")
        accuracies[seed] = state["test"]["report"]["accuracy"]
    return accuracies


def print_against(study_dir, metrics, against):
    """Test accuracy minus the other study's, seed by seed: the effect of what differs between the two studies."""
    differences = [metrics[seed]["accuracy"] - against[seed] for seed in metrics]
    print(f"\nAgainst {study_dir}, the same seeds (this study's test accuracy minus that one's):")
    print(format_summary("test accuracy difference", differences))
    print(f"higher for {sum(d > 0 for d in differences)} of {len(differences)} seeds, "
          f"lower for {sum(d < 0 for d in differences)}")


def draw_study(states, metrics):
    """study.png: each seed's test accuracy with the mean, its interval and the write-up's figure; and the mean
    validation curve over the seeds with its spread."""
    accuracies = {seed: m["accuracy"] for seed, m in metrics.items()}
    s = summarize(list(accuracies.values()))
    epochs = range(min(len(state["history"]) for state in states.values()))
    curves = [summarize([state["history"][e]["val_accuracy"] for state in states.values()]) for e in epochs]
    return study_picture(accuracies, s["mean"], s["ci"] if s["n"] >= 3 else None, WRITE_UP,
                         [c["mean"] for c in curves], [c["std"] or 0 for c in curves])


def print_study(states, metrics, last):
    """The table and the summaries, from each run's state (its test too) and last epoch."""
    run = next(iter(states.values()))["run"]
    print(f"\n{len(states)} runs on {run['device']}, PyTorch {run['torch']}\n")
    print(f"{'seed':>6} {'best epoch':>10} {'val. acc.':>9} {'test acc.':>9} {'test F1':>8} "
          f"{'last-epoch test':>15} {'train-val gap':>13}")
    gaps = {}
    for seed, state in states.items():
        best, m = state["best"], metrics[seed]
        gaps[seed] = last[seed]["train"] - state["history"][-1]["val_accuracy"]
        print(f"{seed:>6} {best['epoch']:>10} {best['val_accuracy']:>9.4f} {m['accuracy']:>9.4f} {m['f1']:>8.4f} "
              f"{last[seed]['test']:>15.4f} {gaps[seed]:>13.4f}")
    print()
    chosen_by = [r["best"]["val_accuracy"] for r in states.values()]  # what train.py chose the checkpoint by
    print(format_summary("best validation accuracy", chosen_by))
    accuracies = [m["accuracy"] for m in metrics.values()]
    print(format_summary("test accuracy", accuracies))
    if len(accuracies) >= 3:
        pi = summarize(accuracies)["pi"]
        print(f"{'':<26} 95% prediction interval for one more run: [{pi[0]:.4f}, {pi[1]:.4f}]")
    print(format_summary("test F1 (weighted)", [m["f1"] for m in metrics.values()]))
    print(format_summary("last-epoch test accuracy", [e["test"] for e in last.values()]))
    print(format_summary("last-epoch train accuracy", [e["train"] for e in last.values()]))
    print(format_summary("train-val gap, last epoch", list(gaps.values())))
    not_last = sum(r["best"]["epoch"] != len(r["history"]) for r in states.values())
    print(f"best validation epoch is not the last in {not_last} of {len(states)} runs")

    print("\nValidation accuracy per epoch, mean and std over seeds:")
    for epoch in range(1, min(len(r["history"]) for r in states.values()) + 1):
        s = summarize([r["history"][epoch - 1]["val_accuracy"] for r in states.values()])
        print(f"  epoch {epoch:>2}: {s['mean']:.4f} +- {s['std'] or 0:.4f}")

    print(f"\n{'class':<12} {'F1 mean':>8} {'std':>7} {'min':>7} {'max':>7}")
    for name in CLASSES:
        s = summarize([m["per_class"][name]["f1"] for m in metrics.values()])
        print(f"{name:<12} {s['mean']:>8.4f} {s['std'] or 0:>7.4f} {s['min']:>7.4f} {s['max']:>7.4f}")

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
