"""plumbing/devices.py: the default device, a device that is not there as one error, the device a run records, and
the numerics every command sets (TF32 off through PyTorch's fp32_precision settings, deterministic algorithms)."""
import pytest
import torch

import evaluate
import train
from conftest import run_main
from plumbing import devices
from plumbing.devices import pick_device, run_info


def test_default_device_is_the_accelerator_when_there_is_one(monkeypatch, capsys):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("cuda"))
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert "no GPU found, running on the CPU" in capsys.readouterr().out


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


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_each_command_sets_strict_fp32_and_deterministic_algorithms(command, trained_run, fake_data):
    torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"  # as a user's
    torch.use_deterministic_algorithms(False)  # code or a library may have left them
    if command == "train":
        result = run_main(train.main, "--data-dir", fake_data, "--dry-run")
    else:
        result = run_main(evaluate.main, "--checkpoint", trained_run / "checkpoint.pt", "--data-dir", fake_data)
    assert result.returncode == 0, result.stderr
    assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.are_deterministic_algorithms_enabled()


def test_strict_fp32_never_touches_the_older_flags_which_cannot_be_mixed_with_it(monkeypatch):
    set_attributes = []
    for module in (torch.backends.cudnn, torch.backends.cuda.matmul):
        real = type(module).__setattr__
        monkeypatch.setattr(type(module), "__setattr__", lambda self, name, value, real=real: (
            set_attributes.append(name), real(self, name, value))[1])
    devices.use_strict_fp32()
    assert "allow_tf32" not in set_attributes and "fp32_precision" in set_attributes
