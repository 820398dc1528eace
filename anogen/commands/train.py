"""``anogen train``: train a DRAEM or DeSTSeg detector on a category (+ generated sets)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anogen.compute import CPU_PRECISION_CHOICES, add_threads_argument
from anogen.detection.options import CHECKPOINT_CHOICES, PROTOCOLS, SYNTHESIS_METHODS
from anogen.detection.registry import DETECTORS, PRESETS
from anogen.detection.train_config import TrainConfig


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, lists,
    true/false/null), else kept as strings."""
    from anogen.errors import InputError

    overrides: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set expects key=value, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides[key] = value
    return overrides


def _is_training_run(folder: Path) -> bool:
    """A run written before output folders had markers: it has a checkpoint folder."""
    from anogen.detection.checkpoint import CONFIG_NAME

    return any((folder / which / CONFIG_NAME).is_file() for which in CHECKPOINT_CHOICES) or \
        any(folder.glob(".last.*"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a defect detector (DRAEM or DeSTSeg)",
        description="Train a detector on the good images of one MVTec AD category, mixing its own synthetic "
                    "anomalies with generated sets (box labels, tau-filtered loss). Writes OUT/best and "
                    "OUT/last (safetensors + detector.json) and OUT/history.jsonl.")
    parser.add_argument("--data", type=Path, required=True, metavar="CAT_DIR",
                        help="one MVTec AD category (train/good, test/<kind>, ground_truth/<kind>)")
    parser.add_argument("--detector", choices=DETECTORS, required=True)
    parser.add_argument("--generated", type=Path, nargs="+", default=[], metavar="DIR",
                        help="generated sets (images/, masks/, manifest.jsonl), e.g. one per defect kind of the "
                             "category; without any: synthesis only")
    parser.add_argument("--tau", type=float, default=TrainConfig.tau,
                        help="box pixels already called normal with probability >= tau get no loss (default "
                             "%(default)s; 1.0 = plain box supervision)")
    parser.add_argument("--mix", type=float, default=TrainConfig.mix,
                        help="share of training samples from the detector's own synthesis (default %(default)s; "
                             "0 = generated samples only)")
    parser.add_argument("--synthesis", choices=SYNTHESIS_METHODS, default=TrainConfig.synthesis,
                        help="the detector's own anomalies: perlin (DRAEM/DeSTSeg's) or cutpaste (the paper's "
                             "Table 4 ablation) (default %(default)s)")
    parser.add_argument("--weak-all", action="store_true",
                        help="apply the tau filter to every sample, as the reference code did")
    parser.add_argument("--preset", choices=PRESETS, default=TrainConfig.preset,
                        help="quick: narrow, 128 px, minutes on a CPU; paper: the reference hyperparameters "
                             "(default %(default)s)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, metavar="N",
                        help="training steps (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a detector config field, e.g. --set image_size=64 (repeatable)")
    parser.add_argument("--teacher", type=Path, metavar="PATH",
                        help="DeSTSeg: ImageNet ResNet18 weights (a transformers folder or a state-dict file)")
    parser.add_argument("--textures", type=Path, metavar="DIR",
                        help="texture images for the synthetic anomalies (e.g. DTD); default: built-in textures")
    parser.add_argument("--exclude", type=Path, nargs="+", default=[], metavar="IMAGE",
                        help="support images (used to learn the defect): kept out of validation and evaluation")
    parser.add_argument("--validate-every", type=int, default=TrainConfig.validate_every, metavar="N",
                        help="validate every N steps (default: ~10 times)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=TrainConfig.protocol,
                        help="holdout (default): keep the checkpoint that validates best on a held-out share of the "
                             "test set, which evaluate then leaves out; paper: keep the last checkpoint and score "
                             "the whole test set minus the support images, as the reference code did")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--device", default=TrainConfig.device,
                        help="auto, cpu, cuda, cuda:1, mps (default %(default)s)")
    add_threads_argument(parser)
    parser.add_argument("--cpu-precision", choices=CPU_PRECISION_CHOICES, default=TrainConfig.cpu_precision,
                        help="bf16 autocast of the training steps on the CPU: auto (default) uses it only where the "
                             "CPU has native bf16 (AMX, AVX-512-bf16); elsewhere it is several times slower")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a detector already in OUT, or use a folder anogen did not write (never an "
                             "input)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anogen.compute import apply_command_policy, threads_per_process
    from anogen.detection.train import train
    from anogen.jobs import TqdmProgress
    from anogen.outputs import check_output_dir
    from anogen.runplan.ranks import ProcessRanks

    check_output_dir(args.out, "train", overwrite=args.overwrite, recognise=_is_training_run,
                     inputs=[args.data, *args.generated, args.textures, args.teacher])

    config = TrainConfig(
        data_dir=args.data, detector=args.detector, out_dir=args.out, generated_dirs=list(args.generated),
        preset=args.preset, overrides=parse_overrides(args.overrides), steps=args.steps, tau=args.tau,
        mix=args.mix, synthesis=args.synthesis, weak_all=args.weak_all, seed=args.seed, device=args.device,
        validate_every=args.validate_every, teacher_weights=args.teacher, textures_dir=args.textures,
        exclude=list(args.exclude), protocol=args.protocol, resume=args.resume, overwrite=args.overwrite,
        cpu_precision=args.cpu_precision)
    # Under torchrun or accelerate launch the processes train one detector together; rank 0
    # alone reports and writes (anogen.detection.parallel).
    ranks = ProcessRanks.from_environment()
    quiet = args.quiet or not ranks.is_main
    if args.threads is None:
        args.threads = threads_per_process(ranks.world)
    apply_command_policy(args, args.device, quiet=quiet)
    with TqdmProgress(f"train {args.detector}", disable=quiet) as progress:
        result = train(config, progress, ranks=ranks)
    if not ranks.is_main:
        return 0
    best = result.best_metrics
    summary = ", ".join(f"{key} {best[key]:.3f}" for key in ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")
                        if isinstance(best.get(key), (int, float)))
    processes = f" x {ranks.world} processes" if ranks.world > 1 else ""
    print(f"trained {result.kind} for {result.steps} steps in {result.seconds:.0f} s on {result.device}{processes}; "
          f"final loss {result.final_loss:.4g}")
    print(f"best checkpoint: step {result.best_step} ({result.validation_source} validation: {summary})")
    print(f"saved to {result.out_dir} (best/, last/, history.jsonl)")
    return 0
