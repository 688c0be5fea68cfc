"""Small data, networks and trainers for the ClassifierModule tests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from datamodules import DatasetInfo
from lit_classifiers.models.base import Backbone

NUM_CLASSES = 5
CLASS_NAMES = ["ant", "bee", "cat", "dog", "eel"]
SIZE = 8


class TinyNet(Backbone):
    """conv-bn-relu, pooled, dropout, linear: a Backbone in a few thousand parameters."""

    classifier_name = "fc"
    first_conv_name = "conv"

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3, dropout: float = 0.0):
        super().__init__("tinynet")
        self.in_channels = in_channels
        self.min_input_size = 4
        self.num_features = 8
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.drop(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))


def sequential_net(num_classes: int = NUM_CLASSES) -> nn.Module:
    """A network a user might write: no Backbone API at all."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, num_classes),
    )


def make_tensors(
    n: int = 37, num_classes: int = NUM_CLASSES, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Images whose mean colour depends on the label, so a tiny net learns something."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    images = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    images[:, 0] += labels.view(-1, 1, 1).float() - num_classes / 2
    return images, labels


def make_loader(
    n: int = 37, batch_size: int = 4, shuffle: bool = False, **kwargs: Any
) -> DataLoader:
    images, labels = make_tensors(n)
    return DataLoader(
        TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle, **kwargs
    )


class AugmentedDataset(Dataset):
    """Random augmentation from all three generators (torch, numpy, random) in __getitem__."""

    def __init__(self, n: int = 24) -> None:
        self.images, self.labels = make_tensors(n)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        image = image + torch.from_numpy(np.random.normal(0, 0.1, image.shape).astype(np.float32))
        image = image.roll(random.randint(-1, 1), dims=-2)
        return image, self.labels[index]


class TinyDataModule(pl.LightningDataModule):
    """Follows the project's datamodule contract: uint8 batches, normalised after transfer."""

    mean = (0.5, 0.4, 0.3)
    std = (0.2, 0.25, 0.3)
    in_channels = 3
    image_size = SIZE

    def __init__(self, n: int = 24, batch_size: int = 8, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.n, self.batch_size = n, batch_size
        self.num_classes = num_classes
        self.class_names = [f"class{i}" for i in range(num_classes)]

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            "tiny", tuple(self.class_names), self.in_channels, SIZE, self.mean, self.std
        )

    def _loader(self, shuffle: bool = False) -> DataLoader:
        images, labels = make_tensors(self.n, self.num_classes)
        images = ((images * 40) + 128).clamp(0, 255).to(torch.uint8)
        return DataLoader(
            TensorDataset(images, labels), batch_size=self.batch_size, shuffle=shuffle
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, *rest = batch
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return [(images.float() / 255 - mean) / std, *rest]


def make_trainer(**kwargs: Any) -> pl.Trainer:
    """A CPU trainer without the extras a test does not look at."""
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "max_epochs": 1,
        "num_sanity_val_steps": 0,
    }
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)


def fit_registered(folder: Path, backbone: str, num_classes: int) -> Path:
    """A checkpoint of one training step of a registered backbone, written by its trainer."""
    from lit_classifiers.module import ClassifierModule

    model = ClassifierModule(backbone, num_classes=num_classes, optimizer=sgd)
    trainer = make_trainer(max_steps=1)
    trainer.fit(model, make_loader(4))
    path = folder / f"{backbone}-{num_classes}.ckpt"
    trainer.save_checkpoint(path)
    return path


#: Length of the block of normal numbers :func:`random_weights` deals out (a prime, so that
#: tensors whose sizes are multiples of a power of two do not repeat it in step).
_BLOCK = 1_048_573


def random_weights(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` (built on the meta device) given CPU tensors of random values, dealt cheaply from
    one block of N(0, 1) numbers at a different offset for each tensor: weights of std
    sqrt(1 / fan_in), other parameters 1 + 0.1 N ("weight") or 0.1 N, BatchNorm's statistics
    those of a new layer. VGG's 130M weights take ~0.1 s instead of torch's ~1 s of drawing
    (twice for each linear layer: its default, then the network's own).

    For tests of what the architecture computes (two paths agreeing, shapes, samples kept apart),
    not of how a network initialises itself: test_backbones.py builds every backbone for real in
    its forward/backward test, and checks the papers' initialisations."""
    generator = torch.Generator().manual_seed(seed)
    block = torch.randn(_BLOCK, generator=generator)
    net = net.to_empty(device="cpu")
    with torch.no_grad():
        offset = 0
        for name, tensor in net.named_parameters():
            if tensor.dim() > 1:
                scale, shift = tensor[0].numel() ** -0.5, 0.0
            else:
                scale, shift = 0.1, 1.0 if name.endswith("weight") else 0.0
            flat, done = tensor.view(-1), 0
            while done < flat.numel():
                start = (offset + done) % _BLOCK
                take = min(flat.numel() - done, _BLOCK - start)
                flat[done : done + take].copy_(block[start : start + take])
                done += take
            flat.mul_(scale).add_(shift)
            offset += 7919  # the next tensor starts elsewhere in the block
        for name, buffer in net.named_buffers():
            buffer.fill_(1 if name.endswith("running_var") else 0)
    return net


def quick_backbone(name: str, *args: Any, seed: int = 0, **kwargs: Any) -> nn.Module:
    """``create_backbone(name, ...)`` built on the meta device, then given :func:`random_weights`:
    the same modules, forward and input checks, without drawing torch's initial weights."""
    from lit_classifiers import create_backbone

    with torch.device("meta"):
        net = create_backbone(name, *args, **kwargs)
    return random_weights(net, seed)
