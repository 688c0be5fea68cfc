"""Training order and augmentation depend on (seed, epoch, index) only (datamodules.sampling)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from datamodules import DigitsDataModule
from datamodules.sampling import SeededSamples, SeededShuffle


class _Noise(Dataset):
    """Each sample a draw from torch's default generator: it shows which seed built it."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3)


def _epochs(num_workers: int, persistent: bool, epochs: int, set_epoch: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)  # decides the datamodule's train_seed
    dm = DigitsDataModule(
        image_size=8,
        batch_size=100,
        num_workers=num_workers,
        persistent_workers=persistent,
        augment=True,
    )
    dm.setup()
    loader = dm.train_dataloader()
    out = []
    for epoch in range(epochs):
        if set_epoch:
            loader.sampler.set_epoch(epoch)
        out.append(torch.cat([images for images, _ in loader]))
    return out


def test_an_epoch_is_the_same_in_the_main_process_and_in_a_kept_worker() -> None:
    # The second epoch of a kept worker (its generator ran on through the first) against a
    # fresh main-process loop: equal only if every sample is built from its own seed.
    kept = _epochs(num_workers=1, persistent=True, epochs=2, set_epoch=False)
    fresh = _epochs(num_workers=0, persistent=False, epochs=2, set_epoch=True)
    assert torch.equal(kept[1], fresh[1]) and torch.equal(kept[0], fresh[0])
    assert not torch.equal(fresh[0], fresh[1])  # a new order and new crops every epoch


def test_a_sample_is_a_function_of_its_seed_and_leaves_the_main_generator_alone() -> None:
    samples = SeededSamples(_Noise())
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first, again, other = samples[(3, 123)], samples[(3, 123)], samples[(3, 124)]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), before)  # dropout and MixUp draws run on as before
    assert samples[7].shape == (3,)  # a plain index (overfit_batches' sequential sampler)


def test_ranks_share_an_epoch_without_overlap_and_agree_on_each_images_seed() -> None:
    dataset = list(range(11))
    ranks = [SeededShuffle(dataset, seed=9, epoch=2, num_replicas=2, rank=r) for r in (0, 1)]
    shares = [list(rank) for rank in ranks]
    whole = list(SeededShuffle(dataset, seed=9, epoch=2))
    # DistributedSampler pads 11 to 12 by repeating the first index of the permutation.
    assert sorted(i for share in shares for i, _ in share) == sorted([*range(11), whole[0][0]])
    assert dict(whole) == {i: s for share in shares for i, s in share}
    assert [i for i, _ in whole] != list(range(11))
    ranks[0].set_epoch(3)
    assert dict(ranks[0]) != dict(shares[0])


def test_the_train_seed_is_drawn_once_and_travels_in_the_checkpoint_state() -> None:
    torch.manual_seed(1)
    dm = DigitsDataModule(image_size=8, num_workers=0)
    assert dm.state_dict() == {}
    seed = dm.train_seed()
    assert dm.train_seed() == seed and dm.state_dict() == {"train_seed": seed}
    resumed = DigitsDataModule(image_size=8, num_workers=0)
    resumed.load_state_dict(dm.state_dict())
    torch.manual_seed(2)
    assert resumed.train_seed() == seed
    with pytest.raises(ValueError, match=r"train_seed='7'; expected an int"):
        resumed.load_state_dict({"train_seed": "7"})
