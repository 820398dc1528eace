"""What the data-parallel jobs share: several processes of ``torchrun`` or ``accelerate
launch`` train one model together.

``torchrun --nproc_per_node N -m anogen learn|train ...`` or ``accelerate launch --multi_gpu
--num_processes N -m anogen ...`` start N copies of the command with ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` set (:class:`~anogen.runplan.ranks.ProcessRanks`). Stage 1
(:func:`anogen.diffusion.learn.learn_embedding`) and detector training
(:func:`anogen.detection.train.train`, :mod:`anogen.detection.parallel`) then follow the
same rules, with the pieces below:

* **one global batch, split.** Every process draws the step's whole batch (a batch is a
  function of seed and step, drawn from one random stream, so a share cannot be drawn
  alone) and keeps its contiguous share (:func:`batch_share`). The union of the shares
  is, sample for sample, the batch one process trains on; the batch size stays the
  config's.
* **the gradient of the whole batch.** Each process's loss counts its share of the
  batch's (:func:`share_weight`); summing (stage 1) or averaging (DDP,
  :func:`loss_scale`) the gradients over the processes gives every process the gradient
  one process computes on the whole batch.
* **one writer.** Only rank 0 writes checkpoints and outputs; the others wait for its
  verdict (:meth:`ProcessGroup.relay`), so an error there (a full disk) stops every
  process with the same error. A resumed run's state is read by rank 0 and handed to the
  others the same way.
* **stopping together.** A cancel on any process is agreed at the start of each step
  (:meth:`ProcessGroup.check_cancel`), and the loss (and with it a NaN) is summed over
  the processes (:meth:`ProcessGroup.sum_losses`), so all stop at the same step.

The process group is ``gloo`` on the CPU and ``cpu:gloo,cuda:nccl`` on GPUs (the small
agreement messages travel on the CPU). Its timeout (:data:`TIMEOUT`) bounds how long the
other processes wait for rank 0's checkpoint writing or validation. A job of one process
never imports torch.distributed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import torch

from anogen import errors
from anogen.errors import InputError, JobCancelled

if TYPE_CHECKING:
    from anogen.runplan.ranks import ProcessRanks

#: How long a process waits in a collective (rank 0 validating and writing checkpoints).
TIMEOUT = timedelta(hours=1)

Reduction = Literal["mean", "sum"]
T = TypeVar("T")


# --------------------------------------------------------------------------- pure helpers


def batch_share(batch_size: int, rank: int, world: int, *, setting: str = "", allow_empty: bool = False) -> slice:
    """The samples of a batch of ``batch_size`` that process ``rank`` of ``world`` trains on:
    a contiguous block; the first ``batch_size % world`` processes take one sample more.

    A batch smaller than ``world`` is refused (``setting``: how the user sets the batch
    size, for the message), unless ``allow_empty``: then the last processes get no sample
    (an empty slice)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of {world} processes")
    if batch_size < world and not allow_empty:
        raise InputError(f"the batch of {batch_size} samples cannot be split over {world} processes; use a batch "
                         f"size of at least {world}{f' ({setting})' if setting else ''} or fewer processes")
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
    """The factor on one process's loss before the backward pass when the gradients are
    averaged over the processes (DistributedDataParallel): ``world`` times the share's
    weight gives the gradient of the whole batch's loss. 1.0 for a mean over equal shares."""
    return world * share_weight(reduction, share, batch_size)


# --------------------------------------------------------------------------- errors across processes


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


# --------------------------------------------------------------------------- the process group


def process_device(ranks: ProcessRanks, requested_device: str | torch.device = "auto") -> torch.device:
    """This process's device: its own GPU (``LOCAL_RANK``) for ``auto``/``cuda``
    (:meth:`ProcessRanks.device`), else as asked (a ``torch.device`` as it is: where a
    loaded model already is)."""
    from anogen.device import resolve_device

    if isinstance(requested_device, torch.device):
        device = requested_device
    else:  # the rule for picking this process's GPU is ProcessRanks.device's
        device = resolve_device(ranks.device((requested_device or "auto").lower()))
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"data-parallel training runs on CUDA GPUs or the CPU, not on '{device}'; "
                         "use --device cpu or one process")
    return device


def backend_for(device: torch.device) -> str:
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
    dist.init_process_group(backend_for(device), rank=ranks.rank, world_size=ranks.world, timeout=TIMEOUT)
    return True


@dataclass
class ProcessGroup:
    """This process's place among the processes that train one model together (see the
    module docstring): its rank, its device, and how the processes agree."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this job started the process group and ends it

    @classmethod
    def start(cls, ranks: ProcessRanks, requested_device: str | torch.device = "auto") -> Self:
        """Join (or start) the process group of the ``ranks.world`` processes."""
        device = process_device(ranks, requested_device)
        owns = join_processes(ranks, device)
        return cls(rank=ranks.rank, world=ranks.world, device=device, owns_group=owns)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        import torch.distributed as dist

        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ agreement

    def _sum(self, values: Sequence[float]) -> list[float]:
        import torch.distributed as dist

        packet = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(packet)
        return packet.tolist()

    def sum_losses(self, values: dict[str, float], weight: float) -> dict[str, float]:
        """``values`` weighted and summed over the processes (same keys, same order, everywhere)."""
        return dict(zip(values, self._sum([weight * v for v in values.values()])))

    def any_true(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process."""
        return self._sum([1.0 if flag else 0.0])[0] > 0

    def any_cancelled(self, cancel: threading.Event | None) -> bool:
        return self.any_true(cancel is not None and cancel.is_set())

    def check_cancel(self, cancel: threading.Event | None) -> None:
        """Raise :class:`JobCancelled` on every process when any one was cancelled."""
        if self.any_cancelled(cancel):
            raise JobCancelled("cancelled by the user")

    def sum_in_place(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` replaced by its sum over the processes (e.g. a gradient); returns it."""
        import torch.distributed as dist

        dist.all_reduce(tensor)
        return tensor

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


__all__ = ["TIMEOUT", "ProcessGroup", "Reduction", "backend_for", "batch_share", "can_join", "join_processes",
           "loss_scale", "process_device", "share_weight"]
