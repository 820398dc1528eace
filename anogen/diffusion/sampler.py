"""Stage 2: paint a learned defect into a box on a good image.

For each request (good image, box, seed) the sampler

1. cuts a square crop around the box (the box plus a context margin; the whole image
   when the box is large), by the same rule stage 1 crops its support shots
   (:mod:`anogen.diffusion.crop`), and resizes it to the model's native resolution (or
   ``GenerateConfig.resolution``), so a 60 px box on a 2048 px image is generated at
   full detail;
2. runs the DDIM loop explicitly (diffusers' :class:`~diffusers.DDIMScheduler` does the
   step arithmetic) with classifier-free guidance:

   * 4-channel UNets use blended latent sampling (paper, eq. 7): before every step the
     latent outside the box is replaced by the good image's latent noised to that step,
     ``z_t = z_t^normal * (1 - M) + z_t^gen * M``;
   * 9-channel inpainting UNets get their native conditioning instead (mask and masked
     image latent concatenated to the input), with the same box;

3. decodes the latent, resizes it back to the crop and composites it in pixel space:
   outside the box the output is the input image, bit for bit; inside, the generated
   pixels (optionally blended over a feathered edge that stays inside the box), or only
   those inside a request's defect outline (:mod:`anogen.diffusion.shapes`), whose latent
   cells alone are painted.

Many requests share one UNet call (batch x 2 with guidance); every request has its own
random generator, so a seed gives the same image whatever else is in the batch.

:func:`generate_set` is the job behind ``anogen generate``: it proposes boxes (or takes
given ones), generates ``per_image`` samples per good image and writes a generated set
(:mod:`anogen.data.generated`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import cv2
import numpy as np
import torch

from anogen.data.box import Box
from anogen.data.boxes import BoxPlacement, BoxSizeRange
from anogen.diffusion.captions import generation_prompt
from anogen.diffusion.config import PER_IMAGE, SAMPLES_PER_BOX, GenerateConfig
from anogen.diffusion.crop import context_window
from anogen.diffusion.detail import restore_detail
from anogen.diffusion.shapes import defect_outlines, draw_shape
from anogen.errors import InputError, ModelError
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress

if TYPE_CHECKING:
    # The defining module: mypy reads diffusers' top-level names as its torch-less dummy classes.
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    from anogen.data.generated import GeneratedSample
    from anogen.diffusion.embedding_file import LearnedEmbedding
    from anogen.diffusion.models import DiffusionModel

log = logging.getLogger(__name__)


@dataclass
class GenerationRequest:
    """One image to generate: a good image (RGB uint8), a box on it and a seed. With a
    ``shape`` (bool, the image's height and width), only the box pixels inside it are
    painted: a defect's own outline instead of the whole box."""

    image: np.ndarray
    box: Box
    seed: int
    shape: np.ndarray | None = None


@dataclass
class GeneratedImage:
    """A generated image at the size of its source; equal to it outside ``box``."""

    image: np.ndarray
    box: Box
    seed: int
    crop: Box  # the region of the source that was generated at the model's resolution


# ----------------------------------------------------------------------------- geometry


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _latent_box(box: Box, crop: Box, resolution: int, factor: int) -> tuple[int, int, int, int]:
    """The box in latent cells of the resized crop, rounded outward so it covers the box."""
    latent = resolution // factor
    sx = resolution / crop.width
    sy = resolution / crop.height
    x0 = math.floor((box.x0 - crop.x0) * sx / factor)
    y0 = math.floor((box.y0 - crop.y0) * sy / factor)
    x1 = math.ceil((box.x1 - crop.x0) * sx / factor)
    y1 = math.ceil((box.y1 - crop.y0) * sy / factor)
    return max(0, x0), max(0, y0), min(latent, max(x1, x0 + 1)), min(latent, max(y1, y0 + 1))


def _latent_mask(box: Box, crop: Box, image_shape: tuple[int, int], resolution: int, factor: int,
                 shape: np.ndarray | None = None) -> np.ndarray:
    """The latent cells a box touches in the resized crop, bool ``(latent, latent)``. An
    axis-aligned box is its rectangle rounded outward; a rotated box (or the part of a box
    inside ``shape``) every cell that holds one of its pixels, so the painted area always
    covers it."""
    latent = resolution // factor
    cells = np.zeros((latent, latent), dtype=bool)
    if not box.is_rotated and shape is None:
        x0, y0, x1, y1 = _latent_box(box, crop, resolution, factor)
        cells[y0:y1, x0:x1] = True
        return cells
    inside = box.to_mask(*image_shape)
    if shape is not None:
        inside &= shape.astype(bool)
    pixels = inside[crop.y0:crop.y1, crop.x0:crop.x1].astype(np.float32)
    resized = cv2.resize(pixels, (resolution, resolution), interpolation=cv2.INTER_AREA) > 0
    return np.asarray(resized.reshape(latent, factor, latent, factor).any(axis=(1, 3)))


def feather_weights(height: int, width: int, feather: int) -> np.ndarray:
    """Blend weights of the generated pixels inside a box, ``(height, width, 1)``:
    1 in the interior, ramping down over ``feather`` pixels towards the box edge.

    ``feather`` is bounded by the box: at most ``(short side - 1) // 2``, so the centre of
    the box always gets the generated pixels (a wider ramp would blend the whole box
    back towards the source, down to a box identical to it)."""
    feather = min(feather, (min(height, width) - 1) // 2)
    if feather <= 0:
        return np.ones((height, width, 1), dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    xs = np.arange(width, dtype=np.float32)
    dy = np.minimum(ys + 1, height - ys)[:, None]
    dx = np.minimum(xs + 1, width - xs)[None, :]
    return np.clip(np.minimum(dy, dx) / (feather + 1), 0.0, 1.0)[:, :, None]


def composite(source: np.ndarray, generated_crop: np.ndarray, crop: Box, box: Box, feather: int = 0,
              shape: np.ndarray | None = None) -> np.ndarray:
    """Paste the generated pixels of ``box`` into a copy of ``source``. Outside the box the
    result is ``source`` exactly; ``generated_crop`` covers ``crop`` at the source scale.
    With a ``shape`` (bool, the source's size) only the box pixels inside it change: the
    model paints whole latent cells, the outline keeps the defect's own edge."""
    result = source.copy()
    if box.is_rotated or shape is not None:
        inside = box.to_mask(*source.shape[:2])
        if shape is not None:
            inside &= shape.astype(bool)
        return _composite_masked(result, source, generated_crop, crop, box.bounds, inside, feather)
    inner = generated_crop[box.y0 - crop.y0:box.y1 - crop.y0, box.x0 - crop.x0:box.x1 - crop.x0]
    if feather <= 0:
        result[box.y0:box.y1, box.x0:box.x1] = inner
        return result
    weights = feather_weights(box.height, box.width, feather)
    original = source[box.y0:box.y1, box.x0:box.x1].astype(np.float32)
    blended = weights * inner.astype(np.float32) + (1.0 - weights) * original
    result[box.y0:box.y1, box.x0:box.x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return result


def _composite_masked(result: np.ndarray, source: np.ndarray, generated_crop: np.ndarray, crop: Box, area: Box,
                      mask: np.ndarray, feather: int) -> np.ndarray:
    """:func:`composite` for a rotated box or a shaped request: only the pixels of ``mask``
    (bool, the source's size, zero outside ``area``) change."""
    inside = mask[area.y0:area.y1, area.x0:area.x1]
    inner = generated_crop[area.y0 - crop.y0:area.y1 - crop.y0, area.x0 - crop.x0:area.x1 - crop.x0]
    if feather <= 0:
        weights = inside[:, :, None].astype(np.float32)
    else:
        # Distance to the box edge (1 on the edge pixels), as feather_weights counts it.
        padded = np.pad(inside.astype(np.uint8), 1)
        distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
        feather = min(feather, max(0, int(distance.max()) - 1))  # bounded by the box, as feather_weights
        weights = np.clip(distance / (feather + 1), 0.0, 1.0)[:, :, None] * inside[:, :, None]
    original = source[area.y0:area.y1, area.x0:area.x1].astype(np.float32)
    blended = weights * inner.astype(np.float32) + (1.0 - weights) * original
    result[area.y0:area.y1, area.x0:area.x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return result


# ----------------------------------------------------------------------------- sampling


@dataclass
class _Prepared:
    """A request cut and resized for the model."""

    request: GenerationRequest
    crop: Box
    canvas: np.ndarray  # the crop at the model's resolution, RGB uint8
    latent_mask: np.ndarray  # (latent, latent) bool: the cells to generate
    generator: torch.Generator  # this request's own random stream (CPU)


def _check_request(index: int, request: GenerationRequest) -> None:
    image = request.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise InputError(f"request {index}: the image must be RGB uint8 (H, W, 3), got "
                         f"{getattr(image, 'dtype', type(image).__name__)} {shape}")
    if not isinstance(request.box, Box):
        raise InputError(f"request {index}: box must be a Box, got {request.box!r}")
    request.box.validate(image.shape[0], image.shape[1], what=f"request {index}")
    shape = request.shape
    if shape is not None:
        if not isinstance(shape, np.ndarray) or shape.shape != image.shape[:2]:
            raise InputError(f"request {index}: the shape must be a mask of the image's size {image.shape[:2]}, "
                             f"got {getattr(shape, 'shape', type(shape).__name__)}")
        if not (shape.astype(bool) & request.box.to_mask(*image.shape[:2])).any():
            raise InputError(f"request {index}: the shape has no pixel inside the box")
    if not isinstance(request.seed, (int, np.integer)) or isinstance(request.seed, bool):
        raise InputError(f"request {index}: seed must be an integer, got {request.seed!r}")


def _to_tensor(images: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """RGB uint8 (H, W, 3) images -> (B, 3, H, W) in [-1, 1]."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return (batch.to(device=device, dtype=torch.float32) / 127.5 - 1.0).to(dtype)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> RGB uint8 (B, H, W, 3)."""
    pixels = ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def _noise(items: Sequence[_Prepared], shape: tuple[int, ...], device: torch.device,
           dtype: torch.dtype) -> torch.Tensor:
    """One standard-normal draw per request from its own generator (CPU, so a seed gives
    the same numbers on every device and in every batch)."""
    draws = [torch.randn(shape, generator=item.generator, dtype=torch.float32) for item in items]
    return torch.stack(draws).to(device=device, dtype=dtype)


def _prompt(config: GenerateConfig, token: str) -> str:
    if config.prompt is None:
        return token
    return config.prompt.replace("{}", token)


def _check_token(model: DiffusionModel, token: str, prompt: str) -> None:
    if not token:
        raise InputError("no placeholder token given")
    if token not in model.tokenizer.get_vocab():
        raise ModelError(f"the token {token!r} is not in the model's vocabulary; load the embedding into this "
                         "model first (apply_embedding)")
    if token not in prompt:
        log.warning("the prompt %r does not contain the learned token %r", prompt, token)


def check_steps(steps: int, scheduler_config: dict, where: object) -> None:
    """Refuse more sampling steps than the model was trained with (the scheduler's
    ``num_train_timesteps``): DDIM cannot take finer steps than the training schedule."""
    trained = int(scheduler_config.get("num_train_timesteps", 1000))
    if steps > trained:
        raise InputError(f"{where}: --steps {steps} is more than the {trained} timesteps this model was trained "
                         f"with; use at most {trained} (the paper uses 50)")


def _check_steps_before_loading(model_source: object, steps: int) -> None:
    """The steps check for a diffusers folder, from its scheduler config, before the slow load."""
    if not isinstance(model_source, (str, os.PathLike)):
        return
    scheduler_file = Path(model_source).expanduser() / "scheduler" / "scheduler_config.json"
    try:
        scheduler_config = json.loads(scheduler_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return  # not a folder with a readable config: checked after loading instead
    if isinstance(scheduler_config, dict):
        check_steps(steps, scheduler_config, scheduler_file)


@torch.no_grad()
def generate(
    model: DiffusionModel,
    token: str,
    requests: Sequence[GenerationRequest],
    config: GenerateConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[GeneratedImage]:
    """Generate one image per request, in batches of ``config.batch_size``.

    ``token`` is the placeholder token already added to ``model`` (see
    :func:`anogen.diffusion.embedding_file.apply_embedding`). Reports progress once per
    denoising step (with a preview every ``config.preview_every`` steps) and checks
    ``cancel`` before every step.

    Every random number of a request comes from its own seed, so the same requests and
    batch size give bit-identical images. A request generated in a batch of another size
    can differ by a grey level here and there: the UNet's floating-point sums depend on
    the batch shape.
    """
    config = config or GenerateConfig()
    config.validate()
    progress = progress or no_progress
    for index, request in enumerate(requests):
        _check_request(index, request)
    if not requests:
        return []
    prompt = _prompt(config, token)
    _check_token(model, token, prompt)

    guided = config.guidance != 1.0
    # One text-encoder call for both prompts; (1, L, D) each, shared by every request.
    if guided:
        unconditional, conditioning = model.encode_prompts([config.negative_prompt, prompt]).chunk(2)
    else:
        unconditional, conditioning = None, model.encode_prompts([prompt])
    check_steps(config.steps, model.scheduler_config, model.source)
    # One scheduler for the whole call: DDIM's step arithmetic keeps no per-sample state.
    scheduler = model.ddim_scheduler()
    scheduler.set_timesteps(config.steps, device=model.device)
    steps = denoising_step_count(config.steps, config.strength)

    batches = [requests[i:i + config.batch_size] for i in range(0, len(requests), config.batch_size)]
    total = len(batches) * steps
    results: list[GeneratedImage] = []
    for number, batch in enumerate(batches):
        def report(step: int, preview: np.ndarray | None = None, _number: int = number) -> None:
            progress(Progress(_number * steps + step, total,
                              message=f"batch {_number + 1}/{len(batches)}", preview=preview))

        results += _generate_batch(model, scheduler, batch, conditioning, unconditional, config, report, cancel)
    return results


def as_learned(config: GenerateConfig, embedding: LearnedEmbedding, model: DiffusionModel) -> GenerateConfig:
    """``config``, painting the way ``embedding`` was learned where ``config`` leaves it open:
    at the side stage 1 ran at (a token learned on 128 px crops paints another thing on 64 px
    ones) and, for a token learned with a subject, with a sentence that names it."""
    learned = embedding.learned_resolution
    if config.resolution is None and learned is not None and learned != model.resolution:
        log.info("painting at %d px, the side '%s' was learned at", learned, embedding.token)
        config = replace(config, resolution=learned)
    prompt = generation_prompt(embedding.subject)
    if config.prompt is None and prompt is not None:
        log.info("painting '%s' with the prompt %r, as it was learned", embedding.token, prompt)
        config = replace(config, prompt=prompt)
    return config


def denoising_step_count(steps: int, strength: float) -> int:
    """How many of ``steps`` DDIM steps a run of ``strength`` takes (at least one)."""
    return min(max(round(steps * strength), 1), steps)


def denoising_timesteps(scheduler: DDIMScheduler, strength: float) -> torch.Tensor:
    """The scheduler's timesteps that a run of ``strength`` takes: the last ``strength``
    share of them (all of them at 1.0), as diffusers' img2img and inpainting pipelines do."""
    count = len(scheduler.timesteps)
    return scheduler.timesteps[count - denoising_step_count(count, strength):]


def _generate_batch(
    model: DiffusionModel,
    scheduler: DDIMScheduler,
    requests: Sequence[GenerationRequest],
    conditioning: torch.Tensor,
    unconditional: torch.Tensor | None,
    config: GenerateConfig,
    report: Callable[..., None],
    cancel: threading.Event | None,
) -> list[GeneratedImage]:
    device, dtype = model.device, model.dtype
    resolution, factor = model.working_resolution(config.resolution), model.vae_scale_factor
    latent_size = resolution // factor
    latent_shape = (model.latent_channels, latent_size, latent_size)

    # 1. Crops at the working resolution, the box on the latent grid, one generator each.
    items: list[_Prepared] = []
    for request in requests:
        height, width = request.image.shape[:2]
        crop = context_window(request.box.bounds, height, width, mode=config.crop,
                              context_margin=config.context_margin, auto_below=config.auto_crop_below)
        region = request.image[crop.y0:crop.y1, crop.x0:crop.x1]
        items.append(_Prepared(request, crop, _to_resolution(region, resolution),
                               _latent_mask(request.box, crop, (height, width), resolution, factor, request.shape),
                               torch.Generator("cpu").manual_seed(int(request.seed))))
    count = len(items)
    mask = torch.zeros((count, 1, latent_size, latent_size), device=device, dtype=dtype)
    for i, item in enumerate(items):
        mask[i, :] = torch.from_numpy(item.latent_mask).to(device=device, dtype=dtype)
    canvases = _to_tensor([item.canvas for item in items], device, dtype)

    # 2. What conditions the loop: the good image's latent (blending) or the inpainting input.
    if model.is_inpainting:
        pixel_mask = torch.nn.functional.interpolate(mask, scale_factor=factor, mode="nearest")
        masked_latents = _encode(model, canvases * (1.0 - pixel_mask), config.vae_batch_size)
        inpaint_extra = torch.cat([mask, masked_latents], dim=1)
        normal_latents = None
    else:
        normal_latents = _encode(model, canvases, config.vae_batch_size)
        inpaint_extra = None

    text = conditioning.expand(count, -1, -1)
    if unconditional is not None:
        text = torch.cat([unconditional.expand(count, -1, -1), text])
        inpaint_extra = None if inpaint_extra is None else torch.cat([inpaint_extra, inpaint_extra])

    # 3. The starting point: pure noise, or (strength < 1) the good image noised part way.
    timesteps = denoising_timesteps(scheduler, config.strength)
    noise = _noise(items, latent_shape, device, dtype)
    source_latents = normal_latents
    if source_latents is None and (config.strength < 1.0 or config.restore_detail):
        source_latents = _encode(model, canvases, config.vae_batch_size)  # the inpainting path's good crops
    if config.strength < 1.0:
        assert source_latents is not None
        start = cast(torch.IntTensor, timesteps[:1].repeat(count))
        latents = scheduler.add_noise(source_latents, noise, start)
    else:
        latents = noise * scheduler.init_noise_sigma

    # 4. The DDIM loop.
    for step, timestep in enumerate(timesteps):
        check_cancel(cancel)
        if normal_latents is not None:
            # Eq. 7: outside the box, the good image's latent noised to this step.
            noised_normal = scheduler.add_noise(normal_latents, _noise(items, latent_shape, device, dtype),
                                                timestep.repeat(count))
            latents = noised_normal * (1.0 - mask) + latents * mask

        unet_input = torch.cat([latents, latents]) if unconditional is not None else latents
        unet_input = scheduler.scale_model_input(unet_input, timestep)
        if inpaint_extra is not None:
            unet_input = torch.cat([unet_input, inpaint_extra], dim=1)
        prediction = model.unet(unet_input, timestep, encoder_hidden_states=text).sample
        if unconditional is not None:
            prediction_uncond, prediction_cond = prediction.chunk(2)
            prediction = prediction_uncond + config.guidance * (prediction_cond - prediction_uncond)

        variance_noise = _noise(items, latent_shape, device, dtype) if config.eta > 0 else None
        output = scheduler.step(prediction, timestep, latents, eta=config.eta, variance_noise=variance_noise)
        assert not isinstance(output, tuple) and output.pred_original_sample is not None  # return_dict; DDIM's x0
        latents = output.prev_sample

        preview = None
        if config.preview_every and (step + 1) % config.preview_every == 0 and step + 1 < len(timesteps):
            preview = _preview(model, items[0], output.pred_original_sample[:1], normal_latents, mask[:1], config)
        report(step + 1, preview)

    # 5. Decode, back to the crop's size, composite in pixel space.
    if normal_latents is not None:
        latents = normal_latents * (1.0 - mask) + latents * mask  # consistent context for the decoder
    pixels_float = torch.cat([model.decode_latents(chunk) for chunk in latents.split(config.vae_batch_size)])
    _check_finite(pixels_float, items)
    decoded = _to_uint8(pixels_float)
    reconstructed = None
    if config.restore_detail:
        assert source_latents is not None
        reconstructed = _to_uint8(torch.cat([model.decode_latents(chunk)
                                             for chunk in source_latents.split(config.vae_batch_size)]))
    results = []
    for index, (item, pixels) in enumerate(zip(items, decoded)):
        generated_crop = _resize(pixels, item.crop.width, item.crop.height)
        if reconstructed is not None:
            source_crop = item.request.image[item.crop.y0:item.crop.y1, item.crop.x0:item.crop.x1]
            reconstructed_crop = _resize(reconstructed[index], item.crop.width, item.crop.height)
            cell = factor * item.crop.width / resolution  # one latent cell, in source pixels
            generated_crop = restore_detail(source_crop, generated_crop, reconstructed_crop, smoothing=cell)
        image = composite(item.request.image, generated_crop, item.crop, item.request.box, config.feather,
                          shape=item.request.shape)
        results.append(GeneratedImage(image=image, box=item.request.box, seed=int(item.request.seed),
                                      crop=item.crop))
    return results


def _check_finite(pixels: torch.Tensor, items: Sequence[_Prepared]) -> None:
    """Refuse a batch whose decoded pixels hold NaN or infinity: cast to uint8 they would
    become a black box that looks like a defect and be written as an accepted sample."""
    finite = torch.isfinite(pixels.float()).flatten(1).all(dim=1)
    if bool(finite.all()):
        return
    bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
    seeds = ", ".join(str(int(items[i].request.seed)) for i in bad[:5])
    raise ModelError(f"generation produced NaN or infinite pixels in {len(bad)} of {len(items)} images "
                     f"(seeds {seeds}); the model or the embedding is broken (try --precision fp32)")


def _encode(model: DiffusionModel, images: torch.Tensor, chunk: int) -> torch.Tensor:
    """Posterior-mean latents, ``chunk`` images per VAE call."""
    return torch.cat([model.encode_images(part) for part in images.split(chunk)])


def _to_resolution(region: np.ndarray, resolution: int) -> np.ndarray:
    return np.ascontiguousarray(_resize(region, resolution, resolution))


def _preview(model: DiffusionModel, item: _Prepared, predicted: torch.Tensor,
             normal_latents: torch.Tensor | None, mask: torch.Tensor, config: GenerateConfig) -> np.ndarray:
    """The current estimate of the final image of the batch's first request."""
    if normal_latents is not None:
        predicted = normal_latents[:1] * (1.0 - mask) + predicted * mask
    pixels = _to_uint8(model.decode_latents(predicted))[0]
    generated_crop = _resize(pixels, item.crop.width, item.crop.height)
    return composite(item.request.image, generated_crop, item.crop, item.request.box, config.feather)


# ----------------------------------------------------------------------------- the job


@dataclass
class GenerateSetResult:
    out: Path
    samples: list[GeneratedSample]
    token: str
    embedding_hash: str


def sample_seed(seed: int, image_name: str, index: int) -> int:
    """The seed of sample ``index`` of one good image: depends only on the base seed, the
    image's file name and the index, so adding images never changes other samples."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(image_name.encode("utf-8")), index])
    return int(state.generate_state(1)[0] & 0x7FFFFFFF)


def _safe_id(stem: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "image"
    return cleaned[:150]


@dataclass
class GenerateSetConfig:
    """What :func:`generate_set` makes, from what, and where.

    ``model``: a diffusers folder, Hugging Face id or ``.safetensors`` file, or a loaded
    :class:`~anogen.diffusion.models.DiffusionModel`. ``normals``: a folder of good images
    or a list of image files. ``boxes``: a ``boxes.json`` or an ``{image name: [Box, ...]}``
    dict; None proposes boxes where ``placement`` allows (default ``BoxPlacement()``:
    foreground ``auto``, boxes inside it) with sizes from ``size_range``. ``generation``
    holds the sampler's settings (steps, guidance, seed, ...). ``limit`` caps the number
    of good images used.
    """

    model: str | os.PathLike | DiffusionModel
    embedding: str | os.PathLike
    normals: str | os.PathLike | Sequence[str | os.PathLike]
    out: str | os.PathLike
    per_image: int = PER_IMAGE
    samples_per_box: int = SAMPLES_PER_BOX
    boxes: str | os.PathLike | dict[str, list[Box]] | None = None
    size_range: BoxSizeRange | None = None
    placement: BoxPlacement | None = None
    generation: GenerateConfig = field(default_factory=GenerateConfig)
    defect_kind: str | None = None
    device: str = "auto"
    precision: str = "auto"
    allow_download: bool = False
    limit: int | None = None
    # Masks of real defects whose outlines are painted in the boxes, one drawn per sample
    # (anogen.diffusion.shapes); None: the whole box, the paper's.
    shapes: Sequence[np.ndarray] | None = None


def generate_set(job: GenerateSetConfig, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> GenerateSetResult:
    """Generate ``per_image`` defect images for every good image and write a generated set.

    Boxes: when ``job.boxes`` is given, each listed image uses its boxes (unlisted images
    are skipped); otherwise ``ceil(per_image / samples_per_box)`` boxes are proposed per
    image (the paper's default: 2 boxes x 2 samples). Sample ``k`` of an image uses box
    ``k % boxes`` and the seed :func:`sample_seed` ``(generation.seed, image name, k)``.
    Proposed boxes go where ``job.placement`` allows (``auto`` takes the whole image for a
    texture). All or nothing: a cancel or an error leaves no output folder.
    """
    from anogen.data.boxes import DEFAULT_SIZE_RANGE, image_seed, read_boxes_file
    from anogen.data.generated import GeneratedSetWriter
    from anogen.data.imageio import list_images, read_image
    from anogen.data.mvtec import category_of_folder
    from anogen.diffusion.embedding_file import apply_embedding, file_sha256, load_embedding
    from anogen.diffusion.models import DiffusionModel, load_model

    model_source, embedding_path, normals, out = job.model, job.embedding, job.normals, job.out
    per_image, samples_per_box, boxes, limit = job.per_image, job.samples_per_box, job.boxes, job.limit
    config = job.generation
    config.validate()
    progress = progress or no_progress
    if per_image < 1:
        raise InputError(f"per_image must be >= 1, got {per_image}")
    if samples_per_box < 1:
        raise InputError(f"samples_per_box must be >= 1, got {samples_per_box}")

    # Inputs first, so a typo fails before a model is loaded.
    if isinstance(normals, (str, os.PathLike)):
        paths = list_images(normals)
    else:
        paths = [Path(p) for p in normals]
    if limit is not None:
        paths = paths[:max(0, limit)]
    outlines = None if job.shapes is None else defect_outlines(job.shapes)
    given = read_boxes_file(boxes) if isinstance(boxes, (str, os.PathLike)) else boxes
    if given is not None:
        listed = [p for p in paths if p.name in given and given[p.name]]
        skipped = len(paths) - len(listed)
        if skipped:
            log.warning("%d good images have no boxes in the boxes file and are skipped", skipped)
        paths = listed
    if not paths:
        raise InputError(f"{normals}: no good images to generate on"
                         + (" (none is in the boxes file)" if given else ""))
    embedding_path = Path(embedding_path)
    if not embedding_path.is_file():
        raise InputError(f"{embedding_path}: embedding file not found")
    placement = job.placement or BoxPlacement()
    placement.validate()
    if given is None and placement.category is None and isinstance(normals, (str, os.PathLike)):
        placement = replace(placement, category=category_of_folder(normals))
    if given is None and placement.foreground == "auto" and placement.needs_foreground():
        # Settled once for the folder, so every image gets the same kind of allowed area.
        placement = placement.resolved([read_image(path) for path in paths[:5]])

    _check_steps_before_loading(model_source, config.steps)
    check_cancel(cancel)
    model = model_source if isinstance(model_source, DiffusionModel) else load_model(
        model_source, device=job.device, precision=job.precision, allow_download=job.allow_download)
    check_steps(config.steps, model.scheduler_config, model.source)
    embedding = load_embedding(embedding_path)
    token = apply_embedding(model, embedding)
    config = as_learned(config, embedding, model)
    embedding_hash = embedding.sha256 or file_sha256(embedding_path)
    kind = job.defect_kind or _embedding_kind(embedding, embedding_path)
    model_name = model.source
    size_range = job.size_range or DEFAULT_SIZE_RANGE
    boxes_per_image = math.ceil(per_image / samples_per_box)

    total_requests = len(paths) * per_image
    steps = denoising_step_count(config.steps, config.strength)
    steps_total = math.ceil(total_requests / config.batch_size) * steps
    done_batches = 0

    def batch_progress(report: Progress) -> None:
        first = done_batches * config.batch_size + 1
        last = min(total_requests, first + config.batch_size - 1)
        progress(Progress(done_batches * steps + report.step, steps_total,
                          message=f"images {first}-{last} of {total_requests}", preview=report.preview))

    unchanged: list[str] = []
    with GeneratedSetWriter(out) as writer:
        pending: list[tuple[Path, int, GenerationRequest]] = []

        def flush() -> None:
            nonlocal done_batches
            outputs = generate(model, token, [request for _, _, request in pending], config, batch_progress, cancel)
            for (path, k, request), output in zip(pending, outputs):
                if _box_unchanged(request.image, output):
                    # Not a defect: training on it would teach the detector that a good
                    # patch is defective.
                    log.warning("%s sample %d: the box came out identical to the good image; not written",
                                path.name, k)
                    unchanged.append(f"{path.name}#{k}")
                    continue
                writer.add(output.image, box=output.box.bounds.to_list(), mask=label_mask(request, output),
                           source=str(path), defect_kind=kind, seed=output.seed, model=model_name,
                           embedding_hash=embedding_hash, steps=config.steps, guidance=config.guidance,
                           id=f"{_safe_id(path.stem)}_{k:02d}", settings=sample_settings(config, request))
            done_batches += 1
            pending.clear()

        for path in paths:
            check_cancel(cancel)
            image = read_image(path)
            height, width = image.shape[:2]
            if given is not None:
                image_boxes = [box.validate(height, width, what=f"{path.name} in the boxes file")
                               for box in given[path.name]]
            else:
                try:
                    image_boxes = placement.propose(image, size_range, boxes_per_image,
                                                    seed=image_seed(config.seed, path.name))
                except InputError as exc:
                    raise InputError(f"{path}: {exc}") from None
            for k in range(per_image):
                seed = sample_seed(config.seed, path.name, k)
                box = image_boxes[k % len(image_boxes)]
                shape = None if outlines is None else draw_shape(outlines, box, height, width, seed)
                pending.append((path, k, GenerationRequest(image, box, seed, shape)))
                if len(pending) == config.batch_size:
                    flush()
        if pending:
            flush()
        check_cancel(cancel)
        if not writer.samples:
            raise ModelError(f"none of the {len(unchanged)} generated samples changed its box "
                             f"({', '.join(unchanged[:3])}...); nothing was written")
        samples = list(writer.samples)
    return GenerateSetResult(out=Path(out), samples=samples, token=token, embedding_hash=embedding_hash)


def sample_settings(config: GenerateConfig, request: GenerationRequest) -> dict[str, object]:
    """A sample's provenance in its set: the settings that shaped it, and whether it was
    painted in a defect outline."""
    return {**config.image_settings(), **({} if request.shape is None else {"shape": "defect outline"})}


def label_mask(request: GenerationRequest, output: GeneratedImage) -> np.ndarray | None:
    """What a sample marks as defective: the painted outline when the request had one (the
    sampler knows exactly which pixels it painted), else the box (None: its rectangle)."""
    height, width = output.image.shape[:2]
    if request.shape is not None:
        return request.shape.astype(bool) & output.box.to_mask(height, width)
    return output.box.to_mask(height, width) if output.box.is_rotated else None


def _box_unchanged(source: np.ndarray, output: GeneratedImage) -> bool:
    """True when the generated image equals its good image inside the box's bounds."""
    area = output.box.bounds
    return bool(np.array_equal(source[area.y0:area.y1, area.x0:area.x1],
                               output.image[area.y0:area.y1, area.x0:area.x1]))


def _embedding_kind(embedding: object, path: Path) -> str:
    """The defect kind an embedding stands for: its metadata's ``defect_kind`` when it
    has one, else its token without the brackets (``<scratch>`` -> ``scratch``)."""
    metadata = getattr(embedding, "metadata", None) or {}
    if metadata.get("defect_kind"):
        return str(metadata["defect_kind"])
    token = str(getattr(embedding, "token", "") or "").strip("<>")
    return token or path.stem
