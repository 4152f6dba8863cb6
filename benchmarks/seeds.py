"""Train the recipe once per random seed and report its results as a distribution, not one number.

    python benchmarks/seeds.py --seeds 1 2 3 4 5 6 7 8 9 10 --out-dir seeds-study
    python benchmarks/seeds.py --seeds 1 2 3 4 5 --out-dir dropout0-study --dropout 0 --against seeds-study

Other flags are train.py's, whose code trains each seed into OUT_DIR/seed-S; the first seed that saves an epoch fixes
the settings and data (study.json), a larger --epochs trains every seed further, a stopped seed resumes, no run is
replaced; workers may run the same command at once (a seed's lock is its claim). Prints each seed's row, the spread and
95% intervals, validation accuracy per epoch, per class F1, with --against each seed's difference; draws study.png."""
import argparse
import contextlib
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's files
import train  # noqa: E402
from benchmarks.stats import format_summary, summarize  # noqa: E402
from data import CLASSES, checksums, fashion_mnist  # noqa: E402
from plumbing import devices, guard, pictures, runs  # noqa: E402
from plumbing.settings import check_data, continued_settings  # noqa: E402

WRITE_UP = 0.9140  # the original write-up's single test accuracy, marked in study.png


def saved(out_dir):  # the seeds that saved an epoch: what fixes a study's settings (no call stopped before does)
    return glob.glob(os.path.join(glob.escape(out_dir), "seed-*", "state.pt"))


def study_settings(out_dir, given, data):
    """The recipe's settings with those given until a seed saves an epoch; then study.json's, continued as --resume."""
    path = os.path.join(out_dir, "study.json")
    if not saved(out_dir):  # a call that saved nothing fixed nothing; once one has, study.json holds what it fixed
        return {name: train.RECIPE[name] if value is None else value for name, value in given.items()}
    study = None  # missing or not JSON: refused below
    with contextlib.suppress(OSError, ValueError), open(path) as f:
        study = json.load(f)
    if not isinstance(study, dict) or {k: type(v) for k, v in study.items()} != {"settings": dict, "data": dict} or {
            k: type(v) for k, v in study["settings"].items()} != {k: type(train.RECIPE[k]) for k in given}:
        raise ValueError(f"{path} cannot be read: missing, damaged, or not a study's of this version")
    check_data(study, data, f"the study in {out_dir}")
    return continued_settings(given, study["settings"], study["settings"]["epochs"], f"the study in {out_dir}")


def seed_state(seed, folder, settings, data):
    """The seed's run state or None; checked, not touched: ValueError if not this study's (other settings or data)."""
    if (state := runs.read_state(folder, train.RECIPE)) is None:  # no run there, or a run's files without a state
        guard.refuse_to_replace(folder, "not a seed of this study: choose another --out-dir")
        return None
    if different := [f"{name} {value}" for name, value in state["settings"].items()
                     if name != "epochs" and value != {**settings, "seed": seed}[name]]:
        raise ValueError(f"{folder} holds a run with other settings than the study's ({', '.join(different)}): "
                         "not a seed of this study; choose another --out-dir")
    continued_settings({"epochs": settings["epochs"]}, state["settings"], len(state["history"]),
                            f"the run in {folder}")
    check_data(state, data, f"the run in {folder}")
    return state


