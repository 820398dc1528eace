"""The generated-set folder format: round trip, validation, all-or-nothing writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anogen.data.generated import (
    GeneratedSetWriter,
    read_generated_set,
    usable_samples,
    write_manifest,
)
from anogen.errors import InputError, JobCancelled

PROVENANCE = dict(defect_kind="crack", model="tiny-sd", embedding_hash="ab12", steps=50, guidance=10.0)


def _image(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_set(folder, statuses=("accepted", "rejected", "pending")):
    with GeneratedSetWriter(folder) as writer:
        for i, status in enumerate(statuses):
            writer.add(_image(i), box=(2, 3, 12, 9), source=f"/data/good/{i:03d}.png", seed=i,
                       status=status, **PROVENANCE)
    return folder


def test_round_trip_keeps_pixels_boxes_and_provenance(tmp_path):
    folder = _write_set(tmp_path / "gen")
    samples = read_generated_set(folder)
    assert [s.seed for s in samples] == [0, 1, 2]
    first = samples[0]
    assert first.image == f"images/{first.id}.png" and first.mask == f"masks/{first.id}.png"
    assert first.image_path.is_absolute() and first.image_path.is_file()
    assert first.source == "/data/good/000.png"
    assert first.box == (2, 3, 12, 9)
    assert (first.defect_kind, first.model, first.embedding_hash, first.steps, first.guidance) == (
        "crack", "tiny-sd", "ab12", 50, 10.0)
    np.testing.assert_array_equal(first.load_image(), _image(0))  # lossless
    mask = first.load_mask()
    assert mask.shape == (24, 32) and mask.sum() == 10 * 6 and mask[3:9, 2:12].all()
    line = json.loads((folder / "manifest.jsonl").read_text().splitlines()[0])
    assert set(line) == {"id", "image", "mask", "source", "box", "defect_kind", "seed", "model",
                         "embedding_hash", "steps", "guidance", "status"}


def test_usable_samples_drop_rejected(tmp_path):
    samples = read_generated_set(_write_set(tmp_path / "gen"))
    assert [s.status for s in usable_samples(samples)] == ["accepted", "pending"]


def test_cancel_leaves_nothing_and_keeps_an_existing_set(tmp_path):
    fresh = tmp_path / "fresh"
    with pytest.raises(JobCancelled):
        with GeneratedSetWriter(fresh) as writer:
            writer.add(_image(0), box=(0, 0, 4, 4), source="a.png", seed=0, **PROVENANCE)
            raise JobCancelled("stop")
    assert list(tmp_path.iterdir()) == []

    existing = _write_set(tmp_path / "existing", statuses=("accepted",))
    writer = GeneratedSetWriter(existing)
    writer.add(_image(5), box=(0, 0, 4, 4), source="b.png", seed=5, **PROVENANCE)
    writer.cancel()
    assert [s.seed for s in read_generated_set(existing)] == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_commit_replaces_an_existing_set(tmp_path):
    folder = _write_set(tmp_path / "gen")
    _write_set(folder, statuses=("pending",))
    samples = read_generated_set(folder)
    assert [s.status for s in samples] == ["pending"]
    assert len(list((folder / "images").iterdir())) == 1


def test_bad_lines_are_reported_with_line_numbers(tmp_path):
    folder = _write_set(tmp_path / "gen")
    manifest = folder / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    escaped = json.loads(lines[1])
    escaped["image"] = "../outside.png"
    manifest.write_text("\n".join([lines[0], json.dumps(escaped), "{not json", lines[2]]) + "\n")
    with pytest.raises(InputError) as info:
        read_generated_set(folder)
    message = str(info.value)
    assert "line 2" in message and "leaves the set folder" in message
    assert "line 3" in message and "invalid JSON" in message
    assert "line 1" not in message and "line 4" not in message


def test_missing_files_fields_and_bad_boxes_fail_clearly(tmp_path):
    folder = _write_set(tmp_path / "gen")
    samples = read_generated_set(folder)
    samples[0].mask_path.unlink()
    manifest = folder / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    no_seed = json.loads(lines[1])
    del no_seed["seed"]
    bad_box = json.loads(lines[2])
    bad_box["box"] = [5, 5, 5, 9]
    manifest.write_text("\n".join([lines[0], json.dumps(no_seed), json.dumps(bad_box)]) + "\n")
    with pytest.raises(InputError) as info:
        read_generated_set(folder)
    message = str(info.value)
    assert "line 1: mask file" in message and "missing" in message
    assert "line 2: missing field(s) seed" in message
    assert "line 3" in message and "empty" in message
    with pytest.raises(InputError, match="not a generated set"):
        read_generated_set(tmp_path)


def test_writer_refuses_boxes_off_the_image_and_duplicate_ids(tmp_path):
    with GeneratedSetWriter(tmp_path / "gen") as writer:
        with pytest.raises(InputError, match="outside the 32x24 image"):
            writer.add(_image(0), box=(20, 10, 40, 20), source="a.png", seed=0, **PROVENANCE)
        writer.add(_image(0), box=(0, 0, 4, 4), source="a.png", seed=0, id="a_0", **PROVENANCE)
        with pytest.raises(InputError, match="used twice"):
            writer.add(_image(0), box=(0, 0, 4, 4), source="a.png", seed=0, id="a_0", **PROVENANCE)
    assert [s.id for s in read_generated_set(tmp_path / "gen")] == ["a_0"]


def test_write_manifest_updates_statuses_atomically(tmp_path):
    folder = _write_set(tmp_path / "gen")
    samples = read_generated_set(folder)
    samples[0].status = "rejected"
    write_manifest(folder, samples)
    assert [s.status for s in read_generated_set(folder)] == ["rejected", "rejected", "pending"]


def test_stage2_settings_are_kept_and_older_sets_still_read(tmp_path):
    settings = {"strength": 0.7, "restore_detail": True, "prompt": None, "crop": "auto"}
    with GeneratedSetWriter(tmp_path / "gen") as writer:
        writer.add(_image(0), box=(2, 3, 12, 9), source="a.png", seed=0, settings=settings, **PROVENANCE)
        with pytest.raises(InputError, match="plain values"):
            writer.add(_image(1), box=(2, 3, 12, 9), source="b.png", seed=1, settings={"box": [1, 2]},
                       **PROVENANCE)
    [sample] = read_generated_set(tmp_path / "gen")
    assert sample.settings == settings
    # A set written before settings were recorded reads as before, with no settings.
    old = _write_set(tmp_path / "old")
    assert all(s.settings == {} for s in read_generated_set(old))
    assert "settings" not in (old / "manifest.jsonl").read_text()
    # Rewriting the manifest (accept/reject) keeps them.
    write_manifest(tmp_path / "gen", [sample])
    assert read_generated_set(tmp_path / "gen")[0].settings == settings
    lines = (tmp_path / "gen" / "manifest.jsonl").read_text().splitlines()
    bad = json.loads(lines[0]) | {"settings": "strong"}
    (tmp_path / "gen" / "manifest.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(InputError, match="settings"):
        read_generated_set(tmp_path / "gen")


def test_copying_a_sample_into_another_set_keeps_all_its_provenance(tmp_path):
    from anogen.data.generated import merge_generated_sets

    settings = {"strength": 0.5, "restore_detail": True}
    with GeneratedSetWriter(tmp_path / "part") as writer:
        writer.add(_image(0), box=(2, 3, 12, 9), source="/data/good/000.png", seed=7, status="accepted",
                   settings=settings, **PROVENANCE)
    [original] = read_generated_set(tmp_path / "part")
    [merged] = read_generated_set(merge_generated_sets([tmp_path / "part"], tmp_path / "all"))
    assert merged.id == f"crack_{original.id}"
    for name in ("source", "box", "defect_kind", "seed", "model", "embedding_hash", "steps", "guidance",
                 "status", "settings"):
        assert getattr(merged, name) == getattr(original, name), name
    np.testing.assert_array_equal(merged.load_image(), original.load_image())
    np.testing.assert_array_equal(merged.load_mask(), original.load_mask())
