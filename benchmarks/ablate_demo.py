"""Ablations on finished demo runs: what limits "+ generated defects"?

For each demo run folder (from ``anogen demo`` or ``benchmarks/demo_seeds.py``) it
trains and evaluates extra detectors with the run's own plan, data, seed and
exclusions, changing one factor at a time:

* ``oracle``: the generated set replaced by *real* demo defects of each kind (fresh
  renders from the demo's procedural renderer, which paints a defect on an otherwise
  good sample), boxed like stage 2's boxes. An upper bound: a perfect generator.
* ``steps2x``: both arms (baseline and + generated) with twice the detector steps.
* ``tau=V``: + generated with the weak-supervision threshold tau set to V (the same as
  ``train:tau=V``).
* ``train:FIELD=V[,FIELD=V]``: + generated, the detector trained with these
  ``TrainConfig`` fields changed (e.g. ``train:mix=0.75``: ``mix`` is the share of
  training samples from the detector's own synthesis, so 0.75 takes a quarter from the
  generated set instead of half).
* ``gen:FIELD=V[,FIELD=V]``: + generated, with the run's own embeddings and boxes'
  sizes, but stage 2 regenerated with these ``GenerateConfig`` fields changed (e.g.
  ``gen:restore_detail=1``, ``gen:strength=0.7``, ``gen:context_margin=0.25``).
* ``plan:FIELD=V[,FIELD=V]``: + generated, with stages 1 and 2 run again by the demo's own code
  on the run's data and seed, under a ``DemoPlan`` field changed (e.g. ``plan:crop=off``,
  the paper's whole-image setting); records the stage-1 held-out losses too.
* ``plan:``: the same with no field changed, a reproducibility check of the run.
* ``--model PATH``: the ``gen:``, ``plan:`` and ``mask:`` variants paint with this
  diffusion model instead of the run's (e.g. a demo model trained further).
* ``mask:dilated``: as ``plan:``, but stage 1's loss mask made as the project made it
  before it matched the reference code (an antialiased bilinear resize to the latent
  grid, then > 0, which dilates it: issue 11, item 4). Measures what that fix changed.

    python benchmarks/ablate_demo.py build/demo-seeds/seed-* --variants oracle steps2x tau=0.5 \
        --out build/demo-ablations

Results (one JSON per run and variant, resumable) and ``ablations.md`` go to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")
ORACLE_MARGIN = 0.3  # box side beyond the defect's bounds, as a share of them (each side)


def write_oracle_set(out: Path, category: str, kinds: dict[str, int], seed: int, size: int) -> Path:
    """Real demo defects as a generated set: ``kinds`` maps each kind to a sample count."""
    from anogen.data.demo import sample_rng
    from anogen.data.demo_render import render_defect, render_good
    from anogen.data.generated import GeneratedSetWriter
    from anogen.data.imageio import write_image

    with GeneratedSetWriter(out) as writer:
        (writer.staging / "sources").mkdir()
        for kind, count in kinds.items():
            for index in range(count):
                # The same random stream paints the good sample the defect was painted on:
                # it is the sample's source image, as a good image is for a generated one.
                image, mask = render_defect(category, kind, sample_rng(seed, category, "oracle", kind, index), size)
                good, _ = render_good(category, sample_rng(seed, category, "oracle", kind, index), size)
                source = f"sources/{kind}-{index:03d}.png"
                write_image(writer.staging / source, good)
                ys, xs = np.nonzero(mask)
                x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                mx, my = int((x1 - x0) * ORACLE_MARGIN) + 1, int((y1 - y0) * ORACLE_MARGIN) + 1
                box = (max(0, x0 - mx), max(0, y0 - my), min(size, x1 + mx), min(size, y1 + my))
                writer.add(image, box=box, source=source, defect_kind=kind, seed=seed,
                           model="oracle: real demo defects", embedding_hash="", steps=0, guidance=0.0,
                           status="accepted", id=f"{kind}-{index:03d}")
    return out


def typed_like(value: str, current: Any) -> Any:
    """``value`` parsed as the type of ``current``; an optional field (None) takes a number
    when it is one (a resolution), else the text (a prompt)."""
    if current is None:
        return int(value) if value.isdigit() else value
    if isinstance(current, tuple):
        return tuple(filter(None, value.split("+")))  # categories=fabric+washer
    if isinstance(current, bool):
        return value not in ("0", "false", "")
    return type(current)(value)


def config_overrides(spec: str, config_type: type) -> dict[str, Any]:
    """``restore_detail=1,strength=0.7`` -> field values of the dataclass ``config_type``,
    typed like the fields' defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_type) if f.default is not dataclasses.MISSING}
    overrides: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        if name not in defaults:
            raise SystemExit(f"unknown {config_type.__name__} field {name!r}")
        overrides[name] = typed_like(value, defaults[name])
    return overrides


