"""The pictures of a run and of a study, each an RGB PIL image drawn with Pillow's ImageDraw (no plotting library).

    curves_picture(history, best_epoch)  # loss and accuracy per epoch, training and validation, the best one marked
    confusion_picture(report)            # the test's confusion matrix, each cell shaded by its share of the row
    mistakes_picture(images, examples)   # misclassified test images under their true and predicted class
    study_picture(accuracies, ...)       # benchmarks/seeds.py: each seed's test accuracy, and the mean curve
"""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE, BLACK, GRAY, LIGHT = (255, 255, 255), (0, 0, 0), (110, 110, 110), (225, 225, 225)
BLUE, ORANGE, RED, SHADE, PALE = (31, 90, 180), (230, 120, 20), (200, 30, 30), (205, 222, 245), (150, 180, 225)
FONT = ImageFont.load_default(size=13)  # Pillow's bundled font, at a size that reads at 100%
SCALE, CAPTION, GAP = 4, 34, 6  # misclassified.png: each 28x28 image at 4x, under a 2-line caption, 6 pixels apart


def nice_ticks(low, high, count=5):
    """Up to about `count` round values between low and high."""
    step = (high - low) / count
    step = next(m * 10 ** math.floor(math.log10(step)) for m in (1, 2, 2.5, 5, 10)
                if m * 10 ** math.floor(math.log10(step)) >= step) if step > 0 else 1
    first = -(-low // step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) // step) + 1)]


def padded(values, margin=0.08):
    low, high = min(values), max(values)
    return low - ((high - low) * margin or 0.01), high + ((high - low) * margin or 0.01)


class Panel:
    """A plot area (left, top, right, bottom) in a picture: its axes, ticks and labels, and data-to-pixel mapping."""

    def __init__(self, draw, box, x_range, y_range, title, x_label, x_ticks=None, y_format="{:.2f}"):
        self.draw, (self.left, self.top, self.right, self.bottom) = draw, box
        self.x_range, self.y_range = x_range, y_range
        for tick in nice_ticks(*y_range) if y_format else ():
            draw.line([(self.left, round(self.y(tick))), (self.right, round(self.y(tick)))], LIGHT)  # a grid line
            draw.text((self.left - 6, round(self.y(tick))), y_format.format(tick), GRAY, FONT, anchor="rm")
        for tick in nice_ticks(*x_range) if x_ticks is None else x_ticks:
            draw.line([(round(self.x(tick)), self.bottom), (round(self.x(tick)), self.bottom + 4)], BLACK)
            draw.text((round(self.x(tick)), self.bottom + 7), f"{tick:g}", GRAY, FONT, anchor="mt")
        draw.line([(self.left, self.top), (self.left, self.bottom), (self.right, self.bottom)], BLACK)  # the axes
        draw.text(((self.left + self.right) // 2, self.top - 12), title, BLACK, FONT, anchor="ms")
        draw.text(((self.left + self.right) // 2, self.bottom + 26), x_label, GRAY, FONT, anchor="mt")

    def x(self, value):
        low, high = self.x_range
        return self.left + (value - low) / (high - low) * (self.right - self.left)

    def y(self, value):
        low, high = self.y_range
        return self.bottom - (value - low) / (high - low) * (self.bottom - self.top)

    def curve(self, xs, ys, color, width=2):
        """A line through the points, a dot at each."""
        points = [(self.x(x), self.y(y)) for x, y in zip(xs, ys, strict=True)]
        self.draw.line(points, color, width, joint="curve")
        for x, y in points:
            self.draw.circle((x, y), width + 1, color)

    def legend(self, entries, corner="top"):
        """[(label, color), ...] in the top-right or bottom-right corner, away from rising or falling curves."""
        for i, (label, color) in enumerate(entries):
            y = self.top + 14 + 18 * i if corner == "top" else self.bottom - 54 + 18 * i  # above the best's label
            self.draw.line([(self.right - 150, y), (self.right - 128, y)], color, 3)
            self.draw.text((self.right - 122, y), label, BLACK, FONT, anchor="lm")


def curves_picture(history, best_epoch):
    """380x1000: loss and accuracy per epoch, training and validation, the best (saved) epoch dotted."""
    picture, epochs = Image.new("RGB", (1000, 380), WHITE), [h["epoch"] for h in history]
    draw, ticks = ImageDraw.Draw(picture), epochs if len(epochs) <= 15 else nice_ticks(1, max(epochs))
    for left, kind in ((70, "loss"), (580, "accuracy")):
        train, val = [h[f"train_{kind}"] for h in history], [h[f"val_{kind}"] for h in history]
        panel = Panel(draw, (left, 50, left + 380, 320), (min(epochs) - 0.3, max(epochs) + 0.3), padded(train + val),
                      kind.capitalize(), "epoch", ticks, "{:.2f}" if kind == "loss" else "{:.3f}")
        x = round(panel.x(best_epoch))
        draw.point([(x, y) for y in range(panel.top, panel.bottom, 2)], GRAY)
        draw.text((x + 4, panel.bottom - 6), f"best: epoch {best_epoch}", GRAY, FONT, anchor="ls")
        panel.curve(epochs, train, ORANGE)
        panel.curve(epochs, val, BLUE)
        panel.legend([("training", ORANGE), ("validation", BLUE)], "top" if kind == "loss" else "bottom")
    return picture


def cell_color(share, diagonal, worst):
    """Right answers blue, darker as the class's recall rises; mistakes red, darker as their share of the row nears
    the worst mistake's; white for none. Returns (fill, a text color that reads on it)."""
    strength = share if diagonal else share / worst if worst else 0.0
    return tuple(round(255 + (c - 255) * strength) for c in (BLUE if diagonal else RED)), \
        WHITE if strength > 0.5 else BLACK


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
        label = Image.new("L", (round(FONT.getlength(name)) + 2, 18))
        ImageDraw.Draw(label).text((0, 9), name, 255, FONT, anchor="lm")
        label = label.rotate(90, expand=True)  # reads upwards, its end just above the column
        picture.paste(BLACK, (left + i * cell + cell // 2 - 9, top - 8 - label.height), label)
        for j in range(n):
            color, ink = cell_color(shares[i, j], i == j, worst)
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], color, LIGHT)  # its outline: the grid
            draw.text((x + cell // 2, y + cell // 2), f"{int(cm[i, j])}", ink, FONT, anchor="mm")
    return picture


def mistakes_picture(images, examples):
    """Each example's image (images: (K, 1, 28, 28) in [-1, 1]) at 4x under its caption, at the row and column it
    names, GAP pixels around each tile."""
    rows, columns = (max(m[key] for m in examples) + 1 for key in ("row", "column"))
    width, height = 28 * SCALE, CAPTION + 28 * SCALE
    picture = Image.new("RGB", (columns * (width + GAP) + GAP, rows * (height + GAP) + GAP), LIGHT)
    draw = ImageDraw.Draw(picture)
    for image, m in zip(images, examples, strict=True):
        left, top = GAP + m["column"] * (width + GAP), GAP + m["row"] * (height + GAP)
        pixels = (image[0] * 127.5 + 127.5).round().byte().numpy()  # back to the file's gray levels, (28, 28)
        picture.paste(Image.fromarray(pixels).resize((width, width), Image.Resampling.NEAREST), (left, top + CAPTION))
        draw.rectangle([left, top, left + width - 1, top + CAPTION - 1], WHITE)
        draw.text((left + 3, top + 2), f"true {m['true']}", BLACK, FONT)
        draw.text((left + 3, top + 18), f"pred {m['predicted']}", RED, FONT)
    return picture


def study_picture(accuracies, mean, ci, reference, val_mean, val_std):
    """380x1000: each seed's test accuracy as a dot, their mean, its 95% interval (shaded) and a reference line;
    and the mean validation accuracy per epoch over the seeds, with a band of one standard deviation."""
    picture = Image.new("RGB", (1000, 380), WHITE)
    draw = ImageDraw.Draw(picture)
    panel = Panel(draw, (70, 50, 450, 320), padded([*accuracies.values(), reference, *(ci or ())]),
                  (0, len(accuracies) + 1), "Test accuracy of each seed", "test accuracy", y_format=None)
    if ci:
        draw.rectangle([round(panel.x(ci[0])), panel.top, round(panel.x(ci[1])), panel.bottom - 1], SHADE)
        draw.text((panel.left + 6, panel.bottom - 6), "shaded: 95% interval of the mean", BLUE, FONT, anchor="ls")
    for value, color, label, right in ((mean, BLUE, f"mean {mean:.4f}", mean >= reference),
                                       (reference, RED, f"write-up {reference:.4f}", reference > mean)):
        x = round(panel.x(value))
        draw.line([(x, panel.top), (x, panel.bottom - 1)], color)
        draw.text((x + 4 if right else x - 4, panel.top + 4), label, color, FONT, anchor="la" if right else "ra")
    for row, (seed, value) in enumerate(accuracies.items(), start=1):
        draw.circle((panel.x(value), panel.y(row)), 4, BLACK)
        draw.text((round(panel.x(value)) + 8, round(panel.y(row))), f"seed {seed}", GRAY, FONT, anchor="lm")
    epochs = list(range(1, len(val_mean) + 1))
    low, high = [m - s for m, s in zip(val_mean, val_std)], [m + s for m, s in zip(val_mean, val_std)]
    curves = Panel(draw, (580, 50, 960, 320), (0.7, len(epochs) + 0.3), padded(low + high),
                   "Validation accuracy, mean over seeds", "epoch", epochs, "{:.3f}")
    for values, color, width in ((high, PALE, 1), (low, PALE, 1), (val_mean, BLUE, 2)):
        curves.curve(epochs, values, color, width)
    curves.legend([("mean", BLUE), ("mean +- std", PALE)], "bottom")
    return picture
