"""The detector registry is the only place that lists the detectors: a third detector is
its own package plus one registry line, and then trains, evaluates, predicts and exports
through the ordinary code paths (library and CLI) with no other edit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from anogen.data.demo import write_demo_dataset
from anogen.detection.registry import DETECTORS, PRESETS, detector_kind

# A whole detector in one small package: config (with both presets), module, recipe, KIND.
TOY_PACKAGE = textwrap.dedent('''
    from dataclasses import dataclass
    from typing import Any, ClassVar

    import torch
    import torch.nn.functional as F
    from torch import nn

    from anogen.detection.base import Detector, TrainBatch, TrainingPhase
    from anogen.detection.config import DetectorConfig, require_int
    from anogen.detection.pipeline import DataPipeline
    from anogen.detection.registry import DetectorKind


    @dataclass
    class ToyConfig(DetectorConfig):
        image_size: int = 32
        batch_size: int = 2
        steps: int = 3
        learning_rate: float = 0.05

        kind: ClassVar[str] = "toy"
        display_name: ClassVar[str] = "Toy"
        presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "quick": {"steps": 2}}

        def __post_init__(self):
            for name in ("image_size", "batch_size", "steps"):
                require_int(self, name)


    class ToyDetector(Detector):
        kind: ClassVar[str] = "toy"

        def __init__(self, config: ToyConfig) -> None:
            super().__init__()
            self.config = config
            self.conv = nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.conv(image))

        def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
            return anomaly_map.flatten(1).amax(dim=1)

        def training_phases(self, total_steps: int) -> list[TrainingPhase]:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.config.learning_rate)
            return [TrainingPhase(name="fit", steps=total_steps, optimizer=optimizer)]

        def training_loss(self, batch: TrainBatch, phase: str, *, tau: float, weak_all: bool = False):
            loss = F.binary_cross_entropy(self(batch.image), batch.mask)
            return loss, {"bce": float(loss.detach())}


    def toy_pipeline(config: ToyConfig, category: str = "") -> DataPipeline:
        return DataPipeline(synthesis_clean_probability=0.0, texture_augmentations=0,
                            generated_clean_probability=0.0)


    KIND = DetectorKind(name="toy", config_class=ToyConfig, build=lambda config, **_: ToyDetector(config),
                        pipeline=toy_pipeline)
''')


@pytest.fixture
def toy_detector(tmp_path, monkeypatch):
    """Registers ``toy``: the package on the path, and the one registry line."""
    package = tmp_path / "pkgs" / "toydet"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(TOY_PACKAGE)
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setitem(DETECTORS, "toy", "toydet")
    yield "toy"
    sys.modules.pop("toydet", None)


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, categories=("fabric",), size=48, seed=5, train_good=4, test_good=2, test_per_kind=2)
    return root / "fabric"


def test_a_registered_detector_trains_evaluates_and_predicts_through_the_normal_paths(toy_detector, category,
                                                                                      tmp_path, capsys):
    from anogen.cli import main
    from anogen.detection.checkpoint import load_detector
    from anogen.detection.infer import predict
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig

    assert detector_kind("toy").config_class.preset("quick").steps == 2
    result = train(TrainConfig(data_dir=category, detector="toy", out_dir=tmp_path / "lib", preset="quick",
                               validate_every=1, device="cpu"))
    assert result.kind == "toy" and result.steps == 2 and result.validation_source == "test"
    assert [h["step"] for h in result.history if h["phase"] == "fit"] == [1, 2]
    assert (result.best_dir / "detector.json").is_file()

    loaded = load_detector(result.out_dir, device="cpu")
    assert loaded.info.kind == "toy" and loaded.image_size == 32
    prediction = predict(loaded, [__import__("numpy").zeros((40, 50, 3), "uint8")])[0]
    assert prediction.anomaly_map.shape == (40, 50)

    # The CLI's --detector and --preset choices come from the registry, so they take it too.
    out = tmp_path / "cli"
    assert main(["train", "--data", str(category), "--detector", "toy", "--steps", "2", "--preset", "paper",
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    metrics_file = tmp_path / "metrics.json"
    assert main(["evaluate", "--data", str(category), "--detector-dir", str(out), "--device", "cpu",
                 "--json", str(metrics_file), "--quiet"]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and metrics["n_images"] > 0
    assert "trained toy for 2 steps" in capsys.readouterr().out


def test_an_unknown_detector_or_preset_is_one_clear_error(category, tmp_path):
    from anogen.detection.train_config import TrainConfig
    from anogen.errors import InputError

    with pytest.raises(InputError, match="unknown detector 'nope'; choose one of draem, destseg"):
        TrainConfig(data_dir=category, detector="nope", out_dir=tmp_path).validate()
    with pytest.raises(InputError, match="unknown preset 'slow'; choose one of quick, paper"):
        TrainConfig(data_dir=category, detector="draem", out_dir=tmp_path, preset="slow").validate()
    assert PRESETS == ("quick", "paper")


def test_the_registry_loads_without_torch_and_no_other_module_lists_the_detectors():
    code = ("import sys, anogen.detection.registry, anogen.commands.train, anogen.commands.demo; "
            "print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    root = Path(__file__).resolve().parents[1]
    listed = [path.relative_to(root).as_posix()
              for folder in ("anogen", "app") for path in (root / folder).rglob("*.py")
              if '"draem", "destseg"' in path.read_text(encoding="utf-8")
              or "'draem', 'destseg'" in path.read_text(encoding="utf-8")]
    assert listed == []
