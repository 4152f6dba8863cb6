"""The pictures of a run (curves_picture, confusion_picture, mistakes_picture) and of a study (study_picture, for
benchmarks/seeds.py), each an RGB PIL image drawn with Pillow's ImageDraw: no plotting library."""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE, BLACK, GRAY, LIGHT = (255, 255, 255), (0, 0, 0), (110, 110, 110), (225, 225, 225)
BLUE, ORANGE, RED, SHADE, PALE = (31, 90, 180), (230, 120, 20), (200, 30, 30), (205, 222, 245), (150, 180, 225)
FONT = ImageFont.load_default(size=13)  # Pillow's bundled font, at a size that reads at 100%
UPWARDS = ImageFont.TransposedFont(FONT, Image.Transpose.ROTATE_90)  # the same, reading upwards
SCALE, CAPTION, GAP = 4, 34, 6  # misclassified.png: each 28x28 image at 4x, under a 2-line caption, 6 pixels apart


def nice_ticks(low, high, count=5):  # up to about `count` round values, 1, 2, 2.5 or 5 times a power of ten apart
    power = 10 ** math.floor(math.log10((high - low) / count))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= (high - low) / count)
    return [round(k * step, 10) for k in range(math.ceil(low / step), math.floor(high / step) + 1)]


def padded(values, margin=0.08):
    low, high = min(values), max(values)
    return low - ((high - low) * margin or 0.01), high + ((high - low) * margin or 0.01)


