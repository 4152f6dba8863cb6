"""Interrupted runs, on synthetic data: state.pt is the truth and every other file is written from it.

Runs killed with SIGKILL, stopped with Ctrl-C or SIGTERM, killed between the state and the files drawn from it, or
interrupted in their final test, each continued by the printed command to the uninterrupted result, bit for bit; lost,
damaged or hand-edited files written again from the state; refusals (other settings, fewer epochs, no state, a foreign
one, other data) that change nothing; an accelerator's state continued on the CPU; no run replaced without
--overwrite, which keeps the old run whole until the new one saves an epoch (a divergence, Ctrl-C, a kill, a full
disk); files the run did not write left alone, links never written through; a second train.py refused and a killed
one's lock taken over; a full disk (a real RLIMIT_FSIZE) as one error with no file left behind."""
import argparse
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from conftest import OFFLINE, ROOT, assert_clean_error, run_main, snapshot, write_fake_fashion_mnist
from plumbing import runs

FLAGS = ("--batch-size", "16", "--lr", "3e-3", "--seed", "5")
RUN_FILES = [".lock", "checkpoint.pt", "confusion_matrix.png", "learning_curves.png", "metrics.json",
             "misclassified.png", "run.json", "state.pt"]


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


def copy_run(source, folder):
    folder.mkdir(exist_ok=True)
    for name in os.listdir(source):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


@pytest.fixture(scope="module")
def straight(fake_data, tmp_path_factory):
    """Uninterrupted runs of 2, 3 and 4 epochs, to compare the resumed ones with."""
    folders = {n: tmp_path_factory.mktemp(f"straight{n}") for n in (2, 3, 4)}
    for n, folder in folders.items():
        run(fake_data, folder, "--epochs", n)
    return folders


def start_and_stop(data, out, sig, *flags):
    """Start train.py in a new process and send it sig once its first epoch is saved: (result, epochs done)."""
    process = subprocess.Popen([sys.executable, "train.py", "--data-dir", data, "--out-dir", str(out), *FLAGS, *flags],
                               cwd=ROOT, env={**os.environ, **OFFLINE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a shell
    deadline = time.monotonic() + 120
    while not (out / "run.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    done = len(runs.read_state(out)["history"])
    assert done < 3, "the signal came 2 epochs after the first save"  # an epoch here takes a tenth of a second
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), done


def test_a_killed_run_resumes_to_the_uninterrupted_result(fake_data, tmp_path, straight):
    result, done = start_and_stop(fake_data, tmp_path, signal.SIGKILL, "--epochs", "40")
    assert result.returncode == -signal.SIGKILL
    (tmp_path / "state.pt.tmp").write_bytes(b"half a file, as a kill mid-write leaves it")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "3", "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert f"resuming after epoch {done}" in result.stdout
    assert_same_run(tmp_path, straight[3])
    assert sorted(os.listdir(tmp_path)) == RUN_FILES  # the half file gone with the next save


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_prints_the_command_that_continues_as_it_can_be_run(sig, code, fake_data, tmp_path,
                                                                               straight):
    result, _ = start_and_stop(fake_data, tmp_path, sig, "--epochs", "3")
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr
    command = result.stderr.split("Continue with: ")[1].strip()
    assert command == f"python train.py --resume --out-dir {tmp_path} --epochs 3 --data-dir {fake_data}"
    assert run_main(train.main, *shlex.split(command)[2:]).returncode == 0  # as printed, its --data-dir with it
    assert_same_run(tmp_path, straight[3])


def test_more_epochs_on_a_finished_run_equal_a_longer_run(fake_data, tmp_path, straight):
    run(fake_data, tmp_path, "--epochs", "3")
    run(fake_data, tmp_path, "--resume", "--epochs", "4")
    assert_same_run(tmp_path, straight[4])
    assert sorted(os.listdir(tmp_path)) == RUN_FILES


def test_an_interrupted_final_test_is_finished_by_the_printed_command(fake_data, tmp_path, straight, monkeypatch):
    run(fake_data, tmp_path, "--epochs", "1")

    def interrupted_test(*args):
        raise KeyboardInterrupt
    real_test = train.test
    monkeypatch.setattr(train, "test", interrupted_test)
    result = run_main(train.main, "--resume", "--epochs", "2", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert result.returncode == 130
    assert f"python train.py --resume --out-dir {tmp_path} --epochs 2" in result.stderr
    assert not (tmp_path / "metrics.json").exists()  # epoch 1's test went with epoch 2's save
    monkeypatch.setattr(train, "test", real_test)
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert result.returncode == 0 and "Testing the checkpoint" in result.stdout, result.stderr
    assert_same_run(tmp_path, straight[2])  # metrics.json tests epoch 2's checkpoint, not epoch 1's


def test_a_kill_between_the_state_and_the_files_written_from_it_loses_nothing(fake_data, tmp_path, straight,
                                                                              monkeypatch):
    real_write = runs.write_file

    def killed_after_the_second_state(path, obj, *rest):
        if path.endswith("run.json") and len(obj["epochs"]) == 2:
            raise KeyboardInterrupt  # state.pt holds epoch 2; run.json and checkpoint.pt are epoch 1's
        return real_write(path, obj, *rest)
    monkeypatch.setattr(runs, "write_file", killed_after_the_second_state)
    assert run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *FLAGS, "--epochs", "3"
                    ).returncode == 130
    monkeypatch.setattr(runs, "write_file", real_write)
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert "resuming after epoch 2" in result.stdout, result.stderr
    assert_same_run(tmp_path, straight[3])


@pytest.mark.parametrize("damage", ["deleted", "damaged"])
def test_a_lost_checkpoint_is_written_again_from_the_state(damage, fake_data, tmp_path, straight):
    copy_run(straight[3], tmp_path)
    if damage == "deleted":
        os.remove(tmp_path / "checkpoint.pt")
    else:
        (tmp_path / "checkpoint.pt").write_bytes(b"damaged")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)  # finished: nothing
    assert result.returncode == 0 and "written again from state.pt" in result.stdout, result.stderr  # to train
    assert snapshot(tmp_path) == snapshot(straight[3])


def test_a_hand_edited_record_is_not_a_source_of_settings(fake_data, tmp_path, straight):
    run(fake_data, tmp_path, "--epochs", "2")
    record = json.loads((tmp_path / "run.json").read_text())
    record["settings"].update(lr=0.5, seed=99, batch_size=7, epochs=4)
    (tmp_path / "run.json").write_text(json.dumps(record))
    run(fake_data, tmp_path, "--resume", "--epochs", "4")
    assert_same_run(tmp_path, straight[4])  # run.json written again from the state, with the run's settings


@pytest.mark.parametrize("record", [b"garbage", b"[" * 200_000, b'{"best_epoch": 99, "epochs": 5}'])
def test_a_damaged_record_is_written_again_not_read(record, fake_data, tmp_path, straight):
    copy_run(straight[3], tmp_path)
    (tmp_path / "run.json").write_bytes(record)
    assert run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data).returncode == 0
    assert (tmp_path / "run.json").read_bytes() == (straight[3] / "run.json").read_bytes()


