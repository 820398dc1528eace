"""Stage 2 benchmark: our sampler against diffusers' inpainting pipeline, and peak memory.

Two measurements, written to ``docs/benchmarks-stage2.md``:

``compare`` (default)
    Time per image of :func:`anogen.diffusion.sampler.generate` against diffusers'
    ``StableDiffusionInpaintPipeline`` driving the same 4-channel UNet (its blended
    latent path), on the same tiny random model, images, boxes, steps, guidance and
    batch size. Our run is instrumented: the time spent inside UNet and VAE calls is
    summed, the rest (text encoding, scheduler arithmetic, blending, crops, resizes,
    pixel composite) is the overhead the target caps at 5 %.

``memory``
    Peak resident memory (``ru_maxrss``) of a fresh process that builds the full-size
    Stable Diffusion 1.5 architecture with random weights (UNet 860 M parameters, VAE,
    12-layer 768-d CLIP text encoder) and generates one 512 px image with 2 DDIM steps
    and guidance 10 on the CPU. Slow (a minute or two); run it once.

Usage::

    python benchmarks/bench_stage2.py compare [--steps 20] [--images 8] [--batch 4] [--repeats 3]
    python benchmarks/bench_stage2.py memory
    python benchmarks/bench_stage2.py all          # both, then write the report

Results are merged into docs/benchmarks-stage2.md (each part replaced by its latest run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# The SD 1.5 architecture with random weights, shared with the stage-1 benchmark (this folder is
# on sys.path when a benchmark runs as a script).
from bench_stage1 import build_sd15_random

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks-stage2.md"
RAW_MARKER = "<!-- raw results (bench_stage2.py reads them back to merge runs): "


# ----------------------------------------------------------------------------- timers


class CallTimer:
    """Sums wall time spent inside selected methods of module instances."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list = []

    def wrap(self, name: str, owner: object, method: str) -> None:
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, method, timed)  # an instance attribute shadows the class method
        self._undo.append((owner, method))

    def restore(self) -> None:
        for owner, method in self._undo:
            delattr(owner, method)
        self._undo.clear()

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@contextmanager
def timed_networks(unet, vae):
    timer = CallTimer()
    timer.wrap("unet", unet, "forward")
    timer.wrap("vae.encode", vae, "encode")
    timer.wrap("vae.decode", vae, "decode")
    try:
        yield timer
    finally:
        timer.restore()


# ----------------------------------------------------------------------------- compare


