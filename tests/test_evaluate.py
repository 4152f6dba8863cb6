"""evaluate.py on synthetic data: the report on hand-made imbalanced labels (weighted, not macro; support from the
true rows; the worst confusions first); a run's report reproduced at another batch size, printed or written into a
new folder; a run's state.pt tested at its best epoch, as checkpoint.pt; the same numerics as train.py; every bad
flag, missing data and bad checkpoint (one would run code if unpickled, one holds NaN) as one error that writes
nothing; a metrics.json never replaced, a picture that cannot be written, and Ctrl-C, each leaving no half test;
`python evaluate.py` as a script."""
import json
import os
import pickle
import random
import runpy
import signal
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import data
import evaluate
import train
from conftest import (ROOT, assert_clean_error, run_main, snapshot, start_script, state_of, wait_for,
                      write_fake_fashion_mnist)
from model import FashionCNN, load_checkpoint
from plumbing import guard


def load_json(path):
    with open(path) as f:
        return json.load(f)


def test_evaluate_prints_the_run_report_and_writes_it_elsewhere(trained_run, fake_data, tmp_path):
    out = trained_run
    from_train = load_json(out / "metrics.json")
    before = snapshot(out)
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--batch-size", "7")  # another batch size: the results must not depend on it
    assert result.returncode == 0, result.stderr
    assert f"Test accuracy {from_train['accuracy']:.4f}" in result.stdout and "Most confused:" in result.stdout
    assert snapshot(out) == before  # no --out-dir: printed only
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", tmp_path / "again")
    assert result.returncode == 0, result.stderr
    assert load_json(tmp_path / "again" / "metrics.json") == from_train
    assert snapshot(tmp_path / "again").get("misclassified.png") == snapshot(out).get("misclassified.png")


def test_evaluate_that_cannot_make_its_folder_says_so_before_the_test(trained_run, fake_data):
    out = trained_run
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", "/proc/no-such-folder")
    assert_clean_error(result, "cannot write to /proc/no-such-folder")
    assert "Test accuracy" not in result.stdout  # its folder made and locked first: no test wasted


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be from 1 to 2**31 - 1"),
    (["--batch-size", str(10**20)], "--batch-size must be from 1 to 2**31 - 1"),
    (["--device", "nosuchdevice"], "device 'nosuchdevice' is not available"),
])
def test_evaluate_bad_flags_are_clear_errors(flags, message, trained_run, fake_data):
    out = trained_run
    assert_clean_error(run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data,
                                *flags), message)


def test_evaluate_without_data_is_a_clear_error(trained_run, tmp_path, offline):
    out = trained_run
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", tmp_path)
    assert_clean_error(result, "Fashion-MNIST is not in", "t10k-images-idx3-ubyte")


