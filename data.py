"""Fashion-MNIST as normalized train / validation / test loaders (48,000 / 12,000 / 10,000 images).

    from data import make_loaders
    train_loader, val_loader, test_loader = make_loaders("data")  # batches of (B, 1, 28, 28) images, (B,) labels

The IDX files are read here (torchvision only downloads them). The images are normalized once, all together, exactly
as ToTensor + Normalize((0.5,), (0.5,)) would one by one, and each batch is sliced from them on the device.
"""
import contextlib
import gzip
import hashlib
import math
import os
import socket
import struct
import sys
import tempfile
import zlib

import torch
from torch.utils.data import TensorDataset, random_split

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # in label order 0..9
# MD5 of the four unpacked files as published by Zalando Research.
MD5 = {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
       "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
       "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
       "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}
RAW_FILES = tuple(MD5)
VAL_FRACTION = 0.2  # the original write-up's 80/20 split of the 60,000 training images
DOWNLOAD_TIMEOUT = 30  # seconds without data before a download gives up: a stalled network is said, not waited on
EVAL_BATCH_SIZE = 256  # for validation and test: no effect on the results; 4x fewer steps than 64, no slower on a CPU


def normalize(pixels):
    """uint8 pixels -> float32 in [-1, 1]: ToTensor's p / 255, then Normalize((0.5,), (0.5,))'s (x - 0.5) / 0.5, in
    that order, so the same bits. On the CPU: CUDA divides by a constant as a multiplication by its reciprocal, which
    differs from ToTensor's division in the last bit for 126 of 256 values."""
    return pixels.cpu().float().div(255).sub(0.5).div(0.5)


def read_raw(path):
    """The bytes of a raw file: unpacked, or its .gz download read in place (a read-only folder is fine)."""
    name = path if os.path.isfile(path) else path + ".gz"
    try:
        with open(name, "rb") if name == path else gzip.open(name) as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip's BadGzipFile is an OSError
        raise ValueError(f"cannot read Fashion-MNIST: {name}: {getattr(e, 'strerror', None) or 'damaged'}; if it is "
                         "damaged, delete it and download it again") from None


def read_idx(path, ndim):
    """An IDX file of unsigned bytes (0x0000 08, ndim, ndim big-endian sizes, the bytes) as a uint8 tensor."""
    data, start = read_raw(path), 4 + 4 * ndim
    sizes = struct.unpack(f">{ndim}I", data[4:start]) if len(data) >= start else (-1,)
    if data[:4] != bytes([0, 0, 8, ndim]) or len(data) != start + math.prod(sizes) or not math.prod(sizes):
        raise ValueError(f"cannot read Fashion-MNIST: {path} is damaged or not an IDX file of bytes, or holds no "
                         f"images ({len(data)} bytes); delete it and download it again")
    return torch.frombuffer(bytearray(data[start:]), dtype=torch.uint8).view(*sizes)


def download(data_dir, raw_dir):
    """The files missing from raw_dir, fetched by torchvision (which checks their MD5s) into a temporary folder, and
    only those moved in: a file already there, the user's own variant perhaps, stays. If that fails, or
    DOWNLOAD_TIMEOUT passes without data, one error naming what is missing, and nothing left behind."""
    from torchvision.datasets import FashionMNIST  # imported here: reading needs no torchvision
    made = [d for d in (data_dir, os.path.dirname(raw_dir), raw_dir) if not os.path.isdir(d)]
    missing = [name for name in RAW_FILES if not is_there(os.path.join(raw_dir, name))]
    print(f"Fashion-MNIST is not in {raw_dir}: downloading its 4 files (30 MB) from {FashionMNIST.mirrors[0]}, "
          f"giving up after {DOWNLOAD_TIMEOUT} s without data", file=sys.stderr)
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # each wait for data, as the urllib in torchvision reads it
    try:
        os.makedirs(raw_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=raw_dir, prefix=".download-") as fetched:  # a rename moves each one
            FashionMNIST(fetched, download=True)  # its progress on stderr
            for name in missing:
                os.replace(os.path.join(fetched, "FashionMNIST", "raw", name), os.path.join(raw_dir, name))
    except (OSError, RuntimeError, ValueError) as e:  # unreachable, refused, stalled, or failing its checksum
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        why = (str(e).strip() or type(e).__name__).splitlines()[-1]  # torchvision's last line says why
        raise FileNotFoundError(f"Fashion-MNIST is not in {raw_dir} and could not be downloaded ({why}). Put these "
                                f"files there, unpacked or as the .gz downloads: {', '.join(missing)}; or point "
                                "--data-dir at a folder that holds FashionMNIST/raw") from None
    finally:
        socket.setdefaulttimeout(timeout)


def is_there(path):  # a raw file, unpacked or as its .gz download
    return os.path.isfile(path) or os.path.isfile(path + ".gz")


def fashion_mnist(data_dir, train, device="cpu"):
    """The training (train=True) or test set as a TensorDataset of (N, 1, 28, 28) float32 images and (N,) labels,
    read from DATA_DIR/FashionMNIST/raw, downloaded there if missing."""
    raw_dir = os.path.join(data_dir, "FashionMNIST", "raw")
    paths = [os.path.join(raw_dir, name) for name in (RAW_FILES[:2] if train else RAW_FILES[2:])]
    if not all(map(is_there, paths)):
        download(data_dir, raw_dir)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"{raw_dir} does not hold Fashion-MNIST: {len(labels)} labels "
                         f"for images of shape {tuple(images.shape)}")
    if len(labels) and not labels.max() < len(CLASSES):
        raise ValueError(f"{paths[1]} holds labels outside 0..9 (up to {labels.max()}): not Fashion-MNIST")
    return TensorDataset(normalize(images.unsqueeze(1)).to(device), labels.long().to(device))  # (N, 1, 28, 28), (N,)


