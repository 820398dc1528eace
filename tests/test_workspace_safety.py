"""The workspace never writes outside the project, keeps one writer, moves, and survives
hostile manifests (issue 15 items 2, 3, 7, 14; issue 12 bug 12)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anogen.data.imageio import write_image, write_mask
from anogen.data.project_lock import (
    LOCK_NAME,
    ProjectLockedError,
    ReadOnlyProjectError,
    read_holder,
)
from anogen.data.safe_names import safe_stem
from anogen.data.workspace import Workspace, WorkspaceError
from anogen.errors import InputError

REPO = Path(__file__).resolve().parent.parent


def _image(path: Path, height: int = 40, width: int = 60, value: int = 100) -> Path:
    rng = np.random.default_rng(value)
    write_image(path, rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return path


def _manifest(ws: Workspace) -> dict:
    return json.loads(ws.manifest_path.read_text())


def _rewrite(ws: Workspace, data: dict) -> None:
    ws.manifest_path.write_text(json.dumps(data))


# ----------------------------------------------------------------------------- item 2: confinement

@pytest.fixture()
def victim(tmp_path: Path) -> Path:
    """A user's folder outside the project, with an image and a mask they care about."""
    folder = tmp_path / "victim"
    _image(folder / "photo.png")
    write_mask(folder / "photo_mask.png", np.ones((40, 60), bool))
    return folder


