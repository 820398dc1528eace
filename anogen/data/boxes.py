"""Boxes on good images: where stage 2 paints a defect.

A box is sampled with a size drawn from a per-defect-kind range (fractions of the image
side) and a position inside the *allowed area* of the image, decided in this order:

1. an allowed region the user painted for the defect kind (``region``): one mask for
   aligned parts (``region_frame="image"``), or a mask drawn over the part's bounding box
   that follows the detected foreground on unaligned parts (``region_frame="foreground"``);
2. else, when support masks are given (``prior_masks``), near where the real defects
   were: their union, grown so a box centred on a real defect fits, on the foreground;
3. else the foreground of the good image: GrabCut (the paper), falling back to an Otsu
   threshold when GrabCut finds nothing. ``foreground="auto"`` (the default of the CLI)
   takes the whole image for a texture: an MVTec AD texture category by name, or, for
   other data, an image whose border looks like its centre (:func:`looks_like_texture`).

A candidate is accepted when at least ``min_inside`` of its area lies in the allowed
area (the reference code's rule, ``rule="inside"``, the default), or when its IoU with
it is at least ``min_iou`` (the paper's rule, ``rule="iou"``: it can only accept boxes
about as large as the object itself). A kind flagged for it gets rotated boxes
(``rotate``): the rectangle turned by 0-180 degrees about its centre, as the reference
code drew them; its box mask is the rotated rectangle.

The reference size table of the MVTec AD defect kinds ships as ``box_sizes.json``; for
a new defect kind, :func:`size_range_from_masks` derives a range from its support masks.

The box itself, :class:`anogen.data.box.Box`, and its list and object codecs live in
:mod:`anogen.data.box`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from anogen.data.box import Box, _rotated_corners
from anogen.data.mvtec import OBJECT_CATEGORIES, TEXTURE_CATEGORIES
from anogen.errors import InputError

if TYPE_CHECKING:
    import threading

    from anogen.jobs import ProgressFn

log = logging.getLogger(__name__)

ForegroundMethod = Literal["auto", "grabcut", "otsu", "all"]
BoxRule = Literal["iou", "inside"]
RegionFrame = Literal["image", "foreground"]
FOREGROUND_METHODS = ("auto", "grabcut", "otsu", "all")
BOX_RULES = ("iou", "inside")
REGION_FRAMES = ("image", "foreground")
BOX_SIZES_FILE = Path(__file__).with_name("box_sizes.json")
BOXES_FILE_VERSION = 1


# ----------------------------------------------------------------------------- foreground


def _otsu_foreground(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if int(gray.max()) == int(gray.min()):
        return np.ones(gray.shape, dtype=bool)  # a flat image has no object to separate
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    _, binary = cv2.threshold(blurred, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    foreground = binary.astype(bool)
    # The image border is mostly background: pick the polarity that agrees with it.
    border = np.concatenate([foreground[0], foreground[-1], foreground[:, 0], foreground[:, -1]])
    if border.mean() > 0.5:
        foreground = ~foreground
    side = max(3, (min(gray.shape) // 100) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    cleaned = cv2.morphologyEx(foreground.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    cleaned = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, kernel)
    return cleaned.astype(bool) if cleaned.any() else foreground


def _grabcut_foreground(image: np.ndarray, *, max_side: int = 256, iterations: int = 5) -> np.ndarray | None:
    """GrabCut initialised with a rectangle 5 % inside the border; None when it fails."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))  # GrabCut is slow; a small copy suffices
    small = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    margin = max(1, round(0.05 * min(sh, sw)))
    if sw - 2 * margin < 2 or sh - 2 * margin < 2:
        return None
    labels = np.zeros((sh, sw), dtype=np.uint8)
    background_model = np.zeros((1, 65), dtype=np.float64)
    foreground_model = np.zeros((1, 65), dtype=np.float64)
    try:
        cv2.setRNGSeed(0)  # GrabCut's GMM initialisation uses OpenCV's global RNG
        cv2.grabCut(np.ascontiguousarray(small[:, :, ::-1]), labels, (margin, margin, sw - 2 * margin, sh - 2 * margin),
                    background_model, foreground_model, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error as exc:
        log.debug("GrabCut failed: %s", exc)
        return None
    foreground = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if foreground.mean() < 0.005:
        return None
    if scale != 1.0:
        foreground = cv2.resize(foreground.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return foreground


# Texture test: tile statistics of the border ring against the centre. Thresholds were
# set on synthetic bricks (with shading), stripes, grids and the demo fabric (textures:
# mean gap <= 0.76, spread ratio <= 1.53) against discs of 20-120 px radius and the
# demo washer on dark and light backgrounds (objects: gap >= 1.0 or ratio >= 1.9).
_TEXTURE_GRID = 10
_TEXTURE_MAX_GAP = 1.0
_TEXTURE_MAX_SPREAD_RATIO = 1.75


def texture_statistics(image: np.ndarray) -> tuple[float, float]:
    """How unlike its centre the border of an image is: ``(gap, spread_ratio)``.

    The image (128 px on its longer side) is cut into a 10 x 10 grid; each tile gives its
    mean Lab colour and mean gradient magnitude. ``gap`` is the largest difference between
    the mean of the border tiles and of the central 6 x 6, in units of the tiles' spread;
    ``spread_ratio`` compares how much the tiles vary in the centre and on the border
    (>= 1, either way). A texture looks alike everywhere: both stay small. An object on a
    background differs from its border in colour or detail.
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    scale = 128 / max(height, width)
    small = cv2.resize(image, (max(_TEXTURE_GRID, round(width * scale)), max(_TEXTURE_GRID, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(lab[..., 0], cv2.CV_32F, 1, 0), cv2.Sobel(lab[..., 0], cv2.CV_32F, 0, 1))
    features = np.dstack([lab, gradient])
    ys = np.linspace(0, features.shape[0], _TEXTURE_GRID + 1).astype(int)
    xs = np.linspace(0, features.shape[1], _TEXTURE_GRID + 1).astype(int)
    tiles = np.array([[features[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].reshape(-1, 4).mean(axis=0)
                       for j in range(_TEXTURE_GRID)] for i in range(_TEXTURE_GRID)])
    ring = np.zeros((_TEXTURE_GRID, _TEXTURE_GRID), dtype=bool)
    ring[0] = ring[-1] = ring[:, 0] = ring[:, -1] = True
    centre = np.zeros_like(ring)
    centre[2:-2, 2:-2] = True
    # Floors keep sensor noise and mild shading (Lab units: L 12, a/b 8) from counting
    # as a difference; the gradient's floor follows the image's own level of detail.
    floor = np.array([12.0, 8.0, 8.0, 0.25 * float(tiles[..., 3].mean()) + 2.0])
    spread = np.maximum(tiles.reshape(-1, 4).std(axis=0), floor)
    gap = np.abs(tiles[ring].mean(axis=0) - tiles[centre].mean(axis=0)) / spread
    ratio = (tiles[centre].std(axis=0) + floor) / (tiles[ring].std(axis=0) + floor)
    return float(gap.max()), float(np.maximum(ratio, 1.0 / ratio).max())


def looks_like_texture(image: np.ndarray) -> bool:
    """True when the image is a surface that looks alike everywhere (see
    :func:`texture_statistics`), so a defect may go anywhere on it."""
    gap, ratio = texture_statistics(image)
    return gap < _TEXTURE_MAX_GAP and ratio < _TEXTURE_MAX_SPREAD_RATIO


def auto_foreground_method(images: Sequence[np.ndarray], category: str | None = None) -> ForegroundMethod:
    """What ``foreground="auto"`` means for a set of good images of one category.

    A known MVTec AD category decides by name (textures: ``all``; objects: ``grabcut``);
    otherwise the majority of :func:`looks_like_texture` over the first five images.
    """
    if category in TEXTURE_CATEGORIES:
        return "all"
    if category in OBJECT_CATEGORIES:
        return "grabcut"
    votes = [looks_like_texture(image) for image in list(images)[:5]]
    return "all" if votes and 2 * sum(votes) > len(votes) else "grabcut"


def foreground_mask(image: np.ndarray, method: ForegroundMethod = "grabcut", *,
                    category: str | None = None) -> np.ndarray:
    """The object pixels of a good image, bool ``(H, W)``.

    ``grabcut`` (the paper) falls back to ``otsu`` when GrabCut finds no object;
    ``all`` treats the whole image as foreground (texture categories); ``auto`` picks
    ``all`` for a texture and ``grabcut`` otherwise (:func:`auto_foreground_method`).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"foreground_mask expects an RGB uint8 image, got {image.dtype} {image.shape}")
    if method == "auto":
        method = auto_foreground_method([image], category)
    if method == "all":
        return np.ones(image.shape[:2], dtype=bool)
    if method == "grabcut":
        foreground = _grabcut_foreground(image)
        if foreground is not None:
            return foreground
        log.info("GrabCut found no foreground; falling back to Otsu")
        return _otsu_foreground(image)
    if method == "otsu":
        return _otsu_foreground(image)
    raise InputError(f"unknown foreground method {method!r}; choose one of {', '.join(FOREGROUND_METHODS)}")


# ----------------------------------------------------------------------------- regions


def place_region(region: np.ndarray, height: int, width: int, *, frame: RegionFrame = "image",
                 foreground: np.ndarray | None = None) -> np.ndarray:
    """Where a defect kind may occur on one good image, bool ``(height, width)``.

    ``region`` is a mask the user painted (any size, non-zero = allowed). ``frame="image"``
    stretches it over the whole image (aligned parts: one mask fits every image);
    ``frame="foreground"`` stretches it over the bounding box of ``foreground`` (unaligned
    parts: the region moves and scales with the part found on each image).
    """
    region = np.asarray(region) > 0
    if region.ndim != 2 or not region.any():
        raise InputError("the allowed region is empty: paint where the defect can occur")
    if frame not in REGION_FRAMES:
        raise InputError(f"unknown region frame {frame!r}; choose one of {', '.join(REGION_FRAMES)}")
    target = Box(0, 0, width, height)
    if frame == "foreground":
        if foreground is None or not np.asarray(foreground).any():
            raise InputError("a region relative to the foreground needs a foreground on the image")
        target = Box.from_mask(np.asarray(foreground) > 0)
    placed = np.zeros((height, width), dtype=bool)
    resized = cv2.resize(region.astype(np.uint8), (target.width, target.height), interpolation=cv2.INTER_NEAREST)
    placed[target.y0:target.y1, target.x0:target.x1] = resized > 0
    return placed


def location_prior(masks: Iterable[np.ndarray], height: int, width: int, radius: int) -> np.ndarray:
    """Near where the real defects were: the union of the support masks (stretched to
    ``height`` x ``width``, as for aligned parts), grown by ``radius`` pixels, bool."""
    union = np.zeros((height, width), dtype=bool)
    for index, mask in enumerate(masks):
        mask = np.asarray(mask) > 0
        if mask.ndim != 2:
            raise InputError(f"support mask {index}: expected a 2-D mask, got shape {mask.shape}")
        # INTER_AREA then > 0: a thin defect on a larger mask is never lost.
        union |= cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0
    if not union.any():
        raise InputError("the support masks have no defect pixels: cannot place boxes near them")
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        union = cv2.dilate(union.astype(np.uint8), kernel) > 0
    return union


# ----------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class BoxSizeRange:
    """Box width and height ranges as fractions of the image width and height."""

    w_lo: float
    w_hi: float
    h_lo: float
    h_hi: float

    def __post_init__(self) -> None:
        for lo, hi, side in ((self.w_lo, self.w_hi, "width"), (self.h_lo, self.h_hi, "height")):
            if not (0.0 < lo <= hi <= 1.0):
                raise InputError(
                    f"box {side} range [{lo}, {hi}] is invalid: "
                    "need 0 < low <= high <= 1 (fractions of the image side)")

    @classmethod
    def from_sequence(cls, values: Sequence[float]) -> BoxSizeRange:
        if len(values) != 4:
            raise InputError(f"a box size range needs 4 numbers w_lo w_hi h_lo h_hi, got {list(values)}")
        return cls(*(float(v) for v in values))

    def to_list(self) -> list[float]:
        return [self.w_lo, self.w_hi, self.h_lo, self.h_hi]


DEFAULT_SIZE_RANGE = BoxSizeRange(0.1, 0.2, 0.1, 0.2)


@lru_cache(maxsize=1)
def reference_size_table() -> dict[str, BoxSizeRange]:
    """The reference ranges of the MVTec AD defect kinds, keyed ``"category/kind"``."""
    data = json.loads(BOX_SIZES_FILE.read_text(encoding="utf-8"))
    return {key: BoxSizeRange.from_sequence(values) for key, values in data["ranges"].items()}


def reference_size_range(category: str, kind: str) -> BoxSizeRange | None:
    """The reference range of one MVTec AD defect kind, or None when it has none."""
    return reference_size_table().get(f"{category}/{kind}")


@lru_cache(maxsize=1)
def reference_rotated_kinds() -> frozenset[str]:
    """The ``"category/kind"`` keys whose boxes the reference flags as rotatable."""
    data = json.loads(BOX_SIZES_FILE.read_text(encoding="utf-8"))
    return frozenset(data.get("rotated", ()))


def reference_rotates(category: str, kind: str) -> bool:
    """Whether the reference code flags this MVTec AD defect kind for rotated boxes."""
    return f"{category}/{kind}" in reference_rotated_kinds()


def size_range_from_masks(masks: Iterable[np.ndarray], *, margin: float = 0.25,
                          min_fraction: float = 0.01) -> BoxSizeRange:
    """A default size range for a new defect kind from its support masks.

    Each connected defect region (regions under 10 % of the mask's largest one are
    specks and ignored) gives a width and height fraction; the range spans them, widened
    by ``margin`` (relative) on both ends and clipped to [min_fraction, 1].
    """
    widths: list[float] = []
    heights: list[float] = []
    for index, mask in enumerate(masks):
        mask = np.asarray(mask) > 0
        if mask.ndim != 2:
            raise InputError(f"support mask {index}: expected a 2-D mask, got shape {mask.shape}")
        if not mask.any():
            raise InputError(f"support mask {index} has no defect pixels")
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        regions = stats[1:count]
        largest = regions[:, cv2.CC_STAT_AREA].max()
        for region in regions:
            if region[cv2.CC_STAT_AREA] >= 0.1 * largest:
                widths.append(region[cv2.CC_STAT_WIDTH] / mask.shape[1])
                heights.append(region[cv2.CC_STAT_HEIGHT] / mask.shape[0])
    if not widths:
        raise InputError("no support masks given: cannot derive a box size range")

    def widen(lo: float, hi: float) -> tuple[float, float]:
        lo = min(1.0, max(min_fraction, lo * (1.0 - margin)))
        hi = min(1.0, max(lo, hi * (1.0 + margin)))
        return lo, hi

    w_lo, w_hi = widen(min(widths), max(widths))
    h_lo, h_hi = widen(min(heights), max(heights))
    return BoxSizeRange(w_lo, w_hi, h_lo, h_hi)


# ----------------------------------------------------------------------------- proposals


def image_seed(seed: int, name: str) -> np.random.Generator:
    """A generator for one image that depends on the seed and the image's name only,
    so adding images to a folder does not change the boxes of the others."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def propose_boxes(image: np.ndarray, size_range: BoxSizeRange, n: int, *,
                  foreground: np.ndarray | None = None, rule: BoxRule = "inside",
                  min_iou: float = 0.5, min_inside: float = 0.75,
                  seed: int | np.random.Generator = 0, max_tries: int = 1000,
                  rotate: bool = False) -> list[Box]:
    """Sample ``n`` boxes on ``image`` whose size lies in ``size_range`` and whose position
    satisfies ``rule`` against the allowed area. Deterministic for a given seed.

    ``foreground`` is the allowed area, a bool mask of the image's size (default: GrabCut
    of ``image``; :meth:`BoxPlacement.allowed_area` builds it from a region or a prior).
    ``rotate`` turns each candidate by an angle drawn from [0, 180) degrees about its
    centre; a rotated box must still lie inside the image. Raises InputError naming the
    rule when ``max_tries`` candidates for one box all fail.
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise InputError(f"propose_boxes expects an image, got shape {image.shape}")
    height, width = image.shape[:2]
    if n < 0:
        raise InputError(f"number of boxes must be >= 0, got {n}")
    if rule not in BOX_RULES:
        raise InputError(f"unknown box rule {rule!r}; choose one of {', '.join(BOX_RULES)}")
    if max_tries < 1:
        raise InputError(f"max_tries must be >= 1, got {max_tries}")
    if foreground is None:
        foreground = foreground_mask(image, "grabcut")
    foreground = np.asarray(foreground) > 0
    if foreground.shape != (height, width):
        raise InputError(f"foreground mask is {foreground.shape[1]}x{foreground.shape[0]} but the image is "
                         f"{width}x{height}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    # Summed-area table: the foreground area of any axis-aligned box in O(1).
    table = np.zeros((height + 1, width + 1), dtype=np.int64)
    table[1:, 1:] = foreground.cumsum(0).cumsum(1)
    foreground_area = int(table[-1, -1])

    boxes: list[Box] = []
    for _ in range(n):
        # All candidates of one box are drawn at once: fast, and still deterministic.
        bw = np.rint(rng.uniform(size_range.w_lo, size_range.w_hi, max_tries) * width)
        bh = np.rint(rng.uniform(size_range.h_lo, size_range.h_hi, max_tries) * height)
        bw = np.clip(bw, 1, width).astype(np.int64)
        bh = np.clip(bh, 1, height).astype(np.int64)
        if rotate:
            x0, y0, angle, fits = _rotated_positions(rng, bw, bh, height, width)
            inside = _rotated_inside_fraction(foreground, x0, y0, bw, bh, angle) * (bw * bh)
        else:
            x0 = np.floor(rng.random(max_tries) * (width - bw + 1)).astype(np.int64)
            y0 = np.floor(rng.random(max_tries) * (height - bh + 1)).astype(np.int64)
            angle = np.zeros(max_tries)
            fits = np.ones(max_tries, dtype=bool)
            x1, y1 = x0 + bw, y0 + bh
            inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        area = bw * bh
        if rule == "iou":
            score = inside / (area + foreground_area - inside)
            valid = fits & (score >= min_iou)
        else:
            score = inside / area
            valid = fits & (score >= min_inside)
        hits = np.flatnonzero(valid)
        if len(hits) == 0:
            need = f"IoU with the allowed area >= {min_iou}" if rule == "iou" else \
                f">= {min_inside:.0%} of the box in the allowed area"
            hint = ("The IoU rule only accepts boxes about the size of the object: try --rule inside"
                    if rule == "iou" else "Try a smaller size, a lower --min-inside or --foreground all")
            best = float(np.where(fits, score, 0.0).max())
            raise InputError(
                f"no valid box after {max_tries} tries on a {width}x{height} image: no box of width "
                f"{size_range.w_lo:g}-{size_range.w_hi:g} and height {size_range.h_lo:g}-{size_range.h_hi:g} "
                f"(fractions of the side) has {need} (best: {best:.2f}; the allowed area covers "
                f"{foreground_area / (width * height):.0%} of the image). {hint}")
        i = int(hits[0])
        boxes.append(Box(int(x0[i]), int(y0[i]), int(x0[i] + bw[i]), int(y0[i] + bh[i]), float(angle[i])))
    return boxes


def _rotated_positions(rng: np.random.Generator, bw: np.ndarray, bh: np.ndarray, height: int,
                       width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-left corners (before rotation), angles and a fits-in-the-image flag for
    rotated candidates of sizes ``bw`` x ``bh``."""
    count = len(bw)
    angle = np.round(rng.uniform(0.0, 180.0, count), 1)  # one decimal: readable in boxes.json
    theta = np.deg2rad(angle)
    cos, sin = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    half_w = (bw * cos + bh * sin) / 2  # half the size of the rotated box's bounds
    half_h = (bw * sin + bh * cos) / 2
    cx = half_w + rng.random(count) * np.maximum(width - 2 * half_w, 0.0)
    cy = half_h + rng.random(count) * np.maximum(height - 2 * half_h, 0.0)
    x0 = np.rint(cx - bw / 2).astype(np.int64)
    y0 = np.rint(cy - bh / 2).astype(np.int64)
    corners = _rotated_corners(x0 + bw / 2, y0 + bh / 2, bw.astype(float), bh.astype(float), angle)
    lo = np.floor(corners.min(axis=1) + 1e-6)
    hi = np.ceil(corners.max(axis=1) - 1e-6)
    fits = (lo[:, 0] >= 0) & (lo[:, 1] >= 0) & (hi[:, 0] <= width) & (hi[:, 1] <= height)
    return x0, y0, angle, fits


def _rotated_inside_fraction(allowed: np.ndarray, x0: np.ndarray, y0: np.ndarray, bw: np.ndarray,
                             bh: np.ndarray, angle: np.ndarray, samples: int = 12) -> np.ndarray:
    """The share of each rotated candidate in ``allowed``, from a ``samples`` x ``samples``
    grid of points spread over the rectangle (points off the image count as outside)."""
    height, width = allowed.shape
    steps = (np.arange(samples) + 0.5) / samples - 0.5
    du, dv = np.meshgrid(steps, steps)
    du, dv = du.ravel()[None, :] * bw[:, None], dv.ravel()[None, :] * bh[:, None]
    theta = np.deg2rad(angle)[:, None]
    cos, sin = np.cos(theta), np.sin(theta)
    px = (x0 + bw / 2)[:, None] + cos * du + sin * dv
    py = (y0 + bh / 2)[:, None] - sin * du + cos * dv
    xi, yi = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    on_image = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
    hit = np.zeros(xi.shape, dtype=bool)
    hit[on_image] = allowed[yi[on_image], xi[on_image]]
    return hit.mean(axis=1)


@dataclass
class BoxPlacement:
    """Where the boxes of one defect kind may go, and how they are drawn.

    The allowed area of an image is ``region`` when given, else the ``prior_masks``
    prior on the foreground, else the foreground (see the module docstring).
    """

    foreground: ForegroundMethod = "auto"
    category: str | None = None  # an MVTec AD category name settles texture vs object
    region: np.ndarray | None = None  # painted allowed region, non-zero = allowed
    region_frame: RegionFrame = "image"
    prior_masks: list[np.ndarray] | None = None  # support masks: boxes go near the real defects
    rotate: bool = False
    rule: BoxRule = "inside"
    min_iou: float = 0.5
    min_inside: float = 0.75
    max_tries: int = 1000

    def validate(self) -> None:
        if self.foreground not in FOREGROUND_METHODS:
            raise InputError(f"unknown foreground method {self.foreground!r}; "
                             f"choose one of {', '.join(FOREGROUND_METHODS)}")
        if self.region_frame not in REGION_FRAMES:
            raise InputError(f"unknown region frame {self.region_frame!r}; choose one of {', '.join(REGION_FRAMES)}")
        if self.rule not in BOX_RULES:
            raise InputError(f"unknown box rule {self.rule!r}; choose one of {', '.join(BOX_RULES)}")
        if self.region is not None and not (np.asarray(self.region) > 0).any():
            raise InputError("the allowed region is empty: paint where the defect can occur")
        if self.prior_masks is not None and not any((np.asarray(m) > 0).any() for m in self.prior_masks):
            raise InputError("the support masks have no defect pixels: cannot place boxes near them")

    def resolved(self, images: Sequence[np.ndarray]) -> BoxPlacement:
        """A copy whose ``auto`` foreground is settled once for a whole set of images, so
        every image of a folder gets the same kind of allowed area."""
        if self.foreground != "auto":
            return self
        return replace(self, foreground=auto_foreground_method(images, self.category))

    def needs_foreground(self) -> bool:
        return self.region is None or self.region_frame == "foreground"

    def allowed_area(self, image: np.ndarray, size_range: BoxSizeRange,
                     foreground: np.ndarray | None = None) -> np.ndarray:
        """The allowed area of one good image, bool ``(H, W)``. ``foreground`` may be given
        when the caller already has it."""
        height, width = np.asarray(image).shape[:2]
        if foreground is None and self.needs_foreground():
            foreground = foreground_mask(image, self.foreground, category=self.category)
        if self.region is not None:
            return place_region(self.region, height, width, frame=self.region_frame, foreground=foreground)
        assert foreground is not None
        if self.prior_masks is None:
            return foreground
        # Grown by half the largest box's diagonal: a box centred on a real defect fits.
        radius = math.ceil(0.5 * math.hypot(size_range.w_hi * width, size_range.h_hi * height))
        prior = location_prior(self.prior_masks, height, width, radius)
        on_part = prior & foreground
        return on_part if on_part.any() else prior

    def propose(self, image: np.ndarray, size_range: BoxSizeRange, n: int, *,
                seed: int | np.random.Generator = 0, allowed: np.ndarray | None = None) -> list[Box]:
        """:func:`propose_boxes` on this placement's allowed area."""
        if allowed is None:
            allowed = self.allowed_area(image, size_range)
        return propose_boxes(image, size_range, n, foreground=allowed, rule=self.rule, min_iou=self.min_iou,
                             min_inside=self.min_inside, seed=seed, max_tries=self.max_tries, rotate=self.rotate)


# ----------------------------------------------------------------------------- boxes.json


def write_boxes_file(path: str | os.PathLike, boxes: Mapping[str, Sequence[Box]], **settings: Any) -> None:
    """Write ``boxes.json``: ``{"version", <settings>..., "boxes": {image name: [[x0,y0,x1,y1], ...]}}``."""
    from anogen.atomic import atomic_write_text

    document = {"version": BOXES_FILE_VERSION, **settings,
                "boxes": {name: [box.to_list() for box in items] for name, items in boxes.items()}}
    text = json.dumps(document, indent=2)
    # One line per list of numbers ([x0, y0, x1, y1], size ranges): easy to read and diff.
    number = r"-?[0-9][0-9.eE+-]*"
    text = re.sub(rf"\[\s*({number}(?:\s*,\s*{number})*)\s*\](?=,?$)",  # never inside a string
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text, flags=re.MULTILINE)
    atomic_write_text(path, text + "\n")


def read_boxes_file(path: str | os.PathLike) -> dict[str, list[Box]]:
    """Read a ``boxes.json`` written by ``anogen boxes`` (or by hand): image name -> boxes.

    A bare ``{image name: [[x0,y0,x1,y1], ...]}`` object is accepted too.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: boxes file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a valid boxes file ({exc})") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected a JSON object")
    entries = document.get("boxes", document) if "version" in document else document
    if not isinstance(entries, dict):
        raise InputError(f"{path}: 'boxes' must map image names to lists of boxes")
    result: dict[str, list[Box]] = {}
    for name, items in entries.items():
        if not isinstance(items, list):
            raise InputError(f"{path}: boxes of {name!r} must be a list of [x0, y0, x1, y1]")
        result[name] = [Box.from_sequence(item, what=f"{path}: {name}") for item in items]
    return result


# ----------------------------------------------------------------------------- folder job


@dataclass
class BoxProposalConfig:
    """Propose boxes for every good image of a folder (the ``anogen boxes`` job)."""

    images: Path
    out: Path
    size_range: BoxSizeRange = DEFAULT_SIZE_RANGE
    per_image: int = 2
    placement: BoxPlacement = field(default_factory=BoxPlacement)
    seed: int = 0
    limit: int | None = None  # only the first N images (sorted by name)


@dataclass
class BoxProposalResult:
    out: Path
    boxes: dict[str, list[Box]]
    foreground: ForegroundMethod = "grabcut"  # the method used ("auto" resolved)


def run_box_proposals(config: BoxProposalConfig, progress: ProgressFn | None = None,
                      cancel: threading.Event | None = None) -> BoxProposalResult:
    """Write ``out/boxes.json``, ``out/masks/<image stem>_<k>.png`` (box masks) and
    ``out/allowed/<image stem>.png`` (where boxes may go); all or nothing (cancel leaves
    no folder)."""
    from anogen.atomic import staged_directory
    from anogen.data.imageio import encode_png, list_images, read_image
    from anogen.jobs import Progress, check_cancel, no_progress

    progress = progress or no_progress
    paths = list_images(config.images)
    if config.limit is not None:
        paths = paths[: max(0, config.limit)]
    if not paths:
        raise InputError(f"{config.images}: no images found")
    placement = config.placement
    placement.validate()
    if placement.category is None:
        from anogen.data.mvtec import category_of_folder

        placement = replace(placement, category=category_of_folder(config.images))
    if placement.foreground == "auto" and placement.needs_foreground():
        placement = placement.resolved([read_image(path) for path in paths[:5]])
    boxes: dict[str, list[Box]] = {}
    with staged_directory(config.out) as staging:
        staging.chmod(0o755)  # mkdtemp makes it private; the output is ordinary data
        (staging / "masks").mkdir()
        (staging / "allowed").mkdir()
        for index, path in enumerate(paths):
            check_cancel(cancel)
            image = read_image(path)
            try:
                allowed = placement.allowed_area(image, config.size_range)
                found = placement.propose(image, config.size_range, config.per_image,
                                          seed=image_seed(config.seed, path.name), allowed=allowed)
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from None
            boxes[path.name] = found
            (staging / "allowed" / f"{path.stem}.png").write_bytes(encode_png(allowed))
            for k, box in enumerate(found):
                (staging / "masks" / f"{path.stem}_{k}.png").write_bytes(
                    encode_png(box.to_mask(*image.shape[:2])))
            progress(Progress(index + 1, len(paths), message=path.name))
        write_boxes_file(staging / "boxes.json", boxes, images=str(config.images),
                         size_range=config.size_range.to_list(), foreground=placement.foreground,
                         category=placement.category, region=placement.region is not None,
                         region_frame=placement.region_frame, prior=placement.prior_masks is not None,
                         rotate=placement.rotate, rule=placement.rule, min_iou=placement.min_iou,
                         min_inside=placement.min_inside, seed=config.seed)
        check_cancel(cancel)
    return BoxProposalResult(out=Path(config.out), boxes=boxes, foreground=placement.foreground)
