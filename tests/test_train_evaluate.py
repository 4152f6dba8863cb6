"""train.py and evaluate.py end to end on synthetic data: the record, the checkpoint on the CPU and in channels_last,
the logged losses against cross-entropy in numpy; train_one_epoch against the textbook loop; the report on hand-made
imbalanced labels (weighted, not macro; support from the true rows; the worst confusions first); metrics.json testing
the best epoch's checkpoint, not the last epoch's weights; evaluate.py reproducing the run's report at another batch
size and never writing into a run's folder or over a metrics.json; seeded reproducibility; every bad flag and bad
checkpoint (one would run code if unpickled, one holds NaN); an unwritable output folder; a diverging run; dry runs
that fail, are interrupted or were killed; Ctrl-C held down."""
import contextlib
import io
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

import evaluate
import train
from conftest import OFFLINE, ROOT, assert_clean_error, run_main, run_script, snapshot
from data import TensorLoader
from metrics import confusion_matrix
from model import FashionCNN, load_checkpoint, run_info, use_strict_fp32
from plumbing import runs

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


def test_train_writes_checkpoint_record_and_metrics(trained_run):
    out, result = trained_run
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
    state = runs.read_state(out)
    assert state["history"] == record["epochs"] and state["test"]["report"] == report and record["tested"]
    assert state["best"]["epoch"] == checkpoint["epoch"] and state["id"] == record["id"]
    assert (out / "misclassified.png").exists() == bool(report["misclassified_examples"])
    assert sorted(os.listdir(out)) == [".lock", "checkpoint.pt", "confusion_matrix.png", "learning_curves.png",
                                       "metrics.json", "misclassified.png", "run.json", "state.pt"]  # no .tmp


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
    best = max(load_json(out / "run.json")["epochs"], key=lambda h: h["val_accuracy"])
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


def test_evaluate_prints_the_run_report_and_writes_it_elsewhere(trained_run, fake_data, tmp_path):
    out, _ = trained_run
    from_train = load_json(out / "metrics.json")
    before = snapshot(out)
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--batch-size", "7")  # another batch size: the results must not depend on it
    assert result.returncode == 0, result.stderr
    assert f"Test accuracy {from_train['accuracy']:.4f}" in result.stdout and "Most confused:" in result.stdout
    assert snapshot(out) == before  # no --out-dir: printed only
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", tmp_path / "again")
    assert result.returncode == 0, result.stderr
    assert load_json(tmp_path / "again" / "metrics.json") == from_train
    assert snapshot(tmp_path / "again").get("misclassified.png") == snapshot(out).get("misclassified.png")


@pytest.mark.parametrize("tested", [True, False])
def test_evaluate_never_writes_into_a_runs_folder(tested, trained_run, fake_data, tmp_path):
    out = copy_run(trained_run[0], tmp_path / "run")
    if not tested:  # as if train.py had stopped before its test
        for name in ("metrics.json", "confusion_matrix.png", "misclassified.png"):
            os.remove(out / name)
    before = snapshot(out)
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data, "--out-dir", out)
    assert_clean_error(result, f"{out} already holds state.pt", "not replaced", "another --out-dir")
    assert "Test accuracy" not in result.stdout  # refused before the test, not after
    assert snapshot(out) == before


def test_evaluate_that_cannot_make_its_folder_says_so_before_the_test(trained_run, fake_data):
    out, _ = trained_run
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", "/proc/no-such-folder")
    assert_clean_error(result, "cannot write to /proc/no-such-folder")
    assert "Test accuracy" not in result.stdout  # its folder made and locked first: no test wasted


def test_same_seed_same_numbers(fake_data, tmp_path):
    def history(seed, name):
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / name, "--epochs", "2",
                          "--seed", seed)
        assert result.returncode == 0, result.stderr
        return [{k: v for k, v in h.items() if k != "seconds"}
                for h in load_json(tmp_path / name / "run.json")["epochs"]]
    first = history(3, "a")
    assert history(3, "b") == first
    assert history(4, "c") != first


def test_dropout_flag_reaches_the_model(fake_data, tmp_path):
    def first_epoch(*flags):
        folder = tmp_path / "-".join(flags or ("default",))
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", folder, "--epochs", "1", *flags)
        assert result.returncode == 0, result.stderr
        return load_json(folder / "run.json")
    default, none, half = first_epoch(), first_epoch("--dropout", "0"), first_epoch("--dropout", "0.5")
    assert none["settings"]["dropout"] == 0 and half["epochs"][0]["train_loss"] == default["epochs"][0]["train_loss"]
    assert none["epochs"][0]["train_loss"] != default["epochs"][0]["train_loss"]  # other masks: another loss


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
    last.load_state_dict(runs.read_state(tmp_path)["model"])
    last_cm = confusion_matrix(*evaluate.predict(last, test_loader, "cpu")[1:], 10).tolist()
    assert report["confusion_matrix"] == best_cm != last_cm


