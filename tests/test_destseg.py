"""DeSTSeg detector: shapes, both training phases, the weak box filter, checkpoints, ONNX,
and where the teacher's weights come from."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from _data_helpers import box_batch
from torch import nn

from anogen.detection.base import TrainBatch
from anogen.detection.destseg import DestsegConfig, DestsegDetector
from anogen.detection.destseg import teacher as teacher_module
from anogen.detection.registry import build_detector, config_for
from anogen.errors import InputError, ModelError

# A ResNet of ResNet18's layout (2 blocks per stage) at 1/8 of its width.
TEACHER_SHAPE = {"teacher_embedding_size": 8, "teacher_hidden_sizes": [8, 16, 32], "teacher_depths": [2, 2, 2]}
TINY = {"image_size": 64, "batch_size": 2, "steps": 10, "student_steps": 4, "allow_random_teacher": True,
        **TEACHER_SHAPE, "student_embedding_size": 8, "student_hidden_sizes": [8, 16, 32, 32],
        "seg_width": 8}


def tiny_destseg(**overrides) -> DestsegDetector:
    torch.manual_seed(0)
    return build_detector("destseg", "quick", {**TINY, **overrides})


class TorchvisionBlock(nn.Module):
    """A ResNet basic block with torchvision's attribute names."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class TorchvisionStyleResNet(nn.Module):
    """A small ResNet whose state dict has torchvision's keys (conv1, bn1, layer1.0.conv1, ..., fc)."""

    def __init__(self, stem: int = 8, widths=(8, 16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        previous = stem
        for index, width in enumerate(widths, start=1):
            stride = 1 if index == 1 else 2
            setattr(self, f"layer{index}", nn.Sequential(TorchvisionBlock(previous, width, stride),
                                                         TorchvisionBlock(width, width, 1)))
            previous = width
        self.fc = nn.Linear(previous, 10)
        # Non-trivial BN statistics, so a wrongly mapped running_mean/var shows.
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.normal_()

    def features(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


def test_forward_gives_probability_map_at_input_size():
    model = tiny_destseg().eval()
    with torch.no_grad():
        anomaly_map = model(torch.rand(3, 3, 64, 64))
    assert anomaly_map.shape == (3, 1, 64, 64)
    assert float(anomaly_map.min()) >= 0.0 and float(anomaly_map.max()) <= 1.0
    assert model.image_score(anomaly_map).shape == (3,)


def test_image_score_is_the_mean_of_the_top_100_pixels():
    model = tiny_destseg()
    anomaly_map = torch.zeros(2, 1, 64, 64)
    anomaly_map[0].view(-1)[:100] = 1.0
    anomaly_map[1].view(-1)[:50] = 1.0
    assert model.image_score(anomaly_map).tolist() == pytest.approx([1.0, 0.5])


def run_phase(model: DestsegDetector, phase, batch: TrainBatch, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        loss, parts = model.training_loss(batch, phase.name, tau=0.9)
        phase.optimizer.zero_grad()
        loss.backward()
        phase.optimizer.step()
        losses.append(parts["total"])
    return losses


def test_each_training_phase_lowers_its_loss_on_a_fixed_batch():
    model = tiny_destseg().train()
    student_phase, head_phase = model.training_phases(10)
    assert (student_phase.name, student_phase.steps, head_phase.name, head_phase.steps) == ("student", 4, "head", 6)
    batch = box_batch(weak=False, span=(16, 48))
    teacher_before = [p.clone() for p in model.teacher.parameters()]
    student = run_phase(model, student_phase, batch, 5)
    assert student[-1] < 0.8 * student[0]
    student_before = [p.clone() for p in model.student.parameters()]
    head = run_phase(model, head_phase, batch, 10)
    assert head[-1] < 0.9 * head[0]
    # The teacher never moves; the student is frozen while the head trains.
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, model.teacher.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(student_before, model.student.parameters()))


def test_optimisers_follow_the_reference():
    model = tiny_destseg(steps=5000, student_steps=1000)
    student_phase, head_phase = model.training_phases(5000)
    assert student_phase.steps == 1000 and head_phase.steps == 4000
    # A run of another length keeps the configured share of student steps.
    assert [phase.steps for phase in model.training_phases(500)] == [100, 400]
    (student_group,) = student_phase.optimizer.param_groups
    assert student_group["lr"] == 0.4 and student_group["momentum"] == 0.9
    assert student_group["weight_decay"] == 1e-4
    assert [g["lr"] for g in head_phase.optimizer.param_groups] == [0.1, 0.01]
    head_params = {id(p) for g in head_phase.optimizer.param_groups for p in g["params"]}
    assert head_params == {id(p) for p in model.segmentation.parameters()}
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_weak_filter_applies_to_the_segmentation_loss_only():
    model = tiny_destseg()
    # Make the head say "normal" with probability ~1 - 2e-9 everywhere.
    final = model.segmentation.head[-1]
    with torch.no_grad():
        final.weight.zero_()
        final.bias.fill_(-20.0)
    with torch.no_grad():
        _, strong = model.training_loss(box_batch(weak=False, span=(16, 48)), "head", tau=0.9)
        _, weak = model.training_loss(box_batch(weak=True, span=(16, 48)), "head", tau=0.9)
        _, plain_box = model.training_loss(box_batch(weak=True, span=(16, 48)), "head", tau=1.0)
        _, student_strong = model.training_loss(box_batch(weak=False, span=(16, 48)), "student", tau=0.9)
        _, student_weak = model.training_loss(box_batch(weak=True, span=(16, 48)), "student", tau=0.9)
    assert strong["l1"] > 0.2 and strong["focal"] > 1.0  # the missed box is paid for in full
    assert weak["total"] < 1e-6  # box pixels called normal are dropped; outside is right
    assert plain_box["total"] == pytest.approx(strong["total"], rel=1e-6)
    assert student_weak["cosine"] == student_strong["cosine"]  # distillation is never masked


def test_state_dict_round_trip_keeps_teacher_and_outputs(tmp_path):
    from safetensors.torch import load_model, save_model

    weights = tmp_path / "resnet.pth"
    torch.save(TorchvisionStyleResNet().state_dict(), weights)
    model = tiny_destseg(teacher_weights=str(weights)).train()
    assert model.teacher_pretrained
    student_phase, _ = model.training_phases(10)
    run_phase(model, student_phase, box_batch(weak=False, span=(16, 48)), 1)
    model.eval()
    save_model(model, str(tmp_path / "model.safetensors"))
    config = DestsegConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))
    # Loading needs no teacher weights: the checkpoint carries them.
    weights.unlink()
    restored = build_detector("destseg", "paper", config.to_dict(), for_loading=True)
    load_model(restored, str(tmp_path / "model.safetensors"), strict=True)
    restored.eval()
    assert restored.teacher_pretrained
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(image), restored(image))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_is_converted_to_the_transformers_layout(tmp_path, suffix):
    torch.manual_seed(3)
    reference = TorchvisionStyleResNet().eval()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": reference.state_dict()}, path)  # nested, as training scripts save
    source = teacher_module.resolve_teacher(str(path), allow_random=False, embedding_size=8,
                                            hidden_sizes=(8, 16, 32), depths=(2, 2, 2))
    assert source.pretrained
    teacher = teacher_module.ResNetFeatures(source.resnet, num_stages=3).eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(teacher(image), reference.features(image), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_transformers_folder_is_loaded(tmp_path):
    from transformers import ResNetForImageClassification

    torch.manual_seed(4)
    classifier = ResNetForImageClassification(
        teacher_module.resnet_config(8, (8, 16, 32, 64), (2, 2, 2, 2))).eval()
    classifier.save_pretrained(tmp_path / "resnet")
    model = tiny_destseg(teacher_weights=str(tmp_path / "resnet"))
    assert model.teacher_pretrained and model.teacher_source == str(tmp_path / "resnet")
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = classifier.resnet(image, output_hidden_states=True).hidden_states[1:4]
        for ours, theirs in zip(model.teacher(image), expected, strict=True):
            torch.testing.assert_close(ours, theirs)


def test_wrong_teacher_weights_fail_clearly(tmp_path):
    wrong = tmp_path / "wide.pth"
    torch.save(TorchvisionStyleResNet(stem=16).state_dict(), wrong)
    with pytest.raises(ModelError, match="wide.pth.*wrong shape"):
        tiny_destseg(teacher_weights=str(wrong))
    with pytest.raises(ModelError, match="not found"):
        tiny_destseg(teacher_weights=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="junk.pth"):
        tiny_destseg(teacher_weights=str(junk))


def test_paper_preset_without_teacher_weights_says_where_to_put_them(monkeypatch):
    # Make sure the default id is not found in this machine's Hugging Face cache.
    monkeypatch.setattr(teacher_module, "DEFAULT_TEACHER_ID", "anogen-tests/no-such-resnet")
    with pytest.raises(ModelError) as error:
        build_detector("destseg", "paper")
    message = str(error.value)
    assert "teacher_weights" in message and "paper" in message
    assert "folder" in message and "cache" in message and ".pth" in message and ".safetensors" in message


def test_quick_preset_runs_with_a_random_teacher_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="anogen.detection.destseg"):
        model = tiny_destseg()
    assert not model.teacher_pretrained and model.teacher_source == "random"
    assert any("RANDOM teacher" in record.getMessage() for record in caplog.records)


def test_config_round_trips_through_json_and_rejects_bad_values():
    config = config_for("destseg", "paper", {"steps": 50, "student_steps": 10, "teacher_weights": "r.pth"})
    assert DestsegConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.total_steps(3) == 50
    with pytest.raises(InputError, match="student_steps"):
        config_for("destseg", "quick", {"steps": 10, "student_steps": 20})
    with pytest.raises(InputError, match="teacher"):
        config_for("destseg", "quick", {"teacher": "x"})
    with pytest.raises(InputError, match="unknown detector"):
        config_for("patchcore", "quick")
