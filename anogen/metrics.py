"""Anomaly detection metrics: image and pixel AUROC and AP, AUPRO, F1-max.

All metrics are exact: every distinct score is a threshold (no threshold grid). They
come from one descending sort of the scores followed by cumulative sums read at the
end of each run of tied scores:

* AUROC: trapezoidal area under (FPR, TPR), the same number as sklearn's
  ``roc_auc_score``.
* AP: sklearn's ``average_precision_score``: sum over thresholds of
  (R_k - R_{k-1}) * P_k, no interpolation.
* F1-max: the best F1 over thresholds, with the threshold (predict "defective" when
  ``score >= threshold``).
* AUPRO (MVTec AD evaluation): for every ground-truth connected region (8-connected)
  the overlap is the fraction of its pixels at or above the threshold; PRO is the mean
  over all regions of all images; FPR is over all normal pixels of all images. The PRO
  curve is integrated against FPR from 0 to ``fpr_limit`` (0.3), interpolated linearly
  at the limit, and divided by the limit so that 1.0 is perfect.

Memory: pixel scores are ranked as one ``uint64`` per pixel (the float32 score's
bits, made order-preserving, in the high word; the pixel's ground-truth region id in
the low word), sorted in place, then walked in chunks. 300 maps of 256x256 need
about 160 MB for the keys plus chunk-sized temporaries; nothing is of size
thresholds x pixels.

Degenerate inputs give NaN with a reason in :attr:`MetricsReport.notes` (a test set
with one class has no AUROC); malformed inputs (shape mismatch, NaN scores) raise
:class:`~anogen.errors.InputError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from anogen.errors import InputError

__all__ = [
    "MetricsReport",
    "compute_metrics",
    "auroc",
    "average_precision",
    "f1_max",
    "aupro",
    "pixel_metrics",
    "PixelMetrics",
    "roc_curve_points",
    "pr_curve_points",
]

ArrayLike = np.ndarray | Sequence[float]
MapsLike = np.ndarray | Sequence[np.ndarray]

_CHUNK = 1 << 18  # pixels walked per step after the sort: bounds the temporaries (~10 MB)
_PACKED_MIN_SIZE = 1 << 16  # below this, a plain float64 argsort is simpler and as fast


# --------------------------------------------------------------------------- ranking
class _Ranked:
    """Scores sorted in descending order, each with an integer id (0 = negative)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Sort keys (comparable, equal iff the scores are equal) and ids of [start, stop)."""
        raise NotImplementedError

    def thresholds(self, keys: np.ndarray) -> np.ndarray:
        """The float scores behind sort keys returned by :meth:`chunk`."""
        raise NotImplementedError


class _RankedFloat64(_Ranked):
    """Small inputs (image scores): float64 argsort."""

    def __init__(self, scores: np.ndarray, ids: np.ndarray):
        order = np.argsort(-scores, kind="stable")
        self._scores = scores[order]
        self._ids = ids[order]

    def __len__(self) -> int:
        return len(self._scores)

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return self._scores[start:stop], self._ids[start:stop]

    def thresholds(self, keys: np.ndarray) -> np.ndarray:
        return keys.astype(np.float64)


def _float32_sort_bits(scores: np.ndarray) -> np.ndarray:
    """uint32 whose unsigned order is the float order of ``scores`` (float32)."""
    scores = np.asarray(scores, dtype=np.float32) + np.float32(0.0)  # -0.0 -> +0.0: equal scores, equal keys
    bits = scores.view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


def _float32_from_sort_bits(bits: np.ndarray) -> np.ndarray:
    bits = bits.astype(np.uint32)
    positive = (bits >> np.uint32(31)).astype(bool)
    raw = np.where(positive, bits & np.uint32(0x7FFFFFFF), ~bits)
    return raw.view(np.float32).astype(np.float64)


def _pack(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """uint64 sort keys: order-preserving float32 bits in the high word, the id in the low."""
    keys = _float32_sort_bits(scores.ravel()).astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= ids.ravel().astype(np.uint64, copy=False)
    return keys


class _RankedPacked(_Ranked):
    """Large inputs (pixels): one uint64 per pixel, sorted in place, read backwards."""

    def __init__(self, keys: np.ndarray):
        keys.sort()
        self._desc = keys[::-1]

    def __len__(self) -> int:
        return len(self._desc)

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        part = self._desc[start:stop]
        return part >> np.uint64(32), (part & np.uint64(0xFFFFFFFF)).astype(np.int64)

    def thresholds(self, keys: np.ndarray) -> np.ndarray:
        return _float32_from_sort_bits(keys)


def _rank(scores: np.ndarray, ids: np.ndarray) -> _Ranked:
    if scores.size >= _PACKED_MIN_SIZE and scores.dtype in (np.float32, np.float16):
        return _RankedPacked(_pack(scores, ids))
    return _RankedFloat64(scores.astype(np.float64), ids)


@dataclass
class _Points:
    """Curve points at the end of each run of tied scores (descending thresholds)."""

    thresholds: np.ndarray  # float64
    tp: np.ndarray  # int64: positives with score >= threshold
    fp: np.ndarray  # int64: negatives with score >= threshold
    weighted: np.ndarray  # float64: cumulative sum of id_weights[id] (the PRO)


def _walk(ranked: _Ranked, id_weights: np.ndarray | None = None) -> Iterator[_Points]:
    """Cumulative counts at every distinct threshold, chunk by chunk."""
    n = len(ranked)
    chunk = _CHUNK
    tp_carry, fp_carry, w_carry = 0, 0, 0.0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        keys, ids = ranked.chunk(start, stop)
        # A run of ties ends where the next score differs (or at the very end).
        ends = np.flatnonzero(keys[1:] != keys[:-1])
        if stop == n or ranked.chunk(stop, stop + 1)[0][0] != keys[-1]:
            ends = np.append(ends, len(keys) - 1)
        positive = ids != 0
        tp = np.cumsum(positive, dtype=np.int64)
        positions = ends + 1  # elements seen so far in this chunk
        tp_ends = tp[ends] + tp_carry
        fp_ends = positions - tp[ends] + fp_carry
        if id_weights is not None:
            w = np.cumsum(id_weights[ids])
            w_ends = w[ends] + w_carry
            w_carry += float(w[-1])
        else:
            w_ends = np.zeros(len(ends))
        tp_carry += int(tp[-1])
        fp_carry += int(len(keys) - tp[-1])
        if len(ends):
            yield _Points(ranked.thresholds(keys[ends]), tp_ends, fp_ends, w_ends)


class _Trapezoid:
    """Streaming trapezoidal integral of y(x), optionally up to ``x_max`` (interpolated)."""

    def __init__(self, x_max: float = math.inf):
        self.x_max = x_max
        self.area = 0.0
        self.x, self.y = 0.0, 0.0
        self.done = False

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.done or len(x) == 0:
            return
        xs = np.concatenate([[self.x], x])
        ys = np.concatenate([[self.y], y])
        beyond = np.flatnonzero(xs > self.x_max)
        if len(beyond):
            j = beyond[0]
            self.area += float(np.trapezoid(ys[:j], xs[:j]))
            x0, y0, x1, y1 = xs[j - 1], ys[j - 1], xs[j], ys[j]
            y_at_limit = y0 + (y1 - y0) * (self.x_max - x0) / (x1 - x0)
            self.area += float((self.x_max - x0) * (y0 + y_at_limit) / 2.0)
            self.done = True
            return
        self.area += float(np.trapezoid(ys, xs))
        self.x, self.y = float(xs[-1]), float(ys[-1])


@dataclass
class _Scalars:
    auroc: float
    ap: float
    f1_max: float
    f1_threshold: float
    aupro: float


def _scalars(ranked: _Ranked, n_pos: int, n_neg: int, id_weights: np.ndarray | None = None,
             fpr_limit: float = 0.3) -> _Scalars:
    """Every scalar metric in one walk over the ranking."""
    roc = _Trapezoid()
    pro = _Trapezoid(fpr_limit)
    ap, prev_tp = 0.0, 0
    best_f1, best_threshold = -1.0, math.nan
    for points in _walk(ranked, id_weights):
        tp, fp = points.tp, points.fp
        fpr = fp / n_neg if n_neg else np.zeros(len(fp))
        if n_pos:
            roc.add(fpr, tp / n_pos)
            recall_gain = np.diff(np.concatenate([[prev_tp], tp])) / n_pos
            ap += float(np.sum(recall_gain * (tp / (tp + fp))))
            f1 = 2.0 * tp / (tp + fp + n_pos)
            k = int(np.argmax(f1))
            if f1[k] > best_f1:
                best_f1, best_threshold = float(f1[k]), float(points.thresholds[k])
        if id_weights is not None and n_neg:
            pro.add(fpr, points.weighted)
        prev_tp = int(tp[-1])
    return _Scalars(
        auroc=roc.area if (n_pos and n_neg) else math.nan,
        ap=ap if n_pos else math.nan,
        f1_max=best_f1 if n_pos else math.nan,
        f1_threshold=best_threshold if n_pos else math.nan,
        aupro=pro.area / fpr_limit if (id_weights is not None and n_neg and n_pos) else math.nan,
    )


# --------------------------------------------------------------------------- inputs
def _scores_1d(scores: ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(scores)
    if array.ndim != 1:
        array = array.reshape(-1) if array.ndim == 2 and 1 in array.shape else array
    if array.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise InputError(f"{what} must be numbers, got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)  # float32 stays: large float32 inputs take the packed path
    bad = np.flatnonzero(np.isnan(array))
    if len(bad):
        raise InputError(f"{what}: {len(bad)} value(s) are NaN (first at index {bad[0]})")
    return array


def _labels_1d(labels: ArrayLike, n: int, what: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        array = array.reshape(-1) if array.ndim == 2 and 1 in array.shape else array
    if array.shape != (n,):
        raise InputError(f"{what}: expected {n} labels, got shape {array.shape}")
    if array.dtype != bool:
        values = np.unique(array)
        if not np.all(np.isin(values, (0, 1))):
            raise InputError(f"{what} must be 0/1 or bool, found values {values[:5].tolist()}")
        array = array.astype(bool)
    return array


def _single_class_reason(n_pos: int, n_neg: int, level: str) -> str | None:
    if n_pos and n_neg:
        return None
    missing = "defective" if not n_pos else "normal"
    return f"{level} AUROC undefined: no {missing} {'pixels' if level == 'pixel' else 'images'} in the test set"


# --------------------------------------------------------------------------- 1-D metrics
def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (sklearn ``roc_auc_score``); NaN with one class only."""
    s = _scores_1d(scores, "scores")
    y = _labels_1d(labels, len(s), "labels")
    n_pos = int(y.sum())
    return _scalars(_rank(s, y.astype(np.int64)), n_pos, len(y) - n_pos).auroc


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """sklearn ``average_precision_score``: sum_k (R_k - R_{k-1}) P_k; NaN without positives."""
    s = _scores_1d(scores, "scores")
    y = _labels_1d(labels, len(s), "labels")
    n_pos = int(y.sum())
    return _scalars(_rank(s, y.astype(np.int64)), n_pos, len(y) - n_pos).ap


