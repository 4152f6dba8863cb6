"""data.py on small synthetic IDX files: every preprocessed image equal, bit for bit, to torchvision's ToTensor +
Normalize and to (p/255 - 0.5)/0.5; the split equal to random_split's; each pass one torch.randperm; validation and
test in file order; the checksums; .gz downloads read in place; a download that fetches only what is missing; and
every kind of bad file: missing (offline, no empty folders left), empty, holding no images, cut short, random bytes,
a damaged header, not bytes, a .gz damaged in its header or in its stream, not 28x28, labels outside 0..9, too few
images, not the published files."""
import gzip
import hashlib
import os
import shutil
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import random_split
from torchvision import datasets, transforms

import data
import train
from conftest import assert_clean_error, run_main, snapshot, write_fake_fashion_mnist, write_idx


def raw_images(data_dir, prefix):
    """The uint8 pixels of an IDX image file, read with numpy alone: (N, 28, 28)."""
    with open(os.path.join(data_dir, "FashionMNIST", "raw", f"{prefix}-images-idx3-ubyte"), "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def test_every_image_matches_the_torchvision_transforms_and_the_formula(fake_data):
    for training, prefix in ((True, "train"), (False, "t10k")):
        images, labels = data.fashion_mnist(fake_data, train=training).tensors
        pixels = raw_images(fake_data, prefix)
        assert images.dtype == torch.float32 and images.shape == (len(pixels), 1, 28, 28)
        reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
        assert torch.equal(images, torch.stack([reference(Image.fromarray(p)) for p in pixels]))
        # p -> (p/255 - 0.5) / 0.5, in float32 as ToTensor and Normalize compute it
        expected = (pixels.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
        assert torch.equal(images[:, 0], torch.from_numpy(expected))
        assert images.min() >= -1 and images.max() <= 1
        assert torch.equal(labels, datasets.FashionMNIST(fake_data, train=training).targets)


def test_split_is_random_splits_80_20_fixed_by_the_seed(fake_data):
    full = data.fashion_mnist(fake_data, train=True)
    train, val = data.split_train_val(full, seed=1)
    assert (len(train), len(val)) == (160, 40)
    # The same images as torch's random_split with a generator seeded alike picks.
    train_subset, val_subset = random_split(full, [160, 40], generator=torch.Generator().manual_seed(1))
    for split, subset in ((train, train_subset), (val, val_subset)):
        for mine, reference in zip(split.tensors, full[subset.indices]):
            assert torch.equal(mine, reference)
    assert sorted(train_subset.indices + val_subset.indices) == list(range(200))
    again, _ = data.split_train_val(full, seed=1)
    other, _ = data.split_train_val(full, seed=2)
    assert torch.equal(again.tensors[0], train.tensors[0])
    assert not torch.equal(other.tensors[0], train.tensors[0])


def test_training_batches_follow_one_randperm_a_pass(fake_data):
    train_set, _ = data.split_train_val(data.fashion_mnist(fake_data, train=True), seed=1)
    loader = data.TensorLoader(train_set, 64, torch.Generator().manual_seed(1))
    reference = torch.Generator().manual_seed(1)
    assert len(loader) == 3  # 64 + 64 + 32
    images, labels = train_set.tensors
    for _ in range(3):  # each pass draws a new order from the same generator
        order = torch.randperm(160, generator=reference)
        batches = list(loader)
        assert [len(y) for _, y in batches] == [64, 64, 32]
        assert torch.equal(torch.cat([x for x, _ in batches]), images[order])
        assert torch.equal(torch.cat([y for _, y in batches]), labels[order])


def test_only_the_training_loader_shuffles_and_its_order_follows_the_seed(fake_data):
    train, val, test = data.make_loaders(fake_data, batch_size=64, seed=1)
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (160, 40, 50)
    assert train.batch_size == 64 and val.batch_size == test.batch_size == data.EVAL_BATCH_SIZE
    for loader in (val, test):  # in the dataset's order, every time
        for _ in range(2):
            images, labels = (torch.cat(parts) for parts in zip(*loader))
            assert torch.equal(images, loader.dataset.tensors[0]) and torch.equal(labels, loader.dataset.tensors[1])

    def first_labels(seed):
        return next(iter(data.make_loaders(fake_data, batch_size=64, seed=seed)[0]))[1]
    assert torch.equal(first_labels(1), first_labels(1))
    assert not torch.equal(first_labels(1), first_labels(2))
    assert not torch.equal(next(iter(train))[1], next(iter(train))[1])  # a new order each pass
    # The test loader keeps file order.
    assert torch.equal(test.dataset.tensors[1], datasets.FashionMNIST(fake_data, train=False).targets)


def test_class_names_are_in_label_order():
    assert list(data.CLASSES) == datasets.FashionMNIST.classes


def test_a_stalled_network_is_given_up_after_the_stated_time_with_one_error(tmp_path, monkeypatch, capsys):
    """A proxy, a captive portal, a server that accepts the connection and never answers: the download says what
    it fetches, from where and how much, gives up after DOWNLOAD_TIMEOUT without data, and leaves nothing."""
    server = socket.create_server(("127.0.0.1", 0))  # listens: the connection is accepted, nothing ever answered
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 1)
    start = time.monotonic()
    with server, pytest.raises(FileNotFoundError) as error:
        data.fashion_mnist(str(tmp_path / "data"), train=True)
    assert time.monotonic() - start < 30  # a second for each wait; torchvision asks twice at most before giving up
    assert "could not be downloaded (" in str(error.value) and "timed out" in str(error.value)
    assert all(name in str(error.value) for name in data.RAW_FILES) and "--data-dir" in str(error.value)
    said = capsys.readouterr().err
    assert "downloading its 4 files (30 MB) from http" in said and "giving up after 1 s without data" in said
    assert os.listdir(tmp_path) == []


def test_missing_data_offline_names_the_folder_and_the_four_files_and_leaves_no_folders(tmp_path, offline):
    with pytest.raises(FileNotFoundError) as error:
        data.fashion_mnist(str(tmp_path / "data"), train=True)
    message = str(error.value)
    assert os.path.join(str(tmp_path / "data"), "FashionMNIST", "raw") in message
    assert "or as the .gz downloads" in message
    for name in data.RAW_FILES:
        assert name in message
    assert os.listdir(tmp_path) == []  # the failed download's empty DIR/FashionMNIST/raw are gone
    (tmp_path / "mine").mkdir()  # a folder the user made stays
    with pytest.raises(FileNotFoundError):
        data.fashion_mnist(str(tmp_path / "mine"), train=False)
    assert os.listdir(tmp_path) == ["mine"] and os.listdir(tmp_path / "mine") == []


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x08\x03" + b"\x00" * 5, os.urandom(3000)],
                         ids=["empty", "header cut short", "random bytes"])
