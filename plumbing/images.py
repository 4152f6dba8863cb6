"""Pictures of your own, prepared exactly as the Fashion-MNIST test images are (evaluate.py --image).

    from images import read_image
    image, inverted = read_image("my-shirt.jpg")  # (1, 28, 28) in [-1, 1], as data.py prepares the test images

Read by Pillow, which takes the size from the header: a picture over Image.MAX_IMAGE_PIXELS (89 million, Pillow's
guard against decompression bombs) is refused before anything is decoded, and so is any kind Pillow cannot hand
over right: it is read right or refused by name.
"""
import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from data import normalize

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes the multi-picture JPEGs of some phones
# Pillow's modes read with their range kept: 1 to 8 bits a channel, and 16-bit gray in either byte order.
MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "I;16", "I;16L", "I;16B", "I;16N"}
KINDS = {"I": "32-bit integer", "F": "32-bit float"}  # the others Pillow may hand over, by their mode's name


def refusal(picture):
    """Why a picture, opened but not decoded, is not read; None if it is."""
    if picture.mode not in MODES:
        return f"a {KINDS.get(picture.mode, picture.mode)} {picture.format}, which this does not read (8 or 16 bits)"
    if picture.format == "TIFF" and picture.getexif().get(0x0112, 1) > 4:  # Pillow 13 swaps the size and turns
        return "a TIFF turned by its EXIF orientation (5 to 8), which Pillow does not read right"  # it again


def as_gray(picture):
    """The picture decoded, turned by its EXIF orientation, every kind of transparency over white: 8-bit gray."""
    deep = picture.format == "PNG" and str(picture.tile[0].args).endswith(";16B")  # Pillow keeps a 16-bit color
    picture, key = ImageOps.exif_transpose(picture), picture.info.get("transparency")  # PNG's top bytes, so its tRNS
    if deep and picture.mode == "RGB" and key is not None:  # color is matched on its top bytes too
        picture.info["transparency"] = tuple(value >> 8 for value in key)
    elif picture.mode in ("L", "RGB") and max(np.atleast_1d(key if key is not None else 0)) > 255:
        raise ValueError("a tRNS color past the bit depth")  # Pillow would take its low bits: a wrong color
    if picture.mode.startswith("I;16"):  # 16 bits to 8 by scaling (convert would clip), a tRNS value kept
        deep = np.asarray(picture)
        picture = Image.fromarray((deep >> 8).astype(np.uint8))
        if key is not None:
            picture.putalpha(Image.fromarray(((deep != key) * 255).astype(np.uint8)))
    # Every kind of transparency (alpha, palette, a tRNS color, a GIF's index) over white, as a viewer shows it.
    return Image.alpha_composite(Image.new("RGBA", picture.size, "white"), picture.convert("RGBA")).convert("L")


def read_image(path, invert=None):
    """A picture file (gray, color, CMYK or transparent; any size; an animation's first frame) as the model sees
    its inputs: ((1, 28, 28) in [-1, 1], whether it was inverted). ValueError or OSError naming the file; Pillow's
    warnings about it printed as notes naming it.

    Fashion-MNIST garments are light on black; a photo is usually a dark garment on white. invert=None decides from
    the picture's border: a light one (mean above mid-gray) is a light background, and the picture is inverted.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: " + ("a folder, not a picture" if os.path.isdir(path) else
                                               "not a regular file" if os.path.exists(path) else "no such file"))
    try:
        file = open(path, "rb")
    except OSError as e:
        raise OSError(f"{path}: cannot be read ({e.strerror})") from None
    with file, warnings.catch_warnings(record=True) as noted:
        warnings.simplefilter("always")  # Pillow's notes on the file, said below with its name
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow only warns up to twice the limit
        try:
            picture = Image.open(file, formats=FORMATS)  # the header only; an animation at its first frame
            refused = refusal(picture)
            gray = None if refused else as_gray(picture)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"{path}: more pixels than this reads ({e})") from None
        except (OSError, SyntaxError, ValueError, EOFError):  # Pillow's own words would name its parts, not the file
            raise ValueError(f"{path}: not a picture this reads ({', '.join(FORMATS)}), or a damaged one") from None
        finally:
            for note in noted:
                print(f"note: {path}: {note.message}", file=sys.stderr)
    if refused:
        raise ValueError(f"{path}: {refused}")
    w, h = gray.size
    band = max(3, min(h, w) // 10)  # a border this wide: a thin frame around a photo does not decide
    inner = np.zeros((h, w), dtype=bool)
    inner[band:h - band, band:w - band] = True
    invert = bool(np.asarray(gray)[~inner].mean() > 127.5) if invert is None else invert
    gray = ImageOps.invert(gray) if invert else gray
    # The long side to 28 pixels (bilinear, averaging over each pixel's footprint), then padded into a square with
    # the dataset's black background: never stretched.
    size = max(1, round(28 * w / max(h, w))), max(1, round(28 * h / max(h, w)))
    square = Image.new("L", (28, 28), 0)
    square.paste(gray.resize(size, Image.Resampling.BILINEAR), ((28 - size[0]) // 2, (28 - size[1]) // 2))
    return normalize(torch.from_numpy(np.array(square))[None]), invert  # (1, 28, 28)