def test_dry_run_leaves_the_out_dir_alone_and_cleans_up(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "out", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Test accuracy" in result.stdout and not (tmp_path / "out").exists()
    temporary = result.stdout.split("writing to ")[1].split()[0]
    assert "dry-run" in temporary and not os.path.exists(temporary)


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


def test_a_dry_run_works_in_a_private_folder_of_its_own(fake_data, tmp_path, monkeypatch):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "finished", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    before = snapshot(tmp_path / "finished")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # a shared TMPDIR any local user writes to
    os.makedirs(tmp_path / "tmp")
    os.symlink(tmp_path / "finished", tmp_path / "tmp" / "fashion-cnn-dry-run")  # planted where dry runs once went
    (tmp_path / "tmp" / "fashion-cnn-dry-run-mine").mkdir()
    (tmp_path / "tmp" / "fashion-cnn-dry-run-mine" / "notes.txt").write_text("mine")
    runs_at_once = [subprocess.Popen([sys.executable, "train.py", "--data-dir", fake_data, "--dry-run"], cwd=ROOT,
                                     env={**os.environ, **OFFLINE, "TMPDIR": str(tmp_path / "tmp")},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [process.wait(timeout=300) for process in runs_at_once] == [0, 0]  # neither refuses the other
    result = run_main(train.main, "--data-dir", fake_data, "--dry-run")
    assert result.returncode == 0 and f"writing to {tmp_path / 'tmp'}" in result.stdout, result.stderr
    assert snapshot(tmp_path / "finished") == before  # the finished run behind the link, untouched
    assert (tmp_path / "tmp" / "fashion-cnn-dry-run-mine" / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "tmp")) == ["fashion-cnn-dry-run", "fashion-cnn-dry-run-mine"]


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
    (["--device", "hpu"], "device 'hpu' is not available"),
    (["--lr", "1e39"], "--lr must be a positive number below 1e30"),
    (["--batch-size", str(10**20)], "--batch-size must be a positive number below 2**31"),
    (["--epochs", "0", "--resume"], "--epochs must be a positive number"),
])
def test_bad_flags_are_clear_errors(flags, message, fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "out", *flags)
    assert_clean_error(result, message)
    assert not (tmp_path / "out").exists()


def test_the_largest_seed_trains(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--dry-run", "--seed", 2**64 - 1)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be a positive number below 2**31"),
    (["--batch-size", str(10**20)], "--batch-size must be a positive number below 2**31"),
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
                       "notes.txt: a file, not a folder")
    assert notes.read_text() == "mine"


def test_an_unwritable_out_dir_is_found_before_training(fake_data):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", "/proc")
    assert_clean_error(result, "cannot write to /proc")
    assert "Train Epoch" not in result.stdout


def test_run_info_names_the_device_kind(monkeypatch):
    assert "CPU" in run_info(torch.device("cpu"))["device"]

    class NoNames:  # torch.mps: no device names
        pass

    class Names:
        def get_device_name(self, device):
            return "Intel Arc"
    monkeypatch.setattr(torch, "get_device_module", lambda device: NoNames())
    assert run_info(torch.device("mps"))["device"] == "mps"
    monkeypatch.setattr(torch, "get_device_module", lambda device: Names())
    assert run_info(torch.device("xpu"))["device"] == "xpu: Intel Arc"


def test_a_diverging_run_stops_with_a_clear_error_and_saves_no_nan(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--lr", "1e6",
                      "--epochs", "2", "--batch-size", "16", "--log-interval", "1")
    assert_clean_error(result, "epoch 1", "batch", "try a lower --lr")
    assert os.listdir(tmp_path) == []  # nothing saved, and no lock left


