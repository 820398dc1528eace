"""The jobs the panels start: thin compositions of library calls, run on the engine thread.

Each is a job function ``fn(config, progress, cancel)`` (see :mod:`anogen.jobs`). They
only chain ``anogen`` functions (load a model, learn, save; generate; train; predict);
no pixel or file-format work happens here. Imports of torch and diffusers stay inside
the functions so the window opens fast.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anogen.detection.options import CHECKPOINT_CHOICES, EXPORT_FORMAT_NAMES
from anogen.detection.train_config import TrainConfig
from anogen.diffusion.config import PER_IMAGE, SAMPLES_PER_BOX, GenerateConfig, LearnConfig
from anogen.jobs import Progress, ProgressFn, check_cancel

if TYPE_CHECKING:
    from anogen.data.boxes import BoxRule, ForegroundMethod

# ============================================================================ stage 1


# The panels build the library's configs themselves (anogen.diffusion.config and
# anogen.detection.train_config import no torch), so a misspelt field fails at once in
# the window, not later in a background job.


@dataclass
class LearnTask:
    model: str
    learn: LearnConfig
    out: Path   # the embedding file inside the project


def run_learn(task: LearnTask, progress: ProgressFn, cancel: threading.Event) -> Path:
    """Load the model, learn the defect kind's embedding, save it (atomic)."""
    from anogen.diffusion.embedding_file import save_embedding
    from anogen.diffusion.learn import learn_embedding
    from anogen.diffusion.models import load_model

    config = task.learn
    progress(Progress(0, config.steps, "loading the model"))
    model = load_model(task.model, device=config.device, precision=config.precision)
    check_cancel(cancel)
    result = learn_embedding(model, config, progress, cancel)
    check_cancel(cancel)
    task.out.parent.mkdir(parents=True, exist_ok=True)
    return save_embedding(task.out, result)


def check_model(source: str, progress: ProgressFn, cancel: threading.Event) -> str:
    """Validate a model choice: folders by their layout (fast), anything else by loading it."""
    from anogen.diffusion.models import detect_family, load_model

    path = Path(source).expanduser()
    if path.is_dir():
        layout = detect_family(path)
        return f"{layout.family}{' inpainting' if layout.is_inpainting else ''} model folder"
    model = load_model(source, device="cpu")
    return model.description


@dataclass
class ImportTask:
    workspace: Any  # anogen.data.workspace.Workspace: the images are added to it as they are copied
    kind: str
    paths: list[Path]
    max_side: int | None = None  # shrink images whose longer side is above this; None keeps originals


@dataclass
class ImportResult:
    added: int
    downscaled: int
    problems: list[str]  # images refused, with the reason


def run_import(task: ImportTask, progress: ProgressFn, cancel: threading.Event) -> ImportResult:
    """Copy defect photos into a defect kind, shrinking the very large ones when asked.

    Reading a 6000x4000 photo to validate it takes seconds, hence a job. Each image is
    added whole (atomic copy), so a cancel keeps the images already imported.
    """
    import tempfile

    from anogen.data.imageio import image_size, write_downscaled
    from anogen.errors import AnoGenError

    result = ImportResult(0, 0, [])
    with tempfile.TemporaryDirectory(prefix="anogen-import-") as scratch:
        for index, path in enumerate(task.paths):
            check_cancel(cancel)
            progress(Progress(index, len(task.paths), f"importing {path.name}"))
            try:
                source = path
                if task.max_side is not None and max(image_size(path)) > task.max_side:
                    # Same file name in a scratch folder: the project copy keeps the user's name.
                    source = Path(scratch) / str(index) / path.name
                    source.parent.mkdir()
                    write_downscaled(path, source, task.max_side)
                    result.downscaled += 1
                task.workspace.add_support_image(task.kind, source)
                result.added += 1
            except AnoGenError as exc:
                result.problems.append(str(exc))
    progress(Progress(len(task.paths), len(task.paths), "imported"))
    return result


# ============================================================================ stage 2


@dataclass
class PreviewTask:
    model: str
    embedding: Path
    image: Path
    box: tuple[int, int, int, int]
    seed: int
    generate: GenerateConfig
    device: str = "auto"
    shapes: list[Path] | None = None  # defect masks whose outlines are painted (anogen.diffusion.shapes)


@dataclass
class PreviewResult:
    source: np.ndarray
    image: np.ndarray
    box: tuple[int, int, int, int]
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)  # the stage-2 settings it was painted with
    mask: np.ndarray | None = None  # the painted defect outline when there was one (None: the box)


