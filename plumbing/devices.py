"""Where train.py, evaluate.py and benchmarks/speed.py compute, and with which numerics; the record of it."""
import os
import platform

import torch

from model import reason


def pick_device(name=None):
    """torch.device(name), checked to work here; by default CUDA, else another accelerator, else the CPU."""
    if name is None:
        if torch.accelerator.is_available():  # CUDA first, then MPS, XPU, ...
            return torch.accelerator.current_accelerator()
        print("note: no GPU found, running on the CPU")
        return torch.device("cpu")
    try:
        device = torch.device(name)
        torch.ones(1, device=device).sum().item()  # a device PyTorch knows but cannot compute on here fails
    except Exception as e:  # each backend fails its own way (RuntimeError, ValueError, ModuleNotFoundError, ...)
        raise ValueError(f"device {name!r} is not available here ({reason(e)})") from None
    return device


def use_strict_fp32():
    """Every command's numerics, before any CUDA work, so that train.py's test and evaluate.py's are the same: fp32,
    as on a CPU (TF32, cuDNN's default for convolutions, rounds inputs to 10 bits of mantissa on recent GPUs), and
    deterministic kernels. By fp32_precision (PyTorch 2.9 on; the older allow_tf32 flags must not be mixed in)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: its deterministic mode
    torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.use_deterministic_algorithms(True, warn_only=True)  # warns, naming any op that has no deterministic kernel


def run_info(device):
    """Where a result was computed: the exact numbers of a run depend on the device and PyTorch's version."""
    if device.type == "cpu":  # the instruction set decides which kernels, and so which roundings, PyTorch uses
        name = f"{platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()}), " \
               f"{torch.get_num_threads()} threads"
    else:
        module = torch.get_device_module(device)  # MPS has no device names; CUDA and XPU have
        name = f"{device.type}: {module.get_device_name(device)}" if hasattr(module, "get_device_name") else device.type
    return {"device": name, "torch": str(torch.__version__)}
