"""Interrupted runs: --resume continues bit for bit, no run is replaced or changed silently, refusals change nothing."""
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

import evaluate
import runs
import train
from conftest import OFFLINE, ROOT, assert_clean_error, run_main, snapshot, write_fake_fashion_mnist

FLAGS = ("--batch-size", "16", "--lr", "3e-3", "--seed", "5")


def run(data, out, *flags):
    result = run_main(train.main, "--data-dir", data, "--out-dir", out, *FLAGS, *flags)
    assert result.returncode == 0, result.stderr
    return result


def assert_same_run(a, b):
    """The same weights, metrics and record (but for the seconds each epoch took, and the run's id)."""
    weights_a, weights_b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (a, b))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()

    def record(folder):
        r = json.loads((folder / "run.json").read_text())
        return r["settings"], r["data"], r["best_epoch"], [{k: v for k, v in h.items() if k != "seconds"}
                                                           for h in r["epochs"]]
    assert record(a) == record(b)


@pytest.fixture(scope="module")
def straight(fake_data, tmp_path_factory):
    """Uninterrupted runs of 2, 3 and 4 epochs, to compare the resumed ones with."""
    folders = {n: tmp_path_factory.mktemp(f"straight{n}") for n in (2, 3, 4)}
    for n, folder in folders.items():
        run(fake_data, folder, "--epochs", n)
    return folders


def start_and_stop(data, out, sig, *flags, **popen):
    """Start train.py in a new process and send it sig once its first epoch is recorded: (result, epochs done)."""
    process = subprocess.Popen([sys.executable, "train.py", "--data-dir", data, "--out-dir", str(out), *FLAGS, *flags],
                               cwd=ROOT, env={**os.environ, **OFFLINE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, **popen)
    deadline = time.monotonic() + 120
    while not (out / "run.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    done = len(json.loads((out / "run.json").read_text())["epochs"])
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), done


def test_a_killed_run_resumes_to_the_uninterrupted_result(fake_data, tmp_path, straight):
    # 40 epochs asked, so that the kill lands mid-run; then --epochs 3 is what the straight run had.
    result, done = start_and_stop(fake_data, tmp_path, signal.SIGKILL, "--epochs", "40")
    assert result.returncode == -signal.SIGKILL and 1 <= done < 40
    if done >= 3:
        pytest.skip(f"the kill came after epoch {done}: the machine was too slow to catch epoch 1 or 2")
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a file, as a kill mid-write leaves it")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "3", "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert f"resuming after epoch {done}" in result.stdout
    assert_same_run(tmp_path, straight[3])


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_exits_with_the_command_that_continues(sig, code, fake_data, tmp_path, straight):
    result, _ = start_and_stop(fake_data, tmp_path, sig, "--epochs", "3")
    if result.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr
    command = f"python train.py --resume --out-dir {tmp_path} --epochs 3"
    assert command in result.stderr
    assert run_main(train.main, *command.split()[2:], "--data-dir", fake_data).returncode == 0
    assert_same_run(tmp_path, straight[3])


def test_more_epochs_on_a_finished_run_equal_a_longer_run(fake_data, tmp_path, straight):
    run(fake_data, tmp_path, "--epochs", "3")
    run(fake_data, tmp_path, "--resume", "--epochs", "4")
    assert_same_run(tmp_path, straight[4])
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("resume-")) == ["resume-4.pt"]


def test_an_interrupted_final_test_is_finished_by_the_printed_command(fake_data, tmp_path, straight, monkeypatch):
    run(fake_data, tmp_path, "--epochs", "1")

    def interrupted_test(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "test_checkpoint", interrupted_test)
    result = run_main(train.main, "--resume", "--epochs", "2", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert result.returncode == 130
    command = f"python train.py --resume --out-dir {tmp_path} --epochs 2"
    assert command in result.stderr  # with the new --epochs: without it, the run would seem finished at 1
    monkeypatch.setattr(train, "test_checkpoint", evaluate.test_checkpoint)
    result = run_main(train.main, *command.split()[2:], "--data-dir", fake_data)
    assert result.returncode == 0 and "Testing the checkpoint" in result.stdout, result.stderr
    assert_same_run(tmp_path, straight[2])  # metrics.json tests epoch 2's checkpoint, not epoch 1's


def test_a_kill_between_the_state_and_the_record_loses_nothing(fake_data, tmp_path, straight, monkeypatch):
    real_write = runs.write_atomically

    def killed_at_the_second_record(path, content):
        if path.endswith("run.json") and b'"epoch": 2' in content:
            raise KeyboardInterrupt  # resume-2.pt and checkpoint.pt are written, the record is not
        return real_write(path, content)
    monkeypatch.setattr(runs, "write_atomically", killed_at_the_second_record)
    assert run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *FLAGS, "--epochs", "3"
                    ).returncode == 130
    monkeypatch.setattr(runs, "write_atomically", real_write)
    refusal = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path)
    assert_clean_error(refusal, "(1 epoch done")  # what the record says, and what --resume continues from
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert "resuming after epoch 1" in result.stdout, result.stderr
    assert_same_run(tmp_path, straight[3])


