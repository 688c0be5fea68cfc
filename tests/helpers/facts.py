"""Data whose expected outputs are known from outside the code under test.

* STL-10 binaries written from the format's own description (the STL-10 page: each image is
  3 planes R, G, B of 96 x 96 bytes, each plane stored column-major; torchvision's ``STL10``
  reader does ``reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)``), so a test chooses every pixel.
* An image whose pixels encode their own coordinates, so the crop box a transform took can be
  measured from its output.
* A devkit ``meta.mat`` in ILSVRC2012_ID order, as the real file is, with real synsets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from helpers.data import synsets_mat

# ---------------------------------------------------------------------------- STL-10
STL10_SIDE = 96


def write_stl10_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """``<split>_X.bin`` and ``<split>_y.bin`` from row-major ``(N, 3, 96, 96)`` uint8 images and
    0-based labels, in the official layout (column-major planes, labels 1..10)."""
    folder.mkdir(parents=True, exist_ok=True)
    assert images.shape[1:] == (3, STL10_SIDE, STL10_SIDE) and images.dtype == np.uint8
    (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.swapaxes(2, 3)).tobytes())
    (folder / f"{split}_y.bin").write_bytes((np.asarray(labels) + 1).astype(np.uint8).tobytes())


def stl10_coordinate_image() -> np.ndarray:
    """``(3, 96, 96)``: red rises left to right, green top to bottom, blue constant.

    A mirrored copy has red falling left to right; a shifted copy has other values at the centre.
    """
    side = np.arange(STL10_SIDE, dtype=np.uint8) * 2  # 0..190
    image = np.empty((3, STL10_SIDE, STL10_SIDE), dtype=np.uint8)
    image[0] = side[None, :]
    image[1] = side[:, None]
    image[2] = 77
    return image


# ---------------------------------------------------------------------------- crop geometry
COORD_SIDE = 64
COORD_STEP = 4  # value per source pixel: 64 pixels span 0..252


def coordinate_png(path: Path) -> Path:
    """A lossless ``COORD_SIDE``-square RGB image: red = 4 * column, green = 4 * row."""
    ramp = np.arange(COORD_SIDE, dtype=np.uint8) * COORD_STEP
    pixels = np.empty((COORD_SIDE, COORD_SIDE, 3), dtype=np.uint8)
    pixels[..., 0] = ramp[None, :]
    pixels[..., 1] = ramp[:, None]
    pixels[..., 2] = 128
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, "PNG")
    return path


def measure_crop(image: torch.Tensor) -> tuple[float, float, bool]:
    """(width, height) of the source region a ``(3, S, S)`` output of :func:`coordinate_png`
    shows, as fractions of the source side, and whether it is mirrored left to right.

    Resizing keeps a linear ramp linear, so the slope of red across output columns is
    ``COORD_STEP * width_in_source_pixels / S`` (green likewise down the rows).
    """
    size = image.shape[-1]
    positions = np.arange(size, dtype=np.float64)
    red = image[0].double().mean(dim=0).numpy()  # by column
    green = image[1].double().mean(dim=1).numpy()  # by row
    red_slope = np.polyfit(positions, red, 1)[0]
    green_slope = np.polyfit(positions, green, 1)[0]
    width = abs(red_slope) * size / COORD_STEP / COORD_SIDE
    height = abs(green_slope) * size / COORD_STEP / COORD_SIDE
    return float(width), float(height), bool(red_slope < 0)


# ---------------------------------------------------------------------------- ImageNet devkit
# The first three ILSVRC2012_IDs of the real devkit (its data/map_clsloc.txt, generated from
# meta.mat, starts "n02119789 1 kit_fox", "n02100735 2 English_setter", "n02110185 3
# Siberian_husky"), in that ID order, which is not sorted-wnid order.
REAL_SYNSETS = [
    (1, "n02119789", "kit fox, Vulpes macrotis"),
    (2, "n02100735", "English setter"),
    (3, "n02110185", "Siberian husky"),
]


def id_ordered_meta_mat(synsets: list[tuple[int, str, str]] = REAL_SYNSETS) -> bytes:
    """A devkit ``meta.mat`` listing ``synsets`` in the given (ILSVRC2012_ID) order, followed by
    a parent synset, with the real file's fields (a 'synsets' struct array)."""
    rows = [(i, wnid, words, "a gloss", 0, np.zeros((1, 0)), 0, 1300) for i, wnid, words in synsets]
    children = np.array([[i for i, _, _ in synsets]], dtype=np.float64)
    rows.append((len(synsets) + 1, "n00001740", "entity", "the root", len(synsets), children, 3, 0))
    return synsets_mat(rows)
