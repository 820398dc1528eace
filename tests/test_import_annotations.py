"""anogen import: labelme, COCO (polygons, RLE) and CVAT masks into a project, all or nothing.

Every source is written by the test itself: small images, hand-made annotation files
whose expected masks are known pixel for pixel.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anogen.cli import main
from anogen.data.annotations import AnnotationError
from anogen.data.annotations.coco import (
    counts_to_string,
    decode_rle,
    encode_rle,
    mask_to_counts,
    read_coco,
    string_to_counts,
)
from anogen.data.annotations.cvat import read_cvat
from anogen.data.annotations.importer import LabelMap, import_annotations
from anogen.data.annotations.labelme import read_labelme
from anogen.data.imageio import read_mask, write_image
from anogen.data.workspace import MANIFEST_NAME, Workspace
from anogen.errors import InputError

W, H = 20, 16


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (W, H)) -> Path:
    rng = np.random.default_rng(seed)
    write_image(path, rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return path


def _box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Pixels x0..x1, y0..y1 inclusive (a polygon on pixel centres, edges drawn)."""
    mask = np.zeros((H, W), bool)
    mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def _labelme(path: Path, image_name: str, shapes: list, **extra) -> Path:
    data = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_name, "imageData": None,
            "imageHeight": H, "imageWidth": W, **extra}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _poly(label: str, points: list, shape_type: str = "polygon") -> dict:
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type, "flags": {}}


def _project(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "project", "import test")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".anogen")}


# ----------------------------------------------------------------------------- RLE


def test_compressed_rle_matches_the_pycocotools_encoding_by_hand():
    # counts 2, 3, 4 are below 16: one character each, 48 + count. The fourth count is
    # stored as the difference to the second (1 - 3 = -2): 5 bits 11110 = 30, sign bit set,
    # no continuation -> chr(48 + 30) = 'N'.
    assert counts_to_string([2, 3, 4, 1]) == "234N"
    assert string_to_counts("234N") == [2, 3, 4, 1]
    # 40 needs two groups: 40 & 31 = 8 with the continuation bit (8 | 32 = 40 -> 'X'), then 1 -> '1'.
    assert counts_to_string([40]) == "X1"


def test_rle_round_trips_and_reads_columns_first():
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random()
        rle = encode_rle(mask)
        assert np.array_equal(decode_rle(rle, *mask.shape), mask)
        counts = mask_to_counts(mask)
        assert np.array_equal(decode_rle({"size": list(mask.shape), "counts": counts}, *mask.shape), mask)
    # Column order: a 2x3 mask whose first column is set starts with a zero run of 0.
    mask = np.array([[1, 0, 0], [1, 0, 1]], bool)
    assert mask_to_counts(mask) == [0, 2, 3, 1]
    assert np.array_equal(decode_rle({"size": [2, 3], "counts": [0, 2, 3, 1]}, 2, 3), mask)


def test_rle_errors_name_the_problem():
    with pytest.raises(ValueError, match="does not match"):
        decode_rle({"size": [3, 3], "counts": [9]}, 2, 3)
    with pytest.raises(ValueError, match="cover 5 pixels"):
        decode_rle({"size": [2, 3], "counts": [5]}, 2, 3)
    with pytest.raises(ValueError, match="middle of a number"):
        string_to_counts("X")


# ----------------------------------------------------------------------------- labelme


