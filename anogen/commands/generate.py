"""``anogen generate``: paint a learned defect into boxes on good images (stage 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from anogen.commands.placement_args import add_placement_arguments
from anogen.compute import add_threads_argument
from anogen.diffusion.config import GENERATE_PRESETS, PER_IMAGE, SAMPLES_PER_BOX, GenerateConfig
from anogen.diffusion.crop import CROP_CHOICES
from anogen.outputs import add_overwrite_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate defect images from a learned embedding (stage 2)",
        description="Generate defects inside boxes on good images with a learned embedding and write a generated "
                    "set: OUT/images/, OUT/masks/ (box masks) and OUT/manifest.jsonl. Boxes are proposed on each "
                    "image (ceil(per-image / samples-per-box) boxes) unless --boxes gives them.")
    parser.add_argument("--model", required=True, help="diffusers folder, Hugging Face id or .safetensors file")
    parser.add_argument("--embedding", type=Path, required=True, help="learned embedding (.safetensors)")
    parser.add_argument("--normals", type=Path, required=True, help="folder of good images")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (replaced when complete; a folder anogen did not write needs --overwrite)")
    parser.add_argument("--preset", choices=tuple(GENERATE_PRESETS), default="default",
                        help="paper: the reference code's setup (whole image, no context crop) for every option "
                             "left at its default; see docs/fidelity.md")
    parser.add_argument("--steps", type=int, default=GenerateConfig.steps, help="DDIM steps (default %(default)s)")
    parser.add_argument("--guidance", type=float, default=GenerateConfig.guidance,
                        help="classifier-free guidance scale (default %(default)s)")
    parser.add_argument("--eta", type=float, default=GenerateConfig.eta,
                        help="DDIM eta (default %(default)s: deterministic)")
    parser.add_argument("--restore-detail", action="store_true",
                        help="put back the good image's fine texture that the VAE loses, wherever the model kept "
                             "the surface (for small models and shrunk crops)")
    parser.add_argument("--strength", type=float, default=GenerateConfig.strength,
                        help="start from the good image noised to this share of the schedule instead of pure "
                             "noise (default %(default)s: pure noise, the paper); lower keeps more of the surface "
                             "in the box")
    parser.add_argument("--prompt", default=GenerateConfig.prompt,
                        help="prompt; '{}' stands for the learned token (default: the token, or for a token learned "
                             "with --subject S, 'a photo of S with a {}')")
    parser.add_argument("--negative-prompt", default=GenerateConfig.negative_prompt,
                        help="unconditional prompt (default empty)")
    parser.add_argument("--per-image", type=int, default=PER_IMAGE, metavar="N",
                        help="samples per good image (default %(default)s)")
    parser.add_argument("--samples-per-box", type=int, default=SAMPLES_PER_BOX, metavar="N",
                        help=f"samples per proposed box (default %(default)s: {PER_IMAGE} per image = "
                             f"{PER_IMAGE // SAMPLES_PER_BOX} boxes x {SAMPLES_PER_BOX})")
    parser.add_argument("--boxes", type=Path, default=None, help="boxes.json from `anogen boxes` (image name -> boxes)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=float, nargs=4, metavar=("W_LO", "W_HI", "H_LO", "H_HI"),
                      help="size range of proposed boxes, fractions of the image side (default 0.1 0.2 0.1 0.2)")
    size.add_argument("--kind", metavar="CATEGORY/KIND", help="reference box size of an MVTec AD kind")
    add_placement_arguments(parser)
    parser.add_argument("--rule", choices=("iou", "inside"), default="inside")
    parser.add_argument("--shapes", type=Path, nargs="+", default=None, metavar="MASK",
                        help="masks of real defects (files, or one folder), e.g. the masks stage 1 learned from: "
                             "each sample paints the outline of one of them, fitted to its box, instead of the "
                             "whole box; the sample's mask is then that outline")
    parser.add_argument("--feather", type=int, default=GenerateConfig.feather, metavar="PX",
                        help="soft edge inside the box, in pixels (default %(default)s)")
    parser.add_argument("--crop", choices=CROP_CHOICES, default=GenerateConfig.crop,
                        help="generate on a crop around the box resized to the model's resolution (auto: when the "
                             "box is small in its image, as stage 1 crops its shots; off: the whole image, as the "
                             "reference code did)")
    parser.add_argument("--context-margin", type=float, default=GenerateConfig.context_margin,
                        help="context around the box in the crop, in box sides (default %(default)s)")
    parser.add_argument("--resolution", type=int, default=GenerateConfig.resolution,
                        help="side the crop is painted at (default: the side the embedding was learned at, "
                             "`anogen learn --resolution`, else the model's)")
    parser.add_argument("--batch-size", type=int, default=GenerateConfig.batch_size,
                        help="images per UNet call (default %(default)s)")
    parser.add_argument("--defect-kind", default=None,
                        help="name recorded in the manifest (default: from the embedding)")
    parser.add_argument("--seed", type=int, default=GenerateConfig.seed)
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N good images")
    parser.add_argument("--device", default="auto", help="auto|cuda|mps|cpu (default auto)")
    parser.add_argument("--precision", default="auto", help="auto|fp32|fp16|bf16 (default auto: fp32 on CPU)")
    add_threads_argument(parser)
    parser.add_argument("--allow-download", action="store_true", help="download a Hugging Face model if not cached")
    add_overwrite_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anogen.commands.placement_args import placement_from_args
    from anogen.compute import apply_command_policy
    from anogen.data.boxes import BoxSizeRange, reference_size_range
    from anogen.data.imageio import read_mask
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set
    from anogen.errors import InputError
    from anogen.jobs import TqdmProgress
    from anogen.outputs import check_output_dir, has_files, mark_output_dir

    model_path = Path(args.model)
    check_output_dir(args.out, "generate", overwrite=args.overwrite,
                     recognise=has_files("manifest.jsonl", "images"),
                     inputs=[args.normals, args.embedding, args.boxes, args.region, args.prior_from,
                             *(args.shapes or []), model_path if model_path.exists() else None])
    size_range = None
    if args.size is not None:
        size_range = BoxSizeRange.from_sequence(args.size)
    elif args.kind is not None:
        category, _, kind = args.kind.partition("/")
        size_range = reference_size_range(category, kind)
        if size_range is None:
            raise InputError(f"no reference box size for {args.kind!r} (see `anogen boxes --help`)")
    shapes = None if args.shapes is None else [read_mask(path) for path in _mask_files(args.shapes)]
    config = GenerateConfig(steps=args.steps, guidance=args.guidance, eta=args.eta, strength=args.strength,
                            restore_detail=args.restore_detail, prompt=args.prompt,
                            negative_prompt=args.negative_prompt, feather=args.feather,
                            crop=args.crop, context_margin=args.context_margin, resolution=args.resolution,
                            batch_size=args.batch_size, seed=args.seed).with_preset(args.preset)
    apply_command_policy(args, args.device)
    with TqdmProgress("generate", disable=args.quiet) as progress:
        result = generate_set(GenerateSetConfig(
            model=args.model, embedding=args.embedding, normals=args.normals, out=args.out, per_image=args.per_image,
            samples_per_box=args.samples_per_box, boxes=args.boxes, size_range=size_range,
            placement=placement_from_args(args, args.kind), generation=config, defect_kind=args.defect_kind,
            device=args.device, precision=args.precision, allow_download=args.allow_download, limit=args.limit,
            shapes=shapes),
            progress)
    mark_output_dir(result.out, "generate")
    print(f"{len(result.samples)} images with token {result.token} -> {result.out}")
    return 0


def _mask_files(paths: list[Path]) -> list[Path]:
    """``--shapes``: the given mask files, or the images of one given folder."""
    from anogen.data.imageio import list_images
    from anogen.errors import InputError

    files = list_images(paths[0]) if len(paths) == 1 and paths[0].is_dir() else paths
    if not files:
        raise InputError(f"{paths[0]}: no mask images for --shapes")
    return files
