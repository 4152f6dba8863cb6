"""The holes a fourth hostile try found (issue 29), each closed where it came from: evaluate.py --out-dir takes the
folder's lock; a kill right after state.pt's rename leaves no file of another run or epoch beside it, and a Ctrl-C in
a save is told truly; a study checks every seed's data and settings, read or trained, before anything trains, is
fixed only by a call that saved an epoch, refuses a run's folder and a seed folder without a state first, takes
train.py's abbreviations as train.py does; a continue command that pastes back to the same folder; an empty IDX
file, a finished onecycle run, a state with missing keys or a NaN, a failed run in a/b/c: one true line each; files
not executable; the augmentation stream no seed shares; the data rule on the test files alone; the first of equal
validation accuracies kept; the lock's pid written whole; a damaged IDX header; a download that fetches only what
is missing."""
import fcntl
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest
import torch
import torchvision.datasets

import data
import evaluate
import train
from benchmarks import seeds
from conftest import OFFLINE, ROOT, assert_clean_error, run_main, snapshot, write_fake_fashion_mnist, write_idx
from plumbing import guard, runs

FLAGS = ["--batch-size", "16", "--log-interval", "1000"]


class Killed(BaseException):
    """What kill -9 leaves: the process stops where it is (no except clause catches it)."""


def run(data_dir, out, *flags):
    result = run_main(train.main, "--data-dir", data_dir, "--out-dir", out, *FLAGS, *flags)
    assert result.returncode == 0, result.stderr
    return result


def assert_files_are_the_states(folder):
    """Each file beside state.pt is drawn from it, or absent."""
    state = runs.read_state(folder)
    if os.path.exists(folder / "run.json"):
        record = json.loads((folder / "run.json").read_text())
        assert record["id"] == state["id"] and record["epochs"] == state["history"]
    if os.path.exists(folder / "checkpoint.pt"):
        best = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert best["run"] == state["id"] and best["epoch"] == state["best"]["epoch"]
    for name in runs.TEST_FILES:
        assert not os.path.exists(folder / name) or state["test"] is not None, name
    if os.path.exists(folder / "metrics.json"):
        assert json.loads((folder / "metrics.json").read_text()) == state["test"]["report"]


@pytest.mark.parametrize("flags", [["--overwrite"], ["--resume", "--epochs", "4"]])
def test_a_kill_right_after_the_states_rename_leaves_no_file_of_another_run_or_epoch(flags, fake_data, tmp_path,
                                                                                    monkeypatch):
    run(fake_data, tmp_path, "--epochs", "3")  # a finished, tested run
    real_replace = os.replace

    def killed_after_the_state(source, target):
        real_replace(source, target)
        if target.endswith("state.pt"):
            raise Killed
    monkeypatch.setattr(os, "replace", killed_after_the_state)
    with pytest.raises(Killed):
        run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *FLAGS, *flags)
    monkeypatch.undo()
    assert_files_are_the_states(tmp_path)
    run(fake_data, tmp_path, "--resume", *flags[1:])  # and the next command writes them all again
    assert_files_are_the_states(tmp_path)
    assert all(os.path.exists(tmp_path / name) for name in runs.RUN_FILES + runs.TEST_FILES)


def test_ctrl_c_in_a_save_is_told_truly(fake_data, tmp_path, monkeypatch):
    run(fake_data, tmp_path, "--epochs", "1")
    real_write = runs.write_file

    def ctrl_c_in_the_first_state(path, obj, *rest):
        if path.endswith("state.pt") and not ctrl_c_in_the_first_state.sent:
            ctrl_c_in_the_first_state.sent = True
            os.kill(os.getpid(), signal.SIGINT)  # lands while the new state is written
        return real_write(path, obj, *rest)
    ctrl_c_in_the_first_state.sent = False
    monkeypatch.setattr(runs, "write_file", ctrl_c_in_the_first_state)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, *FLAGS, "--overwrite", "--seed", "2")
    assert result.returncode == 130 and "Continue with: python train.py --resume" in result.stderr  # it was saved
    assert runs.read_state(tmp_path)["settings"]["seed"] == 2 and len(runs.read_state(tmp_path)["history"]) == 1
    assert_files_are_the_states(tmp_path)


