#!/usr/bin/env python
"""Train the embedded demo model (resources/models/demo-ldm) from a seed.

A small Stable-Diffusion-1.x-style latent diffusion model trained on the procedural
demo data, in two phases:

1. a VAE (64 px images -> 16x16x4 latents), trained until its held-out PSNR stops
   rising;
2. a 9-channel inpainting UNet (latent + box mask + masked-image latent) with its
   CLIP text encoder, trained until the held-out denoising loss stops falling. It
   learns to fill a box on good surfaces/parts with the surrounding texture or with a
   generic blemish named by the caption (never with the demo's few-shot kinds).

    python scripts/train_demo_model.py --out resources/models/demo-ldm --work build/demo-ldm

Every phase checkpoints into ``--work`` and ``--resume`` continues a stopped run from
there, step for step as if it had never stopped (the random generators are saved
too). ``--max-minutes`` bounds one session; run again with ``--resume`` to continue.
The model is published to ``--out`` only when both phases have finished; the steps,
the stopping reason, the held-out curves and the measured speed (steps/s with the
threads, batch and precision used) go to ``training.json`` beside the weights. The
same code runs on CUDA (``--device cuda``), where the whole run takes minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("train_demo_model")

SAMPLE_PROMPTS = (
    "a photo of fabric",
    "a photo of fabric with a blemish",
    "a photo of a metal washer",
    "a photo of a metal washer with a blemish",
)


@dataclass
class TrainConfig:
    out: Path
    work: Path
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # 0: every core
    bf16: bool = False  # autocast; pays only on CPUs with AMX/AVX-512-bf16 (or CUDA)
    renders: int = 1000  # demo renders (256 px) the training crops come from
    crops_per_render: int = 6
    # The crop side as a share of the 256 px render (resized to the model's 64 px). The
    # first model used (0.25, 1.0); stage 2 at a 128 px working size shows the model the
    # weave 2-4x larger, which (0.125, 0.5) covers (docs/demo-model.md).
    crop_scale: tuple[float, float] = (0.25, 1.0)
    # Captions say how each blemish looks ("a dark streak", "blue spots"): without it a
    # caption names a blemish of either polarity and the model paints their grey average.
    tone_captions: bool = False
    held_out: int = 256
    # VAE
    vae_batch: int = 16
    vae_crop: int = 32  # fully convolutional: train on crops, use at 64 px
    vae_lr: float = 5e-4
    vae_kl_weight: float = 1e-6
    vae_max_steps: int = 12000
    vae_eval_every: int = 500
    vae_patience: int = 1  # evaluations without a gain of vae_min_gain_db before the LR drops
    vae_min_gain_db: float = 0.3
    # UNet + text encoder
    unet_batch: int = 32
    unet_lr: float = 4e-4
    warmup_steps: int = 100
    ema_decay: float = 0.995  # a short window: the phase runs a few thousand steps
    caption_dropout: float = 0.1  # empty prompt, for classifier-free guidance
    full_mask_fraction: float = 0.1  # fill the whole crop: plain text-to-image
    min_snr_gamma: float = 5.0
    # Extra loss weight on the latent cells of a blemish (0: none). A blemish covers a few
    # cells of its box, so an unweighted loss lets the model paint the surface's mean.
    blemish_weight: float = 0.0
    unet_max_steps: int = 30000
    unet_eval_every: int = 250
    unet_patience: int = 4  # evaluations without a relative gain of unet_min_gain before the LR drops
    unet_min_gain: float = 0.005
    # On a plateau the learning rate drops by this factor, up to lr_max_drops times;
    # a plateau after the last drop ends the phase (the held-out metric stopped improving).
    lr_drop_factor: float = 0.3
    lr_max_drops: int = 2
    checkpoint_every: int = 250
    max_minutes: float | None = None  # this session's budget; --resume continues
    init_from: Path | None = None  # a published model to continue from (its checkpoints are gone)
    log_every: int = 50


@dataclass
class PhaseState:
    step: int = 0
    seconds: float = 0.0  # training time, summed over sessions
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean training loss)
    held_out: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out metric)
    best: float = float("nan")
    best_step: int = 0
    lr_scale: float = 1.0  # multiplied by lr_drop_factor at each plateau
    lr_drops: int = 0
    warmup_from: int = 0  # the step the learning-rate warm-up restarts at (--init-from: a fresh optimizer)
    done: bool = False
    stop_reason: str = ""


class OutOfTime(Exception):
    """The session budget ended; the last checkpoint holds the progress."""


# ----------------------------------------------------------------------------- helpers

def _to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _psnr(a, b) -> float:
    mse = float(((a - b) / 2).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _save(path: Path, payload: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, weights_only=True)


def _load_data(cfg: TrainConfig, resolution: int) -> dict[str, Any]:
    """Training and held-out crops, rendered once and cached in the work folder."""
    from anogen.diffusion.demo_model import render_pretraining_samples

    cache = cfg.work / "data.npz"
    recipe = {"seed": cfg.seed, "renders": cfg.renders, "crops_per_render": cfg.crops_per_render,
              "held_out": cfg.held_out, "resolution": resolution, "crop_scale": list(cfg.crop_scale)}
    if cfg.tone_captions:  # absent otherwise, so older work folders keep their recipe
        recipe["tone_captions"] = True
    recipe_file = cfg.work / "data.json"
    if cache.exists():
        if recipe_file.exists() and json.loads(recipe_file.read_text()) != recipe:
            raise SystemExit(f"{cache} was rendered with {recipe_file.read_text()}, not {recipe}: "
                             "use another --work folder")
        data = np.load(cache)
        return {k: data[k] for k in data.files} | {"captions": json.loads((cfg.work / "captions.json").read_text())}
    started = time.perf_counter()
    train = render_pretraining_samples(cfg.seed, cfg.renders * cfg.crops_per_render, resolution=resolution,
                                       crops_per_render=cfg.crops_per_render, crop_scale=cfg.crop_scale,
                                       tones=cfg.tone_captions)
    held = render_pretraining_samples(cfg.seed + 10_000, cfg.held_out, resolution=resolution, crops_per_render=2,
                                      crop_scale=cfg.crop_scale, tones=cfg.tone_captions)

    def masks(samples) -> np.ndarray:
        empty = np.zeros((resolution, resolution), bool)
        return np.stack([empty if s.mask is None else s.mask for s in samples])

    data = {"images": np.stack([s.image for s in train]), "masks": masks(train),
            "held_images": np.stack([s.image for s in held]), "held_masks": masks(held)}
    np.savez(cache.with_suffix(".partial.npz"), **data)
    os.replace(cache.with_suffix(".partial.npz"), cache)
    captions = {"train": [s.caption for s in train], "held": [s.caption for s in held]}
    (cfg.work / "captions.json").write_text(json.dumps(captions))
    recipe_file.write_text(json.dumps(recipe))
    log.info("rendered %d training crops (+%d held out) in %.1f s", len(train), len(held),
             time.perf_counter() - started)
    return data | {"captions": captions}


def inpainting_masks(masks: np.ndarray, factor: int, rng: np.random.Generator, full_fraction: float):
    """Box masks on the latent grid, ``(N, 1, h, w)`` float: around each blemish (with a
    random margin, so the blemish fills only part of its box, as in stage 2), a random
    box on a good crop, or the whole crop for a ``full_fraction`` of samples."""
    import torch

    count, size = masks.shape[0], masks.shape[1]
    grid = size // factor
    out = np.zeros((count, 1, grid, grid), np.float32)
    for i in range(count):
        if rng.random() < full_fraction:
            out[i] = 1.0
            continue
        ys, xs = np.nonzero(masks[i])
        if len(xs) and rng.random() < 0.9:
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            mx = (x1 - x0) * rng.uniform(0.0, 0.6) + rng.uniform(0, 4)
            my = (y1 - y0) * rng.uniform(0.0, 0.6) + rng.uniform(0, 4)
            x0, x1, y0, y1 = x0 - mx, x1 + mx, y0 - my, y1 + my
        else:
            w, h = rng.uniform(0.12, 0.6, size=2) * size
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            x1, y1 = x0 + w, y0 + h
        cx0, cy0 = max(0, math.floor(x0 / factor)), max(0, math.floor(y0 / factor))
        cx1, cy1 = min(grid, max(cx0 + 1, math.ceil(x1 / factor))), min(grid, max(cy0 + 1, math.ceil(y1 / factor)))
        out[i, 0, cy0:cy1, cx0:cx1] = 1.0
    return torch.from_numpy(out)


def _warmup(step: int, state: PhaseState, cfg: TrainConfig) -> float:
    return min(1.0, (step + 1 - state.warmup_from) / cfg.warmup_steps)


def _published_state(report: dict[str, Any], phase: str) -> PhaseState:
    """A phase's state as a published ``training.json`` recorded it, to continue from."""
    fields = set(PhaseState.__dataclass_fields__)
    saved = {k: v for k, v in report[phase].items() if k in fields}
    state = PhaseState(**saved)
    state.curve = [tuple(point) for point in state.curve]
    state.held_out = [tuple(point) for point in state.held_out]
    state.warmup_from = state.step  # the optimizer starts fresh
    return state


