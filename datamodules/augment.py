"""Training augmentation presets: the one home of ``train_augment``, ``train_policy`` and
``random_erasing`` on every image datamodule.

A training pipeline is (crop preset) x (policy) x (random erasing), applied in that order to each
image, and always ends in a ``(C, H, W)`` uint8 tensor of the datamodule's ``image_size``::

    crop + horizontal flip  ->  policy (optional)  ->  PCA lighting (paper presets)  ->  erasing

Crop presets (``train_augment``), each with a 50 % horizontal flip:

``inception``
    torchvision's recipe (the default for image files): RandomResizedCrop, area 8-100 %
    (``min_scale``-100 %), aspect ratio 3/4-4/3, no colour augmentation.
``alexnet``
    Krizhevsky, Sutskever & Hinton 2012, Sec. 2 and 4.1: rescale the shorter side to 256, take
    the central 256x256, then a random crop of the model's size (224, or 227 for the actual
    AlexNet input), and PCA colour lighting ("fancy PCA", below).
``vgg``, ``vgg_fixed_256``, ``vgg_fixed_384``
    Simonyan & Zisserman 2015, Sec. 3.1: isotropically rescale so the shorter side is S, take a
    random 224 crop, flip, "random RGB colour shift (Krizhevsky et al., 2012)" = PCA lighting.
    Multi-scale training draws S uniformly from [256, 512] ("we used Smin = 256 and Smax = 512");
    the single-scale rows of the paper use S = 256 or S = 384.
``resnet``
    He et al. 2016, Sec. 3.4: "The image is resized with its shorter side randomly sampled in
    [256, 480] for scale augmentation [41]. A 224x224 crop is randomly sampled from an image or
    its horizontal flip ... The standard color augmentation in [21] is used." [21] is Krizhevsky
    et al., so the colour augmentation is the same PCA lighting. (The per-pixel mean subtraction
    of the same sentence is left to the datamodules' normalisation.)
``pad_crop``
    STL-10 only (its default): reflect-pad the 96 px image by 12 and take a random 96 crop.

S is drawn as a uniform integer (inclusive), as fb.resnet.torch's ``RandomScale`` does
(``torch.random(minSize, maxSize)``); crop offsets are uniform over every position, as
torchvision's ``RandomCrop`` and fb.resnet.torch's ``RandomCrop`` do (Krizhevsky's "factor of
2048" = 2 x 32 x 32 suggests 32 positions per axis rather than the 33 that a 224 crop has in
256 px; the difference is one position).

Other crop sizes. At the papers' own crop sizes (224, and 227 for AlexNet's real input) the
papers' pixel numbers are used as they are. Any other ``image_size`` scales every number of a
preset by ``image_size / 224``, i.e. the preset keeps the same ratio of crop to rescaled image:
``vgg`` at 112 px draws S from [128, 256], and STL-10's 96 px crops use S in [110, 219] (``vgg``),
[110, 206] (``resnet``), 110 (``alexnet``, ``vgg_fixed_256``) and 165 (``vgg_fixed_384``), with
STL-10's stored 96 px image standing in for the original photograph.

Policies (``train_policy``): ``randaugment`` (RandAugment, 2 ops at magnitude 9),
``trivialaugment`` (TrivialAugmentWide) and ``autoaugment`` (AutoAugment, ImageNet policy), the
torchvision v2 transforms on the uint8 crop, with bilinear interpolation as in torchvision's
classification references (``references/classification/presets.py``). ``random_erasing`` is the
probability of torchvision's RandomErasing (area 2-33 %, aspect 0.3-3.3), filled with the
dataset's mean colour: the references erase after ``Normalize`` with value 0, which is that
colour.

**Files: the crop stays fused into decoding.** Rescaling to S and cropping a ``size`` square is
the same as resampling one box of side ``size * shorter / S`` of the original straight to
``size``, so every preset is a crop box drawn from the header's size and handed to
:func:`~datamodules.decoding.decode_crop` (``draft``-able, no full-size decode, no second
resample). Against the papers' two steps (resize the whole image, then slice):

* what is drawn is the papers': S uniform over its range, the position uniform over the
  rescaled image (AlexNet: over its central square);
* the box is rounded to whole source pixels, so that the decoder's faster integral-box path
  applies. The crop then moves by under half a source pixel and its effective S is
  ``size * shorter / round(size * shorter / S)`` (the box side is off by at most 0.5 px: 0.3 %
  for a 375 px shorter side). Measured on a real photograph (scikit-learn's ``china.jpg``), the
  unrounded one-step box matches the two-step result to 0.03 grey levels on average (at most 1),
  and the rounded box differs from it by 3-5 grey levels on average: the sub-pixel shift, not a
  change of what the crops show;
* the long side keeps exactly the short side's scale (the two-step resize rounds it instead);
* where the decoder slices the box before resizing, the filter does not see the pixels just
  outside it, so the outermost pixel or two differ slightly; where ``draft`` applies (a box at
  least twice the crop), libjpeg's DCT downscaling does part of the bilinear filter's work.

**Arrays (STL-10)** take the two steps literally (resize the whole 96 px image to S, then slice),
which costs little at that size.

**Colour lighting on uint8.** The datasets return uint8, normalised later on the accelerator, so
:class:`PCALighting` adds its RGB vector to the uint8 crop in the worker, rounded to whole grey
levels once per image (every pixel still moves by the same vector) and clamped to 0..255. The
first component (std 0.1 x 0.2175 x 255 = 5.5 grey levels) survives the rounding; the smallest
(0.11 levels) mostly rounds to nothing. Float input (in [0, 1]) is shifted without rounding or
clamping, as fb.resnet.torch's ``Lighting`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from datamodules.decoding import Box, Header, decode_crop
from datamodules.transforms import RandomResizedCropDecode

__all__ = [
    "ARRAY_PRESETS",
    "FILE_PRESETS",
    "IMAGENET_PCA_EIGVAL",
    "IMAGENET_PCA_EIGVEC",
    "LIGHTING_STD",
    "PAPER_SHORTER_SIDE",
    "POLICIES",
    "Augmented",
    "PCALighting",
    "ScaleJitterCrop",
    "ScaleJitterCropDecode",
    "TrainAugment",
    "paper_scale",
    "preset_shorter_side",
]

# Eigenvalues and eigenvectors of the covariance of ImageNet's RGB pixel values (in [0, 1] units),
# as published in fb.resnet.torch, datasets/imagenet.lua ("local pca = { eigval = torch.Tensor{
# 0.2175, 0.0188, 0.0045 }, eigvec = ... }"; the eigenvectors are the COLUMNS, rows are R, G, B),
# used there by datasets/transforms.lua's Lighting(0.1, pca.eigval, pca.eigvec). Krizhevsky et al.
# describe the method (Sec. 4.1) but do not publish the numbers.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
#: "a random variable drawn from a Gaussian with mean zero and standard deviation 0.1" (Sec. 4.1).
LIGHTING_STD = 0.1

#: The papers' shorter side S (inclusive range), for a 224 crop; ``None``: RandomResizedCrop.
PAPER_SHORTER_SIDE: dict[str, tuple[int, int] | None] = {
    "inception": None,
    "alexnet": (256, 256),
    "vgg": (256, 512),
    "vgg_fixed_256": (256, 256),
    "vgg_fixed_384": (384, 384),
    "resnet": (256, 480),
}
_SQUARE = frozenset({"alexnet"})  # crops come from the central S x S square only
_LIGHTING = frozenset({"alexnet", "vgg", "vgg_fixed_256", "vgg_fixed_384", "resnet"})

FILE_PRESETS = tuple(PAPER_SHORTER_SIDE)
ARRAY_PRESETS = ("pad_crop", *FILE_PRESETS)
POLICIES = ("randaugment", "trivialaugment", "autoaugment")

_ERASE_SCALE = (0.02, 0.33)  # torchvision's RandomErasing defaults, as its references use them
_ERASE_RATIO = (0.3, 3.3)


def paper_scale(image_size: int) -> float:
    """How much a preset's pixel numbers are scaled for crops of ``image_size``: 1 at the papers'
    own 224 and 227, ``image_size / 224`` otherwise."""
    return 1.0 if image_size in (224, 227) else image_size / 224


def preset_shorter_side(preset: str, image_size: int) -> tuple[int, int]:
    """The inclusive range of S (the rescaled shorter side) a preset draws from at ``image_size``.

    Never below ``image_size``, so the crop always fits inside the rescaled image.
    """
    paper = PAPER_SHORTER_SIDE.get(preset)
    if paper is None:
        raise ValueError(
            f"train_augment={preset!r} has no shorter-side range (it is not a rescale)"
        )
    f = paper_scale(image_size)
    return max(image_size, round(paper[0] * f)), max(image_size, round(paper[1] * f))


def _randint(low: int, high: int) -> int:
    """Uniform in [low, high], from torch's generator (seeded per DataLoader worker)."""
    return int(torch.randint(low, high + 1, ()))


