"""Stage 1, stage 2 and detector training across the processes of ``accelerate launch``.

``accelerate launch --num_processes N -m anogen run PLAN.toml`` starts N copies of the
run, with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment (Accelerate
starts them through torch's elastic launcher, as ``torchrun --nproc_per_node N`` does).
On the CPU, ``accelerate launch --cpu --num_processes N`` starts *one* process unless it
is given an MPI host file (``--mpirun_hostfile``; the ranks then come from MPI's
variables, read here too); :func:`unshared_launch_warning` says so. Several CPU
processes without MPI: ``accelerate launch --multi_gpu --num_processes N`` on a machine
without GPUs, or ``torchrun``. Each process generates its share of a defect
kind's good images into its own part folder; the main process then puts the parts
together in the one-process order. Every sample's random numbers come from its own
seed (:func:`anogen.diffusion.sampler.sample_seed`: base seed, image name, index) and
its boxes from the shared boxes step, so the set is the same, byte for byte, whatever
the number of processes.

The processes meet through the shared output folder (a part is complete when its done
marker is there), not through a collective: a barrier would time out while the main
process spends an hour on boxes or an evaluation. Stage 1 and detector training are the
exception (:class:`SharedTraining`): all processes learn each embedding and train each
detector together with torch.distributed (:mod:`anogen.parallel`), and they enter its
collectives only once the main process has written, beside the step, that it is entering
them too.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from anogen.atomic import atomic_write_json, staged_directory
from anogen.jobs import ProgressFn, check_cancel
from anogen.runplan.steps import DONE_NAME, Step

POLL_SECONDS = 1.0
# Where a process finds its rank: torch's launchers (torchrun, accelerate launch), then
# MPI's (Open MPI, MPICH/Intel MPI, MVAPICH), the variables Accelerate itself reads.
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
WORLD_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK")


def _first_int(env: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if env.get(name, "").strip():
            return int(env[name])
    return None


@dataclass(frozen=True)
class ProcessRanks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    use_cpu: bool = False  # accelerate launch --cpu

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ProcessRanks:
        env = os.environ if env is None else env
        world = _first_int(env, WORLD_VARIABLES) or 1
        rank = _first_int(env, RANK_VARIABLES) or 0
        local_rank = _first_int(env, LOCAL_RANK_VARIABLES)
        return cls(rank=rank, world=max(1, world), local_rank=rank if local_rank is None else local_rank,
                   use_cpu=env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """``auto`` and ``cuda`` pick this process's own GPU when several processes share a
        machine (the one rule; :func:`anogen.parallel.process_device` resolves it)."""
        if self.use_cpu:
            return "cpu"
        if requested not in ("auto", "cuda") or self.world == 1:
            return requested
        import torch

        if torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested

    def wait_until(self, condition: Callable[[], bool], cancel: threading.Event | None = None) -> None:
        while not condition():
            check_cancel(cancel)
            time.sleep(POLL_SECONDS)


def unshared_launch_warning(env: Mapping[str, str] | None = None) -> str | None:
    """A warning when ``accelerate launch --cpu --num_processes N`` (N > 1) started one process.

    Without an MPI host file Accelerate runs a ``--cpu`` launch as one plain process; it
    still sets ``MASTER_PORT`` (it does only when asked for several processes), which is
    how this is told apart from a launch of one process.
    """
    env = os.environ if env is None else env
    ranks = ProcessRanks.from_environment(env)
    if ranks.world > 1 or not ranks.use_cpu or not env.get("MASTER_PORT"):
        return None
    return ("accelerate launch --cpu started one process, not several (Accelerate starts several CPU processes "
            "only through MPI, --mpirun_hostfile): this process generates every image. For several CPU processes "
            "use 'torchrun --nproc_per_node N -m anogen run PLAN.toml', or 'accelerate launch --multi_gpu "
            "--num_processes N' on a machine without GPUs")


class SharedTraining:
    """The processes of one launch learn each embedding (stage 1,
    :mod:`anogen.diffusion.learn`) and train each detector (:mod:`anogen.detection.parallel`)
    of the plan together.

    Collectives need every process at the same point, but only the main process knows
    when a learn or train step starts (it proposes boxes, puts generated sets together
    and evaluates alone, for minutes to hours) and whether it starts at all (a
    ``+ generated`` detector waits for other shards' kinds). So the main process writes
    its decision beside the step, named with this launch's token (:meth:`decide`), right
    before it learns or trains, or when it skips; the others poll for it
    (:meth:`decision`), as they poll for a kind's boxes, and enter the step's
    collectives only when the main process is entering them too.
    The token, broadcast when the processes meet at the start of the run (all start
    together), keeps a killed launch's decisions from being read.
    """

    def __init__(self, ranks: ProcessRanks, device: str) -> None:
        import uuid

        from anogen.parallel import join_processes, process_device

        self.ranks = ranks
        self.owns_group = join_processes(ranks, process_device(ranks, device))
        import torch.distributed as dist

        token = [uuid.uuid4().hex[:12] if ranks.is_main else None]
        dist.broadcast_object_list(token, src=0)
        self.token = str(token[0])

    @staticmethod
    def possible(ranks: ProcessRanks, env: Mapping[str, str] | None = None) -> bool:
        """Several processes that can meet (torchrun, accelerate launch; not an MPI launch
        without MASTER_ADDR/MASTER_PORT, whose training stays on the main process)."""
        from anogen.parallel import can_join

        return ranks.world > 1 and can_join(dict(os.environ if env is None else env))

    def _marker(self, step: Step, token: str | None = None) -> Path:
        return step.folder.parent / f".{step.folder.name}.train-{token or self.token}.json"

    def decide(self, step: Step, train: bool) -> None:
        """Main process: tell the others whether ``step`` trains now (True) or waits."""
        for stale in step.folder.parent.glob(f".{step.folder.name}.train-*.json"):
            if stale != self._marker(step):
                stale.unlink(missing_ok=True)  # a killed launch's
        step.folder.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self._marker(step), {"step": step.label, "train": train})

    def decision(self, step: Step, cancel: threading.Event | None = None) -> bool:
        """Other processes: wait for the main process's decision on ``step``."""
        marker = self._marker(step)
        self.ranks.wait_until(lambda: marker.is_file() or step.is_done(), cancel)
        if not marker.is_file():
            return False
        return bool(json.loads(marker.read_text(encoding="utf-8")).get("train"))

    def finished(self, step: Step) -> None:
        """Main process: the step is published, the others have read its decision."""
        self._marker(step).unlink(missing_ok=True)

    def close(self) -> None:
        import torch.distributed as dist

        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def parts_folder(step: Step) -> Path:
    return step.folder.parent / f".{step.folder.name}.parts"


def _part_folder(step: Step, rank: int, world: int) -> Path:
    return parts_folder(step) / f"rank{rank}-of-{world}"


def share_of(items: list[Path], rank: int, world: int) -> list[Path]:
    """The good images process ``rank`` generates: every ``world``-th, from its rank on."""
    return items[rank::world]


def _write_part(job, step: Step, ranks: ProcessRanks, progress: ProgressFn | None,
                cancel: threading.Event | None) -> None:
    from anogen.diffusion.sampler import generate_set

    part = _part_folder(step, ranks.rank, ranks.world)
    if (part / DONE_NAME).is_file():
        return  # written before this process was restarted: the same samples again
    normals = share_of(list(job.normals), ranks.rank, ranks.world)
    with staged_directory(part) as staging:
        count = 0
        if normals:
            count = len(generate_set(replace(job, normals=normals, out=staging / "set"), progress, cancel).samples)
        atomic_write_json(staging / DONE_NAME, {"rank": ranks.rank, "world": ranks.world, "samples": count})


def _assemble(job, step: Step, world: int) -> int:
    """Write the parts as one set, in the order one process writes: good image by good
    image (the normals' order), and within an image by sample index."""
    from anogen.data.generated import GeneratedSetWriter, read_generated_set

    position = {str(path): index for index, path in enumerate(job.normals)}
    samples = []
    for rank in range(world):
        part_set = _part_folder(step, rank, world) / "set"
        if part_set.is_dir():
            samples += read_generated_set(part_set)
    samples.sort(key=lambda s: position.get(s.source, len(position)))  # stable: keeps k order per image
    with GeneratedSetWriter(job.out) as writer:
        for sample in samples:
            writer.add_copy(sample)
    return len(samples)


def generate_across_ranks(job, step: Step, ranks: ProcessRanks, progress: ProgressFn | None = None,
                          cancel: threading.Event | None = None) -> int:
    """Generate ``job`` (a :class:`~anogen.diffusion.sampler.GenerateSetConfig` whose
    ``normals`` is a list) with every process; on the main process, write the whole set
    to ``job.out`` and return its sample count (other processes return their part's)."""
    from anogen.diffusion.sampler import generate_set

    if ranks.world == 1:
        return len(generate_set(job, progress, cancel).samples)
    _write_part(job, step, ranks, progress, cancel)
    if not ranks.is_main:
        return 0
    parts = [_part_folder(step, rank, ranks.world) for rank in range(ranks.world)]
    ranks.wait_until(lambda: all((p / DONE_NAME).is_file() for p in parts), cancel)
    check_cancel(cancel)
    count = _assemble(job, step, ranks.world)
    return count


def remove_parts(step: Step) -> None:
    """Drop the per-process parts once the step is published."""
    shutil.rmtree(parts_folder(step), ignore_errors=True)
