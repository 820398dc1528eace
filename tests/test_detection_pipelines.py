"""Each detector trains on its own official sample recipe (rotation, clean share, textures)."""

from __future__ import annotations

import numpy as np
import pytest

from anogen.detection.pipeline import DataPipeline, Rotation
from anogen.detection.registry import config_for, detector_kind
from anogen.detection.synthesis import SynthesisResult
from anogen.detection.training_data import GeneratedItem, MixedBatchSampler
from anogen.errors import InputError

SIZE = 32


def pipeline(kind: str, category: str = "", **overrides) -> DataPipeline:
    return detector_kind(kind).pipeline(config_for(kind, "quick", overrides), category)


def ramp() -> np.ndarray:
    """A good image whose every rotation is visible: brightness grows to the right and down."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    image = np.stack([x / SIZE, y / SIZE, 0.2 + 0.6 * (x + y) / (2 * SIZE)], axis=-1)
    return np.clip(image, 0.05, 0.95).astype(np.float32)


class _Untouched:
    """Returns the (possibly rotated) image as it is, so the sample shows the rotation."""

    def sample(self, image, rng):
        return SynthesisResult(image=image.copy(), mask=np.zeros(image.shape[:2], np.float32), has_anomaly=False)


def synthetic_views(recipe: DataPipeline, count: int = 400) -> np.ndarray:
    sampler = MixedBatchSampler([ramp()], _Untouched(), pipeline=recipe, seed=3)
    return sampler.batch_arrays(0, count)["clean"].transpose(0, 2, 3, 1)


def test_draem_and_destseg_recipes_are_their_official_ones():
    draem, destseg = pipeline("draem"), pipeline("destseg", "bottle")
    assert (draem.synthesis_clean_probability, draem.texture_augmentations, draem.generated_clean_probability) == (
        0.5, 3, 0.5)
    assert draem.rotation == Rotation(probability=0.3, max_degrees=90.0, fill=0.0)
    assert (destseg.synthesis_clean_probability, destseg.texture_augmentations,
            destseg.generated_clean_probability) == (0.0, 0, 0.0)
    # DeSTSeg rotates by category, as its train.py does; other data gets no rotation.
    assert pipeline("destseg", "bottle").rotation.right_angles and pipeline("destseg", "bottle").rotation.active
    assert pipeline("destseg", "wood").rotation == Rotation(probability=1.0, max_degrees=5.0, fill=114 / 255)
    assert not pipeline("destseg", "capsule").rotation.active
    assert not pipeline("destseg", "my_part").rotation.active
    assert pipeline("destseg", "my_part", rotation="full").rotation.right_angles  # the user may choose
    assert not pipeline("draem", rotate_probability=0.0).rotation.active
    with pytest.raises(InputError, match="rotation"):
        config_for("destseg", "quick", {"rotation": "sideways"})


def test_draem_rotates_about_thirty_percent_of_samples_with_a_black_border():
    views = synthetic_views(pipeline("draem"))
    rotated = ~np.all(np.isclose(views, ramp()[None], atol=1e-6), axis=(1, 2, 3))
    assert 0.22 < rotated.mean() < 0.38
    # Rotation by up to 90 degrees uncovers corners: they are black, as imgaug's default.
    corners = views[rotated][:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners.max(axis=-1) == 0).any(axis=1).mean() > 0.8


def test_destseg_rotates_every_sample_of_a_rotation_invariant_category_with_a_grey_border():
    views = synthetic_views(pipeline("destseg", "bottle"), count=200)
    assert not np.any(np.all(np.isclose(views, ramp()[None], atol=1e-6), axis=(1, 2, 3)))
    # A multiple of 90 degrees first: the brightest corner moves to each of the four corners.
    brightest = [int(np.argmax(v[[1, 1, -2, -2], [1, -2, 1, -2]].sum(axis=-1))) for v in views]
    assert set(brightest) == {0, 1, 2, 3}
    grey = np.isclose(views, 114 / 255, atol=1e-6).all(axis=-1)
    # The +-5 degree turn uncovers corners (visibly so for most angles at 32 px): grey, never black.
    assert grey.any(axis=(1, 2)).mean() > 0.1 and not (views == 0).all(axis=-1).any()
    # Aligned objects stay as they are.
    assert np.allclose(synthetic_views(pipeline("destseg", "capsule"), count=20), ramp()[None])


def test_generated_samples_rotate_with_their_box_and_source():
    image = ramp()
    source = image.copy()
    image[4:12, 20:30] = 1.0  # the "defect" sits in the top right corner
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[4:12, 20:30] = 1.0
    item = GeneratedItem(id="a", image=image, mask=mask, clean=source)
    recipe = DataPipeline(0.0, 0, 0.0, Rotation(probability=1.0, right_angles=True))
    sampler = MixedBatchSampler([source], _Untouched(), pipeline=recipe, generated=[item], mix=0.0, seed=0)
    arrays = sampler.batch_arrays(0, 40)
    places = set()
    for sample_image, sample_clean, sample_mask in zip(arrays["image"], arrays["clean"], arrays["mask"][:, 0]):
        changed = np.abs(sample_image - sample_clean).max(axis=0) > 0
        assert np.array_equal(changed, sample_mask > 0)  # the box still covers exactly the defect
        places.add(tuple(np.argwhere(sample_mask > 0).mean(axis=0).round()))
    assert len(places) == 4 and arrays["weak"].all()


def test_the_synthesizer_gets_the_detectors_clean_share_and_texture_augmentations(tmp_path, monkeypatch):
    from anogen.data.demo import write_demo_dataset
    from anogen.detection import synthesis
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig

    write_demo_dataset(tmp_path / "data", categories=("fabric",), size=32, seed=2, train_good=3, test_good=2,
                       test_per_kind=1)
    seen = {}
    original = synthesis.AnomalySynthesizer.__init__

    def spy(self, config, *args, **kwargs):
        seen["config"] = config
        original(self, config, *args, **kwargs)

    monkeypatch.setattr(synthesis.AnomalySynthesizer, "__init__", spy)
    tiny = {"image_size": 32, "batch_size": 2, "teacher_embedding_size": 8, "teacher_hidden_sizes": [8, 16, 32],
            "student_embedding_size": 8, "student_hidden_sizes": [8, 16, 16, 16], "seg_width": 16, "top_k": 10,
            "steps": 2, "student_steps": 1}
    result = train(TrainConfig(data_dir=tmp_path / "data" / "fabric", detector="destseg", out_dir=tmp_path / "out",
                               overrides=tiny, device="cpu"))
    assert seen["config"].clean_probability == 0.0 and seen["config"].augmentations == 0
    from anogen.detection.checkpoint import read_checkpoint_info

    recorded = read_checkpoint_info(result.out_dir, "last").provenance["data_pipeline"]
    assert recorded["synthesis_clean_probability"] == 0.0 and recorded["rotation"]["probability"] == 0.0
