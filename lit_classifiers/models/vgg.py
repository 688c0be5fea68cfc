"""VGGNet: stacks of 3x3 convolutions.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, arXiv:1409.1556. Configurations A, B, D and E of the paper's Table 1 are
``vgg11``, ``vgg13``, ``vgg16`` and ``vgg19``; the ``_bn`` variants add BatchNorm after every
convolution (not in the paper; torchvision's models of the same names).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lit_classifiers.models.base import Backbone
from lit_classifiers.registry import Paper, register_backbone

__all__ = [
    "VGG",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

VGG_PAPER = Paper(
    "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    2014,
    arxiv="1409.1556",
    authors="Simonyan, Zisserman",
)

MaxPool = Literal["M"]

# Table 1 of the paper: output channels of each 3x3 convolution, "M" for a 2x2/2 max pool.
CONFIGS: dict[str, list[int | MaxPool]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        *(64, 64, "M", 128, 128, "M"),
        *(256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ],
}


class VGG(Backbone):
    """VGG, laid out as torchvision's (``features``, ``avgpool``, ``classifier``).

    Where it differs from the paper:

    - The paper evaluates densely (the fully-connected layers turned into convolutions); here
      an adaptive 7x7 average pooling precedes the classifier instead, so any input of at
      least 32x32 (the five 2x2 pools) works and is flattened per sample. The founding
      document's ``x.view(-1, 512*7*7)`` mixed the samples of a batch at any size but 224.
    - Initialisation is torchvision's (He-normal convolutions, N(0, 0.01) linear layers), not
      the paper's staged training of deeper configurations from configuration A.
    """

    classifier_name = "classifier.6"
    first_conv_name = "features.0"

    def __init__(
        self,
        config: list[int | MaxPool],
        name: str,
        num_classes: int = 1000,
        in_channels: int = 3,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(name)
        self.in_channels = in_channels
        self.num_features = 4096
        self.min_input_size = 2 ** config.count("M")
        self.features = _make_features(config, in_channels, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                self.init_classifier(module)

    def forward_features(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        for layer in self.classifier[:-1]:
            x = layer(x)
        return x


def _make_features(
    config: list[int | MaxPool], in_channels: int, batch_norm: bool
) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, item, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU(inplace=True))
        channels = item
    return nn.Sequential(*layers)


def _vgg(
    name: str, config: str, batch_norm: bool, num_classes: int, in_channels: int, dropout: float
) -> VGG:
    return VGG(CONFIGS[config], name, num_classes, in_channels, batch_norm, dropout)


def _register(name: str):
    return register_backbone(
        paper=VGG_PAPER, default_input_size=224, family="vgg", torchvision_name=name
    )


@_register("vgg11")
def vgg11(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG configuration A (11 weight layers)."""
    return _vgg("vgg11", "A", False, num_classes, in_channels, dropout)


@_register("vgg13")
def vgg13(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG configuration B (13 weight layers)."""
    return _vgg("vgg13", "B", False, num_classes, in_channels, dropout)


@_register("vgg16")
def vgg16(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG configuration D (16 weight layers)."""
    return _vgg("vgg16", "D", False, num_classes, in_channels, dropout)


@_register("vgg19")
def vgg19(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG configuration E (19 weight layers)."""
    return _vgg("vgg19", "E", False, num_classes, in_channels, dropout)


@_register("vgg11_bn")
def vgg11_bn(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG configuration A with BatchNorm."""
    return _vgg("vgg11_bn", "A", True, num_classes, in_channels, dropout)


@_register("vgg13_bn")
def vgg13_bn(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG configuration B with BatchNorm."""
    return _vgg("vgg13_bn", "B", True, num_classes, in_channels, dropout)


@_register("vgg16_bn")
def vgg16_bn(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG configuration D with BatchNorm."""
    return _vgg("vgg16_bn", "D", True, num_classes, in_channels, dropout)


@_register("vgg19_bn")
def vgg19_bn(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG configuration E with BatchNorm."""
    return _vgg("vgg19_bn", "E", True, num_classes, in_channels, dropout)
