"""evaluate.py --image and images.read_image: a test image saved as PNG classified as the test set classifies it;
upscaled color and dark-on-white copies alike; gray from all three channels and antialiased shrinking, both against
Pillow's own; 16-bit PNGs scaled, not clipped; EXIF orientation; every kind of transparency (alpha, palette and gray
or RGB tRNS, GIF by index, not by color) over white; palette PNGs as their colors; CMYK JPEGs as their RGB twins; a
thin frame; a 1x60000 picture; PNG, JPEG (fill bytes too) and GIF bombs (a frame larger than its screen too) refused
from their headers at once; a GIF read for its first frame only; WebP and animated WebP; an out-of-range tRNS; names
that are not UTF-8, folders and FIFOs; and misclassified.png showing exactly the images metrics.json lists."""
import io
import json
import os
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, TiffImagePlugin

import data
import evaluate
from conftest import ROOT, run_main
from model import load_checkpoint
from plumbing import images, pictures


def save(pixels, path):
    """A (H, W) uint8 tensor as an 8-bit gray picture file, its kind from the name."""
    Image.fromarray(pixels.numpy()).save(path)


@pytest.fixture(scope="module")
def run(fake_data, trained_run):
    """The session's trained model, the test images as uint8 and normalized, and its probabilities."""
    model = load_checkpoint(str(trained_run / "checkpoint.pt"))
    pixels = data.read_idx(os.path.join(fake_data, "FashionMNIST", "raw", "t10k-images-idx3-ubyte"), 3)  # (50, 28, 28)
    images = data.fashion_mnist(fake_data, train=False).tensors[0]
    with torch.no_grad():
        probabilities = F.softmax(model(images), dim=1)  # (50, 10): the test-set path, in one batch
    return trained_run, model, pixels, probabilities


def classify(run, *paths, flags=()):
    out, *_ = run
    return run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", *flags, "--image", *paths)


def test_a_test_image_saved_as_png_gets_the_test_sets_prediction(run, tmp_path):
    _, model, pixels, probabilities = run
    for i in range(5):
        save(pixels[i], tmp_path / f"{i}.png")
        image, inverted = images.read_image(str(tmp_path / f"{i}.png"))
        assert not inverted and torch.equal(image, data.normalize(pixels[i][None]))
        with torch.no_grad():
            mine = F.softmax(model(image[None]), dim=1)[0]
        torch.testing.assert_close(mine, probabilities[i], rtol=1e-5, atol=1e-6)  # a batch of 1 sums in another order
    result = classify(run, *(tmp_path / f"{i}.png" for i in range(5)))
    assert result.returncode == 0, result.stderr
    for i, line in enumerate(result.stdout.strip().splitlines()[-5:]):
        best = probabilities[i].argmax().item()
        assert line.startswith(f"{tmp_path / f'{i}.png'}: {data.CLASSES[best]} {probabilities[i, best]:.3f}, ")
        assert len(line.split(", ")) == 3 and "inverted" not in line


def test_upscaled_color_and_dark_on_white_copies_are_classified_alike(run, tmp_path):
    _, _, pixels, probabilities = run
    confident = [i for i in range(len(pixels)) if probabilities[i].max() > 0.5][:20]
    assert len(confident) >= 10
    agree = {"big color": 0, "dark on white": 0}
    for i in confident:
        big = Image.fromarray(pixels[i].numpy()).resize((112, 112), Image.Resampling.BILINEAR).convert("RGB")
        big.save(tmp_path / "big.jpg", quality=95)
        save(255 - pixels[i], tmp_path / "white.png")
        result = classify(run, tmp_path / "big.jpg", tmp_path / "white.png")
        big_line, white_line = result.stdout.strip().splitlines()[-2:]
        expected = data.CLASSES[probabilities[i].argmax()]
        agree["big color"] += big_line.split(": ")[1].startswith(expected + " ")
        agree["dark on white"] += white_line.split(": ")[1].startswith(expected + " ")
        assert white_line.endswith("(inverted: light background)") and "inverted" not in big_line
    assert all(count >= 0.9 * len(confident) for count in agree.values()), agree


