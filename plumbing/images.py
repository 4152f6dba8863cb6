"""Pictures of your own, prepared exactly as the Fashion-MNIST test images are (evaluate.py --image).

    from plumbing.images import read_image
    image, inverted = read_image("my-shirt.jpg")  # (1, 28, 28) in [-1, 1], as data.py prepares the test images

Read by Pillow, from the header first: a picture over Image.MAX_IMAGE_PIXELS (89 million, Pillow's guard against
decompression bombs), or of more than 8 bits a channel, is refused before anything is decoded.
"""
import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from data import normalize

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes the multi-picture JPEGs of some phones
MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB"}  # Pillow's of 8 bits or fewer


def read_image(path, invert=None):
    """A picture file (gray, color, CMYK or transparent; any size; an animation's first frame) as the model sees
    its inputs: ((1, 28, 28) in [-1, 1], whether it was inverted). ValueError or OSError naming the file; Pillow's
    warnings about it printed as notes naming it.

    Fashion-MNIST garments are light on black; a photo is usually a dark garment on white. invert=None decides from
    the picture's border: a light one (mean above mid-gray) is a light background, and the picture is inverted.
    """
    if not os.path.isfile(path):  # a folder, or a FIFO, which would be waited on forever
        raise FileNotFoundError(f"{path}: {'not a regular file' if os.path.lexists(path) else 'no such file'}")
    gray = None
    with warnings.catch_warnings(record=True) as noted:
        warnings.simplefilter("always")  # Pillow's notes on the file, said below with its name
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow only warns up to twice the limit
        try:
            with Image.open(path, formats=FORMATS) as picture:  # the header only; an animation at its first frame
                mode = f"{picture.mode} {picture.format}"
                if picture.mode in MODES:
                    upright = ImageOps.exif_transpose(picture)  # as a phone's photo is shown
                    # Every kind of transparency (alpha, palette, a tRNS color, a GIF's index) over white, as a
                    # viewer shows it; then gray.
                    gray = Image.alpha_composite(Image.new("RGBA", upright.size, "white"),
                                                 upright.convert("RGBA")).convert("L")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"{path}: more pixels than this reads ({e})") from None
        except PermissionError as e:
            raise OSError(f"{path}: cannot be read ({e.strerror})") from None
        except Exception:  # Pillow's own words would name its parts, not the file; a damaged file fails many ways
            raise ValueError(f"{path}: not a picture this reads ({', '.join(FORMATS)}), or a damaged one") from None
        finally:
            for note in noted:
                print(f"note: {path}: {note.message}", file=sys.stderr)
    if gray is None:
        raise ValueError(f"{path}: a {mode}, which this does not read (it reads 8 bits a channel)")
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
