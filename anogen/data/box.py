"""The box: where on an image a defect goes, and its two on-disk forms.

One :class:`Box` serves the whole library and the app: box proposals, stage-2 requests,
crops, the project file and the generated-set manifests. Pixels, ``x1`` and ``y1``
exclusive; ``angle`` (degrees) turns the rectangle about its centre; ``defect_kind``
names the kind to paint in it (``""``: the kind currently chosen).

Its codec has two forms:

* the list form ``[x0, y0, x1, y1]`` (``[..., angle]`` for a rotated box) of ``boxes.json``
  and the generated-set manifests: :meth:`Box.to_list` / :meth:`Box.from_sequence`;
* the object form ``{"x0", "y0", "x1", "y1"[, "angle"][, "defect_kind"]}`` of
  ``project.json``: :meth:`Box.to_dict` / :meth:`Box.from_dict` (:meth:`Box.decode_dict`
  reports every problem of a malformed object, for the project file's reader).

NumPy only: the app imports this module at start-up, before OpenCV is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, replace
from typing import Any

import numpy as np

from anogen.errors import InputError

_COORDINATES = ("x0", "y0", "x1", "y1")


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A short repr for a message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Box:
    """A box in pixels; ``x1`` and ``y1`` are exclusive.

    ``angle`` (degrees, counter-clockwise on screen) turns the rectangle about its centre;
    0 is an axis-aligned box. A rotated box covers the pixels of :meth:`to_mask`, and
    :attr:`bounds` is the axis-aligned box around them (crops and manifests use it).
    :meth:`clip`, :meth:`expand` and :meth:`intersection` work on the rectangle itself.
    ``defect_kind`` (keyword only) is the defect kind to paint in the box, ``""`` for the
    kind currently chosen; boxes derived from this one keep it.

    Constructing a box checks nothing (a clipped box may be empty, an expanded one may
    start off the image); :meth:`check` and :meth:`validate` do, and so do the decoders.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    angle: float = 0.0
    _: KW_ONLY
    defect_kind: str = ""

    # ------------------------------------------------------------------ list form

    @classmethod
    def from_sequence(cls, values: Sequence[Any], *, what: str = "box") -> Box:
        """Build a box from ``[x0, y0, x1, y1]`` or ``[x0, y0, x1, y1, angle]``; a malformed
        value is an InputError."""
        try:
            if len(values) not in (4, 5):
                raise ValueError
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            raise InputError(f"{what}: expected [x0, y0, x1, y1] or [x0, y0, x1, y1, angle], got {values!r}") from None
        if not all(n.is_integer() for n in numbers[:4]):
            raise InputError(f"{what}: box coordinates must be whole pixels, got {list(values)}")
        if not math.isfinite(numbers[4] if len(numbers) == 5 else 0.0):
            raise InputError(f"{what}: the box angle must be a finite number of degrees, got {values[4]!r}")
        box = cls(*(int(n) for n in numbers[:4]), *(numbers[4:] or [0.0]))
        if box.is_empty:
            raise InputError(f"{what}: box {box.to_list()} is empty (need x0 < x1 and y0 < y1)")
        return box

    def to_list(self) -> list[Any]:
        """``[x0, y0, x1, y1]``, with the angle appended for a rotated box (the defect kind
        is not part of the list form)."""
        values: list[Any] = [self.x0, self.y0, self.x1, self.y1]
        return values + [float(self.angle)] if self.is_rotated else values

    # ------------------------------------------------------------------ object form

    def to_dict(self) -> dict[str, Any]:
        """The project file's object form: ``x0``, ``y0``, ``x1``, ``y1``, plus ``angle`` for
        a rotated box and ``defect_kind`` when one is set."""
        out: dict[str, Any] = {"x0": int(self.x0), "y0": int(self.y0), "x1": int(self.x1), "y1": int(self.y1)}
        if self.is_rotated:
            out["angle"] = float(self.angle)
        if self.defect_kind:
            out["defect_kind"] = self.defect_kind
        return out

    @classmethod
    def decode_dict(cls, value: Any) -> tuple[Box | None, list[tuple[str, str]]]:
        """Decode the object form, reporting every problem: ``(box, problems)``.

        ``box`` is None when there is a problem. Each problem is ``(key, message)``: the
        key it concerns (``"x0"``, ``"angle"``, ...) or ``""`` for the box as a whole.
        Coordinates must be integers, the rectangle's bounds may not start left of or
        above the image, the box may not be empty; ``angle`` (a finite number of degrees)
        and ``defect_kind`` (a string) are optional. Unknown keys are ignored.
        """
        if not isinstance(value, Mapping):
            return None, [("", f"expected a box object, got {type(value).__name__}")]
        problems: list[tuple[str, str]] = []
        for key in _COORDINATES:
            if key not in value:
                problems.append((key, "missing"))
            elif not _is_integer(value[key]):
                problems.append((key, f"expected an integer, got {_shown(value[key])}"))
        angle = value.get("angle", 0.0)
        if not _is_number(angle):
            problems.append(("angle", f"expected a number, got {_shown(angle)}"))
        elif not math.isfinite(angle):
            problems.append(("angle", f"expected a finite number of degrees, got {_shown(angle)}"))
        kind = value.get("defect_kind", "")
        if not isinstance(kind, str):
            problems.append(("defect_kind", f"expected a string, got {_shown(kind)}"))
        if problems:
            return None, problems
        x0, y0, x1, y1 = (int(value[key]) for key in _COORDINATES)
        box = cls(x0, y0, x1, y1, float(angle), defect_kind=kind)
        if box.is_empty:
            return None, [("", f"box {box.to_list()} is empty (x1 must exceed x0 and y1 exceed y0)")]
        bounds = box.bounds
        if bounds.x0 < 0 or bounds.y0 < 0:
            return None, [("", f"box {box.to_list()} starts left of or above the image")]
        return box, []

    @classmethod
    def from_dict(cls, value: Any, *, what: str = "box") -> Box:
        """Build a box from the project file's object form; a malformed one is an
        InputError naming ``what`` and every problem (see :meth:`decode_dict`)."""
        box, problems = cls.decode_dict(value)
        if box is None:
            raise InputError("; ".join(f"{what}.{key}: {message}" if key else f"{what}: {message}"
                                       for key, message in problems))
        return box

    # ------------------------------------------------------------------ other constructors

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Box:
        """The tight bounding box of the True pixels of ``mask``."""
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            raise InputError("cannot take the bounding box of an empty mask")
        return cls(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    # ------------------------------------------------------------------ geometry

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

    @property
    def is_rotated(self) -> bool:
        return self.angle % 180.0 != 0.0

    def corners(self) -> np.ndarray:
        """The rectangle's four corners after rotation, float ``(4, 2)`` of (x, y)."""
        cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        return _rotated_corners(np.array([cx]), np.array([cy]), np.array([float(self.width)]),
                                np.array([float(self.height)]), np.array([self.angle]))[0]

    @property
    def bounds(self) -> Box:
        """The smallest axis-aligned box that holds the (rotated) rectangle."""
        if not self.is_rotated:
            return replace(self, angle=0.0)
        corners = self.corners()
        # A hair of tolerance so float noise in cos/sin never grows the box by a pixel.
        lo = np.floor(corners.min(axis=0) + 1e-6).astype(int)
        hi = np.ceil(corners.max(axis=0) - 1e-6).astype(int)
        return replace(self, x0=int(lo[0]), y0=int(lo[1]), x1=int(hi[0]), y1=int(hi[1]), angle=0.0)

    def to_mask(self, height: int, width: int) -> np.ndarray:
        """A bool ``(height, width)`` mask, True inside the box (clipped to the image); a
        rotated box is rasterised as the turned rectangle."""
        mask = np.zeros((height, width), dtype=bool)
        if self.is_rotated:
            # A pixel is in when its centre is: the same half-open rule as the axis-aligned
            # case, so a box turned by 90 degrees covers exactly as many pixels.
            area = self.bounds.clip(height, width)
            if area.is_empty:
                return mask
            ys, xs = np.mgrid[area.y0:area.y1, area.x0:area.x1] + 0.5
            dx, dy = xs - (self.x0 + self.x1) / 2, ys - (self.y0 + self.y1) / 2
            theta = math.radians(self.angle)
            u = math.cos(theta) * dx - math.sin(theta) * dy  # back into the rectangle's frame
            v = math.sin(theta) * dx + math.cos(theta) * dy
            eps = 1e-6
            inside = ((u >= -self.width / 2 - eps) & (u < self.width / 2 - eps)
                      & (v >= -self.height / 2 - eps) & (v < self.height / 2 - eps))
            mask[area.y0:area.y1, area.x0:area.x1] = inside
            return mask
        clipped = self.clip(height, width)
        if not clipped.is_empty:
            mask[clipped.y0:clipped.y1, clipped.x0:clipped.x1] = True
        return mask

    def clip(self, height: int, width: int) -> Box:
        """The part of the rectangle inside a ``width`` x ``height`` image, axis-aligned
        (may be empty)."""
        return replace(self, x0=min(max(self.x0, 0), width), y0=min(max(self.y0, 0), height),
                       x1=min(max(self.x1, 0), width), y1=min(max(self.y1, 0), height), angle=0.0)

    def expand(self, margin: int) -> Box:
        """The box grown by ``margin`` pixels on every side (not clipped)."""
        return replace(self, x0=self.x0 - margin, y0=self.y0 - margin, x1=self.x1 + margin, y1=self.y1 + margin)

    def intersection(self, other: Box) -> int:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(0, w) * max(0, h)

    # ------------------------------------------------------------------ checks

    def check(self, *, what: str = "box") -> Box:
        """Return the box if it is well formed, else raise InputError: integer coordinates,
        a finite angle, a string defect kind, not empty. The image is not looked at."""
        if not all(_is_integer(getattr(self, key)) for key in _COORDINATES):
            raise InputError(f"{what}: box coordinates must be integer pixels, got "
                             f"{[getattr(self, key) for key in _COORDINATES]!r}")
        if not _is_number(self.angle) or not math.isfinite(self.angle):
            raise InputError(f"{what}: the box angle must be a finite number of degrees, got {_shown(self.angle)}")
        if not isinstance(self.defect_kind, str):
            raise InputError(f"{what}: the box defect_kind must be a string, got {_shown(self.defect_kind)}")
        if self.is_empty:
            raise InputError(f"{what}: box {self.to_list()} is empty (need x0 < x1 and y0 < y1)")
        return self

    def fits(self, height: int, width: int) -> bool:
        """True when every pixel of the (rotated) box lies inside a ``width`` x ``height``
        image: its :attr:`bounds` do."""
        bounds = self.bounds
        return bounds.x0 >= 0 and bounds.y0 >= 0 and bounds.x1 <= width and bounds.y1 <= height

    def validate(self, height: int, width: int, *, what: str = "box") -> Box:
        """Return the box if it is well formed (:meth:`check`) and inside the image, else
        raise InputError."""
        self.check(what=what)
        if not self.fits(height, width):
            raise InputError(f"{what}: box {self.to_list()} lies (partly) off the {width}x{height} image")
        return self


def _rotated_corners(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray,
                     angle: np.ndarray) -> np.ndarray:
    """Corners ``(N, 4, 2)`` of N rectangles turned by ``angle`` degrees about their centres,
    in OpenCV's sense (counter-clockwise on screen, where y points down)."""
    theta = np.deg2rad(angle)[:, None]
    cos, sin = np.cos(theta), np.sin(theta)
    dx = np.array([-0.5, 0.5, 0.5, -0.5])[None, :] * w[:, None]
    dy = np.array([-0.5, -0.5, 0.5, 0.5])[None, :] * h[:, None]
    x = cx[:, None] + cos * dx + sin * dy
    y = cy[:, None] - sin * dx + cos * dy
    return np.stack([x, y], axis=-1)
