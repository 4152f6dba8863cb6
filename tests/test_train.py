"""train.py, the recipe, end to end on synthetic data: the record, the checkpoint on the CPU and in channels_last,
the logged losses against cross-entropy in numpy; train_one_epoch against the textbook loop; metrics.json testing
the best epoch's checkpoint (the first of equals), not the last epoch's weights; seeded reproducibility; --dropout
reaching the model; dry runs (two batches each, a private folder of their own, removed however they end, no
--resume offered for it); every bad flag, missing data and a diverging run as one error that saves nothing."""
import contextlib
import io
import json
import os
import sys
import tempfile

import numpy as np
import pytest
import torch

import evaluate
import train
from conftest import RUN, assert_clean_error, run_main, snapshot, state_of, write_fake_fashion_mnist
from data import TensorLoader
from metrics import confusion_matrix
from model import FashionCNN, load_checkpoint


def load_json(path):
    with open(path) as f:
        return json.load(f)


def test_train_writes_checkpoint_record_and_metrics(trained_run, straight):
    out, result = trained_run, straight.output(3)
    assert "Train Epoch: 3 [160/160 (100%)]\tLoss: " in result.stdout
    record = load_json(out / "run.json")
    assert [h["epoch"] for h in record["epochs"]] == [1, 2, 3]
    assert record["epochs"][-1]["train_loss"] < record["epochs"][0]["train_loss"]
    assert record["settings"] == {"epochs": 3, "batch_size": 16, "lr": 3e-3, "dropout": 0.5, "seed": 7,
                                  "augment": False, "schedule": "constant", "label_smoothing": 0.0, "batch_norm": False,
                                  "weight_decay": 0.0, "tta": False}
    assert record["run"]["torch"] == torch.__version__
    report = load_json(out / "metrics.json")
    cm = report["confusion_matrix"]
    assert sum(map(sum, cm)) == 50 and report["accuracy"] == sum(cm[i][i] for i in range(10)) / 50
    assert report["per_class"]["Shirt"]["support"] == sum(cm[6])
    assert report["accuracy"] >= 0.5  # the label band is easy to learn: well above chance (0.1) after three epochs
    assert report["run"] == record["run"]
    # The checkpoint is the epoch with the best validation accuracy (the first of equals), its tensors on the CPU,
    # in channels_last; all of it written from the state, which holds the last epoch's weights and the test.
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    best = max(record["epochs"], key=lambda h: h["val_accuracy"])
    assert checkpoint["epoch"] == best["epoch"] == record["best_epoch"]
    assert checkpoint["val_accuracy"] == best["val_accuracy"] and checkpoint["run"] == record["id"]
    weight = checkpoint["model"]["features.3.weight"]  # (64, 32, 3, 3): NCHW and NHWC strides differ
    assert weight.device.type == "cpu" and weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    state = state_of(out)
    assert state["history"] == record["epochs"] and state["test"]["report"] == report and record["tested"]
    assert state["best"]["epoch"] == checkpoint["epoch"] and state["id"] == record["id"]
    assert (out / "misclassified.png").exists() == bool(report["misclassified_examples"])
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "confusion_matrix.png", "learning_curves.png",
                                       "metrics.json", "misclassified.png", "run.json", "state.pt"]  # no .tmp


