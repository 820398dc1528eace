"""`anogen demo [--out DIR] [--quick]`: all three stages on the embedded demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from anogen.compute import add_threads_argument
from anogen.detection.registry import DETECTORS
from anogen.outputs import add_overwrite_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run all three stages on the embedded demo data and model",
        description="Learn an embedding per demo defect kind, generate defects on good images, train the "
                    "detector with and without them, evaluate, and write a report folder. Without --quick: both "
                    "categories, about 17 minutes on 2 idle CPU cores.")
    parser.add_argument("--out", type=Path, default=Path("demo-report"),
                        help="report folder (default: demo-report); built aside and swapped in when complete")
    add_overwrite_argument(parser)
    parser.add_argument("--quick", action="store_true",
                        help="one category and fewer steps (about 3 minutes on 2 idle CPU cores)")
    parser.add_argument("--detector", choices=DETECTORS, default="draem")
    parser.add_argument("--model", help="diffusion model to use instead of the embedded demo model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto|cuda|mps|cpu")
    add_threads_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anogen.demo_pipeline import DemoConfig, run_demo
    from anogen.jobs import TqdmProgress
    from anogen.outputs import check_output_dir, has_files

    model = Path(args.model) if args.model else None
    check_output_dir(args.out, "demo", overwrite=args.overwrite, recognise=has_files("index.md", "metrics.json"),
                     inputs=[model if model is not None and model.exists() else None])
    config = DemoConfig(out=args.out, quick=args.quick, model=args.model, detector=args.detector,
                        seed=args.seed, device=args.device, threads=args.threads)
    with TqdmProgress("demo") as progress:
        result = run_demo(config, progress)
    print()
    print(result.table())
    print("\n" + result.timing_lines())
    print(f"\nreport: {result.out / 'index.md'}  ({result.seconds / 60:.1f} min)")
    return 0
