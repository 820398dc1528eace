"""The ten colour/geometry augmentations DRAEM applies to its anomaly textures.

DRAEM (Zavrtanik et al., 2021) draws three of these, without repetition and in random
order, for every synthetic anomaly. The original used imgaug; these are numpy/OpenCV
versions with the same parameter ranges. All work on RGB ``uint8`` (H, W, 3) arrays
and take the random generator explicitly, so a seed reproduces a texture exactly.
Most are 256-entry lookup tables, which is why the whole chain costs well under a
millisecond at 256 px.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["AUGMENTATIONS", "augment_texture"]

_IDENTITY = np.arange(256, dtype=np.float64)


def _apply_channel_luts(image: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Apply one 256-entry table per channel; ``luts`` is (3, 256) of floats."""
    table = np.clip(np.rint(luts), 0, 255).astype(np.uint8).T.reshape(256, 1, 3)
    return cv2.LUT(np.ascontiguousarray(image), table)


def gamma_contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel gamma in [0.5, 2.0] (imgaug GammaContrast((0.5, 2.0), per_channel=True))."""
    gammas = rng.uniform(0.5, 2.0, size=3)
    luts = 255.0 * (_IDENTITY[None, :] / 255.0) ** gammas[:, None]
    return _apply_channel_luts(image, luts)


def brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Luminance x U(0.8, 1.2) + U(-30, 30) (imgaug MultiplyAndAddToBrightness)."""
    multiply, add = rng.uniform(0.8, 1.2), rng.uniform(-30.0, 30.0)
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    lut = np.clip(np.rint(_IDENTITY * multiply + add), 0, 255).astype(np.uint8)
    ycrcb[..., 0] = cv2.LUT(ycrcb[..., 0], lut)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0  # PIL's SMOOTH kernel


def sharpness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PIL ImageEnhance.Sharpness with factor U(0, 2): blend with a smoothed copy.

    factor < 1 blurs, > 1 sharpens (extrapolates away from the smoothed copy). As in
    PIL, the one-pixel border is not filtered.
    """
    factor = rng.uniform(0.0, 2.0)
    smooth = cv2.filter2D(image, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)
    smooth[0, :], smooth[-1, :], smooth[:, 0], smooth[:, -1] = image[0, :], image[-1, :], image[:, 0], image[:, -1]
    return cv2.addWeighted(image, factor, smooth, 1.0 - factor, 0.0)  # saturating uint8 arithmetic


def hue_saturation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add U(-50, 50) to hue and, independently, to saturation (imgaug AddToHueAndSaturation).

    imgaug's hue unit is 1/255 of the circle; OpenCV's 8-bit hue runs 0..179.
    """
    hue_shift = rng.uniform(-50.0, 50.0) * 180.0 / 255.0
    saturation_shift = rng.uniform(-50.0, 50.0)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hue_lut = (np.rint(_IDENTITY + hue_shift) % 180).astype(np.uint8)
    saturation_lut = np.clip(np.rint(_IDENTITY + saturation_shift), 0, 255).astype(np.uint8)
    hsv[..., 0] = cv2.LUT(hsv[..., 0], hue_lut)
    hsv[..., 1] = cv2.LUT(hsv[..., 1], saturation_lut)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def solarize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """With probability 0.5, invert values >= a threshold in [32, 128] (imgaug Solarize(0.5))."""
    threshold = rng.uniform(32.0, 128.0)
    if rng.random() >= 0.5:
        return image
    lut = np.where(_IDENTITY >= threshold, 255.0 - _IDENTITY, _IDENTITY)
    return _apply_channel_luts(image, np.repeat(lut[None], 3, axis=0))


def posterize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep the top 1..8 bits of every value (imgaug Posterize())."""
    bits = int(rng.integers(1, 9))
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return np.bitwise_and(image, mask)


def invert(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """255 - value (imgaug Invert())."""
    return cv2.bitwise_not(image)


def autocontrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PIL ImageOps.autocontrast per channel, cutting 0..20 % off each end of the histogram."""
    cutoff = int(rng.integers(0, 21)) / 100.0
    luts = np.empty((3, 256))
    n = image.shape[0] * image.shape[1]
    for c in range(3):
        histogram = cv2.calcHist([image], [c], None, [256], [0, 256]).ravel()
        cumulative = np.cumsum(histogram)
        low = int(np.searchsorted(cumulative, cutoff * n, side="right"))
        high = int(np.searchsorted(cumulative, (1.0 - cutoff) * n, side="left"))
        low, high = min(low, 255), min(max(high, 0), 255)
        if high <= low:
            luts[c] = _IDENTITY
            continue
        scale = 255.0 / (high - low)
        luts[c] = (_IDENTITY - low) * scale
    return _apply_channel_luts(image, luts)


def equalize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Histogram equalisation of each channel (PIL ImageOps.equalize)."""
    return cv2.merge([cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(3)])


def rotate(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by U(-45, 45) degrees about the centre, black outside (imgaug Affine(rotate))."""
    angle = rng.uniform(-45.0, 45.0)
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2.0 - 0.5, height / 2.0 - 0.5), angle, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]

#: The ten augmentations, in DRAEM's order.
AUGMENTATIONS: tuple[Augmentation, ...] = (
    gamma_contrast, brightness, sharpness, hue_saturation, solarize,
    posterize, invert, autocontrast, equalize, rotate,
)


def augment_texture(texture: np.ndarray, rng: np.random.Generator, count: int = 3) -> np.ndarray:
    """Apply ``count`` distinct augmentations, chosen and ordered at random."""
    for index in rng.choice(len(AUGMENTATIONS), size=count, replace=False):
        texture = AUGMENTATIONS[index](texture, rng)
    return texture