@pytest.mark.parametrize("flags, message", [
    (["--seed", "1"], "--seed 1: the run in"),
    (["--lr", "0.001"], "--lr 0.001: the run in"),
    (["--batch-size", "64"], "--batch-size 64: the run in"),
    (["--dropout", "0"], "--dropout 0.0: the run in"),
    (["--augment"], "--augment True: the run in"),
    (["--epochs", "2"], "--epochs 2 is fewer than the 3"),
])
def test_resume_refusals_are_clear_errors_that_change_nothing(flags, message, straight):
    before = snapshot(straight[3])
    assert_clean_error(run_main(train.main, "--resume", "--out-dir", straight[3], *flags), message)
    assert snapshot(straight[3]) == before


def test_resume_may_repeat_the_runs_own_settings(fake_data, tmp_path, straight):
    run(fake_data, tmp_path, "--epochs", "3")
    run(fake_data, tmp_path, "--resume", "--epochs", "4", "--lr", "3e-3")  # FLAGS again, as seeds.py passes them
    assert_same_run(tmp_path, straight[4])


@pytest.mark.parametrize("state, message", [
    (None, "no run to continue"),
    (b"garbage", "state.pt is not a readable checkpoint"),
    ({"model": {}}, "state.pt is not a run state of this train.py"),
    ({"format": "fashion-cnn run state 1"}, "from another program or version"),
])
def test_resume_without_a_good_state_is_a_clear_error(state, message, fake_data, tmp_path):
    if isinstance(state, bytes):
        (tmp_path / "state.pt").write_bytes(state)
    elif state is not None:
        torch.save(state, tmp_path / "state.pt")
    before = snapshot(tmp_path)
    assert_clean_error(run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data), message)
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
    copy_run(straight[3], tmp_path)
    state = runs.read_state(tmp_path)
    state["rng"].update(device_type="cuda", accelerator=torch.get_rng_state())  # as a CUDA run saves it
    torch.save(state, tmp_path / "state.pt")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "4", "--device", "cpu",
                      "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert "trained on cuda and continues on cpu" in result.stdout


