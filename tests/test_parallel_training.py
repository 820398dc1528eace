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
from safetensors import safe_open
from torch import nn

from anogen.data.demo import write_demo_dataset
from anogen.detection.checkpoint import read_checkpoint_info
from anogen.detection.parallel import SyncedBatchNorm2d, sync_batchnorm
from anogen.detection.train import train
from anogen.detection.train_config import TrainConfig
from anogen.errors import InputError, JobCancelled, ProblemListError
from anogen.parallel import _error_from_main, batch_share, loss_scale, share_weight
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
LEARN_STEPS = 6
LEARN_FIRST_LOSS_RTOL = 1e-6
LEARN_LOSS_RTOL = 1e-5
LEARN_VECTOR_ATOL = 1e-5


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
    from anogen.compute import THREADS_ENV, available_cores, threads_per_process

    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads_per_process(1) is None
    assert threads_per_process(4) == max(1, available_cores() // 2)
    monkeypatch.setenv(THREADS_ENV, "3")
    assert threads_per_process(4) is None  # pinned: the compute policy reads it


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
def test_two_processes_apply_the_whole_batch_gradient_resume_and_stop_together(category, tiny_model, tmp_path):
    """One torchrun launch of tests/_ddp_script.py checks: the float64 gradients of DRAEM and
    both DeSTSeg phases; resuming with two processes a run one process began; and that a
    NaN or a cancel on rank 1 only, or a checkpoint rank 0 cannot write, stops both; the
    same for stage 1 (learn_embedding), in the same launch."""
    from dataclasses import replace

    from anogen.diffusion.learn import learn_embedding
    from anogen.diffusion.models import load_model

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
    # Stage 1: a run of 4 steps, and one stopped at step 2 whose checkpoint two processes resume.
    learn_one = learn_config(category)
    learned = learn_embedding(load_model(tiny_model, device="cpu"), learn_one)
    learn_checkpoint = tmp_path / "learn.checkpoint.safetensors"
    learn_embedding(load_model(tiny_model, device="cpu"), replace(learn_one, steps=2, checkpoint_path=learn_checkpoint))
    one_sample = learn_embedding(load_model(tiny_model, device="cpu"), replace(learn_one, steps=2, batch_size=1))
    spec.write_text(json.dumps({"work": str(work), "data": str(category), "tiny": TINY,
                                "resume_out": str(tmp_path / "resumed"),
                                "learn": {"model": str(tiny_model), "images": list(map(str, learn_one.images)),
                                          "masks": list(map(str, learn_one.masks)),
                                          "checkpoint": str(learn_checkpoint)}}))
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

    learn = [s["learn"] for s in seen]
    assert [s["resume"] for s in learn] == ["finished at step 4"] * 2
    assert learn[0]["resumed"] == learn[1]["resumed"]  # both processes applied the same updates
    resumed_vector = torch.tensor(learn[0]["resumed"]["vector"])
    print("stage 1 resumed by 2 processes, vector difference:", float((resumed_vector - learned.vector).abs().max()))
    torch.testing.assert_close(resumed_vector, learned.vector, rtol=0, atol=LEARN_VECTOR_ATOL)
    assert learn[0]["resumed"]["loss_curve"][:2] == learned.loss_curve[:2]  # the first two: the checkpoint's
    assert learn[0]["resumed"]["loss_curve"] == pytest.approx(learned.loss_curve, rel=LEARN_LOSS_RTOL)
    assert learn[0]["resumed"]["processes"] == 2
    with safe_open(str(learn_checkpoint), framework="pt") as handle:
        assert handle.metadata()["step"] == "4"  # rank 0 wrote the resumed run's checkpoints
    for rank in range(2):
        assert learn[rank]["nan"].startswith("TrainingDiverged: the loss became nan at step 2; the last good "
                                             "checkpoint"), learn[rank]
        assert learn[rank]["cancel"] == "JobCancelled: cancelled by the user", learn[rank]
    with safe_open(str(work / "learn-cancel.checkpoint.safetensors"), framework="pt") as handle:
        assert handle.metadata()["step"] == "2"
    assert learn[0]["save_fails"] == "OSError: [Errno 28] No space left on device"
    assert learn[1]["save_fails"].startswith("RuntimeError: the main process (rank 0) stopped: OSError")
    assert not (work / "learn-full.checkpoint.safetensors").exists()
    assert learn[0]["one_sample"] == learn[1]["one_sample"]
    assert learn[0]["one_sample"]["loss_curve"] == pytest.approx(one_sample.loss_curve, rel=LEARN_LOSS_RTOL)
    torch.testing.assert_close(torch.tensor(learn[0]["one_sample"]["vector"]), one_sample.vector, rtol=0,
                               atol=LEARN_VECTOR_ATOL)


def test_anogen_run_trains_together_only_where_the_processes_can_meet_and_on_the_main_decision(tmp_path):
    """anogen run under a launcher: the main process's decision on each learn and train step, named
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
    # Stage 1 steps are learned together the same way, their decision beside the learn step.
    learn = Step("learn", "fabric", "hole", tmp_path / "steps" / "learn" / "fabric" / "hole", 0)
    main.decide(learn, train=True)
    assert [p.name for p in learn.folder.parent.iterdir()] == [".hole.train-new.json"]
    assert other.decision(learn)


# --------------------------------------------------------------------------- stage 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from anogen.diffusion.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "sd1", "sd1", resolution=32)


def learn_config(category: Path, **changes):
    from anogen.diffusion.config import LearnConfig

    settings = dict(images=sorted((category / "test" / "hole").glob("*.png")),
                    masks=sorted((category / "ground_truth" / "hole").glob("*.png")), token="<hole>", steps=4,
                    batch_size=4, seed=0)
    settings.update(changes)
    return LearnConfig(**settings)


def test_the_shares_masked_losses_add_up_to_the_whole_batchs():
    from anogen.diffusion.learn import masked_noise_loss

    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(5, 4, 6, 6, generator=generator), torch.randn(5, 4, 6, 6, generator=generator)
    masks = (torch.rand(5, 1, 6, 6, generator=generator) > 0.6).float()
    for area_normalised in (False, True):
        whole = masked_noise_loss(prediction, target, masks, area_normalised)
        parts = [masked_noise_loss(prediction[s], target[s], masks[s], area_normalised, whole_batch_masks=masks)
                 for s in (batch_share(5, rank, 2) for rank in range(2))]
        torch.testing.assert_close(sum(parts), whole, rtol=1e-6, atol=0)
    # A share whose samples all lie outside their masks adds nothing and divides by nothing of its own.
    empty = torch.zeros_like(masks[:2])
    assert masked_noise_loss(prediction[:2], target[:2], empty, True, whole_batch_masks=masks) == 0


@pytest.mark.parametrize("batch_size, area_normalised", [(4, False), (3, True)])
def test_the_shares_placeholder_gradients_add_up_to_the_whole_batchs(category, tiny_model, batch_size,
                                                                      area_normalised):
    """What the all-reduce of the vector's gradient gives, with the shares computed in turn
    in one process: the gradient one process computes on the whole seeded batch (float32:
    1e-4 of the largest component; measured ~4e-6). A wrong share or weight is off by
    tens of percent."""
    from anogen.diffusion import learn
    from anogen.diffusion.embedding_file import add_placeholder_token
    from anogen.diffusion.models import load_model

    model = load_model(tiny_model, device="cpu")
    config = learn_config(category, batch_size=batch_size, area_normalised=area_normalised)
    resolution = model.working_resolution(config.resolution)
    support = learn.encode_support(model, learn.prepare_support(config, resolution), True, batch_size)
    token_id = add_placeholder_token(model, config.token)
    vector = torch.nn.Parameter(learn.init_vector(model, config.init_word))
    hook = learn._PlaceholderHook(model.token_embedding_table(), token_id, vector)
    scheduler = model.ddpm_scheduler()
    batch = learn._draw_batch(support, config, 1, int(scheduler.config.num_train_timesteps))
    try:
        whole = learn._batch_loss(model, scheduler, batch, area_normalised)
        whole.backward()
        expected, vector.grad = vector.grad.clone(), None
        total, gradient = 0.0, torch.zeros_like(expected)
        for rank in range(2):
            part = learn._batch_loss(model, scheduler, batch, area_normalised, share=batch_share(batch_size, rank, 2))
            part.backward()
            total, gradient, vector.grad = total + float(part.detach()), gradient + vector.grad, None
    finally:
        hook.remove()
    assert total == pytest.approx(float(whole.detach()), rel=1e-6)
    assert float((gradient - expected).abs().max() / expected.abs().max()) < 1e-4


def test_one_process_learns_without_torch_distributed(category, tiny_model, monkeypatch):
    import torch.distributed as dist

    from anogen import parallel
    from anogen.diffusion.learn import learn_embedding
    from anogen.diffusion.models import load_model

    def refuse(*args, **kwargs):
        raise AssertionError("one process started data-parallel learning")

    monkeypatch.setattr(parallel.ProcessGroup, "start", refuse)
    monkeypatch.setattr(dist, "init_process_group", refuse)
    config = learn_config(category, steps=2)
    alone = learn_embedding(load_model(tiny_model, device="cpu"), config, ranks=ProcessRanks())
    plain = learn_embedding(load_model(tiny_model, device="cpu"), config)
    assert torch.equal(alone.vector, plain.vector) and alone.loss_curve == plain.loss_curve
    assert "processes" not in alone.metadata and not dist.is_initialized()


def test_a_batch_too_small_for_the_processes_names_the_setting_or_leaves_the_last_ones_without_samples():
    with pytest.raises(InputError, match=r"at least 2 \(--set batch_size=N\) or fewer processes"):
        batch_share(1, 0, 2, setting="--set batch_size=N")
    # Stage 1 lets the processes beyond the batch keep in step without a sample.
    assert [batch_share(3, rank, 5, allow_empty=True) for rank in range(5)] == \
        [slice(0, 1), slice(1, 2), slice(2, 3), slice(3, 3), slice(3, 3)]
    assert batch_share(5, 1, 2, allow_empty=True) == batch_share(5, 1, 2)


def test_each_process_of_a_machine_takes_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [ProcessRanks(rank, 4, rank).device(name) for rank in range(4) for name in ("auto", "cuda")] == \
        ["cuda:0", "cuda:0", "cuda:1", "cuda:1", "cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert ProcessRanks(1, 2, 1).device("cuda:0") == "cuda:0"  # named: as asked
    assert ProcessRanks(0, 1).device("cuda") == "cuda" and ProcessRanks(1, 2, 1, use_cpu=True).device("auto") == "cpu"


def _learned(folder: Path):
    from anogen.diffusion.embedding_file import load_embedding

    return load_embedding(folder)


@pytest.mark.slow
def test_torchrun_two_processes_learn_the_one_process_embedding(category, tiny_model, tmp_path):
    """``torchrun --nproc_per_node 2 -m anogen learn``: both processes learn (2 samples of
    each batch of 4), rank 0 alone writes (rank 1 fails on any write under the output
    folder), and the loss curve and vector are the one-process run's within
    LEARN_FIRST_LOSS_RTOL, LEARN_LOSS_RTOL and LEARN_VECTOR_ATOL."""
    from anogen.diffusion.learn import learn_embedding
    from anogen.diffusion.models import load_model

    config = learn_config(category, steps=LEARN_STEPS)
    one = learn_embedding(load_model(tiny_model, device="cpu"), config)
    out = tmp_path / "two"
    out.mkdir()
    code, output, seconds = _torchrun(
        ["cli", str(out), "--", "learn", "--model", str(tiny_model), "--images", *map(str, config.images),
         "--masks", *map(str, config.masks), "--out", str(out / "hole.safetensors"), "--steps", str(LEARN_STEPS),
         "--batch-size", "4", "--checkpoint-every", "2", "--device", "cpu", "--quiet"], tmp_path)
    print(f"torchrun, 2 processes, learn: {seconds:.1f} s")
    assert code == 0, output
    assert "x 2 processes" in output and output.count("wrote ") == 1  # rank 0 alone reports
    assert [p.name for p in out.iterdir()] == ["hole.safetensors"]  # the checkpoint gone, no temp file
    two = _learned(out / "hole.safetensors")
    assert two.metadata["processes"] == "2" and two.token == "<hole>"
    for step, (mine, single) in enumerate(zip(two.loss_curve, one.loss_curve), start=1):
        print(step, f"loss {mine:.8f} / {single:.8f}")
    print("vector difference", float((two.vector - one.vector).abs().max()),
          "moved", float((one.vector - init_of(tiny_model)).abs().max()))
    assert len(two.loss_curve) == LEARN_STEPS
    assert two.loss_curve[0] == pytest.approx(one.loss_curve[0], rel=LEARN_FIRST_LOSS_RTOL)
    assert two.loss_curve == pytest.approx(one.loss_curve, rel=LEARN_LOSS_RTOL)
    torch.testing.assert_close(two.vector, one.vector, rtol=0, atol=LEARN_VECTOR_ATOL)


def init_of(model_dir: Path) -> torch.Tensor:
    from anogen.diffusion.learn import init_vector
    from anogen.diffusion.models import load_model

    return init_vector(load_model(model_dir, device="cpu"), "defect")
