"""data.py on small synthetic IDX files: split, normalization, shuffling, and the missing-data error."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import RandomSampler, SequentialSampler
from torchvision import datasets, transforms

import data
from conftest import OFFLINE, write_fake_fashion_mnist, write_idx


def raw_images(data_dir, prefix):
    """The uint8 pixels of an IDX image file, read with numpy alone: (N, 28, 28)."""
    with open(os.path.join(data_dir, "FashionMNIST", "raw", f"{prefix}-images-idx3-ubyte"), "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def test_normalization_matches_the_torchvision_transforms_and_the_formula(fake_data):
    test_set = data.fashion_mnist(fake_data, train=False)
    pixels = raw_images(fake_data, "t10k")
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    for i in (0, 1, len(test_set) - 1):
        image, label = test_set[i]
        assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
        assert torch.equal(image, reference(Image.fromarray(pixels[i])))
        # p -> (p/255 - 0.5) / 0.5, in float32 as ToTensor and Normalize compute it
        expected = (pixels[i].astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
        assert torch.equal(image[0], torch.from_numpy(expected))
    assert test_set[0][0].min() >= -1 and test_set[0][0].max() <= 1


def test_split_is_80_20_disjoint_and_fixed_by_the_seed(fake_data):
    full = data.fashion_mnist(fake_data, train=True)
    train, val = data.split_train_val(full, seed=1)
    assert (len(train), len(val)) == (160, 40)
    assert set(train.indices).isdisjoint(val.indices)
    assert sorted(train.indices + val.indices) == list(range(200))
    again, _ = data.split_train_val(full, seed=1)
    other, _ = data.split_train_val(full, seed=2)
    assert again.indices == train.indices
    assert other.indices != train.indices


def test_only_the_training_loader_shuffles_and_its_order_follows_the_seed(fake_data):
    train, val, test = data.make_loaders(fake_data, batch_size=64, seed=1)
    assert isinstance(train.sampler, RandomSampler)
    assert isinstance(val.sampler, SequentialSampler) and isinstance(test.sampler, SequentialSampler)
    assert train.batch_size == val.batch_size == test.batch_size == 64
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (160, 40, 50)

    def first_labels(seed):
        return next(iter(data.make_loaders(fake_data, batch_size=64, seed=seed)[0]))[1]
    assert torch.equal(first_labels(1), first_labels(1))
    assert not torch.equal(first_labels(1), first_labels(2))
    # The test loader keeps file order.
    assert torch.equal(next(iter(test))[1], data.fashion_mnist(fake_data, train=False).targets[:50])


def test_class_names_are_in_label_order():
    assert list(data.CLASSES) == datasets.FashionMNIST.classes


def test_missing_data_offline_names_the_folder_and_the_four_files(tmp_path, monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(FileNotFoundError) as error:
        data.fashion_mnist(str(tmp_path), train=True)
    message = str(error.value)
    assert os.path.join(str(tmp_path), "FashionMNIST", "raw") in message
    for name in data.RAW_FILES:
        assert name in message


def test_a_damaged_file_is_a_clear_error(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    raw = tmp_path / "FashionMNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)  # header cut short
    with pytest.raises(ValueError, match="cannot read Fashion-MNIST"):
        data.fashion_mnist(str(tmp_path), train=False)
    write_idx(str(raw / "t10k-images-idx3-ubyte"), np.zeros((10, 32, 32)))  # readable, but not 28x28
    with pytest.raises(ValueError, match="does not hold Fashion-MNIST"):
        data.fashion_mnist(str(tmp_path), train=False)