# ----------------------------------------------------------------------------- a phase

def run_phase(name: str, state: PhaseState, cfg: TrainConfig, *, step_fn: Callable[[int], float],
              evaluate: Callable[[], float], higher_is_better: bool, eval_every: int, patience: int,
              min_gain: Callable[[float], float], max_steps: int, save: Callable[[], None],
              deadline: float | None) -> None:
    """Train until the held-out metric stops improving (or ``max_steps``).

    ``save`` writes a checkpoint of everything (including ``state``); it runs every
    ``checkpoint_every`` steps, at each evaluation and when the session runs out of time.
    """
    window: list[float] = []
    started = time.perf_counter()
    base_seconds = state.seconds
    while not state.done:
        loss = step_fn(state.step)
        if not math.isfinite(loss):
            raise RuntimeError(f"{name}: loss became {loss} at step {state.step}; lower the learning rate")
        window.append(loss)
        state.step += 1
        state.seconds = base_seconds + time.perf_counter() - started
        if state.step % cfg.log_every == 0:
            state.curve.append((state.step, float(np.mean(window))))
            log.info("%s step %d loss %.5f (%.2f s/step)", name, state.step, np.mean(window),
                     state.seconds / state.step)
            window = []
        if state.step % eval_every == 0 or state.step >= max_steps:
            value = evaluate()
            state.held_out.append((state.step, value))
            better = (not math.isfinite(state.best)
                      or (value > state.best if higher_is_better else value < state.best))
            gained = (not math.isfinite(state.best)
                      or (value - state.best if higher_is_better else state.best - value) >= min_gain(state.best))
            if better:
                state.best = value
            if gained:
                state.best_step = state.step
            log.info("%s step %d held-out %.5f (best %.5f at step %d)", name, state.step, value, state.best,
                     state.best_step)
            if state.step - state.best_step >= patience * eval_every:
                if state.lr_drops < cfg.lr_max_drops:
                    state.lr_drops += 1
                    state.lr_scale *= cfg.lr_drop_factor
                    state.best_step = state.step  # a new patience window at the lower rate
                    log.info("%s: plateau at step %d, learning rate x%.3g", name, state.step, state.lr_scale)
                else:
                    state.done = True
                    state.stop_reason = (f"held-out metric flat for {patience} evaluations after "
                                         f"{state.lr_drops} learning-rate drops")
            if not state.done and state.step >= max_steps:
                state.done, state.stop_reason = True, f"reached max steps ({max_steps})"
            save()
        elif state.step % cfg.checkpoint_every == 0:
            save()
        if not state.done and deadline is not None and time.perf_counter() > deadline:
            save()
            raise OutOfTime(f"{name}: session budget used at step {state.step}; continue with --resume")


