"""One-call detector training: ``train(config, progress, cancel) -> TrainResult``.

The job (see :mod:`anogen.jobs`):

1. reads the category (MVTec AD layout) and, optionally, generated sets (one per defect
   kind; the paper trains each category on all its kinds at once);
2. resizes every image once to the detector's input size and keeps it in memory;
3. splits off a validation set: a seeded, per-defect-kind share of the category's
   labelled test images (support images the caller names are left out of it); when the
   category has no labelled anomalies, a held-out share of the good training images
   plus synthetic anomalies made on them (so no test label is ever needed);
4. trains through the detector's phases (:meth:`Detector.training_phases`) on batches
   that mix its own synthesis with the generated samples
   (:class:`~anogen.detection.training_data.MixedBatchSampler`);
5. every ``validate_every`` steps (and at the end) scores the validation set, writes
   ``<out>/last`` and, when the validation score improved, ``<out>/best``.

Seeded: the weights' initialisation and every batch follow from ``seed`` (a batch is a
function of seed and step), so a resumed run draws the batches an uninterrupted run
would have. Cancel and errors leave the last checkpoint folders as they were (each is
replaced atomically); a NaN or infinite loss raises
:class:`~anogen.errors.TrainingDiverged` naming the step.

The validation score that picks the best checkpoint is the mean of image AUROC and
pixel AP on the validation set; only validations in the last phase compete (before it,
a DeSTSeg head is still untrained), and the end of training always validates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from anogen.atomic import atomic_write_text
from anogen.detection.checkpoint import (
    CHECKPOINT_CHOICES,
    CONFIG_NAME,
    HISTORY_NAME,
    CheckpointInfo,
    ScoreCalibration,
    load_training_state,
    load_weights,
    read_checkpoint_info,
    recover_checkpoint,
    run_status,
    save_checkpoint,
)
from anogen.detection.options import PROTOCOLS, SYNTHESIS_METHODS
from anogen.detection.pipeline import DataPipeline
from anogen.detection.registry import DETECTORS, PRESETS, detector_kind
from anogen.detection.training_data import (
    BatchPrefetcher,
    GeneratedItem,
    MixedBatchSampler,
    is_defective,
    load_generated_items,
    resize_image,
    resize_mask,
)
from anogen.errors import InputError, TrainingDiverged
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress
from anogen.outputs import mark_output_dir

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """What to train, on what, and where to put it.

    ``overrides`` change fields of the detector config of ``preset`` (for example
    ``{"image_size": 64}``); ``steps`` overrides the preset's length. ``exclude`` lists
    support images (the few real defects used for stage 1): they never enter the
    validation split, and the checkpoint records them (by content) so ``evaluate`` leaves
    them out too. ``protocol`` ``holdout`` keeps the checkpoint that validates best;
    ``paper`` keeps the last one, as the reference code did (validation then only draws
    the curves and calibrates the threshold).
    """

    data_dir: Path
    detector: str
    out_dir: Path
    generated_dirs: Sequence[Path] = ()  # generated sets, e.g. one per defect kind of the category
    generated_dir: Optional[Path] = None  # one more set (for callers that pass a single one)
    preset: str = "quick"
    overrides: dict[str, Any] = field(default_factory=dict)
    steps: Optional[int] = None
    tau: float = 0.9
    mix: float = 0.5
    weak_all: bool = False  # apply the tau filter to every sample, as the reference code did
    seed: int = 0
    device: str = "auto"
    validate_every: Optional[int] = None  # None: about ten validations per run
    val_fraction: float = 0.3  # share of each test kind (or of train/good) held out
    max_val_images: int = 64
    teacher_weights: Optional[Path] = None  # DeSTSeg: ResNet18 weights (folder or file)
    textures_dir: Optional[Path] = None  # texture images for synthesis (e.g. DTD); default: built-in
    synthesis: str = "perlin"  # the detector's own anomalies: "perlin" (official) or "cutpaste" (Table 4)
    exclude: Sequence[Path] = ()
    resume: bool = False
    overwrite: bool = False
    log_every: int = 1
    protocol: str = "holdout"

    @property
    def generated_sets(self) -> list[Path]:
        """Every generated set to train on: ``generated_dirs`` and then ``generated_dir``."""
        return [Path(p) for p in self.generated_dirs] + ([Path(self.generated_dir)] if self.generated_dir else [])

    def validate(self) -> None:
        if self.detector not in DETECTORS:
            raise InputError(f"unknown detector '{self.detector}'; choose one of {', '.join(DETECTORS)}")
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset '{self.preset}'; choose one of {', '.join(PRESETS)}")
        if not 0.0 < self.tau <= 1.0:
            raise InputError(f"tau must be in (0, 1], got {self.tau}")
        if not 0.0 <= self.mix <= 1.0:
            raise InputError(f"mix must be in [0, 1], got {self.mix}")
        if self.mix == 0.0 and not self.generated_sets:
            raise InputError("mix 0 trains on generated samples only; give a generated set")
        if self.protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol '{self.protocol}'; choose one of {', '.join(PROTOCOLS)}")
        if self.synthesis not in SYNTHESIS_METHODS:
            raise InputError(f"unknown synthesis '{self.synthesis}'; choose one of {', '.join(SYNTHESIS_METHODS)}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}")
        if self.validate_every is not None and self.validate_every < 1:
            raise InputError(f"validate_every must be at least 1, got {self.validate_every}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.resume and self.overwrite:
            raise InputError("choose either resume or overwrite, not both")


@dataclass
class TrainResult:
    """What a finished training run produced."""

    out_dir: Path
    best_dir: Path
    last_dir: Path
    kind: str
    steps: int
    best_step: int
    best_metrics: dict[str, Any]
    last_metrics: dict[str, Any]
    final_loss: float
    history: list[dict[str, Any]]
    validation_source: str  # "test" or "synthetic"
    device: str
    seconds: float


# ----------------------------------------------------------------------------- data


@dataclass
class ValidationSet:
    """Validation images at the detector's input size, with labels and pixel masks."""

    images: np.ndarray  # float32 (N, S, S, 3)
    labels: np.ndarray  # int (N,)
    masks: np.ndarray  # bool (N, S, S)
    source: str  # "test": held out from the test set; "synthetic": good images + synthesis
    names: list[str]