# ---------------------------------------------------------------------------- colour lighting
class PCALighting:
    """AlexNet's "fancy PCA" colour augmentation, as fb.resnet.torch's ``Lighting``.

    Per image, ``alpha ~ N(0, std)`` (3 values) and every pixel is shifted by the same RGB
    vector ``eigvec @ (alpha * eigval)`` (in [0, 1] units; x 255 for uint8 images, rounded once
    and clamped, see the module docstring). ``std=0`` is the identity.
    """

    def __init__(
        self,
        std: float = LIGHTING_STD,
        eigval: Sequence[float] = IMAGENET_PCA_EIGVAL,
        eigvec: Sequence[Sequence[float]] = IMAGENET_PCA_EIGVEC,
    ) -> None:
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not std >= 0:
            raise ValueError(f"PCALighting std must be a number >= 0, got {std!r}")
        self.std = float(std)
        self.eigval = torch.tensor(eigval, dtype=torch.float64)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float64)
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ValueError(
                f"PCALighting needs 3 eigenvalues and a 3x3 eigenvector matrix, got shapes "
                f"{tuple(self.eigval.shape)} and {tuple(self.eigvec.shape)}"
            )

    def shift(self) -> Tensor:
        """Draw one image's RGB shift, float64 ``(3,)`` in [0, 1] units."""
        alpha = torch.randn(3, dtype=torch.float64) * self.std
        return self.eigvec @ (alpha * self.eigval)

    def __call__(self, image: Tensor) -> Tensor:
        if image.ndim < 3 or image.shape[-3] != 3:
            raise ValueError(
                f"PCA lighting needs RGB images (..., 3, H, W), got shape {tuple(image.shape)}"
            )
        if self.std == 0:
            return image
        shift = self.shift().view(3, 1, 1)
        if image.dtype == torch.uint8:
            levels = torch.round(shift * 255).to(torch.int16)
            return (image.to(torch.int16) + levels).clamp_(0, 255).to(torch.uint8)
        if image.is_floating_point():
            return image + shift.to(image.dtype)
        raise ValueError(f"PCA lighting needs uint8 or float images, got dtype {image.dtype}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std})"


# ---------------------------------------------------------------------------- scale jitter
class _ScaleJitter:
    """What the rescale-and-crop presets share: the draw of S and of the crop position."""

    def __init__(
        self, size: int, shorter_side: tuple[int, int], square: bool = False, hflip: bool = True
    ) -> None:
        low, high = shorter_side
        if not size <= low <= high:
            raise ValueError(
                f"the shorter side range {shorter_side} must satisfy {size} (the crop) <= low "
                "<= high, so the crop fits inside the rescaled image"
            )
        self.size = size
        self.shorter_side = (int(low), int(high))
        self.square = square
        self.hflip = hflip

    def _flip(self, image: Tensor) -> Tensor:
        return image.flip(-1) if self.hflip and torch.rand(()) < 0.5 else image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, shorter_side={self.shorter_side}, "
            f"square={self.square}, hflip={self.hflip})"
        )


