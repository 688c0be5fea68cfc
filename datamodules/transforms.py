"""The standard ImageNet-style transforms, applied while decoding a file.

Training: RandomResizedCrop (scale, ratio as torchvision; the crop box is drawn with torchvision's
own ``RandomResizedCrop.get_params``, so the distribution is the reference one) and a random
horizontal flip. Evaluation: resize the shorter side to ``resize_size`` and take the central
``size`` x ``size`` square, the classic 256 -> 224 protocol (``resize_size`` defaults to
``size * 256 / 224``, e.g. 259 for AlexNet's 227 crops).

Each transform is a callable ``path -> (C, H, W) uint8 tensor`` so that the crop is known before
decoding (see :mod:`datamodules.decoding` for why that is faster).
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from datamodules.decoding import Box, decode_crop

__all__ = ["CenterCropDecode", "RandomResizedCropDecode", "default_resize_size"]


def default_resize_size(size: int) -> int:
    """The evaluation resize for a crop ``size``: the same 256/224 ratio as ImageNet's protocol."""
    return round(size * 256 / 224)


class RandomResizedCropDecode:
    """Decode a random-resized crop of a file, flipped horizontally half of the time."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        mode: str = "RGB",
    ) -> None:
        self.size = size
        self.scale = list(scale)
        self.ratio = list(ratio)
        self.hflip = hflip
        self.mode = mode

    def _box(self, image: Image.Image) -> Box:
        # get_params only reads the size and band count, so the image is not decoded yet
        top, left, height, width = RandomResizedCrop.get_params(image, self.scale, self.ratio)
        return (left, top, left + width, top + height)

    def __call__(self, path: str) -> torch.Tensor:
        image = decode_crop(path, self._box, (self.size, self.size), self.mode)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={tuple(self.scale)}, "
            f"ratio={tuple(self.ratio)}, hflip={self.hflip}, mode={self.mode!r})"
        )


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

    def _box(self, image: Image.Image) -> Box:
        width, height = image.size
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
