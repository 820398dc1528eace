"""Issue 15: outputs never destroy user data, runs killed half-way are reported, and
malformed inputs give one line (exit 2), never a traceback.

Every test drives ``anogen.cli.main`` in-process on a tiny demo category, a tiny DRAEM
(a few steps at 32 px) and a tiny random diffusion model, so the file runs in about a
minute on two CPU cores.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import threading
from pathlib import Path

import pytest
from _cli_helpers import one_line_error
from _data_helpers import TINY_DRAEM, TINY_DRAEM_ARGS

from anogen.cli import main
from anogen.data.demo import write_demo_dataset
from anogen.outputs import MARKER_NAME


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_demo_dataset(root, categories=("fabric",), size=64, seed=3, train_good=4, test_good=2, test_per_kind=2)
    return root / "fabric"


@pytest.fixture(scope="module")
def runs(category, tmp_path_factory) -> dict[str, Path]:
    """A finished run (4 steps) and the same run stopped after its step-2 checkpoint."""
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig
    from anogen.errors import JobCancelled

    root = tmp_path_factory.mktemp("runs")
    complete = root / "complete"
    train(TrainConfig(data_dir=category, detector="draem", out_dir=complete, steps=4, validate_every=2,
                      overrides=dict(TINY_DRAEM), device="cpu"))
    incomplete = root / "incomplete"
    cancel = threading.Event()

    def stop_after_first_checkpoint(report) -> None:
        if report.step >= 3:  # the step-2 checkpoint is written; a kill here leaves it behind
            cancel.set()

    with pytest.raises(JobCancelled):
        train(TrainConfig(data_dir=category, detector="draem", out_dir=incomplete, steps=4, validate_every=2,
                          overrides=dict(TINY_DRAEM), device="cpu"), stop_after_first_checkpoint, cancel)
    return {"complete": complete, "incomplete": incomplete}


@pytest.fixture(scope="module")
def diffusion(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, an embedding that fits it, and a folder of good images."""
    import torch

    from anogen.diffusion.embedding_file import LearnedEmbedding, save_embedding
    from anogen.diffusion.tiny import TINY_TEXT_WIDTH, build_tiny_model

    root = tmp_path_factory.mktemp("diffusion")
    model = build_tiny_model(root / "model", "sd1", resolution=32)
    vector = torch.randn(TINY_TEXT_WIDTH, generator=torch.Generator().manual_seed(1))
    embedding = save_embedding(root / "scratch.safetensors", LearnedEmbedding(token="<scratch>", vector=vector,
                                                                               family="sd1"))
    write_demo_dataset(root / "demo", categories=("washer",), size=64, train_good=2, test_good=0, test_per_kind=0)
    return {"model": model, "embedding": embedding, "normals": root / "demo" / "washer" / "train" / "good"}


def _user_folder(path: Path, count: int = 3) -> dict[str, bytes]:
    """A folder of the user's own files; returns their contents to compare with later."""
    path.mkdir(parents=True, exist_ok=True)
    files = {f"note{i}.txt": f"the user's file {i}\n".encode() for i in range(count)}
    for name, data in files.items():
        (path / name).write_bytes(data)
    return files


def _unchanged(path: Path, files: dict[str, bytes]) -> bool:
    return path.is_dir() and all((path / name).read_bytes() == data for name, data in files.items())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- item 1