class ScaleJitterCropDecode(_ScaleJitter):
    """Decode a scale-jittered crop of a file: the box that "rescale the shorter side to S,
    (centre-crop S x S,) take a random ``size`` crop" cuts from the original, resampled once.

    See the module docstring for where this equals the two-step procedure and where it
    approximates it.
    """

    def __init__(
        self,
        size: int,
        shorter_side: tuple[int, int],
        square: bool = False,
        hflip: bool = True,
        mode: str = "RGB",
    ) -> None:
        super().__init__(size, shorter_side, square, hflip)
        self.mode = mode

    def box(self, width: int, height: int) -> Box:
        """Draw S and a crop position for a ``width`` x ``height`` image; the crop box in its
        pixels, integral."""
        short = min(width, height)
        s = _randint(*self.shorter_side)
        # source pixels per rescaled pixel is short / s; S >= size keeps the side <= short
        side = min(short, max(1, round(self.size * short / s)))
        if self.square:
            region_left, region_top = (width - short) // 2, (height - short) // 2
            region_w = region_h = short
        else:
            region_left, region_top, region_w, region_h = 0, 0, width, height
        left = region_left + _randint(0, region_w - side)
        top = region_top + _randint(0, region_h - side)
        return (float(left), float(top), float(left + side), float(top + side))

    def _box(self, header: Header) -> Box:
        return self.box(*header.size)

    def __call__(self, path: Any, name: str | None = None) -> Tensor:
        """``path``: a file path, or the file's bytes with ``name`` for error messages."""
        size = (self.size, self.size)
        named = {} if name is None else {"name": name}
        return self._flip(decode_crop(path, self._box, size, self.mode, **named))

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, mode={self.mode!r})"


