"""Run the steps of a plan: the library calls the CLI commands make, one step at a time.

Each step is built in a staging folder and published with its done marker in one
rename (see :mod:`anogen.runplan.steps`), so a killed run loses at most the step in
progress and a finished step is never redone. Stage 1 also keeps a checkpoint beside
its step folder, so a long ``learn`` killed half-way continues from it.

A step whose inputs belong to another shard and are not done yet is left ``waiting``;
running the same command again later picks it up.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anogen.atomic import atomic_write_json, staged_directory
from anogen.detection.train_config import TrainConfig
from anogen.diffusion.config import PER_IMAGE, SAMPLES_PER_BOX, GenerateConfig, LearnConfig
from anogen.jobs import ProgressFn, check_cancel, no_progress
from anogen.runplan.plan import GENERATE_KEYS, CategoryPlan, KindPlan, Plan
from anogen.runplan.ranks import ProcessRanks, SharedTraining, generate_across_ranks, remove_parts
from anogen.runplan.steps import DONE_NAME, Shard, Step, build_steps, steps_of_shard
from anogen.runplan.table import write_results

EMBEDDING_NAME = "embedding.safetensors"
PROPOSALS_DIR = "proposals"  # the boxes step's `anogen boxes` output
SET_DIR = "set"  # the generate step's generated set
DETECTOR_DIR = "detector"  # the train step's `anogen train` output
METRICS_NAME = "metrics.json"

ProgressFactory = Callable[[str], AbstractContextManager[ProgressFn]]


def _no_progress(label: str) -> AbstractContextManager[ProgressFn]:
    return contextlib.nullcontext(no_progress)


@dataclass
class StepContext:
    """What a step runner gets besides its step."""

    plan: Plan
    step: Step
    steps: dict[str, Step]  # every step by label, for the folders of its inputs
    ranks: ProcessRanks
    progress: ProgressFn
    cancel: threading.Event | None
    shared: SharedTraining | None = None  # several processes train each detector together

    @property
    def category(self) -> CategoryPlan:
        return self.plan.category(self.step.category)

    @property
    def kind(self) -> KindPlan:
        return next(k for k in self.category.kinds if k.name == self.step.name)

    def folder_of(self, stage: str, name: str | None = None) -> Path:
        return self.steps[f"{stage} {self.step.category}/{name or self.step.name}"].folder

    @property
    def device(self) -> str:
        return self.ranks.device(self.plan.device)


@dataclass
class RunReport:
    ran: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    results: Path | None = None  # results.md, once every evaluation is done


# --------------------------------------------------------------------------- runners


def _normals(plan: Plan, category: CategoryPlan) -> list[Path]:
    from anogen.data.imageio import list_images

    limit = plan.generate.get("limit")
    return list_images(category.path / "train" / "good")[:limit]


def _per_image(plan: Plan) -> tuple[int, int]:
    return (int(plan.generate.get("per_image", PER_IMAGE)),
            int(plan.generate.get("samples_per_box", SAMPLES_PER_BOX)))


def _learn_config(ctx: StepContext) -> LearnConfig:
    plan, kind = ctx.plan, ctx.kind
    # Kept beside the step folder, not in the staging folder: a killed learn resumes from it.
    checkpoint = ctx.step.folder.parent / f".{kind.name}.checkpoint.safetensors"
    config = LearnConfig(images=list(kind.images), masks=list(kind.masks), token=f"<{kind.category}-{kind.name}>",
                         seed=plan.seed, device=ctx.device, precision=plan.precision, **plan.learn)
    return replace(config.with_preset(plan.preset), checkpoint_path=checkpoint,
                   resume_from=checkpoint if checkpoint.is_file() else None)


def run_learn(ctx: StepContext, staging: Path) -> dict[str, Any]:
    from anogen.diffusion.embedding_file import save_embedding
    from anogen.diffusion.learn import learn_embedding, validate_support
    from anogen.diffusion.models import load_model

    plan, kind = ctx.plan, ctx.kind
    config = _learn_config(ctx)
    validate_support(config)
    model = load_model(plan.model, device=ctx.device, precision=plan.precision)
    result = learn_embedding(model, config, ctx.progress, ctx.cancel,
                             ranks=ctx.ranks if ctx.shared is not None else None)
    result.metadata["defect_kind"] = kind.name
    save_embedding(staging / EMBEDDING_NAME, result)
    return {"final_loss": result.final_loss, "steps": result.steps_done, "token": config.token,
            "support_images": [str(p) for p in kind.images], "checkpoint": str(config.checkpoint_path),
            "processes": ctx.ranks.world if ctx.shared is not None else 1}


def learn_share(ctx: StepContext) -> None:
    """A process other than the main one: its part of the main process's ``run_learn``
    (it writes nothing; the main process keeps the checkpoint and publishes the embedding)."""
    from anogen.diffusion.learn import learn_embedding
    from anogen.diffusion.models import load_model

    model = load_model(ctx.plan.model, device=ctx.device, precision=ctx.plan.precision)
    learn_embedding(model, _learn_config(ctx), no_progress, ctx.cancel, ranks=ctx.ranks)


def run_boxes(ctx: StepContext, staging: Path) -> dict[str, Any]:
    from anogen.data.boxes import (
        BoxPlacement,
        BoxProposalConfig,
        run_box_proposals,
        size_range_from_masks,
    )
    from anogen.data.imageio import read_mask

    plan, kind, category = ctx.plan, ctx.kind, ctx.category
    masks = [read_mask(p) for p in kind.masks]
    settings = plan.boxes
    placement = BoxPlacement(
        foreground=settings.get("foreground", "auto"), category=category.path.name,
        prior_masks=masks if settings.get("prior", "none") == "support" else None,
        rule=settings.get("rule", "inside"), min_iou=float(settings.get("min_iou", 0.5)),
        min_inside=float(settings.get("min_inside", 0.75)), max_tries=int(settings.get("max_tries", 1000)))
    placement.validate()
    per_image, per_box = _per_image(plan)
    result = run_box_proposals(BoxProposalConfig(
        images=category.path / "train" / "good", out=staging / PROPOSALS_DIR, size_range=size_range_from_masks(masks),
        per_image=math.ceil(per_image / per_box), placement=placement, seed=plan.seed,
        limit=plan.generate.get("limit")), ctx.progress, ctx.cancel)
    return {"images": len(result.boxes), "boxes": sum(len(b) for b in result.boxes.values()),
            "foreground": result.foreground}


def run_generate(ctx: StepContext, staging: Path) -> dict[str, Any]:
    from anogen.diffusion.sampler import GenerateSetConfig

    plan, kind = ctx.plan, ctx.kind
    per_image, per_box = _per_image(plan)
    sampler = {k: v for k, v in plan.generate.items()
               if k in GENERATE_KEYS and k not in ("per_image", "samples_per_box", "limit")}
    generation = GenerateConfig(seed=plan.seed, **sampler).with_preset(plan.preset)
    job = GenerateSetConfig(
        model=plan.model, embedding=ctx.folder_of("learn") / EMBEDDING_NAME,
        normals=_normals(plan, ctx.category), out=staging / SET_DIR, per_image=per_image,
        samples_per_box=per_box, boxes=ctx.folder_of("boxes") / PROPOSALS_DIR / "boxes.json",
        generation=generation, defect_kind=kind.name, device=ctx.device, precision=plan.precision)
    count = generate_across_ranks(job, ctx.step, ctx.ranks, ctx.progress, ctx.cancel)
    return {"samples": count, "processes": ctx.ranks.world}


def _train_config(ctx: StepContext, out_dir: Path) -> TrainConfig:
    plan, category = ctx.plan, ctx.category
    settings = plan.train
    generated = ([ctx.folder_of("generate", k.name) / SET_DIR for k in category.kinds]
                 if ctx.step.name == "generated" else [])
    return TrainConfig(
        data_dir=category.path, detector=plan.detector, out_dir=out_dir, generated_dirs=generated,
        preset=plan.detector_preset, overrides=dict(settings.get("overrides", {})), steps=settings.get("steps"),
        tau=float(settings.get("tau", TrainConfig.tau)), mix=float(settings.get("mix", TrainConfig.mix)),
        synthesis=settings.get("synthesis", TrainConfig.synthesis),
        weak_all=bool(settings.get("weak_all", TrainConfig.weak_all)),
        seed=plan.seed, device=ctx.device, validate_every=settings.get("validate_every"),
        teacher_weights=Path(settings["teacher"]) if "teacher" in settings else None,
        textures_dir=Path(settings["textures"]) if "textures" in settings else None,
        exclude=category.support_images, protocol=plan.protocol, overwrite=True)


def run_train(ctx: StepContext, staging: Path) -> dict[str, Any]:
    from anogen.demo_pipeline import relocate_paths
    from anogen.detection.train import train

    config = _train_config(ctx, staging / DETECTOR_DIR)
    result = train(config, ctx.progress, ctx.cancel, ranks=ctx.ranks if ctx.shared is not None else None)
    # The run recorded paths inside the staging folder; the step folder is where they will be.
    relocate_paths(staging, ctx.step.folder)
    return {"steps": result.steps, "final_loss": result.final_loss,
            "generated_sets": [str(p) for p in config.generated_sets],
            "processes": ctx.ranks.world if ctx.shared is not None else 1}


def train_share(ctx: StepContext) -> None:
    """A process other than the main one: its part of the main process's ``run_train``
    (it writes nothing; the main process publishes the detector)."""
    from anogen.detection.train import train

    train(_train_config(ctx, ctx.step.folder / DETECTOR_DIR), no_progress, ctx.cancel, ranks=ctx.ranks)


def run_evaluate(ctx: StepContext, staging: Path) -> dict[str, Any]:
    from anogen.detection.evaluate import evaluate

    report = evaluate(ctx.category.path, ctx.folder_of("train") / DETECTOR_DIR, exclude=ctx.category.support_images,
                      device=ctx.device, progress=ctx.progress, cancel=ctx.cancel)
    metrics = report.to_json()
    atomic_write_json(staging / METRICS_NAME, metrics)
    return {key: metrics.get(key) for key in ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")}


#: The runner of each stage (tests wrap these to count calls).
RUNNERS: dict[str, Callable[[StepContext, Path], dict[str, Any]]] = {
    "learn": run_learn, "boxes": run_boxes, "generate": run_generate, "train": run_train,
    "evaluate": run_evaluate,
}
#: The stages every process of a launch runs together (data parallel, after the main
#: process's decision: :class:`~anogen.runplan.ranks.SharedTraining`), with what the
#: other processes run.
SHARED_STAGES: dict[str, Callable[[StepContext], None]] = {"learn": learn_share, "train": train_share}


# --------------------------------------------------------------------------- the loop


def settings_section(stage: str) -> str:
    return {"learn": "learn", "boxes": "boxes", "generate": "generate"}.get(stage, "train")


def run_step(plan: Plan, step: Step, steps: dict[str, Step], ranks: ProcessRanks, progress: ProgressFn,
             cancel: threading.Event | None, shared: SharedTraining | None = None) -> None:
    """Build ``step`` in a staging folder and publish it with its done marker."""
    for leftover in step.staging_folders():
        # A killed run's half-built folder: never trusted, removed before the step is redone.
        shutil.rmtree(leftover, ignore_errors=True)
    started = time.perf_counter()
    context = StepContext(plan, step, steps, ranks, progress, cancel, shared)
    with staged_directory(step.folder) as staging:
        staging.chmod(0o755)  # mkdtemp makes it private; results are ordinary data
        details = RUNNERS[step.stage](context, staging)
        atomic_write_json(staging / DONE_NAME, {
            "step": step.label, "seconds": round(time.perf_counter() - started, 2),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": plan.settings_digest(settings_section(step.stage)), "details": details})
    if step.stage == "learn":
        (step.folder.parent / f".{step.name}.checkpoint.safetensors").unlink(missing_ok=True)
    if step.stage == "generate":
        remove_parts(step)


def run_plan(plan: Plan, shard: Shard | None = None, *, progress_for: ProgressFactory = _no_progress,
             log: Callable[[str], None] = lambda line: None, cancel: threading.Event | None = None,
             ranks: ProcessRanks | None = None) -> RunReport:
    """Run every step of ``plan`` that ``shard`` owns and whose inputs are done.

    Under ``accelerate launch`` or ``torchrun`` (``ranks.world > 1``) stage 2 is shared by
    all processes (:func:`~anogen.runplan.ranks.generate_across_ranks`), and so are stage 1
    and each detector's training (data parallel, :class:`~anogen.runplan.ranks.SharedTraining`);
    boxes and evaluations run on the main process while the others wait.
    """
    ranks = ranks or ProcessRanks.from_environment()
    shared = SharedTraining(ranks, plan.device) if SharedTraining.possible(ranks) else None
    try:
        return _run_steps(plan, shard, ranks, shared, progress_for, log, cancel)
    finally:
        if shared is not None:
            shared.close()


def _run_steps(plan: Plan, shard: Shard | None, ranks: ProcessRanks, shared: SharedTraining | None,
               progress_for: ProgressFactory, log: Callable[[str], None],
               cancel: threading.Event | None) -> RunReport:
    steps = build_steps(plan)
    by_label = {s.label: s for s in steps}
    report = RunReport()
    mine = steps_of_shard(steps, shard)
    for number, step in enumerate(mine, start=1):
        check_cancel(cancel)
        if step.is_done():
            report.already_done.append(step.label)
            continue
        if not ranks.is_main:
            if step.stage == "generate":
                ranks.wait_until(step.ready, cancel)  # the kind's learn and boxes steps, published by the main process
                generate_part = StepContext(plan, step, by_label, ranks, no_progress, cancel)
                # Only this process's part is written (beside the step folder); the main
                # process builds and publishes the set.
                run_generate(generate_part, step.folder)
                report.ran.append(step.label)
            elif step.stage in SHARED_STAGES and shared is not None and shared.decision(step, cancel):
                SHARED_STAGES[step.stage](StepContext(plan, step, by_label, ranks, no_progress, cancel, shared))
                report.ran.append(step.label)
            continue
        together = shared if step.stage in SHARED_STAGES else None
        if not step.ready():
            if together is not None:
                together.decide(step, train=False)
            report.waiting.append(step.label)
            waiting = ", ".join(n.label for n in step.needs if not n.is_done())
            log(f"[{number}/{len(mine)}] {step.label}: waiting for {waiting}")
            continue
        log(f"[{number}/{len(mine)}] {step.label}")
        started = time.perf_counter()
        if together is not None:
            together.decide(step, train=True)
        with progress_for(step.label) as progress:
            run_step(plan, step, by_label, ranks, progress, cancel, shared)
        if together is not None:
            together.finished(step)
        report.ran.append(step.label)
        log(f"[{number}/{len(mine)}] {step.label}: done in {time.perf_counter() - started:.1f} s")
    if ranks.is_main:
        report.results = write_results(plan, steps)
    return report
