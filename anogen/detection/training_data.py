"""Training batches that mix the detector's own synthetic anomalies with generated ones.

Each sample of a batch comes from the detector's own anomaly synthesis with probability
``mix`` (0.5 in the paper), else from the generated set; how either is made follows the
detector's :class:`~anogen.detection.pipeline.DataPipeline` (its official recipe):

* **synthesis**: a random good training image, rotated as the pipeline says, then passed
  through the synthesizer (which leaves the pipeline's share of its samples clean); the
  pixel mask is exact, so ``weak`` is False.
* **generated**: with the pipeline's ``generated_clean_probability`` the sample's
  *source* good image with an all-zero mask (a normal sample); otherwise the generated
  image with its box mask and ``weak=True``. Image, source and box are rotated together.
  The source good image is the reconstruction target (DRAEM) or the teacher's clean
  input (DeSTSeg).

With no generated set every sample comes from synthesis (the plain DRAEM / DeSTSeg
baselines). All images are resized once, up front, to the detector's square input size
and kept in memory as float32 in [0, 1], so building a batch is only synthesis and
copying.

A batch is a pure function of ``(seed, step)``: its random generator is seeded from both.
That keeps training reproducible, lets a prefetch thread build the next batch while the
current step runs, and makes resuming from a checkpoint draw exactly the batches an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anogen.data.generated import GeneratedSample, read_generated_sets
from anogen.data.imageio import read_image, read_mask
from anogen.detection.base import TrainBatch
from anogen.detection.pipeline import DataPipeline
from anogen.detection.preprocess import resize_image, resize_mask
from anogen.errors import InputError


def is_defective(record) -> bool:
    """True for a defective :class:`~anogen.data.datasets.ImageRecord` (label 1)."""
    return bool(record.label)


@dataclass
class GeneratedItem:
    """One generated sample, resized: the image, its box mask and its source good image."""

    id: str
    image: np.ndarray  # float32 (S, S, 3)
    mask: np.ndarray  # float32 (S, S), the box
    clean: np.ndarray  # float32 (S, S, 3), the source good image
    defect_kind: str = ""


def _resolve_source(sample: GeneratedSample, set_folder: Path, search_dirs: Sequence[Path],
                    by_name: dict[str, Path]) -> Path | None:
    """Find the good image a generated sample came from.

    ``source`` is kept in the manifest as given, so it may be absolute, relative to the
    set folder, relative to the category folder, or (after the data moved) only a file
    name that still exists among the category's good training images.
    """
    source = Path(sample.source)
    if source.is_absolute():
        if source.is_file():
            return source
    else:
        for base in (set_folder, *search_dirs):
            candidate = base / source
            if candidate.is_file():
                return candidate
    return by_name.get(source.name)


def load_generated_items(folders: str | os.PathLike | Sequence[str | os.PathLike], size: int, *,
                         good_paths: Sequence[Path] = (),
                         search_dirs: Sequence[Path] = ()) -> list[GeneratedItem]:
    """Read one generated set or several (a category's defect kinds), drop rejected
    samples, and resize everything to ``size``.

    Raises :class:`InputError` when a set has no usable sample, when a sample's source
    good image cannot be found, or when image, mask and source differ in size.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    samples = [(folder, sample) for folder, sample in read_generated_sets(folders) if sample.usable]
    for folder in map(Path, folders):
        if not any(f == folder for f, _ in samples):
            raise InputError(f"{folder}: the generated set has no usable samples "
                             "(it is empty or every sample was rejected)")
    by_name = {Path(p).name: Path(p) for p in good_paths}
    items: list[GeneratedItem] = []
    sources: dict[Path, np.ndarray] = {}
    for folder, sample in samples:
        source_path = _resolve_source(sample, folder, search_dirs, by_name)
        if source_path is None:
            looked = ", ".join(map(str, search_dirs)) or "no other folder"
            raise InputError(f"{folder}: sample {sample.id}: its source good image '{sample.source}' was not "
                             f"found (looked next to the set, in {looked}"
                             " and among the good training images by name)")
        image = sample.load_image()
        mask = read_mask(sample.mask_path, expected_size=image.shape[:2], image_path=sample.image_path)
        if not mask.any():
            raise InputError(f"{sample.mask_path}: the box mask of sample {sample.id} is empty")
        if source_path not in sources:
            sources[source_path] = read_image(source_path)
        source = sources[source_path]
        if source.shape[:2] != image.shape[:2]:
            raise InputError(
                f"{folder}: sample {sample.id}: generated image is {image.shape[1]}x{image.shape[0]} but its "
                f"source {source_path} is {source.shape[1]}x{source.shape[0]}; they must be the same size")
        items.append(GeneratedItem(id=sample.id, image=resize_image(image, size), mask=resize_mask(mask, size),
                                   clean=resize_image(source, size), defect_kind=sample.defect_kind))
    return items


class MixedBatchSampler:
    """Builds :class:`TrainBatch` es from synthesis and (optionally) generated sets.

    ``good_images`` are the good training images, already float32 ``(S, S, 3)``;
    ``synthesizer`` has ``sample(image, rng) -> SynthesisResult(image, mask, has_anomaly)``;
    ``pipeline`` is the detector's recipe (see :mod:`anogen.detection.pipeline`).
    """

    def __init__(self, good_images: Sequence[np.ndarray], synthesizer, *, pipeline: DataPipeline,
                 generated: Sequence[GeneratedItem] = (), mix: float = 0.5, seed: int = 0) -> None:
        if not good_images:
            raise InputError("there are no good training images to synthesise anomalies on")
        if not 0.0 <= mix <= 1.0:
            raise InputError(f"mix must be between 0 and 1 (the share of synthetic samples), got {mix}")
        if mix == 0.0 and not generated:
            raise InputError("mix 0 trains on generated samples only, but no generated set was given")
        size = good_images[0].shape[0]
        for array in list(good_images) + [g.image for g in generated]:
            if array.shape != (size, size, 3):
                raise InputError(f"all training images must be resized to {size}x{size}; got {array.shape}")
        self.good_images = list(good_images)
        self.synthesizer = synthesizer
        self.pipeline = pipeline
        self.generated = list(generated)
        # Without a generated set every sample is synthetic (the plain baseline).
        self.mix = mix if self.generated else 1.0
        self.seed = int(seed)
        self.size = size

    def rng_for(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(step)])

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """One sample: ``(image, clean, mask, weak)`` as float32 arrays (HWC, HWC, HW)."""
        rotation = self.pipeline.rotation
        if rng.random() < self.mix:
            good = self.good_images[int(rng.integers(len(self.good_images)))]
            (good,), _ = rotation.apply(rng, (good,))
            result = self.synthesizer.sample(good, rng)
            image = np.asarray(result.image, dtype=np.float32)
            mask = np.asarray(result.mask, dtype=np.float32)
            if mask.ndim == 3:
                mask = mask[..., 0]
            return image, good, mask, False
        item = self.generated[int(rng.integers(len(self.generated)))]
        if rng.random() < self.pipeline.generated_clean_probability:
            # A clean draw: the good image itself is normal everywhere.
            (clean,), _ = rotation.apply(rng, (item.clean,))
            return clean, clean, np.zeros(clean.shape[:2], np.float32), False
        (image, clean), (mask,) = rotation.apply(rng, (item.image, item.clean), (item.mask,))
        return image, clean, mask, True

    def batch_arrays(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """The batch for ``step`` as NCHW numpy arrays (deterministic in ``(seed, step)``)."""
        rng = self.rng_for(step)
        samples = [self.sample(rng) for _ in range(batch_size)]
        return {
            "image": np.stack([s[0] for s in samples]).transpose(0, 3, 1, 2),
            "clean": np.stack([s[1] for s in samples]).transpose(0, 3, 1, 2),
            "mask": np.stack([s[2] for s in samples])[:, None],
            "weak": np.array([s[3] for s in samples], dtype=bool),
        }

    def batch(self, step: int, batch_size: int, device: torch.device | str = "cpu") -> TrainBatch:
        return to_train_batch(self.batch_arrays(step, batch_size), device)


def to_train_batch(arrays: dict[str, np.ndarray], device: torch.device | str) -> TrainBatch:
    return TrainBatch(
        image=torch.from_numpy(np.ascontiguousarray(arrays["image"], dtype=np.float32)).to(device),
        clean=torch.from_numpy(np.ascontiguousarray(arrays["clean"], dtype=np.float32)).to(device),
        mask=torch.from_numpy(np.ascontiguousarray(arrays["mask"], dtype=np.float32)).to(device),
        weak=torch.from_numpy(arrays["weak"]).to(device),
    )


class BatchPrefetcher:
    """Builds the batch for the next step on a worker thread while the current one trains.

    numpy and OpenCV release the GIL for most of the synthesis work, so this hides the
    data time behind the training step. Batches stay deterministic because each depends
    only on ``(seed, step)``. ``share`` keeps only those samples of each batch (one
    process's part in data-parallel training, :func:`anogen.detection.parallel.batch_share`).
    """

    def __init__(self, sampler: MixedBatchSampler, batch_size: int, device: torch.device | str, *,
                 share: slice | None = None) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.device = device
        self.share = share
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anogen-batches")
        self._pending: dict[int, Future] = {}

    def _share_of(self, step: int) -> dict[str, np.ndarray]:
        arrays = self.sampler.batch_arrays(step, self.batch_size)
        return {key: value[self.share] for key, value in arrays.items()}

    def _submit(self, step: int) -> None:
        if step not in self._pending:
            if self.share is None:
                self._pending[step] = self._pool.submit(self.sampler.batch_arrays, step, self.batch_size)
            else:
                self._pending[step] = self._pool.submit(self._share_of, step)

    def get(self, step: int, *, prefetch_next: bool = True) -> TrainBatch:
        self._submit(step)
        arrays = self._pending.pop(step).result()
        if prefetch_next:
            self._submit(step + 1)
        return to_train_batch(arrays, self.device)

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
