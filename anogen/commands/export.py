"""``anogen export``: a trained detector as an ONNX graph (image -> anomaly map, score)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a trained detector (ONNX)",
        description="Export a trained detector to ONNX: input 'image' float32 (batch, 3, S, S) RGB in [0, 1] "
                    "(S = the detector's input size), outputs 'anomaly_map' (batch, 1, S, S) and 'score' "
                    "(batch,). The file is checked with onnxruntime against torch before it is written.")
    parser.add_argument("--detector-dir", type=Path, required=True, metavar="DIR", help="the --out folder of train")
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--out", type=Path, metavar="FILE", help="output file (default DIR/model.onnx)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anogen.detection.export import export_onnx

    result = export_onnx(args.detector_dir, args.out, which=args.checkpoint)
    print(f"wrote {result.path} (input 1x3x{result.image_size}x{result.image_size}, dynamic batch; "
          f"onnxruntime matches torch within {max(result.max_abs_diff_map, result.max_abs_diff_score):.1e})")
    return 0
