"""benchmarks/seeds.py and stats.py: the statistics against values worked out by hand and the t quantiles against the
t distribution's integral; on synthetic data, a study whose rows and means equal its runs', read from each run's state
under its lock; --against, the differences seed by seed; a second call that trains nothing; a seed whose test was
interrupted tested by the next call; the study's settings and data kept (fixed only by a call that saved an epoch;
two first calls at once fix one), other ones refused before anything is written (study.json included), a larger
--epochs training further, the flags passed on to train.py; a study that never replaces a run nor mixes data; a
damaged study.json; its own command printed on Ctrl-C and SIGTERM; bad flags and abbreviations as train.py's."""
import fcntl
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import train
from benchmarks import seeds, stats
from conftest import (ROOT, assert_clean_error, copy_run, run_main, snapshot, start_script, state_of, wait_for,
                      write_fake_fashion_mnist)
from plumbing import guard, runs


def test_summary_against_values_worked_out_by_hand():
    # 0.90, 0.92, 0.94: mean 0.92; deviations -0.02, 0, 0.02, squares summing to 0.0008, over n - 1 = 2: 0.0004,
    # so the sample std is 0.02. 95% interval of the mean: 0.92 +- t(0.975; 2) * 0.02 / sqrt(3) = 0.92 +- 4.303 *
    # 0.011547 = 0.92 +- 0.049687. Prediction interval: 0.92 +- 4.303 * 0.02 * sqrt(1 + 1/3) = 0.92 +- 0.099373.
    s = stats.summarize([0.90, 0.92, 0.94])
    assert s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02)
    assert (s["min"], s["max"], s["n"]) == (0.90, 0.94, 3)
    assert s["ci"] == pytest.approx((0.92 - 0.049687, 0.92 + 0.049687), abs=1e-6)
    assert s["pi"] == pytest.approx((0.92 - 0.099373, 0.92 + 0.099373), abs=1e-6)
    one = stats.summarize([0.9])  # one run has no spread and no interval
    assert one["mean"] == 0.9 and one["std"] is None and one["ci"] is None


def test_the_readme_prediction_interval_from_its_ten_seeds():
    # The README's 10 seeds: mean 0.9149, std 0.0030, so one more run falls, 95% of the time, within
    # 0.9149 +- 2.262 * 0.0030 * sqrt(1.1) = 0.9149 +- 0.0071.
    s = stats.summarize(0.9149 + 0.0030 * np.array([-1, 1] * 5) * np.sqrt(9 / 10))  # std exactly 0.0030
    assert s["pi"] == pytest.approx((0.9078, 0.9220), abs=1e-4)


def test_one_and_two_seeds_print_no_interval():
    assert "std n/a (one seed)" in stats.format_summary("x", [0.9])
    two = stats.format_summary("x", [0.9, 0.92])
    assert "95% CI n/a (two seeds)" in two and "[" not in two
    assert "95% CI [" in stats.format_summary("x", [0.9, 0.91, 0.92])


def student_t_cdf(x, df, steps=200_000):
    """P(T <= x) for Student's t, by integrating its density with the trapezoid rule: an independent check."""
    from math import gamma, pi, sqrt
    t = np.linspace(0, x, steps)
    density = gamma((df + 1) / 2) / (sqrt(df * pi) * gamma(df / 2)) * (1 + t ** 2 / df) ** (-(df + 1) / 2)
    return 0.5 + float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(t)))


@pytest.mark.parametrize("df", [1, 2, 4, 9, 19, 30])
def test_t_quantiles_are_where_students_t_reaches_0_975(df):
    assert student_t_cdf(stats.T_975[df], df) == pytest.approx(0.975, abs=2e-4)


