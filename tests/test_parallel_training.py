"""Data-parallel detector training (anogen.detection.parallel): the pure helpers, BatchNorm
over processes, and real two-process runs under torchrun on the CPU (the ``slow`` tests).

Tolerances of the two-process runs against one process, and why:

* in float64 the gradient two processes apply equals one process's on the whole batch to
  1e-9 (relative to the largest gradient; measured ~5e-12): the split, the weights of the
  shares, BatchNorm over both processes and DDP's averaging are exact up to rounding;
* in float32 the first step's loss agrees to 1e-5 (same weights, same samples). After that
  the runs drift apart by rounding alone, which these tiny detectors amplify (BatchNorm
  over a handful of values; Adam's first steps are nearly lr * sign(gradient)): one
  process run on 1 and on 2 CPU threads differs by up to 0.5 % in loss within 10 steps,
  two processes against one by up to 0.8 % (measured). So losses must agree within 3 %
  relative and validation metrics within 0.02.

The float64 gradient check is what would catch a wrong split, weight or average: in
float32 such a bug hides in the drift, and after a few steps these detectors' anomaly
maps are still nearly flat (their metrics agree to 6 decimals). The end-to-end run checks
the command, the launch, who writes, and that both runs stay together.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from anogen.data.demo import write_demo_dataset
from anogen.detection.checkpoint import read_checkpoint_info
from anogen.detection.parallel import (
    SyncedBatchNorm2d,
    _error_from_main,
    batch_share,
    loss_scale,
    share_weight,
    sync_batchnorm,
)
from anogen.detection.train import train
from anogen.detection.train_config import TrainConfig
from anogen.errors import InputError, JobCancelled, ProblemListError
from anogen.runplan.ranks import ProcessRanks

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("_ddp_script.py")
TINY = {
    "draem": {"image_size": 32, "batch_size": 4, "recon_base_width": 4, "disc_base_width": 4,
              "learning_rate": 1e-3},
    "destseg": {"image_size": 32, "batch_size": 4, "teacher_embedding_size": 8, "teacher_hidden_sizes": [8, 16, 32],
                "student_embedding_size": 8, "student_hidden_sizes": [8, 16, 16, 16], "seg_width": 16,
                "top_k": 10, "allow_random_teacher": True},
}
FIRST_STEP_LOSS_RTOL = 1e-5
LOSS_RTOL = 0.03
METRIC_ATOL = 0.02
METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, categories=("fabric",), size=64, seed=3, train_good=6, test_good=3, test_per_kind=2)
    return root / "fabric"


def config_for(category: Path, out: Path, **changes) -> TrainConfig:
    settings = dict(data_dir=category, detector="draem", out_dir=out, overrides=dict(TINY["draem"]), steps=6,
                    validate_every=3, device="cpu", seed=0, cpu_precision="fp32")
    settings.update(changes)
    return TrainConfig(**settings)


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("batch,world", [(4, 2), (8, 2), (7, 3), (5, 5), (16, 3)])
def test_a_batch_is_split_into_contiguous_shares_that_cover_it(batch, world):
    shares = [batch_share(batch, rank, world) for rank in range(world)]
    assert [i for s in shares for i in range(batch)[s]] == list(range(batch))  # in order, each sample once
    sizes = [s.stop - s.start for s in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    # The shares' weights add up to the whole batch's loss, and DDP's average undoes the world factor.
    assert sum(share_weight("mean", n, batch) for n in sizes) == pytest.approx(1.0)
    assert sum(loss_scale("mean", n, batch, world) for n in sizes) / world == pytest.approx(1.0)
    assert sum(loss_scale("sum", n, batch, world) for n in sizes) / world == pytest.approx(world)
    assert all(share_weight("sum", n, batch) == 1.0 for n in sizes)
    if batch % world == 0:
        assert all(loss_scale("mean", n, batch, world) == 1.0 for n in sizes)  # equal shares: untouched loss


def test_a_batch_smaller_than_the_processes_is_refused():
    with pytest.raises(InputError, match="batch of 2 samples cannot be split over 4 processes"):
        batch_share(2, 0, 4)
    with pytest.raises(ValueError):
        batch_share(4, 2, 2)


def test_rank_zeros_errors_are_raised_again_on_the_other_ranks():
    assert type(_error_from_main(("InputError", "bad folder"))) is InputError
    assert str(_error_from_main(("JobCancelled", "cancelled by the user"))) == "cancelled by the user"
    assert isinstance(_error_from_main(("JobCancelled", "x")), JobCancelled)
    # ProblemListError's constructor takes a list: its nearest plain ancestor carries the message.
    assert type(_error_from_main((ProblemListError.__name__, "a: 2 problems"))) is InputError
    other = _error_from_main(("OSError", "[Errno 28] No space left on device"))
    assert type(other) is RuntimeError and "rank 0" in str(other) and "No space left" in str(other)


def test_batchnorm_over_processes_is_batchnorm_in_one_process(tmp_path):
    """With one process in the group, SyncedBatchNorm2d computes what BatchNorm2d does: the
    output, the gradients, and the running statistics (with and without momentum)."""
    import torch.distributed as dist

    def network(momentum: float | None) -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=momentum),
                             nn.ReLU(inplace=True), nn.Conv2d(8, 2, 3, padding=1), nn.BatchNorm2d(2))

    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1)) * 3 + 1
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for momentum in (0.1, None):
            plain, synced = network(momentum), sync_batchnorm(network(momentum), None, cuda=False)
            assert isinstance(synced[1], SyncedBatchNorm2d) and isinstance(synced[4], SyncedBatchNorm2d)
            assert plain.state_dict().keys() == synced.state_dict().keys()
            for model in (plain, synced):
                for _ in range(2):
                    model.zero_grad()
                    out = model(x)
                    (out.square().mean() + out[:, :1].sin().mean()).backward()
            torch.testing.assert_close(synced(x), plain(x), rtol=1e-5, atol=1e-5)
            for (name, a), (_, b) in zip(plain.named_parameters(), synced.named_parameters()):
                if name not in ("0.bias", "3.bias"):  # biases before a BatchNorm: zero gradient, only noise
                    torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)
            for key, value in plain.state_dict().items():
                torch.testing.assert_close(synced.state_dict()[key], value, rtol=1e-5, atol=1e-6)
            plain.eval(), synced.eval()
            torch.testing.assert_close(synced(x), plain(x), rtol=1e-5, atol=1e-5)
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_keeps_the_parameters_the_optimisers_hold():
    from anogen.detection.registry import build_detector

    detector = build_detector("draem", overrides=TINY["draem"])
    before = dict(detector.named_parameters())
    keys = list(detector.state_dict())
    sync_batchnorm(detector, None, cuda=False)
    assert not any(type(m) is nn.BatchNorm2d for m in detector.modules())
    assert all(before[name] is p for name, p in detector.named_parameters())
    assert list(detector.state_dict()) == keys


def test_each_process_takes_its_share_of_the_batch_one_process_draws(category):
    from anogen.data.imageio import list_images
    from anogen.detection.preprocess import read_resized
    from anogen.detection.registry import config_for as detector_config
    from anogen.detection.registry import detector_kind
    from anogen.detection.synthesis import AnomalySynthesizer, SynthesisConfig
    from anogen.detection.training_data import BatchPrefetcher, MixedBatchSampler

    good = read_resized(list_images(category / "train" / "good"), 32)
    pipeline = detector_kind("draem").pipeline(detector_config("draem", "quick"), "")
    synthesizer = AnomalySynthesizer(SynthesisConfig(size=32, clean_probability=0.5), list(good), seed=0)
    sampler = MixedBatchSampler(good, synthesizer, pipeline=pipeline, seed=0)
    with BatchPrefetcher(sampler, 5, "cpu") as whole:
        expected = whole.get(3, prefetch_next=False)
    parts = []
    for rank in range(2):
        with BatchPrefetcher(sampler, 5, "cpu", share=batch_share(5, rank, 2)) as mine:
            parts.append(mine.get(3, prefetch_next=False))
    assert [len(p.weak) for p in parts] == [3, 2]
    for field in ("image", "clean", "mask", "weak"):
        assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(expected, field))


def test_one_process_never_touches_torch_distributed(category, tmp_path, monkeypatch):
    import torch.distributed as dist

    from anogen.detection import parallel

    def refuse(*args, **kwargs):
        raise AssertionError("one process started data-parallel training")

    monkeypatch.setattr(parallel.DataParallel, "start", refuse)
    monkeypatch.setattr(dist, "init_process_group", refuse)
    result = train(config_for(category, tmp_path / "out", steps=2, validate_every=2), ranks=ProcessRanks())
    assert result.steps == 2 and not dist.is_initialized()
    assert "processes" not in read_checkpoint_info(tmp_path / "out", "last").provenance


def test_the_cli_shares_the_cores_among_the_processes(monkeypatch):
    from anogen.commands.train import _threads_per_process
    from anogen.compute import THREADS_ENV, available_cores

    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _threads_per_process(1) is None
    assert _threads_per_process(4) == max(1, available_cores() // 2)
    monkeypatch.setenv(THREADS_ENV, "3")
    assert _threads_per_process(4) is None  # pinned: the compute policy reads it


# --------------------------------------------------------------------------- real processes


def _torchrun(args: list[str], tmp_path: Path) -> tuple[int, str, float]:
    import subprocess

    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "ACCELERATE_USE_CPU")}
    env.update(CUDA_VISIBLE_DEVICES="", HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--monitor-interval", "0.5", str(SCRIPT), *args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout[-3000:] + done.stderr[-5000:], time.perf_counter() - started


def _history(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def _assert_same_training(ours: list[dict], theirs: list[dict], *, first_step: int = 1) -> None:
    assert [(h["step"], h["phase"]) for h in ours] == [(h["step"], h["phase"]) for h in theirs]
    for mine, one in zip(ours, theirs):
        if mine["phase"] == "validation":
            for key in METRICS:
                assert mine[key] == pytest.approx(one[key], abs=METRIC_ATOL), (mine["step"], key)
        else:
            rtol = FIRST_STEP_LOSS_RTOL if mine["step"] == first_step else LOSS_RTOL
            assert mine["loss"] == pytest.approx(one["loss"], rel=rtol), mine["step"]


@pytest.mark.slow
def test_torchrun_two_processes_train_the_one_process_detector(category, tmp_path):
    """``torchrun --nproc_per_node 2 -m anogen train``: both processes train, rank 0 alone
    writes (rank 1 fails on any write under the output folder), and the history and
    metrics are the one-process run's within the tolerances above."""
    one = train(config_for(category, tmp_path / "one"))
    out = tmp_path / "two"
    overrides = [item for key, value in TINY["draem"].items() for item in ("--set", f"{key}={value}")]
    code, output, seconds = _torchrun(["cli", str(out), "--", "train", "--data", str(category), "--detector", "draem",
                                       "--out", str(out), "--steps", "6", "--validate-every", "3", "--device", "cpu",
                                       "--cpu-precision", "fp32", "--quiet", *overrides], tmp_path)
    print(f"torchrun, 2 processes: {seconds:.1f} s")
    assert code == 0, output
    assert "x 2 processes" in output and output.count("saved to") == 1  # rank 0 alone reports
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in one.out_dir.iterdir())
    info = read_checkpoint_info(out, "last")
    assert info.step == 6 and info.provenance["processes"] == 2
    ours, theirs = _history(out), _history(one.out_dir)
    for mine, single in zip(ours, theirs):
        print(mine["step"], mine["phase"], *(f"{k} {mine[k]:.6f} / {single[k]:.6f}" for k in ("loss", *METRICS)
                                             if k in mine))
    _assert_same_training(ours, theirs)
    for key in METRICS:
        assert info.validation[key] == pytest.approx(one.last_metrics[key], abs=METRIC_ATOL), key


