"""Fashion-MNIST as normalized train / validation / test loaders (48,000 / 12,000 / 10,000 images).

    from data import make_loaders
    train_loader, val_loader, test_loader = make_loaders("data")

The images are normalized once, all together, exactly as torchvision's ToTensor + Normalize((0.5,), (0.5,))
would one by one, moved to the device, and each batch is sliced from there: no per-image work in the loop.
"""
import hashlib
import math
import os
import platform
import sys

import torch
import torchvision
from torch.utils.data import TensorDataset, random_split
from torchvision import datasets
from torchvision.io import decode_image
from torchvision.transforms.v2 import functional as F

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # in label order 0..9
# MD5 of the four unpacked files as published by Zalando Research (torchvision checks the .gz downloads).
MD5 = {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
       "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
       "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
       "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}
RAW_FILES = tuple(MD5)
VAL_FRACTION = 0.2  # the original write-up's 80/20 split of the 60,000 training images
# What torchvision raises for a file it cannot read or download: its IDX reader asserts on a bad header.
UNREADABLE = (AssertionError, IndexError, OSError, RuntimeError, ValueError)
EVAL_BATCH_SIZE = 256  # for validation and test: no effect on the results; 4x fewer steps than 64, no slower on a CPU


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
    except (RuntimeError, AssertionError, NotImplementedError) as e:
        reason = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise ValueError(f"device {name!r} is not available here ({reason})") from None
    if device.type == "cpu" and device.index not in (None, 0):  # torch accepts cpu:1 but there is one CPU device
        raise ValueError(f"device {name!r} is not available here (use cpu)")
    return device


def run_info(device):
    """Where a result was computed: the exact numbers of a run depend on the device and the library versions."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:  # the CPU's instruction set decides which kernels, and so which roundings, PyTorch uses
        name = f"{platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()}), " \
               f"{torch.get_num_threads()} threads"
    return {"device": name, "torch": torch.__version__, "torchvision": torchvision.__version__}


def normalize(pixels):
    """uint8 pixels -> float32 in [-1, 1]: ToTensor's p / 255, then Normalize((0.5,), (0.5,))'s (x - 0.5) / 0.5.

    The same operations in the same order give the same bits. Run on the CPU: CUDA divides by a constant as a
    multiplication by its reciprocal, which differs from ToTensor's division in the last bit for 126 of 256 values.
    """
    return pixels.cpu().float().div(255).sub(0.5).div(0.5)


def read_image(path, invert=None):
    """A picture file (PNG or JPEG, gray or color, any size) as the model sees its inputs: ((1, 28, 28) in [-1, 1],
    whether it was inverted). ValueError, naming the file, if it cannot be read.

    Fashion-MNIST garments are light on black; a photo is usually a dark garment on white. invert=None decides from
    the picture's border: a light one (mean above mid-gray) is a light background, and the picture is inverted.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        image = decode_image(path)  # (C, H, W) uint8: C is 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA
    except (RuntimeError, OSError, ValueError):  # torchvision's reason names its own C++ source file, not the image
        raise ValueError(f"{path}: not a PNG or JPEG image, or a damaged one") from None
    if image.numel() == 0:
        raise ValueError(f"{path}: the image is empty")
    image = image[:1] if image.shape[0] <= 2 else F.rgb_to_grayscale(image[:3])  # (1, H, W); alpha left out
    border = torch.cat([image[0, 0], image[0, -1], image[0, :, 0], image[0, :, -1]]).float().mean()
    invert = bool(border > 127.5) if invert is None else invert
    if invert:
        image = 255 - image
    _, h, w = image.shape  # into a square, padded with the dataset's black background: never stretched
    left, top = (max(h, w) - w) // 2, (max(h, w) - h) // 2
    image = F.pad(image, [left, top, max(h, w) - w - left, max(h, w) - h - top], fill=0)
    return normalize(F.resize(image, [28, 28], antialias=True)), invert  # 28x28 stays as it is


def fashion_mnist(data_dir, train, device="cpu"):
    """The training (train=True) or test set as a TensorDataset of (N, 1, 28, 28) float32 images and (N,) labels.

    Read from DATA_DIR/FashionMNIST/raw (the unpacked files, or the .gz downloads), downloaded there if missing.
    """
    raw_dir = os.path.join(data_dir, "FashionMNIST", "raw")
    names = RAW_FILES[:2] if train else RAW_FILES[2:]
    paths = [os.path.join(raw_dir, name) for name in names]
    for path in paths:  # a damaged download would otherwise be reported as a failed new one
        if not os.path.isfile(path) and os.path.isfile(path + ".gz") and not datasets.utils.check_integrity(
                path + ".gz", dict(datasets.FashionMNIST.resources)[os.path.basename(path) + ".gz"]):
            raise ValueError(f"{path}.gz is there but fails its checksum (a damaged or incomplete download): "
                             "delete it, and download it again or let torchvision do so")
    try:
        dataset = datasets.FashionMNIST(data_dir, train=train, download=True)
    except UNREADABLE:  # what torchvision raises for missing, unreachable or bad files
        missing = [name for name in RAW_FILES if not os.path.isfile(os.path.join(raw_dir, name))
                   and not os.path.isfile(os.path.join(raw_dir, name + ".gz"))]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST is not in {raw_dir} and could not be downloaded. Put these files there, "
                f"unpacked or as the .gz downloads: {', '.join(missing)}; "
                "or point --data-dir at a folder that holds FashionMNIST/raw") from None
        for path in paths:  # which one: each read alone, as torchvision reads it
            try:
                datasets.mnist.read_sn3_pascalvincent_tensor(path, strict=False)
            except UNREADABLE:
                raise ValueError(f"cannot read Fashion-MNIST: {path} is damaged or not an IDX file "
                                 f"({os.path.getsize(path)} bytes); delete it and download it again") from None
        raise
    images, labels = dataset.data, dataset.targets
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"{raw_dir} does not hold Fashion-MNIST: {len(labels)} labels "
                         f"for images of shape {tuple(images.shape)}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise ValueError(f"{paths[1]} holds labels outside 0..9 (from {labels.min()} to {labels.max()}): "
                         "not Fashion-MNIST")
    return TensorDataset(normalize(images.unsqueeze(1)).to(device), labels.to(device))  # (N, 1, 28, 28), (N,)


