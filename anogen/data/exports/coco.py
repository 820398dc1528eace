"""COCO instances: one annotation per generated sample, its box and its box mask::

    OUT/images/<name>.png
    OUT/annotations.json     images, categories (the defect kinds), annotations

``bbox`` is ``[x, y, width, height]`` in pixels. ``segmentation`` is the box mask: a
polygon along the pixel edges when the mask is its filled box (the usual case, which
every COCO reader takes), else compressed RLE (a rotated box), exact either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from anogen.data.annotations.coco import encode_rle
from anogen.data.exports import ExportInput, copy_file

ANNOTATIONS = "annotations.json"


def segmentation(mask: np.ndarray) -> tuple[list | dict, list[int]]:
    """The COCO segmentation and ``[x, y, w, h]`` bbox of a box mask."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    bbox = [x0, y0, x1 - x0, y1 - y0]
    if mask[y0:y1, x0:x1].all():
        return [[x0, y0, x1, y0, x1, y1, x0, y1]], bbox
    return encode_rle(mask), bbox


def write_coco(data: ExportInput, out: Path) -> dict[str, int]:
    categories = [{"id": index + 1, "name": kind, "supercategory": "defect"} for index, kind in enumerate(data.kinds)]
    category_id = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for index, sample in enumerate(data.samples, start=1):
        copy_file(sample.image_path, out / "images" / f"{sample.name}.png")
        mask = sample.mask()
        height, width = mask.shape
        images.append({"id": index, "file_name": f"{sample.name}.png", "width": width, "height": height})
        if not mask.any():
            continue  # a sample whose box mask is empty has nothing to annotate
        shape, bbox = segmentation(mask)
        annotations.append({"id": index, "image_id": index, "category_id": category_id[sample.kind],
                            "bbox": bbox, "area": int(mask.sum()), "iscrowd": 0, "segmentation": shape})
    document = {"info": {"description": "AnoGen generated defects", "version": "1.0"}, "licenses": [],
                "images": images, "categories": categories, "annotations": annotations}
    (out / ANNOTATIONS).write_text(json.dumps(document) + "\n", encoding="utf-8")
    return {"samples": len(images), "annotations": len(annotations)}
