"""``anogen predict``: anomaly heat maps and scores for images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anogen.compute import add_threads_argument
from anogen.detection.options import CHECKPOINT_CHOICES, RUNTIME_TOLERANCE, RUNTIMES
from anogen.outputs import add_overwrite_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="heat maps and anomaly scores for images",
        description="Run a trained detector on images (files or folders). Writes OUT/<name>_heatmap.png "
                    "(the anomaly map over the image) and OUT/scores.csv (file, score, normalised score, "
                    "anomalous at the validation threshold). --runtime onnx|openvino runs an exported model "
                    "(--model, from 'anogen export') or exports the training run's checkpoint on the fly; "
                    f"all runtimes give the same maps and raw scores within {RUNTIME_TOLERANCE:g}.")
    parser.add_argument("--detector-dir", type=Path, metavar="DIR", help="the --out folder of train")
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="an exported model instead of --detector-dir: a .onnx file or an OpenVINO folder "
                             "(from 'anogen export'; its metadata carries the score calibration)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="torch (default with --detector-dir), onnx (onnxruntime) or openvino; with --model "
                             "the default follows the model's format. Exported models run on the CPU")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files or folders of images")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (replaced when complete; a folder anogen did not write needs --overwrite)")
    add_overwrite_argument(parser)
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="use the checkpoint of a training run that did not finish (refused otherwise: "
                             "resume it with 'anogen train --resume')")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_CHOICES, default="best")
    parser.add_argument("--device", default="auto")
    add_threads_argument(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.5, help="heat-map opacity (default 0.5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _expand(paths: list[Path]) -> list[Path]:
    from anogen.data.imageio import list_images
    from anogen.errors import InputError

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise InputError(f"{path}: no images in this folder")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise InputError(f"{path}: file not found")
    return files


def run(args: argparse.Namespace) -> int:
    import csv
    import io

    from anogen.atomic import atomic_write_text, staged_directory
    from anogen.compute import apply_command_policy
    from anogen.data.imageio import read_image, write_image
    from anogen.detection.checkpoint import require_complete_run
    from anogen.detection.infer import heatmap_overlay, predict
    from anogen.detection.runtimes import inference_model, runtime_of
    from anogen.errors import InputError
    from anogen.jobs import Progress, TqdmProgress
    from anogen.outputs import check_output_dir, mark_output_dir

    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if (args.detector_dir is None) == (args.model is None):
        raise InputError("give a training run (--detector-dir) or an exported model (--model), one of the two")
    runtime = args.runtime or (runtime_of(args.model) if args.model is not None else "torch")
    check_output_dir(args.out, "predict", overwrite=args.overwrite,
                     inputs=[*args.images, args.detector_dir, args.model])
    files = _expand(args.images)
    if args.detector_dir is not None:
        warning = require_complete_run(args.detector_dir, args.checkpoint, args.allow_incomplete)
        if warning:
            print(f"anogen: warning: {warning}", file=sys.stderr)
    policy = apply_command_policy(args, args.device if runtime == "torch" else "cpu")
    detector = inference_model(runtime, detector_dir=args.detector_dir, model=args.model, which=args.checkpoint,
                               device=args.device, threads=policy.threads)
    names: dict[str, int] = {}
    rows = []
    # Built in a staging folder and swapped in at the end: a failure or a kill never
    # leaves old and new heat maps mixed in one folder.
    with detector as loaded, TqdmProgress("predict", disable=args.quiet) as progress, \
            staged_directory(args.out) as staging:
        for start in range(0, len(files), args.batch_size):
            chunk = files[start:start + args.batch_size]
            images = [read_image(p) for p in chunk]
            for path, image, prediction in zip(chunk, images, predict(loaded, images, batch_size=args.batch_size)):
                stem = path.stem
                names[stem] = names.get(stem, 0) + 1
                if names[stem] > 1:  # two inputs with one name (from different folders)
                    stem = f"{stem}_{names[stem]}"
                overlay = f"{stem}_heatmap.png"
                write_image(staging / overlay, heatmap_overlay(image, prediction.anomaly_map, alpha=args.alpha))
                rows.append((str(path), overlay, prediction.score, prediction.normalised_score,
                             prediction.is_anomalous))
            progress(Progress(min(start + args.batch_size, len(files)), len(files), "scoring"))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "heatmap", "score", "normalised_score", "is_anomalous"])
        for name, overlay, score, norm, flag in rows:
            writer.writerow([name, overlay, f"{score:.6g}", f"{norm:.4f}", int(flag)])
        atomic_write_text(staging / "scores.csv", buffer.getvalue())
        mark_output_dir(staging, "predict", runtime=runtime)
        staging.chmod(0o755)  # mkdtemp makes it private; heat maps are ordinary data
    flagged = sum(1 for row in rows if row[4])
    print(f"{len(rows)} image(s) scored ({runtime}), {flagged} anomalous at threshold "
          f"{loaded.calibration.threshold:.4g}; wrote {args.out}/scores.csv and heat maps")
    return 0
