"""Interrupted runs: --resume continues bit for bit, no run is replaced silently, every refusal leaves files alone."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import evaluate
import train
from conftest import OFFLINE, ROOT, assert_clean_error, run_main, snapshot

FLAGS = ("--batch-size", "16", "--lr", "3e-3", "--seed", "5")


def run(data, out, *flags):
    result = run_main(train.main, "--data-dir", data, "--out-dir", out, *FLAGS, *flags)
    assert result.returncode == 0, result.stderr
    return result


def assert_same_run(a, b):
    """The same weights, metrics and history (but for the seconds each epoch took)."""
    weights_a, weights_b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (a, b))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()

    def epochs(folder):
        history = json.loads((folder / "history.json").read_text())
        settings = {k: v for k, v in history["args"].items() if k != "out_dir"}  # the folders differ, of course
        return settings, history["run"], [{k: v for k, v in h.items() if k != "seconds"} for h in history["epochs"]]
    assert epochs(a) == epochs(b)


@pytest.fixture(scope="module")
def straight(fake_data, tmp_path_factory):
    """Uninterrupted runs of 3 and 4 epochs, to compare the resumed ones with."""
    folders = {n: tmp_path_factory.mktemp(f"straight{n}") for n in (3, 4)}
    for n, folder in folders.items():
        run(fake_data, folder, "--epochs", n)
    return folders


def start_and_stop(data, out, sig, *flags):
    """Start train.py in a new process and send it sig once its first epoch is saved; returns (result, epochs saved)."""
    process = subprocess.Popen([sys.executable, "train.py", "--data-dir", data, "--out-dir", str(out), *FLAGS, *flags],
                               cwd=ROOT, env={**os.environ, **OFFLINE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not (out / "resume.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    saved = torch.load(out / "resume.pt", weights_only=True)["history"]
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), len(saved)


def test_a_killed_run_resumes_to_the_uninterrupted_result(fake_data, tmp_path, straight):
    # 40 epochs asked, so that the kill lands mid-run; then --epochs 3 is what the straight run had.
    result, saved = start_and_stop(fake_data, tmp_path, signal.SIGKILL, "--epochs", "40")
    assert result.returncode == -signal.SIGKILL and 1 <= saved < 40
    if saved >= 3:
        pytest.skip(f"the kill came after epoch {saved}: the machine was too slow to catch epoch 1 or 2")
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a file, as a kill mid-write leaves it")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "3")
    assert result.returncode == 0, result.stderr
    assert f"resuming after epoch {saved}" in result.stdout
    assert_same_run(tmp_path, straight[3])


def test_ctrl_c_exits_130_with_the_command_that_continues(fake_data, tmp_path, straight):
    result, saved = start_and_stop(fake_data, tmp_path, signal.SIGINT, "--epochs", "3")
    if result.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
    command = f"python train.py --resume --out-dir {tmp_path}"
    assert command in result.stderr
    assert run_main(train.main, *command.split()[2:]).returncode == 0
    assert_same_run(tmp_path, straight[3])


def test_more_epochs_on_a_finished_run_equal_a_longer_run(fake_data, tmp_path, straight):
    run(fake_data, tmp_path, "--epochs", "3")
    run(fake_data, tmp_path, "--resume", "--epochs", "4")
    assert_same_run(tmp_path, straight[4])


def test_a_run_stopped_before_its_test_is_tested(fake_data, tmp_path, straight):
    run(fake_data, tmp_path, "--epochs", "3")
    os.remove(tmp_path / "metrics.json")
    run(fake_data, tmp_path, "--resume")
    assert_same_run(tmp_path, straight[3])


@pytest.mark.parametrize("flags, message", [
    (["--seed", "1"], "--seed 1 contradicts the run"),
    (["--lr", "0.001"], "--lr 0.001 contradicts the run"),
    (["--batch-size", "64"], "--batch-size 64 contradicts the run"),
    (["--dropout", "0"], "--dropout 0.0 contradicts the run"),
    ([], "has trained its 3 epochs and been tested: nothing to do"),
    (["--epochs", "2"], "--epochs 2 is fewer than the 3"),
])
def test_resume_refusals_are_clear_errors_that_change_nothing(flags, message, straight):
    before = snapshot(straight[3])
    assert_clean_error(run_main(train.main, "--resume", "--out-dir", straight[3], *flags), message)
    assert snapshot(straight[3]) == before


@pytest.mark.parametrize("content, message", [
    (None, "no run to continue"),
    (b"garbage", "is not a readable checkpoint"),
    ({"model": {}}, "is not a resume state of this train.py"),
])
def test_resume_without_a_good_state_is_a_clear_error(content, message, fake_data, tmp_path):
    if isinstance(content, bytes):
        (tmp_path / "resume.pt").write_bytes(content)
    elif content is not None:
        torch.save(content, tmp_path / "resume.pt")
    before = snapshot(tmp_path)
    assert_clean_error(run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data), message)
    assert snapshot(tmp_path) == before


def test_a_state_with_foreign_weights_is_a_clear_error(fake_data, tmp_path, straight):
    state = torch.load(straight[3] / "resume.pt", weights_only=True)
    state["model"] = torch.nn.Linear(2, 2).state_dict()
    torch.save(state, tmp_path / "resume.pt")
    before = snapshot(tmp_path)
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data, "--epochs", "4")
    assert_clean_error(result, "is damaged or not from this train.py")
    assert snapshot(tmp_path) == before


def test_a_new_run_never_replaces_one_silently(fake_data, tmp_path, straight):
    before = snapshot(straight[3])
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", straight[3], "--seed", "9")
    assert_clean_error(result, "already holds a run (3 epochs done, best validation accuracy", "--resume",
                       "--overwrite")
    assert snapshot(straight[3]) == before
    run(fake_data, tmp_path, "--epochs", "1")
    run(fake_data, tmp_path, "--epochs", "2", "--overwrite")
    assert len(json.loads((tmp_path / "history.json").read_text())["epochs"]) == 2
    assert "last_epoch" in json.loads((tmp_path / "metrics.json").read_text())


def test_a_half_written_file_does_not_confuse_evaluate(fake_data, straight, tmp_path):
    for name in ("checkpoint.pt", "metrics.json"):
        (tmp_path / name).write_bytes((straight[3] / name).read_bytes())
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half")
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "checkpoint.pt", "--data-dir", fake_data)
    assert result.returncode == 0 and "already holds these results" in result.stdout, result.stderr
