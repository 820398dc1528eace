"""Defect shapes for stage 2: paint a defect's own outline inside its box, not the whole box.

A box says where a defect goes, but a real defect covers only part of its box (the demo's
holes about 45 %, its scratches 30 %), and a model told to paint the whole box fills it.
Given the masks of real defects (the support shots), each sample draws one outline, flipped
at random and fitted into its box, and stage 2 paints only those pixels
(:attr:`anogen.diffusion.sampler.GenerationRequest.shape`). The sample's mask is then that
outline, not the box: the sampler knows exactly which pixels it painted, so the detector
is told where the defect is instead of a box that is mostly good surface.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from anogen.data.box import Box
from anogen.errors import InputError


def defect_outlines(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each mask cut to the bounds of its defect pixels (bool); an empty mask is refused."""
    outlines = []
    for index, mask in enumerate(masks):
        ys, xs = np.nonzero(np.asarray(mask))
        if ys.size == 0:
            raise InputError(f"defect shape {index + 1} is empty: paint the defect in its mask first")
        outlines.append(np.asarray(mask, dtype=bool)[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    return outlines


def fit_outline(outline: np.ndarray, box: Box, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``outline`` flipped at random, turned to lie along ``box``'s longer side and scaled
    (keeping its proportions) to fit in the box at a random place, as a bool mask of the
    image's size; a rotated box keeps the part inside it."""
    if rng.random() < 0.5:
        outline = outline[:, ::-1]
    if rng.random() < 0.5:
        outline = outline[::-1, :]
    area = box.bounds.clip(height, width)
    if (outline.shape[1] > outline.shape[0]) != (area.width > area.height):
        outline = outline.T  # a long scratch lies along a long box, not across it
    scale = min(area.width / outline.shape[1], area.height / outline.shape[0])
    fitted_w = min(area.width, max(1, round(outline.shape[1] * scale)))
    fitted_h = min(area.height, max(1, round(outline.shape[0] * scale)))
    # INTER_AREA then > 0: a thin scratch keeps every pixel it touches when it shrinks.
    fitted = cv2.resize(outline.astype(np.float32), (fitted_w, fitted_h), interpolation=cv2.INTER_AREA) > 0
    x0 = area.x0 + int(rng.integers(area.width - fitted_w + 1))
    y0 = area.y0 + int(rng.integers(area.height - fitted_h + 1))
    shape = np.zeros((height, width), dtype=bool)
    shape[y0:y0 + fitted_h, x0:x0 + fitted_w] = fitted
    if box.is_rotated:
        shape &= box.to_mask(height, width)
    return shape


def draw_shape(outlines: Sequence[np.ndarray], box: Box, height: int, width: int, seed: int) -> np.ndarray | None:
    """One of ``outlines`` fitted to ``box``, drawn with a sample's ``seed`` (the same seed
    draws the same shape, so a preview or a regenerated sample matches its set); None (the
    whole box) when nothing of it lies inside a rotated box."""
    rng = np.random.default_rng(seed)
    shape = fit_outline(outlines[int(rng.integers(len(outlines)))], box, height, width, rng)
    return shape if (shape & box.to_mask(height, width)).any() else None