def test_a_new_run_never_replaces_one_silently(fake_data, tmp_path, straight):
    before = snapshot(straight[3])
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", straight[3], "--seed", "9")
    assert_clean_error(result, "already holds state.pt", f"python train.py --resume --out-dir {straight[3]} "
                       f"--data-dir {fake_data}", "--overwrite")
    assert snapshot(straight[3]) == before
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.pt").write_bytes(b"someone's weights, with no state")
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "old"),
                       "already holds checkpoint.pt")


def test_overwrite_replaces_the_old_run_only_once_the_new_one_has_saved_an_epoch(fake_data, tmp_path, straight,
                                                                                 monkeypatch):
    copy_run(straight[3], tmp_path)
    before = snapshot(tmp_path)
    diverging = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--overwrite", "--lr", "1e6",
                         "--batch-size", "16", "--log-interval", "1")
    assert_clean_error(diverging, "training diverged")
    assert snapshot(tmp_path) == before
    real = train.train_one_epoch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--overwrite")
    assert result.returncode == 130 and "the run there is as it was" in result.stderr
    assert "--resume" not in result.stderr  # a command that would continue the old run is no answer
    monkeypatch.setattr(train, "train_one_epoch", real)
    real_write = runs.write_file

    def killed_at_the_first_state(path, obj, *rest):
        if path.endswith("state.pt"):
            raise KeyboardInterrupt  # as kill -9 before the new state's rename
        return real_write(path, obj, *rest)
    monkeypatch.setattr(runs, "write_file", killed_at_the_first_state)
    assert run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--overwrite").returncode == 130
    monkeypatch.setattr(runs, "write_file", real_write)
    assert snapshot(tmp_path) == before  # the old run, whole, each time
    run(fake_data, tmp_path, "--epochs", "2", "--overwrite")
    assert_same_run(tmp_path, straight[2])
    assert sorted(os.listdir(tmp_path)) == RUN_FILES


def test_overwrite_on_a_full_disk_leaves_the_old_run(fake_data, tmp_path, straight):
    copy_run(straight[3], tmp_path)
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, "train.py", "--data-dir", fake_data, "--out-dir", str(tmp_path),
                             "--epochs", "1", "--overwrite"], cwd=ROOT, env={**os.environ, **OFFLINE},
                            capture_output=True, text=True, preexec_fn=small_files)
    assert_clean_error(result, "cannot write", "state.pt", "File too large")
    assert snapshot(tmp_path) == before


def test_a_run_removes_only_files_it_wrote(fake_data, tmp_path):
    (tmp_path / "resume-2024.pdf").write_text("a cv")
    (tmp_path / "resume-drafts").mkdir()
    (tmp_path / "metrics.json.old").write_text("mine")
    run(fake_data, tmp_path, "--epochs", "2")
    assert (tmp_path / "resume-2024.pdf").read_text() == "a cv" and (tmp_path / "resume-drafts").is_dir()
    assert sorted(os.listdir(tmp_path)) == sorted(RUN_FILES + ["metrics.json.old", "resume-2024.pdf", "resume-drafts"])


@pytest.mark.parametrize("link", [".lock", "state.pt.tmp", "run.json.tmp"])
def test_a_link_planted_in_the_folder_is_never_written_through(link, fake_data, tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / link).symlink_to(tmp_path / "precious.txt")
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "run", "--epochs", "1")
    if link == ".lock":
        assert_clean_error(result, "cannot write to")
    else:
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_a_second_train_py_in_the_same_folder_is_refused_and_a_dead_ones_lock_taken_over(fake_data, tmp_path):
    run(fake_data, tmp_path, "--epochs", "1")
    process = subprocess.Popen([sys.executable, "train.py", "--resume", "--epochs", "40", "--out-dir", str(tmp_path),
                                "--data-dir", fake_data], cwd=ROOT, env={**os.environ, **OFFLINE},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while f"pid {process.pid}" not in read_quietly(tmp_path / ".lock") and time.monotonic() < deadline:
            time.sleep(0.01)
        result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data, "--epochs", "40")
        assert_clean_error(result, "is in use by another process", f"pid {process.pid}")
    finally:
        process.kill()
        process.wait()
    done = len(runs.read_state(tmp_path)["history"])
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", done + 1, "--data-dir", fake_data)
    assert result.returncode == 0 and f"resuming after epoch {done}" in result.stdout  # the dead process's lock