def test_labelme_polygons_rectangles_circles_and_masks(tmp_path):
    _image(tmp_path / "a.png")
    crop = np.zeros((3, 4), np.uint8)
    crop[1:, 1:3] = 255
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="PNG")
    shapes = [
        _poly("scratch", [[2, 2], [6, 2], [6, 5], [2, 5]]),
        _poly("scratch", [[10, 10], [12, 10], [12, 12]]),
        _poly("dent", [[1, 8], [3, 9]], "rectangle"),
        _poly("hole", [[15, 5], [15, 6]], "circle"),
        {**_poly("stain", [[14, 11], [17, 13]], "mask"), "mask": base64.b64encode(buffer.getvalue()).decode()},
    ]
    [record] = read_labelme(_labelme(tmp_path / "a.json", "a.png", shapes))
    assert record.image == tmp_path / "a.png"
    triangle = np.zeros((H, W), bool)
    for y in range(10, 13):
        triangle[y, y:13] = True  # points on or right of the diagonal, edges included
    assert np.array_equal(record.masks["scratch"], _box(2, 2, 6, 5) | triangle)
    assert np.array_equal(record.masks["dent"], _box(1, 8, 3, 9))
    assert record.masks["hole"][6, 15] and record.masks["hole"][4, 15] and not record.masks["hole"][6, 17]
    stain = np.zeros((H, W), bool)
    stain[12:14, 15:17] = True  # the crop's set pixels, placed at (14, 11)
    assert np.array_equal(record.masks["stain"], stain)


def test_labelme_embedded_image_is_used_when_the_file_is_missing(tmp_path):
    png = _image(tmp_path / "elsewhere.png").read_bytes()
    path = _labelme(tmp_path / "b.json", "gone/b.png", [_poly("scratch", [[0, 0], [4, 0], [4, 4]])],
                    imageData=base64.b64encode(png).decode())
    [record] = read_labelme(path)
    assert record.image_data == png and record.image.name == "b.png"


def test_labelme_errors_name_file_and_shape(tmp_path):
    _image(tmp_path / "a.png")
    bad = _labelme(tmp_path / "a.json", "a.png", [
        _poly("scratch", [[2, 2], [6, 2], [6, 5]]),
        _poly("scratch", [[2, 2], [60, 2], [6, 5]]),
        _poly("dot", [[3, 3]], "point"),
    ])
    _labelme(tmp_path / "c.json", "missing.png", [_poly("scratch", [[0, 0], [4, 0], [4, 4]])])
    with pytest.raises(AnnotationError) as info:
        read_labelme(tmp_path)
    message = str(info.value)
    assert "3 annotation problems" in message
    assert f"{bad}: shape #1 (scratch): polygon outside the image: point #1 (60, 2)" in message
    assert "shape #2 (dot): a point shape has no area" in message
    assert "c.json: missing image: imagePath 'missing.png'" in message
    # A point just past the edge (annotation tools allow it) is clipped, not refused.
    _labelme(bad, "a.png", [_poly("scratch", [[0, 0], [W + 0.5, 0], [W + 0.5, H + 0.5]])])
    [record] = read_labelme(bad)
    assert record.masks["scratch"][H - 1, W - 1]


def test_labelme_size_must_match_the_image(tmp_path):
    _image(tmp_path / "a.png", size=(W + 2, H))
    path = _labelme(tmp_path / "a.json", "a.png", [_poly("scratch", [[0, 0], [4, 0], [4, 4]])])
    with pytest.raises(AnnotationError, match=r"imageWidth x imageHeight is 20x16 but image a.png is 22x16"):
        read_labelme(path)


# ----------------------------------------------------------------------------- COCO


def _coco(tmp_path: Path, annotations: list, images: list | None = None) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    _image(tmp_path / "images" / "p.png", 1)
    _image(tmp_path / "images" / "q.png", 2)
    data = {
        "images": images or [{"id": 1, "file_name": "p.png", "width": W, "height": H},
                             {"id": 2, "file_name": "q.png", "width": W, "height": H}],
        "categories": [{"id": 7, "name": "scratch"}, {"id": 8, "name": "hole"}],
        "annotations": annotations,
    }
    (tmp_path / "annotations").mkdir(exist_ok=True)
    path = tmp_path / "annotations" / "instances.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_coco_polygons_and_both_rle_kinds(tmp_path):
    hole = _box(12, 3, 15, 7)
    other = _box(0, 0, 1, 1)
    path = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": [[2, 2, 6, 2, 6, 5, 2, 5]]},
        {"id": 2, "image_id": 1, "category_id": 8, "iscrowd": 1, "segmentation": encode_rle(hole)},
        {"id": 3, "image_id": 2, "category_id": 8, "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": mask_to_counts(other)}},
    ])
    records = read_coco(path)  # images found in ../images, the usual layout
    assert [r.image.name for r in records] == ["p.png", "q.png"]
    # On COCO's grid the polygon (2, 2)-(6, 5) traces pixel edges: columns 2..5, rows 2..4.
    assert np.array_equal(records[0].masks["scratch"], _box(2, 2, 5, 4))
    assert np.array_equal(records[0].masks["hole"], hole)
    assert np.array_equal(records[1].masks["hole"], other)