def test_boxes_refuses_a_user_folder_unless_overwrite(category, tmp_path, capsys):
    images = category / "train" / "good"
    out = tmp_path / "my_files"
    files = _user_folder(out)
    argv = ["boxes", "--images", str(images), "--limit", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 2
    one_line_error(capsys, str(out), "--overwrite")
    assert _unchanged(out, files)

    assert main([*argv, "--overwrite"]) == 0
    assert (out / "boxes.json").is_file() and json.loads((out / MARKER_NAME).read_text())["command"] == "boxes"
    # A re-run into its own output needs no --overwrite.
    assert main(argv) == 0
    capsys.readouterr()


def test_output_of_another_command_is_not_replaced_silently(category, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["dataset", "demo", str(out), "--size", "32", "--categories", "fabric", "--quiet"]) == 0
    before = _snapshot(out)
    assert main(["boxes", "--images", str(category / "train" / "good"), "--limit", "1", "--quiet",
                 "--out", str(out)]) == 2
    one_line_error(capsys, "anogen dataset demo", "--overwrite")
    assert _snapshot(out) == before


def test_generate_never_deletes_its_input_even_with_overwrite(diffusion, tmp_path, capsys):
    normals = tmp_path / "good"
    shutil.copytree(diffusion["normals"], normals)
    before = _snapshot(normals)
    base = ["generate", "--model", str(diffusion["model"]), "--embedding", str(diffusion["embedding"]),
            "--normals", str(normals), "--steps", "1", "--per-image", "1", "--limit", "1", "--device", "cpu",
            "--quiet", "--overwrite"]
    for out in (normals, tmp_path):  # the input itself, and a folder that contains it
        assert main([*base, "--out", str(out)]) == 2
        one_line_error(capsys, "input")
        assert _snapshot(normals) == before


@pytest.mark.parametrize("command", ["boxes", "predict", "train", "dataset"])
def test_an_existing_file_never_becomes_a_folder(command, category, runs, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"the user's photo")
    argv = {
        "boxes": ["boxes", "--images", str(category / "train" / "good"), "--limit", "1", "--quiet"],
        "predict": ["predict", "--detector-dir", str(runs["complete"]), str(category / "test" / "good"),
                    "--device", "cpu", "--quiet"],
        "train": ["train", "--data", str(category), "--detector", "draem", "--steps", "1", "--device", "cpu",
                  "--quiet", *TINY_DRAEM_ARGS],
        "dataset": ["dataset", "demo", "--size", "32", "--quiet"],
    }[command]
    argv = [*argv, str(photo)] if command == "dataset" else [*argv, "--out", str(photo)]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, *extra]) == 2
        one_line_error(capsys, str(photo), "file")
        assert photo.is_file() and photo.read_bytes() == b"the user's photo"


def test_evaluate_json_replaces_its_own_metrics_but_not_a_user_file(category, runs, tmp_path, capsys):
    base = ["evaluate", "--data", str(category), "--detector-dir", str(runs["complete"]), "--device", "cpu",
            "--quiet"]
    user_file = tmp_path / "notes.json"
    user_file.write_text('{"mine": true}\n')
    assert main([*base, "--json", str(user_file)]) == 2
    one_line_error(capsys, str(user_file), "--overwrite")
    assert user_file.read_text() == '{"mine": true}\n'

    metrics = tmp_path / "metrics.json"
    assert main([*base, "--json", str(metrics)]) == 0
    assert main([*base, "--json", str(metrics)]) == 0  # its own output: replaced without --overwrite
    assert "image_auroc" in json.loads(metrics.read_text())
    capsys.readouterr()


# ----------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("command", ["evaluate", "export", "predict"])
def test_an_incomplete_run_is_refused_unless_allowed(command, category, runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["incomplete"], run)
    out = tmp_path / ("model.onnx" if command == "export" else "out")
    argv = {
        "evaluate": ["evaluate", "--data", str(category), "--detector-dir", str(run), "--json", str(out),
                     "--device", "cpu", "--quiet"],
        "export": ["export", "--detector-dir", str(run), "--out", str(out)],
        "predict": ["predict", "--detector-dir", str(run), str(category / "test" / "good"), "--out", str(out),
                    "--device", "cpu", "--quiet"],
    }[command]
    assert main(argv) == 2
    one_line_error(capsys, "incomplete: step 2 of 4, resume with --resume", "--allow-incomplete")
    assert not out.exists()

    assert main([*argv, "--allow-incomplete"]) == 0
    assert "warning" in capsys.readouterr().err and out.exists()


