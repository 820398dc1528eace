"""Where boxes go: textures, painted regions, the support-mask prior and rotated boxes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from anogen.cli import main
from anogen.data.boxes import (
    Box,
    BoxPlacement,
    BoxSizeRange,
    auto_foreground_method,
    looks_like_texture,
    propose_boxes,
    read_boxes_file,
)
from anogen.data.imageio import read_mask, write_image, write_mask
from anogen.errors import InputError


def brick_wall(height: int = 160, width: int = 160, seed: int = 0, shade: float = 0.0) -> np.ndarray:
    """A running-bond brick texture with light mortar, per-brick colour and sensor noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    brick_h, brick_w = 15, 32
    for row, top in enumerate(range(0, height, brick_h)):
        offset = (row % 2) * brick_w // 2
        for left in range(-brick_w + offset, width, brick_w):
            image[top:top + brick_h - 2, max(0, left):max(0, left + brick_w - 2)] = \
                np.array([150, 70, 50]) + rng.normal(0, 12, 3)
        image[top + brick_h - 2:top + brick_h] = (200, 200, 190)
    image += rng.normal(0, 8, image.shape) + np.linspace(-shade, shade, width)[None, :, None]
    return np.clip(image, 0, 255).astype(np.uint8)


def disc_on_table(size: int = 160, radius: int = 45, centre: tuple[int, int] | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 40, np.int16)
    truth = np.zeros((size, size), np.uint8)
    cv2.circle(truth, centre or (size // 2, size // 2), radius, 1, -1)
    image[truth > 0] = (190, 160, 110)
    image += rng.integers(-12, 13, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8), truth > 0


# ----------------------------------------------------------------------------- (a) textures


def test_texture_detector_tells_textures_from_objects():
    for seed in range(4):
        assert looks_like_texture(brick_wall(seed=seed, shade=6 * seed))
        assert looks_like_texture(brick_wall(120, 240, seed=seed))
        assert not looks_like_texture(disc_on_table(radius=20 + 25 * seed, seed=seed)[0])
    # A known MVTec AD category decides by name, whatever the picture looks like.
    assert auto_foreground_method([disc_on_table()[0]], "carpet") == "all"
    assert auto_foreground_method([brick_wall()], "hazelnut") == "grabcut"
    assert auto_foreground_method([brick_wall(seed=s) for s in range(3)]) == "all"


def test_a_held_out_texture_gets_boxes_over_the_whole_image_by_default(tmp_path, capsys):
    good = tmp_path / "brick" / "train" / "good"
    for i in range(3):
        write_image(good / f"{i:03d}.png", brick_wall(seed=i))
    out = tmp_path / "boxes"
    # Default options, a size range the 19 %-foreground GrabCut result could not hold.
    assert main(["boxes", "--images", str(good), "--out", str(out), "--size", "0.2", "0.3", "0.2", "0.3",
                 "--quiet"]) == 0
    document = json.loads((out / "boxes.json").read_text())
    assert document["foreground"] == "all" and document["category"] is None
    assert read_mask(out / "allowed" / "001.png").all()
    assert all(len(boxes) == 2 for boxes in read_boxes_file(out / "boxes.json").values())


def test_an_mvtec_texture_folder_is_known_by_its_name(tmp_path):
    good = tmp_path / "carpet" / "train" / "good"
    write_image(good / "000.png", disc_on_table()[0])  # looks like an object; the name wins
    assert main(["boxes", "--images", str(good), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    document = json.loads((tmp_path / "o" / "boxes.json").read_text())
    assert document["foreground"] == "all" and document["category"] == "carpet"


# ----------------------------------------------------------------------------- (b) regions


def test_an_aligned_region_mask_keeps_boxes_inside_it(tmp_path):
    good = tmp_path / "good"
    for i in range(2):
        write_image(good / f"{i:03d}.png", disc_on_table(seed=i)[0])
    region = np.zeros((40, 40), bool)  # any size: it is stretched over the image
    region[:, 30:] = True  # the right quarter only, background included
    write_mask(tmp_path / "region.png", region)
    out = tmp_path / "boxes"
    assert main(["boxes", "--images", str(good), "--out", str(out), "--region", str(tmp_path / "region.png"),
                 "--size", "0.1", "0.15", "0.1", "0.15", "--per-image", "4", "--quiet"]) == 0
    for boxes in read_boxes_file(out / "boxes.json").values():
        for box in boxes:
            assert box.to_mask(160, 160)[:, 120:].sum() >= 0.75 * box.area


def test_a_region_relative_to_the_foreground_follows_an_unaligned_part():
    region = np.zeros((10, 10), bool)
    region[:3] = True  # the top 30 % of the part's bounding box
    placement = BoxPlacement(foreground="otsu", region=region, region_frame="foreground")
    size = BoxSizeRange(0.08, 0.12, 0.08, 0.12)
    for centre in ((50, 50), (110, 100)):
        image, truth = disc_on_table(radius=35, centre=centre)
        allowed = placement.allowed_area(image, size)
        top = Box.from_mask(truth)
        assert allowed.any() and not allowed[top.y0 + int(0.35 * top.height):].any()
        assert allowed[:top.y0].sum() == 0
        for box in placement.propose(image, size, 3, seed=1):
            assert box.y1 <= top.y0 + 0.3 * top.height + 0.25 * box.height + 1
    with pytest.raises(InputError, match="region is empty"):
        BoxPlacement(region=np.zeros((4, 4), bool)).validate()


# ----------------------------------------------------------------------------- (c) prior


def test_the_support_mask_prior_puts_boxes_near_the_real_defects(tmp_path):
    image, _ = disc_on_table(radius=60)
    support = np.zeros((320, 320), bool)  # support masks at another resolution
    support[100:120, 100:116] = True  # upper left of the disc
    size = BoxSizeRange(0.08, 0.1, 0.08, 0.1)
    placement = BoxPlacement(foreground="otsu", prior_masks=[support])
    boxes = placement.propose(image, size, 8, seed=0)
    centre = np.array([54, 55])  # the defect's centre on the 160 px image
    radius = 0.5 * np.hypot(0.1 * 160, 0.1 * 160)
    for box in boxes:
        box_centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
        assert np.linalg.norm(box_centre - centre) <= radius + 0.5 * box.width + 6
    # Without the prior the same seed spreads over the whole disc.
    free = BoxPlacement(foreground="otsu").propose(image, size, 8, seed=0)
    assert max(np.hypot((b.x0 + b.x1) / 2 - 54, (b.y0 + b.y1) / 2 - 55) for b in free) > 2 * radius

    good = tmp_path / "good"
    write_image(good / "000.png", image)
    write_mask(tmp_path / "support" / "000_mask.png", support)
    out = tmp_path / "boxes"
    assert main(["boxes", "--images", str(good), "--out", str(out), "--prior-from", str(tmp_path / "support"),
                 "--size", "0.08", "0.1", "0.08", "0.1", "--foreground", "otsu", "--quiet"]) == 0
    allowed = read_mask(out / "allowed" / "000.png")
    assert allowed[55, 54] and not allowed[130, 130]


# ----------------------------------------------------------------------------- (d) rotation


def test_rotated_boxes_are_rasterised_turned_and_round_trip(tmp_path):
    image, truth = disc_on_table(radius=70)
    size = BoxSizeRange(0.05, 0.08, 0.3, 0.4)  # long and thin: rotation shows
    boxes = propose_boxes(image, size, 6, foreground=truth, rotate=True, seed=2)
    assert len({round(b.angle) for b in boxes}) > 1 and all(0 <= b.angle < 180 for b in boxes)
    for box in boxes:
        mask = box.to_mask(160, 160)
        assert abs(int(mask.sum()) - box.area) <= 0.1 * box.area + 4  # rotation keeps the area
        assert Box.from_mask(mask) == box.bounds or Box.from_mask(mask).area <= box.bounds.area
        assert truth[mask].mean() >= 0.7  # the rule holds on the rotated pixels
        box.validate(160, 160)
    turned = Box(40, 40, 50, 100, 90.0)
    assert turned.to_mask(160, 160).sum() == turned.area and turned.bounds == Box(15, 65, 75, 75)
    assert Box.from_sequence(turned.to_list()) == turned and len(Box(1, 1, 5, 5).to_list()) == 4

    good = tmp_path / "good"
    write_image(good / "000.png", image)
    out = tmp_path / "boxes"
    assert main(["boxes", "--images", str(good), "--out", str(out), "--size", "0.05", "0.08", "0.3", "0.4",
                 "--rotate", "on", "--quiet"]) == 0
    [first, second] = read_boxes_file(out / "boxes.json")["000.png"]
    np.testing.assert_array_equal(read_mask(out / "masks" / "000_0.png"), first.to_mask(160, 160))
    assert first.is_rotated and second.is_rotated
