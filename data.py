"""Fashion-MNIST as normalized train / validation / test DataLoaders (48,000 / 12,000 / 10,000 images)."""
import os

import torch
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # in label order 0..9
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
VAL_FRACTION = 0.2  # the seed's 80/20 split of the 60,000 training images

# ToTensor scales a pixel p to p/255 in [0, 1]; Normalize((0.5,), (0.5,)) maps that to [-1, 1].
TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def fashion_mnist(data_dir, train):
    """The training (train=True) or test set, read from DATA_DIR/FashionMNIST/raw; downloaded there if missing."""
    raw_dir = os.path.join(data_dir, "FashionMNIST", "raw")
    try:
        dataset = datasets.FashionMNIST(data_dir, train=train, download=True, transform=TRANSFORM)
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
    return dataset


def split_train_val(dataset, seed):
    """Random 80/20 split into (train, validation) subsets; the same seed gives the same split."""
    n_val = int(len(dataset) * VAL_FRACTION)
    generator = torch.Generator().manual_seed(seed)
    return random_split(dataset, [len(dataset) - n_val, n_val], generator=generator)


def make_loaders(data_dir, batch_size=64, seed=1):
    """(train_loader, val_loader, test_loader). Only the training loader shuffles, with its own seeded order."""
    train_set, val_set = split_train_val(fashion_mnist(data_dir, train=True), seed)
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(val_set, batch_size=batch_size),
            make_test_loader(data_dir, batch_size))


def make_test_loader(data_dir, batch_size=64):
    """The 10,000 test images in file order, so that batch k always holds the same images."""
    return DataLoader(fashion_mnist(data_dir, train=False), batch_size=batch_size)
