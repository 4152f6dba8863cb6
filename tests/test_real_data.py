"""On the real Fashion-MNIST, when present: sizes, preprocessing and .gz reading in the everyday tests; two epochs'
accuracy floor and a kill and resume, which train for a minute or two, marked slow: `python -m pytest -rs -m slow`."""
import json
import os
import shutil
import signal

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import data
from conftest import OFFLINE, ROOT, run_script, start_script, wait_for

DATA_DIR = os.environ.get("FASHION_MNIST_DIR", os.path.join(ROOT, "..", "shared", "data"))
pytestmark = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(DATA_DIR, "FashionMNIST", "raw", f)) for f in data.RAW_FILES),
    reason=f"Fashion-MNIST is not in {os.path.abspath(DATA_DIR)}/FashionMNIST/raw; "
           "set FASHION_MNIST_DIR to the folder that holds FashionMNIST/raw")


def test_real_split_sizes_and_balanced_classes():
    train, val, test = data.make_loaders(DATA_DIR)
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (48_000, 12_000, 10_000)
    assert test.dataset.tensors[1].bincount().tolist() == [1000] * 10


def test_real_test_images_match_the_torchvision_transforms():
    reference = datasets.FashionMNIST(DATA_DIR, train=False, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    images, labels = data.fashion_mnist(DATA_DIR, train=False).tensors
    expected = next(iter(DataLoader(reference, batch_size=len(reference))))
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """The recipe for two epochs, uninterrupted."""
    out = tmp_path_factory.mktemp("two_epochs")
    result = run_script("train.py", "--data-dir", DATA_DIR, "--epochs", "2", "--out-dir", out)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr  # the published files: nothing to warn about
    return out


@pytest.mark.slow
def test_two_epochs_reach_85_percent_test_accuracy(two_epochs):
    with open(two_epochs / "metrics.json") as f:
        report = json.load(f)
    assert report["num_images"] == 10_000
    assert report["accuracy"] >= 0.85, report["accuracy"]


@pytest.mark.slow
def test_a_run_killed_in_epoch_2_resumes_to_the_same_result(two_epochs, tmp_path):
    process = start_script("train.py", "--data-dir", DATA_DIR, "--epochs", "2", "--out-dir", tmp_path)
    wait_for(lambda: (tmp_path / "run.json").exists(), process, timeout=1800)  # epoch 1 recorded: now in epoch 2
    process.kill()
    process.communicate()
    if process.returncode != -signal.SIGKILL:
        pytest.skip("the run ended before it could be killed (a fast GPU finishes an epoch in a moment)")
    result = run_script("train.py", "--resume", "--out-dir", tmp_path, "--data-dir", DATA_DIR)
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 1" in result.stdout
    assert (tmp_path / "metrics.json").read_text() == (two_epochs / "metrics.json").read_text()


@pytest.fixture
def gz_only(tmp_path, monkeypatch):
    """A data folder holding only the four .gz downloads, offline."""
    gz_files = [os.path.join(DATA_DIR, "FashionMNIST", "raw", f + ".gz") for f in data.RAW_FILES]
    if not all(os.path.isfile(f) for f in gz_files):
        pytest.skip(f"the .gz files are not in {os.path.abspath(DATA_DIR)}/FashionMNIST/raw")
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in gz_files:
        shutil.copy(f, raw)
    return tmp_path


def test_the_gz_downloads_alone_are_read_offline(gz_only):
    assert len(data.fashion_mnist(str(gz_only), train=False)) == 10_000  # unpacked, not downloaded


def test_the_gz_downloads_give_the_published_checksums_and_are_not_unpacked(gz_only):
    assert data.checksums(str(gz_only)) == data.MD5
    assert sorted(os.listdir(gz_only / "FashionMNIST" / "raw")) == sorted(name + ".gz" for name in data.RAW_FILES)