def test_a_damaged_file_is_named_in_a_clear_error(content, tmp_path, offline):
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(content)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte is damaged or not an IDX file of bytes"):
        data.fashion_mnist(str(tmp_path), train=False)


def test_images_that_are_not_bytes_are_refused(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    # IDX type byte 0x0B: 16-bit integers, a valid file of the wrong kind (ten 28x28 images, two bytes a pixel)
    header = struct.pack(">HBB", 0, 0x0B, 3) + struct.pack(">3I", 10, 28, 28)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(header + bytes(10 * 28 * 28 * 2))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte is damaged or not an IDX file of bytes"):
        data.fashion_mnist(str(tmp_path), train=False)


def test_a_damaged_gz_download_is_named_not_reported_as_missing(tmp_path, offline):
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    raw = tmp_path / "FashionMNIST" / "raw"
    os.remove(raw / "train-images-idx3-ubyte")
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b cut short")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: damaged"):
        data.fashion_mnist(str(tmp_path), train=True)


def test_gz_downloads_are_read_in_place_as_the_unpacked_files(tmp_path, fake_data):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.RAW_FILES:
        with gzip.open(raw / (name + ".gz"), "wb") as f:
            f.write((Path(fake_data) / "FashionMNIST" / "raw" / name).read_bytes())
    raw.chmod(0o555)  # read-only (root writes anyway: the listing below is what checks that nothing is unpacked)
    try:
        for training in (True, False):
            a, b = data.fashion_mnist(str(tmp_path), training).tensors, data.fashion_mnist(fake_data, training).tensors
            assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert data.checksums(str(tmp_path)) == data.checksums(fake_data)
        assert sorted(os.listdir(raw)) == sorted(name + ".gz" for name in data.RAW_FILES)
    finally:
        raw.chmod(0o755)


