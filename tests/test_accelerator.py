"""On a GPU or another accelerator, when this machine has one: the same data, a dry run, checkpoints for any machine."""
import json

import pytest
import torch

import data
import evaluate
import train
from conftest import run_main

pytestmark = pytest.mark.skipif(not torch.accelerator.is_available(),
                                reason="no GPU or other accelerator on this machine")


def device():
    return torch.accelerator.current_accelerator()


def test_preprocessed_tensors_there_equal_the_cpus(fake_data):
    on_cpu = data.fashion_mnist(fake_data, train=True)
    there = data.fashion_mnist(fake_data, train=True, device=device())
    assert there.tensors[0].device.type == device().type
    for a, b in zip(on_cpu.tensors, there.tensors, strict=True):
        assert torch.equal(a, b.cpu())


def test_a_dry_run_there(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--dry-run", "--device", device().type)
    assert result.returncode == 0, result.stderr
    assert f"on {device().type}" in result.stdout and "Test accuracy" in result.stdout


def test_a_checkpoint_trained_there_gives_the_same_metrics_on_the_cpu(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "run", "--epochs", "2",
                      "--device", device().type)
    assert result.returncode == 0, result.stderr
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)  # no map_location needed
    assert all(t.device.type == "cpu" for t in checkpoint["model"].values())
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "run" / "checkpoint.pt", "--data-dir", fake_data,
                      "--device", "cpu", "--out-dir", tmp_path / "cpu")
    assert result.returncode == 0, result.stderr
    there, here = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("run", "cpu"))
    assert there["confusion_matrix"] == here["confusion_matrix"]
