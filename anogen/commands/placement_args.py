"""Where boxes go: the options ``anogen boxes`` and ``anogen generate`` share.

Not a command itself; both commands add these options and turn them into a
:class:`~anogen.data.boxes.BoxPlacement` the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anogen.data.boxes import BoxPlacement

ROTATE_CHOICES = ("auto", "on", "off")


def add_placement_arguments(parser: argparse.ArgumentParser) -> None:
    """``--foreground --category --region --region-frame --prior-from --rotate``."""
    parser.add_argument("--foreground", choices=("auto", "grabcut", "otsu", "all"), default="auto",
                        help="where boxes may go when no --region is given: auto (default: the whole image for a "
                             "texture, known by its MVTec AD category or by looking alike everywhere; the part "
                             "found by GrabCut otherwise), grabcut (paper, falls back to otsu), otsu, or all")
    parser.add_argument("--category", default=None, metavar="NAME",
                        help="MVTec AD category of the images (default: from --kind or the folder layout); "
                             "decides texture vs object for --foreground auto")
    parser.add_argument("--region", type=Path, default=None, metavar="MASK.png",
                        help="allowed region of this defect kind, painted once (white = the defect may go here)")
    parser.add_argument("--region-frame", choices=("image", "foreground"), default="image",
                        help="image: the region mask covers the whole image (aligned parts; default); "
                             "foreground: it covers the part's bounding box on each image (unaligned parts)")
    parser.add_argument("--prior-from", type=Path, default=None, metavar="DIR",
                        help="support masks of this kind: without --region, boxes go near where the real defects "
                             "were (their union, grown by half a box diagonal)")
    parser.add_argument("--rotate", choices=ROTATE_CHOICES, default="auto",
                        help="rotated boxes: auto (default: when the --kind is flagged so in the reference table), "
                             "on, off")


def placement_from_args(args: argparse.Namespace, kind: str | None = None) -> BoxPlacement:
    """The placement the options describe; ``kind`` is ``CATEGORY/KIND`` of ``--kind``."""
    from anogen.data.boxes import BoxPlacement, reference_rotates
    from anogen.data.imageio import list_images, read_mask
    from anogen.errors import InputError

    category_of_kind, _, kind_name = (kind or "").partition("/")
    if args.rotate == "auto":
        rotate = bool(kind) and reference_rotates(category_of_kind, kind_name)
    else:
        rotate = args.rotate == "on"
    prior = None
    if args.prior_from is not None:
        paths = list_images(args.prior_from)
        if not paths:
            raise InputError(f"{args.prior_from}: no mask images found")
        prior = [read_mask(path) for path in paths]
    placement = BoxPlacement(
        foreground=args.foreground, category=args.category or category_of_kind or None,
        region=None if args.region is None else read_mask(args.region), region_frame=args.region_frame,
        prior_masks=prior, rotate=rotate, rule=getattr(args, "rule", "inside"),
        min_iou=getattr(args, "min_iou", 0.5), min_inside=getattr(args, "min_inside", 0.75),
        max_tries=getattr(args, "max_tries", 1000))
    placement.validate()
    return placement
