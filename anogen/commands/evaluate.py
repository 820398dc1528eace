"""``anogen evaluate``: score a trained detector on a category's test set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anogen.compute import add_threads_argument
from anogen.detection.options import CHECKPOINT_CHOICES, PROTOCOLS
from anogen.outputs import add_overwrite_argument

METRIC_ROWS = (
    ("image_auroc", "image AUROC"),
    ("image_ap", "image AP"),
    ("pixel_auroc", "pixel AUROC"),
    ("pixel_ap", "pixel AP"),
    ("pixel_aupro", "pixel AUPRO (FPR 0.3)"),
    ("f1_max", "image F1-max"),
    ("f1_threshold", "  at threshold"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="metrics of a trained detector on a test set",
        description="Score every test image of an MVTec AD category and print image/pixel AUROC and AP, AUPRO "
                    "and F1-max. Support images (--exclude, and those named at training) and the validation "
                    "images the training run used are left out and counted.")
    parser.add_argument("--data", type=Path, required=True, metavar="CAT_DIR", help="one MVTec AD category")
    parser.add_argument("--detector-dir", type=Path, required=True, metavar="DIR", help="the --out folder of train")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None,
                        help="holdout: the best checkpoint, scored on the test images its run did not validate on; "
                             "paper: the last checkpoint on the whole test set, as the reference code did (default: "
                             "the protocol the run was trained under). Support images are left out under both")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_CHOICES, default=None,
                        help="override the protocol's checkpoint (holdout: best, paper: last)")
    parser.add_argument("--exclude", type=Path, nargs="+", default=[], metavar="IMAGE",
                        help="support images to leave out of the test set")
    parser.add_argument("--include-validation", action="store_true",
                        help="also score the test images the training run validated on")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the metrics as JSON")
    add_overwrite_argument(parser)
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="score the checkpoint of a training run that did not finish (refused otherwise: "
                             "resume it with 'anogen train --resume')")
    parser.add_argument("--device", default="auto")
    add_threads_argument(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def format_table(metrics: dict) -> str:
    lines = [f"{'metric':<24}{'value':>8}"]
    for key, label in METRIC_ROWS:
        value = metrics.get(key)
        lines.append(f"{label:<24}{'n/a' if value is None else format(value, '.4f'):>8}")
    lines.append(f"{'test images':<24}{metrics.get('n_images', 0):>8}")
    lines.append(f"{'  defective':<24}{metrics.get('n_defective', 0):>8}")
    lines.append(f"{'  excluded':<24}{metrics.get('n_excluded', 0):>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from anogen.atomic import atomic_write_json
    from anogen.compute import apply_command_policy
    from anogen.detection.checkpoint import require_complete_run
    from anogen.detection.evaluate import evaluate, resolve_protocol
    from anogen.errors import InputError
    from anogen.jobs import TqdmProgress
    from anogen.outputs import check_output_file, is_json_with_keys

    # Everything a user can get wrong is checked before the test set is scored.
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.json is not None:
        check_output_file(args.json, overwrite=args.overwrite, option="--json",
                          recognise=is_json_with_keys("image_auroc", "pixel_auroc"))
    protocol, which = resolve_protocol(args.detector_dir, args.protocol, args.checkpoint)
    warning = require_complete_run(args.detector_dir, which, args.allow_incomplete)
    if warning:
        print(f"anogen: warning: {warning}", file=sys.stderr)
    apply_command_policy(args, args.device)
    with TqdmProgress("evaluate", disable=args.quiet) as progress:
        report = evaluate(args.data, args.detector_dir, list(args.exclude), protocol=protocol, which=which,
                          device=args.device, batch_size=args.batch_size,
                          include_validation=args.include_validation, progress=progress)
    metrics = report.to_json()
    print(format_table(metrics))
    for note in metrics.get("notes", []):
        print(f"note: {note}")
    if args.json is not None:
        atomic_write_json(args.json, metrics)
        print(f"wrote {args.json}")
    return 0
