"""The CNN of the original Fashion-MNIST write-up for 28x28 grayscale images, the device and numerics it runs
with (pick_device, use_strict_fp32, run_info), and its checkpoints.

    from model import load_checkpoint
    model = load_checkpoint("runs/checkpoint.pt")  # FashionCNN: (N, 1, 28, 28) in [-1, 1] -> (N, 10) logits

390,410 parameters: three conv blocks, a dropout MLP head (and, with batch_norm=True, BatchNorm after each
convolution, 390,858). Imports only torch, so this file can be copied alone.
"""
import os
import pickle
import platform
import struct
import warnings

import torch
from torch import nn


class FashionCNN(nn.Module):
    def __init__(self, num_classes=10, dropout=0.5, batch_norm=False):
        super().__init__()

        def block(c_in, c_out):  # 3x3 conv with padding 1 keeps the size, 2x2 max-pool halves it (rounding down)
            norm = [nn.BatchNorm2d(c_out)] if batch_norm else []  # not in the write-up: train.py --batch-norm
            return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(
            *block(1, 32),  # (N, 32, 14, 14)
            *block(32, 64),  # (N, 64, 7, 7)
            *block(64, 128),  # (N, 128, 3, 3)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 1152)
            nn.Linear(128 * 3 * 3, 256), nn.ReLU(),
            nn.Dropout(dropout),  # the write-up's 0.5 against overfitting: the head holds 76% of the weights
            nn.Linear(256, num_classes),  # (N, 10) logits: cross-entropy applies the softmax
        )

    def forward(self, x):  # x: (N, 1, 28, 28)
        return self.classifier(self.features(x))


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
        if device.type == "cpu" and device.index not in (None, 0):  # torch takes cpu:1
            raise ValueError("there is one, cpu")
    except Exception as e:  # each backend fails its own way (RuntimeError, ValueError, ModuleNotFoundError, ...)
        reason = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise ValueError(f"device {name!r} is not available here ({reason})") from None
    return device


def use_strict_fp32():
    """train.py's and evaluate.py's numerics, so that both compute the same test; called before any CUDA work.

    fp32 everywhere, as on a CPU: cuDNN's default TF32 convolutions would round their inputs to 10 bits of mantissa
    on recent GPUs, for a model that runs in seconds. Deterministic kernels: same seed, same device, same bits.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: its deterministic mode
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
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


def read_checkpoint(path):
    """The dict that torch.save wrote at path; FileNotFoundError or ValueError if there is none."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path} (train one with: python train.py)")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before it refuses them
            warnings.simplefilter("ignore")
            # weights_only: unpickle tensors and plain containers only, so a checkpoint can never run code.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # Empty, cut short, not a zip, refused; random bytes also reach the unpickler's IndexError, KeyError, struct
    # and UTF-8 errors. Caught only around this one read of the user's file.
    except (EOFError, OSError, RuntimeError, ValueError, LookupError, struct.error, pickle.UnpicklingError) as e:
        reason = str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a readable checkpoint: damaged, not PyTorch's, or holding objects "
                         f"that weights_only loading refuses ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not hold FashionCNN weights (a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


def load_checkpoint(path, device="cpu"):
    """FashionCNN in eval mode with the weights saved at path; ValueError if path holds anything else."""
    checkpoint = read_checkpoint(path)
    for key in ("best", "model"):  # a run's state.pt: its best epoch, as its checkpoint.pt holds it; a bare
        if isinstance(checkpoint.get(key), dict):  # state_dict works too
            checkpoint = checkpoint[key]
    batch_norm = any(str(name).endswith("running_mean") for name in checkpoint)
    model = FashionCNN(batch_norm=batch_norm).to(device, memory_format=torch.channels_last)  # as train.py: faster
    expected = model.state_dict()
    wrong = [name for name, like in expected.items() if not (  # names, shapes, the model's dtypes, dense, on the CPU
        torch.is_tensor(checkpoint.get(name)) and checkpoint[name].shape == like.shape and
        checkpoint[name].dtype == like.dtype and checkpoint[name].layout == torch.strided and
        checkpoint[name].device.type == "cpu")]
    if wrong or checkpoint.keys() != expected.keys():
        def what(t):
            return f"{t.dtype} {t.layout} on {t.device.type}, {tuple(t.shape)}" if torch.is_tensor(t) else \
                type(t).__name__
        raise ValueError(f"{path} does not hold FashionCNN weights (another model, or not a checkpoint: " + (
            f"{wrong[0]} is {what(checkpoint.get(wrong[0]))}, not {what(expected[wrong[0]])})" if wrong else
            "other names)"))
    if any(v.is_floating_point() and not v.isfinite().all() for v in checkpoint.values()):
        raise ValueError(f"{path} holds NaN or infinite weights: a training that diverged, not a model to use")
    model.load_state_dict(checkpoint)
    return model.eval()
