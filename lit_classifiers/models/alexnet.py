"""AlexNet: the 2012 network with LocalResponseNorm, and the 2014 single-tower variant.

- Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
  Networks", NeurIPS 2012.
- Krizhevsky, "One weird trick for parallelizing convolutional neural networks", 2014,
  arXiv:1404.5997 (the network torchvision calls ``alexnet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_classifiers.models.base import Backbone
from lit_classifiers.registry import BackboneInfo, Paper, get_backbone_info, register_backbone

__all__ = ["AlexNet", "AlexNetConfig"]  # and every builder, added by @register_backbone

ALEXNET_2012 = Paper(
    "ImageNet Classification with Deep Convolutional Neural Networks",
    2012,
    authors="Krizhevsky, Sutskever, Hinton",
)
ALEXNET_2014 = Paper(
    "One weird trick for parallelizing convolutional neural networks",
    2014,
    arxiv="1404.5997",
    authors="Krizhevsky",
)

# The facts of each variant (see lit_classifiers.registry). The minimum side is where the
# three 3x3/2 max pools still have a 3x3 window: the last pool needs 3 pixels, so the second
# pool's output needs 3 and its input 7, the first pool's output 7 and its input 15; the
# stride-4 11x11 convolution must output 15: (15 - 1) * 4 + 11 - 2 * padding pixels, 67
# without padding, 63 with torchvision's padding of 2 (torchvision's min_size for alexnet).
BACKBONES = {
    "alexnet": BackboneInfo(
        paper=ALEXNET_2012,
        default_input_size=227,
        min_input_size=67,
        classifier="classifier.6",
        first_conv="features.0",
    ),
    "alexnet_owt": BackboneInfo(
        paper=ALEXNET_2014,
        default_input_size=224,
        min_input_size=63,
        classifier="classifier.6",
        first_conv="features.0",
        torchvision_name="alexnet",
    ),
}


@dataclass(frozen=True)
class AlexNetConfig:
    """One row of the architecture table: the five convolutions and what follows them."""

    channels: tuple[int, int, int, int, int]
    first_padding: int
    local_response_norm: bool
    paper_init: bool


# The paper's LRN (Section 3.3): b = a / (k + alpha * sum(a^2))^beta, the sum over n adjacent
# channels, with n=5, k=2, alpha=1e-4, beta=0.75. torch.nn.LocalResponseNorm divides alpha by
# the window size, so it needs alpha * n to compute the paper's formula.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def paper_local_response_norm() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


class AlexNet(Backbone):
    """AlexNet, laid out as torchvision's ``alexnet`` (``features``, ``avgpool``, and the head
    ``classifier``) so state_dicts line up.

    ``alexnet`` (Krizhevsky et al. 2012): 96-256-384-384-256 channels, 11x11 stride-4 first
    convolution (no padding, made for 227x227 inputs), ReLU after every layer, LRN after the
    ReLU of the first two convolutions and before their overlapping 3x3/2 max pools (Sections
    3.3 to 3.5), a max pool after the fifth, and a head of three linear layers 9216-4096-4096-C
    with dropout 0.5. Where it differs from the paper:

    - The paper's two GPU towers are run as one network: the second, fourth and fifth
      convolutions see all channels of the previous layer instead of their own tower's half.
      That is what gives 62,378,344 parameters for 1000 classes.
    - An adaptive 6x6 average pooling precedes the head. At 227x227 it is the identity; it
      lets the network run on any input of at least 67x67.
    - Dropout sits before fc6 and fc7, as in torchvision; the paper (Section 4.2) drops the
      outputs of fc6 and fc7 instead.
    - Initialisation follows Section 5 of the paper: weights from N(0, 0.01), biases 1 in the
      second, fourth and fifth convolutions and in the hidden fully-connected layers, 0
      elsewhere.

    ``alexnet_owt`` (Krizhevsky 2014): the single-tower 64-192-384-256-256 network without LRN,
    identical to torchvision's ``alexnet`` including PyTorch's default initialisation.
    """

    def __init__(
        self,
        name: str,
        config: AlexNetConfig,
        num_classes: int | None = None,
        in_channels: int = 3,
        dropout: float = 0.5,
    ) -> None:
        record = get_backbone_info(name)
        super().__init__(record)
        num_classes = record.num_classes if num_classes is None else num_classes
        c1, c2, c3, c4, c5 = config.channels
        self.config = config
        self.in_channels = in_channels
        self.num_features = 4096

        def norm() -> list[nn.Module]:
            return [paper_local_response_norm()] if config.local_response_norm else []

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 11, stride=4, padding=config.first_padding),
            nn.ReLU(inplace=True),
            *norm(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(inplace=True),
            *norm(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c5 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        if config.paper_init:
            self._init_as_in_paper()

    def _init_as_in_paper(self) -> None:
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        ones_bias = {convs[1], convs[3], convs[4], linears[0], linears[1]}
        for layer in (*convs, *linears):
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.constant_(layer.bias, 1.0 if layer in ones_bias else 0.0)

    def init_classifier(self, layer: nn.Linear) -> None:
        if self.config.paper_init:
            super().init_classifier(layer)
        else:
            layer.reset_parameters()

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


@register_backbone
def alexnet(**kwargs: Any) -> AlexNet:
    """AlexNet as in Krizhevsky et al. 2012, with LRN (see :class:`AlexNet`)."""
    config = AlexNetConfig(
        (96, 256, 384, 384, 256), first_padding=0, local_response_norm=True, paper_init=True
    )
    return AlexNet("alexnet", config, **kwargs)


@register_backbone
def alexnet_owt(**kwargs: Any) -> AlexNet:
    """The single-tower AlexNet of "One weird trick" (torchvision's ``alexnet``)."""
    config = AlexNetConfig(
        (64, 192, 384, 256, 256), first_padding=2, local_response_norm=False, paper_init=False
    )
    return AlexNet("alexnet_owt", config, **kwargs)
