"""A run's state (plumbing/runs.py) on synthetic data: state.pt is the truth and every other file is drawn from it.

Runs killed (kill -9: its folder refused to a second command while it lived, its lock free once dead), stopped
(SIGTERM, then Ctrl-C held down), killed between the state and its files or right after the state's rename,
interrupted in a save or in their final test, each continued to the uninterrupted result, bit for bit, by the command
they printed; lost, damaged or hand-edited files written again from the state; refusals (other settings, fewer
epochs, no state, a foreign or damaged one, other data) that change nothing; an accelerator's generator saved and
restored on its own device, and a run continued on the CPU; --overwrite keeping the old run whole until the new one
saves an epoch (a divergence, Ctrl-C, a failed first write, a full disk); each file written whole (fsync before its
rename, the folder's after) and not executable; a continue command that pastes back."""
import argparse
import json
import math
import os
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import time

import pytest
import torch

import data
import evaluate
import train
from conftest import (ROOT, RUN, assert_clean_error, copy_run, run_main, run_script, snapshot, start_script, state_of,
                      wait_for, write_fake_fashion_mnist)
from plumbing import guard, runs

EVERY_FLAG = ["--augment", "--schedule", "onecycle", "--label-smoothing", "0.1", "--batch-norm", "--weight-decay",
              "0.05", "--tta", "--epochs", "4", *RUN]
RUN_FILES = ["checkpoint.pt", "confusion_matrix.png", "learning_curves.png", "metrics.json",
             "misclassified.png", "run.json", "state.pt"]


class Killed(BaseException):
    """What kill -9 leaves: the process stops where it is (no except clause catches it)."""


def run(data_dir, out, *flags):
    result = run_main(train.main, "--data-dir", data_dir, "--out-dir", out, *RUN, *flags)
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


def epochs_saved(folder):
    return len(state_of(folder)["history"])


def test_a_killed_run_held_its_folder_while_it_lived_and_resumes_to_the_uninterrupted_result(fake_data, tmp_path,
                                                                                              trained_run):
    """kill -9 of a run with every flag (its generators, schedule and BatchNorm all continued): while it lives, a
    second command in its folder is refused; once it is dead, its lock is free and --resume ends bit for bit."""
    run(fake_data, tmp_path / "straight", *EVERY_FLAG)
    out = tmp_path / "killed"
    for attempt in range(5):  # until it is stopped before its last epoch (on a loaded machine it may not be)
        shutil.rmtree(out, ignore_errors=True)
        process = start_script("train.py", "--data-dir", fake_data, "--out-dir", out, *EVERY_FLAG)
        wait_for(lambda: (out / "run.json").exists(), process)  # its first epoch saved
        process.send_signal(signal.SIGSTOP)
        if epochs_saved(out) < 4:
            break
        process.kill()
        process.communicate()
    for command, flags in ((train.main, ["--resume"]), (evaluate.main, ["--checkpoint", trained_run / "state.pt"])):
        result = run_main(command, *flags, "--out-dir", out, "--data-dir", fake_data)
        assert_clean_error(result, "is in use by another command")
    (out / "planted").write_text("")  # a file planted, then removed: the folder's own lock holds, for another
    os.remove(out / "planted")  # process too
    result = run_script("train.py", "--overwrite", "--out-dir", out, "--data-dir", fake_data)
    assert_clean_error(result, "is in use by another command")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    done = epochs_saved(out)
    (out / "state.pt.tmp").write_bytes(b"half a file, as a kill mid-write leaves it")
    result = run_main(train.main, "--resume", "--out-dir", out, "--data-dir", fake_data)
    assert result.returncode == 0 and f"resuming after epoch {done}" in result.stdout, result.stderr
    assert_same_run(out, tmp_path / "straight")
    assert sorted(os.listdir(out)) == RUN_FILES  # the half file gone with the next save


