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

The validation score that picks the best checkpoint is the mean of image AUROC, pixel
AUROC, pixel AP and AUPRO on the validation set (:func:`selection_score`); only
validations in the last phase compete (before it,
a DeSTSeg head is still untrained), and the end of training always validates.

Given ``ranks`` of several processes (``torchrun``, ``accelerate launch``), the processes
train one detector together, each on its share of every batch, and only rank 0
validates and writes (:mod:`anogen.detection.parallel`). Without them (or with one
process) nothing of torch.distributed is touched.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from anogen.compute import resolve_policy
from anogen.detection.base import Detector, TrainingPhase
from anogen.detection.checkpoint import (
    CONFIG_NAME,
    CheckpointInfo,
    ScoreCalibration,
    load_training_state,
    load_weights,
    read_checkpoint_info,
    recover_checkpoint,
    run_status,
    save_checkpoint,
)
from anogen.detection.history import CURVE_METRICS, VALIDATION_PHASE, read_history, write_history
from anogen.detection.options import CHECKPOINT_CHOICES
from anogen.detection.pipeline import DataPipeline
from anogen.detection.preprocess import ground_truth_resized, read_resized
from anogen.detection.registry import detector_kind
from anogen.detection.train_config import TrainConfig
from anogen.detection.training_data import (
    BatchPrefetcher,
    GeneratedItem,
    MixedBatchSampler,
    is_defective,
    load_generated_items,
)
from anogen.errors import InputError, TrainingDiverged
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress
from anogen.outputs import mark_output_dir

if TYPE_CHECKING:
    from anogen.detection.parallel import DataParallel
    from anogen.metrics import MetricsReport
    from anogen.runplan.ranks import ProcessRanks

log = logging.getLogger(__name__)


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


@dataclass
class TrainingData:
    """Everything the loop and the validations draw on, read once and kept in memory."""

    pipeline: DataPipeline  # the detector's recipe for training samples
    sampler: MixedBatchSampler
    validation: ValidationSet
    validation_digests: list[str]  # content digests of the test images validated on
    generated: list[GeneratedItem]
    n_train: int  # good training images (after any held out for validation)
    n_excluded: int  # support images left out of the test set


