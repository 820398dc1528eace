"""``python -m anogen.selftest``: check that an installation (or a frozen app) works.

Runs four checks on the CPU and prints one ``PASS``/``FAIL`` line for each:

1. ``imports``   every module of the ``anogen`` package imports (in a frozen app this
   catches a module or data file PyInstaller left out);
2. ``model``     the embedded demo model loads; when it is not there, a tiny random
   model built in a temporary folder stands in, and the line says so;
3. ``generate``  one stage-2 generation with 2 DDIM steps paints inside a box and
   leaves every pixel outside it unchanged;
4. ``detector``  one DRAEM training step (small widths, 64 px) gives a finite loss
   and changes the weights.

Exit code 0 when every check passed, 1 otherwise. Nothing is written outside a
temporary folder, which is removed at the end. The app's ``--selftest`` calls
:func:`run_selftest` with its own package added to the import check.
"""

from __future__ import annotations

import argparse
import importlib
import io
import pkgutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from anogen.diffusion.models import DiffusionModel

# Modules the import check must not import: running them has side effects
# (``__main__`` calls the CLI and exits).
SKIPPED_MODULES = ("__main__",)

SELFTEST_TOKEN = "<selftest-defect>"


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    seconds: float

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail} ({self.seconds:.1f} s)"


@dataclass
class _Context:
    """What the checks hand on to each other."""

    workdir: Path
    force_tiny: bool
    model: DiffusionModel | None = None


def package_modules(package_name: str) -> list[str]:
    """Every module and sub-package of ``package_name``, sorted, ``__main__`` left out.

    Uses :func:`pkgutil.walk_packages`, which PyInstaller's frozen importer supports, so
    the same list comes out of a source checkout and a bundle.
    """
    package = importlib.import_module(package_name)
    names = [package_name]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
        if info.name.rsplit(".", 1)[-1] not in SKIPPED_MODULES:
            names.append(info.name)
    return sorted(set(names))


def check_imports(packages: Sequence[str]) -> str:
    failures: list[str] = []
    count = 0
    for package_name in packages:
        for name in package_modules(package_name):
            count += 1
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - report every broken module, not just the first
                failures.append(f"{name} ({exc.__class__.__name__}: {exc})")
    if count < 2:
        # A frozen importer that cannot list modules would make this check vacuous.
        raise RuntimeError(f"found only {count} module(s) in {', '.join(packages)}; cannot list the package")
    if failures:
        raise RuntimeError(f"{len(failures)} of {count} modules failed: " + "; ".join(failures))
    return f"{count} modules of {', '.join(packages)}"


