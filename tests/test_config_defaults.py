"""One place for each default and range: the config modules, read by the CLI (and the app,
tests/test_app_config_defaults.py), and importable without torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from anogen.cli import build_parser
from anogen.detection.train_config import TRAIN_RANGES, TrainConfig
from anogen.diffusion.config import (
    APP_LEARN_STEPS,
    BOXES_PER_IMAGE,
    BOXES_PER_IMAGE_RANGE,
    GENERATE_RANGES,
    LEARN_RANGES,
    PER_IMAGE,
    SAMPLES_PER_BOX,
    SAMPLES_PER_BOX_RANGE,
    GenerateConfig,
    LearnConfig,
)
from anogen.errors import InputError
from anogen.ranges import FieldRange

HEAVY = ("torch", "diffusers", "transformers", "cv2")


def test_the_config_modules_import_without_torch():
    """The CLI's parsers and the app's panels read them before any heavy module loads."""
    modules = ["anogen.diffusion.config", "anogen.detection.train_config", "anogen.ranges",
               "anogen.commands.learn", "anogen.commands.generate", "anogen.commands.train"]
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"heavy = [name for name in {HEAVY!r} if name in sys.modules]\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _defaults(argv: list[str]) -> dict[str, object]:
    return vars(build_parser().parse_args(argv))


def _field_defaults(cls: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _shared(args: dict[str, object], cls: type, renamed: dict[str, str] | None = None,
            own: tuple[str, ...] = ()) -> dict[str, object]:
    """The parser's defaults of the options that set a field of ``cls`` (by field name),
    checked against the field's default; ``own``: options whose default means something
    else on the command line."""
    fields = _field_defaults(cls)
    renamed = renamed or {}
    shared = {renamed.get(dest, dest): value for dest, value in args.items()
              if renamed.get(dest, dest) in fields and dest not in own}
    for field_name, value in shared.items():
        expected = fields[field_name]
        if isinstance(value, list):  # nargs="+" options: an empty list for an empty tuple
            value = tuple(value)
        assert value == expected, (cls.__name__, field_name, value, expected)
    return shared


def test_learn_options_default_to_the_config():
    args = _defaults(["learn", "--model", "m", "--images", "i.png", "--masks", "m.png", "--out", "e.safetensors"])
    # --token: none means <OUT file name>, not LearnConfig's <defect>.
    shared = _shared(args, LearnConfig, renamed={"crop": "crop_to_defect"}, own=("token",))
    assert {"steps", "batch_size", "lr", "seed", "init_word", "resolution", "crop_to_defect", "context_margin",
            "checkpoint_every", "device", "precision", "scale_lr", "area_normalised"} <= set(shared)
    assert (not args["no_mask"], not args["no_flip"]) == (LearnConfig.use_mask, LearnConfig.flip)
    assert args["preset"] == "default"


def test_generate_options_default_to_the_config():
    args = _defaults(["generate", "--model", "m", "--embedding", "e.safetensors", "--normals", "good",
                      "--out", "set"])
    shared = _shared(args, GenerateConfig)
    assert {"steps", "guidance", "eta", "strength", "restore_detail", "prompt", "negative_prompt", "feather",
            "crop", "context_margin", "batch_size", "seed"} <= set(shared)
    assert (args["per_image"], args["samples_per_box"]) == (PER_IMAGE, SAMPLES_PER_BOX) == (4, 2)  # the paper's


def test_train_options_default_to_the_config():
    args = _defaults(["train", "--data", "cat", "--detector", "draem", "--out", "run"])
    shared = _shared(args, TrainConfig)
    assert {"tau", "mix", "synthesis", "weak_all", "preset", "steps", "seed", "device", "validate_every",
            "protocol", "resume", "overwrite", "cpu_precision"} <= set(shared)
    assert (args["tau"], args["mix"]) == (0.9, 0.5)  # the paper's


def test_the_paper_defaults_are_where_the_paper_puts_them():
    assert (LearnConfig.steps, LearnConfig.lr, LearnConfig.batch_size) == (6000, 0.005, 4)
    assert (GenerateConfig.steps, GenerateConfig.guidance, GenerateConfig.eta) == (50, 10.0, 0.0)
    assert BOXES_PER_IMAGE * SAMPLES_PER_BOX == PER_IMAGE


@pytest.mark.parametrize(("cls", "ranges"), [(LearnConfig, LEARN_RANGES), (GenerateConfig, GENERATE_RANGES),
                                             (TrainConfig, TRAIN_RANGES)])
def test_every_range_is_of_a_field_and_holds_its_default(cls, ranges):
    defaults = _field_defaults(cls)
    for name, limits in ranges.items():
        assert isinstance(limits, FieldRange) and limits.minimum < limits.maximum, name
        assert name in defaults, f"{cls.__name__} has no field {name}"
        if defaults[name] is not None:  # TrainConfig.steps: None is the preset's length
            assert defaults[name] in limits, (name, defaults[name], limits)
            assert type(limits.minimum) is type(defaults[name]), name  # an int field gets an int range
    assert APP_LEARN_STEPS in LEARN_RANGES["steps"]
    assert SAMPLES_PER_BOX in SAMPLES_PER_BOX_RANGE and BOXES_PER_IMAGE in BOXES_PER_IMAGE_RANGE


def test_validate_uses_the_same_bounds():
    for config in (GenerateConfig(steps=GENERATE_RANGES["steps"].minimum - 1), GenerateConfig(eta=1.01),
                   GenerateConfig(feather=-1)):
        with pytest.raises(InputError):
            config.validate()
    GenerateConfig(eta=GENERATE_RANGES["eta"].maximum).validate()
    with pytest.raises(InputError, match="steps must be at least 1"):
        LearnConfig(images=["a.png"], masks=["a_mask.png"], steps=0).validate()
    LearnConfig(images=["a.png"], masks=["a_mask.png"], steps=LEARN_RANGES["steps"].minimum).validate()
    base = dict(data_dir="cat", detector="draem", out_dir="run")
    with pytest.raises(InputError, match=r"mix must be in \[0, 1\]"):
        TrainConfig(**base, mix=1.5).validate()
    with pytest.raises(InputError, match="steps must be at least 1"):
        TrainConfig(**base, steps=0).validate()


def test_a_misspelt_field_fails_where_the_config_is_made():
    with pytest.raises(TypeError, match="guidence"):
        GenerateConfig(guidence=5.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="tua"):
        TrainConfig(data_dir="cat", detector="draem", out_dir="run", tua=0.5)  # type: ignore[call-arg]
