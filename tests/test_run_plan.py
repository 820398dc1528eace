"""``anogen run PLAN.toml``: plan checks, a whole tiny run, resume after a kill, --status, shards."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anogen.cli import main
from anogen.errors import InputError
from anogen.runplan import execute
from anogen.runplan.execute import run_plan
from anogen.runplan.plan import load_plan
from anogen.runplan.ranks import ProcessRanks
from anogen.runplan.status import status_lines
from anogen.runplan.steps import Shard, build_steps


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A tiny model and two demo categories, shared by every plan of this file."""
    from anogen.data.demo import write_demo_dataset
    from anogen.diffusion.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("inputs")
    build_tiny_model(root / "model", "sd1", resolution=32)
    write_demo_dataset(root / "data", categories=("fabric", "washer"), size=64, seed=0, train_good=4, test_good=3,
                       test_per_kind=3)
    return root


def write_plan(folder: Path, inputs: Path, extra: str = "", categories: str | None = None) -> Path:
    """Two categories, three kinds (two support shots each), every stage a few steps;
    ``categories`` replaces the ``[[categories]]`` tables."""
    folder.mkdir(parents=True, exist_ok=True)
    if categories is None:
        categories = f"""
[[categories]]
path = "{inputs / 'data' / 'fabric'}"
kinds = ["hole", "scratch"]

[[categories]]
path = "{inputs / 'data' / 'washer'}"
kinds = [{{ name = "crack", shots = 1 }}]
"""
    text = f"""
model = "{inputs / 'model'}"
out = "out"
device = "cpu"
shots = 2
{extra}
[learn]
steps = 2
batch_size = 2
[boxes]
foreground = "all"
[generate]
steps = 2
guidance = 3.0
per_image = 1
samples_per_box = 1
limit = 2
[train]
steps = 2
overrides = {{ image_size = 32, batch_size = 2, recon_base_width = 4, disc_base_width = 4 }}

{categories}"""
    path = folder / "plan.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def counted(monkeypatch) -> list[str]:
    """Every step a runner actually ran, by label."""
    calls: list[str] = []
    for stage, runner in list(execute.RUNNERS.items()):
        def wrapped(ctx, staging, _runner=runner):
            calls.append(ctx.step.label)
            return _runner(ctx, staging)
        monkeypatch.setitem(execute.RUNNERS, stage, wrapped)
    return calls


@pytest.fixture(scope="module")
def one_run(inputs, tmp_path_factory):
    plan = load_plan(write_plan(tmp_path_factory.mktemp("single"), inputs))
    report = run_plan(plan)
    return plan, report


# --------------------------------------------------------------------------- plan checks


@pytest.mark.parametrize("extra, section, message", [
    ('detector = "yolo"', "", "detector must be one of"),
    ("seed = 1.5", "", "seed must be int"),
    ("colour = 1", "", "colour is not a known setting"),
    ("", "[learn]\nstepz = 3", "learn.stepz is not a known setting"),
    ("", "[generate]\nbatch_size = 0", "generate.batch_size must be at least 1"),
    ("", '[train]\nprotocol = "best"', "train.protocol must be one of"),
])
def test_plan_errors_name_the_key(tmp_path, inputs, extra, section, message):
    path = write_plan(tmp_path, inputs, extra)
    if section:
        name = section.splitlines()[0]
        text = path.read_text()
        path.write_text(text.replace(name, section, 1) if name in text else text + section + "\n")
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        load_plan(path)


def test_plan_errors_for_categories_and_kinds(tmp_path, inputs):
    path = write_plan(tmp_path, inputs)
    text = path.read_text()
    path.write_text(text.replace('kinds = ["hole", "scratch"]', 'kinds = ["hole", "crack"]'))
    with pytest.raises(InputError, match=r"categories\[0\]\.kinds\[1\].*no masked test images of kind 'crack'"):
        load_plan(path)
    path.write_text(text.replace('{ name = "crack", shots = 1 }', '{ name = "crack", images = ["a.png"] }'))
    with pytest.raises(InputError, match=r"categories\[1\]\.kinds\[0\]\.masks is missing"):
        load_plan(path)
    path.write_text(text.replace('{ name = "crack", shots = 1 }', '{ name = "crack", shots = 9 }'))
    with pytest.raises(InputError, match=r"categories\[1\]\.kinds\[0\].*fewer than shots = 9"):
        load_plan(path)
    path.write_text(text.replace(str(inputs / "data" / "washer"), str(tmp_path)))
    with pytest.raises(InputError, match=r"categories\[1\]\.path.*not an MVTec AD category"):
        load_plan(path)