def _load_data(config: TrainConfig, det_config: Any, report: ProgressFn,
               cancel: threading.Event | None) -> TrainingData:
    """Read the category and generated sets at the detector's size and split off validation:
    a stratified share of the labelled test images, or else held-out good images plus
    synthetic anomalies made on them."""
    from anogen.data.datasets import read_mvtec_category
    from anogen.data.exclusion import excluded_indices, file_digests

    size = int(det_config.image_size)
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
        held = _stratified_holdout(candidates, config.val_fraction, config.max_val_images, split_rng)
        validation_digests = file_digests(r.path for r in held)
    else:
        validation_digests = []  # held-out good training images: nothing to leave out of the test set
        if len(train_records) < 2:
            raise InputError(f"{config.data_dir}: the test set has no labelled anomalies and there are too few "
                             "good training images to hold some out for validation")
        held = _stratified_holdout(train_records, config.val_fraction, max(1, config.max_val_images // 2), split_rng)
        held_paths = {Path(r.path) for r in held}
        train_records = [r for r in train_records if Path(r.path) not in held_paths]
    good = read_resized([r.path for r in train_records], size)
    synthesizer = _make_synthesizer(config, det_config, pipeline, size, good)
    if has_labels:
        validation = _test_validation(held, size, Path(config.data_dir))
    else:
        validation = _synthetic_validation(read_resized([r.path for r in held], size),
                                           [Path(r.path).name for r in held], synthesizer, config.seed)
    check_cancel(cancel)

    sampler = MixedBatchSampler(good, synthesizer, pipeline=pipeline, generated=generated,
                                mix=config.mix, seed=config.seed)
    check_cancel(cancel)
    return TrainingData(pipeline=pipeline, sampler=sampler, validation=validation,
                        validation_digests=validation_digests, generated=generated, n_train=len(good),
                        n_excluded=len(excluded))


def _test_validation(records: Sequence[Any], size: int, data_dir: Path) -> ValidationSet:
    """Held-out labelled test images with their pixel ground truth."""
    return ValidationSet(
        images=np.stack(read_resized([r.path for r in records], size)),
        labels=np.array([int(is_defective(r)) for r in records]),
        masks=np.stack([ground_truth_resized(r, size) for r in records]),
        source="test",
        names=[_relative_or_absolute(Path(r.path), data_dir) for r in records],
    )


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


def _make_synthesizer(config: TrainConfig, det_config: Any, pipeline: DataPipeline, size: int,
                      good: Sequence[np.ndarray]) -> Any:
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


def _validate_detector(detector: Detector, vset: ValidationSet, device: torch.device,
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
    selection = selection_score(report)
    metrics["selection_score"] = selection
    return metrics, calibration, selection


def selection_score(report: MetricsReport) -> float:
    """The validation score the best checkpoint maximises: the mean of image AUROC, pixel
    AUROC, pixel AP and AUPRO (an undefined one counts 0, the same at every step).

    A validation set holds a handful of images. Image AUROC alone moves in steps of 1/24 on
    ten of them, and pixel AP is near 0 early on, so a score of just those two crowned an
    early validation (step 16 or 48 of 160) in 3 of 12 detectors of three full-demo runs,
    detectors that had not yet learned to localise anything; the pixel-level metrics, pooled
    over every pixel, rise steadily as a detector learns (docs/demo.md, "A CPU with native
    bf16, and which checkpoint").
    """
    values = (report.image_auroc, report.pixel_auroc, report.pixel_ap, report.pixel_aupro)
    return float(np.mean([_finite(v) for v in values]))


def _finite(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


# ----------------------------------------------------------------------------- output folder and resume


def _prepare_out_dir(config: TrainConfig) -> None:
    """Recover a checkpoint a kill left aside; refuse a folder that holds a run unless the
    config resumes or overwrites it."""
    out_dir = Path(config.out_dir)
    last_dir = out_dir / "last"
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: the output must be a folder, but this is a file")
    for which in CHECKPOINT_CHOICES:
        recover_checkpoint(out_dir / which)  # a kill between two renames of a publish left it aside
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


@dataclass
class RunState:
    """Where a run stands: what a resumed run continues from."""

    step: int = 0
    best_score: float = -math.inf
    best_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metrics: dict[str, Any] = field(default_factory=dict)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    final_loss: float = float("nan")


def _resume(config: TrainConfig, info: CheckpointInfo, detector: Detector, phases: list[TrainingPhase],
            total: int, device: torch.device, *, training_state: dict[str, Any] | None = None,
            writer: bool = True) -> RunState:
    """Load weights, optimiser and scheduler states of ``out/last`` and the history up to it.

    In data-parallel training rank 0 reads ``training_state`` and hands it to the others
    (``writer`` False), which take the weights from rank 0 too and keep no history."""
    out_dir = Path(config.out_dir)
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    if info.kind != config.detector or info.config != detector.config.to_dict():
        raise InputError(f"{last_dir}: was trained as {info.kind} with another config; resume with the same "
                         "detector, preset and overrides")
    if info.total_steps != total:
        raise InputError(f"{last_dir}: was planned for {info.total_steps} steps, not {total}; resume with "
                         "the same number of steps")
    state = training_state if training_state is not None else load_training_state(last_dir)
    if writer:
        load_weights(detector, last_dir, device)
    for phase, optimizer_state, scheduler_state in zip(phases, state["optimizers"], state["schedulers"]):
        phase.optimizer.load_state_dict(optimizer_state)
        if phase.scheduler is not None and scheduler_state is not None:
            phase.scheduler.load_state_dict(scheduler_state)
    step = int(state["step"])
    best_metrics = (dict(read_checkpoint_info(best_dir).validation)
                    if writer and (best_dir / CONFIG_NAME).is_file() else {})
    torch.manual_seed(config.seed + step)
    return RunState(step=step, best_score=float(state["best_score"]), best_step=int(state["best_step"]),
                    history=read_history(out_dir, step) if writer else [], best_metrics=best_metrics,
                    last_metrics=dict(info.validation))


# ----------------------------------------------------------------------------- the loop


class _Run:
    """One training run's loop: steps, validations and checkpoints (see :func:`train`)."""

    def __init__(self, config: TrainConfig, detector: Detector, phases: list[TrainingPhase], data: TrainingData,
                 total: int, device: torch.device, provenance: dict[str, Any], state: RunState,
                 report: ProgressFn, cancel: threading.Event | None, parallel: DataParallel | None = None) -> None:
        self.config, self.detector, self.phases, self.data = config, detector, phases, data
        self.total, self.device, self.provenance, self.state = total, device, provenance, state
        self.report, self.cancel = report, cancel
        self.out_dir = Path(config.out_dir)
        self.last_dir, self.best_dir = self.out_dir / "last", self.out_dir / "best"
        self.batch_size = int(detector.config.batch_size)
        self.validate_every = config.validate_every or max(1, math.ceil(total / 10))
        self.boundaries = np.cumsum([0] + [p.steps for p in phases])
        self.wrote_last = config.resume  # a resumed run's last/ is already this run's
        self.policy = resolve_policy(device, torch.get_num_threads(), config.cpu_precision)
        self.parallel = parallel
        self.share: slice | None = None
        self.model: torch.nn.Module | None = None  # the DistributedDataParallel loss (data-parallel only)
        if parallel is not None:
            from anogen.parallel import batch_share

            self.share = batch_share(self.batch_size, parallel.rank, parallel.world, setting="--set batch_size=N")
            self.model = parallel.wrap(detector, [[p for group in phase.optimizer.param_groups
                                                   for p in group["params"]] for phase in phases])

    @property
    def writes(self) -> bool:
        """This process validates and writes (the only one, or rank 0 of several)."""
        return self.parallel is None or self.parallel.is_main

    def run(self) -> None:
        self.detector.train()
        with BatchPrefetcher(self.data.sampler, self.batch_size, self.device, share=self.share) as batches:
            for step in range(self.state.step, self.total):
                if self.parallel is None:
                    check_cancel(self.cancel)
                else:
                    self.parallel.check_cancel(self.cancel)
                phase_index = int(np.searchsorted(self.boundaries, step, side="right") - 1)
                if self.parallel is None:
                    self._step(step, self.phases[phase_index], batches)
                else:
                    self._shared_step(step, self.phases[phase_index], batches)
                done = step + 1
                if done % self.validate_every == 0 or done == self.total:
                    self._validate(done, is_last_phase=phase_index == len(self.phases) - 1)

    def _step(self, step: int, phase: TrainingPhase, batches: BatchPrefetcher) -> None:
        batch = batches.get(step, prefetch_next=step + 1 < self.total)
        with self.policy.autocast():
            loss, components = self.detector.training_loss(batch, phase.name, tau=self.config.tau,
                                                           weak_all=self.config.weak_all)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise self._diverged(phase, step, value)
        phase.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._advance(step, phase, {"loss": value, **{k: float(v) for k, v in components.items()}})

    def _shared_step(self, step: int, phase: TrainingPhase, batches: BatchPrefetcher) -> None:
        """One step of data-parallel training: this process's share of the batch, the loss
        summed over the processes (all see a NaN), the gradient of the whole batch."""
        from anogen.parallel import loss_scale, share_weight

        assert self.parallel is not None and self.model is not None
        batch = batches.get(step, prefetch_next=step + 1 < self.total)
        share = int(batch.weak.shape[0])
        reduction = self.detector.batch_reduction(phase.name)
        with self.policy.autocast():
            loss, components = self.model(batch.image, batch.clean, batch.mask, batch.weak, phase=phase.name,
                                          tau=self.config.tau, weak_all=self.config.weak_all)
        local = {"loss": float(loss.detach()), **{k: float(v) for k, v in components.items()}}
        metrics = self.parallel.sum_losses(local, share_weight(reduction, share, self.batch_size))
        if not math.isfinite(metrics["loss"]):
            raise self._diverged(phase, step, metrics["loss"])
        phase.optimizer.zero_grad(set_to_none=True)
        (loss * loss_scale(reduction, share, self.batch_size, self.parallel.world)).backward()
        self._advance(step, phase, metrics)

    def _diverged(self, phase: TrainingPhase, step: int, value: float) -> TrainingDiverged:
        if not self.writes:
            kept = f"the main process keeps the last good checkpoint in {self.last_dir}"
        elif (self.last_dir / CONFIG_NAME).is_file():
            kept = (f"the last good checkpoint (step {read_checkpoint_info(self.last_dir).step}) is kept in "
                    f"{self.last_dir}")
        else:
            kept = "no checkpoint was written yet"
        return TrainingDiverged(f"the {phase.name} loss became {value} at step {step + 1} of {self.total}; "
                                f"{kept}. Try a lower learning rate or another seed.")

    def _advance(self, step: int, phase: TrainingPhase, metrics: dict[str, float]) -> None:
        """The optimiser and schedule step after the backward pass, and the step's record."""
        phase.optimizer.step()
        if phase.scheduler is not None:
            phase.scheduler.step()
        self.state.final_loss = metrics["loss"]
        done = step + 1
        if done % self.config.log_every == 0 or done == self.total:
            self.state.history.append({"step": done, "phase": phase.name, **metrics})
        self.report(Progress(done, self.total, phase.name, metrics=metrics))

    def _validate(self, done: int, *, is_last_phase: bool) -> None:
        """Score the validation set, write the checkpoints, and keep the best; in
        data-parallel training rank 0 does, and the others take its verdict."""
        if self.parallel is None:
            self._validate_and_save(done, is_last_phase=is_last_phase)
            return

        def on_main() -> dict[str, Any]:
            self._validate_and_save(done, is_last_phase=is_last_phase)
            state = self.state
            return {"best_score": state.best_score, "best_step": state.best_step, "best_metrics": state.best_metrics,
                    "last_metrics": state.last_metrics, "entry": state.history[-1]}

        verdict = self.parallel.relay(on_main)
        if not self.parallel.is_main:
            self.state.history.append(verdict["entry"])
            self.state.best_score, self.state.best_step = verdict["best_score"], verdict["best_step"]
            self.state.best_metrics, self.state.last_metrics = verdict["best_metrics"], verdict["last_metrics"]

    def _validate_and_save(self, done: int, *, is_last_phase: bool) -> None:
        state = self.state
        check_cancel(self.cancel)
        metrics, calibration, score = _validate_detector(self.detector, self.data.validation, self.device,
                                                         self.batch_size)
        metrics["protocol"] = self.config.protocol
        if self.config.protocol == "paper":
            is_best = done == self.total  # the last checkpoint, never one chosen on test images
        else:
            # Before the last phase the detector is incomplete (DeSTSeg's head is still
            # untrained during the student phase), so only the last phase competes for best.
            is_best = is_last_phase and score > state.best_score
        state.history.append({"step": done, "phase": VALIDATION_PHASE,
                              **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        check_cancel(self.cancel)
        self._save(done, metrics, calibration, is_best)
        state.last_metrics = metrics
        if is_best:
            state.best_score, state.best_step, state.best_metrics = score, done, metrics
        self.report(Progress(done, self.total, f"validation (best at step {state.best_step})", metrics={
            f"val_{k}": float(v) for k, v in metrics.items()
            if k in CURVE_METRICS and v is not None}))

    def _save(self, step: int, metrics: dict[str, Any], calibration: ScoreCalibration, is_best: bool) -> None:
        state = self.state
        det_config = self.detector.config
        info = CheckpointInfo(kind=self.detector.kind, preset=self.config.preset, config=det_config.to_dict(),
                              image_size=int(det_config.image_size), calibration=calibration, step=step,
                              total_steps=self.total, validation=metrics, provenance=self.provenance)
        training_state = {
            "step": step,
            "best_score": max(state.best_score, metrics["selection_score"]) if is_best else state.best_score,
            "best_step": step if is_best else state.best_step,
            "optimizers": [p.optimizer.state_dict() for p in self.phases],
            "schedulers": [p.scheduler.state_dict() if p.scheduler is not None else None for p in self.phases],
        }
        # Order matters for a crash in between. `last` is the resume point and the run's completion
        # record (it reaches `total` only at the end), so it is written after `best` -- except the
        # first time: a `best` without this run's `last` would look finished (or, under --overwrite,
        # sit beside the previous run's complete `last`).
        mark_output_dir(self.out_dir, "train")
        write_history(self.out_dir, state.history)
        first_save = not self.wrote_last
        if first_save:
            save_checkpoint(self.last_dir, self.detector, info, training_state=training_state)
            self.wrote_last = True
        if is_best:
            save_checkpoint(self.best_dir, self.detector, info)
        if not first_save:
            save_checkpoint(self.last_dir, self.detector, info, training_state=training_state)


# ----------------------------------------------------------------------------- the job


def train(config: TrainConfig, progress: ProgressFn | None = None, cancel: threading.Event | None = None, *,
          ranks: ProcessRanks | None = None) -> TrainResult:
    """Train a detector; see the module docstring. Returns when training is complete.

    ``ranks``: this process's place among several that train together (``torchrun``,
    ``accelerate launch``; :meth:`ProcessRanks.from_environment`). Every process returns
    the run's result; only rank 0 wrote the output folder.
    """
    config.validate()
    if ranks is None or ranks.world <= 1:
        return _train(config, progress or no_progress, cancel, None)
    from anogen.detection.parallel import DataParallel

    with DataParallel.start(ranks, config.device) as parallel:
        return _train(config, progress or no_progress, cancel, parallel)


def _prepare_for_processes(config: TrainConfig) -> tuple[CheckpointInfo | None, dict[str, Any] | None]:
    """Rank 0's checks of the output folder, and what a resumed run continues from."""
    _prepare_out_dir(config)
    if not config.resume:
        return None, None
    last_dir = Path(config.out_dir) / "last"
    return read_checkpoint_info(last_dir), load_training_state(last_dir)


def _train(config: TrainConfig, report: ProgressFn, cancel: threading.Event | None,
           parallel: DataParallel | None) -> TrainResult:
    from anogen.device import describe_device, resolve_device

    started = time.monotonic()
    out_dir = Path(config.out_dir)
    if parallel is None:
        _prepare_out_dir(config)
        device = resolve_device(config.device)
    else:
        relayed = parallel.relay(lambda: _prepare_for_processes(config))
        device = parallel.device
    log.info("training %s on %s with %s", config.detector, describe_device(device),
             json.dumps(train_config_to_json(config), sort_keys=True))

    # Seed before building, so the initial weights follow from the seed too.
    torch.manual_seed(config.seed)
    detector = _build_detector(config)
    log.info("%s config: %s", detector.kind, json.dumps(detector.config.to_dict(), sort_keys=True))
    data = _load_data(config, detector.config, report, cancel)

    training_state: dict[str, Any] | None = None
    if parallel is None:
        resume_info = read_checkpoint_info(out_dir / "last") if config.resume else None
    else:
        resume_info, training_state = relayed
    if resume_info is not None and config.steps is None:
        total = resume_info.total_steps  # resuming needs no repeat of --steps
    else:
        total = config.steps if config.steps is not None else int(detector.config.total_steps(data.n_train))
    detector.to(device)
    phases = detector.training_phases(total)
    phase_total = sum(p.steps for p in phases)
    if phase_total != total:
        raise RuntimeError(f"{detector.kind} phases cover {phase_total} steps, expected {total}")
    writer = parallel is None or parallel.is_main
    state = (_resume(config, resume_info, detector, phases, total, device, training_state=training_state,
                     writer=writer) if resume_info is not None else RunState())
    log.info("%d training images, %d generated samples, %d %s validation images; steps %d to %d of %d, "
             "batch size %d%s", data.n_train, len(data.generated), len(data.validation.names),
             data.validation.source, state.step + 1, total, total, int(detector.config.batch_size),
             "" if parallel is None else f" split over {parallel.world} processes (this is rank {parallel.rank})")

    provenance = _provenance(config, data, total, describe_device(device))
    if parallel is not None:
        provenance["processes"] = parallel.world
    run = _Run(config, detector, phases, data, total, device, provenance, state, report, cancel, parallel)
    # With overwrite, old checkpoints stay until the first new one replaces them.
    created_out = writer and not out_dir.exists()
    try:
        run.run()
    except BaseException:
        # Checkpoints already written stay; a folder this run created and never used goes.
        if created_out and out_dir.is_dir() and not any(out_dir.iterdir()):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise

    return TrainResult(out_dir=out_dir, best_dir=run.best_dir, last_dir=run.last_dir, kind=detector.kind,
                       steps=total, best_step=state.best_step, best_metrics=state.best_metrics,
                       last_metrics=state.last_metrics, final_loss=state.final_loss, history=state.history,
                       validation_source=data.validation.source, device=describe_device(device),
                       seconds=time.monotonic() - started)


def _build_detector(config: TrainConfig) -> Detector:
    from anogen.detection.registry import build_detector

    overrides = dict(config.overrides)
    if config.teacher_weights is not None:
        overrides["teacher_weights"] = str(config.teacher_weights)
    return build_detector(config.detector, preset=config.preset, overrides=overrides or None)


def _provenance(config: TrainConfig, data: TrainingData, total: int, device: str) -> dict[str, Any]:
    """What the checkpoint records about how it was trained."""
    from anogen.data.exclusion import file_digests

    return {
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
        "generated_samples": len(data.generated),
        "generated_per_kind": dict(sorted(Counter(item.defect_kind for item in data.generated).items())),
        "textures_dir": str(Path(config.textures_dir).resolve()) if config.textures_dir else None,
        "data_pipeline": asdict(data.pipeline),
        "train_images": data.n_train,
        "validation_source": data.validation.source,
        "validation_images": data.validation.names,
        "validation_digests": data.validation_digests,
        "excluded_support_images": [str(Path(p).resolve()) for p in config.exclude],
        "support_digests": file_digests(config.exclude),
        "n_excluded": data.n_excluded,
        "protocol": config.protocol,
        "device": device,
    }


def _relative_or_absolute(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def train_config_to_json(config: TrainConfig) -> dict[str, Any]:
    """A JSON-able view of a :class:`TrainConfig` (paths as strings), for logs and the GUI."""
    data = asdict(config)
    for key, value in list(data.items()):
        if isinstance(value, Path):
            data[key] = str(value)
    data["exclude"] = [str(p) for p in config.exclude]
    data["generated_dirs"] = [str(p) for p in config.generated_dirs]
    return data


__all__ = ["RunState", "TrainConfig", "TrainResult", "TrainingData", "ValidationSet", "train", "train_config_to_json"]
