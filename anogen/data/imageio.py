"""Reading and writing images and masks.

Whatever is on disk (PNG, JPEG, BMP, TIFF; 8 or 16 bit; grayscale, RGB, RGBA, palette;
rotated by an EXIF tag), :func:`read_image` returns an RGB ``uint8`` array of shape
``(H, W, 3)`` and :func:`read_mask` a ``bool`` array of shape ``(H, W)``. Every failure
is an :class:`~anogen.errors.InputError` that names the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from anogen.atomic import atomic_write_bytes
from anogen.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a readable image unreadable
        return image


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale integer or float pixel data of any depth to uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        # A uint16 array comes from a 16-bit file: full scale is 65535 even when the image is
        # dark (max <= 255). Wider integer modes ("I") do not say their depth, so guess.
        top = 65535 if array.dtype == np.uint16 or array.max(initial=0) > 255 else 255
        return np.clip(np.round(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    array = np.nan_to_num(array.astype(np.float64))
    scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
    return np.clip(np.round(array * scale), 0, 255).astype(np.uint8)


def _pixels(image: Image.Image) -> np.ndarray:
    """Pixel data as an array, 16-bit modes kept at full depth."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.uint16)
    if image.mode in ("I", "F"):
        return np.asarray(image)
    return np.asarray(image)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any supported image as RGB uint8 ``(H, W, 3)``, EXIF orientation applied.

    Transparent pixels of an RGBA image are composited onto black (defect photos are
    opaque; black keeps masks and images aligned without inventing content).
    """
    path = Path(path)
    image = _open(path)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("RGB", "RGBA", "L", "P", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    gray = _to_uint8(_pixels(image))
    if gray.ndim == 2:
        gray = np.repeat(gray[:, :, None], 3, axis=2)
    return np.ascontiguousarray(gray[:, :, :3])


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`read_image` returns it (EXIF rotation applied).

    Reads only the header, so validating a project with many images stays fast.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            try:
                orientation = image.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block: read_image ignores it too
                orientation = 1
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a damaged file
        raise InputError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None
    # EXIF orientations 5-8 are rotated by 90 degrees, so width and height swap.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def read_mask(path: str | os.PathLike, expected_size: tuple[int, int] | None = None,
              image_path: str | os.PathLike | None = None) -> np.ndarray:
    """Read a mask as ``bool (H, W)``: any non-zero pixel (any channel, alpha ignored) is True
    (for JPEG, any pixel above half brightness).

    ``expected_size`` is ``(height, width)`` of the image the mask belongs to; a mismatch
    is an error naming both sizes (and the image, when ``image_path`` is given).
    """
    path = Path(path)
    image = _open(path)
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    pixels = _pixels(image) if image.mode not in ("P", "1", "CMYK", "YCbCr") else np.asarray(image.convert("L"))
    if pixels.ndim == 3:
        pixels = pixels.max(axis=2)
    # JPEG ringing leaves faint non-zero pixels around a painted region, so there only
    # bright pixels count; lossless formats keep exact values (0/1 label maps included).
    mask = pixels > (127 if path.suffix.lower() in (".jpg", ".jpeg") else 0)
    if expected_size is not None and tuple(mask.shape) != tuple(expected_size):
        owner = f" of image {image_path}" if image_path is not None else ""
        raise InputError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the image{owner} is "
            f"{expected_size[1]}x{expected_size[0]}"
        )
    return mask


def read_image_and_mask(image_path: str | os.PathLike, mask_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, checking that their sizes agree."""
    image = read_image(image_path)
    mask = read_mask(mask_path, expected_size=image.shape[:2], image_path=image_path)
    return image, mask


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB uint8 image or a bool/uint8 mask (saved as 0/255)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 or bool pixels, got {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an image atomically; the format follows the suffix (PNG for masks and samples)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        atomic_write_bytes(path, encode_png(array))
        return
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unsupported image format '{path.suffix}'")
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    atomic_write_bytes(path, buffer.getvalue())


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a binary mask as an 8-bit PNG with values 0 and 255, atomically."""
    atomic_write_bytes(path, encode_png(np.asarray(mask) > 0))


def write_downscaled(src: str | os.PathLike, dest: str | os.PathLike, max_side: int) -> tuple[int, int]:
    """Write ``src`` to ``dest`` with its longer side at most ``max_side`` pixels; returns ``(width, height)``.

    For photos far larger than the models' working size (a 6000x4000 camera frame):
    the copy is read like :func:`read_image` (EXIF rotation applied, RGB), shrunk with an
    area filter (no aliasing of fine texture) and written atomically in ``dest``'s format.
    An image already small enough is written unscaled.
    """
    if max_side < 1:
        raise InputError(f"max_side must be >= 1, got {max_side}")
    pixels = read_image(src)
    height, width = pixels.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
    write_image(dest, pixels)
    return size
