"""Stage 1: learn one token embedding for a defect kind from a few masked examples.

Textual inversion with the paper's masked loss (eq. 6). The model stays frozen; a new
placeholder token (``<scratch>``) is added, initialised from the embedding of
``init_word`` ("defect"; a phrase of several tokens is averaged), and only that one
vector is optimised with AdamW so that the UNet, conditioned on captions containing
the token, predicts the noise added to the support latents *inside the defect mask*.

How the pieces fit:

1. :func:`prepare_support` reads each image and mask, optionally crops around the
   defect with a context margin (small defects on large images; the same window rule
   as stage 2, :mod:`anogen.diffusion.crop`), and resizes to the model's resolution.
2. The support latents are encoded once, for both horizontal flips, and the masks
   are moved to the latent grid the way the reference code does (bicubic resize to
   the training resolution with the image, bilinear resize without antialiasing to the
   latent grid, then every non-zero cell becomes 1: :func:`latent_loss_masks`).
3. Each step draws a batch of (shot, flip, caption, timestep, noise) from generators
   seeded by ``(seed, step)``, so a resumed run continues exactly as an uninterrupted
   one would.
4. The placeholder's row is injected with a forward hook on the embedding table; the
   table itself is never written during training, so every other row stays
   bit-identical. The learned vector is written into the model's table at the end.

Given ``ranks`` of several processes (``torchrun``, ``accelerate launch``), the processes
learn the one vector together (the rules of :mod:`anogen.parallel`): every process draws
each step's whole seeded batch and keeps its contiguous share, its loss is its share's
part of the whole batch's loss (:func:`masked_noise_loss` with ``whole_batch_masks``: the
shares' losses add up to the one-process loss, for the mean over all latent elements and
for the area-normalised loss alike), and the placeholder vector's gradient is summed
over the processes before the optimizer step, so every process applies the whole
batch's gradient to the same vector. Only the vector is trained, so a plain all-reduce
of its gradient does what DistributedDataParallel would. Rank 0 alone reads a resumed
checkpoint (and hands it to the others) and writes checkpoints; a cancel or a NaN on any
process stops all at the same step. Without ``ranks`` (or with one process) nothing of
torch.distributed is touched.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anogen.atomic import atomic_write_bytes
from anogen.data.box import Box
from anogen.data.imageio import read_image_and_mask
from anogen.diffusion.captions import sample_caption
from anogen.diffusion.config import LearnConfig
from anogen.diffusion.crop import context_window
from anogen.diffusion.embedding_file import LearnedEmbedding, add_placeholder_token, file_sha256
from anogen.errors import InputError, TrainingDiverged
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress
from anogen.memory import check_learn_memory

if TYPE_CHECKING:
    from anogen.parallel import ProcessGroup
    from anogen.runplan.ranks import ProcessRanks

log = logging.getLogger(__name__)


@dataclass
class SupportShot:
    """One support example after cropping and resizing to the training resolution."""

    image_path: Path
    mask_path: Path
    image: np.ndarray  # (R, R, 3) uint8
    mask: np.ndarray  # (R, R) float32 in [0, 1] (bicubic resize of the 0/255 mask, / 255)
    crop: tuple[int, int, int, int]  # (left, top, right, bottom) in the original image


@dataclass
class LearnResult:
    """What stage 1 produced. Save it with :func:`anogen.diffusion.embedding_file.save_embedding`."""

    token: str
    vector: torch.Tensor  # float32 (token_width,), CPU
    loss_curve: list[float]
    final_loss: float
    steps_done: int
    metadata: dict[str, Any] = field(default_factory=dict)
    family: str | None = None
    model_source: str | None = None
    init_word: str | None = None

    def to_embedding(self) -> LearnedEmbedding:
        return LearnedEmbedding(token=self.token, vector=self.vector, family=self.family,
                                model_source=self.model_source, init_word=self.init_word,
                                loss_curve=list(self.loss_curve),
                                metadata={k: v if isinstance(v, str) else json.dumps(v)
                                          for k, v in self.metadata.items()})


# ---------------------------------------------------------------------------------
# Support set
# ---------------------------------------------------------------------------------
def _read_shot(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    image, mask = read_image_and_mask(image_path, mask_path)
    if not mask.any():
        raise InputError(f"{mask_path}: the mask has no defect pixels; paint the defect before learning")
    return image, mask


def validate_support(config: LearnConfig) -> None:
    """Check the options and every image/mask pair before any model is loaded."""
    config.validate()
    for image_path, mask_path in zip(config.images, config.masks):
        _read_shot(Path(image_path), Path(mask_path))


def prepare_support(config: LearnConfig, resolution: int) -> list[SupportShot]:
    """Read, check, crop and resize every support image and mask."""
    config.validate()
    shots = []
    for image_path, mask_path in zip(config.images, config.masks):
        image_path, mask_path = Path(image_path), Path(mask_path)
        image, mask = _read_shot(image_path, mask_path)
        window = context_window(Box.from_mask(mask), *mask.shape, mode=config.crop_to_defect,
                                context_margin=config.context_margin, auto_below=config.auto_crop_below)
        crop = (window.x0, window.y0, window.x1, window.y1)
        left, top, right, bottom = crop
        image_crop = Image.fromarray(image[top:bottom, left:right])
        # As the reference's data loader: the 0/255 mask resized bicubic like the image.
        mask_crop = Image.fromarray(mask[top:bottom, left:right].astype(np.uint8) * 255)
        size = (resolution, resolution)
        resized_image = np.asarray(image_crop.resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)
        resized_mask = np.asarray(mask_crop.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        if not (resized_mask > 0).any():
            raise InputError(f"{mask_path}: the defect vanishes at {resolution} px; use --crop on")
        shots.append(SupportShot(image_path, mask_path, resized_image, resized_mask, crop))
    return shots


@dataclass
class EncodedSupport:
    """Support latents and latent-grid masks, both flips, encoded once."""

    latents: torch.Tensor  # (N, C, h, w) scaled latents; flipped copies follow the originals
    loss_masks: torch.Tensor  # (N, 1, h, w) binary, float32
    inpaint_conditioning: torch.Tensor | None  # (N, 5, h, w): box mask + masked-image latents
    shots: int  # originals; index i + shots is the flip of i when flipped copies exist


def _bounding_box_mask(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask > 0)
    box = np.zeros_like(mask, dtype=np.float32)
    box[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1] = 1.0
    return box


def latent_loss_masks(pixel_masks: torch.Tensor, grid: tuple[int, int] | torch.Size) -> torch.Tensor:
    """The support masks on the latent grid, binary float ``(N, 1, h, w)``, as the
    reference code makes them: bilinear resize without antialiasing (each cell looks at
    the 2 x 2 pixels around its centre), then every non-zero cell becomes 1.

    ``pixel_masks`` ``(N, 1, H, W)`` in [0, 1] are the bicubic-resized masks of
    :func:`prepare_support`. A mask that no cell centre touches (a defect thinner than
    the sampling step, which the reference would skip) gets the cells it overlaps
    instead, so no shot trains without a loss.
    """
    sampled = F.interpolate(pixel_masks.float(), size=tuple(grid), mode="bilinear", align_corners=False) > 0
    empty = ~sampled.flatten(1).any(dim=1)
    if empty.any():
        covered = F.adaptive_max_pool2d((pixel_masks[empty] > 0).float(), tuple(grid)) > 0
        sampled[empty] = covered
        log.info("%d support mask(s) fall between the latent cell centres; using the cells they overlap",
                 int(empty.sum()))
    return sampled.float()


@torch.no_grad()
def encode_support(model, shots: list[SupportShot], flip: bool, batch_size: int = 4) -> EncodedSupport:
    """Encode every shot (and its mirror image when ``flip``) with the VAE once."""
    images = np.stack([shot.image for shot in shots])
    masks = np.stack([shot.mask for shot in shots])
    if flip:
        images = np.concatenate([images, images[:, :, ::-1]])
        masks = np.concatenate([masks, masks[:, :, ::-1]])
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    pixel_masks = torch.from_numpy(np.ascontiguousarray(masks))[:, None]

    def encode(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model.encode_images(chunk).float() for chunk in x.split(batch_size)])

    latents = encode(pixels)
    grid = latents.shape[-2:]
    loss_masks = latent_loss_masks(pixel_masks, grid)

    conditioning = None
    if model.is_inpainting:
        # A 9-channel UNet sees the region to fill and the image outside it. Stage 2
        # fills a box, so learn with the defect's bounding box as the region.
        boxes = torch.from_numpy(np.stack([_bounding_box_mask(m) for m in masks]))[:, None]
        masked_latents = encode(pixels * (boxes < 0.5))
        conditioning = torch.cat([F.interpolate(boxes, size=grid), masked_latents], dim=1)
    return EncodedSupport(latents.cpu(), loss_masks, None if conditioning is None else conditioning.cpu(),
                          len(shots))


# ---------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------
def masked_noise_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      area_normalised: bool = False, *, whole_batch_masks: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6: squared error of the noise prediction, counted only inside the mask.

    The mean runs over every latent element (as the reference code does), so a small
    defect gives a small loss; ``area_normalised`` divides by the masked elements
    instead.

    ``whole_batch_masks``: when ``prediction`` is one process's share of a batch, the loss
    masks of the whole batch. The squared error of the share is then divided by what the
    whole batch's loss divides by (all its latent elements, or its masked ones), so the
    shares' losses add up to the whole batch's loss.
    """
    squared = (prediction.float() - target.float()) ** 2 * mask
    if whole_batch_masks is not None:
        whole = whole_batch_masks.expand(whole_batch_masks.shape[0], *squared.shape[1:])
        return squared.sum() / (whole.sum().clamp_min(1.0) if area_normalised else whole.numel())
    if area_normalised:
        return squared.sum() / (mask.expand_as(squared).sum().clamp_min(1.0))
    return squared.mean()