def _good_images(count: int, size: int) -> list[np.ndarray]:
    """Smooth synthetic 'good' images (a lit disc on a gradient), distinct per index."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for i in range(count):
        rng = np.random.default_rng(i)
        base = 60 + 80 * xs + 40 * ys
        disc = ((xs - 0.5) ** 2 + (ys - 0.5) ** 2) < 0.12
        rgb = np.stack([base + 60 * disc * rng.uniform(0.5, 1.0) for _ in range(3)], axis=-1)
        rgb += rng.normal(0, 4, rgb.shape)
        images.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return images


def run_compare(steps: int, count: int, batch: int, repeats: int, resolution: int) -> dict:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline
    from PIL import Image

    from anogen.data.box import Box
    from anogen.diffusion.config import GenerateConfig
    from anogen.diffusion.embedding_file import LearnedEmbedding, apply_embedding
    from anogen.diffusion.models import load_model
    from anogen.diffusion.sampler import GenerationRequest, generate
    from anogen.diffusion.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        model = load_model(build_tiny_model(Path(folder) / "tiny", "sd1", resolution=resolution), device="cpu")
    token = apply_embedding(model, LearnedEmbedding(
        token="<bench>", vector=torch.randn(model.token_width, generator=torch.Generator().manual_seed(0)),
        family=model.family))
    images = _good_images(count, resolution)
    side = resolution // 2
    box = Box(resolution // 4, resolution // 4, resolution // 4 + side, resolution // 4 + side)
    requests = [GenerationRequest(image, box, seed) for seed, image in enumerate(images)]
    config = GenerateConfig(steps=steps, guidance=10.0, batch_size=batch, crop="off")

    pipe = StableDiffusionInpaintPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=DDIMScheduler.from_config(model.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    mask = Image.fromarray(box.to_mask(resolution, resolution).astype(np.uint8) * 255)

    def ours() -> None:
        generate(model, token, requests, config)

    def theirs() -> None:
        for start in range(0, count, batch):
            chunk = images[start:start + batch]
            pipe(prompt=[token] * len(chunk), image=[Image.fromarray(im) for im in chunk],
                 mask_image=[mask] * len(chunk), height=resolution, width=resolution, strength=1.0,
                 num_inference_steps=steps, guidance_scale=10.0, output_type="np",
                 generator=[torch.Generator().manual_seed(start + i) for i in range(len(chunk))])

    ours(), theirs()  # warm-up: first calls pay for lazy initialisation
    times = {"ours": [], "diffusers": []}
    breakdown = []
    for _ in range(repeats):
        with timed_networks(model.unet, model.vae) as timer:
            start = time.perf_counter()
            ours()
            elapsed = time.perf_counter() - start
        times["ours"].append(elapsed)
        breakdown.append({"total": elapsed, **timer.seconds, "calls": dict(timer.calls)})
        start = time.perf_counter()
        theirs()
        times["diffusers"].append(time.perf_counter() - start)

    best = min(range(repeats), key=lambda i: times["ours"][i])
    split = breakdown[best]
    networks = sum(v for k, v in split.items() if k.startswith(("unet", "vae")))
    ours_best = min(times["ours"]) / count
    theirs_best = min(times["diffusers"]) / count
    return {
        "resolution": resolution, "steps": steps, "guidance": 10.0, "images": count, "batch": batch,
        "repeats": repeats, "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
        "ours_s_per_image": ours_best, "diffusers_s_per_image": theirs_best, "ratio": ours_best / theirs_best,
        "ours_all_s": times["ours"], "diffusers_all_s": times["diffusers"],
        "unet_s": split.get("unet", 0.0), "vae_s": split.get("vae.encode", 0.0) + split.get("vae.decode", 0.0),
        "outside_fraction": (split["total"] - networks) / split["total"], "calls": split["calls"],
    }


# ----------------------------------------------------------------------------- memory


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory_child(steps: int) -> dict:
    """Runs in a fresh process so ru_maxrss belongs to this measurement alone."""
    import torch

    from anogen.data.box import Box
    from anogen.diffusion.config import GenerateConfig
    from anogen.diffusion.embedding_file import LearnedEmbedding, apply_embedding
    from anogen.diffusion.sampler import GenerationRequest, generate

    start = time.perf_counter()
    model, params = build_sd15_random()
    build_s = time.perf_counter() - start
    token = apply_embedding(model, LearnedEmbedding(token="<bench>", vector=torch.randn(768), family="sd1"))
    after_build_peak, after_build_now = _rss_mib(), _current_rss_mib()
    image = _good_images(1, 512)[0]
    start = time.perf_counter()
    with timed_networks(model.unet, model.vae) as timer:
        generate(model, token, [GenerationRequest(image, Box(160, 160, 352, 352), 0)],
                 GenerateConfig(steps=steps, guidance=10.0, batch_size=1, crop="off"))
    generate_s = time.perf_counter() - start
    return {"params": params, "build_s": build_s, "generate_s": generate_s, "steps": steps,
            "unet_s": timer.seconds.get("unet", 0.0),
            "vae_s": timer.seconds.get("vae.encode", 0.0) + timer.seconds.get("vae.decode", 0.0),
            "rss_after_build_mib": after_build_now, "peak_after_build_mib": after_build_peak,
            "peak_total_mib": _rss_mib(), "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0]}


def run_memory(steps: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "memory-child", "--steps", str(steps)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"memory run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def write_report(results: dict) -> None:
    lines = ["# Stage 2 benchmarks", "",
             "Written by `benchmarks/bench_stage2.py` (see its docstring); numbers from the last run of each part.",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, "
             f"torch {_version('torch')}, diffusers {_version('diffusers')}.", ""]
    compare = results.get("compare")
    if compare:
        lines += [
            "## Time per image: ours vs diffusers' StableDiffusionInpaintPipeline", "",
            f"Tiny random SD 1.x model (`build_tiny_model`, {compare['resolution']} px, 4-channel UNet), "
            f"{compare['images']} images, a {compare['resolution'] // 2} px box each, DDIM {compare['steps']} steps, "
            f"guidance {compare['guidance']:g}, batch {compare['batch']}, {compare['threads']} torch thread(s), "
            f"best of {compare['repeats']} interleaved runs (load average at start {compare['load_average']:.1f}).", "",
            "| | s / image | ratio |", "|---|---|---|",
            f"| diffusers `StableDiffusionInpaintPipeline` (4-channel blended path) | "
            f"{compare['diffusers_s_per_image']:.4f} | 1.00 |",
            f"| ours (`anogen.diffusion.sampler.generate`) | {compare['ours_s_per_image']:.4f} | "
            f"**{compare['ratio']:.2f}x** (target <= 1.0x) |", "",
            f"Our best run: UNet {compare['unet_s']:.3f} s ({compare['calls'].get('unet', 0)} calls), "
            f"VAE {compare['vae_s']:.3f} s; time outside UNet and VAE calls: "
            f"**{100 * compare['outside_fraction']:.1f} %** (target <= 5 %). The tiny UNet makes this the worst "
            "case: with a real model the networks dominate even more.", "",
            _spread_note(compare),
            f"All runs, seconds for {compare['images']} images: ours "
            f"{', '.join(f'{t:.3f}' for t in compare['ours_all_s'])}; diffusers "
            f"{', '.join(f'{t:.3f}' for t in compare['diffusers_all_s'])}.", "",
            "Reproduce: `python benchmarks/bench_stage2.py compare --steps "
            f"{compare['steps']} --images {compare['images']} --batch {compare['batch']} "
            f"--repeats {compare['repeats']} "
            f"--threads {compare['threads']}`", ""]
    memory = results.get("memory")
    if memory:
        params = memory["params"]
        lines += [
            "## Peak memory: full-size Stable Diffusion 1.5 architecture, 512 px, CPU", "",
            f"Random weights: UNet {params['unet'] / 1e6:.0f} M, VAE {params['vae'] / 1e6:.0f} M, text encoder "
            f"{params['text_encoder'] / 1e6:.0f} M parameters, float32. One 512 px image, a 192 px box, "
            f"{memory['steps']} DDIM steps, guidance 10 (UNet batch 2), {memory['threads']} torch threads, "
            f"load average {memory['load_average']:.1f} at the end (the times reflect a busy shared machine; "
            "the memory does not depend on it).", "",
            "| | |", "|---|---|",
            f"| resident memory after building the model | {memory['rss_after_build_mib'] / 1024:.2f} GiB |",
            f"| peak resident memory, whole process | **{memory['peak_total_mib'] / 1024:.2f} GiB** |",
            "| peak above the loaded model | "
            f"{(memory['peak_total_mib'] - memory['rss_after_build_mib']) / 1024:.2f} GiB |",
            f"| generation time ({memory['steps']} steps) | {memory['generate_s']:.1f} s "
            f"(UNet {memory['unet_s']:.1f} s, VAE {memory['vae_s']:.1f} s; outside them "
            f"{100 * (1 - (memory['unet_s'] + memory['vae_s']) / memory['generate_s']):.1f} %) |", "",
            "No GPU was lent to this task, so there is no GPU figure. Reproduce: "
            "`python benchmarks/bench_stage2.py memory`", ""]
    lines.append(RAW_MARKER + json.dumps(results) + " -->")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")


def read_previous_results() -> dict:
    """The raw numbers of earlier runs, kept at the end of the report."""
    if not REPORT.is_file():
        return {}
    for line in REPORT.read_text().splitlines():
        if line.startswith(RAW_MARKER):
            return json.loads(line[len(RAW_MARKER):-len(" -->")])
    return {}


def _spread_note(compare: dict) -> str:
    """Say plainly when the difference is smaller than the noise of a shared machine."""
    spread = max(max(compare["ours_all_s"]) - min(compare["ours_all_s"]),
                 max(compare["diffusers_all_s"]) - min(compare["diffusers_all_s"])) / compare["images"]
    difference = abs(compare["ours_s_per_image"] - compare["diffusers_s_per_image"])
    if difference < spread:
        return (f"The difference ({difference:.4f} s/image) is smaller than the run-to-run spread "
                f"({spread:.4f} s/image) on this shared machine: read it as parity with diffusers "
                "(the target is <= 1.0x).\n")
    return ""


def _version(name: str) -> str:
    try:
        module = __import__(name)
        return getattr(module, "__version__", "?")
    except ImportError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("compare", "memory", "all", "report", "memory-child"), nargs="?",
                        default="compare", help="report: rewrite the report from the stored raw results")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (compare: 20, memory: 2)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.what == "memory-child":
        print(json.dumps(memory_child(args.steps or 2)))
        return
    results = read_previous_results()
    if args.what in ("compare", "all"):
        results["compare"] = run_compare(args.steps or 20, args.images, args.batch, args.repeats, args.resolution)
        print(json.dumps(results["compare"], indent=1))
    if args.what in ("memory", "all"):
        results["memory"] = run_memory(args.steps or 2)
        print(json.dumps(results["memory"], indent=1))
    write_report(results)
    print(f"report: {REPORT}")


if __name__ == "__main__":
    main()