def test_evaluate_out_dir_waits_for_no_one_and_writes_nothing_into_a_folder_in_use(fake_data, tmp_path):
    run(fake_data, tmp_path / "run", "--epochs", "1")
    with guard.held(tmp_path / "busy"):  # as a train.py training there would
        result = run_main(evaluate.main, "--checkpoint", tmp_path / "run" / "checkpoint.pt", "--data-dir", fake_data,
                          "--out-dir", tmp_path / "busy")
        assert_clean_error(result, "busy is in use by another process", f"pid {os.getpid()}")
        assert os.listdir(tmp_path / "busy") == [".lock"]


def test_evaluate_a_runs_state_tests_its_best_epoch_as_its_checkpoint(fake_data, tmp_path, monkeypatch):
    validation = iter([0.5, 0.1])  # epoch 1 the best on validation, epoch 2 the last
    monkeypatch.setattr(train, "accuracy", lambda y_true, y_pred: next(validation))
    run(fake_data, tmp_path, "--epochs", "2")
    monkeypatch.undo()
    assert runs.read_state(tmp_path)["best"]["epoch"] == 1
    reports = [run_main(evaluate.main, "--checkpoint", tmp_path / name, "--data-dir", fake_data).stdout
               for name in ("state.pt", "checkpoint.pt")]
    assert reports[0] == reports[1] and "Test accuracy" in reports[0]


def test_the_first_of_equal_validation_accuracies_is_kept(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "accuracy", lambda y_true, y_pred: 0.5)
    run(fake_data, tmp_path, "--epochs", "3")
    assert runs.read_state(tmp_path)["best"]["epoch"] == 1


def test_a_state_with_missing_keys_or_a_nan_is_one_error_naming_it(fake_data, tmp_path):
    run(fake_data, tmp_path, "--epochs", "1")
    state = runs.read_state(tmp_path)
    for damaged in ({k: v for k, v in state.items() if k != "best"},
                    {**state, "history": [{**state["history"][0], "val_loss": math.nan}]}):
        torch.save(damaged, tmp_path / "state.pt")
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--resume", "--epochs", "2")
        assert_clean_error(result, f"{tmp_path / 'state.pt'} is not a run state of this train.py")


def test_a_finished_onecycle_run_does_not_offer_more_epochs(fake_data, tmp_path):
    run(fake_data, tmp_path, "--epochs", "1", "--schedule", "onecycle")
    result = run(fake_data, tmp_path, "--resume")
    assert "a onecycle run is not trained further" in result.stdout and "or more trains it further" not in result.stdout


@pytest.mark.parametrize("name", [b"-dash", b"caf\xe9"])  # a leading dash; a name that is not UTF-8
def test_the_continue_command_names_the_same_folder_when_pasted(name, fake_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = os.fsdecode(name)
    result = run_main(train.main, "--data-dir", fake_data, f"--out-dir={out_dir}", *FLAGS, "--epochs", "1")
    assert result.returncode == 0, result.stderr

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    result = run_main(train.main, "--data-dir", fake_data, f"--out-dir={out_dir}", "--resume", "--epochs", "2")
    # As the console shows it (stderr writes what UTF-8 cannot encode as backslash escapes), pasted into bash.
    command = result.stderr.split("Continue with: ")[1].strip().encode("utf-8", "backslashreplace")
    assert command.startswith(b"python train.py ")
    words = subprocess.run(["bash", "-c", b"printf '%s\\0' " + command.split(b" ", 2)[2]], capture_output=True,
                           cwd=tmp_path).stdout.split(b"\0")[:-1]  # the words bash makes of it
    args, _ = train.parse_args([os.fsdecode(word) for word in words])
    assert args.resume and os.fsencode(args.out_dir) in (name, b"./" + name)


def test_a_failed_run_leaves_no_folder_it_made_and_an_empty_folder_is_not_as_it_was(fake_data, tmp_path,
                                                                                     monkeypatch):
    result = run_main(train.main, "--data-dir", tmp_path / "nothing", "--out-dir", tmp_path / "a" / "b" / "c")
    assert_clean_error(result, "Fashion-MNIST is not")
    assert os.listdir(tmp_path) == []  # not a, nor a/b
    (tmp_path / "empty").mkdir()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "empty", "--overwrite")
    assert "nothing to resume" in result.stderr and "as it was" not in result.stderr


