"""Time and peak memory of the pixel metrics (AUROC, AP, F1-max and AUPRO in one pass).

    python benchmarks/bench_metrics.py --maps 100 --size 256

Maps are random with blob-shaped defects in half of the images (a few regions each),
scores float32 as a detector produces them. Peak memory is what numpy allocates during
the call (tracemalloc), on top of the inputs. sklearn's pixel AUROC + AP on the same
data is timed for scale (it computes neither AUPRO nor F1-max).
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import cv2
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from anogen.metrics import aupro, pixel_metrics


def make_data(maps: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((maps, size, size), dtype=np.uint8)
    for i in range(0, maps, 2):
        for _ in range(int(rng.integers(1, 4))):
            centre = tuple(int(c) for c in rng.integers(size // 8, size - size // 8, 2))
            axes = tuple(int(a) for a in rng.integers(size // 40 + 1, size // 8, 2))
            cv2.ellipse(masks[i], centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    noise = rng.random((maps, size, size), dtype=np.float32)
    scores = np.stack([cv2.GaussianBlur(n, (0, 0), 3) for n in noise]) + 0.15 * masks
    return scores.astype(np.float32), masks.astype(bool)


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; best of {args.repeats}")
    print("| maps | pixels | aupro() s | pixel_metrics() s | peak extra MB | sklearn AUROC+AP s |")
    print("|---|---|---|---|---|---|")
    for count in args.maps:
        scores, masks = make_data(count, args.size)
        t_aupro = timed(lambda s=scores, m=masks: aupro(s, m), args.repeats)
        t_all = timed(lambda s=scores, m=masks: pixel_metrics(s, m), args.repeats)
        tracemalloc.start()
        pixel_metrics(scores, masks)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        t_sklearn = timed(lambda s=scores, m=masks: (roc_auc_score(m.ravel(), s.ravel()),
                                                     average_precision_score(m.ravel(), s.ravel())), 1)
        print(f"| {count} | {scores.size / 1e6:.1f} M | {t_aupro:.2f} | {t_all:.2f} | {peak / 2**20:.0f} | "
              f"{t_sklearn:.2f} |", flush=True)


if __name__ == "__main__":
    main()