def f1_max(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """(best F1 over all thresholds, its threshold); "defective" means ``score >= threshold``."""
    s = _scores_1d(scores, "scores")
    y = _labels_1d(labels, len(s), "labels")
    n_pos = int(y.sum())
    result = _scalars(_rank(s, y.astype(np.int64)), n_pos, len(y) - n_pos)
    return result.f1_max, result.f1_threshold


def _curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    s = _scores_1d(scores, "scores")
    y = _labels_1d(labels, len(s), "labels")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    thresholds, tp, fp = [], [], []
    ranked = _rank(s.astype(np.float32) if len(s) >= _PACKED_MIN_SIZE else s, y.astype(np.int64))
    for points in _walk(ranked):
        thresholds.append(points.thresholds)
        tp.append(points.tp)
        fp.append(points.fp)
    return (np.concatenate(thresholds) if thresholds else np.zeros(0), np.concatenate(tp) if tp else np.zeros(0),
            np.concatenate(fp) if fp else np.zeros(0), n_pos, n_neg)


def _decimate(max_points: int | None, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Evenly spaced subset (first and last kept). For plotting only: metrics never decimate."""
    n = len(arrays[0])
    if max_points is None or n <= max_points:
        return arrays
    if max_points < 2:
        raise InputError(f"max_points must be >= 2, got {max_points}")
    index = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return tuple(a[index] for a in arrays)


def roc_curve_points(scores: ArrayLike, labels: ArrayLike,
                     max_points: int | None = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for plotting, starting at (0, 0) with threshold +inf.

    Raises :class:`InputError` when the labels hold one class only (no curve exists).
    ``max_points`` keeps an evenly spaced subset for drawing (None keeps all).
    """
    thresholds, tp, fp, n_pos, n_neg = _curve(scores, labels)
    reason = _single_class_reason(n_pos, n_neg, "image")
    if reason:
        raise InputError(reason.replace("image AUROC", "ROC curve"))
    fpr = np.concatenate([[0.0], fp / n_neg])
    tpr = np.concatenate([[0.0], tp / n_pos])
    thresholds = np.concatenate([[np.inf], thresholds])
    fpr, tpr, thresholds = _decimate(max_points, fpr, tpr, thresholds)
    return fpr, tpr, thresholds


def pr_curve_points(scores: ArrayLike, labels: ArrayLike,
                    max_points: int | None = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, thresholds) for plotting, in order of decreasing threshold.

    Raises :class:`InputError` when there is no positive label.
    """
    thresholds, tp, fp, n_pos, _ = _curve(scores, labels)
    if not n_pos:
        raise InputError("PR curve undefined: no defective samples")
    recall, precision, thresholds = _decimate(max_points, tp / n_pos, tp / (tp + fp), thresholds)
    return recall, precision, thresholds


# --------------------------------------------------------------------------- pixel metrics
def _as_maps(maps: MapsLike, what: str) -> list[np.ndarray]:
    if isinstance(maps, np.ndarray) or hasattr(maps, "numpy"):
        array = np.asarray(maps)
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise InputError(f"{what} must be (N,H,W) or (N,1,H,W), got shape {array.shape}")
        return list(array)
    items = []
    for i, item in enumerate(maps):
        item = np.asarray(item)
        if item.ndim == 3 and item.shape[0] == 1:
            item = item[0]
        if item.ndim != 2:
            raise InputError(f"{what}[{i}] must be a 2-D map, got shape {item.shape}")
        items.append(item)
    return items


@dataclass
class PixelMetrics:
    auroc: float
    ap: float
    aupro: float
    f1_max: float
    f1_threshold: float
    n_pixels: int
    n_defective_pixels: int
    n_regions: int


def pixel_metrics(anomaly_maps: MapsLike, gt_masks: MapsLike, fpr_limit: float = 0.3) -> PixelMetrics:
    """Pixel AUROC, AP, F1-max and AUPRO over all pixels of all maps, from one sort.

    ``anomaly_maps``: (N,H,W) / (N,1,H,W) array or a list of (H,W) maps (compared at
    float32 precision). ``gt_masks``: the same shapes, bool or numbers (> 0.5 = defect,
    so 0/1 and 0/255 masks both work).
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise InputError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    maps = _as_maps(anomaly_maps, "anomaly_maps")
    masks = _as_maps(gt_masks, "gt_masks")
    if len(maps) != len(masks):
        raise InputError(f"{len(maps)} anomaly maps but {len(masks)} ground-truth masks")
    if not maps:
        raise InputError("no anomaly maps")
    for i, (score_map, mask) in enumerate(zip(maps, masks)):
        if score_map.shape != mask.shape:
            raise InputError(f"anomaly map {i} has shape {score_map.shape} but its mask has shape {mask.shape}")
        if not np.issubdtype(score_map.dtype, np.number):
            raise InputError(f"anomaly map {i} must hold numbers, got dtype {score_map.dtype}")
    total = sum(m.size for m in maps)
    keys = np.empty(total, dtype=np.uint64)  # the only per-pixel array that lives long
    areas = [0.0]  # region id -> pixel count; id 0 = normal pixel
    offset = 0
    for i, (score_map, mask) in enumerate(zip(maps, masks)):
        scores = np.asarray(score_map, dtype=np.float32)
        if np.isnan(scores).any():
            raise InputError(f"anomaly map {i} contains NaN")
        binary = np.ascontiguousarray(mask if mask.dtype == bool else mask > 0.5).view(np.uint8)
        ids = np.zeros(mask.shape, dtype=np.uint64)
        if binary.any():  # label its regions with ids unique over all maps (8-connected, as MVTec)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)
            np.add(labels, len(areas) - 1, out=ids, where=labels > 0, casting="unsafe")
            areas.extend(stats[1:count, cv2.CC_STAT_AREA].astype(np.float64).tolist())
        keys[offset:offset + scores.size] = _pack(scores, ids)
        offset += scores.size
    n_regions = len(areas) - 1
    area = np.asarray(areas)
    n_pos = int(area[1:].sum())
    n_neg = total - n_pos
    id_weights = np.zeros(len(area))
    if n_regions:
        id_weights[1:] = 1.0 / (area[1:] * n_regions)  # each region weighs 1/n_regions in the mean
    ranked = _RankedPacked(keys)
    s = _scalars(ranked, n_pos, n_neg, id_weights, fpr_limit)
    return PixelMetrics(auroc=s.auroc, ap=s.ap, aupro=s.aupro, f1_max=s.f1_max, f1_threshold=s.f1_threshold,
                        n_pixels=total, n_defective_pixels=n_pos, n_regions=n_regions)


def aupro(anomaly_maps: MapsLike, gt_masks: MapsLike, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by it (MVTec AD)."""
    return pixel_metrics(anomaly_maps, gt_masks, fpr_limit).aupro


# --------------------------------------------------------------------------- report
@dataclass
class MetricsReport:
    """Metrics of one detector on one test set (0..1; NaN = undefined, see ``notes``).

    ``f1_max``/``f1_threshold`` are image level (the threshold a deployment uses to call
    an image defective); the pixel-level pair is ``pixel_f1_max``/``pixel_f1_threshold``.
    ``n_excluded`` counts test images left out by the caller (support images of the
    defect kinds, which the generator has seen).
    """

    image_auroc: float
    image_ap: float
    pixel_auroc: float = math.nan
    pixel_ap: float = math.nan
    pixel_aupro: float = math.nan
    f1_max: float = math.nan
    f1_threshold: float = math.nan
    pixel_f1_max: float = math.nan
    pixel_f1_threshold: float = math.nan
    n_images: int = 0
    n_defective: int = 0
    n_excluded: int = 0
    notes: list[str] = field(default_factory=list)
    # Filled by a detector evaluation: scored test images per defect kind ("good"
    # included), and the generated samples per defect kind the detector trained on.
    test_per_kind: dict[str, int] = field(default_factory=dict)
    generated_per_kind: dict[str, int] = field(default_factory=dict)
    # Which images were scored with which checkpoint (anogen.detection.evaluate):
    # "holdout" or "paper", "best" or "last", and the excluded images by reason.
    protocol: str = ""
    checkpoint: str = ""
    n_excluded_support: int = 0
    n_excluded_validation: int = 0

    def to_json(self) -> dict:
        """The metrics file's JSON (what ``anogen evaluate --json`` writes): the keys
        ``image_auroc image_ap pixel_auroc pixel_ap pixel_aupro`` (0..1) that scripts read,
        plus F1-max and the counts; undefined metrics become null.

        ``n_scored`` (the images the metrics cover) is spelled out next to ``n_excluded``.
        """
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[key] = value
        out["n_scored"] = self.n_images
        return out


def compute_metrics(image_scores: ArrayLike, image_labels: ArrayLike,
                    anomaly_maps: MapsLike | None = None, gt_masks: MapsLike | None = None,
                    *, n_excluded: int = 0, fpr_limit: float = 0.3) -> MetricsReport:
    """All metrics of a test set. Pixel metrics need both ``anomaly_maps`` and ``gt_masks``."""
    scores = _scores_1d(image_scores, "image_scores")
    labels = _labels_1d(image_labels, len(scores), "image_labels")
    if len(scores) == 0:
        raise InputError("empty test set: no image scores")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    image = _scalars(_rank(scores, labels.astype(np.int64)), n_pos, n_neg)
    report = MetricsReport(image_auroc=image.auroc, image_ap=image.ap, f1_max=image.f1_max,
                           f1_threshold=image.f1_threshold, n_images=len(scores), n_defective=n_pos,
                           n_excluded=int(n_excluded))
    reason = _single_class_reason(n_pos, n_neg, "image")
    if reason:
        report.notes.append(reason)
    if (anomaly_maps is None) != (gt_masks is None):
        raise InputError("pixel metrics need both anomaly_maps and gt_masks")
    if anomaly_maps is not None:
        maps = _as_maps(anomaly_maps, "anomaly_maps")
        if len(maps) != len(scores):
            raise InputError(f"{len(scores)} image scores but {len(maps)} anomaly maps")
        assert gt_masks is not None  # both or neither, checked above
        pixel = pixel_metrics(maps, gt_masks, fpr_limit)
        report.pixel_auroc, report.pixel_ap, report.pixel_aupro = pixel.auroc, pixel.ap, pixel.aupro
        report.pixel_f1_max, report.pixel_f1_threshold = pixel.f1_max, pixel.f1_threshold
        reason = _single_class_reason(pixel.n_defective_pixels, pixel.n_pixels - pixel.n_defective_pixels, "pixel")
        if reason:
            report.notes.append(reason + " (AP, AUPRO undefined too)" if not pixel.n_defective_pixels else reason)
    return report
