"""train.py and evaluate.py end to end on synthetic data, and their errors on bad input."""
import json
import os
import pickle

import pytest
import torch

from conftest import assert_clean_error, run_script
from model import FashionCNN


@pytest.fixture(scope="module")
def trained_run(fake_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_script("train.py", "--data-dir", fake_data, "--out-dir", str(out), "--epochs", "3",
                        "--batch-size", "16", "--lr", "3e-3", "--seed", "7")
    assert result.returncode == 0, result.stderr
    return out, result


def load_json(path):
    with open(path) as f:
        return json.load(f)


def test_train_writes_checkpoint_history_and_metrics(trained_run):
    out, result = trained_run
    assert "Train Epoch: 3 [160/160 (100%)]\tLoss: " in result.stdout
    history = load_json(out / "history.json")
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    report = load_json(out / "metrics.json")
    for key in ("accuracy", "precision", "recall", "f1", "per_class", "confusion_matrix"):
        assert key in report
    cm = report["confusion_matrix"]
    assert sum(map(sum, cm)) == 50 and report["accuracy"] == sum(cm[i][i] for i in range(10)) / 50
    assert report["per_class"]["Shirt"]["support"] == sum(cm[6])
    # The label band is easy to learn: well above chance (0.1) after three epochs.
    assert report["accuracy"] >= 0.5
    # The checkpoint is the epoch with the best validation accuracy.
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    best = max(history, key=lambda h: h["val_accuracy"])
    assert checkpoint["epoch"] == best["epoch"] and checkpoint["val_accuracy"] == best["val_accuracy"]
    assert (out / "misclassified.png").exists() == bool(report["misclassified_examples"])
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_evaluate_reproduces_the_metrics_train_reported(trained_run, fake_data):
    out, _ = trained_run
    from_train = load_json(out / "metrics.json")
    result = run_script("evaluate.py", "--checkpoint", str(out / "checkpoint.pt"), "--data-dir", fake_data,
                        "--batch-size", "7")  # another batch size: the results must not depend on it
    assert result.returncode == 0, result.stderr
    assert load_json(out / "metrics.json") == from_train
    assert f"Test accuracy {from_train['accuracy']:.4f}" in result.stdout
    assert "Most confused:" in result.stdout and "Confusion matrix" in result.stdout


def test_same_seed_same_numbers(fake_data, tmp_path):
    def history(seed, name):
        result = run_script("train.py", "--data-dir", fake_data, "--out-dir", str(tmp_path / name),
                            "--epochs", "2", "--seed", str(seed))
        assert result.returncode == 0, result.stderr
        return [{k: v for k, v in h.items() if k != "seconds"} for h in load_json(tmp_path / name / "history.json")]
    first = history(3, "a")
    assert history(3, "b") == first
    assert history(4, "c") != first


def test_dry_run_leaves_the_out_dir_alone(fake_data, tmp_path):
    result = run_script("train.py", "--data-dir", fake_data, "--out-dir", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Test accuracy" in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be a positive number"),
    (["--batch-size", "-4"], "--batch-size must be a positive number"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--log-interval", "0"], "--log-interval must be a positive number"),
    (["--epochs", "ten"], "invalid int value"),
    (["--seed", "-1"], "--seed must be between 0 and 2**63 - 1"),
    (["--seed", str(2**64)], "--seed must be between 0 and 2**63 - 1"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--device", "nosuchdevice"], "device 'nosuchdevice' is not available"),
])
def test_bad_flags_are_clear_errors(flags, message, fake_data, tmp_path):
    result = run_script("train.py", "--data-dir", fake_data, "--out-dir", str(tmp_path / "out"), *flags)
    assert_clean_error(result, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--device", "nosuchdevice"], "device 'nosuchdevice' is not available"),
])
def test_evaluate_bad_flags_are_clear_errors(flags, message, trained_run, fake_data):
    out, _ = trained_run
    assert_clean_error(run_script("evaluate.py", "--checkpoint", str(out / "checkpoint.pt"), "--data-dir", fake_data,
                                  *flags), message)


def test_evaluate_without_data_is_a_clear_error(trained_run, tmp_path):
    out, _ = trained_run
    result = run_script("evaluate.py", "--checkpoint", str(out / "checkpoint.pt"), "--data-dir", str(tmp_path))
    assert_clean_error(result, "Fashion-MNIST is not in", "t10k-images-idx3-ubyte")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so --device cuda is valid")
def test_asking_for_an_absent_gpu_is_a_clear_error(fake_data):
    assert_clean_error(run_script("train.py", "--data-dir", fake_data, "--device", "cuda"), "device 'cuda'")


def test_missing_data_is_one_clear_error_and_touches_nothing(tmp_path):
    result = run_script("train.py", "--data-dir", str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "out"))
    assert_clean_error(result, os.path.join(str(tmp_path / "nothing"), "FashionMNIST", "raw"),
                       "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_a_file_is_a_clear_error_and_the_file_survives(fake_data, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert_clean_error(run_script("train.py", "--data-dir", fake_data, "--out-dir", str(notes)), "notes.txt")
    assert notes.read_text() == "mine"


class RunsCodeWhenUnpickled:
    """A pickle that would create a file if loading it ran code."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_bad_checkpoints(folder):
    """Name -> path of files that evaluate.py must refuse."""
    paths = {name: folder / f"{name}.pt" for name in ("missing", "empty", "garbage", "other_model",
                                                      "wrong_shapes", "not_a_dict", "runs_code", "runs_code_zip")}
    paths["empty"].write_bytes(b"")
    paths["garbage"].write_bytes(os.urandom(1000))
    torch.save({"model": torch.nn.Linear(4, 2).state_dict()}, paths["other_model"])
    torch.save({"model": FashionCNN(num_classes=5).state_dict()}, paths["wrong_shapes"])
    torch.save([1, 2, 3], paths["not_a_dict"])
    with open(paths["runs_code"], "wb") as f:
        pickle.dump({"model": RunsCodeWhenUnpickled(str(folder / "code_ran"))}, f)
    torch.save({"model": RunsCodeWhenUnpickled(str(folder / "code_ran"))}, paths["runs_code_zip"])
    return paths


@pytest.mark.parametrize("name, message", [
    ("missing", "no checkpoint at"),
    ("empty", "is not a readable checkpoint"),
    ("garbage", "is not a readable checkpoint"),
    ("other_model", "does not hold FashionCNN weights"),
    ("wrong_shapes", "does not hold FashionCNN weights"),
    ("not_a_dict", "does not hold FashionCNN weights"),
    ("runs_code", "is not a readable checkpoint"),
    ("runs_code_zip", "is not a readable checkpoint"),
])
def test_bad_checkpoints_are_clear_errors_that_write_nothing(name, message, fake_data, tmp_path):
    path = write_bad_checkpoints(tmp_path)[name]
    before = sorted(os.listdir(tmp_path))
    result = run_script("evaluate.py", "--checkpoint", str(path), "--data-dir", fake_data)
    assert_clean_error(result, str(path), message)
    assert sorted(os.listdir(tmp_path)) == before  # no metrics.json, no image, and no code ran
    assert not (tmp_path / "code_ran").exists()


def test_a_bare_state_dict_is_accepted(fake_data, tmp_path):
    torch.save(FashionCNN().state_dict(), tmp_path / "weights.pt")
    result = run_script("evaluate.py", "--checkpoint", str(tmp_path / "weights.pt"), "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "metrics.json").exists()
