"""Prototype of a faster ``datamodules.decoding.decode_crop`` (measured by imagenet_pipeline.py).

Where the current one spends a worker's time on a typical 500x375 ImageNet JPEG with a
RandomResizedCrop to 224 (see ``imagenet_pipeline.py --breakdown``): a full-size decode in PIL,
then ``Image.resize(box=...)``, whose antialiased bilinear resampling is plain C (no SIMD) and
costs about as much as half the decode. ``Image.draft`` cannot help at this size: libjpeg's DCT
scaling only offers 1/2, 1/4 and 1/8 through PIL, and a 224 crop of a 500x375 image almost
never comes from a region of 448 pixels or more.

The prototype keeps the crop box drawn from the header exactly as before (same ``box_fn``, same
random stream), and

* decodes with ``torchvision.io.decode_image`` (the same libjpeg-turbo, without PIL's per-tile
  Python overhead) into an ``(H, W, C)``-strided uint8 tensor,
* crops by slicing (the box of RandomResizedCrop is integral) and resizes with
  ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` on uint8
  channels-last data, which has an AVX2 kernel and matches PIL's antialiased bilinear filter
  (mean |difference| ~0.01 grey levels),
* falls back to the existing PIL path (``decode_crop``) whenever DCT scaling applies (the
  region is at least twice the output: large photos), the box is fractional (centre crops of
  the evaluation transform), the mode is not RGB/L, or torchvision cannot decode the file.

Errors keep ``decode_crop``'s contract: an undecodable file raises ``ImageDecodeError``.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import RandomResizedCrop

from datamodules.decoding import Box, ImageDecodeError, decode_crop

__all__ = ["FastRandomResizedCropDecode", "decode_crop_fast"]

_MODES = {"RGB": ImageReadMode.RGB, "L": ImageReadMode.GRAY}


def _resize_uint8(region: torch.Tensor, out_w: int, out_h: int) -> torch.Tensor:
    """Antialiased bilinear resize of a ``(C, h, w)`` uint8 tensor, as PIL's BILINEAR."""
    batch = region.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(batch, size=(out_h, out_w), mode="bilinear", antialias=True)
    return out[0]


def decode_crop_fast(
    path: str,
    box_fn: Callable[[Image.Image], Box],
    out_size: tuple[int, int],
    mode: str = "RGB",
) -> torch.Tensor:
    """``decode_crop`` with the same arguments and result, faster where the prototype applies."""
    out_w, out_h = out_size
    if mode not in _MODES:
        return decode_crop(path, box_fn, out_size, mode)
    with open(path, "rb") as f:
        data = bytearray(f.read())  # writable: torch.frombuffer shares it
    try:
        header = Image.open(io.BytesIO(data))  # reads the header only
        left, top, right, bottom = box_fn(header)
        fmt = header.format
    except Exception as err:
        raise ImageDecodeError(f"cannot decode image file {path}: {err}") from err
    scale = max(out_w / max(right - left, 1e-6), out_h / max(bottom - top, 1e-6))
    integral = all(float(v).is_integer() for v in (left, top, right, bottom))
    if (scale <= 0.5 and fmt == "JPEG") or not integral:
        # replay the same box instead of drawing a new one
        return decode_crop(path, lambda _: (left, top, right, bottom), out_size, mode)
    try:
        image = decode_image(torch.frombuffer(data, dtype=torch.uint8), mode=_MODES[mode])
    except RuntimeError:
        return decode_crop(path, lambda _: (left, top, right, bottom), out_size, mode)
    region = image[:, int(top) : int(bottom), int(left) : int(right)]
    return _resize_uint8(region, out_w, out_h)


class FastRandomResizedCropDecode:
    """``datamodules.transforms.RandomResizedCropDecode`` on top of :func:`decode_crop_fast`."""

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
        top, left, height, width = RandomResizedCrop.get_params(image, self.scale, self.ratio)
        return (left, top, left + width, top + height)

    def __call__(self, path: str) -> torch.Tensor:
        image = decode_crop_fast(path, self._box, (self.size, self.size), self.mode)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image