class ScaleJitterCrop(_ScaleJitter):
    """The same preset on a ``(C, H, W)`` uint8 tensor, in the papers' two steps: resize the
    whole image so its shorter side is S (antialiased bilinear), (take the central S x S,) slice a
    random ``size`` square."""

    def __call__(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        short = min(width, height)
        s = _randint(*self.shorter_side)
        new_h, new_w = max(s, round(height * s / short)), max(s, round(width * s / short))
        image = TF.resize(image, [new_h, new_w], antialias=True)
        if self.square:
            image = TF.center_crop(image, [s, s])
            new_h = new_w = s
        left = _randint(0, new_w - self.size)
        top = _randint(0, new_h - self.size)
        return self._flip(image[..., top : top + self.size, left : left + self.size])


# ---------------------------------------------------------------------------- composition
class Augmented:
    """``first`` (a decode-and-crop of a path, or a crop of a tensor), then each of ``steps`` on
    the uint8 tensor it returns."""

    def __init__(self, first: Callable[[Any], Tensor], steps: Sequence[Callable[[Tensor], Tensor]]):
        self.first = first
        self.steps = list(steps)

    def __call__(self, image: Any, *args: Any, **kwargs: Any) -> Tensor:
        out = self.first(image, *args, **kwargs)  # e.g. the ``name`` of a file's bytes
        for step in self.steps:
            out = step(out)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in [self.first, *self.steps])
        return f"{type(self).__name__}({inner})"


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


