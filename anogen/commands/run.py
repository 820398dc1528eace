"""``anogen run``: the whole method for every category and defect kind of a plan."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anogen.compute import add_threads_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="learn, boxes, generate, train and evaluate for every category and kind of a plan",
        description="Run a plan (TOML: model, categories, defect kinds with their support sets, stage settings or "
                    "preset = \"paper\"): for every kind learn its embedding, propose boxes and generate; for every "
                    "category train the detector without and with the generated sets and evaluate both. Writes "
                    "OUT/results.md and OUT/results.json (per category and mean image AUROC, pixel AUROC, pixel AP, "
                    "AUPRO). Resumable: each step is published with a done marker and never redone; run the same "
                    "command again after a kill. See docs/scale.md.")
    parser.add_argument("plan", type=Path, metavar="PLAN.toml", help="the plan file")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="run only shard I of N (0 <= I < N): kinds for learn/boxes/generate, categories for "
                             "train/evaluate; e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    parser.add_argument("--status", action="store_true",
                        help="print each step's state (done, pending, waiting, running-or-incomplete) and exit")
    add_threads_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anogen.compute import apply_command_policy
    from anogen.jobs import TqdmProgress
    from anogen.runplan.execute import run_plan
    from anogen.runplan.plan import load_plan
    from anogen.runplan.ranks import ProcessRanks, unshared_launch_warning
    from anogen.runplan.status import status_lines
    from anogen.runplan.steps import Shard

    shard = Shard.parse(args.shard) if args.shard is not None else None
    plan = load_plan(args.plan)
    if args.status:
        print("\n".join(status_lines(plan, shard)))
        return 0
    ranks = ProcessRanks.from_environment()
    warning = unshared_launch_warning()
    if warning:
        print(f"anogen: warning: {warning}", file=sys.stderr)
    quiet = args.quiet or not ranks.is_main
    apply_command_policy(args, ranks.device(plan.device), quiet=quiet)

    def say(line: str) -> None:
        if ranks.is_main:
            print(line, flush=True)

    report = run_plan(plan, shard, progress_for=lambda label: TqdmProgress(label, disable=quiet), log=say,
                      ranks=ranks)
    if not ranks.is_main:
        return 0
    print(f"{len(report.ran)} steps run, {len(report.already_done)} already done, {len(report.waiting)} waiting")
    if report.waiting:
        print("steps waiting for other shards' work: run the same command again once they have finished")
    if report.results is not None:
        print(f"results: {report.results}")
    return 0