@pytest.mark.parametrize("damage", ["deleted", "damaged"])
def test_a_lost_checkpoint_is_written_again_from_the_state(damage, fake_data, tmp_path, straight):
    run(fake_data, tmp_path, "--epochs", "3")
    if damage == "deleted":
        os.remove(tmp_path / "checkpoint.pt")
    else:
        (tmp_path / "checkpoint.pt").write_bytes(b"damaged")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "4", "--data-dir", fake_data)
    assert result.returncode == 0 and "written again from resume-3.pt" in result.stdout, result.stderr
    assert_same_run(tmp_path, straight[4])


def test_a_finished_runs_lost_checkpoint_is_the_best_epochs_again(fake_data, tmp_path):
    # lr 1e-2: the best epoch is an early one, so the weights to restore are not the last epoch's
    run(fake_data, tmp_path, "--epochs", "6", "--lr", "1e-2", "--seed", "1")
    original = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert original["epoch"] < 6
    os.remove(tmp_path / "checkpoint.pt")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert result.returncode == 0 and "written again" in result.stdout, result.stderr
    again = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert again["epoch"] == original["epoch"]
    assert all(torch.equal(again["model"][k], original["model"][k]) for k in original["model"])


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


@pytest.mark.parametrize("record, message", [
    (None, "no run to continue"),
    (b"garbage", "run.json cannot be read"),
    (b'{"epochs": []}', "run.json cannot be read"),
])
def test_resume_without_a_good_record_is_a_clear_error(record, message, fake_data, tmp_path):
    if record is not None:
        (tmp_path / "run.json").write_bytes(record)
    before = snapshot(tmp_path)
    assert_clean_error(run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data), message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("damage", ["another seed's state", "a NaN in the weights", "missing"])
def test_a_state_the_record_does_not_vouch_for_is_refused_by_name(damage, fake_data, tmp_path, straight):
    for name in os.listdir(straight[3]):
        (tmp_path / name).write_bytes((straight[3] / name).read_bytes())
    if damage == "another seed's state":
        other = tmp_path.with_name(tmp_path.name + "-other")
        run(fake_data, other, "--epochs", "3", "--seed", "6")
        (tmp_path / "resume-3.pt").write_bytes((other / "resume-3.pt").read_bytes())
    elif damage == "a NaN in the weights":
        state = torch.load(tmp_path / "resume-3.pt", weights_only=True)
        state["model"]["classifier.1.weight"][0, 0] = float("nan")
        torch.save(state, tmp_path / "resume-3.pt")
    else:
        os.remove(tmp_path / "resume-3.pt")
    before = snapshot(tmp_path)
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "4", "--data-dir", fake_data)
    assert_clean_error(result, "resume-3.pt is missing, or not the state the run's record vouches for")
    assert snapshot(tmp_path) == before


def test_resume_on_other_data_is_refused_but_moved_files_are_fine(fake_data, tmp_path, straight):
    other = write_fake_fashion_mnist(tmp_path / "other", seed=3)
    before = snapshot(straight[3])
    result = run_main(train.main, "--resume", "--out-dir", straight[3], "--epochs", "4", "--data-dir", other)
    assert_clean_error(result, "holds other data than the run", "train-images-idx3-ubyte")
    assert snapshot(straight[3]) == before
    moved = write_fake_fashion_mnist(tmp_path / "moved")  # the same files as fake_data, in another folder
    run(fake_data, tmp_path / "run", "--epochs", "3")
    run(moved, tmp_path / "run", "--resume", "--epochs", "4")
    assert_same_run(tmp_path / "run", straight[4])


def test_a_resumed_accelerator_run_continues_on_the_cpu_with_a_note(fake_data, tmp_path, straight):
    for name in os.listdir(straight[3]):
        (tmp_path / name).write_bytes((straight[3] / name).read_bytes())
    state = torch.load(tmp_path / "resume-3.pt", weights_only=True)
    state["rng"].update(device_type="cuda", accelerator=torch.get_rng_state())  # as a CUDA run saves it
    record = json.loads((tmp_path / "run.json").read_text())
    record["files"]["resume-3.pt"] = runs.write_atomically(str(tmp_path / "resume-3.pt"), runs.torch_bytes(state))
    (tmp_path / "run.json").write_text(json.dumps(record))
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "4", "--device", "cpu",
                      "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert "trained on cuda and continues on cpu" in result.stdout


def test_a_new_run_never_replaces_one_silently(fake_data, tmp_path, straight):
    before = snapshot(straight[3])
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", straight[3], "--seed", "9")
    assert_clean_error(result, "already holds a run (3 epochs done, best validation accuracy", "tested",
                       "--resume", "--overwrite")
    assert snapshot(straight[3]) == before
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.pt").write_bytes(b"someone's weights, with no record")
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "old"),
                       "holds a run's files but no record", "checkpoint.pt")


