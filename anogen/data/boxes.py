"""Boxes on good images: where stage 2 paints a defect.

A box is sampled with a size drawn from a per-defect-kind range (fractions of the image
side) and a position that puts it on the object, not on the background:

* the foreground of a good image comes from GrabCut (the paper), falling back to an
  Otsu threshold when GrabCut finds nothing; a texture category (carpet, grid, ...) is
  all foreground;
* a candidate box is accepted when its IoU with the foreground is at least ``min_iou``
  (the paper's rule, ``rule="iou"``), or when at least ``min_inside`` of its area lies
  in the foreground (the reference code's rule, ``rule="inside"``, the default: the
  literal IoU rule can only accept boxes about as large as the object itself).

The reference size table of the MVTec AD defect kinds ships as ``box_sizes.json``; for
a new defect kind, :func:`size_range_from_masks` derives a range from its support masks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Optional, Sequence

import cv2
import numpy as np

from anogen.errors import InputError

if TYPE_CHECKING:
    import threading

    from anogen.jobs import ProgressFn

log = logging.getLogger(__name__)

ForegroundMethod = Literal["grabcut", "otsu", "all"]
BoxRule = Literal["iou", "inside"]
FOREGROUND_METHODS = ("grabcut", "otsu", "all")
BOX_RULES = ("iou", "inside")
BOX_SIZES_FILE = Path(__file__).with_name("box_sizes.json")
BOXES_FILE_VERSION = 1


# ----------------------------------------------------------------------------- Box


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels; ``x1`` and ``y1`` are exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def from_sequence(cls, values: Sequence[Any], *, what: str = "box") -> "Box":
        """Build a box from ``[x0, y0, x1, y1]``; a malformed value is an InputError."""
        try:
            if len(values) != 4:
                raise ValueError
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            raise InputError(f"{what}: expected [x0, y0, x1, y1], got {values!r}") from None
        if not all(n.is_integer() for n in numbers):
            raise InputError(f"{what}: box coordinates must be whole pixels, got {list(values)}")
        box = cls(*(int(n) for n in numbers))
        if box.is_empty:
            raise InputError(f"{what}: box {box.to_list()} is empty (need x0 < x1 and y0 < y1)")
        return box

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "Box":
        """The tight bounding box of the True pixels of ``mask``."""
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            raise InputError("cannot take the bounding box of an empty mask")
        return cls(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def to_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    def to_mask(self, height: int, width: int) -> np.ndarray:
        """A bool ``(height, width)`` mask, True inside the box (clipped to the image)."""
        mask = np.zeros((height, width), dtype=bool)
        clipped = self.clip(height, width)
        if not clipped.is_empty:
            mask[clipped.y0:clipped.y1, clipped.x0:clipped.x1] = True
        return mask

    def clip(self, height: int, width: int) -> "Box":
        """The part of the box inside a ``width`` x ``height`` image (may be empty)."""
        return Box(min(max(self.x0, 0), width), min(max(self.y0, 0), height),
                   min(max(self.x1, 0), width), min(max(self.y1, 0), height))

    def validate(self, height: int, width: int, *, what: str = "box") -> "Box":
        """Return the box if it is non-empty and inside the image, else raise InputError."""
        if self.is_empty:
            raise InputError(f"{what}: box {self.to_list()} is empty (need x0 < x1 and y0 < y1)")
        if self.x0 < 0 or self.y0 < 0 or self.x1 > width or self.y1 > height:
            raise InputError(f"{what}: box {self.to_list()} lies (partly) off the {width}x{height} image")
        return self

    def expand(self, margin: int) -> "Box":
        """The box grown by ``margin`` pixels on every side (not clipped)."""
        return Box(self.x0 - margin, self.y0 - margin, self.x1 + margin, self.y1 + margin)

    def intersection(self, other: "Box") -> int:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(0, w) * max(0, h)


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


def _grabcut_foreground(image: np.ndarray, *, max_side: int = 256, iterations: int = 5) -> Optional[np.ndarray]:
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


def foreground_mask(image: np.ndarray, method: ForegroundMethod = "grabcut") -> np.ndarray:
    """The object pixels of a good image, bool ``(H, W)``.

    ``grabcut`` (the paper) falls back to ``otsu`` when GrabCut finds no object;
    ``all`` treats the whole image as foreground (texture categories).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"foreground_mask expects an RGB uint8 image, got {image.dtype} {image.shape}")
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
                    f"box {side} range [{lo}, {hi}] is invalid: need 0 < low <= high <= 1 (fractions of the image side)")

    @classmethod
    def from_sequence(cls, values: Sequence[float]) -> "BoxSizeRange":
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