def test_sigterm_then_ctrl_c_held_down_end_in_one_message_whose_command_continues_the_run(fake_data, tmp_path,
                                                                                          straight):
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = start_script("train.py", "--data-dir", fake_data, "--out-dir", tmp_path / "run", *RUN,
                               "--epochs", "100000", "--device", "cpu", stdout=subprocess.DEVNULL, stderr=stderr)
    wait_for(lambda: (tmp_path / "run" / "run.json").exists(), process)
    process.send_signal(signal.SIGTERM)
    wait_for(lambda: "interrupted." in log.read_text(), process)
    while process.poll() is None:  # then a key held down on the way out: a Ctrl-C every millisecond till the end
        process.send_signal(signal.SIGINT)
        time.sleep(0.001)
    stderr = log.read_text()
    assert process.returncode == 143 and "Traceback" not in stderr and stderr.count("interrupted.") == 1, stderr
    command = stderr.split("Continue with: ")[1].strip()
    out = tmp_path / "run"
    assert command == f"python train.py --resume --out-dir={out} --data-dir={fake_data} --device=cpu --epochs 100000"
    done = epochs_saved(out)  # as printed, but to the end of the next epoch: --epochs may change (no schedule)
    words = shlex.split(command)[2:]
    words[words.index("--epochs") + 1] = str(done + 1)
    assert run_main(train.main, *words).returncode == 0
    assert_same_run(out, straight(done + 1))


def test_a_closed_output_stops_the_run_as_ctrl_c_does_and_its_command_continues_it(fake_data, tmp_path, straight):
    """`python train.py | head -3`: at the first line printed after the pipe closed the run stops as Ctrl-C stops
    it, its saved epochs intact, the command on stderr, the shell's code for SIGPIPE; not "error: Broken pipe"."""
    out = tmp_path / "run"
    process = start_script("train.py", "--data-dir", fake_data, "--out-dir", out, *RUN, "--epochs", "100000")
    assert len([process.stdout.readline() for _ in range(3)]) == 3
    wait_for(lambda: (out / "run.json").exists(), process)  # an epoch saved
    process.stdout.close()  # as head does once it has its three lines
    stderr = process.stderr.read()
    assert process.wait() == 141 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("its output was closed. Continue with: python train.py --resume")
    words = shlex.split(stderr.split("Continue with: ")[1])[2:]
    words[words.index("--epochs") + 1] = str(epochs_saved(out) + 1)
    assert run_main(train.main, *words).returncode == 0
    assert_same_run(out, straight(epochs_saved(out)))


def small_files():  # as a full disk: writing past 2 MB fails (state.pt is about 4.7 MB)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))


def test_overwrite_on_a_full_disk_is_one_error_and_leaves_the_old_run_and_no_half_file(fake_data, tmp_path,
                                                                                        trained_run):
    copy_run(trained_run, tmp_path)
    before = snapshot(tmp_path)
    with start_script("train.py", "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "1", "--overwrite",
                      preexec_fn=small_files) as process:
        result = subprocess.CompletedProcess(process.args, process.wait(), *process.communicate())
    assert_clean_error(result, "cannot write", "state.pt", "File too large")
    assert snapshot(tmp_path) == before  # no state.pt.tmp either


def test_a_file_is_on_disk_before_its_rename_and_the_rename_after(tmp_path, monkeypatch):
    calls, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(source, target, **at):
        calls.append(("rename", os.path.basename(target)))
        real_replace(source, target, **at)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    guard.write_file(str(tmp_path / "run.json"), b"{\"epochs\": [1, 2]}")
    size = (tmp_path / "run.json").stat().st_size
    assert calls == [("fsync", size), ("rename", "run.json"), ("fsync", "folder")]  # its whole content, then


def test_an_overwrite_whose_first_state_is_not_written_names_the_old_run_and_no_resume(fake_data, tmp_path,
                                                                                      trained_run, monkeypatch):
    copy_run(trained_run, tmp_path)
    before = snapshot(tmp_path)
    for failure in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        def fsync(fd):  # inside guard.write_file, the new state's bytes written but not yet on disk
            raise failure
        monkeypatch.setattr(os, "fsync", fsync)
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "1", "--overwrite")
        monkeypatch.undo()
        assert result.returncode != 0 and "--resume" not in result.stderr, result.stderr
        if isinstance(failure, KeyboardInterrupt):
            assert "the run there is as it was" in result.stderr
        else:
            assert_clean_error(result, "cannot write", "state.pt", "No space left on device")
        after = {name: content for name, content in snapshot(tmp_path).items() if not name.endswith(".tmp")}
        assert after == before  # the old run, whole (a half file, if any, the next save replaces)