def test_plan_reads_support_sets_and_the_paper_preset(tmp_path, inputs):
    plan = load_plan(write_plan(tmp_path, inputs, 'preset = "paper"'))
    assert [k.key for k in plan.kinds] == ["fabric/hole", "fabric/scratch", "washer/crack"]
    assert [len(k.images) for k in plan.kinds] == [2, 2, 1]
    assert all(image.is_file() for k in plan.kinds for image in k.masks)
    assert plan.out == tmp_path / "out"
    assert (plan.detector_preset, plan.protocol) == ("paper", "paper")
    assert len(build_steps(plan)) == 3 * 3 + 2 * 4


def test_cli_reports_a_bad_plan_in_one_line(tmp_path, inputs, capsys):
    path = write_plan(tmp_path, inputs, "colour = 1")
    assert main(["run", str(path), "--status"]) == 2
    assert "colour is not a known setting" in capsys.readouterr().err
    assert main(["run", str(write_plan(tmp_path, inputs)), "--shard", "2/2", "--status"]) == 2


# --------------------------------------------------------------------------- a whole run


def test_a_run_writes_the_table_and_every_step(one_run):
    plan, report = one_run
    assert len(report.ran) == 17 and not report.waiting
    results = json.loads((plan.out / "results.json").read_text())
    assert set(results["categories"]) == {"fabric", "washer"}
    for row in [*results["categories"].values(), results["mean"]]:
        for variant in ("baseline", "generated"):
            for key in ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro"):
                assert 0.0 <= row[variant][key] <= 1.0, (variant, key)
    table = (plan.out / "results.md").read_text()
    assert "| **mean** |" in table and "image AUROC + generated" in table
    generated = plan.out / "steps" / "generate" / "fabric" / "hole" / "set" / "manifest.jsonl"
    assert len(generated.read_text().splitlines()) == 2  # limit 2 good images x 1 sample
    record = json.loads((plan.out / "steps" / "train" / "fabric" / "generated" / "done.json").read_text())
    assert len(record["details"]["generated_sets"]) == 2  # both kinds of the category at once


def test_status_after_a_run_says_done(one_run, capsys):
    plan, _ = one_run
    assert main(["run", str(plan.source), "--status"]) == 0
    out = capsys.readouterr().out
    assert out.count(" done ") + out.count(" done\n") >= 17
    assert "17 steps: 17 done" in out and "results.md" in out


def test_resume_after_a_kill_redoes_only_what_was_not_finished(tmp_path, inputs, counted, monkeypatch):
    plan = load_plan(write_plan(tmp_path, inputs))
    train = execute.RUNNERS["train"]

    def killed(ctx, staging):
        if ctx.step.label == "train fabric/generated":
            (staging / "half-written").write_text("x")
            raise KeyboardInterrupt
        return train(ctx, staging)

    monkeypatch.setitem(execute.RUNNERS, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan)
    # A SIGKILL leaves the staging folder behind (an exception removes it): make one.
    step = next(s for s in build_steps(plan) if s.label == "train fabric/generated")
    leftover = step.folder.parent / ".generated.killed.partial"
    leftover.mkdir()
    (leftover / "half-written").write_text("x")
    lines = status_lines(plan)
    assert any(line.startswith("train") and "fabric/generated" in line and "running-or-incomplete" in line
               for line in lines)
    assert any("evaluate" in line and "fabric/generated" in line and "waiting" in line for line in lines)
    done_before = {s.label: s.done_path.stat().st_mtime_ns for s in build_steps(plan) if s.is_done()}
    assert "learn fabric/hole" in done_before and not (plan.out / "results.md").exists()

    monkeypatch.setitem(execute.RUNNERS, "train", train)
    counted.clear()
    report = run_plan(plan)
    assert not set(counted) & set(done_before)  # nothing finished is redone
    assert "train fabric/generated" in counted and not leftover.exists()
    assert sorted(report.already_done) == sorted(done_before)
    for label, mtime in done_before.items():
        assert next(s for s in build_steps(plan) if s.label == label).done_path.stat().st_mtime_ns == mtime
    assert (plan.out / "results.md").is_file()
    counted.clear()
    assert len(run_plan(plan).already_done) == 17 and counted == []


