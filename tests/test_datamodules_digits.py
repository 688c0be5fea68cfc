"""DigitsDataModule: the bundled dataset behind the README's first command."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from datamodules import DigitsDataModule


def test_shape_of_the_data() -> None:
    dm = DigitsDataModule(batch_size=32)
    assert dm.class_names == [str(d) for d in range(10)] and dm.num_classes == 10
    assert (dm.in_channels, dm.image_size, dm.num_workers) == (1, 32, 0)
    assert len(dm.mean) == len(dm.std) == 1 and 0 < dm.mean[0] < 1
    dm.setup("fit")
    sizes = len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)
    assert sum(sizes) == 1797 and sizes[2] == round(0.15 * 1797)
    splits = [set(d.indices.tolist()) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    test_counts = np.bincount(dm.data.labels[dm.test_dataset.indices])
    assert test_counts.min() >= 25  # stratified: every digit present in proportion
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    again = DigitsDataModule()
    again.setup()
    np.testing.assert_array_equal(again.test_dataset.indices, dm.test_dataset.indices)


def test_normalised_data_is_learnable() -> None:
    """A linear classifier on the loaders' normalised output learns the digits in seconds."""
    torch.manual_seed(0)
    dm = DigitsDataModule(image_size=16, batch_size=128, augment=False)
    dm.setup()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        for images, labels in dm.train_dataloader():
            loss = nn.functional.cross_entropy(model(dm.normalize(images)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    correct = total = 0
    with torch.no_grad():
        for images, labels in dm.val_dataloader():
            correct += int((model(dm.normalize(images)).argmax(1) == labels).sum())
            total += len(labels)
    assert correct / total > 0.85


class _Probe(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(32 * 32, 10)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.seen.append(images)
        return nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

    def validation_step(self, batch, batch_idx):
        assert batch[0].dtype == torch.float32

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")
def test_lightning_calls_the_normalising_hook() -> None:
    dm = DigitsDataModule(batch_size=16)
    probe = _Probe()
    trainer = L.Trainer(
        fast_dev_run=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(probe, datamodule=dm)
    assert len(probe.seen) == 2
    images = probe.seen[0]
    assert images.dtype == torch.float32 and images.shape == (16, 1, 32, 32)
    assert images.min() < -0.5 and images.max() > 1.0  # standardised, not just /255