def test_a_full_disk_at_the_first_save_is_one_error_and_leaves_no_folder(fake_data, tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fsync)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "new", "--epochs", "1")
    monkeypatch.undo()
    assert_clean_error(result, "cannot write", "state.pt", "No space left on device")
    assert os.listdir(tmp_path) == []  # nothing half-written, and no folder of a run that saved no epoch
    run(fake_data, tmp_path / "new", "--epochs", "1")  # with room again, the same command works


def test_more_epochs_on_a_finished_run_equal_a_longer_run(fake_data, tmp_path, straight):
    copy_run(straight(3), tmp_path)
    run(fake_data, tmp_path, "--resume", "--epochs", "4")
    assert_same_run(tmp_path, straight(4))
    assert sorted(os.listdir(tmp_path)) == RUN_FILES


def test_an_interrupted_final_test_is_finished_by_the_printed_command(fake_data, tmp_path, straight, monkeypatch):
    run(fake_data, tmp_path, "--epochs", "1")

    def interrupted_test(*args):
        raise KeyboardInterrupt
    real_test = train.test
    monkeypatch.setattr(train, "test", interrupted_test)
    result = run_main(train.main, "--resume", "--epochs", "2", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert result.returncode == 130
    assert f"python train.py --resume --out-dir={tmp_path} --data-dir={fake_data} --epochs 2" in result.stderr
    assert not (tmp_path / "metrics.json").exists()  # epoch 1's test went with epoch 2's save
    monkeypatch.setattr(train, "test", real_test)
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert result.returncode == 0 and "Testing the checkpoint" in result.stdout, result.stderr
    assert_same_run(tmp_path, straight(2))  # metrics.json tests epoch 2's checkpoint, not epoch 1's


def test_a_kill_between_the_state_and_the_files_written_from_it_loses_nothing(fake_data, tmp_path, straight,
                                                                              monkeypatch):
    real_write = guard.write_file

    def killed_after_the_second_state(path, data, *rest, **options):
        if path.endswith("run.json") and len(json.loads(data)["epochs"]) == 2:
            raise KeyboardInterrupt  # state.pt holds epoch 2; run.json and checkpoint.pt are epoch 1's
        return real_write(path, data, *rest, **options)
    monkeypatch.setattr(guard, "write_file", killed_after_the_second_state)
    assert run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *RUN, "--epochs", "3"
                    ).returncode == 130
    monkeypatch.setattr(guard, "write_file", real_write)
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert "resuming after epoch 2" in result.stdout, result.stderr
    assert_same_run(tmp_path, straight(3))


@pytest.mark.parametrize("damage", ["deleted", "damaged"])
def test_a_lost_checkpoint_is_written_again_from_the_state(damage, fake_data, tmp_path, straight):
    copy_run(straight(3), tmp_path)
    if damage == "deleted":
        os.remove(tmp_path / "checkpoint.pt")
    else:
        (tmp_path / "checkpoint.pt").write_bytes(b"damaged")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)  # finished: nothing
    assert result.returncode == 0 and "written again from state.pt" in result.stdout, result.stderr  # to train
    assert snapshot(tmp_path) == snapshot(straight(3))


def test_a_hand_edited_record_is_not_a_source_of_settings(fake_data, tmp_path, straight):
    copy_run(straight(2), tmp_path)
    record = json.loads((tmp_path / "run.json").read_text())
    record["settings"].update(lr=0.5, seed=99, batch_size=7, epochs=4)
    (tmp_path / "run.json").write_text(json.dumps(record))
    run(fake_data, tmp_path, "--resume", "--epochs", "4")
    assert_same_run(tmp_path, straight(4))  # run.json written again from the state, with the run's settings


