"""Stage 1's loss mask on the latent grid, made as the reference code makes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anogen.data.imageio import write_image, write_mask
from anogen.diffusion.config import LearnConfig
from anogen.diffusion.learn import encode_support, latent_loss_masks, prepare_support


@pytest.fixture(scope="module")
def model_256(tmp_path_factory):
    """A tiny model at the reference's 256 px (a 32 x 32 latent grid)."""
    from anogen.diffusion.models import load_model
    from anogen.diffusion.tiny import build_tiny_model

    return load_model(build_tiny_model(tmp_path_factory.mktemp("m") / "model", "sd1", resolution=256), device="cpu")


@pytest.mark.parametrize("side", [512, 1024])
def test_a_known_mask_covers_the_reference_cell_count(model_256, tmp_path, side):
    # A defect that is 40 x 24 px at 256 px, on a 512 px and a 1024 px (MVTec-sized) mask.
    # The reference resizes the mask bicubic to 256, then samples each latent cell at
    # pixels 8i+3 and 8i+4: columns 12-17 and rows 7-10 reach the defect, 24 cells. The
    # earlier bilinear + antialiased resize counted 48.
    scale = side // 256
    mask = np.zeros((side, side), bool)
    mask[60 * scale:84 * scale, 100 * scale:140 * scale] = True
    write_image(tmp_path / "shot.png", np.full((side, side, 3), 128, np.uint8))
    write_mask(tmp_path / "shot_mask.png", mask)
    config = LearnConfig(images=[tmp_path / "shot.png"], masks=[tmp_path / "shot_mask.png"], crop_to_defect="off")
    support = encode_support(model_256, prepare_support(config, 256), flip=False)
    cells = support.loss_masks[0, 0]
    assert cells.shape == (32, 32) and int(cells.sum()) == 24
    expected = torch.zeros(32, 32)
    expected[7:11, 12:18] = 1
    torch.testing.assert_close(cells, expected)


def test_a_defect_between_the_cell_centres_keeps_the_cells_it_overlaps():
    pixel = torch.zeros(2, 1, 64, 64)
    pixel[0, 0, 10:50, 17] = 1.0  # column 17: the 8-px cells sample columns 3-4, 11-12, 19-20, ...
    pixel[1, 0, 8:16, 8:16] = 1.0  # an ordinary defect: the reference rule as is
    cells = latent_loss_masks(pixel, (8, 8))
    assert cells[0, 0, :, 2].sum() == 6 and cells[0].sum() == 6  # rows 1-6 overlap, column 2 only
    expected = torch.zeros(8, 8)
    expected[1, 1] = 1
    torch.testing.assert_close(cells[1, 0], expected)
