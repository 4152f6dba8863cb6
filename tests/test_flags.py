"""The flags beyond the write-up's recipe (--augment, --schedule, --label-smoothing, --batch-norm, --weight-decay;
--tta): each changes the training (--tta only the test) and repeats bit for bit, and leaving them out leaves the
recipe as it was (a killed run with every flag resumes bit for bit: tests/test_run_state.py). --augment: the shifts
by hand, each of their five values, half the images mirrored, the background kept, only training augmented, the
batch order the recipe's, from a stream no seed's shuffle or weights share. --schedule onecycle steps once a batch
and cannot be lengthened; AdamW's decay is decoupled from the gradients; --tta in train.py and evaluate.py computes
the same test, the mean of each image's logits and its mirror image's; a BatchNorm checkpoint loads."""
import json

import numpy as np
import pytest
import torch

import data
import evaluate
import train
from conftest import assert_clean_error, run_main, snapshot, state_of, write_fake_fashion_mnist, write_idx
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
    # evaluate.py tests the checkpoint as its run did, with --tta, unless told otherwise, and says so.
    result = run_main(evaluate.main, "--checkpoint", run / "checkpoint.pt", "--data-dir", columns)
    assert result.returncode == 0 and "note: with --tta, as its run tested it" in result.stdout, result.stderr
    assert f"Test accuracy {metrics['accuracy']:.4f} | weighted precision {metrics['precision']:.4f}, recall " \
           f"{metrics['recall']:.4f}, F1 {metrics['f1']:.4f}" in result.stdout
    result = run_main(evaluate.main, "--checkpoint", run / "checkpoint.pt", "--data-dir", columns, "--no-tta")
    plain_accuracy = float((plain == data.fashion_mnist(columns, train=False).tensors[1].numpy()).mean())
    assert "--tta, as its run" not in result.stdout and f"Test accuracy {plain_accuracy:.4f}" in result.stdout


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


def test_a_batch_norm_checkpoint_loads_and_tests_as_its_run_did(fake_data, tmp_path):
    trained(fake_data, tmp_path, "--batch-norm")
    model = load_checkpoint(tmp_path / "checkpoint.pt")
    assert isinstance(model.features[1], torch.nn.BatchNorm2d) and not model.training
    assert sum(p.numel() for p in FashionCNN(batch_norm=True).parameters()) == 390_410 + 2 * (32 + 64 + 128)
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "checkpoint.pt", "--data-dir", fake_data)
    accuracy = json.loads((tmp_path / "metrics.json").read_text())["accuracy"]
    assert result.returncode == 0 and f"Test accuracy {accuracy:.4f}" in result.stdout, result.stderr


def test_a_scheduled_run_cannot_be_lengthened_or_shortened(fake_data, tmp_path, monkeypatch):
    trained(fake_data, tmp_path / "done", "--schedule", "onecycle")
    real = train.train_one_epoch

    def stopped_in_epoch_2(model, loader, optimizer, device, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(model, loader, optimizer, device, epoch, *rest)
    monkeypatch.setattr(train, "train_one_epoch", stopped_in_epoch_2)
    run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "stopped", *BASE, "--epochs", "3",
             "--schedule", "onecycle")
    monkeypatch.undo()
    for folder, epochs, laid in ((tmp_path / "done", 3, 2), (tmp_path / "stopped", 2, 3)):  # 1 of 3 done: not 2
        before = snapshot(folder)
        result = run_main(train.main, "--resume", "--out-dir", folder, "--epochs", epochs, "--data-dir", fake_data)
        assert_clean_error(result, f"onecycle schedule over {laid} epochs, and cannot be made longer or shorter")
        assert snapshot(folder) == before


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


def test_the_augmentations_shifts_take_each_of_their_five_values_and_about_half_the_images_are_mirrored(
        fake_data, monkeypatch):
    drawn, real = [], data.shift_and_flip

    def spy(images, dy, dx, flip):
        drawn.append((dy, dx, flip))
        return real(images, dy, dx, flip)
    monkeypatch.setattr(data, "shift_and_flip", spy)
    loader = data.make_loaders(fake_data, 16, seed=4, augment=True)[0]
    for _ in range(10):  # ten passes over the 160 training images
        list(loader)
    dy, dx, flip = (torch.cat(parts) for parts in zip(*drawn))
    assert len(flip) == 1600
    for offsets in (dy, dx):  # 0 to 4, a shift of 2 - offset: -2 to 2 pixels, each about a fifth of the time
        assert offsets.unique().tolist() == [0, 1, 2, 3, 4] and offsets.flatten().bincount().min() > 1600 / 5 * 0.8
    assert 0.45 < flip.float().mean() < 0.55


def test_the_augmentation_stream_is_no_seeds_shuffle_or_weights(fake_data):
    loader = data.make_loaders(fake_data, seed=1, augment=True)[0]
    first = torch.randint(0, 5, (100,), generator=loader.generators["augment"])
    for seed in range(0, 1000):
        assert not torch.equal(first, torch.randint(0, 5, (100,), generator=torch.Generator().manual_seed(seed)))
    with_augment = data.make_loaders(fake_data, seed=1, augment=True)[0].generators["shuffle"].get_state()
    assert torch.equal(with_augment, data.make_loaders(fake_data, seed=1)[0].generators["shuffle"].get_state())


def test_onecycle_steps_once_a_batch(fake_data, tmp_path):
    trained(fake_data, tmp_path, "--schedule", "onecycle")  # 2 epochs of 10 batches (160 images, 16 a batch)
    scheduler = state_of(tmp_path)["scheduler"]
    assert scheduler["total_steps"] == scheduler["last_epoch"] == 2 * 10


def test_a_finished_onecycle_run_does_not_offer_more_epochs(fake_data, tmp_path):
    trained(fake_data, tmp_path, "--schedule", "onecycle")
    result = run_main(train.main, "--resume", "--out-dir", tmp_path, "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert "a onecycle run is not trained further" in result.stdout and "or more trains it further" not in result.stdout
