"""Stopping after one epoch and resuming gives bitwise the weights of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers.modules import NUM_CLASSES, AugmentedDataset, TinyNet, make_loader, make_trainer, sgd
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lit_classifiers.module import ClassifierModule


def _train(
    directory: Path, max_epochs: int, ckpt_path: Path | None = None, seed: int = 0
) -> ClassifierModule:
    pl.seed_everything(seed, verbose=False)
    # Dropout, MixUp/CutMix and EMA draw from or depend on the main process's generators; the
    # dataset draws from torch, numpy and random inside two worker processes.
    model = ClassifierModule(
        TinyNet(dropout=0.3),
        num_classes=NUM_CLASSES,
        optimizer=sgd,
        mixup_alpha=0.4,
        cutmix_alpha=1.0,
        ema_decay=0.8,
    )
    train = DataLoader(AugmentedDataset(24), batch_size=4, shuffle=True, num_workers=2)
    checkpoint = ModelCheckpoint(dirpath=directory, filename="{epoch}", save_top_k=-1)
    trainer = make_trainer(
        max_epochs=max_epochs,
        callbacks=[checkpoint],
        enable_checkpointing=True,
        num_sanity_val_steps=1,
    )
    trainer.fit(model, train, make_loader(10, batch_size=5), ckpt_path=ckpt_path)
    return model


def _same(a: ClassifierModule, b: ClassifierModule) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_resume_is_bitwise_identical(tmp_path: Path) -> None:
    straight = _train(tmp_path / "straight", max_epochs=2)
    _train(tmp_path / "first", max_epochs=1)
    first_epoch = tmp_path / "first" / "epoch=0.ckpt"
    # Another seed before resuming: only the checkpoint's RNG state can make the runs agree.
    resumed = _train(tmp_path / "resumed", max_epochs=2, ckpt_path=first_epoch, seed=123)
    assert _same(straight, resumed)

    # Control: the same resume without the stored RNG state diverges, so the check above has
    # teeth (the augmentation, dropout and mixing draws differ).
    checkpoint = torch.load(first_epoch, weights_only=True)
    del checkpoint["rng_states"]
    stripped = tmp_path / "stripped.ckpt"
    torch.save(checkpoint, stripped)
    diverged = _train(tmp_path / "diverged", max_epochs=2, ckpt_path=stripped, seed=123)
    assert not _same(straight, diverged)


def _train_digits(directory: Path, max_epochs: int, ckpt_path: Path | None = None, seed: int = 0):
    from datamodules import DigitsDataModule

    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(image_size=8, batch_size=128, num_workers=2, augment=True)
    model = ClassifierModule("resnet20", num_classes=10, in_channels=1, optimizer=sgd)
    checkpoint = ModelCheckpoint(dirpath=directory, filename="{epoch}", save_top_k=-1)
    trainer = make_trainer(
        max_epochs=max_epochs,
        callbacks=[checkpoint],
        enable_checkpointing=True,
        limit_train_batches=4,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model


# slow: three fits of a project datamodule; the TinyNet resume above stays in the fast tier
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_resume_is_bitwise_identical_with_a_project_datamodule(tmp_path: Path) -> None:
    """The same through DigitsDataModule's own loaders: shuffling and augmentation in two
    workers kept from epoch to epoch (the default), each sample seeded from the datamodule's
    train_seed, which the checkpoint carries."""
    straight = _train_digits(tmp_path / "straight", max_epochs=2)
    _train_digits(tmp_path / "first", max_epochs=1)
    first_epoch = tmp_path / "first" / "epoch=0.ckpt"
    resumed = _train_digits(tmp_path / "resumed", max_epochs=2, ckpt_path=first_epoch, seed=7)
    assert _same(straight, resumed)

    # Control: without the datamodule's state the resumed run draws another train_seed.
    checkpoint = torch.load(first_epoch, weights_only=True)
    del checkpoint["DigitsDataModule"]
    stripped = tmp_path / "stripped.ckpt"
    torch.save(checkpoint, stripped)
    assert not _same(straight, _train_digits(tmp_path / "diverged", 2, stripped, seed=7))
