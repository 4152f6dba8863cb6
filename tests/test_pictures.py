"""plumbing/pictures.py: each picture where the numbers say (cells, curves, a one-epoch run's points, the study's
dots, mean and interval, none from two seeds), and written by a run and by a study."""
import json

import numpy as np
import pytest
from PIL import Image, ImageChops

from benchmarks import seeds
from conftest import run_main
from plumbing import pictures

NAMES = ["T-shirt/top", "Trouser", "Pullover"]


def report(cm):
    total = sum(map(sum, cm))
    return {"confusion_matrix": cm, "per_class": dict.fromkeys(NAMES), "num_images": total,
            "accuracy": sum(cm[i][i] for i in range(len(cm))) / total}


def test_each_cell_is_its_shade_with_its_count_written_in_it():
    cm = [[50, 30, 20], [2, 90, 8], [0, 10, 990]]
    picture = np.asarray(pictures.confusion_picture(report(cm)))  # (H, W, 3)
    cell, left, top = 56, 100, 120
    # Worked out by hand. Diagonal: blue (31, 90, 180) blended from white by the class's recall, 255 + (c - 255) * r.
    # Off the diagonal: red (200, 30, 30) by the share of the row over the worst mistake's share (30 of 100 = 0.3).
    expected = {(0, 0): (143, 172, 218),  # recall 0.5
                (0, 1): (200, 30, 30),  # 0.3 / 0.3: the worst mistake, full red
                (0, 2): (218, 105, 105),  # 0.2 / 0.3 = 2/3
                (1, 0): (251, 240, 240),  # 0.02 / 0.3
                (1, 1): (53, 106, 188),  # recall 0.9: 187.5 rounds to the even 188
                (2, 0): (255, 255, 255),  # no mistake: white
                (2, 2): (33, 92, 181)}  # recall 0.99
    for (i, j), color in expected.items():
        y, x = top + i * cell, left + j * cell
        assert picture[y + 4, x + 4].tolist() == list(color), (i, j)  # a corner, clear of the count
        count = picture[y + 20:y + 36, x + 8:x + 48]  # where the count is written, centered
        assert (count != color).any(axis=2).sum() > 10, (i, j)  # ink of the count
    assert picture[top, left + 10].tolist() == list(pictures.LIGHT)  # a grid line


def test_a_larger_share_of_its_row_is_drawn_darker():
    def darkness(share, diagonal):
        return -sum(pictures.cell_color(share, diagonal, worst=0.3)[0])
    assert darkness(0.99, True) > darkness(0.5, True) > darkness(0.0, True)
    assert darkness(0.3, False) > darkness(0.1, False) > darkness(0.02, False) > darkness(0.0, False)
    assert pictures.cell_color(0.0, False, 0.3)[0] == (255, 255, 255)  # no mistakes: white
    assert pictures.cell_color(0.99, True, 0.3)[1] == (255, 255, 255)  # white counts on a dark cell


def test_the_curves_go_through_the_points_the_history_gives():
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 2.0 / e, "train_accuracy": 0.5 + 0.04 * e,
                "val_accuracy": 0.3 + 0.04 * e} for e in range(1, 6)]
    picture = np.asarray(pictures.curves_picture(history, best_epoch=4))
    assert picture.shape == (380, 1000, 3)
    for left, kind in ((70, "loss"), (580, "accuracy")):
        values = [h[f"{split}_{kind}"] for split in ("train", "val") for h in history]
        low, high = min(values), max(values)
        low, high = low - 0.08 * (high - low), high + 0.08 * (high - low)
        for split, color in (("train", pictures.ORANGE), ("val", pictures.BLUE)):
            for h in history:  # x from 0.7 to 5.3 over pixels 70..450 (or 580..960); y from high to low over 50..320
                x = left + (h["epoch"] - 0.7) / 4.6 * 380
                y = 320 - (h[f"{split}_{kind}"] - low) / (high - low) * 270
                near = picture[round(y) - 1:round(y) + 2, round(x) - 1:round(x) + 2].reshape(-1, 3).tolist()
                assert list(color) in near, (kind, split, h["epoch"])  # the line passes within a pixel
        assert picture[100, round(left + 3.3 / 4.6 * 380)].tolist() == list(pictures.GRAY)  # the best epoch


