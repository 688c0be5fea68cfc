"""Normalising image batches on their device: uint8 in, ``(x / 255 - mean) / std`` out.

The loaders hand uint8 batches (4x less data through worker IPC and host-to-device copies) and
the step normalises them where they arrived, as timm's ``PrefetchLoader`` does: mean and std
scaled by 255 once, then one conversion and two in-place operations on the new tensor. Every call
returns a tensor of its own, so the result is safe under any autograd or inference mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BatchNormalizer"]


class BatchNormalizer:
    """``(..., C, H, W)`` images to normalised floats on their own device.

    uint8 input is scaled from [0, 255]; floating-point input is taken to be in [0, 1] already
    and only standardised. The result is contiguous, in ``dtype`` (default: float32 for uint8
    input, the input's own dtype for floating-point input), computed in at least float32.

    Args:
        mean, std: Per channel, in [0, 1] units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one value per channel, std > 0: {mean}, {std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._constants: dict[tuple[torch.device, torch.dtype, bool], tuple[Tensor, Tensor]] = {}

    def __getstate__(self) -> dict[str, tuple[float, ...]]:
        return {"mean": self.mean, "std": self.std}  # no tensors to other processes

    def __setstate__(self, state: dict[str, tuple[float, ...]]) -> None:
        self.__init__(state["mean"], state["std"])  # type: ignore[misc]

    def __call__(self, images: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        channels = len(self.mean)
        if images.ndim < 3 or images.shape[-3] != channels:
            raise ValueError(
                f"expected images of shape (..., {channels}, H, W), got {tuple(images.shape)}"
            )
        if images.dtype == torch.uint8:
            dtype = torch.float32 if dtype is None else dtype
            work = torch.promote_types(dtype, torch.float32)  # bfloat16: rounded once, at the end
            mean, std = self._constants_for(images.device, work, scale=255.0)
            out = images.to(work, memory_format=torch.contiguous_format)  # a new tensor
            return out.sub_(mean).div_(std).to(dtype)
        if images.is_floating_point():
            dtype = images.dtype if dtype is None else dtype
            work = torch.promote_types(dtype, torch.float32)
            mean, std = self._constants_for(images.device, work, scale=1.0)
            return ((images.to(work) - mean) / std).to(dtype).contiguous()
        raise ValueError(f"expected uint8 or floating-point images, got dtype {images.dtype}")

    def _constants_for(
        self, device: torch.device, dtype: torch.dtype, scale: float
    ) -> tuple[Tensor, Tensor]:
        # Made outside any inference mode, so that they may be used under every mode.
        key = (device, dtype, scale == 1.0)
        if key not in self._constants:
            with torch.inference_mode(False):
                mean = torch.tensor([m * scale for m in self.mean], dtype=torch.float64)
                std = torch.tensor([s * scale for s in self.std], dtype=torch.float64)
                self._constants[key] = tuple(  # type: ignore[assignment]
                    t.view(-1, 1, 1).to(device, dtype) for t in (mean, std)
                )
        return self._constants[key]