def split_train_val(dataset, seed):
    """Random 80/20 split into (train, validation) TensorDatasets; the same seed gives the same split."""
    n_val = int(len(dataset) * VAL_FRACTION)
    if n_val == 0:
        raise ValueError(f"the training file holds {len(dataset)} images: too few to split 80/20 (at least 5)")
    generator = torch.Generator().manual_seed(seed)
    train, val = random_split(dataset, [len(dataset) - n_val, n_val], generator=generator)
    return TensorDataset(*dataset[train.indices]), TensorDataset(*dataset[val.indices])


class TensorLoader:
    """Batches of a TensorDataset, each one indexing of the whole tensors on their device. With a shuffle generator, a
    new random order each pass (torch.randperm); with an augment generator, random shifts and flips drawn from that
    one, so that augmenting leaves the batch order as it is. Both are saved for --resume."""

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
    """Each image moved by 2 - dy rows and 2 - dx columns (dy, dx: 0 to 4, (N, 1) each), the gap filled with the
    background (-1, black), and mirrored left to right where flip (N, 1): (N, 1, 28, 28) -> (N, 1, 28, 28).

    One indexing of the images padded by 2: output pixel (r, c) is padded pixel (dy + r, dx + c), or (dy + r,
    dx + 27 - c) where flipped. With dy = 0 and dx = 4, row r is image row r - 2 (the garment moves 2 down) and
    column c is image column c + 2 (it moves 2 left); with dy = dx = 2 and no flip, the image as it was."""
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
    # A stream of its own, which no seed's shuffle or weights draw from (seed + 1 would be the next seed's).
    augment = torch.Generator().manual_seed(int(hashlib.sha256(b"augment %d" % seed).hexdigest()[:16], 16)) \
        if augment else None
    return (TensorLoader(train_set, batch_size, shuffle, augment, max_batches),
            TensorLoader(val_set, EVAL_BATCH_SIZE, max_batches=max_batches),
            TensorLoader(test_set, EVAL_BATCH_SIZE, max_batches=max_batches))


def checksums(data_dir, names=RAW_FILES):
    """{file name: MD5} of the unpacked files, which fashion_mnist() has read; a warning if they are not the published
    Fashion-MNIST (MNIST's digits dropped in, say): a variant is the user's to choose, but compares with no one's."""
    raw_dir = os.path.join(data_dir, "FashionMNIST", "raw")
    found = {name: hashlib.md5(read_raw(os.path.join(raw_dir, name))).hexdigest() for name in names}
    if different := [name for name in names if found[name] != MD5[name]]:
        print(f"warning: {', '.join(different)} in {raw_dir} differ from the published Fashion-MNIST (MD5 checksum): "
              "the results are not comparable with anyone else's", file=sys.stderr)
    return found
