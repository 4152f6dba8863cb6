"""The pictures of a run and of a study, drawn with torchvision alone: each a (3, H, W) uint8 tensor for write_png.

    confusion_picture(report)          # the test's confusion matrix as a heatmap, shaded by each row's share
    curves_picture(epochs, best_epoch) # training and validation loss and accuracy per epoch, the best one marked
    study_picture(accuracies, ...)     # seeds.py: each seed's test accuracy, their mean and interval; the curves
    mistakes_picture(images, examples) # the misclassified test images under their true and predicted class

No plotting library: text comes from torchvision's draw_bounding_boxes (its labels), lines from draw_keypoints
(connectivity), and the rest is tensor painting. Imports only torch and torchvision.
"""
import math

import torch
from torchvision.utils import draw_bounding_boxes, draw_keypoints

WHITE, BLACK, GRAY, LIGHT = (255, 255, 255), (0, 0, 0), (140, 140, 140), (225, 225, 225)
BLUE, ORANGE, RED = (31, 90, 180), (230, 120, 20), (200, 30, 30)
SCALE, CAPTION, GAP = 4, 30, 6  # misclassified.png: each 28x28 image at 4x, under a 2-line caption, 6 pixels apart


def canvas(height, width):
    return torch.full((3, height, width), 255, dtype=torch.uint8)


def text_mask(text, rotate=False):
    """(h, w) float in [0, 1]: how much ink each pixel of text gets in torchvision's default font."""
    ink = torch.zeros(3, 16, 7 * len(text) + 8, dtype=torch.uint8)
    ink = draw_bounding_boxes(ink, torch.tensor([[0, 0, 0, 0]]), [text], colors=BLACK, label_colors=WHITE)
    mask = ink[0].float() / 255
    rows, columns = mask.sum(dim=1).nonzero(), mask.sum(dim=0).nonzero()
    mask = mask[rows.min():rows.max() + 1, columns.min():columns.max() + 1] if len(rows) else mask[:1, :1]
    return mask.rot90() if rotate else mask  # rotated: reads bottom to top


def paint(picture, ink, left, top, color):
    """Blend color into picture where ink (h, w) in [0, 1] says, with ink's top-left corner at (left, top)."""
    region = picture[:, top:top + ink.shape[0], left:left + ink.shape[1]]  # (3, h, w), clipped at the edges
    ink = ink[:region.shape[1], :region.shape[2]]
    colour = torch.tensor(color, dtype=torch.float).view(3, 1, 1)
    region[:] = (region.float() * (1 - ink) + colour * ink).round().to(torch.uint8)