def run_preview(task: PreviewTask, progress: ProgressFn, cancel: threading.Event) -> PreviewResult:
    """Generate one sample in one box, sending intermediate previews while it denoises."""
    from anogen.data.box import Box
    from anogen.data.imageio import read_image, read_mask
    from anogen.diffusion.embedding_file import apply_embedding, load_embedding
    from anogen.diffusion.models import load_model
    from anogen.diffusion.sampler import GenerationRequest, as_learned, generate, label_mask, sample_settings
    from anogen.diffusion.shapes import defect_outlines, draw_shape

    progress(Progress(0, task.generate.steps, "loading the model"))
    model = load_model(task.model, device=task.device)
    embedding = load_embedding(task.embedding)
    token = apply_embedding(model, embedding)
    config = as_learned(task.generate, embedding, model)  # as the generated set paints
    source = read_image(task.image)
    box = Box(*task.box)
    shape = None
    if task.shapes:  # the outline the generated set would draw for this seed
        outlines = defect_outlines([read_mask(path) for path in task.shapes])
        shape = draw_shape(outlines, box, source.shape[0], source.shape[1], task.seed)
    check_cancel(cancel)
    request = GenerationRequest(source, box, task.seed, shape)
    [result] = generate(model, token, [request], config, progress, cancel)
    return PreviewResult(source, result.image, task.box, task.seed, sample_settings(config, request),
                         label_mask(request, result))


@dataclass
class GenerateTask:
    model: str
    embedding: Path
    normals: list[Path]
    out: Path
    defect_kind: str
    per_image: int = PER_IMAGE
    samples_per_box: int = SAMPLES_PER_BOX
    boxes: dict[str, list] | None = None  # {image name: [anogen.data.box.Box]}; None = propose
    size_range: Any = None  # anogen.data.boxes.BoxSizeRange
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    device: str = "auto"
    shapes: list[Path] | None = None  # defect masks whose outlines are painted (anogen.diffusion.shapes)


def run_generate(task: GenerateTask, progress: ProgressFn, cancel: threading.Event) -> Path:
    from anogen.data.imageio import read_mask
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set

    shapes = [read_mask(path) for path in task.shapes] if task.shapes else None
    generate_set(GenerateSetConfig(model=task.model, embedding=task.embedding, normals=task.normals, out=task.out,
                                   per_image=task.per_image, samples_per_box=task.samples_per_box, boxes=task.boxes,
                                   size_range=task.size_range, generation=task.generate,
                                   defect_kind=task.defect_kind, device=task.device, shapes=shapes),
                 progress, cancel)
    return task.out


@dataclass
class RegenerateTask:
    preview: PreviewTask
    set_folder: Path
    sample_image: Path  # the sample's image file inside the set, replaced atomically


def run_regenerate(task: RegenerateTask, progress: ProgressFn, cancel: threading.Event) -> PreviewResult:
    """Generate the sample again with a new seed and replace its image and manifest line."""
    from anogen.data.box import Box
    from anogen.data.generated import read_generated_set, write_manifest
    from anogen.data.imageio import write_image, write_mask

    result = run_preview(task.preview, progress, cancel)
    check_cancel(cancel)
    samples = read_generated_set(task.set_folder)
    for sample in samples:
        if sample.image_path.resolve() == task.sample_image.resolve():
            # Its mask follows the new image: the new outline, or the box again after one.
            if result.mask is not None:
                write_mask(sample.mask_path, result.mask)
            elif "shape" in sample.settings:
                write_mask(sample.mask_path, Box(*result.box).to_mask(*result.image.shape[:2]))
            # The manifest line says how the new image was made.
            generation = task.preview.generate
            sample.seed, sample.steps, sample.guidance = task.preview.seed, generation.steps, generation.guidance
            sample.settings = result.settings
            sample.status = "pending"
    write_image(task.sample_image, result.image)
    write_manifest(task.set_folder, samples)
    return result


@dataclass
class ProposeTask:
    images: list[Path]
    size_range: Any  # BoxSizeRange
    per_image: int = 2
    seed: int = 0
    foreground: ForegroundMethod = "grabcut"  # grabcut | otsu | all (textures: the whole image is the part)
    rule: BoxRule = "inside"  # inside | iou


@dataclass
class ProposeResult:
    boxes: dict[Path, list]  # {image path: [anogen.data.box.Box]}
    problems: list[str]  # images where no box fits, with the proposer's reason


def run_propose(task: ProposeTask, progress: ProgressFn, cancel: threading.Event) -> ProposeResult:
    """Propose boxes with the library's proposer for each image; an image where no box
    fits is reported, the others keep their boxes."""
    from anogen.data.boxes import foreground_mask, image_seed, propose_boxes
    from anogen.data.imageio import read_image
    from anogen.errors import InputError

    result = ProposeResult({}, [])
    for index, path in enumerate(task.images):
        check_cancel(cancel)
        image = read_image(path)
        try:
            result.boxes[path] = propose_boxes(image, task.size_range, task.per_image,
                                               foreground=foreground_mask(image, task.foreground),
                                               rule=task.rule, seed=image_seed(task.seed, path.name))
        except InputError as exc:
            result.problems.append(f"{path.name}: {exc}")
        progress(Progress(index + 1, len(task.images), path.name))
    return result


