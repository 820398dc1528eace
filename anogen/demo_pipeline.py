"""`anogen demo`: all three stages on the embedded demo data and model.

For each demo category it (1) writes the procedural dataset, (2) learns one embedding
per defect kind from 3 masked support images, (3) proposes boxes on good images and
generates defects inside them, (4) trains the detector twice — on its own synthetic
anomalies only (the baseline) and with the generated defects mixed in under box-level
weak supervision — and (5) evaluates both on the test set with the support images
excluded. The report folder gets every intermediate picture and ``metrics.json``;
:mod:`anogen.demo_report` renders ``index.md``.

Nothing here is demo-specific in the method: the same library calls the CLI and the
GUI make, only with small step counts so a CPU finishes in minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anogen.atomic import atomic_write_json, atomic_write_text, staged_directory
from anogen.compute import apply_policy, resolve_policy
from anogen.data.boxes import BoxPlacement
from anogen.diffusion.config import DEFECT_OUTLINES
from anogen.errors import InputError
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress
from anogen.outputs import mark_output_dir

if TYPE_CHECKING:
    from anogen.data.boxes import ForegroundMethod

# fabric is a texture: every pixel is surface
FOREGROUND: dict[str, ForegroundMethod] = {"fabric": "all", "washer": "otsu"}
# What each category's images show, for stage 1's captions (LearnConfig.subject): words
# the demo model was pretrained on (anogen.diffusion.demo_model.SURFACE_NOUNS).
SUBJECTS: dict[str, str] = {"fabric": "fabric", "washer": "a metal washer"}


@dataclass
class DemoPlan:
    """Sizes of one demo run. On 2 idle CPU cores ``quick`` takes about 3 minutes (2.9 min
    measured at 64 px; the 128 px plan took 0.85x that plan's time back to back); ``full``
    took 36 minutes at 1 thread beside another job, two thirds of it the four detectors
    (docs/demo.md, "Time")."""

    categories: tuple[str, ...]
    image_size: int
    train_good: int
    test_good: int
    test_per_kind: int
    shots: int
    learn_steps: int
    learn_batch: int
    generate_steps: int
    guidance: float
    generation_images: int  # good images each defect kind is generated on
    samples_per_image: int
    detector_steps: int
    detector_overrides: dict[str, Any] = field(default_factory=dict)
    crop: str = "auto"  # the context crop of stages 1 and 2 (anogen.diffusion.crop); "off" as in the paper
    # The side stages 1 and 2 run the model at (None: its native side); stage 2 paints at the
    # side stage 1 learned at, which the embedding records.
    model_resolution: int | None = None
    # True: stage 1's captions name the category's surface (SUBJECTS) and stage 2 paints with
    # such a sentence. Off: the patches look more like the cloth, but the detector trained on
    # them lost to the baseline in 3 of 3 seeds (docs/demo.md, "Why the patches turn grey").
    subject_captions: bool = False
    # True: stage 2 paints the outline of one of the kind's support masks in each box
    # (anogen.diffusion.shapes), not the whole box. Off: the outlines match the real defects'
    # share of their boxes, but the detector lost on both seeds tried (docs/demo.md,
    # "Defect outlines").
    defect_shapes: bool = DEFECT_OUTLINES
    # The share of each box that must lie on the part's foreground (the paper's code: 0.75).
    box_min_inside: float = BoxPlacement.min_inside
    # CPU precision of detector training (anogen.compute): "auto" autocasts to bf16 where the
    # CPU has native bf16; "fp32" or "bf16" force one, to compare them.
    detector_precision: str = "auto"

    @classmethod
    def quick(cls) -> DemoPlan:
        # 16 good + 12 per kind test images: with 8 + 7 only 15 were left to score after the
        # support and validation images, and the seed-to-seed spread hid any effect.
        # Stages 1 and 2 at 128 px, not the model's 64: a stage-2 crop (3 box sides) shrunk
        # to 64 px puts the weave below one latent cell and the model paints a flat patch;
        # at 128 px it keeps the weave, and the detector gains (docs/demo.md). 60 steps of
        # 2 shots and 12 DDIM steps pay for the 4x pixels within the 5-minute budget.
        return cls(categories=("fabric",), image_size=128, train_good=24, test_good=16, test_per_kind=12,
                   shots=3, learn_steps=60, learn_batch=2, generate_steps=12, guidance=5.0,
                   generation_images=8, samples_per_image=1, detector_steps=150,
                   detector_overrides={"image_size": 64}, model_resolution=128)

    @classmethod
    def full(cls) -> DemoPlan:
        # Both categories, more data and more generated defects than quick, on images of the
        # same 128 px: stage 2's crop is 3 box sides, so on 256 px images it is twice as many
        # pixels and a 128 px working size shrinks the weave below a latent cell again (the
        # patches came out flat, sharpness 0.04-0.06); a 256 px working size would cost 4x.
        return cls(categories=("fabric", "washer"), image_size=128, train_good=40, test_good=12,
                   test_per_kind=10, shots=3, learn_steps=60, learn_batch=2, generate_steps=12,
                   guidance=5.0, generation_images=12, samples_per_image=2, detector_steps=160,
                   detector_overrides={"image_size": 128}, model_resolution=128)


@dataclass
class DemoConfig:
    out: Path
    quick: bool = False
    model: str | None = None  # default: the embedded demo model
    detector: str = "draem"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: the compute policy's default
    plan: DemoPlan | None = None  # default: DemoPlan.quick() or .full()

    def resolved_plan(self) -> DemoPlan:
        return self.plan or (DemoPlan.quick() if self.quick else DemoPlan.full())


@dataclass
class KindResult:
    kind: str
    support_images: list[str]
    embedding: str
    final_loss: float
    loss_curve: list[float]
    heldout_loss_learned: float
    heldout_loss_init: float
    generated: int
    # Do generated defects look like real ones? (anogen.demo_realism)
    realism_generated: dict[str, Any] = field(default_factory=dict)
    realism_real: dict[str, Any] = field(default_factory=dict)


@dataclass
class CategoryResult:
    category: str
    kinds: list[KindResult]
    generated_dir: str
    baseline: dict[str, Any]
    with_generated: dict[str, Any]
    baseline_history: list[dict[str, Any]]
    generated_history: list[dict[str, Any]]


@dataclass
class DemoResult:
    out: Path
    categories: list[CategoryResult]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, summed over categories
    compute: dict[str, Any] = field(default_factory=dict)  # threads and precision in force

    def table(self) -> str:
        """The comparison table printed at the end of the run."""
        keys = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")
        header = f"{'category':<10} {'detector':<22}" + "".join(f"{k:>13}" for k in keys)
        lines = [header, "-" * len(header)]
        for result in self.categories:
            for label, metrics in (("baseline (synthesis)", result.baseline),
                                   ("+ generated defects", result.with_generated)):
                cells = "".join(_cell(metrics.get(k)) for k in keys)
                lines.append(f"{result.category:<10} {label:<22}{cells}")
        return "\n".join(lines)


    def timing_lines(self) -> str:
        """Where the time went, printed after the table and written to the report."""
        lines = [f"{stage:<28}{_duration(seconds):>9}" for stage, seconds in self.timings.items()]
        policy = self.compute
        threads = policy.get("threads")
        lines.append(f"{'total':<28}{_duration(self.seconds):>9}  ({threads} thread{'' if threads == 1 else 's'}, "
                     f"{policy.get('precision')})")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    """Seconds under two minutes (a stage of the quick demo), minutes above."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _cell(value: Any) -> str:
    return f"{value:>13.3f}" if isinstance(value, (int, float)) and value == value else f"{'n/a':>13}"


class _StageTimer:
    """Wall time per stage (dataset, learn, generate, detectors, evaluate, report)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


class _StageProgress:
    """Maps each stage's own progress onto one overall bar of ``total`` units."""

    def __init__(self, progress: ProgressFn, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def stage(self, label: str, weight: int) -> ProgressFn:
        start = self.done
        self.done += weight

        def report(inner: Progress) -> None:
            share = inner.fraction * weight
            self.progress(Progress(int(start + share), self.total, f"{label}: {inner.message}".rstrip(": "),
                                   metrics=inner.metrics, preview=inner.preview))
        return report


def run_demo(config: DemoConfig, progress: ProgressFn = no_progress,
             cancel: threading.Event | None = None) -> DemoResult:
    """Run the whole method on the demo data; see the module docstring."""
    final = Path(config.out)
    if final.exists() and not final.is_dir():
        raise InputError(f"{final}: the report folder is a file; choose a folder name")
    # The whole report is built in a staging folder next to ``final`` and swapped in at the
    # end: a re-run killed half-way leaves the previous report as it was, never a mix.
    with staged_directory(final) as staging:
        staging.chmod(0o755)  # mkdtemp makes it private; a report is ordinary data
        result = _run_demo_in(staging, config, progress, cancel)
        relocate_paths(staging, final)
        mark_output_dir(staging, "demo")
    result.out = final
    for category in result.categories:
        for kind in category.kinds:
            kind.support_images = [_moved(p, staging, final) for p in kind.support_images]
    return result


def _moved(text: str, old: Path, new: Path) -> str:
    """``text`` with a leading ``old`` folder replaced by ``new`` (other strings unchanged)."""
    for before, after in ((str(old.resolve()), str(new.resolve())), (str(old), str(new))):
        if text == before or text.startswith(before + os.sep):
            return after + text[len(before):]
    return text


def _moved_json(value: Any, old: Path, new: Path) -> Any:
    if isinstance(value, str):
        return _moved(value, old, new)
    if isinstance(value, list):
        return [_moved_json(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _moved_json(v, old, new) for k, v in value.items()}
    return value


def relocate_paths(staging: Path, final: Path) -> None:
    """Rewrite the absolute paths the run recorded in its JSON files (detector provenance,
    support images, generated-set sources) from ``staging`` to where the report will live,
    so ``anogen evaluate`` on a report's detector still finds its support images."""
    for path in sorted(staging.rglob("*.json")) + sorted(staging.rglob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        if str(staging) not in text and str(staging.resolve()) not in text:
            continue
        if path.suffix == ".jsonl":
            lines = [json.dumps(_moved_json(json.loads(line), staging, final), ensure_ascii=False)
                     for line in text.splitlines() if line.strip()]
            atomic_write_text(path, "".join(line + "\n" for line in lines))
        else:
            atomic_write_text(path, json.dumps(_moved_json(json.loads(text), staging, final), indent=2) + "\n")


def _run_demo_in(out: Path, config: DemoConfig, progress: ProgressFn,
                 cancel: threading.Event | None) -> DemoResult:
    from anogen.data.demo import DEFECT_KINDS, write_demo_dataset
    from anogen.data.generated import merge_generated_sets
    from anogen.diffusion.models import load_model
    from anogen.resources import demo_model_path

    started = time.perf_counter()
    plan = config.resolved_plan()
    model_source = config.model or str(demo_model_path())
    # 100 units per stage: the dataset, then per category each kind (learn + generate),
    # two detectors and the report.
    stages = _StageProgress(progress, total=100 + sum(100 * (len(DEFECT_KINDS[c]) + 3) for c in plan.categories))

    timer = _StageTimer()
    data_root = out / "data"
    with timer("dataset"):
        write_demo_dataset(data_root, categories=plan.categories, size=plan.image_size, seed=config.seed,
                           train_good=plan.train_good, test_good=plan.test_good,
                           test_per_kind=plan.test_per_kind, progress=stages.stage("dataset", 100),
                           cancel=cancel)
    check_cancel(cancel)
    with timer("load model"):
        model = load_model(model_source, device=config.device)
    policy = apply_policy(resolve_policy(model.device, config.threads, plan.detector_precision))

    results = []
    for category in plan.categories:
        kinds = [_learn_and_generate(model, data_root / category, category, kind, plan, config, out, stages, timer,
                                     cancel)
                 for kind in DEFECT_KINDS[category]]
        generated_dir = merge_generated_sets([out / "generated" / category / k.kind for k in kinds],
                                             out / "generated" / category / "all")
        support = [p for k in kinds for p in k.support_images]
        baseline, base_history = _train_and_evaluate(data_root / category, None, support, plan, config,
                                                     out / "detectors" / category / "baseline",
                                                     stages.stage(f"{category}: baseline detector", 100), timer,
                                                     cancel)
        with_generated, gen_history = _train_and_evaluate(data_root / category, generated_dir, support, plan,
                                                          config, out / "detectors" / category / "generated",
                                                          stages.stage(f"{category}: detector + generated", 100),
                                                          timer, cancel)
        results.append(CategoryResult(category, kinds, str(generated_dir.relative_to(out)), baseline,
                                      with_generated, base_history, gen_history))
        stages.stage(f"{category}: report", 100)

    from anogen.demo_report import write_report

    # The report states the time up to its own writing; metrics.json and the printed table the whole run's.
    result = DemoResult(out=out, categories=results, seconds=time.perf_counter() - started, timings=timer.seconds,
                        compute=policy.to_json())
    with timer("report"):
        write_report(result, data_root)
    result.seconds = time.perf_counter() - started
    atomic_write_json(out / "metrics.json", _metrics_json(result, plan, config, model_source))
    progress(Progress(stages.total, stages.total, "done"))
    return result


def _support_paths(category_dir: Path, kind: str, shots: int) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """The first ``shots`` test images of a kind are the support set; the rest are held out."""
    from anogen.data.datasets import read_mvtec_category

    records = [(r.path, r.mask_path) for r in read_mvtec_category(category_dir).test
               if r.defect_kind == kind and r.mask_path is not None]
    if len(records) < shots + 1:
        raise InputError(f"{category_dir}: defect kind '{kind}' needs at least {shots + 1} masked images")
    support, heldout = records[:shots], records[shots:]
    return ([image for image, _ in support], [mask for _, mask in support],
            [image for image, _ in heldout], [mask for _, mask in heldout])


def _learn_and_generate(model, category_dir: Path, category: str, kind: str, plan: DemoPlan, config: DemoConfig,
                        out: Path, stages: _StageProgress, timer: _StageTimer, cancel) -> KindResult:
    from anogen.data.boxes import size_range_from_masks
    from anogen.data.imageio import list_images, read_mask
    from anogen.diffusion.config import GenerateConfig, LearnConfig
    from anogen.diffusion.embedding_file import save_embedding
    from anogen.diffusion.learn import init_vector, learn_embedding, support_loss
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set

    images, masks, heldout_images, heldout_masks = _support_paths(category_dir, kind, plan.shots)
    token = f"<{category}-{kind}>"
    subject = SUBJECTS.get(category, "") if plan.subject_captions else ""
    learn = LearnConfig(images=images, masks=masks, token=token, subject=subject, steps=plan.learn_steps,
                        batch_size=plan.learn_batch, lr=0.005, scale_lr=True, seed=config.seed,
                        crop_to_defect=plan.crop, resolution=plan.model_resolution)
    with timer("learn (stage 1)"):
        learned = learn_embedding(model, learn, stages.stage(f"{category}/{kind}: learn", 60), cancel)
    learned.metadata["defect_kind"] = kind
    embedding_path = out / "embeddings" / category / f"{kind}.safetensors"
    save_embedding(embedding_path, learned)

    # Stage 1 evidence: on held-out images of the same kind, the learned token should
    # explain the defect better (lower masked loss) than the init word it started from.
    heldout = LearnConfig(images=heldout_images, masks=heldout_masks, token=token, subject=subject, seed=config.seed,
                          crop_to_defect=plan.crop, resolution=plan.model_resolution)
    with timer("stage-1 held-out check"):
        loss_learned = support_loss(model, heldout, learned.vector)
        loss_init = support_loss(model, heldout, init_vector(model, learn.init_word))

    support_masks = [read_mask(p) for p in masks]
    size_range = size_range_from_masks(support_masks)
    normals = list_images(category_dir / "train" / "good")[: plan.generation_images]
    with timer("generate (stage 2)"):
        generated = generate_set(GenerateSetConfig(
            model=model, embedding=embedding_path, normals=normals, out=out / "generated" / category / kind,
            per_image=plan.samples_per_image, samples_per_box=1, size_range=size_range,
            placement=BoxPlacement(foreground=FOREGROUND.get(category, "grabcut"), rule="inside",
                                   min_inside=plan.box_min_inside), defect_kind=kind,
            generation=GenerateConfig(steps=plan.generate_steps, guidance=plan.guidance, seed=config.seed,
                                      batch_size=4, crop=plan.crop),
            shapes=support_masks if plan.defect_shapes else None),
            stages.stage(f"{category}/{kind}: generate", 40), cancel)
    from anogen.demo_realism import generated_realism, real_realism

    with timer("realism check"):
        kind_set = out / "generated" / category / kind
        realism_generated = generated_realism(kind_set, kind).to_json()
        realism_real = real_realism(category_dir, category, kind, config.seed, plan.image_size).to_json()
    return KindResult(kind=kind, support_images=[str(p) for p in images],
                      embedding=str(embedding_path.relative_to(out)),
                      final_loss=learned.final_loss, loss_curve=list(learned.loss_curve),
                      heldout_loss_learned=loss_learned, heldout_loss_init=loss_init,
                      generated=len(generated.samples), realism_generated=realism_generated,
                      realism_real=realism_real)


def _train_and_evaluate(category_dir: Path, generated_dir: Path | None, support: list[str], plan: DemoPlan,
                        config: DemoConfig, out_dir: Path, progress: ProgressFn, timer: _StageTimer, cancel):
    from anogen.detection.evaluate import evaluate
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig

    with timer("train detectors (stage 3)"):
        result = train(TrainConfig(data_dir=category_dir, detector=config.detector, out_dir=out_dir,
                                   generated_dir=generated_dir, preset="quick",
                                   overrides=dict(plan.detector_overrides), steps=plan.detector_steps,
                                   seed=config.seed, device=config.device, exclude=[Path(p) for p in support],
                                   cpu_precision=plan.detector_precision, overwrite=True),
                       progress, cancel)
    check_cancel(cancel)
    with timer("evaluate detectors"):
        report = evaluate(category_dir, out_dir, exclude=support, device=config.device)
    return report.to_json(), result.history


def _metrics_json(result: DemoResult, plan: DemoPlan, config: DemoConfig, model_source: str) -> dict[str, Any]:
    return {
        "seconds": round(result.seconds, 1),
        "timings_seconds": {stage: round(seconds, 1) for stage, seconds in result.timings.items()},
        "compute": result.compute,
        "model": model_source,
        "detector": config.detector,
        "seed": config.seed,
        "plan": asdict(plan),
        "categories": {
            c.category: {
                "baseline": c.baseline,
                "with_generated": c.with_generated,
                "kinds": {k.kind: {"final_loss": k.final_loss, "heldout_loss_learned": k.heldout_loss_learned,
                                   "heldout_loss_init": k.heldout_loss_init, "generated": k.generated,
                                   "realism": {"generated": k.realism_generated, "real": k.realism_real},
                                   "support_images": k.support_images, "embedding": k.embedding}
                          for k in c.kinds},
            }
            for c in result.categories
        },
    }


def load_metrics(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8"))