class RunsCodeWhenUnpickled:
    """A pickle that would create a file if loading it ran code."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_bad_checkpoints(folder):
    """Name -> path of files that evaluate.py must refuse."""
    paths = {name: folder / f"{name}.pt" for name in ("missing", "empty", "garbage", "truncated", "other_model",
                                                      "wrong_shapes", "not_a_dict", "runs_code", "runs_code_zip",
                                                      "nan")}
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
    diverged = FashionCNN().state_dict()
    diverged["classifier.1.weight"][0, 0] = float("nan")
    torch.save({"model": diverged}, paths["nan"])
    return paths


BAD_CHECKPOINTS = [("missing", "no checkpoint at"), ("empty", "is not a readable checkpoint"),
                   ("garbage", "is not a readable checkpoint"), ("truncated", "is not a readable checkpoint"),
                   ("other_model", "does not hold FashionCNN weights"),
                   ("wrong_shapes", "does not hold FashionCNN weights"), ("not_a_dict", "does not hold FashionCNN"),
                   ("runs_code", "is not a readable checkpoint"), ("runs_code_zip", "is not a readable checkpoint"),
                   ("nan", "holds NaN or infinite weights")]


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
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "weights.pt", "--data-dir", fake_data, "--out-dir",
                      tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "metrics.json").exists()


def test_the_report_weights_by_true_support_and_lists_the_worst_confusions_first():
    # Worked by hand. True class 0 six times, 1 three times, 2 once (the 7 others absent):
    #   true 0 -> predicted 0, 0, 0, 0, 1, 1;  true 1 -> 1, 2, 2;  true 2 -> 0
    # confusion rows [4, 2, 0], [0, 1, 2], [1, 0, 0]; predicted (column sums) 5, 3, 2; support (row sums) 6, 3, 1.
    y_true = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 0])
    report = evaluate.classification_report(y_true, y_pred)
    # precision 4/5, 1/3, 0/2; recall 4/6, 1/3, 0/1; F1 = 2tp / (predicted + support) = 8/11, 2/6, 0.
    # Weighted by support 6, 3, 1 over 10 images (a macro mean over the 10 classes would be about a fifth of these).
    assert report["precision"] == pytest.approx((6 * 4 / 5 + 3 * 1 / 3) / 10)  # 0.58
    assert report["recall"] == pytest.approx((6 * 4 / 6 + 3 * 1 / 3) / 10) == report["accuracy"] == 0.5
    assert report["f1"] == pytest.approx((6 * 8 / 11 + 3 * 1 / 3) / 10)  # 0.5364
    assert [report["per_class"][name]["support"] for name in evaluate.CLASSES[:4]] == [6, 3, 1, 0]
    assert report["per_class"]["Pullover"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # Most confused first: 0 -> 1 and 1 -> 2 twice each, then 2 -> 0 once.
    assert [m["count"] for m in report["most_confused"]] == [2, 2, 1]
    assert report["most_confused"][2] == {"true": "Pullover", "predicted": "T-shirt/top", "count": 1}
    rows = {(m["true"], m["predicted"]): m["row"] for m in report["misclassified_examples"]}
    assert rows[("Pullover", "T-shirt/top")] == 2
    assert [m["index"] for m in report["misclassified_examples"] if m["true"] == "T-shirt/top"] == [4, 5]


def copy_run(source, folder):
    folder.mkdir()
    for name in os.listdir(source):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


@pytest.mark.parametrize("damage", ["garbage", "folder", "another test's"])
def test_evaluate_never_replaces_a_metrics_json(damage, fake_data, tmp_path):
    torch.save(FashionCNN().state_dict(), tmp_path / "weights.pt")
    if damage == "folder":
        (tmp_path / "metrics.json").mkdir()
    else:
        (tmp_path / "metrics.json").write_text("{not json" if damage == "garbage" else '{"accuracy": 1}')
    before = snapshot(tmp_path) if damage != "folder" else None
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "weights.pt", "--data-dir", fake_data, "--out-dir",
                      tmp_path)
    assert_clean_error(result, "already holds metrics.json", "not replaced")
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "misclassified.png").exists()
    assert damage == "folder" or snapshot(tmp_path) == before


def test_evaluate_that_cannot_write_a_picture_says_so_and_leaves_no_half_file(fake_data, tmp_path):
    torch.save(FashionCNN().state_dict(), tmp_path / "weights.pt")
    (tmp_path / "misclassified.png.tmp").mkdir()  # where the picture would be written: not writable
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "weights.pt", "--data-dir", fake_data, "--out-dir",
                      tmp_path)
    assert_clean_error(result, "cannot write", "misclassified.png")
    assert sorted(os.listdir(tmp_path)) == [".lock", "misclassified.png.tmp", "weights.pt"]  # no metrics.json


def test_evaluate_sets_the_same_numerics_as_train(trained_run, fake_data, monkeypatch):
    calls = []
    monkeypatch.setattr(evaluate, "use_strict_fp32", lambda: calls.append("strict fp32"))
    result = run_main(evaluate.main, "--checkpoint", trained_run[0] / "checkpoint.pt", "--data-dir", fake_data)
    assert result.returncode == 0 and calls == ["strict fp32"], result.stderr
    monkeypatch.undo()
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, which TF32-capable GPUs would use
    use_strict_fp32()
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.are_deterministic_algorithms_enabled()


def test_ctrl_c_held_down_ends_in_one_message_and_no_traceback(fake_data, tmp_path):
    process = subprocess.Popen([sys.executable, "train.py", "--data-dir", fake_data, "--out-dir", str(tmp_path),
                                "--epochs", "40"], cwd=ROOT, env={**os.environ, **OFFLINE}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not (tmp_path / "run.json").exists() and process.poll() is None:
        time.sleep(0.005)
    for _ in range(200):  # a key held down: a Ctrl-C every millisecond, on the way out too
        process.send_signal(signal.SIGINT)
        time.sleep(0.001)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr and stderr.count("interrupted.") == 1, stderr


def test_overwrite_replaces_a_damaged_run(fake_data, tmp_path):
    (tmp_path / "state.pt").write_bytes(b"damaged")
    (tmp_path / "run.json").write_text("[" * 200_000)
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--resume"),
                       "state.pt is not a readable checkpoint")
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "1", "--overwrite")
    assert result.returncode == 0 and runs.read_state(tmp_path)["test"], result.stderr


def test_evaluate_interrupted_says_so_and_writes_nothing(trained_run, fake_data, tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluate, "test", interrupted)
    result = run_main(evaluate.main, "--checkpoint", trained_run[0] / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", tmp_path / "out")
    assert result.returncode == 130 and "interrupted: nothing written" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
