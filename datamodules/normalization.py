"""Normalising image batches in the training step: uint8 in, float32 ``(x / 255 - mean) / std`` out.

The loaders hand uint8 batches (4x less data through worker IPC and host-to-device copies) and
the step normalises them on its device. On a CPU that step pays for it, and the obvious code
(``x.float().div_(255).sub_(mean).div_(std)``) cost ~400 us per 224x224 image in a batch of 64
(``benchmarks/imagenet_pipeline.py``): four passes over the data and, mostly, page faults, because
a 38 MB float32 batch is above glibc's largest mmap threshold (32 MiB), so every step maps fresh
pages. :class:`BatchNormalizer` converts, then scales and shifts in place (three passes; a single
mixed-dtype ``addcmul`` was slower here), and on the CPU writes into the previous step's output
when nothing refers to it any more (no Python reference, no view, no tensor saved for backward),
which removes the page faults. Where that cannot be proven, or the private reference counts it
reads are missing from a torch version, it allocates a new tensor, as before.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BatchNormalizer"]

_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)

# float32 output normalised per block on the CPU: 2 MiB (three 224x224 images) cost 91 us per
# image against 106 for one pass over a batch of 64 (1 thread, benchmarks/README.md 2b).
_BLOCK_BYTES = 2 << 20


def _references(table: dict, key: object) -> tuple[int, int, int] | None:
    """Python references to ``table[key]``, references to its TensorImpl (a tensor autograd
    saved for backward adds one) and to its storage (a view adds one); ``None`` where this torch
    does not tell."""
    if _storage_use_count is None or not hasattr(torch.Tensor, "_use_count"):
        return None
    return (
        sys.getrefcount(table[key]),
        table[key]._use_count(),
        _storage_use_count(table[key].untyped_storage()._cdata),
    )


# The counts of a tensor that only its table refers to, on this interpreter and torch.
_ALONE = _references({0: torch.empty(1)}, 0)


def _blocks(shape: torch.Size, device: torch.device) -> list[slice]:
    """Slices of the batch dimension that each hold about ``_BLOCK_BYTES`` of float32 output,
    so that the scale and shift passes over a block find it still in the CPU's cache (one
    block for a single image, and on a GPU, where one kernel per pass over all is best)."""
    if device.type != "cpu" or len(shape) < 4 or shape[0] <= 1:
        return [slice(None)]
    step = max(1, _BLOCK_BYTES // (4 * math.prod(shape[1:])))
    return [slice(start, start + step) for start in range(0, shape[0], step)]


class BatchNormalizer:
    """``(..., C, H, W)`` images to normalised float32 on their own device.

    uint8 input is scaled to [0, 1] first; floating-point input is taken to be in [0, 1] already
    and only standardised (in its own dtype).

    Args:
        mean, std: Per channel, in [0, 1] units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one value per channel, std > 0: {mean}, {std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._constants: dict[tuple[torch.device, torch.dtype, bool], tuple[Tensor, Tensor]] = {}
        # The last CPU output of each shape (train and evaluation batches differ), reused once
        # nothing else refers to it.
        self._outputs: dict[tuple[int, ...], Tensor] = {}

    def __getstate__(self) -> dict[str, tuple[float, ...]]:
        return {"mean": self.mean, "std": self.std}  # no tensors to other processes

    def __setstate__(self, state: dict[str, tuple[float, ...]]) -> None:
        self.__init__(state["mean"], state["std"])  # type: ignore[misc]

    def __call__(self, images: Tensor) -> Tensor:
        channels = len(self.mean)
        if images.ndim < 3 or images.shape[-3] != channels:
            raise ValueError(
                f"expected images of shape (..., {channels}, H, W), got {tuple(images.shape)}"
            )
        if images.dtype == torch.uint8:
            # x / 255 / std - mean / std: the conversion (which also makes the batch contiguous,
            # whatever the loader's layout), then two in-place passes over float32 in the cache
            scale, shift = self._constants_for(images.device, torch.float32, uint8=True)
            out = self._output_for(images)
            for block in _blocks(out.shape, images.device):
                out[block].copy_(images[block]).mul_(scale).add_(shift)
            return out
        if images.is_floating_point():
            mean, std = self._constants_for(images.device, images.dtype, uint8=False)
            return (images - mean) / std
        raise ValueError(f"expected uint8 or floating-point images, got dtype {images.dtype}")

    def _constants_for(
        self, device: torch.device, dtype: torch.dtype, *, uint8: bool
    ) -> tuple[Tensor, Tensor]:
        key = (device, dtype, uint8)
        if key not in self._constants:
            mean = torch.tensor(self.mean, dtype=torch.float64).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float64).view(-1, 1, 1)
            first, second = ((1 / (255 * std)), -mean / std) if uint8 else (mean, std)
            self._constants[key] = (first.to(device, dtype), second.to(device, dtype))
        return self._constants[key]

    def _output_for(self, images: Tensor) -> Tensor:
        """Where the float32 batch goes: on the CPU the previous output of this shape when
        nothing but this object refers to it, else new memory (remembered for the next step)."""
        key = tuple(images.shape)
        reusable = images.device.type == "cpu" and _ALONE is not None
        if reusable and key in self._outputs:
            if _references(self._outputs, key) == _ALONE:
                return self._outputs[key]
            del self._outputs[key]  # someone kept it: it is theirs now
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        if reusable:
            if len(self._outputs) >= 2:
                self._outputs.clear()
            self._outputs[key] = out
        return out
