"""model.py: shapes, parameter count, and that it can learn."""
import torch
import torch.nn.functional as F

from model import FashionCNN


def test_logits_shape():
    assert FashionCNN()(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_parameter_count_matches_the_seed_architecture():
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
