"""Shared test helpers: small synthetic Fashion-MNIST files, the runs every test module may share (trained once a
session, copied by the tests that change them), and the scripts run as a user runs them: in this process, or in a
process of their own where the claim is about a process (a kill, a signal, a file-size limit, two at once)."""
import contextlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every download attempt goes to a closed port on this machine, so no test can touch the network.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
RUN = ("--batch-size", "16", "--lr", "3e-3", "--seed", "7")  # the shared runs' settings, but for --epochs


def write_idx(path, array):
    """Write a uint8 array in the IDX format of the Fashion-MNIST files: magic 0x0000 08 ndim, big-endian sizes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_fake_fashion_mnist(data_dir, n_train=200, n_test=50, seed=0):
    """Random noise plus a bright band whose row depends on the label, so a CNN can learn it quickly; but a quarter
    of the labels are redrawn at random, so that a few epochs still differ, and no run is perfect."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(data_dir, "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 100, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label:4 + 2 * label, :] = 255
        labels = np.where(rng.random(n) < 0.25, rng.integers(0, 10, n), labels)
        write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), images)
        write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), labels)
    return str(data_dir)


@pytest.fixture
def offline(monkeypatch):
    """Downloads in this process fail at once, as with no network."""
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def straight(fake_data, tmp_path_factory):
    """straight(n): the folder of an uninterrupted run of RUN's settings for n epochs on fake_data, trained once a
    session; what stopped, resumed or copied runs are compared with. Never written to: copy_run it first."""
    import train
    folders = {}

    def trained(epochs):
        if epochs not in folders:
            folder = tmp_path_factory.mktemp(f"straight{epochs}")
            result = run_main(train.main, "--data-dir", fake_data, "--out-dir", folder, *RUN, "--epochs", epochs)
            assert result.returncode == 0, result.stderr
            folders[epochs] = folder, result
        return folders[epochs][0]
    trained.output = lambda epochs: folders[epochs][1]  # its command's CompletedProcess
    return trained


@pytest.fixture(scope="session")
def trained_run(straight):
    """The session's one small trained run, tested: 3 epochs of RUN on fake_data."""
    return straight(3)


def copy_run(source, folder):
    """A copy of a run's folder, to change."""
    shutil.copytree(source, folder, dirs_exist_ok=True)
    return folder


def run_main(main, *args):
    """Call a script's main(argv) in this process, as its command line would: a CompletedProcess-like result.

    Most tests run here, not in a subprocess: importing torch costs a new process about 3 seconds.
    """
    out, err = io.StringIO(), io.StringIO()
    code, handlers = 0, {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:  # sys.exit("error: ...") prints its message to stderr, as the interpreter would
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        finally:  # an interrupted script ignores Ctrl-C on its way out; this process goes on
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def start_script(*args, env_extra=None, **popen):
    """A script of the project started in a process of its own, offline, as a shell starts it (Ctrl-C's default
    action restored): the Popen, its output captured as text."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, text=True, errors="replace",
                            env={**os.environ, **OFFLINE, **(env_extra or {})},
                            preexec_fn=popen.pop("preexec_fn", lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)),
                            **popen)


def run_script(*args, **kwargs):
    """start_script, waited for: the CompletedProcess."""
    with start_script(*args, **kwargs) as process:
        stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_for(condition, process=None, timeout=300):
    """Poll until condition() is true (not for a number of seconds: a loaded machine is only slower); fails if the
    process ends first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the process ended first: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def assert_clean_error(result, *fragments):
    """A non-zero exit with one 'error:' line on stderr that contains each fragment, and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


def snapshot(folder):
    """{file name: bytes} of a folder, to check that a command left it exactly as it was."""
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def state_of(folder):
    """The state.pt a run wrote, read as torch wrote it (not by the code under test): to look at, or to damage."""
    return torch.load(os.path.join(folder, "state.pt"), weights_only=True)
