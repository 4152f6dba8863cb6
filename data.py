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
import struct
import sys

import torch
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
MAX_PIXELS = 100_000_000  # read_image: a 100-megapixel photo is about the largest a phone takes
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
    With augment=True (training only) each batch is shifted and flipped at random, from the same generator.
    """

    def __init__(self, dataset, batch_size, generator=None, augment=False):
        self.dataset, self.batch_size, self.generator, self.augment = dataset, batch_size, generator, augment

    def __len__(self):  # batches per pass, the last one possibly short
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        images, labels = self.dataset.tensors
        n = len(labels)
        order = torch.arange(n) if self.generator is None else torch.randperm(n, generator=self.generator)
        for batch in order.to(labels.device).split(self.batch_size):  # one copy to the device per pass
            batch_images = shift_and_flip(images[batch], self.generator) if self.augment else images[batch]
            yield batch_images, labels[batch]  # (B, 1, 28, 28), (B,)


def shift_and_flip(images, generator):
    """Each image moved by up to 2 pixels each way, the gap filled with the background (-1, black), and mirrored left
    to right half the time: (N, 1, 28, 28) -> (N, 1, 28, 28), on the images' device, in one indexing."""
    n, device = len(images), images.device
    dy, dx = torch.randint(0, 5, (2, n, 1), generator=generator).to(device)  # where each crop starts in the padding
    flip = (torch.rand(n, 1, generator=generator) < 0.5).to(device)
    steps = torch.arange(28, device=device)
    rows, cols = dy + steps, torch.where(flip, dx + 27 - steps, dx + steps)  # (N, 28) each; a flip reads backwards
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), value=-1.0)  # (N, 1, 32, 32)
    return padded[torch.arange(n, device=device)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]


def make_loaders(data_dir, batch_size=64, seed=1, device="cpu", augment=False):
    """(train_loader, val_loader, test_loader), their data on the device. Only training shuffles, in a seeded order,
    and only training is augmented, when asked."""
    train_set, val_set = split_train_val(fashion_mnist(data_dir, train=True, device=device), seed)
    test_set = fashion_mnist(data_dir, train=False, device=device)
    generator = torch.Generator().manual_seed(seed)  # the shuffle's (and augmentation's) own: saved for --resume
    return (TensorLoader(train_set, batch_size, generator, augment),
            TensorLoader(val_set, EVAL_BATCH_SIZE),
            TensorLoader(test_set, EVAL_BATCH_SIZE))


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


def read_image(path, invert=None):
    """A picture file (PNG, JPEG or GIF; gray, color or transparent; any size or bit depth) as the model sees its
    inputs: ((1, 28, 28) in [-1, 1], whether it was inverted). ValueError or OSError, naming the file, if unreadable.

    Fashion-MNIST garments are light on black; a photo is usually a dark garment on white. invert=None decides from
    the picture's border: a light one (mean above mid-gray) is a light background, and the picture is inverted.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: " + ("a folder, not a picture" if os.path.isdir(path) else
                                               "not a regular file" if os.path.exists(path) else "no such file"))
    with open(path, "rb") as f:  # a PNG gives its size in its first 24 bytes: a huge one is refused undecoded
        head = f.read(24)
    if head.startswith(b"\x89PNG") and len(head) == 24:
        width, height = struct.unpack(">II", head[16:])
        if width * height > MAX_PIXELS:
            raise ValueError(f"{path}: {width}x{height} pixels, more than this reads (at most {MAX_PIXELS:,})")
    try:  # as a phone shows it: turned by its EXIF orientation
        image = decode_image(path, apply_exif_orientation=True)  # (C, H, W), or (frames, C, H, W) from a GIF
    except (RuntimeError, OSError, ValueError):  # torchvision's reason names its own C++ source file, not the image
        raise ValueError(f"{path}: not a PNG, JPEG or GIF image, or a damaged one") from None
    image = image[0] if image.ndim == 4 else image  # an animated GIF: its first frame
    if image.numel() == 0 or image.shape[-1] * image.shape[-2] > MAX_PIXELS:
        raise ValueError(f"{path}: {image.shape[-1]}x{image.shape[-2]} pixels, more than this reads "
                         f"(at most {MAX_PIXELS:,})")
    image = F.to_dtype(image, torch.uint8, scale=True)  # 16-bit PNGs to 0..255, as 8-bit ones are
    if image.shape[0] in (2, 4):  # transparent: over white, as a viewer shows it
        alpha = image[-1:].float() / 255
        image = (image[:-1] * alpha + 255 * (1 - alpha)).round().to(torch.uint8)
    image = image if image.shape[0] == 1 else F.rgb_to_grayscale(image)  # (1, H, W)
    _, h, w = image.shape
    band = max(3, min(h, w) // 10)  # a border this wide: a thin frame around a photo does not decide
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[band:h - band, band:w - band] = True
    invert = bool(image[0][~inner].float().mean() > 127.5) if invert is None else invert
    if invert:
        image = 255 - image
    # The long side to 28 pixels, then padded into a square with the dataset's black background: never stretched.
    size = [max(1, round(28 * h / max(h, w))), max(1, round(28 * w / max(h, w)))]
    image = F.resize(image, size, antialias=True)  # 28x28 stays as it is
    left, top = (28 - size[1]) // 2, (28 - size[0]) // 2
    return normalize(F.pad(image, [left, top, 28 - size[1] - left, 28 - size[0] - top], fill=0)), invert