def test_the_study_dots_and_mean_line_are_where_the_numbers_say():
    accuracies = {1: 0.910, 2: 0.917, 3: 0.912}
    picture = np.asarray(pictures.study_picture(accuracies, 0.913, (0.906, 0.920), 0.914, [0.88, 0.9], [0.01, 0.005]))
    values = list(accuracies.values()) + [0.914, 0.906, 0.920]
    low, high = min(values) - 0.08 * (max(values) - min(values)), max(values) + 0.08 * (max(values) - min(values))

    def x(value):
        return round(70 + (value - low) / (high - low) * 380)
    for row, value in enumerate(accuracies.values(), start=1):
        assert picture[round(320 - row / 4 * 270), x(value)].tolist() == [0, 0, 0]  # the dot, black
    between_rows = (140, 150, 160, 210, 220, 230, 280, 290)  # clear of the dots and their labels
    assert all(picture[y, x(0.913)].tolist() == list(pictures.BLUE) for y in between_rows)  # the mean
    assert all(picture[y, x(0.914)].tolist() == list(pictures.RED) for y in between_rows)  # the write-up
    assert picture[200, (x(0.906) + x(0.910)) // 2].tolist() == [205, 222, 245]  # inside the shaded interval
    assert picture[200, x(0.906) - 3].tolist() == [255, 255, 255]  # outside it


def png_shape(path):
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        return picture.size


def test_a_run_writes_its_pictures(trained_run):
    assert png_shape(trained_run / "learning_curves.png") == (1000, 380)
    assert png_shape(trained_run / "confusion_matrix.png") == (100 + 10 * 56 + 20, 120 + 10 * 56 + 20)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    with Image.open(trained_run / "confusion_matrix.png") as written:
        assert not ImageChops.difference(written, pictures.confusion_picture(metrics)).getbbox()  # pixel for pixel


@pytest.mark.parametrize("name", ["T-shirt/top", "Ankle boot"])
def test_a_class_name_is_written_left_of_its_row_and_above_its_column(name):
    picture = np.asarray(pictures.confusion_picture(report([[5, 1], [2, 9]]) | {"per_class": {name: 0, "Bag": 0}}))
    cell, left, top = 56, 100, 120
    ink = (picture != 255).any(axis=2)
    row_label, column_label = ink[top:top + cell, :left - 4], ink[44:top - 4, left:left + cell]  # below the title
    assert row_label[cell // 2 - 4:cell // 2 + 4].any() and column_label[:, cell // 2 - 4:cell // 2 + 4].any()
    # Row 0's name is as wide as the font inks it, and column 0's as tall: the same text, turned upwards.
    box = pictures.FONT.getbbox(name)  # where the font puts ink: (left, top, right, bottom)
    width = box[2] - box[0]
    inked = row_label.any(axis=0).sum()
    assert inked == column_label.any(axis=1).sum() and width - 6 <= inked <= width


def test_a_run_of_one_epoch_shows_its_points():
    history = [{"epoch": 1, "train_loss": 0.6, "val_loss": 0.4, "train_accuracy": 0.8, "val_accuracy": 0.87}]
    picture = np.asarray(pictures.curves_picture(history, best_epoch=1))
    for left in (70, 580):  # one epoch, in the middle of each panel: a dot of each color there
        column = picture[50:320, round(left + 0.3 / 0.6 * 380) - 3:round(left + 0.3 / 0.6 * 380) + 4]
        for color in (pictures.ORANGE, pictures.BLUE):
            assert (column == color).all(axis=2).sum() >= 9, (left, color)


def test_a_study_of_two_seeds_draws_no_interval(fake_data, tmp_path):
    for seeds_given in (["1", "2"], ["1", "2", "3"]):
        result = run_main(seeds.main, "--seeds", *seeds_given, "--epochs", "1", "--data-dir", fake_data, "--out-dir",
                          tmp_path)
        assert result.returncode == 0, result.stderr
        assert png_shape(tmp_path / "study.png") == (1000, 380)
        with Image.open(tmp_path / "study.png") as written:
            shaded = (np.asarray(written.convert("RGB"))[:, :460] == pictures.SHADE).all(axis=2).sum()
        assert (shaded > 1000) == (len(seeds_given) == 3), shaded  # from three seeds on, the interval is drawn
