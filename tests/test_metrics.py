"""Metrics against hand-computed values, sklearn, and a slow reference AUPRO."""

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from anogen.errors import InputError
from anogen.metrics import (
    MetricsReport,
    aupro,
    auroc,
    average_precision,
    compute_metrics,
    f1_max,
    pixel_metrics,
    pr_curve_points,
    roc_curve_points,
)


# ---------------------------------------------------------------- hand-computed cases
def test_image_metrics_on_a_hand_computed_case():
    scores = [0.1, 0.4, 0.35, 0.8]
    labels = [0, 0, 1, 1]
    # ROC points (0,0) (0,.5) (.5,.5) (.5,1) (1,1): area 0.75.
    assert auroc(scores, labels) == pytest.approx(0.75)
    # Thresholds .8 -> P=1 R=.5; .4 -> P=.5 R=.5; .35 -> P=2/3 R=1: AP = .5*1 + .5*2/3.
    assert average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3)
    # F1 at .8: 2/3; at .4: 1/2; at .35: 0.8 (best); at .1: 2/3.
    best, threshold = f1_max(scores, labels)
    assert best == pytest.approx(0.8)
    assert threshold == pytest.approx(0.35)


def test_tied_scores_form_one_threshold():
    scores = [0.5, 0.5, 0.5, 0.2]
    labels = [1, 0, 1, 0]
    # One step from (0,0) to (.5,1), then to (1,1): a diagonal segment, area .25 + .5.
    assert auroc(scores, labels) == pytest.approx(0.75)
    assert average_precision(scores, labels) == pytest.approx(2 / 3)


@pytest.mark.parametrize("n", [7, 300, 70_000])  # 70 000 takes the packed float32 path
def test_matches_sklearn_with_ties(n):
    rng = np.random.default_rng(n)
    scores = (rng.integers(0, 50, n) / 7.0).astype(np.float32)  # many ties
    labels = rng.random(n) < 0.3
    labels[:2] = [True, False]
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_pixel_metrics_match_sklearn_over_all_pixels():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 40, 40), dtype=bool)
    masks[1, 5:15, 5:12] = True
    masks[2, 20:30, 20:35] = True
    maps = rng.random((6, 40, 40)).astype(np.float32) + 0.4 * masks
    result = pixel_metrics(maps, masks)
    assert result.auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert result.ap == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert result.n_regions == 2
    assert result.n_defective_pixels == int(masks.sum())


# ---------------------------------------------------------------- AUPRO
def _two_image_case(tied: bool):
    # Image A: region of 2 pixels (0.9 and 0.2, or 0.3 tied with a normal pixel), normals .5 .1
    # Image B: region of 1 pixel (0.6), normals .3 .05 .0
    a_scores = np.array([[0.9, 0.3 if tied else 0.2, 0.5, 0.1]], dtype=np.float32)
    a_mask = np.array([[1, 1, 0, 0]], dtype=bool)
    b_scores = np.array([[0.3, 0.6, 0.05, 0.0]], dtype=np.float32)
    b_mask = np.array([[0, 1, 0, 0]], dtype=bool)
    return [a_scores, b_scores], [a_mask, b_mask]


def test_aupro_hand_computed():
    maps, masks = _two_image_case(tied=False)
    # PRO-FPR points: (0,.25) (0,.75) (.2,.75) (.4,.75) (.4,1) ... (1,1)
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx(0.3 * 0.75 / 0.3)
    assert aupro(maps, masks, fpr_limit=0.5) == pytest.approx((0.4 * 0.75 + 0.1 * 1.0) / 0.5)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.9)


def test_aupro_interpolates_at_the_limit():
    maps, masks = _two_image_case(tied=True)
    # The .3 threshold moves the curve from (.2, .75) to (.4, 1) in one segment;
    # at FPR .3 the PRO is .875.
    expected = (0.2 * 0.75 + 0.1 * (0.75 + 0.875) / 2) / 0.3
    assert aupro(maps, masks) == pytest.approx(expected)


def _slow_aupro(maps, masks, limit):
    """Obviously correct: every threshold, every region, one at a time."""
    structure = np.ones((3, 3))
    regions, normals = [], []
    for score_map, mask in zip(maps, masks):
        labelled, count = ndimage.label(mask, structure=structure)
        regions += [score_map[labelled == k] for k in range(1, count + 1)]
        normals.append(score_map[~mask])
    normals = np.concatenate(normals)
    points = [(0.0, 0.0)]
    for t in sorted(set(np.concatenate([m.ravel() for m in maps]).tolist()), reverse=True):
        fpr = float(np.mean(normals >= t))
        pro = float(np.mean([np.mean(r >= t) for r in regions]))
        points.append((fpr, pro))
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    keep = x <= limit
    area = np.trapezoid(y[keep], x[keep])
    after = np.flatnonzero(~keep)
    if len(after):
        j = after[0]
        y_limit = y[j - 1] + (y[j] - y[j - 1]) * (limit - x[j - 1]) / (x[j] - x[j - 1])
        area += (limit - x[j - 1]) * (y[j - 1] + y_limit) / 2
    return area / limit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[0, 2:6, 3:9] = True
    masks[0, 10:14, 10:12] = True  # two regions in one image
    masks[1, 5:12, 5:7] = True
    masks[2, 0:3, 0:3] = True
    masks[2, 3, 3] = True  # diagonal neighbour: same region (8-connectivity)
    maps = (rng.integers(0, 30, masks.shape) + 12 * masks * rng.random(masks.shape)).astype(np.float32) / 30
    for limit in (0.3, 0.05, 1.0):
        assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(_slow_aupro(maps, masks, limit), abs=1e-9)
    assert pixel_metrics(maps, masks).n_regions == 4


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunked_walk_gives_the_same_numbers(monkeypatch, chunk):
    # Large inputs are walked in chunks; runs of tied scores cross chunk borders here.
    import anogen.metrics as metrics
    monkeypatch.setattr(metrics, "_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    masks = np.zeros((3, 12, 12), dtype=bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 7:9, 1:11] = True
    maps = (rng.integers(0, 6, masks.shape) + 3 * masks).astype(np.float32)
    result = pixel_metrics(maps, masks)
    assert result.auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert result.ap == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert result.aupro == pytest.approx(_slow_aupro(maps, masks, 0.3), abs=1e-9)
    scores = rng.integers(0, 4, 50).astype(np.float64)
    labels = rng.random(50) < 0.5
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_perfect_and_inverted_maps():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 2:5, 2:5] = True
    assert aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)
    assert aupro(1.0 - masks.astype(np.float32), masks) == pytest.approx(0.0)


