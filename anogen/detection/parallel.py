"""Data-parallel detector training across the processes of ``torchrun`` or ``accelerate launch``.

``torchrun --nproc_per_node N -m anogen train ...`` or ``accelerate launch --multi_gpu
--num_processes N -m anogen train ...`` start N copies of the command with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set (:class:`~anogen.runplan.ranks.ProcessRanks`); the
training job (:func:`anogen.detection.train.train`) then trains one detector with all of
them:

* **one global batch, split.** Every process builds the step's whole batch (a batch is a
  function of seed and step, :class:`~anogen.detection.training_data.MixedBatchSampler`,
  and its samples share one random stream, so a share cannot be drawn alone) and keeps
  its contiguous share (:func:`batch_share`). The union of the shares is, sample for
  sample, the batch one process trains on; the batch size stays the config's.
* **the gradient of the whole batch.** Each process's loss is weighted by its share
  (:func:`share_weight`, :func:`loss_scale`: a loss that averages over the batch counts
  ``n_r / N`` of it, one that sums counts whole) and DistributedDataParallel averages the
  gradients, so every process applies the gradient one process computes on the whole
  batch. BatchNorm layers normalise with the statistics of the whole batch
  (:class:`SyncedBatchNorm2d` on the CPU, where torch's own ``SyncBatchNorm`` does not
  run; ``torch.nn.SyncBatchNorm`` on CUDA). In float64 the gradient equals one
  process's to ~1e-11; in float32 the order of the sums differs, and small detectors
  amplify that rounding over the steps as they do when the thread count changes, so
  runs agree within a tolerance (measured in tests/test_parallel_training.py and
  docs/scale.md), not bit for bit.
* **one writer.** Only rank 0 validates and writes checkpoints, ``history.jsonl`` and the
  output marker; the others wait for its verdict (:meth:`DataParallel.relay`), so an
  error there (a full disk, NaN maps) stops every process with the same error.
* **stopping together.** A cancel on any process is agreed at the start of each step,
  the loss (and with it a NaN) is summed over the processes before the backward pass,
  and the number of steps is the same everywhere, so all stop at the same step.

Why DistributedDataParallel and not Accelerate's ``Accelerator``: the loop already owns
what ``Accelerator`` adds (device choice, the autocast policy, seeded batches, atomic
checkpoints), and what it needs besides gradient averaging (whole-batch BatchNorm on the
CPU, the weights of unequal shares, several optimisers for DeSTSeg's phases, rank 0's
verdict) is below either way. ``accelerate launch`` sets the same variables as
``torchrun``, so both start this path; the one-process path imports neither.

The process group is ``gloo`` on the CPU and ``cpu:gloo,cuda:nccl`` on GPUs (the small
agreement messages travel on the CPU). Its timeout (:data:`TIMEOUT`) bounds how long the
other processes wait for rank 0's validation and checkpoint writing.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
from torch import nn

from anogen import errors
from anogen.errors import InputError, JobCancelled

if TYPE_CHECKING:
    from anogen.detection.base import Detector
    from anogen.runplan.ranks import ProcessRanks

#: How long a process waits in a collective (rank 0 validating and writing checkpoints).
TIMEOUT = timedelta(hours=1)

Reduction = Literal["mean", "sum"]
T = TypeVar("T")


# --------------------------------------------------------------------------- pure helpers


def batch_share(batch_size: int, rank: int, world: int) -> slice:
    """The samples of a batch of ``batch_size`` that process ``rank`` of ``world`` trains on:
    a contiguous block; the first ``batch_size % world`` processes take one sample more."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of {world} processes")
    if batch_size < world:
        raise InputError(f"the batch of {batch_size} samples cannot be split over {world} processes; use a batch "
                         f"size of at least {world} (--set batch_size=N) or fewer processes")
    base, extra = divmod(batch_size, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def share_weight(reduction: Reduction, share: int, batch_size: int) -> float:
    """What one process's loss counts in the whole batch's: ``share / batch_size`` of it
    when the loss is a mean over the batch's samples, all of it when it is a sum."""
    if reduction == "mean":
        return share / batch_size
    if reduction == "sum":
        return 1.0
    raise ValueError(f"unknown batch reduction {reduction!r}")


def loss_scale(reduction: Reduction, share: int, batch_size: int, world: int) -> float:
    """The factor on one process's loss before the backward pass: DistributedDataParallel
    averages the processes' gradients, so ``world`` times the share's weight gives the
    gradient of the whole batch's loss. 1.0 for a mean over equal shares."""
    return world * share_weight(reduction, share, batch_size)


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


# --------------------------------------------------------------------------- the process group


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


def _error_types() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    pending: list[type[BaseException]] = [errors.AnoGenError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending += cls.__subclasses__()
    return found


def _error_from_main(payload: tuple[str, str]) -> BaseException:
    """The error rank 0 reported, raised again on another process (same class where it is
    one of anogen's, whose constructors take the message)."""
    name, message = payload
    cls = _error_types().get(name)
    if cls is None:
        return RuntimeError(f"the main process (rank 0) stopped: {name}: {message}")
    # The nearest class whose constructor takes just the message (ProblemListError's does not).
    def takes_message(c: type) -> bool:
        mro = c.__mro__
        return Exception in mro and all("__init__" not in vars(k) for k in mro[:mro.index(Exception)])

    plain = next(c for c in cls.__mro__ if takes_message(c))
    return plain(message)


def process_device(ranks: ProcessRanks, requested_device: str = "auto") -> torch.device:
    """This process's device: its own GPU (``LOCAL_RANK``) for ``auto``/``cuda``, else as asked."""
    from anogen.device import resolve_device

    name = (requested_device or "auto").lower()
    if name in ("auto", "cuda") and not ranks.use_cpu and torch.cuda.is_available():
        device = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
    else:
        device = resolve_device("cpu" if ranks.use_cpu else name)
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"data-parallel training runs on CUDA GPUs or the CPU, not on '{device}'; "
                         "use --device cpu or one process")
    return device


def _backend(device: torch.device) -> str:
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def can_join(env: dict[str, str] | None = None) -> bool:
    """Whether the launcher said where the processes meet (torchrun and accelerate launch do)."""
    env = dict(os.environ) if env is None else env
    return all(env.get(name, "").strip() for name in ("MASTER_ADDR", "MASTER_PORT"))


def join_processes(ranks: ProcessRanks, device: torch.device) -> bool:
    """Start torch.distributed's default process group of the ``ranks.world`` processes
    (every one must call this); True when this call started it, False when it was there."""
    import torch.distributed as dist

    if not dist.is_available():
        raise InputError("this torch has no torch.distributed; train with one process")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        if dist.get_world_size() != ranks.world or dist.get_rank() != ranks.rank:
            raise RuntimeError(f"the process group is rank {dist.get_rank()} of {dist.get_world_size()}, the "
                               f"environment says {ranks.rank} of {ranks.world}")
        return False
    if not can_join():
        raise InputError(f"{ranks.world} processes but no MASTER_ADDR and MASTER_PORT in the environment: start "
                         "them with torchrun or accelerate launch")
    dist.init_process_group(_backend(device), rank=ranks.rank, world_size=ranks.world, timeout=TIMEOUT)
    return True


@dataclass
class DataParallel:
    """This process's place in a data-parallel training run (see the module docstring)."""

    rank: int
    world: int
    device: torch.device
    bn_group: Any  # BatchNorm statistics travel on their own group, apart from the gradients
    owns_group: bool  # this job started the process group and ends it

    @classmethod
    def start(cls, ranks: ProcessRanks, requested_device: str = "auto") -> DataParallel:
        """Join (or start) the process group of the ``ranks.world`` processes."""
        import torch.distributed as dist

        device = process_device(ranks, requested_device)
        owns = join_processes(ranks, device)
        bn_group = dist.new_group(backend=_backend(device), timeout=TIMEOUT)
        return cls(rank=ranks.rank, world=ranks.world, device=device, bn_group=bn_group, owns_group=owns)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            return
        dist.destroy_process_group(self.bn_group)
        if self.owns_group:
            dist.destroy_process_group()

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    # ------------------------------------------------------------------ agreement

    def _sum(self, values: Sequence[float]) -> list[float]:
        import torch.distributed as dist

        packet = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(packet)
        return packet.tolist()

    def sum_losses(self, values: dict[str, float], weight: float) -> dict[str, float]:
        """``values`` weighted and summed over the processes (same keys, same order, everywhere)."""
        return dict(zip(values, self._sum([weight * v for v in values.values()])))

    def any_cancelled(self, cancel: threading.Event | None) -> bool:
        return self._sum([1.0 if cancel is not None and cancel.is_set() else 0.0])[0] > 0

    def check_cancel(self, cancel: threading.Event | None) -> None:
        """Raise :class:`JobCancelled` on every process when any one was cancelled."""
        if self.any_cancelled(cancel):
            raise JobCancelled("cancelled by the user")

    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` on every process (any picklable object; tensors on the CPU)."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def relay(self, work: Callable[[], T]) -> T:
        """Run ``work`` on rank 0 and hand every process its result; when it raises, every
        process raises (rank 0 the error itself, the others the same class and message)."""
        result: Any = None
        failure: BaseException | None = None
        if self.is_main:
            try:
                result = work()
            except Exception as exc:  # noqa: BLE001 - relayed, then raised again below
                failure = exc
        payload = self.broadcast(("error", (type(failure).__name__, str(failure))) if failure is not None
                                 else ("ok", result))
        if failure is not None:
            raise failure
        if payload[0] == "error":
            raise _error_from_main(payload[1])
        return payload[1]


__all__ = ["TIMEOUT", "DataParallel", "SyncedBatchNorm2d", "batch_share", "can_join", "join_processes",
           "loss_scale", "process_device", "share_weight", "sum_over_processes", "sync_batchnorm"]
