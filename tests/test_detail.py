"""Restoring the texture the VAE loses, where stage 2 kept the surface."""

from __future__ import annotations

import numpy as np
import pytest

from anogen.diffusion.detail import restore_detail


def _weave(size=48):
    """A fine checker texture, and the smooth version of it a lossy VAE gives back."""
    ys, xs = np.mgrid[:size, :size]
    fine = np.where((ys // 2 + xs // 2) % 2 == 0, 170, 90).astype(np.uint8)
    return np.repeat(fine[:, :, None], 3, axis=2), np.full((size, size, 3), 130, np.uint8)


def test_an_untouched_surface_comes_back_as_the_source():
    source, reconstructed = _weave()
    restored = restore_detail(source, reconstructed.copy(), reconstructed, smoothing=2.0)
    np.testing.assert_array_equal(restored, source)


def test_a_painted_defect_stands_and_the_rest_keeps_its_texture():
    source, reconstructed = _weave()
    generated = reconstructed.copy()
    generated[16:32, 16:32] = 10  # a dark hole the model painted
    restored = restore_detail(source, generated, reconstructed, smoothing=2.0)
    assert (restored[20:28, 20:28] == 10).all(), "the defect's own pixels were overwritten"
    far = np.zeros(source.shape[:2], bool)
    far[:6] = True
    np.testing.assert_array_equal(restored[far], source[far])
    # A faint change (a stain) keeps the model's shift and half the weave (12 of 24 levels).
    faint = np.full_like(reconstructed, 142)
    stained = restore_detail(source, faint, reconstructed, smoothing=2.0).astype(float)
    assert abs(stained.mean() - (source.mean() + 12)) < 0.5
    assert abs(stained.std() - source.astype(float).std() / 2) < 0.5


def test_crops_of_different_sizes_are_refused():
    source, reconstructed = _weave()
    with pytest.raises(ValueError, match="differ in shape"):
        restore_detail(source, reconstructed[:40], reconstructed, smoothing=1.0)