def test_images_that_are_not_28_by_28_are_refused(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    write_idx(str(tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"), np.zeros((10, 32, 32)))
    with pytest.raises(ValueError, match="does not hold Fashion-MNIST"):
        data.fashion_mnist(str(tmp_path), train=False)


@pytest.mark.parametrize("prefix", ["train", "t10k"])
def test_labels_outside_0_to_9_are_refused_before_training(prefix, tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    labels = np.arange(20 if prefix == "train" else 10) % 10
    labels[3] = 12
    write_idx(str(tmp_path / "FashionMNIST" / "raw" / f"{prefix}-labels-idx1-ubyte"), labels)
    with pytest.raises(ValueError, match=f"{prefix}-labels-idx1-ubyte holds labels outside 0..9"):
        data.make_loaders(str(tmp_path))


def test_a_training_file_too_small_to_split_is_refused(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=4, n_test=10)
    with pytest.raises(ValueError, match="too few to split"):
        data.make_loaders(str(tmp_path))


def test_checksums_are_each_files_md5_and_other_files_are_said_once(fake_data, capsys):
    found = data.checksums(fake_data)
    for name in data.RAW_FILES:
        with open(os.path.join(fake_data, "FashionMNIST", "raw", name), "rb") as f:
            assert found[name] == hashlib.md5(f.read()).hexdigest()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert "differ from the published Fashion-MNIST" in warnings[0] and "train-images-idx3-ubyte" in warnings[0]


def test_normalization_runs_on_the_cpu_whatever_the_device():
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    expected = (pixels.numpy().astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    assert torch.equal(data.normalize(pixels), torch.from_numpy(expected))


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


def test_a_download_fetches_only_what_is_missing_and_replaces_nothing(tmp_path, monkeypatch):
    write_fake_fashion_mnist(tmp_path / "web", n_train=20, n_test=10, seed=3)  # what the stand-in web serves
    write_fake_fashion_mnist(tmp_path / "mine", n_train=20, n_test=10, seed=4)  # the user's own variant
    raw = tmp_path / "mine" / "FashionMNIST" / "raw"
    os.remove(raw / "t10k-labels-idx1-ubyte")
    before = snapshot(raw)

    class StandIn:  # torchvision's FashionMNIST(root, download=True): all four files under root/FashionMNIST/raw
        mirrors = ["http://stand-in/"]

        def __init__(self, root, download):
            os.makedirs(os.path.join(root, "FashionMNIST", "raw"))
            for name in data.RAW_FILES:
                with open(os.path.join(root, "FashionMNIST", "raw", name), "wb") as f:
                    f.write((tmp_path / "web" / "FashionMNIST" / "raw" / name).read_bytes())
    monkeypatch.setattr(datasets, "FashionMNIST", StandIn)
    data.fashion_mnist(str(tmp_path / "mine"), train=False)
    after = snapshot(raw)
    assert {name: after[name] for name in before} == before  # the user's three files, byte for byte
    assert after["t10k-labels-idx1-ubyte"] == (tmp_path / "web" / "FashionMNIST" / "raw" /
                                               "t10k-labels-idx1-ubyte").read_bytes()
    assert sorted(after) == sorted(data.RAW_FILES)  # and nothing else left behind


@pytest.mark.parametrize("damage", ["its first block", "its middle"])  # zlib's error; the checksum's (an OSError)
def test_a_gz_download_damaged_past_its_header_is_one_error(damage, fake_data, tmp_path, offline):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    shutil.copytree(os.path.join(fake_data, "FashionMNIST", "raw"), raw)
    packed = bytearray(gzip.compress((raw / "train-images-idx3-ubyte").read_bytes()))
    os.remove(raw / "train-images-idx3-ubyte")
    if damage == "its first block":
        packed[10] = 0xFF  # the byte after gzip's 10-byte header: a deflate block of the reserved type
    else:
        packed[len(packed) // 2:len(packed) // 2 + 64] = bytes(64)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(bytes(packed))
    result = run_main(train.main, "--data-dir", tmp_path / "data", "--out-dir", tmp_path / "out")
    assert_clean_error(result, "train-images-idx3-ubyte.gz: damaged; if it is damaged, delete it")
    assert not (tmp_path / "out").exists()