def run_seed(seed, folder, settings, data, given, command, wait=False):
    """Train one seed into folder through train.py's own code, a new run or continued: "trained", "read" or "busy"."""
    try:
        with guard.held(folder, wait) as lock:  # its lock is the claim: "busy" if another worker holds it, unless wait
            state = seed_state(seed, folder, settings, data)  # read under the claim: what another worker left
            if state is not None and len(state["history"]) == settings["epochs"] and state["test"] is not None:
                print(f"seed {seed}: finished in {folder}, read")
                return "read"
            flags = {"data_dir": given.data_dir, "out_dir": folder, "log_interval": given.log_interval, "seed": seed,
                     **settings, "device": given.device or False, "resume": state is not None}  # False: left out
            args, recipe_given = train.parse_args([  # as --name=value: a value that starts with a dash stays one
                f"--{name.replace('_', '-')}" + ("" if value is True else f"={value}") for name, value in flags.items()
                if value is not False])
            with runs.open_run(args, recipe_given, train.RECIPE, command, lock) as run:
                train.train(args, run)
            return "trained"
    except BlockingIOError as e:
        print(f"seed {seed}: {str(e).split(': wait')[0]}; on to the next free seed")
        return "busy"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    # One parser for seeds.py's flags and train.py's: an abbreviation means what it means there, or is refused.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="The other flags are train.py's.")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="the random seeds to train")
    parser.add_argument("--against", help="another study's --out-dir: compare with its runs of the same seeds")
    args, recipe_given = train.parse_args(argv, parser, out_dir=None, log_interval=10000)  # a line an epoch
    refused = [flag for flag, given in (("--seed", recipe_given["seed"] is not None), ("--resume", args.resume),
                                        ("--overwrite", args.overwrite), ("--dry-run", args.dry_run)) if given]
    if refused or args.out_dir is None or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"{refused[0]} is set by seeds.py itself" if refused else "--out-dir (the study's) is required"
                     if args.out_dir is None else f"--seeds repeats a seed: {args.seeds}")
    for seed in args.seeds:  # train.py's own rule for a seed, for every seed before any trains
        train.parse_args(["--seed", str(seed)])
    command = guard.command("benchmarks/seeds.py", *argv)  # as it can be pasted
    devices.use_strict_fp32()  # train.py's numerics, for every seed
    guard.catch_signals()  # the first Ctrl-C, SIGTERM or a closed output ends the study with its command
    try:
        against = {} if args.against is None else {
            seed: runs.read_state(os.path.join(args.against, f"seed-{seed}"), train.RECIPE) for seed in args.seeds}
        for seed, state in against.items():  # every seed finished there, checked before any trains here
            if state is None or state["test"] is None or state["settings"]["seed"] != seed:
                raise ValueError(f"--against {args.against}: it has no finished run of seed {seed}")
        for split in (True, False):  # the files there, or downloaded, before their checksums
            fashion_mnist(args.data_dir, train=split)
        data = checksums(args.data_dir)
        for state in against.values():  # compared only on the same images
            check_data(state, data, f"the study in {args.against}")
        folders, done = {seed: os.path.join(args.out_dir, f"seed-{seed}") for seed in args.seeds}, {}
        refuse_a_run = "a study goes into a folder of its own: choose another --out-dir"
        guard.refuse_to_replace(args.out_dir, refuse_a_run)  # at once, not after waiting for the folder
        with guard.held(args.out_dir, wait=True):  # one call at a time here: a refused one changes nothing
            guard.refuse_to_replace(args.out_dir, refuse_a_run)
            settings = study_settings(args.out_dir, {k: v for k, v in recipe_given.items() if k != "seed"}, data)
            for seed, folder in folders.items():  # every seed, read or to train, checked before any trains
                seed_state(seed, folder, settings, data)
            path = os.path.join(args.out_dir, "study.json")
            guard.write_file(path, guard.encode(path, {"settings": settings, "data": data}))
            if not saved(args.out_dir):  # this call fixes the settings with its first seed, trained under the
                try:  # study's lock: no other call fixes others meanwhile, and a call killed before saving fixes none
                    done[args.seeds[0]] = run_seed(args.seeds[0], folders[args.seeds[0]], settings, data, args, command)
                finally:
                    if not saved(args.out_dir):  # it saved nothing: nothing to keep
                        guard.remove(args.out_dir, ["study.json"])
        for seed, folder in folders.items():  # each free seed; then each that another worker held, waited for
            done[seed] = done.get(seed) or run_seed(seed, folder, settings, data, args, command)
        for seed in [seed for seed, outcome in done.items() if outcome == "busy"]:  # (continued, if that one died)
            print(f"seed {seed}: waiting for the worker that holds it")
            done[seed] = run_seed(seed, folders[seed], settings, data, args, command, wait=True)
        trained = [seed for seed, outcome in done.items() if outcome == "trained"]
        print(f"\nEvery seed is finished; this call trained {', '.join(map(str, trained)) or 'none of them'}.")
        states = {}
        for seed, folder in folders.items():  # each under its lock: a worker training it further is waited for
            with guard.held(folder, wait=True):
                states[seed] = seed_state(seed, folder, settings, data)
            if states[seed] is None or states[seed]["test"] is None:  # outside the promise: removed by hand meanwhile
                raise ValueError(f"{folder} no longer holds its finished run: run the same command again")
        accuracies = {seed: state["test"]["report"]["accuracy"] for seed, state in states.items()}
        curves = [summarize([state["history"][epoch]["val_accuracy"] for state in states.values()])  # mean, std
                  for epoch in range(min(len(state["history"]) for state in states.values()))]  # of each epoch
        print_study(states, accuracies, curves)
        if against:
            diffs = [accuracies[seed] - against[seed]["test"]["report"]["accuracy"] for seed in accuracies]
            print(f"\nAgainst {args.against}, the same seeds (this study's test accuracy minus that one's):\n"
                  f"{format_summary('test accuracy difference', diffs)}\nhigher for {sum(d > 0 for d in diffs)} of "
                  f"{len(diffs)} seeds, lower for {sum(d < 0 for d in diffs)}")
        s = summarize(list(accuracies.values()))  # study.png: the mean's interval from three seeds on
        picture = pictures.study_picture(accuracies, s["mean"], s["ci"] if s["n"] >= 3 else None, WRITE_UP,
                                         [c["mean"] for c in curves], [c["std"] or 0 for c in curves])
        with guard.held(args.out_dir, wait=True):
            guard.write_file(os.path.join(args.out_dir, "study.png"), guard.encode("study.png", picture))
    except (KeyboardInterrupt, BrokenPipeError) as e:
        guard.interrupted(e, f"Continue the study with: {command}")
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"\nWrote {os.path.join(args.out_dir, 'study.png')}")


