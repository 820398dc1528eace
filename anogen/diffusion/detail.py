"""Keep the good image's fine texture where stage 2 did not paint a defect.

A latent diffusion model only paints what its VAE can decode: a small VAE, or a context
crop shrunk to the model's resolution, turns a fine weave into its mean colour, and the
whole box comes back as a smooth patch even where the model meant to keep the surface.
Decoding the good image's own latent shows exactly what that round trip loses. Where the
generated crop still matches that reconstruction, the lost detail (source minus
reconstruction) is added back; where the model changed the surface, its pixels stand. A
box the model left alone thus comes back as the source, and a defect keeps its own look.
"""

from __future__ import annotations

import cv2
import numpy as np

# A change of this many grey levels (mean over RGB, after smoothing) counts as painted.
DEFAULT_CHANGE_LEVELS = 24.0


def restore_detail(source: np.ndarray, generated: np.ndarray, reconstructed: np.ndarray, *, smoothing: float,
                   change_levels: float = DEFAULT_CHANGE_LEVELS) -> np.ndarray:
    """``generated`` with the detail its VAE lost put back where it matches ``reconstructed``.

    All three are RGB uint8 crops of one size: the good image, the generated crop and the
    good image passed through the same resize and VAE round trip. ``smoothing`` (pixels,
    a Gaussian sigma) makes the change map ignore the texture itself, so about one latent
    cell at the crop's scale. Returns uint8.
    """
    if not source.shape == generated.shape == reconstructed.shape:
        raise ValueError(f"crops differ in shape: {source.shape}, {generated.shape}, {reconstructed.shape}")
    src, gen, rec = (a.astype(np.float32) for a in (source, generated, reconstructed))
    change = np.abs(gen - rec).mean(axis=2)
    if smoothing > 0:
        change = cv2.GaussianBlur(change, (0, 0), smoothing)
    kept = np.clip(1.0 - change / change_levels, 0.0, 1.0)[:, :, None]
    return np.clip(np.rint(gen + kept * (src - rec)), 0, 255).astype(np.uint8)