def plan_with(spec: str, plan: Any) -> Any:
    """``plan`` (a ``DemoPlan``) with the fields of ``spec`` changed, e.g.
    ``detector_steps=320,categories=washer`` (several categories joined by ``+``)."""
    from anogen.demo_pipeline import DemoPlan

    names = {f.name for f in dataclasses.fields(DemoPlan)}
    changes: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        if name not in names:
            raise SystemExit(f"unknown DemoPlan field {name!r}")
        changes[name] = typed_like(value, getattr(plan, name))
    return dataclasses.replace(plan, **changes)


def generation_overrides(spec: str) -> dict[str, Any]:
    from anogen.diffusion.config import GenerateConfig

    return config_overrides(spec, GenerateConfig)


def train_overrides(spec: str) -> dict[str, Any]:
    from anogen.detection.train_config import TrainConfig

    return config_overrides(spec, TrainConfig)


def diffusion_model(metrics: dict[str, Any], override: Path | None):
    """The model stages 1 and 2 of a variant run on: ``override``, else the run's own."""
    from anogen.diffusion.models import load_model
    from anogen.resources import demo_model_path

    return load_model(str(override or metrics.get("model") or demo_model_path()), device="cpu")


def regenerate_set(run: Path, metrics: dict[str, Any], category: str, overrides: dict[str, Any], out: Path,
                   model_path: Path | None = None) -> Path:
    """The run's stage 2 again, from its own embeddings and settings, with ``overrides``."""
    from anogen.data.boxes import BoxPlacement, size_range_from_masks
    from anogen.data.generated import merge_generated_sets
    from anogen.data.imageio import list_images, read_mask
    from anogen.demo_pipeline import FOREGROUND, _support_paths
    from anogen.diffusion.config import GenerateConfig
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set

    plan = metrics["plan"]
    data_dir = run / "data" / category
    model = diffusion_model(metrics, model_path)
    kind_sets = []
    for kind, entry in metrics["categories"][category]["kinds"].items():
        _, masks, _, _ = _support_paths(data_dir, kind, int(plan["shots"]))
        kind_out = out / kind
        if not (kind_out / "manifest.jsonl").exists():
            generate_set(GenerateSetConfig(
                model=model, embedding=run / entry["embedding"], normals=list_images(data_dir / "train" / "good")[
                    : int(plan["generation_images"])], out=kind_out, per_image=int(plan["samples_per_image"]),
                samples_per_box=1, size_range=size_range_from_masks([read_mask(p) for p in masks]),
                placement=BoxPlacement(foreground=FOREGROUND.get(category, "grabcut"), rule="inside"),
                defect_kind=kind, generation=GenerateConfig(steps=int(plan["generate_steps"]),
                                                            guidance=float(plan["guidance"]), seed=metrics["seed"],
                                                            batch_size=4, **overrides)))
        kind_sets.append(kind_out)
    return merge_generated_sets(kind_sets, out / "all")


