"""Evaluation protocols, the model side: class probabilities averaged over an image's views.

The datamodule's ``eval_protocol`` (``--data.eval_protocol``; :mod:`datamodules.eval_views`)
chooses the views; the batch carries them, and :func:`protocol_logits` turns whatever arrives
into one row per image:

* ``(N, C, H, W)`` images (``center``, or any plain dataloader): the plain forward pass.
* ``(N, V, C, H, W)`` views of one size (``ten_crop``): the softmax probabilities of the V views
  averaged. Krizhevsky et al. 2012, Sec. 4.1 ("averaging the predictions made by the network's
  softmax layer on the ten patches"); the "standard 10-crop testing" of He et al. 2015,
  Sec. 3.4.
* a list of ``(N, V, C, H_s, W_s)`` tensors, one per scale (``dense``): the network applied
  convolutionally to each whole image, its class score map averaged spatially, and the softmax
  probabilities averaged over scales and flips (Simonyan & Zisserman 2015, Sec. 3.2: "the
  class score map is spatially averaged (sum-pooled)", "the soft-max class posteriors of the
  original and flipped images are averaged").

Averaged probabilities are returned as their logarithm, a valid logit vector (softmax gives the
probabilities back), so losses, accuracies and the probabilities ``predict`` writes all come
from the same numbers; the evaluation loss is then the negative log of the averaged
probability of the true class.

Dense evaluation of AlexNet and VGG turns their fully-connected layers into convolutions that
share the layers' weights (:class:`ConvolutionalHead`: fc6 a 6x6 or 7x7 convolution, fc7 and
fc8 1x1 convolutions) and skips the adaptive average pooling before them, which would
otherwise squeeze any feature map to 6x6 or 7x7. ResNets need nothing: the classifier is
linear, so applying it at every position of the last feature map and averaging the scores is
the same as applying it to the global average, which their forward pass does. A network of
another kind is treated the same way, by its plain forward pass on the whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvolutionalHead", "convolutional_head", "dense_logits", "protocol_logits"]


# ------------------------------------------------------------------------------ fc as conv
class ConvolutionalHead(nn.Module):
    """A torchvision-layout head (``classifier``: Linear, ReLU, Dropout layers) applied as
    convolutions to a ``(N, C, H, W)`` feature map: the first linear layer as a ``kernel`` x
    ``kernel`` convolution, the others as 1x1 convolutions, all with the linear layers' own
    weights (views of them, so the head follows training without being rebuilt). Gives the
    ``(N, num_classes, H - kernel + 1, W - kernel + 1)`` class score map; on a ``kernel`` x
    ``kernel`` map it computes exactly the linear head.
    """

    def __init__(self, classifier: nn.Sequential, in_channels: int, kernel: int) -> None:
        super().__init__()
        linears = [layer for layer in classifier if isinstance(layer, nn.Linear)]
        if not linears or linears[0].in_features != in_channels * kernel * kernel:
            raise ValueError(
                f"expected a head whose first linear layer reads {in_channels}x{kernel}x{kernel} "
                f"features, got {linears[0].in_features if linears else 'no linear layer'}"
            )
        for layer in classifier:
            if not isinstance(layer, (nn.Linear, nn.ReLU, nn.Dropout)):
                raise ValueError(
                    f"cannot apply a {type(layer).__name__} as a convolution; only Linear, ReLU "
                    "and Dropout layers can be"
                )
        self.classifier = classifier
        self.in_channels = in_channels
        self.kernel = kernel

    def forward(self, features: Tensor) -> Tensor:
        height, width = features.shape[-2:]
        if height < self.kernel or width < self.kernel:
            raise ValueError(
                f"dense evaluation needs a feature map of at least {self.kernel}x{self.kernel} "
                f"before the fully-connected layers, got {height}x{width}: use larger scales"
            )
        x, first = features, True
        for layer in self.classifier:
            if isinstance(layer, nn.Linear):
                if first:
                    weight = layer.weight.view(
                        layer.out_features, self.in_channels, self.kernel, self.kernel
                    )
                    first = False
                else:
                    weight = layer.weight.view(layer.out_features, layer.in_features, 1, 1)
                x = F.conv2d(x, weight, layer.bias)
            else:  # ReLU and Dropout act on each value alike
                x = layer(x)
        return x


def _head_layout(net: nn.Module) -> tuple[nn.Sequential, int, int] | None:
    """``(classifier, channels, kernel)`` of an AlexNet/VGG-like network (torchvision's layout:
    ``features``, an adaptive average pool to ``kernel`` x ``kernel``, a ``classifier``
    Sequential of linear layers); ``None`` for any other network."""
    features = getattr(net, "features", None)
    pool = getattr(net, "avgpool", None)
    classifier = getattr(net, "classifier", None)
    if not (
        isinstance(features, nn.Module)
        and isinstance(pool, nn.AdaptiveAvgPool2d)
        and isinstance(classifier, nn.Sequential)
    ):
        return None
    size = pool.output_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or size[0] != size[1] or size[0] is None or size[0] < 2:
        return None
    linears = [layer for layer in classifier if isinstance(layer, nn.Linear)]
    kernel = size[0]
    if not linears or linears[0].in_features % (kernel * kernel):
        return None
    return classifier, linears[0].in_features // (kernel * kernel), kernel


def convolutional_head(net: nn.Module) -> ConvolutionalHead | None:
    """The fully-connected head of an AlexNet/VGG-like ``net`` as convolutions sharing its
    weights, or ``None`` for networks without one (ResNets: their forward is already dense)."""
    layout = _head_layout(net)
    return None if layout is None else ConvolutionalHead(*layout)


def dense_logits(
    net: nn.Module, images: Tensor, forward: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """Class scores of whole ``images`` ``(N, C, H, W)``, the network applied convolutionally
    and its score map averaged spatially: ``(N, num_classes)``.

    For AlexNet/VGG-like networks the features go through :class:`ConvolutionalHead` (no
    adaptive pooling); any other network is run by ``forward`` (default: ``net`` itself).
    """
    head = convolutional_head(net)
    if head is None:
        return (forward or net)(images)
    check_input = getattr(net, "check_input", None)
    if callable(check_input):
        check_input(images)
    scores = head(net.features(images))
    return scores.mean(dim=(-2, -1))


# ------------------------------------------------------------------------------ views
def _averaged_log_probs(probs: Tensor) -> Tensor:
    """``(N, V, K)`` view probabilities to the log of their mean over the views."""
    mean = probs.mean(dim=1)
    return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()


def protocol_logits(
    images: Tensor | Sequence[Tensor],
    forward: Callable[[Tensor], Tensor],
    net: nn.Module,
) -> Tensor:
    """One logit row per image of an evaluation batch, from whatever views it carries (see the
    module docstring): ``(N, C, H, W)`` images give ``forward(images)``; ``(N, V, C, H, W)``
    views or a list of them (one per dense scale) give the log of the view-averaged softmax
    probabilities. ``forward`` is the module's forward (EMA weights, channels-last), ``net``
    the network it runs.
    """
    if isinstance(images, Tensor) and images.ndim == 4:
        return forward(images)
    if isinstance(images, Tensor) and images.ndim == 5:
        n, v = images.shape[:2]
        logits = forward(images.flatten(0, 1))
        return _averaged_log_probs(logits.float().softmax(-1).view(n, v, -1))
    if (
        isinstance(images, (list, tuple))
        and images
        and all(isinstance(x, Tensor) and x.ndim == 5 for x in images)
    ):
        probs = []
        for scale in images:  # views of one scale share a size: one forward pass
            n, v = scale.shape[:2]
            logits = dense_logits(net, scale.flatten(0, 1), forward)
            probs.append(logits.float().softmax(-1).view(n, v, -1))
        return _averaged_log_probs(torch.cat(probs, dim=1))
    got = (
        f"a tensor of shape {tuple(images.shape)}"
        if isinstance(images, Tensor)
        else (f"a {type(images).__name__}")
    )
    raise ValueError(
        "evaluation batches must hold (N, C, H, W) images, (N, V, C, H, W) views or a list of "
        f"(N, V, C, H, W) tensors, one per dense scale (datamodules.eval_views), got {got}"
    )
