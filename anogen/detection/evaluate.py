"""Evaluate a trained detector on a category's test set, under a stated protocol.

Two protocols:

* ``holdout`` (the default): the training run picked its ``best`` checkpoint on a
  held-out share of the labelled test images; that checkpoint is scored on the rest of
  the test set, so no image both chose the model and scored it.
* ``paper``: what the reference code reported: the ``last`` checkpoint, scored on the
  whole test set.

Under both, the *support* images (the few real defects stage 1 learned from) are left
out: a detector trained on anomalies generated from them would be scored on what it
was shown (the reference test sets still contained them). Support images named at
training time are recorded in the checkpoint and excluded here as well.

Every excluded image is recognised by the SHA-256 of its file
(:mod:`anogen.data.exclusion`), never by path, so evaluating a copy of the dataset
leaves out the same images. The report states the protocol, the checkpoint, and how
many images were scored and excluded (support, validation).

Maps are compared with the ground truth at the detector's input resolution (masks are
area-resized and thresholded at 0.5), as the DRAEM and DeSTSeg reference evaluations do.

:func:`score_test_set` is the one scoring core: ``anogen evaluate`` (through
:func:`evaluate`) and the app's Test step both call it, so they exclude the same images
and report the same numbers; the app also keeps each image's score and map from it.
Given ``model=``, an export of the checkpoint (ONNX, OpenVINO, or an int8 quantization
of one; :mod:`anogen.detection.runtimes`) scores the same images in its runtime, so a
deployed model's accuracy is measured the same way (``benchmarks/bench_inference.py
--accuracy``).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anogen.data.exclusion import excluded_indices, file_digests
from anogen.detection.options import PROTOCOL_CHECKPOINT, PROTOCOLS
from anogen.errors import InputError
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress

if TYPE_CHECKING:
    from anogen.detection.checkpoint import LoadedDetector
    from anogen.detection.runtimes import ExportedModel


def resolve_protocol(detector_dir: str | os.PathLike, protocol: str | None = None,
                     which: str | None = None) -> tuple[str, str]:
    """``(protocol, checkpoint)`` of an evaluation.

    The protocol is the one given, else the one the run was trained under (runs from
    before protocols existed used ``holdout``); the checkpoint is the one given, else the
    protocol's (``best`` for holdout, ``last`` for paper).
    """
    from anogen.detection.checkpoint import read_checkpoint_info

    if protocol is None:
        protocol = str(read_checkpoint_info(detector_dir, which or "best").provenance.get("protocol", "holdout"))
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    return protocol, which or PROTOCOL_CHECKPOINT[protocol]


def _recorded_digests(provenance: dict[str, Any], key: str, legacy_paths: Sequence[Path]) -> list[str]:
    """Digests a training run recorded; for a run from before digests were recorded, the
    digests of the files it named by path, where they still exist."""
    if key in provenance:
        return list(provenance[key])
    return file_digests(p for p in legacy_paths if p.is_file())


@dataclass
class TestSetScores:
    """One scoring of a test set: the metrics and what each scored image got, in order."""

    metrics: Any  # anogen.metrics.MetricsReport
    records: list[Any]  # the scored test images (anogen.data.datasets.ImageRecord)
    labels: np.ndarray  # (N,) 1 for a defective image
    scores: np.ndarray  # (N,) the detector's raw image scores
    normalised: np.ndarray  # (N,) 0..1, 0.5 at the checkpoint's calibrated threshold
    maps: np.ndarray  # (N, S, S) float32 anomaly maps at the detector's input size S

    __test__ = False  # not a pytest test class, whatever its name


def evaluate(data_dir: str | os.PathLike, detector_dir: str | os.PathLike,
             exclude: Sequence[str | os.PathLike] = (), *, protocol: str | None = None,
             which: str | None = None, device: str = "auto", batch_size: int = 8,
             include_validation: bool = False, progress: ProgressFn | None = None,
             cancel: threading.Event | None = None):
    """Score the test images of ``data_dir`` the ``protocol`` keeps and compute the metrics.

    ``protocol``/``which``: see :func:`resolve_protocol`. ``include_validation`` keeps
    the holdout protocol's validation images (optimistic: they chose the checkpoint).
    Returns a :class:`~anogen.metrics.MetricsReport` that names the protocol and the
    checkpoint and counts the scored and excluded images.
    """
    return score_test_set(data_dir, detector_dir, exclude, protocol=protocol, which=which, device=device,
                          batch_size=batch_size, include_validation=include_validation, progress=progress,
                          cancel=cancel).metrics


def score_test_set(data_dir: str | os.PathLike, detector_dir: str | os.PathLike,
                   exclude: Sequence[str | os.PathLike] = (), *, protocol: str | None = None,
                   which: str | None = None, device: str = "auto", batch_size: int = 8,
                   include_validation: bool = False, progress: ProgressFn | None = None,
                   cancel: threading.Event | None = None,
                   model: LoadedDetector | ExportedModel | None = None) -> TestSetScores:
    """:func:`evaluate`, keeping each scored image's record, label, score and anomaly map.

    ``model``: score with this instead of the checkpoint in torch, an
    :class:`~anogen.detection.runtimes.ExportedModel` of the same checkpoint; the
    exclusions and the score calibration still come from the checkpoint.
    """
    from anogen.data.datasets import read_mvtec_category
    from anogen.data.imageio import read_image
    from anogen.detection.checkpoint import load_detector
    from anogen.detection.infer import score_with
    from anogen.detection.preprocess import ground_truth_resized, resize_image
    from anogen.detection.training_data import is_defective
    from anogen.metrics import compute_metrics

    report = progress or no_progress
    protocol, which = resolve_protocol(detector_dir, protocol, which)
    loaded = load_detector(detector_dir, which=which, device="cpu" if model is not None else device)
    if model is not None and model.image_size != loaded.image_size:
        raise InputError(f"{getattr(model, 'path', 'the model')}: input size {model.image_size} px, but the {which} "
                         f"checkpoint of {detector_dir} takes {loaded.image_size} px: not an export of it")
    provenance = loaded.info.provenance
    data_dir = Path(data_dir)
    category = read_mvtec_category(data_dir)
    records = list(category.test)
    if not records:
        raise InputError(f"{data_dir}: the test set is empty")

    support = _recorded_digests(provenance, "support_digests",
                                [Path(p) for p in provenance.get("excluded_support_images", [])])
    support_hits = excluded_indices(records, list(exclude), digests=support)
    validation_hits: set[int] = set()
    if protocol == "holdout" and not include_validation and provenance.get("validation_source") == "test":
        trained_on = Path(provenance.get("data_dir", ""))
        validation = _recorded_digests(provenance, "validation_digests",
                                       [trained_on / n for n in provenance.get("validation_images", [])])
        validation_hits = excluded_indices(records, digests=validation) - support_hits
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
        originals = [read_image(r.path) for r in chunk]
        images = np.stack([resize_image(image, size) for image in originals])
        masks += [ground_truth_resized(record, size, image.shape) for record, image in zip(chunk, originals)]
        chunk_maps, chunk_scores = score_with(model if model is not None else loaded, images, batch_size)
        maps.append(chunk_maps)
        scores.append(chunk_scores)
        report(Progress(min(start + batch_size, len(kept)), len(kept), "scoring test images"))

    report(Progress(len(kept), len(kept), "computing metrics"))
    metrics = compute_metrics(np.concatenate(scores), labels, np.concatenate(maps), np.stack(masks),
                              n_excluded=len(support_hits) + len(validation_hits))
    metrics.protocol, metrics.checkpoint = protocol, which
    metrics.n_excluded_support, metrics.n_excluded_validation = len(support_hits), len(validation_hits)
    metrics.notes.append(f"{protocol} protocol, {which} checkpoint: scored {len(kept)} of {len(records)} test "
                         f"images; excluded {len(support_hits)} support image(s) and {len(validation_hits)} "
                         "validation image(s)")
    metrics.test_per_kind = dict(sorted(Counter(str(r.defect_kind) for r in kept).items()))
    metrics.generated_per_kind = dict(provenance.get("generated_per_kind") or {})
    all_scores = np.concatenate(scores)
    return TestSetScores(metrics=metrics, records=kept, labels=labels, scores=all_scores,
                         normalised=loaded.calibration.normalise(all_scores), maps=np.concatenate(maps))
