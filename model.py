"""The CNN of the original Fashion-MNIST write-up, for 28x28 grayscale images, and its saved weights.

    from model import load_checkpoint
    model = load_checkpoint("runs/checkpoint.pt")  # FashionCNN: (N, 1, 28, 28) in [-1, 1] -> (N, 10) logits

390,410 parameters: three conv blocks, a dropout MLP head (and, with batch_norm=True, BatchNorm after each
convolution, 390,858). Imports only torch, so this file can be copied alone.
"""
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


def read_checkpoint(path):
    """The dict that torch.save wrote at path; FileNotFoundError or ValueError if there is none."""
    try:
        with warnings.catch_warnings():  # torch warns about some odd pickles before it refuses them
            warnings.simplefilter("ignore")
            # weights_only: unpickle tensors and plain containers only, so that a checkpoint can never run code.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path} (train one with: python train.py)") from None
    except Exception as e:  # empty, cut short, not a zip, refused: a damaged file fails in a dozen ways
        reason = str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a readable checkpoint: damaged, not PyTorch's, or holding objects that "
                         f"weights_only loading refuses ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not hold FashionCNN weights (a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


def load_checkpoint(path, device="cpu"):
    """FashionCNN in eval mode with the weights saved at path: train.py's checkpoint.pt, a bare state_dict, or a
    run's state.pt (its best epoch); ValueError if path holds anything else."""
    weights = read_checkpoint(path)
    for key in ("best", "model"):  # state.pt -> its best epoch -> the weights, as checkpoint.pt holds them
        weights = weights[key] if isinstance(weights.get(key), dict) else weights
    model = FashionCNN(batch_norm=any(str(name).endswith("running_mean") for name in weights))
    for name, like in model.state_dict().items():  # the names, shapes and dtypes of the model; dense, on the CPU
        found = weights.get(name)
        if not torch.is_tensor(found) or (found.shape, found.dtype, found.layout, found.device.type) != (
                like.shape, like.dtype, torch.strided, "cpu"):
            kind = (f"{found.dtype} {found.layout} on {found.device}, {tuple(found.shape)}" if torch.is_tensor(found)
                    else type(found).__name__)
            raise ValueError(f"{path} does not hold FashionCNN weights (another model, or not a checkpoint: "
                             f"{name} is {kind})")
    if weights.keys() != model.state_dict().keys():
        raise ValueError(f"{path} does not hold FashionCNN weights (another model: {len(weights)} tensors)")
    if any(t.is_floating_point() and not t.isfinite().all() for t in weights.values()):
        raise ValueError(f"{path} holds NaN or infinite weights: a training that diverged, not a model to use")
    model.load_state_dict(weights)
    return model.to(device, memory_format=torch.channels_last).eval()  # channels_last, as train.py: faster
