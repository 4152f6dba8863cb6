"""benchmarks/speed.py: the project's pipeline trains exactly as the plain one does, in the same order; the FLOP count
against PyTorch's counter; the table's arithmetic; bad flags and missing data as one error."""
import contextlib
import io

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, random_split
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

import data
from benchmarks import speed
from conftest import assert_clean_error, run_main
from model import FashionCNN
from train import train_one_epoch


class RandpermSampler:
    """The order data.TensorLoader draws, one torch.randperm a pass, for a DataLoader."""
    def __init__(self, n, seed):
        self.n, self.generator = n, torch.Generator().manual_seed(seed)

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def plain_train_loader(data_dir, seed):
    """The pipeline data.py replaces: torchvision's per-sample transforms behind a DataLoader, in data.py's order."""
    full = datasets.FashionMNIST(data_dir, train=True, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    train_set, _ = random_split(full, [160, 40], generator=torch.Generator().manual_seed(seed))
    # A generator of its own: without one, each pass of a DataLoader draws a seed from torch's global generator,
    # which would shift the dropout masks.
    return DataLoader(train_set, batch_size=16, sampler=RandpermSampler(len(train_set), seed),
                      generator=torch.Generator())


def weights_after_two_epochs(model, loader):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with contextlib.redirect_stdout(io.StringIO()):
        for epoch in (1, 2):
            train_one_epoch(model, loader, optimizer, "cpu", epoch, log_interval=100)
    return [p.detach() for p in model.parameters()]


def test_the_fast_path_trains_bit_for_bit_as_the_plain_pipeline(fake_data):
    torch.manual_seed(3)
    plain = weights_after_two_epochs(FashionCNN(), plain_train_loader(fake_data, seed=3))
    torch.manual_seed(3)
    fast = weights_after_two_epochs(FashionCNN(), data.make_loaders(fake_data, batch_size=16, seed=3)[0])
    # Same values, split, order, initial weights and dropout masks: the same weights after two epochs.
    for a, b in zip(plain, fast, strict=True):
        assert torch.equal(a, b)


def test_train_flop_count_matches_pytorchs_flop_counter():
    model, images, labels = FashionCNN(), torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    assert counter.get_total_flops() == 64 * speed.TRAIN_FLOP_PER_IMAGE


def test_benchmark_prints_a_consistent_table(fake_data, monkeypatch):
    monkeypatch.setattr(speed, "MATMUL_SIZE", 256)  # a second of 4096 x 4096 products spared
    result = run_main(speed.main, "--data-dir", fake_data, "--batches", "2")
    assert result.returncode == 0, result.stderr
    assert "plain: 128 training images" in result.stdout and "project: 128 training images" in result.stdout
    assert "strict fp32 (TF32 off)" in result.stdout
    rows = {line[:28].strip(): line[28:].split() for line in result.stdout.splitlines()[-7:]}
    for label in ("training, images/s", "one epoch (train + val.), s", "test evaluation, s", "step alone, ms"):
        plain, project, speed_up = rows[label]
        half = 0.5 * 10.0 ** -len(plain.partition(".")[2])  # the rounding of the printed values
        plain, project = float(plain.replace(",", "")), float(project.replace(",", ""))
        # A rate is never 0; a time on 128 images may print as 0.00 s on a fast machine (the speed-up is worked
        # out before rounding, and the interval below allows for it).
        assert (plain > 0 and project > 0) if label.endswith("images/s") else (plain >= 0 and project >= 0)
        # images/s is a rate, the others are times: either way the speed-up is plain's time over the project's
        if label.endswith("images/s"):
            plain, project = project, plain
        low, high = (plain - half) / (project + half), (plain + half) / max(project - half, 1e-9)
        assert low - 0.005 <= float(speed_up.rstrip("x")) <= high + 0.005, (label, rows[label])
    peak = float(result.stdout.split("fp32 matmul ")[1].split()[0])  # GFLOP/s, as the header prints it
    for label in ("FLOP/s: training (of matmul)", "FLOP/s: step alone"):
        values = [v for v in rows[label] if v != "G"]  # "49 G (56%)" for each pipeline: 49 GFLOP/s, 56% of peak
        for giga, share in zip(values[0::2], values[1::2], strict=True):
            giga, share = float(giga), float(share.strip("(%)"))
            low, high = 100 * (giga - 0.5) / (peak + 0.5), 100 * (giga + 0.5) / max(peak - 0.5, 1e-9)
            assert giga >= 0 and low - 0.5 <= share <= high + 0.5, (label, giga, share, peak)


@pytest.mark.parametrize("flags, message", [
    (["--batches", "0"], "--batches must be at least 1"),
    (["--device", "nosuchdevice"], "device 'nosuchdevice' is not available"),
])
def test_benchmark_bad_flags_are_clear_errors(flags, message, fake_data):
    assert_clean_error(run_main(speed.main, "--data-dir", fake_data, *flags), message)


def test_benchmark_without_data_is_a_clear_error(tmp_path, offline):
    assert_clean_error(run_main(speed.main, "--data-dir", tmp_path), "Fashion-MNIST is not in")