@pytest.mark.parametrize("record", [b"garbage", b"[" * 200_000, b'{"best_epoch": 99, "epochs": 5}'])
def test_a_damaged_record_is_written_again_not_read(record, fake_data, tmp_path, straight):
    copy_run(straight(3), tmp_path)
    (tmp_path / "run.json").write_bytes(record)
    assert run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data).returncode == 0
    assert (tmp_path / "run.json").read_bytes() == (straight(3) / "run.json").read_bytes()


@pytest.mark.parametrize("flags, message", [
    (["--seed", "1"], "--seed 1: the run in"),
    (["--lr", "0.001"], "--lr 0.001: the run in"),
    (["--batch-size", "64"], "--batch-size 64: the run in"),
    (["--dropout", "0"], "--dropout 0.0: the run in"),
    (["--augment"], "--augment True: the run in"),
    (["--tta"], "--tta True: the run in"),
    (["--epochs", "2"], "--epochs 2 is fewer than the 3"),
])
def test_resume_refusals_are_clear_errors_that_change_nothing(flags, message, straight):
    before = snapshot(straight(3))
    assert_clean_error(run_main(train.main, "--resume", "--out-dir", straight(3), *flags), message)
    assert snapshot(straight(3)) == before


def test_resume_may_repeat_the_runs_own_settings(fake_data, tmp_path, straight):
    copy_run(straight(3), tmp_path)
    run(fake_data, tmp_path, "--resume", "--epochs", "4")  # RUN's flags again, as seeds.py passes them
    assert_same_run(tmp_path, straight(4))


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
    before = snapshot(straight(3))
    result = run_main(train.main, "--resume", "--out-dir", straight(3), "--epochs", "4", "--data-dir", other)
    assert_clean_error(result, "holds other data than the run", "train-images-idx3-ubyte")
    assert snapshot(straight(3)) == before
    moved = write_fake_fashion_mnist(tmp_path / "moved")  # the same files as fake_data, in another folder
    copy_run(straight(3), tmp_path / "run")
    run(moved, tmp_path / "run", "--resume", "--epochs", "4")
    assert_same_run(tmp_path / "run", straight(4))


def test_a_resumed_accelerator_run_continues_on_the_cpu_with_a_note(fake_data, tmp_path, straight):
    copy_run(straight(3), tmp_path)
    state = state_of(tmp_path)
    state["rng"].update(device_type="cuda", accelerator=torch.get_rng_state())  # as a CUDA run saves it
    torch.save(state, tmp_path / "state.pt")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "4", "--device", "cpu",
                      "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert "trained on cuda and continues on cpu" in result.stdout


def test_overwrite_replaces_the_old_run_only_once_the_new_one_has_saved_an_epoch(fake_data, tmp_path, straight,
                                                                                 monkeypatch):
    copy_run(straight(3), tmp_path)
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
    real_write = guard.write_file

    def killed_at_the_first_state(path, obj, *rest, **options):
        if path.endswith("state.pt"):
            raise KeyboardInterrupt  # as kill -9 before the new state's rename
        return real_write(path, obj, *rest, **options)
    monkeypatch.setattr(guard, "write_file", killed_at_the_first_state)
    assert run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--overwrite").returncode == 130
    monkeypatch.setattr(guard, "write_file", real_write)
    assert snapshot(tmp_path) == before  # the old run, whole, each time
    run(fake_data, tmp_path, "--epochs", "2", "--overwrite")
    assert_same_run(tmp_path, straight(2))
    assert sorted(os.listdir(tmp_path)) == RUN_FILES


