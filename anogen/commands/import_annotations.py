"""``anogen import``: support masks from labelme, COCO or CVAT annotations into a project."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import", help="import support masks annotated in labelme, COCO or CVAT",
        description="Add annotated defect photos to a project as support images with masks. labelme: a .json "
                    "file or a folder of them (polygons, rectangles, circles, masks); coco: an instances .json "
                    "(polygons and RLE); cvat: a 'Segmentation mask 1.1' export, folder or .zip. Every label "
                    "becomes --kind, or the kind --map gives it. Any problem (a polygon off its image, an "
                    "unknown label, a missing image) is reported for every file and entry, and then nothing "
                    "is imported.")
    parser.add_argument("source", type=Path, metavar="SRC", help="annotation file or folder")
    parser.add_argument("--format", required=True, choices=("labelme", "coco", "cvat"), dest="fmt")
    parser.add_argument("--into", type=Path, required=True, metavar="PROJECT", help="project folder")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--kind", metavar="NAME", help="defect kind of every label (created when missing)")
    target.add_argument("--map", metavar="LABEL=KIND,...",
                        help="defect kind per label, e.g. scratch=scratch,hole=hole; KIND '-' leaves a label "
                             "out; a label not named is an error")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="folder of the annotated images when they are not beside the annotations "
                             "(COCO file_name, CVAT exports without images)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anogen.data.annotations.importer import LabelMap, import_annotations
    from anogen.data.workspace import Workspace
    from anogen.errors import InputError

    if args.images is not None and not args.images.is_dir():
        raise InputError(f"{args.images}: --images must be a folder")
    labels = LabelMap.parse(args.map) if args.map is not None else LabelMap(kind=args.kind.strip())
    with Workspace.open(args.into, strict=False, read_only=False) as workspace:
        result = import_annotations(workspace, args.fmt, args.source, labels, images=args.images)
    per_kind = ", ".join(f"{kind}: {count}" for kind, count in result.counts.items())
    created = f"; new kinds: {', '.join(result.created_kinds)}" if result.created_kinds else ""
    print(f"imported {result.total} support image(s) with masks into {args.into} ({per_kind}{created})")
    return 0