@pytest.fixture(scope="module")
def study(fake_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    flags = ("--seeds", "1", "2", "3", "--epochs", "1", "--batch-size", "16", "--data-dir", fake_data, "--out-dir", out)
    result = run_main(seeds.main, *flags)
    assert result.returncode == 0, result.stderr
    return out, flags, result


def test_rows_and_means_are_those_of_the_runs_files(study):
    out, _, result = study
    metrics = {s: json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (1, 2, 3)}
    lines = result.stdout.splitlines()
    for seed, m in metrics.items():
        row = next(line.split() for line in lines if line.split()[:2] == [str(seed), "1"])
        assert row[3:5] == [f"{m['accuracy']:.4f}", f"{m['f1']:.4f}"]
    records = [json.loads((out / f"seed-{s}" / "run.json").read_text()) for s in (1, 2, 3)]
    for seed, r in zip(metrics, records):  # the gap: the last epoch's training accuracy minus its validation's
        row = next(line.split() for line in lines if line.split()[:2] == [str(seed), "1"])
        assert row[5] == f"{r['epochs'][-1]['train_accuracy'] - r['epochs'][-1]['val_accuracy']:.4f}"
    accuracies = [m["accuracy"] for m in metrics.values()]
    line = next(line for line in lines if line.startswith("test accuracy"))
    assert f"mean {np.mean(accuracies):.4f}" in line and f"std {np.std(accuracies, ddof=1):.4f}" in line
    assert "(n=3)" in line and "95% prediction interval for one more run" in result.stdout
    best = [r["epochs"][r["best_epoch"] - 1]["val_accuracy"] for r in records]
    line = next(line for line in lines if line.startswith("best validation accuracy"))
    assert f"mean {np.mean(best):.4f}" in line and f"std {np.std(best, ddof=1):.4f}" in line


def test_against_another_study_gives_the_differences_seed_by_seed(study, fake_data, tmp_path):
    out, _, _ = study
    other = tmp_path / "lr-study"  # a learning rate that makes the runs clearly different from the study's
    result = run_main(seeds.main, "--seeds", "1", "2", "3", "--epochs", "1", "--batch-size", "16", "--lr", "0.01",
                      "--data-dir", fake_data, "--out-dir", other, "--against", out)
    assert result.returncode == 0, result.stderr
    accuracy = {(d, s): json.loads((d / f"seed-{s}" / "metrics.json").read_text())["accuracy"]
                for d in (out, other) for s in (1, 2, 3)}
    differences = [accuracy[other, s] - accuracy[out, s] for s in (1, 2, 3)]  # this study's minus the other's
    assert abs(np.mean(differences)) > 0.01  # else a difference taken the wrong way round would pass
    line = next(line for line in result.stdout.splitlines() if line.startswith("test accuracy difference"))
    assert f"mean {np.mean(differences):.4f}" in line and f"std {np.std(differences, ddof=1):.4f}" in line
    higher = sum(d > 0 for d in differences)
    assert f"higher for {higher} of 3 seeds, lower for {sum(d < 0 for d in differences)}" in result.stdout
    # A seed the other study lacks is refused before any training, and nothing is written.
    missing = run_main(seeds.main, "--seeds", "1", "4", "--epochs", "1", "--data-dir", fake_data,
                       "--out-dir", tmp_path / "new", "--against", out)
    assert_clean_error(missing, f"--against {out}: it has no finished run of seed 4")
    assert not (tmp_path / "new").exists() and "Train Epoch" not in missing.stdout


def test_a_second_call_reads_and_trains_nothing(study):
    out, flags, first = study
    before = {seed: snapshot(out / f"seed-{seed}") for seed in (1, 2, 3)}
    start = time.perf_counter()
    again = run_main(seeds.main, *flags)
    assert again.returncode == 0, again.stderr
    assert time.perf_counter() - start < 5 and "Train Epoch" not in again.stdout
    assert again.stdout.count("finished in") == 3
    assert {seed: snapshot(out / f"seed-{seed}") for seed in (1, 2, 3)} == before
    assert first.stdout.split("runs on")[1] == again.stdout.split("runs on")[1]
    # The study's settings are its own: left out, they are the first call's, not train.py's defaults.
    short = run_main(seeds.main, "--seeds", "1", "--data-dir", flags[-3], "--out-dir", out)
    assert short.returncode == 0 and "finished in" in short.stdout, short.stderr


@pytest.mark.parametrize("flags, message", [
    (["--dropout", "0"], "--dropout 0.0: the study"),
    (["--batch-size", "64"], "--batch-size 64: the study"),
    (["--epochs", "0"], "--epochs must be from 1 to 2**31 - 1"),
])
def test_other_settings_in_the_same_study_are_refused_and_change_nothing(study, flags, message):
    out, base, _ = study
    before = {seed: snapshot(out / f"seed-{seed}") for seed in (1, 2, 3)}
    assert_clean_error(run_main(seeds.main, "--seeds", "1", "2", "--data-dir", base[-3], "--out-dir", out, *flags),
                       message)
    assert {seed: snapshot(out / f"seed-{seed}") for seed in (1, 2, 3)} == before


def test_a_study_never_replaces_a_run(fake_data, tmp_path):
    flags = ["--seeds", "1", "2", "--epochs", "1", "--batch-size", "16", "--data-dir", fake_data, "--out-dir", tmp_path]
    assert run_main(seeds.main, *flags).returncode == 0
    os.remove(tmp_path / "seed-1" / "state.pt")
    before = snapshot(tmp_path / "seed-1")
    assert_clean_error(run_main(seeds.main, *flags), "seed-1 already holds run.json", "not replaced")
    assert_clean_error(run_main(seeds.main, *flags, "--dropout", "0"), "--dropout 0.0: the study")
    assert snapshot(tmp_path / "seed-1") == before
    shutil.rmtree(tmp_path / "seed-1")
    (tmp_path / "seed-2" / "state.pt").write_text("damaged")
    assert_clean_error(run_main(seeds.main, *flags), "seed-2/state.pt is not a readable checkpoint")
    (tmp_path / "other" / "seed-1").mkdir(parents=True)
    (tmp_path / "other" / "seed-1" / "checkpoint.pt").write_bytes(b"weights with no state")
    flags[-1] = tmp_path / "other"
    assert_clean_error(run_main(seeds.main, *flags), "already holds checkpoint.pt")
    assert (tmp_path / "other" / "seed-1" / "checkpoint.pt").read_bytes() == b"weights with no state"


def test_a_refused_call_changes_nothing_not_even_study_json(fake_data, tmp_path):
    flags = ["--seeds", "1", "--schedule", "onecycle", "--data-dir", fake_data, "--out-dir", tmp_path]
    assert run_main(seeds.main, *flags, "--epochs", "1").returncode == 0
    before = snapshot(tmp_path / "seed-1"), (tmp_path / "study.json").read_text()
    assert_clean_error(run_main(seeds.main, *flags, "--epochs", "2"), "onecycle schedule over 1 epochs")
    assert (snapshot(tmp_path / "seed-1"), (tmp_path / "study.json").read_text()) == before
    again = run_main(seeds.main, *flags)  # the first command, and the bare one, still work
    assert again.returncode == 0 and "finished in" in again.stdout, again.stderr


@pytest.mark.parametrize("content", ["[]", "null", '{"epochs": "1"}', "{damaged", '{"settings": [], "data": {}}',
                                     "settings of other kinds", "removed"])
def test_a_study_json_that_is_not_a_studys_is_one_clear_error(content, fake_data, tmp_path):
    """Removed by hand too: the seeds' runs are not trained again to the recipe's 10 epochs (they once were)."""
    assert call_study(fake_data, tmp_path, "--seeds", "1").returncode == 0
    study = json.loads((tmp_path / "study.json").read_text())
    if content == "removed":
        os.remove(tmp_path / "study.json")
    else:
        content = json.dumps({**study, "settings": {**study["settings"], "epochs": "1"}}) \
            if content == "settings of other kinds" else content
        (tmp_path / "study.json").write_text(content)
    before = snapshot(tmp_path / "seed-1")
    result = run_main(seeds.main, "--seeds", "1", "--data-dir", fake_data, "--out-dir", tmp_path)
    assert_clean_error(result, "study.json cannot be read")
    assert snapshot(tmp_path / "seed-1") == before and "Train Epoch" not in result.stdout
    assert os.path.exists(tmp_path / "study.json") == (content != "removed")


def test_seed_folders_swapped_are_refused_here_and_against(study, fake_data, tmp_path):
    """A seed's folder holding another seed's run is not counted as that seed, in the study or in --against."""
    out, _, _ = study
    swapped = copy_run(out, tmp_path / "swapped")
    os.rename(swapped / "seed-1", swapped / "seed-x")
    os.rename(swapped / "seed-2", swapped / "seed-1")
    os.rename(swapped / "seed-x", swapped / "seed-2")
    result = run_main(seeds.main, "--seeds", "1", "2", "--data-dir", fake_data, "--out-dir", swapped)
    assert_clean_error(result, "seed-1 holds a run with other settings than the study's (seed 2)")
    result = call_study(fake_data, tmp_path / "new", "--seeds", "1", "2", "--against", swapped)
    assert_clean_error(result, f"--against {swapped}: it has no finished run of seed 1")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("moved", ["a finished seed's folder", "the study's folder"])
def test_a_folder_moved_or_removed_mid_study_is_one_error(moved, fake_data, tmp_path, monkeypatch):
    """Outside the promise (README.md): a study's folders moved or removed while it trains. One error line."""
    real = seeds.train.train_one_epoch

    def and_meanwhile(model, loader, optimizer, device, epoch, *rest):
        if (tmp_path / "study" / "seed-2").exists() and not (tmp_path / "gone").exists():  # seed 2 under way
            os.rename(tmp_path / "study" / "seed-1" if moved.startswith("a finished") else tmp_path / "study",
                      tmp_path / "gone")
        return real(model, loader, optimizer, device, epoch, *rest)
    monkeypatch.setattr(seeds.train, "train_one_epoch", and_meanwhile)
    result = call_study(fake_data, tmp_path / "study", "--seeds", "1", "2")
    assert_clean_error(result, "no longer holds its finished run" if moved.startswith("a finished") else
                       "was moved or removed while this command worked in it")


def test_a_larger_epochs_trains_every_seed_further(fake_data, tmp_path):
    flags = ["--seeds", "1", "2", "--batch-size", "16", "--data-dir", fake_data, "--out-dir", tmp_path]
    assert run_main(seeds.main, *flags, "--epochs", "1").returncode == 0
    result = run_main(seeds.main, *flags, "--epochs", "2")
    assert result.returncode == 0 and result.stdout.count("resuming after epoch 1") == 2, result.stderr
    assert json.loads((tmp_path / "study.json").read_text())["settings"]["epochs"] == 2
    assert run_main(seeds.main, "--seeds", "1", "2", "--data-dir", fake_data, "--out-dir", tmp_path
                    ).stdout.count("finished in") == 2  # 2 epochs now, not train.py's 10


def test_an_interrupted_study_prints_its_own_command(fake_data, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(seeds.train, "train_one_epoch", interrupted)
    flags = ["--seeds", "1", "--epochs", "1", "--data-dir", fake_data, "--out-dir", tmp_path]
    result = run_main(seeds.main, *flags)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert "python benchmarks/seeds.py --seeds 1 --epochs 1" in result.stderr and "train.py" not in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--seed", "3"], "--seed is set by seeds.py itself"),
    (["--overwrite"], "--overwrite is set by seeds.py itself"),
    (["--dropout", "2"], "--dropout must be at least 0 and below 1"),
    (["--seeds", "1", "1"], "--seeds repeats a seed"),
    (["--seeds", "3", "-5"], "--seed must be from 0 to 2**64 - 1, got -5"),
])
def test_bad_flags_are_clear_errors_before_any_training(flags, message, fake_data, tmp_path):
    base = ["--seeds", "1", "--data-dir", fake_data, "--out-dir", tmp_path / "s"]
    result = run_main(seeds.main, *base, *flags)
    assert_clean_error(result, message)
    assert not (tmp_path / "s").exists() and "Train Epoch" not in result.stdout


