"""DRAEM-style synthetic anomalies: Perlin-noise masks filled with augmented textures.

One sample (Zavrtanik et al., DRAEM, 2021):

1. with probability ``clean_probability`` the image is returned untouched;
2. Perlin noise with 2^a x 2^b lattice cells (a, b uniform in 0..5) is rotated by
   U(-90, 90) degrees and thresholded at 0.5: the anomaly mask (optionally
   intersected with a foreground mask, for objects on a background);
3. a texture (see :mod:`anogen.detection.textures`) goes through three of the ten
   DRAEM augmentations (:mod:`anogen.detection.augment`);
4. inside the mask the pixel becomes ``(1 - beta) * texture + beta * image`` with
   beta ~ U(0, 0.8); outside it is left exactly as it was.

A noise draw can leave no pixel above the threshold; that sample is then clean too,
as in DRAEM (``has_anomaly`` says which happened).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from anogen.detection.augment import AUGMENTATIONS, augment_texture
from anogen.detection.textures import FolderTextures, procedural_texture, shuffled_patches
from anogen.errors import InputError

__all__ = ["SynthesisConfig", "SynthesisResult", "AnomalySynthesizer", "perlin_noise", "perlin_mask"]


@dataclass
class SynthesisConfig:
    """How synthetic anomalies are made. Defaults are DRAEM's.

    ``size``: the training resolution (int for square, or (height, width)); textures
    are prepared at this size.
    ``textures_dir``: a folder of texture images (e.g. DTD). Without it, textures are
    procedural or shuffled patches of good images (``patch_probability`` of them).
    """

    size: int | tuple[int, int] = 256
    clean_probability: float = 0.5
    beta_max: float = 0.8
    perlin_threshold: float = 0.5
    textures_dir: str | os.PathLike | None = None
    perlin_max_exponent: int = 5  # lattice cells per axis: 2^0 .. 2^5
    noise_rotation: float = 90.0  # degrees, noise rotated by U(-r, r)
    augmentations: int = 3  # how many of the ten augmentations per texture
    patch_probability: float = 0.5  # share of shuffled good-image patches (no textures_dir)
    texture_cache_size: int = 1024  # decoded folder textures kept per process
    procedural_bank_size: int = 64  # procedural textures, made once each (the augmentations vary them)

    def __post_init__(self) -> None:
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
        if len(size) != 2 or min(size) < 8:
            raise InputError(f"synthesis size must be >= 8 px per side, got {self.size}")
        self.size = (size[0], size[1])
        for name in ("clean_probability", "beta_max", "patch_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 < self.perlin_threshold < 1.0:
            raise InputError(f"perlin_threshold must be in (0, 1), got {self.perlin_threshold}")
        if not 0 <= self.perlin_max_exponent <= 8:
            raise InputError(f"perlin_max_exponent must be in 0..8, got {self.perlin_max_exponent}")
        if self.procedural_bank_size < 1:
            raise InputError(f"procedural_bank_size must be >= 1, got {self.procedural_bank_size}")
        if not 0 <= self.augmentations <= len(AUGMENTATIONS):
            raise InputError(f"augmentations must be in 0..{len(AUGMENTATIONS)}, got {self.augmentations}")

    @property
    def hw(self) -> tuple[int, int]:
        """``size`` as (height, width), the form ``__post_init__`` gives it."""
        return (self.size, self.size) if isinstance(self.size, int) else self.size


@dataclass
class SynthesisResult:
    image: np.ndarray  # float32 (H, W, 3) in [0, 1]
    mask: np.ndarray  # float32 (H, W), 1 where the image was changed
    has_anomaly: bool


# --------------------------------------------------------------------------- Perlin noise
def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


@lru_cache(maxsize=64)
def _cell_weights(cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Position t in [0, 1) of each pixel row of a lattice cell, and its fade weight."""
    t = np.arange(cell, dtype=np.float64) / cell
    return t.astype(np.float32), _fade(t).astype(np.float32)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise with ``res`` = (rows, cols) lattice cells, float32 (H, W).

    Values lie in about [-1, 1] (scaled by sqrt(2) as in DRAEM). At a pixel the noise is
    the fade-weighted sum, over its cell's four corners, of dot(gradient, offset). The
    sum separates by axis: interpolate along x on the lattice rows first (small arrays),
    then along y with the image viewed as (rows, cell height, width), so every
    full-size pass broadcasts over whole contiguous image rows. No BLAS (its threads
    stall on a busy machine), seven full-size passes.
    """
    height, width = shape
    rows, cols = res
    cell_h, cell_w = -(-height // rows), -(-width // cols)  # sides that are not a multiple are cropped
    angles = rng.random((rows + 1, cols + 1), dtype=np.float32) * np.float32(2.0 * math.pi)
    grad_y = np.sin(angles) * np.float32(math.sqrt(2.0))
    grad_x = np.cos(angles) * np.float32(math.sqrt(2.0))

    # Along x, for every lattice row: column j of the padded image lies in cell j // cell_w
    # at position tx. Each corner's x-gradient is dotted with the x offset (tx or tx - 1);
    # its y-gradient waits for the y offset, so it is only interpolated here.
    tx, fx = _cell_weights(cell_w)
    tx, fx = np.tile(tx, cols)[None, :width], np.tile(fx, cols)[None, :width]
    left = np.repeat(np.arange(cols), cell_w)[:width]
    gx_left, gx_right = grad_x[:, left], grad_x[:, left + 1]
    gy_left, gy_right = grad_y[:, left], grad_y[:, left + 1]
    x_term = gx_left * tx + fx * (gx_right * (tx - 1.0) - gx_left * tx)  # (rows + 1, W)
    y_grad = gy_left + fx * (gy_right - gy_left)  # (rows + 1, W)

    # Along y: (rows, cell_h, W); top corner row r, bottom corner row r + 1.
    ty, fy = _cell_weights(cell_h)
    ty, fy = ty[None, :, None], fy[None, :, None]
    top = x_term[:-1, None, :] + ty * y_grad[:-1, None, :]
    bottom = x_term[1:, None, :] + (ty - 1.0) * y_grad[1:, None, :]
    bottom -= top
    bottom *= fy
    top += bottom
    return top.reshape(rows * cell_h, width)[:height]


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, max_exponent: int = 5,
                threshold: float = 0.5, rotation: float = 90.0) -> np.ndarray:
    """DRAEM's anomaly mask: Perlin noise at a random scale, rotated, thresholded (bool)."""
    exp_y, exp_x = rng.integers(0, max_exponent + 1, size=2)
    noise = perlin_noise(shape, (2 ** int(exp_y), 2 ** int(exp_x)), rng)
    if rotation:
        height, width = shape
        angle = rng.uniform(-rotation, rotation)
        matrix = cv2.getRotationMatrix2D((width / 2.0 - 0.5, height / 2.0 - 0.5), angle, 1.0)
        # Nearest-neighbour is enough for a smooth field about to be thresholded
        # (edges move by under half a pixel) and costs half of bilinear.
        noise = cv2.warpAffine(noise, matrix, (width, height), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return noise > threshold


# --------------------------------------------------------------------------- synthesizer
def _to_uint8_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.shape[:2] != size:
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return image


class AnomalySynthesizer:
    """Makes DRAEM-style anomalies on good images.

    ``good_images``: RGB images (uint8, or float in [0, 1]) whose shuffled patches serve
    as textures when no ``textures_dir`` is set; without them the patches come from the
    image being corrupted. ``seed`` fixes the procedural texture bank and the generator
    :meth:`sample` uses when it is not given one. For data-loader workers pass each
    worker its own generator: a result is a pure function of (seed, image, generator
    state, foreground), whatever was sampled before.
    """

    def __init__(self, config: SynthesisConfig, good_images: Sequence[np.ndarray] | None = None,
                 seed: int = 0):
        self.config = config
        self.seed = int(seed)
        self.good_images = good_images if good_images is not None and len(good_images) else None
        self.folder = (FolderTextures(config.textures_dir, config.hw, config.texture_cache_size)
                       if config.textures_dir is not None else None)
        self._bank: dict[int, np.ndarray] = {}
        self._rng = np.random.default_rng(self.seed)

    # -- textures
    def procedural(self, index: int) -> np.ndarray:
        """Bank texture ``index``: made on first use from (seed, index), then kept.

        Procedural textures cost 5-20 ms each, too slow to draw per sample; a bank of
        them, each seen through three random augmentations, is as varied as DTD is.
        """
        if index not in self._bank:
            height, width = self.config.hw
            texture = procedural_texture(height, width, np.random.default_rng([self.seed, index]))
            texture.setflags(write=False)
            self._bank[index] = texture
        return self._bank[index]

    def texture(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An augmented RGB uint8 texture the size of ``image`` (float (H, W, 3) in [0, 1])."""
        height, width = image.shape[:2]
        if self.folder is not None:
            texture = self.folder.sample(rng)
        elif rng.random() < self.config.patch_probability:
            source = image
            if self.good_images is not None:
                source = np.asarray(self.good_images[int(rng.integers(len(self.good_images)))])
            texture = shuffled_patches(_to_uint8_rgb(source, (height, width)), rng)
        else:
            texture = self.procedural(int(rng.integers(self.config.procedural_bank_size)))
        if texture.shape[:2] != (height, width):
            texture = cv2.resize(texture, (width, height), interpolation=cv2.INTER_LINEAR)
        return augment_texture(texture, rng, self.config.augmentations)

    # -- samples
    def sample(self, image: np.ndarray, rng: np.random.Generator | None = None,
               foreground: np.ndarray | None = None) -> SynthesisResult:
        """A (possibly clean) synthetic anomaly on ``image`` (float32 (H, W, 3) in [0, 1]).

        ``foreground``: optional (H, W) mask; anomalies are kept inside it (for objects
        whose background must stay clean). Only pixels under the returned mask differ
        from the input; the input is never modified.
        """
        rng = self._rng if rng is None else rng
        image = self._check_image(image)
        height, width = image.shape[:2]
        out = image.copy()
        if rng.random() < self.config.clean_probability:
            return SynthesisResult(out, np.zeros((height, width), np.float32), False)
        region = perlin_mask((height, width), rng, self.config.perlin_max_exponent,
                             self.config.perlin_threshold, self.config.noise_rotation)
        if foreground is not None:
            foreground = np.asarray(foreground)
            if foreground.shape != (height, width):
                raise InputError(f"foreground mask shape {foreground.shape} does not match image {(height, width)}")
            region &= foreground if foreground.dtype == bool else foreground > 0.5
        if not region.any():
            return SynthesisResult(out, np.zeros((height, width), np.float32), False)
        texture = self.texture(image, rng)
        beta = np.float32(rng.uniform(0.0, self.config.beta_max))
        # out += (1 - beta) * region * (texture - out), only over the region's bounding box
        # (masks are often small). Where region is 0 the increment is exactly zero, so
        # pixels outside the region keep their values; plain arithmetic is ~5x faster
        # here than a masked copy.
        x, y, w, h = cv2.boundingRect(region.view(np.uint8))
        box = (slice(y, y + h), slice(x, x + w))
        patch = out[box]
        weight = region[box].astype(np.float32)[..., None]
        weight *= np.float32(1.0) - beta
        delta = texture[box].astype(np.float32)
        delta *= np.float32(1.0 / 255.0)
        delta -= patch
        delta *= weight
        patch += delta
        mask = region.astype(np.float32)
        return SynthesisResult(out, mask, True)

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        if not np.issubdtype(image.dtype, np.floating):
            raise InputError(f"expected a float image in [0, 1], got dtype {image.dtype} (divide uint8 by 255)")
        return image.astype(np.float32, copy=False)
