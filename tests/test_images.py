"""evaluate.py --image and images.read_image: a test image saved as PNG classified as the test set classifies it;
upscaled color and dark-on-white copies alike; gray from all three channels and antialiased shrinking, both against
PIL; 16-bit PNGs, EXIF orientation, every kind of transparency (alpha, palette and gray or RGB tRNS, GIF) over white,
palette PNGs as their colors, a thin frame, a 1x60000 picture, PNG, JPEG and GIF bombs refused from their headers, a
GIF decoded for its first frame only, WebP refused by name, names that are not UTF-8, folders and FIFOs; and
misclassified.png showing exactly the images metrics.json lists, under their captions."""
import json
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets
from torchvision.io import decode_image, write_jpeg, write_png
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes

import data
import evaluate
import images
import pictures
import train
from conftest import run_main, run_script
from model import load_checkpoint


@pytest.fixture(scope="module")
def run(fake_data, tmp_path_factory):
    """A model trained on the synthetic data, the test images as uint8 and normalized, and its probabilities."""
    out = tmp_path_factory.mktemp("run")
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", out, "--epochs", "3", "--batch-size", "16",
                      "--lr", "3e-3")
    assert result.returncode == 0, result.stderr
    model = load_checkpoint(str(out / "checkpoint.pt"))
    pixels = datasets.FashionMNIST(fake_data, train=False).data  # (50, 28, 28) uint8, as in the file
    images = data.fashion_mnist(fake_data, train=False).tensors[0]
    with torch.no_grad():
        probabilities = F.softmax(model(images), dim=1)  # (50, 10): the test-set path, in one batch
    return out, model, pixels, probabilities


def classify(run, *paths, flags=()):
    out, *_ = run
    return run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", *flags, "--image", *paths)


def test_a_test_image_saved_as_png_gets_the_test_sets_prediction(run, tmp_path):
    _, model, pixels, probabilities = run
    for i in range(5):
        write_png(pixels[i][None], str(tmp_path / f"{i}.png"))
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
        big = TF.resize(pixels[i][None], [112, 112], antialias=True).expand(3, -1, -1)  # (3, 112, 112)
        write_jpeg(big.contiguous(), str(tmp_path / "big.jpg"), quality=95)
        write_png(255 - pixels[i][None], str(tmp_path / "white.png"))
        result = classify(run, tmp_path / "big.jpg", tmp_path / "white.png")
        big_line, white_line = result.stdout.strip().splitlines()[-2:]
        expected = data.CLASSES[probabilities[i].argmax()]
        agree["big color"] += big_line.split(": ")[1].startswith(expected + " ")
        agree["dark on white"] += white_line.split(": ")[1].startswith(expected + " ")
        assert white_line.endswith("(inverted: light background)") and "inverted" not in big_line
    assert all(count >= 0.9 * len(confident) for count in agree.values()), agree


def test_no_invert_keeps_a_light_background(run, tmp_path):
    _, _, pixels, _ = run
    write_png(255 - pixels[0][None], str(tmp_path / "white.png"))
    image, inverted = images.read_image(str(tmp_path / "white.png"), invert=False)
    assert not inverted and torch.equal(image, data.normalize(255 - pixels[0][None]))
    assert torch.equal(images.read_image(str(tmp_path / "white.png"))[0], data.normalize(pixels[0][None]))
    result = classify(run, tmp_path / "white.png", flags=["--no-invert"])
    assert result.returncode == 0 and "inverted" not in result.stdout


def test_a_picture_that_is_not_square_is_padded_not_stretched(tmp_path):
    picture = torch.zeros(1, 40, 120, dtype=torch.uint8)  # 3:1, on black
    picture[:, :, 40:80] = 255  # a white square in the middle
    write_png(picture, str(tmp_path / "wide.png"))
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
    write_png(pixels[0][None], str(tmp_path / "good.png"))
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
    assert "no such file" in errors[0] and "not a PNG, JPEG or GIF image" in errors[1]
    assert result.stdout.strip().splitlines()[-1].startswith(f"{tmp_path / 'good.png'}: ")