def test_the_logged_losses_equal_an_independent_computation(trained_run, fake_data):
    model = load_checkpoint(str(trained_run / "checkpoint.pt"))
    _, val_loader, _ = train.make_loaders(fake_data, 16, seed=7)
    images, labels = val_loader.dataset.tensors
    with torch.no_grad():
        logits = model(images).double().numpy()
    # Cross-entropy by hand: log-sum-exp minus the true class's logit, averaged over the images.
    top = logits.max(axis=1, keepdims=True)
    log_sum_exp = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    expected = np.mean(log_sum_exp - logits[np.arange(len(labels)), labels.numpy()])
    best = max(load_json(trained_run / "run.json")["epochs"], key=lambda h: h["val_accuracy"])
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
    loader = RecordingLoader(train_loader.dataset, 48, train_loader.generators["shuffle"])
    with contextlib.redirect_stdout(io.StringIO()):
        loss, acc = train.train_one_epoch(model, loader, torch.optim.Adam(model.parameters()), "cpu", 1, 100)
    logits, y = np.concatenate(seen), np.concatenate(labels)
    top = logits.max(axis=1, keepdims=True)
    per_image = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)) - logits[np.arange(len(y)), y]
    assert loss == pytest.approx(per_image.mean(), rel=1e-5)  # the mean over images, not over batches
    assert acc == np.mean(logits.argmax(axis=1) == y)


def test_train_one_epoch_is_the_textbook_loop(fake_data):
    """Against the loop written out: train mode (dropout on), zero_grad, backward, step, for every batch."""
    train_loader, _, _ = train.make_loaders(fake_data, 16, seed=2)
    weights = []
    for use_train_one_epoch in (True, False):
        torch.manual_seed(2)
        model = FashionCNN()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.eval()  # as predict() leaves it after a validation pass
        loader = TensorLoader(train_loader.dataset, 16, torch.Generator().manual_seed(2))
        if use_train_one_epoch:
            with contextlib.redirect_stdout(io.StringIO()):
                train.train_one_epoch(model, loader, optimizer, "cpu", 1, log_interval=100)
        else:
            model.train()
            for images, labels in loader:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(images), labels).backward()
                optimizer.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    for mine, reference in zip(*weights, strict=True):
        assert torch.equal(mine, reference)


def test_same_seed_same_numbers(fake_data, tmp_path, straight):
    def history(folder):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in load_json(folder / "run.json")["epochs"]]
    for seed in (7, 8):
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / str(seed), *RUN, "--seed", seed,
                          "--epochs", "2")
        assert result.returncode == 0, result.stderr
    assert history(tmp_path / "7") == history(straight(2)) != history(tmp_path / "8")


def test_dropout_flag_reaches_the_model(fake_data, tmp_path):
    def first_epoch(*flags):
        folder = tmp_path / "-".join(flags or ("default",))
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", folder, "--epochs", "1", *flags)
        assert result.returncode == 0, result.stderr
        return load_json(folder / "run.json")
    default, none, half = first_epoch(), first_epoch("--dropout", "0"), first_epoch("--dropout", "0.5")
    assert none["settings"]["dropout"] == 0 and half["epochs"][0]["train_loss"] == default["epochs"][0]["train_loss"]
    assert none["epochs"][0]["train_loss"] != default["epochs"][0]["train_loss"]  # other masks: another loss


def test_metrics_json_tests_the_best_epochs_checkpoint_not_the_last_epochs_weights(fake_data, tmp_path, monkeypatch):
    real = train.train_one_epoch

    def ruined_from_epoch_3(model, *args, **kwargs):  # the head's weights zeroed: every image "T-shirt/top"
        result = real(model, *args, **kwargs)
        if args[3] >= 3:
            with torch.no_grad():
                model.classifier[-1].weight.zero_()
                model.classifier[-1].bias.zero_()
        return result
    monkeypatch.setattr(train, "train_one_epoch", ruined_from_epoch_3)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "4", "--batch-size",
                      "16", "--lr", "3e-3")
    assert result.returncode == 0, result.stderr
    record, report = load_json(tmp_path / "run.json"), load_json(tmp_path / "metrics.json")
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert record["best_epoch"] == checkpoint["epoch"] == 2  # the first of equals
    _, _, test_loader = train.make_loaders(fake_data)
    best_cm = confusion_matrix(*evaluate.predict(load_checkpoint(tmp_path / "checkpoint.pt"), test_loader, "cpu")[1:],
                               10).tolist()
    last = FashionCNN()
    last.load_state_dict(state_of(tmp_path)["model"])
    last_cm = confusion_matrix(*evaluate.predict(last, test_loader, "cpu")[1:], 10).tolist()
    assert report["confusion_matrix"] == best_cm != last_cm