def test_no_file_a_run_writes_is_executable(fake_data, tmp_path):
    old = os.umask(0o022)
    try:
        run(fake_data, tmp_path, "--epochs", "1")
    finally:
        os.umask(old)
    for name in os.listdir(tmp_path):
        assert not os.stat(tmp_path / name).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH), name


def test_an_idx_file_of_no_images_or_a_damaged_header_is_one_error(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    raw = tmp_path / "FashionMNIST" / "raw"
    write_idx(raw / "t10k-images-idx3-ubyte", torch.zeros(0, 28, 28, dtype=torch.uint8).numpy())
    with pytest.raises(ValueError, match="holds no images"):
        data.fashion_mnist(str(tmp_path), train=False)
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    content = bytearray((raw / "t10k-images-idx3-ubyte").read_bytes())
    content[2] = 0x09  # the magic number's type byte: not unsigned bytes, at the right length
    (raw / "t10k-images-idx3-ubyte").write_bytes(bytes(content))
    with pytest.raises(ValueError, match="not an IDX file of bytes"):
        data.fashion_mnist(str(tmp_path), train=False)


def test_other_test_files_alone_are_refused_on_resume(fake_data, tmp_path):
    run(fake_data, tmp_path / "run", "--epochs", "1")
    shutil.copytree(fake_data, tmp_path / "tests-only")
    write_fake_fashion_mnist(tmp_path / "other", seed=7)
    for name in data.RAW_FILES[2:]:  # the same training files; only the test files differ
        shutil.copy(tmp_path / "other" / "FashionMNIST" / "raw" / name, tmp_path / "tests-only/FashionMNIST/raw")
    result = run_main(train.main, "--data-dir", tmp_path / "tests-only", "--out-dir", tmp_path / "run", "--resume",
                      "--epochs", "2")
    assert_clean_error(result, "(t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte differ)")


def test_the_augmentation_stream_is_no_seeds_shuffle_or_weights(fake_data):
    loader = data.make_loaders(fake_data, seed=1, augment=True)[0]
    first = torch.randint(0, 5, (100,), generator=loader.generators["augment"])
    for seed in range(0, 1000):
        assert not torch.equal(first, torch.randint(0, 5, (100,), generator=torch.Generator().manual_seed(seed)))
    with_augment = data.make_loaders(fake_data, seed=1, augment=True)[0].generators["shuffle"].get_state()
    assert torch.equal(with_augment, data.make_loaders(fake_data, seed=1)[0].generators["shuffle"].get_state())


def test_the_lock_writes_its_pid_whole_over_a_longer_one(tmp_path):
    (tmp_path / ".lock").write_bytes(b"\0pid 123456789012345")
    with guard.held(tmp_path):
        assert (tmp_path / ".lock").read_bytes() == f"\0pid {os.getpid()}".encode()


def test_a_download_fetches_only_what_is_missing_and_replaces_nothing(tmp_path, monkeypatch):
    write_fake_fashion_mnist(tmp_path / "web", n_train=20, n_test=10, seed=3)  # what the stand-in web serves
    write_fake_fashion_mnist(tmp_path / "mine", n_train=20, n_test=10, seed=4)  # the user's own variant
    raw = tmp_path / "mine" / "FashionMNIST" / "raw"
    os.remove(raw / "t10k-labels-idx1-ubyte")
    before = snapshot(raw)

    class StandIn:  # torchvision's FashionMNIST(root, download=True): all four files under root/FashionMNIST/raw
        def __init__(self, root, download):
            os.makedirs(os.path.join(root, "FashionMNIST", "raw"))
            for name in data.RAW_FILES:
                with open(os.path.join(root, "FashionMNIST", "raw", name), "wb") as f:
                    f.write((tmp_path / "web" / "FashionMNIST" / "raw" / name).read_bytes())
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", StandIn)
    data.fashion_mnist(str(tmp_path / "mine"), train=False)
    after = snapshot(raw)
    assert {name: after[name] for name in before} == before  # the user's three files, byte for byte
    assert after["t10k-labels-idx1-ubyte"] == (tmp_path / "web" / "FashionMNIST" / "raw" /
                                               "t10k-labels-idx1-ubyte").read_bytes()
    assert sorted(after) == sorted(data.RAW_FILES)  # and nothing else left behind


def study(data_dir, out, *flags):
    return run_main(seeds.main, "--epochs", "1", "--batch-size", "16", "--data-dir", data_dir, "--out-dir", out, *flags)


def test_a_study_never_mixes_data_read_or_trained(fake_data, tmp_path):
    assert study(fake_data, tmp_path / "study", "--seeds", "1").returncode == 0
    other = write_fake_fashion_mnist(tmp_path / "other", seed=5)
    result = study(other, tmp_path / "study", "--seeds", "1", "2")
    assert_clean_error(result, "--data-dir holds other data than the study in")
    assert not os.path.exists(tmp_path / "study" / "seed-2")  # refused before it started


def test_a_studys_first_call_that_saved_nothing_fixes_nothing(fake_data, tmp_path):
    assert_clean_error(study(fake_data, tmp_path, "--seeds", "1", "--lr", "1e9"), "diverged")
    assert os.listdir(tmp_path) == []  # no study.json, no empty seed folder
    result = study(fake_data, tmp_path, "--seeds", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "study.json").read_text())["settings"]["lr"] == train.RECIPE["lr"]