class _PlaceholderHook:
    """Replaces the placeholder's row in the embedding lookup with a trainable vector."""

    def __init__(self, table: torch.nn.Embedding, token_id: int, vector: torch.Tensor) -> None:
        """``vector``: a trainable ``nn.Parameter`` when learning, a plain tensor when probing."""
        self.token_id = token_id
        self.vector = vector
        self.handle = table.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        hit = (inputs[0] == self.token_id).unsqueeze(-1)
        return torch.where(hit, self.vector.to(output.dtype), output)

    def remove(self) -> None:
        self.handle.remove()


def _step_generators(seed: int, step: int, device: torch.device) -> tuple[torch.Generator, random.Random]:
    """Randomness of one step depends only on (seed, step): resumable, reproducible."""
    mixed = (seed * 1_000_003 + step * 7919) % (2 ** 63)
    generator = torch.Generator(device="cpu").manual_seed(mixed)
    return generator, random.Random(mixed)


@dataclass
class _Batch:
    latents: torch.Tensor
    loss_masks: torch.Tensor
    conditioning: torch.Tensor | None
    prompts: list[str]
    timesteps: torch.Tensor
    noise: torch.Tensor

    def share(self, samples: slice) -> _Batch:
        """The batch's ``samples`` (one process's share, :func:`anogen.parallel.batch_share`)."""
        return _Batch(self.latents[samples], self.loss_masks[samples],
                      None if self.conditioning is None else self.conditioning[samples], self.prompts[samples],
                      self.timesteps[samples], self.noise[samples])