def test_the_summary_is_read_from_each_runs_state_not_from_its_metrics_json(study):
    out, flags, first = study
    (out / "seed-2" / "metrics.json").write_text("{damaged")
    again = run_main(seeds.main, *flags)
    assert again.returncode == 0 and "Train Epoch" not in again.stdout, again.stderr
    assert first.stdout.split("runs on")[1] == again.stdout.split("runs on")[1]


def test_ctrl_c_while_reading_finished_seeds_prints_the_studys_command(study, monkeypatch):
    out, flags, _ = study

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(seeds, "print_study", interrupted)
    result = run_main(seeds.main, *flags)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert "Continue the study with: python benchmarks/seeds.py --seeds 1 2 3" in result.stderr


def test_sigterm_while_reading_finished_seeds_prints_the_studys_command(study, monkeypatch):
    out, flags, _ = study

    def terminated(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
    monkeypatch.setattr(seeds, "print_study", terminated)
    result = run_main(seeds.main, *flags)
    assert result.returncode == 143 and "Traceback" not in result.stderr
    assert "Continue the study with: python benchmarks/seeds.py --seeds 1 2 3" in result.stderr


def call_study(data_dir, out, *flags):
    return run_main(seeds.main, "--epochs", "1", "--batch-size", "16", "--data-dir", data_dir, "--out-dir", out, *flags)


def run(data_dir, out, *flags):
    result = run_main(train.main, "--data-dir", data_dir, "--out-dir", out, "--batch-size", "16", *flags)
    assert result.returncode == 0, result.stderr


def test_a_study_never_mixes_data_read_or_trained(fake_data, tmp_path):
    assert call_study(fake_data, tmp_path / "study", "--seeds", "1").returncode == 0
    other = write_fake_fashion_mnist(tmp_path / "other", seed=5)
    result = call_study(other, tmp_path / "study", "--seeds", "1", "2")
    assert_clean_error(result, "--data-dir holds other data than the study in")
    assert not os.path.exists(tmp_path / "study" / "seed-2")  # refused before it started


def test_a_studys_first_call_that_saved_nothing_fixes_nothing(fake_data, tmp_path):
    assert_clean_error(call_study(fake_data, tmp_path, "--seeds", "1", "--lr", "1e9"), "diverged")
    assert os.listdir(tmp_path) == []  # no study.json, no empty seed folder
    result = call_study(fake_data, tmp_path, "--seeds", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "study.json").read_text())["settings"]["lr"] == train.RECIPE["lr"]