@pytest.mark.parametrize("failing", ["state.pt", "metrics.json"])
def test_a_full_disk_in_the_final_test_is_one_error_and_resume_finishes_it(failing, fake_data, tmp_path, straight,
                                                                          monkeypatch):
    real_write, states = guard.write_file, []

    def full_at_the_test(path, obj, *rest, **options):
        states.append(path) if path.endswith("state.pt") else None
        if path.endswith(failing) and (failing == "metrics.json" or len(states) == 3):  # epochs 1, 2, then the test
            raise OSError(f"cannot write {path}: No space left on device")
        return real_write(path, obj, *rest, **options)
    monkeypatch.setattr(guard, "write_file", full_at_the_test)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *RUN, "--epochs", "2")
    assert_clean_error(result, f"{failing}: No space left on device")
    assert "Test accuracy" in result.stdout  # the report was printed before the write failed
    monkeypatch.setattr(guard, "write_file", real_write)
    run(fake_data, tmp_path, "--resume")
    assert_same_run(tmp_path, straight(2))


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
    model = train.FashionCNN()
    model.parameters = lambda: iter([argparse.Namespace(device=torch.device("cuda", 1))])  # as if on the second GPU
    with guard.held(tmp_path) as lock:
        folder_run = runs.Run(args, dict.fromkeys(train.RECIPE), train.RECIPE, lock)
        folder_run.state["data"] = {}
        epoch = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5,
                 "seconds": 1.0}
        folder_run.save_epoch(epoch, model=model, optimizer=torch.optim.Adam(train.FashionCNN().parameters()),
                              scheduler=None, loader=train.make_loaders(fake_data)[0], best=True)
    state = state_of(tmp_path)
    assert asked == [torch.device("cuda", 1)] and state["rng"]["accelerator"].tolist() == [1]


def test_the_accelerators_generator_is_restored_on_its_own_device(fake_data, tmp_path, trained_run, monkeypatch):
    copy_run(trained_run, tmp_path)
    state = state_of(tmp_path)
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
    folder_run = runs.Run(args, dict.fromkeys(train.RECIPE), train.RECIPE, None)
    folder_run.restore(ModelOnTheSecondGPU(), None, None, train.make_loaders(fake_data)[0], state["data"])
    assert restored == [([7], torch.device("cuda", 1))]


def assert_files_are_the_states(folder):
    """Each file beside state.pt is drawn from it, or absent."""
    state = state_of(folder)
    if os.path.exists(folder / "run.json"):
        record = json.loads((folder / "run.json").read_text())
        assert record["id"] == state["id"] and record["epochs"] == state["history"]
    if os.path.exists(folder / "checkpoint.pt"):
        best = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert best["run"] == state["id"] and best["epoch"] == state["best"]["epoch"]
    for name in guard.TEST_FILES:
        assert not os.path.exists(folder / name) or state["test"] is not None, name
    if os.path.exists(folder / "metrics.json"):
        assert json.loads((folder / "metrics.json").read_text()) == state["test"]["report"]


@pytest.mark.parametrize("flags", [["--overwrite"], ["--resume", "--epochs", "4"]])
def test_a_kill_right_after_the_states_rename_leaves_no_file_of_another_run_or_epoch(flags, fake_data, tmp_path,
                                                                                    trained_run, monkeypatch):
    copy_run(trained_run, tmp_path)  # a finished, tested run
    real_replace = os.replace

    def killed_after_the_state(source, target, **at):
        real_replace(source, target, **at)
        if target.endswith("state.pt"):
            raise Killed
    monkeypatch.setattr(os, "replace", killed_after_the_state)
    with pytest.raises(Killed):
        run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *RUN, *flags)
    monkeypatch.undo()
    assert_files_are_the_states(tmp_path)
    run(fake_data, tmp_path, "--resume", *flags[1:])  # and the next command writes them all again
    assert_files_are_the_states(tmp_path)
    assert all(os.path.exists(tmp_path / name) for name in guard.RUN_FILES + guard.TEST_FILES)


