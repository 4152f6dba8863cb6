"""The flags beyond the write-up's recipe (--augment, --schedule, --label-smoothing, --batch-norm, --weight-decay;
--tta): each
changes the training (--tta only the test), each is reproducible and resumable bit for bit, and leaving them out
leaves the recipe as it was. --tta in train.py and evaluate.py computes the same test, the mean of each image's
logits and its mirror image's."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import data
import evaluate
import train
from conftest import OFFLINE, ROOT, assert_clean_error, run_main, snapshot, write_fake_fashion_mnist, write_idx
from model import FashionCNN, load_checkpoint

BASE = ("--epochs", "2", "--batch-size", "16", "--seed", "4")
FLAGS = [("--augment",), ("--schedule", "onecycle"), ("--label-smoothing", "0.1"), ("--batch-norm",),
         ("--weight-decay", "0.05")]


def trained(data_dir, folder, *flags):
    result = run_main(train.main, "--data-dir", data_dir, "--out-dir", folder, *BASE, *flags)
    assert result.returncode == 0, result.stderr
    record = json.loads((folder / "run.json").read_text())
    weights = torch.load(folder / "checkpoint.pt", weights_only=True)["model"]
    return [{k: v for k, v in h.items() if k != "seconds"} for h in record["epochs"]], weights


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def default(fake_data, tmp_path_factory):
    return trained(fake_data, tmp_path_factory.mktemp("default"))


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f[0])
def test_each_flag_changes_the_training_and_repeats_bit_for_bit(flags, fake_data, tmp_path, default):
    first = trained(fake_data, tmp_path / "a", *flags)
    second = trained(fake_data, tmp_path / "b", *flags)
    assert first[0] == second[0] and same_weights(first[1], second[1])
    assert first[0] != default[0]
    record = json.loads((tmp_path / "a" / "run.json").read_text())["settings"]
    assert record[flags[0][2:].replace("-", "_")] == (True if len(flags) == 1 else type(train.RECIPE[
        flags[0][2:].replace("-", "_")])(flags[1]))


def test_leaving_the_flags_out_is_the_recipe_as_it_was(fake_data, tmp_path, default):
    explicit = trained(fake_data, tmp_path, "--schedule", "constant", "--label-smoothing", "0", "--weight-decay", "0")
    assert explicit[0] == default[0] and same_weights(explicit[1], default[1])
    assert not any("running_mean" in k for k in default[1])  # no BatchNorm
    assert "augment" not in data.make_loaders(fake_data, 16, seed=4)[0].generators
    # and tests/test_speed.py: two epochs of this recipe equal, bit for bit, torchvision's plain pipeline's


def test_weight_decay_is_decoupled_from_the_gradients(fake_data, tmp_path):
    """One step (a batch as big as the 160 training images): AdamW's weights are Adam's, each shrunk by lr * W of
    its starting value. Adam's own weight_decay (L2, added to the gradients, then scaled by Adam) fails this."""
    one_step = ("--epochs", "1", "--batch-size", "200")
    plain = trained(fake_data, tmp_path / "adam", *one_step)[1]
    decayed = trained(fake_data, tmp_path / "adamw", *one_step, "--weight-decay", "0.5")[1]
    torch.manual_seed(4)  # train.py's initial weights
    start = FashionCNN().state_dict()
    for name in start:
        assert torch.allclose(decayed[name] - plain[name], -1e-3 * 0.5 * start[name], rtol=0, atol=1e-7), name


def test_tta_changes_only_the_test_and_train_and_evaluate_compute_the_same(fake_data, tmp_path):
    columns = write_fake_fashion_mnist(tmp_path / "data")  # the label's band made a column: a mirror image differs
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        path = tmp_path / "data" / "FashionMNIST" / "raw" / name
        write_idx(path, np.frombuffer(path.read_bytes()[16:], np.uint8).reshape(-1, 28, 28).transpose(0, 2, 1))
    tta, plain_run = trained(columns, tmp_path / "tta", "--tta"), trained(columns, tmp_path / "plain")
    assert tta[0] == plain_run[0] and same_weights(tta[1], plain_run[1])  # the training alike
    run = tmp_path / "tta"
    model = load_checkpoint(run / "checkpoint.pt")
    images = data.fashion_mnist(columns, train=False).tensors[0]
    with torch.no_grad():  # by hand: the mean of the logits of each image and of its mirror image
        by_hand = ((model(images) + model(torch.flip(images, dims=[3]))) / 2).argmax(dim=1).numpy()
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.array_equal(np.array(metrics["confusion_matrix"]).sum(axis=0), np.bincount(by_hand, minlength=10))
    plain = evaluate.predict(model, data.TensorLoader(data.fashion_mnist(columns, train=False), 16), "cpu")[2]
    assert not np.array_equal(plain, by_hand)  # else the check above could not tell the two apart
    result = run_main(evaluate.main, "--checkpoint", run / "checkpoint.pt", "--data-dir", columns, "--tta")
    assert result.returncode == 0 and f"Test accuracy {metrics['accuracy']:.4f} | weighted precision " \
        f"{metrics['precision']:.4f}, recall {metrics['recall']:.4f}, F1 {metrics['f1']:.4f}" in result.stdout