def relearn_set(run: Path, metrics: dict[str, Any], category: str, spec: str, out: Path,
                model_path: Path | None = None) -> tuple[Path, dict]:
    """Stages 1 and 2 of the run again, by :mod:`anogen.demo_pipeline`, with a plan field
    changed; returns the merged generated set and each kind's stage-1 and realism numbers."""
    from anogen.data.generated import merge_generated_sets
    from anogen.demo_pipeline import DemoConfig, DemoPlan, _learn_and_generate, _StageProgress, _StageTimer

    plan_values = dict(metrics["plan"])
    plan_values["categories"] = tuple(plan_values["categories"])
    plan = plan_with(spec, DemoPlan(**plan_values))
    shutil.rmtree(out, ignore_errors=True)  # this script's own work folder: a stopped run starts over
    model = diffusion_model(metrics, model_path)
    config = DemoConfig(out=out, quick=True, seed=int(metrics["seed"]), device="cpu", plan=plan)
    kinds = [_learn_and_generate(model, run / "data" / category, category, kind, plan, config, out,
                                 _StageProgress(lambda _report: None, 100), _StageTimer(), None)
             for kind in metrics["categories"][category]["kinds"]]
    merged = merge_generated_sets([out / "generated" / category / k.kind for k in kinds],
                                  out / "generated" / category / "all")
    details = {k.kind: {"heldout_loss_learned": k.heldout_loss_learned, "heldout_loss_init": k.heldout_loss_init,
                        "realism": k.realism_generated} for k in kinds}
    return merged, details


@contextlib.contextmanager
def dilated_loss_masks() -> Iterator[None]:
    """While stage 1 learns, its latent loss masks made the old way: an antialiased
    bilinear resize of the support masks to the latent grid, then every non-zero cell.
    The held-out loss (``support_loss``) keeps the reference masks, so both arms are
    measured alike."""
    import torch.nn.functional as F

    from anogen.diffusion import learn

    def dilated(pixel_masks, grid):
        return (F.interpolate(pixel_masks.float(), size=tuple(grid), mode="bilinear", align_corners=False,
                              antialias=True) > 0).float()

    reference_masks, reference_learn = learn.latent_loss_masks, learn.learn_embedding

    def learn_with_dilated_masks(*args, **kwargs):
        learn.latent_loss_masks = dilated
        try:
            return reference_learn(*args, **kwargs)
        finally:
            learn.latent_loss_masks = reference_masks

    learn.learn_embedding = learn_with_dilated_masks
    try:
        yield
    finally:
        learn.learn_embedding = reference_learn


