"""Time the project's training against the plain pipeline, side by side in one process, on the same data.

    python benchmarks/speed.py --data-dir data

plain: torchvision's per-sample ToTensor + Normalize on PIL images behind DataLoaders, batch 64, the model in NCHW.
project: data.py's tensors, preprocessed once and kept on the device, the model in channels_last, validation and test
in batches of 256, as train.py runs them. Both from the same weights, in strict fp32. Results: benchmarks/README.md."""
import argparse
import contextlib
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Subset, random_split
from torchvision import datasets, transforms

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's files
from data import VAL_FRACTION, fashion_mnist, make_loaders  # noqa: E402
from evaluate import predict  # noqa: E402
from model import FashionCNN  # noqa: E402
from plumbing.devices import pick_device, use_strict_fp32  # noqa: E402
from train import train_one_epoch  # noqa: E402

# FLOPs of a training step, a multiply-add as 2 (ReLU, pooling, biases, loss and Adam: under 1%). Forward, multiply-
# adds an image: conv1 28*28 * 32 * (1*3*3) = 225,792; conv2 14*14 * 64 * (32*3*3) = 3,612,672; conv3 7*7 * 128 *
# (64*3*3) = 3,612,672; fc1 1152 * 256 = 294,912; fc2 256 * 10 = 2,560: 7,748,608. Backward: each layer's weight
# gradient as much again, its input's too but conv1's (the image): 3 * 7,748,608 - 225,792, 46.0 MFLOP an image.
TRAIN_FLOP_PER_IMAGE = 2 * (3 * 7_748_608 - 225_792)
SEED = 1  # the split, and the initial weights both pipelines start from
MATMUL_SIZE = 4096  # n x n products: large enough to run at the machine's sustained rate (the tests use a small one)


def plain_loaders(data_dir, batch_size, seed, max_batches=None):
    """(train, val, test) DataLoaders that transform each image as it is drawn: the pipeline data.py replaces."""
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    full = datasets.FashionMNIST(data_dir, train=True, transform=to_tensor, download=True)  # unpacks .gz files
    train_set, val_set = random_split(full, [1 - VAL_FRACTION, VAL_FRACTION], torch.Generator().manual_seed(seed))
    test_set = datasets.FashionMNIST(data_dir, train=False, transform=to_tensor)
    train_set = train_set if max_batches is None else Subset(train_set, range(max_batches * batch_size))
    return (DataLoader(train_set, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)),
            DataLoader(val_set, batch_size), DataLoader(test_set, batch_size))


def matmul_flops(device, n, repeats=5):
    """The machine's sustained fp32 matmul rate in FLOP/s, over `repeats` products of two n x n matrices."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    float((a @ b)[0, 0])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    float(c[0, 0])  # reading one number back waits for a GPU to finish
    return repeats * 2 * n**3 / (time.perf_counter() - start)


def measure(name, make, device, steps=30):
    """Build one pipeline's loaders and model, train one epoch, validate, test, time steps alone; return the timings."""
    torch.manual_seed(SEED)  # the same initial weights and dropout masks for both pipelines
    start = time.perf_counter()
    (train_loader, val_loader, test_loader), model = make()
    ready = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # train_one_epoch's progress lines
        train_one_epoch(model, train_loader, optimizer, device, 1, log_interval=10**9)
    trained = time.perf_counter()
    _, y_true, y_pred = predict(model, val_loader, device)
    validated = time.perf_counter()
    predict(model, test_loader, device)
    tested = time.perf_counter()
    images = min(len(train_loader.dataset), len(train_loader) * train_loader.batch_size)
    print(f"{name}: {images} training images, validation accuracy {(y_true == y_pred).mean():.4f}", flush=True)
    inputs, targets = [t.to(device) for t in next(iter(train_loader))]
    model.train()  # then `steps` training steps alone, on one batch already in place: the compute without loading
    for step in range(steps + 3):  # three to warm up
        if step == 3:
            stepping = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss.item()  # waits for a GPU to finish
    return {"ready": ready - start, "rate": images / (trained - ready), "epoch": validated - ready,
            "test": tested - validated, "step": (time.perf_counter() - stepping) / steps}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="folder holding FashionMNIST/raw (default: data)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: picked as train.py picks it)")
    parser.add_argument("--batches", type=int, help="training batches to time (default: the whole epoch)")
    args = parser.parse_args(argv)
    if args.batches is not None and args.batches < 1:
        parser.error(f"--batches must be at least 1, got {args.batches}")
    use_strict_fp32()  # as train.py, before any CUDA work: the matmul rate below and the convolutions alike
    try:
        device = pick_device(args.device)
        fashion_mnist(args.data_dir, train=True)  # a clear error now if the data are missing; warms the file cache
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")

    def project():  # as train.py builds them; validation and test stay whole, as plain's
        loaders = make_loaders(args.data_dir, 64, SEED, device)
        loaders[0].max_batches = args.batches
        return loaders, FashionCNN().to(device, memory_format=torch.channels_last)

    peak = matmul_flops(device, MATMUL_SIZE)
    print(f"{device}, {torch.get_num_threads()} threads, PyTorch {torch.__version__}, strict fp32 (TF32 off): "
          f"fp32 matmul {peak / 1e9:.0f} GFLOP/s ({MATMUL_SIZE} x {MATMUL_SIZE})", flush=True)
    p = measure("plain", lambda: (plain_loaders(args.data_dir, 64, SEED, args.batches), FashionCNN().to(device)),
                device)
    q = measure("project", project, device)

    def flops(rate):  # training's FLOP/s at `rate` images a second, and its share of the matmul rate
        return f"{rate * TRAIN_FLOP_PER_IMAGE / 1e9:.0f} G ({rate * TRAIN_FLOP_PER_IMAGE / peak:.0%})"
    rows = [("data ready, s", f"{p['ready']:.2f}", f"{q['ready']:.2f}", p["ready"] / q["ready"]),
            ("training, images/s", f"{p['rate']:,.0f}", f"{q['rate']:,.0f}", q["rate"] / p["rate"]),
            ("one epoch (train + val.), s", f"{p['epoch']:.2f}", f"{q['epoch']:.2f}", p["epoch"] / q["epoch"]),
            ("test evaluation, s", f"{p['test']:.2f}", f"{q['test']:.2f}", p["test"] / q["test"]),
            ("step alone, ms", f"{p['step'] * 1e3:.1f}", f"{q['step'] * 1e3:.1f}", p["step"] / q["step"]),
            ("FLOP/s: training (of matmul)", flops(p["rate"]), flops(q["rate"]), None),
            ("FLOP/s: step alone", flops(64 / p["step"]), flops(64 / q["step"]), None)]
    print(f"\n{'':<28} {'plain':>12} {'project':>12} {'speed-up':>9}")
    for label, plain_value, project_value, ratio in rows:
        print(f"{label:<28} {plain_value:>12} {project_value:>12} {f'{ratio:.2f}x' if ratio else '':>9}")


if __name__ == "__main__":
    main()