def test_two_shards_make_the_table_of_one_run(one_run, tmp_path, inputs, counted):
    single, _ = one_run
    plan = load_plan(write_plan(tmp_path, inputs))
    first = run_plan(plan, Shard(0, 2))
    # Shard 0 has fabric/hole and washer/crack, and the fabric detectors; the generated
    # fabric detector needs fabric/scratch, which is shard 1's.
    assert "train fabric/generated" in first.waiting and first.results is None
    assert "generate fabric/scratch" not in counted
    second = run_plan(plan, Shard(1, 2))
    assert not second.waiting and "generate fabric/scratch" in second.ran
    assert second.results is None  # the waiting fabric steps are still shard 0's
    again = run_plan(plan, Shard(0, 2))
    assert again.ran == ["train fabric/generated", "evaluate fabric/generated"]
    ours = json.loads((plan.out / "results.json").read_text())
    theirs = json.loads((single.out / "results.json").read_text())
    assert ours["categories"] == theirs["categories"] and ours["mean"] == theirs["mean"]
    for kind in ("fabric/hole", "fabric/scratch", "washer/crack"):
        ours_set = plan.out / "steps" / "generate" / kind / "set"
        theirs_set = single.out / "steps" / "generate" / kind / "set"

        def samples(folder: Path) -> list[dict]:
            # The embedding file's hash covers its metadata (when it was written), not its vector.
            return [{k: v for k, v in json.loads(line).items() if k != "embedding_hash"}
                    for line in (folder / "manifest.jsonl").read_text().splitlines()]

        assert samples(ours_set) == samples(theirs_set)
        for image in sorted((theirs_set / "images").iterdir()):
            assert (ours_set / "images" / image.name).read_bytes() == image.read_bytes()


def test_generation_split_over_processes_is_the_one_process_set(one_run, tmp_path, inputs):
    """What ``accelerate launch --num_processes 2`` does, with the two ranks run in turn:
    rank 1 writes its part first, then rank 0 writes its part and the whole set."""
    single, _ = one_run
    plan = load_plan(write_plan(tmp_path, inputs))
    for stage in ("learn", "boxes"):  # the same inputs as the single run
        for kind in ("hole",):
            src = single.out / "steps" / stage / "fabric" / kind
            shutil.copytree(src, plan.out / "steps" / stage / "fabric" / kind)
    steps = {s.label: s for s in build_steps(plan)}
    step = steps["generate fabric/hole"]
    for rank in (1, 0):
        ranks = ProcessRanks(rank=rank, world=2)
        ctx = execute.StepContext(plan, step, steps, ranks, lambda report: None, None)
        if rank == 0:
            execute.run_step(plan, step, steps, ranks, lambda report: None, None)
        else:
            execute.run_generate(ctx, step.folder)
    ours = step.folder / "set"
    theirs = single.out / "steps" / "generate" / "fabric" / "hole" / "set"
    assert (ours / "manifest.jsonl").read_text() == (theirs / "manifest.jsonl").read_text()
    for image in sorted((theirs / "images").iterdir()):
        assert (ours / "images" / image.name).read_bytes() == image.read_bytes()
    assert not (step.folder.parent / ".hole.parts").exists()


