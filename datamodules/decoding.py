"""Decoding image files straight to a cropped, resized uint8 tensor.

Why a fused decode-crop-resize instead of ``PIL.open -> transforms``:

* ``Image.draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the region we
  need is at least that much larger than the output, which skips most of the decoding work.
  It only applies when the crop is known before decoding, so the crop box is chosen from the
  header's size first.
* ``Image.resize(box=...)`` resamples only the cropped region, antialiased like torchvision's PIL
  path, in one pass.
* The result stays uint8 (no ``ToTensor``): 4x less data through worker IPC and host-to-device
  copies; normalisation happens on the accelerator (see ``ImageClassificationDataModule``).

ImageNet's quirks decode correctly: CMYK JPEGs (22 in train), grayscale JPEGs, a PNG named
``.JPEG`` (PIL detects the format from the bytes, not the name) and palette/alpha images are all
converted to the requested mode. 16-bit grayscale files (PNG, TIFF; PIL modes ``I;16``,
``I;16B``, ``I``) are scaled to 8 bits (``value >> 8``) rather than clipped by
``convert("RGB")``, which would turn everything above 255 white; PIL already reduces 48/64-bit
RGB(A) PNGs to 8 bits per channel the same way. A truncated or undecodable file raises
``ImageDecodeError`` naming the file; PIL's ``LOAD_TRUNCATED_IMAGES`` is never switched on,
because silently grey-filling the missing part of a training image is worse than an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from datamodules.files import display_name

__all__ = ["Box", "ImageDecodeError", "decode_crop", "image_to_tensor"]

Box = tuple[float, float, float, float]
"""(left, top, right, bottom) in pixels of the full-resolution image."""


# Integer modes whose values span 16 bits; "I" (32-bit) is what PIL gives 16-bit data in some
# formats (TIFF, older PIL versions), and values outside 0..65535 are clipped.
_WIDE_INTEGER_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageDecodeError(ValueError):
    """An image file that exists but cannot be decoded (truncated, corrupt, not an image).

    The message is one line naming the file. A DataLoader worker process sends the error back
    as text and torch re-raises ``ImageDecodeError(text)`` whose message is several lines
    (``"Caught ImageDecodeError in DataLoader worker process N.\\nOriginal Traceback ..."``
    ending with ``"datamodules.decoding.ImageDecodeError: <message>"``); :attr:`summary` gives
    the one-line message back in both cases.
    """

    @property
    def summary(self) -> str:
        """The original one-line message, also when torch re-raised this from a worker."""
        message = str(self)
        if "\nOriginal Traceback" not in message:
            return message
        last_line = message.rstrip().rsplit("\n", 1)[-1]
        _, found, original = last_line.partition(f"{type(self).__name__}: ")
        return original if found else last_line


def _to_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit integer image as mode ``L``, keeping the high byte of each value."""
    values = np.asarray(image)
    if image.mode == "I":
        values = values.clip(0, 65535)
    return Image.fromarray((values >> 8).astype(np.uint8))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image in mode ``RGB`` or ``L`` as a ``(C, H, W)`` uint8 tensor."""
    array = np.array(image, dtype=np.uint8)  # a writable copy, owned by the tensor
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def decode_crop(
    path: str,
    box_fn: Callable[[Image.Image], Box],
    out_size: tuple[int, int],
    mode: str = "RGB",
) -> torch.Tensor:
    """Decode the region ``box_fn(image)`` of the file at ``path``, resized to ``out_size``.

    ``box_fn`` receives the opened but not yet decoded image (its ``size`` is known from the
    header) and returns the crop box in full-resolution pixels. ``out_size`` is (width, height).
    Returns a ``(C, H, W)`` uint8 tensor, C = 3 for ``mode='RGB'`` and 1 for ``mode='L'``.
    """
    out_w, out_h = out_size
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            width, height = image.size
            left, top, right, bottom = box_fn(image)
            scale = max(out_w / max(right - left, 1e-6), out_h / max(bottom - top, 1e-6))
            if scale < 1.0 and image.format == "JPEG":
                # draft() never goes below the requested size, so the box stays >= out_size
                image.draft(mode, (math.ceil(width * scale), math.ceil(height * scale)))
                fx, fy = image.size[0] / width, image.size[1] / height
                left, right, top, bottom = left * fx, right * fx, top * fy, bottom * fy
            # float rounding must not push the box past the (possibly drafted) image
            box = (
                max(left, 0.0),
                max(top, 0.0),
                min(right, float(image.size[0])),
                min(bottom, float(image.size[1])),
            )
            image.load()
            if image.mode in _WIDE_INTEGER_MODES:
                image = _to_8_bit(image)
            if image.mode != mode:
                image = image.convert(mode)
            image = image.resize(out_size, Image.Resampling.BILINEAR, box=box)
    except FileNotFoundError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, struct.error, ... on bad data
        # One line, and valid UTF-8 even for a non-UTF-8 file name, whatever logs or prints it.
        if isinstance(err, UnidentifiedImageError):  # its message repeats the file object
            reason = "not an image in a format PIL can read"
        else:
            reason = " ".join(str(err).split()) or type(err).__name__
        raise ImageDecodeError(
            f"cannot decode image file {display_name(path)}: {display_name(reason)}"
        ) from err
    return image_to_tensor(image)
