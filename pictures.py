"""The pictures of a run and of a study, each a (3, H, W) uint8 tensor drawn with torchvision alone (no plotting
library): text from draw_bounding_boxes' labels, lines from draw_keypoints, the rest painted into the tensor.

    curves_picture(history, best_epoch)  # loss and accuracy per epoch, training and validation, the best one marked
    confusion_picture(report)            # the test's confusion matrix, each cell shaded by its share of the row
    mistakes_picture(images, examples)   # misclassified test images under their true and predicted class
    study_picture(accuracies, ...)       # benchmarks/seeds.py: each seed's test accuracy, and the mean curve
"""
import math

import torch
from torchvision.utils import draw_bounding_boxes, draw_keypoints, make_grid

WHITE, BLACK, GRAY, LIGHT = (255, 255, 255), (0, 0, 0), (140, 140, 140), (225, 225, 225)
BLUE, ORANGE, RED, SHADE = (31, 90, 180), (230, 120, 20), (200, 30, 30), (205, 222, 245)
SCALE, CAPTION, GAP = 4, 30, 6  # misclassified.png: each 28x28 image at 4x, under a 2-line caption, 6 pixels apart


def canvas(height, width):
    return torch.full((3, height, width), 255, dtype=torch.uint8)


def fill(picture, rows, columns, color):
    """Paint picture[:, rows, columns] in one color; rows and columns each an index or a slice."""
    rows, columns = (slice(i, i + 1) if isinstance(i, int) else i for i in (rows, columns))
    picture[:, rows, columns] = torch.tensor(color, dtype=torch.uint8).view(3, 1, 1)


def paint(picture, ink, left, top, color):
    """Blend color into picture where ink (h, w) in [0, 1] says, ink's top-left corner at (left, top)."""
    region = picture[:, top:top + ink.shape[0], left:left + ink.shape[1]]  # (3, h, w), clipped at the edges
    ink = ink[:region.shape[1], :region.shape[2]]
    region[:] = (region * (1 - ink) + torch.tensor(color).view(3, 1, 1) * ink).round().to(torch.uint8)


