"""Data-parallel detector training across the processes of ``torchrun`` or ``accelerate launch``.

The training job (:func:`anogen.detection.train.train`) trains one detector with all the
processes of the launch, following the rules every data-parallel job of anogen follows
(:mod:`anogen.parallel`: one global batch split into contiguous shares, the gradient of
the whole batch, rank 0 the only writer, every process stopping at the same step). What
detector training adds is here:

* **DistributedDataParallel** wraps the detector's training loss (:meth:`DataParallel.wrap`).
  Each process's loss is weighted by its share (a loss that averages over the batch
  counts ``n_r / N`` of it, one that sums counts whole; :func:`~anogen.parallel.loss_scale`
  undoes DDP's averaging), so every process applies the gradient one process computes on
  the whole batch.
* **BatchNorm over the whole batch**: BatchNorm layers normalise with the statistics of
  every process's samples (:class:`SyncedBatchNorm2d` on the CPU, where torch's own
  ``SyncBatchNorm`` does not run; ``torch.nn.SyncBatchNorm`` on CUDA), on a process group
  of their own. In float64 the gradient equals one process's to ~1e-11; in float32 the
  order of the sums differs, and small detectors amplify that rounding over the steps as
  they do when the thread count changes, so runs agree within a tolerance (measured in
  tests/test_parallel_training.py and docs/scale.md), not bit for bit.
* **rank 0 validates**: only rank 0 validates and writes checkpoints, ``history.jsonl``
  and the output marker; the others take its verdict (:meth:`DataParallel.relay`).

Why DistributedDataParallel and not Accelerate's ``Accelerator``: the loop already owns
what ``Accelerator`` adds (device choice, the autocast policy, seeded batches, atomic
checkpoints), and what it needs besides gradient averaging (whole-batch BatchNorm on the
CPU, the weights of unequal shares, several optimisers for DeSTSeg's phases, rank 0's
verdict) is below either way. ``accelerate launch`` sets the same variables as
``torchrun``, so both start this path; the one-process path imports neither.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import torch
from torch import nn

from anogen.parallel import (
    TIMEOUT,
    ProcessGroup,
    backend_for,
)

if TYPE_CHECKING:
    from anogen.detection.base import Detector
    from anogen.runplan.ranks import ProcessRanks


# --------------------------------------------------------------------------- BatchNorm over all processes


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) with its gradient: the sum of the gradients of every process."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        import torch.distributed as dist

        ctx.group = group
        total = tensor.detach().clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        import torch.distributed as dist

        grad = grad_outputs[0].contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def sum_over_processes(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    return _SumOverProcesses.apply(tensor, group)


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises with the mean and variance of the samples
    of every process (two all-reduces: the sum, then the squared deviations from the
    whole batch's mean), and updates its running statistics with them as BatchNorm2d
    does. In evaluation, or outside a process group, it is BatchNorm2d."""

    group: Any = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        x = input.to(torch.promote_types(input.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        totals = sum_over_processes(torch.cat([x.sum(dims), count]), self.group)
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x - mean.view(1, -1, 1, 1)
        var = sum_over_processes(centred.square().sum(dims), self.group) / n
        if self.track_running_stats and self.num_batches_tracked is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var * (n / torch.clamp(n - 1, min=1))
                assert self.running_mean is not None and self.running_var is not None
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(input.dtype)


def sync_batchnorm(module: nn.Module, group: Any, *, cuda: bool) -> nn.Module:
    """Every BatchNorm2d of ``module`` replaced in place by one that uses the statistics of
    every process, with the same parameters and buffers (optimisers keep working, state
    dict keys stay). Returns ``module`` (or its replacement, when it is a BatchNorm)."""
    if type(module) is nn.BatchNorm2d:
        synced: nn.Module
        if cuda:
            synced = nn.SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats, process_group=group)
        else:
            synced = SyncedBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                       module.track_running_stats)
            synced.group = group
        if module.affine:
            synced.weight = module.weight
            synced.bias = module.bias
        synced.running_mean = module.running_mean
        synced.running_var = module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in list(module.named_children()):
        replaced = sync_batchnorm(child, group, cuda=cuda)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


# --------------------------------------------------------------------------- the detector's process group


class _LossOf(nn.Module):
    """The detector's training loss as a module's forward, which DistributedDataParallel wraps."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, weak: torch.Tensor, *,
                phase: str, tau: float, weak_all: bool) -> tuple[torch.Tensor, dict[str, float]]:
        from anogen.detection.base import TrainBatch

        return self.detector.training_loss(TrainBatch(image=image, clean=clean, mask=mask, weak=weak), phase,
                                           tau=tau, weak_all=weak_all)


@dataclass
class DataParallel(ProcessGroup):
    """This process's place in a data-parallel detector training run (see the module
    docstring): a :class:`~anogen.parallel.ProcessGroup` with BatchNorm's own group."""

    bn_group: Any = None  # BatchNorm statistics travel on their own group, apart from the gradients

    @classmethod
    def start(cls, ranks: ProcessRanks, requested_device: str | torch.device = "auto") -> Self:
        """Join (or start) the process group of the ``ranks.world`` processes."""
        import torch.distributed as dist

        joined = super().start(ranks, requested_device)
        joined.bn_group = dist.new_group(backend=backend_for(joined.device), timeout=TIMEOUT)
        return joined

    def close(self) -> None:
        import torch.distributed as dist

        if self.bn_group is not None and dist.is_initialized():
            dist.destroy_process_group(self.bn_group)
        super().close()

    # ------------------------------------------------------------------ the model

    def wrap(self, detector: Detector, trainable: Sequence[Sequence[nn.Parameter]]) -> nn.Module:
        """The detector's training loss as a DistributedDataParallel module, its BatchNorms
        synchronised. ``trainable`` lists the parameters each phase trains: when a phase
        leaves some out (DeSTSeg), DDP is told to expect unused parameters. Rank 0's
        weights and buffers (a resumed run's) are copied to every process here."""
        from torch.nn.parallel import DistributedDataParallel

        sync_batchnorm(detector, self.bn_group, cuda=self.device.type == "cuda")
        every = {id(p) for p in detector.parameters() if p.requires_grad}
        some_unused = any({id(p) for p in params} != every for params in trainable)
        # Buffers are copied from rank 0 once, here, never again before a forward pass (a
        # collective there would wait for rank 0 while it validates); the synchronised
        # BatchNorms keep every process's statistics equal.
        no_forward_sync: dict[str, Any] = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})  # torch < 2.13
        return DistributedDataParallel(_LossOf(detector), device_ids=[self.device] if self.device.type == "cuda"
                                       else None, find_unused_parameters=some_unused, **no_forward_sync)
