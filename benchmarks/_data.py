"""Benchmark data written on the fly: ImageNet-like JPEG trees, an STL-10 binary release, an
index-only tree of empty files. Nothing is downloaded.

Photographs: the real colour photographs bundled with scikit-image (astronaut, coffee, Chelsea
the cat, motorcycles, rocket, Hubble deep field, retina) when it is installed, and always the
two bundled with scikit-learn (a project dependency): a Chinese temple and a flower. Each
benchmark image is a random region of one of them, resized (never enlarged beyond the source's
own resolution where it can be avoided) to ImageNet's typical 500x375 (landscape), 375x500
(portrait) or 500x333, and saved as a baseline 4:2:0 JPEG.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
# (width, height, probability): ImageNet's most common shapes
SHAPES = ((500, 375, 0.6), (375, 500, 0.2), (500, 333, 0.2))


def photo_sources() -> list[Path]:
    """Paths of the bundled real photographs available in this environment."""
    import sklearn.datasets

    sources = [Path(sklearn.datasets.__file__).parent / "images" / n for n in SKLEARN_PHOTOS]
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        sources += [folder / n for n in SKIMAGE_PHOTOS if (folder / n).is_file()]
    except ImportError:
        pass
    return [p for p in sources if p.is_file()]


def write_photo_tree(
    root: str | Path,
    classes: int,
    per_class: int,
    quality: int = 97,
    seed: int = 0,
    wnid_offset: int = 0,
) -> list[Path]:
    """``root/<wnid>/<name>.JPEG`` cut from the bundled photographs; returns the files."""
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in photo_sources()]
    if not photos:
        raise RuntimeError("no bundled photographs found (scikit-learn is a dependency)")
    shapes = [(w, h) for w, h, _ in SHAPES]
    probs = np.array([p for _, _, p in SHAPES])
    files = []
    for c in range(classes):
        folder = Path(root) / f"n{wnid_offset + c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            photo = photos[rng.integers(len(photos))]
            out_w, out_h = shapes[rng.choice(len(shapes), p=probs)]
            aspect = out_w / out_h
            src_w, src_h = photo.size
            full_w = min(src_w, src_h * aspect)  # largest region of this aspect
            # prefer regions at least as large as the output (downscaling, like a camera photo)
            lo = min(1.0, out_w / full_w) if full_w >= out_w else 0.6
            crop_w = full_w * rng.uniform(lo, 1.0)
            crop_h = crop_w / aspect
            left = rng.uniform(0, src_w - crop_w)
            top = rng.uniform(0, src_h - crop_h)
            image = photo.resize(
                (out_w, out_h),
                Image.Resampling.LANCZOS,
                box=(left, top, left + crop_w, top + crop_h),
            )
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            path = folder / f"n{wnid_offset + c:08d}_{i:05d}.JPEG"
            image.save(path, "JPEG", quality=quality)
            files.append(path)
    return files


def write_stl10_release(folder: str | Path, train: int, test: int, seed: int = 0) -> Path:
    """A synthetic ``stl10_binary/`` in the official on-disk format.

    ``*_X.bin``: uint8 images of 3x96x96, one channel plane after another, each plane stored
    column-major (as the official Matlab-born files); ``*_y.bin``: one uint8 label 1..10 per
    image; ``class_names.txt``; ``fold_indices.txt`` with 10 lines of 0-based indices. Pixel
    values are smooth random fields, not noise (augmentation cost does not depend on them).
    """
    folder = Path(folder) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        coarse = rng.integers(0, 256, size=(count, 3, 12, 12), dtype=np.uint8)
        images = coarse.repeat(8, axis=2).repeat(8, axis=3)  # (N, C, H, W) row-major
        # store each plane column-major: (N, C, W, H) row-major bytes
        images.transpose(0, 1, 3, 2).copy().tofile(folder / f"{split}_X.bin")
        labels = (np.arange(count) % 10 + 1).astype(np.uint8)
        rng.shuffle(labels)
        labels.tofile(folder / f"{split}_y.bin")
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    fold = max(1, min(1000, train // 5))
    lines = [" ".join(str(i) for i in rng.permutation(train)[:fold]) for _ in range(10)]
    (folder / "fold_indices.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_empty_tree(root: str | Path, classes: int, per_class: int, age_s: float = 120.0) -> int:
    """``root/<wnid>/<name>.JPEG`` as empty files (enough for indexing); returns the count.

    Folder modification times are set ``age_s`` into the past: the index cache distrusts folders
    modified within seconds of a scan (coarse file-system timestamps), and a benchmark that
    scans a tree it has just written would otherwise never see a cache hit.
    """
    root = Path(root)
    count = 0
    folders = []
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(folder)
        for i in range(per_class):
            with open(folder / f"n{c:08d}_{i:06d}.JPEG", "wb"):
                pass
            count += 1
    past = time.time() - age_s
    for folder in [*folders, root]:
        os.utime(folder, (past, past))
    return count
