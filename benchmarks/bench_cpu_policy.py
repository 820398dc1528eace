#!/usr/bin/env python
"""The CPU compute policy, measured: 1 thread vs every core, fp32 vs bf16 autocast.

For each stage (a stage-1 learning step and one stage-2 image on the embedded demo
model, a DRAEM and a DeSTSeg training step and DRAEM inference at the ``quick``
preset) the median time over ``--repeats`` runs after a warm-up, for every pair of
thread count and precision. Prints a Markdown table with the ratios and writes JSON.

    python benchmarks/bench_cpu_policy.py --json benchmarks/results/cpu_policy.json

``--wait-policy`` measures instead how OpenMP's idle threads wait (``OMP_WAIT_POLICY``
spinning vs sleeping, each in a fresh process since the runtime reads it once): every
stage with all cores in fp32, alone and beside a one-thread busy process (another job,
a browser, the test suite):

    python benchmarks/bench_cpu_policy.py --wait-policy --json benchmarks/results/openmp_wait.json

Run it on an idle machine: other heavy processes make every number meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# The detector benchmark's timer and training step (this folder is on sys.path when a
# benchmark runs as a script).
from bench_detectors import median_seconds, training_step


def stage_learn_step():
    """Forward + backward of the demo UNet on a batch of 4 support crops (what stage 1 does per step)."""
    import torch

    from anogen.diffusion.models import load_model
    from anogen.resources import demo_model_path

    model = load_model(str(demo_model_path()), device="cpu")
    latent = model.resolution // model.vae_scale_factor
    channels = model.unet.config.in_channels
    vector = torch.zeros(model.token_width, requires_grad=True)
    ids = model.tokenize(["a photo of a defect"] * 4)

    def step() -> None:
        text = model.encode_token_ids(ids) + vector
        noise = model.unet(torch.randn(4, channels, latent, latent), torch.tensor([500] * 4), text).sample
        noise.pow(2).mean().backward()

    return step


def stage_generate_image():
    """One 64 px crop generated with 20 DDIM steps and guidance (stage 2's inner loop)."""
    import numpy as np

    from anogen.data.box import Box
    from anogen.diffusion.config import GenerateConfig
    from anogen.diffusion.embedding_file import add_placeholder_token
    from anogen.diffusion.models import load_model
    from anogen.diffusion.sampler import GenerationRequest, generate
    from anogen.resources import demo_model_path

    model = load_model(str(demo_model_path()), device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    request = GenerationRequest(image=image, box=Box(40, 40, 70, 70), seed=0)
    config = GenerateConfig(steps=20, guidance=5.0)
    add_placeholder_token(model, "<bench-defect>")  # an untrained row: the timing is the same
    return lambda: generate(model, "<bench-defect>", [request], config)


def stage_detector_step(kind: str):
    step, _config = training_step(kind, "quick")
    return step


def stage_inference():
    import torch

    from anogen.detection.registry import build_detector

    detector = build_detector("draem", preset="quick", for_loading=True).eval()
    size = detector.config.image_size
    images = torch.rand(8, 3, size, size)

    def infer() -> None:
        with torch.no_grad():
            detector(images)

    return infer


STAGES = {
    "stage-1 learning step": stage_learn_step,
    "stage-2 image (20 steps)": stage_generate_image,
    "DRAEM quick training step": lambda: stage_detector_step("draem"),
    "DeSTSeg quick training step": lambda: stage_detector_step("destseg"),
    "DRAEM quick inference (8 images)": stage_inference,
}


# A one-thread job that keeps one core busy, standing in for whatever else the machine runs.
BUSY_NEIGHBOUR = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\n"
                  "while True:\n    a = torch.tanh(a @ a)\n")


def time_stage_alone(name: str, repeats: int) -> float:
    """This process's median time of ``name`` at every core in fp32 (the --one-stage child)."""
    import torch

    from anogen.compute import available_cores

    torch.set_num_threads(available_cores())
    return median_seconds(STAGES[name](), repeats)


def time_stage_in_child(name: str, wait_policy: str, neighbour: bool, repeats: int) -> float:
    """``wait_policy`` "spin" is libgomp's own default (spin a while, then sleep), "sleep" is PASSIVE."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if wait_policy == "sleep":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    busy = subprocess.Popen([sys.executable, "-c", BUSY_NEIGHBOUR]) if neighbour else None
    try:
        out = subprocess.run([sys.executable, __file__, "--one-stage", name, "--repeats", str(repeats)],
                             env=env, check=True, capture_output=True, text=True).stdout
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return float(out.strip().splitlines()[-1])


def wait_policy_table(stages: list[str], repeats: int, out: Path) -> None:
    from anogen.compute import available_cores

    cores = available_cores()
    print(f"{cores} cores, every core in fp32, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for name in stages:
        times = {f"{policy}{' + busy neighbour' if neighbour else ''}":
                 time_stage_in_child(name, policy, neighbour, repeats)
                 for neighbour in (False, True) for policy in ("spin", "sleep")}
        rows.append({"stage": name, "seconds": times})
        print(name, {k: round(v, 3) for k, v in times.items()}, flush=True)
    print("\n| stage | spin (default), alone (s) | sleep (PASSIVE), alone (s) | spin, busy neighbour (s) "
          "| sleep, busy neighbour (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        t = row["seconds"]
        print(f"| {row['stage']} | {t['spin']:.3f} | {t['sleep']:.3f} | "
              f"{t['spin + busy neighbour']:.3f} | {t['sleep + busy neighbour']:.3f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": cores, "threads": cores, "precision": "fp32", "stages": rows}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/cpu_policy.json"))
    parser.add_argument("--wait-policy", action="store_true", help="compare OpenMP's spinning and sleeping waits")
    parser.add_argument("--one-stage", help=argparse.SUPPRESS)  # the child process of --wait-policy
    args = parser.parse_args()
    if args.one_stage:
        print(time_stage_alone(args.one_stage, args.repeats))
        return
    if args.wait_policy:
        wait_policy_table(args.stages, args.repeats, args.json)
        return

    import torch

    from anogen.compute import available_cores, cpu_has_fast_bf16

    cores = available_cores()
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {cores} cores, native bf16: {cpu_has_fast_bf16()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, load average {load:.1f}")
    rows = []
    for name in args.stages:
        fn = STAGES[name]()
        times = {}
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            for precision in ("fp32", "bf16"):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    times[f"{threads}t {precision}"] = median_seconds(fn, args.repeats)
        rows.append({"stage": name, "seconds": times})
        print(name, {k: round(v, 3) for k, v in times.items()}, flush=True)

    many = f"{cores}t"
    print(f"\n| stage | 1 thread fp32 (s) | {cores} threads fp32 (s) | {cores} threads / 1 "
          f"| bf16 / fp32 ({cores} threads) |")
    print("|---|---|---|---|---|")
    for row in rows:
        t = row["seconds"]
        print(f"| {row['stage']} | {t['1t fp32']:.3f} | {t[f'{many} fp32']:.3f} | "
              f"{t['1t fp32'] / t[f'{many} fp32']:.2f}x faster | {t[f'{many} bf16'] / t[f'{many} fp32']:.2f}x time |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cores": cores, "native_bf16": cpu_has_fast_bf16(), "load_average": load,
                                     "torch": torch.__version__, "stages": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
