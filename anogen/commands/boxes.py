"""``anogen boxes``: propose defect boxes on a folder of good images."""

from __future__ import annotations

import argparse
from pathlib import Path

from anogen.commands.placement_args import add_placement_arguments
from anogen.outputs import add_overwrite_argument

# A bound on the work of one run: each box costs a placement search and a mask file
# (~5 + 15 ms on a busy 2-core machine), so a million per image would run for hours.
MAX_PER_IMAGE = 1000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "boxes", help="propose defect boxes on good images",
        description="Propose boxes on good images: a size drawn from a range per defect kind, placed on the "
                    "allowed area: a painted --region, else near the support masks (--prior-from), else the "
                    "part found by GrabCut/Otsu (the whole image for a texture). Writes OUT/boxes.json (image "
                    "name -> [[x0,y0,x1,y1(,angle)], ...]), OUT/masks/<image>_<k>.png (box masks) and "
                    "OUT/allowed/<image>.png.")
    parser.add_argument("--images", type=Path, required=True, help="folder of good images")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (replaced when complete; a folder anogen did not write needs --overwrite)")
    parser.add_argument("--per-image", type=int, default=2, metavar="N",
                        help=f"boxes per image (default 2, at most {MAX_PER_IMAGE})")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=float, nargs=4, metavar=("W_LO", "W_HI", "H_LO", "H_HI"),
                      help="box width and height ranges as fractions of the image side (default 0.1 0.2 0.1 0.2)")
    size.add_argument("--from-masks", type=Path, metavar="DIR",
                      help="derive the size range from the defect masks in DIR (the support set)")
    size.add_argument("--kind", metavar="CATEGORY/KIND",
                      help="use the reference range of an MVTec AD defect kind, e.g. hazelnut/crack")
    add_placement_arguments(parser)
    parser.add_argument("--rule", choices=("iou", "inside"), default="inside",
                        help="accept a box when >= --min-inside of it is foreground (default, reference code) "
                             "or when its IoU with the foreground >= --min-iou (paper; only boxes about the "
                             "object's size pass)")
    parser.add_argument("--min-iou", type=float, default=0.5)
    parser.add_argument("--min-inside", type=float, default=0.75)
    parser.add_argument("--max-tries", type=int, default=1000, help="candidates per box before giving up")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    parser.add_argument("--seed", type=int, default=0)
    add_overwrite_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anogen.commands.placement_args import placement_from_args
    from anogen.data.boxes import (
        DEFAULT_SIZE_RANGE,
        BoxProposalConfig,
        BoxSizeRange,
        reference_size_range,
        reference_size_table,
        run_box_proposals,
        size_range_from_masks,
    )
    from anogen.data.imageio import list_images, read_mask
    from anogen.errors import InputError
    from anogen.jobs import TqdmProgress
    from anogen.outputs import check_output_dir, has_files, mark_output_dir

    check_output_dir(args.out, "boxes", overwrite=args.overwrite, recognise=has_files("boxes.json"),
                     inputs=[args.images, args.from_masks, args.region, args.prior_from])
    if args.size is not None:
        size_range = BoxSizeRange.from_sequence(args.size)
    elif args.from_masks is not None:
        mask_paths = list_images(args.from_masks)
        if not mask_paths:
            raise InputError(f"{args.from_masks}: no mask images found")
        size_range = size_range_from_masks(read_mask(p) for p in mask_paths)
    elif args.kind is not None:
        category, _, kind = args.kind.partition("/")
        found = reference_size_range(category, kind)
        if found is None:
            known = ", ".join(sorted(reference_size_table()))
            raise InputError(f"no reference box size for {args.kind!r}; known: {known}")
        size_range = found
    else:
        size_range = DEFAULT_SIZE_RANGE
    if not 1 <= args.per_image <= MAX_PER_IMAGE:
        raise InputError(f"--per-image must be between 1 and {MAX_PER_IMAGE} (each box is placed by trial and "
                         f"written as a mask file), got {args.per_image}")

    config = BoxProposalConfig(
        images=args.images, out=args.out, size_range=size_range, per_image=args.per_image,
        placement=placement_from_args(args, args.kind), seed=args.seed, limit=args.limit)
    with TqdmProgress("boxes", disable=args.quiet) as progress:
        result = run_box_proposals(config, progress)
    mark_output_dir(result.out, "boxes")
    count = sum(len(b) for b in result.boxes.values())
    print(f"{count} boxes on {len(result.boxes)} images (size range {size_range.to_list()}) -> "
          f"{result.out / 'boxes.json'}")
    return 0