def test_a_study_refuses_a_seed_without_state_before_training(fake_data, tmp_path):
    (tmp_path / "study" / "seed-2").mkdir(parents=True)
    (tmp_path / "study" / "seed-2" / "metrics.json").write_text("{}")
    result = call_study(fake_data, tmp_path / "study", "--seeds", "1", "2")
    assert_clean_error(result, "seed-2 already holds metrics.json", "not a seed of this study")
    assert "--overwrite" not in result.stderr and not os.path.exists(tmp_path / "study" / "seed-1")


def test_a_seed_of_other_settings_is_named_for_them_not_for_a_flag_never_given(fake_data, tmp_path):
    assert call_study(fake_data, tmp_path / "study", "--seeds", "1").returncode == 0
    run(fake_data, tmp_path / "study" / "seed-2", "--epochs", "1", "--tta", "--seed", "2")
    result = call_study(fake_data, tmp_path / "study", "--seeds", "1", "2")
    assert_clean_error(result, "holds a run with other settings than the study's (tta True)")
    assert "--tta False" not in result.stderr


@pytest.mark.parametrize("flag, message", [(["--dry"], "--dry-run is set by seeds.py itself"),
                                           (["--over"], "--overwrite is set by seeds.py itself"),
                                           (["--res"], "--resume is set by seeds.py itself"),
                                           (["--see", "5"], "ambiguous option: --see")])