def read_quietly(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def small_files():  # as a full disk: writing past 2 MB fails (state.pt is about 4.7 MB)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))


def test_a_full_disk_is_one_clear_error_and_leaves_no_half_file(fake_data, tmp_path):
    result = subprocess.run([sys.executable, "train.py", "--data-dir", fake_data, "--out-dir", str(tmp_path),
                             "--epochs", "1"], cwd=ROOT, env={**os.environ, **OFFLINE}, capture_output=True,
                            text=True, preexec_fn=small_files)
    assert_clean_error(result, "cannot write", "state.pt", "File too large")
    assert os.listdir(tmp_path) == []  # nothing half-written, and nothing of a run that saved no epoch
    run(fake_data, tmp_path, "--epochs", "1")  # with room again, the same command works


@pytest.mark.parametrize("failing", ["state.pt", "metrics.json"])
def test_a_full_disk_in_the_final_test_is_one_error_and_resume_finishes_it(failing, fake_data, tmp_path, straight,
                                                                          monkeypatch):
    real_write, states = runs.write_file, []

    def full_at_the_test(path, obj, *rest):
        states.append(path) if path.endswith("state.pt") else None
        if path.endswith(failing) and (failing == "metrics.json" or len(states) == 3):  # epochs 1, 2, then the test
            raise OSError(f"cannot write {path}: No space left on device")
        return real_write(path, obj, *rest)
    monkeypatch.setattr(runs, "write_file", full_at_the_test)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *FLAGS, "--epochs", "2")
    assert_clean_error(result, f"{failing}: No space left on device")
    assert "Test accuracy" in result.stdout  # the report was printed before the write failed
    monkeypatch.setattr(runs, "write_file", real_write)
    run(fake_data, tmp_path, "--resume")
    assert_same_run(tmp_path, straight[2])


def test_a_diverged_validation_is_one_error_and_saves_nothing(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "predict", lambda *args: (float("nan"), [0], [0]))
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "1")
    assert_clean_error(result, "the validation loss became nan in epoch 1", "try a lower --lr")
    assert os.listdir(tmp_path) == []


def test_the_accelerators_generator_is_saved_for_its_own_device(fake_data, tmp_path, monkeypatch):
    asked = []

    class Accelerator:  # a stand-in for torch.cuda on a machine with two GPUs (no GPU has run this project yet)
        def get_rng_state(self, device):
            asked.append(device)
            return torch.ByteTensor([device.index])

        def get_device_name(self, device):
            return "GPU"
    monkeypatch.setattr(torch, "get_device_module", lambda device: Accelerator())
    args = argparse.Namespace(out_dir=str(tmp_path), data_dir="data", device=None, resume=False, overwrite=False,
                              **train.RECIPE)
    folder_run = runs.Run(args, dict.fromkeys(train.RECIPE), train.RECIPE)
    model = train.FashionCNN()
    folder_run.restore(model, None, None, None, {})
    epoch = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}
    folder_run.save_epoch(model, torch.optim.Adam(model.parameters()), None, train.make_loaders(fake_data)[0], epoch,
                          torch.device("cuda", 1))
    folder_run.save_test(*train.test(model, train.make_loaders(fake_data)[2], torch.device("cpu")))
    state = runs.read_state(tmp_path)
    assert asked == [torch.device("cuda", 1)] and state["rng"]["accelerator"].tolist() == [1]


def test_the_accelerators_generator_is_restored_on_its_own_device(fake_data, tmp_path, monkeypatch):
    run(fake_data, tmp_path, "--epochs", "1")
    state = runs.read_state(tmp_path)
    state["rng"].update(device_type="cuda", accelerator=torch.ByteTensor([7]))  # as a run on a GPU saves it
    torch.save(state, tmp_path / "state.pt")
    restored = []

    class Accelerator:  # a stand-in for torch.cuda
        def set_rng_state(self, generator_state, device):
            restored.append((generator_state.tolist(), device))

    class ModelOnTheSecondGPU:  # what restore() reads of a model: its device, and its weights to load
        def parameters(self):
            yield argparse.Namespace(device=torch.device("cuda", 1))

        def load_state_dict(self, weights):
            pass
    monkeypatch.setattr(torch, "get_device_module", lambda device: Accelerator())
    args = argparse.Namespace(out_dir=str(tmp_path), data_dir="data", device=None, resume=True, overwrite=False,
                              **train.RECIPE)
    folder_run = runs.Run(args, dict.fromkeys(train.RECIPE), train.RECIPE)
    folder_run.restore(ModelOnTheSecondGPU(), None, None, train.make_loaders(fake_data)[0], state["data"])
    assert restored == [([7], torch.device("cuda", 1))]
