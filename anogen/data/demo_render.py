"""Procedural renderers for the demo dataset: a woven fabric and a metal washer.

Every renderer is a pure function of a :class:`numpy.random.Generator` and a size, so
the same seed always paints the same pixels. A defect render first paints the good
sample (consuming the random stream exactly as :func:`render_good` does) and then
changes pixels only inside the returned mask, so ``render_defect(c, k, rng(s), n)``
differs from ``render_good(c, rng(s), n)`` exactly where the mask says.

Images are built in linear float ``[0, 1]`` with vectorised numpy/OpenCV operations
(no per-pixel Python loops) and quantised to ``uint8`` at the very end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from anogen.errors import InputError

DEMO_CATEGORIES: tuple[str, ...] = ("fabric", "washer")
DEFECT_KINDS: dict[str, tuple[str, ...]] = {
    "fabric": ("hole", "scratch", "stain"),
    "washer": ("crack", "scratch", "contamination"),
}
# Generic blemishes used to pretrain the demo diffusion model. They are deliberately
# different from the few-shot defect kinds above (and never named in captions).
BLEMISH_KINDS: tuple[str, ...] = ("spots", "smudge", "streak", "hairline", "discoloration", "dent", "fleck")

MIN_SIZE = 32


# --------------------------------------------------------------------------- helpers

@dataclass
class _Scene:
    """What a defect painter needs to know about the good sample it damages."""

    category: str
    size: int
    foreground: np.ndarray  # bool HxW: where a defect may appear
    base_color: np.ndarray  # float RGB of the material
    params: dict[str, float] = field(default_factory=dict)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs + 0.5, ys + 0.5


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int | tuple[int, int]) -> np.ndarray:
    """Band-limited noise: a coarse random grid upsampled with bicubic interpolation (~unit std)."""
    cy, cx = (cells, cells) if isinstance(cells, int) else cells
    coarse = rng.standard_normal((max(2, cy), max(2, cx))).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _fractal_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, octaves: int = 3) -> np.ndarray:
    total = np.zeros(shape, np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * _smooth_noise(rng, shape, cells * 2**octave)
        norm += amplitude**2
        amplitude *= 0.5
    return total / math.sqrt(norm)


def _light_field(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Uneven illumination: a linear gradient in a random direction plus a soft blotch."""
    xs, ys = _grid(size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xs - size / 2) * math.cos(angle) + (ys - size / 2) * math.sin(angle)) / size
    blotch = _smooth_noise(rng, (size, size), 3)
    return 1.0 + strength * (ramp * rng.uniform(0.6, 1.0) * 2 + 0.25 * blotch)


def _quantize(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _blob_field(rng: np.random.Generator, size: int, center: tuple[float, float], radius: float,
                aspect: float, angle: float, roughness: float) -> np.ndarray:
    """A normalised distance to an irregular ellipse: < 1 inside, 1 on its ragged edge."""
    xs, ys = _grid(size)
    dx, dy = xs - center[0], ys - center[1]
    ca, sa = math.cos(angle), math.sin(angle)
    u = (dx * ca + dy * sa) / radius
    v = (-dx * sa + dy * ca) / (radius * aspect)
    dist = np.sqrt(u * u + v * v)
    # Ragged edge: noise with a wavelength of about the blob radius, added (not multiplied)
    # so that it bends the outline without scattering islands far from the blob.
    coarse = _smooth_noise(rng, (size, size), max(3, int(size / max(radius, 1.0) * 1.2)))
    fine = _smooth_noise(rng, (size, size), max(3, int(size / max(radius, 1.0) * 3.0)))
    return dist + roughness * (coarse + 0.35 * fine)


def _curve_points(rng: np.random.Generator, start: np.ndarray, length: float, angle: float,
                  bend: float, jitter: float, step: float) -> np.ndarray:
    """A polyline that wanders from ``start``: smooth bending plus optional jagged jitter."""
    count = max(2, int(length / step))
    turn = rng.normal(0, bend, count).cumsum() * 0.3 + rng.normal(0, jitter, count)
    headings = angle + turn
    steps = np.stack([np.cos(headings), np.sin(headings)], axis=1) * step
    return np.vstack([start[None, :], start[None, :] + steps.cumsum(axis=0)])


def _stroke_alpha(size: int, points: np.ndarray, thickness: int) -> np.ndarray:
    """Anti-aliased coverage of a polyline, float [0, 1]."""
    layer = np.zeros((size, size), np.uint8)
    pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)  # 4 fractional bits
    cv2.polylines(layer, [pts], False, 255, thickness=max(1, thickness), lineType=cv2.LINE_AA, shift=4)
    return layer.astype(np.float32) / 255.0


