"""Several workers on one study (benchmarks/seeds.py run at once, as `xargs -P` or a SLURM array starts them), each
with one thread, so that all compute the same bits: two workers at once train every seed exactly once and print the
one worker's study, bit for bit; a seed another worker holds is passed over, then waited for; a worker killed
mid-seed is continued by the next call, which ends equal to the uninterrupted study; a worker with other settings
is refused while another trains, and changes nothing."""
import re
import signal
import sys
import threading

import pytest
import torch

from benchmarks import seeds
from conftest import assert_clean_error, run_main, start_script, state_of, wait_for
from plumbing import guard

ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # the workers' processes; this one: one_thread


def study_flags(data, out, *more):
    return ["--seeds", "1", "2", "3", "--epochs", "2", "--batch-size", "16", "--data-dir", data, "--out-dir", out,
            *more]


def start_worker(data, out):
    return start_script("benchmarks/seeds.py", *study_flags(data, out), env_extra=ONE_THREAD)


def summary(output):
    # The table and every figure, not the folder's name, nor a wait for the study's folder to write study.png.
    return re.sub(r"waiting for .*\n", "", output.split("runs on", 1)[1].split("\nWrote")[0])


def trained(output):
    return re.search(r"this call trained (.*)\.", output).group(1)


@pytest.fixture
def one_thread():
    """This process computes as the workers do, with one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_worker(fake_data, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_main(seeds.main, *study_flags(fake_data, tmp_path_factory.mktemp("one")))
    finally:
        torch.set_num_threads(threads)
    assert result.returncode == 0 and trained(result.stdout) == "1, 2, 3", result.stdout + result.stderr
    return result.stdout


def test_two_workers_train_each_seed_once_and_print_the_one_workers_study(fake_data, one_worker, tmp_path,
                                                                          one_thread):
    other = start_worker(fake_data, tmp_path / "study")  # one in a process of its own, one here, at once
    here = run_main(seeds.main, *study_flags(fake_data, tmp_path / "study"))
    outputs = [other.communicate(timeout=300)[0], here.stdout]
    assert other.returncode == here.returncode == 0, outputs
    for seed in (1, 2, 3):  # one start each, never resumed
        assert sum(out.count(f"writing to {tmp_path / 'study' / f'seed-{seed}'}\n") for out in outputs) == 1
    assert "resuming" not in "".join(outputs)
    mine = [set(trained(out).split(", ")) - {"none of them"} for out in outputs]
    assert mine[0] | mine[1] == {"1", "2", "3"} and not mine[0] & mine[1], outputs
    for out in outputs:  # (on a mismatch, all three printed, to find what differs)
        assert summary(out) == summary(one_worker), (summary(out), summary(one_worker), outputs)


def test_a_seed_another_worker_holds_is_passed_over_then_waited_for(fake_data, tmp_path):
    holder = guard.held(tmp_path / "study" / "seed-2")  # as a live worker training seed 2 would
    holder.__enter__()

    seen_then = []

    def release_once_waited_for():  # the other worker is done with it, or died: either way the lock is free
        try:
            wait_for(lambda: "seed 2: waiting" in getattr(sys.stdout, "getvalue", str)())
            seen_then.append(sorted(p.name for p in (tmp_path / "study" / "seed-2").iterdir()))
        finally:
            holder.__exit__(None, None, None)
    releaser = threading.Thread(target=release_once_waited_for)
    releaser.start()
    result = run_main(seeds.main, *study_flags(fake_data, tmp_path / "study"))
    releaser.join()
    assert result.returncode == 0, result.stderr
    assert seen_then == [[]]  # nothing of seed 2 written while another held it
    passed_over = result.stdout.index("seed 2: ")
    assert "in use by another command" in result.stdout[passed_over:].splitlines()[0]
    assert result.stdout.index(f"writing to {tmp_path / 'study' / 'seed-3'}") < result.stdout.index("seed 2: waiting")
    assert trained(result.stdout) == "1, 2, 3"  # in the order of --seeds


def test_a_worker_killed_mid_seed_is_continued_and_the_study_ends_as_if_never_stopped(fake_data, one_worker,
                                                                                      tmp_path, one_thread):
    for attempt in range(5):  # until the kill lands in the middle of seed 1 (on a loaded machine it may not)
        study = tmp_path / str(attempt)
        worker = start_worker(fake_data, study)
        state = study / "seed-1" / "state.pt"
        wait_for(state.exists, worker)  # the first epoch of seed 1 saved, the second one training
        worker.send_signal(signal.SIGSTOP)
        if state_of(state.parent)["test"] is None:
            break
        worker.kill()
        worker.communicate()
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    again = run_main(seeds.main, *study_flags(fake_data, study))
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch 1" in again.stdout and trained(again.stdout) == "1, 2, 3"
    assert summary(again.stdout) == summary(one_worker)


def test_a_worker_with_other_settings_is_refused_while_another_trains(fake_data, tmp_path, monkeypatch):
    real, other = seeds.train.train_one_epoch, []

    def and_another_worker_meanwhile(*args, **kwargs):  # seed 1 saved, seed 2 training: another call starts
        if not other and (tmp_path / "study" / "seed-2").exists():
            before = (tmp_path / "study" / "study.json").read_text()
            other.append(run_main(seeds.main, *study_flags(fake_data, tmp_path / "study", "--dropout", "0.25")))
            assert (tmp_path / "study" / "study.json").read_text() == before
        return real(*args, **kwargs)
    monkeypatch.setattr(seeds.train, "train_one_epoch", and_another_worker_meanwhile)
    result = run_main(seeds.main, *study_flags(fake_data, tmp_path / "study"))
    assert_clean_error(other[0], "--dropout 0.25: the study in")
    assert "Train Epoch" not in other[0].stdout
    assert result.returncode == 0 and trained(result.stdout) == "1, 2, 3"  # the refused one took no seed from it