def _draw_batch(support: EncodedSupport, config: LearnConfig, step: int, num_train_timesteps: int) -> _Batch:
    generator, rng = _step_generators(config.seed, step, torch.device("cpu"))
    indices = torch.randint(0, support.shots, (config.batch_size,), generator=generator)
    if config.flip:
        flips = torch.rand(config.batch_size, generator=generator) < 0.5
        indices = indices + flips.long() * support.shots
    latents = support.latents[indices]
    timesteps = torch.randint(0, num_train_timesteps, (config.batch_size,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    prompts = [sample_caption(config.token, rng, config.subject) for _ in range(config.batch_size)]
    conditioning = None if support.inpaint_conditioning is None else support.inpaint_conditioning[indices]
    return _Batch(latents, support.loss_masks[indices], conditioning, prompts, timesteps, noise)


def _token_ids(model, prompts: list[str], cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token ids of the prompts; each distinct caption is tokenized once per run."""
    missing = sorted({p for p in prompts if p not in cache})
    if missing:
        cache.update(zip(missing, model.tokenize(missing)))
    return torch.stack([cache[p] for p in prompts])


def _batch_loss(model, scheduler, batch: _Batch, area_normalised: bool,
                id_cache: dict[str, torch.Tensor] | None = None, share: slice | None = None) -> torch.Tensor:
    """The masked loss of ``batch``; with ``share``, that share's part of the batch's loss."""
    whole_batch_masks = None
    if share is not None:
        whole_batch_masks = batch.loss_masks.to(model.device)
        batch = batch.share(share)
    device, dtype = model.device, model.dtype
    latents = batch.latents.to(device)
    noise = batch.noise.to(device)
    timesteps = batch.timesteps.to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if model.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    unet_input = noisy if batch.conditioning is None else torch.cat([noisy, batch.conditioning.to(device)], dim=1)
    text = model.encode_token_ids(_token_ids(model, batch.prompts, {} if id_cache is None else id_cache))
    prediction = model.unet(unet_input.to(dtype), timesteps, encoder_hidden_states=text.to(dtype)).sample
    return masked_noise_loss(prediction, target, batch.loss_masks.to(device), area_normalised,
                             whole_batch_masks=whole_batch_masks)


# ---------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------
def _fingerprint(model, config: LearnConfig, shot_hashes: list[dict[str, Any]], resolution: int) -> dict[str, Any]:
    """The settings a checkpoint must share with the run that resumes it."""
    fingerprint = {"family": model.family, "model": model.source, "token_width": model.token_width,
                   "token": config.token, "init_word": config.init_word, "batch_size": config.batch_size,
                   "lr": config.effective_lr, "weight_decay": config.weight_decay, "seed": config.seed,
                   "resolution": resolution, "flip": config.flip, "crop_to_defect": config.crop_to_defect,
                   "context_margin": config.context_margin, "area_normalised": config.area_normalised,
                   "use_mask": config.use_mask,
                   "shots": [h["image_sha256"] + h["mask_sha256"] for h in shot_hashes]}
    if config.subject:  # only when set: checkpoints written before subjects existed still resume
        fingerprint["subject"] = config.subject
    return fingerprint


def _save_checkpoint(path: Path, vector: torch.Tensor, optimizer: torch.optim.Optimizer, step: int,
                     loss_curve: list[float], fingerprint: dict[str, Any]) -> None:
    from safetensors.torch import save

    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    tensors = {"vector": vector.detach().cpu().float().contiguous()}
    if state:
        tensors["exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
        tensors["exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
        tensors["adam_step"] = torch.as_tensor(float(state["step"])).reshape(1)
    metadata = {"format": "anogen-stage1-checkpoint", "step": str(step), "loss_curve": json.dumps(loss_curve),
                "fingerprint": json.dumps(fingerprint, sort_keys=True)}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


@dataclass
class _Checkpoint:
    step: int
    loss_curve: list[float]
    tensors: dict[str, torch.Tensor]  # on the CPU


def _load_checkpoint(path: Path, vector: torch.nn.Parameter, optimizer: torch.optim.Optimizer,
                     fingerprint: dict[str, Any]) -> tuple[int, list[float]]:
    return _restore(_read_checkpoint(path, fingerprint), vector, optimizer)


def _read_checkpoint(path: Path, fingerprint: dict[str, Any]) -> _Checkpoint:
    """The checkpoint at ``path``, refused unless made with ``fingerprint``'s settings."""
    from safetensors import safe_open

    if not path.is_file():
        raise InputError(f"{path}: checkpoint to resume from not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise InputError(f"{path}: not a readable stage-1 checkpoint ({exc})") from None
    if metadata.get("format") != "anogen-stage1-checkpoint" or "vector" not in tensors:
        raise InputError(f"{path}: not a stage-1 checkpoint")
    saved = json.loads(metadata.get("fingerprint", "{}"))
    different = sorted(key for key in fingerprint if saved.get(key) != json.loads(json.dumps(fingerprint[key])))
    if different:
        raise InputError(f"{path}: the checkpoint was made with other settings ({', '.join(different)}); "
                         "resume with the same model, support set and options, or start afresh")
    return _Checkpoint(int(metadata["step"]), [float(v) for v in json.loads(metadata.get("loss_curve", "[]"))],
                       tensors)


def _restore(checkpoint: _Checkpoint, vector: torch.nn.Parameter,
             optimizer: torch.optim.Optimizer) -> tuple[int, list[float]]:
    """Put the checkpoint's vector and AdamW state in place; its step and loss curve."""
    tensors = checkpoint.tensors
    with torch.no_grad():
        vector.copy_(tensors["vector"])
    if "exp_avg" in tensors:
        device = vector.device
        optimizer.state[vector] = {"step": torch.tensor(float(tensors["adam_step"][0])),
                                   "exp_avg": tensors["exp_avg"].to(device),
                                   "exp_avg_sq": tensors["exp_avg_sq"].to(device)}
    return checkpoint.step, list(checkpoint.loss_curve)


def check_resume_steps(checkpoint: Path, checkpoint_step: int, steps: int) -> None:
    """Refuse to resume a checkpoint that is already past ``steps``: the result would be
    the checkpoint's vector recorded as a shorter run."""
    if checkpoint_step > steps:
        raise InputError(f"{checkpoint}: the checkpoint is already at step {checkpoint_step}, past the {steps} "
                         f"steps asked for; resume with --steps {checkpoint_step} or more, or start afresh "
                         "without --resume")


# ---------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------
def init_vector(model, init_word: str) -> torch.Tensor:
    """The mean embedding of the tokens of ``init_word`` (float32, CPU)."""
    ids = model.tokenizer(init_word, add_special_tokens=False).input_ids
    if not ids:
        raise InputError(f"init word '{init_word}' gives no tokens")
    unknown = getattr(model.tokenizer, "unk_token_id", None)
    if unknown is not None and unknown in ids and len(set(ids)) == 1:
        raise InputError(f"init word '{init_word}' is unknown to the model's tokenizer")
    table = model.token_embedding_table().weight
    return table[torch.tensor(ids, device=table.device)].detach().float().mean(dim=0).cpu()


def learn_embedding(model, config: LearnConfig, progress: ProgressFn = no_progress,
                    cancel: threading.Event | None = None, *, ranks: ProcessRanks | None = None) -> LearnResult:
    """Learn ``config.token`` from the support set; the job contract of :mod:`anogen.jobs`.

    On success the model knows the token (its row holds the learned vector). Raises
    :class:`~anogen.errors.JobCancelled` within one step of ``cancel`` being set, and
    :class:`~anogen.errors.TrainingDiverged` when the loss stops being finite (the last
    checkpoint, if any, is kept).

    ``ranks``: this process's place among several that learn together (``torchrun``,
    ``accelerate launch``; :meth:`ProcessRanks.from_environment`), each with its own copy
    of the model (on its own GPU). Every process returns the same result; only rank 0
    reads ``config.resume_from`` and writes ``config.checkpoint_path``.
    """
    if ranks is None or ranks.world <= 1:
        return _learn(model, config, progress, cancel, None)
    from anogen.parallel import ProcessGroup

    with ProcessGroup.start(ranks, model.device) as group:
        return _learn(model, config, progress, cancel, group)


def _learn(model, config: LearnConfig, progress: ProgressFn, cancel: threading.Event | None,
           group: ProcessGroup | None) -> LearnResult:
    resolution = model.working_resolution(config.resolution)
    # Before the support set is resized: a resolution that cannot fit is refused, not OOM-killed.
    check_learn_memory(model, resolution, config.batch_size, len(config.images), config.flip)
    shots = prepare_support(config, resolution)
    check_cancel(cancel)
    shot_hashes = [{"image": shot.image_path.name, "image_sha256": file_sha256(shot.image_path),
                    "mask": shot.mask_path.name, "mask_sha256": file_sha256(shot.mask_path),
                    "crop": list(shot.crop)} for shot in shots]
    progress(Progress(0, config.steps, "encoding the support set"))
    support = encode_support(model, shots, config.flip, config.batch_size)
    if not config.use_mask:
        support = replace(support, loss_masks=torch.ones_like(support.loss_masks))
    check_cancel(cancel)

    initial = init_vector(model, config.init_word)
    token_id = add_placeholder_token(model, config.token)
    vector = torch.nn.Parameter(initial.to(model.device))
    optimizer = torch.optim.AdamW([vector], lr=config.effective_lr, weight_decay=config.weight_decay)
    scheduler = model.ddpm_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(model.device)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()

    fingerprint = _fingerprint(model, config, shot_hashes, resolution)
    start, loss_curve = 0, list[float]()
    resume_from = Path(config.resume_from) if config.resume_from is not None else None
    if group is None:
        if resume_from is not None:
            start, loss_curve = _load_checkpoint(resume_from, vector, optimizer, fingerprint)
    else:
        # Rank 0 reads the checkpoint (whether there is one is its call) and hands it out.
        resumed = group.relay(lambda: None if resume_from is None else (resume_from,
                                                                        _read_checkpoint(resume_from, fingerprint)))
        resume_from = None if resumed is None else resumed[0]
        if resumed is not None:
            start, loss_curve = _restore(resumed[1], vector, optimizer)
    if resume_from is not None:
        check_resume_steps(resume_from, start, config.steps)
        loss_curve = loss_curve[:start]
    checkpoint_path = Path(config.checkpoint_path) if config.checkpoint_path else None
    last_checkpoint: int | None = start if resume_from is not None else None
    share = None
    if group is not None:
        from anogen.parallel import batch_share

        # More processes than samples (the paper's batch of 4 on 8 GPUs): the last ones
        # draw no sample and only keep in step, rather than stop a whole `anogen run`.
        share = batch_share(config.batch_size, group.rank, group.world, allow_empty=True)
        if share.start == share.stop:
            log.warning("the batch of %d samples is split over %d processes: this one (rank %d) has no sample and "
                        "only keeps in step; launch at most %d processes to learn", config.batch_size, group.world,
                        group.rank, config.batch_size)
        else:
            log.info("learning %s with batch %d split over %d processes (this is rank %d: samples %d to %d)",
                     config.token, config.batch_size, group.world, group.rank, share.start + 1, share.stop)

    table = model.token_embedding_table()
    with torch.no_grad():  # until learning ends, the token means its init word
        table.weight[token_id] = vector.detach().to(table.weight.device, table.weight.dtype)
    hook = _PlaceholderHook(table, token_id, vector)
    num_train_timesteps = int(scheduler.config.num_train_timesteps)
    id_cache: dict[str, torch.Tensor] = {}
    try:
        for step in range(start, config.steps):
            if group is None:
                check_cancel(cancel)
            else:
                group.check_cancel(cancel)
            batch = _draw_batch(support, config, step, num_train_timesteps)
            loss = (None if share is not None and share.start == share.stop  # no sample here
                    else _batch_loss(model, scheduler, batch, config.area_normalised, id_cache, share))
            value = 0.0 if loss is None else float(loss.detach())
            if group is not None:  # the whole batch's loss: every process sees a NaN
                value = group.sum_losses({"loss": value}, 1.0)["loss"]
            if not math.isfinite(value):
                raise TrainingDiverged(_diverged_message(step + 1, value, checkpoint_path, last_checkpoint))
            optimizer.zero_grad(set_to_none=True)
            if loss is not None:
                loss.backward()
            if group is not None:  # the whole batch's gradient on every process
                if vector.grad is None:
                    vector.grad = torch.zeros_like(vector)
                group.sum_in_place(vector.grad)
            optimizer.step()
            finite = bool(torch.isfinite(vector.detach()).all())
            if group is not None:
                finite = not group.any_true(not finite)
            if not finite:
                raise TrainingDiverged(_diverged_message(step + 1, float("nan"), checkpoint_path, last_checkpoint))
            loss_curve.append(value)
            done = step + 1
            if checkpoint_path is not None and (done % config.checkpoint_every == 0 or done == config.steps):
                save = partial(_save_checkpoint, checkpoint_path, vector, optimizer, done, loss_curve, fingerprint)
                if group is None:
                    save()
                else:
                    group.relay(save)  # rank 0 writes; its error stops every process
                last_checkpoint = done
            progress(Progress(done, config.steps, f"learning {config.token}", metrics={"loss": value}))
    finally:
        hook.remove()

    learned = vector.detach().float().cpu()
    with torch.no_grad():
        table.weight[token_id] = learned.to(table.weight.device, table.weight.dtype)
    final_loss = float(np.mean(loss_curve[-50:])) if loss_curve else float("nan")
    metadata = {
        "family": model.family, "model": model.source, "token_width": model.token_width,
        "token": config.token, "init_word": config.init_word, "subject": config.subject, "shots": shot_hashes,
        "steps": config.steps, "lr": config.effective_lr, "base_lr": config.lr, "scale_lr": config.scale_lr,
        "batch_size": config.batch_size, "weight_decay": config.weight_decay, "seed": config.seed,
        "resolution": resolution, "flip": config.flip, "crop_to_defect": config.crop_to_defect,
        "context_margin": config.context_margin, "area_normalised": config.area_normalised,
        "use_mask": config.use_mask, "final_loss": final_loss, "loss_curve": loss_curve,
    }
    if group is not None:
        metadata["processes"] = group.world
    return LearnResult(token=config.token, vector=learned, loss_curve=list(loss_curve), final_loss=final_loss,
                       steps_done=len(loss_curve), metadata=metadata, family=model.family,
                       model_source=model.source, init_word=config.init_word)


def _diverged_message(step: int, value: float, checkpoint: Path | None, last_good: int | None) -> str:
    message = f"the loss became {value} at step {step}"
    if checkpoint is not None and last_good:
        return (f"{message}; the last good checkpoint ({checkpoint}, step {last_good}) is kept: "
                "resume from it with a lower learning rate")
    return f"{message}; try a lower learning rate"


@torch.no_grad()
def support_loss(model, config: LearnConfig, vector: torch.Tensor, *, samples: int = 16, seed: int = 12345) -> float:
    """The masked loss of ``vector`` as the placeholder on the support set, with fixed
    noise and timesteps: a like-for-like measure to compare vectors (before/after)."""
    resolution = model.working_resolution(config.resolution)
    support = encode_support(model, prepare_support(config, resolution), config.flip, config.batch_size)
    token_id = add_placeholder_token(model, config.token)
    scheduler = model.ddpm_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(model.device)
    probe = LearnConfig(**{**asdict(config), "batch_size": samples, "seed": seed})
    hook = _PlaceholderHook(model.token_embedding_table(), token_id, vector.to(model.device).float())
    try:
        batch = _draw_batch(support, probe, 0, int(scheduler.config.num_train_timesteps))
        return float(_batch_loss(model, scheduler, batch, config.area_normalised))
    finally:
        hook.remove()
