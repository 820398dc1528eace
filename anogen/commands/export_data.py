"""``anogen export-data``: generated sets as anomalib, COCO, YOLO or MVTec AD datasets."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-data", help="write generated sets as an anomalib, COCO, YOLO or MVTec AD dataset",
        description="Write one or more generated sets (rejected samples left out) in another tool's layout. "
                    "anomalib: good/, abnormal/, masks/ for anomalib's Folder datamodule; coco: images/ and "
                    "annotations.json (boxes, box masks as segmentation); yolo: images/, labels/, data.yaml; "
                    "mvtec: train/good, test/<kind>, ground_truth/<kind>. A SET that holds no manifest.jsonl "
                    "but folders that do (a category's sets) stands for all of them.")
    parser.add_argument("sets", type=Path, nargs="+", metavar="SET", help="generated set folder(s)")
    parser.add_argument("--format", required=True, choices=("anomalib", "coco", "yolo", "mvtec"), dest="fmt")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (replaced when complete; a folder anogen did not write needs --overwrite)")
    parser.add_argument("--normals", type=Path, metavar="DIR",
                        help="good images for the anomalib and mvtec layouts (default: the images the samples "
                             "were generated from)")
    from anogen.outputs import add_overwrite_argument

    add_overwrite_argument(parser)
    parser.set_defaults(run=run)


def expand_sets(paths: list[Path]) -> list[Path]:
    """Each path, or the generated sets directly inside it when it is not a set itself."""
    from anogen.data.generated import MANIFEST_NAME
    from anogen.errors import InputError

    sets: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise InputError(f"{path}: generated set folder not found")
        if (path / MANIFEST_NAME).is_file():
            sets.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
        if not inside:
            raise InputError(f"{path}: not a generated set (no {MANIFEST_NAME}) and holds none")
        sets += inside
    return sets


def run(args: argparse.Namespace) -> int:
    from anogen.data.exports import export_sets
    from anogen.outputs import check_output_dir, mark_output_dir

    sets = expand_sets(args.sets)
    check_output_dir(args.out, "export-data", overwrite=args.overwrite, inputs=[*sets, args.normals])
    counts = export_sets(args.fmt, sets, args.out, normals=args.normals)
    mark_output_dir(args.out, "export-data", format=args.fmt)
    summary = ", ".join(f"{value} {key}" for key, value in counts.items())
    print(f"exported {len(sets)} set(s) as {args.fmt} ({summary}) -> {args.out}")
    return 0
