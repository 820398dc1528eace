#!/usr/bin/env python
"""How good is a demo diffusion model? VAE fidelity and sample quality, weight-free.

    python benchmarks/bench_demo_model.py --model resources/models/demo-ldm \
        --baseline OLD_MODEL_DIR --json benchmarks/results/demo_model.json \
        --grid docs/images/demo-model-samples.png

* VAE: PSNR and SSIM of 64 px crops of held-out demo images (both categories, good
  and defective) after encode/decode, and PSNR inside the defect masks alone.
* Samples: ProGAN's sliced Wasserstein distance (:func:`anogen.quality.sliced_wasserstein`)
  between ``--samples`` model samples and as many real crops, next to real-vs-real
  (the floor). An inpainting model is sampled with the whole crop masked.
* A grid: real crops, reconstructions, then samples per prompt.

Held-out means rendered from seeds the training never used (the training script
renders from ``--seed`` and ``--seed + 10000``; this uses 50 000 and up).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PROMPTS = ("a photo of fabric", "a photo of a metal washer", "a photo of fabric with a blemish",
           "a photo of a metal washer with a blemish")


def held_out_crops(count: int, seed: int = 50_000, size: int = 64, good_only: bool = False,
                   crop_scale: tuple[float, float] = (0.25, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """64 px crops of demo *dataset* images (good and every defect kind) and their masks;
    a crop's side is a ``crop_scale`` share of the 256 px image's."""
    import cv2

    from anogen.data.demo import sample_rng
    from anogen.data.demo_render import DEFECT_KINDS, render_defect, render_good

    crops, masks = [], []
    rng = np.random.default_rng(seed)
    index = 0
    while len(crops) < count:
        for category, kinds in DEFECT_KINDS.items():
            for kind in ("good",) + (() if good_only else kinds):
                sample = sample_rng(seed, category, "bench", kind, index)
                if kind == "good":
                    image, _ = render_good(category, sample, 256)
                    mask = np.zeros(image.shape[:2], bool)
                else:
                    image, mask = render_defect(category, kind, sample, 256)
                side = int(rng.integers(round(256 * crop_scale[0]), round(256 * crop_scale[1]) + 1))
                if mask.any():  # crop around the defect so its pixels are measured
                    ys, xs = np.nonzero(mask)
                    cy, cx = int(np.median(ys)), int(np.median(xs))
                    y0 = int(np.clip(cy - side // 2, 0, 256 - side))
                    x0 = int(np.clip(cx - side // 2, 0, 256 - side))
                else:
                    y0, x0 = (int(v) for v in rng.integers(0, 256 - side + 1, 2))
                crop = image[y0:y0 + side, x0:x0 + side]
                crop_mask = mask[y0:y0 + side, x0:x0 + side].astype(np.uint8)
                crops.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
                masks.append(cv2.resize(crop_mask, (size, size), interpolation=cv2.INTER_NEAREST) > 0)
        index += 1
    return np.stack(crops[:count]), np.stack(masks[:count])


def _tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _uint8(batch) -> np.ndarray:
    return ((batch.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def vae_report(model, crops: np.ndarray, masks: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    import torch

    from anogen.quality import psnr, ssim

    with torch.no_grad():
        recon = np.concatenate([_uint8(model.decode_latents(model.encode_images(chunk)))
                                for chunk in _tensor(crops).split(64)])
    psnrs = [psnr(a, b) for a, b in zip(crops, recon)]
    ssims = [ssim(a, b) for a, b in zip(crops, recon)]
    defect = [psnr(a, b, m) for a, b, m in zip(crops, recon, masks) if m.any()]
    return {"crops": len(crops), "psnr_db": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "defect_crops": len(defect), "psnr_in_defect_masks_db": float(np.mean(defect))}, recon


def sample(model, prompts: list[str], seed: int, steps: int, guidance: float, batch: int = 32) -> np.ndarray:
    """Text-to-image samples with a plain DDIM loop (inpainting UNets: whole crop masked)."""
    import torch
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    latent = model.resolution // model.vae_scale_factor
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        generator = torch.Generator().manual_seed(seed + start)
        ids = model.tokenizer(list(chunk) + [""] * len(chunk), padding="max_length",
                              max_length=model.tokenizer.model_max_length, truncation=True,
                              return_tensors="pt").input_ids
        with torch.no_grad():
            text = model.text_encoder(ids)[0]
            latents = torch.randn((len(chunk), model.latent_channels, latent, latent), generator=generator)
            extra = None
            if model.is_inpainting:
                mask = torch.ones((len(chunk), 1, latent, latent))
                blank = model.encode_images(torch.zeros((len(chunk), 3, model.resolution, model.resolution)))
                extra = torch.cat([mask, blank], dim=1).repeat(2, 1, 1, 1)
            scheduler.set_timesteps(steps)
            for t in scheduler.timesteps:
                x = torch.cat([latents, latents])
                if extra is not None:
                    x = torch.cat([x, extra], dim=1)
                cond, uncond = model.unet(x, t, encoder_hidden_states=text).sample.chunk(2)
                latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents, eta=0.0).prev_sample
            out.append(_uint8(model.decode_latents(latents)))
    return np.concatenate(out)


def measure(model_dir: str, crops: np.ndarray, masks: np.ndarray, floor_crops: np.ndarray, samples: int,
            steps: int, guidance: float, grid: Path | None) -> dict[str, Any]:
    from anogen.diffusion.models import load_model
    from anogen.quality import sliced_wasserstein

    model = load_model(model_dir, device="cpu")
    started = time.perf_counter()
    vae, recon = vae_report(model, crops, masks)
    prompts = [PROMPTS[i % 2] for i in range(samples)]  # good fabric and washers, as the real crops
    fake = sample(model, prompts, seed=0, steps=steps, guidance=guidance)
    real = floor_crops[:samples]
    swd = sliced_wasserstein(real, fake)
    report = {"model": model_dir, "inpainting_unet": model.is_inpainting, "vae": vae,
              "swd_x1000": {"mean": swd.mean, "per_level": swd.per_level}, "samples": samples,
              "sampler": {"steps": steps, "guidance": guidance}, "seconds": round(time.perf_counter() - started, 1)}
    if grid is not None:
        from anogen.data.imageio import write_image

        rows = [np.hstack(list(crops[:8])), np.hstack(list(recon[:8]))]
        for prompt in PROMPTS:
            rows.append(np.hstack(list(sample(model, [prompt] * 8, seed=1, steps=steps, guidance=guidance))))
        picture = np.vstack(rows)
        write_image(grid, np.repeat(np.repeat(picture, 2, axis=0), 2, axis=1))
        report["grid"] = str(grid)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resources/models/demo-ldm")
    parser.add_argument("--baseline", default=None, help="another model folder to measure the same way")
    parser.add_argument("--crops", type=int, default=256)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--grid", type=Path, default=None, help="PNG of crops, reconstructions and samples")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/demo_model.json"))
    parser.add_argument("--crop-scale", type=float, nargs=2, default=(0.25, 1.0), metavar=("MIN", "MAX"),
                        help="real crops' side as a share of the 256 px image (0.125 0.5: stage 2's scale at a "
                             "128 px working size)")
    args = parser.parse_args(argv)

    import os

    import torch

    from anogen.atomic import atomic_write_json
    from anogen.quality import sliced_wasserstein

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    scale = tuple(args.crop_scale)
    crops, masks = held_out_crops(args.crops, crop_scale=scale)
    # Real good crops for the distance: one set vs the samples, a disjoint one for the floor.
    good = [i for i in range(len(crops)) if not masks[i].any()]
    real_good, _ = held_out_crops(2 * args.samples, seed=60_000, good_only=True, crop_scale=scale)
    floor_a, floor_b = real_good[:args.samples], real_good[args.samples:]
    floor = sliced_wasserstein(floor_a, floor_b)
    results: dict[str, Any] = {"crop_scale": list(scale),
                               "real_vs_real_swd_x1000": {"mean": floor.mean, "per_level": floor.per_level},
                               "held_out_crops": len(crops), "good_crops": len(good)}
    results["model"] = measure(args.model, crops, masks, floor_a, args.samples, args.steps, args.guidance, args.grid)
    if args.baseline:
        results["baseline"] = measure(args.baseline, crops, masks, floor_a, args.samples, args.steps, args.guidance,
                                      None)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