def test_ctrl_c_in_a_save_is_told_truly(fake_data, tmp_path, trained_run, monkeypatch):
    copy_run(trained_run, tmp_path)
    real_write = guard.write_file

    def ctrl_c_in_the_first_state(path, obj, *rest, **options):
        if path.endswith("state.pt") and not ctrl_c_in_the_first_state.sent:
            ctrl_c_in_the_first_state.sent = True
            os.kill(os.getpid(), signal.SIGINT)  # lands while the new state is written
        return real_write(path, obj, *rest, **options)
    ctrl_c_in_the_first_state.sent = False
    monkeypatch.setattr(guard, "write_file", ctrl_c_in_the_first_state)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *RUN, "--overwrite", "--seed", "2")
    assert result.returncode == 130 and "Continue with: python train.py --resume" in result.stderr  # it was saved
    assert state_of(tmp_path)["settings"]["seed"] == 2 and len(state_of(tmp_path)["history"]) == 1
    assert_files_are_the_states(tmp_path)


def test_a_state_with_missing_keys_or_a_nan_is_one_error_naming_it(fake_data, tmp_path, trained_run):
    copy_run(trained_run, tmp_path)
    state = state_of(tmp_path)
    for damaged in ({k: v for k, v in state.items() if k != "best"},
                    {**state, "history": [{**state["history"][0], "val_loss": math.nan}]}):
        torch.save(damaged, tmp_path / "state.pt")
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--resume", "--epochs", "2")
        assert_clean_error(result, f"{tmp_path / 'state.pt'} is not a run state of this train.py")


@pytest.mark.parametrize("name", ["-dash", "with space and 'quote'"])
def test_the_continue_command_names_the_same_folder_when_pasted(name, fake_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = name
    result = run_main(train.main, "--data-dir", fake_data, f"--out-dir={out_dir}", *RUN, "--epochs", "1")
    assert result.returncode == 0, result.stderr

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    result = run_main(train.main, "--data-dir", fake_data, f"--out-dir={out_dir}", "--resume", "--epochs", "2")
    # Pasted into bash here, away from the project: the words it makes, the script's path from here first.
    command = result.stderr.split("Continue with: ")[1].strip()
    words = subprocess.run(["bash", "-c", "printf '%s\\0' " + command], capture_output=True, text=True,
                           cwd=tmp_path).stdout.split("\0")[:-1]
    assert words[0] == "python" and os.path.samefile(tmp_path / words[1], os.path.join(ROOT, "train.py"))
    args, _ = train.parse_args(words[2:])
    assert args.resume and args.out_dir == name


def test_no_file_a_run_writes_is_executable(fake_data, tmp_path):
    old = os.umask(0o022)
    try:
        run(fake_data, tmp_path, "--epochs", "1")
    finally:
        os.umask(old)
    for name in os.listdir(tmp_path):
        assert not os.stat(tmp_path / name).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH), name


def test_other_test_files_alone_are_refused_on_resume(fake_data, tmp_path, trained_run):
    copy_run(trained_run, tmp_path / "run")
    shutil.copytree(fake_data, tmp_path / "tests-only")
    write_fake_fashion_mnist(tmp_path / "other", seed=7)
    for name in data.RAW_FILES[2:]:  # the same training files; only the test files differ
        shutil.copy(tmp_path / "other" / "FashionMNIST" / "raw" / name, tmp_path / "tests-only/FashionMNIST/raw")
    result = run_main(train.main, "--data-dir", tmp_path / "tests-only", "--out-dir", tmp_path / "run", "--resume",
                      "--epochs", "4")
    assert_clean_error(result, "(t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte differ)")


def test_overwrite_replaces_a_damaged_run(fake_data, tmp_path):
    (tmp_path / "state.pt").write_bytes(b"damaged")
    (tmp_path / "run.json").write_text("[" * 200_000)
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--resume"),
                       "state.pt is not a readable checkpoint")
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "1", "--overwrite")
    assert result.returncode == 0 and state_of(tmp_path)["test"], result.stderr