def write(picture, text, x, y, color=BLACK, align="left", rotate=False):
    """Paint text at (x, y), its top edge at y; align left, center or right of x (rotated text: of its bottom)."""
    mask = text_mask(text, rotate)
    h, w = mask.shape
    left = {"left": x, "center": x - w // 2, "right": x - w}[align] if not rotate else x - w // 2
    top = y if not rotate else {"left": y - h, "center": y - h // 2, "right": y}[align]
    paint(picture, mask, left, top, color)


def line(picture, points, color, width=2):
    """A polyline through points [(x, y), ...] in pixels, its vertices marked with dots."""
    keypoints = torch.tensor([points], dtype=torch.float)  # (1, K, 2)
    connectivity = [(i, i + 1) for i in range(len(points) - 1)]
    # draw_keypoints draws its lines in white whatever the colour: drawn on black, they are the ink to paint with
    ink = draw_keypoints(torch.zeros_like(picture), keypoints, connectivity, colors=WHITE, radius=width + 1,
                         width=width)
    paint(picture, ink[0].float() / 255, 0, 0, color)


def scale(value, low, high, start, end):
    """value in [low, high] to a pixel between start and end (end < start for a y axis pointing up)."""
    return start + (value - low) / (high - low) * (end - start) if high > low else (start + end) / 2


def nice_ticks(low, high, count=5):
    """Up to about `count` round values between low and high."""
    step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(step)) if step > 0 else 1
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= step) if step > 0 else 1
    first = -(-low // step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) // step) + 1)]


class Panel:
    """A plot area inside a picture: axes with ticks and labels, and the mapping from data to pixels."""

    def __init__(self, picture, box, x_range, y_range, title, x_label, x_ticks=None, y_format="{:.2f}"):
        self.picture, (self.left, self.top, self.right, self.bottom) = picture, box
        self.x_range, self.y_range = x_range, y_range
        for y_tick in nice_ticks(*y_range) if y_format else ():
            y = round(self.y(y_tick))
            picture[:, y, self.left:self.right] = torch.tensor(LIGHT).view(3, 1)  # grid line
            write(picture, y_format.format(y_tick), self.left - 6, y - 5, GRAY, align="right")
        for x_tick in x_ticks if x_ticks is not None else nice_ticks(*x_range):
            x = round(self.x(x_tick))
            picture[:, self.bottom:self.bottom + 5, x] = torch.tensor(BLACK).view(3, 1)
            write(picture, f"{x_tick:g}", x, self.bottom + 8, GRAY, align="center")
        picture[:, self.bottom, self.left:self.right + 1] = 0  # the axes
        picture[:, self.top:self.bottom + 1, self.left] = 0
        write(picture, title, (self.left + self.right) // 2, self.top - 22, align="center")
        write(picture, x_label, (self.left + self.right) // 2, self.bottom + 24, GRAY, align="center")

    def x(self, value):
        return scale(value, *self.x_range, self.left, self.right)

    def y(self, value):
        return scale(value, *self.y_range, self.bottom, self.top)

    def polyline(self, xs, ys, color, width=2):
        """The points (x, y) of the data, drawn joined; returns them in pixels."""
        points = [(self.x(x), self.y(y)) for x, y in zip(xs, ys, strict=True)]
        line(self.picture, points, color, width)
        return points

    def legend(self, entries, corner="top"):
        """[(label, color), ...] in the panel's top-right or bottom-right corner, away from rising or falling curves."""
        for i, (label, color) in enumerate(entries):
            y = self.top + 8 + 16 * i if corner == "top" else self.bottom - 40 + 16 * i
            self.picture[:, y + 4:y + 7, self.right - 150:self.right - 128] = torch.tensor(color).view(3, 1, 1)
            write(self.picture, label, self.right - 122, y)


def padded_range(values, margin=0.08):
    low, high = min(values), max(values)
    pad = (high - low) * margin or 0.01
    return low - pad, high + pad


def curves_picture(epochs, best_epoch):
    """(3, 380, 1000): loss and accuracy per epoch, training and validation, the best (saved) epoch marked."""
    picture = canvas(380, 1000)
    numbers = [h["epoch"] for h in epochs]
    x_range = (min(numbers) - 0.3, max(numbers) + 0.3)
    ticks = numbers if len(numbers) <= 15 else nice_ticks(1, max(numbers))
    for left, kind in ((70, "loss"), (580, "accuracy")):
        train, val = [h[f"train_{kind}"] for h in epochs], [h[f"val_{kind}"] for h in epochs]
        panel = Panel(picture, (left, 50, left + 380, 320), x_range, padded_range(train + val), kind.capitalize(),
                      "epoch", ticks, "{:.2f}" if kind == "loss" else "{:.3f}")
        x = round(panel.x(best_epoch))
        picture[:, panel.top:panel.bottom:2, x] = torch.tensor(GRAY).view(3, 1)  # dotted: the saved epoch
        write(picture, f"best: epoch {best_epoch}", x + 4, panel.bottom - 14, GRAY)
        panel.polyline(numbers, train, ORANGE)
        panel.polyline(numbers, val, BLUE)
        panel.legend([("training", ORANGE), ("validation", BLUE)], "top" if kind == "loss" else "bottom")
    return picture


def cell_color(share, diagonal, worst):
    """Right answers in blue, darker as the class's recall rises; mistakes in red, darker as their share of the row
    nears the worst mistake's; white for none. Returns (fill, text color that reads on it)."""
    strength = share if diagonal else share / worst if worst else 0.0
    base = BLUE if diagonal else RED
    fill = tuple(round(255 + (c - 255) * strength) for c in base)
    return fill, WHITE if strength > 0.5 else BLACK


def confusion_picture(report, cell=56):
    """(3, H, W): the confusion matrix, rows true and columns predicted, each cell shaded by its share of the row."""
    cm = torch.tensor(report["confusion_matrix"], dtype=torch.float64)  # (C, C)
    names, n = list(report["per_class"]), len(cm)
    shares = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    worst = (shares * (1 - torch.eye(n))).max().item()
    left, top = 100, 110
    picture = canvas(top + n * cell + 20, left + n * cell + 20)
    write(picture, f"Test accuracy {report['accuracy']:.4f}, {report['num_images']:,} images: rows true class, "
                   "columns predicted, shaded by the share of the row", left + n * cell // 2, 10, align="center")
    for i, name in enumerate(names):
        write(picture, name, left - 8, top + i * cell + cell // 2 - 5, align="right")
        write(picture, name, left + i * cell + cell // 2, top - 8, rotate=True)
        for j in range(n):
            fill, ink = cell_color(shares[i, j].item(), i == j, worst)
            y, x = top + i * cell, left + j * cell
            picture[:, y:y + cell, x:x + cell] = torch.tensor(fill, dtype=torch.uint8).view(3, 1, 1)
            write(picture, f"{int(cm[i, j])}", x + cell // 2, y + cell // 2 - 5, ink, align="center")
    grid, size = torch.tensor(LIGHT, dtype=torch.uint8).view(3, 1, 1), n * cell + 1
    picture[:, top:top + size:cell, left:left + size] = grid  # the lines between the cells
    picture[:, top:top + size, left:left + size:cell] = grid
    return picture


def study_picture(accuracies, mean, ci, reference, val_mean, val_std):
    """(3, 380, 1000): each seed's test accuracy as a dot with the mean and its 95% interval and a reference line;
    and the mean validation accuracy per epoch over the seeds, with a band of one standard deviation."""
    picture = canvas(380, 1000)
    values = list(accuracies.values()) + [reference] + ([*ci] if ci else [])
    panel = Panel(picture, (70, 50, 450, 320), padded_range(values), (0, len(accuracies) + 1),
                  "Test accuracy of each seed", "test accuracy", y_format=None)
    if ci:
        x0, x1 = round(panel.x(ci[0])), round(panel.x(ci[1]))
        picture[:, panel.top:panel.bottom, x0:x1 + 1] = torch.tensor((205, 222, 245), dtype=torch.uint8).view(3, 1, 1)
    for value, color, label in ((mean, BLUE, f"mean {mean:.4f}"), (reference, RED, f"write-up {reference:.4f}")):
        x = round(panel.x(value))
        picture[:, panel.top:panel.bottom, x] = torch.tensor(color, dtype=torch.uint8).view(3, 1)
        right_of_it = (value >= reference) if color == BLUE else (reference > mean)  # the two labels apart
        write(picture, label, x + 4 if right_of_it else x - 4, panel.top + 4, color, "left" if right_of_it else "right")
    for row, (seed, value) in enumerate(accuracies.items(), start=1):
        x, y = panel.x(value), panel.y(row)
        line(picture, [(x, y)], BLACK, width=3)
        write(picture, f"seed {seed}", round(x) + 8, round(y) - 5, GRAY)
    if ci:
        write(picture, "shaded: 95% interval of the mean", panel.left + 6, panel.bottom - 16, BLUE)
    epochs = list(range(1, len(val_mean) + 1))
    low = [m - s for m, s in zip(val_mean, val_std, strict=True)]
    high = [m + s for m, s in zip(val_mean, val_std, strict=True)]
    curves = Panel(picture, (580, 50, 960, 320), (0.7, len(epochs) + 0.3), padded_range(low + high),
                   "Validation accuracy, mean over seeds", "epoch", epochs, "{:.3f}")
    curves.polyline(epochs, high, (150, 180, 225), width=1)
    curves.polyline(epochs, low, (150, 180, 225), width=1)
    curves.polyline(epochs, val_mean, BLUE)
    curves.legend([("mean", BLUE), ("mean +- std", (150, 180, 225))], "bottom")
    return picture


def mistakes_picture(images, examples):
    """(3, H, W): each example's image (from images, in [-1, 1]) at 4x, captioned, at its row and column."""
    tile_w, tile_h = 28 * SCALE, CAPTION + 28 * SCALE
    rows, columns = (max(m[key] for m in examples) + 1 for key in ("row", "column"))
    picture = torch.zeros(3, rows * (tile_h + GAP), columns * (tile_w + GAP), dtype=torch.uint8)
    for image, m in zip(images, examples, strict=True):
        top, left = m["row"] * (tile_h + GAP) + CAPTION, m["column"] * (tile_w + GAP)
        pixels = (image * 127.5 + 127.5).round().to(torch.uint8)  # back to 0..255, the file's gray levels
        big = pixels.repeat_interleave(SCALE, dim=1).repeat_interleave(SCALE, dim=2)  # (1, 112, 112)
        picture[:, top:top + 28 * SCALE, left:left + tile_w] = big
    boxes = [[m["column"] * (tile_w + GAP), m["row"] * (tile_h + GAP),
              m["column"] * (tile_w + GAP) + tile_w - 1, m["row"] * (tile_h + GAP) + CAPTION - 1] for m in examples]
    captions = [f"true {m['true']}\npred {m['predicted']}" for m in examples]
    return draw_bounding_boxes(picture, torch.tensor(boxes), captions, colors=(255, 170, 0))
