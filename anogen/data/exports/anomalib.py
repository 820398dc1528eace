"""anomalib's ``Folder`` dataset layout::

    OUT/good/<name>.<ext>        defect-free images (normal_dir)
    OUT/abnormal/<name>.png      generated defect images (abnormal_dir)
    OUT/masks/<name>.png         their box masks, 0/255, the same file name (mask_dir)
    OUT/anomalib_folder.json     the Folder arguments that load it

Why these names: anomalib's ``make_folder_dataset`` (anomalib 2.x,
``anomalib/data/datasets/image/folder.py``) sorts every image path, pairs the i-th
abnormal image with the i-th mask, and refuses the pair unless the image's stem is
contained in the mask's stem; identical names in ``abnormal/`` and ``masks/`` satisfy both.
Its ``read_mask`` takes any non-zero pixel of the grey image as anomalous.
"""

from __future__ import annotations

import json
from pathlib import Path

from anogen.data.exports import ExportInput, copy_file, unique_names
from anogen.data.imageio import encode_png

NORMAL_DIR = "good"
ABNORMAL_DIR = "abnormal"
MASK_DIR = "masks"
CONFIG_NAME = "anomalib_folder.json"


def folder_arguments(name: str = "anogen") -> dict[str, str]:
    """Keyword arguments of ``anomalib.data.Folder`` for an export (``root`` is the export folder)."""
    return {"name": name, "normal_dir": NORMAL_DIR, "abnormal_dir": ABNORMAL_DIR, "mask_dir": MASK_DIR}


def write_anomalib(data: ExportInput, out: Path) -> dict[str, int]:
    for path, name in zip(data.goods, unique_names(data.goods)):
        copy_file(path, out / NORMAL_DIR / name)
    (out / ABNORMAL_DIR).mkdir()
    (out / MASK_DIR).mkdir()
    for sample in data.samples:
        copy_file(sample.image_path, out / ABNORMAL_DIR / f"{sample.name}.png")
        (out / MASK_DIR / f"{sample.name}.png").write_bytes(encode_png(sample.mask()))
    config = {**folder_arguments(), "root": ".", "kinds": data.kinds,
              "note": "anomalib.data.Folder(root=<this folder>, **the other keys except kinds and note)"}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"samples": len(data.samples), "good": len(data.goods)}
