"""Throughput of DRAEM-style anomaly synthesis (samples per second).

    python benchmarks/bench_synthesis.py --size 256 --samples 2000 --workers 1 2

Each worker is a separate process with its own generator, like a data-loader worker;
the clock runs from when all workers are ready until the last one finishes. Good
images are procedural stand-ins (their content does not change the cost). Use
``--textures-dir`` to time a texture folder (e.g. DTD) instead of the built-in sources.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import cv2
import numpy as np

from anogen.detection.synthesis import AnomalySynthesizer, SynthesisConfig
from anogen.detection.textures import procedural_texture


def _good_images(size: int, count: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(123)
    return [procedural_texture(size, size, rng, "noise") for _ in range(count)]


def _run(worker: int, samples: int, size: int, textures_dir: str | None, cv2_threads: int | None,
         ready, start, results) -> None:
    if cv2_threads is not None:
        cv2.setNumThreads(cv2_threads)
    good = _good_images(size)
    synth = AnomalySynthesizer(SynthesisConfig(size=size, textures_dir=textures_dir), good, seed=0)
    images = [g.astype(np.float32) / 255.0 for g in good]
    rng = np.random.default_rng([7, worker])
    for i in range(50):  # warm-up: texture bank, caches
        synth.sample(images[i % len(images)], rng)
    ready.wait()
    start.wait()
    began, cpu_began = time.perf_counter(), time.process_time()
    anomalies = 0
    for i in range(samples):
        anomalies += synth.sample(images[i % len(images)], rng).has_anomaly
    results.put((time.perf_counter() - began, time.process_time() - cpu_began, anomalies))


def measure(workers: int, samples: int, size: int, textures_dir: str | None,
            cv2_threads: int | None) -> tuple[float, float, float]:
    """(samples per wall second over all workers, samples per CPU second of one worker,
    fraction of samples with an anomaly). On a busy machine the second number is the
    steadier one: it is what one idle core would deliver."""
    context = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    ready, start, results = context.Barrier(workers + 1), context.Barrier(workers + 1), context.Queue()
    per_worker = samples // workers
    processes = [context.Process(target=_run,
                                 args=(w, per_worker, size, textures_dir, cv2_threads, ready, start, results))
                 for w in range(workers)]
    for p in processes:
        p.start()
    ready.wait()
    began = time.perf_counter()
    start.wait()
    outcomes = [results.get() for _ in processes]
    wall = time.perf_counter() - began
    for p in processes:
        p.join()
    total = per_worker * workers
    cpu = sum(c for _, c, _ in outcomes)
    return total / wall, total / cpu, sum(a for _, _, a in outcomes) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=2000, help="samples in total per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--textures-dir", default=None)
    parser.add_argument("--cv2-threads", type=int, default=1,
                        help="cv2.setNumThreads in each worker (data-loader workers should use 1); -1 = OpenCV default")
    args = parser.parse_args()
    cv2_threads = None if args.cv2_threads < 0 else args.cv2_threads
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"size {args.size}, {args.samples} samples, textures: {args.textures_dir or 'built-in'}")
    print("| workers | samples/s wall (best) | all runs | samples per CPU-second per worker | anomalous share | load |")
    print("|---|---|---|---|---|---|")
    for workers in args.workers:
        runs = [measure(workers, args.samples, args.size, args.textures_dir, cv2_threads) for _ in range(args.repeats)]
        rates = [r for r, _, _ in runs]
        print(f"| {workers} | {max(rates):.0f} | {' '.join(f'{r:.0f}' for r in rates)} | "
              f"{max(c for _, c, _ in runs):.0f} | {runs[0][2]:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