class RunsCodeWhenUnpickled:
    """A pickle that would create a file if loading it ran code."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_bad_checkpoints(folder):
    """Name -> path of files that evaluate.py must refuse."""
    paths = {name: folder / f"{name}.pt" for name in ("missing", "empty", "garbage", "truncated", "other_model",
                                                      "wrong_shapes", "not_a_dict", "runs_code", "runs_code_zip",
                                                      "nan", "overflowing", "one tensor more", "fifo", "a bit flipped")}
    paths["empty"].write_bytes(b"")
    paths["garbage"].write_bytes(random.Random(0).randbytes(1000))
    torch.save({"model": FashionCNN().state_dict()}, paths["truncated"])
    paths["truncated"].write_bytes(paths["truncated"].read_bytes()[:5000])
    torch.save({"model": torch.nn.Linear(4, 2).state_dict()}, paths["other_model"])
    torch.save({"model": FashionCNN(num_classes=5).state_dict()}, paths["wrong_shapes"])
    torch.save([1, 2, 3], paths["not_a_dict"])
    with open(paths["runs_code"], "wb") as f:
        pickle.dump({"model": RunsCodeWhenUnpickled(str(folder / "code_ran"))}, f)
    torch.save({"model": RunsCodeWhenUnpickled(str(folder / "code_ran"))}, paths["runs_code_zip"])
    diverged = FashionCNN().state_dict()
    diverged["classifier.1.weight"][0, 0] = float("nan")
    torch.save({"model": diverged}, paths["nan"])
    huge = FashionCNN().state_dict()  # finite, but the logits overflow
    huge["classifier.4.weight"].fill_(3e38)
    torch.save({"model": huge}, paths["overflowing"])
    torch.save({"model": {**FashionCNN().state_dict(), "extra": torch.zeros(1)}}, paths["one tensor more"])
    os.mkfifo(paths["fifo"])  # torch.load would wait on it forever
    torch.save({"model": FashionCNN().state_dict()}, paths["a bit flipped"])
    content = bytearray(paths["a bit flipped"].read_bytes())
    content[len(content) // 2] ^= 1  # inside a tensor's bytes: torch.load alone reads it as it is
    paths["a bit flipped"].write_bytes(bytes(content))
    weights = FashionCNN().state_dict()  # FashionCNN's names and shapes, as tensors that cannot be copied in
    for kind, convert in {"sparse": lambda t: t.to_sparse(), "meta": lambda t: t.to("meta")}.items():
        paths[kind] = folder / f"{kind}.pt"
        torch.save({"model": {name: convert(t) for name, t in weights.items()}}, paths[kind])
    for kind, best in (("best a tensor", torch.zeros(3)), ("best None", None), ("best a list", [1, 2])):
        paths[kind] = folder / f"{kind}.pt"
        torch.save({"best": best}, paths[kind])
    return paths


BAD_CHECKPOINTS = [("missing", "no checkpoint at"), ("fifo", "no checkpoint at"),
                   ("a bit flipped", "fails its checksum"),
                   ("empty", "is not a readable checkpoint"), ("garbage", "is not a readable checkpoint"),
                   ("truncated", "is not a readable checkpoint"), ("other_model", "does not hold FashionCNN weights"),
                   ("wrong_shapes", "does not hold FashionCNN weights"), ("not_a_dict", "does not hold FashionCNN"),
                   ("runs_code", "is not a readable checkpoint"), ("runs_code_zip", "is not a readable checkpoint"),
                   ("nan", "computes NaN or infinite logits"), ("overflowing", "computes NaN or infinite logits"),
                   ("one tensor more", 'Unexpected key(s) in state_dict: "extra"'),
                   ("sparse", "does not hold FashionCNN weights"), ("meta", "does not hold FashionCNN weights"),
                   ("best a tensor", "does not hold FashionCNN weights"), ("best None", "does not hold FashionCNN"),
                   ("best a list", "does not hold FashionCNN weights")]


@pytest.mark.parametrize("name, message", BAD_CHECKPOINTS)
def test_bad_checkpoints_are_clear_errors_that_write_nothing(name, message, fake_data, tmp_path):
    path = write_bad_checkpoints(tmp_path)[name]
    before = sorted(os.listdir(tmp_path))
    result = run_main(evaluate.main, "--checkpoint", path, "--data-dir", fake_data)
    assert_clean_error(result, str(path), message)
    assert sorted(os.listdir(tmp_path)) == before  # no metrics.json, no image, and no code ran
    assert not (tmp_path / "code_ran").exists()


def test_a_checkpoint_that_computes_infinity_classifies_no_picture(fake_data, tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "black.png")
    result = run_main(evaluate.main, "--checkpoint", write_bad_checkpoints(tmp_path)["overflowing"],
                      "--image", tmp_path / "black.png")
    assert_clean_error(result, "computes NaN or infinite logits")  # not "Bag nan, ..."
    assert "black.png" not in result.stdout


def test_random_bytes_are_never_read_as_a_checkpoint(tmp_path):
    # The unpickler fails on random bytes in many ways (UnpicklingError, IndexError, KeyError, UnicodeDecodeError,
    # struct.error, EOFError, RuntimeError): each must become the one clear error. Seeded, so it never flakes.
    rng, path = random.Random(0), tmp_path / "garbage.pt"
    for i in range(600):
        data = rng.randbytes(rng.choice([1, 10, 100, 1000]))
        path.write_bytes(b"\x80\x02" + data if i % 3 == 0 else data)  # a third start like a pickle
        with pytest.raises(ValueError, match="is not a readable checkpoint|does not hold FashionCNN"):
            load_checkpoint(path)


def test_a_bare_state_dict_is_accepted(fake_data, tmp_path):
    torch.save(FashionCNN().state_dict(), tmp_path / "weights.pt")
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "weights.pt", "--data-dir", fake_data, "--out-dir",
                      tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "metrics.json").exists()


def test_the_report_weights_by_true_support_and_lists_the_worst_confusions_first():
    # Worked by hand. True class 0 six times, 1 three times, 2 once (the 7 others absent):
    #   true 0 -> predicted 0, 0, 0, 0, 1, 1;  true 1 -> 1, 2, 2;  true 2 -> 0
    # confusion rows [4, 2, 0], [0, 1, 2], [1, 0, 0]; predicted (column sums) 5, 3, 2; support (row sums) 6, 3, 1.
    y_true = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 0])
    report = evaluate.classification_report(y_true, y_pred)
    # precision 4/5, 1/3, 0/2; recall 4/6, 1/3, 0/1; F1 = 2tp / (predicted + support) = 8/11, 2/6, 0.
    # Weighted by support 6, 3, 1 over 10 images (a macro mean over the 10 classes would be about a fifth of these).
    assert report["precision"] == pytest.approx((6 * 4 / 5 + 3 * 1 / 3) / 10)  # 0.58
    assert report["recall"] == pytest.approx((6 * 4 / 6 + 3 * 1 / 3) / 10) == report["accuracy"] == 0.5
    assert report["f1"] == pytest.approx((6 * 8 / 11 + 3 * 1 / 3) / 10)  # 0.5364
    assert [report["per_class"][name]["support"] for name in evaluate.CLASSES[:4]] == [6, 3, 1, 0]
    assert report["per_class"]["Pullover"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # Most confused first: 0 -> 1 and 1 -> 2 twice each, then 2 -> 0 once.
    assert [m["count"] for m in report["most_confused"]] == [2, 2, 1]
    assert report["most_confused"][2] == {"true": "Pullover", "predicted": "T-shirt/top", "count": 1}
    rows = {(m["true"], m["predicted"]): m["row"] for m in report["misclassified_examples"]}
    assert rows[("Pullover", "T-shirt/top")] == 2
    assert [m["index"] for m in report["misclassified_examples"] if m["true"] == "T-shirt/top"] == [4, 5]


@pytest.mark.parametrize("damage", ["garbage", "folder", "another test's"])
def test_evaluate_never_replaces_a_metrics_json(damage, fake_data, tmp_path):
    torch.save(FashionCNN().state_dict(), tmp_path / "weights.pt")
    if damage == "folder":
        (tmp_path / "metrics.json").mkdir()
    else:
        (tmp_path / "metrics.json").write_text("{not json" if damage == "garbage" else '{"accuracy": 1}')
    before = snapshot(tmp_path) if damage != "folder" else None
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "weights.pt", "--data-dir", fake_data, "--out-dir",
                      tmp_path)
    assert_clean_error(result, "already holds metrics.json", "not replaced")
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "misclassified.png").exists()
    assert damage == "folder" or snapshot(tmp_path) == before


def test_evaluate_that_cannot_write_a_picture_says_so_and_leaves_no_half_file(fake_data, tmp_path):
    torch.save(FashionCNN().state_dict(), tmp_path / "weights.pt")
    (tmp_path / "misclassified.png.tmp").mkdir()  # where the picture would be written: not writable
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "weights.pt", "--data-dir", fake_data, "--out-dir",
                      tmp_path)
    assert_clean_error(result, "cannot write", "misclassified.png")
    assert sorted(os.listdir(tmp_path)) == ["misclassified.png.tmp", "weights.pt"]  # no metrics.json


def test_evaluate_interrupted_says_so_and_writes_nothing(trained_run, fake_data, tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluate, "test", interrupted)
    result = run_main(evaluate.main, "--checkpoint", trained_run / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", tmp_path / "out")
    assert result.returncode == 130 and "interrupted. Nothing written." in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_evaluate_a_runs_state_tests_its_best_epoch_as_its_checkpoint(fake_data, tmp_path, monkeypatch):
    validation = iter([0.5, 0.1])  # epoch 1 the best on validation, epoch 2 the last
    monkeypatch.setattr(train, "accuracy", lambda y_true, y_pred: next(validation))
    assert run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "2").returncode == 0
    monkeypatch.undo()
    assert state_of(tmp_path)["best"]["epoch"] == 1
    reports = [run_main(evaluate.main, "--checkpoint", tmp_path / name, "--data-dir", fake_data).stdout
               for name in ("state.pt", "checkpoint.pt")]
    assert reports[0] == reports[1] and "Test accuracy" in reports[0]


def test_evaluate_runs_as_a_script(trained_run, fake_data, tmp_path, monkeypatch, capsys):
    """`python evaluate.py ...`: its __main__ calls main() with the command line (train.py's and seeds.py's run in
    processes of their own in tests/test_run_state.py and test_workers.py)."""
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--checkpoint", str(trained_run / "checkpoint.pt"), "--data-dir",
                                      fake_data])
    runpy.run_path(os.path.join(ROOT, "evaluate.py"), run_name="__main__")
    assert "Test accuracy" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--checkpoint", str(tmp_path / "none.pt")])
    with pytest.raises(SystemExit, match="error: no checkpoint at"):
        runpy.run_path(os.path.join(ROOT, "evaluate.py"), run_name="__main__")


@pytest.mark.parametrize("failure", ["a full disk", "SIGTERM"])
def test_a_test_that_cannot_be_written_whole_leaves_none_of_it_nor_its_folder(failure, trained_run, fake_data,
                                                                              tmp_path, monkeypatch):
    real_write = guard.write_file

    def fails_late(path, obj, *rest, **options):  # the pictures written, then metrics.json fails, or a SIGTERM comes
        if path.endswith("metrics.json"):
            if failure == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)
            raise OSError(f"cannot write {path}: No space left on device")
        return real_write(path, obj, *rest, **options)
    monkeypatch.setattr(guard, "write_file", fails_late)
    result = run_main(evaluate.main, "--checkpoint", trained_run / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", tmp_path / "new")
    if failure == "SIGTERM":
        assert result.returncode == 143 and "interrupted. Nothing written." in result.stderr, result.stderr
    else:
        assert_clean_error(result, "metrics.json: No space left on device")
    assert os.listdir(tmp_path) == []  # no half test to block the folder, and no folder left


def test_ctrl_c_held_down_ends_evaluate_in_one_line_and_leaves_no_folder(trained_run, tmp_path):
    data_dir = write_fake_fashion_mnist(tmp_path / "data", n_train=20, n_test=20_000)  # a test of a second or two
    process = start_script("evaluate.py", "--checkpoint", trained_run / "checkpoint.pt", "--data-dir", data_dir,
                           "--out-dir", tmp_path / "out")
    wait_for(lambda: (tmp_path / "out").exists(), process)  # its folder made and locked: the test is under way
    while process.poll() is None:  # a key held down: a Ctrl-C every millisecond until it ends
        process.send_signal(signal.SIGINT)
        time.sleep(0.001)
    stderr = process.communicate()[1]
    assert process.returncode == 130 and "Traceback" not in stderr and stderr.count("interrupted.") == 1, stderr
    assert not (tmp_path / "out").exists()


def test_image_with_tta_averages_each_pictures_logits_with_its_mirror_images(trained_run, fake_data, tmp_path):
    pixels = data.read_idx(os.path.join(fake_data, "FashionMNIST", "raw", "t10k-images-idx3-ubyte"), 3)[0]
    pixels[:, :10] = 0  # the left side dark: its mirror image differs
    Image.fromarray(pixels.numpy()).save(tmp_path / "left.png")
    model = load_checkpoint(trained_run / "checkpoint.pt")
    image = data.normalize(pixels[None, None])
    with torch.no_grad():
        expected = torch.softmax((model(image) + model(image.flip(-1))) / 2, dim=1)[0]
    top = expected.topk(3)
    result = run_main(evaluate.main, "--checkpoint", trained_run / "checkpoint.pt", "--tta", "--image",
                      tmp_path / "left.png")
    assert result.returncode == 0 and result.stdout.strip().endswith(", ".join(
        f"{data.CLASSES[i]} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))), result.stdout
    result = run_main(evaluate.main, "--checkpoint", trained_run / "checkpoint.pt", "--out-dir", tmp_path / "out",
                      "--image", tmp_path / "left.png")
    assert_clean_error(result, "argument --image: not allowed with argument --out-dir")


def test_the_most_confused_pairs_of_equal_counts_come_in_class_order():
    # true 2 -> 1, 0 -> 1, 1 -> 0 and 0 -> 2: once each; 3 -> 0 twice, first
    report = evaluate.classification_report(np.array([2, 0, 1, 0, 3, 3]), np.array([1, 1, 0, 2, 0, 0]))
    assert [(evaluate.CLASSES.index(m["true"]), evaluate.CLASSES.index(m["predicted"]))
            for m in report["most_confused"]] == [(3, 0), (0, 1), (0, 2), (1, 0), (2, 1)]


def test_an_empty_out_dir_is_an_error_not_a_silent_print(trained_run, fake_data):
    result = run_main(evaluate.main, "--checkpoint", trained_run / "checkpoint.pt", "--data-dir", fake_data,
                      "--out-dir", "")
    assert_clean_error(result, "cannot write to")
