"""Fashion-MNIST as normalized train / validation / test loaders (48,000 / 12,000 / 10,000 images).

The images are preprocessed once, all together, into one tensor (on the GPU when training there), and
each batch is sliced from it. The values, the split and the order of the batches are exactly those of
torchvision's per-sample ToTensor + Normalize behind a DataLoader; only the per-image work is gone.
"""
import math
import os

import torch
from torch.utils.data import DataLoader, TensorDataset, random_split
from torchvision import datasets

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # in label order 0..9
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
VAL_FRACTION = 0.2  # the seed's 80/20 split of the 60,000 training images
EVAL_BATCH_SIZE = 256  # for validation and test: no effect on the results; 4x fewer steps than 64, no slower on a CPU


def fashion_mnist(data_dir, train, device="cpu"):
    """The training (train=True) or test set as a TensorDataset of (N, 1, 28, 28) float32 images and (N,) labels.

    Read from DATA_DIR/FashionMNIST/raw, and downloaded there if missing.
    """
    raw_dir = os.path.join(data_dir, "FashionMNIST", "raw")
    try:
        dataset = datasets.FashionMNIST(data_dir, train=train, download=True)
    except Exception as e:  # torchvision raises many kinds; sort them into the two a user can act on
        if not all(os.path.isfile(os.path.join(raw_dir, f)) for f in RAW_FILES):
            raise FileNotFoundError(
                f"Fashion-MNIST is not in {raw_dir} and could not be downloaded. "
                f"Put these four files there (unpacked from the .gz downloads): {', '.join(RAW_FILES)}; "
                "or point --data-dir at a folder that holds FashionMNIST/raw.") from e
        raise ValueError(f"cannot read Fashion-MNIST from {raw_dir}: {e}") from e
    if dataset.data.shape[1:] != (28, 28) or len(dataset.data) != len(dataset.targets):
        raise ValueError(f"{raw_dir} does not hold Fashion-MNIST: {len(dataset.targets)} labels "
                         f"for images of shape {tuple(dataset.data.shape)}")
    pixels = dataset.data.unsqueeze(1).to(device)  # (N, 1, 28, 28) uint8
    # ToTensor's p / 255 in float32, then Normalize((0.5,), (0.5,))'s (x - 0.5) / 0.5: the same operations in
    # the same order, so the same bits, in [-1, 1].
    images = pixels.float().div(255).sub(0.5).div(0.5)
    return TensorDataset(images, dataset.targets.to(device))


def split_train_val(dataset, seed):
    """Random 80/20 split into (train, validation) TensorDatasets; the same seed gives the same split."""
    n_val = int(len(dataset) * VAL_FRACTION)
    generator = torch.Generator().manual_seed(seed)
    train, val = random_split(dataset, [len(dataset) - n_val, n_val], generator=generator)
    return TensorDataset(*dataset[train.indices]), TensorDataset(*dataset[val.indices])


class TensorLoader:
    """A DataLoader for a TensorDataset: each batch is one indexing of the whole tensors, on their device.

    With a generator it shuffles, and gives exactly the batches of
    DataLoader(dataset, batch_size, shuffle=True, generator=generator); without one it keeps the dataset's order.
    """

    def __init__(self, dataset, batch_size, generator=None):
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator

    def __len__(self):  # batches per pass, the last one possibly short
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        images, labels = self.dataset.tensors
        if self.generator is None:
            order = torch.arange(len(labels))
        else:  # the epoch's indices from a DataLoader, so that they use the generator exactly as the plain one does
            order = torch.cat(list(DataLoader(range(len(labels)), self.batch_size, shuffle=True,
                                              generator=self.generator)))
        for batch in order.to(labels.device).split(self.batch_size):  # one copy to the device per pass
            yield images[batch], labels[batch]  # (B, 1, 28, 28), (B,)


def make_loaders(data_dir, batch_size=64, seed=1, device="cpu"):
    """(train_loader, val_loader, test_loader), their data on the device. Only training shuffles, in a seeded order."""
    train_set, val_set = split_train_val(fashion_mnist(data_dir, train=True, device=device), seed)
    generator = torch.Generator().manual_seed(seed)
    return (TensorLoader(train_set, batch_size, generator),
            TensorLoader(val_set, EVAL_BATCH_SIZE),
            make_test_loader(data_dir, EVAL_BATCH_SIZE, device))


def make_test_loader(data_dir, batch_size=EVAL_BATCH_SIZE, device="cpu"):
    """The 10,000 test images in file order, so that batch k always holds the same images."""
    return TensorLoader(fashion_mnist(data_dir, train=False, device=device), batch_size)