# ----------------------------------------------------------------------------- training

def train(cfg: TrainConfig, resume: bool, publish_only: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    from anogen.atomic import atomic_write_json, staged_directory
    from anogen.diffusion.demo_model import (
        DemoModelConfig,
        build_scheduler,
        build_text_encoder,
        build_tokenizer,
        build_unet,
        build_vae,
    )

    wall_start = time.perf_counter()
    deadline = None if cfg.max_minutes is None else wall_start + cfg.max_minutes * 60
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = torch.device(cfg.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    cfg.work.mkdir(parents=True, exist_ok=True)
    model_cfg = DemoModelConfig()
    factor = model_cfg.vae_scale_factor
    log.info("config: %s", {k: str(v) for k, v in asdict(cfg).items()})
    log.info("device %s, %d threads, %s", device, threads, "bf16 autocast" if cfg.bf16 else "fp32")

    data = _load_data(cfg, model_cfg.resolution)
    images = _to_tensor(data["images"])
    held_images = _to_tensor(data["held_images"]).to(device)
    size = model_cfg.resolution

    # ---- phase 1: VAE ----------------------------------------------------------
    vae = build_vae(model_cfg).to(device)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    vae_state = PhaseState()
    generator = torch.Generator().manual_seed(cfg.seed)
    vae_file = cfg.work / "vae.pt"
    if resume and vae_file.exists():
        saved = _load(vae_file)
        vae.load_state_dict(saved["model"])
        vae_opt.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        vae_state = PhaseState(**json.loads(saved["state"]))
        log.info("vae: resumed at step %d", vae_state.step)
    elif cfg.init_from is not None:
        from diffusers import AutoencoderKL

        published = json.loads((cfg.init_from / "training.json").read_text())
        vae.load_state_dict(AutoencoderKL.from_pretrained(cfg.init_from, subfolder="vae").float().state_dict())
        vae_state = _published_state(published, "vae")
        log.info("vae: initialised from %s (step %d, done=%s)", cfg.init_from, vae_state.step, vae_state.done)

    def save_vae() -> None:
        _save(vae_file, {"model": vae.state_dict(), "optimizer": vae_opt.state_dict(),
                         "generator": generator.get_state(), "state": json.dumps(asdict(vae_state))})

    def vae_step(step: int) -> float:
        for group in vae_opt.param_groups:
            group["lr"] = cfg.vae_lr * _warmup(step, vae_state, cfg) * vae_state.lr_scale
        index = torch.randint(0, len(images), (cfg.vae_batch,), generator=generator)
        y, x = (int(v) for v in torch.randint(0, size - cfg.vae_crop + 1, (2,), generator=generator))
        batch = images[index, :, y:y + cfg.vae_crop, x:x + cfg.vae_crop].to(device)
        with autocast:
            posterior = vae.encode(batch).latent_dist
            recon = vae.decode(posterior.sample(generator)).sample
        recon = recon.float()
        # L1 on pixels and on image gradients: keeps the weave and edges sharp.
        loss = F.l1_loss(recon, batch)
        loss = loss + 0.5 * F.l1_loss(recon.diff(dim=-1), batch.diff(dim=-1))
        loss = loss + 0.5 * F.l1_loss(recon.diff(dim=-2), batch.diff(dim=-2))
        loss = loss + cfg.vae_kl_weight * posterior.kl().mean()
        vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        vae_opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def vae_psnr() -> float:
        vae.eval()
        recon = torch.cat([vae.decode(vae.encode(c).latent_dist.mean).sample for c in held_images.split(64)])
        vae.train()
        return _psnr(recon.clamp(-1, 1), held_images)

    if publish_only and not vae_state.done:
        raise SystemExit("--publish needs a finished VAE phase in --work")
    if not vae_state.done:
        vae.train()
        run_phase("vae", vae_state, cfg, step_fn=vae_step, evaluate=vae_psnr, higher_is_better=True,
                  eval_every=cfg.vae_eval_every, patience=cfg.vae_patience,
                  min_gain=lambda best: cfg.vae_min_gain_db, max_steps=cfg.vae_max_steps, save=save_vae,
                  deadline=deadline)
    vae.eval().requires_grad_(False)

    # ---- latents ---------------------------------------------------------------
    @torch.no_grad()
    def encode(batch_images):
        means, stds = [], []
        for chunk in batch_images.split(128):
            dist = vae.encode(chunk.to(device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
        return torch.cat(means), torch.cat(stds)

    latent_mean, latent_std = encode(images)
    # Unit-variance latents for the UNet. The scale is fixed once per run (kept in the
    # work folder for --resume); a run continuing a published model keeps that model's
    # scale, which its UNet learned with, even when the training crops changed.
    scale_file = cfg.work / "latent_scale.json"
    if scale_file.exists():
        scaling_factor = float(json.loads(scale_file.read_text())["scaling_factor"])
    elif cfg.init_from is not None:
        scaling_factor = float(json.loads((cfg.init_from / "training.json").read_text())["vae"]["scaling_factor"])
    else:
        scaling_factor = float(1.0 / latent_mean.std())
    scale_file.write_text(json.dumps({"scaling_factor": scaling_factor}))
    vae.register_to_config(scaling_factor=scaling_factor)
    held_mean, _ = encode(held_images)
    vae_psnr_final = vae_psnr()
    log.info("VAE held-out PSNR %.2f dB, scaling factor %.4f", vae_psnr_final, scaling_factor)

    def masked_latents_of(pixels, latent_masks):
        pixel_masks = F.interpolate(latent_masks, scale_factor=factor, mode="nearest")
        with torch.no_grad():
            return torch.cat([vae.encode(c.to(device)).latent_dist.mean.cpu()
                              for c in (pixels * (1.0 - pixel_masks)).split(128)]) * scaling_factor

    # ---- phase 2: text encoder + inpainting UNet -------------------------------
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(model_cfg, tokenizer).to(device)
    unet = build_unet(model_cfg).to(device)
    scheduler = build_scheduler()

    def tokens(captions: list[str]):
        return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    token_ids = tokens(data["captions"]["train"])
    held_ids = tokens(data["captions"]["held"])
    empty_ids = tokens([""])
    # The latent cells a blemish touches, for blemish_weight.
    blemish_cells = F.adaptive_max_pool2d(torch.from_numpy(data["masks"]).float()[:, None],
                                          data["masks"].shape[-1] // factor)
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    unet_state = PhaseState()
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    mask_rng = np.random.default_rng(cfg.seed + 2)
    unet_file = cfg.work / "unet.pt"
    if resume and unet_file.exists():
        saved = _load(unet_file)
        unet.load_state_dict(saved["unet"])
        text_encoder.load_state_dict(saved["text_encoder"])
        ema_unet.load_state_dict(saved["ema_unet"])
        ema_text.load_state_dict(saved["ema_text"])
        opt.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        mask_rng.bit_generator.state = json.loads(saved["mask_rng"])
        unet_state = PhaseState(**json.loads(saved["state"]))
        log.info("unet: resumed at step %d", unet_state.step)
    elif cfg.init_from is not None:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        published = json.loads((cfg.init_from / "training.json").read_text())
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(cfg.init_from, subfolder="unet").float().state_dict())
        text_encoder.load_state_dict(CLIPTextModel.from_pretrained(cfg.init_from, subfolder="text_encoder")
                                     .float().state_dict())
        ema_unet.load_state_dict(unet.state_dict())  # what was published is the EMA
        ema_text.load_state_dict(text_encoder.state_dict())
        unet_state = _published_state(published, "unet")
        unet_state.done, unet_state.stop_reason = False, ""  # "published before convergence": go on
        # The held-out crops may differ from the published run's (other renders or crop
        # scale): the plateau rule starts over on this run's own held-out numbers.
        unet_state.best, unet_state.best_step = float("nan"), unet_state.step
        log.info("unet: initialised from %s at step %d", cfg.init_from, unet_state.step)

    def save_unet() -> None:
        _save(unet_file, {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                          "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
                          "optimizer": opt.state_dict(), "generator": generator.get_state(),
                          "mask_rng": json.dumps(mask_rng.bit_generator.state),
                          "state": json.dumps(asdict(unet_state))})

    def unet_step(step: int) -> float:
        for group in opt.param_groups:
            group["lr"] = cfg.unet_lr * _warmup(step, unet_state, cfg) * unet_state.lr_scale
        index = torch.randint(0, len(images), (cfg.unet_batch,), generator=generator)
        noise_z = torch.randn(latent_mean[index].shape, generator=generator)
        latents = (latent_mean[index] + latent_std[index] * noise_z) * scaling_factor
        box = inpainting_masks(data["masks"][index.numpy()], factor, mask_rng, cfg.full_mask_fraction)
        masked = masked_latents_of(images[index], box)
        ids = token_ids[index].clone()
        drop = torch.rand(len(index), generator=generator) < cfg.caption_dropout
        ids[drop] = empty_ids
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        model_input = torch.cat([noisy, box, masked], dim=1).to(device)
        with autocast:
            pred = unet(model_input, timesteps.to(device), text_encoder(ids.to(device))[0]).sample
        # Min-SNR weighting: faster, steadier convergence for epsilon prediction.
        weight = (torch.clamp(snr[timesteps], max=cfg.min_snr_gamma) / snr[timesteps]).to(device)
        squared = (pred.float() - noise.to(device)).pow(2)
        if cfg.blemish_weight:
            squared = squared * (1.0 + cfg.blemish_weight * blemish_cells[index].to(device))
        loss = (weight * squared.mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for shadow, p in zip(ema_params, params):
                shadow.lerp_(p.detach(), 1 - decay)
        return float(loss.detach())

    # Held-out denoising loss of the EMA weights: fixed masks, noise and noise levels.
    held_rng = np.random.default_rng(1234)
    held_box = inpainting_masks(data["held_masks"], factor, held_rng, cfg.full_mask_fraction)
    held_masked = masked_latents_of(held_images.cpu(), held_box)
    held_latents = held_mean * scaling_factor
    eval_gen = torch.Generator().manual_seed(1234)
    held_levels = (100, 300, 500, 700, 900)
    held_noise = [torch.randn(held_latents.shape, generator=eval_gen) for _ in held_levels]

    @torch.no_grad()
    def held_out_loss(by_level: bool = False):
        losses = []
        for t, noise in zip(held_levels, held_noise):
            steps_t = torch.full((len(held_latents),), t)
            noisy = scheduler.add_noise(held_latents, noise, steps_t)
            model_input = torch.cat([noisy, held_box, held_masked], dim=1)
            with autocast:
                pred = torch.cat([ema_unet(x.to(device), s.to(device), ema_text(i.to(device))[0]).sample.float().cpu()
                                  for x, s, i in zip(model_input.split(64), steps_t.split(64), held_ids.split(64))])
            # Only inside the box: outside it the answer is visible in the masked image.
            inside = held_box.expand_as(pred)
            losses.append(float(((pred - noise).pow(2) * inside).sum() / inside.sum()))
        return losses if by_level else float(np.mean(losses))

    if publish_only and not unet_state.done:
        unet_state.stop_reason = f"published before convergence, at step {unet_state.step}"
    if not unet_state.done and not publish_only:
        unet.train()
        text_encoder.train()
        run_phase("unet", unet_state, cfg, step_fn=unet_step, evaluate=held_out_loss, higher_is_better=False,
                  eval_every=cfg.unet_eval_every, patience=cfg.unet_patience,
                  min_gain=lambda best: cfg.unet_min_gain * best, max_steps=cfg.unet_max_steps, save=save_unet,
                  deadline=deadline)
    held_by_level = held_out_loss(by_level=True)

    # ---- save ------------------------------------------------------------------
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(vae=vae.cpu(), text_encoder=ema_text.cpu(), tokenizer=tokenizer,
                                          unet=ema_unet.cpu(), scheduler=scheduler, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)

    def phase_report(state: PhaseState, batch: int) -> dict[str, Any]:
        return asdict(state) | {"seconds": round(state.seconds, 1),
                                "steps_per_second": round(state.step / max(state.seconds, 1e-9), 4),
                                "samples_per_second": round(batch * state.step / max(state.seconds, 1e-9), 2)}

    report = {
        "command": " ".join(sys.argv),
        "seed": cfg.seed,
        "device": str(device),
        "threads": threads,
        "precision": "bf16 autocast" if cfg.bf16 else "fp32",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "model": model_cfg.to_dict(),
        "training_crops": len(images),
        "vae": phase_report(vae_state, cfg.vae_batch) | {"held_out_psnr_db": vae_psnr_final,
                                                         "scaling_factor": scaling_factor},
        "unet": phase_report(unet_state, cfg.unet_batch) | {
            "held_out_box_mse": float(np.mean(held_by_level)),
            "held_out_box_mse_by_t": dict(zip(map(str, held_levels), held_by_level))},
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in
                       (("vae", vae), ("text_encoder", ema_text), ("unet", ema_unet))},
    }
    with staged_directory(cfg.out) as folder:
        folder.chmod(0o755)  # mkdtemp makes it private; these are ordinary data files
        # VAE and UNet stored in half precision (diffusers loads them as float32 by
        # default); the small text encoder stays float32, which transformers keeps.
        vae.to(torch.float16)
        ema_unet.to(torch.float16)
        pipe.save_pretrained(folder, safe_serialization=True)
        atomic_write_json(folder / "training.json", report)
    log.info("saved %s", cfg.out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("resources/models/demo-ldm"))
    parser.add_argument("--work", type=Path, default=Path("build/demo-ldm"),
                        help="checkpoints and the rendered data (kept for --resume)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --work")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="continue training a published model folder (e.g. resources/models/demo-ldm) when "
                             "its checkpoints are gone: weights and step counts carry over, the optimizer starts "
                             "fresh with a new warm-up")
    parser.add_argument("--publish", action="store_true",
                        help="publish the checkpoints in --work to --out as they are, without training further")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: every core)")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast (faster only with AMX/AVX-512-bf16 or on CUDA; 6-14x slower on AVX2)")
    parser.add_argument("--renders", type=int, default=1000)
    parser.add_argument("--vae-max-steps", type=int, default=TrainConfig.vae_max_steps)
    parser.add_argument("--unet-max-steps", type=int, default=TrainConfig.unet_max_steps)
    parser.add_argument("--unet-batch", type=int, default=TrainConfig.unet_batch)
    parser.add_argument("--crop-scale", type=float, nargs=2, default=TrainConfig.crop_scale, metavar=("MIN", "MAX"),
                        help="training crop side as a share of the 256 px render (default: %(default)s)")
    parser.add_argument("--tone-captions", action="store_true",
                        help="captions say how each blemish looks ('a dark streak'); a new --work folder")
    parser.add_argument("--blemish-weight", type=float, default=TrainConfig.blemish_weight,
                        help="extra loss weight on a blemish's latent cells (default: %(default)s)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop this session after so many minutes (checkpointed; continue with --resume)")
    args = parser.parse_args(argv)
    low, high = args.crop_scale
    if not 0 < low <= high <= 1:
        parser.error(f"--crop-scale needs 0 < MIN <= MAX <= 1, got {low} {high}")
    if not (math.isfinite(args.blemish_weight) and args.blemish_weight >= 0):
        parser.error(f"--blemish-weight must be a number >= 0, got {args.blemish_weight}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = TrainConfig(out=args.out, work=args.work, seed=args.seed, device=args.device, threads=args.threads,
                      bf16=args.bf16, renders=args.renders, vae_max_steps=args.vae_max_steps,
                      unet_max_steps=args.unet_max_steps, unet_batch=args.unet_batch, max_minutes=args.max_minutes,
                      init_from=args.init_from, crop_scale=tuple(args.crop_scale), tone_captions=args.tone_captions,
                      blemish_weight=args.blemish_weight)
    try:
        report = train(cfg, resume=args.resume or args.publish, publish_only=args.publish)
    except OutOfTime as stop:
        log.warning("%s", stop)
        return 3
    print(json.dumps({"vae_steps": report["vae"]["step"], "vae_psnr_db": report["vae"]["held_out_psnr_db"],
                      "unet_steps": report["unet"]["step"], "unet_held_out": report["unet"]["held_out_box_mse"],
                      "unet_stop": report["unet"]["stop_reason"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
