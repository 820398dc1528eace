"""The one Box and its codec: list form (boxes.json, manifests) and object form (project.json)."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import pytest

from anogen.data.box import Box
from anogen.data.project_file import SCHEMA_VERSION, decode_project, project_from_dict, project_to_dict
from anogen.errors import InputError, ProjectFileError

BOXES = [
    Box(2, 3, 20, 30),
    Box(20, 30, 40, 50, 30.0),
    Box(2, 3, 20, 30, defect_kind="scratch"),
    Box(10, 12, 40, 30, -45.5, defect_kind="crack"),
]


@pytest.mark.parametrize("box", BOXES)
def test_object_form_round_trips_through_json(box):
    data = json.loads(json.dumps(box.to_dict()))
    assert Box.from_dict(data) == box
    assert ("angle" in data) == box.is_rotated
    assert ("defect_kind" in data) == bool(box.defect_kind)


@pytest.mark.parametrize("box", BOXES)
def test_list_form_round_trips_and_keeps_the_angle_not_the_kind(box):
    values = json.loads(json.dumps(box.to_list()))
    assert len(values) == (5 if box.is_rotated else 4)
    assert Box.from_sequence(values) == Box(box.x0, box.y0, box.x1, box.y1, box.angle)


def test_object_form_on_disk():
    assert Box(1, 2, 3, 4).to_dict() == {"x0": 1, "y0": 2, "x1": 3, "y1": 4}
    assert Box(1, 2, 3, 4, 90, defect_kind="hole").to_dict() == {
        "x0": 1, "y0": 2, "x1": 3, "y1": 4, "angle": 90.0, "defect_kind": "hole"}
    assert Box(1, 2, 3, 4, 180.0).to_dict() == {"x0": 1, "y0": 2, "x1": 3, "y1": 4}  # same pixels as 0


def test_defect_kind_is_keyword_only_and_boxes_are_frozen():
    with pytest.raises(TypeError):
        Box(1, 2, 3, 4, 0.0, "scratch")  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        Box(1, 2, 3, 4).x0 = 5  # type: ignore[misc]


def test_derived_boxes_keep_the_defect_kind():
    box = Box(10, 10, 30, 20, 30.0, defect_kind="scratch")
    assert box.bounds.defect_kind == "scratch" and box.bounds.angle == 0.0
    assert box.clip(15, 15) == Box(10, 10, 15, 15, defect_kind="scratch")
    assert box.expand(2) == Box(8, 8, 32, 22, 30.0, defect_kind="scratch")


def _project(box_value):
    return {"schema_version": SCHEMA_VERSION, "name": "p",
            "good_images": [{"image": "images/good/a.png", "boxes": [box_value]}]}


def test_an_old_project_box_without_angle_still_reads():
    project = project_from_dict(_project({"x0": 1, "y0": 2, "x1": 10, "y1": 12, "defect_kind": "scratch"}))
    assert project.good_images[0].boxes == [Box(1, 2, 10, 12, defect_kind="scratch")]
    project = project_from_dict(_project([1, 2, 10, 12]))  # the generated-set list form
    assert project.good_images[0].boxes == [Box(1, 2, 10, 12)]


def test_a_rotated_box_survives_the_project_file():
    box = Box(5, 6, 25, 16, 37.5, defect_kind="scratch")
    project = project_from_dict(_project(box.to_dict()))
    assert project.good_images[0].boxes == [box]
    again = json.loads(json.dumps(project_to_dict(project)))
    assert again["good_images"][0]["boxes"] == [box.to_dict()]
    assert project_from_dict(again).good_images[0].boxes == [box]


@pytest.mark.parametrize(("value", "fragment"), [
    ({"x0": 1.5, "y0": 2, "x1": 10, "y1": 12}, "boxes[0].x0: expected an integer, got 1.5"),
    ({"x0": True, "y0": 2, "x1": 10, "y1": 12}, "boxes[0].x0: expected an integer, got True"),
    ({"x0": 1, "y0": 2, "x1": 10}, "boxes[0].y1: missing"),
    ({"x0": -1, "y0": 2, "x1": 10, "y1": 12}, "boxes[0]: box [-1, 2, 10, 12] starts left of or above the image"),
    ({"x0": 5, "y0": 2, "x1": 5, "y1": 12}, "boxes[0]: box [5, 2, 5, 12] is empty"),
    ({"x0": 0, "y0": 0, "x1": 20, "y1": 10, "angle": 30},  # the turned corners leave the image
     "boxes[0]: box [0, 0, 20, 10, 30.0] starts left of or above the image"),
    ({"x0": 1, "y0": 2, "x1": 10, "y1": 12, "defect_kind": 3}, "boxes[0].defect_kind: expected a string, got 3"),
    ({"x0": 1, "y0": 2, "x1": 10, "y1": 12, "angle": "45"}, "boxes[0].angle: expected a number, got '45'"),
    ({"x0": 1, "y0": 2, "x1": 10, "y1": 12, "angle": float("nan")}, "boxes[0].angle: expected a finite number"),
    ([1, 2, 10], "boxes[0]: expected [x0, y0, x1, y1]"),
    ("1,2,10,12", "boxes[0]: expected a box object, got str"),
])
def test_a_bad_project_box_is_a_problem_naming_it(value, fragment):
    with pytest.raises(ProjectFileError) as info:
        project_from_dict(_project(value))
    assert any(fragment in problem for problem in info.value.problems), info.value.problems
    assert all(p.startswith("project.good_images[0].boxes[0]") for p in info.value.problems)
    project, problems = decode_project(_project(value))
    assert project.good_images[0].boxes == [] and problems  # the rest of the project still decodes


def test_every_problem_of_a_box_is_reported():
    with pytest.raises(ProjectFileError) as info:
        project_from_dict(_project({"x0": 1.5, "y1": "2", "defect_kind": 3}))
    assert len(info.value.problems) == 5  # x0, y0, x1, y1 and defect_kind


@pytest.mark.parametrize(("value", "match"), [
    ({"x0": 1.5, "y0": 2, "x1": 10, "y1": 12}, r"^box on a\.png\.x0: expected an integer, got 1\.5$"),
    ({"x0": -1, "y0": 2, "x1": 10, "y1": 12}, r"^box on a\.png: box \[-1, 2, 10, 12\] starts left of or above"),
    ({"x0": 1, "y0": 2, "x1": 1, "y1": 12}, r"^box on a\.png: box \[1, 2, 1, 12\] is empty"),
    ({"x0": 1, "y0": 2, "x1": 10, "y1": 12, "defect_kind": None}, r"defect_kind: expected a string, got None"),
    ([1, 2, 10, 12], r"expected a box object, got list"),
])
def test_from_dict_raises_an_input_error_naming_the_box(value, match):
    with pytest.raises(InputError, match=match):
        Box.from_dict(value, what="box on a.png")


@pytest.mark.parametrize(("box", "match"), [
    (Box(1.5, 2, 10, 12), "must be integer pixels"),  # type: ignore[arg-type]
    (Box(1, 2, 10, 12, float("inf")), "finite number of degrees"),
    (Box(1, 2, 10, 12, defect_kind=3), "defect_kind must be a string"),  # type: ignore[arg-type]
    (Box(5, 2, 5, 12), "is empty"),
    (Box(-1, 2, 10, 12), r"lies \(partly\) off the 40x30 image"),
    (Box(0, 0, 40, 30, 30.0), r"lies \(partly\) off the 40x30 image"),  # its turned corners leave the image
])
def test_validate_names_what_is_wrong(box, match):
    with pytest.raises(InputError, match=f"^request 3: .*{match}"):
        box.validate(30, 40, what="request 3")


def test_fits_looks_at_the_rotated_pixels():
    assert Box(0, 0, 40, 30).fits(30, 40)
    assert not Box(0, 0, 40, 30, 30.0).fits(30, 40)
    assert Box(15, 5, 25, 25, 90.0).fits(30, 40)  # 10x20 turned upright-to-flat: 20x10 around (20, 15)
    assert not Box(15, 0, 25, 30, 90.0).fits(30, 21)  # 30 wide once turned


def test_the_workspace_keeps_a_rotated_box_and_refuses_a_malformed_one(tmp_path):
    import numpy as np

    from anogen.data.imageio import write_image
    from anogen.data.workspace import Workspace

    write_image(tmp_path / "good.png", np.zeros((40, 60, 3), np.uint8))
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.add_defect_kind("scratch")
    image = ws.add_good_images([tmp_path / "good.png"])[0].image
    rotated = Box(20, 10, 40, 20, 45.0, defect_kind="scratch")
    ws.set_boxes(image, [rotated, Box(0, 0, 60, 40)])
    ws.save()
    assert Workspace.open(ws.root).project.good_images[0].boxes == [rotated, Box(0, 0, 60, 40)]
    for bad, match in [(Box(1.5, 0, 10, 10), "integer pixels"),  # type: ignore[arg-type]
                       (Box(0, 0, 10, 10, defect_kind=None), "defect_kind must be a string"),  # type: ignore[arg-type]
                       (Box(4, 4, 4, 10), "is empty"),
                       (Box(-1, 0, 10, 10), "lies outside image"),
                       (Box(0, 0, 60, 40, 10.0), "lies outside image")]:  # turned, it leaves the image
        with pytest.raises(InputError, match=match):
            ws.set_boxes(image, [bad])
    assert ws.project.good_images[0].boxes == [rotated, Box(0, 0, 60, 40)]  # a refused edit changes nothing
    ws.close()
