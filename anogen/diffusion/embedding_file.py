"""Learned defect embeddings on disk and in a model.

File format: a safetensors file holding one tensor under the placeholder token's
name, ``{"<scratch>": float32[token_width]}``, which is exactly what diffusers'
``pipeline.load_textual_inversion(path)`` reads. The safetensors metadata (string to
string) records where the vector came from, so a file is never paired with the
wrong model silently:

``format``, ``format_version``, ``token``, ``token_width``, ``family``, ``model``,
``init_word``, ``shots`` (JSON list of image/mask names and sha256), ``steps``,
``lr``, ``batch_size``, ``seed``, ``resolution``, ``final_loss``, ``loss_curve``
(JSON list), plus a few learning options.

:func:`apply_embedding` adds the token to a loaded model (tokenizer + one new row of
the text encoder's embedding table); every other row stays untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anogen.atomic import atomic_write_bytes
from anogen.errors import InputError, ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMAT_NAME = "anogen-embedding"
FORMAT_VERSION = "1"


@dataclass
class LearnedEmbedding:
    """One learned token vector and what it was learned on."""

    token: str
    vector: torch.Tensor  # float32, shape (token_width,), on the CPU
    family: str | None = None  # None for files made by other tools
    model_source: str | None = None
    init_word: str | None = None
    loss_curve: list[float] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None  # of the file, for provenance of generated samples

    @property
    def token_width(self) -> int:
        return int(self.vector.shape[-1])

    @property
    def learned_resolution(self) -> int | None:
        """The side stage 1 ran the model at; None when the file does not say (other tools)."""
        try:
            resolution = int(self.metadata.get("resolution", ""))
        except ValueError:
            return None
        return resolution if resolution > 0 else None

    @property
    def subject(self) -> str:
        """What stage 1's captions named besides the token ("" when none did)."""
        return self.metadata.get("subject", "")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _metadata_strings(metadata: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata is str -> str: JSON-encode everything that is not a string."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}


def save_embedding(path: str | os.PathLike, embedding: Any) -> Path:
    """Write a learned embedding (a :class:`LearnedEmbedding` or a stage-1 ``LearnResult``)
    atomically to ``path`` (``.safetensors``). Returns the path."""
    import torch
    from safetensors.torch import save

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise InputError(f"{path}: an embedding is saved as a .safetensors file")
    token = embedding.token
    vector = embedding.vector.detach().to("cpu", torch.float32).reshape(-1).contiguous()
    if not torch.isfinite(vector).all():
        raise InputError(f"{path}: refusing to save an embedding with NaN or infinite values")
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "token": token,
                "token_width": str(vector.numel())}
    described = {"family": getattr(embedding, "family", None), "model": getattr(embedding, "model_source", None),
                 "init_word": getattr(embedding, "init_word", None),
                 "loss_curve": list(getattr(embedding, "loss_curve", None) or []) or None}
    metadata.update(_metadata_strings({k: v for k, v in described.items() if v is not None}))
    metadata.update(_metadata_strings(dict(embedding.metadata)))
    atomic_write_bytes(path, save({token: vector}, metadata=metadata))
    return path


def load_embedding(path: str | os.PathLike) -> LearnedEmbedding:
    """Read an embedding file written by :func:`save_embedding` (or a diffusers-style
    single-token textual-inversion safetensors file)."""
    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embedding file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            keys = list(handle.keys())
            tensors = {key: handle.get_tensor(key) for key in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable safetensors embedding ({exc})") from None
    if len(tensors) != 1:
        raise InputError(f"{path}: expected exactly one token vector, found {len(tensors)} tensors "
                         f"({', '.join(keys[:5])})")
    token, vector = next(iter(tensors.items()))
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim != 1:
        raise InputError(f"{path}: token '{token}' has shape {tuple(vector.shape)}; only single-vector "
                         "embeddings are supported")
    if not torch.isfinite(vector).all():
        # A NaN vector makes every generated box black; refuse it here, where the file is named.
        raise InputError(f"{path}: token '{token}' holds NaN or infinite values; the embedding is broken, "
                         "learn it again")
    return LearnedEmbedding(
        token=token,
        vector=vector.to(torch.float32),
        family=metadata.get("family"),
        model_source=metadata.get("model"),
        init_word=metadata.get("init_word"),
        loss_curve=_loss_curve(metadata),
        metadata=metadata,
        path=path,
        sha256=file_sha256(path),
    )


def _loss_curve(metadata: dict[str, str]) -> list[float]:
    try:
        return [float(v) for v in json.loads(metadata.get("loss_curve", "[]"))]
    except (ValueError, TypeError):
        return []


def read_loss_curve(path: str | os.PathLike) -> list[float]:
    """The stage-1 loss per step recorded in an embedding file, from its header only
    (no torch: the app draws it when a learned kind is shown); ``[]`` when the file has
    none or cannot be read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return _loss_curve(dict(handle.metadata() or {}))
    except (SafetensorError, OSError, ValueError):
        return []


def add_placeholder_token(model, token: str) -> int:
    """Add ``token`` to the model's tokenizer (once) and make room for its row.

    Returns the token id. A token that is an ordinary word of the vocabulary is refused:
    learning it would overwrite what the model knows about that word.
    """
    tokenizer = model.tokenizer
    if not token or any(ch.isspace() for ch in token):
        raise InputError(f"placeholder token '{token}' must be one word without spaces, e.g. <scratch>")
    added = tokenizer.get_added_vocab()
    if token not in added:
        existing = tokenizer(token, add_special_tokens=False).input_ids
        if len(existing) == 1 and existing[0] != tokenizer.unk_token_id:
            raise InputError(f"placeholder token '{token}' is already a word of the model's vocabulary; "
                             "choose a new one such as <scratch>")
        tokenizer.add_tokens([token])
    token_id = int(tokenizer.convert_tokens_to_ids(token))
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if ids != [token_id]:
        raise InputError(f"placeholder token '{token}' does not encode as one token (got {ids})")
    # transformers 5: len(tokenizer) can disagree with the ids of a hand-made vocabulary;
    # size the table from the id itself.
    model.resize_token_table(max(token_id + 1, len(tokenizer)))
    return token_id


def check_compatible(model, embedding: LearnedEmbedding) -> None:
    """Refuse an embedding learned on a model of another width or family."""
    where = f"embedding '{embedding.path or embedding.token}'"
    origin = f" (learned on {embedding.family} model '{embedding.model_source}')" if embedding.family else ""
    if embedding.token_width != model.token_width:
        raise ModelError(f"{where} has {embedding.token_width}-d tokens{origin} but model '{model.source}' "
                         f"({model.family}) uses {model.token_width}-d tokens; learn the defect again on this model")
    if embedding.family and embedding.family != model.family:
        raise ModelError(f"{where} was learned on a {embedding.family} model{origin}; model '{model.source}' "
                         f"is {model.family}; learn the defect again on this model")
    if embedding.model_source and embedding.model_source != model.source:
        log.warning("%s was learned on '%s' and is applied to '%s' (same family and width)", where,
                    embedding.model_source, model.source)


def apply_embedding(model, embedding: LearnedEmbedding) -> str:
    """Teach ``model`` the embedding's token; returns the token to put in prompts."""
    import torch

    check_compatible(model, embedding)
    token_id = add_placeholder_token(model, embedding.token)
    table = model.token_embedding_table()
    with torch.no_grad():
        table.weight[token_id] = embedding.vector.to(table.weight.device, table.weight.dtype)
    return embedding.token
