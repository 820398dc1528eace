"""DRAEM-style anomaly synthesis: Perlin masks, augmentations, textures, blends."""

import math

import numpy as np
import pytest

from anogen.data.imageio import write_image
from anogen.detection import augment
from anogen.detection.synthesis import AnomalySynthesizer, SynthesisConfig, perlin_mask, perlin_noise
from anogen.detection.textures import PROCEDURAL_FAMILIES, FolderTextures, procedural_texture, shuffled_patches
from anogen.errors import InputError


def _slow_perlin(shape, res, angles):
    """Perlin noise pixel by pixel, straight from the definition (DRAEM's formula)."""
    height, width = shape
    cell_h, cell_w = -(-height // res[0]), -(-width // res[1])
    gx, gy = np.cos(angles), np.sin(angles)
    fade = lambda t: 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3  # noqa: E731
    out = np.zeros(shape)
    for y in range(height):
        for x in range(width):
            i, j = y // cell_h, x // cell_w
            ty, tx = (y % cell_h) / cell_h, (x % cell_w) / cell_w
            dot = lambda di, dj, i=i, j=j, tx=tx, ty=ty: (  # noqa: E731
                gx[i + di, j + dj] * (tx - dj) + gy[i + di, j + dj] * (ty - di))
            top = dot(0, 0) + fade(tx) * (dot(0, 1) - dot(0, 0))
            bottom = dot(1, 0) + fade(tx) * (dot(1, 1) - dot(1, 0))
            out[y, x] = math.sqrt(2) * (top + fade(ty) * (bottom - top))
    return out


@pytest.mark.parametrize("shape, res", [((16, 16), (1, 1)), ((32, 32), (4, 8)), ((30, 27), (4, 8))])
def test_perlin_noise_matches_the_definition(shape, res):
    noise = perlin_noise(shape, res, np.random.default_rng(3))
    angles = np.random.default_rng(3).random((res[0] + 1, res[1] + 1), dtype=np.float32) * np.float32(2 * math.pi)
    assert noise.shape == shape and noise.dtype == np.float32
    np.testing.assert_allclose(noise, _slow_perlin(shape, res, angles.astype(np.float64)), atol=1e-5)


def test_perlin_masks_vary_in_scale_and_are_often_empty_or_partial():
    rng = np.random.default_rng(0)
    fractions = [perlin_mask((64, 64), rng).mean() for _ in range(200)]
    assert all(0.0 <= f < 1.0 for f in fractions)
    assert sum(f > 0 for f in fractions) > 50  # some blobs...
    assert max(fractions) < 0.6  # ...never the whole image at threshold 0.5


def _image(h=48, w=64, seed=0):
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def test_sample_changes_only_pixels_under_the_mask():
    image = _image()
    original = image.copy()
    synth = AnomalySynthesizer(SynthesisConfig(size=(48, 64)), seed=1)
    rng = np.random.default_rng(2)
    anomalies = 0
    for _ in range(60):
        result = synth.sample(image, rng)
        assert result.image.dtype == np.float32 and result.image.shape == image.shape
        assert result.mask.dtype == np.float32 and set(np.unique(result.mask)) <= {0.0, 1.0}
        assert result.has_anomaly == bool(result.mask.any())
        outside = result.mask == 0
        assert np.array_equal(result.image[outside], image[outside])  # bit-identical
        assert 0.0 <= result.image.min() and result.image.max() <= 1.0
        anomalies += result.has_anomaly
    assert np.array_equal(image, original)  # the input is never modified
    assert 10 < anomalies < 40  # half clean, some noise draws empty


def test_clean_probability():
    image = _image()
    never = AnomalySynthesizer(SynthesisConfig(size=(48, 64), clean_probability=1.0))
    assert not any(never.sample(image, np.random.default_rng(i)).has_anomaly for i in range(20))
    always = AnomalySynthesizer(SynthesisConfig(size=(48, 64), clean_probability=0.0))
    hits = sum(always.sample(image, np.random.default_rng(i)).has_anomaly for i in range(40))
    assert hits > 20  # only empty noise draws stay clean


def _constant_texture_dir(tmp_path, colour=(255, 0, 0)):
    folder = tmp_path / "textures" / "red"
    folder.mkdir(parents=True)
    write_image(folder / "red.png", np.full((20, 30, 3), colour, dtype=np.uint8))
    return tmp_path / "textures"


def test_blend_is_texture_mixed_with_image_by_beta(tmp_path):
    textures = _constant_texture_dir(tmp_path)
    image = np.full((32, 32, 3), 0.25, dtype=np.float32)
    red = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    # beta_max 0: the texture replaces the pixel.
    opaque = AnomalySynthesizer(SynthesisConfig(size=32, clean_probability=0.0, beta_max=0.0,
                                                augmentations=0, textures_dir=textures))
    # default beta ~ U(0, 0.8): the pixel lies between texture and image, at least 20 % texture.
    mixed = AnomalySynthesizer(SynthesisConfig(size=32, clean_probability=0.0, augmentations=0,
                                               textures_dir=textures))
    seen_opaque = seen_mixed = False
    for i in range(30):
        result = opaque.sample(image, np.random.default_rng(i))
        if result.has_anomaly:
            inside = result.image[result.mask == 1]
            np.testing.assert_allclose(inside, np.broadcast_to(red, inside.shape), atol=1e-6)
            seen_opaque = True
        result = mixed.sample(image, np.random.default_rng(i))
        if result.has_anomaly:
            inside = result.image[result.mask == 1]
            share = (inside - 0.25) / (red - 0.25)  # texture share per channel, = 1 - beta
            assert np.allclose(share, share[0, 0], atol=1e-5)  # one beta per sample
            assert 0.2 - 1e-5 <= share[0, 0] <= 1.0 + 1e-5
            seen_mixed = True
    assert seen_opaque and seen_mixed


def test_foreground_restricts_anomalies():
    image = _image(64, 64)
    foreground = np.zeros((64, 64), dtype=bool)
    foreground[16:48, 16:48] = True
    synth = AnomalySynthesizer(SynthesisConfig(size=64, clean_probability=0.0))
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(40):
        result = synth.sample(image, rng, foreground=foreground)
        assert not result.mask[~foreground].any()
        assert np.array_equal(result.image[~foreground], image[~foreground])
        hits += result.has_anomaly
    assert hits > 5
    with pytest.raises(InputError, match="foreground"):
        synth.sample(image, rng, foreground=np.ones((10, 10), bool))


def test_sample_is_a_function_of_the_generator_state():
    image = _image()
    good = [(_image(seed=s) * 255).astype(np.uint8) for s in range(3)]
    first = AnomalySynthesizer(SynthesisConfig(size=(48, 64), clean_probability=0.0), good, seed=4)
    second = AnomalySynthesizer(SynthesisConfig(size=(48, 64), clean_probability=0.0), good, seed=4)
    for i in range(5):  # a different history must not change later samples
        second.sample(image, np.random.default_rng(100 + i))
    for i in range(10):
        a = first.sample(image, np.random.default_rng(i))
        b = second.sample(image, np.random.default_rng(i))
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_folder_textures(tmp_path):
    textures = _constant_texture_dir(tmp_path)
    (textures / "notes.txt").write_text("not an image")
    folder = FolderTextures(textures, (16, 24), cache_size=1)
    assert len(folder) == 1
    texture = folder.sample(np.random.default_rng(0))
    assert texture.shape == (16, 24, 3) and texture.dtype == np.uint8
    assert np.all(texture == [255, 0, 0])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        FolderTextures(empty, (16, 16))
    with pytest.raises(InputError, match="does not exist"):
        AnomalySynthesizer(SynthesisConfig(size=16, textures_dir=tmp_path / "missing"))
    (textures / "broken.png").write_bytes(b"not a png")
    folder = FolderTextures(textures, (16, 16))
    with pytest.raises(InputError, match="broken.png"):
        folder.load(folder.files.index(textures / "broken.png"))


@pytest.mark.parametrize("family", sorted(PROCEDURAL_FAMILIES))
def test_procedural_families(family):
    texture = procedural_texture(40, 56, np.random.default_rng(1), family)
    assert texture.shape == (40, 56, 3) and texture.dtype == np.uint8
    assert texture.std() > 1.0  # a pattern, not a flat colour
    with pytest.raises(InputError, match="unknown texture family"):
        procedural_texture(8, 8, np.random.default_rng(0), "plaid")


def test_shuffled_patches_are_a_permutation_of_tiles():
    image = np.arange(16 * 16 * 3, dtype=np.int64).reshape(16, 16, 3).astype(np.uint8)
    shuffled = shuffled_patches(image, np.random.default_rng(0), grid=4)
    assert shuffled.shape == image.shape
    original_tiles = {image[r:r + 4, c:c + 4].tobytes() for r in range(0, 16, 4) for c in range(0, 16, 4)}
    new_tiles = {shuffled[r:r + 4, c:c + 4].tobytes() for r in range(0, 16, 4) for c in range(0, 16, 4)}
    assert original_tiles == new_tiles and not np.array_equal(shuffled, image)


def test_each_augmentation_keeps_shape_and_type():
    texture = procedural_texture(32, 40, np.random.default_rng(0), "noise")
    for index, op in enumerate(augment.AUGMENTATIONS):
        out = op(texture, np.random.default_rng(index))
        assert out.shape == texture.shape and out.dtype == np.uint8, op.__name__
    assert len(augment.AUGMENTATIONS) == 10
    out = augment.augment_texture(texture, np.random.default_rng(0), count=3)
    assert out.shape == texture.shape


def test_three_distinct_augmentations_in_random_order(monkeypatch):
    calls = []

    def recorder(index):
        def op(texture, rng):
            calls.append(index)
            return texture
        return op

    monkeypatch.setattr(augment, "AUGMENTATIONS", tuple(recorder(i) for i in range(10)))
    orders = set()
    for seed in range(20):
        calls.clear()
        augment.augment_texture(np.zeros((4, 4, 3), np.uint8), np.random.default_rng(seed))
        assert len(calls) == 3 and len(set(calls)) == 3
        orders.add(tuple(calls))
    assert len(orders) > 10


def test_augmentations_do_what_they_say():
    rng = np.random.default_rng(0)
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (4, 1, 3))
    np.testing.assert_array_equal(augment.invert(ramp, rng), 255 - ramp)
    posterized = augment.posterize(ramp, rng)
    assert len(np.unique(posterized)) <= 128 and np.all(posterized <= ramp)
    low = (ramp // 4 + 64).astype(np.uint8)  # values 64..127
    stretched = augment.autocontrast(low, np.random.default_rng(1))
    assert stretched.min() == 0 and stretched.max() == 255
    equalized = augment.equalize(low, rng)
    assert equalized.max() == 255
    for seed in range(6):  # solarize inverts only values at or above its threshold (>= 32)
        solarized = augment.solarize(ramp, np.random.default_rng(seed))
        np.testing.assert_array_equal(solarized[:, :32], ramp[:, :32])
    flat = np.full((9, 9, 3), 100, dtype=np.uint8)
    np.testing.assert_array_equal(augment.sharpness(flat, rng), flat)  # nothing to sharpen


def test_bad_inputs_fail_clearly():
    synth = AnomalySynthesizer(SynthesisConfig(size=16))
    with pytest.raises(InputError, match="float"):
        synth.sample(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="RGB"):
        synth.sample(np.zeros((16, 16), np.float32))
    with pytest.raises(InputError, match="beta_max"):
        SynthesisConfig(size=16, beta_max=1.5)
    with pytest.raises(InputError, match="size"):
        SynthesisConfig(size=4)