def _stroke_mask(stroke: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The pixels a thin stroke really covers (not its faint anti-aliased fringe)."""
    mask = (stroke >= 0.3) & foreground
    return mask if mask.any() else (stroke > 0) & foreground


def _finish_alpha(alpha: np.ndarray, floor: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Cut faint tails so the mask is exactly the set of pixels a defect may change."""
    alpha = np.where(alpha >= floor, np.minimum(alpha, 1.0), 0.0).astype(np.float32)
    return alpha, alpha > 0


def _blend(image: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[:, :, None]
    return image * (1.0 - a) + target * a


def _random_point(rng: np.random.Generator, region: np.ndarray, margin: int = 0) -> np.ndarray:
    """A random pixel centre inside ``region`` (at least ``margin`` px from the image border)."""
    allowed = region.copy()
    if margin > 0:
        allowed[:margin] = allowed[-margin:] = False
        allowed[:, :margin] = allowed[:, -margin:] = False
    ys, xs = np.nonzero(allowed if allowed.any() else region)
    index = int(rng.integers(len(xs)))
    return np.array([xs[index] + 0.5, ys[index] + 0.5], np.float32)


# --------------------------------------------------------------------------- fabric

def _render_fabric(rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Scene]:
    """A plain-weave cloth under uneven light: threads that bulge, vary and wander."""
    xs, ys = _grid(size)
    period = max(4.0, size / rng.uniform(26, 34))
    angle = math.radians(rng.uniform(-5, 5))
    # Natural irregularity: slow warping of the whole weave plus per-thread wobble.
    warp_u = _smooth_noise(rng, (size, size), 4) * period * 0.45 + _smooth_noise(rng, (size, size), 14) * period * 0.08
    warp_v = _smooth_noise(rng, (size, size), 4) * period * 0.45 + _smooth_noise(rng, (size, size), 14) * period * 0.08
    ca, sa = math.cos(angle), math.sin(angle)
    u = (xs * ca + ys * sa + warp_u) / period + rng.uniform(0, 1)
    v = (-xs * sa + ys * ca + warp_v) / period + rng.uniform(0, 1)
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j
    warp_on_top = ((i + j) % 2) == 0

    # Threads are round: bright in the middle, dark where they dive under the crossing one.
    def thread(cross: np.ndarray, along: np.ndarray) -> np.ndarray:
        body = np.clip(np.sin(np.pi * cross), 0, 1) ** 0.7
        return body * (0.72 + 0.28 * np.sin(np.pi * along))

    shade = np.where(warp_on_top, thread(fu, fv), thread(fv, fu))

    count = 512
    warp_var = rng.normal(0, 0.07, count).astype(np.float32)
    weft_var = rng.normal(0, 0.07, count).astype(np.float32)
    per_thread = np.where(warp_on_top, warp_var[i.astype(np.int64) % count], weft_var[j.astype(np.int64) % count])
    # Fibres: fine noise stretched along each thread direction.
    fibre_warp = _smooth_noise(rng, (size, size), (max(2, size // 10), max(2, size // 2)))
    fibre_weft = _smooth_noise(rng, (size, size), (max(2, size // 2), max(2, size // 10)))
    fibre = np.where(warp_on_top, fibre_warp, fibre_weft)

    base = (np.array([0.60, 0.53, 0.43], np.float32) * rng.uniform(0.9, 1.06)
            + rng.normal(0, 0.008, 3).astype(np.float32))
    weft_tint = base * np.array([0.95, 0.96, 1.02], np.float32)
    color = np.where(warp_on_top[:, :, None], base, weft_tint)
    gap = base * 0.22
    lum = (shade * (1.0 + per_thread + 0.09 * fibre))[:, :, None]
    image = gap + (color - gap) * lum
    image *= _light_field(rng, size, rng.uniform(0.12, 0.22))[:, :, None]
    image += rng.normal(0, 0.012, image.shape).astype(np.float32)
    scene = _Scene("fabric", size, np.ones((size, size), bool), base, {"period": period})
    return image.astype(np.float32), scene


def _fabric_hole(image: np.ndarray, scene: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size, period = scene.size, scene.params["period"]
    radius = size * rng.uniform(0.025, 0.085)
    center = _random_point(rng, scene.foreground, margin=int(radius * 1.3) + 2)
    field_ = _blob_field(rng, size, tuple(center), radius, rng.uniform(0.55, 1.0), rng.uniform(0, math.pi), 0.25)
    rim = 1.0 + period * rng.uniform(0.5, 1.1) / radius
    core = field_ < 1.0
    # The backing seen through the hole: dark, with a little texture.
    backing = (scene.base_color * rng.uniform(0.05, 0.18)
               * (1 + 0.3 * _smooth_noise(rng, (size, size), size // 8))[:, :, None])
    out = np.where(core[:, :, None], backing, image)
    # Frayed thread ends crossing into the hole.
    for _ in range(int(rng.integers(1, 5))):
        heading = rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.15) + rng.choice([0.0, math.pi])
        start = center + rng.normal(0, radius * 0.5, 2).astype(np.float32)
        pts = _curve_points(rng, start.astype(np.float32), radius * rng.uniform(0.4, 1.0), heading, 0.2, 0.05, 2.0)
        strand = _stroke_alpha(size, pts, max(1, int(period * 0.35))) * core
        out = _blend(out, np.broadcast_to(scene.base_color * rng.uniform(0.6, 1.0), out.shape), strand * 0.9)
    # Loosened, shadowed threads around the edge.
    ring = (field_ >= 1.0) & (field_ < rim)
    depth = np.clip((rim - field_) / (rim - 1.0), 0, 1)
    out = np.where(ring[:, :, None], image * (1.0 - 0.55 * depth)[:, :, None], out)
    return out, field_ < rim


def _line_defect(image: np.ndarray, scene: _Scene, rng: np.random.Generator, *, length: tuple[float, float],
                 width: tuple[float, float], jagged: float, bend: float, dark_probability: float,
                 strength: tuple[float, float],
                 heading: Callable[[np.ndarray], float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A thin mark along a wandering path (scratch, snag, streak), restricted to the foreground.

    ``heading(start)`` picks the direction; by default any direction.
    """
    size = scene.size
    start = _random_point(rng, scene.foreground, margin=size // 10)
    direction = heading(start) if heading is not None else rng.uniform(0, 2 * math.pi)
    pts = _curve_points(rng, start, size * rng.uniform(*length), direction, bend, jagged, max(1.5, size / 96))
    thickness = int(round(size / 256 * rng.uniform(*width)))
    stroke = _stroke_alpha(size, pts, thickness)
    mask = _stroke_mask(stroke, scene.foreground)
    # Intensity fades along parts of the line like a real scratch catching the light.
    fade = np.clip(0.8 + 0.4 * _smooth_noise(rng, (size, size), max(3, size // 24)), 0.6, 1.0)
    alpha = np.where(mask, np.minimum(stroke * 1.4, 1.0) * fade * rng.uniform(*strength), 0.0).astype(np.float32)
    if rng.random() < dark_probability:
        target = image * rng.uniform(0.15, 0.45)
    else:
        target = np.clip(image * 0.4 + scene.base_color * rng.uniform(1.3, 1.7), 0, 1.2)
    return _blend(image, target, alpha), mask


def _fabric_scratch(image: np.ndarray, scene: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return _line_defect(image, scene, rng, length=(0.15, 0.55), width=(2.0, 5.0), jagged=0.03, bend=0.08,
                        dark_probability=0.5, strength=(0.7, 1.0))


def _stain(image: np.ndarray, scene: _Scene, rng: np.random.Generator, tint: np.ndarray,
           radius_range: tuple[float, float], strength: tuple[float, float],
           opaque: float) -> tuple[np.ndarray, np.ndarray]:
    """A soft, irregular patch that darkens and tints the surface but lets texture show through."""
    size = scene.size
    radius = size * rng.uniform(*radius_range)
    center = _random_point(rng, scene.foreground, margin=int(radius * 0.6))
    field_ = _blob_field(rng, size, tuple(center), radius, rng.uniform(0.45, 1.0), rng.uniform(0, math.pi), 0.4)
    alpha = np.clip((1.0 - field_) / 0.35, 0, 1) * rng.uniform(*strength)
    # A darker tide line at the rim, as a dried liquid leaves.
    alpha *= 1.0 + 0.5 * np.exp(-(((field_ - 0.9) / 0.08) ** 2))
    alpha, mask = _finish_alpha(alpha * scene.foreground, floor=0.06)
    texture = 1.0 + 0.15 * _smooth_noise(rng, (size, size), max(3, size // 16))
    stained = image * tint * (1 - opaque) + tint * scene.base_color.mean() * 0.6 * opaque
    return _blend(image, stained * texture[:, :, None], np.minimum(alpha, 1.0)), mask


def _fabric_stain(image: np.ndarray, scene: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    tints = [np.array([0.55, 0.42, 0.25]), np.array([0.45, 0.45, 0.48]), np.array([0.75, 0.62, 0.30])]
    tint = tints[int(rng.integers(len(tints)))].astype(np.float32) * rng.uniform(0.8, 1.1)
    return _stain(image, scene, rng, tint, (0.04, 0.13), (0.5, 0.95), opaque=0.1)


# --------------------------------------------------------------------------- washer

def _render_washer(rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Scene]:
    """A turned steel washer on a matte inspection table, lit from one side."""
    xs, ys = _grid(size)
    # Background: a dark, slightly blue matte surface with grain and mottling.
    bg_color = (np.array([0.20, 0.23, 0.27], np.float32) * rng.uniform(0.85, 1.15)
                + rng.normal(0, 0.01, 3).astype(np.float32))
    grain = 0.06 * _smooth_noise(rng, (size, size), size // 2) + 0.05 * _fractal_noise(rng, (size, size), 4)
    background = bg_color * (1.0 + grain)[:, :, None]

    center = np.array([size / 2, size / 2]) + rng.normal(0, 0.035 * size, 2)
    outer = size * rng.uniform(0.30, 0.36)
    inner = outer * rng.uniform(0.40, 0.48)
    tilt = rng.uniform(0.92, 1.0)  # a slightly oblique view squashes the ring
    tilt_angle = rng.uniform(0, math.pi)
    light = rng.uniform(0, 2 * math.pi)

    def ring_coords(offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = xs - offset[0], ys - offset[1]
        ca, sa = math.cos(tilt_angle), math.sin(tilt_angle)
        u = dx * ca + dy * sa
        v = (-dx * sa + dy * ca) / tilt
        rho = np.sqrt(u * u + v * v)
        theta = np.arctan2(v, u) + tilt_angle
        return rho, theta

    rho, theta = ring_coords(center)
    coverage = np.clip(outer - rho + 0.5, 0, 1) * np.clip(rho - inner + 0.5, 0, 1)

    # Cast shadow: the ring's footprint shifted away from the light and blurred.
    shadow_offset = -np.array([math.cos(light), math.sin(light)]) * size * rng.uniform(0.012, 0.025)
    s_rho, _ = ring_coords(center + shadow_offset)
    shadow = (np.clip(outer - s_rho, 0, 1) * np.clip(s_rho - inner, 0, 1)).astype(np.float32)
    shadow = cv2.GaussianBlur(shadow, (0, 0), size * 0.012) * rng.uniform(0.45, 0.65)
    background = background * (1.0 - shadow)[:, :, None]

    # Metal: concentric turning marks, a bow-tie highlight and bright/dark bevels.
    steel = np.array([0.62, 0.63, 0.65], np.float32) * rng.uniform(0.9, 1.08)
    profile = np.interp(rho, np.arange(int(size)), rng.normal(0, 1, int(size)) * 0.5
                        + _smooth_noise(rng, (1, int(size)), (1, int(size) // 6))[0] * 0.5).astype(np.float32)
    rel = np.cos(theta - light)
    highlight = 0.35 * np.abs(np.cos(theta - light - math.pi / 2)) ** 6
    face = 0.78 + highlight + 0.04 * profile + 0.06 * rel
    bevel = max(1.5, outer * 0.07)
    outer_band = np.clip((rho - (outer - bevel)) / bevel, 0, 1)
    inner_band = np.clip(((inner + bevel) - rho) / bevel, 0, 1)
    face = face * (1 - outer_band) + (0.7 + 0.45 * rel) * outer_band
    face = face * (1 - inner_band) + (0.7 - 0.45 * rel) * inner_band
    face = face + 0.03 * _smooth_noise(rng, (size, size), 10)
    metal = steel * face[:, :, None]

    image = _blend(background, metal, coverage.astype(np.float32))
    image *= _light_field(rng, size, rng.uniform(0.08, 0.16))[:, :, None]
    image += rng.normal(0, 0.01, image.shape).astype(np.float32)
    # Defects stay on the flat face, a pixel or two away from the anti-aliased edges.
    face_region = (rho > inner + 1.5) & (rho < outer - 1.5)
    scene = _Scene("washer", size, face_region, steel, {"outer": outer, "inner": inner,
                                                         "cx": float(center[0]), "cy": float(center[1])})
    return image.astype(np.float32), scene


def _washer_crack(image: np.ndarray, scene: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A jagged dark fracture running from an edge into the ring, sometimes branching."""
    size = scene.size
    outer, inner = scene.params["outer"], scene.params["inner"]
    cx, cy = scene.params["cx"], scene.params["cy"]
    angle = rng.uniform(0, 2 * math.pi)
    from_outer = rng.random() < 0.6
    radius = outer - 2 if from_outer else inner + 2
    start = np.array([cx + radius * math.cos(angle), cy + radius * math.sin(angle)], np.float32)
    heading = angle + (math.pi if from_outer else 0.0) + rng.normal(0, 0.35)
    length = (outer - inner) * rng.uniform(0.35, 0.95)
    step = max(1.5, size / 110)
    pts = _curve_points(rng, start, length, heading, 0.15, 0.45, step)
    thickness = max(1, int(round(size / 256 * rng.uniform(1.0, 2.4))))
    alpha = _stroke_alpha(size, pts, thickness)
    if rng.random() < 0.5:  # a side branch from somewhere along the crack
        branch_at = pts[int(rng.integers(len(pts) // 3, max(len(pts) // 3 + 1, len(pts) - 1)))]
        branch = _curve_points(rng, branch_at, length * rng.uniform(0.25, 0.5),
                               heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0), 0.15, 0.45, step)
        alpha = np.maximum(alpha, _stroke_alpha(size, branch, max(1, thickness - 1)) * 0.85)
    mask = _stroke_mask(alpha, scene.foreground)
    alpha = np.where(mask, np.minimum(alpha * 1.4, 1.0) * rng.uniform(0.8, 1.0), 0.0).astype(np.float32)
    return _blend(image, image * rng.uniform(0.08, 0.25), alpha), mask


def _washer_scratch(image: np.ndarray, scene: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fine tool mark; mostly running along the ring so it stays on the metal face."""
    cx, cy = scene.params["cx"], scene.params["cy"]

    def along_ring(start: np.ndarray) -> float:
        radial = math.atan2(start[1] - cy, start[0] - cx)
        return radial + rng.choice([-1, 1]) * math.pi / 2 + rng.normal(0, 0.35)

    return _line_defect(image, scene, rng, length=(0.12, 0.35), width=(1.0, 2.5), jagged=0.01, bend=0.04,
                        dark_probability=0.45, strength=(0.55, 0.95), heading=along_ring)


def _washer_contamination(image: np.ndarray, scene: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Oil, rust or grime on the metal: opaque, irregular, sometimes with scattered specks."""
    size = scene.size
    tints = [np.array([0.35, 0.22, 0.12]), np.array([0.55, 0.28, 0.10]), np.array([0.18, 0.17, 0.15])]
    tint = tints[int(rng.integers(len(tints)))].astype(np.float32) * rng.uniform(0.8, 1.2)
    out, mask = _stain(image, scene, rng, tint, (0.03, 0.08), (0.75, 1.0), opaque=0.75)
    if rng.random() < 0.6:  # specks around the main spot
        specks = np.zeros((size, size), np.float32)
        ys, xs = np.nonzero(mask)
        cx, cy = xs.mean(), ys.mean()
        for _ in range(int(rng.integers(3, 10))):
            px, py = cx + rng.normal(0, size * 0.06), cy + rng.normal(0, size * 0.06)
            radius = max(1, int(size / 256 * rng.uniform(1, 3.5)))
            cv2.circle(specks, (int(px), int(py)), radius, 1.0, -1, lineType=cv2.LINE_AA)
        specks, speck_mask = _finish_alpha(specks * scene.foreground * 0.9)
        out = _blend(out, np.broadcast_to(tint * 0.5, out.shape), specks)
        mask = mask | speck_mask
    return out, mask


# --------------------------------------------------------------------------- blemishes

def _blemish(image: np.ndarray, scene: _Scene, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """One generic surface blemish of ``kind`` (see :data:`BLEMISH_KINDS`)."""
    size = scene.size
    if kind == "spots":  # a few round dots, dark or light
        layer = np.zeros((size, size), np.float32)
        center = _random_point(rng, scene.foreground, margin=size // 12)
        for _ in range(int(rng.integers(1, 6))):
            p = center + rng.normal(0, size * 0.04, 2)
            radius = max(1, int(size * rng.uniform(0.008, 0.025)))
            cv2.circle(layer, (int(p[0]), int(p[1])), radius, 1.0, -1, cv2.LINE_AA)
        alpha, mask = _finish_alpha(layer * scene.foreground * rng.uniform(0.6, 1.0))
        target = image * rng.uniform(0.2, 0.5) if rng.random() < 0.6 else np.minimum(image * 1.6 + 0.1, 1.2)
        return _blend(image, target, alpha), mask
    if kind == "smudge":  # a soft, faint darkening or brightening
        tint = np.full(3, rng.uniform(0.6, 1.5), np.float32)
        return _stain(image, scene, rng, tint, (0.05, 0.15), (0.3, 0.6), opaque=0.0)
    if kind == "discoloration":  # a coloured patch: blue, green, red or yellow tinge
        tints = [np.array([0.7, 0.8, 1.3]), np.array([0.8, 1.2, 0.8]),
                 np.array([1.3, 0.8, 0.8]), np.array([1.2, 1.1, 0.6])]
        tint = tints[int(rng.integers(len(tints)))].astype(np.float32)
        return _stain(image, scene, rng, tint, (0.04, 0.12), (0.5, 0.9), opaque=0.0)
    if kind == "streak":  # a broad, short, blurred straight mark
        return _line_defect(image, scene, rng, length=(0.06, 0.2), width=(6.0, 12.0), jagged=0.0, bend=0.0,
                            dark_probability=0.5, strength=(0.4, 0.7))
    if kind == "hairline":  # a long, faint, very thin line of either polarity
        return _line_defect(image, scene, rng, length=(0.1, 0.45), width=(0.8, 2.0), jagged=0.02, bend=0.05,
                            dark_probability=0.5, strength=(0.35, 0.7))
    if kind == "dent":  # a shallow pit: one side dark, the other lit
        pit = size * rng.uniform(0.015, 0.04)
        center = _random_point(rng, scene.foreground, margin=int(pit) + 2)
        xs, ys = _grid(size)
        dx, dy = (xs - center[0]) / pit, (ys - center[1]) / pit
        bowl = np.clip(1.0 - (dx * dx + dy * dy), 0, 1)
        light = rng.uniform(0, 2 * math.pi)
        slope = (dx * math.cos(light) + dy * math.sin(light)) * bowl
        alpha, mask = _finish_alpha(np.abs(slope) * 1.8 * scene.foreground, floor=0.05)
        target = np.where((slope > 0)[:, :, None], np.minimum(image * 1.7, 1.2), image * 0.3)
        return _blend(image, target, np.minimum(alpha, 1.0)), mask
    if kind == "fleck":  # a small, sharp, opaque fragment of foreign colour
        fragment = size * rng.uniform(0.012, 0.03)
        center = _random_point(rng, scene.foreground, margin=int(fragment) + 2)
        field_ = _blob_field(rng, size, tuple(center), fragment, rng.uniform(0.3, 1.0), rng.uniform(0, math.pi), 0.3)
        alpha, mask = _finish_alpha(np.clip((1.0 - field_) / 0.2, 0, 1) * scene.foreground)
        color = rng.uniform(0.05, 0.95, 3).astype(np.float32)
        return _blend(image, np.broadcast_to(color, image.shape), alpha), mask
    raise InputError(f"unknown blemish kind '{kind}'; expected one of {', '.join(BLEMISH_KINDS)}")


# --------------------------------------------------------------------------- public API

_RENDERERS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, _Scene]]] = {
    "fabric": _render_fabric,
    "washer": _render_washer,
}
_DEFECTS: dict[tuple[str, str], Callable[[np.ndarray, _Scene, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    ("fabric", "hole"): _fabric_hole,
    ("fabric", "scratch"): _fabric_scratch,
    ("fabric", "stain"): _fabric_stain,
    ("washer", "crack"): _washer_crack,
    ("washer", "scratch"): _washer_scratch,
    ("washer", "contamination"): _washer_contamination,
}


def _check(category: str, size: int) -> None:
    if category not in _RENDERERS:
        raise InputError(f"unknown demo category '{category}'; expected one of {', '.join(DEMO_CATEGORIES)}")
    if int(size) < MIN_SIZE:
        raise InputError(f"demo image size {size} is too small; use at least {MIN_SIZE} px")


def render_good(category: str, rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A defect-free sample: ``(image uint8 HxWx3, foreground bool HxW)``.

    The foreground is where defects may appear: the whole cloth for ``fabric``, the
    metal face of the ring for ``washer``.
    """
    _check(category, size)
    image, scene = _RENDERERS[category](rng, int(size))
    return _quantize(image), scene.foreground


def _apply(category: str, rng: np.random.Generator, size: int,
           painter: Callable[[np.ndarray, _Scene], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    _check(category, size)
    good, scene = _RENDERERS[category](rng, int(size))
    damaged, mask = painter(good, scene)
    # Pixels outside the mask are the good sample's pixels, bit for bit.
    damaged = np.where(mask[:, :, None], damaged, good)
    return _quantize(damaged), mask


def render_defect(category: str, kind: str, rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A sample with one defect of ``kind``: ``(image uint8 HxWx3, mask bool HxW)``.

    Starts from exactly the sample :func:`render_good` would paint with the same ``rng``
    state and changes pixels only inside ``mask``.
    """
    _check(category, size)
    if (category, kind) not in _DEFECTS:
        raise InputError(f"unknown defect kind '{kind}' for '{category}'; expected one of "
                         f"{', '.join(DEFECT_KINDS[category])}")
    return _apply(category, rng, size, lambda image, scene: _DEFECTS[(category, kind)](image, scene, rng))


def render_blemish(category: str, rng: np.random.Generator, size: int = 256,
                   kind: str | Sequence[str] | None = None, count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A sample with generic blemishes: ``(image, mask)`` like :func:`render_defect`.

    ``kind`` is one of :data:`BLEMISH_KINDS`, a sequence of them (one blemish each), or
    ``None`` for ``count`` blemishes of random kinds. Used to pretrain the demo diffusion
    model on "a surface with a blemish" without ever showing it the few-shot defect
    kinds by name.
    """
    if kind is None:
        kinds: list[str | None] = [None] * max(1, int(count))
    else:
        kinds = [kind] if isinstance(kind, str) else list(kind)
    for chosen in kinds:
        if chosen is not None and chosen not in BLEMISH_KINDS:
            raise InputError(f"unknown blemish kind '{chosen}'; expected one of {', '.join(BLEMISH_KINDS)}")
    if not kinds:
        raise InputError("no blemish kind given")

    def paint(image: np.ndarray, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
        mask = np.zeros(image.shape[:2], bool)
        for chosen in kinds:
            if chosen is None:
                chosen = BLEMISH_KINDS[int(rng.integers(len(BLEMISH_KINDS)))]
            image, added = _blemish(image, scene, rng, chosen)
            mask |= added
        return image, mask

    return _apply(category, rng, size, paint)
