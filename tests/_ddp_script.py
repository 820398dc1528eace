"""Run by tests/test_parallel_training.py under ``torchrun --nproc_per_node 2`` (each rank
runs this file).

``python _ddp_script.py cli OUT -- ARGS..``: ``anogen ARGS..``, with an audit hook on every
rank but 0 that refuses (and so fails the run on) any write, rename, removal or new folder
under OUT: only rank 0 may touch the output folder.

``python _ddp_script.py checks SPEC.json``: the library-level checks, each rank writing what
it saw to ``SPEC["work"]/rank<r>.json``:

* ``gradients``: in float64, the gradient the two processes apply (each on its half of a
  batch, BatchNorm over both, DDP averaging) against one process's on the whole batch, for
  every phase of DRAEM and DeSTSeg (largest relative difference);
* ``resume``: ``train(resume=True)`` of a run one process started (SPEC["resume_out"]);
* ``nan``: a NaN loss on rank 1 only, at step 2: every rank must stop at step 2;
* ``cancel``: a cancel on rank 1 only, after step 2: every rank must stop;
* ``save_fails``: rank 0 cannot write its checkpoint: every rank must stop, rank 1 with
  rank 0's error;
* ``learn``: the same for stage 1 (``learn_embedding`` with ``ranks``): ``resume`` of a run
  one process checkpointed (SPEC["learn"]["checkpoint"]), ``nan``, ``cancel`` and
  ``save_fails`` as above, each rank reporting its outcome (and the resumed vector); and
  ``one_sample``, a batch of 1, which leaves rank 1 without a sample.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from unittest import mock


def guarded_cli(out: Path, argv: list[str]) -> int:
    import os

    from anogen.cli import main

    if int(os.environ.get("RANK", "0")) != 0:
        root = str(out.resolve())
        write_events = {"os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree",
                        "os.truncate", "os.link", "os.symlink", "os.chmod"}

        def inside(path) -> bool:
            try:
                return os.path.abspath(os.fsdecode(path)).startswith(root)
            except TypeError:
                return False

        def refuse_writes(event: str, args: tuple) -> None:
            if event == "open" and isinstance(args[1], str) and any(m in args[1] for m in "wax+") and \
                    inside(args[0]):
                raise PermissionError(f"rank {os.environ['RANK']} wrote {args[0]}")
            if event == "open" and isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) \
                    and args[0] is not None and inside(args[0]):
                raise PermissionError(f"rank {os.environ['RANK']} opened {args[0]} for writing")
            if event in write_events and args and (inside(args[0]) or (len(args) > 1 and inside(args[1]))):
                raise PermissionError(f"rank {os.environ['RANK']}: {event} {args[:2]}")

        sys.addaudithook(refuse_writes)
    return main(argv)


# --------------------------------------------------------------------------- checks


def gradient_errors(parallel, tiny: dict) -> dict[str, float]:
    import torch

    from anogen.detection.base import TrainBatch
    from anogen.detection.registry import build_detector
    from anogen.parallel import batch_share, loss_scale

    errors = {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        generator = torch.Generator().manual_seed(1)
        size = 32
        image = torch.rand(4, 3, size, size, generator=generator)
        clean = torch.rand(4, 3, size, size, generator=generator)
        mask = (torch.rand(4, 1, size, size, generator=generator) > 0.8).double()
        weak = torch.tensor([True, False, True, False])
        for kind in ("draem", "destseg"):
            overrides = {**tiny[kind], "batch_size": 4}
            for phase_index in range(len(build_detector(kind, overrides=overrides).training_phases(10))):
                torch.manual_seed(0)
                one = build_detector(kind, overrides=overrides).train()
                phase = one.training_phases(10)[phase_index].name
                loss, _ = one.training_loss(TrainBatch(image, clean, mask, weak), phase, tau=0.9)
                loss.backward()
                torch.manual_seed(0)
                shared = build_detector(kind, overrides=overrides).train()
                phases = shared.training_phases(10)
                model = parallel.wrap(shared, [[p for g in ph.optimizer.param_groups for p in g["params"]]
                                               for ph in phases])
                share = batch_share(4, parallel.rank, parallel.world)
                loss, _ = model(image[share], clean[share], mask[share], weak[share], phase=phase, tau=0.9,
                                weak_all=False)
                (loss * loss_scale(shared.batch_reduction(phase), share.stop - share.start, 4,
                                   parallel.world)).backward()
                want = {n: p.grad for n, p in one.named_parameters() if p.grad is not None}
                got = {n: p.grad for n, p in shared.named_parameters() if p.grad is not None}
                assert want.keys() == got.keys(), (kind, phase, sorted(want.keys() ^ got.keys())[:5])
                scale = max(float(g.abs().max()) for g in want.values())
                errors[f"{kind}/{phase}"] = max(float((got[n] - want[n]).abs().max()) for n in want) / scale
    finally:
        torch.set_default_dtype(previous)
    return errors


def outcome(run, steps_field: str = "steps") -> str:
    """What one rank saw: the exception, or the step the run finished at."""
    try:
        result = run()
    except Exception as exc:  # noqa: BLE001 - what each rank saw is the result
        return f"{type(exc).__name__}: {exc}"
    return f"finished at step {getattr(result, steps_field)}"


def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def cancel_on_rank_one(rank: int) -> tuple:
    """A progress callback that cancels (only) rank 1 at step 2, and the event it sets."""
    cancel = threading.Event()

    def report(progress) -> None:
        if rank == 1 and progress.step == 2:
            cancel.set()

    return report, cancel


def learn_checks(spec: dict, ranks) -> dict:
    from dataclasses import replace

    from anogen.diffusion import learn as learn_module
    from anogen.diffusion.config import LearnConfig
    from anogen.diffusion.learn import learn_embedding
    from anogen.diffusion.models import load_model

    settings = spec["learn"]
    work = Path(spec["work"])
    model = load_model(settings["model"], device="cpu")  # learn_embedding leaves it as it was but the token's row
    config = LearnConfig(images=[Path(p) for p in settings["images"]], masks=[Path(p) for p in settings["masks"]],
                         token="<hole>", steps=4, batch_size=4, seed=0, checkpoint_every=1,
                         checkpoint_path=work / "learn.checkpoint.safetensors")
    seen: dict = {}

    checkpoint = Path(settings["checkpoint"])
    resumed: dict = {}

    def resume():
        result = learn_embedding(model, replace(config, resume_from=checkpoint, checkpoint_path=checkpoint,
                                                checkpoint_every=2), ranks=ranks)
        resumed.update(vector=result.vector.tolist(), loss_curve=result.loss_curve,
                       processes=result.metadata.get("processes"))
        return result

    seen["resume"] = outcome(resume, "steps_done")
    seen["resumed"] = resumed
    # A batch of 1 over 2 processes: rank 1 has no sample and only keeps in step.
    alone = learn_embedding(model, replace(config, batch_size=1, steps=2, checkpoint_path=None), ranks=ranks)
    seen["one_sample"] = {"vector": alone.vector.tolist(), "loss_curve": alone.loss_curve}

    original_loss = learn_module.masked_noise_loss
    calls = {"n": 0}

    def nan_on_rank_one(*args, **kwargs):
        calls["n"] += 1
        loss = original_loss(*args, **kwargs)
        return loss * float("nan") if ranks.rank == 1 and calls["n"] == 2 else loss

    with mock.patch.object(learn_module, "masked_noise_loss", nan_on_rank_one):
        seen["nan"] = outcome(lambda: learn_embedding(model, replace(
            config, checkpoint_path=work / "learn-nan.checkpoint.safetensors"), ranks=ranks), "steps_done")

    report, cancel = cancel_on_rank_one(ranks.rank)
    seen["cancel"] = outcome(lambda: learn_embedding(model, replace(
        config, checkpoint_path=work / "learn-cancel.checkpoint.safetensors"), report, cancel, ranks=ranks),
        "steps_done")

    with mock.patch.object(learn_module, "_save_checkpoint", disk_full):
        seen["save_fails"] = outcome(lambda: learn_embedding(model, replace(
            config, checkpoint_path=work / "learn-full.checkpoint.safetensors"), ranks=ranks), "steps_done")
    return seen


def checks(spec_path: Path) -> None:
    from dataclasses import replace

    from anogen.detection import train as train_module
    from anogen.detection.draem.model import DraemDetector
    from anogen.detection.parallel import DataParallel
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig
    from anogen.runplan.ranks import ProcessRanks

    spec = json.loads(spec_path.read_text())
    work = Path(spec["work"])
    ranks = ProcessRanks.from_environment()
    config = TrainConfig(data_dir=Path(spec["data"]), detector="draem", out_dir=work / "unused",
                         overrides=spec["tiny"]["draem"], steps=4, validate_every=1, device="cpu", seed=0,
                         cpu_precision="fp32")
    seen: dict = {}
    with DataParallel.start(ranks, "cpu") as parallel:  # the training runs below join this group
        seen["gradients"] = gradient_errors(parallel, spec["tiny"])

        seen["resume"] = outcome(lambda: train(replace(config, out_dir=Path(spec["resume_out"]), resume=True,
                                                       validate_every=2), ranks=ranks))

        original = DraemDetector.training_loss
        calls = {"n": 0}

        def nan_on_rank_one(self, batch, phase, **kwargs):
            calls["n"] += 1
            loss, parts = original(self, batch, phase, **kwargs)
            return (loss * float("nan"), parts) if ranks.rank == 1 and calls["n"] == 2 else (loss, parts)

        with mock.patch.object(DraemDetector, "training_loss", nan_on_rank_one):
            seen["nan"] = outcome(lambda: train(replace(config, out_dir=work / "nan"), ranks=ranks))

        report, cancel = cancel_on_rank_one(ranks.rank)
        seen["cancel"] = outcome(lambda: train(replace(config, out_dir=work / "cancel"), report, cancel,
                                               ranks=ranks))

        with mock.patch.object(train_module, "save_checkpoint", disk_full):
            seen["save_fails"] = outcome(lambda: train(replace(config, out_dir=work / "full"), ranks=ranks))

        seen["learn"] = learn_checks(spec, ranks)  # stage 1 joins the same group
    (work / f"rank{ranks.rank}.json").write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "cli":
        separator = sys.argv.index("--")
        sys.exit(guarded_cli(Path(sys.argv[2]), sys.argv[separator + 1:]))
    checks(Path(sys.argv[2]))
