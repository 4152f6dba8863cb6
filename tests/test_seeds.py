"""benchmarks/seeds.py: its statistics against values worked out by hand, and a two-seed study on synthetic data."""
import json
import math
import time

import numpy as np
import pytest

from benchmarks import seeds
from conftest import assert_clean_error, run_main, snapshot


def test_summary_against_values_worked_out_by_hand():
    # 0.90, 0.92, 0.94: mean 0.92; deviations -0.02, 0, 0.02, squares summing to 0.0008, over n - 1 = 2: 0.0004,
    # so the sample std is 0.02. 95% interval: 0.92 +- t(0.975; 2) * 0.02 / sqrt(3) = 0.92 +- 4.303 * 0.011547
    # = 0.92 +- 0.049687.
    s = seeds.summarize([0.90, 0.92, 0.94])
    assert s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02)
    assert (s["min"], s["max"]) == (0.90, 0.94)
    assert s["ci"] == pytest.approx((0.92 - 0.049687, 0.92 + 0.049687), abs=1e-6)
    # Two runs, 1 and 3: mean 2, std sqrt(2), interval 2 +- 12.706 * sqrt(2) / sqrt(2) = 2 +- 12.706.
    assert seeds.summarize([1, 3])["ci"] == pytest.approx((2 - 12.706, 2 + 12.706))
    # One run has no spread and no interval.
    one = seeds.summarize([0.9])
    assert one["mean"] == 0.9 and math.isnan(one["std"]) and all(math.isnan(x) for x in one["ci"])


def test_t_quantiles_shrink_towards_the_normal_ones():
    values = [seeds.T_975[df] for df in sorted(seeds.T_975)]
    assert values == sorted(values, reverse=True) and values[-1] > 1.96


@pytest.fixture(scope="module")
def study(fake_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    flags = ("--seeds", "1", "2", "--epochs", "1", "--batch-size", "16", "--data-dir", fake_data, "--out-dir", out)
    result = run_main(seeds.main, *flags)
    assert result.returncode == 0, result.stderr
    return out, flags, result


def test_rows_and_means_are_those_of_the_runs_files(study):
    out, _, result = study
    metrics = {s: json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (1, 2)}
    lines = result.stdout.splitlines()
    for seed, m in metrics.items():
        row = next(line.split() for line in lines if line.split()[:2] == [str(seed), "1"])
        assert row[3:6] == [f"{m['accuracy']:.4f}", f"{m['f1']:.4f}", f"{m['last_epoch']['test_accuracy']:.4f}"]
    accuracies = [m["accuracy"] for m in metrics.values()]
    line = next(line for line in lines if line.startswith("test accuracy"))
    assert f"mean {np.mean(accuracies):.4f}" in line and f"std {np.std(accuracies, ddof=1):.4f}" in line
    assert "(n=2)" in line


def test_a_second_call_reads_and_trains_nothing(study):
    out, flags, first = study
    before = {seed: snapshot(out / f"seed-{seed}") for seed in (1, 2)}
    start = time.perf_counter()
    again = run_main(seeds.main, *flags)
    assert again.returncode == 0, again.stderr
    assert time.perf_counter() - start < 5 and "Train Epoch" not in again.stdout
    assert again.stdout.count("finished in") == 2
    assert {seed: snapshot(out / f"seed-{seed}") for seed in (1, 2)} == before
    assert first.stdout.split("runs on")[1] == again.stdout.split("runs on")[1]


def test_a_study_with_other_settings_in_the_same_folder_is_refused(study):
    out, flags, _ = study
    assert_clean_error(run_main(seeds.main, *flags, "--dropout", "0"), "trained with other settings (dropout)")


@pytest.mark.parametrize("flags, message", [
    (["--seed", "3"], "--seed is set by seeds.py itself"),
    (["--overwrite"], "--overwrite is set by seeds.py itself"),
    (["--dropout", "2"], "--dropout must be at least 0 and below 1"),
    (["--seeds", "1", "1"], "--seeds repeats a seed"),
])
def test_bad_flags_are_clear_errors_before_any_training(flags, message, fake_data, tmp_path):
    base = ["--seeds", "1", "--data-dir", fake_data, "--out-dir", tmp_path / "s"]
    assert_clean_error(run_main(seeds.main, *base, *flags), message)
    assert not (tmp_path / "s").exists()
