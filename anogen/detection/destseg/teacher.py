"""DeSTSeg's frozen teacher: an ImageNet ResNet18 (transformers ``ResNetModel``).

Where the weights come from (the option ``teacher_weights``):

* a local folder written by transformers (``config.json`` + ``model.safetensors``), for
  example a download of ``microsoft/resnet-18``;
* a Hugging Face model id already in the local cache (looked up offline, never
  downloaded), for example ``microsoft/resnet-18``;
* a torchvision- or timm-format ResNet18 state dict file (``.pth``/``.pt``/``.bin`` read
  with ``torch.load(weights_only=True)``, or ``.safetensors``), converted by key mapping.

With no option given, the default id is tried in the cache. Only the stem and the first
three stages are kept: DeSTSeg reads layers 1-3.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anogen.errors import ModelError

logger = logging.getLogger(__name__)

DEFAULT_TEACHER_ID = "microsoft/resnet-18"
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
# ResNet18's stem width, stage widths and depths (its first three stages).
RESNET18_EMBEDDING_SIZE = 64
RESNET18_HIDDEN_SIZES = (64, 128, 256, 512)
RESNET18_DEPTHS = (2, 2, 2, 2)

WHERE_TO_PUT_WEIGHTS = (
    "set the detector option `teacher_weights` to one of: (1) a local folder saved by transformers "
    "(config.json + model.safetensors, e.g. a download of microsoft/resnet-18); (2) a Hugging Face model id "
    f"already in the local cache (e.g. {DEFAULT_TEACHER_ID}, looked up offline under "
    "~/.cache/huggingface/hub or $HF_HOME); (3) a torchvision- or timm-format ResNet18 state dict file "
    "(.pth/.pt via torch.load(weights_only=True), or .safetensors, e.g. resnet18-f37072fd.pth)"
)


def resnet_config(embedding_size: int, hidden_sizes: Sequence[int], depths: Sequence[int]):
    """A transformers ``ResNetConfig`` with basic (ResNet18/34-style) blocks."""
    from transformers import ResNetConfig

    return ResNetConfig(num_channels=3, embedding_size=int(embedding_size),
                        hidden_sizes=[int(h) for h in hidden_sizes], depths=[int(d) for d in depths],
                        layer_type="basic", hidden_act="relu", downsample_in_first_stage=False)


def random_resnet(embedding_size: int, hidden_sizes: Sequence[int], depths: Sequence[int]) -> nn.Module:
    """A randomly initialised ``ResNetModel`` (He init, as transformers does)."""
    from transformers import ResNetModel

    return ResNetModel(resnet_config(embedding_size, hidden_sizes, depths))


class ResNetFeatures(nn.Module):
    """The feature maps after each stage of a transformers ``ResNetModel``.

    Runs the stem and stages directly (not ``ResNetModel.forward``) so the graph is plain
    convolutions that trace and export to ONNX without the model-output wrappers.
    """

    # resnet: a transformers ResNetModel; Any, because nn.Module's typing cannot see its submodules.
    def __init__(self, resnet: Any, num_stages: int) -> None:
        super().__init__()
        stages = resnet.encoder.stages
        if num_stages > len(stages):
            raise ModelError(f"ResNet has {len(stages)} stages, {num_stages} needed")
        # Keep only what is used: a frozen teacher needs no stage 4 in its checkpoint.
        resnet.encoder.stages = nn.ModuleList(list(stages)[:num_stages])
        resnet.pooler = nn.Identity()
        self.resnet = resnet

    @property
    def channels(self) -> list[int]:
        return [stage.layers[-1].layer[-1].convolution.out_channels for stage in self.resnet.encoder.stages]

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = self.resnet.embedder.embedder(pixels)
        x = self.resnet.embedder.pooler(x)
        features = []
        for stage in self.resnet.encoder.stages:
            x = stage(x)
            features.append(x)
        return features


@dataclass
class TeacherSource:
    """A loaded teacher ResNet, where it came from, and whether it is pretrained."""

    resnet: nn.Module
    description: str
    pretrained: bool


def torchvision_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision/timm ResNet state dict to the transformers ``ResNetModel`` layout.

    ``conv1``/``bn1`` become the stem, ``layer{i}.{j}.conv{k}``/``bn{k}`` become
    ``encoder.stages.{i-1}.layers.{j}.layer.{k-1}``, ``downsample.0/1`` the shortcut;
    the classifier (``fc``) is dropped. Raises :class:`ModelError` on an unknown key.
    """
    converted: dict[str, torch.Tensor] = {}
    block_pattern = re.compile(r"^layer(\d+)\.(\d+)\.(conv|bn|downsample\.)(\d+)\.(.+)$")
    for key, value in state_dict.items():
        if key.startswith("fc."):
            continue
        stem = re.match(r"^(conv1|bn1)\.(.+)$", key)
        if stem:
            part = "convolution" if stem.group(1) == "conv1" else "normalization"
            converted[f"embedder.embedder.{part}.{stem.group(2)}"] = value
            continue
        block = block_pattern.match(key)
        if not block:
            raise ModelError(f"unexpected key '{key}' in a torchvision-format ResNet state dict")
        stage, index, kind, number, rest = block.groups()
        prefix = f"encoder.stages.{int(stage) - 1}.layers.{index}"
        if kind == "downsample.":
            part = "convolution" if number == "0" else "normalization"
            converted[f"{prefix}.shortcut.{part}.{rest}"] = value
        else:
            part = "convolution" if kind == "conv" else "normalization"
            converted[f"{prefix}.layer.{int(number) - 1}.{part}.{rest}"] = value
    return converted


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a torch pickle read with weights_only=True."""
    state: Any  # a pickle may hold anything until checked below
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged or non-tensor pickles raise many kinds of errors
        raise ModelError(f"{path}: cannot read teacher weights ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    # Training scripts often nest the weights.
    for nested in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    return state


def load_state_dict_file(path: Path, embedding_size: int, hidden_sizes: Sequence[int],
                         depths: Sequence[int]) -> nn.Module:
    """A ``ResNetModel`` with the weights of a torchvision/timm- or transformers-layout file."""
    state = read_state_dict(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(("embedder.", "resnet.embedder.")) for k in state):
        state = {k.removeprefix("resnet."): v for k, v in state.items() if not k.startswith("classifier.")}
    else:
        state = torchvision_to_transformers(state)
    # Stages after the ones used (ResNet18's layer4 for the teacher) are not needed.
    used = len(hidden_sizes)
    state = {k: v for k, v in state.items()
             if not (k.startswith("encoder.stages.") and int(k.split(".")[2]) >= used)}
    resnet = random_resnet(embedding_size, hidden_sizes, depths)
    expected = resnet.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            key = wrong_shape[0]
            problems.append(f"{len(wrong_shape)} of the wrong shape (e.g. {key}: {tuple(state[key].shape)} "
                            f"instead of {tuple(expected[key].shape)})")
        raise ModelError(f"{path}: not ResNet18 weights: {'; '.join(problems)} tensors")
    resnet.load_state_dict(state, strict=False)
    return resnet


def load_pretrained(source: str, embedding_size: int, hidden_sizes: Sequence[int],
                    depths: Sequence[int], *, missing_ok: bool = False) -> nn.Module | None:
    """A ``ResNetModel`` from a folder, a cached hub id, or a state dict file.

    Returns None (instead of raising) when ``source`` is a hub id that is not in the local
    cache and ``missing_ok`` is set: that is how the default id is probed.
    """
    from transformers import ResNetModel

    path = Path(os.path.expanduser(source))
    if path.is_file():
        if path.suffix.lower() not in STATE_DICT_SUFFIXES:
            raise ModelError(f"{path}: teacher weights file must end in {', '.join(STATE_DICT_SUFFIXES)}")
        return load_state_dict_file(path, embedding_size, hidden_sizes, depths)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a transformers model folder (no config.json); {WHERE_TO_PUT_WEIGHTS}")
        try:
            resnet = ResNetModel.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/RuntimeError here
            raise ModelError(f"{path}: cannot load a ResNet from this folder ({exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]})") from None
    else:
        # A hub id is "name" or "org/name"; anything else was meant as a path.
        looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source
        if looks_like_path or path.suffix.lower() in STATE_DICT_SUFFIXES:
            raise ModelError(f"teacher weights '{source}' not found; {WHERE_TO_PUT_WEIGHTS}")
        try:
            resnet = ResNetModel.from_pretrained(source, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/RuntimeError here
            if missing_ok:
                return None
            raise ModelError(f"teacher weights '{source}' are neither a file, a folder, nor a model in the "
                             f"local Hugging Face cache ({exc.__class__.__name__}); {WHERE_TO_PUT_WEIGHTS}") from None
    _check_shape(resnet, source, embedding_size, hidden_sizes, depths)
    # A checkpoint saved in half precision loads as such; the teacher computes in fp32.
    return resnet.float()


def _check_shape(resnet: Any, source: str, embedding_size: int, hidden_sizes: Sequence[int],
                 depths: Sequence[int]) -> None:
    config = resnet.config
    used = len(hidden_sizes)
    actual = (config.embedding_size, list(config.hidden_sizes)[:used], list(config.depths)[:used], config.layer_type)
    wanted = (embedding_size, list(hidden_sizes), list(depths), "basic")
    if actual != wanted:
        raise ModelError(f"{source}: teacher is not a ResNet18 (stem {actual[0]}, widths {actual[1]}, "
                         f"depths {actual[2]}, {actual[3]} blocks; expected {wanted[0]}, {wanted[1]}, "
                         f"{wanted[2]}, basic)")


def resolve_teacher(weights: str | None, *, allow_random: bool, embedding_size: int,
                    hidden_sizes: Sequence[int], depths: Sequence[int], preset_hint: str = "") -> TeacherSource:
    """The teacher named by ``weights``; or the default cached id; or a random one if allowed.

    A random teacher is only allowed when ``allow_random`` (the ``quick`` preset): it makes
    the pipeline run anywhere but its features are meaningless, so we warn loudly.
    """
    if weights:
        resnet = load_pretrained(str(weights), embedding_size, hidden_sizes, depths)
        assert resnet is not None  # without missing_ok, a missing teacher raises
        return TeacherSource(resnet, str(weights), pretrained=True)
    is_resnet18 = (embedding_size == RESNET18_EMBEDDING_SIZE
                   and tuple(hidden_sizes) == RESNET18_HIDDEN_SIZES[:len(hidden_sizes)]
                   and tuple(depths) == RESNET18_DEPTHS[:len(depths)])
    if is_resnet18:
        resnet = load_pretrained(DEFAULT_TEACHER_ID, embedding_size, hidden_sizes, depths, missing_ok=True)
        if resnet is not None:
            return TeacherSource(resnet, f"{DEFAULT_TEACHER_ID} (Hugging Face cache)", pretrained=True)
    if not allow_random:
        raise ModelError(f"DeSTSeg{preset_hint} needs ImageNet-pretrained ResNet18 teacher weights and none were "
                         f"given or found in the cache: {WHERE_TO_PUT_WEIGHTS}. "
                         "The 'quick' preset can run with a random teacher instead.")
    logger.warning("DeSTSeg: no pretrained teacher weights found, training with a RANDOM teacher: the pipeline "
                   "runs, but detection quality will be far below the paper's. To fix this, %s.",
                   WHERE_TO_PUT_WEIGHTS)
    return TeacherSource(random_resnet(embedding_size, hidden_sizes, depths), "random", pretrained=False)
