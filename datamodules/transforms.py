"""The standard ImageNet-style transforms, applied while decoding a file.

Training: RandomResizedCrop (scale, ratio and the crop box drawn by torchvision's
``RandomResizedCrop.get_params``, so the crops are the reference's) and a random horizontal
flip. Evaluation: resize the shorter side to ``resize_size`` and take the central ``size`` x
``size`` square, the classic 256 -> 224 protocol (``resize_size`` defaults to
``size * 256 / 224``, e.g. 259 for AlexNet's 227 crops).

Each transform is a callable ``path -> (C, H, W) uint8 tensor`` so that the crop is known before
decoding (see :mod:`datamodules.decoding` for why that is faster). The path may also be the
file's bytes (a member of a tar shard, say), with ``name=`` for error messages.

Decoding on a GPU: ``RandomResizedCropDecode.encode`` draws the crop and flip in the DataLoader
worker without decoding, and :func:`decode_encoded` decodes a batch of those on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torchvision.transforms import RandomResizedCrop

from datamodules.decoding import (
    Backend,
    Box,
    Header,
    Source,
    decode_crop,
    decode_crops,
    read_header,
)

__all__ = [
    "CenterCropDecode",
    "EncodedCrop",
    "RandomResizedCropDecode",
    "decode_encoded",
    "default_resize_size",
    "random_resized_crop_box",
]


def random_resized_crop_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float]
) -> Box:
    """torchvision's ``RandomResizedCrop.get_params`` for a ``width`` x ``height`` image, as a box
    (left, top, right, bottom). It reads only the image's size, so a zero-stride tensor of that
    size stands in for the image (nothing is allocated or decoded)."""
    stand_in = torch.empty(()).expand(1, height, width)
    top, left, h, w = RandomResizedCrop.get_params(stand_in, list(scale), list(ratio))
    return (left, top, left + w, top + h)


def default_resize_size(size: int) -> int:
    """The evaluation resize for a crop ``size``: the same 256/224 ratio as ImageNet's protocol."""
    return round(size * 256 / 224)


class EncodedCrop(NamedTuple):
    """A training crop drawn but not decoded: what :func:`decode_encoded` decodes on a device."""

    data: bytes
    box: Box
    flip: bool
    name: str | None = None


class RandomResizedCropDecode:
    """Decode a random-resized crop of a file, flipped horizontally half of the time.

    ``backend`` is :func:`~datamodules.decoding.decode_crop`'s: ``'auto'`` (torchvision where it
    is faster, PIL elsewhere) or ``'pil'``.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        mode: str = "RGB",
        backend: Backend = "auto",
    ) -> None:
        if backend not in ("auto", "pil"):
            raise ValueError(f"backend must be 'auto' or 'pil', got {backend!r}")
        self.size = size
        self.scale = list(scale)
        self.ratio = list(ratio)
        self.hflip = hflip
        self.mode = mode
        self.backend = backend

    def _box(self, header: Header) -> Box:
        return random_resized_crop_box(*header.size, self.scale, self.ratio)

    def _flip(self) -> bool:
        return bool(self.hflip and torch.rand(()) < 0.5)

    def __call__(self, path: Source, name: str | None = None) -> torch.Tensor:
        size = (self.size, self.size)
        image = decode_crop(path, self._box, size, self.mode, name=name, backend=self.backend)
        return image.flip(-1) if self._flip() else image

    def encode(self, path: Source, name: str | None = None) -> EncodedCrop:
        """Draw the crop and flip as :meth:`__call__` would (same random numbers), decode nothing.

        Only the header is parsed, so a file that is not an image fails here, with the error
        :meth:`__call__` gives; a truncated one fails when :func:`decode_encoded` decodes it.
        """
        data, header, label = read_header(path, name)
        box = self._box(header)
        return EncodedCrop(data, box, self._flip(), label)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={tuple(self.scale)}, "
            f"ratio={tuple(self.ratio)}, hflip={self.hflip}, mode={self.mode!r}, "
            f"backend={self.backend!r})"
        )


def decode_encoded(
    crops: Sequence[EncodedCrop],
    size: int,
    mode: str = "RGB",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Decode :meth:`RandomResizedCropDecode.encode` results to an ``(N, C, size, size)`` batch.

    On CUDA (``device=None`` picks it when available) the JPEGs are decoded together by nvJPEG;
    on the CPU this is the same as calling the transform. Flips are applied on ``device``.
    """
    images = decode_crops(
        [c.data for c in crops],
        [c.box for c in crops],
        (size, size),
        mode,
        device=device,
        names=[c.name for c in crops],
    )
    flips = torch.tensor([c.flip for c in crops], dtype=torch.bool, device=images.device)
    return torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)


class CenterCropDecode:
    """Decode the centre ``size`` square after resizing the shorter side to ``resize_size``."""

    def __init__(self, size: int, resize_size: int | None = None, mode: str = "RGB") -> None:
        resize_size = default_resize_size(size) if resize_size is None else resize_size
        if resize_size < size:
            raise ValueError(
                f"eval_resize={resize_size} must be >= the crop size {size}: the centre crop is "
                "taken from the resized image"
            )
        self.size = size
        self.resize_size = resize_size
        self.mode = mode

    def _box(self, header: Header) -> Box:
        width, height = header.size
        side = self.size * min(width, height) / self.resize_size  # crop side in source pixels
        left = (width - side) / 2
        top = (height - side) / 2
        return (left, top, left + side, top + side)

    def __call__(self, path: str) -> torch.Tensor:
        return decode_crop(path, self._box, (self.size, self.size), self.mode)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, resize_size={self.resize_size}, "
            f"mode={self.mode!r})"
        )
