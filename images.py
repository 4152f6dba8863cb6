"""Pictures of your own, prepared exactly as the Fashion-MNIST test images are (evaluate.py --image).

    from images import read_image
    image, inverted = read_image("my-shirt.jpg")  # (1, 28, 28) in [-1, 1], as data.py prepares the test images

PNG, JPEG or GIF, decoded by torchvision.io from bytes read here, so that a file's size is known from its header
before anything is decoded, a GIF gives only its first frame, and a transparent one of any kind is laid over white.
"""
import os
import struct

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from data import normalize

MAX_PIXELS = 100_000_000  # a 100-megapixel photo is about the largest a phone takes


def png_header(data):
    """((width, height), the color a tRNS chunk makes transparent in a gray or RGB PNG or None, the mode to decode
    in): a palette PNG as RGB, its colors rather than its indices, and as RGBA if it has transparency."""
    i, key, mode = 8, None, ImageReadMode.RGB if data[25] == 3 else ImageReadMode.UNCHANGED
    while i + 8 <= len(data):  # the chunks: length, type, data, CRC
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        if kind == b"tRNS" and data[25] == 3:
            mode = ImageReadMode.RGB_ALPHA
        elif kind == b"tRNS":  # gray or RGB: the transparent value, at the PNG's bit depth
            key = [v * 255 // (2 ** data[24] - 1) if data[24] < 16 else v for v in
                   struct.unpack(f">{length // 2}H", data[i + 8:i + 8 + length])]
        if kind == b"IDAT":
            break
        i += 12 + length
    return struct.unpack(">II", data[16:24]), key, mode


def jpeg_size(data):
    """(width, height) from a JPEG's frame header (an SOF segment), (0, 0) if it has none."""
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        if data[i + 1] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return struct.unpack(">HH", data[i + 7:i + 9] + data[i + 5:i + 7])
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return 0, 0


def gif_first_frame(data):
    """(the GIF up to the end of its first image, then its trailer; the RGB its transparent index stands for, or
    None): torchvision decodes every frame of a GIF, and draws a transparent pixel in its palette's color."""
    palette = data[13:13 + (3 << (data[10] & 7) + 1)] if data[10] & 0x80 else b""  # the global color table
    i, transparent, image = 13 + len(palette), None, False
    while not image and data[i] in (0x21, 0x2C):  # an extension, or an image; then their sub-blocks
        image = data[i] == 0x2C
        if not image:  # a graphic control extension may name a transparent index
            transparent = data[i + 6] if data[i + 1] == 0xF9 and data[i + 3] & 1 else transparent
            i += 2
        else:  # the image descriptor, its own color table if any, the LZW code size
            palette = data[i + 10:i + 10 + (3 << (data[i + 9] & 7) + 1)] if data[i + 9] & 0x80 else palette
            i += 11 + (len(palette) if data[i + 9] & 0x80 else 0)
        while data[i]:  # each sub-block: its length, then its bytes; an empty one ends them
            i += data[i] + 1
        i += 1
    color = list(palette[3 * transparent:3 * transparent + 3]) if transparent is not None else []
    return data[:i] + b"\x3b", color if len(color) == 3 else None


def read_image(path, invert=None):
    """A picture file (PNG, JPEG or GIF; gray, color or transparent; any size or bit depth) as the model sees its
    inputs: ((1, 28, 28) in [-1, 1], whether it was inverted). ValueError or OSError, naming the file, if unreadable.

    Fashion-MNIST garments are light on black; a photo is usually a dark garment on white. invert=None decides from
    the picture's border: a light one (mean above mid-gray) is a light background, and the picture is inverted.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: " + ("a folder, not a picture" if os.path.isdir(path) else
                                               "not a regular file" if os.path.exists(path) else "no such file"))
    with open(path, "rb") as f:
        data = f.read()
    try:  # the size from the header: a huge picture is refused before it is decoded
        mode = ImageReadMode.UNCHANGED
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            size, key, mode = png_header(data)
        elif data.startswith(b"\xff\xd8\xff"):
            size, key = jpeg_size(data), None
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            size, (data, key) = struct.unpack("<HH", data[6:10]), gif_first_frame(data)
        else:
            raise ValueError
        if size[0] * size[1] <= MAX_PIXELS:  # as a phone shows it: turned by its EXIF orientation
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode,
                                 apply_exif_orientation=True)  # (C, H, W)
    except (IndexError, RuntimeError, ValueError, struct.error):  # torchvision names its own C++ file, not this one
        raise ValueError(f"{path}: not a PNG, JPEG or GIF image (WebP and others are not read), or a damaged one"
                         ) from None
    if size[0] * size[1] > MAX_PIXELS or image.numel() == 0 or image.shape[-1] * image.shape[-2] > MAX_PIXELS:
        raise ValueError(f"{path}: {size[0]}x{size[1]} pixels, more than this reads (at most {MAX_PIXELS:,})")
    # A tRNS color, or a GIF's transparent index: those pixels see-through, found before 16 bits become 8.
    opaque = (image != torch.tensor(key, dtype=image.dtype).view(-1, 1, 1)).any(dim=0, keepdim=True) if (
        key is not None and image.shape[0] == len(key)) else None
    image = F.to_dtype(image, torch.uint8, scale=True)  # 16-bit PNGs to 0..255, as 8-bit ones are
    image = image if opaque is None else torch.cat([image, opaque.to(torch.uint8) * 255])
    if image.shape[0] in (2, 4):  # transparent: over white, as a viewer shows it
        alpha = image[-1:].float() / 255
        image = (image[:-1] * alpha + 255 * (1 - alpha)).round().to(torch.uint8)
    image = image if image.shape[0] == 1 else F.rgb_to_grayscale(image)  # (1, H, W)
    _, h, w = image.shape
    band = max(3, min(h, w) // 10)  # a border this wide: a thin frame around a photo does not decide
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[band:h - band, band:w - band] = True
    invert = bool(image[0][~inner].float().mean() > 127.5) if invert is None else invert
    if invert:
        image = 255 - image
    # The long side to 28 pixels, then padded into a square with the dataset's black background: never stretched.
    size = [max(1, round(28 * h / max(h, w))), max(1, round(28 * w / max(h, w)))]
    image = F.resize(image, size, antialias=True)  # 28x28 stays as it is
    left, top = (28 - size[1]) // 2, (28 - size[0]) // 2
    return normalize(F.pad(image, [left, top, 28 - size[1] - left, 28 - size[0] - top], fill=0)), invert
