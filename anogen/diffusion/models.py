"""Loading a frozen pretrained latent diffusion model.

One entry point, :func:`load_model`, turns what the user has into a
:class:`DiffusionModel`: the VAE, text encoder, tokenizer and UNet on one device,
frozen, plus the facts stages 1 and 2 need (family, native resolution, token width,
latent scaling, whether the UNet is an inpainting one).

What it reads:

* a local diffusers folder (``model_index.json`` with one sub-folder per component);
* a Hugging Face id such as ``runwayml/stable-diffusion-v1-5`` from the local cache.
  Offline unless ``allow_download``: a missing model is an immediate
  :class:`~anogen.errors.ModelError`, never a hang on the network;
* a single ``.safetensors`` / ``.ckpt`` Stable Diffusion checkpoint, converted by
  diffusers, with ``config_dir`` pointing at a local diffusers folder of the same
  architecture when the config is not in the cache. ``.ckpt`` files are only read
  with ``torch.load(weights_only=True)``.

Families, detected from the files:

* ``sd1``: Stable Diffusion 1.x, CLIP text encoder (768-d tokens in the real model);
* ``sd2``: Stable Diffusion 2.x, OpenCLIP text tower (1024-d tokens);
* ``ldm``: CompVis LDM text-to-image (``LDMTextToImagePipeline``: ``vqvae/``,
  ``bert/`` LDMBert with 1280-d tokens, ``unet/``), the model the reference code used.

``sd1`` and ``sd2`` come with a 4-channel UNet or a 9-channel inpainting UNet
(:attr:`DiffusionModel.is_inpainting`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anogen.device import resolve_device, resolve_dtype
from anogen.errors import InputError, ModelError

log = logging.getLogger(__name__)

FAMILIES = ("sd1", "sd2", "ldm")
FAMILY_NAMES = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "ldm": "CompVis LDM text-to-image",
}
SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
LDM_COMPONENTS = ("unet", "vqvae|vae", "bert", "tokenizer", "scheduler")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What a cache download fetches: configs, tokenizer files and safetensors weights in
# full precision (not the fp16/EMA variants that double the download).
DOWNLOAD_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "tokenizer/*", "*/*.safetensors"]
DOWNLOAD_IGNORE = ["*.fp16.*", "*non_ema*", "*.ema.*", "safety_checker/*", "feature_extractor/*"]


@dataclass
class DiffusionModel:
    """A frozen latent diffusion model and the facts about it the stages need."""

    family: str  # "sd1" | "sd2" | "ldm"
    source: str  # what the user named (hub id, folder or file), recorded in metadata
    # The diffusers/transformers modules of the family (AutoencoderKL, CLIPTextModel or LDMBert,
    # UNet2DConditionModel): Any, since their methods (encode, get_input_embeddings, ...) are not
    # on nn.Module, and nn.Module's typing turns every unknown attribute into ``Tensor | Module``.
    vae: Any
    text_encoder: Any
    tokenizer: Any
    unet: Any
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    resolution: int  # native image side in pixels
    latent_channels: int
    vae_scale_factor: int  # pixels per latent cell
    scaling_factor: float  # latents are vae latents * scaling_factor
    token_width: int  # width of one token embedding
    is_inpainting: bool
    folder: Path | None = None  # the diffusers folder it came from, when there is one
    max_length: int = 77  # tokens per prompt
    extra: dict[str, Any] = field(default_factory=dict)

    # -- facts ---------------------------------------------------------------------
    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor

    def working_resolution(self, requested: int | None) -> int:
        """The side stages 1 and 2 run the model at: ``requested``, or the native one.

        The UNet and VAE are convolutional, so any multiple of the UNet's total downsampling
        works; a larger side keeps the detail of a crop that the native side would shrink.
        """
        resolution = int(requested or self.resolution)
        unet_levels = len(self.unet.config.block_out_channels) - 1
        multiple = self.vae_scale_factor * 2 ** unet_levels
        if resolution <= 0 or resolution % multiple:
            raise InputError(f"resolution {resolution} must be a positive multiple of {multiple} for this model")
        return resolution

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts: ``epsilon`` (noise) or ``v_prediction``."""
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def description(self) -> str:
        kind = "inpainting " if self.is_inpainting else ""
        return (f"{FAMILY_NAMES[self.family]} {kind}model '{self.source}' ({self.token_width}-d tokens, "
                f"{self.resolution} px)")

    # -- schedulers ----------------------------------------------------------------
    def ddim_scheduler(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler_config)

    def ddpm_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config)

    # -- text ----------------------------------------------------------------------
    def token_embedding_table(self) -> nn.Embedding:
        """The text encoder's input embedding table (one row per token id)."""
        table = self.text_encoder.get_input_embeddings()
        if not isinstance(table, nn.Embedding):
            raise ModelError(f"{self.source}: the text encoder has no token embedding table")
        return table

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids, padded/truncated to :attr:`max_length`, on the model's device."""
        batch = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length,
                               truncation=True, return_tensors="pt")
        return batch.input_ids.to(self.device)

    def encode_token_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text-encoder hidden states ``(B, L, token_width)`` for token ids."""
        return self.text_encoder(input_ids.to(self.device))[0]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """The conditioning the UNet cross-attends to, ``(B, L, token_width)``."""
        return self.encode_token_ids(self.tokenize(prompts))

    def resize_token_table(self, rows: int) -> nn.Embedding:
        """Grow the embedding table to ``rows`` rows, keeping every existing row."""
        table = self.token_embedding_table()
        if rows <= table.num_embeddings:
            return table
        grown = nn.Embedding(rows, table.embedding_dim, padding_idx=table.padding_idx,
                             device=table.weight.device, dtype=table.weight.dtype)
        with torch.no_grad():
            grown.weight[: table.num_embeddings] = table.weight
        grown.weight.requires_grad_(False)
        self.text_encoder.set_input_embeddings(grown)
        self.text_encoder.config.vocab_size = rows
        return grown

    # -- images --------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor, *, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents (already multiplied by :attr:`scaling_factor`) for images in [-1, 1].

        ``sample=False`` uses the posterior mean (deterministic); ``True`` draws from it.
        """
        images = images.to(self.device, self.dtype)
        encoded = self.vae.encode(images)
        if hasattr(encoded, "latent_dist"):
            dist = encoded.latent_dist
            latents = dist.sample(generator) if sample else dist.mean
        else:  # VQModel
            latents = encoded.latents
        return latents * self.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (clamped) from scaled latents."""
        latents = latents.to(self.device, self.dtype) / self.scaling_factor
        return self.vae.decode(latents).sample.clamp(-1, 1)

    # -- memory savers -------------------------------------------------------------
    def enable_attention_slicing(self) -> None:
        """Compute attention in slices: slower, much less peak memory at high resolution."""
        self.unet.set_attention_slice("auto")

    def enable_vae_tiling(self) -> None:
        """Encode/decode large images tile by tile."""
        if hasattr(self.vae, "enable_tiling"):
            self.vae.enable_tiling()

    def enable_gradient_checkpointing(self) -> None:
        """Recompute UNet activations in the backward pass (stage 1 on small GPUs)."""
        self.unet.enable_gradient_checkpointing()


# ---------------------------------------------------------------------------------
# Family detection
# ---------------------------------------------------------------------------------
@dataclass
class ModelLayout:
    """What :func:`detect_family` found in a diffusers folder."""

    family: str
    is_inpainting: bool
    vae_folder: str
    text_encoder_folder: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ModelError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _found(folder: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()) if folder.is_dir() else []
    return ", ".join(entries[:20]) + (" ..." if len(entries) > 20 else "") if entries else "nothing"


def _expected_message(folder: Path, missing: list[str]) -> str:
    # What to do first (engineers read the first line); the parts list last, for whoever
    # has to repair the folder.
    return (f"{folder} is not a complete diffusion model folder. Choose the folder that holds "
            "model_index.json of a downloaded Stable Diffusion 1.x/2.x or CompVis LDM model (or a single "
            "'.safetensors' checkpoint file), or use the demo model. "
            f"It is missing {', '.join(missing)}; found: {_found(folder)}.")


def detect_family(folder: str | os.PathLike) -> ModelLayout:
    """Tell which supported family a diffusers folder holds, or raise a ModelError that
    says what was found and what was expected."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a folder")
    index = _read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    pipeline_class = str(index.get("_class_name", ""))
    if (folder / "text_encoder_2").is_dir() or "XL" in pipeline_class:
        raise ModelError(f"{folder}: this is a Stable Diffusion XL model ({pipeline_class or 'text_encoder_2/'}); "
                         "supported families are Stable Diffusion 1.x/2.x and CompVis LDM text-to-image")

    is_ldm = (folder / "bert").is_dir() or pipeline_class == "LDMTextToImagePipeline"
    if is_ldm:
        vae_folder = "vqvae" if (folder / "vqvae").is_dir() else "vae"
        required = ["unet", vae_folder, "bert", "tokenizer", "scheduler"]
    else:
        vae_folder = "vae"
        required = list(SD_COMPONENTS)
    missing = [name + "/" for name in required if not (folder / name).is_dir()]
    if missing:
        raise ModelError(_expected_message(folder, missing))
    for name in ("unet", vae_folder, "bert" if is_ldm else "text_encoder"):
        if not (folder / name / "config.json").is_file():
            raise ModelError(f"{folder / name}: no config.json (found: {_found(folder / name)}); "
                             "the component folder is incomplete")

    unet_config = _read_json(folder / "unet" / "config.json")
    in_channels = int(unet_config.get("in_channels", 0))
    if in_channels not in (4, 9):
        raise ModelError(f"{folder / 'unet'}: a UNet with {in_channels} input channels; expected 4 "
                         "(text-to-image) or 9 (inpainting)")
    if unet_config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise ModelError(f"{folder / 'unet'}: a {unet_config.get('_class_name')}; expected a text-conditioned "
                         "UNet2DConditionModel")

    if is_ldm:
        if in_channels != 4:
            raise ModelError(f"{folder}: an LDM text-to-image model with a {in_channels}-channel UNet; expected 4")
        return ModelLayout("ldm", False, vae_folder, "bert")

    text_config = _read_json(folder / "text_encoder" / "config.json")
    architectures = text_config.get("architectures") or []
    model_type = text_config.get("model_type", "")
    if model_type not in ("clip_text_model", "clip") and not any("CLIPText" in a for a in architectures):
        raise ModelError(f"{folder / 'text_encoder'}: a '{model_type or architectures}' text encoder; expected "
                         "a CLIP text encoder (Stable Diffusion) or an LDMBert in bert/ (CompVis LDM)")
    width = int(text_config.get("hidden_size", 0))
    # SD 2 uses OpenCLIP ViT-H's text tower: 1024 wide and plain GELU; SD 1 uses
    # OpenAI CLIP ViT-L (768, quick-GELU). Tiny test models keep the activation.
    family = "sd2" if width == 1024 or text_config.get("hidden_act") == "gelu" else "sd1"
    return ModelLayout(family, in_channels == 9, vae_folder, "text_encoder")