def train_and_evaluate(run: Path, metrics: dict[str, Any], category: str, generated: Path | None, out: Path,
                       steps_factor: float = 1.0, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from anogen.detection.evaluate import evaluate
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig

    plan = metrics["plan"]
    support = [p for kind in metrics["categories"][category]["kinds"].values() for p in kind["support_images"]]
    data_dir = run / "data" / category
    config = TrainConfig(data_dir=data_dir, detector=metrics["detector"], out_dir=out, generated_dir=generated,
                         preset="quick", overrides=dict(plan["detector_overrides"]),
                         steps=int(plan["detector_steps"] * steps_factor), seed=metrics["seed"], device="cpu",
                         exclude=[Path(p) for p in support], overwrite=True)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    train(config)
    return evaluate(data_dir, out, exclude=support, device="cpu").to_json()


def run_variant(run: Path, variant: str, work: Path, model_path: Path | None = None) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    result: dict[str, Any] = {"run": str(run), "seed": metrics["seed"], "variant": variant, "categories": {}}
    for category, entry in metrics["categories"].items():
        generated = run / "generated" / category / "all"
        arms: dict[str, Any] = {"baseline": entry["baseline"], "with_generated": entry["with_generated"]}
        where = work / category
        if variant == "oracle":
            counts = {kind: int(k["generated"]) for kind, k in entry["kinds"].items()}
            oracle = write_oracle_set(where / "oracle-set", category, counts, metrics["seed"],
                                      int(metrics["plan"]["image_size"]))
            arms["oracle"] = train_and_evaluate(run, metrics, category, oracle, where / "oracle")
        elif variant == "steps2x":
            arms["baseline"] = train_and_evaluate(run, metrics, category, None, where / "baseline", 2.0)
            arms["with_generated"] = train_and_evaluate(run, metrics, category, generated, where / "generated", 2.0)
        elif variant.startswith(("tau=", "train:")):
            arms["with_generated"] = train_and_evaluate(run, metrics, category, generated, where / "generated",
                                                        overrides=train_overrides(variant.removeprefix("train:")))
        elif variant.startswith("gen:"):
            regenerated = regenerate_set(run, metrics, category, generation_overrides(variant[4:]), where / "set",
                                         model_path)
            arms["regenerated"] = train_and_evaluate(run, metrics, category, regenerated, where / "generated")
            from anogen.demo_realism import generated_realism

            result.setdefault("realism", {})[category] = {
                kind: generated_realism(where / "set" / kind, kind).to_json() for kind in entry["kinds"]}
        elif variant.startswith("plan:") or variant == "mask:dilated":
            spec = variant[5:] if variant.startswith("plan:") else ""
            with dilated_loss_masks() if variant == "mask:dilated" else contextlib.nullcontext():
                relearned, details = relearn_set(run, metrics, category, spec, where / "relearned", model_path)
            arms["relearned"] = train_and_evaluate(run, metrics, category, relearned, where / "generated")
            result.setdefault("kinds", {})[category] = details
        else:
            raise SystemExit(f"unknown variant {variant!r}")
        result["categories"][category] = arms
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| variant | seed | category | arm | image AUROC | pixel AUROC | pixel AP | AUPRO |",
             "|---|---|---|---|---|---|---|---|"]
    for result in results:
        for category, arms in result["categories"].items():
            for arm, values in arms.items():
                cells = " | ".join(f"{values[m]:.3f}" if values[m] is not None else "-" for m in METRICS)
                lines.append(f"| {result['variant']} | {result['seed']} | {category} | {arm} | {cells} |")
    return "\n".join(lines) + "\n"


def paired_summary(results: list[dict[str, Any]]) -> str:
    """Each variant's new arms against the baseline, paired over the runs: means, the mean
    difference with a 95 % bootstrap interval, and in how many runs the arm was higher."""
    from demo_seeds import bootstrap_ci

    lines = ["| variant | category | arm | metric | baseline (mean) | arm (mean) | paired difference [95 % CI] "
             "| wins |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        for category in dict.fromkeys(c for r in runs for c in r["categories"]):
            arms = dict.fromkeys(a for r in runs for a in r["categories"].get(category, {}) if a != "baseline")
            for arm in arms:
                paired = [r["categories"][category] for r in runs if arm in r["categories"].get(category, {})]
                for metric in ("pixel_ap", "pixel_aupro"):
                    base = np.array([p["baseline"][metric] for p in paired], float)
                    other = np.array([p[arm][metric] for p in paired], float)
                    low, high = bootstrap_ci(other - base)
                    lines.append(f"| {variant} | {category} | {arm} | {metric} | {base.mean():.3f} | "
                                 f"{other.mean():.3f} | {(other - base).mean():+.3f} [{low:+.3f}, {high:+.3f}] | "
                                 f"{int((other > base).sum())} of {len(paired)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished demo output folders")
    parser.add_argument("--variants", nargs="+", default=["oracle"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", type=Path, default=None,
                        help="the diffusion model for gen:/plan:/mask: variants (default: each run's own)")
    args = parser.parse_args(argv)
    from anogen.compute import apply_policy, resolve_policy

    apply_policy(resolve_policy("cpu", args.threads))
    results = []
    for variant in args.variants:
        for run in args.runs:
            target = args.out / f"{run.name}-{variant}.json"
            if not target.is_file():  # resumable: a finished pair is kept
                result = run_variant(run, variant, args.out / "work" / run.name / variant, args.model)
                if args.model:
                    result["model"] = str(args.model)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(result, indent=2), encoding="utf-8")
            results.append(json.loads(target.read_text(encoding="utf-8")))
            print(markdown(results[-1:]), flush=True)
    summary = markdown(results) + "\n" + paired_summary(results)
    (args.out / "ablations.md").write_text(summary, encoding="utf-8")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