def write(picture, text, x, y, color=BLACK, align="left", rotate=False):
    """Paint text with its top edge at y, left, center or right of x; rotated, it reads upwards from y."""
    ink = draw_bounding_boxes(torch.zeros(3, 16, 7 * len(text) + 8, dtype=torch.uint8), torch.tensor([[0, 0, 0, 0]]),
                              [text], colors=BLACK, label_colors=WHITE)[0] / 255  # the label's pixels, as ink
    rows, columns = ink.sum(dim=1).nonzero(), ink.sum(dim=0).nonzero()
    ink = ink[rows.min():rows.max() + 1, columns.min():columns.max() + 1] if len(rows) else ink[:1, :1]
    if rotate:
        ink = ink.rot90()
        paint(picture, ink, x - ink.shape[1] // 2, y - ink.shape[0], color)
    else:
        paint(picture, ink, {"left": x, "center": x - ink.shape[1] // 2, "right": x - ink.shape[1]}[align], y, color)


def line(picture, points, color, width=2):
    """A polyline through points [(x, y), ...] in pixels, a dot at each."""
    # draw_keypoints draws its lines in white whatever the colour asked: drawn on black, they are ink to paint with
    ink = draw_keypoints(torch.zeros_like(picture), torch.tensor([points], dtype=torch.float),
                         [(i, i + 1) for i in range(len(points) - 1)], colors=WHITE, radius=width + 1, width=width)
    paint(picture, ink[0] / 255, 0, 0, color)


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

    def __init__(self, picture, box, x_range, y_range, title, x_label, x_ticks=None, y_format="{:.2f}"):
        self.picture, (self.left, self.top, self.right, self.bottom) = picture, box
        self.x_range, self.y_range = x_range, y_range
        for tick in nice_ticks(*y_range) if y_format else ():
            fill(picture, round(self.y(tick)), slice(self.left, self.right), LIGHT)  # a grid line
            write(picture, y_format.format(tick), self.left - 6, round(self.y(tick)) - 5, GRAY, align="right")
        for tick in nice_ticks(*x_range) if x_ticks is None else x_ticks:
            fill(picture, slice(self.bottom, self.bottom + 5), round(self.x(tick)), BLACK)
            write(picture, f"{tick:g}", round(self.x(tick)), self.bottom + 8, GRAY, align="center")
        fill(picture, self.bottom, slice(self.left, self.right + 1), BLACK)  # the axes
        fill(picture, slice(self.top, self.bottom + 1), self.left, BLACK)
        write(picture, title, (self.left + self.right) // 2, self.top - 22, align="center")
        write(picture, x_label, (self.left + self.right) // 2, self.bottom + 24, GRAY, align="center")

    def x(self, value):
        low, high = self.x_range
        return self.left + (value - low) / (high - low) * (self.right - self.left)

    def y(self, value):
        low, high = self.y_range
        return self.bottom - (value - low) / (high - low) * (self.bottom - self.top)

    def curve(self, xs, ys, color, width=2):
        line(self.picture, [(self.x(x), self.y(y)) for x, y in zip(xs, ys, strict=True)], color, width)

    def legend(self, entries, corner="top"):
        """[(label, color), ...] in the top-right or bottom-right corner, away from rising or falling curves."""
        for i, (label, color) in enumerate(entries):
            y = self.top + 8 + 16 * i if corner == "top" else self.bottom - 40 + 16 * i
            fill(self.picture, slice(y + 4, y + 7), slice(self.right - 150, self.right - 128), color)
            write(self.picture, label, self.right - 122, y)


def curves_picture(history, best_epoch):
    """(3, 380, 1000): loss and accuracy per epoch, training and validation, the best (saved) epoch dotted."""
    picture, epochs = canvas(380, 1000), [h["epoch"] for h in history]
    ticks = epochs if len(epochs) <= 15 else nice_ticks(1, max(epochs))
    for left, kind in ((70, "loss"), (580, "accuracy")):
        train, val = [h[f"train_{kind}"] for h in history], [h[f"val_{kind}"] for h in history]
        panel = Panel(picture, (left, 50, left + 380, 320), (min(epochs) - 0.3, max(epochs) + 0.3),
                      padded(train + val), kind.capitalize(), "epoch", ticks, "{:.2f}" if kind == "loss" else "{:.3f}")
        x = round(panel.x(best_epoch))
        fill(picture, slice(panel.top, panel.bottom, 2), x, GRAY)
        write(picture, f"best: epoch {best_epoch}", x + 4, panel.bottom - 14, GRAY)
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


def confusion_picture(report, cell=56, left=100, top=110):
    """(3, H, W): the confusion matrix, rows true and columns predicted, each cell shaded by its share of the row."""
    cm = torch.tensor(report["confusion_matrix"], dtype=torch.float64)  # (C, C)
    names, n = list(report["per_class"]), len(cm)
    shares = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    worst = (shares * (1 - torch.eye(n))).max().item()
    picture = canvas(top + n * cell + 20, left + n * cell + 20)
    write(picture, f"Test accuracy {report['accuracy']:.4f}, {report['num_images']:,} images: rows true class, "
                   "columns predicted, shaded by the share of the row", left + n * cell // 2, 10, align="center")
    for i, name in enumerate(names):
        write(picture, name, left - 8, top + i * cell + cell // 2 - 5, align="right")
        write(picture, name, left + i * cell + cell // 2, top - 8, rotate=True)
        for j in range(n):
            color, ink = cell_color(shares[i, j].item(), i == j, worst)
            y, x = top + i * cell, left + j * cell
            fill(picture, slice(y, y + cell), slice(x, x + cell), color)
            write(picture, f"{int(cm[i, j])}", x + cell // 2, y + cell // 2 - 5, ink, align="center")
    fill(picture, slice(top, top + n * cell + 1, cell), slice(left, left + n * cell + 1), LIGHT)  # the grid
    fill(picture, slice(top, top + n * cell + 1), slice(left, left + n * cell + 1, cell), LIGHT)
    return picture


def mistakes_picture(images, examples):
    """(3, H, W): each example's image (images: (K, 1, 28, 28) in [-1, 1]) at 4x under its caption, at the row and
    column it names, GAP pixels around each tile (make_grid)."""
    rows, columns = (max(m[key] for m in examples) + 1 for key in ("row", "column"))
    tiles = torch.zeros(rows * columns, 3, CAPTION + 28 * SCALE, 28 * SCALE, dtype=torch.uint8)
    for image, m in zip(images, examples, strict=True):
        tile = tiles[m["row"] * columns + m["column"]]
        pixels = (image * 127.5 + 127.5).round().to(torch.uint8)  # back to the file's gray levels, (1, 28, 28)
        tile[:, CAPTION:] = pixels.repeat_interleave(SCALE, 1).repeat_interleave(SCALE, 2)  # each a 4x4 square
        tile[:] = draw_bounding_boxes(tile, torch.tensor([[0, 0, 28 * SCALE - 1, CAPTION - 1]]),
                                      [f"true {m['true']}\npred {m['predicted']}"], colors=(255, 170, 0))
    return make_grid(tiles, nrow=columns, padding=GAP)


def study_picture(accuracies, mean, ci, reference, val_mean, val_std):
    """(3, 380, 1000): each seed's test accuracy as a dot, their mean, its 95% interval (shaded) and a reference line;
    and the mean validation accuracy per epoch over the seeds, with a band of one standard deviation."""
    picture = canvas(380, 1000)
    panel = Panel(picture, (70, 50, 450, 320), padded([*accuracies.values(), reference, *(ci or ())]),
                  (0, len(accuracies) + 1), "Test accuracy of each seed", "test accuracy", y_format=None)
    if ci:
        fill(picture, slice(panel.top, panel.bottom), slice(round(panel.x(ci[0])), round(panel.x(ci[1])) + 1), SHADE)
        write(picture, "shaded: 95% interval of the mean", panel.left + 6, panel.bottom - 16, BLUE)
    for value, color, label, right in ((mean, BLUE, f"mean {mean:.4f}", mean >= reference),
                                       (reference, RED, f"write-up {reference:.4f}", reference > mean)):
        x = round(panel.x(value))
        fill(picture, slice(panel.top, panel.bottom), x, color)
        write(picture, label, x + 4 if right else x - 4, panel.top + 4, color, "left" if right else "right")
    for row, (seed, value) in enumerate(accuracies.items(), start=1):
        line(picture, [(panel.x(value), panel.y(row))], BLACK, width=3)
        write(picture, f"seed {seed}", round(panel.x(value)) + 8, round(panel.y(row)) - 5, GRAY)
    epochs = list(range(1, len(val_mean) + 1))
    low, high = [m - s for m, s in zip(val_mean, val_std)], [m + s for m, s in zip(val_mean, val_std)]
    curves = Panel(picture, (580, 50, 960, 320), (0.7, len(epochs) + 0.3), padded(low + high),
                   "Validation accuracy, mean over seeds", "epoch", epochs, "{:.3f}")
    for values, color, width in ((high, (150, 180, 225), 1), (low, (150, 180, 225), 1), (val_mean, BLUE, 2)):
        curves.curve(epochs, values, color, width)
    curves.legend([("mean", BLUE), ("mean +- std", (150, 180, 225))], "bottom")
    return picture
