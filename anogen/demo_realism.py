"""Do the demo's generated defects look like its real ones?

For each defect kind, two weight-free numbers (:mod:`anogen.quality`), measured the
same way on generated samples and on the real test defects of that kind:

* the share of the box that changed visibly: a real hole covers part of its box;
* the sharpness ratio: Laplacian variance in the box vs the same region of the good
  image; a blurred patch falls far below 1.

The demo can do this for real defects because its renderer paints a defect image as
its good twin plus changes inside the mask (:mod:`anogen.data.demo_render`): the
good twin of every real test defect is rendered again from the same seed, and the
real defect's box is its mask's bounding box.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from anogen.quality import changed_fraction, sharpness_ratio


@dataclass
class RealismStats:
    count: int
    changed_fraction: float  # mean over samples
    sharpness_ratio: float  # median over samples (a ratio: robust to a few flat boxes)

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def _stats(pairs: Iterable[tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]]) -> RealismStats:
    changed, sharp = [], []
    for source, defect, box in pairs:
        changed.append(changed_fraction(source, defect, box))
        sharp.append(sharpness_ratio(source, defect, box))
    if not changed:
        return RealismStats(0, float("nan"), float("nan"))
    return RealismStats(len(changed), float(np.mean(changed)), float(np.median(sharp)))


def generated_realism(generated_dir: Path, kind: str) -> RealismStats:
    """Over the samples of ``kind`` in a generated set, against their source images."""
    from anogen.data.generated import read_generated_set
    from anogen.data.imageio import read_image

    def pairs():
        for sample in read_generated_set(generated_dir):
            if sample.defect_kind == kind:
                yield read_image(sample.source), sample.load_image(), tuple(sample.box)

    return _stats(pairs())


def real_realism(category_dir: Path, category: str, kind: str, seed: int, size: int) -> RealismStats:
    """Over the real test defects of ``kind`` in a demo dataset written with ``seed``."""
    from anogen.data.demo import sample_rng
    from anogen.data.demo_render import render_good
    from anogen.data.imageio import read_image, read_mask

    def pairs():
        for path in sorted((category_dir / "test" / kind).glob("*.png")):
            mask = read_mask(category_dir / "ground_truth" / kind / f"{path.stem}_mask.png")
            if not mask.any():
                continue
            good, _ = render_good(category, sample_rng(seed, category, "test", kind, int(path.stem)), size)
            ys, xs = np.nonzero(mask)
            yield good, read_image(path), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    return _stats(pairs())
