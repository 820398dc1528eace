"""Every defect kind of a category at once: several generated sets, merged or trained on together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import TINY_DRAEM_ARGS

from anogen.cli import main
from anogen.data.demo import write_demo_dataset
from anogen.data.generated import GeneratedSetWriter, merge_generated_sets, read_generated_set
from anogen.data.imageio import list_images, read_image
from anogen.errors import InputError


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, categories=("fabric",), size=32, seed=4, train_good=3, test_good=2, test_per_kind=2)
    return root / "fabric"


def kind_set(folder: Path, category: Path, kind: str, count: int, *, relative_source: bool = False) -> Path:
    """A set of one defect kind, ids numbered from zero as generate_set numbers them."""
    with GeneratedSetWriter(folder) as writer:
        for index, source in enumerate(list_images(category / "train" / "good")[:count]):
            image = read_image(source).copy()
            image[8:16, 8:16] = 255 if kind == "stain" else 0
            mask = np.zeros(image.shape[:2], bool)
            mask[8:16, 8:14] = True  # narrower than the box: a rotated box's mask, say
            source_text = str(Path("..") / ".." / "demo_src" / source.name) if relative_source else str(source)
            writer.add(image, box=(8, 8, 16, 16), source=source_text, defect_kind=kind, seed=index, model="hand",
                       embedding_hash="0", steps=0, guidance=0.0, mask=mask)
    return folder


def test_merging_sets_keeps_every_sample_with_unique_ids(category, tmp_path):
    (tmp_path / "demo_src").mkdir()
    for source in list_images(category / "train" / "good"):
        (tmp_path / "demo_src" / source.name).write_bytes(source.read_bytes())
    holes = kind_set(tmp_path / "sets" / "hole", category, "hole", 2, relative_source=True)
    stains = kind_set(tmp_path / "sets" / "stain", category, "stain", 3)
    merged = read_generated_set(merge_generated_sets([holes, stains], tmp_path / "all"))

    assert [s.id for s in merged] == ["hole_000000", "hole_000001", "stain_000000", "stain_000001", "stain_000002"]
    assert [s.defect_kind for s in merged].count("stain") == 3
    assert all(Path(s.source).is_file() for s in merged)  # relative sources still resolve from the merged set
    assert all(s.load_mask().sum() == 48 for s in merged)  # the masks themselves, not refilled boxes
    with pytest.raises(InputError, match="given twice"):
        merge_generated_sets([holes, tmp_path / "sets" / ".." / "sets" / "hole"], tmp_path / "twice")


def test_train_takes_several_generated_sets_and_counts_each_kind(category, tmp_path):
    from anogen.detection.checkpoint import read_checkpoint_info

    holes = kind_set(tmp_path / "hole", category, "hole", 2)
    stains = kind_set(tmp_path / "stain", category, "stain", 3)
    out = tmp_path / "det"
    assert main(["train", "--data", str(category), "--detector", "draem", "--generated", str(holes), str(stains),
                 "--steps", "2", "--device", "cpu", "--quiet", *TINY_DRAEM_ARGS, "--out", str(out)]) == 0
    provenance = read_checkpoint_info(out, "last").provenance
    assert provenance["generated_per_kind"] == {"hole": 2, "stain": 3} and provenance["generated_samples"] == 5
    assert provenance["generated_sets"] == [str(holes.resolve()), str(stains.resolve())]

    metrics_file = tmp_path / "metrics.json"
    assert main(["evaluate", "--data", str(category), "--detector-dir", str(out), "--device", "cpu", "--quiet",
                 "--json", str(metrics_file)]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics["generated_per_kind"] == {"hole": 2, "stain": 3}
    assert sum(metrics["test_per_kind"].values()) == metrics["n_images"] and "good" in metrics["test_per_kind"]
