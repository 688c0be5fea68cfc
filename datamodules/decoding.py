"""Decoding image files (or their bytes) straight to a cropped, resized uint8 tensor.

Why a fused decode-crop-resize instead of ``PIL.open -> transforms``:

* The crop box is drawn from the header's size before anything is decoded, so the decoder can be
  chosen per crop (below) and ``Image.draft`` can decode at 1/2, 1/4 or 1/8 scale (DCT scaling)
  when the region is at least that much larger than the output, which skips most of the work.
  An ordinary JPEG's header is read from its frame segment here (per ImageNet JPEG in a
  worker's loop 13 us against 58 for PIL's ``Image.open``; benchmarks/README.md 2b); every other
  file is opened by PIL, whose checks (decompression bombs, formats) still apply.
* The result stays uint8 (no ``ToTensor``): 4x less data through worker IPC and host-to-device
  copies; normalisation happens on the accelerator (see ``ImageClassificationDataModule``).

Two decoders, one result (``backend='auto'`` picks per crop, ``'pil'`` forces the second):

* torchvision (libjpeg-turbo without PIL's per-tile Python overhead) + a uint8 channels-last
  antialiased bilinear resize in torch (AVX2), for JPEGs stored as RGB/YCbCr or grayscale when
  the box is integral (RandomResizedCrop's always is) and DCT scaling would not apply. That is
  the typical ImageNet training crop, where it is about 1.4x faster than PIL per worker (see
  ``benchmarks/README.md``, 2b). The region is sliced before resizing, as torchvision's reference
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

torchvision deprecated its image decoders in 0.29 in favour of TorchCodec; if they disappear
(or fail to load), every crop silently takes the PIL path, which is slower but gives the same
images and errors.
"""

from __future__ import annotations

import io
import math
import os
import struct
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

    # The operator torchvision's ``decode_jpeg`` runs for a CPU tensor, called directly: the
    # wrapper's per-call deprecation warning and the filter that silenced it cost ~160 us per
    # ImageNet JPEG in a worker (one A/B run, benchmarks/README.md 2b).
    _decode_jpeg_op = getattr(torch.ops.image, "decode_jpeg", None)
except (ImportError, AttributeError, RuntimeError):  # gone from a future torchvision: PIL only
    decode_jpeg = None  # type: ignore[assignment]
    _decode_jpeg_op = None

