"""The small-image ResNets of He et al. 2015, Section 4.2 (arXiv:1512.03385).

Made for CIFAR-10's 32x32 images: a 3x3 convolution with 16 filters, then three stages of
``n`` basic blocks with 16, 32 and 64 filters on maps of 32, 16 and 8 pixels, global average
pooling and the classifier: ``6n + 2`` weighted layers. Shortcuts are parameter-free
("option A"): identity, or subsampling by 2 with zero-padded extra channels where a stage
doubles the filters. Parameter counts match the paper's Table 6 (0.27M for ResNet-20 to 1.7M
for ResNet-110, with 10 classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_classifiers.models.base import Backbone
from lit_classifiers.models.resnet import RESNET_PAPER, BasicBlock, conv3x3, init_resnet_weights
from lit_classifiers.registry import register_backbone

__all__ = ["CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


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
    """ResNet-(6n+2) for small images.

    Where it differs from the paper: nothing in the architecture; the optional ``dropout``
    before the classifier is 0 by default. ``min_input_size`` is the total stride, 4.
    """

    classifier_name = "fc"
    first_conv_name = "conv1"

    def __init__(
        self,
        blocks_per_stage: int,
        name: str,
        num_classes: int = 10,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(name)
        self.in_channels = in_channels
        self.min_input_size = 4
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


def _register():
    return register_backbone(paper=RESNET_PAPER, default_input_size=32, family="resnet_cifar")


def _cifar_resnet(
    depth: int, num_classes: int, in_channels: int, zero_init_residual: bool, dropout: float
) -> CifarResNet:
    blocks_per_stage = (depth - 2) // 6
    return CifarResNet(
        blocks_per_stage, f"resnet{depth}", num_classes, in_channels, zero_init_residual, dropout
    )


@_register()
def resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    zero_init_residual: bool = False,
    dropout: float = 0.0,
) -> CifarResNet:
    """ResNet-20 (n=3), 0.27M parameters."""
    return _cifar_resnet(20, num_classes, in_channels, zero_init_residual, dropout)


@_register()
def resnet32(
    num_classes: int = 10,
    in_channels: int = 3,
    zero_init_residual: bool = False,
    dropout: float = 0.0,
) -> CifarResNet:
    """ResNet-32 (n=5), 0.46M parameters."""
    return _cifar_resnet(32, num_classes, in_channels, zero_init_residual, dropout)


@_register()
def resnet44(
    num_classes: int = 10,
    in_channels: int = 3,
    zero_init_residual: bool = False,
    dropout: float = 0.0,
) -> CifarResNet:
    """ResNet-44 (n=7), 0.66M parameters."""
    return _cifar_resnet(44, num_classes, in_channels, zero_init_residual, dropout)


@_register()
def resnet56(
    num_classes: int = 10,
    in_channels: int = 3,
    zero_init_residual: bool = False,
    dropout: float = 0.0,
) -> CifarResNet:
    """ResNet-56 (n=9), 0.85M parameters."""
    return _cifar_resnet(56, num_classes, in_channels, zero_init_residual, dropout)


@_register()
def resnet110(
    num_classes: int = 10,
    in_channels: int = 3,
    zero_init_residual: bool = False,
    dropout: float = 0.0,
) -> CifarResNet:
    """ResNet-110 (n=18), 1.7M parameters."""
    return _cifar_resnet(110, num_classes, in_channels, zero_init_residual, dropout)
