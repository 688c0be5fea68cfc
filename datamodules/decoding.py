"""Decoding image files (or their bytes) straight to a cropped, resized uint8 tensor.

Why a fused decode-crop-resize instead of ``PIL.open -> transforms``:

* The crop box is drawn from the header's size (PIL's lazy ``Image.open``) before anything is
  decoded, so the decoder can be chosen per crop (below) and ``Image.draft`` can decode at 1/2,
  1/4 or 1/8 scale (DCT scaling) when the region is at least that much larger than the output,
  which skips most of the work.
* The result stays uint8 (no ``ToTensor``): 4x less data through worker IPC and host-to-device
  copies; normalisation happens on the accelerator (see ``ImageClassificationDataModule``).

Two decoders, one result (``backend='auto'`` picks per crop, ``'pil'`` forces the second):

* torchvision (libjpeg-turbo without PIL's per-tile Python overhead) + a uint8 channels-last
  antialiased bilinear resize in torch (AVX2), for JPEGs stored as RGB/YCbCr or grayscale when
  the box is integral (RandomResizedCrop's always is) and DCT scaling would not apply. That is
  the typical ImageNet training crop, where it is faster than PIL (``benchmarks/README.md``).
  The region is sliced before resizing, as torchvision's reference
  does, so results match it to within 1 grey level.
* PIL (``draft`` + ``Image.resize(box=...)``) for everything else: draft-able crops of large
  photos, fractional boxes (evaluation centre crops), CMYK JPEGs, other formats, other modes, and
  any file torchvision refuses, so that errors are always PIL's, exactly as before.

ImageNet's quirks decode correctly: CMYK JPEGs (22 in train), grayscale JPEGs, a PNG named
``.JPEG`` (PIL detects the format from the bytes, not the name) and palette/alpha images are all
converted to the requested mode. 16-bit grayscale files (PNG, TIFF; PIL modes ``I;16``,
``I;16B``, ``I``) are scaled to 8 bits (``value >> 8``) rather than clipped by
``convert("RGB")``, which would turn everything above 255 white; PIL already reduces 48/64-bit
RGB(A) PNGs to 8 bits per channel the same way. A truncated or undecodable file raises
``ImageDecodeError`` naming the file; PIL's ``LOAD_TRUNCATED_IMAGES`` is never switched on,
because silently grey-filling the missing part of a training image is worse than an error.

On a GPU, :func:`decode_crops` decodes a batch of JPEGs with nvJPEG
(``torchvision.io.decode_jpeg(list, device="cuda")``) and crops/resizes them there.

A file is read whole only if its size is one an image could have: up to 16 MiB, or up to
4 bytes per sample of the image its header describes plus 16 MiB of metadata. Anything larger
(a 3 GB file named ``.jpg``) is refused in one line naming it after reading its header only; PIL's
decompression-bomb limit refuses headers that claim too many pixels.

torchvision deprecated its image decoders in 0.29 in favour of TorchCodec; if they disappear
(or fail to load), every crop silently takes the PIL path, which is slower but gives the same
images and errors.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from datamodules.files import display_name

try:
    from torchvision.io import ImageReadMode, decode_jpeg
except (ImportError, AttributeError, RuntimeError):  # gone from a future torchvision: PIL only
    decode_jpeg = None  # type: ignore[assignment]

# torchvision 0.29 deprecates its decoders in favour of TorchCodec with a warning per call; we
# know, and fall back to PIL when they go.
warnings.filterwarnings(
    "ignore", "The image decoding and encoding", DeprecationWarning, "torchvision"
)

__all__ = [
    "Box",
    "Header",
    "ImageDecodeError",
    "Source",
    "check_file_size",
    "decode_crop",
    "decode_crops",
    "decoder_for",
    "image_to_tensor",
    "read_header",
    "read_image_file",
    "resize_uint8",
]

Box = tuple[float, float, float, float]
"""(left, top, right, bottom) in pixels of the full-resolution image."""

Source = str | os.PathLike | bytes | bytearray | memoryview
"""A file path, or the encoded bytes of an image (e.g. a member read from a tar shard)."""

Backend = Literal["auto", "pil"]
_BACKENDS = ("auto", "pil")

# Integer modes whose values span 16 bits; "I" (32-bit) is what PIL gives 16-bit data in some
# formats (TIFF, older PIL versions), and values outside 0..65535 are clipped.
_WIDE_INTEGER_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})

# Files up to this size are read whole without further ado; a larger one only after its header
# says that its image can take that many bytes (see the module docstring).
_SMALL_FILE = 16 << 20
# Bytes per sample of the widest images PIL decodes (32-bit integer and float modes).
_MAX_SAMPLE_BYTES = 4

# JPEG colour spaces libjpeg converts to RGB/L exactly as PIL does. CMYK/YCCK (Adobe's inverted
# CMYK) stays with PIL, whose handling of it the datasets were checked against.
_FAST_JPEG_MODES = frozenset({"RGB", "L"})


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


class Header(NamedTuple):
    """What an image's header says, nothing decoded: PIL's ``format`` and ``mode`` names and
    ``size`` as (width, height). A crop's box function receives one."""

    format: str | None
    mode: str
    size: tuple[int, int]