def test_shift_and_flip_equals_a_construction_by_hand():
    images = torch.rand(6, 1, 28, 28) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 5, (2, 6, 1), generator=generator)
    flip = torch.rand(6, 1, generator=generator) < 0.5
    out = data.shift_and_flip(images, dy, dx, flip)
    for i in range(6):
        padded = np.pad(images[i, 0].numpy(), 2, constant_values=-1.0)  # (32, 32), the background around
        crop = padded[dy[i, 0]:dy[i, 0] + 28, dx[i, 0]:dx[i, 0] + 28]
        expected = crop[:, ::-1] if flip[i, 0] else crop
        assert np.array_equal(out[i, 0].numpy(), expected), i
    assert 0 < flip.sum() < 6 and len(set(dx.flatten().tolist())) > 1  # the draws did vary


def test_the_background_stays_the_background_and_only_training_is_augmented(fake_data):
    black = -torch.ones(50, 1, 28, 28)
    dy, dx = torch.randint(0, 5, (2, 50, 1))
    assert torch.equal(data.shift_and_flip(black, dy, dx, torch.rand(50, 1) < 0.5), black)
    train_loader, val_loader, test_loader = data.make_loaders(fake_data, 16, seed=4, augment=True)
    assert list(train_loader.generators) == ["shuffle", "augment"]
    assert val_loader.generators == test_loader.generators == {}
    for loader in (val_loader, test_loader):
        assert torch.equal(torch.cat([x for x, _ in loader]), loader.dataset.tensors[0])
    seen = torch.cat([x for x, _ in train_loader])
    assert seen.shape == train_loader.dataset.tensors[0].shape
    assert not torch.equal(seen.sort(dim=0).values, train_loader.dataset.tensors[0].sort(dim=0).values)


def test_augmenting_leaves_the_batch_order_as_the_recipes(fake_data):
    plain, augmented = (data.make_loaders(fake_data, 16, seed=4, augment=a)[0] for a in (False, True))
    for _ in range(3):  # three passes: augmentation draws from a generator of its own, the order stays the recipe's
        assert torch.equal(torch.cat([y for _, y in plain]), torch.cat([y for _, y in augmented]))


def test_a_run_with_every_flag_killed_and_resumed_equals_the_uninterrupted_one(fake_data, tmp_path):
    flags = ["--augment", "--schedule", "onecycle", "--label-smoothing", "0.1", "--batch-norm", "--weight-decay",
             "0.05", "--tta", "--epochs", "8", "--batch-size", "16", "--seed", "4"]
    straight = tmp_path / "straight"
    assert run_main(train.main, "--data-dir", fake_data, "--out-dir", straight, *flags).returncode == 0
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "train.py", "--data-dir", fake_data, "--out-dir", str(out), *flags],
                               cwd=ROOT, env={**os.environ, **OFFLINE}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while not (out / "run.json").exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(json.loads((out / "run.json").read_text())["epochs"])
    assert done < 8  # killed within milliseconds of its first epoch's save
    result = run_main(train.main, "--resume", "--out-dir", out, "--data-dir", fake_data)
    assert result.returncode == 0 and f"resuming after epoch {done}" in result.stdout, result.stderr
    assert (out / "metrics.json").read_text() == (straight / "metrics.json").read_text()
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (out, straight))
    assert same_weights(a, b)


def test_a_batch_norm_checkpoint_loads_and_tests_as_its_run_did(fake_data, tmp_path):
    trained(fake_data, tmp_path, "--batch-norm")
    model = load_checkpoint(tmp_path / "checkpoint.pt")
    assert isinstance(model.features[1], torch.nn.BatchNorm2d) and not model.training
    assert sum(p.numel() for p in FashionCNN(batch_norm=True).parameters()) == 390_410 + 2 * (32 + 64 + 128)
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "checkpoint.pt", "--data-dir", fake_data)
    accuracy = json.loads((tmp_path / "metrics.json").read_text())["accuracy"]
    assert result.returncode == 0 and f"Test accuracy {accuracy:.4f}" in result.stdout, result.stderr


def test_a_scheduled_run_cannot_be_lengthened(fake_data, tmp_path):
    trained(fake_data, tmp_path, "--schedule", "onecycle")
    before = snapshot(tmp_path)
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--epochs", "3", "--data-dir", fake_data)
    assert_clean_error(result, "onecycle schedule over 2 epochs")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flags, message", [
    (["--label-smoothing", "1"], "--label-smoothing must be at least 0 and below 1"),
    (["--label-smoothing", "-0.1"], "--label-smoothing must be at least 0 and below 1"),
    (["--schedule", "cosine"], "invalid choice: 'cosine'"),
    (["--weight-decay", "1"], "--weight-decay must be at least 0 and below 1"),
    (["--weight-decay", "nan"], "--weight-decay must be at least 0 and below 1"),
])
def test_bad_values_are_clear_errors(flags, message, fake_data, tmp_path):
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "o", *flags), message)
    assert not (tmp_path / "o").exists()


def test_a_study_passes_the_flags_on_and_keeps_them(fake_data, tmp_path):
    from benchmarks import seeds
    flags = ["--seeds", "1", "--epochs", "1", "--batch-size", "16", "--augment", "--batch-norm", "--data-dir",
             fake_data, "--out-dir", tmp_path]
    assert run_main(seeds.main, *flags).returncode == 0
    settings = json.loads((tmp_path / "seed-1" / "run.json").read_text())["settings"]
    assert settings["augment"] is True and settings["batch_norm"] is True
    again = run_main(seeds.main, "--seeds", "1", "--data-dir", fake_data, "--out-dir", tmp_path)
    assert again.returncode == 0 and "finished in" in again.stdout, again.stderr