def test_seeds_takes_abbreviations_as_train_does_or_refuses_them(flag, message, fake_data, tmp_path):
    result = call_study(fake_data, tmp_path, "--seeds", "1", *flag)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert os.listdir(tmp_path) == []


def test_seeds_abbreviated_out_and_log_mean_what_they_mean_for_train(fake_data, tmp_path):
    result = run_main(seeds.main, "--seeds", "1", "--epochs", "1", "--data-dir", fake_data, "--out", tmp_path / "x",
                      "--log", "1")
    assert result.returncode == 0, result.stderr
    assert os.path.exists(tmp_path / "x" / "seed-1" / "state.pt")
    assert result.stdout.count("Train Epoch: 1") == math.ceil(160 / 64)  # a line every batch


def test_a_study_reads_each_seed_for_its_summary_under_the_seeds_lock(fake_data, tmp_path, monkeypatch):
    assert call_study(fake_data, tmp_path, "--seeds", "1", "2").returncode == 0
    real_read, reads = runs.read_state, []

    def read_state(folder, *rest):  # the seed's folder, locked from a descriptor of its own: refused while the
        fd = os.open(folder, os.O_RDONLY)  # study holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            reads.append("unlocked")
        except BlockingIOError:
            reads.append("locked")
        finally:
            os.close(fd)
        return real_read(folder, *rest)
    monkeypatch.setattr(runs, "read_state", read_state)
    result = call_study(fake_data, tmp_path, "--seeds", "1", "2")
    assert result.returncode == 0 and "Every seed is finished" in result.stdout, result.stderr
    assert reads[-2:] == ["locked", "locked"]  # the summary's reads, seed 1 and seed 2