def test_a_study_refuses_a_runs_folder_and_a_seed_without_state_before_training(fake_data, tmp_path):
    run(fake_data, tmp_path / "run", "--epochs", "1")
    assert_clean_error(study(fake_data, tmp_path / "run", "--seeds", "7"), "run already holds", "folder of its own")
    assert not os.path.exists(tmp_path / "run" / "seed-7") and not os.path.exists(tmp_path / "run" / "study.json")
    (tmp_path / "study" / "seed-2").mkdir(parents=True)
    (tmp_path / "study" / "seed-2" / "metrics.json").write_text("{}")
    result = study(fake_data, tmp_path / "study", "--seeds", "1", "2")
    assert_clean_error(result, "seed-2 already holds metrics.json", "not a seed of this study")
    assert "--overwrite" not in result.stderr and not os.path.exists(tmp_path / "study" / "seed-1")


def test_a_seed_of_other_settings_is_named_for_them_not_for_a_flag_never_given(fake_data, tmp_path):
    run(fake_data, tmp_path / "study" / "seed-1", "--epochs", "1", "--tta")
    result = study(fake_data, tmp_path / "study", "--seeds", "1")
    assert_clean_error(result, "holds a run with other settings than the study's (tta True)")
    assert "--tta False" not in result.stderr


@pytest.mark.parametrize("flag, message", [(["--dry"], "--dry-run is set by seeds.py itself"),
                                           (["--over"], "--overwrite is set by seeds.py itself"),
                                           (["--res"], "--resume is set by seeds.py itself"),
                                           (["--see", "5"], "ambiguous option: --see")])
