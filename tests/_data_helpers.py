"""Tiny MVTec-AD-like folders built with numpy, for the dataset and CLI tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anogen.data.imageio import write_image, write_mask

# The smallest DRAEM that trains and scores: the detector tests' shared config overrides,
# and the same as `anogen train --set` arguments.
TINY_DRAEM = {"image_size": 32, "batch_size": 2, "recon_base_width": 4, "disc_base_width": 4}
TINY_DRAEM_ARGS = [arg for key, value in TINY_DRAEM.items() for arg in ("--set", f"{key}={value}")]


def textured(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A noisy grey surface: enough texture that images differ, small enough to write fast."""
    base = rng.integers(90, 140)
    noise = rng.normal(0, 12, (height, width, 1))
    return np.clip(base + noise + np.zeros((1, 1, 3)), 0, 255).astype(np.uint8)


def make_category(root: Path, *, size: tuple[int, int] = (32, 40), train: int = 3, test_good: int = 2,
                  kinds: Sequence[str] = ("hole", "scratch"), per_kind: int = 2, seed: int = 0) -> Path:
    """Write an MVTec AD category: train/good, test/good, test/<kind> and ground_truth masks.

    Each defect is a dark rectangle painted into the image at a random place, and its mask
    covers exactly that rectangle.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    (root / "train" / "good").mkdir(parents=True, exist_ok=True)
    for index in range(train):
        write_image(root / "train" / "good" / f"{index:03d}.png", textured(rng, height, width))
    for index in range(test_good):
        write_image(root / "test" / "good" / f"{index:03d}.png", textured(rng, height, width))
    for kind in kinds:
        for index in range(per_kind):
            image = textured(rng, height, width)
            y0, x0 = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
            mask = np.zeros((height, width), bool)
            mask[y0:y0 + 6, x0:x0 + 6] = True
            image[mask] = 20
            write_image(root / "test" / kind / f"{index:03d}.png", image)
            write_mask(root / "ground_truth" / kind / f"{index:03d}_mask.png", mask)
    return root


def make_tiny_diffusion(root: Path, train_good: int) -> dict[str, Path]:
    """A tiny SD-1.x model, an embedding that fits it, and ``train_good`` good washer images."""
    import torch

    from anogen.data.demo import write_demo_dataset
    from anogen.diffusion.embedding_file import LearnedEmbedding, save_embedding
    from anogen.diffusion.tiny import TINY_TEXT_WIDTH, build_tiny_model

    model = build_tiny_model(root / "model", "sd1", resolution=32)
    vector = torch.randn(TINY_TEXT_WIDTH, generator=torch.Generator().manual_seed(1))
    embedding = save_embedding(root / "scratch.safetensors",
                               LearnedEmbedding(token="<scratch>", vector=vector, family="sd1"))
    write_demo_dataset(root / "demo", categories=("washer",), size=64, train_good=train_good, test_good=0,
                       test_per_kind=0)
    return {"model": model, "embedding": embedding, "normals": root / "demo" / "washer" / "train" / "good"}


def box_batch(weak: bool, size: int = 64, span: tuple[int, int] = (16, 32)):
    """A detector training batch of 2 images with a square defect over ``span`` (inverted
    pixels, its mask), marked weakly supervised (a generated sample's box) or not."""
    import torch

    from anogen.detection.base import TrainBatch

    lo, hi = span
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(2, 3, size, size, generator=generator)
    image = clean.clone()
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, lo:hi, lo:hi] = 1.0
    image[:, :, lo:hi, lo:hi] = 1.0 - image[:, :, lo:hi, lo:hi]
    return TrainBatch(image=image, clean=clean, mask=mask, weak=torch.tensor([weak, weak]))


def write_hole_category(folder: Path, *, size: int, test_good: int, test_hole: int, hole: int,
                        train_good: int = 4) -> Path:
    """An MVTec AD category of random ``size`` px pictures with a dark ``hole`` x ``hole``
    square on each 'hole' test image, and its mask. Written without fsync (``write_image``
    syncs each file: minutes for hundreds of files on a busy disk)."""
    from anogen.data.imageio import encode_png

    def write(path: Path, array: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(array))

    rng = np.random.default_rng(0)

    def picture() -> np.ndarray:
        return rng.integers(90, 160, (size, size, 3), dtype=np.uint8)

    for i in range(train_good):
        write(folder / "train" / "good" / f"{i:03d}.png", picture())
    for i in range(test_good):
        write(folder / "test" / "good" / f"{i:03d}.png", picture())
    for i in range(test_hole):
        image, mask = picture(), np.zeros((size, size), bool)
        x, y = rng.integers(size // 8, size - hole - size // 8, 2)
        image[y:y + hole, x:x + hole] = 20
        mask[y:y + hole, x:x + hole] = True
        write(folder / "test" / "hole" / f"{i:03d}.png", image)
        write(folder / "ground_truth" / "hole" / f"{i:03d}_mask.png", mask)
    return folder
