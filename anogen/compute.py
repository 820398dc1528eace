"""How a job uses the machine: CPU threads and bf16 autocast, decided in one place.

The CLI, the app's engine and the demo all call :func:`resolve_policy` and then
:func:`apply_policy`, so one machine runs every stage the same way and the choice is
printed and logged.

* Threads: every core this process may use, unless the user says otherwise
  (``--threads`` or the app's setting) or ``ANOGEN_THREADS`` pins it (tests and CI).
  An idle laptop gains from all its cores; a machine shared with other heavy jobs
  may do better with fewer (measured in docs/benchmarks.md).
* Waiting threads sleep: torch's OpenMP threads otherwise spin between parallel
  regions, and on a machine where any other process is busy the spinning threads take
  the core from the one doing the work (2 threads on 2 cores, spinning vs sleeping:
  1.4-2.7x slower beside a one-thread job, 8-10x beside another 2-thread one;
  docs/benchmarks.md). The entry
  points call :func:`prefer_sleeping_openmp_threads` before torch loads.
* Precision on the CPU: bf16 autocast only where the CPU has native bf16 matrix
  units (AMX or AVX-512-bf16). Without them PyTorch falls back to slow kernels: on
  an AVX2-only AMD EPYC a bf16 convolution was 6-14x slower than fp32
  (docs/benchmarks.md). GPUs keep the dtype :func:`anogen.device.resolve_dtype` picks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anogen.errors import InputError

if TYPE_CHECKING:
    import argparse

    import torch

log = logging.getLogger(__name__)

THREADS_ENV = "ANOGEN_THREADS"
CPU_PRECISION_CHOICES = ("auto", "fp32", "bf16")
THREADS_AUTOMATIC = 0  # a stored threads setting (the app's) meaning "decide for me": every core, or ANOGEN_THREADS
OPENMP_WAIT_ENV = "OMP_WAIT_POLICY"


def prefer_sleeping_openmp_threads() -> None:
    """Make idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a
    policy. The OpenMP runtime reads it once, when torch loads, so the CLI and the app call
    this first; worker processes inherit it."""
    if OPENMP_WAIT_ENV not in os.environ and "torch" in sys.modules:
        log.debug("torch already loaded: OpenMP threads keep their wait policy in this process")
    os.environ.setdefault(OPENMP_WAIT_ENV, "PASSIVE")


def openmp_wait_policy() -> str:
    """The OpenMP wait policy in force, for the logs: "passive", "active" or "default"."""
    return os.environ.get(OPENMP_WAIT_ENV, "default").strip().lower() or "default"


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_process(world: int) -> int | None:
    """The default CPU threads of each of ``world`` processes of a launch (torchrun,
    accelerate launch) on one machine: the cores shared out (torchrun sets
    LOCAL_WORLD_SIZE), unless ANOGEN_THREADS pins them; None for one process."""
    if world <= 1 or os.environ.get(THREADS_ENV, "").strip():
        return None
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return max(1, available_cores() // (int(local) if local.isdigit() and int(local) > 0 else world))


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels here (AMX or AVX-512-bf16)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_threads() -> int:
    pinned = os.environ.get(THREADS_ENV, "").strip()
    if pinned:
        try:
            value = int(pinned)
        except ValueError:
            raise InputError(f"{THREADS_ENV}={pinned!r} is not a whole number of threads") from None
        if value < 1:
            raise InputError(f"{THREADS_ENV}={pinned!r}: use 1 or more threads")
        return value
    return available_cores()


@dataclass(frozen=True)
class ComputePolicy:
    device_type: str  # "cpu", "cuda" or "mps"
    threads: int  # torch CPU threads
    bf16_autocast: bool  # CPU only: autocast matmuls and convolutions to bf16
    reason: str  # why this precision, in a few words

    def describe(self) -> str:
        precision = "bf16 autocast" if self.bf16_autocast else "fp32"
        if self.device_type != "cpu":
            return f"{self.device_type}, {self.threads} CPU threads for data"
        return f"cpu, {self.threads} thread{'s' if self.threads != 1 else ''}, {precision} ({self.reason})"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The context a training or inference step runs in."""
        if not self.bf16_autocast:
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

    def to_json(self) -> dict[str, object]:
        return {"device": self.device_type, "threads": self.threads,
                "precision": "bf16 autocast" if self.bf16_autocast else "fp32", "reason": self.reason,
                "openmp_wait": openmp_wait_policy()}


def resolve_policy(device: torch.device | str, threads: int | None = None, precision: str = "auto") -> ComputePolicy:
    """The policy for a job on ``device``; ``threads=None`` and ``precision="auto"`` decide for the user."""
    device_type = device if isinstance(device, str) else device.type
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be 1 or more, got {threads}")
    chosen_threads = threads if threads is not None else default_threads()
    precision = (precision or "auto").lower()
    if precision not in CPU_PRECISION_CHOICES:
        raise InputError(f"unknown CPU precision '{precision}'; choose one of {', '.join(CPU_PRECISION_CHOICES)}")
    if device_type != "cpu":
        return ComputePolicy(device_type, chosen_threads, False, "the GPU's own dtype")
    if precision == "fp32":
        return ComputePolicy("cpu", chosen_threads, False, "asked for")
    fast = cpu_has_fast_bf16()
    if precision == "bf16":
        reason = "asked for" if fast else "asked for; this CPU has no native bf16, expect it to be slower"
        return ComputePolicy("cpu", chosen_threads, True, reason)
    if fast:
        return ComputePolicy("cpu", chosen_threads, True, "this CPU has native bf16 (AMX/AVX-512-bf16)")
    return ComputePolicy("cpu", chosen_threads, False, "no native bf16 on this CPU")


def thread_choices(cores: int | None = None) -> tuple[int, ...]:
    """The thread counts a user picks from: automatic first, then 1, 2, 4, ... and every core."""
    cores = max(1, cores or available_cores())
    counts, count = [], 1
    while count < cores:
        counts.append(count)
        count *= 2
    return (THREADS_AUTOMATIC, *counts, cores)


def threads_from_setting(value: object) -> int | None:
    """A stored threads setting as :func:`resolve_policy`'s ``threads``: automatic (or junk) is None."""
    try:
        count = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return count if count >= 1 else None


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` for a command; its help states the default this module picks."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"torch CPU threads (default: every core, {available_cores()} here; "
                             f"{THREADS_ENV} pins it)")


def apply_policy(policy: ComputePolicy) -> ComputePolicy:
    """Set torch's thread count and log the policy; returns it for chaining."""
    import torch

    torch.set_num_threads(policy.threads)
    log.info("compute: %s; OpenMP wait policy %s", policy.describe(), openmp_wait_policy())
    return policy


def apply_command_policy(args: argparse.Namespace, device: torch.device | str = "auto", *,
                         quiet: bool | None = None) -> ComputePolicy:
    """What a CLI command calls before its work: the policy from ``--threads`` and the device it
    runs on, applied, logged, and printed once on stderr unless ``--quiet``."""
    from anogen.device import resolve_device

    if isinstance(device, str):
        device = resolve_device(device)
    policy = apply_policy(resolve_policy(device, getattr(args, "threads", None),
                                         getattr(args, "cpu_precision", "auto")))
    if not (getattr(args, "quiet", False) if quiet is None else quiet):
        print(f"anogen: compute: {policy.describe()}", file=sys.stderr, flush=True)
    return policy