def test_seeds_takes_abbreviations_as_train_does_or_refuses_them(flag, message, fake_data, tmp_path):
    result = study(fake_data, tmp_path, "--seeds", "1", *flag)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert os.listdir(tmp_path) == []


def test_seeds_abbreviated_out_and_log_mean_what_they_mean_for_train(fake_data, tmp_path):
    result = run_main(seeds.main, "--seeds", "1", "--epochs", "1", "--data-dir", fake_data, "--out", tmp_path / "x",
                      "--log", "1")
    assert result.returncode == 0, result.stderr
    assert os.path.exists(tmp_path / "x" / "seed-1" / "state.pt")
    assert result.stdout.count("Train Epoch: 1") == math.ceil(160 / 64)  # a line every batch


def test_two_first_calls_at_once_fix_one_studys_settings(fake_data, tmp_path):
    calls = [subprocess.Popen([sys.executable, "benchmarks/seeds.py", "--seeds", "1", "--epochs", "1", "--lr", lr,
                               "--data-dir", fake_data, "--out-dir", str(tmp_path)], cwd=ROOT,
                              env={**os.environ, **OFFLINE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for lr in ("0.001", "0.002")]
    outcomes = sorted((call.wait(timeout=300), call.communicate()[1]) for call in calls)
    assert outcomes[0][0] == 0 and outcomes[1][0] == 1 and "fixed by its first call" in outcomes[1][1]
    fixed = json.loads((tmp_path / "study.json").read_text())["settings"]["lr"]
    assert runs.read_state(tmp_path / "seed-1")["settings"]["lr"] == fixed


def test_a_study_reads_each_seed_for_its_summary_under_the_seeds_lock(fake_data, tmp_path, monkeypatch):
    assert study(fake_data, tmp_path, "--seeds", "1", "2").returncode == 0
    real_read, reads = runs.read_state, []

    def read_state(folder):  # the seed's .lock, tried from a descriptor of its own: refused while the study holds it
        with open(os.path.join(folder, ".lock"), "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                reads.append("unlocked")
            except BlockingIOError:
                reads.append("locked")
        return real_read(folder)
    monkeypatch.setattr(runs, "read_state", read_state)
    result = study(fake_data, tmp_path, "--seeds", "1", "2")
    assert result.returncode == 0 and "Every seed is finished" in result.stdout, result.stderr
    assert reads[-2:] == ["locked", "locked"]  # the summary's reads, seed 1 and seed 2


def test_a_study_folder_is_no_run_or_test_folder_and_the_other_way_round(fake_data, tmp_path):
    assert study(fake_data, tmp_path / "study", "--seeds", "1").returncode == 0
    before = sorted(os.listdir(tmp_path / "study")), (tmp_path / "study" / "study.json").read_bytes()
    for flags in ([], ["--overwrite"]):
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "study", *flags)
        assert_clean_error(result, "already holds study.json, study.png", "it is a study's")
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "study" / "seed-1" / "checkpoint.pt", "--data-dir",
                      fake_data, "--out-dir", tmp_path / "study")
    assert_clean_error(result, "already holds study.json")
    assert (sorted(os.listdir(tmp_path / "study")), (tmp_path / "study" / "study.json").read_bytes()) == before


def test_the_lock_is_taken_again_when_its_file_was_removed_in_between(tmp_path, monkeypatch):
    real_flock, calls = fcntl.flock, []

    def flock(fd, operation):  # its holder, leaving the folder empty, removes .lock between this open and this lock
        if not calls:
            os.remove(tmp_path / ".lock")
        calls.append(operation)
        return real_flock(fd, operation)
    monkeypatch.setattr(fcntl, "flock", flock)
    with guard.held(tmp_path) as fd:  # not the removed file's lock, which a third process would not see
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / ".lock")) and len(calls) == 2