def print_study(states, accuracies, curves):
    """The table and the summaries, from each run's state (its test too). The gap: the last epoch's training accuracy
    (dropout on) minus its validation's, how much better the end fits the images it has seen."""
    print("\n{} runs on {device}, PyTorch {torch}\n".format(len(states), **next(iter(states.values()))["run"]))
    print(f"{'seed':>6} {'best epoch':>10} {'val. acc.':>9} {'test acc.':>9} {'test F1':>8} {'train-val gap':>13}")
    gaps = [state["history"][-1]["train_accuracy"] - state["history"][-1]["val_accuracy"] for state in states.values()]
    for (seed, state), gap in zip(states.items(), gaps):
        print(f"{seed:>6} {state['best']['epoch']:>10} {state['best']['val_accuracy']:>9.4f} "
              f"{accuracies[seed]:>9.4f} {state['test']['report']['f1']:>8.4f} {gap:>13.4f}")
    print("\n" + format_summary("best validation accuracy", [s["best"]["val_accuracy"] for s in states.values()]))
    print(format_summary("test accuracy", list(accuracies.values())))
    if len(accuracies) >= 3:
        pi = summarize(list(accuracies.values()))["pi"]
        print(f"{'':<26} 95% prediction interval for one more run: [{pi[0]:.4f}, {pi[1]:.4f}]")
    print(format_summary("test F1 (weighted)", [s["test"]["report"]["f1"] for s in states.values()]))
    print(format_summary("train-val gap, last epoch", gaps))
    not_last = sum(s["best"]["epoch"] != len(s["history"]) for s in states.values())
    print(f"best validation epoch is not the last in {not_last} of {len(states)} runs")
    print("\nValidation accuracy per epoch, mean and std over seeds:\n" + "\n".join(
        f"  epoch {epoch:>2}: {s['mean']:.4f} +- {s['std'] or 0:.4f}" for epoch, s in enumerate(curves, start=1)))
    print(f"\n{'class':<12} {'F1 mean':>8} {'std':>7} {'min':>7} {'max':>7}")
    for name in CLASSES:
        s = summarize([state["test"]["report"]["per_class"][name]["f1"] for state in states.values()])
        print(f"{name:<12} {s['mean']:>8.4f} {s['std'] or 0:>7.4f} {s['min']:>7.4f} {s['max']:>7.4f}")


if __name__ == "__main__":
    main()
