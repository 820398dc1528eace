"""DRAEM detector: shapes, training, the weak box filter, checkpoints, ONNX, presets."""

from __future__ import annotations

import json

import pytest
import torch
from _data_helpers import box_batch

from anogen.detection.draem import DraemConfig, DraemDetector
from anogen.detection.registry import build_detector, config_for
from anogen.errors import InputError

TINY = {"image_size": 64, "batch_size": 2, "steps": 20, "recon_base_width": 4, "disc_base_width": 4}


def tiny_draem(**overrides) -> DraemDetector:
    torch.manual_seed(0)
    return build_detector("draem", "quick", {**TINY, **overrides})


def test_forward_gives_probability_map_at_input_size():
    model = tiny_draem().eval()
    anomaly_map = model(torch.rand(3, 3, 64, 64))
    assert anomaly_map.shape == (3, 1, 64, 64)
    anomaly_map = anomaly_map.detach()
    assert float(anomaly_map.min()) >= 0.0 and float(anomaly_map.max()) <= 1.0
    scores = model.image_score(anomaly_map)
    assert scores.shape == (3,)


def test_image_score_ignores_a_single_bright_pixel():
    model = tiny_draem()
    speck = torch.zeros(1, 1, 64, 64)
    speck[0, 0, 30, 30] = 1.0
    blob = torch.zeros(1, 1, 64, 64)
    blob[0, 0, 10:31, 10:31] = 1.0  # exactly the 21x21 window
    assert float(model.image_score(speck)) == pytest.approx(1 / 441, rel=1e-5)
    assert float(model.image_score(blob)) == pytest.approx(1.0, rel=1e-5)


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_draem(learning_rate=5e-3).train()
    (phase,) = model.training_phases(100)
    batch = box_batch(weak=False)
    losses = []
    for _ in range(10):
        loss, parts = model.training_loss(batch, phase.name, tau=0.9)
        phase.optimizer.zero_grad()
        loss.backward()
        phase.optimizer.step()
        phase.scheduler.step()
        losses.append(parts["total"])
        assert set(parts) == {"l2", "ssim", "focal", "total"}
    assert losses[-1] < 0.75 * losses[0]


def test_learning_rate_drops_tenfold_at_four_and_six_sevenths():
    model = tiny_draem()
    (phase,) = model.training_phases(70)
    rates = []
    for _ in range(70):
        rates.append(phase.optimizer.param_groups[0]["lr"])
        phase.optimizer.step()
        phase.scheduler.step()
    assert rates[0] == pytest.approx(1e-4)
    assert rates[39] == pytest.approx(1e-4) and rates[40] == pytest.approx(1e-5)
    assert rates[59] == pytest.approx(1e-5) and rates[60] == pytest.approx(1e-6)


def test_weak_filter_drops_confident_normal_box_pixels_from_the_focal_loss_only():
    model = tiny_draem().eval()
    # Make the discriminator say "normal" with probability ~1 - 1e-7 everywhere.
    with torch.no_grad():
        model.discriminative.output.weight.zero_()
        model.discriminative.output.bias.copy_(torch.tensor([8.0, -8.0]))
    with torch.no_grad():
        _, strong = model.training_loss(box_batch(weak=False), "joint", tau=0.9)
        _, weak = model.training_loss(box_batch(weak=True), "joint", tau=0.9)
        _, plain_box = model.training_loss(box_batch(weak=True), "joint", tau=1.0)
        _, everyone = model.training_loss(box_batch(weak=False), "joint", tau=0.9, weak_all=True)
    # A pixel mask is fully supervised: the missed box costs a lot.
    assert strong["focal"] > 0.3
    # The same box as a weak label: its pixels the model calls normal contribute nothing,
    # and outside the box the (correct) normal prediction costs ~0.
    assert weak["focal"] < 1e-6
    assert everyone["focal"] < 1e-6
    # tau = 1 is plain box supervision.
    assert plain_box["focal"] == pytest.approx(strong["focal"], rel=1e-6)
    # The reconstruction terms never see the filter.
    assert weak["l2"] == strong["l2"] and weak["ssim"] == strong["ssim"]


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    from safetensors.torch import load_model, save_model

    model = tiny_draem().train()
    (phase,) = model.training_phases(2)
    loss, _ = model.training_loss(box_batch(weak=False), phase.name, tau=0.9)
    loss.backward()
    phase.optimizer.step()
    model.eval()
    save_model(model, str(tmp_path / "model.safetensors"))
    config = DraemConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))
    restored = build_detector("draem", "quick", config.to_dict(), for_loading=True)
    load_model(restored, str(tmp_path / "model.safetensors"), strict=True)
    restored.eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(image), restored(image))


def test_paper_preset_has_the_reference_parameter_counts():
    with torch.device("meta"):  # shapes only, no memory, no compute
        model = build_detector("draem", "paper")
    reconstructive = sum(p.numel() for p in model.reconstructive.parameters())
    discriminative = sum(p.numel() for p in model.discriminative.parameters())
    assert 68.5e6 < reconstructive < 69.5e6
    assert 28.0e6 < discriminative < 28.8e6
    config = model.config
    assert (config.image_size, config.batch_size, config.epochs, config.learning_rate) == (256, 16, 700, 1e-4)
    assert config.total_steps(209) == 700 * 14  # 209 images, batch 16: 14 steps per epoch


def test_config_round_trips_through_json_and_rejects_bad_values():
    config = config_for("draem", "quick", {"steps": 7, "lr_milestones": [0.5]})
    assert DraemConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.total_steps(1000) == 7
    with pytest.raises(InputError, match="recon_width"):
        config_for("draem", "quick", {"recon_width": 8})
    with pytest.raises(InputError, match="multiple of 32"):
        config_for("draem", "quick", {"image_size": 100})
    with pytest.raises(InputError, match="preset"):
        config_for("draem", "fast")