def _read_resized(paths: Sequence[Path], size: int) -> list[np.ndarray]:
    from anogen.data.imageio import read_image

    # Decoding and resizing release the GIL; a few threads hide most of the I/O time.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: resize_image(read_image(p), size), paths))


def _read_mask_resized(record: Any, size: int) -> np.ndarray:
    from anogen.data.datasets import read_ground_truth

    mask = read_ground_truth(record)  # a mask of another size than its image is refused
    if mask is None:
        return np.zeros((size, size), dtype=bool)
    return resize_mask(mask, size) > 0.5


def _stratified_holdout(records: Sequence[Any], fraction: float, limit: int, rng: np.random.Generator) -> list[Any]:
    """A seeded share of each defect kind (at least one of each), at most ``limit`` in all."""
    groups: dict[str, list[Any]] = {}
    for record in records:
        groups.setdefault(str(record.defect_kind or "good"), []).append(record)
    chosen: list[Any] = []
    per_kind_limit = max(1, limit // max(1, len(groups)))
    for kind in sorted(groups):
        group = groups[kind]
        order = rng.permutation(len(group))
        count = min(len(group), per_kind_limit, max(1, round(fraction * len(group))))
        chosen += [group[i] for i in sorted(order[:count])]
    return chosen


def _synthetic_validation(good: Sequence[np.ndarray], names: Sequence[str], synthesizer,
                          seed: int) -> ValidationSet:
    """Each held-out good image twice: as it is, and with a synthetic anomaly."""
    rng = np.random.default_rng([seed, 0x5A11D])
    images, labels, masks, all_names = [], [], [], []
    for image, name in zip(good, names):
        images.append(image)
        labels.append(0)
        masks.append(np.zeros(image.shape[:2], dtype=bool))
        all_names.append(name)
        for _ in range(20):  # the synthesizer leaves some samples clean; draw until one is not
            result = synthesizer.sample(image, rng)
            mask = np.asarray(result.mask) > 0.5
            if mask.ndim == 3:
                mask = mask[..., 0]
            if result.has_anomaly and mask.any():
                images.append(np.asarray(result.image, dtype=np.float32))
                labels.append(1)
                masks.append(mask)
                all_names.append(f"{name}+synthetic")
                break
    return ValidationSet(images=np.stack(images), labels=np.array(labels), masks=np.stack(masks),
                         source="synthetic", names=all_names)


def _make_synthesizer(config: "TrainConfig", det_config: Any, pipeline: DataPipeline, size: int,
                      good: Sequence[np.ndarray]):
    from anogen.detection.synthesis import AnomalySynthesizer, SynthesisConfig

    if config.synthesis == "cutpaste":
        from anogen.detection.cutpaste import CutPasteConfig, CutPasteSynthesizer

        return CutPasteSynthesizer(CutPasteConfig(clean_probability=pipeline.synthesis_clean_probability),
                                   seed=config.seed)
    textures = config.textures_dir or getattr(det_config, "textures_dir", None)
    return AnomalySynthesizer(SynthesisConfig(size=size, textures_dir=textures,
                                              clean_probability=pipeline.synthesis_clean_probability,
                                              augmentations=pipeline.texture_augmentations),
                              list(good), seed=config.seed)


# ----------------------------------------------------------------------------- validation


def _validate_detector(detector: torch.nn.Module, vset: ValidationSet, device: torch.device,
                       batch_size: int) -> tuple[dict[str, Any], ScoreCalibration, float]:
    from anogen.detection.infer import score_images
    from anogen.metrics import compute_metrics

    maps, scores = score_images(detector, vset.images, device, batch_size)
    if not np.all(np.isfinite(maps)):
        raise TrainingDiverged("the detector produced NaN or infinite anomaly maps on the validation set")
    report = compute_metrics(scores, vset.labels, maps, vset.masks)
    metrics = report.to_json()
    threshold = float(report.f1_threshold) if np.isfinite(report.f1_threshold) else float(np.median(scores))
    pixel_threshold = float(report.pixel_f1_threshold) if np.isfinite(report.pixel_f1_threshold) else 0.5
    calibration = ScoreCalibration(threshold=threshold, score_min=float(scores.min()),
                                   score_max=float(scores.max()), pixel_threshold=pixel_threshold)
    selection = float(np.nanmean([_finite(report.image_auroc), _finite(report.pixel_ap)]))
    metrics["selection_score"] = selection
    return metrics, calibration, selection


def _finite(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


# ----------------------------------------------------------------------------- the job


def _steps_for(det_config: Any, n_train: int, override: Optional[int]) -> int:
    if override is not None:
        return int(override)
    if hasattr(det_config, "total_steps"):
        return int(det_config.total_steps(n_train))
    steps = getattr(det_config, "steps", None)
    if steps:
        return int(steps)
    epochs = getattr(det_config, "epochs", None)
    if epochs:
        # DRAEM's reference schedule counts epochs over the good training images.
        return int(epochs) * max(1, math.ceil(n_train / int(det_config.batch_size)))
    raise InputError(f"the {type(det_config).__name__} has neither 'steps' nor 'epochs'; pass steps")


def _build_detector(config: TrainConfig) -> Any:
    from anogen.detection.registry import build_detector

    overrides = dict(config.overrides)
    if config.teacher_weights is not None:
        overrides["teacher_weights"] = str(config.teacher_weights)
    return build_detector(config.detector, preset=config.preset, overrides=overrides or None)


def _relative_or_absolute(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def _write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(out_dir / HISTORY_NAME, "".join(json.dumps(h) + "\n" for h in history))


def _read_history(out_dir: Path, upto_step: int) -> list[dict[str, Any]]:
    path = out_dir / HISTORY_NAME
    if not path.is_file():
        return []
    history = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            if int(entry.get("step", 0)) <= upto_step:
                history.append(entry)
    return history


def train(config: TrainConfig, progress: Optional[ProgressFn] = None,
          cancel: Optional[threading.Event] = None) -> TrainResult:
    """Train a detector; see the module docstring. Returns when training is complete."""
    from anogen.data.datasets import read_mvtec_category
    from anogen.data.exclusion import excluded_indices, file_digests
    from anogen.device import describe_device, resolve_device

    config.validate()
    report = progress or no_progress
    started = time.monotonic()
    out_dir = Path(config.out_dir)
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: the output must be a folder, but this is a file")
    for folder in (best_dir, last_dir):
        recover_checkpoint(folder)  # a kill between two renames of a publish left it aside
    if (last_dir / CONFIG_NAME).is_file() and not (config.resume or config.overwrite):
        status = run_status(out_dir, "last")
        if status is not None and not status.complete:
            raise InputError(f"{out_dir}: holds a run that did not finish ({status.describe()}); or pass "
                             "--overwrite to start again")
        raise InputError(f"{out_dir}: already holds a trained detector; choose another folder or pass --overwrite")
    if last_dir.exists() and not (config.resume or config.overwrite):
        raise InputError(f"{out_dir}: already holds a damaged checkpoint ({last_dir.name}/ without {CONFIG_NAME}); "
                         "pass --overwrite to start again")
    if config.resume and not (last_dir / CONFIG_NAME).is_file():
        raise InputError(f"{out_dir}: nothing to resume (no {last_dir.name}/{CONFIG_NAME})")
    device = resolve_device(config.device)

    # Seed before building, so the initial weights follow from the seed too.
    torch.manual_seed(config.seed)
    detector = _build_detector(config)
    det_config = detector.config
    size = int(det_config.image_size)
    batch_size = int(det_config.batch_size)
    # -- data ------------------------------------------------------------------------
    category = read_mvtec_category(config.data_dir)
    pipeline = detector_kind(config.detector).pipeline(det_config, category.name)
    train_records = [r for r in category.train if not is_defective(r)]
    if not train_records:
        raise InputError(f"{config.data_dir}: no good training images (train/good is empty)")
    test_records = list(category.test)
    excluded = excluded_indices(test_records, config.exclude)
    candidates = [r for i, r in enumerate(test_records) if i not in excluded]
    has_labels = any(is_defective(r) for r in candidates) and any(not is_defective(r) for r in candidates)
    split_rng = np.random.default_rng([config.seed, 0xA1])
    check_cancel(cancel)

    # The generated sets first: their problems are cheaper to find than reading every image.
    generated: list[GeneratedItem] = []
    if config.generated_sets:
        report(Progress(0, 0, "reading the generated sets"))
        generated = load_generated_items(config.generated_sets, size,
                                         good_paths=[Path(r.path) for r in category.train],
                                         search_dirs=[Path(config.data_dir), Path(config.data_dir).parent])
    check_cancel(cancel)

    report(Progress(0, 0, "reading images"))
    if has_labels:
        val_records = _stratified_holdout(candidates, config.val_fraction, config.max_val_images, split_rng)
        validation_digests = file_digests(r.path for r in val_records)
        good = _read_resized([r.path for r in train_records], size)
        synthesizer = _make_synthesizer(config, det_config, pipeline, size, good)
        vset = ValidationSet(
            images=np.stack(_read_resized([r.path for r in val_records], size)),
            labels=np.array([int(is_defective(r)) for r in val_records]),
            masks=np.stack([_read_mask_resized(r, size) for r in val_records]),
            source="test",
            names=[_relative_or_absolute(Path(r.path), Path(config.data_dir)) for r in val_records],
        )
    else:
        validation_digests = []  # held-out good training images: nothing to leave out of the test set
        if len(train_records) < 2:
            raise InputError(f"{config.data_dir}: the test set has no labelled anomalies and there are too few "
                             "good training images to hold some out for validation")
        held = _stratified_holdout(train_records, config.val_fraction, max(1, config.max_val_images // 2), split_rng)
        held_paths = {Path(r.path) for r in held}
        train_records = [r for r in train_records if Path(r.path) not in held_paths]
        good = _read_resized([r.path for r in train_records], size)
        synthesizer = _make_synthesizer(config, det_config, pipeline, size, good)
        held_images = _read_resized([r.path for r in held], size)
        vset = _synthetic_validation(held_images, [Path(r.path).name for r in held], synthesizer, config.seed)
    check_cancel(cancel)

    sampler = MixedBatchSampler(good, synthesizer, pipeline=pipeline, generated=generated,
                                mix=config.mix, seed=config.seed)
    check_cancel(cancel)

    # -- schedule --------------------------------------------------------------------
    resume_info = read_checkpoint_info(last_dir) if config.resume else None
    if resume_info is not None and config.steps is None:
        total = resume_info.total_steps  # resuming needs no repeat of --steps
    else:
        total = _steps_for(det_config, len(good), config.steps)
    validate_every = config.validate_every or max(1, math.ceil(total / 10))
    detector.to(device)
    phases = detector.training_phases(total)
    phase_total = sum(p.steps for p in phases)
    if phase_total != total:
        raise RuntimeError(f"{detector.kind} phases cover {phase_total} steps, expected {total}")

    provenance = {
        "seed": config.seed,
        "tau": config.tau,
        "mix": config.mix,
        "synthesis": config.synthesis,
        "weak_all": config.weak_all,
        "preset": config.preset,
        "overrides": dict(config.overrides),
        "steps": total,
        "data_dir": str(Path(config.data_dir).resolve()),
        "generated_sets": [str(Path(p).resolve()) for p in config.generated_sets],
        "generated_samples": len(generated),
        "generated_per_kind": dict(sorted(Counter(item.defect_kind for item in generated).items())),
        "textures_dir": str(Path(config.textures_dir).resolve()) if config.textures_dir else None,
        "data_pipeline": asdict(pipeline),
        "train_images": len(good),
        "validation_source": vset.source,
        "validation_images": vset.names,
        "validation_digests": validation_digests,
        "excluded_support_images": [str(Path(p).resolve()) for p in config.exclude],
        "support_digests": file_digests(config.exclude),
        "n_excluded": len(excluded),
        "protocol": config.protocol,
        "device": describe_device(device),
    }

    # -- resume ----------------------------------------------------------------------
    start_step, best_score, best_step = 0, -math.inf, 0
    history: list[dict[str, Any]] = []
    best_metrics: dict[str, Any] = {}
    last_metrics: dict[str, Any] = {}
    if resume_info is not None:
        info = resume_info
        if info.kind != config.detector or info.config != det_config.to_dict():
            raise InputError(f"{last_dir}: was trained as {info.kind} with another config; resume with the same "
                             "detector, preset and overrides")
        if info.total_steps != total:
            raise InputError(f"{last_dir}: was planned for {info.total_steps} steps, not {total}; resume with "
                             "the same number of steps")
        state = load_training_state(last_dir)
        load_weights(detector, last_dir, device)
        for phase, optimizer_state, scheduler_state in zip(phases, state["optimizers"], state["schedulers"]):
            phase.optimizer.load_state_dict(optimizer_state)
            if phase.scheduler is not None and scheduler_state is not None:
                phase.scheduler.load_state_dict(scheduler_state)
        start_step = int(state["step"])
        best_score = float(state["best_score"])
        best_step = int(state["best_step"])
        history = _read_history(out_dir, start_step)
        last_metrics = dict(info.validation)
        if (best_dir / CONFIG_NAME).is_file():
            best_metrics = dict(read_checkpoint_info(best_dir).validation)
        torch.manual_seed(config.seed + start_step)

    def save(step: int, metrics: dict[str, Any], calibration: ScoreCalibration, is_best: bool) -> None:
        info = CheckpointInfo(kind=detector.kind, preset=config.preset, config=det_config.to_dict(),
                              image_size=size, calibration=calibration, step=step, total_steps=total,
                              validation=metrics, provenance=provenance)
        state = {
            "step": step,
            "best_score": max(best_score, metrics["selection_score"]) if is_best else best_score,
            "best_step": step if is_best else best_step,
            "optimizers": [p.optimizer.state_dict() for p in phases],
            "schedulers": [p.scheduler.state_dict() if p.scheduler is not None else None for p in phases],
        }
        # Order matters for a crash in between: history and best first, then last (the resume point,
        # and the run's completion record: it reaches `total` only at the end).
        mark_output_dir(out_dir, "train")
        _write_history(out_dir, history)
        if is_best:
            save_checkpoint(best_dir, detector, info)
        save_checkpoint(last_dir, detector, info, training_state=state)

    # -- train -----------------------------------------------------------------------
    # With overwrite, old checkpoints stay until the first new one replaces them.
    created_out = not out_dir.exists()
    boundaries = np.cumsum([0] + [p.steps for p in phases])
    detector.train()
    final_loss = float("nan")
    try:
        with BatchPrefetcher(sampler, batch_size, device) as batches:
            for step in range(start_step, total):
                check_cancel(cancel)
                phase_index = int(np.searchsorted(boundaries, step, side="right") - 1)
                phase = phases[phase_index]
                batch = batches.get(step, prefetch_next=step + 1 < total)
                loss, components = detector.training_loss(batch, phase.name, tau=config.tau,
                                                          weak_all=config.weak_all)
                value = float(loss.detach())
                if not math.isfinite(value):
                    kept = (f"the last good checkpoint (step {read_checkpoint_info(last_dir).step}) is kept in "
                            f"{last_dir}") if (last_dir / CONFIG_NAME).is_file() else "no checkpoint was written yet"
                    raise TrainingDiverged(f"the {phase.name} loss became {value} at step {step + 1} of {total}; "
                                           f"{kept}. Try a lower learning rate or another seed.")
                phase.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                phase.optimizer.step()
                if phase.scheduler is not None:
                    phase.scheduler.step()
                final_loss = value
                done = step + 1
                metrics = {"loss": value, **{k: float(v) for k, v in components.items()}}
                if done % config.log_every == 0 or done == total:
                    history.append({"step": done, "phase": phase.name, **metrics})
                report(Progress(done, total, phase.name, metrics=metrics))

                if done % validate_every == 0 or done == total:
                    check_cancel(cancel)
                    val_metrics, calibration, score = _validate_detector(detector, vset, device, batch_size)
                    val_metrics["protocol"] = config.protocol
                    if config.protocol == "paper":
                        is_best = done == total  # the last checkpoint, never one chosen on test images
                    else:
                        # Before the last phase the detector is incomplete (DeSTSeg's head is still
                        # untrained during the student phase), so only the last phase competes for best.
                        is_best = phase_index == len(phases) - 1 and score > best_score
                    history.append({"step": done, "phase": "validation", **{
                        k: v for k, v in val_metrics.items() if isinstance(v, (int, float))}})
                    check_cancel(cancel)
                    save(done, val_metrics, calibration, is_best)
                    last_metrics = val_metrics
                    if is_best:
                        best_score, best_step, best_metrics = score, done, val_metrics
                    report(Progress(done, total, f"validation (best at step {best_step})", metrics={
                        f"val_{k}": float(v) for k, v in val_metrics.items()
                        if k in ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro") and v is not None}))
    except BaseException:
        # Checkpoints already written stay; a folder this run created and never used goes.
        if created_out and out_dir.is_dir() and not any(out_dir.iterdir()):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise

    return TrainResult(out_dir=out_dir, best_dir=best_dir, last_dir=last_dir, kind=detector.kind, steps=total,
                       best_step=best_step, best_metrics=best_metrics, last_metrics=last_metrics,
                       final_loss=final_loss, history=history, validation_source=vset.source,
                       device=describe_device(device), seconds=time.monotonic() - started)


def train_config_to_json(config: TrainConfig) -> dict[str, Any]:
    """A JSON-able view of a :class:`TrainConfig` (paths as strings), for logs and the GUI."""
    data = asdict(config)
    for key, value in list(data.items()):
        if isinstance(value, Path):
            data[key] = str(value)
    data["exclude"] = [str(p) for p in config.exclude]
    data["generated_dirs"] = [str(p) for p in config.generated_dirs]
    return data


__all__ = ["TrainConfig", "TrainResult", "ValidationSet", "train", "train_config_to_json",
           "CHECKPOINT_CHOICES"]
