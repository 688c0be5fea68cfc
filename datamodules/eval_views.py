"""Evaluation protocols, the data side: the views of each evaluation image.

A datamodule's ``eval_protocol`` argument (``--data.eval_protocol`` on the command line) is the
one place a run chooses how validation, test and predict see each image: the datamodule checks
it when it is made, and its evaluation loaders yield the views. The model averages its class
probabilities over whatever views a batch carries (:mod:`lit_classifiers.eval_protocols`), so
it has no setting of its own. The protocols:

* ``center``: the image resized so that its shorter side is ``resize_size``, then the central
  ``size`` square: one ``(C, size, size)`` tensor, batches ``(N, C, size, size)``. For image
  files this is exactly torchvision's evaluation transform (``weights.transforms()``:
  ``Resize(resize_size)`` bilinear with antialiasing, then ``CenterCrop(size)``) on PIL images:
  the file is decoded in full (no JPEG ``draft``) and resized by ``Image.resize(..., BILINEAR)``
  as torchvision's PIL path does, so evaluating torchvision's weights reproduces its published
  accuracy. Training keeps the faster approximate decode of :mod:`datamodules.transforms`.
* ``ten_crop`` (Krizhevsky et al. 2012, Sec. 4.1; He et al. 2015, Sec. 3.4): the same resize,
  then torchvision's ``TenCrop(size)`` of it: the four corners and the centre, then the same
  five of the mirror image: one ``(10, C, size, size)`` tensor, batches ``(N, 10, C, size,
  size)``. The corners are those of the whole resized image (torchvision's ``TenCrop``); the
  2012 AlexNet took them from the central 256x256 square of it instead.
* ``dense`` (Simonyan & Zisserman 2015, Sec. 3.2): the whole image resized so that its shorter
  side is each scale Q, each with its mirror image: a tuple of one ``(2, C, h_Q, w_Q)`` tensor
  per scale. Images of different shapes give tensors of different sizes, which cannot be
  stacked, so dense evaluation loaders hold **one image per batch** (batches are a list of
  ``(1, 2, C, h_Q, w_Q)`` tensors). Grouping images of equal size would need a batch sampler
  that reorders the images, which Lightning's distributed-sampler injection and the padding
  count of :mod:`lit_classifiers.exact_eval` do not see through; one image per batch keeps
  every image counted exactly once, also under DDP, and each forward pass is still as large
  as the whole image at that scale. ``"dense"`` alone uses the VGG paper's scales
  :data:`VGG_SCALES` = {256, 384, 512} (Sec. 4.2: Q = {S_min, 0.5(S_min + S_max), S_max} for S
  in [256, 512]), given for 224-pixel crops and scaled by ``image_size / 224``;
  ``"dense:Q1,Q2,..."`` sets the scales in pixels, e.g. ``dense:224,256,384,480,640``, the
  ResNet paper's :data:`RESNET_SCALES` (He et al. 2015, Sec. 3.4).

Stored arrays (digits, STL-10) get the same views, made from the stored image with
torchvision's tensor resize (bilinear, antialiased) instead of PIL's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

from datamodules.datasets import ArrayImageDataset, FileImageDataset
from datamodules.decoding import ImageDecodeError, check_file_size, image_to_tensor
from datamodules.files import display_name
from datamodules.transforms import CenterCropDecode

__all__ = [
    "EVAL_PROTOCOLS",
    "REFERENCE_CROP",
    "RESNET_SCALES",
    "VGG_SCALES",
    "DenseViews",
    "EvalViews",
    "ExactCenterCrop",
    "TenCropViews",
    "check_eval_protocol",
    "decode_full",
    "eval_batch_size",
    "eval_views",
    "resized_size",
    "views_transform",
    "with_views",
]

EVAL_PROTOCOLS = ("center", "ten_crop", "dense")
VGG_SCALES = (256, 384, 512)
RESNET_SCALES = (224, 256, 384, 480, 640)
#: The crop size both papers' scales were chosen for.
REFERENCE_CROP = 224

_DENSE_WITH_SCALES = re.compile(r"dense:(\d+(?:,\d+)*)")


@dataclass(frozen=True)
class EvalViews:
    """How each evaluation image is shown to the model: ``protocol`` (one of
    :data:`EVAL_PROTOCOLS`) and, for ``dense``, the shorter sides ``scales`` in pixels."""

    protocol: str = "center"
    scales: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.protocol not in EVAL_PROTOCOLS:
            raise ValueError(
                f"evaluation protocol must be one of {list(EVAL_PROTOCOLS)}, got {self.protocol!r}"
            )
        if self.protocol == "dense":
            if not self.scales or any(
                isinstance(q, bool) or not isinstance(q, int) or q < 1 for q in self.scales
            ):
                raise ValueError(
                    f"dense evaluation needs one or more positive int scales (shorter sides in "
                    f"pixels), got {self.scales!r}"
                )
        elif self.scales:
            raise ValueError(f"{self.protocol} takes no scales, got {self.scales!r}")


def _parse(value: object) -> tuple[str, tuple[int, ...] | None]:
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text in EVAL_PROTOCOLS:
            return text, None
        match = _DENSE_WITH_SCALES.fullmatch(text)
        if match:
            scales = tuple(int(q) for q in match.group(1).split(","))
            if all(q > 0 for q in scales):
                return "dense", tuple(dict.fromkeys(scales))
    raise ValueError(
        f"eval_protocol must be 'center', 'ten_crop', 'dense' or 'dense:Q1,Q2,...' (shorter "
        f"sides in pixels, e.g. 'dense:256,384,512'), got {value!r}"
    )


def check_eval_protocol(value: str) -> str:
    """``value`` if it is a valid ``eval_protocol``: ``"center"``, ``"ten_crop"``, ``"dense"``
    or ``"dense:Q1,Q2,..."``; a one-line ``ValueError`` otherwise."""
    _parse(value)
    return value


def eval_views(protocol: str, image_size: int) -> EvalViews:
    """The views of each image that ``protocol`` (an ``eval_protocol`` value) needs when the
    crops are ``image_size`` pixels: bare ``"dense"`` is :data:`VGG_SCALES` scaled by
    ``image_size / 224``."""
    name, scales = _parse(protocol)
    if name != "dense":
        return EvalViews(name)
    if scales is None:
        factor = image_size / REFERENCE_CROP
        scales = tuple(dict.fromkeys(max(1, round(q * factor)) for q in VGG_SCALES))
    return EvalViews("dense", scales)


def eval_batch_size(views: EvalViews, batch_size: int) -> int:
    """Images per evaluation batch: one under ``dense`` (see the module docstring)."""
    return 1 if views.protocol == "dense" else batch_size


# ---------------------------------------------------------------------------------- decoding
# As in datamodules.decoding, whose decode_crop cannot serve here: it drafts (DCT-scales) any
# JPEG at least twice the output size, which torchvision's evaluation transform never does.
_WIDE_INTEGER_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def decode_full(path: str, mode: str = "RGB") -> Image.Image:
    """The whole image at ``path``, fully decoded (no JPEG ``draft``), in ``mode``.

    Converts like :func:`datamodules.decoding.decode_crop` (CMYK, palette and alpha images;
    16-bit grayscale keeps its high byte instead of clipping to white) and fails the same
    way: ``FileNotFoundError``, or a one-line :class:`ImageDecodeError` naming the file.
    """
    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            check_file_size(image, os.fstat(handle.fileno()).st_size, display_name(path))
            image.load()
        if image.mode in _WIDE_INTEGER_MODES:
            values = np.asarray(image)
            if image.mode == "I":
                values = values.clip(0, 65535)
            image = Image.fromarray((values >> 8).astype(np.uint8))
        if image.mode != mode:
            image = image.convert(mode)
    except (FileNotFoundError, ImageDecodeError):
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, struct.error, ... on bad data
        if isinstance(err, UnidentifiedImageError):  # its message repeats the file object
            reason = "not an image in a format PIL can read"
        else:
            reason = " ".join(str(err).split()) or type(err).__name__
        raise ImageDecodeError(
            f"cannot decode image file {display_name(path)}: {display_name(reason)}"
        ) from err
    return image


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``shorter``, rounded as
    torchvision's ``Resize(int)`` rounds (the longer side truncated, not rounded)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def _resize_image(image: Image.Image, shorter: int) -> Tensor:
    # What torchvision's Resize does to a PIL image: Image.resize with BILINEAR (antialiased
    # by PIL itself) and PIL's default reducing_gap=None, here on the fully decoded image.
    size = resized_size(*image.size, shorter)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image_to_tensor(image)


def _resize_tensor(image: Tensor, shorter: int) -> Tensor:
    height, width = image.shape[-2:]
    new_width, new_height = resized_size(width, height, shorter)
    if (new_width, new_height) == (width, height):
        return image
    return F2.resize(image, [new_height, new_width], antialias=True)


def _resize(source: str | Tensor, shorter: int, mode: str) -> Tensor:
    """The image at ``source`` (a file path, or a stored ``(C, H, W)`` uint8 tensor) with its
    shorter side resized to ``shorter``, as a ``(C, h, w)`` uint8 tensor."""
    if isinstance(source, Tensor):
        return _resize_tensor(source, shorter)
    return _resize_image(decode_full(os.fspath(source), mode), shorter)


# ---------------------------------------------------------------------------------- views
class ExactCenterCrop(CenterCropDecode):
    """``center``: torchvision's ``Resize(resize_size)`` + ``CenterCrop(size)``, on the fully
    decoded file (see the module docstring); a ``(C, size, size)`` uint8 tensor.

    A :class:`~datamodules.transforms.CenterCropDecode` (same arguments, checks and
    attributes) that decodes the whole file instead of a drafted crop of it.
    """

    def __call__(self, source: str | Tensor) -> Tensor:
        return F.center_crop(_resize(source, self.resize_size, self.mode), [self.size])


class TenCropViews:
    """``ten_crop``: torchvision's ``TenCrop(size)`` of the ``resize_size`` resize; a
    ``(10, C, size, size)`` uint8 tensor (corners, centre, then the same of the mirror)."""

    def __init__(self, size: int, resize_size: int, mode: str = "RGB") -> None:
        if resize_size < size:
            raise ValueError(
                f"eval_resize={resize_size} must be >= the crop size {size}: the ten crops are "
                "taken from the resized image"
            )
        self.size = size
        self.resize_size = resize_size
        self.mode = mode

    def __call__(self, source: str | Tensor) -> Tensor:
        resized = _resize(source, self.resize_size, self.mode)
        return torch.stack(F.ten_crop(resized, [self.size]))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, resize_size={self.resize_size}, "
            f"mode={self.mode!r})"
        )


class DenseViews:
    """``dense``: the whole image at each scale (shorter side) and its mirror image; a tuple
    with one ``(2, C, h, w)`` uint8 tensor per scale."""

    def __init__(self, scales: tuple[int, ...], mode: str = "RGB") -> None:
        EvalViews("dense", tuple(scales))  # checks the scales
        self.scales = tuple(scales)
        self.mode = mode

    def __call__(self, source: str | Tensor) -> tuple[Tensor, ...]:
        if isinstance(source, Tensor):
            return tuple(self._pair(_resize_tensor(source, q)) for q in self.scales)
        image = decode_full(os.fspath(source), self.mode)  # once, resized to every scale
        return tuple(self._pair(_resize_image(image, q)) for q in self.scales)

    @staticmethod
    def _pair(image: Tensor) -> Tensor:
        return torch.stack((image, image.flip(-1)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scales={self.scales}, mode={self.mode!r})"


def views_transform(
    views: EvalViews, size: int, resize_size: int, mode: str = "RGB"
) -> Callable[[str | Tensor], Any] | None:
    """The ``source -> views`` transform of ``views``; ``None`` for ``center``, whose transform
    is each datamodule's own ``eval_transform``."""
    if views.protocol == "ten_crop":
        return TenCropViews(size, resize_size, mode)
    if views.protocol == "dense":
        return DenseViews(views.scales, mode)
    return None


def with_views(
    dataset: Dataset, views: EvalViews, size: int, resize_size: int, mode: str = "RGB"
) -> Dataset:
    """``dataset`` (an evaluation split) yielding ``views`` of each image: the same files or
    stored images, labels and order, with the views' transform in place of its own.

    ``center`` returns ``dataset`` itself. Other protocols need the undecoded source of each
    image, so ``dataset`` must be a :class:`FileImageDataset` or an :class:`ArrayImageDataset`.
    """
    transform = views_transform(views, size, resize_size, mode)
    if transform is None:
        return dataset
    if isinstance(dataset, FileImageDataset):
        return FileImageDataset(
            dataset.root, dataset.paths, dataset.labels, transform, dataset.on_bad_image
        )
    if isinstance(dataset, ArrayImageDataset):
        # from the stored image: its own eval_transform (a resize) is replaced, not composed
        return ArrayImageDataset(dataset.images, dataset.labels, dataset.indices, transform)
    raise ValueError(
        f"eval protocol {views.protocol!r} needs an evaluation split that is a FileImageDataset "
        f"or an ArrayImageDataset (it re-reads each image to make its views), got "
        f"{type(dataset).__name__}"
    )