__all__ = [
    "Box",
    "Header",
    "ImageDecodeError",
    "Source",
    "decode_crop",
    "decode_crops",
    "decoder_for",
    "image_to_tensor",
    "read_header",
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

# Start-of-frame markers of the JPEGs read without PIL: baseline, extended and progressive
# Huffman-coded (arithmetic, lossless and hierarchical ones are left to PIL's header parse).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2})
# Segments that may come before the scan besides the frame header: Huffman and arithmetic
# coding tables, quantisation tables, restart interval (APPn and COM are 0xE0-0xFE).
_TABLE_MARKERS = frozenset({0xC4, 0xCC, 0xDB, 0xDD})
# Segments read before giving up on finding the frame header (PIL then parses the file).
_MAX_SEGMENTS = 256

# Non-empty until torch has given (and we have silenced) its once-per-process warning about
# wrapping a read-only buffer.
_READ_ONLY_WARNING_PENDING = [True]

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


def _jpeg_header(data: bytes | bytearray | memoryview) -> Header | None:
    """The header of an 8-bit greyscale or 3-channel JPEG: its frame (SOF) segment, found by
    walking the segments up to the start of the scan (SOS), where PIL's header parse stops too.

    ``None`` for anything else (CMYK, 12-bit, arithmetic-coded,
    not a JPEG, a segment cut short or damaged, an image above PIL's decompression-bomb limit):
    PIL then parses it and raises what it always raised.
    """
    view = memoryview(data)
    if view.nbytes < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return None
    header = None
    at = 2
    for _ in range(_MAX_SEGMENTS):
        if at + 4 > view.nbytes or view[at] != 0xFF:
            return None
        marker = view[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        (length,) = struct.unpack_from(">H", view, at + 2)
        if length < 2 or at + 2 + length > view.nbytes:
            return None
        if marker == 0xDA:  # start of scan: the header is complete
            return header
        if marker in _SOF_MARKERS and header is None:
            if length < 8:
                return None
            precision, height, width, channels = struct.unpack_from(">BHHB", view, at + 4)
            mode = {1: "L", 3: "RGB"}.get(channels)
            limit = Image.MAX_IMAGE_PIXELS
            if precision != 8 or mode is None or not (width and height):
                return None
            if limit is not None and width * height > limit:
                return None  # PIL warns or refuses: its check decides, as for every format
            header = Header("JPEG", mode, (width, height))
        elif not (marker in _TABLE_MARKERS or 0xE0 <= marker <= 0xFE):
            return None  # another kind of frame, a second one, or a marker out of place
        at += 2 + length
    return None


def _parse_header(data: bytes | bytearray | memoryview) -> tuple[Header, Image.Image | None]:
    """The header of the encoded image ``data``, and PIL's opened (not decoded) image where PIL
    had to read it (``None`` where :func:`_jpeg_header` did). Raises PIL's errors."""
    header = _jpeg_header(data)
    if header is not None:
        return header, None
    image = Image.open(io.BytesIO(data))
    return Header(image.format, image.mode, image.size), image


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


def _read(source: Source) -> bytes | bytearray | memoryview:
    """The encoded image: ``source`` itself, or the whole file in one read (parsing the header
    from a file object and reading it again for the decoder cost ~90 us more per ImageNet JPEG,
    benchmarks/README.md 2b)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source
    with open(source, "rb") as f:
        return f.read()


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
    if _decode_jpeg_op is None or header.format != "JPEG" or header.mode not in _FAST_JPEG_MODES:
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
    try:
        if device.type == "cpu":
            # no EXIF rotation, as PIL's decode (and torchvision's default)
            return [
                _decode_jpeg_op(_encoded(data), read_mode.value, False)  # type: ignore[misc]
                for data in datas
            ]
        with warnings.catch_warnings():
            # Deprecated since torchvision 0.29; if it goes, decode_jpeg is None (PIL path).
            warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
            return decode_jpeg([_encoded(data) for data in datas], mode=read_mode, device=device)
    except (RuntimeError, ValueError):  # libjpeg/nvJPEG errors; ValueError: an empty buffer
        return None


def _encoded(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """``data`` as a uint8 tensor, not copied. The decoders only read it, so read-only bytes are
    fine; torch warns about those once per process, and that one warning is silenced here (a
    ``catch_warnings`` around every image cost more than the header parse)."""
    if not _READ_ONLY_WARNING_PENDING or not memoryview(data).readonly:
        return torch.frombuffer(data, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given buffer is not writable", UserWarning)
        tensor = torch.frombuffer(data, dtype=torch.uint8)
    _READ_ONLY_WARNING_PENDING.clear()
    return tensor


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
        data = _read(source)
        header, image = _parse_header(data)
        box = box_fn(header)
        if backend == "auto" and decoder_for(header, box, out_size, mode) == "torchvision":
            decoded = _decode_jpeg([data], mode, torch.device("cpu"))
            if decoded is not None:
                out = _crop_resize(decoded[0], header.size, box, out_size)
                if out is not None:
                    return out
            # torchvision refused it: PIL decodes it, or raises the error it always did
        if image is None:
            image = Image.open(io.BytesIO(data))
        return _pil_crop(image, box, out_size, mode)
    except FileNotFoundError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, struct.error, ... on bad data
        raise _decode_error(label, err) from err


def read_header(source: Source, name: str | None = None) -> tuple[bytes, Header, str]:
    """The encoded bytes of ``source``, its :class:`Header` (nothing decoded) and the name errors
    use for it. A file that is not an image raises :func:`decode_crop`'s error."""
    _check_source(source)
    label = _label(source, name)
    try:
        data = bytes(_read(source))  # bytes: an EncodedCrop travels between processes
        return data, _parse_header(data)[0], label
    except FileNotFoundError:
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
            data = _read(source)
        except FileNotFoundError:
            raise
        except OSError:
            out[i] = on_cpu(i)  # raises the ImageDecodeError decode_crop gives
            continue
        try:
            header = _parse_header(data)[0]
            fast = decoder_for(header, boxes[i], out_size, mode) == "torchvision"
        except Exception:
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
