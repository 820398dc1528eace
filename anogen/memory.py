"""Will a job fit in memory? Estimate before starting, refuse with numbers.

A job that asks for more memory than the machine has is not slow, it is killed by the
operating system with no message (``learn --resolution 1048576`` was OOM-killed at
20.8 GB). So a job estimates what it needs from its sizes before the first large
allocation and refuses, in one line with the estimate and the machine's memory, what
cannot fit.

The estimates are floors: they count the arrays that must exist at once (inputs,
the widest activations, the weights), not every temporary. A job refused here would
certainly fail; a job let through may still be tight.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anogen.errors import InputError

# Tensors alive at once in one encoder/UNet level while training: the block's input,
# its output and the normalised/activated copies autograd keeps for the backward pass.
_TENSORS_PER_LEVEL = 4


def format_bytes(count: float) -> str:
    """``3.3 TB``, ``20.8 GB``, ``512 MB``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count / 1e6:.2f} MB"


def _cgroup_limit() -> int | None:
    """The container's memory limit (cgroup v2, then v1), or None when unlimited."""
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "no limit"
            return int(text)
    return None


def machine_memory() -> int:
    """The memory this process may use, in bytes: the physical RAM, bounded by a
    container limit and by ``ulimit -v`` when either is lower."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX (Windows): no reliable figure
        pass
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limits.append(cgroup)
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, ValueError, OSError):
        pass
    return min(limits) if limits else 1 << 62


def device_memory(device: Any) -> int | None:
    """Total memory of a CUDA device in bytes; None for the CPU and other devices (they
    share the machine's RAM, or do not say)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def check_fits(needed: int, available: int, what: str, where: str, hint: str) -> None:
    """Refuse ``what`` when ``needed`` bytes exceed ``available`` (``where`` names it)."""
    if needed > available:
        raise InputError(f"{what} needs at least {format_bytes(needed)} of memory (estimate) but {where} has "
                         f"{format_bytes(available)}; {hint}")


def _module_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


def check_learn_memory(model: Any, resolution: int, batch_size: int, shots: int, flip: bool) -> None:
    """Refuse stage-1 learning that cannot fit, before the support set is resized.

    Host memory: each support image (uint8 RGB) and mask (float32) at ``resolution``,
    and the float32 pixel batch the VAE encodes (both flips). Device memory: the
    weights, the VAE's first level (widest, at full resolution) for one encoding batch,
    and the UNet's activations on the latent grid for one training batch.
    """
    import torch

    pixels = resolution * resolution
    element = torch.tensor([], dtype=model.dtype).element_size()
    views = shots * (2 if flip else 1)
    host = shots * pixels * (3 + 4) + views * 3 * pixels * 4
    vae_width = int(model.vae.config.block_out_channels[0])
    vae = min(batch_size, views) * vae_width * pixels * element * _TENSORS_PER_LEVEL
    latent = resolution // model.vae_scale_factor
    widths = [int(c) for c in model.unet.config.block_out_channels]
    unet = batch_size * element * _TENSORS_PER_LEVEL * sum(
        width * (latent >> level) ** 2 for level, width in enumerate(widths))
    weights = sum(_module_bytes(m) for m in (model.unet, model.vae, model.text_encoder))
    hint = f"use a lower --resolution (this model's native one is {model.resolution})"
    gpu = device_memory(model.device)
    what = f"learning at {resolution} px"
    if gpu is None:
        check_fits(host + vae + unet + weights, machine_memory(), what, "this machine", hint)
    else:
        check_fits(host, machine_memory(), what, "this machine", hint)
        check_fits(vae + unet + weights, gpu, what, f"the GPU ({model.device})", hint)