# ============================================================================ stage 3


#: The app's own value of TrainConfig.preset: the paper preset on a GPU, the quick one on a
#: CPU. :func:`run_train` resolves it on the job thread (asking torch for a GPU is slow).
AUTO_PRESET = "auto"


def run_train(config: TrainConfig, progress: ProgressFn, cancel: threading.Event) -> Any:
    """Train a detector; ``config.preset`` may be :data:`AUTO_PRESET`."""
    import torch

    from anogen.detection.train import train

    if config.preset == AUTO_PRESET:
        config = replace(config, preset="paper" if torch.cuda.is_available() else "quick")
    return train(config, progress, cancel)


@dataclass
class TestTask:
    """A Test of a trained detector, scored as ``anogen evaluate`` scores it (same protocol and
    checkpoint defaults, same exclusions, same resolution, every test image)."""

    data_dir: Path
    detector_dir: Path
    exclude: Sequence[Path] = ()  # the project's support images (those named at training are excluded too)
    device: str = "auto"
    batch_size: int = 8  # evaluate's default: the same batches give the same numbers

    __test__ = False  # not a pytest test class, whatever its name


@dataclass
class TestImage:
    path: Path
    label: int
    defect_kind: str
    score: float
    normalised: float
    anomaly_map: np.ndarray | None  # float32 (H, W) in [0, 1]; None for results read back from the project


@dataclass
class TestResults:
    images: list[TestImage]
    metrics: dict[str, Any]
    roc: tuple[np.ndarray, np.ndarray] | None = None  # fpr, tpr
    pr: tuple[np.ndarray, np.ndarray] | None = None  # recall, precision
    threshold: float = 0.5  # the detector's calibrated image threshold, as a normalised score
    notes: list[str] = field(default_factory=list)


def run_test(task: TestTask, progress: ProgressFn, cancel: threading.Event) -> TestResults:
    """Score the test images of the dataset: heat maps, metrics, ROC and PR curves.

    The scoring and the metrics are :func:`anogen.detection.evaluate.score_test_set`, the
    core of ``anogen evaluate``: the app shows the numbers the CLI prints.
    """
    from anogen.detection.checkpoint import require_complete_run
    from anogen.detection.evaluate import resolve_protocol, score_test_set
    from anogen.errors import InputError
    from anogen.metrics import pr_curve_points, roc_curve_points

    protocol, which = resolve_protocol(task.detector_dir)
    incomplete = require_complete_run(task.detector_dir, which, allow_incomplete=True)
    scored = score_test_set(task.data_dir, task.detector_dir, list(task.exclude), protocol=protocol, which=which,
                            device=task.device, batch_size=task.batch_size, progress=progress, cancel=cancel)
    images = [TestImage(Path(record.path), int(label), str(record.defect_kind), float(score), float(normalised),
                        np.clip(anomaly_map, 0.0, 1.0).astype(np.float32))
              for record, label, score, normalised, anomaly_map in zip(scored.records, scored.labels, scored.scores,
                                                                       scored.normalised, scored.maps)]
    report = scored.metrics
    results = TestResults(images, report.to_json(), notes=([incomplete] if incomplete else []) + list(report.notes))
    try:
        fpr, tpr, _ = roc_curve_points(scored.scores, scored.labels)
        results.roc = (fpr, tpr)
        recall, precision, _ = pr_curve_points(scored.scores, scored.labels)
        results.pr = (recall, precision)
    except InputError as exc:  # one class only: no curves, the note says why
        results.notes.append(str(exc))
    results.threshold = 0.5  # normalised scores put the calibrated threshold at 0.5
    return results


@dataclass
class ExportTask:
    detector_dir: Path
    out: Path | None = None
    format: str = "onnx"  # one of anogen.detection.options.EXPORT_FORMATS


def run_export(task: ExportTask, progress: ProgressFn, cancel: threading.Event) -> Any:
    """``anogen export`` for the app: the same exporters and the same output rules (an
    OpenVINO folder that anogen did not write is refused, never replaced)."""
    from anogen.detection.export import export_onnx, export_openvino
    from anogen.outputs import check_output_dir

    progress(Progress(0, 1, f"exporting to {EXPORT_FORMAT_NAMES[task.format]}"))
    check_cancel(cancel)
    if task.format == "openvino":
        if task.out is not None:
            check_output_dir(task.out, "export", option="the export folder",
                             inputs=[task.detector_dir / which for which in CHECKPOINT_CHOICES],
                             hint="it is left as it is: choose a new folder name")
        result = export_openvino(task.detector_dir, task.out)
    else:
        result = export_onnx(task.detector_dir, task.out)
    progress(Progress(1, 1, "exported"))
    return result