def test_the_first_of_equal_validation_accuracies_is_kept(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "accuracy", lambda y_true, y_pred: 0.5)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "3")
    assert result.returncode == 0, result.stderr
    assert state_of(tmp_path)["best"]["epoch"] == 1


def test_dry_run_leaves_the_out_dir_alone_and_cleans_up(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "out", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Test accuracy" in result.stdout and not (tmp_path / "out").exists()
    temporary = result.stdout.split("writing to ")[1].split()[0]
    assert "dry-run" in temporary and not os.path.exists(temporary)


def test_a_dry_run_trains_validates_and_tests_two_batches_each(tmp_path):
    data_dir = write_fake_fashion_mnist(tmp_path, n_train=3000, n_test=600)  # 2,400 / 600 / 600: more than two
    result = run_main(train.main, "--data-dir", data_dir, "--dry-run", "--log-interval", "1")  # batches each
    assert result.returncode == 0, result.stderr
    assert "Train Epoch: 1 [128/2400 (100%)]" in result.stdout and "[192/2400" not in result.stdout  # 2 x 64
    assert "(512 images)" in result.stdout  # the test: 2 x 256 of the 600


def test_a_dry_run_that_fails_or_is_interrupted_removes_its_folder(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    assert_clean_error(run_main(train.main, "--data-dir", tmp_path / "nothing", "--dry-run"), "Fashion-MNIST is not")
    assert os.listdir(tmp_path / "tmp") == []

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_one_epoch", interrupt)
    result = run_main(train.main, "--data-dir", fake_data, "--dry-run")
    assert result.returncode == 130 and "nothing to resume" in result.stderr
    assert os.listdir(tmp_path / "tmp") == []
    monkeypatch.undo()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(train, "test", interrupt)  # its one epoch saved, interrupted in its test
    result = run_main(train.main, "--data-dir", fake_data, "--dry-run")
    assert result.returncode == 130 and "--resume" not in result.stderr, result.stderr  # its folder is gone
    assert os.listdir(tmp_path / "tmp") == []


def test_two_dry_runs_at_once_each_work_in_a_private_folder_of_their_own(fake_data, tmp_path, monkeypatch):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "finished", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    before = snapshot(tmp_path / "finished")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # a shared TMPDIR any local user writes to
    os.makedirs(tmp_path / "tmp")
    os.symlink(tmp_path / "finished", tmp_path / "tmp" / "fashion-cnn-dry-run")  # planted where dry runs once went
    (tmp_path / "tmp" / "fashion-cnn-dry-run-mine").mkdir()
    (tmp_path / "tmp" / "fashion-cnn-dry-run-mine" / "notes.txt").write_text("mine")
    real, inner = train.train_one_epoch, []

    def and_another_dry_run_meanwhile(*args, **kwargs):  # while this one holds its folder, a second one starts
        if not inner:
            inner.append(None)
            inner[0] = run_main(train.main, "--data-dir", fake_data, "--dry-run")
        return real(*args, **kwargs)
    monkeypatch.setattr(train, "train_one_epoch", and_another_dry_run_meanwhile)
    outer = run_main(train.main, "--data-dir", fake_data, "--dry-run")
    for result in (outer, inner[0]):  # neither refuses the other
        assert result.returncode == 0 and f"writing to {tmp_path / 'tmp'}" in result.stdout, result.stderr
    assert outer.stdout.split("writing to ")[1].split()[0] != inner[0].stdout.split("writing to ")[1].split()[0]
    assert snapshot(tmp_path / "finished") == before  # the finished run behind the link, untouched
    assert (tmp_path / "tmp" / "fashion-cnn-dry-run-mine" / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "tmp")) == ["fashion-cnn-dry-run", "fashion-cnn-dry-run-mine"]


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be from 1 to 2**31 - 1"),
    (["--batch-size", "-4"], "--batch-size must be from 1 to 2**31 - 1"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--log-interval", "0"], "--log-interval must be from 1 to 2**31 - 1"),
    (["--epochs", "ten"], "invalid int value"),
    (["--dropout", "-0.1"], "--dropout must be at least 0 and below 1"),
    (["--dropout", "1"], "--dropout must be at least 0 and below 1"),
    (["--dropout", "nan"], "--dropout must be at least 0 and below 1"),
    (["--dropout", "half"], "invalid float value"),
    (["--seed", "-1"], "--seed must be from 0 to 2**64 - 1"),
    (["--seed", str(2**64)], "--seed must be from 0 to 2**64 - 1"),
    (["--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
    (["--dry-run", "--resume"], "argument --resume: not allowed with argument --dry-run"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--device", "nosuchdevice"], "device 'nosuchdevice' is not available"),
    (["--device", "meta"], "device 'meta' is not available"),
    (["--device", "hpu"], "device 'hpu' is not available"),
    (["--lr", "1e39"], "--lr must be a positive number below 1e30"),
    (["--batch-size", str(10**20)], "--batch-size must be from 1 to 2**31 - 1"),
    (["--epochs", "0", "--resume"], "--epochs must be from 1 to 2**31 - 1"),
])
def test_bad_flags_are_clear_errors(flags, message, fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "out", *flags)
    assert_clean_error(result, message)
    assert not (tmp_path / "out").exists()


def test_help_gives_each_of_the_recipes_defaults():
    shown = " ".join(run_main(train.main, "--help").stdout.split("options:")[1].split())  # argparse wraps lines
    for name, value in train.RECIPE.items():
        if value is not False:  # an on/off flag is off unless given
            entry = shown.split(f"--{name.replace('_', '-')} ", 1)[1].split(" --", 1)[0]
            assert f"(default: {value if isinstance(value, str) else format(value, 'g')}" in entry, (name, entry)


def test_any_out_dir_it_accepts_it_can_print(fake_data, tmp_path, monkeypatch):
    """A strict console (PYTHONIOENCODING=utf-8) and a folder name that is not UTF-8: printed escaped, not fatal."""
    monkeypatch.chdir(tmp_path)
    console = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", console)
    train.main(["--data-dir", fake_data, "--out-dir", os.fsdecode(b"caf\xe9"), "--epochs", "1", "--batch-size", "16"])
    console.flush()
    assert b"writing to caf\\udce9" in console.buffer.getvalue() and os.path.exists(b"caf\xe9/metrics.json")


def test_the_largest_seed_trains(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--dry-run", "--seed", 2**64 - 1)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so --device cuda is valid")
def test_asking_for_an_absent_gpu_is_a_clear_error(fake_data, tmp_path):
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "o", "--device", "cuda"),
                       "device 'cuda'")


def test_missing_data_is_one_clear_error_and_touches_nothing(tmp_path, offline):
    result = run_main(train.main, "--data-dir", tmp_path / "nothing", "--out-dir", tmp_path / "out")
    assert_clean_error(result, os.path.join(str(tmp_path / "nothing"), "FashionMNIST", "raw"),
                       "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "or as the .gz downloads")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("interval, batches", [(1, "between batches 2 and 2"), (5, "between batches 1 and 5")])
def test_a_diverging_run_stops_with_a_clear_error_and_saves_no_nan(interval, batches, fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--lr", "1e6",
                      "--epochs", "2", "--batch-size", "16", "--log-interval", interval)
    assert_clean_error(result, "epoch 1", batches, "try a lower --lr")  # the checks the first NaN fell between
    assert os.listdir(tmp_path) == []  # nothing saved


def test_a_diverged_validation_is_one_error_and_saves_nothing(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "predict", lambda *args: (float("nan"), [0], [0]))
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "1")
    assert_clean_error(result, "the validation loss became nan in epoch 1", "try a lower --lr")
    assert os.listdir(tmp_path) == []