def test_no_invert_keeps_a_light_background(run, tmp_path):
    _, _, pixels, _ = run
    save(255 - pixels[0], tmp_path / "white.png")
    image, inverted = images.read_image(str(tmp_path / "white.png"), invert=False)
    assert not inverted and torch.equal(image, data.normalize(255 - pixels[0][None]))
    assert torch.equal(images.read_image(str(tmp_path / "white.png"))[0], data.normalize(pixels[0][None]))
    result = classify(run, tmp_path / "white.png", flags=["--no-invert"])
    assert result.returncode == 0 and "inverted" not in result.stdout


def test_a_picture_that_is_not_square_is_padded_not_stretched(tmp_path):
    picture = torch.zeros(1, 40, 120, dtype=torch.uint8)  # 3:1, on black
    picture[:, :, 40:80] = 255  # a white square in the middle
    save(picture[0], tmp_path / "wide.png")
    image, _ = images.read_image(str(tmp_path / "wide.png"))
    assert image.shape == (1, 28, 28)
    # 120 pixels wide become 28, so 40 tall become about 9, centered: rows 9 to 18, the rest background.
    rows_with_content = (image[0] > -1 + 1e-3).any(dim=1).nonzero().flatten().tolist()
    assert rows_with_content[0] >= 8 and rows_with_content[-1] <= 19
    assert (image[0, :8] == -1).all() and (image[0, 20:] == -1).all()
    # The white square stays square: about 9 x 9 pixels of white, not stretched to the full height.
    white = image[0] > 0.5
    assert abs(white.any(dim=1).sum().item() - white.any(dim=0).sum().item()) <= 1


def test_bad_pictures_are_clear_errors_and_the_others_still_classified(run, tmp_path):
    _, _, pixels, _ = run
    save(pixels[0], tmp_path / "good.png")
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:60])
    names = ["missing.png", "text.png", "empty.jpg", "cut.png", "good.png"]
    result = classify(run, *(tmp_path / n for n in names))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    for name, line in zip(names, errors):
        assert str(tmp_path / name) in line
    assert "no such file" in errors[0] and "not a picture this reads (PNG, JPEG, GIF, WEBP, BMP, TIFF)" in errors[1]
    assert result.stdout.strip().splitlines()[-1].startswith(f"{tmp_path / 'good.png'}: ")


def test_misclassified_png_shows_the_listed_images_under_their_captions(fake_data, trained_run):
    report = json.loads((trained_run / "metrics.json").read_text())
    examples = report["misclassified_examples"]
    assert len({m["row"] for m in examples}) >= 2 and len({m["column"] for m in examples}) >= 2
    # Each row is one of the most-confused pairs, in the order metrics.json lists them.
    pairs = [(p["true"], p["predicted"]) for p in report["most_confused"]]
    assert [pairs.index((m["true"], m["predicted"])) for m in examples] == [m["row"] for m in examples]
    picture = np.asarray(Image.open(trained_run / "misclassified.png"))  # (H, W, 3)
    tile_w, tile_h, gap = 28 * pictures.SCALE, pictures.CAPTION + 28 * pictures.SCALE, pictures.GAP
    rows, columns = max(m["row"] for m in examples) + 1, max(m["column"] for m in examples) + 1
    assert picture.shape == (rows * (tile_h + gap) + gap, columns * (tile_w + gap) + gap, 3)  # a gap all round
    pixels = data.read_idx(os.path.join(fake_data, "FashionMNIST", "raw", "t10k-images-idx3-ubyte"), 3).numpy()
    for m in examples:
        top, left = gap + m["row"] * (tile_h + gap), gap + m["column"] * (tile_w + gap)
        shown = picture[top + pictures.CAPTION:top + tile_h, left:left + tile_w, 0]
        assert np.array_equal(shown, pixels[m["index"]].repeat(pictures.SCALE, 0).repeat(pictures.SCALE, 1))
        # The caption: "true ..." in black on its first line, "pred ..." in red on its second, each as wide as
        # the font inks that text.
        for line, text, red in ((slice(0, 19), f"true {m['true']}", False),
                                 (slice(20, 34), f"pred {m['predicted']}", True)):
            caption = picture[top:top + pictures.CAPTION][line, left:left + tile_w].astype(int)
            ink = (caption != 255).any(axis=2)
            assert ((caption[ink][:, 0] > caption[ink][:, 1] + 20).mean() > 0.5) == red, text
            box, inked = pictures.FONT.getbbox(text), np.flatnonzero(ink.any(axis=0))
            assert box[2] - box[0] - 4 <= inked[-1] - inked[0] + 1 <= box[2] - box[0], text