@pytest.mark.slow
def test_two_processes_apply_the_whole_batch_gradient_resume_and_stop_together(category, tmp_path):
    """One torchrun launch of tests/_ddp_script.py checks: the float64 gradients of DRAEM and
    both DeSTSeg phases; resuming with two processes a run one process began; and that a
    NaN or a cancel on rank 1 only, or a checkpoint rank 0 cannot write, stops both."""
    full = train(config_for(category, tmp_path / "full", steps=4, validate_every=2))
    cancel = threading.Event()

    def stop_after_step_three(report) -> None:
        if report.step == 3:
            cancel.set()

    with pytest.raises(JobCancelled):
        train(config_for(category, tmp_path / "resumed", steps=4, validate_every=2), stop_after_step_three, cancel)
    assert read_checkpoint_info(tmp_path / "resumed", "last").step == 2

    work = tmp_path / "work"
    work.mkdir()
    spec = work / "spec.json"
    spec.write_text(json.dumps({"work": str(work), "data": str(category), "tiny": TINY,
                                "resume_out": str(tmp_path / "resumed")}))
    code, output, seconds = _torchrun(["checks", str(spec)], tmp_path)
    print(f"torchrun, 2 processes, checks: {seconds:.1f} s")
    assert code == 0, output
    seen = [json.loads((work / f"rank{rank}.json").read_text()) for rank in range(2)]

    print("float64 gradient, two processes against one:", seen[0]["gradients"])
    assert seen[0]["gradients"].keys() == {"draem/joint", "destseg/student", "destseg/head"}
    assert all(error < 1e-9 for error in seen[0]["gradients"].values()), seen[0]["gradients"]

    assert [s["resume"] for s in seen] == ["finished at step 4"] * 2
    resumed = _history(tmp_path / "resumed")
    _assert_same_training(resumed, _history(full.out_dir), first_step=3)
    assert read_checkpoint_info(tmp_path / "resumed", "last").provenance["processes"] == 2

    for rank in range(2):
        assert seen[rank]["nan"].startswith("TrainingDiverged: the joint loss became nan at step 2 of 4"), seen[rank]
        assert seen[rank]["cancel"] == "JobCancelled: cancelled by the user", seen[rank]
    assert read_checkpoint_info(work / "nan", "last").step == 1
    assert read_checkpoint_info(work / "cancel", "last").step == 2
    assert seen[0]["save_fails"] == "OSError: [Errno 28] No space left on device"
    assert seen[1]["save_fails"].startswith("RuntimeError: the main process (rank 0) stopped: OSError")
    assert not (work / "unused").exists()
    assert np.isfinite([h["loss"] for h in resumed if "loss" in h]).all()