@dataclass(frozen=True)
class TrainAugment:
    """One datamodule's training augmentation, checked when made (see the module docstring).

    Args:
        preset: The crop preset (``train_augment``).
        policy: ``None`` or one of :data:`POLICIES` (``train_policy``).
        random_erasing: Probability of RandomErasing, in [0, 1] (``random_erasing``).
        presets: The presets this datamodule offers (:data:`FILE_PRESETS` for image files,
            :data:`ARRAY_PRESETS` for STL-10's arrays).
        where: What errors say the presets are for.
    """

    preset: str
    policy: str | None = None
    random_erasing: float = 0.0
    presets: tuple[str, ...] = FILE_PRESETS
    where: str = "image files"

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or self.preset not in self.presets:
            raise ValueError(
                f"train_augment={self.preset!r} is not a training preset for {self.where}; "
                f"expected one of {_names(self.presets)}"
            )
        if self.policy is not None and (
            not isinstance(self.policy, str) or self.policy not in POLICIES
        ):
            raise ValueError(
                f"train_policy={self.policy!r} is not a policy; expected None or one of "
                f"{_names(POLICIES)}"
            )
        p = self.random_erasing
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"random_erasing must be a probability in [0, 1], got {p!r}")

    @property
    def lighting(self) -> bool:
        """Whether the preset includes the papers' PCA colour lighting."""
        return self.preset in _LIGHTING

    def _steps(self, fill: Sequence[float]) -> list[Callable[[Tensor], Tensor]]:
        """What follows the crop: policy, lighting, erasing (the references' order)."""
        steps: list[Callable[[Tensor], Tensor]] = []
        bilinear = v2.InterpolationMode.BILINEAR
        if self.policy == "randaugment":
            steps.append(v2.RandAugment(interpolation=bilinear))
        elif self.policy == "trivialaugment":
            steps.append(v2.TrivialAugmentWide(interpolation=bilinear))
        elif self.policy == "autoaugment":
            steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=bilinear))
        if self.lighting:
            steps.append(PCALighting(LIGHTING_STD))
        if self.random_erasing > 0:
            value = [round(255 * float(m)) for m in fill]
            steps.append(
                v2.RandomErasing(
                    p=float(self.random_erasing),
                    scale=_ERASE_SCALE,
                    ratio=_ERASE_RATIO,
                    value=value,  # type: ignore[arg-type]
                )
            )
        return steps

    def file_transform(
        self,
        image_size: int,
        min_scale: float = 0.08,
        fill: Sequence[float] = (0.5, 0.5, 0.5),
        mode: str = "RGB",
    ) -> Callable[[str], Tensor]:
        """``path -> (C, image_size, image_size)`` uint8, the crop fused into decoding.

        ``fill`` is the erased colour in [0, 1] units (the dataset's mean). ``inception`` alone
        is exactly :class:`~datamodules.transforms.RandomResizedCropDecode`.
        """
        if self.lighting and mode != "RGB":
            raise ValueError(
                f"train_augment={self.preset!r} adds PCA colour lighting, which needs RGB images, "
                f"but these decode as mode {mode!r}; use 'inception' or an RGB dataset"
            )
        if self.preset == "inception":
            crop: Callable[[str], Tensor] = RandomResizedCropDecode(
                image_size, scale=(min_scale, 1.0), mode=mode
            )
        else:
            if not math.isclose(min_scale, 0.08):
                raise ValueError(
                    f"min_scale={min_scale!r} only applies to train_augment='inception' "
                    f"(RandomResizedCrop); train_augment={self.preset!r} sets its crops by its "
                    "shorter-side range"
                )
            crop = ScaleJitterCropDecode(
                image_size,
                preset_shorter_side(self.preset, image_size),
                square=self.preset in _SQUARE,
                mode=mode,
            )
        steps = self._steps(fill)
        return Augmented(crop, steps) if steps else crop

    def array_transform(
        self, image_size: int, native_size: int, fill: Sequence[float] = (0.5, 0.5, 0.5)
    ) -> Callable[[Tensor], Tensor]:
        """``(C, native_size, native_size)`` uint8 -> ``(C, image_size, image_size)`` uint8.

        ``pad_crop`` shifts by up to 1/8 of the native side (reflect-padded) and mirrors, then
        resizes to ``image_size`` if that differs; the other presets crop ``image_size``
        directly (see the module docstring for their scaling).
        """
        first: Callable[[Tensor], Tensor]
        if self.preset == "pad_crop":
            pad_crop: list[Callable[[Tensor], Tensor]] = [
                v2.RandomCrop(native_size, padding=native_size // 8, padding_mode="reflect"),
                v2.RandomHorizontalFlip(),
            ]
            if image_size != native_size:
                pad_crop.append(v2.Resize((image_size, image_size), antialias=True))
            first = v2.Compose(pad_crop)
        elif self.preset == "inception":
            first = v2.Compose(
                [
                    v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), antialias=True),
                    v2.RandomHorizontalFlip(),
                ]
            )
        else:
            first = ScaleJitterCrop(
                image_size,
                preset_shorter_side(self.preset, image_size),
                square=self.preset in _SQUARE,
            )
        steps = self._steps(fill)
        return Augmented(first, steps) if steps else first