def test_train_without_resume_says_the_run_is_incomplete(category, runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["incomplete"], run)
    argv = ["train", "--data", str(category), "--detector", "draem", "--steps", "4", "--validate-every", "2",
            "--device", "cpu", "--quiet", *TINY_DRAEM_ARGS, "--out", str(run)]
    assert main(argv) == 2
    one_line_error(capsys, "incomplete: step 2 of 4, resume with --resume")
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()
    # Finished now: the same checkpoint is accepted everywhere it is read.
    assert main(["export", "--detector-dir", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(argv) == 2
    assert "already holds a trained detector" in capsys.readouterr().err


# ----------------------------------------------------------------------------- item 5
def test_resume_recovers_a_checkpoint_left_between_two_renames(category, runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["incomplete"], run)
    # What staged_directory leaves when killed between its two renames: the previous
    # `last` moved aside and the new, complete one still under its staging name; plus a
    # staging folder of a save that was killed before it finished (no detector.json).
    shutil.copytree(run / "last", run / ".last.k1ll.partial")
    os.replace(run / "last", run / ".last.old")
    (run / ".last.half.partial").mkdir()
    shutil.copy(run / ".last.old" / "model.safetensors", run / ".last.half.partial")

    argv = ["evaluate", "--data", str(category), "--detector-dir", str(run), "--checkpoint", "last",
            "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    one_line_error(capsys, "incomplete", "--resume")

    assert main(["train", "--data", str(category), "--detector", "draem", "--steps", "4", "--validate-every", "2",
                 "--device", "cpu", "--quiet", *TINY_DRAEM_ARGS, "--out", str(run), "--resume"]) == 0
    assert json.loads((run / "last" / "detector.json").read_text())["step"] == 4
    assert not list(run.glob(".last.*"))
    assert main(argv) == 0
    capsys.readouterr()


def test_a_partial_staging_folder_is_never_recovered(runs, tmp_path):
    from anogen.detection.checkpoint import recover_checkpoint

    run = tmp_path / "run"
    shutil.copytree(runs["incomplete"], run)
    shutil.rmtree(run / "last")
    (run / ".last.half.partial").mkdir()
    shutil.copy(run / "best" / "model.safetensors", run / ".last.half.partial")
    assert recover_checkpoint(run / "last") is None
    assert not (run / "last").exists()


def test_a_run_killed_before_its_first_checkpoint_is_reported_incomplete(category, tmp_path, capsys):
    from anogen.outputs import mark_output_dir

    run = tmp_path / "run"  # what train leaves when killed right after it marked its folder
    run.mkdir()
    mark_output_dir(run, "train")
    (run / "history.jsonl").write_text("")
    for argv in (["export", "--detector-dir", str(run), "--out", str(tmp_path / "m.onnx")],
                 ["evaluate", "--data", str(category), "--detector-dir", str(run), "--device", "cpu", "--quiet"]):
        assert main(argv) == 2
        one_line_error(capsys, str(run), "incomplete", "before its first checkpoint")


def test_a_run_killed_at_its_first_best_checkpoint_is_reported_incomplete(category, tmp_path, capsys,
                                                                         monkeypatch):
    """The first save writes last/ before best/: a kill in between never leaves a best/
    alone, which readers could not tell from a finished run (seen in CI's kill test)."""
    import anogen.detection.train as train_module

    real_save = train_module.save_checkpoint

    def killed_after_best(folder, *args, **kwargs):
        real_save(folder, *args, **kwargs)
        if Path(folder).name == "best":
            raise KeyboardInterrupt  # stands in for SIGKILL right after best/ is in place

    monkeypatch.setattr(train_module, "save_checkpoint", killed_after_best)
    run = tmp_path / "run"
    assert main(["train", "--data", str(category), "--detector", "draem", "--steps", "4", "--validate-every", "2",
                 "--device", "cpu", "--quiet", *TINY_DRAEM_ARGS, "--out", str(run)]) != 0
    monkeypatch.undo()
    capsys.readouterr()
    assert (run / "best" / "detector.json").is_file()
    assert main(["evaluate", "--data", str(category), "--detector-dir", str(run), "--device", "cpu", "--quiet"]) == 2
    one_line_error(capsys, "incomplete", "--resume")
    assert main(["train", "--data", str(category), "--detector", "draem", "--steps", "4", "--validate-every", "2",
                 "--device", "cpu", "--quiet", *TINY_DRAEM_ARGS, "--out", str(run), "--resume"]) == 0


# ----------------------------------------------------------------------------- item 6
def test_a_demo_rerun_killed_half_way_keeps_the_old_report_whole(tmp_path):
    from anogen.demo_pipeline import DemoConfig, DemoPlan, run_demo
    from anogen.diffusion.tiny import build_tiny_model

    out = tmp_path / "report"
    out.mkdir()
    (out / "index.md").write_text("# the previous report\n")
    (out / "metrics.json").write_text('{"seconds": 1}\n')
    (out / MARKER_NAME).write_text('{"command": "demo"}\n')
    before = _snapshot(out)
    plan = DemoPlan(categories=("fabric",), image_size=64, train_good=4, test_good=2, test_per_kind=4, shots=3,
                    learn_steps=2, learn_batch=2, generate_steps=1, guidance=3.0, generation_images=1,
                    samples_per_image=1, detector_steps=2, detector_overrides=dict(TINY_DRAEM))

    def killed_while_learning(report) -> None:
        if "learn" in report.message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_demo(DemoConfig(out=out, model=str(build_tiny_model(tmp_path / "model", "sd1", resolution=32)),
                            device="cpu", plan=plan), killed_while_learning)
    assert _snapshot(out) == before  # no new dataset, embeddings or detectors beside the old report
    assert not list(tmp_path.glob(".report.*"))


# ----------------------------------------------------------------------------- items 8-13: fuzz corpus
def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not safetensors" * 8)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickle_text_encoder(model: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("a pickle ran code",))

    folder = model / "text_encoder"
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))


def _fuzz_cases() -> list[tuple[str, str]]:
    damaged = [(f"{command}-{damage}", damage) for command in ("evaluate", "predict", "export")
               for damage in ("garbage", "truncated")]
    return [*damaged, ("evaluate-batch-0", ""), ("predict-batch-0", ""), ("evaluate-json-dir", ""),
            ("export-out-dir", ""), ("predict-out-file", ""), ("demo-out-file", ""), ("train-out-file", ""),
            ("generate-steps-5000", ""), ("train-image-size-100000", ""), ("generate-pickle-text-encoder", ""),
            # items 15-22: bad input that was accepted silently, or work without a bound
            ("generate-nan-embedding", ""), ("train-small-mask", ""), ("evaluate-small-mask", ""),
            ("train-generated-box-outside", ""), ("learn-resolution-1048576", ""), ("boxes-per-image-1000000", ""),
            ("dataset-check-strict-missing-mask", "")]


def _nan_embedding(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from anogen.diffusion.tiny import TINY_TEXT_WIDTH

    save_file({"<scratch>": torch.full((TINY_TEXT_WIDTH,), float("nan"))}, str(path))
    return path


def _small_masks(category: Path, copy: Path) -> Path:
    """A copy of ``category`` whose ground-truth masks are half their images' size."""
    from anogen.data.imageio import read_mask, write_mask

    shutil.copytree(category, copy)
    for mask in (copy / "ground_truth").rglob("*_mask.png"):
        write_mask(mask, read_mask(mask)[::2, ::2])
    return copy


def _missing_mask(category: Path, copy: Path) -> Path:
    """A copy of ``category`` with one defective test image's ground-truth mask deleted."""
    shutil.copytree(category, copy)
    next((copy / "ground_truth").rglob("*_mask.png")).unlink()
    return copy


def _generated_box_outside(category: Path, out: Path) -> Path:
    """A generated set whose manifest box lies outside its 64x64 image."""
    from anogen.data.generated import MANIFEST_NAME, GeneratedSetWriter
    from anogen.data.imageio import read_image

    source = sorted((category / "train" / "good").glob("*.png"))[0]
    with GeneratedSetWriter(out) as writer:
        writer.add(read_image(source), box=[2, 2, 12, 10], source=str(source), defect_kind="scratch", seed=0,
                   model="tiny", embedding_hash="0" * 64, steps=1, guidance=1.0, id="s0")
    manifest = out / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"box": [2, 2, 12, 10]', '"box": [20, 20, 90, 90]'))
    return out


@pytest.mark.parametrize("case,damage", _fuzz_cases(), ids=[c for c, _ in _fuzz_cases()])
def test_fuzz_corpus_exit_2_one_line_no_output(case, damage, category, runs, diffusion, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["complete"], run)
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    a_file = tmp_path / "a_file.png"
    a_file.write_bytes(b"user data")
    out = tmp_path / "out"
    test_good = str(category / "test" / "good")
    evaluate = ["evaluate", "--data", str(category), "--detector-dir", str(run), "--device", "cpu", "--quiet"]
    predict = ["predict", "--detector-dir", str(run), test_good, "--device", "cpu", "--quiet"]
    generate = ["generate", "--model", str(diffusion["model"]), "--embedding", str(diffusion["embedding"]),
                "--normals", str(diffusion["normals"]), "--per-image", "1", "--limit", "1", "--device", "cpu",
                "--quiet", "--out", str(out)]
    train = ["train", "--data", str(category), "--detector", "draem", "--steps", "1", "--device", "cpu", "--quiet"]

    kind = sorted(p.name for p in (category / "test").iterdir() if p.name != "good")[0]
    support = ["--images", str(category / "test" / kind), "--masks", str(category / "ground_truth" / kind)]
    if damage:
        command = case.split("-")[0]
        (_garbage if damage == "garbage" else _truncated)(run / "best" / "model.safetensors")
        argv = {"evaluate": [*evaluate, "--json", str(out)], "predict": [*predict, "--out", str(out)],
                "export": ["export", "--detector-dir", str(run), "--out", str(out)]}[command]
        names = ["model.safetensors"]
    elif case == "generate-pickle-text-encoder":
        model = tmp_path / "model"
        shutil.copytree(diffusion["model"], model)
        _pickle_text_encoder(model)
        generate[generate.index("--model") + 1] = str(model)
        argv, names = [*generate, "--steps", "1"], ["pytorch_model.bin", "safetensors"]
    else:  # lazy: only the case run builds its inputs
        small_masks = "mask is 32x32 (WxH) but the image"
        argv, names = {
            "evaluate-batch-0": lambda: ([*evaluate, "--batch-size", "0", "--json", str(out)], ["--batch-size"]),
            "predict-batch-0": lambda: ([*predict, "--batch-size", "0", "--out", str(out)], ["--batch-size"]),
            "evaluate-json-dir": lambda: ([*evaluate, "--json", str(a_dir)], [str(a_dir)]),
            "export-out-dir": lambda: (["export", "--detector-dir", str(run), "--out", str(a_dir)], [str(a_dir)]),
            "predict-out-file": lambda: ([*predict, "--out", str(a_file)], [str(a_file)]),
            "demo-out-file": lambda: (["demo", "--out", str(a_file)], [str(a_file)]),
            "train-out-file": lambda: ([*train, "--out", str(a_file)], [str(a_file)]),
            "generate-steps-5000": lambda: ([*generate, "--steps", "5000"], ["5000", "1000"]),
            "train-image-size-100000": lambda: ([*train, "--set", "image_size=100000", "--out", str(out)],
                                                ["image_size", "100000"]),
            "generate-nan-embedding": lambda: (
                [*generate, "--steps", "1", "--embedding", str(_nan_embedding(tmp_path / "nan.safetensors"))],
                ["nan.safetensors", "NaN"]),
            "train-small-mask": lambda: (
                [*train, *TINY_DRAEM_ARGS, "--data", str(_small_masks(category, tmp_path / "c")), "--out", str(out)],
                ["_mask.png", small_masks]),
            "evaluate-small-mask": lambda: (
                [*evaluate, "--data", str(_small_masks(category, tmp_path / "c")), "--json", str(out)],
                ["_mask.png", small_masks]),
            "train-generated-box-outside": lambda: (
                [*train, *TINY_DRAEM_ARGS, "--generated", str(_generated_box_outside(category, tmp_path / "set")),
                 "--out", str(out)],
                ["manifest.jsonl", "line 1", "outside"]),
            "learn-resolution-1048576": lambda: (
                ["learn", "--model", str(diffusion["model"]), *support, "--steps", "1", "--resolution", "1048576",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "out.safetensors")],
                ["1048576 px", "memory", "--resolution"]),
            "boxes-per-image-1000000": lambda: (
                ["boxes", "--images", test_good, "--per-image", "1000000", "--foreground", "all", "--quiet",
                 "--out", str(out)],
                ["--per-image", "1000000"]),
            "dataset-check-strict-missing-mask": lambda: (
                ["dataset", "check", str(_missing_mask(category, tmp_path / "c")), "--strict", "--quiet"],
                ["--strict", "no ground-truth mask"]),
        }[case]()
    before = {p: _snapshot(p) for p in (run, a_dir)}
    assert main(argv) == 2
    one_line_error(capsys, *names)
    assert not out.exists()  # no output left behind
    assert a_file.read_bytes() == b"user data" and not list(tmp_path.glob(".*partial"))
    assert all(_snapshot(p) == snapshot for p, snapshot in before.items())
