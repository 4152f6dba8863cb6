"""model.py: shapes, the 390,410 parameters, conv, ReLU, pool in the write-up's order and equal bit for bit to the
pool-first order (values and gradients, NCHW and channels_last), channels_last within rounding of NCHW, dropout only
in training and set by its argument, and overfitting one batch (its checkpoints: tests/test_evaluate.py)."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import FashionCNN


def test_logits_shape():
    assert FashionCNN()(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_parameter_count_matches_the_original_architecture():
    # convs: (1*9+1)*32 + (32*9+1)*64 + (64*9+1)*128 = 92,672; head: (1152+1)*256 + (256+1)*10 = 297,738
    assert sum(p.numel() for p in FashionCNN().parameters()) == 390_410


def test_feature_map_is_128_by_3_by_3():
    assert FashionCNN().features(torch.randn(2, 1, 28, 28)).shape == (2, 128, 3, 3)


def test_dropout_is_active_only_in_training_mode():
    model, x = FashionCNN(), torch.randn(4, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_overfits_one_small_batch():
    torch.manual_seed(0)
    model = FashionCNN()
    images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))  # labels are noise: memorize them
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(60):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first or loss.item()
    model.eval()
    final = F.cross_entropy(model(images), labels).item()
    assert first > 2.0 and final < 0.1 * first
    assert (model(images).argmax(dim=1) == labels).all()


def pool_first_cnn():
    """model.py's blocks in the order max-pool -> ReLU, as earlier versions of this project ran them for speed."""
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(*block(1, 32), *block(32, 64), *block(64, 128)),
        classifier=nn.Sequential(nn.Flatten(), nn.Linear(1152, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))))


def test_relu_is_before_the_pooling_as_in_the_write_up():
    assert [type(m).__name__ for m in FashionCNN().features] == ["Conv2d", "ReLU", "MaxPool2d"] * 3


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_pool_first_order_gives_the_same_values_and_gradients_bit_for_bit(memory_format):
    # ReLU and max commute, so earlier runs (and their checkpoints) with pooling first compute exactly the same.
    torch.manual_seed(0)
    model = FashionCNN().to(memory_format=memory_format)
    reference = pool_first_cnn().to(memory_format=memory_format)
    reference.load_state_dict(model.state_dict())  # same parameter names: the checkpoints are interchangeable
    images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    images[:4] = -images[:4].abs()  # whole pooling windows of negative values
    grads = []
    for net in (model, reference):
        torch.manual_seed(1)  # the same dropout mask
        F.cross_entropy(net(images), labels).backward()
        grads.append([p.grad for p in net.parameters()])
    for mine, theirs in zip(*grads, strict=True):
        assert torch.equal(mine, theirs)
    model.eval(), reference.eval()
    assert torch.equal(model(images), reference(images))


def test_channels_last_changes_the_outputs_only_at_rounding_level():
    torch.manual_seed(0)
    model, images = FashionCNN().eval(), torch.randn(32, 1, 28, 28)
    nchw = model(images)
    nhwc = model.to(memory_format=torch.channels_last)(images)
    assert torch.allclose(nhwc, nchw, rtol=1e-4, atol=1e-5)