def test_overwrite_replaces_the_old_run_only_once_the_new_one_has_an_epoch(fake_data, tmp_path, straight,
                                                                            monkeypatch):
    for name in os.listdir(straight[3]):
        (tmp_path / name).write_bytes((straight[3] / name).read_bytes())
    before = snapshot(tmp_path)
    diverging = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--overwrite", "--lr", "1e6",
                         "--batch-size", "16", "--log-interval", "1")
    assert_clean_error(diverging, "training diverged")
    real = train.train_one_epoch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    assert run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--overwrite").returncode == 130
    assert snapshot(tmp_path) == before  # the old run, whole
    monkeypatch.setattr(train, "train_one_epoch", real)
    run(fake_data, tmp_path, "--epochs", "2", "--overwrite")
    assert_same_run(tmp_path, straight[2])
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "confusion_matrix.png", "learning_curves.png",
                                            "metrics.json", "misclassified.png", "resume-2.pt", "run.json"]


def test_a_second_train_py_in_the_same_folder_is_refused_and_a_dead_ones_lock_taken_over(fake_data, tmp_path,
                                                                                         straight):
    run(fake_data, tmp_path, "--epochs", "1")
    process = subprocess.Popen([sys.executable, "train.py", "--resume", "--epochs", "40", "--out-dir", str(tmp_path),
                                "--data-dir", fake_data], cwd=ROOT, env={**os.environ, **OFFLINE},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while f"pid {process.pid}" not in read_quietly(tmp_path / ".lock") and time.monotonic() < deadline:
            time.sleep(0.01)
        result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data, "--epochs", "40")
        assert_clean_error(result, "is in use by another train.py", f"pid {process.pid}")
    finally:
        process.kill()
        process.wait()
    done = len(json.loads((tmp_path / "run.json").read_text())["epochs"])
    if done >= 3:
        pytest.skip("the other run got past epoch 3 before it was killed")
    run(fake_data, tmp_path, "--resume", "--epochs", "3")  # the killed process's lock is free
    assert_same_run(tmp_path, straight[3])


def read_quietly(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def test_a_full_disk_is_one_clear_error_and_leaves_no_half_file(fake_data, tmp_path):
    def small_files():  # as a full disk: writing past 2 MB fails (resume-1.pt is about 4.7 MB)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
    result = subprocess.run([sys.executable, "train.py", "--data-dir", fake_data, "--out-dir", str(tmp_path),
                             "--epochs", "1"], cwd=ROOT, env={**os.environ, **OFFLINE}, capture_output=True,
                            text=True, preexec_fn=small_files)
    assert_clean_error(result, "cannot write", "resume-1.pt", "File too large")
    assert os.listdir(tmp_path) == []  # nothing half-written, and nothing of a run that recorded no epoch
    run(fake_data, tmp_path, "--epochs", "1")  # with room again, the same command works


def test_a_half_written_file_does_not_confuse_evaluate(fake_data, straight, tmp_path):
    for name in ("checkpoint.pt", "metrics.json"):
        (tmp_path / name).write_bytes((straight[3] / name).read_bytes())
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half")
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "checkpoint.pt", "--data-dir", fake_data)
    assert result.returncode == 0 and "already holds these results" in result.stdout, result.stderr


def test_a_full_disk_in_the_final_test_is_one_error_and_resume_finishes_it(fake_data, tmp_path, straight,
                                                                          monkeypatch):
    real_write = runs.write_atomically

    def full_at_the_test(path, content):
        if path.endswith("metrics.json"):
            raise OSError(f"cannot write {path}: No space left on device")
        return real_write(path, content)
    monkeypatch.setattr(runs, "write_atomically", full_at_the_test)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *FLAGS, "--epochs", "2")
    assert_clean_error(result, "metrics.json: No space left on device")
    assert "Test accuracy" in result.stdout  # the report was printed before the write failed
    monkeypatch.setattr(runs, "write_atomically", real_write)
    run(fake_data, tmp_path, "--resume")
    assert_same_run(tmp_path, straight[2])


def test_the_accelerators_generator_is_saved_for_its_own_device(fake_data, tmp_path, monkeypatch):
    asked = []

    class Accelerator:  # a stand-in for torch.cuda on a machine with two GPUs
        def get_rng_state(self, device):
            asked.append(device)
            return torch.ByteTensor([device.index])

        def get_device_name(self, device):
            return "GPU"
    monkeypatch.setattr(torch, "get_device_module", lambda device: Accelerator())
    model = train.FashionCNN()
    loader = train.make_loaders(fake_data)[0]
    folder_run = runs.Run(str(tmp_path), None, replacing=False)
    folder_run.data = {}
    history = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}]
    optimizer = torch.optim.Adam(model.parameters())
    folder_run.save_epoch(model, optimizer, None, loader, history, {}, torch.device("cuda", 1))
    state = torch.load(tmp_path / "resume-1.pt", weights_only=True)
    assert asked == [torch.device("cuda", 1)] and state["rng"]["accelerator"].tolist() == [1]