def test_coco_errors_name_the_annotation(tmp_path):
    path = _coco(tmp_path, [
        {"id": 11, "image_id": 1, "category_id": 99, "segmentation": [[2, 2, 6, 2, 6, 5]]},
        {"id": 12, "image_id": 5, "category_id": 7, "segmentation": [[2, 2, 6, 2, 6, 5]]},
        {"id": 13, "image_id": 1, "category_id": 7, "segmentation": [[2, 2, 6, 2, 6, 50]]},
        {"id": 14, "image_id": 1, "category_id": 7, "segmentation": {"size": [H, W + 1], "counts": "0"}},
        {"id": 15, "image_id": 3, "category_id": 7, "segmentation": [[2, 2, 6, 2, 6, 5]]},
    ], images=[{"id": 1, "file_name": "p.png", "width": W, "height": H},
               {"id": 3, "file_name": "absent.png", "width": W, "height": H}])
    with pytest.raises(AnnotationError) as info:
        read_coco(path)
    message = str(info.value)
    assert "annotation id 11: unknown label: category_id 99" in message
    assert "annotation id 12: missing image: image_id 5" in message
    assert "annotation id 13: polygon #0: polygon outside the image: point #2 (6, 50)" in message
    assert "annotation id 14: RLE size 21x16 (WxH) does not match" in message
    assert "annotation id 15: missing image: image id 3 file_name 'absent.png'" in message


# ----------------------------------------------------------------------------- CVAT


def _cvat(folder: Path, with_images: bool = True) -> Path:
    (folder / "SegmentationClass").mkdir(parents=True)
    (folder / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                         "scratch:250,50,83::\nhole:51,221,255::\n", encoding="utf-8")
    mask = np.zeros((H, W, 3), np.uint8)
    mask[2:6, 3:8] = (250, 50, 83)
    mask[10:12, 10:15] = (51, 221, 255)
    Image.fromarray(mask).save(folder / "SegmentationClass" / "frame_01.png")
    if with_images:
        (folder / "JPEGImages").mkdir()
        _image(folder / "JPEGImages" / "frame_01.png", 4)
    return folder


def test_cvat_folder_and_zip(tmp_path):
    folder = _cvat(tmp_path / "export")
    [record] = read_cvat(folder)
    scratch = np.zeros((H, W), bool)
    scratch[2:6, 3:8] = True
    assert np.array_equal(record.masks["scratch"], scratch)
    assert record.masks["hole"].sum() == 10 and set(record.masks) == {"scratch", "hole"}
    archive = tmp_path / "task.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in folder.rglob("*"):
            if path.is_file():
                handle.write(path, path.relative_to(folder).as_posix())
    [zipped] = read_cvat(archive)
    assert zipped.image_data == (folder / "JPEGImages" / "frame_01.png").read_bytes()
    assert np.array_equal(zipped.masks["scratch"], scratch)


