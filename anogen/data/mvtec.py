"""The MVTec AD categories and their defect kinds (the dataset's folder names).

Used to recognise a known category (its texture/object type decides where boxes may go)
and to check that the box-size table covers every kind.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Category -> defect kinds, as the dataset's ``test/<kind>`` folders name them (good excluded).
MVTEC_AD_KINDS: dict[str, tuple[str, ...]] = {
    "bottle": ("broken_large", "broken_small", "contamination"),
    "cable": ("bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation",
              "missing_cable", "missing_wire", "poke_insulation"),
    "capsule": ("crack", "faulty_imprint", "poke", "scratch", "squeeze"),
    "carpet": ("color", "cut", "hole", "metal_contamination", "thread"),
    "grid": ("bent", "broken", "glue", "metal_contamination", "thread"),
    "hazelnut": ("crack", "cut", "hole", "print"),
    "leather": ("color", "cut", "fold", "glue", "poke"),
    "metal_nut": ("bent", "color", "flip", "scratch"),
    "pill": ("color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch"),
    "screw": ("manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"),
    "tile": ("crack", "glue_strip", "gray_stroke", "oil", "rough"),
    "toothbrush": ("defective",),
    "transistor": ("bent_lead", "cut_lead", "damaged_case", "misplaced"),
    "wood": ("color", "combined", "hole", "liquid", "scratch"),
    "zipper": ("broken_teeth", "combined", "fabric_border", "fabric_interior", "rough", "split_teeth",
               "squeezed_teeth"),
}

#: The texture categories: the whole image is the surface a defect can appear on.
TEXTURE_CATEGORIES: frozenset[str] = frozenset({"carpet", "grid", "leather", "tile", "wood"})
OBJECT_CATEGORIES: frozenset[str] = frozenset(MVTEC_AD_KINDS) - TEXTURE_CATEGORIES


def category_of_folder(folder: str | os.PathLike) -> str | None:
    """The MVTec AD category of a folder in the dataset's layout, or None.

    Recognises ``<category>/train/good``, ``<category>/test/<kind>`` and the category
    folder itself; any other folder (a user's own data) gives None.
    """
    parts = Path(folder).resolve().parts
    for depth in (1, 3):  # CAT itself, or CAT/{train,test}/<sub>
        if len(parts) >= depth:
            name = parts[-depth]
            if name in MVTEC_AD_KINDS and (depth == 1 or parts[-2] in ("train", "test")):
                return name
    return None
