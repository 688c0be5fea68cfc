"""VGGNet: stacks of 3x3 convolutions.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, arXiv:1409.1556. Configurations A, B, D and E of the paper's Table 1 are
``vgg11``, ``vgg13``, ``vgg16`` and ``vgg19``; the ``_bn`` variants add BatchNorm after every
convolution (not in the paper; torchvision's models of the same names).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_classifiers.models.base import Backbone
from lit_classifiers.registry import BackboneInfo, Paper, get_backbone_info, register_backbone

__all__ = ["VGG"]  # and every builder, added by @register_backbone

VGG_PAPER = Paper(
    "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    2014,
    arxiv="1409.1556",
    authors="Simonyan, Zisserman",
)


def _record(torchvision_name: str) -> BackboneInfo:
    # The five 2x2 pools need 32 pixels (torchvision's min_size for VGG as well).
    return BackboneInfo(
        paper=VGG_PAPER,
        default_input_size=224,
        min_input_size=32,
        classifier="classifier.6",
        first_conv="features.0",
        torchvision_name=torchvision_name,
    )


# The facts of each variant (see lit_classifiers.registry).
BACKBONES = {
    "vgg11": _record(torchvision_name="vgg11"),
    "vgg13": _record(torchvision_name="vgg13"),
    "vgg16": _record(torchvision_name="vgg16"),
    "vgg19": _record(torchvision_name="vgg19"),
    "vgg11_bn": _record(torchvision_name="vgg11_bn"),
    "vgg13_bn": _record(torchvision_name="vgg13_bn"),
    "vgg16_bn": _record(torchvision_name="vgg16_bn"),
    "vgg19_bn": _record(torchvision_name="vgg19_bn"),
}

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
    """VGG, laid out as torchvision's (``features``, ``avgpool``, and the head ``classifier``).

    The head is the paper's three fully-connected layers (4096, 4096, classes), with dropout
    (0.5 by default) after the ReLU of the first two: "dropout regularisation for the first two
    fully-connected layers (dropout ratio set to 0.5)" (Section 3.1).

    Where it differs from the paper:

    - The forward pass puts an adaptive 7x7 average pooling before the head, so any input of
      at least 32x32 (the five 2x2 pools) works and is flattened per sample; at the paper's
      224x224 training crops it is the identity. The founding document's
      ``x.view(-1, 512*7*7)`` mixed the samples of a batch at any size but 224. The paper
      tests densely instead (Section 3.2: fc6 as a 7x7 convolution, fc7 and fc8 as 1x1
      convolutions over the whole image, the class score map averaged): that is
      ``eval_protocol="dense"`` of the datamodules, under which ``ClassifierModule`` applies
      these same weights as convolutions and skips the pooling
      (:mod:`lit_classifiers.eval_protocols`).
    - Initialisation is torchvision's (He-normal convolutions, N(0, 0.01) linear layers), not
      the paper's staged training of deeper configurations from configuration A.
    """

    def __init__(
        self,
        name: str,
        config: list[int | MaxPool],
        num_classes: int | None = None,
        in_channels: int = 3,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        record = get_backbone_info(name)
        super().__init__(record)
        num_classes = record.num_classes if num_classes is None else num_classes
        self.in_channels = in_channels
        self.num_features = 4096
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
        # Every layer of the head but the classifier, its last. TorchScript cannot call the
        # layers of a sliced Sequential, but unrolls this loop.
        last = len(self.classifier) - 1
        for index, layer in enumerate(self.classifier):
            if index < last:
                x = layer(x)
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        # The classifier is the head's last layer; indexing it (not get_submodule) scripts.
        return self.classifier[-1](features)


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


@register_backbone
def vgg11(**kwargs: Any) -> VGG:
    """VGG configuration A (11 weight layers)."""
    return VGG("vgg11", CONFIGS["A"], **kwargs)


@register_backbone
def vgg13(**kwargs: Any) -> VGG:
    """VGG configuration B (13 weight layers)."""
    return VGG("vgg13", CONFIGS["B"], **kwargs)


@register_backbone
def vgg16(**kwargs: Any) -> VGG:
    """VGG configuration D (16 weight layers)."""
    return VGG("vgg16", CONFIGS["D"], **kwargs)


@register_backbone
def vgg19(**kwargs: Any) -> VGG:
    """VGG configuration E (19 weight layers)."""
    return VGG("vgg19", CONFIGS["E"], **kwargs)


@register_backbone
def vgg11_bn(**kwargs: Any) -> VGG:
    """VGG configuration A with BatchNorm."""
    return VGG("vgg11_bn", CONFIGS["A"], batch_norm=True, **kwargs)


@register_backbone
def vgg13_bn(**kwargs: Any) -> VGG:
    """VGG configuration B with BatchNorm."""
    return VGG("vgg13_bn", CONFIGS["B"], batch_norm=True, **kwargs)


@register_backbone
def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG configuration D with BatchNorm."""
    return VGG("vgg16_bn", CONFIGS["D"], batch_norm=True, **kwargs)


@register_backbone
def vgg19_bn(**kwargs: Any) -> VGG:
    """VGG configuration E with BatchNorm."""
    return VGG("vgg19_bn", CONFIGS["E"], batch_norm=True, **kwargs)