def test_a_study_passes_the_flags_on_and_keeps_them(fake_data, tmp_path):
    flags = ["--seeds", "1", "--epochs", "1", "--batch-size", "16", "--augment", "--batch-norm", "--data-dir",
             fake_data, "--out-dir", tmp_path]
    assert run_main(seeds.main, *flags).returncode == 0
    settings = json.loads((tmp_path / "seed-1" / "run.json").read_text())["settings"]
    assert settings["augment"] is True and settings["batch_norm"] is True
    again = run_main(seeds.main, "--seeds", "1", "--data-dir", fake_data, "--out-dir", tmp_path)
    assert again.returncode == 0 and "finished in" in again.stdout, again.stderr


def test_a_seed_whose_test_was_interrupted_is_tested_by_the_next_call_not_counted_finished(fake_data, tmp_path,
                                                                                          monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt
    assert call_study(fake_data, tmp_path / "study", "--seeds", "1").returncode == 0
    monkeypatch.setattr(seeds.train, "test", interrupted)  # seed 2's epoch saved, its test interrupted
    assert call_study(fake_data, tmp_path / "study", "--seeds", "1", "2").returncode == 130
    monkeypatch.undo()
    state = state_of(tmp_path / "study" / "seed-2")
    assert len(state["history"]) == 1 and state["test"] is None
    other = call_study(fake_data, tmp_path / "other", "--seeds", "1", "2", "--lr", "0.01", "--against",
                       tmp_path / "study")  # a study to compare with must have tested every seed
    assert_clean_error(other, f"--against {tmp_path / 'study'}: it has no finished run of seed 2")
    result = call_study(fake_data, tmp_path / "study", "--seeds", "1", "2")
    assert result.returncode == 0 and "this call trained 2." in result.stdout, result.stderr
    assert "Testing the checkpoint of epoch" in result.stdout and "Train Epoch" not in result.stdout  # tested only
    assert state_of(tmp_path / "study" / "seed-2")["test"] is not None


def test_two_first_calls_at_once_fix_one_studys_settings(fake_data, tmp_path):
    first = start_script("benchmarks/seeds.py", "--seeds", "1", "2", "--epochs", "1", "--batch-size", "16",
                         "--lr", "0.002", "--data-dir", fake_data, "--out-dir", tmp_path)
    wait_for(lambda: (tmp_path / "study.json").exists(), first)  # it has fixed its settings, and trains
    second = call_study(fake_data, tmp_path, "--seeds", "1", "2", "--lr", "0.001")
    assert first.wait(timeout=300) == 0, first.communicate()
    assert_clean_error(second, "--lr 0.001: the study in", "fixed by its first call")
    assert json.loads((tmp_path / "study.json").read_text())["settings"]["lr"] == 0.002
    assert {state_of(tmp_path / f"seed-{seed}")["settings"]["lr"] for seed in (1, 2)} == {0.002}


def test_against_a_study_on_other_data_is_refused_naming_the_files(study, tmp_path):
    out, _, _ = study
    other = write_fake_fashion_mnist(tmp_path / "other", seed=5)
    result = call_study(other, tmp_path / "new", "--seeds", "1", "2", "--against", out)
    assert_clean_error(result, f"other data than the study in {out}", "train-images-idx3-ubyte")
    assert not (tmp_path / "new").exists() and "Train Epoch" not in result.stdout


def test_a_first_call_killed_before_it_saved_an_epoch_fixes_nothing(fake_data, tmp_path):
    first = start_script("benchmarks/seeds.py", "--seeds", "1", "--epochs", "1", "--batch-size", "16",
                         "--lr", "0.002", "--data-dir", fake_data, "--out-dir", tmp_path)
    wait_for(lambda: (tmp_path / "study.json").exists(), first)  # its settings written: it trains seed 1
    first.send_signal(signal.SIGSTOP)
    assert not (tmp_path / "seed-1" / "state.pt").exists()  # no epoch saved yet (else the test proves nothing)
    first.send_signal(signal.SIGKILL)  # kill -9, as the power going: no clean-up runs
    first.communicate()
    assert (tmp_path / "study.json").exists()  # left behind, but binding no one
    result = call_study(fake_data, tmp_path, "--seeds", "1", "--lr", "0.001")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "study.json").read_text())["settings"]["lr"] == 0.001
    assert_clean_error(call_study(fake_data, tmp_path, "--seeds", "1", "--lr", "0.002"), "fixed by its first call")


