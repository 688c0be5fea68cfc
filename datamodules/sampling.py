"""Training order and augmentation as functions of (seed, epoch, index) alone.

torch's ``RandomSampler`` draws each epoch's permutation, and every worker its seed, from the
main process's generator when the epoch's iterator is made. A kept (persistent) worker is never
seeded again, so its augmentation stream runs on from one epoch into the next, and no checkpoint
holds it: a resumed run would augment differently from an uninterrupted one. Here the sampler
pairs every index with a seed of its own, and :class:`SeededSamples` seeds torch's default
generator with it before building that sample. An epoch's crops and flips then depend on the
seed, the epoch and the image only: not on the number of workers, on whether they are kept, or
on which process resumes the run, so training workers can be kept between epochs and a resumed
run still matches an uninterrupted one bit for bit. That holds for transforms drawing from torch's
generator (torchvision's and this package's all do); one drawing from Python's ``random`` or
NumPy's global state gets PyTorch's usual per-worker seeding only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, get_worker_info

__all__ = ["SeededSamples", "SeededShuffle"]


class SeededShuffle(DistributedSampler):
    """``DistributedSampler``'s shuffle, each index paired with its sample's seed.

    Yields ``(index, sample_seed)``. The permutation comes from ``seed + epoch`` as in
    ``DistributedSampler`` (every rank draws the same one and takes its share: by default the
    process group's ranks, or one share without a process group), the sample seeds from
    ``(seed, epoch)``, the same for an image whichever rank draws it. Lightning calls
    :meth:`set_epoch` before each epoch, as for its own samplers, and leaves a
    ``DistributedSampler`` in place of its own; but it makes the first epoch's iterator before
    that call, so ``epoch`` is where a resumed fit starts. A loop that never calls it still gets
    a new epoch at each pass: the epoch advances by itself when it was not set since the last.
    """

    def __init__(
        self,
        dataset: Sized,
        seed: int,
        epoch: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
        )
        self.epoch = epoch
        self._passes = 0
        self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._epoch_set = True

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        if self._passes and not self._epoch_set:
            self.epoch += 1
        self._passes += 1
        self._epoch_set = False
        indices = list(super().__iter__())
        entropy = np.random.SeedSequence((self.seed, self.epoch)).generate_state(2)
        generator = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
        seeds = torch.randint(2**63 - 1, (len(self.dataset),), generator=generator)  # type: ignore[arg-type]
        return zip(indices, seeds[indices].tolist(), strict=True)


class SeededSamples(Dataset):
    """``dataset[index]`` built with torch's default generator seeded by the index's seed.

    Takes the ``(index, seed)`` pairs of :class:`SeededShuffle`; a plain index (from another
    sampler, e.g. the sequential one Lightning puts in for ``overfit_batches``) is passed on
    as it is. In the main process (``num_workers=0``) the generator's state is put back after
    each sample, so that the training step's own draws (dropout, MixUp) run on undisturbed.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed = item
        generator = torch.default_generator
        if get_worker_info() is not None:
            generator.manual_seed(seed)
            return self.dataset[index]
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)
