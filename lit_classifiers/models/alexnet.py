"""AlexNet: the 2012 network with LocalResponseNorm, and torchvision's one-tower variant.

- Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
  Networks", NeurIPS 2012.
- Krizhevsky, "One weird trick for parallelizing convolutional neural networks", 2014,
  arXiv:1404.5997: torchvision's ``alexnet`` (our ``alexnet_owt``) cites it, but differs from
  its single-column network (see :func:`alexnet_owt`).
"""

from __future__ import annotations

from collections import OrderedDict
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
    paper_dropout: bool


# The paper's LRN (Section 3.3): b = a / (k + alpha * sum(a^2))^beta, the sum over n adjacent
# channels, with n=5, k=2, alpha=1e-4, beta=0.75. We follow the paper's formula. Krizhevsky's
# own code differs: cuda-convnet2's layer.py divides the configured scale by the window size for
# cross-map response normalisation (``dic['scale'] /= dic['size']``), so its ImageNet configs
# (size=5 in layers/layers-223-1gpu.cfg, scale=0.0001 and minDiv=2 in
# layers/layer-params-223-ce2-1gpu.cfg) weigh each squared activation by 1e-4 / 5, five times
# less than the paper's formula. torch.nn.LocalResponseNorm divides alpha by the window size in
# the same way, so it is given alpha * n to compute the paper's formula.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def paper_local_response_norm() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


def _paper_head(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    """fc6, fc7 and the classifier fc8, each hidden layer's output dropped after its ReLU.

    The linear layers keep the names they have in torchvision's layout ("1", "4", "6"), so
    checkpoints written before the dropout moved still load and the record's classifier is
    still ``classifier.6``; the parameter-free layers between them are named for their layer.
    """
    return nn.Sequential(
        OrderedDict(
            [
                ("1", nn.Linear(in_features, 4096)),
                ("relu6", nn.ReLU(inplace=True)),
                ("drop6", nn.Dropout(dropout)),
                ("4", nn.Linear(4096, 4096)),
                ("relu7", nn.ReLU(inplace=True)),
                ("drop7", nn.Dropout(dropout)),
                ("6", nn.Linear(4096, num_classes)),
            ]
        )
    )


class AlexNet(Backbone):
    """AlexNet, laid out as torchvision's ``alexnet`` (``features``, ``avgpool``, and the head
    ``classifier``) so state_dicts line up.

    ``alexnet`` (Krizhevsky et al. 2012): 96-256-384-384-256 channels, 11x11 stride-4 first
    convolution (no padding, made for 227x227 inputs), ReLU after every layer, LRN after the
    ReLU of the first two convolutions and before their overlapping 3x3/2 max pools (Sections
    3.3 to 3.5), a max pool after the fifth, and a head of three linear layers 9216-4096-4096-C.
    Dropout (p=0.5) follows the ReLU of fc6 and of fc7, as in the paper (Section 4.2: dropout
    sets "to zero the output of each hidden neuron", used "in the first two fully-connected
    layers") and in Krizhevsky's cuda-convnet2 (``layers/layers-223-1gpu.cfg``: ``dropout1`` and
    ``dropout2`` take the outputs of ``fc4096a`` and ``fc4096b``); torchvision's order, dropout
    before fc6 and fc7, is ``alexnet_owt``'s. The head keeps the state_dict keys of torchvision's
    layout (``classifier.1``, ``classifier.4``, ``classifier.6``): see :func:`_paper_head`.
    Where it differs from the paper:

    - The paper's two GPU towers are run as one network: the second, fourth and fifth
      convolutions see all channels of the previous layer instead of their own tower's half.
      That is what gives 62,378,344 parameters for 1000 classes.
    - An adaptive 6x6 average pooling precedes the head. At 227x227 it is the identity; it
      lets the network run on any input of at least 67x67.
    - Initialisation follows Section 5 of the paper: weights from N(0, 0.01), biases 1 in the
      second, fourth and fifth convolutions and in the hidden fully-connected layers, 0
      elsewhere.

    ``alexnet_owt``: torchvision's ``alexnet``, identical to it (layers, state_dict keys and
    PyTorch's default initialisation): see :func:`alexnet_owt` for how it differs from the
    network of "One weird trick".
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
        if config.paper_dropout:
            self.classifier = _paper_head(c5 * 6 * 6, num_classes, dropout)
        else:
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
        (96, 256, 384, 384, 256),
        first_padding=0,
        local_response_norm=True,
        paper_init=True,
        paper_dropout=True,
    )
    return AlexNet("alexnet", config, **kwargs)


@register_backbone
def alexnet_owt(**kwargs: Any) -> AlexNet:
    """torchvision's ``alexnet``: a one-tower AlexNet that torchvision attributes to "One weird
    trick" (Krizhevsky 2014, arXiv:1404.5997), but that matches neither that paper's
    single-column model nor Krizhevsky's own one-GPU configuration.

    - torchvision: 64-192-384-256-256 convolutions, the first padded by 2, no LRN, dropout
      before fc6 and fc7, PyTorch's default initialisation. This is what ``alexnet_owt`` builds.
    - The paper's single-column model, in a footnote: "64, 192, 384, 384, 256 filters in the
      five convolutional layers" - the fourth convolution has 384 filters, not 256.
    - Krizhevsky's cuda-convnet2 one-GPU config (``layers/layers-223-1gpu.cfg``):
      64-192-384-256-256 like torchvision, but with cross-map LRN after the first two
      convolutions, no padding on the first, and dropout on the outputs of fc6 and fc7.
    """
    config = AlexNetConfig(
        (64, 192, 384, 256, 256),
        first_padding=2,
        local_response_norm=False,
        paper_init=False,
        paper_dropout=False,
    )
    return AlexNet("alexnet_owt", config, **kwargs)
