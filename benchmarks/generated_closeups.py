"""Close-ups of generated defects from several generated sets, side by side.

Each row is one set (e.g. the same demo seed painted by two diffusion models); each
tile is one sample cropped around its box (the box plus one box side of context on
every side, so the weave around it shows) and enlarged, with the box outlined.

    RUN=build/abl-zoom/work/seed-3/plan:learn_steps=60,generate_steps=12
    python benchmarks/generated_closeups.py --out docs/images/demo/closeups.png \
        "shipped model=build/seeds-q/seed-3/generated/fabric/all" \
        "closer crops=$RUN/fabric/relearned/generated/fabric/all"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

TILE = 160


def closeup(image: np.ndarray, box: tuple[int, int, int, int], size: int = TILE) -> np.ndarray:
    """The box with one box side of context around it, square, enlarged to ``size``."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * 3
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    height, width = image.shape[:2]
    side = min(side, height, width)
    left = int(np.clip(cx - side // 2, 0, width - side))
    top = int(np.clip(cy - side // 2, 0, height - side))
    crop = image[top:top + side, left:left + side].copy()
    cv2.rectangle(crop, (x0 - left, y0 - top), (x1 - left - 1, y1 - top - 1), (0, 255, 0), 1)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_NEAREST)


def main(argv: list[str] | None = None) -> int:
    from anogen.data.generated import read_generated_set
    from anogen.data.imageio import write_image
    from anogen.demo_report import label_tile, tile_grid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="LABEL=FOLDER of a generated set (manifest.jsonl)")
    parser.add_argument("--per-kind", type=int, default=2, help="samples of each defect kind per row")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)

    rows = []
    for entry in args.sets:
        name, sep, folder = entry.partition("=")
        if not sep:
            parser.error(f"expected LABEL=FOLDER, got {entry!r}")
        samples = read_generated_set(folder)
        kinds = sorted({s.defect_kind for s in samples})
        row = []
        for kind in kinds:
            for sample in [s for s in samples if s.defect_kind == kind][:args.per_kind]:
                row.append(label_tile(closeup(sample.load_image(), sample.box), f"{name}: {kind}", max_chars=28))
        rows.append(row)
    grid = tile_grid(rows, pad=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.out, grid)
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
