"""The project workspace: round trip, validation, path escapes, and crash safety."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from anogen.data.box import Box
from anogen.data.imageio import read_mask, write_image, write_mask
from anogen.data.workspace import (
    GeneratedSample,
    Workspace,
    WorkspaceError,
)
from anogen.errors import InputError


def _image(path: Path, height: int = 40, width: int = 60, value: int = 100) -> Path:
    rng = np.random.default_rng(value)
    write_image(path, rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return path


@pytest.fixture()
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    _image(folder / "scratch1.png")
    write_mask(folder / "scratch1_mask.png", np.pad(np.ones((10, 10), bool), ((5, 25), (5, 45))))
    _image(folder / "good.jpg", 48, 64, value=7)
    return folder


def _full_project(root: Path, sources: Path) -> Workspace:
    ws = Workspace.create(root, "Bottles")
    ws.project.model = "runwayml/stable-diffusion-inpainting"
    ws.add_defect_kind("scratch", init_word="scratch")
    ws.add_support_image("scratch", sources / "scratch1.png", sources / "scratch1_mask.png")
    ws.set_box_size("scratch", (0.1, 0.3, 0.05, 0.2))
    good = ws.add_good_images([sources / "good.jpg"])[0]
    ws.set_boxes(good.image, [Box(2, 3, 20, 30, defect_kind="scratch"), Box(0, 0, 64, 48)])
    (ws.embeddings_dir / "scratch.safetensors").write_bytes(b"not read by the workspace")
    ws.set_embedding("scratch", ws.embeddings_dir / "scratch.safetensors")
    set_folder = ws.generated_dir / "run1"
    write_image(set_folder / "images" / "0.png", np.zeros((48, 64, 3), np.uint8))
    write_mask(set_folder / "masks" / "0.png", np.zeros((48, 64), bool))
    sample = GeneratedSample(image="generated/run1/images/0.png", mask="generated/run1/masks/0.png",
                             source=good.image, box=Box(2, 3, 20, 30), defect_kind="scratch", seed=5,
                             model="sd", embedding_hash="abc", steps=50, guidance=7.5)
    ws.add_generated_set("run1", [sample])
    ws.set_sample_status("run1", 0, "accepted")
    (ws.detectors_dir / "draem1").mkdir()
    ws.add_detector("draem1", "detectors/draem1", "draem", {"image_auroc": 0.93, "count": 12})
    ws.project.view = {"zoom": 2.0, "panels": ["left"]}
    ws.save()
    return ws


def test_round_trip_keeps_every_record(tmp_path: Path, sources: Path) -> None:
    ws = _full_project(tmp_path / "proj", sources)
    reopened = Workspace.open(tmp_path / "proj")
    assert reopened.project == ws.project
    kind = reopened.project.defect_kind("scratch")
    assert kind.token == "<scratch>" and kind.box_size == (0.1, 0.3, 0.05, 0.2)
    mask = read_mask(reopened.resolve(kind.support[0].mask))
    assert mask.shape == (40, 60) and mask.sum() == 100
    assert reopened.project.generated_sets[0].samples[0].status == "accepted"
    assert reopened.project.detectors[0].metrics["image_auroc"] == pytest.approx(0.93)
    # The project is relocatable: every in-project path is relative.
    text = (tmp_path / "proj" / "project.json").read_text()
    assert str(tmp_path) not in text
    moved = tmp_path / "moved"
    (tmp_path / "proj").rename(moved)
    assert Workspace.open(moved).project == ws.project


def test_tokens_and_imported_names_are_unique(tmp_path: Path, sources: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    assert ws.add_defect_kind("scratch").token == "<scratch>"
    assert ws.add_defect_kind("Scratch").token == "<scratch_2>"
    with pytest.raises(InputError, match="already exists"):
        ws.add_defect_kind("scratch")
    with pytest.raises(InputError, match="defect kind"):
        ws.add_defect_kind("../evil")
    first = ws.import_image(sources / "good.jpg", "images/good")
    second = ws.import_image(sources / "good.jpg", "images/good")
    assert first != second and ws.resolve(first).is_file() and ws.resolve(second).is_file()


def test_open_reports_every_problem_at_once(tmp_path: Path, sources: Path) -> None:
    _full_project(tmp_path / "proj", sources)
    manifest = tmp_path / "proj" / "project.json"
    data = json.loads(manifest.read_text())
    data["defect_kinds"][0]["support"][0]["image"] = "../outside.png"          # escape
    data["good_images"][0]["boxes"][0]["x1"] = 500                              # off the image
    data["good_images"].append({"image": "images/good/missing.png"})            # missing file
    data["detectors"].append({"name": 3, "folder": "detectors/x"})              # wrong type + missing
    data["generated_sets"][0]["samples"][0]["status"] = "maybe"                 # bad enum
    data["defect_kinds"].append(dict(data["defect_kinds"][0], support=[]))      # duplicate name
    manifest.write_text(json.dumps(data))
    with pytest.raises(WorkspaceError) as info:
        Workspace.open(tmp_path / "proj")
    message = str(info.value)
    for fragment in ("'../outside.png' leaves the project", "[2, 3, 500, 30] lies outside image",
                     "missing.png' not found", "detectors[1].name: expected a string",
                     "detectors[1].detector: missing", "status: expected one of",
                     "defect kind 'scratch' appears more than once",
                     "defect kind token '<scratch>' appears more than once"):
        assert fragment in message
    assert len(info.value.problems) == 8


def test_mask_size_mismatch_in_manifest_names_both_sizes(tmp_path: Path, sources: Path) -> None:
    ws = _full_project(tmp_path / "proj", sources)
    write_mask(ws.resolve(ws.project.defect_kinds[0].support[0].mask), np.zeros((10, 12), bool))
    with pytest.raises(WorkspaceError, match="12x10 but image .* is 60x40"):
        Workspace.open(ws.root)


@pytest.mark.parametrize("text, expected", [
    ("{", "not valid JSON"),
    ('{"schema_version": 99, "name": "x"}', "newer AnoGen"),
    ('{"name": "x"}', "schema_version"),
    ("[]", "JSON object"),
])
def test_broken_manifest_is_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "project.json").write_text(text)
    with pytest.raises(WorkspaceError, match=expected):
        Workspace.open(tmp_path)


def test_open_refuses_a_folder_without_project(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="not an AnoGen project"):
        Workspace.open(tmp_path)
    Workspace.create(tmp_path / "p", "p")
    with pytest.raises(InputError, match="already holds a project"):
        Workspace.create(tmp_path / "p", "again")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        Workspace.create(tmp_path / "busy", "p")
    with pytest.raises(WorkspaceError, match="name: expected a string"):  # undecodable: never opens
        (tmp_path / "p" / "project.json").write_text('{"schema_version": 1, "name": 5}')
        Workspace.open(tmp_path / "p", strict=False)


def test_paths_may_not_escape_the_project(tmp_path: Path, sources: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    outside = _image(tmp_path / "outside.png")
    (ws.root / "images" / "link.png").symlink_to(outside)
    (ws.root / "images" / "linkdir").symlink_to(tmp_path)
    for bad in ("../outside.png", str(outside), "images/../../outside.png", "images/link.png",
                "images/linkdir/outside.png", "", "images\\..\\..\\outside.png"):
        with pytest.raises(InputError):
            ws.resolve(bad)
    assert ws.resolve("images/good") == ws.root / "images" / "good"
    # A symlink that stays inside the project is fine.
    (ws.root / "images" / "inner.png").symlink_to(ws.root / "images" / "good")
    assert ws.resolve("images/inner.png").exists()


def test_linked_dataset_is_referenced_in_place(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    for index in range(3):
        _image(dataset / "train" / "good" / f"{index:03d}.png", value=index)
    ws = Workspace.create(tmp_path / "proj", "p")
    added = ws.link_dataset(dataset)
    assert [Path(g.image).name for g in added] == ["000.png", "001.png", "002.png"]
    assert not any((ws.root / "images" / "good").iterdir())  # nothing copied
    assert ws.resolve(added[0].image) == dataset / "train" / "good" / "000.png"
    assert ws.resolve(str(tmp_path / "proj" / ".." / "dataset" / "train" / "good" / "001.png")).is_file()
    ws.set_boxes(added[1].image, [Box(0, 0, 5, 5)])
    ws.save()
    assert Workspace.open(ws.root).project == ws.project
    assert ws.add_good_images([dataset / "train" / "good" / "000.png"]) == []  # already there

    # The dataset moves: a strict open lists every dangling path, a lenient one opens so
    # the GUI can relink the folder, and the relinked project opens strictly again.
    moved = dataset.rename(tmp_path / "moved_dataset")
    with pytest.raises(WorkspaceError) as info:
        Workspace.open(ws.root)
    assert len(info.value.problems) == 4 and "linked dataset folder" in info.value.problems[0]
    lenient = Workspace.open(ws.root, strict=False)
    assert len(lenient.problems) == 4
    assert lenient.relink_dataset(str(dataset), moved) == 3
    lenient.save()
    assert Workspace.open(ws.root).project.good_images[1].boxes == [Box(0, 0, 5, 5)]
    # Unlinked again (the user removed it by hand): the absolute paths become errors.
    data = json.loads(ws.manifest_path.read_text())
    data["linked_datasets"] = []
    ws.manifest_path.write_text(json.dumps(data))
    with pytest.raises(WorkspaceError) as info:
        Workspace.open(ws.root)
    assert len(info.value.problems) == 3 and "leaves the project folder" in str(info.value)


def test_edits_are_checked_against_the_image(tmp_path: Path, sources: Path) -> None:
    ws = _full_project(tmp_path / "proj", sources)
    good = ws.project.good_images[0].image
    with pytest.raises(InputError, match="outside image .* of 64x48"):
        ws.set_boxes(good, [Box(0, 0, 65, 10)])
    with pytest.raises(InputError, match="unknown defect kind"):
        ws.set_boxes(good, [Box(0, 0, 5, 5, defect_kind="dent")])
    with pytest.raises(InputError, match="empty"):
        ws.set_boxes(good, [Box(5, 5, 5, 9)])
    with pytest.raises(InputError, match="mask is 50x40 .* is 60x40"):
        ws.write_support_mask("scratch", 0, np.zeros((40, 50), bool))
    with pytest.raises(InputError, match="12x10 .* 60x40"):
        ws.add_support_image("scratch", sources / "scratch1.png", _mask(tmp_path / "small.png"))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="corrupt.png"):
        ws.add_good_images([corrupt])
    with pytest.raises(InputError, match="status"):
        ws.set_sample_status("run1", 0, "great")
    painted = np.zeros((40, 60), bool)
    painted[1:4, 2:6] = True
    rel = ws.write_support_mask("scratch", 0, painted)
    assert np.array_equal(read_mask(ws.resolve(rel)), painted)


def _mask(path: Path) -> Path:
    write_mask(path, np.ones((10, 12), bool))
    return path


# ----------------------------------------------------------------------------- kill test

def _state(tag: int, images: list[str]) -> dict:
    """Two clearly different project states."""
    return {
        "model": f"model-{tag}",
        "boxes": {image: [[tag, tag, tag + 10, tag + 10]] for image in images},
        "view": {"tag": tag, "padding": [tag] * 1_000},
    }


def _apply(ws: Workspace, state: dict) -> None:
    ws.project.model = state["model"]
    for good in ws.project.good_images:
        good.boxes = [Box(*b) for b in state["boxes"][good.image]]
    ws.project.view = state["view"]


def _observed(ws: Workspace) -> dict:
    return {
        "model": ws.project.model,
        "boxes": {g.image: [b.to_list() for b in g.boxes] for g in ws.project.good_images},
        "view": ws.project.view,
    }


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork and SIGKILL")
def test_killed_writer_always_leaves_old_or_new_state(tmp_path: Path, sources: Path) -> None:
    """SIGKILL a process in the middle of saving, many times; the project must always reopen."""
    ws = Workspace.create(tmp_path / "proj", "kill")
    ws.add_good_images([_image(tmp_path / f"g{i}.png", value=i) for i in range(5)])
    images = [g.image for g in ws.project.good_images]
    states = [_state(tag, images) for tag in (1, 2)]
    _apply(ws, states[0])
    ws.save()
    ws.close()  # each writer below takes the project's lock; a killed one leaves it stale

    rng = random.Random(0)
    kills, mid_write = 0, 0
    deadline = time.monotonic() + 12.0  # usually ~3 s; the bound only matters on a loaded machine
    while kills < 30 and time.monotonic() < deadline:
        ready_read, ready_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer: alternate the two states as fast as it can, forever
            try:
                os.close(ready_read)
                writer = Workspace.open(ws.root, read_only=False)  # takes over the dead writer's lock
                os.write(ready_write, b"x")
                tag = 0
                while True:
                    tag = 1 - tag
                    _apply(writer, states[tag])
                    writer.save()
            finally:
                os._exit(0)
        os.close(ready_write)
        # Wait until the writer has opened the project and starts saving (bounded, so a
        # child that hangs after fork fails the test instead of hanging the suite).
        started = select.select([ready_read], [], [], 20.0)[0] and os.read(ready_read, 1) == b"x"
        os.close(ready_read)
        if not started:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the writer process did not start")
        time.sleep(rng.uniform(0.0, 0.1))  # a few save cycles
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        leftovers = list(ws.root.glob(".project.json.*.tmp"))
        mid_write += bool(leftovers)
        for leftover in leftovers:  # a killed writer leaves its temp file: harmless, tidy up
            leftover.unlink()
        assert _observed(Workspace.open(ws.root, read_only=True)) in states, f"broken project after kill #{kills}"
    assert kills >= 15
    # Proof that the kills really landed inside save(), not only between saves.
    assert mid_write >= 3, f"only {mid_write} of {kills} kills hit a save in progress"


def test_generated_folder_import_and_status_reach_the_set_manifest(tmp_path: Path, sources: Path) -> None:
    from anogen.data.generated import GeneratedSetWriter, read_generated_set, usable_samples

    ws = _full_project(tmp_path / "proj", sources)
    source = ws.project.good_images[0].image
    with GeneratedSetWriter(ws.generated_dir / "run2") as writer:
        for seed in range(3):
            writer.add(np.zeros((48, 64, 3), np.uint8), box=(4, 4, 20, 16), source=source,
                       defect_kind="scratch", seed=seed, model="sd", embedding_hash="h", steps=10,
                       guidance=5.0, status="pending")
    imported = ws.import_generated_folder("run2", ws.generated_dir / "run2")
    assert imported.folder == "generated/run2" and len(imported.samples) == 3
    assert imported.samples[2].box == Box(4, 4, 20, 16, defect_kind="scratch") and imported.samples[2].seed == 2
    ws.set_sample_status("run2", 1, "rejected")
    ws.save()
    # The trainer reads the set folder: the rejection must be there, not only in project.json.
    on_disk = read_generated_set(ws.generated_dir / "run2")
    assert [s.status for s in on_disk] == ["pending", "rejected", "pending"]
    assert len(usable_samples(on_disk)) == 2
    assert Workspace.open(ws.root).project.generated_set("run2").samples[1].status == "rejected"
