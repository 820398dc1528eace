"""Where the content of a synthetic anomaly comes from.

DRAEM fills its noise masks with photos from the Describable Textures Dataset (DTD).
We cannot assume a download, so there are three sources:

* :class:`FolderTextures`: any folder of images the user names (DTD, or their own
  photos), searched recursively, decoded once and kept in a bounded cache;
* :func:`procedural_texture`: textures drawn from a few procedural families (fractal
  noise, marble, stripes, cells, scratches) coloured with a random palette;
* :func:`shuffled_patches`: a good image cut into a grid with its tiles shuffled, so
  the anomaly has the part's own colours and grain but not its structure.

Every function returns RGB ``uint8`` (H, W, 3) and takes its random generator
explicitly, so results are a pure function of the generator state.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from anogen.data.imageio import IMAGE_SUFFIXES, read_image
from anogen.errors import InputError

__all__ = ["PROCEDURAL_FAMILIES", "procedural_texture", "shuffled_patches", "FolderTextures"]


# --------------------------------------------------------------------------- procedural
def _palette(rng: np.random.Generator, stops: int) -> np.ndarray:
    """A (256, 3) uint8 colour ramp through ``stops`` random colours."""
    colours = rng.integers(0, 256, size=(stops, 3)).astype(np.float64)
    positions = np.linspace(0.0, 255.0, stops)
    ramp = np.stack([np.interp(np.arange(256), positions, colours[:, c]) for c in range(3)], axis=1)
    return np.rint(ramp).astype(np.uint8)


def _colourise(field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a float field to colours: normalise to 0..255, look up a random palette."""
    low, high = float(field.min()), float(field.max())
    scaled = (field - low) * (255.0 / max(high - low, 1e-6))
    index = scaled.astype(np.uint8)
    return _palette(rng, int(rng.integers(2, 5)))[index]


def _fractal_noise(height: int, width: int, rng: np.random.Generator, base_cells: int, octaves: int) -> np.ndarray:
    """Sum of upsampled random grids, each octave twice as fine and half as strong."""
    field = np.zeros((height, width), dtype=np.float32)
    amplitude, cells = 1.0, base_cells
    for _ in range(octaves):
        grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
        field += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        amplitude *= 0.5
        cells *= 2
    return field


def _noise_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    field = _fractal_noise(h, w, rng, int(rng.integers(2, 9)), int(rng.integers(2, 6)))
    return _colourise(field, rng)


def _coordinates(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle (for oriented patterns)."""
    angle = rng.uniform(0.0, np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


def _marble_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    along, _ = _coordinates(h, w, rng)
    turbulence = _fractal_noise(h, w, rng, int(rng.integers(2, 6)), 4)
    period = rng.uniform(0.05, 0.3) * max(h, w)
    field = np.sin(2.0 * np.pi * along / period + rng.uniform(2.0, 8.0) * turbulence)
    return _colourise(np.abs(field) ** rng.uniform(0.3, 1.5), rng)


def _stripe_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    along, _ = _coordinates(h, w, rng)
    period = rng.uniform(4.0, 0.25 * max(h, w))
    phase = (along / period) % 1.0
    duty = rng.uniform(0.2, 0.8)
    field = np.where(phase < duty, 1.0, 0.0) if rng.random() < 0.5 else np.sin(2.0 * np.pi * phase)
    field = field + 0.3 * _fractal_noise(h, w, rng, 8, 3)
    return _colourise(field.astype(np.float32), rng)


def _cell_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Worley cells: distance to the nearest of random seeds, worked out on a coarse grid."""
    coarse = 64
    seeds = rng.random((int(rng.integers(8, 48)), 2)) * coarse
    y, x = np.mgrid[0:coarse, 0:coarse].astype(np.float64)
    distances = np.hypot(x[..., None] - seeds[:, 0], y[..., None] - seeds[:, 1])
    nearest = np.sort(distances, axis=-1)
    edges = nearest[..., 1] - nearest[..., 0] if rng.random() < 0.5 else nearest[..., 0]
    field = cv2.resize(edges.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return _colourise(field, rng)


def _scratch_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Random lines and arcs on a noisy background (scratch- and crack-like)."""
    background = _noise_texture(h, w, rng)
    canvas = np.ascontiguousarray(background)
    for _ in range(int(rng.integers(5, 40))):
        start = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.line(canvas, start, end, colour, thickness=int(rng.integers(1, 6)), lineType=cv2.LINE_AA)
    return canvas


#: The procedural families, by name.
PROCEDURAL_FAMILIES: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "noise": _noise_texture,
    "marble": _marble_texture,
    "stripes": _stripe_texture,
    "cells": _cell_texture,
    "scratches": _scratch_texture,
}


def procedural_texture(height: int, width: int, rng: np.random.Generator, family: str | None = None) -> np.ndarray:
    """A random texture of a random (or the named) family, RGB uint8 (height, width, 3)."""
    if family is None:
        family = list(PROCEDURAL_FAMILIES)[int(rng.integers(len(PROCEDURAL_FAMILIES)))]
    try:
        make = PROCEDURAL_FAMILIES[family]
    except KeyError:
        raise InputError(f"unknown texture family {family!r}; known: {', '.join(PROCEDURAL_FAMILIES)}") from None
    return make(height, width, rng)


# --------------------------------------------------------------------------- good images
def shuffled_patches(image: np.ndarray, rng: np.random.Generator, grid: int | None = None) -> np.ndarray:
    """The image cut into ``grid`` x ``grid`` tiles (2, 4 or 8 at random), tiles shuffled.

    Edge rows/columns that do not fill a tile are cropped, then the result is resized
    back to the input size. ``image`` is RGB uint8.
    """
    height, width = image.shape[:2]
    if grid is None:
        grid = int(rng.choice((2, 4, 8)))
    tile_h, tile_w = height // grid, width // grid
    if tile_h < 1 or tile_w < 1:
        raise InputError(f"image of {width}x{height} px is too small for a {grid}x{grid} grid")
    cropped = image[: tile_h * grid, : tile_w * grid]
    tiles = (cropped.reshape(grid, tile_h, grid, tile_w, 3).transpose(0, 2, 1, 3, 4)
             .reshape(grid * grid, tile_h, tile_w, 3))
    tiles = tiles[rng.permutation(grid * grid)]
    shuffled = (tiles.reshape(grid, grid, tile_h, tile_w, 3).transpose(0, 2, 1, 3, 4)
                .reshape(tile_h * grid, tile_w * grid, 3))
    if shuffled.shape[:2] != (height, width):
        shuffled = cv2.resize(shuffled, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(shuffled)


# --------------------------------------------------------------------------- folder
class FolderTextures:
    """Texture images from a folder (searched recursively), resized to one size.

    Decoded textures are kept in a least-recently-used cache of ``cache_size`` entries
    (a 256 px texture is 192 KB, so the default 1024 costs about 200 MB per process).
    The cache changes only speed, never which texture a generator state picks.
    """

    def __init__(self, folder: str | os.PathLike, size: tuple[int, int], cache_size: int = 1024):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"textures folder {self.folder} does not exist or is not a folder")
        self.files = sorted(p for p in self.folder.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not self.files:
            raise InputError(f"textures folder {self.folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.size = size  # (height, width)
        self.cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        """Texture ``index`` as RGB uint8 at ``size`` (read-only: callers must not modify it)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        height, width = self.size
        image = read_image(self.files[index])  # InputError naming the file if it is unreadable
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        image.setflags(write=False)
        if self.cache_size:
            self._cache[index] = image
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return image

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return self.load(int(rng.integers(len(self.files))))
