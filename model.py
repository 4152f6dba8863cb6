"""The CNN of the original Fashion-MNIST write-up, for 28x28 grayscale images, and its saved weights.

    from model import load_checkpoint
    model = load_checkpoint("runs/checkpoint.pt")  # FashionCNN: (N, 1, 28, 28) images -> (N, 10) logits

Its input, as it was trained: gray levels p of 0 (black background) to 255 (the garment) scaled to [-1, 1] as
(p / 255 - 0.5) / 0.5, torchvision's ToTensor + Normalize((0.5,), (0.5,)) (data.normalize). 390,410 parameters:
three conv blocks, a dropout MLP head (with batch_norm=True, BatchNorm after each convolution: 390,858). Imports
only torch and the standard library, so this file can be copied alone.
"""
import os
import warnings
import zipfile

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


def read_checkpoint(path):
    """The dict that torch.save wrote at path; FileNotFoundError or ValueError if there is none."""
    if not os.path.isfile(path):  # missing, a folder, or a FIFO, which torch.load would wait on forever
        raise FileNotFoundError(f"no checkpoint at {path} (train one with: python train.py)")
    try:
        with zipfile.ZipFile(path) as archive:  # torch.save's: a bit flipped on disk fails a CRC, which torch.load
            if archive.testzip() is not None:  # does not check
                raise ValueError("a part fails its checksum")
        with warnings.catch_warnings():  # torch warns about some odd pickles before it refuses them
            warnings.simplefilter("ignore")
            # weights_only: unpickle tensors and plain containers only, so that a checkpoint can never run code.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, cut short, not a zip, refused: a damaged file fails in a dozen ways
        raise ValueError(f"{path} is not a readable checkpoint: damaged, not PyTorch's, or holding objects that "
                         f"weights_only loading refuses ({reason(e)})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not hold FashionCNN weights (a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


def load_checkpoint(path, device="cpu"):
    """FashionCNN in eval mode, on device in channels_last, with the weights saved at path: train.py's checkpoint.pt
    ({"model": weights, ...}), a bare state_dict, or a run's state.pt (its "best" epoch, as checkpoint.pt holds it);
    ValueError if path holds anything else."""
    weights = read_checkpoint(path)
    weights = weights.get("best", weights)  # state.pt -> its best epoch
    weights = weights.get("model", weights) if isinstance(weights, dict) else weights  # the epoch -> its weights
    try:
        model = FashionCNN(batch_norm=any(str(name).endswith("running_mean") for name in weights))
        model.load_state_dict(weights)  # strict: FashionCNN's names and shapes, none missing, none more
    except Exception as e:  # not a dict of tensors, other names or shapes, tensors that cannot be copied: a dozen ways
        raise ValueError(f"{path} does not hold FashionCNN weights ({reason(e)})") from None
    with torch.no_grad():  # a black picture's logits: weights that make them NaN or infinite answer nothing
        if not model.eval()(torch.full((1, 1, 28, 28), -1.0)).isfinite().all():
            raise ValueError(f"{path} computes NaN or infinite logits: a training that diverged, not a model to use")
    return model.to(device, memory_format=torch.channels_last)  # channels_last (NHWC), as train.py: faster


def reason(e):  # an exception's words on one short line, for an error message of one line
    return " ".join(str(e).split())[:150] or type(e).__name__
