"""DeSTSeg's training-sample recipe, as its official code makes it.

Facts from the reference ``data/mvtec_dataset.py`` and ``train.py``: every synthetic
draw is anomalous (``aug_prob=1.0``) and the DTD texture is blended as it is, without
augmentation. Good images are rotated by category before synthesis, with a grey
(114, 114, 114) border:

* ``none``: aligned objects (capsule, metal_nut, pill, toothbrush, transistor);
* ``slight``: U(-5, 5) degrees (wood, zipper, cable);
* ``full``: a random multiple of 90 degrees, then U(-5, 5) (bottle, grid, hazelnut,
  leather, tile, carpet, screw).

The AnoGen fork applies the same rotation to generated samples (image, source and box
together) and never replaces a generated draw by its clean source.
"""

from __future__ import annotations

from anogen.detection.destseg.config import DestsegConfig
from anogen.detection.pipeline import DataPipeline, Rotation

ROTATION_BY_CATEGORY: dict[str, str] = {
    **dict.fromkeys(("capsule", "metal_nut", "pill", "toothbrush", "transistor"), "none"),
    **dict.fromkeys(("wood", "zipper", "cable"), "slight"),
    **dict.fromkeys(("bottle", "grid", "hazelnut", "leather", "tile", "carpet", "screw"), "full"),
}

ROTATIONS: dict[str, Rotation] = {
    "none": Rotation(),
    "slight": Rotation(probability=1.0, max_degrees=5.0, fill=114 / 255),
    "full": Rotation(probability=1.0, max_degrees=5.0, right_angles=True, fill=114 / 255),
}


def rotation_for(config: DestsegConfig, category: str) -> Rotation:
    """``config.rotation``, where ``auto`` looks the MVTec AD category up. An unknown
    category gets none: rotating a part that only ever appears upright would teach the
    detector that a turned part is normal."""
    name = config.rotation
    if name == "auto":
        name = ROTATION_BY_CATEGORY.get(category, "none")
    return ROTATIONS[name]


def destseg_pipeline(config: DestsegConfig, category: str = "") -> DataPipeline:
    return DataPipeline(synthesis_clean_probability=0.0, texture_augmentations=0, generated_clean_probability=0.0,
                        rotation=rotation_for(config, category))
