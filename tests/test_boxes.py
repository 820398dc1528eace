"""Box proposals: foreground, size ranges, sampling rules, boxes.json and `anogen boxes`."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

from anogen.cli import main
from anogen.data.boxes import (
    Box,
    BoxPlacement,
    BoxProposalConfig,
    BoxSizeRange,
    foreground_mask,
    propose_boxes,
    read_boxes_file,
    reference_rotates,
    reference_size_range,
    reference_size_table,
    run_box_proposals,
    size_range_from_masks,
)
from anogen.data.imageio import read_mask, write_image
from anogen.data.mvtec import MVTEC_AD_KINDS
from anogen.errors import InputError, JobCancelled


def _disc_image(size: int = 96, radius: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright textured disc on a dark noisy background, and the disc's true mask."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 40, dtype=np.int16)
    truth = np.zeros((size, size), dtype=np.uint8)
    cv2.circle(truth, (size // 2, size // 2), radius, 1, -1)
    image[truth > 0] = (190, 160, 110)
    image += rng.integers(-12, 13, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8), truth > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_box_masks_and_validation():
    box = Box(2, 1, 6, 4)
    mask = box.to_mask(5, 8)
    assert mask.sum() == box.area == 12 and mask[1:4, 2:6].all()
    assert Box.from_mask(mask) == box
    assert box.validate(5, 8) is box
    with pytest.raises(InputError, match=r"off the 8x5 image"):
        Box(5, 1, 9, 4).validate(5, 8)
    with pytest.raises(InputError, match="empty"):
        Box(3, 3, 3, 6).validate(10, 10)
    with pytest.raises(InputError, match="empty"):
        Box.from_sequence([4, 4, 2, 8])
    with pytest.raises(InputError, match="whole pixels"):
        Box.from_sequence([0, 0, 2.5, 3])
    assert Box(-3, -3, 4, 4).clip(5, 8) == Box(0, 0, 4, 4)


@pytest.mark.parametrize("method", ["grabcut", "otsu"])
def test_foreground_finds_the_object(method):
    image, truth = _disc_image()
    assert _iou(foreground_mask(image, method), truth) > 0.85
    # A dark object on a bright background: Otsu must pick the polarity from the border.
    assert _iou(foreground_mask(255 - image, "otsu"), truth) > 0.85


def test_texture_and_flat_images_count_as_all_foreground():
    flat = np.full((40, 40, 3), 128, dtype=np.uint8)
    assert foreground_mask(flat, "all").all()
    assert foreground_mask(flat, "grabcut").all()  # GrabCut finds nothing -> Otsu -> flat = all
    with pytest.raises(InputError, match="unknown foreground method"):
        foreground_mask(flat, "snake")


def test_proposals_are_deterministic_sized_and_on_the_object():
    image, truth = _disc_image()
    size = BoxSizeRange(0.1, 0.2, 0.15, 0.25)
    boxes = propose_boxes(image, size, 6, foreground=truth, seed=3)
    assert boxes == propose_boxes(image, size, 6, foreground=truth, seed=3)
    assert boxes != propose_boxes(image, size, 6, foreground=truth, seed=4)
    for box in boxes:
        box.validate(96, 96)
        assert 0.1 * 96 - 1 <= box.width <= 0.2 * 96 + 1 and 0.15 * 96 - 1 <= box.height <= 0.25 * 96 + 1
        assert truth[box.to_mask(96, 96)].mean() >= 0.75
    # The paper's IoU rule: only boxes about the object's size can pass.
    for box in propose_boxes(image, BoxSizeRange(0.5, 0.8, 0.5, 0.8), 3, foreground=truth, rule="iou", seed=0):
        assert _iou(box.to_mask(96, 96), truth) >= 0.5


def test_no_valid_box_is_a_clear_error():
    image, truth = _disc_image()
    with pytest.raises(InputError, match=r"no valid box after 50 tries.*IoU"):
        propose_boxes(image, BoxSizeRange(0.05, 0.1, 0.05, 0.1), 1, foreground=truth, rule="iou", max_tries=50)
    with pytest.raises(InputError, match="foreground mask is 10x10"):
        propose_boxes(image, BoxSizeRange(0.1, 0.2, 0.1, 0.2), 1, foreground=np.ones((10, 10), bool))
    with pytest.raises(InputError, match="range"):
        BoxSizeRange(0.3, 0.2, 0.1, 0.2)


def test_size_range_from_support_masks():
    masks = []
    for w, h in ((20, 10), (30, 16)):
        mask = np.zeros((100, 200), dtype=bool)
        mask[5:5 + h, 50:50 + w] = True
        mask[80, 10] = True  # a speck, ignored
        masks.append(mask)
    size = size_range_from_masks(masks, margin=0.25)
    assert size.w_lo == pytest.approx(0.1 * 0.75) and size.w_hi == pytest.approx(0.15 * 1.25)
    assert size.h_lo == pytest.approx(0.10 * 0.75) and size.h_hi == pytest.approx(0.16 * 1.25)
    with pytest.raises(InputError, match="no defect pixels"):
        size_range_from_masks([np.zeros((10, 10), bool)])


# Every defect kind of MVTec AD, as its test/<kind> folders name them: 15 categories, 73 kinds.
MVTEC_AD = {
    "bottle": ["broken_large", "broken_small", "contamination"],
    "cable": ["bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation",
              "missing_cable", "missing_wire", "poke_insulation"],
    "capsule": ["crack", "faulty_imprint", "poke", "scratch", "squeeze"],
    "carpet": ["color", "cut", "hole", "metal_contamination", "thread"],
    "grid": ["bent", "broken", "glue", "metal_contamination", "thread"],
    "hazelnut": ["crack", "cut", "hole", "print"],
    "leather": ["color", "cut", "fold", "glue", "poke"],
    "metal_nut": ["bent", "color", "flip", "scratch"],
    "pill": ["color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch"],
    "screw": ["manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"],
    "tile": ["crack", "glue_strip", "gray_stroke", "oil", "rough"],
    "toothbrush": ["defective"],
    "transistor": ["bent_lead", "cut_lead", "damaged_case", "misplaced"],
    "wood": ["color", "combined", "hole", "liquid", "scratch"],
    "zipper": ["broken_teeth", "combined", "fabric_border", "fabric_interior", "rough", "split_teeth",
               "squeezed_teeth"],
}


def test_reference_table_covers_every_mvtec_ad_kind():
    expected = {f"{category}/{kind}" for category, kinds in MVTEC_AD.items() for kind in kinds}
    assert len(MVTEC_AD) == 15 and len(expected) == 73
    assert set(reference_size_table()) == expected
    assert set(MVTEC_AD_KINDS) == set(MVTEC_AD)
    assert all(sorted(MVTEC_AD_KINDS[c]) == sorted(k) for c, k in MVTEC_AD.items())


@pytest.mark.parametrize("key, size, rotated", [
    # utils_scripts/mvtec_range.json stores [[w_lo, w_hi], [h_lo, h_hi], rotate]; creatMask_v1.py
    # draws the first range along x, so these are width then height.
    ("cable/cut_outer_insulation", (0.1, 0.2, 0.2, 0.4), True),
    ("cable/combined", (0.1, 0.2, 0.1, 0.2), False),
    ("cable/bent_wire", (0.1, 0.25, 0.1, 0.25), False),
    ("capsule/faulty_imprint", (0.15, 0.25, 0.15, 0.25), False),
    ("capsule/scratch", (0.05, 0.15, 0.15, 0.25), True),
    ("leather/fold", (0.05, 0.1, 0.1, 0.2), True),
    ("pill/crack", (0.05, 0.1, 0.1, 0.2), True),
    ("pill/pill_type", (0.8, 0.8, 0.5, 0.5), False),
    ("hazelnut/cut", (0.05, 0.2, 0.2, 0.3), True),
    ("tile/crack", (0.05, 0.1, 0.2, 1.0), True),
    ("transistor/bent_lead", (0.2, 0.4, 0.15, 0.3), False),
])
def test_reference_table_matches_the_reference_code(key, size, rotated):
    category, kind = key.split("/")
    assert reference_size_range(category, kind) == BoxSizeRange(*size)
    assert reference_rotates(category, kind) is rotated
    assert reference_size_range("hazelnut", "dent") is None


def _good_folder(tmp_path, count=3):
    folder = tmp_path / "good"
    for i in range(count):
        write_image(folder / f"{i:03d}.png", _disc_image(64, 20, seed=i)[0])
    return folder


def test_cli_writes_boxes_json_and_masks(tmp_path, capsys):
    images = _good_folder(tmp_path)
    out = tmp_path / "boxes"
    code = main(["boxes", "--images", str(images), "--out", str(out), "--per-image", "2",
                 "--size", "0.1", "0.2", "0.1", "0.2", "--seed", "7", "--quiet"])
    assert code == 0
    document = json.loads((out / "boxes.json").read_text())
    assert document["seed"] == 7 and document["size_range"] == [0.1, 0.2, 0.1, 0.2]
    boxes = read_boxes_file(out / "boxes.json")
    assert sorted(boxes) == ["000.png", "001.png", "002.png"] and all(len(b) == 2 for b in boxes.values())
    mask = read_mask(out / "masks" / "001_1.png")
    assert Box.from_mask(mask) == boxes["001.png"][1]
    # Same seed, same boxes; the boxes of an image do not depend on the other images.
    again = tmp_path / "again"
    assert main(["boxes", "--images", str(images), "--out", str(again), "--size", "0.1", "0.2", "0.1", "0.2",
                 "--seed", "7", "--limit", "2", "--quiet"]) == 0
    assert read_boxes_file(again / "boxes.json")["001.png"] == boxes["001.png"]


def test_cli_bad_input_exits_2(tmp_path, capsys):
    images = _good_folder(tmp_path, count=1)
    assert main(["boxes", "--images", str(images), "--out", str(tmp_path / "o"), "--kind", "hazelnut/dent"]) == 2
    assert "no reference box size for 'hazelnut/dent'" in capsys.readouterr().err
    assert main(["boxes", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_cancel_leaves_no_folder(tmp_path):
    images = _good_folder(tmp_path, count=2)
    cancel = threading.Event()

    def progress(report):
        cancel.set()  # cancel after the first image

    with pytest.raises(JobCancelled):
        run_box_proposals(BoxProposalConfig(images=images, out=tmp_path / "out",
                                            placement=BoxPlacement(foreground="otsu")),
                          progress, cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]


def test_cli_size_from_support_masks_and_reference_kind(tmp_path):
    images = _good_folder(tmp_path, count=1)
    masks = tmp_path / "masks"
    for i, (w, h) in enumerate(((10, 6), (14, 8))):
        mask = np.zeros((64, 64), dtype=bool)
        mask[20:20 + h, 20:20 + w] = True
        write_image(masks / f"{i}_mask.png", mask)
    assert main(["boxes", "--images", str(images), "--out", str(tmp_path / "a"), "--from-masks", str(masks),
                 "--quiet"]) == 0
    size = json.loads((tmp_path / "a" / "boxes.json").read_text())["size_range"]
    assert size == pytest.approx([10 / 64 * 0.75, 14 / 64 * 1.25, 6 / 64 * 0.75, 8 / 64 * 1.25])
    assert main(["boxes", "--images", str(images), "--out", str(tmp_path / "b"), "--kind", "hazelnut/cut",
                 "--quiet"]) == 0
    document = json.loads((tmp_path / "b" / "boxes.json").read_text())
    assert document["size_range"] == [0.05, 0.2, 0.2, 0.3]
    assert document["rotate"] is True  # the reference flags hazelnut/cut for rotated boxes
    for values in document["boxes"]["000.png"]:
        box = Box.from_sequence(values)
        assert 0.2 * 64 - 1 <= box.height <= 0.3 * 64 + 1