def _header(image: Image.Image) -> Header:
    return Header(image.format, image.mode, image.size)


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


def resize_uint8(region: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of a ``(C, h, w)`` uint8 tensor to ``out_size`` (w, h).

    The same filter as PIL's ``BILINEAR`` resize (within 1 grey level). On the CPU, uint8
    channels-last input is what torch's vectorised kernel takes; elsewhere (CUDA) the kernel
    wants floats, so the values are rounded back to uint8.
    """
    out_w, out_h = out_size
    batch = region.unsqueeze(0)
    if region.device.type == "cpu":
        batch = batch.contiguous(memory_format=torch.channels_last)
        out = F.interpolate(batch, size=(out_h, out_w), mode="bilinear", antialias=True)
    else:
        out = F.interpolate(batch.float(), size=(out_h, out_w), mode="bilinear", antialias=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out[0]


def _label(source: Source, name: str | None) -> str:
    """What error messages call the image: ``name``, the path, or the size of the bytes."""
    if name is not None:
        return display_name(name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{memoryview(source).nbytes} bytes in memory>"
    return display_name(os.fspath(source))


def _decode_error(label: str, err: BaseException) -> ImageDecodeError:
    # One line, and valid UTF-8 even for a non-UTF-8 file name, whatever logs or prints it.
    if isinstance(err, UnidentifiedImageError):  # its message repeats the file object
        reason = "not an image in a format PIL can read"
    else:
        reason = " ".join(str(err).split()) or type(err).__name__
    return ImageDecodeError(f"cannot decode image file {label}: {display_name(reason)}")


def check_file_size(image: Image.Image, size: int, label: str) -> None:
    """Refuse, in one line naming the file, a file of ``size`` bytes that is larger than any
    encoding of ``image`` (opened by PIL, not decoded) needs: see the module docstring."""
    width, height = image.size
    largest = _SMALL_FILE + _MAX_SAMPLE_BYTES * width * height * len(image.getbands())
    if size > largest:
        raise ImageDecodeError(
            f"cannot decode image file {label}: it is {size:,} bytes, more than a {width}x{height} "
            f"{image.format} image can take (at most {largest:,}); not read"
        )


def _read(source: Source, label: str) -> tuple[bytes | bytearray | memoryview, Image.Image]:
    """The encoded image and PIL's opened (not decoded) image of it; raises PIL's errors, or
    :class:`ImageDecodeError` for a file larger than any image its header describes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source, Image.open(io.BytesIO(source))
    with open(source, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > _SMALL_FILE:
            check_file_size(Image.open(file), size, label)  # reads the header only
            file.seek(0)
        data = bytearray(size)  # writable, so that torch can wrap it without a copy
        del data[file.readinto(data) :]
    return data, Image.open(io.BytesIO(data))


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of the image file at ``path``, read only once PIL parsed its header and found
    an image that can take that many bytes; otherwise a one-line :class:`ImageDecodeError`
    naming the file (``FileNotFoundError`` as is). The error carries no chained cause, so that a
    worker's traceback (litdata's, in ``prepare``) starts with this line."""
    try:
        return read_header(path)[0]
    except ImageDecodeError as err:
        raise ImageDecodeError(str(err)) from None


def _check_source(source: object) -> None:
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        raise TypeError(
            f"expected a file path or the image's bytes, got {type(source).__name__}: "
            f"{source!r:.80}"
        )


def _check_options(out_size: tuple[int, int], backend: str) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if (
        not isinstance(out_size, (tuple, list))
        or len(out_size) != 2
        or any(not isinstance(v, (int, np.integer)) or v < 1 for v in out_size)
    ):
        raise ValueError(f"out_size must be (width, height) in positive ints, got {out_size!r}")


def decoder_for(
    header: Header | Image.Image, box: Box, out_size: tuple[int, int], mode: str = "RGB"
) -> Literal["torchvision", "pil"]:
    """Which decoder :func:`decode_crop` (``backend='auto'``) uses for this crop of an image
    (its :class:`Header`, or PIL's opened image): torchvision where it gives the same image
    faster than PIL."""
    if decode_jpeg is None or header.format != "JPEG" or header.mode not in _FAST_JPEG_MODES:
        return "pil"
    if mode not in _FAST_JPEG_MODES:
        return "pil"
    width, height = header.size
    left, top, right, bottom = box
    if not all(float(v).is_integer() for v in box):  # torch cannot resample a fractional box
        return "pil"
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        return "pil"
    out_w, out_h = out_size
    scale = max(out_w / (right - left), out_h / (bottom - top))
    if scale >= 1.0:
        return "torchvision"
    # PIL's draft() rule: the DCT scale factor is the largest of 8, 4, 2 that keeps the image
    # at least ceil(size * scale); where that is >= 2 PIL decodes a fraction of the data and wins.
    factor = min(width // math.ceil(width * scale), height // math.ceil(height * scale))
    return "torchvision" if factor < 2 else "pil"


def _decode_jpeg(
    datas: Sequence[bytes | bytearray | memoryview], mode: str, device: torch.device
) -> list[torch.Tensor] | None:
    """torchvision's decode, or ``None`` where it refuses the data (PIL then decides)."""
    read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
    try:  # no EXIF rotation, as PIL's decode (and torchvision's default)
        return decode_jpeg([_encoded(data) for data in datas], mode=read_mode, device=device)
    except (RuntimeError, ValueError):  # libjpeg/nvJPEG errors; ValueError: an empty buffer
        return None


def _encoded(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """``data`` as a uint8 tensor; a read-only buffer is copied (torch wraps writable ones)."""
    if memoryview(data).readonly:
        data = bytearray(data)
    return torch.frombuffer(data, dtype=torch.uint8)


def _crop_resize(
    decoded: torch.Tensor, size: tuple[int, int], box: Box, out_size: tuple[int, int]
) -> torch.Tensor | None:
    if tuple(decoded.shape[-2:]) != (size[1], size[0]):  # not the image the header described
        return None
    left, top, right, bottom = (int(v) for v in box)
    return resize_uint8(decoded[:, top:bottom, left:right], out_size)


def _pil_crop(image: Image.Image, box: Box, out_size: tuple[int, int], mode: str) -> torch.Tensor:
    """Decode ``box`` of the opened (not yet loaded) ``image`` with PIL, resized to out_size."""
    out_w, out_h = out_size
    width, height = image.size
    left, top, right, bottom = box
    scale = max(out_w / max(right - left, 1e-6), out_h / max(bottom - top, 1e-6))
    if scale < 1.0 and image.format == "JPEG":
        # draft() never goes below the requested size, so the box stays >= out_size
        image.draft(mode, (math.ceil(width * scale), math.ceil(height * scale)))
        fx, fy = image.size[0] / width, image.size[1] / height
        left, right, top, bottom = left * fx, right * fx, top * fy, bottom * fy
    # float rounding must not push the box past the (possibly drafted) image
    pil_box = (
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
    return image_to_tensor(image.resize(out_size, Image.Resampling.BILINEAR, box=pil_box))


def decode_crop(
    source: Source,
    box_fn: Callable[[Header], Box],
    out_size: tuple[int, int],
    mode: str = "RGB",
    *,
    name: str | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Decode the region ``box_fn(header)`` of an image file, resized to ``out_size``.

    ``source`` is a path or the file's bytes (``name``, if given, is what errors call it).
    ``box_fn`` receives the image's :class:`Header` (read before anything is decoded; its
    ``size`` is (width, height)) and returns the crop box in full-resolution pixels; it is called
    exactly once, so a random box draws the same random numbers whichever decoder runs.
    ``out_size`` is (width, height). ``backend='pil'`` always decodes with PIL (see the module
    docstring). Returns a ``(C, H, W)`` uint8 tensor, C = 3 for ``mode='RGB'`` and 1 for
    ``mode='L'``.
    """
    _check_source(source)
    _check_options(out_size, backend)
    label = _label(source, name)
    try:
        data, image = _read(source, label)
        header = _header(image)
        box = box_fn(header)
        if backend == "auto" and decoder_for(header, box, out_size, mode) == "torchvision":
            decoded = _decode_jpeg([data], mode, torch.device("cpu"))
            if decoded is not None:
                out = _crop_resize(decoded[0], header.size, box, out_size)
                if out is not None:
                    return out
            # torchvision refused it: PIL decodes it, or raises the error it always did
        return _pil_crop(image, box, out_size, mode)
    except (FileNotFoundError, ImageDecodeError):
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, struct.error, ... on bad data
        raise _decode_error(label, err) from err


def read_header(source: Source, name: str | None = None) -> tuple[bytes, Header, str]:
    """The encoded bytes of ``source``, its :class:`Header` (nothing decoded) and the name errors
    use for it. A file that is not an image raises :func:`decode_crop`'s error."""
    _check_source(source)
    label = _label(source, name)
    try:
        data, image = _read(source, label)
        return bytes(data), _header(image), label  # bytes: an EncodedCrop travels to processes
    except (FileNotFoundError, ImageDecodeError):
        raise
    except Exception as err:
        raise _decode_error(label, err) from err


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} asks to decode on a GPU, but torch.cuda.is_available() is "
            "False; pass device='cpu', or device=None to use a GPU only when there is one"
        )
    return target


def decode_crops(
    sources: Sequence[Source],
    boxes: Sequence[Box],
    out_size: tuple[int, int],
    mode: str = "RGB",
    *,
    device: str | torch.device | None = None,
    names: Sequence[str | None] | None = None,
) -> torch.Tensor:
    """Decode a batch of crops to one ``(N, C, H, W)`` uint8 tensor on ``device``.

    On a CUDA device the JPEGs :func:`decode_crop` would hand to torchvision are decoded together
    by nvJPEG (``decode_jpeg(list, device=...)``), cropped and resized there; the rest, and any
    batch nvJPEG refuses, are decoded on the CPU by :func:`decode_crop`, so errors are the same.
    ``device=None`` means CUDA when available, else the CPU (one :func:`decode_crop` per image);
    asking for CUDA without it is an error. ``boxes`` are full-resolution (left, top, right,
    bottom), e.g. drawn in DataLoader workers by ``RandomResizedCropDecode.encode``.
    """
    target = _resolve_device(device)
    _check_options(out_size, "auto")
    for source in sources:
        _check_source(source)
    if len(boxes) != len(sources) or (names is not None and len(names) != len(sources)):
        raise ValueError(
            f"decode_crops needs one box and name per source: {len(sources)} sources, "
            f"{len(boxes)} boxes, {'no' if names is None else len(names)} names"
        )
    labels = list(names) if names is not None else [None] * len(sources)
    channels = 1 if mode == "L" else 3
    if not sources:
        return torch.empty(
            (0, channels, out_size[1], out_size[0]), dtype=torch.uint8, device=target
        )

    def on_cpu(i: int) -> torch.Tensor:
        return decode_crop(sources[i], lambda _: boxes[i], out_size, mode, name=labels[i])

    if target.type != "cuda":
        return torch.stack([on_cpu(i) for i in range(len(sources))]).to(target)

    shape = (len(sources), channels, out_size[1], out_size[0])
    out = torch.empty(shape, dtype=torch.uint8, device=target)
    on_device: list[int] = []
    encoded: list[bytes | bytearray | memoryview] = []
    sizes: list[tuple[int, int]] = []
    for i, source in enumerate(sources):
        try:
            data, image = _read(source, _label(source, labels[i]))
            header = _header(image)
            fast = decoder_for(header, boxes[i], out_size, mode) == "torchvision"
        except FileNotFoundError:
            raise
        except Exception:  # decode_crop raises the error it gives for this file
            fast = False
        if fast:
            on_device.append(i)
            encoded.append(data)
            sizes.append(header.size)
        else:
            out[i] = on_cpu(i)
    decoded = _decode_jpeg(encoded, mode, target) if encoded else []
    for k, i in enumerate(on_device):
        image = None if decoded is None else _crop_resize(decoded[k], sizes[k], boxes[i], out_size)
        out[i] = on_cpu(i) if image is None else image
    return out
