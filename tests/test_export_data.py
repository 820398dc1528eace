"""anogen export-data: each writer's output is read back and compared with the generated sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anogen.cli import main
from anogen.data.annotations.coco import read_coco
from anogen.data.datasets import read_mvtec_category
from anogen.data.exports import export_sets
from anogen.data.exports.anomalib import folder_arguments
from anogen.data.generated import GeneratedSetWriter, read_generated_sets
from anogen.data.imageio import read_image, read_mask, write_image
from anogen.outputs import MARKER_NAME

H, W = 24, 32


def _write_set(folder: Path, goods: Path, kind: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    goods.mkdir(exist_ok=True)
    with GeneratedSetWriter(folder) as writer:
        for index, status in enumerate(("accepted", "pending", "rejected", "accepted")):
            source = goods / f"{kind}_good_{index}.png"
            write_image(source, rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
            x0, y0 = int(rng.integers(0, W - 12)), int(rng.integers(0, H - 10))
            box = (x0, y0, x0 + 10, y0 + 8)
            mask = None
            if index == 3:  # a rotated box: its mask is a diamond inside the bounds
                yy, xx = np.mgrid[:H, :W]
                mask = (np.abs(xx - (x0 + 4.5)) / 5 + np.abs(yy - (y0 + 3.5)) / 4) < 1
            writer.add(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), box=box, source=str(source),
                       defect_kind=kind, seed=index, model="m", embedding_hash="h", steps=2, guidance=1.0,
                       status=status, mask=mask)
    return folder


@pytest.fixture()
def sets(tmp_path) -> list[Path]:
    goods = tmp_path / "goods"
    return [_write_set(tmp_path / "sets" / "scratch", goods, "scratch", 1),
            _write_set(tmp_path / "sets" / "hole", goods, "hole", 2)]


def _usable(sets: list[Path]):
    return [s for _, s in read_generated_sets(sets) if s.usable]


def test_anomalib_folder_pairs_every_abnormal_image_with_its_mask(sets, tmp_path):
    out = tmp_path / "anomalib"
    assert export_sets("anomalib", sets, out) == {"samples": 6, "good": 8}
    args = folder_arguments()
    good = sorted((out / args["normal_dir"]).iterdir())
    abnormal = sorted((out / args["abnormal_dir"]).iterdir())
    masks = sorted((out / args["mask_dir"]).iterdir())
    assert len(good) == 8 and len(abnormal) == len(masks) == 6
    # anomalib's make_folder_dataset pairs the sorted abnormal images with the sorted masks
    # and requires each image's stem inside its mask's stem.
    for image, mask in zip(abnormal, masks):
        assert image.stem in mask.stem
    samples = {f"{s.defect_kind}_{s.id}": s for s in _usable(sets)}
    assert {p.stem for p in abnormal} == set(samples)
    for image, mask in zip(abnormal, masks):
        sample = samples[image.stem]
        assert np.array_equal(read_image(image), sample.load_image())
        assert np.array_equal(read_mask(mask), sample.load_mask())
        assert set(np.unique(read_image(mask))) <= {0, 255}
    config = json.loads((out / "anomalib_folder.json").read_text())
    assert config["kinds"] == ["hole", "scratch"] and config["abnormal_dir"] == "abnormal"


def test_anomalib_folder_loads_in_anomalib(sets, tmp_path):
    folder = pytest.importorskip("anomalib.data.datasets.image.folder")  # a test-only extra, not in CI
    out = tmp_path / "anomalib"
    export_sets("anomalib", sets, out)
    args = folder_arguments()
    frame = folder.make_folder_dataset(root=out, normal_dir=args["normal_dir"], abnormal_dir=args["abnormal_dir"],
                                       mask_dir=args["mask_dir"])
    assert frame.attrs["task"] == "segmentation"
    assert (frame.label_index == 1).sum() == 6 and (frame.label_index == 0).sum() == 8


def test_coco_reads_back_boxes_and_exact_masks(sets, tmp_path):
    out = tmp_path / "coco"
    assert export_sets("coco", sets, out) == {"samples": 6, "annotations": 6}
    document = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in document["categories"]] == ["hole", "scratch"]
    by_name = {f"{s.defect_kind}_{s.id}.png": s for s in _usable(sets)}
    kinds = {c["id"]: c["name"] for c in document["categories"]}
    images = {i["id"]: i["file_name"] for i in document["images"]}
    rle = 0
    for annotation in document["annotations"]:
        sample = by_name[images[annotation["image_id"]]]
        x0, y0, x1, y1 = sample.box
        assert annotation["bbox"] == [x0, y0, x1 - x0, y1 - y0] or sample.id == "000003"
        assert kinds[annotation["category_id"]] == sample.defect_kind
        rle += isinstance(annotation["segmentation"], dict)
    assert rle == 2  # the rotated boxes; the others are polygons
    # Our own COCO reader (polygons on COCO's pixel grid, RLE) gives back every mask exactly.
    records = read_coco(out / "annotations.json")
    assert len(records) == 6
    for record in records:
        sample = by_name[record.image.name]
        assert list(record.masks) == [sample.defect_kind]
        assert np.array_equal(record.masks[sample.defect_kind], sample.load_mask())


def test_yolo_labels_give_back_the_boxes(sets, tmp_path):
    import yaml

    out = tmp_path / "yolo"
    export_sets("yolo", sets, out)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "hole", 1: "scratch"} and data["train"] == "images"
    for sample in _usable(sets):
        name = f"{sample.defect_kind}_{sample.id}"
        assert (out / "images" / f"{name}.png").read_bytes() == sample.image_path.read_bytes()
        [line] = (out / "labels" / f"{name}.txt").read_text().splitlines()
        cls, cx, cy, w, h = line.split()
        assert data["names"][int(cls)] == sample.defect_kind
        box = [round((float(cx) - float(w) / 2) * W), round((float(cy) - float(h) / 2) * H),
               round((float(cx) + float(w) / 2) * W), round((float(cy) + float(h) / 2) * H)]
        assert box == list(sample.box)


def test_mvtec_layout_reads_as_a_category(sets, tmp_path):
    out = tmp_path / "mvtec"
    export_sets("mvtec", sets, out)
    category = read_mvtec_category(out)
    assert len(category.train_good) == 8 and category.defect_kinds == ["hole", "scratch"]
    samples = {f"{s.defect_kind}_{s.id}": s for s in _usable(sets)}
    assert len(category.test_defective) == 6
    for record in category.test_defective:
        sample = samples[record.path.stem]
        assert record.defect_kind == sample.defect_kind and record.mask_path is not None
        assert np.array_equal(read_mask(record.mask_path), sample.load_mask())


def test_cli_export_data(sets, tmp_path, capsys):
    out = tmp_path / "exported"
    # The parent folder of several sets stands for all of them.
    assert main(["export-data", "--format", "mvtec", str(tmp_path / "sets"), "--out", str(out)]) == 0
    assert "exported 2 set(s) as mvtec (6 samples, 8 good)" in capsys.readouterr().out
    assert (out / MARKER_NAME).is_file()
    assert main(["export-data", "--format", "mvtec", *map(str, sets), "--out", str(out)]) == 0  # its own output
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert main(["export-data", "--format", "coco", str(sets[0]), "--out", str(user)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and (user / "notes.txt").read_text() == "mine"
    assert main(["export-data", "--format", "yolo", str(sets[0]), "--out", str(sets[0] / "inside")]) == 2
    assert main(["export-data", "--format", "anomalib", str(tmp_path / "goods"), "--out", str(out)]) == 2
    assert "not a generated set" in capsys.readouterr().err
    # Without the source images anomalib needs --normals.
    for path in (tmp_path / "goods").iterdir():
        path.unlink()
    assert main(["export-data", "--format", "anomalib", str(sets[0]), "--out", str(tmp_path / "a")]) == 2
    assert "--normals" in capsys.readouterr().err and not (tmp_path / "a").exists()
