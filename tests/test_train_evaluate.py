"""train.py and evaluate.py end to end on synthetic data, and their errors on bad input."""
import contextlib
import io
import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

import evaluate
import train
from conftest import assert_clean_error, run_main, run_script, snapshot, write_fake_fashion_mnist
from model import FashionCNN, load_checkpoint

RUN = ("--epochs", "3", "--batch-size", "16", "--lr", "3e-3", "--seed", "7")


@pytest.fixture(scope="module")
def trained_run(fake_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", out, *RUN)
    assert result.returncode == 0, result.stderr
    return out, result


def load_json(path):
    with open(path) as f:
        return json.load(f)


def test_train_writes_checkpoint_history_and_metrics(trained_run):
    out, result = trained_run
    assert "Train Epoch: 3 [160/160 (100%)]\tLoss: " in result.stdout
    history = load_json(out / "history.json")
    assert [h["epoch"] for h in history["epochs"]] == [1, 2, 3]
    assert history["epochs"][-1]["train_loss"] < history["epochs"][0]["train_loss"]
    assert history["args"]["seed"] == 7 and history["run"]["torch"] == torch.__version__
    report = load_json(out / "metrics.json")
    cm = report["confusion_matrix"]
    assert sum(map(sum, cm)) == 50 and report["accuracy"] == sum(cm[i][i] for i in range(10)) / 50
    assert report["per_class"]["Shirt"]["support"] == sum(cm[6])
    assert report["accuracy"] >= 0.5  # the label band is easy to learn: well above chance (0.1) after three epochs
    assert report["run"] == history["run"] and 0 <= report["last_epoch"]["test_accuracy"] <= 1
    # The checkpoint is the epoch with the best validation accuracy, its tensors on the CPU, in channels_last.
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    best = max(history["epochs"], key=lambda h: h["val_accuracy"])
    assert checkpoint["epoch"] == best["epoch"] and checkpoint["val_accuracy"] == best["val_accuracy"]
    weight = checkpoint["model"]["features.3.weight"]  # (64, 32, 3, 3): NCHW and NHWC strides differ
    assert weight.device.type == "cpu" and weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    assert (out / "misclassified.png").exists() == bool(report["misclassified_examples"])
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_the_logged_losses_equal_an_independent_computation(trained_run, fake_data):
    out, _ = trained_run
    model = load_checkpoint(str(out / "checkpoint.pt"))
    _, val_loader, _ = train.make_loaders(fake_data, 16, seed=7)
    images, labels = val_loader.dataset.tensors
    with torch.no_grad():
        logits = model(images).double().numpy()
    # Cross-entropy by hand: log-sum-exp minus the true class's logit, averaged over the images.
    top = logits.max(axis=1, keepdims=True)
    log_sum_exp = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    expected = np.mean(log_sum_exp - logits[np.arange(len(labels)), labels.numpy()])
    best = max(load_json(out / "history.json")["epochs"], key=lambda h: h["val_accuracy"])
    assert best["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert best["val_accuracy"] == np.mean(logits.argmax(axis=1) == labels.numpy())


def test_the_training_loss_and_accuracy_equal_an_independent_computation(fake_data):
    train_loader, _, _ = train.make_loaders(fake_data, 48, seed=3)  # 48, 48, 48 and 16: unequal batches
    torch.manual_seed(3)
    model = FashionCNN()
    seen = []  # each batch's logits as the model produced them, and the labels
    model.register_forward_hook(lambda module, inputs, logits: seen.append(logits.detach().double().numpy()))
    labels = []

    class RecordingLoader(type(train_loader)):
        def __iter__(self):
            for images, targets in super().__iter__():
                labels.append(targets.numpy())
                yield images, targets
    loader = RecordingLoader(train_loader.dataset, 48, train_loader.generator)
    with contextlib.redirect_stdout(io.StringIO()):
        loss, acc = train.train_one_epoch(model, loader, torch.optim.Adam(model.parameters()), "cpu", 1, 100)
    logits, y = np.concatenate(seen), np.concatenate(labels)
    top = logits.max(axis=1, keepdims=True)
    per_image = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)) - logits[np.arange(len(y)), y]
    assert loss == pytest.approx(per_image.mean(), rel=1e-5)  # the mean over images, not over batches
    assert acc == np.mean(logits.argmax(axis=1) == y)


