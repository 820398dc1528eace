"""The demo pipeline end to end at a reduced size, with a tiny random diffusion model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anogen.demo_pipeline import DemoConfig, DemoPlan, run_demo
from anogen.demo_report import tile_grid
from anogen.diffusion.tiny import build_tiny_model


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    model = build_tiny_model(tmp_path_factory.mktemp("model"), "sd1", resolution=32)
    plan = DemoPlan(categories=("fabric",), image_size=64, train_good=6, test_good=3, test_per_kind=5, shots=3,
                    learn_steps=4, learn_batch=2, generate_steps=2, guidance=3.0, generation_images=2,
                    samples_per_image=1, detector_steps=3,
                    detector_overrides={"image_size": 32, "batch_size": 2, "recon_base_width": 4,
                                        "disc_base_width": 4})
    out = tmp_path_factory.mktemp("demo")
    return run_demo(DemoConfig(out=out, model=str(model), device="cpu", plan=plan))


def test_demo_writes_report_with_every_stage(demo_run):
    out = demo_run.out
    index = (out / "index.md").read_text()
    for figure in ("support", "generated", "stage1_loss", "detector_loss", "heatmaps"):
        assert (out / "figures" / f"fabric_{figure}.png").is_file()
        assert f"figures/fabric_{figure}.png" in index
    metrics = json.loads((out / "metrics.json").read_text())
    category = metrics["categories"]["fabric"]
    for variant in ("baseline", "with_generated"):
        assert 0.0 <= category[variant]["image_auroc"] <= 1.0
        # The 3 support images of each of the 3 kinds never reach the test set.
        assert category[variant]["n_excluded"] >= 9
    assert set(category["kinds"]) == {"hole", "scratch", "stain"}
    assert all(k["generated"] == 2 for k in category["kinds"].values())


def test_demo_table_lists_both_detectors(demo_run):
    table = demo_run.table()
    assert "baseline (synthesis)" in table and "+ generated defects" in table
    assert "pixel_aupro" in table


def test_demo_reports_where_the_time_went_and_how_the_machine_was_used(demo_run):
    metrics = json.loads((demo_run.out / "metrics.json").read_text())
    timings = metrics["timings_seconds"]
    for stage in ("dataset", "learn (stage 1)", "generate (stage 2)", "train detectors (stage 3)",
                  "evaluate detectors", "report"):
        assert timings[stage] >= 0.0, stage
    assert sum(timings.values()) <= metrics["seconds"] + 1.0
    assert metrics["compute"]["threads"] == 1  # tests pin ANOGEN_THREADS=1
    assert metrics["compute"]["precision"] in ("fp32", "bf16 autocast")
    index = (demo_run.out / "index.md").read_text()
    assert "Where the time went" in index
    assert "1 thread, " in demo_run.timing_lines()
    # The report's total is the run's time up to the report (it once said 0.0 min).
    total = next(line for line in index.splitlines() if line.startswith("total"))
    value, unit = total.split()[1:3]
    reported = float(value) * (60 if unit == "min" else 1)
    assert abs(reported - (metrics["seconds"] - timings["report"])) <= 3.5, total  # 0.1 min rounds to 3 s


def test_demo_measures_generated_and_real_defects_alike(demo_run):
    metrics = json.loads((demo_run.out / "metrics.json").read_text())
    for kind in metrics["categories"]["fabric"]["kinds"].values():
        generated, real = kind["realism"]["generated"], kind["realism"]["real"]
        assert generated["count"] == 2 and real["count"] == 5
        assert 0.0 < real["changed_fraction"] <= 1.0  # real defects change their box visibly
        assert real["sharpness_ratio"] > 0.0
        assert 0.0 <= generated["changed_fraction"] <= 1.0


def test_a_figure_grid_pads_short_rows_even_when_the_first_is_empty():
    # A kind with no accepted samples leaves its row empty; the figure must still draw.
    tile = np.zeros((8, 8, 3), np.uint8)
    grid = tile_grid([[], [tile, tile], [tile]], pad=1)
    assert grid.shape == (3 * 10, 2 * 10, 3)
    assert (grid[:10] == 255).all()  # the empty row is blank
    assert (grid[21:29, 11:19] == 255).all() and (grid[21:29, 1:9] == 0).all()  # the short row is padded