# ---------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------
def _freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module


def _load_component(what: str, loader, folder: Path) -> Any:
    import pickle

    try:
        return loader()
    except ModelError:
        raise
    except pickle.UnpicklingError:
        # torch.load(weights_only=True) met a pickle that holds more than tensors (code,
        # possibly malicious). Name the file; never fall back to a full unpickle.
        pickled = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        where = folder / pickled[0] if len(pickled) == 1 else folder
        raise ModelError(f"{where}: refused to load the {what}: the pickle holds more than plain tensors; only "
                         "safetensors weights (and tensor-only .bin files) are loaded, convert it to "
                         "model.safetensors") from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelError(f"{folder}: cannot load the {what} ({first_line})") from None


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Hide the per-component "Loading weights" / "Writing shards" bars of diffusers
    and transformers: loading or saving is one step of a job that reports its own
    progress."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    restore = [module for module in (diffusers_logging, transformers_logging) if module.is_progress_bar_enabled()]
    for module in restore:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module in restore:
            module.enable_progress_bar()


def _load_folder(folder: Path, source: str, device: torch.device, dtype: torch.dtype) -> DiffusionModel:
    with quiet_progress_bars():
        return _load_folder_components(folder, source, device, dtype)


def _load_folder_components(folder: Path, source: str, device: torch.device, dtype: torch.dtype) -> DiffusionModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel, VQModel

    layout = detect_family(folder)
    vae_dir = folder / layout.vae_folder
    vae_class = VQModel if _read_json(vae_dir / "config.json").get("_class_name") == "VQModel" else AutoencoderKL
    vae = _load_component("VAE", lambda: vae_class.from_pretrained(vae_dir, torch_dtype=dtype), vae_dir)
    unet = _load_component("UNet", lambda: UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype),
                           folder / "unet")
    if layout.family == "ldm":
        from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertModel
        from transformers import BertTokenizer

        text_encoder = _load_component(
            "LDMBert text encoder", lambda: LDMBertModel.from_pretrained(folder / "bert", dtype=dtype), folder / "bert")
        tokenizer = _load_component("tokenizer", lambda: BertTokenizer.from_pretrained(folder / "tokenizer"),
                                    folder / "tokenizer")
        token_width = int(text_encoder.config.d_model)
    else:
        from transformers import CLIPTextModel, CLIPTokenizer

        text_encoder = _load_component(
            "CLIP text encoder", lambda: CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=dtype),
            folder / "text_encoder")
        tokenizer = _load_component("tokenizer", lambda: CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                                    folder / "tokenizer")
        token_width = int(text_encoder.config.hidden_size)

    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    scheduler_config = _read_json(scheduler_file)
    cross_width = unet.config.cross_attention_dim
    if cross_width != token_width:
        raise ModelError(f"{folder}: the UNet cross-attends to {cross_width}-d text features but the text encoder "
                         f"gives {token_width}-d ones; the components do not belong together")
    return _assemble(layout.family, layout.is_inpainting, source, folder, vae, text_encoder, tokenizer, unet,
                     scheduler_config, device, dtype, token_width)


