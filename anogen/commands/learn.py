"""``anogen learn``: stage 1, learn a defect kind's embedding from masked examples."""

from __future__ import annotations

import argparse
from pathlib import Path

from anogen.compute import add_threads_argument
from anogen.diffusion.config import LEARN_PRESETS, LearnConfig
from anogen.diffusion.crop import CROP_CHOICES
from anogen.outputs import add_overwrite_argument

MASK_SUFFIXES = ("", "_mask", "-mask", ".mask")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learn", help="learn a defect embedding from a few masked defect images (stage 1)",
        description="Learn one token embedding for a defect kind from 1..k images with pixel masks of the "
                    "defect (textual inversion with the masked loss). Writes EMB.safetensors in the layout "
                    "diffusers' load_textual_inversion reads, with metadata. While learning, a checkpoint "
                    "EMB.checkpoint.safetensors is kept every --checkpoint-every steps; after an interruption "
                    "run the same command with --resume. Under torchrun or accelerate launch the processes "
                    "split each batch and learn the one embedding together; rank 0 writes.")
    parser.add_argument("--model", required=True,
                        help="diffusers folder, Hugging Face id (from the local cache) or .safetensors/.ckpt file")
    parser.add_argument("--images", type=Path, nargs="+", required=True,
                        help="defect images, or one folder of them")
    parser.add_argument("--masks", type=Path, nargs="+", required=True,
                        help="their masks in the same order, or one folder (matched by name: NAME.png or "
                             "NAME_mask.png)")
    parser.add_argument("--out", type=Path, required=True, help="embedding file to write (.safetensors)")
    parser.add_argument("--token", default=None,
                        help="placeholder token (default: <OUT file name>, e.g. <scratch> for scratch.safetensors)")
    parser.add_argument("--init-word", default=LearnConfig.init_word,
                        help="word(s) the embedding starts from (default: %(default)s)")
    parser.add_argument("--subject", default=LearnConfig.subject,
                        help="what the images show, e.g. 'woven fabric': the captions name it (\"a photo of "
                             "woven fabric with a <token>\"), so the token learns the defect and not the surface; "
                             "`anogen generate` paints with such a sentence (default: none, the paper's captions)")
    paper = LEARN_PRESETS["paper"]
    parser.add_argument("--preset", choices=tuple(LEARN_PRESETS), default="default",
                        help=f"paper: the reference code's setup ({paper['steps']} steps, lr {paper['lr']} x batch "
                             f"{paper['batch_size']} = {paper['lr'] * paper['batch_size']:g}, no crop) for every "
                             "option left at its default; see docs/fidelity.md")
    parser.add_argument("--steps", type=int, default=LearnConfig.steps,
                        help="optimisation steps (default %(default)s, the paper's)")
    parser.add_argument("--batch-size", type=int, default=LearnConfig.batch_size,
                        help="support images per step (default %(default)s)")
    parser.add_argument("--lr", type=float, default=LearnConfig.lr, help="AdamW learning rate (default %(default)s)")
    parser.add_argument("--scale-lr", action="store_true",
                        help="multiply the learning rate by the batch size, as the reference code did")
    parser.add_argument("--seed", type=int, default=LearnConfig.seed)
    parser.add_argument("--resolution", type=int, default=LearnConfig.resolution,
                        help="side the defect is learned at, recorded in the embedding; `anogen generate` "
                             "paints at the same side (default: the model's)")
    parser.add_argument("--crop", choices=CROP_CHOICES, default=LearnConfig.crop_to_defect,
                        help="crop around each defect with context (auto: only when the defect is small)")
    parser.add_argument("--context-margin", type=float, default=LearnConfig.context_margin,
                        help="crop side = defect box side x (1 + 2 x margin) (default %(default)s)")
    parser.add_argument("--area-normalised", action="store_true",
                        help="average the loss over the mask area instead of the whole latent")
    parser.add_argument("--no-mask", action="store_true",
                        help="ablation (the paper's Table 2c): the loss covers the whole image, not only the defect")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    parser.add_argument("--checkpoint-every", type=int, default=LearnConfig.checkpoint_every, metavar="N",
                        help="keep a resumable checkpoint every N steps (default %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from EMB.checkpoint.safetensors")
    parser.add_argument("--device", default=LearnConfig.device, help="auto|cuda|mps|cpu (default %(default)s)")
    parser.add_argument("--precision", default=LearnConfig.precision, help="auto|fp32|fp16|bf16 (fp32 on the CPU)")
    add_threads_argument(parser)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="less GPU memory, slower steps")
    parser.add_argument("--attention-slicing", action="store_true", help="less memory at high resolution")
    parser.add_argument("--allow-download", action="store_true",
                        help="download a Hugging Face model that is not in the local cache")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="local diffusers folder with the configs for a single-file checkpoint")
    add_overwrite_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _is_anogen_embedding(path: Path) -> bool:
    """An embedding file anogen wrote (its safetensors metadata names our format)."""
    from anogen.diffusion.embedding_file import FORMAT_NAME

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT_NAME
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def _checkpoint_step(path: Path) -> int | None:
    """The step a stage-1 checkpoint was saved at, read from its metadata before the model
    loads; None when unreadable (learning then reports the problem)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return int((handle.metadata() or {})["step"])
    except Exception:  # noqa: BLE001 - any damage: learn_embedding names it when it loads the checkpoint
        return None


def checkpoint_path_for(out: Path) -> Path:
    """Where ``anogen learn --out OUT`` keeps its resumable checkpoint."""
    return out.with_name(f"{out.stem}.checkpoint.safetensors")


def pair_support(images: list[Path], masks: list[Path]) -> tuple[list[Path], list[Path]]:
    """Image and mask paths in matching order, from lists of files or two folders."""
    from anogen.data.imageio import list_images
    from anogen.errors import InputError

    if len(images) == 1 and images[0].is_dir():
        folder = images[0]
        images = list_images(folder)
        if not images:
            raise InputError(f"{folder}: no images found")
    if len(masks) == 1 and masks[0].is_dir():
        folder = masks[0]
        candidates = {p.stem: p for p in list_images(folder)}
        paired = []
        for image in images:
            match = next((candidates[image.stem + s] for s in MASK_SUFFIXES if image.stem + s in candidates), None)
            if match is None:
                raise InputError(f"{folder}: no mask for image {image.name} (expected {image.stem}.png or "
                                 f"{image.stem}_mask.png)")
            paired.append(match)
        masks = paired
    if len(images) != len(masks):
        raise InputError(f"{len(images)} images but {len(masks)} masks; give one mask per image, in the same order")
    return list(images), list(masks)


def run(args: argparse.Namespace) -> int:
    from anogen.compute import apply_command_policy, threads_per_process
    from anogen.diffusion.embedding_file import save_embedding
    from anogen.diffusion.learn import check_resume_steps, learn_embedding, validate_support
    from anogen.diffusion.models import load_model
    from anogen.errors import InputError
    from anogen.jobs import TqdmProgress
    from anogen.outputs import check_output_file
    from anogen.runplan.ranks import ProcessRanks

    # Under torchrun or accelerate launch the processes learn the embedding together; rank 0
    # alone checks and writes the output (anogen.diffusion.learn, anogen.parallel).
    ranks = ProcessRanks.from_environment()
    out: Path = args.out
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"{out}: the embedding file must end in .safetensors")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give a file name such as {out / 'scratch.safetensors'}")
    images, masks = pair_support(args.images, args.masks)
    if ranks.is_main:
        check_output_file(out, overwrite=args.overwrite, inputs=[*images, *masks], recognise=_is_anogen_embedding)
    token = args.token or f"<{out.stem}>"
    checkpoint = checkpoint_path_for(out)
    if args.resume and ranks.is_main and not checkpoint.is_file():
        raise InputError(f"nothing to resume: no checkpoint at {checkpoint}")

    config = LearnConfig(
        images=images, masks=masks, token=token, init_word=args.init_word, subject=args.subject, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, scale_lr=args.scale_lr, seed=args.seed,
        resolution=args.resolution, crop_to_defect=args.crop, context_margin=args.context_margin,
        area_normalised=args.area_normalised, use_mask=not args.no_mask, flip=not args.no_flip,
        checkpoint_every=args.checkpoint_every, checkpoint_path=checkpoint,
        resume_from=checkpoint if args.resume else None, device=args.device,
        precision=args.precision, gradient_checkpointing=args.gradient_checkpointing)
    config = config.with_preset(args.preset)
    validate_support(config)  # fail on a bad support set before the (slow) model load
    if args.resume and ranks.is_main:
        step = _checkpoint_step(checkpoint)
        if step is not None:
            check_resume_steps(checkpoint, step, config.steps)
    quiet = args.quiet or not ranks.is_main
    if args.threads is None:
        args.threads = threads_per_process(ranks.world)
    device = ranks.device(args.device)  # with several processes on one machine, each its own GPU
    apply_command_policy(args, device, quiet=quiet)
    model = load_model(args.model, device=device, precision=args.precision,
                       allow_download=args.allow_download, config_dir=args.config_dir,
                       attention_slicing=args.attention_slicing)
    try:
        with TqdmProgress("learn", disable=quiet) as progress:
            result = learn_embedding(model, config, progress, ranks=ranks)
    except KeyboardInterrupt:
        if ranks.is_main and checkpoint.is_file():
            print(f"anogen: interrupted; continue later with the same command and --resume "
                  f"(checkpoint: {checkpoint})")
        raise
    if not ranks.is_main:
        return 0
    save_embedding(out, result)
    checkpoint.unlink(missing_ok=True)  # the finished embedding replaces it
    processes = f" x {ranks.world} processes" if ranks.world > 1 else ""
    print(f"wrote {out}: token {token}, {result.steps_done} steps{processes}, final loss {result.final_loss:.4g}, "
          f"{model.family} model '{model.source}'")
    return 0