def axes(draw, box, x_range, y_range, title, x_label, x_ticks=None, y_format="{:.2f}", legend=(), corner="top"):
    """A plot area box = (left, top, right, bottom): its axes, ticks, labels and legend ([(label, color), ...], top
    or bottom right, away from rising or falling curves). Returns its data-to-pixel mapping, (x, y) -> (px, py)."""
    left, top, right, bottom = box

    def at(x, y):
        return (left + (x - x_range[0]) / (x_range[1] - x_range[0]) * (right - left),
                bottom - (y - y_range[0]) / (y_range[1] - y_range[0]) * (bottom - top))
    for tick in nice_ticks(*y_range) if y_format else ():
        draw.line([(left, round(at(0, tick)[1])), (right, round(at(0, tick)[1]))], LIGHT)  # a grid line
        draw.text((left - 6, round(at(0, tick)[1])), y_format.format(tick), GRAY, FONT, anchor="rm")
    for tick in nice_ticks(*x_range) if x_ticks is None else x_ticks:
        draw.text((round(at(tick, 0)[0]), bottom + 6), f"{tick:g}", GRAY, FONT, anchor="mt")
    draw.line([(left, top), (left, bottom), (right, bottom)], BLACK)
    draw.text(((left + right) // 2, top - 12), title, BLACK, FONT, anchor="ms")
    draw.text(((left + right) // 2, bottom + 26), x_label, GRAY, FONT, anchor="mt")
    for i, (label, color) in enumerate(legend):
        y = top + 14 + 18 * i if corner == "top" else bottom - 54 + 18 * i  # above the best epoch's label
        draw.line([(right - 150, y), (right - 128, y)], color, 3)
        draw.text((right - 122, y), label, BLACK, FONT, anchor="lm")
    return at


def curve(draw, at, xs, ys, color, width=2):
    """A line through the points, mapped by at (axes' mapping), and a dot at each: one epoch is a dot."""
    points = [at(x, y) for x, y in zip(xs, ys, strict=True)]
    draw.line(points, color, width, joint="curve")
    for point in points:
        draw.circle(point, width + 1, color)


def curves_picture(history, best_epoch):
    """380x1000: loss and accuracy per epoch, training and validation, the best (saved) epoch dotted."""
    picture, epochs = Image.new("RGB", (1000, 380), WHITE), [h["epoch"] for h in history]
    draw = ImageDraw.Draw(picture)
    for left, kind in ((70, "loss"), (580, "accuracy")):
        train, val = [h[f"train_{kind}"] for h in history], [h[f"val_{kind}"] for h in history]
        at = axes(draw, (left, 50, left + 380, 320), (min(epochs) - 0.3, max(epochs) + 0.3), padded(train + val),
                  kind.capitalize(), "epoch", epochs if len(epochs) <= 15 else None, "{:.3f}",
                  [("training", ORANGE), ("validation", BLUE)], "top" if kind == "loss" else "bottom")
        x = round(at(best_epoch, 0)[0])
        draw.point([(x, y) for y in range(50, 320, 2)], GRAY)
        side = 1 if x < left + 290 else -1  # the label beside the line, on the side with room for it
        draw.text((x + 4 * side, 314), f"best: epoch {best_epoch}", GRAY, FONT, anchor="ls" if side > 0 else "rs")
        for values, color in ((train, ORANGE), (val, BLUE)):
            curve(draw, at, epochs, values, color)
    return picture


def cell_color(share, diagonal, worst):
    """(fill, text color): right answers blue, darker as recall rises; mistakes red, darker as they near the worst."""
    depth = share if diagonal else share / worst if worst else 0.0
    return tuple(round(255 + (c - 255) * depth) for c in (BLUE if diagonal else RED)), WHITE if depth > 0.5 else BLACK


def confusion_picture(report, cell=56, left=100, top=120):
    """The confusion matrix, rows true and columns predicted, each cell shaded by its share of the row."""
    cm = np.array(report["confusion_matrix"], dtype=np.float64)  # (C, C)
    names, n = list(report["per_class"]), len(cm)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    worst = (shares * (1 - np.eye(n))).max()
    picture = Image.new("RGB", (left + n * cell + 20, top + n * cell + 20), WHITE)
    draw = ImageDraw.Draw(picture)
    draw.text((left + n * cell // 2, 8), f"Test accuracy {report['accuracy']:.4f}, {report['num_images']:,} images\n"
              "rows: true class, columns: predicted", BLACK, FONT, anchor="ma", align="center")
    for i, name in enumerate(names):
        draw.text((left - 8, top + i * cell + cell // 2), name, BLACK, FONT, anchor="rm")
        draw.text((left + i * cell + cell // 2 - 5, top - 8 - FONT.getlength(name)), name, BLACK, UPWARDS)
        for j in range(n):
            color, ink = cell_color(shares[i, j], i == j, worst)
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], color, LIGHT)  # its outline: the grid
            draw.text((x + cell // 2, y + cell // 2), f"{int(cm[i, j])}", ink, FONT, anchor="mm")
    return picture


def mistakes_picture(images, examples):
    """Each example's image (images: (K, 1, 28, 28) in [-1, 1]) at 4x under its caption, at its row and column."""
    (rows, columns), width = (max(m[key] for m in examples) + 1 for key in ("row", "column")), 28 * SCALE
    picture = Image.new("RGB", (columns * (width + GAP) + GAP, rows * (CAPTION + width + GAP) + GAP), WHITE)
    draw = ImageDraw.Draw(picture)
    for image, m in zip(images, examples, strict=True):
        left, top = GAP + m["column"] * (width + GAP), GAP + m["row"] * (CAPTION + width + GAP)
        pixels = (image[0] * 127.5 + 127.5).round().byte().numpy()  # back to the file's gray levels, (28, 28)
        picture.paste(Image.fromarray(pixels).resize((width, width), Image.Resampling.NEAREST), (left, top + CAPTION))
        draw.text((left + 3, top + 2), f"true {m['true']}", BLACK, FONT)
        draw.text((left + 3, top + 18), f"pred {m['predicted']}", RED, FONT)
    return picture


def study_picture(accuracies, mean, ci, reference, val_mean, val_std):
    """380x1000: each seed's test accuracy as a dot, their mean, its 95% interval (shaded) and a reference line;
    and the mean validation accuracy per epoch over the seeds, with a band of one standard deviation."""
    picture = Image.new("RGB", (1000, 380), WHITE)
    draw = ImageDraw.Draw(picture)
    at = axes(draw, (70, 50, 450, 320), padded([*accuracies.values(), reference, *(ci or ())]),
              (0, len(accuracies) + 1), "Test accuracy of each seed", "test accuracy", y_format=None)
    if ci:
        draw.rectangle([round(at(ci[0], 0)[0]), 50, round(at(ci[1], 0)[0]), 319], SHADE)
        draw.text((76, 314), "shaded: 95% interval of the mean", BLUE, FONT, anchor="ls")
    for value, color, label, right in ((mean, BLUE, f"mean {mean:.4f}", mean >= reference),
                                       (reference, RED, f"write-up {reference:.4f}", reference > mean)):
        x = round(at(value, 0)[0])
        draw.line([(x, 50), (x, 319)], color)
        draw.text((x + 4 if right else x - 4, 54), label, color, FONT, anchor="la" if right else "ra")
    for row, (seed, value) in enumerate(accuracies.items(), start=1):
        draw.circle(at(value, row), 4, BLACK)
        draw.text((round(at(value, row)[0]) + 8, round(at(value, row)[1])), f"seed {seed}", GRAY, FONT, anchor="lm")
    epochs = list(range(1, len(val_mean) + 1))
    low, high = [m - s for m, s in zip(val_mean, val_std)], [m + s for m, s in zip(val_mean, val_std)]
    at = axes(draw, (580, 50, 960, 320), (0.7, len(epochs) + 0.3), padded(low + high), "Validation accuracy, mean "
              "over seeds", "epoch", epochs, "{:.3f}", [("mean", BLUE), ("mean +- std", PALE)], "bottom")
    for values, color, width in ((high, PALE, 1), (low, PALE, 1), (val_mean, BLUE, 2)):
        curve(draw, at, epochs, values, color, width)
    return picture