def _assemble(family, is_inpainting, source, folder, vae, text_encoder, tokenizer, unet, scheduler_config,
              device, dtype, token_width) -> DiffusionModel:
    for module in (vae, text_encoder, unet):
        _freeze(module)
        if next(module.parameters()).dtype == dtype:
            module.to(device=device)  # naming an unchanged dtype still makes diffusers warn
        else:
            module.to(device=device, dtype=dtype)
    vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    sample_size = unet.config.sample_size
    if isinstance(sample_size, (list, tuple)):
        sample_size = sample_size[0]
    max_positions = getattr(text_encoder.config, "max_position_embeddings", 77)
    tokenizer_max = getattr(tokenizer, "model_max_length", max_positions) or max_positions
    return DiffusionModel(
        family=family,
        source=source,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler_config=dict(scheduler_config),
        device=device,
        dtype=dtype,
        resolution=int(sample_size) * vae_scale_factor,
        latent_channels=int(vae.config.latent_channels),
        vae_scale_factor=vae_scale_factor,
        scaling_factor=float(getattr(vae.config, "scaling_factor", None) or 0.18215),
        token_width=token_width,
        is_inpainting=is_inpainting,
        folder=folder,
        max_length=int(min(max_positions, tokenizer_max)),
    )


def _hub_snapshot(repo_id: str, allow_download: bool) -> Path:
    """The local snapshot folder of a Hugging Face model id (downloading only if allowed)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=not allow_download,
                                        allow_patterns=DOWNLOAD_PATTERNS, ignore_patterns=DOWNLOAD_IGNORE))
        if allow_download and not any(folder.glob("unet/*.safetensors")):
            # Some repositories only publish PyTorch .bin weights (read with weights_only=True).
            folder = Path(snapshot_download(repo_id, allow_patterns=DOWNLOAD_PATTERNS + ["*/*.bin"],
                                            ignore_patterns=DOWNLOAD_IGNORE))
    except LocalEntryNotFoundError:
        if allow_download:
            raise ModelError(f"'{repo_id}': could not download the model (no network, or the id is wrong)") from None
        raise ModelError(
            f"'{repo_id}': not in the local Hugging Face cache ({_hub_cache_dir()}). Download it once with "
            f"--allow-download, or point --model at a local diffusers folder or a .safetensors file") from None
    except Exception as exc:  # noqa: BLE001 - repository not found, gated, network errors
        raise ModelError(f"'{repo_id}': cannot get the model from Hugging Face ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return folder


def _hub_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - very old huggingface_hub
        return "~/.cache/huggingface/hub"


def _single_file_unet_in_channels(path: Path) -> int | None:
    """Input channels of the UNet in an original-format checkpoint, read without loading it all."""
    key = "model.diffusion_model.input_blocks.0.0.weight"
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            if key in handle.keys():
                return int(handle.get_slice(key).get_shape()[1])
        return None
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    weight = state.get(key)
    return int(weight.shape[1]) if weight is not None else None


def _load_single_file(path: Path, device: torch.device, dtype: torch.dtype, config_dir: Path | None,
                      allow_download: bool) -> DiffusionModel:
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise ModelError(f"{path}: a single-file model must be .safetensors or .ckpt")
    try:
        in_channels = _single_file_unet_in_channels(path)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint raises many kinds of errors
        raise ModelError(f"{path}: cannot read the checkpoint ({exc.__class__.__name__}: {exc})") from None
    if in_channels is None:
        raise ModelError(f"{path}: no Stable Diffusion UNet weights found (expected the original "
                         "'model.diffusion_model.*' layout); for CompVis LDM use a diffusers folder")
    pipeline_class = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    kwargs: dict[str, Any] = {"local_files_only": not allow_download}
    if dtype != torch.float32:  # (float32 is the default; naming it only makes diffusers warn)
        kwargs["torch_dtype"] = dtype
    if config_dir is not None:
        config_dir = Path(config_dir)
        detect_family(config_dir) if (config_dir / "unet").is_dir() else None
        kwargs["config"] = str(config_dir)
    try:
        with quiet_progress_bars():
            pipe = pipeline_class.from_single_file(str(path), safety_checker=None, requires_safety_checker=False,
                                                   **kwargs)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many kinds of errors for a bad single file
        hint = ("" if config_dir is not None else
                "; pass a local diffusers folder of the same architecture as the config folder "
                "(--config-dir) so nothing needs downloading")
        raise ModelError(f"{path}: cannot convert the checkpoint ({exc.__class__.__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}){hint}") from None
    width = int(pipe.text_encoder.config.hidden_size)
    family = "sd2" if width == 1024 or pipe.text_encoder.config.hidden_act == "gelu" else "sd1"
    return _assemble(family, in_channels == 9, str(path), None, pipe.vae, pipe.text_encoder, pipe.tokenizer,
                     pipe.unet, dict(pipe.scheduler.config), device, dtype, width)


def load_model(
    source: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "auto",
    allow_download: bool = False,
    config_dir: Path | None = None,
    attention_slicing: bool = False,
    vae_tiling: bool = False,
) -> DiffusionModel:
    """Load a frozen latent diffusion model from a folder, a Hugging Face id or a file.

    ``device`` is ``auto|cuda|mps|cpu``; ``precision`` ``auto|fp32|fp16|bf16`` (fp32
    on the CPU). Raises :class:`~anogen.errors.ModelError` when the model is missing,
    broken or of an unsupported family.
    """
    torch_device = resolve_device(device)
    dtype = resolve_dtype(torch_device, precision)
    text = str(source).strip()
    if not text:
        raise ModelError("no model given; pass a diffusers folder, a Hugging Face id or a .safetensors file")
    path = Path(text).expanduser()
    if path.is_dir():
        model = _load_folder(path.resolve(), text, torch_device, dtype)
    elif path.is_file():
        model = _load_single_file(path.resolve(), torch_device, dtype, config_dir, allow_download)
    elif path.suffix.lower() in SINGLE_FILE_SUFFIXES or text.startswith((".", "/", "~")) or os.sep in text[:1]:
        raise ModelError(f"{path}: no such model file or folder")
    elif HUB_ID.match(text):
        model = _load_folder(_hub_snapshot(text, allow_download), text, torch_device, dtype)
    else:
        raise ModelError(f"'{text}': no such folder or file, and not a Hugging Face id (owner/name)")
    if attention_slicing:
        model.enable_attention_slicing()
    if vae_tiling:
        model.enable_vae_tiling()
    log.info("loaded %s on %s (%s)", model.description, torch_device, dtype)
    return model
