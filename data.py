"""Fashion-MNIST as normalized train / validation / test loaders (48,000 / 12,000 / 10,000 images).

    from data import make_loaders
    train_loader, val_loader, test_loader = make_loaders("data")  # batches of (B, 1, 28, 28) images, (B,) labels

The images are normalized once, all together, exactly as torchvision's ToTensor + Normalize((0.5,), (0.5,))
would one by one, moved to the device, and each batch is sliced from there: no per-image work in the loop.
"""
import contextlib
import hashlib
import math
import os
import sys

import torch
from torch.utils.data import TensorDataset, random_split
from torchvision import datasets

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
UNREADABLE = (AssertionError, IndexError, OSError, RuntimeError, TypeError, ValueError)
EVAL_BATCH_SIZE = 256  # for validation and test: no effect on the results; 4x fewer steps than 64, no slower on a CPU


def normalize(pixels):
    """uint8 pixels -> float32 in [-1, 1]: ToTensor's p / 255, then Normalize((0.5,), (0.5,))'s (x - 0.5) / 0.5.

    The same operations in the same order give the same bits. Run on the CPU: CUDA divides by a constant as a
    multiplication by its reciprocal, which differs from ToTensor's division in the last bit for 126 of 256 values.
    """
    return pixels.cpu().float().div(255).sub(0.5).div(0.5)


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
    made = [d for d in (data_dir, os.path.dirname(raw_dir), raw_dir) if not os.path.isdir(d)]
    try:
        dataset = datasets.FashionMNIST(data_dir, train=train, download=True)
    except UNREADABLE:  # what torchvision raises for missing, unreachable or bad files
        for folder in reversed(made):  # a failed download leaves no empty folders behind
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        missing = [name for name in RAW_FILES if not os.path.isfile(os.path.join(raw_dir, name))
                   and not os.path.isfile(os.path.join(raw_dir, name + ".gz"))]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST is not in {raw_dir} and could not be downloaded. Put these files there, "
                f"unpacked or as the .gz downloads: {', '.join(missing)}; "
                "or point --data-dir at a folder that holds FashionMNIST/raw") from None
        if not all(map(os.path.isfile, paths)):  # only the .gz downloads, which torchvision failed to unpack there
            raise OSError(f"cannot unpack the .gz files in {raw_dir} (a read-only folder?): unpack them there, or copy "
                          "them into a folder you can write and point --data-dir at it")
        for path in paths:  # which one: each read alone, as torchvision reads it (and wants it: bytes)
            try:
                kind = datasets.mnist.read_sn3_pascalvincent_tensor(path, strict=False).dtype
            except UNREADABLE:
                kind = None
            if kind != torch.uint8:
                raise ValueError(f"cannot read Fashion-MNIST: {path} is damaged or not an IDX file of bytes "
                                 f"({os.path.getsize(path)} bytes); delete it and download it again")
        raise
    images, labels = dataset.data, dataset.targets
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"{raw_dir} does not hold Fashion-MNIST: {len(labels)} labels "
                         f"for images of shape {tuple(images.shape)}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise ValueError(f"{paths[1]} holds labels outside 0..9 (from {labels.min()} to {labels.max()}): "
                         "not Fashion-MNIST")
    return TensorDataset(normalize(images.unsqueeze(1)).to(device), labels.to(device))  # (N, 1, 28, 28), (N,)


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

    With a shuffle generator it draws a new random order each pass (torch.randperm), else it keeps the dataset's
    order; with an augment generator (training only) it shifts and flips each image at random, drawn from that one,
    so that augmenting leaves the batch order as it is. Both are saved for --resume.
    """

    def __init__(self, dataset, batch_size, shuffle=None, augment=None, max_batches=None):
        self.dataset, self.batch_size, self.max_batches = dataset, batch_size, max_batches  # max: a dry run's few
        self.generators = {name: g for name, g in (("shuffle", shuffle), ("augment", augment)) if g is not None}

    def __len__(self):  # batches per pass, the last one possibly short
        return min(math.ceil(len(self.dataset) / self.batch_size), self.max_batches or math.inf)

    def __iter__(self):
        images, labels = self.dataset.tensors
        n, shuffle, augment = len(labels), self.generators.get("shuffle"), self.generators.get("augment")
        order = torch.arange(n) if shuffle is None else torch.randperm(n, generator=shuffle)
        if augment is not None:  # a pass's offsets drawn at once, moved once: no wait at each step
            dy, dx = torch.randint(0, 5, (2, n, 1), generator=augment).to(labels.device)
            flip = (torch.rand(n, 1, generator=augment) < 0.5).to(labels.device)
        for batch in order.to(labels.device).split(self.batch_size)[:self.max_batches]:  # one copy to the device
            if augment is None:
                yield images[batch], labels[batch]  # (B, 1, 28, 28), (B,)
            else:
                yield shift_and_flip(images[batch], dy[batch], dx[batch], flip[batch]), labels[batch]


def shift_and_flip(images, dy, dx, flip):
    """Each image moved by dy - 2 and dx - 2 pixels (0 to 4 each, (N, 1)), the gap filled with the background (-1,
    black), and mirrored left to right where flip (N, 1): (N, 1, 28, 28) -> (N, 1, 28, 28), in one indexing."""
    steps = torch.arange(28, device=images.device)
    rows, cols = dy + steps, torch.where(flip, dx + 27 - steps, dx + steps)  # (N, 28) each; a flip reads backwards
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), value=-1.0)  # (N, 1, 32, 32)
    return padded[torch.arange(len(images), device=images.device)[:, None, None], 0, rows[:, :, None],
                  cols[:, None, :]][:, None]


def make_loaders(data_dir, batch_size=64, seed=1, device="cpu", augment=False, max_batches=None):
    """(train_loader, val_loader, test_loader), their data on the device. Only training shuffles, in a seeded order,
    and only training is augmented, when asked; max_batches: so many batches a pass of each, no more."""
    train_set, val_set = split_train_val(fashion_mnist(data_dir, train=True, device=device), seed)
    test_set = fashion_mnist(data_dir, train=False, device=device)
    shuffle = torch.Generator().manual_seed(seed)
    augment = torch.Generator().manual_seed((seed + 1) % 2**64) if augment else None  # a stream of its own
    return (TensorLoader(train_set, batch_size, shuffle, augment, max_batches),
            TensorLoader(val_set, EVAL_BATCH_SIZE, max_batches=max_batches),
            TensorLoader(test_set, EVAL_BATCH_SIZE, max_batches=max_batches))


def checksums(data_dir, names=RAW_FILES):
    """{file name: MD5} of the unpacked files, which fashion_mnist() has read; a warning if they are not the published
    Fashion-MNIST (MNIST's digits dropped in, say): a variant is the user's to choose, but compares with no one's."""
    raw_dir = os.path.join(data_dir, "FashionMNIST", "raw")
    found = {}
    for name in names:
        with open(os.path.join(raw_dir, name), "rb") as f:
            found[name] = hashlib.md5(f.read()).hexdigest()
    different = [name for name in names if found[name] != MD5[name]]
    if different:
        print(f"warning: {', '.join(different)} in {raw_dir} differ from the published Fashion-MNIST (MD5 checksum): "
              "the results are not comparable with anyone else's", file=sys.stderr)
    return found
