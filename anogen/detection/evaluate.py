"""Evaluate a trained detector on a category's test set.

Two kinds of test image are left out, and the report counts both:

* **support images**: the few real defects the embedding was learned from (stage 1).
  The paper's reference evaluation still contained them; a detector trained on
  anomalies generated from them would be scored on what it was shown. They are matched
  by path or, when the user copied them elsewhere (into a project folder), by content.
  Support images named at training time are recorded in the checkpoint and excluded
  here as well.
* **validation images**: the share of the test set the training run used to pick its
  best checkpoint and threshold (recorded in the checkpoint). Scoring on them would be
  optimistic; pass ``include_validation=True`` to keep them anyway.

Maps are compared with the ground truth at the detector's input resolution (masks are
area-resized and thresholded at 0.5), as the DRAEM and DeSTSeg reference evaluations do.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from anogen.data.exclusion import excluded_indices
from anogen.errors import InputError
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress


def evaluate(data_dir: str | os.PathLike, detector_dir: str | os.PathLike,
             exclude: Sequence[str | os.PathLike] = (), *, which: str = "best", device: str = "auto",
             batch_size: int = 8, include_validation: bool = False, progress: Optional[ProgressFn] = None,
             cancel: Optional[threading.Event] = None):
    """Score every test image of ``data_dir`` and compute the metrics.

    Returns a :class:`~anogen.metrics.MetricsReport`; ``n_excluded`` counts the support
    and validation images left out, and a note says how many of each.
    """
    from anogen.data.datasets import read_mvtec_category
    from anogen.data.imageio import read_image, read_mask
    from anogen.detection.checkpoint import load_detector
    from anogen.detection.infer import score_images
    from anogen.detection.training_data import is_defective, resize_image, resize_mask
    from anogen.metrics import compute_metrics

    report = progress or no_progress
    loaded = load_detector(detector_dir, which=which, device=device)
    provenance = loaded.info.provenance
    data_dir = Path(data_dir)
    category = read_mvtec_category(data_dir)
    records = list(category.test)
    if not records:
        raise InputError(f"{data_dir}: the test set is empty")

    support = list(exclude) + [p for p in provenance.get("excluded_support_images", []) if Path(p).exists()]
    support_hits = excluded_indices(records, support)
    validation_hits: set[int] = set()
    if not include_validation and provenance.get("validation_source") == "test":
        same_data = Path(provenance.get("data_dir", "")).resolve() == data_dir.resolve()
        names = set(provenance.get("validation_images", []))
        if same_data and names:
            for index, record in enumerate(records):
                try:
                    name = str(Path(record.path).resolve().relative_to(data_dir.resolve()))
                except ValueError:
                    continue
                if name in names:
                    validation_hits.add(index)
    validation_hits -= support_hits
    kept = [r for i, r in enumerate(records) if i not in support_hits and i not in validation_hits]
    if not kept:
        raise InputError(f"{data_dir}: no test image is left after excluding {len(support_hits)} support and "
                         f"{len(validation_hits)} validation image(s)")
    labels = np.array([int(is_defective(r)) for r in kept])

    size = loaded.image_size
    maps: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for start in range(0, len(kept), batch_size):
        check_cancel(cancel)
        chunk = kept[start:start + batch_size]
        images = np.stack([resize_image(read_image(r.path), size) for r in chunk])
        for record in chunk:
            if is_defective(record) and record.mask_path is not None:
                masks.append(resize_mask(read_mask(record.mask_path), size) > 0.5)
            else:
                masks.append(np.zeros((size, size), dtype=bool))
        chunk_maps, chunk_scores = score_images(loaded.detector, images, loaded.device, batch_size)
        maps.append(chunk_maps)
        scores.append(chunk_scores)
        report(Progress(min(start + batch_size, len(kept)), len(kept), "scoring test images"))

    report(Progress(len(kept), len(kept), "computing metrics"))
    n_excluded = len(support_hits) + len(validation_hits)
    metrics = compute_metrics(np.concatenate(scores), labels, np.concatenate(maps), np.stack(masks),
                              n_excluded=n_excluded)
    metrics.notes.append(f"excluded {len(support_hits)} support image(s) and {len(validation_hits)} "
                         "validation image(s) from the test set")
    metrics.test_per_kind = dict(sorted(Counter(str(r.defect_kind) for r in kept).items()))
    metrics.generated_per_kind = dict(provenance.get("generated_per_kind") or {})
    return metrics