def test_a_manifest_cannot_make_the_library_overwrite_an_outside_file(tmp_path: Path, victim: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.add_defect_kind("scratch")
    ws.save()
    data = _manifest(ws)
    data["linked_datasets"] = [str(victim)]
    data["defect_kinds"][0]["support"] = [{"image": str(victim / "photo.png"),
                                           "mask": str(victim / "photo_mask.png")}]
    _rewrite(ws, data)
    ws.close()
    original = (victim / "photo_mask.png").read_bytes()

    opened = Workspace.open(ws.root)  # reading a linked dataset is allowed
    painted = np.zeros((40, 60), bool)
    painted[2:5, 3:9] = True
    rel = opened.write_support_mask("scratch", 0, painted)

    assert (victim / "photo_mask.png").read_bytes() == original  # the linked dataset is read-only
    assert opened.writable_path(rel).is_relative_to(ws.root) and rel.startswith("support/")
    assert sorted(p.name for p in victim.iterdir()) == ["photo.png", "photo_mask.png"]
    # Importing into a linked dataset folder is refused too.
    with pytest.raises(InputError, match="linked dataset"):
        opened.import_image(victim / "photo.png", str(victim))
    assert sorted(p.name for p in victim.iterdir()) == ["photo.png", "photo_mask.png"]


def test_generated_sets_and_detectors_may_not_live_outside_the_project(tmp_path: Path, victim: Path) -> None:
    from anogen.data.generated import GeneratedSetWriter

    with GeneratedSetWriter(victim / "set") as writer:
        writer.add(np.zeros((40, 60, 3), np.uint8), box=(1, 1, 9, 9), source="x.png", defect_kind="k",
                   seed=0, model="m", embedding_hash="h", steps=1, guidance=1.0, status="pending")
    before = (victim / "set" / "manifest.jsonl").read_bytes()
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.save()
    data = _manifest(ws)
    data["linked_datasets"] = [str(victim)]
    sample = {"image": str(victim / "set" / "images" / "000000.png"), "mask": "m.png", "source": "x.png",
              "box": [1, 1, 9, 9], "defect_kind": "k", "seed": 0}
    data["generated_sets"] = [{"name": "run", "folder": str(victim / "set"), "samples": [sample]}]
    data["detectors"] = [{"name": "d", "folder": str(victim), "detector": "draem"}]
    _rewrite(ws, data)
    ws.close()
    with pytest.raises(WorkspaceError) as info:
        Workspace.open(ws.root)
    message = str(info.value)
    assert "generated_sets[0] (run).folder" in message and "detectors[0] (d).folder" in message
    assert "linked dataset folder, which the project only reads" in message

    lenient = Workspace.open(ws.root, strict=False)
    lenient.project.generated_sets[0].samples[0].mask = sample["image"]  # let the record stand
    with pytest.raises(InputError, match="will not write there"):
        lenient.set_sample_status("run", 0, "rejected")
    assert (victim / "set" / "manifest.jsonl").read_bytes() == before
    assert lenient.project.generated_sets[0].samples[0].status == "pending"


def test_write_paths_are_checked_against_the_project_root(tmp_path: Path, victim: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    (ws.root / "support" / "away").symlink_to(victim)
    for bad in ("../x.png", str(tmp_path / "x.png"), "support/away/photo_mask.png", "a\x00b.png", ""):
        with pytest.raises(InputError):
            ws.writable_path(bad)
    assert ws.writable_path("support/k/x_mask.png") == ws.root / "support" / "k" / "x_mask.png"
    # A linked dataset may not hold the project, or every write would go into a read-only folder.
    with pytest.raises(InputError, match="contains the project folder"):
        ws.link_dataset(tmp_path, add_images=False)
    with pytest.raises(InputError, match="project's own folders"):
        ws.link_dataset(ws.root / "support", add_images=False)


# ----------------------------------------------------------------------------- item 3: one writer

_HOLDER = """
import sys
from anogen.data.workspace import Workspace
ws = Workspace.open(sys.argv[1], read_only=False)
print("ready", flush=True)
sys.stdin.readline()
"""


def _hold(root: Path) -> subprocess.Popen:
    """Another process that opens the project for writing and keeps it open until told."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def test_a_second_process_gets_a_read_only_project_or_a_clear_refusal(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.add_defect_kind("scratch")
    ws.save()
    ws.close()
    assert not (ws.root / LOCK_NAME).exists()  # closed: the lock is given back

    child = _hold(ws.root)
    try:
        host = socket.gethostname()
        with pytest.raises(ProjectLockedError, match=f"pid {child.pid} on host {host}") as info:
            Workspace.open(ws.root, read_only=False)
        assert info.value.holder is not None and info.value.holder.pid == child.pid

        second = Workspace.open(ws.root)  # the default: read-only, saying who holds it
        assert second.read_only and second.lock_holder is not None and second.lock_holder.pid == child.pid
        assert second.read_only_reason() == f"read-only: opened by pid {child.pid} on host {host}"
        second.add_defect_kind("dent")  # in memory only
        with pytest.raises(ReadOnlyProjectError, match=f"pid {child.pid}"):
            second.save()
        with pytest.raises(ReadOnlyProjectError):
            second.import_image(_image(tmp_path / "g.png"), "images/good")
        assert [k["name"] for k in _manifest(ws)["defect_kinds"]] == ["scratch"]
    finally:
        child.communicate("\n", timeout=30)
    assert child.returncode == 0
    assert not (ws.root / LOCK_NAME).exists()  # the holder exited and released it
    with Workspace.open(ws.root, read_only=False) as writer:
        writer.add_defect_kind("dent")
        writer.save()
    assert [k["name"] for k in _manifest(ws)["defect_kinds"]] == ["scratch", "dent"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.close()
    child = _hold(ws.root)
    child.kill()
    child.wait(timeout=30)
    child.stdout.close()
    stale = read_holder(ws.root / LOCK_NAME)
    assert stale is not None and stale.pid == child.pid  # the dead process left its lock behind
    reopened = Workspace.open(ws.root, read_only=False)
    assert not reopened.read_only
    assert read_holder(ws.root / LOCK_NAME).pid == os.getpid()
    reopened.save()
    reopened.close()


def test_a_copy_made_while_the_project_is_open_elsewhere_is_writable(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.close()
    child = _hold(ws.root)
    try:
        copy = tmp_path / "copy"
        shutil.copytree(ws.root, copy)  # the lock file comes along, naming the original folder
        with Workspace.open(copy, read_only=False) as copied:
            copied.save()
        assert Workspace.open(ws.root).read_only  # the original is still held
    finally:
        child.communicate("\n", timeout=30)


def test_one_process_may_open_a_project_twice(tmp_path: Path) -> None:
    first = Workspace.create(tmp_path / "proj", "p")
    second = Workspace.open(first.root, read_only=False)  # re-entrant within one process
    first.close()
    assert (first.root / LOCK_NAME).exists()  # still held by `second`
    second.save()
    with pytest.raises(ReadOnlyProjectError, match="closed"):
        first.save()
    second.close()
    assert not (first.root / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_respected_and_named(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.close()
    (ws.root / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "press-line-7", "since": "then",
                                                 "token": "t"}))
    with pytest.raises(ProjectLockedError, match=f"pid 1 on host press-line-7.*delete {ws.root / LOCK_NAME}"):
        Workspace.open(ws.root, read_only=False)


# ----------------------------------------------------------------------------- item 7: moving

def _dataset(folder: Path, count: int = 3) -> Path:
    for index in range(count):
        _image(folder / "train" / "good" / f"{index:03d}.png", value=index)
    return folder


def test_a_dataset_inside_the_project_moves_and_copies_with_it(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "a" / "proj", "demo")
    category = _dataset(ws.root / "dataset" / "fabric")
    ws.link_dataset(category)
    ws.save()
    ws.close()
    text = ws.manifest_path.read_text()
    assert str(tmp_path) not in text and _manifest(ws)["linked_datasets"] == ["dataset/fabric"]

    copy = tmp_path / "copy"
    shutil.copytree(ws.root, copy)
    with Workspace.open(copy) as copied:  # the copy uses its own dataset, not the original's
        assert copied.resolve(copied.project.good_images[0].image).is_relative_to(copy)
    moved = (tmp_path / "a" / "proj").rename(tmp_path / "b")
    with Workspace.open(moved) as reopened:
        assert reopened.resolve(reopened.project.good_images[2].image) == \
            moved / "dataset" / "fabric" / "train" / "good" / "002.png"


def _absolute_links(ws: Workspace) -> None:
    """Rewrite the manifest as older versions wrote it: the inside dataset as an absolute path."""
    data = _manifest(ws)
    data["linked_datasets"] = [str(ws.root / d) for d in data["linked_datasets"]]
    for good in data["good_images"]:
        good["image"] = str(ws.root / good["image"])
    _rewrite(ws, data)


def test_an_old_project_with_an_absolute_inside_dataset_opens_after_a_move_or_copy(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "a", "demo")
    ws.link_dataset(_dataset(ws.root / "dataset" / "fabric"))
    ws.save()
    ws.close()
    _absolute_links(ws)

    copy = tmp_path / "copy"
    shutil.copytree(ws.root, copy)
    with Workspace.open(copy) as copied:
        assert copied.project.linked_datasets == ["dataset/fabric"]
        assert copied.resolve(copied.project.good_images[0].image).is_relative_to(copy)
        assert any("now points at dataset/fabric" in w for w in copied.warnings)
    moved = ws.root.rename(tmp_path / "moved")
    with Workspace.open(moved) as reopened:
        assert reopened.project.good_images[1].image == "dataset/fabric/train/good/001.png"
        reopened.save()
    assert str(tmp_path) not in (moved / "project.json").read_text()


def test_a_moved_outside_dataset_is_reported_and_can_be_re_pointed(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "dataset")
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.link_dataset(dataset)
    ws.save()
    ws.close()
    moved = dataset.rename(tmp_path / "elsewhere")
    lenient = Workspace.open(ws.root, strict=False)
    assert lenient.missing_linked_datasets() == [str(dataset)]
    assert lenient.relink_dataset(str(dataset), moved) == 3
    lenient.save()
    lenient.close()
    with Workspace.open(ws.root) as strict:
        assert strict.missing_linked_datasets() == []


# ----------------------------------------------------------------------------- item 14: shape

def test_a_deeply_nested_manifest_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "project.json").write_text('{"schema_version": 1, "name": "x", "view": '
                                           + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(WorkspaceError, match="too deeply"):
        Workspace.open(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()  # a refused open gives the lock back


def test_a_number_too_long_to_convert_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "project.json").write_text('{"schema_version": 1, "name": "x", "model": ' + "1" * 5000 + "}")
    with pytest.raises(WorkspaceError, match="not a valid project file"):
        Workspace.open(tmp_path)


def test_gui_state_of_the_wrong_shape_is_dropped_and_named(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.close()
    data = _manifest(ws)
    deep: list = []
    for _ in range(500):
        deep = [deep]
    data["view"] = {"panel": [], "tool": "brush", "selection": {"kind": "good", "index": "3"},
                    "canvas": {"zoom": 2.0, "center": [1, "a"], "fit": False}, "mine": deep, "other": {"a": 1}}
    _rewrite(ws, data)
    with Workspace.open(ws.root) as opened:
        view = opened.project.view
        assert view == {"tool": "brush", "selection": {"kind": "good"}, "canvas": {"zoom": 2.0, "fit": False},
                        "other": {"a": 1}}
        notes = "\n".join(opened.warnings)
        for field in ("project.view.panel: expected a string", "project.view.selection.index: expected an integer",
                      "project.view.canvas.center: expected [x, y]", "project.view.mine: nested more than"):
            assert field in notes
        opened.save()  # and the cleaned state saves


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d["good_images"].append({"image": "images/good/a\u0000b.png"}), "good_images[0].image"),
    (lambda d: d["linked_datasets"].append(json.loads("[" * 900 + "]" * 900)), "linked_datasets[0]"),
    (lambda d: d["linked_datasets"].append("x" * 10_000), "linked_datasets[0]"),
    (lambda d: d.update(defect_kinds=[{"name": "k", "token": "<k>", "support": [{"image": 5}]}]),
     "defect_kinds[0].support[0].image: expected a string"),
    (lambda d: d.update(name={"a": [1]}), "project.name: expected a string"),
    (lambda d: d.update(view={"zoom": json.loads("[" * 900 + "]" * 900)}) or d.update(name=5), "project.name"),
])
def test_a_manifest_of_the_wrong_shape_names_the_field(tmp_path: Path, edit, fragment: str) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.close()
    data = _manifest(ws)
    edit(data)
    _rewrite(ws, data)
    with pytest.raises(WorkspaceError) as info:
        Workspace.open(ws.root)
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------- issue 12 bug 12: names

def test_imported_file_names_keep_the_users_text(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "proj", "p")
    ws.add_defect_kind("scratch")
    unicode_name = _image(tmp_path / "défaut 1 ø.png")
    rel = ws.import_image(unicode_name, "images/good")
    assert rel == "images/good/défaut 1 ø.png" and ws.resolve(rel).is_file()
    assert ws.import_image(unicode_name, "images/good") == "images/good/défaut 1 ø_1.png"
    support = ws.add_support_image("scratch", _image(tmp_path / "Kratzer Größe 2.PNG"), _mask(tmp_path))
    assert support.image == "support/scratch/Kratzer Größe 2.png"
    assert support.mask == "support/scratch/Kratzer Größe 2_mask.png"
    ws.save()
    ws.close()
    assert Workspace.open(ws.root).project.defect_kinds[0].support[0] == support


def _mask(folder: Path) -> Path:
    write_mask(folder / "m.png", np.ones((40, 60), bool))
    return folder / "m.png"


@pytest.mark.parametrize("stem, expected", [
    ("défaut 1 ø", "défaut 1 ø"),
    ("写真 01", "写真 01"),
    ("a/b\\c", "a_b_c"),
    ('x:y*z?"<>|', "x_y_z_____"),
    ("line\nbreak\x00", "line_break_"),
    ("..", "image"),
    (".hidden", "_hidden"),
    ("CON", "CON_"),
    ("nul.tar", "nul_.tar"),
    ("trailing. ", "trailing"),
    ("e\u0301", "\u00e9"),  # NFC: one file whatever the keyboard produced
])
def test_only_unsafe_characters_are_replaced(stem: str, expected: str) -> None:
    assert safe_stem(stem) == expected


def test_very_long_names_are_cut_on_a_character_boundary() -> None:
    stem = safe_stem("ø" * 300)
    assert len(stem.encode("utf-8")) <= 200 and set(stem) == {"ø"}