def test_a_color_picture_is_turned_gray_from_all_three_channels_as_pil_does(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)  # three different channels
    rgb[:4], rgb[-4:], rgb[:, :4], rgb[:, -4:] = 0, 0, 0, 0  # a dark border: no inversion
    Image.fromarray(rgb).save(tmp_path / "color.png")
    image, inverted = images.read_image(str(tmp_path / "color.png"))
    gray = np.asarray(Image.fromarray(rgb).convert("L"))  # PIL: L = R * 299/1000 + G * 587/1000 + B * 114/1000
    pixels = torch.round((image[0] * 0.5 + 0.5) * 255)
    assert not inverted and (pixels - torch.from_numpy(gray.astype(np.float32))).abs().max() <= 1


def test_a_large_picture_is_shrunk_with_antialiasing_as_pil_does(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, size=(280, 280)).astype(np.uint8)
    noise[:40], noise[-40:] = 0, 0  # dark top and bottom: no inversion
    Image.fromarray(noise).save(tmp_path / "noise.png")
    image, _ = images.read_image(str(tmp_path / "noise.png"))
    # PIL's bilinear shrink averages over each output pixel's whole footprint (10x10 here): an even mid-gray.
    reference = np.asarray(Image.fromarray(noise).resize((28, 28), Image.BILINEAR), dtype=np.float32)
    pixels = (image[0] * 0.5 + 0.5) * 255
    assert (pixels[5:23] - torch.from_numpy(reference[5:23])).abs().max() <= 2
    assert pixels[5:23].std() < 15  # sampling without antialiasing would keep most of the noise's spread (74)


def test_a_phone_photo_is_turned_by_its_exif_orientation(tmp_path):
    wide = np.zeros((40, 120), dtype=np.uint8)
    wide[15:25, 10:110] = 255  # a horizontal bar
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(wide).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    image, _ = images.read_image(str(tmp_path / "phone.jpg"))
    bright = image[0] > 0
    assert bright.any(dim=1).sum() > 3 * bright.any(dim=0).sum()  # shown upright: a vertical bar


def test_a_transparent_background_is_white_as_a_viewer_shows_it(run, tmp_path):
    _, _, pixels, _ = run
    garment = np.zeros((28, 28, 4), dtype=np.uint8)  # black everywhere, transparent but for the garment
    garment[..., 3] = (pixels[0].numpy() > 60) * 255
    Image.fromarray(garment).save(tmp_path / "cutout.png")
    on_white = np.where(garment[..., 3:] > 0, 0, 255).astype(np.uint8).repeat(3, axis=2)  # the same, as RGB
    Image.fromarray(on_white).save(tmp_path / "on-white.png")
    image, inverted = images.read_image(str(tmp_path / "cutout.png"))
    assert inverted and torch.equal(image, images.read_image(str(tmp_path / "on-white.png"))[0])


def test_a_thin_dark_frame_does_not_decide_the_inversion(run, tmp_path):
    _, _, pixels, _ = run
    framed = 255 - pixels[0].numpy()  # dark garment on light
    framed = np.pad(framed, 1)  # in a one-pixel black frame
    Image.fromarray(framed).save(tmp_path / "framed.png")
    assert images.read_image(str(tmp_path / "framed.png"))[1]


def test_a_1_by_60000_picture_is_read_without_a_huge_square(tmp_path):
    Image.new("L", (60000, 1), 200).save(tmp_path / "line.png")
    image, _ = images.read_image(str(tmp_path / "line.png"))
    assert image.shape == (1, 28, 28)


