"""YOLO detection labels (Ultralytics / darknet)::

    OUT/images/<name>.png
    OUT/labels/<name>.txt    one line per box: class x_centre y_centre width height (0..1)
    OUT/data.yaml            path, train/val image folders, class names by index

Classes are the defect kinds, sorted by name. The box is the sample's axis-aligned box
(for a rotated box, its bounds).
"""

from __future__ import annotations

import json
from pathlib import Path

from anogen.data.exports import ExportInput, copy_file
from anogen.data.imageio import image_size


def yolo_line(cls: int, box: tuple[int, int, int, int], width: int, height: int) -> str:
    x0, y0, x1, y1 = box
    return (f"{cls} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
            f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")


def write_yolo(data: ExportInput, out: Path) -> dict[str, int]:
    classes = {kind: index for index, kind in enumerate(data.kinds)}
    (out / "labels").mkdir()
    for sample in data.samples:
        copy_file(sample.image_path, out / "images" / f"{sample.name}.png")
        width, height = image_size(sample.image_path)
        line = yolo_line(classes[sample.kind], sample.box, width, height)
        (out / "labels" / f"{sample.name}.txt").write_text(line + "\n", encoding="utf-8")
    # JSON strings are valid YAML scalars, so names with ':' or quotes stay safe without a YAML writer.
    names = "\n".join(f"  {index}: {json.dumps(kind)}" for kind, index in classes.items())
    (out / "data.yaml").write_text(f"path: .\ntrain: images\nval: images\nnames:\n{names}\n", encoding="utf-8")
    return {"samples": len(data.samples), "classes": len(classes)}
