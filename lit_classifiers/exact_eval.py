"""Counting every evaluation sample exactly once when several processes share the data.

Under DDP, Lightning gives evaluation dataloaders a ``torch.utils.data.DistributedSampler``
(``shuffle=False, drop_last=False``; wrapped as ``DistributedSamplerWrapper``, itself a
``DistributedSampler``, when the loader had a custom sampler). To give every rank the same
number of samples it pads the index list with repeats of its first indices, so with 37 images
on 2 ranks one image is evaluated twice and ``val/acc1`` differs from a single-process run.

The sampler's documented layout makes the repeats easy to drop without changing any loader:
padding goes at the *end* of the index list and rank ``r`` takes positions ``r, r + W, ...``
of it. Rank ``r`` therefore holds ``len(range(r, N, W))`` real samples first and its share of
the padding after them. :class:`EvalSampleCounter` counts the samples a rank has seen in the
current epoch and says how many of the next batch are real.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DistributedSampler

__all__ = ["EvalSampleCounter", "real_samples_on_rank"]


def real_samples_on_rank(dataloader: Any) -> int | None:
    """Real (non-padding) samples this rank gets from ``dataloader``; ``None`` when its sampler
    does not pad (no ``DistributedSampler``, or one with ``drop_last=True``)."""
    sampler = getattr(dataloader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        sampler = getattr(getattr(dataloader, "batch_sampler", None), "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))


def _evaluation_dataloaders(trainer: pl.Trainer) -> list[Any]:
    """The running evaluation's loaders, with the sampler Lightning injected, in
    ``dataloader_idx`` order.

    ``trainer.val_dataloaders`` serves both fit's validation and ``validate()``: each
    ``fit``/``validate``/``test`` call drops the loaders of the previous one (checked on
    lightning 2.6.6 by ``tests/test_lightning_compat.py``).
    """
    loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
    if loaders is None:
        return []
    # Lightning numbers the loaders in its CombinedLoader's flattening order.
    return list(CombinedLoader(loaders, "sequential").flattened)


class EvalSampleCounter:
    """Per-dataloader sample counts of one evaluation epoch; :meth:`reset` at each epoch start."""

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}
        self._real: dict[int, int | None] = {}

    def reset(self) -> None:
        self._seen.clear()
        self._real.clear()

    def num_real(self, trainer: pl.Trainer, batch_size: int, dataloader_idx: int = 0) -> int:
        """How many of the next ``batch_size`` samples of ``dataloader_idx`` are real; the rest
        are sampler padding that metrics and losses must not see."""
        if dataloader_idx not in self._real:
            loaders = _evaluation_dataloaders(trainer)
            loader = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
            self._real[dataloader_idx] = real_samples_on_rank(loader)
        seen = self._seen.get(dataloader_idx, 0)
        self._seen[dataloader_idx] = seen + batch_size
        real = self._real[dataloader_idx]
        if real is None:
            return batch_size
        return max(0, min(batch_size, real - seen))