def test_a_picture_beyond_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    for name in ("big.png", "big.jpg", "big.webp", "big.bmp", "big.tiff"):
        Image.new("L", (30, 20)).save(tmp_path / name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 600 pixels: Pillow would only warn, up to 1,000
    for name in ("big.png", "big.jpg", "big.webp", "big.bmp", "big.tiff"):
        with pytest.raises(ValueError, match=f"{name}: more pixels than this reads .*600 pixels"):
            images.read_image(str(tmp_path / name))


def write_bombs(folder):
    """{path: pixels} of pictures whose headers claim more pixels than Pillow's limit, each a few bytes."""
    bombs = {}
    Image.new("L", (1, 1)).save(folder / "bomb.png")
    content = bytearray((folder / "bomb.png").read_bytes())
    content[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR: 60000 x 60000, 3.6 GB once decoded
    content[29:33] = zlib.crc32(content[12:29]).to_bytes(4, "big")  # and its checksum
    (folder / "bomb.png").write_bytes(bytes(content))
    bombs[folder / "bomb.png"] = 60000 * 60000
    # A GIF: a 1x1 logical screen, then an image of 10,100 x 10,100 (what the frame holds is never reached).
    (folder / "frame.gif").write_bytes(b"GIF89a" + (1).to_bytes(2, "little") * 2 + b"\x00\x00\x00" + b"\x2c"
                                       + bytes(4) + (10100).to_bytes(2, "little") * 2 + b"\x00"
                                       + b"\x08\x02\x4c\x01\x00\x3b")
    bombs[folder / "frame.gif"] = 10100 * 10100
    Image.new("L", (8, 8)).save(folder / "bomb.jpg")
    content = bytearray((folder / "bomb.jpg").read_bytes())
    sof = content.index(b"\xff\xc0")
    content[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2  # SOF0: 60000 x 60000 (decoded: about 12 s, 4 GB)
    (folder / "bomb.jpg").write_bytes(bytes(content))
    content[sof:sof] = b"\xff" * 3  # fill bytes before the frame header, as the JPEG standard allows
    (folder / "filled.jpg").write_bytes(bytes(content))
    bombs.update({folder / "bomb.jpg": 60000 * 60000, folder / "filled.jpg": 60000 * 60000})
    return bombs


def test_bombs_are_refused_from_their_headers_at_once(tmp_path):
    """Each refused for its size, naming it, in under 0.1 s of CPU and 50 MB: in a process of its own, whose peak
    memory is measured around each (CPU time, not the clock: a loaded machine is only slower)."""
    bombs = write_bombs(tmp_path)
    code = ("import resource, sys\nfrom plumbing import images\n"
            "for path in sys.argv[1:]:\n"
            "    before = resource.getrusage(resource.RUSAGE_SELF)\n"
            "    try:\n        images.read_image(path)\n    except ValueError as e:\n        print(e)\n"
            "    after = resource.getrusage(resource.RUSAGE_SELF)\n"
            "    print(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,"
            " after.ru_maxrss - before.ru_maxrss)\n")
    result = subprocess.run([sys.executable, "-c", code, *map(str, bombs)], cwd=ROOT, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 * len(bombs), result.stdout + result.stderr
    for (path, pixels), message, measured in zip(bombs.items(), lines[0::2], lines[1::2]):
        seconds, kilobytes = map(float, measured.split())
        assert f"{path}: more pixels than this reads (Image size ({pixels} pixels)" in message, message
        assert seconds < 0.1 and kilobytes < 50_000, (path, seconds, kilobytes)


def test_an_animated_gif_is_classified_from_its_first_frame(run, tmp_path):
    _, _, pixels, _ = run
    frames = [Image.fromarray(pixels[i].numpy()) for i in (0, 1)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "still.gif")
    assert torch.equal(images.read_image(str(tmp_path / "anim.gif"))[0],
                       images.read_image(str(tmp_path / "still.gif"))[0])
    result = classify(run, tmp_path / "anim.gif")
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1].startswith(f"{tmp_path / 'anim.gif'}: ")


def test_a_folder_or_a_fifo_is_refused_not_waited_on(run, tmp_path):
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    result = classify(run, tmp_path / "folder.png", tmp_path / "fifo.png")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 2
    assert "folder.png: not a regular file" in errors[0] and "fifo.png: not a regular file" in errors[1]


def garment_on_white(pixels):
    """(garment mask (28, 28) bool, the garment drawn black on a white background as a uint8 RGB array)."""
    mask = pixels[0].numpy() > 60
    return mask, np.where(mask[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)


@pytest.mark.parametrize("kind", ["palette PNG", "gray PNG", "RGB PNG", "GIF"])
def test_every_kind_of_transparency_is_laid_over_white(kind, run, tmp_path):
    _, _, pixels, _ = run
    mask, on_white = garment_on_white(pixels)
    Image.fromarray(on_white if kind in ("RGB PNG", "palette PNG", "GIF") else on_white[..., 0]).save(
        tmp_path / "on-white.png")  # the same channels, so that the same gray conversion applies
    # The garment black, everything else a color marked transparent (red, or gray 77): drawn over white, it is white.
    if kind in ("palette PNG", "GIF"):
        picture = Image.fromarray(np.where(mask, 1, 0).astype(np.uint8), mode="P")
        picture.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
        picture.save(tmp_path / "cutout", format="PNG" if kind == "palette PNG" else "GIF", transparency=0)
    elif kind == "RGB PNG":
        Image.fromarray(np.where(mask[..., None], 0, [255, 0, 0]).astype(np.uint8)).save(
            tmp_path / "cutout", format="PNG", transparency=(255, 0, 0))
    else:
        Image.fromarray(np.where(mask, 0, 77).astype(np.uint8)).save(tmp_path / "cutout", format="PNG", transparency=77)
    image, inverted = images.read_image(str(tmp_path / "cutout"))
    assert inverted and torch.equal(image, images.read_image(str(tmp_path / "on-white.png"))[0])


def test_a_palette_png_reads_as_its_colors_not_its_indices(run, tmp_path):
    _, _, pixels, _ = run
    palette = Image.fromarray(255 - pixels[0].numpy(), mode="P")  # index k shows gray 255 - k
    palette.putpalette([255 - k for k in range(256) for _ in range(3)])
    palette.save(tmp_path / "palette.png")
    Image.fromarray(pixels[0].numpy()).convert("RGB").save(tmp_path / "rgb.png")  # the colors it shows
    assert torch.equal(images.read_image(str(tmp_path / "palette.png"))[0],
                       images.read_image(str(tmp_path / "rgb.png"))[0])


@pytest.mark.parametrize("kind", ["GIF", "PNG", "WEBP"])  # GIF, APNG, animated WebP
def test_an_animation_is_read_for_its_first_frame_only(kind, run, tmp_path):
    _, _, pixels, _ = run
    frames = [Image.fromarray(pixels[i % 50].numpy()) for i in range(300)]
    frames[0].save(tmp_path / "long", format=kind, save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(tmp_path / "first.png")
    assert Image.open(tmp_path / "long").n_frames == 300
    assert torch.equal(images.read_image(str(tmp_path / "long"))[0], images.read_image(str(tmp_path / "first.png"))[0])
    if kind == "GIF":  # the frames after the first are never decoded: cut short in the last frame, it reads the same
        content = (tmp_path / "long").read_bytes()
        (tmp_path / "long").write_bytes(content[:-100])
        assert torch.equal(images.read_image(str(tmp_path / "long"))[0],
                           images.read_image(str(tmp_path / "first.png"))[0])
        content = bytearray(content)
        content[6:10] = (60000).to_bytes(2, "little") * 2  # the logical screen: 60000 x 60000
        (tmp_path / "long").write_bytes(bytes(content))
        with pytest.raises(ValueError, match=f"{tmp_path / 'long'}: more pixels than this reads"):
            images.read_image(str(tmp_path / "long"))


def test_a_webp_reads_as_its_png_twin(run, tmp_path):
    _, _, pixels, _ = run
    for name in ("phone.webp", "twin.png"):
        Image.fromarray(255 - pixels[0].numpy()).save(tmp_path / name, lossless=True)
    result = classify(run, tmp_path / "phone.webp", tmp_path / "twin.png")
    assert result.returncode == 0, result.stderr
    webp, png = result.stdout.strip().splitlines()[-2:]
    assert webp.split(": ", 1)[1] == png.split(": ", 1)[1] and webp.endswith("(inverted: light background)")


def test_a_gif_pixel_that_shares_the_transparent_entrys_color_stays_dark(run, tmp_path):
    _, _, pixels, _ = run
    mask, on_white = garment_on_white(pixels)
    Image.fromarray(on_white).save(tmp_path / "on-white.png")
    # Index 0 transparent, index 1 opaque: both black. Transparency is by index, so the garment (1) stays black.
    picture = Image.fromarray(np.where(mask, 1, 0).astype(np.uint8), mode="P")
    picture.putpalette([0, 0, 0] * 256)
    picture.save(tmp_path / "same-color.gif", transparency=0)
    image, inverted = images.read_image(str(tmp_path / "same-color.gif"))
    assert inverted and torch.equal(image, images.read_image(str(tmp_path / "on-white.png"))[0])


def test_a_cmyk_jpeg_is_classified_as_its_rgb_twin(run, tmp_path):
    _, _, pixels, _ = run
    mask, on_white = garment_on_white(pixels)
    Image.fromarray(on_white).save(tmp_path / "rgb.jpg", quality=100)
    cmyk = np.zeros((28, 28, 4), dtype=np.uint8)
    cmyk[..., 3] = mask * 255  # the garment's black in K alone, as print work stores it; the rest white (no ink)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    image, inverted = images.read_image(str(tmp_path / "cmyk.jpg"))
    twin, _ = images.read_image(str(tmp_path / "rgb.jpg"))
    assert inverted and (image - twin).abs().max() < 0.1  # the same picture, but for JPEG's rounding
    result = classify(run, tmp_path / "cmyk.jpg", tmp_path / "rgb.jpg")
    cmyk_line, rgb_line = result.stdout.strip().splitlines()[-2:]
    assert cmyk_line.split(": ", 1)[1].split()[0] == rgb_line.split(": ", 1)[1].split()[0]


def test_names_that_are_not_utf_8_are_read_and_printed(run, tmp_path, monkeypatch):
    _, _, pixels, _ = run
    latin1 = os.path.join(os.fsencode(tmp_path), b"chemise-\xe9.png")  # a Latin-1 name, not UTF-8
    Image.fromarray(pixels[0].numpy()).save(latin1, format="PNG")
    Image.fromarray(pixels[0].numpy()).save(tmp_path / "b\u00f6ot.png")
    out, *_ = run
    console = {name: io.TextIOWrapper(io.BytesIO(), encoding="ascii") for name in ("stdout", "stderr")}
    for name, stream in console.items():  # a console that shows ASCII alone, as PYTHONIOENCODING=ascii makes it
        monkeypatch.setattr(sys, name, stream)
    evaluate.main(["--checkpoint", str(out / "checkpoint.pt"), "--image", os.fsdecode(latin1),
                   str(tmp_path / "b\u00f6ot.png")])
    monkeypatch.undo()
    shown = {name: (stream.flush(), stream.buffer.getvalue().decode("ascii"))[1] for name, stream in console.items()}
    assert shown["stderr"] == "", shown
    lines = shown["stdout"].strip().splitlines()[-2:]
    assert lines[0].startswith(str(tmp_path / "chemise-\\udce9.png: ")) and "b\\xf6ot.png: " in lines[1]


def test_a_light_border_decides_the_inversion_not_the_middle(tmp_path):
    """A dark garment filling a light frame is inverted; a light one filling a dark frame is not (the middle, or the
    whole picture's mean, would decide both the other way)."""
    for name, border, middle in (("light-frame.png", 200, 30), ("dark-frame.png", 30, 200)):
        picture = np.full((100, 100), middle, dtype=np.uint8)
        picture[:10], picture[-10:], picture[:, :10], picture[:, -10:] = border, border, border, border
        Image.fromarray(picture).save(tmp_path / name)
        assert images.read_image(str(tmp_path / name))[1] == (border > middle), name


@pytest.mark.parametrize("kind", ["PPM", "ICO", "EPS"])
def test_a_format_outside_the_list_is_refused_naming_the_formats_read(kind, run, tmp_path):
    Image.new("RGB", (32, 32), "white").save(tmp_path / "picture", format=kind)  # Pillow would read each
    result = classify(run, tmp_path / "picture")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'picture'}: not a picture this reads (PNG, JPEG, GIF, WEBP, BMP, TIFF), or a damaged one"]


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])  # 16-bit gray, 32-bit integer, 32-bit float
def test_a_picture_deeper_than_8_bits_is_refused_by_its_mode_not_clipped(mode, run, tmp_path):
    _, _, pixels, _ = run
    values = {"I;16": pixels[0].numpy().astype(np.uint16) * 256, "I": pixels[0].numpy().astype(np.int32) * 2**23,
              "F": pixels[0].numpy() / np.float32(255)}[mode]
    Image.fromarray(values).save(tmp_path / "deep.tiff")
    assert Image.open(tmp_path / "deep.tiff").mode == mode
    with pytest.raises(ValueError, match=f"deep.tiff: a {mode} TIFF, which this does not read"):
        images.read_image(str(tmp_path / "deep.tiff"))


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_each_exif_orientation_is_turned_right_but_a_tiffs_5_to_8_as_pillow_reads_it(kind, tmp_path):
    upright = np.zeros((20, 40), dtype=np.uint8)
    upright[2:6, 2:10] = 255  # a mark at the top left, as the picture is shown
    turn = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}  # stored so: the orientation tag turns each back upright
    Image.fromarray(upright).save(tmp_path / "upright.png")
    expected = images.read_image(str(tmp_path / "upright.png"), invert=False)[0]
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = Image.fromarray(upright)
        stored = stored.transpose(turn[orientation]) if orientation in turn else stored
        path = tmp_path / f"turned-{orientation}.{kind.lower()}"
        stored.save(path, format=kind, exif=exif, **({"quality": 100} if kind == "JPEG" else {"lossless": True}))
        image = images.read_image(str(path), invert=False)[0]
        if kind != "TIFF" or orientation < 5:  # a TIFF's 5 to 8: outside the promise (README.md), read, right or not
            assert (image - expected).abs().max() < 0.1, (kind, orientation)  # JPEG's rounding aside


def test_an_orientation_tag_of_text_is_read_or_refused_in_one_line(run, tmp_path):
    _, _, pixels, _ = run
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[0x0112], tags.tagtype[0x0112] = "upside down", 2  # a crafted file: the tag as text, not a number 1 to 8
    Image.fromarray(pixels[0].numpy()).save(tmp_path / "odd.tiff", tiffinfo=tags)
    result = classify(run, tmp_path / "odd.tiff")
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1].startswith(f"{tmp_path / 'odd.tiff'}: ")


