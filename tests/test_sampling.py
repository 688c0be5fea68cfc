"""Training order and augmentation depend on (seed, epoch, index) only (datamodules.sampling)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.ddp import read_ranks
from helpers.modules import sgd
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


# ------------------------------------------------------------------------ two ranks (gloo)
def ddp_prepare(folder: Path) -> list[Path]:
    return [folder]


def ddp_main(out_dir: str) -> None:
    """Two training batches on each of two ranks, each rank's generator seeded differently;
    each writes its training sampler and the labels of the batches it trained on beside the
    labels of the share that sampler's seed and rank give."""
    from helpers.modules import make_trainer
    from lightning.pytorch.callbacks import Callback

    from lit_classifiers import ClassifierModule

    class Trained(Callback):
        labels: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.labels.extend(batch[1].tolist())

    trained = Trained()
    trainer = make_trainer(devices=2, strategy="ddp", callbacks=[trained], limit_train_batches=2)
    torch.manual_seed(100 + trainer.global_rank)  # the train seed must be rank 0's on both
    dm = DigitsDataModule(image_size=8, batch_size=4, num_workers=0, augment=True)
    model = ClassifierModule("resnet20", num_classes=10, in_channels=1, optimizer=sgd)
    trainer.fit(model, datamodule=dm)
    sampler = trainer.train_dataloader.sampler
    share = SeededShuffle(
        range(len(sampler.dataset)), sampler.seed, 0, sampler.num_replicas, sampler.rank
    )
    indices = [index for index, _ in share][: len(trained.labels)]
    result = {
        "sampler": type(sampler).__name__,
        "rank": [trainer.global_rank, sampler.rank, sampler.num_replicas],
        "seed": sampler.seed,
        "indices": indices,
        "trained": trained.labels,
        "share": [int(trainer.train_dataloader.dataset.dataset[i][1]) for i in indices],
    }
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


# slow: its part of the shared two-rank launch (helpers.ddp), a real gloo process group
@pytest.mark.slow
def test_each_ddp_rank_trains_on_its_own_share_of_one_seeded_order(two_rank_job: Path) -> None:
    ranks = read_ranks(two_rank_job, "sampling")
    # Lightning left the sampler in place (its own DistributedSampler would shuffle by seed 0).
    assert [r["sampler"] for r in ranks] == ["SeededShuffle", "SeededShuffle"]
    assert [r["rank"] for r in ranks] == [[0, 0, 2], [1, 1, 2]]
    assert ranks[0]["seed"] == ranks[1]["seed"]  # broadcast: the generators were seeded apart
    for rank in ranks:
        assert len(rank["trained"]) == 8 and rank["trained"] == rank["share"]
    assert not set(ranks[0]["indices"]) & set(ranks[1]["indices"])
