"""Train the recipe once per random seed and report its results as a distribution, not one number.

    python benchmarks/seeds.py --seeds 1 2 3 4 5 6 7 8 9 10 --out-dir seeds-study
    python benchmarks/seeds.py --seeds 1 2 3 4 5 --out-dir dropout0-study --dropout 0 --against seeds-study

Other flags go to train.py, whose code trains each seed into OUT_DIR/seed-S; the first call fixes the settings
(study.json), a larger --epochs trains every seed further, a stopped seed resumes, no run is replaced. Workers may
run the same command at once: a seed's folder lock is its claim (a held seed is passed over, waited for at the
end, and continued if its worker died). Prints each seed's row, the spread and 95% intervals, validation accuracy
per epoch, per class F1; with --against, the differences from the same seeds there; draws study.png.
"""
import argparse
import json
import os
import shlex
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's files
import train  # noqa: E402
from data import CLASSES  # noqa: E402
from plumbing import guard, runs  # noqa: E402
from plumbing.pictures import study_picture  # noqa: E402

WRITE_UP = 0.9140  # the original write-up's single test accuracy, marked in study.png
# Student's t quantile t(0.975; df), for a two-sided 95% interval from n = df + 1 runs (any t table).
T_975 = dict(enumerate([12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
                        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
                        2.052, 2.048, 2.045, 2.042], start=1))


def summarize(values):
    """{mean, std (sample, n - 1), min, max, n, ci: 95% interval of the mean, mean +- t * std / sqrt(n), pi: 95%
    prediction interval for one more run, mean +- t * std * sqrt(1 + 1/n)}; std, ci and pi None from one value."""
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
    """The study's settings from its study.json, checked against those given by the rule train.py --resume follows
    (runs.continued_settings); at its first call, the recipe's with those given."""
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
        recipe = [f"--{name.replace('_', '-')}" + ("" if value is True else f"={value}")
                  for name, value in settings.items() if value is not False]
        train.main(["--data-dir", given.data_dir, "--out-dir", folder, "--log-interval", "10000", "--seed", str(seed)]
                   + recipe + (["--device", given.device] if given.device else []) + (["--resume"] if state else []),
                   command, fd)
        return "trained"
    finally:
        os.close(fd)


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
        against = {} if args.against is None else {
            seed: runs.read_state(os.path.join(args.against, f"seed-{seed}")) for seed in args.seeds}
        for seed, state in against.items():  # every seed finished there, checked before any trains here
            if state is None or state["test"] is None:
                raise ValueError(f"--against {args.against}: it has no finished run of seed {seed}")
        with guard.locked(args.out_dir):  # one worker at a time: the first call fixes the settings
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
        metrics = {seed: state["test"]["report"] for seed, state in states.items()}
        curves = [summarize([state["history"][epoch]["val_accuracy"] for state in states.values()])  # mean, std
                  for epoch in range(min(len(state["history"]) for state in states.values()))]  # of each epoch
        print_study(states, metrics, curves)
        if against:
            differences = [metrics[seed]["accuracy"] - against[seed]["test"]["report"]["accuracy"] for seed in metrics]
            print(f"\nAgainst {args.against}, the same seeds (this study's test accuracy minus that one's):\n"
                  f"{format_summary('test accuracy difference', differences)}\nhigher for "
                  f"{sum(d > 0 for d in differences)} of {len(differences)} seeds, lower for "
                  f"{sum(d < 0 for d in differences)}")
        with guard.locked(args.out_dir):
            runs.write_file(os.path.join(args.out_dir, "study.png"), draw_study(metrics, curves))
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        guard.interrupted(e, f"Continue the study with: {command}")
    print(f"\nWrote {os.path.join(args.out_dir, 'study.png')}")


def draw_study(metrics, curves):
    """study.png: each seed's test accuracy, their mean, its interval, the write-up's; the mean validation curve."""
    accuracies = {seed: m["accuracy"] for seed, m in metrics.items()}
    s = summarize(list(accuracies.values()))
    return study_picture(accuracies, s["mean"], s["ci"] if s["n"] >= 3 else None, WRITE_UP,
                         [c["mean"] for c in curves], [c["std"] or 0 for c in curves])


def print_study(states, metrics, curves):
    """The table and the summaries, from each run's state (its test too)."""
    run = next(iter(states.values()))["run"]
    print(f"\n{len(states)} runs on {run['device']}, PyTorch {run['torch']}\n\n{'seed':>6} {'best epoch':>10} "
          f"{'val. acc.':>9} {'test acc.':>9} {'test F1':>8} {'train-val gap':>13}")
    # The last epoch's training accuracy (dropout on) minus its validation's: how much better the end fits seen images.
    gaps = [state["history"][-1]["train_accuracy"] - state["history"][-1]["val_accuracy"] for state in states.values()]
    for (seed, state), gap in zip(states.items(), gaps):
        print(f"{seed:>6} {state['best']['epoch']:>10} {state['best']['val_accuracy']:>9.4f} "
              f"{metrics[seed]['accuracy']:>9.4f} {metrics[seed]['f1']:>8.4f} {gap:>13.4f}")
    accuracies = [m["accuracy"] for m in metrics.values()]
    print("\n" + format_summary("best validation accuracy", [s["best"]["val_accuracy"] for s in states.values()]))
    print(format_summary("test accuracy", accuracies))
    if len(accuracies) >= 3:
        pi = summarize(accuracies)["pi"]
        print(f"{'':<26} 95% prediction interval for one more run: [{pi[0]:.4f}, {pi[1]:.4f}]")
    print(format_summary("test F1 (weighted)", [m["f1"] for m in metrics.values()]))
    print(format_summary("train-val gap, last epoch", gaps))
    not_last = sum(s["best"]["epoch"] != len(s["history"]) for s in states.values())
    print(f"best validation epoch is not the last in {not_last} of {len(states)} runs")
    print("\nValidation accuracy per epoch, mean and std over seeds:\n" + "\n".join(
        f"  epoch {epoch:>2}: {s['mean']:.4f} +- {s['std'] or 0:.4f}" for epoch, s in enumerate(curves, start=1)))
    print(f"\n{'class':<12} {'F1 mean':>8} {'std':>7} {'min':>7} {'max':>7}")
    for name in CLASSES:
        s = summarize([m["per_class"][name]["f1"] for m in metrics.values()])
        print(f"{name:<12} {s['mean']:>8.4f} {s['std'] or 0:>7.4f} {s['min']:>7.4f} {s['max']:>7.4f}")


if __name__ == "__main__":
    main()