def test_ranks_come_from_torchrun_or_mpi_and_a_one_process_cpu_launch_is_told():
    from anogen.runplan.ranks import unshared_launch_warning

    assert ProcessRanks.from_environment({}) == ProcessRanks()
    assert ProcessRanks.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == \
        ProcessRanks(rank=3, world=4, local_rank=1)
    # accelerate launch --cpu --mpirun_hostfile: Open MPI's variables, and Accelerate's CPU flag
    assert ProcessRanks.from_environment({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
                                          "OMPI_COMM_WORLD_LOCAL_RANK": "1", "ACCELERATE_USE_CPU": "True"}) == \
        ProcessRanks(rank=1, world=2, local_rank=1, use_cpu=True)
    assert ProcessRanks.from_environment({"PMI_RANK": "2", "PMI_SIZE": "3"}) == ProcessRanks(2, 3, 2)
    # What `accelerate launch --cpu --num_processes 2` (no host file) gives its one process:
    one = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert "started one process" in (unshared_launch_warning(one) or "")
    assert unshared_launch_warning({"ACCELERATE_USE_CPU": "True"}) is None  # --num_processes 1
    assert unshared_launch_warning({**one, "RANK": "0", "WORLD_SIZE": "2"}) is None
    assert unshared_launch_warning({**one, "PMI_RANK": "0", "PMI_SIZE": "2"}) is None
    assert unshared_launch_warning({}) is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_with_two_processes_generates_the_one_process_set(tmp_path, inputs):
    """A real ``accelerate launch`` of two processes on the CPU: both processes learn the
    embedding (data parallel), which is one process's within the tolerance of
    tests/test_parallel_training.py (1e-5); from that embedding the generated set is, byte
    for byte, the one of a single process; and both processes train each detector
    (data parallel), whose loss and metrics are the one-process run's within the
    tolerances of tests/test_parallel_training.py (3 % relative, 0.02).

    ``--multi_gpu``, not ``--cpu``: Accelerate starts several CPU processes under ``--cpu``
    only through MPI, and runs one process otherwise (see ranks.unshared_launch_warning);
    ``--multi_gpu`` on a machine without GPUs starts them through torch's elastic launcher.
    Every launch option is on the command line and HF_HOME is empty: no accelerate config
    file is read, nothing goes online. One kind, two good images, two DDIM steps.
    """
    pytest.importorskip("accelerate")
    from anogen.diffusion.embedding_file import load_embedding

    one_kind = f"""
[[categories]]
path = "{inputs / 'data' / 'fabric'}"
kinds = [{{ name = "hole", shots = 1 }}]
"""
    plan_path = write_plan(tmp_path / "two", inputs, categories=one_kind)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU")}
    root = Path(__file__).resolve().parents[1]
    env.update(CUDA_VISIBLE_DEVICES="", HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "--monitor_interval", "0.5",
               "-m", "anogen", "run", str(plan_path), "--quiet"]
    started = time.perf_counter()
    launched = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-4000:]
    print(f"accelerate launch, 2 processes: {seconds:.1f} s")
    plan = load_plan(plan_path)
    by_label = {s.label: s for s in build_steps(plan)}

    # One process: stage 1 on its own, compared; the rest from the two processes' embedding
    # (stage 2 is then compared byte for byte: a vector 1e-8 away may change a pixel).
    single = load_plan(write_plan(tmp_path / "one", inputs, categories=one_kind))
    steps = {s.label: s for s in build_steps(single)}
    learned = steps["learn fabric/hole"]
    execute.run_step(single, learned, steps, ProcessRanks(), lambda report: None, None)
    shared = by_label["learn fabric/hole"]
    assert json.loads(shared.done_path.read_text())["details"]["processes"] == 2
    ours_vector = load_embedding(shared.folder / execute.EMBEDDING_NAME).vector
    alone_vector = load_embedding(learned.folder / execute.EMBEDDING_NAME).vector
    print("stage 1, two processes against one: vector difference", float((ours_vector - alone_vector).abs().max()))
    assert float((ours_vector - alone_vector).abs().max()) <= 1e-5
    assert not list(shared.folder.parent.glob(".*"))  # no decision, checkpoint or staging folder left
    shutil.rmtree(learned.folder)
    shutil.copytree(shared.folder, learned.folder)
    for label in ("boxes fabric/hole", "generate fabric/hole", "train fabric/baseline", "evaluate fabric/baseline",
                  "train fabric/generated", "evaluate fabric/generated"):
        execute.run_step(single, steps[label], steps, ProcessRanks(), lambda report: None, None)

    step = next(s for s in build_steps(plan) if s.label == "generate fabric/hole")
    assert json.loads(step.done_path.read_text())["details"] == {"samples": 2, "processes": 2}
    assert not (step.folder.parent / ".hole.parts").exists()
    ours, theirs = step.folder / "set", steps["generate fabric/hole"].folder / "set"

    def samples(folder: Path) -> list[dict]:
        # The embedding file's hash covers its metadata (when it was written), not its vector.
        return [{k: v for k, v in json.loads(line).items() if k != "embedding_hash"}
                for line in (folder / "manifest.jsonl").read_text().splitlines()]

    assert samples(ours) == samples(theirs) and len(samples(ours)) == 2
    files = sorted(p.relative_to(theirs) for p in theirs.rglob("*.png"))
    assert files and files == sorted(p.relative_to(ours) for p in ours.rglob("*.png"))
    for name in files:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name

    for variant in ("baseline", "generated"):
        trained = json.loads(by_label[f"train fabric/{variant}"].done_path.read_text())["details"]
        alone = json.loads(steps[f"train fabric/{variant}"].done_path.read_text())["details"]
        assert trained["processes"] == 2 and alone["processes"] == 1
        assert trained["final_loss"] == pytest.approx(alone["final_loss"], rel=0.03)
        metrics = json.loads(by_label[f"evaluate fabric/{variant}"].done_path.read_text())["details"]
        one = json.loads(steps[f"evaluate fabric/{variant}"].done_path.read_text())["details"]
        assert metrics == pytest.approx(one, abs=0.02), variant
    assert not list(by_label["train fabric/baseline"].folder.parent.glob(".*.train-*.json"))  # decisions cleaned
