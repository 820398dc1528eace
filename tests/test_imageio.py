"""Image and mask I/O: every format, depth and channel layout in, RGB uint8 and bool out."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from anogen.data.imageio import (
    list_images,
    read_image,
    read_image_and_mask,
    read_mask,
    write_image,
    write_mask,
)
from anogen.errors import InputError


def _rgb(height: int = 24, width: int = 36, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_formats_round_trip_exactly(tmp_path: Path, suffix: str) -> None:
    pixels = _rgb()
    write_image(tmp_path / f"a{suffix}", pixels)
    out = read_image(tmp_path / f"a{suffix}")
    assert out.dtype == np.uint8 and out.shape == (24, 36, 3)
    assert np.array_equal(out, pixels)


def test_jpeg_reads_as_rgb_close_to_the_original(tmp_path: Path) -> None:
    pixels = np.full((32, 48, 3), (200, 60, 30), np.uint8)
    for suffix in (".jpg", ".jpeg"):
        write_image(tmp_path / f"a{suffix}", pixels)
        out = read_image(tmp_path / f"a{suffix}")
        assert out.shape == (32, 48, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - pixels).max() <= 4


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_is_scaled_from_full_range(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / f"g{suffix}")
    out = read_image(tmp_path / f"g{suffix}")
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_dark_16_bit_image_stays_dark(tmp_path: Path) -> None:
    # An underexposed 16-bit frame (max 200 of 65535) must not be read as 8-bit data.
    Image.fromarray(np.array([[0, 100, 200]], np.uint16)).save(tmp_path / "dark.png")
    assert read_image(tmp_path / "dark.png").max() <= 1


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_colour_keeps_its_colours(tmp_path: Path, suffix: str) -> None:
    rgb16 = np.zeros((4, 5, 3), np.uint16)
    rgb16[1, 2] = (65535, 32896, 0)
    cv2.imwrite(str(tmp_path / f"c{suffix}"), rgb16[..., ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / f"c{suffix}")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert out[1, 2].tolist() == [255, 128, 0] and out[0, 0].tolist() == [0, 0, 0]


def test_grayscale_palette_and_float_images_become_rgb(tmp_path: Path) -> None:
    gray = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (4, 6, 3) and np.array_equal(out[..., 1], gray)

    palette = Image.fromarray(_rgb(8, 8)).quantize(colors=4)
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_image(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))

    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "float.tif")
    assert read_image(tmp_path / "float.tif")[0, :, 0].tolist() == [0, 128, 255]


def test_rgba_is_composited_onto_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 200, 30, 255)      # opaque: kept
    rgba[0, 1] = (250, 250, 250, 0)      # transparent: black
    rgba[1, 0] = (200, 100, 0, 128)      # half: halfway to black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [10, 200, 30] and out[0, 1].tolist() == [0, 0, 0]
    assert abs(int(out[1, 0, 0]) - 100) <= 1 and abs(int(out[1, 0, 1]) - 50) <= 1


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :10] = 255  # a white block at the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / f"rot{suffix}", exif=exif)
    out = read_image(tmp_path / f"rot{suffix}")
    assert out.shape == (60, 40, 3)
    expected = np.rot90(stored, k=-1)  # clockwise: the block moves to the top-right
    assert np.abs(out.astype(int) - expected).mean() < 3
    assert out[:8, -8:].min() > 200 and out[-8:, :8].max() < 50


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_truncated_empty_and_missing_files_name_the_path(tmp_path: Path) -> None:
    good_png, good_jpg = tmp_path / "ok.png", tmp_path / "ok.jpg"
    write_image(good_png, _rgb(64, 64))
    write_image(good_jpg, _rgb(64, 64))
    cases = {
        "garbage.png": b"this is not an image at all",
        "empty.png": b"",
        "text.jpg": b"hello",
        "truncated.png": good_png.read_bytes()[: len(good_png.read_bytes()) // 2],
        "truncated.jpg": good_jpg.read_bytes()[: len(good_jpg.read_bytes()) // 2],
        "header_only.tif": b"II*\x00\x08\x00\x00\x00",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        for reader in (read_image, read_mask):
            with pytest.raises(InputError) as info:
                reader(tmp_path / name)
            assert str(tmp_path / name) in str(info.value), name
            assert "cannot read image" in str(info.value), name
    with pytest.raises(InputError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(InputError, match=r"folder\.png: not a file"):
        read_image(tmp_path / "folder.png")


def test_masks_become_bool_whatever_their_encoding(tmp_path: Path) -> None:
    truth = np.zeros((20, 30), bool)
    truth[5:12, 8:20] = True

    write_mask(tmp_path / "plain.png", truth)                                   # 0/255 8-bit
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "labels.png")        # 0/1 label map
    Image.fromarray(truth.astype(np.uint16) * 65535).save(tmp_path / "deep.png")  # 16-bit
    red = np.zeros((20, 30, 3), np.uint8)
    red[truth] = (255, 0, 0)
    Image.fromarray(red).save(tmp_path / "red.bmp")                              # colour, any channel
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[truth] = (255, 255, 255, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")                  # transparent elsewhere
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "lossy.jpg", quality=75)

    for name in ("plain.png", "labels.png", "deep.png", "red.bmp", "alpha.png", "lossy.jpg"):
        mask = read_mask(tmp_path / name)
        assert mask.dtype == bool and mask.shape == (20, 30), name
        assert np.array_equal(mask, truth), name  # JPEG ringing must not grow the mask


def test_mask_size_mismatch_names_both_sizes(tmp_path: Path) -> None:
    write_image(tmp_path / "image.png", _rgb(40, 60))
    write_mask(tmp_path / "mask.png", np.ones((20, 30), bool))
    with pytest.raises(InputError) as info:
        read_image_and_mask(tmp_path / "image.png", tmp_path / "mask.png")
    message = str(info.value)
    assert "30x20" in message and "60x40" in message
    assert str(tmp_path / "mask.png") in message and str(tmp_path / "image.png") in message
    write_mask(tmp_path / "mask.png", np.ones((40, 60), bool))
    image, mask = read_image_and_mask(tmp_path / "image.png", tmp_path / "mask.png")
    assert image.shape[:2] == mask.shape == (40, 60)


def test_list_images_and_unsupported_formats(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.tiff", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff"]
    with pytest.raises(InputError, match="not a folder"):
        list_images(tmp_path / "a.jpg")
    with pytest.raises(InputError, match="unsupported image format"):
        write_image(tmp_path / "x.gif", _rgb())


def test_write_downscaled_keeps_the_aspect_and_the_format(tmp_path: Path) -> None:
    from anogen.data.imageio import write_downscaled

    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (300, 600, 3), dtype=np.uint8)
    write_image(tmp_path / "big.png", big)
    assert write_downscaled(tmp_path / "big.png", tmp_path / "small.png", 200) == (200, 100)
    small = read_image(tmp_path / "small.png")
    assert small.shape == (100, 200, 3)
    # An area filter: each output pixel is the mean of its 3x3 block.
    assert np.abs(small.astype(int) - big.reshape(100, 3, 200, 3, 3).mean(axis=(1, 3))).max() <= 1
    write_image(tmp_path / "photo.jpg", big)
    assert write_downscaled(tmp_path / "photo.jpg", tmp_path / "photo_small.jpg", 1000) == (600, 300)
    assert Image.open(tmp_path / "photo_small.jpg").format == "JPEG"
    with pytest.raises(InputError):
        write_downscaled(tmp_path / "big.png", tmp_path / "x.png", 0)
