"""The MVTec AD category layout, which ``anogen train --data`` and most anomaly detection
code read::

    OUT/train/good/<name>.<ext>                  defect-free images
    OUT/test/<kind>/<name>.png                   generated defect images, one folder per kind
    OUT/ground_truth/<kind>/<name>_mask.png      their box masks, 0/255
"""

from __future__ import annotations

from pathlib import Path

from anogen.data.exports import ExportInput, copy_file, unique_names
from anogen.data.imageio import encode_png


def write_mvtec(data: ExportInput, out: Path) -> dict[str, int]:
    for path, name in zip(data.goods, unique_names(data.goods)):
        copy_file(path, out / "train" / "good" / name)
    for sample in data.samples:
        copy_file(sample.image_path, out / "test" / sample.kind / f"{sample.name}.png")
        mask = out / "ground_truth" / sample.kind / f"{sample.name}_mask.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        mask.write_bytes(encode_png(sample.mask()))
    return {"samples": len(data.samples), "good": len(data.goods)}