def reference_size_range(category: str, kind: str) -> Optional[BoxSizeRange]:
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
                  foreground: Optional[np.ndarray] = None, rule: BoxRule = "inside",
                  min_iou: float = 0.5, min_inside: float = 0.75,
                  seed: int | np.random.Generator = 0, max_tries: int = 1000) -> list[Box]:
    """Sample ``n`` boxes on ``image`` whose size lies in ``size_range`` and whose position
    satisfies the foreground ``rule``. Deterministic for a given seed.

    ``foreground`` is a bool mask of the image's size (default: GrabCut of ``image``).
    Raises InputError naming the rule when ``max_tries`` candidates for one box all fail.
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

    # Summed-area table: the foreground area of any box in O(1).
    table = np.zeros((height + 1, width + 1), dtype=np.int64)
    table[1:, 1:] = foreground.cumsum(0).cumsum(1)
    foreground_area = int(table[-1, -1])

    boxes: list[Box] = []
    for _ in range(n):
        # All candidates of one box are drawn at once: fast, and still deterministic.
        bw = np.clip(np.rint(rng.uniform(size_range.w_lo, size_range.w_hi, max_tries) * width), 1, width).astype(np.int64)
        bh = np.clip(np.rint(rng.uniform(size_range.h_lo, size_range.h_hi, max_tries) * height), 1, height).astype(np.int64)
        x0 = np.floor(rng.random(max_tries) * (width - bw + 1)).astype(np.int64)
        y0 = np.floor(rng.random(max_tries) * (height - bh + 1)).astype(np.int64)
        x1, y1 = x0 + bw, y0 + bh
        inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        area = bw * bh
        if rule == "iou":
            score = inside / (area + foreground_area - inside)
            valid = score >= min_iou
        else:
            score = inside / area
            valid = score >= min_inside
        hits = np.flatnonzero(valid)
        if len(hits) == 0:
            need = f"IoU with the foreground >= {min_iou}" if rule == "iou" else \
                f">= {min_inside:.0%} of the box in the foreground"
            hint = ("The IoU rule only accepts boxes about the size of the object: try --rule inside"
                    if rule == "iou" else "Try a smaller size, a lower --min-inside or --foreground all")
            raise InputError(
                f"no valid box after {max_tries} tries on a {width}x{height} image: no box of width "
                f"{size_range.w_lo:g}-{size_range.w_hi:g} and height {size_range.h_lo:g}-{size_range.h_hi:g} "
                f"(fractions of the side) has {need} (best: {float(score.max()):.2f}; foreground covers "
                f"{foreground_area / (width * height):.0%} of the image). {hint}")
        i = int(hits[0])
        boxes.append(Box(int(x0[i]), int(y0[i]), int(x1[i]), int(y1[i])))
    return boxes


# ----------------------------------------------------------------------------- boxes.json


def write_boxes_file(path: str | os.PathLike, boxes: dict[str, Sequence[Box]], **settings: Any) -> None:
    """Write ``boxes.json``: ``{"version", <settings>..., "boxes": {image name: [[x0,y0,x1,y1], ...]}}``."""
    from anogen.atomic import atomic_write_text

    document = {"version": BOXES_FILE_VERSION, **settings,
                "boxes": {name: [box.to_list() for box in items] for name, items in boxes.items()}}
    text = json.dumps(document, indent=2)
    # One line per list of numbers ([x0, y0, x1, y1], size ranges): easy to read and diff.
    number = r"-?[0-9][0-9.eE+-]*"
    text = re.sub(rf"\[\s*({number}(?:\s*,\s*{number})*)\s*\](?=,?$)",  # never inside a string
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text, flags=re.M)
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
    foreground: ForegroundMethod = "grabcut"
    rule: BoxRule = "inside"
    min_iou: float = 0.5
    min_inside: float = 0.75
    seed: int = 0
    max_tries: int = 1000
    limit: Optional[int] = None  # only the first N images (sorted by name)


@dataclass
class BoxProposalResult:
    out: Path
    boxes: dict[str, list[Box]]


def run_box_proposals(config: BoxProposalConfig, progress: "ProgressFn | None" = None,
                      cancel: "threading.Event | None" = None) -> BoxProposalResult:
    """Write ``out/boxes.json``, ``out/masks/<image stem>_<k>.png`` (box masks) and
    ``out/foreground/<image stem>.png``; all or nothing (cancel leaves no folder)."""
    from anogen.atomic import staged_directory
    from anogen.data.imageio import encode_png, list_images, read_image
    from anogen.jobs import Progress, check_cancel, no_progress

    progress = progress or no_progress
    paths = list_images(config.images)
    if config.limit is not None:
        paths = paths[: max(0, config.limit)]
    if not paths:
        raise InputError(f"{config.images}: no images found")
    boxes: dict[str, list[Box]] = {}
    with staged_directory(config.out) as staging:
        staging.chmod(0o755)  # mkdtemp makes it private; the output is ordinary data
        (staging / "masks").mkdir()
        (staging / "foreground").mkdir()
        for index, path in enumerate(paths):
            check_cancel(cancel)
            image = read_image(path)
            foreground = foreground_mask(image, config.foreground)
            try:
                found = propose_boxes(image, config.size_range, config.per_image, foreground=foreground,
                                      rule=config.rule, min_iou=config.min_iou, min_inside=config.min_inside,
                                      seed=image_seed(config.seed, path.name), max_tries=config.max_tries)
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from None
            boxes[path.name] = found
            (staging / "foreground" / f"{path.stem}.png").write_bytes(encode_png(foreground))
            for k, box in enumerate(found):
                (staging / "masks" / f"{path.stem}_{k}.png").write_bytes(
                    encode_png(box.to_mask(*image.shape[:2])))
            progress(Progress(index + 1, len(paths), message=path.name))
        write_boxes_file(staging / "boxes.json", boxes, images=str(config.images),
                         size_range=config.size_range.to_list(), foreground=config.foreground,
                         rule=config.rule, min_iou=config.min_iou, min_inside=config.min_inside,
                         seed=config.seed)
        check_cancel(cancel)
    return BoxProposalResult(out=Path(config.out), boxes=boxes)
