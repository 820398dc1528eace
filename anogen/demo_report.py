"""The report folder of `anogen demo`: pictures of every stage and an ``index.md``.

Layout (inside the demo's ``--out`` folder)::

    index.md                      the page to open first
    metrics.json                  written by the pipeline
    figures/<category>_support.png      support images with their masks
    figures/<category>_generated.png    generated samples (boxes drawn) beside real defects
    figures/<category>_stage1_loss.png  stage-1 loss curves, one per defect kind
    figures/<category>_detector_loss.png  detector loss, baseline vs with generated defects
    figures/<category>_heatmaps.png     test images with the detector's heat maps
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from anogen.atomic import atomic_write_text
from anogen.data.imageio import read_image, read_mask, write_image
from anogen.plotting import line_chart, moving_average

if TYPE_CHECKING:
    from anogen.demo_pipeline import CategoryResult, DemoResult

TILE = 128


def _tile(image: np.ndarray, size: int = TILE) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)


def label_tile(tile: np.ndarray, text: str, max_chars: int = 22) -> np.ndarray:
    """The tile with ``text`` on a black strip along its top."""
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 14), (0, 0, 0), -1)
    cv2.putText(tile, text[:max_chars], (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def tile_grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 4) -> np.ndarray:
    """Rows of equal-sized tiles on white, short rows padded with blank tiles."""
    width = max(len(r) for r in rows)
    blank = np.full_like(next(t for r in rows for t in r), 255)  # the first row may be empty
    lines = [np.concatenate([np.pad(t, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
                             for t in list(r) + [blank] * (width - len(r))], axis=1) for r in rows]
    return np.concatenate(lines, axis=0)


def _mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    tinted = image.copy()
    tinted[mask] = (0.5 * tinted[mask] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tinted, contours, -1, (255, 255, 0), 1)
    return tinted


def _support_figure(result: CategoryResult) -> np.ndarray:
    rows = []
    for kind in result.kinds:
        row = []
        for path in kind.support_images:
            image = read_image(path)
            mask = read_mask(_mask_path(Path(path)))
            row += [label_tile(_tile(image), f"{kind.kind}"), label_tile(_tile(_mask_overlay(image, mask)), "mask")]
        rows.append(row)
    return tile_grid(rows)


def _mask_path(image_path: Path) -> Path:
    """ground_truth/<kind>/<stem>_mask.png of an MVTec-layout test image."""
    category = image_path.parents[2]
    return category / "ground_truth" / image_path.parent.name / f"{image_path.stem}_mask.png"


def _generated_figure(result: CategoryResult, out: Path, per_kind: int = 4) -> np.ndarray:
    from anogen.data.generated import read_generated_set

    samples = read_generated_set(out / result.generated_dir)
    rows = []
    for kind in result.kinds:
        real = [label_tile(_tile(read_image(p)), f"real {kind.kind}") for p in kind.support_images[:2]]
        generated = []
        for sample in [s for s in samples if s.defect_kind == kind.kind][:per_kind]:
            image = sample.load_image().copy()
            x0, y0, x1, y1 = sample.box
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
            generated.append(label_tile(_tile(image), f"generated {kind.kind}"))
        rows.append(real + generated)
    return tile_grid(rows)


def _stage1_figure(result: CategoryResult) -> np.ndarray:
    series = {k.kind: list(enumerate(moving_average(k.loss_curve, 10), start=1)) for k in result.kinds}
    return line_chart(series, title="stage 1: masked noise-prediction loss (moving mean of 10)")


def _detector_figure(result: CategoryResult) -> np.ndarray:
    def losses(history: list[dict]) -> list[tuple[float, float]]:
        points = [(h["step"], h["loss"]) for h in history if h.get("phase") != "validation" and "loss" in h]
        smoothed = moving_average([p[1] for p in points], 20)
        return [(p[0], s) for p, s in zip(points, smoothed)]

    return line_chart({"baseline": losses(result.baseline_history),
                       "+ generated": losses(result.generated_history)},
                      title="detector training loss (moving mean of 20)", log_y=True)


def _heatmap_figure(result: CategoryResult, data_root: Path, out: Path, count: int = 6) -> np.ndarray:
    from anogen.data.datasets import read_mvtec_category
    from anogen.detection.checkpoint import load_detector
    from anogen.detection.infer import heatmap_overlay, predict

    support = {str(Path(p)) for k in result.kinds for p in k.support_images}
    records = [r for r in read_mvtec_category(data_root / result.category).test if str(r.path) not in support]
    # One defect of each kind in turn, so every kind shows up in the figure.
    by_kind = [[r for r in records if r.defect_kind == k.kind] for k in result.kinds]
    defective = [r for group in zip(*by_kind) for r in group][: count - 2]
    good = [r for r in records if r.label == 0][:2]
    chosen = defective + good
    images = [read_image(r.path) for r in chosen]
    rows = []
    for name in ("baseline", "generated"):
        loaded = load_detector(out / "detectors" / result.category / name, device="cpu")
        predictions = predict(loaded, images)
        rows.append([label_tile(_tile(heatmap_overlay(image, p.anomaly_map)),
                                f"{name[:4]} {r.defect_kind} {p.score:.2f}")
                     for image, p, r in zip(images, predictions, chosen)])
    truth = []
    for image, record in zip(images, chosen):
        mask = read_mask(record.mask_path) if record.mask_path else np.zeros(image.shape[:2], bool)
        truth.append(label_tile(_tile(_mask_overlay(image, mask)), f"truth {record.defect_kind}"))
    return tile_grid([truth] + rows)


def _realism_table(result: CategoryResult) -> str:
    def cell(stats: dict, key: str) -> str:
        value = stats.get(key)
        return "n/a" if value is None or value != value else f"{value:.2f}"

    lines = ["| defect kind | changed share: generated | real | sharpness ratio: generated | real |",
             "|---|---|---|---|---|"]
    for k in result.kinds:
        gen, real = k.realism_generated, k.realism_real
        lines.append(f"| {k.kind} | {cell(gen, 'changed_fraction')} | {cell(real, 'changed_fraction')} | "
                     f"{cell(gen, 'sharpness_ratio')} | {cell(real, 'sharpness_ratio')} |")
    return "\n".join(lines)


def _metrics_table(result: DemoResult) -> str:
    keys = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "pixel_aupro")
    lines = ["| category | detector | " + " | ".join(keys) + " | test images (excluded) |",
             "|---|---|" + "---|" * len(keys) + "---|"]
    for c in result.categories:
        for label, metrics in (("baseline (synthesis only)", c.baseline), ("+ generated defects", c.with_generated)):
            cells = " | ".join("n/a" if metrics.get(k) is None else f"{metrics[k]:.3f}" for k in keys)
            lines.append(f"| {c.category} | {label} | {cells} | {metrics.get('n_images')} "
                         f"({metrics.get('n_excluded')}) |")
    return "\n".join(lines)


def write_report(result: DemoResult, data_root: Path) -> Path:
    """Draw the figures and write ``index.md``; returns its path."""
    out = result.out
    sections = ["# AnoGen demo report", "",
                f"All three stages on the procedural demo data with the embedded demo model, "
                f"in {result.seconds / 60:.1f} minutes.", "", "## Metrics", "", _metrics_table(result), "",
                "Support images (the few real defects used in stage 1) are excluded from the test set, "
                "as are the images held out for validation during training.", ""]
    for c in result.categories:
        names = {}
        # Each lambda binds c as a default: called at once, but a closure over a loop variable is a trap.
        for key, draw in (("support", lambda c=c: _support_figure(c)),
                          ("generated", lambda c=c: _generated_figure(c, out)),
                          ("stage1_loss", lambda c=c: _stage1_figure(c)),
                          ("detector_loss", lambda c=c: _detector_figure(c)),
                          ("heatmaps", lambda c=c: _heatmap_figure(c, data_root, out))):
            names[key] = f"figures/{c.category}_{key}.png"
            write_image(out / names[key], draw())
        rows = "\n".join(f"| {k.kind} | {k.heldout_loss_init:.4f} | {k.heldout_loss_learned:.4f} | {k.generated} |"
                         for k in c.kinds)
        sections += [
            f"## {c.category}", "",
            "### Stage 1: support set (3 masked defects per kind)", "", f"![support]({names['support']})", "",
            f"![stage 1 loss]({names['stage1_loss']})", "",
            "Masked denoising loss on held-out images of each kind, with the init word's embedding "
            "and with the learned one (lower is better):", "",
            "| defect kind | init word | learned | generated samples |", "|---|---|---|---|", rows, "",
            "### Stage 2: generated defects (green box) beside real ones", "",
            f"![generated]({names['generated']})", "",
            "Inside each box, generated vs real defects of the kind: the share of the box that changed "
            "visibly (a real defect covers part of its box) and the sharpness ratio (Laplacian variance "
            "vs the good image; a blurred patch is far below 1):", "", _realism_table(c), "",
            "### Stage 3: detectors", "", f"![detector loss]({names['detector_loss']})", "",
            "Top row: ground truth; then the baseline's and the generated-defect detector's heat maps "
            "(label: score).", "", f"![heat maps]({names['heatmaps']})", ""]
    sections += ["## Where the time went", "", "```", result.timing_lines(), "```", ""]
    index = out / "index.md"
    atomic_write_text(index, "\n".join(sections) + "\n")
    return index
