#!/usr/bin/env python
"""Train the embedded demo model (resources/models/demo-ldm) from a seed.

A small Stable-Diffusion-1.x-style latent diffusion model trained on the procedural
demo data: first a VAE (64 px images -> 16x16x4 latents), then a text-conditioned
UNet together with its CLIP text encoder on good surfaces/parts and generic blemishes
captioned by surface or part (never by the demo's few-shot defect kinds).

    python scripts/train_demo_model.py --out resources/models/demo-ldm --seed 0 \
        --budget-minutes 85 --samples-image docs/images/demo-model-samples.png

With only ``--budget-minutes`` the script times a few steps of each phase and picks
step counts that fit; the counts it used are written to ``training.json`` next to the
weights, and passing them back with ``--vae-steps/--unet-steps`` repeats the run
step for step. The output folder is written all at once (nothing on failure/cancel).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger("train_demo_model")

SAMPLE_PROMPTS = (
    "a photo of fabric",
    "a close-up photo of woven cloth",
    "a photo of fabric with a blemish",
    "a photo of a metal washer",
    "a steel washer",
    "a photo of a metal washer with a blemish",
)


@dataclass
class TrainConfig:
    out: Path
    seed: int = 0
    budget_minutes: float = 85.0  # everything: data, both phases, saving
    vae_fraction: float = 0.25  # share of the training time given to the VAE
    vae_steps: Optional[int] = None  # fixed counts override the budget
    unet_steps: Optional[int] = None
    renders: int = 1000  # demo renders (256 px) the training crops come from
    crops_per_render: int = 6
    vae_batch: int = 16
    vae_crop: int = 32  # the VAE is fully convolutional: train on crops, use at 64 px
    vae_lr: float = 5e-4
    vae_kl_weight: float = 1e-6
    unet_batch: int = 32
    unet_lr: float = 4e-4
    warmup_steps: int = 100
    ema_decay: float = 0.995
    caption_dropout: float = 0.1  # empty prompt, for classifier-free guidance
    min_snr_gamma: float = 5.0
    threads: int = 1
    samples_image: Optional[Path] = None
    log_every: int = 50


@dataclass
class PhaseLog:
    steps: int = 0
    seconds: float = 0.0
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last point)
    final_loss: float = float("nan")  # mean over the last 10 % of steps
    stopped_early: bool = False


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _steps_for(seconds: float, step_time: float, minimum: int = 50) -> int:
    return max(minimum, int(seconds / max(step_time, 1e-3)))


def _to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _run_phase(name: str, step_fn, total: Optional[int], budget_s: float, cfg: TrainConfig,
               deadline: Optional[float] = None) -> PhaseLog:
    """Run ``step_fn(step, total) -> loss``; when ``total`` is None, size it from the budget.

    ``deadline`` (a ``time.perf_counter`` value) is a hard stop for a machine that got
    slower after the step count was chosen; ``training.json`` records the steps run.
    """
    phase = PhaseLog()
    losses: list[float] = []
    started = time.perf_counter()
    probe = 10
    probe_start = started
    step = 0
    planned = total if total is not None else 10**9
    window: list[float] = []
    while step < planned:
        loss = step_fn(step, planned if total is not None or step >= probe else 10**6)
        losses.append(loss)
        window.append(loss)
        if not math.isfinite(loss):
            raise RuntimeError(f"{name}: loss became {loss} at step {step}")
        step += 1
        if step == 2:
            probe_start = time.perf_counter()  # the first steps are slow (allocation, warm-up)
        if total is None and step == probe:
            per_step = (time.perf_counter() - probe_start) / (probe - 2)
            planned = _steps_for(budget_s, per_step)
            log.info("%s: %.2f s/step -> %d steps in %.1f min", name, per_step, planned, budget_s / 60)
        if step % cfg.log_every == 0 or step == planned:
            phase.curve.append((step, float(np.mean(window))))
            log.info("%s step %d/%d loss %.5f (%.1f min)", name, step, planned, np.mean(window),
                     (time.perf_counter() - started) / 60)
            window = []
        if deadline is not None and time.perf_counter() > deadline and step < planned:
            log.warning("%s: out of time, stopping at step %d of %d", name, step, planned)
            phase.stopped_early = True
            break
    phase.steps = step
    phase.seconds = time.perf_counter() - started
    tail = losses[-max(1, len(losses) // 10):]
    phase.final_loss = float(np.mean(tail))
    return phase


def train(cfg: TrainConfig) -> dict:
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
        render_pretraining_samples,
    )

    wall_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model_cfg = DemoModelConfig()
    budget_s = cfg.budget_minutes * 60.0

    # ---- data ------------------------------------------------------------------
    t0 = time.perf_counter()
    samples = render_pretraining_samples(cfg.seed, cfg.renders * cfg.crops_per_render,
                                         resolution=model_cfg.resolution, crops_per_render=cfg.crops_per_render)
    held_out = render_pretraining_samples(cfg.seed + 10_000, 128, resolution=model_cfg.resolution,
                                          crops_per_render=2)
    images = _to_tensor(np.stack([s.image for s in samples]))
    held_images = _to_tensor(np.stack([s.image for s in held_out]))
    data_s = time.perf_counter() - t0
    log.info("rendered %d training crops (+%d held out) in %.1f s", len(samples), len(held_out), data_s)

    # ---- phase 1: VAE ----------------------------------------------------------
    vae = build_vae(model_cfg)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    crop = cfg.vae_crop
    size = model_cfg.resolution

    def vae_step(step: int, total: int) -> float:
        for group in vae_opt.param_groups:
            group["lr"] = cfg.vae_lr * _lr_factor(step, total, cfg.warmup_steps)
        index = torch.randint(0, len(images), (cfg.vae_batch,), generator=generator)
        y, x = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=generator))
        batch = images[index, :, y:y + crop, x:x + crop]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        # L1 on pixels and on image gradients: keeps the weave and edges sharp.
        loss = F.l1_loss(recon, batch)
        loss = loss + 0.5 * F.l1_loss(recon.diff(dim=-1), batch.diff(dim=-1))
        loss = loss + 0.5 * F.l1_loss(recon.diff(dim=-2), batch.diff(dim=-2))
        loss = loss + cfg.vae_kl_weight * posterior.kl().mean()
        vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        vae_opt.step()
        return float(loss.detach())

    train_s = budget_s - (time.perf_counter() - wall_start) - 240.0  # keep time to encode, save, sample
    vae.train()
    vae_log = _run_phase("vae", vae_step, cfg.vae_steps, max(60.0, train_s * cfg.vae_fraction), cfg)
    vae.eval()

    # ---- latents ---------------------------------------------------------------
    @torch.no_grad()
    def encode(batch_images):
        means, stds = [], []
        for chunk in batch_images.split(128):
            dist = vae.encode(chunk).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        return torch.cat(means), torch.cat(stds)

    latent_mean, latent_std = encode(images)
    scaling_factor = float(1.0 / latent_mean.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    with torch.no_grad():
        held_mean, _ = encode(held_images)
        recon = torch.cat([vae.decode(c).sample for c in held_mean.split(128)]).clamp(-1, 1)
    vae_l1 = float((recon - held_images).abs().mean() / 2 * 255)  # mean abs error in 8-bit levels
    mse = float(((recon - held_images) / 2).pow(2).mean())
    vae_psnr = float(10 * math.log10(1.0 / max(mse, 1e-12)))
    log.info("VAE held-out: mean abs error %.2f levels, PSNR %.2f dB, scaling factor %.4f",
             vae_l1, vae_psnr, scaling_factor)

    # ---- phase 2: text encoder + UNet -----------------------------------------
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(model_cfg, tokenizer)
    unet = build_unet(model_cfg)
    scheduler = build_scheduler()
    token_ids = tokenizer([s.caption for s in samples], padding="max_length", max_length=tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids
    empty_ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                          return_tensors="pt").input_ids
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    unet.train()
    text_encoder.train()

    def unet_step(step: int, total: int) -> float:
        for group in opt.param_groups:
            group["lr"] = cfg.unet_lr * _lr_factor(step, total, cfg.warmup_steps)
        index = torch.randint(0, len(samples), (cfg.unet_batch,), generator=generator)
        noise_z = torch.randn(latent_mean[index].shape, generator=generator)
        latents = (latent_mean[index] + latent_std[index] * noise_z) * scaling_factor
        ids = token_ids[index].clone()
        drop = torch.rand(len(index), generator=generator) < cfg.caption_dropout
        ids[drop] = empty_ids
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        pred = unet(noisy, timesteps, text_encoder(ids)[0]).sample
        # Min-SNR weighting: faster, steadier convergence for epsilon prediction.
        weight = torch.clamp(snr[timesteps], max=cfg.min_snr_gamma) / snr[timesteps]
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for shadow, p in zip(ema, params):
                shadow.lerp_(p.detach(), 1 - decay)
        return float(loss.detach())

    train_s = budget_s - (time.perf_counter() - wall_start) - 150.0
    unet_log = _run_phase("unet", unet_step, cfg.unet_steps, max(60.0, train_s), cfg,
                          deadline=None if cfg.unet_steps else wall_start + budget_s - 90.0)
    with torch.no_grad():
        for shadow, p in zip(ema, params):
            p.copy_(shadow)
    unet.eval()
    text_encoder.eval()

    # Held-out denoising loss of the EMA weights at fixed noise levels (plain MSE).
    held_ids = tokenizer([s.caption for s in held_out], padding="max_length", max_length=tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    eval_gen = torch.Generator().manual_seed(1234)
    held_losses = []
    with torch.no_grad():
        held_latents = held_mean * scaling_factor
        for t in (200, 500, 800):
            noise = torch.randn(held_latents.shape, generator=eval_gen)
            steps_t = torch.full((len(held_latents),), t)
            pred = torch.cat([unet(n, s, text_encoder(i)[0]).sample for n, s, i in
                              zip(scheduler.add_noise(held_latents, noise, steps_t).split(64), steps_t.split(64),
                                  held_ids.split(64))])
            held_losses.append(float((pred - noise).pow(2).mean()))
    held_denoise = float(np.mean(held_losses))
    log.info("UNet held-out denoising MSE %.4f (t=200, 500, 800: %s)", held_denoise,
             ", ".join(f"{v:.3f}" for v in held_losses))

    # ---- save ------------------------------------------------------------------
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    report = {
        "command": " ".join(sys.argv),
        "seed": cfg.seed,
        "threads": cfg.threads,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "model": model_cfg.to_dict(),
        "training_crops": len(samples),
        "data_seconds": round(data_s, 1),
        "vae": {"steps": vae_log.steps, "stopped_early": vae_log.stopped_early, "seconds": round(vae_log.seconds, 1), "final_loss": vae_log.final_loss,
                "curve": vae_log.curve, "held_out_mean_abs_error_8bit": vae_l1, "held_out_psnr_db": vae_psnr,
                "scaling_factor": scaling_factor},
        "unet": {"steps": unet_log.steps, "stopped_early": unet_log.stopped_early, "seconds": round(unet_log.seconds, 1), "final_loss": unet_log.final_loss,
                 "curve": unet_log.curve, "held_out_denoising_mse": held_denoise,
                 "held_out_denoising_mse_by_t": dict(zip(("200", "500", "800"), held_losses))},
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in
                       (("vae", vae), ("text_encoder", text_encoder), ("unet", unet))},
    }
    with staged_directory(cfg.out) as folder:
        folder.chmod(0o755)  # mkdtemp makes it private; these are ordinary data files
        # VAE and UNet stored in half precision (diffusers loads them as float32 by
        # default); the small text encoder stays float32, which transformers keeps.
        vae.to(torch.float16)
        unet.to(torch.float16)
        pipe.save_pretrained(folder, safe_serialization=True)
        vae.to(torch.float32)
        unet.to(torch.float32)
        report["wall_seconds"] = round(time.perf_counter() - wall_start, 1)
        atomic_write_json(folder / "training.json", report)
    log.info("saved %s (%.1f min in all)", cfg.out, report["wall_seconds"] / 60)

    if cfg.samples_image is not None:
        write_sample_grid(cfg.out, cfg.samples_image, seed=cfg.seed)
    return report


def write_sample_grid(model_dir: Path, image_path: Path, *, seed: int = 0, steps: int = 30,
                      guidance: float = 4.0) -> None:
    """Real demo crops, their VAE reconstructions, and text-to-image samples per prompt."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from anogen.data.imageio import write_image
    from anogen.diffusion.demo_model import render_pretraining_samples

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    real = render_pretraining_samples(seed + 20_000, 6, resolution=size, crops_per_render=1)
    real_images = _to_tensor(np.stack([s.image for s in real]))
    with torch.no_grad():
        latents = pipe.vae.encode(real_images).latent_dist.mean
        recon = pipe.vae.decode(latents).sample.clamp(-1, 1)
    rows = [np.hstack([s.image for s in real]),
            np.hstack(list(((recon.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)))]
    for prompt in SAMPLE_PROMPTS:
        out = pipe([prompt] * 6, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(seed), output_type="np").images
        rows.append(np.hstack(list((out * 255).round().astype(np.uint8))))
    grid = np.vstack(rows)
    grid = np.repeat(np.repeat(grid, 2, axis=0), 2, axis=1)  # 2x nearest: small images stay visible
    write_image(image_path, grid)
    log.info("wrote %s (rows: real crops, VAE reconstructions, then prompts: %s)", image_path,
             "; ".join(SAMPLE_PROMPTS))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("resources/models/demo-ldm"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-minutes", type=float, default=85.0)
    parser.add_argument("--vae-steps", type=int, default=None)
    parser.add_argument("--unet-steps", type=int, default=None)
    parser.add_argument("--renders", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is kind to a shared machine)")
    parser.add_argument("--samples-image", type=Path, default=None,
                        help="also write a PNG grid of reconstructions and samples")
    parser.add_argument("--samples-only", action="store_true",
                        help="only write --samples-image from the model already in --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.samples_only:
        if args.samples_image is None:
            parser.error("--samples-only needs --samples-image")
        import torch

        torch.set_num_threads(args.threads)
        write_sample_grid(args.out, args.samples_image, seed=args.seed)
        return 0
    cfg = TrainConfig(out=args.out, seed=args.seed, budget_minutes=args.budget_minutes, vae_steps=args.vae_steps,
                      unet_steps=args.unet_steps, renders=args.renders, threads=args.threads,
                      samples_image=args.samples_image)
    report = train(cfg)
    print(json.dumps({k: report[k] for k in ("wall_seconds", "seed")} |
                     {"vae_steps": report["vae"]["steps"], "unet_steps": report["unet"]["steps"],
                      "vae_final_loss": report["vae"]["final_loss"], "unet_final_loss": report["unet"]["final_loss"],
                      "unet_held_out_mse": report["unet"]["held_out_denoising_mse"],
                      "vae_psnr_db": report["vae"]["held_out_psnr_db"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
