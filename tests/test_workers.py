"""benchmarks/seeds.py run by several workers on one study, each a process of its own with one thread (as `xargs -P`
or a SLURM array starts them): two workers at once train every seed exactly once and print the study one worker
prints, bit for bit; a seed another worker holds is passed over, then waited for; a worker killed mid-seed is
continued by the next call, which ends equal to the uninterrupted study; a worker with other settings is refused
while another trains, and changes nothing."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import OFFLINE, ROOT, assert_clean_error, run_script, write_fake_fashion_mnist
from plumbing import guard, runs

ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # the same numerics in every process


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("data"), n_train=1000, n_test=300)  # a few seconds a seed


def study_flags(data, out, *more):
    return ["benchmarks/seeds.py", "--seeds", "1", "2", "3", "4", "--epochs", "2", "--batch-size", "16",
            "--data-dir", data, "--out-dir", str(out), *more]


def start_worker(data, out, log):
    """A worker in the background, its output in the file log."""
    return subprocess.Popen([sys.executable, *study_flags(data, out)], cwd=ROOT, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE, **ONE_THREAD})


def summary(output):
    return output.split("runs on", 1)[1].split("\nWrote")[0]  # the table and every figure, not the folder's name


def trained(output):
    return re.search(r"this call trained (.*)\.", output).group(1)


@pytest.fixture(scope="module")
def one_worker(data, tmp_path_factory):
    result = run_script(*study_flags(data, tmp_path_factory.mktemp("one")), env_extra=ONE_THREAD)
    assert result.returncode == 0 and trained(result.stdout) == "1, 2, 3, 4", result.stdout + result.stderr
    return result.stdout


def test_two_workers_train_each_seed_once_and_print_the_one_workers_study(data, one_worker, tmp_path):
    workers = [start_worker(data, tmp_path / "study", tmp_path / f"worker-{i}.log") for i in (1, 2)]
    assert [worker.wait(timeout=600) for worker in workers] == [0, 0]
    outputs = [(tmp_path / f"worker-{i}.log").read_text() for i in (1, 2)]
    for seed in (1, 2, 3, 4):  # one start each, never resumed
        assert sum(out.count(f"writing to {tmp_path / 'study' / f'seed-{seed}'}\n") for out in outputs) == 1
    assert "resuming" not in "".join(outputs)
    mine = [set(trained(out).split(", ")) - {"none of them"} for out in outputs]
    assert mine[0] | mine[1] == {"1", "2", "3", "4"} and not mine[0] & mine[1], outputs
    assert all(summary(out) == summary(one_worker) for out in outputs)


def test_a_seed_another_worker_holds_is_passed_over_then_waited_for(data, tmp_path):
    with guard.held(tmp_path / "study" / "seed-2"):  # as a live worker training seed 2 would
        worker = start_worker(data, tmp_path / "study", tmp_path / "log")
        deadline = time.monotonic() + 300
        while "seed 2: waiting" not in (tmp_path / "log").read_text() and worker.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        output = (tmp_path / "log").read_text()
        assert "seed 2: " in output and "in use by another process (pid" in output
        assert all((tmp_path / "study" / f"seed-{seed}" / "metrics.json").exists() for seed in (1, 3, 4))
        assert os.listdir(tmp_path / "study" / "seed-2") == [".lock"] and worker.poll() is None  # still waiting
    # The other worker is done with it, or died: either way the lock is free (and the empty folder gone).
    assert worker.wait(timeout=300) == 0
    assert trained((tmp_path / "log").read_text()) == "1, 2, 3, 4"  # in the order of --seeds


def test_a_worker_killed_mid_seed_is_continued_and_the_study_ends_as_if_never_stopped(data, one_worker, tmp_path):
    worker = start_worker(data, tmp_path / "study", tmp_path / "log")
    state = tmp_path / "study" / "seed-1" / "state.pt"
    deadline = time.monotonic() + 300
    while not state.exists():  # the first epoch of seed 1 saved, the second one training
        assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert runs.read_state(state.parent)["test"] is None  # killed before seed 1 was done
    again = run_script(*study_flags(data, tmp_path / "study"), env_extra=ONE_THREAD)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch 1" in again.stdout and trained(again.stdout) == "1, 2, 3, 4"
    assert summary(again.stdout) == summary(one_worker)


def test_a_worker_with_other_settings_is_refused_while_another_trains(data, tmp_path):
    worker = start_worker(data, tmp_path / "study", tmp_path / "log")
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "study" / "seed-1" / "state.pt").exists():
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.05)
        before = (tmp_path / "study" / "study.json").read_text()
        other = run_script(*study_flags(data, tmp_path / "study", "--dropout", "0.25"), env_extra=ONE_THREAD)
        assert_clean_error(other, "--dropout 0.25: the study in")
        assert "Train Epoch" not in other.stdout and (tmp_path / "study" / "study.json").read_text() == before
    finally:
        assert worker.wait(timeout=300) == 0
    assert trained((tmp_path / "log").read_text()) == "1, 2, 3, 4"  # the refused one took no seed from it