def test_evaluate_prints_the_run_report_and_writes_it_elsewhere(trained_run, fake_data, tmp_path):
    out, _ = trained_run
    from_train = load_json(out / "metrics.json")
    before = snapshot(out)
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--batch-size", "7")  # another batch size: the results must not depend on it
    assert result.returncode == 0, result.stderr
    assert f"Test accuracy {from_train['accuracy']:.4f}" in result.stdout and "Most confused:" in result.stdout
    assert "already holds these results: nothing written" in result.stdout and snapshot(out) == before
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", tmp_path / "again")
    assert result.returncode == 0, result.stderr
    again = load_json(tmp_path / "again" / "metrics.json")
    assert again == {k: v for k, v in from_train.items() if k != "last_epoch"}
    assert snapshot(tmp_path / "again").get("misclassified.png") == snapshot(out).get("misclassified.png")


def test_evaluate_on_other_data_never_replaces_a_runs_results(trained_run, tmp_path):
    out, _ = trained_run
    before = snapshot(out)
    other = write_fake_fashion_mnist(tmp_path / "other", n_test=30, seed=5)
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", other)
    assert_clean_error(result, "holds other results", "--out-dir")
    assert "Test accuracy" in result.stdout and "(30 images)" in result.stdout  # the report is printed first
    assert snapshot(out) == before


def test_evaluate_prints_the_report_even_when_it_cannot_write(trained_run, fake_data):
    out, _ = trained_run
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", "/proc/no-such-folder")
    assert_clean_error(result, "cannot write to /proc/no-such-folder")
    assert "Test accuracy" in result.stdout


def test_same_seed_same_numbers(fake_data, tmp_path):
    def history(seed, name):
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / name, "--epochs", "2",
                          "--seed", seed)
        assert result.returncode == 0, result.stderr
        return [{k: v for k, v in h.items() if k != "seconds"}
                for h in load_json(tmp_path / name / "history.json")["epochs"]]
    first = history(3, "a")
    assert history(3, "b") == first
    assert history(4, "c") != first


def test_dropout_flag_reaches_the_model_and_changes_only_the_dropout(fake_data, tmp_path):
    torch.manual_seed(0)
    default = FashionCNN()
    torch.manual_seed(0)
    no_dropout = FashionCNN(dropout=0.0)
    assert default.classifier[3].p == 0.5 and no_dropout.classifier[3].p == 0.0
    for a, b in zip(default.state_dict().values(), no_dropout.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the same weights from the same seed
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "d0", "--epochs", "1",
                      "--dropout", "0")
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "d0" / "checkpoint.pt", weights_only=True)["args"]["dropout"] == 0.0


def test_dry_run_leaves_the_out_dir_alone_and_cleans_up(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "out", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Test accuracy" in result.stdout and not (tmp_path / "out").exists()
    temporary = result.stdout.split("writing to ")[1].split()[0]
    assert "dry-run" in temporary and not os.path.exists(temporary)


def test_the_command_line_runs_in_a_fresh_process(fake_data, tmp_path):
    result = run_script("train.py", "--data-dir", fake_data, "--out-dir", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Test accuracy" in result.stdout
    result = run_script("evaluate.py", "--checkpoint", str(tmp_path / "none.pt"), "--data-dir", fake_data)
    assert_clean_error(result, "no checkpoint at")


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be a positive number"),
    (["--batch-size", "-4"], "--batch-size must be a positive number"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--log-interval", "0"], "--log-interval must be a positive number"),
    (["--epochs", "ten"], "invalid int value"),
    (["--dropout", "-0.1"], "--dropout must be at least 0 and below 1"),
    (["--dropout", "1"], "--dropout must be at least 0 and below 1"),
    (["--dropout", "nan"], "--dropout must be at least 0 and below 1"),
    (["--dropout", "half"], "invalid float value"),
    (["--seed", "-1"], "--seed must be between 0 and 2**64 - 1"),
    (["--seed", str(2**64)], "--seed must be between 0 and 2**64 - 1"),
    (["--resume", "--overwrite"], "choose one"),
    (["--dry-run", "--resume"], "leave out --resume"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--device", "nosuchdevice"], "device 'nosuchdevice' is not available"),
    (["--device", "meta"], "device 'meta' is not available"),
    (["--device", "cpu:1"], "device 'cpu:1' is not available"),
])
def test_bad_flags_are_clear_errors(flags, message, fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "out", *flags)
    assert_clean_error(result, message)
    assert not (tmp_path / "out").exists()


def test_the_largest_seed_trains(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--dry-run", "--seed", 2**64 - 1)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--device", "nosuchdevice"], "device 'nosuchdevice' is not available"),
])
def test_evaluate_bad_flags_are_clear_errors(flags, message, trained_run, fake_data):
    out, _ = trained_run
    assert_clean_error(run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                                *flags), message)