def test_misclassified_png_shows_the_listed_images_under_their_captions(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path, "--epochs", "1")  # many mistakes
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "metrics.json").read_text())
    examples = report["misclassified_examples"]
    assert len({m["row"] for m in examples}) >= 2 and len({m["column"] for m in examples}) >= 2
    # Each row is one of the most-confused pairs, in the order metrics.json lists them.
    pairs = [(p["true"], p["predicted"]) for p in report["most_confused"]]
    assert [pairs.index((m["true"], m["predicted"])) for m in examples] == [m["row"] for m in examples]
    picture = decode_image(str(tmp_path / "misclassified.png"))
    tile_w, tile_h, gap = 28 * pictures.SCALE, pictures.CAPTION + 28 * pictures.SCALE, pictures.GAP
    rows, columns = max(m["row"] for m in examples) + 1, max(m["column"] for m in examples) + 1
    assert picture.shape == (3, rows * (tile_h + gap) + gap, columns * (tile_w + gap) + gap)  # a gap all round
    pixels = datasets.FashionMNIST(fake_data, train=False).data
    for m in examples:
        top, left = gap + m["row"] * (tile_h + gap), gap + m["column"] * (tile_w + gap)
        shown = picture[0, top + pictures.CAPTION:top + tile_h, left:left + tile_w]
        expected = pixels[m["index"]].repeat_interleave(pictures.SCALE, 0).repeat_interleave(pictures.SCALE, 1)
        assert torch.equal(shown, expected)  # the image listed, at 4x
        # The caption, drawn alone by torchvision: it names this image's true and predicted class.
        alone = draw_bounding_boxes(torch.zeros(3, pictures.CAPTION, tile_w, dtype=torch.uint8),
                                    torch.tensor([[0, 0, tile_w - 1, pictures.CAPTION - 1]]),
                                    [f"true {m['true']}\npred {m['predicted']}"], colors=(255, 170, 0))
        assert torch.equal(picture[:, top:top + pictures.CAPTION, left:left + tile_w], alone)


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


def test_a_16_bit_png_reads_as_its_8_bit_twin(run, tmp_path):
    _, _, pixels, _ = run
    Image.fromarray(pixels[3].numpy().astype(np.uint16) * 256 + 128).save(tmp_path / "deep.png")  # 0..65535
    Image.fromarray(pixels[3].numpy()).save(tmp_path / "plain.png")
    assert decode_image(str(tmp_path / "deep.png")).dtype == torch.uint16
    for invert in (None, False):
        assert torch.equal(images.read_image(str(tmp_path / "deep.png"), invert)[0],
                           images.read_image(str(tmp_path / "plain.png"), invert)[0])


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
    write_png(torch.full((1, 1, 60000), 200, dtype=torch.uint8), str(tmp_path / "line.png"))
    image, _ = images.read_image(str(tmp_path / "line.png"))
    assert image.shape == (1, 28, 28)


def test_a_picture_beyond_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    write_png(torch.zeros(1, 20, 30, dtype=torch.uint8), str(tmp_path / "big.png"))
    write_jpeg(torch.zeros(1, 20, 30, dtype=torch.uint8), str(tmp_path / "big.jpg"))
    monkeypatch.setattr(images, "MAX_PIXELS", 500)
    for name in ("big.png", "big.jpg"):  # each by its header, before decoding
        with pytest.raises(ValueError, match=f"{name}: 30x20 pixels, more than this reads"):
            images.read_image(str(tmp_path / name))


def test_a_png_bomb_is_refused_from_its_header(tmp_path):
    write_png(torch.zeros(1, 1, 1, dtype=torch.uint8), str(tmp_path / "bomb.png"))
    content = bytearray((tmp_path / "bomb.png").read_bytes())
    content[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR: 60000 x 60000, 3.6 GB once decoded
    (tmp_path / "bomb.png").write_bytes(bytes(content))
    with pytest.raises(ValueError, match="bomb.png: 60000x60000 pixels, more than this reads"):
        images.read_image(str(tmp_path / "bomb.png"))


def test_an_animated_gif_is_read_from_its_first_frame(run, tmp_path):
    _, _, pixels, _ = run
    frames = [Image.fromarray(pixels[i].numpy()) for i in (0, 1)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "still.gif")
    assert torch.equal(images.read_image(str(tmp_path / "anim.gif"))[0],
                       images.read_image(str(tmp_path / "still.gif"))[0])
    result = classify(run, tmp_path / "anim.gif")
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1].startswith(f"{tmp_path / 'anim.gif'}: ")


