"""``anogen dataset``: check a dataset folder, or write the procedural demo dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anogen.outputs import add_overwrite_argument

MAX_WARNINGS_SHOWN = 20  # errors are all printed; warnings are capped so the table stays visible


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="check a dataset or write the demo dataset",
                                   description="Check a dataset in MVTec AD layout, or write the demo dataset.")
    actions = parser.add_subparsers(dest="dataset_command", metavar="ACTION")
    parser.set_defaults(run=lambda args: _missing_action(parser))

    check = actions.add_parser(
        "check", help="open every image and mask of a dataset and report problems",
        description="Open every image and mask of an MVTec AD category (or of every category inside DIR), "
                    "print a table of images per split and kind, masks missing, size mismatches and "
                    "unreadable files, then one line per problem. Exits 2 when there is an error (with --strict, also "
                    "when there is a warning).")
    check.add_argument("dir", type=Path, metavar="DIR", help="an MVTec AD category, or a folder of categories")
    check.add_argument("--strict", action="store_true",
                       help="treat warnings as errors (exit 2), e.g. a defective test image whose ground-truth "
                            "mask is missing or empty: pixel metrics would count its defect as normal")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(run=run_check)

    demo = actions.add_parser(
        "demo", help="write the procedural demo dataset (MVTec AD layout)",
        description="Write the demo dataset: procedurally generated inspection images (a texture-like "
                    "surface and an object on a background) with pixel masks of several defect kinds, in "
                    "MVTec AD layout. Deterministic from --seed; nothing is downloaded.")
    demo.add_argument("out", type=Path, metavar="OUT", help="output folder (one sub-folder per category)")
    demo.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--categories", nargs="+", metavar="NAME", default=None,
                      help="categories to write (default: all of them)")
    add_overwrite_argument(demo)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=run_demo)


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_check(args: argparse.Namespace) -> int:
    from anogen.data.datasets import check_dataset
    from anogen.jobs import TqdmProgress

    with TqdmProgress("checking", disable=args.quiet) as progress:
        report = check_dataset(args.dir, progress=progress)
    print(report.table())
    for warning in report.warnings[:MAX_WARNINGS_SHOWN]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(report.warnings) > MAX_WARNINGS_SHOWN:
        print(f"warning: ... and {len(report.warnings) - MAX_WARNINGS_SHOWN} more warnings", file=sys.stderr)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    categories = len({row.category for row in report.rows})
    print(f"{_count(report.image_count, 'image')} in {_count(categories, 'category', 'categories')}: "
          f"{_count(len(report.errors), 'error')}, {_count(len(report.warnings), 'warning')}")
    if not report.ok:
        return 2
    if args.strict and report.warnings:
        print(f"anogen: error: {_count(len(report.warnings), 'warning')} with --strict (first: "
              f"{report.warnings[0]})", file=sys.stderr)
        return 2
    return 0


def _count(number: int, singular: str, plural: str = "") -> str:
    return f"{number} {singular if number == 1 else (plural or singular + 's')}"


def run_demo(args: argparse.Namespace) -> int:
    from anogen.data.demo import DEMO_CATEGORIES, write_demo_dataset
    from anogen.jobs import TqdmProgress
    from anogen.outputs import check_output_dir, mark_output_dir

    check_output_dir(args.out, "dataset demo", overwrite=args.overwrite)
    categories = tuple(args.categories) if args.categories else DEMO_CATEGORIES
    with TqdmProgress("demo dataset", disable=args.quiet) as progress:
        result = write_demo_dataset(args.out, size=args.size, seed=args.seed, categories=categories,
                                    progress=progress, cancel=None)
    mark_output_dir(args.out, "dataset demo")
    for folder in result.categories:
        print(folder)
    return 0