def test_evaluate_without_data_is_a_clear_error(trained_run, tmp_path, offline):
    out, _ = trained_run
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", tmp_path)
    assert_clean_error(result, "Fashion-MNIST is not in", "t10k-images-idx3-ubyte")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so --device cuda is valid")
def test_asking_for_an_absent_gpu_is_a_clear_error(fake_data, tmp_path):
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "o", "--device", "cuda"),
                       "device 'cuda'")


def test_missing_data_is_one_clear_error_and_touches_nothing(tmp_path, offline):
    result = run_main(train.main, "--data-dir", tmp_path / "nothing", "--out-dir", tmp_path / "out")
    assert_clean_error(result, os.path.join(str(tmp_path / "nothing"), "FashionMNIST", "raw"),
                       "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "or as the .gz downloads")
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_a_file_is_a_clear_error_and_the_file_survives(fake_data, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", notes),
                       "notes.txt is a file, not a folder")
    assert notes.read_text() == "mine"


def test_an_unwritable_out_dir_is_found_before_training(fake_data):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", "/proc")
    assert_clean_error(result, "/proc")
    assert "Train Epoch" not in result.stdout


def test_a_diverging_run_stops_with_a_clear_error_and_saves_no_nan(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--lr", "1e6",
                      "--epochs", "2", "--batch-size", "16", "--log-interval", "1")
    assert_clean_error(result, "epoch 1", "batch", "try a lower --lr")
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "history.json").exists()


class RunsCodeWhenUnpickled:
    """A pickle that would create a file if loading it ran code."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_bad_checkpoints(folder):
    """Name -> path of files that evaluate.py must refuse."""
    paths = {name: folder / f"{name}.pt" for name in ("missing", "empty", "garbage", "truncated", "other_model",
                                                      "wrong_shapes", "not_a_dict", "runs_code", "runs_code_zip")}
    paths["empty"].write_bytes(b"")
    paths["garbage"].write_bytes(random.Random(0).randbytes(1000))
    torch.save({"model": FashionCNN().state_dict()}, paths["truncated"])
    paths["truncated"].write_bytes(paths["truncated"].read_bytes()[:5000])
    torch.save({"model": torch.nn.Linear(4, 2).state_dict()}, paths["other_model"])
    torch.save({"model": FashionCNN(num_classes=5).state_dict()}, paths["wrong_shapes"])
    torch.save([1, 2, 3], paths["not_a_dict"])
    with open(paths["runs_code"], "wb") as f:
        pickle.dump({"model": RunsCodeWhenUnpickled(str(folder / "code_ran"))}, f)
    torch.save({"model": RunsCodeWhenUnpickled(str(folder / "code_ran"))}, paths["runs_code_zip"])
    return paths


BAD_CHECKPOINTS = [("missing", "no checkpoint at"), ("empty", "is not a readable checkpoint"),
                   ("garbage", "is not a readable checkpoint"), ("truncated", "is not a readable checkpoint"),
                   ("other_model", "does not hold FashionCNN weights"),
                   ("wrong_shapes", "does not hold FashionCNN weights"), ("not_a_dict", "does not hold FashionCNN"),
                   ("runs_code", "is not a readable checkpoint"), ("runs_code_zip", "is not a readable checkpoint")]


@pytest.mark.parametrize("name, message", BAD_CHECKPOINTS)
def test_bad_checkpoints_are_clear_errors_that_write_nothing(name, message, fake_data, tmp_path):
    path = write_bad_checkpoints(tmp_path)[name]
    before = sorted(os.listdir(tmp_path))
    result = run_main(evaluate.main, "--checkpoint", path, "--data-dir", fake_data)
    assert_clean_error(result, str(path), message)
    assert sorted(os.listdir(tmp_path)) == before  # no metrics.json, no image, and no code ran
    assert not (tmp_path / "code_ran").exists()


def test_random_bytes_are_never_read_as_a_checkpoint(tmp_path):
    # The unpickler fails on random bytes in many ways (UnpicklingError, IndexError, KeyError, UnicodeDecodeError,
    # struct.error, EOFError, RuntimeError): each must become the one clear error. Seeded, so it never flakes.
    rng, path = random.Random(0), tmp_path / "garbage.pt"
    for i in range(600):
        data = rng.randbytes(rng.choice([1, 10, 100, 1000]))
        path.write_bytes(b"\x80\x02" + data if i % 3 == 0 else data)  # a third start like a pickle
        with pytest.raises(ValueError, match="is not a readable checkpoint|does not hold FashionCNN"):
            load_checkpoint(path)


def test_a_bare_state_dict_is_accepted(fake_data, tmp_path):
    torch.save(FashionCNN().state_dict(), tmp_path / "weights.pt")
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "weights.pt", "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "metrics.json").exists()