DAMAGES = {  # what a hand, a bug elsewhere or a crafted file may put in a state.pt that torch.load still reads
    "history a string": lambda s: s.update(history="epochs"),
    "an epoch a string": lambda s: s["history"].append("epoch 4"),
    "a value a string": lambda s: s["history"][0].update(val_loss="0.5"),
    "a line without its keys": lambda s: s["history"][1].pop("train_loss"),
    "best a list": lambda s: s.update(best=[1]),
    "best empty": lambda s: s.update(best={}),
    "best's weights another model's": lambda s: s["best"].update(model={"weight": torch.zeros(2)}),
    "settings a list": lambda s: s.update(settings=[1]),
    "a setting of another kind": lambda s: s["settings"].update(lr="0.003"),
    "a setting out of its limits": lambda s: s["settings"].update(batch_size=0),
    "data a list": lambda s: s.update(data=["train-images-idx3-ubyte"]),
    "the test a string": lambda s: s.update(test="passed"),
    "the test's classes others": lambda s: s["test"]["report"]["per_class"].pop("Bag"),
    "the optimizer's state": lambda s: s.update(optimizer={"state": 5}),
    "rng without device_type": lambda s: s["rng"].pop("device_type"),
    "rng's torch state a list": lambda s: s["rng"].update(torch=[1, 2]),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_state_is_one_error_naming_it(damage, fake_data, tmp_path, trained_run):
    """One guard where state.pt is read (runs.read_state), one more where loading can tell (Run.restore): whatever
    it holds, one error line, nothing changed (before this guard, seven of these were tracebacks)."""
    copy_run(trained_run, tmp_path)
    state = state_of(tmp_path)
    DAMAGES[damage](state)
    torch.save(state, tmp_path / "state.pt")
    before = snapshot(tmp_path)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--resume", "--epochs", "4")
    assert_clean_error(result, f"{tmp_path / 'state.pt'} is ")
    assert "--overwrite replaces the run" in result.stderr and snapshot(tmp_path) == before


def test_a_run_saved_before_weight_decay_existed_resumes_without_it(fake_data, tmp_path, straight):
    copy_run(straight(3), tmp_path)
    state = state_of(tmp_path)
    del state["settings"]["weight_decay"]  # as the version before --weight-decay saved it, in this same format
    torch.save(state, tmp_path / "state.pt")
    assert_clean_error(run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data,
                                "--weight-decay", "0.05"), "--weight-decay 0.05: the run in")
    run(fake_data, tmp_path, "--resume", "--epochs", "4", "--weight-decay", "0")  # what it ran with: may repeat
    assert_same_run(tmp_path, straight(4))


def test_after_the_first_ctrl_c_sigterm_or_sighup_every_later_one_is_ignored():
    """What makes a key held down end in one message: the handler raises once (and sets no handler, which CPython
    would report as a race for a signal already on its way)."""
    previous = {sig: signal.getsignal(sig) for sig in guard.SIGNALS}
    guard.catch_signals()
    try:
        with pytest.raises(KeyboardInterrupt) as first:
            os.kill(os.getpid(), signal.SIGHUP)  # a closed terminal
        assert first.value.args == (129,)
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                os.kill(os.getpid(), sig)  # ignored: no KeyboardInterrupt
                os.getpid()  # (a statement for the handler to run before)
        except KeyboardInterrupt:
            pytest.fail("a later Ctrl-C or SIGTERM raised again")
        assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_once_the_command_is_done_no_signal_interrupts_pythons_own_shutdown(monkeypatch):
    """A Ctrl-C as Python shuts down (a library's finalizer running) was once an 'Exception ignored' traceback."""
    previous, registered = {sig: signal.getsignal(sig) for sig in guard.SIGNALS}, []
    monkeypatch.setattr(guard.atexit, "register", registered.append)
    try:
        guard.catch_signals()
        assert registered == [guard.ignore_signals]
        registered[0]()  # as Python runs it at the exit
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in guard.SIGNALS)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_ctrl_c_while_python_still_loads_pytorch_writes_nothing(fake_data, tmp_path):
    """Outside the promise (README.md): Python's own KeyboardInterrupt lines then, but nothing written."""
    process = start_script("train.py", "--data-dir", fake_data, "--out-dir", tmp_path / "run")
    time.sleep(0.05)  # the moment is the claim: before train.py's own handlers exist
    process.send_signal(signal.SIGINT)
    assert process.wait() != 0 and not (tmp_path / "run").exists()