def test_a_folder_or_a_fifo_is_named_for_what_it_is(run, tmp_path):
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    result = classify(run, tmp_path / "folder.png", tmp_path / "fifo.png")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 2
    assert "folder.png: a folder, not a picture" in errors[0] and "fifo.png: not a regular file" in errors[1]


def garment_on_white(pixels):
    """(garment mask (28, 28) bool, the garment drawn black on a white background as a uint8 RGB array)."""
    mask = pixels[0].numpy() > 60
    return mask, np.where(mask[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)


@pytest.mark.parametrize("kind", ["palette PNG", "gray PNG", "16-bit gray PNG", "RGB PNG", "GIF"])
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
        deep = kind.startswith("16")
        gray = np.where(mask, 0, 77 * 257 if deep else 77).astype(np.uint16 if deep else np.uint8)
        Image.fromarray(gray).save(tmp_path / "cutout", format="PNG", transparency=77 * 257 if deep else 77)
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


def test_a_jpeg_bomb_is_refused_from_its_header_at_once(tmp_path):
    write_jpeg(torch.zeros(1, 8, 8, dtype=torch.uint8), str(tmp_path / "bomb.jpg"))
    content = bytearray((tmp_path / "bomb.jpg").read_bytes())
    sof = content.index(b"\xff\xc0")
    content[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2  # SOF0: 60000 x 60000
    (tmp_path / "bomb.jpg").write_bytes(bytes(content))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="bomb.jpg: 60000x60000 pixels, more than this reads"):
        images.read_image(str(tmp_path / "bomb.jpg"))
    assert time.perf_counter() - start < 1  # not decoded first (about 12 s and 4 GB)


def test_a_gif_of_many_frames_is_decoded_only_for_its_first(run, tmp_path, monkeypatch):
    _, _, pixels, _ = run
    frames = [Image.fromarray(pixels[i % 50].numpy()) for i in range(300)]
    frames[0].save(tmp_path / "long.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "first.gif")
    decoded = []
    real = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda data, **kw: decoded.append(real(data, **kw)) or decoded[-1])
    assert torch.equal(images.read_image(str(tmp_path / "long.gif"))[0],
                       images.read_image(str(tmp_path / "first.gif"))[0])
    assert decoded[0].shape == decoded[1].shape == (3, 28, 28)  # one frame, not (300, 3, 28, 28)
    content = bytearray((tmp_path / "long.gif").read_bytes())
    content[6:10] = (60000).to_bytes(2, "little") * 2  # the logical screen: 60000 x 60000
    (tmp_path / "long.gif").write_bytes(bytes(content))
    with pytest.raises(ValueError, match="60000x60000 pixels"):
        images.read_image(str(tmp_path / "long.gif"))


def test_webp_is_refused_by_name(tmp_path):
    Image.new("L", (8, 8)).save(tmp_path / "photo.webp")  # its EXIF orientation would not be applied
    with pytest.raises(ValueError, match="WebP and others are not read"):
        images.read_image(str(tmp_path / "photo.webp"))


def test_names_that_are_not_utf_8_are_read_and_printed(run, tmp_path):
    _, _, pixels, _ = run
    latin1 = os.path.join(os.fsencode(tmp_path), b"chemise-\xe9.png")  # a Latin-1 name, not UTF-8
    Image.fromarray(pixels[0].numpy()).save(latin1, format="PNG")
    Image.fromarray(pixels[0].numpy()).save(tmp_path / "b\u00f6ot.png")
    out, *_ = run
    result = run_script("evaluate.py", "--checkpoint", str(out / "checkpoint.pt"), "--image",
                        os.fsdecode(latin1), str(tmp_path / "b\u00f6ot.png"), env_extra={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()[-2:]
    assert lines[0].startswith(str(tmp_path / "chemise-\\udce9.png: ")) and "b\\xf6ot.png: " in lines[1]
