"""ResNet: residual learning (He, Zhang, Ren & Sun 2015, arXiv:1512.03385).

The ImageNet networks of the paper's Table 1 (18, 34, 50, 101 and 152 layers), in the "v1.5"
form torchvision uses: in a bottleneck block the stride sits on the 3x3 convolution, not on
the first 1x1 (the paper's v1 discards three quarters of the activations before looking at
them; v1.5 is about 0.5% more accurate at the same parameter count). Projection shortcuts
(option B) where the shape changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_classifiers.models.base import Backbone
from lit_classifiers.registry import BackboneInfo, Paper, get_backbone_info, register_backbone

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]  # and every builder, added by @register_backbone

RESNET_PAPER = Paper(
    "Deep Residual Learning for Image Recognition",
    2015,
    arxiv="1512.03385",
    authors="He, Zhang, Ren, Sun",
)


def _record(torchvision_name: str) -> BackboneInfo:
    # The minimum is the total stride, 32: below it the last stage would convolve nothing but
    # padding (torchvision accepts any size).
    return BackboneInfo(
        paper=RESNET_PAPER,
        default_input_size=224,
        min_input_size=32,
        classifier="fc",
        first_conv="conv1",
        torchvision_name=torchvision_name,
    )


# The facts of each variant (see lit_classifiers.registry).
BACKBONES = {
    "resnet18": _record(torchvision_name="resnet18"),
    "resnet34": _record(torchvision_name="resnet34"),
    "resnet50": _record(torchvision_name="resnet50"),
    "resnet101": _record(torchvision_name="resnet101"),
    "resnet152": _record(torchvision_name="resnet152"),
}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (the paper's Figure 2 left)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    # torch.jit.script compiles properties unless told otherwise; forward does not use it.
    __jit_unused_properties__ = ["last_bn"]

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand by 4, and a shortcut (Figure 5 right)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    # torch.jit.script compiles properties unless told otherwise; forward does not use it.
    __jit_unused_properties__ = ["last_bn"]

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def init_resnet_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """He-normal convolutions (the paper's reference [13]), BatchNorm at identity.

    With ``zero_init_residual`` the last BatchNorm of every residual branch starts at zero, so
    each block starts as the identity (Goyal et al. 2017, arXiv:1706.02677).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, BasicBlock | Bottleneck):
                nn.init.zeros_(module.last_bn.weight)


class ResNet(Backbone):
    """The ImageNet ResNets, laid out as torchvision's so state_dicts line up.

    ``block`` and ``layers`` are a row of the paper's Table 1: the block type and the number
    of blocks in each of the four stages. Where it differs from the paper: the v1.5
    bottleneck (see the module docstring); an optional ``dropout`` before the classifier (0 by
    default: the paper has none). The classifier keeps PyTorch's default initialisation, as
    torchvision's does.
    """

    def __init__(
        self,
        name: str,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int | None = None,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        dropout: float = 0.0,
    ) -> None:
        record = get_backbone_info(name)
        super().__init__(record)
        num_classes = record.num_classes if num_classes is None else num_classes
        self.in_channels = in_channels
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, 64, layers[0])
        self.layer2 = self._make_stage(block, 128, layers[1], stride=2)
        self.layer3 = self._make_stage(block, 256, layers[2], stride=2)
        self.layer4 = self._make_stage(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        self.head_drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_resnet_weights(self, zero_init_residual)

    def _make_stage(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def init_classifier(self, layer: nn.Linear) -> None:
        layer.reset_parameters()

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(self.head_drop(features))


@register_backbone
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2)."""
    return ResNet("resnet18", BasicBlock, (2, 2, 2, 2), **kwargs)


@register_backbone
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3)."""
    return ResNet("resnet34", BasicBlock, (3, 4, 6, 3), **kwargs)


@register_backbone
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (bottleneck blocks 3-4-6-3)."""
    return ResNet("resnet50", Bottleneck, (3, 4, 6, 3), **kwargs)


@register_backbone
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (bottleneck blocks 3-4-23-3)."""
    return ResNet("resnet101", Bottleneck, (3, 4, 23, 3), **kwargs)


@register_backbone
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152 (bottleneck blocks 3-8-36-3)."""
    return ResNet("resnet152", Bottleneck, (3, 8, 36, 3), **kwargs)
