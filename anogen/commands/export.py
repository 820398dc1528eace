"""``anogen export``: a trained detector as an ONNX graph or an OpenVINO IR (image -> anomaly map, score)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anogen.compute import add_threads_argument
from anogen.detection.options import CHECKPOINT_CHOICES, EXPORT_FORMATS
from anogen.outputs import add_overwrite_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a trained detector (ONNX or OpenVINO)",
        description="Export a trained detector to ONNX (one file) or OpenVINO IR (a folder: model.xml, model.bin; "
                    "converted from the ONNX graph, fp32 weights): input 'image' float32 (batch, 3, S, S) RGB in "
                    "[0, 1] (S = the detector's input size), outputs 'anomaly_map' (batch, 1, S, S) and 'score' "
                    "(batch,). The detector kind, S and the score calibration travel in the model's metadata. "
                    "The export is checked against torch (onnxruntime, or OpenVINO at f32) before it is written.")
    parser.add_argument("--detector-dir", type=Path, required=True, metavar="DIR", help="the --out folder of train")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_CHOICES, default="best")
    parser.add_argument("--out", type=Path, metavar="PATH",
                        help="output file for onnx (default DIR/model.onnx), output folder for openvino "
                             "(default DIR/openvino)")
    add_overwrite_argument(parser)
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="export the checkpoint of a training run that did not finish (refused otherwise: "
                             "resume it with 'anogen train --resume')")
    add_threads_argument(parser)
    parser.set_defaults(run=run)


def _is_anogen_onnx(path: Path) -> bool:
    """An ONNX file this command wrote (it records producer=anogen in its metadata)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return any(p.key == "producer" and p.value == "anogen" for p in model.metadata_props)


def run(args: argparse.Namespace) -> int:
    from anogen.compute import apply_command_policy
    from anogen.detection.checkpoint import require_complete_run
    from anogen.detection.export import export_onnx, export_openvino
    from anogen.outputs import check_not_input, check_output_dir, check_output_file

    default = "model.onnx" if args.format == "onnx" else "openvino"
    out = args.out if args.out is not None else args.detector_dir / default
    if args.detector_dir.is_dir():  # a missing folder gets its own message from the loader
        # An output folder may sit inside the run, but never be or hold one of its checkpoints.
        check_not_input(out, [args.detector_dir / which for which in CHECKPOINT_CHOICES])
        if args.format == "onnx":
            check_output_file(out, overwrite=args.overwrite, recognise=_is_anogen_onnx)
        else:
            check_output_dir(out, "export", overwrite=args.overwrite)
    warning = require_complete_run(args.detector_dir, args.checkpoint, args.allow_incomplete)
    if warning:
        print(f"anogen: warning: {warning}", file=sys.stderr)
    apply_command_policy(args, "cpu")  # the export traces and checks the detector on the CPU
    export, runtime = (export_onnx, "onnxruntime") if args.format == "onnx" else (export_openvino, "OpenVINO")
    result = export(args.detector_dir, out, which=args.checkpoint)
    print(f"wrote {result.path} (input 1x3x{result.image_size}x{result.image_size}, dynamic batch; "
          f"{runtime} matches torch within {max(result.max_abs_diff_map, result.max_abs_diff_score):.1e})")
    return 0