def _quiet_progress_bars() -> None:
    """Loading prints tqdm bars on stderr; a self-test report should be its PASS lines."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _load_model(context: _Context) -> str:
    from anogen.diffusion.models import load_model
    from anogen.errors import ModelError
    from anogen.resources import demo_model_path

    _quiet_progress_bars()
    note = ""
    folder: Path | None = None
    if not context.force_tiny:
        try:
            folder = demo_model_path()
        except ModelError as exc:
            note = f"demo model not found ({exc}); "
    if folder is None:
        from anogen.diffusion.tiny import build_tiny_model

        folder = build_tiny_model(context.workdir / "tiny-model", "sd1")
        note += "used a tiny random model built in a temporary folder"
    else:
        note = f"demo model {folder}"
    context.model = load_model(folder, device="cpu")
    return f"{note}: {context.model.description}"


def check_generation(context: _Context) -> str:
    import numpy as np
    import torch

    from anogen.data.box import Box
    from anogen.diffusion.config import GenerateConfig
    from anogen.diffusion.embedding_file import LearnedEmbedding, apply_embedding
    from anogen.diffusion.sampler import GenerationRequest, generate

    model = context.model
    if model is None:
        raise RuntimeError("no model (the model check failed)")
    # A random vector stands in for a learned one: this checks the machinery, not quality.
    vector = torch.randn(model.token_width, generator=torch.Generator().manual_seed(0))
    token = apply_embedding(model, LearnedEmbedding(token=SELFTEST_TOKEN, vector=vector, family=model.family))

    side = 96
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    box = Box(32, 32, 64, 64)
    config = GenerateConfig(steps=2, guidance=5.0, batch_size=1)
    [result] = generate(model, token, [GenerationRequest(image=image, box=box, seed=0)], config)

    output = result.image
    if output.shape != image.shape or output.dtype != np.uint8:
        raise RuntimeError(f"output is {output.shape} {output.dtype}, expected {image.shape} uint8")
    inside = box.to_mask(side, side)
    changed = (output != image).any(axis=2)
    if changed[~inside].any():
        raise RuntimeError(f"{int(changed[~inside].sum())} pixels outside the box changed")
    if not changed[inside].any():
        raise RuntimeError("nothing was painted inside the box")
    return (f"2 DDIM steps, {side}x{side} image, {int(changed[inside].sum())} of {int(inside.sum())} "
            "box pixels repainted")


def check_detector(context: _Context) -> str:
    import torch

    from anogen.detection.base import TrainBatch
    from anogen.detection.registry import build_detector

    torch.manual_seed(0)
    detector = build_detector("draem", "quick", {"image_size": 64, "recon_base_width": 8,
                                                 "disc_base_width": 8, "batch_size": 2, "steps": 1})
    detector.train()
    phase = detector.training_phases(1)[0]
    size = 64
    clean = torch.rand(2, 3, size, size)
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, 16:40, 20:44] = 1.0
    image = clean * (1 - mask) + torch.rand_like(clean) * mask
    batch = TrainBatch(image=image, clean=clean, mask=mask, weak=torch.tensor([True, False]))

    before = [p.detach().clone() for p in detector.parameters()]
    loss, parts = detector.training_loss(batch, phase.name, tau=0.9)
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss is not finite: {loss.item()}")
    phase.optimizer.zero_grad()
    loss.backward()
    phase.optimizer.step()
    moved = sum(not torch.equal(a, b.detach()) for a, b in zip(before, detector.parameters()))
    if moved == 0:
        raise RuntimeError("the optimiser step changed no weight")
    anomaly_map, scores = detector.eval().predict(image)
    if anomaly_map.shape != (2, 1, size, size) or scores.shape != (2,):
        raise RuntimeError(f"predict gave maps {tuple(anomaly_map.shape)} and scores {tuple(scores.shape)}")
    components = ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
    return f"DRAEM step, loss {loss.item():.3f} ({components}), {moved} weight tensors updated"


def _timed(name: str, check: Callable[[], str]) -> CheckResult:
    start = time.perf_counter()
    try:
        detail = check()
        passed = True
    except Exception as exc:  # noqa: BLE001 - a self-test reports every failure
        detail = f"{exc.__class__.__name__}: {exc}"
        # The last frame names the failing line: enough to diagnose a frozen app.
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        if frame:
            detail += f" [{Path(frame[0].filename).name}:{frame[0].lineno}]"
        passed = False
    return CheckResult(name, passed, detail, time.perf_counter() - start)


def run_selftest(packages: Sequence[str] = ("anogen",), *, tiny_model: bool = False,
                 out: TextIO | None = None) -> int:
    """Run every check, print one line each and a summary; 0 when all passed, else 1."""
    import anogen

    # A windowed frozen app on Windows has no stdout; the exit code still tells.
    out = out or sys.stdout or sys.stderr or io.StringIO()

    print(f"anogen {anogen.__version__} self-test ({'frozen app' if getattr(sys, 'frozen', False) else 'python'} "
          f"{sys.version.split()[0]})", file=out, flush=True)
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="anogen-selftest-") as workdir:
        context = _Context(workdir=Path(workdir), force_tiny=tiny_model)
        checks: list[tuple[str, Callable[[], str]]] = [
            ("imports", lambda: check_imports(packages)),
            ("model", lambda: _load_model(context)),
            ("generate", lambda: check_generation(context)),
            ("detector", lambda: check_detector(context)),
        ]
        for name, check in checks:
            result = _timed(name, check)
            results.append(result)
            print(result.line(), file=out, flush=True)
    failed = [r.name for r in results if not r.passed]
    summary = f"FAIL ({', '.join(failed)})" if failed else "PASS"
    print(f"selftest: {summary}, {len(results) - len(failed)}/{len(results)} checks passed", file=out, flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anogen.selftest",
                                     description="Check that AnoGen works here (CPU, about a minute at most).")
    parser.add_argument("--tiny-model", action="store_true",
                        help="use a tiny random model even when the demo model is there (faster)")
    args = parser.parse_args(argv)
    return run_selftest(tiny_model=args.tiny_model)


if __name__ == "__main__":
    sys.exit(main())