# ---------------------------------------------------------------- report and curves
def test_compute_metrics_report_and_json():
    masks = np.zeros((4, 8, 8), dtype=np.uint8)
    masks[2, 1:4, 1:4] = 255  # 0/255 masks are read as 0/1
    masks[3, 5:7, 5:7] = 255
    maps = np.zeros((4, 8, 8), dtype=np.float32)
    maps[2, 1:4, 1:4] = 0.9
    maps[3, 5:7, 5:8] = 0.7
    report = compute_metrics([0.1, 0.2, 0.9, 0.7], [0, 0, 1, 1], maps, masks, n_excluded=3)
    assert isinstance(report, MetricsReport)
    assert report.image_auroc == pytest.approx(1.0)
    assert report.image_ap == pytest.approx(1.0)
    assert report.pixel_auroc == pytest.approx(roc_auc_score(masks.ravel() > 0, maps.ravel()))
    # Threshold .9: FPR 0, PRO .5 (one region of two). Threshold .7: the second region and
    # two normal pixels of image 3 (FPR 2/243), PRO 1.
    fpr = 2 / (4 * 64 - 13)
    assert report.pixel_aupro == pytest.approx((fpr * 0.75 + (0.3 - fpr) * 1.0) / 0.3)
    assert report.f1_max == pytest.approx(1.0) and report.f1_threshold == pytest.approx(0.7)
    assert (report.n_images, report.n_defective, report.n_excluded) == (4, 2, 3)
    data = json.loads(json.dumps(report.to_json()))
    for key in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "pixel_aupro", "n_images", "n_excluded"):
        assert key in data


def test_single_class_gives_nan_with_a_reason():
    report = compute_metrics([0.1, 0.3], [0, 0], np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), bool))
    assert math.isnan(report.image_auroc) and math.isnan(report.pixel_aupro)
    assert any("no defective images" in note for note in report.notes)
    assert any("pixel" in note for note in report.notes)
    assert report.to_json()["image_auroc"] is None  # JSON has no NaN
    assert math.isnan(auroc([0.2, 0.4], [1, 1]))


def test_image_metrics_without_maps():
    report = compute_metrics(np.array([0.3, 0.1, 0.8]), np.array([True, False, True]))
    assert report.image_auroc == pytest.approx(1.0)
    assert math.isnan(report.pixel_auroc)


@pytest.mark.parametrize("call, message", [
    (lambda: compute_metrics([0.1, 0.2], [0, 1, 1]), "labels"),
    (lambda: compute_metrics([0.1, float("nan")], [0, 1]), "NaN"),
    (lambda: compute_metrics([0.1, 0.2], [0, 2]), "0/1"),
    (lambda: compute_metrics([0.1, 0.2], [0, 1], np.zeros((2, 4, 4)), np.zeros((2, 4, 5))), "shape"),
    (lambda: compute_metrics([0.1, 0.2], [0, 1], np.zeros((3, 4, 4)), np.zeros((3, 4, 4))), "3 anomaly maps"),
    (lambda: compute_metrics([0.1, 0.2], [0, 1], np.zeros((2, 4, 4))), "both"),
    (lambda: pixel_metrics(np.full((1, 2, 2), np.nan), np.ones((1, 2, 2))), "NaN"),
    (lambda: compute_metrics([], []), "empty"),
])
def test_bad_input_raises_input_error(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_curve_points_for_plots():
    rng = np.random.default_rng(5)
    scores = rng.random(200)
    labels = rng.random(200) < 0.4
    fpr, tpr, thresholds = roc_curve_points(scores, labels, max_points=None)
    ref_fpr, ref_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores))
    assert thresholds[0] == np.inf
    short = roc_curve_points(scores, labels, max_points=20)
    assert len(short[0]) == 20 and short[0][0] == 0.0 and short[0][-1] == 1.0
    recall, precision, _ = pr_curve_points(scores, labels)
    assert recall[-1] == 1.0 and np.all(np.diff(recall) >= 0)
    assert -np.sum(np.diff(np.concatenate([[0.0], recall])) * -precision) == pytest.approx(
        average_precision_score(labels, scores))
    with pytest.raises(InputError):
        roc_curve_points([0.1, 0.2], [1, 1])