def test_a_picture_that_cannot_be_opened_says_why(run, tmp_path, monkeypatch):
    _, _, pixels, _ = run
    Image.fromarray(pixels[0].numpy()).save(tmp_path / "private.png")

    def no_permission(*args, **kwargs):  # as chmod 000 does for anyone but root
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(images.Image, "open", no_permission)
    with pytest.raises(OSError, match=r"private.png: cannot be read \(Permission denied\)"):
        images.read_image(str(tmp_path / "private.png"))


def test_pillows_warnings_about_a_picture_are_notes_naming_it(run, tmp_path, capsys, monkeypatch):
    _, _, pixels, _ = run
    Image.fromarray(pixels[0].numpy()).save(tmp_path / "odd.png")
    real_open = Image.open

    def open_with_a_warning(*args, **kwargs):  # as Pillow warns of a file it reads all the same (13.0: a TIFF tag
        warnings.warn("Tag data larger than file", UserWarning)  # whose count runs past the end of the file)
        return real_open(*args, **kwargs)
    monkeypatch.setattr(images.Image, "open", open_with_a_warning)
    image, _ = images.read_image(str(tmp_path / "odd.png"))  # read all the same
    assert torch.equal(image, data.normalize(pixels[0][None]))
    assert capsys.readouterr().err == f"note: {tmp_path / 'odd.png'}: Tag data larger than file\n"