def test_cvat_without_images_uses_images_folder_and_names_problems(tmp_path):
    folder = _cvat(tmp_path / "export", with_images=False)
    with pytest.raises(AnnotationError, match=r"frame_01.png: missing image: no frame_01\.\* in JPEGImages/"):
        read_cvat(folder)
    _image(tmp_path / "photos" / "frame_01.jpg", 4)
    [record] = read_cvat(folder, tmp_path / "photos")
    assert record.image == tmp_path / "photos" / "frame_01.jpg"
    (folder / "labelmap.txt").write_text("scratch:250,50,83::\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"colour \(51, 221, 255\) at pixel \(10, 10\) is not in labelmap"):
        read_cvat(folder, tmp_path / "photos")


# ----------------------------------------------------------------------------- into a project


def _labelme_source(tmp_path: Path) -> Path:
    source = tmp_path / "labelme"
    source.mkdir()
    _image(source / "a.png", 5)
    _image(source / "b.png", 6)
    _labelme(source / "a.json", "a.png", [_poly("scratch", [[2, 2], [6, 2], [6, 5], [2, 5]]),
                                          _poly("hole", [[10, 10], [14, 10], [14, 14]])])
    _labelme(source / "b.json", "b.png", [_poly("scratch", [[1, 1], [5, 1], [5, 5]])])
    return source


def test_import_creates_kinds_with_masked_support_images(tmp_path):
    source = _labelme_source(tmp_path)
    workspace = _project(tmp_path)
    result = import_annotations(workspace, "labelme", source, LabelMap.parse("scratch=scratch,hole=hole"))
    assert result.counts == {"scratch": 2, "hole": 1} and result.created_kinds == ["scratch", "hole"]
    workspace.close()
    reopened = Workspace.open(tmp_path / "project", read_only=True)
    scratch = reopened.project.defect_kind("scratch")
    assert len(scratch.support) == 2 and all(s.mask for s in scratch.support)
    mask = read_mask(reopened.resolve(scratch.support[0].mask))
    assert np.array_equal(mask, _box(2, 2, 6, 5))
    assert reopened.validate() == []


def test_unknown_label_imports_nothing(tmp_path):
    source = _labelme_source(tmp_path)
    workspace = _project(tmp_path)
    before = _snapshot(workspace.root)
    with pytest.raises(AnnotationError, match=r"a.json: shape #1 \(hole\): unknown label 'hole'"):
        import_annotations(workspace, "labelme", source, LabelMap.parse("scratch=scratch"))
    assert _snapshot(workspace.root) == before and workspace.project.defect_kinds == []
    # '-' leaves a label out on purpose.
    result = import_annotations(workspace, "labelme", source, LabelMap.parse("scratch=scratch,hole=-"))
    assert result.counts == {"scratch": 2}


def test_a_failure_during_commit_rolls_everything_back(tmp_path, monkeypatch):
    source = _labelme_source(tmp_path)
    workspace = _project(tmp_path)
    workspace.add_defect_kind("scratch")
    workspace.save()
    before = _snapshot(workspace.root)
    calls = []
    real = Workspace.add_support_image

    def fail_after_second_copy(self, *args, **kwargs):
        calls.append(args)
        support = real(self, *args, **kwargs)  # the files are in the project by now
        if len(calls) == 2:
            raise OSError("disk full")
        return support

    monkeypatch.setattr(Workspace, "add_support_image", fail_after_second_copy)
    with pytest.raises(OSError, match="disk full"):
        import_annotations(workspace, "labelme", source, LabelMap(kind="scratch"))
    assert _snapshot(workspace.root) == before
    assert [k.name for k in workspace.project.defect_kinds] == ["scratch"]
    assert workspace.project.defect_kind("scratch").support == []


def test_cli_import_and_one_line_errors(tmp_path, capsys):
    source = _labelme_source(tmp_path)
    Workspace.create(tmp_path / "project", "cli").close()
    assert main(["import", "--format", "labelme", str(source), "--into", str(tmp_path / "project"),
                 "--kind", "flaw"]) == 0
    assert "imported 2 support image(s)" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "project" / MANIFEST_NAME).read_text())
    assert [k["name"] for k in manifest["defect_kinds"]] == ["flaw"]
    _labelme(source / "b.json", "b.png", [_poly("scratch", [[1, 1], [50, 1], [5, 5]])])
    before = (tmp_path / "project" / MANIFEST_NAME).read_bytes()
    assert main(["import", "--format", "labelme", str(source), "--into", str(tmp_path / "project"),
                 "--kind", "flaw"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.json: shape #0 (scratch): polygon outside the image" in err
    assert (tmp_path / "project" / MANIFEST_NAME).read_bytes() == before
    with pytest.raises(InputError, match="LABEL=KIND"):
        LabelMap.parse("scratch")