def test_anogen_run_trains_together_only_where_the_processes_can_meet_and_on_the_main_decision(tmp_path):
    """anogen run under a launcher: the main process's decision on each train step, named
    with this launch's token, is what the other processes wait for (no collective while
    the main process works alone); a killed launch's decisions are never read."""
    from anogen.runplan.ranks import SharedTraining
    from anogen.runplan.steps import Step

    launched = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert SharedTraining.possible(ProcessRanks(0, 2), launched)
    assert not SharedTraining.possible(ProcessRanks(0, 1), launched)
    assert not SharedTraining.possible(ProcessRanks(1, 2), {})  # e.g. an MPI launch without them: main trains

    def launch(token: str, rank: int) -> SharedTraining:
        shared = object.__new__(SharedTraining)  # without joining a process group
        shared.ranks, shared.token, shared.owns_group = ProcessRanks(rank, 2), token, False
        return shared

    step = Step("train", "fabric", "generated", tmp_path / "steps" / "train" / "fabric" / "generated", 0)
    old_main = launch("old", 0)
    old_main.decide(step, train=True)  # a killed launch's decision
    main, other = launch("new", 0), launch("new", 1)
    main.decide(step, train=False)  # waiting for another shard's kinds
    assert not other.decision(step)
    assert [p.name for p in step.folder.parent.iterdir()] == [".generated.train-new.json"]
    main.decide(step, train=True)
    assert other.decision(step)
    main.finished(step)
    assert not any(step.folder.parent.iterdir())
    (step.folder / "done.json").parent.mkdir(parents=True)
    (step.folder / "done.json").write_text("{}")
    assert not other.decision(step)  # published before this launch: nothing to join
