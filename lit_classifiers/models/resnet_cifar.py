"""The small-image ResNets of He et al. 2015, Section 4.2 (arXiv:1512.03385).

Made for CIFAR-10's 32x32 images: a 3x3 convolution with 16 filters, then three stages of
``n`` basic blocks with 16, 32 and 64 filters on maps of 32, 16 and 8 pixels, global average
pooling and the classifier: ``6n + 2`` weighted layers. Shortcuts are parameter-free
("option A"): identity, or subsampling by 2 with zero-padded extra channels where a stage
doubles the filters. Parameter counts match the paper's Table 6 (0.27M for ResNet-20 to 1.7M
for ResNet-110, with 10 classes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_classifiers.models.base import Backbone
from lit_classifiers.models.resnet import RESNET_PAPER, BasicBlock, conv3x3, init_resnet_weights
from lit_classifiers.registry import BackboneInfo, get_backbone_info, register_backbone

__all__ = ["CifarResNet"]  # and every builder, added by @register_backbone


def _record() -> BackboneInfo:
    # Built for CIFAR-10 (10 classes, 32x32); the minimum is the total stride, 4.
    return BackboneInfo(
        paper=RESNET_PAPER,
        default_input_size=32,
        min_input_size=4,
        num_classes=10,
        classifier="fc",
        first_conv="conv1",
    )


# The facts of each variant (see lit_classifiers.registry).
BACKBONES = {
    "resnet20": _record(),
    "resnet32": _record(),
    "resnet44": _record(),
    "resnet56": _record(),
    "resnet110": _record(),
}


class ZeroPadShortcut(nn.Module):
    """Option A: take every other pixel and pad the new channels with zeros (no parameters)."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class CifarResNet(Backbone):
    """ResNet-(6n+2) for small images, ``n = blocks_per_stage``.

    Where it differs from the paper: nothing in the architecture; the optional ``dropout``
    before the classifier is 0 by default.
    """

    def __init__(
        self,
        name: str,
        blocks_per_stage: int,
        num_classes: int | None = None,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        dropout: float = 0.0,
    ) -> None:
        record = get_backbone_info(name)
        super().__init__(record)
        num_classes = record.num_classes if num_classes is None else num_classes
        self.in_channels = in_channels
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(32, 64, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 64
        self.head_drop = nn.Dropout(dropout)
        self.fc = nn.Linear(64, num_classes)
        init_resnet_weights(self, zero_init_residual)

    @staticmethod
    def _make_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        shortcut = None
        if stride != 1 or inplanes != planes:
            shortcut = ZeroPadShortcut(planes - inplanes, stride)
        layers = [BasicBlock(inplanes, planes, stride, shortcut)]
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def init_classifier(self, layer: nn.Linear) -> None:
        layer.reset_parameters()

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(self.head_drop(features))


@register_backbone
def resnet20(**kwargs: Any) -> CifarResNet:
    """ResNet-20 (n=3), 0.27M parameters."""
    return CifarResNet("resnet20", blocks_per_stage=3, **kwargs)


@register_backbone
def resnet32(**kwargs: Any) -> CifarResNet:
    """ResNet-32 (n=5), 0.46M parameters."""
    return CifarResNet("resnet32", blocks_per_stage=5, **kwargs)


@register_backbone
def resnet44(**kwargs: Any) -> CifarResNet:
    """ResNet-44 (n=7), 0.66M parameters."""
    return CifarResNet("resnet44", blocks_per_stage=7, **kwargs)


@register_backbone
def resnet56(**kwargs: Any) -> CifarResNet:
    """ResNet-56 (n=9), 0.85M parameters."""
    return CifarResNet("resnet56", blocks_per_stage=9, **kwargs)


@register_backbone
def resnet110(**kwargs: Any) -> CifarResNet:
    """ResNet-110 (n=18), 1.7M parameters."""
    return CifarResNet("resnet110", blocks_per_stage=18, **kwargs)
