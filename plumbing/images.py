"""Pictures of your own, prepared exactly as the Fashion-MNIST test images are (evaluate.py --image).

    from images import read_image
    image, inverted = read_image("my-shirt.jpg")  # (1, 28, 28) in [-1, 1], as data.py prepares the test images

Read by Pillow, which takes the size from the header: a picture over Image.MAX_IMAGE_PIXELS (89 million, Pillow's
guard against decompression bombs) is refused before anything is decoded.
"""
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from data import normalize

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes the multi-picture JPEGs of some phones


def read_image(path, invert=None):
    """A picture file (gray, color, CMYK or transparent; any size or bit depth; an animation's first frame) as the
    model sees its inputs: ((1, 28, 28) in [-1, 1], whether it was inverted). ValueError or OSError naming the file.

    Fashion-MNIST garments are light on black; a photo is usually a dark garment on white. invert=None decides from
    the picture's border: a light one (mean above mid-gray) is a light background, and the picture is inverted.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: " + ("a folder, not a picture" if os.path.isdir(path) else
                                               "not a regular file" if os.path.exists(path) else "no such file"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow only warns up to twice the limit
            with Image.open(path, formats=FORMATS) as picture:  # the header only; an animation at its first frame
                picture = ImageOps.exif_transpose(picture)  # as a phone shows it; decoded here
        if picture.mode in ("L", "RGB") and max(np.atleast_1d(picture.info.get("transparency", 0))) > 255:
            raise ValueError("a tRNS color past the bit depth")  # Pillow would take its low bits: a wrong color
        if picture.mode.startswith("I;16"):  # 16 bits to 8 by scaling (convert would clip), a tRNS value kept
            deep, key = np.asarray(picture), picture.info.get("transparency")
            picture = Image.fromarray((deep >> 8).astype(np.uint8))
            if key is not None:
                picture.putalpha(Image.fromarray(((deep != key) * 255).astype(np.uint8)))
        # Every kind of transparency (alpha, palette, a tRNS color, a GIF's index) over white, as a viewer shows it.
        gray = Image.alpha_composite(Image.new("RGBA", picture.size, "white"), picture.convert("RGBA")).convert("L")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{path}: more pixels than this reads ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError):  # Pillow's own words would name its parts, not the file
        raise ValueError(f"{path}: not a picture this reads ({', '.join(FORMATS)}), or a damaged one") from None
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
