"""DRAEM's training-sample recipe, as its official code (and the AnoGen fork) makes it.

Facts from the reference ``data_loader.py``: half of the synthetic draws stay clean;
each anomaly texture gets three of the ten augmentations; 30 % of the good images are
rotated by U(-90, 90) degrees (imgaug ``Affine``, black border) before synthesis. The
AnoGen fork rotates 30 % of generated samples the same way (image, source and box
together) and replaces half of its generated draws by their clean source image.
"""

from __future__ import annotations

from anogen.detection.draem.config import DraemConfig
from anogen.detection.pipeline import DataPipeline, Rotation


def draem_pipeline(config: DraemConfig, category: str = "") -> DataPipeline:
    """The same recipe for every category (DRAEM does not look at the category)."""
    return DataPipeline(synthesis_clean_probability=0.5, texture_augmentations=3, generated_clean_probability=0.5,
                        rotation=Rotation(probability=config.rotate_probability, max_degrees=90.0, fill=0.0))