def warn_if_not_published(data_dir, names=RAW_FILES):
    """One warning if the files differ from the published Fashion-MNIST (MNIST's digits dropped in, say).

    A warning, not an error: a deliberate variant or subset is the user's to choose, but its results compare with
    no one's.
    """
    raw_dir = os.path.join(data_dir, "FashionMNIST", "raw")
    different = [name for name in names if file_md5(os.path.join(raw_dir, name)) != MD5[name]]
    if different:
        print(f"warning: {', '.join(different)} in {raw_dir} differ from the published Fashion-MNIST (MD5 checksum): "
              "the results are not comparable with anyone else's", file=sys.stderr)


def file_md5(path):
    """The MD5 of a file as a hex string, or None if it is not there (torchvision read the .gz instead)."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def split_train_val(dataset, seed):
    """Random 80/20 split into (train, validation) TensorDatasets; the same seed gives the same split."""
    n_val = int(len(dataset) * VAL_FRACTION)
    if n_val == 0:
        raise ValueError(f"the training file holds {len(dataset)} images: too few to split 80/20 (at least 5)")
    generator = torch.Generator().manual_seed(seed)
    train, val = random_split(dataset, [len(dataset) - n_val, n_val], generator=generator)
    return TensorDataset(*dataset[train.indices]), TensorDataset(*dataset[val.indices])


class TensorLoader:
    """Batches of a TensorDataset, each one indexing of the whole tensors on their device.

    With a generator it draws a new random order each pass (torch.randperm); without one it keeps the dataset's order.
    """

    def __init__(self, dataset, batch_size, generator=None):
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator

    def __len__(self):  # batches per pass, the last one possibly short
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        images, labels = self.dataset.tensors
        n = len(labels)
        order = torch.arange(n) if self.generator is None else torch.randperm(n, generator=self.generator)
        for batch in order.to(labels.device).split(self.batch_size):  # one copy to the device per pass
            yield images[batch], labels[batch]  # (B, 1, 28, 28), (B,)


def make_loaders(data_dir, batch_size=64, seed=1, device="cpu"):
    """(train_loader, val_loader, test_loader), their data on the device. Only training shuffles, in a seeded order."""
    train_set, val_set = split_train_val(fashion_mnist(data_dir, train=True, device=device), seed)
    test_set = fashion_mnist(data_dir, train=False, device=device)
    warn_if_not_published(data_dir)
    generator = torch.Generator().manual_seed(seed)  # the shuffle's own, so its state can be saved and restored
    return (TensorLoader(train_set, batch_size, generator),
            TensorLoader(val_set, EVAL_BATCH_SIZE),
            TensorLoader(test_set, EVAL_BATCH_SIZE))