def test_a_study_in_use_is_waited_for_with_a_word_and_a_runs_folder_is_refused_at_once(fake_data, tmp_path,
                                                                                          trained_run):
    folder = copy_run(trained_run, tmp_path / "run")
    for out, ends in ((tmp_path / "study", 0), (folder, 1)):
        holder = guard.held(out)  # as another command working there
        holder.__enter__()
        waited = []

        def release_once_waited_for():  # or at once, on a refusal: the call never waits forever
            try:
                wait_for(lambda: f"waiting for {out}" in getattr(sys.stdout, "getvalue", str)() or waited, timeout=120)
            finally:
                holder.__exit__(None, None, None)
        releaser = threading.Thread(target=release_once_waited_for)
        releaser.start()
        result = call_study(fake_data, out, "--seeds", "1")
        waited.append(True)
        releaser.join()
        assert result.returncode == ends, result.stderr
        assert (f"waiting for {out}: another command is working in it" in result.stdout) == (ends == 0)
    assert_clean_error(result, f"{folder} already holds", "a folder of its own")


@pytest.mark.parametrize("name", ["-study", "with space and 'quote'"])
def test_a_study_folder_of_any_name_works_and_its_continue_command_names_it(name, fake_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = name
    flags = ["--epochs", "1", "--batch-size", "16", "--data-dir", fake_data, f"--out-dir={out_dir}"]
    result = run_main(seeds.main, "--seeds", "1", *flags)
    assert result.returncode == 0 and os.path.exists(os.path.join(out_dir, "seed-1", "state.pt")), result.stderr

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(seeds.train, "train_one_epoch", interrupted)
    result = run_main(seeds.main, "--seeds", "1", "2", *flags)
    # Pasted into bash here, away from the project: the words it makes, the script's path from here first.
    command = result.stderr.split("Continue with: ")[1].strip()
    words = subprocess.run(["bash", "-c", "printf '%s\\0' " + command], capture_output=True, text=True,
                           cwd=tmp_path).stdout.split("\0")[:-1]
    assert os.path.samefile(tmp_path / words[1], os.path.join(ROOT, "benchmarks", "seeds.py"))
    assert out_dir in [word.split("=", 1)[-1] for word in words]
