"""Choosing the torch device and dtype.

``auto`` picks CUDA, then Apple MPS, then the CPU. Half precision is only used on a GPU:
the CPU path always runs in float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anogen.errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used, so the choices load instantly
    import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cuda|mps|cpu`` (or ``cuda:1``) into a torch device that exists here."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device '{name}' was requested but no CUDA GPU is available; use --device cpu")
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("device 'mps' was requested but Apple MPS is not available; use --device cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device '{name}'; choose one of {', '.join(DEVICE_CHOICES)}")


def resolve_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """float32 on the CPU; on a GPU bf16 where supported, else fp16, unless told otherwise."""
    import torch

    precision = (precision or "auto").lower()
    if precision not in PRECISION_CHOICES:
        raise InputError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISION_CHOICES)}")
    if device.type == "cpu" or precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def describe_device(device: torch.device) -> str:
    """A short human name, for status bars and reports."""
    import torch

    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    return "CPU"
