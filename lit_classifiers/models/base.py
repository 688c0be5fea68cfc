"""What every lit-classifiers backbone offers beyond ``forward``, and the names of its parts.

- The *backbone* is the whole registered network.
- The *classifier* is its final linear layer (``num_features -> num_classes``): what
  :meth:`Backbone.get_classifier` returns and :meth:`Backbone.reset_classifier` replaces. A
  backbone's record names it (``"fc"``, ``"classifier.6"``).
- The *body* is everything but the classifier: :meth:`Backbone.forward_features` runs it.

VGG and AlexNet keep torchvision's attribute name ``classifier`` for the block of three linear
layers at their end (fc6, fc7 and fc8, with ReLU and dropout), because their state_dict keys
must be torchvision's (``classifier.6.weight``, ...). In these docs that block is their *head*;
their classifier is its last layer, ``classifier.6``, and fc6 and fc7 belong to the body.

Fine-tuning and the training module rely on that split: ``num_features``,
``forward_features``, ``get_classifier`` and ``reset_classifier``.
"""

# No ``from __future__ import annotations`` here: TorchScript reads the class annotations of
# Backbone (``name: str``, ...) as types, and cannot resolve them once they are strings.
import torch
from torch import Tensor, nn

from lit_classifiers.registry import BackboneInfo

__all__ = ["Backbone", "check_image_batch"]


# A leaf function for torch.fx, as torchvision makes the shape-dependent helpers of its Swin
# Transformer (``torch.fx.wrap("_patch_merging_pad")``): symbolic tracing cannot branch on a
# traced shape, so the check stays one call in the graph and runs, on real tensors, whenever
# the traced module does. TorchScript compiles it as it is; torch.export evaluates it once.
@torch.fx.wrap
def check_image_batch(x: Tensor, name: str, in_channels: int, min_input_size: int) -> Tensor:
    """Reject inputs a network cannot process before any computation is spent on them.

    Returns ``x`` unchanged, so that the check lies on the data path of a traced graph and no
    pruning of unused nodes (``create_feature_extractor``'s) drops it.
    """
    if x.dim() != 4:
        raise ValueError(
            f"{name} expects a batch of images (N, C, H, W), got shape {list(x.shape)}"
        )
    if x.size(1) != in_channels:
        raise ValueError(
            f"{name} was built for in_channels={in_channels}, "
            f"got an input with {x.size(1)} channels"
        )
    height, width = x.size(2), x.size(3)
    if height < min_input_size or width < min_input_size:
        raise ValueError(
            f"{name} needs inputs of at least {min_input_size}x"
            f"{min_input_size} pixels, got {height}x{width}"
        )
    return x


class Backbone(nn.Module):
    """Base class of the registered networks.

    A registered family passes its variant's record (:class:`~lit_classifiers.BackboneInfo`)
    to ``__init__``, which takes ``name``, ``min_input_size``, ``classifier_name`` and
    ``first_conv_name`` from it. A network without a record passes its name and sets those
    itself. Subclasses set ``in_channels`` and ``num_features`` and implement
    ``forward_features``.
    """

    name: str
    in_channels: int
    num_features: int
    min_input_size: int = 1
    classifier_name: str
    first_conv_name: str | None = None
    # Properties are compiled by torch.jit.script unless listed here; forward needs none.
    __jit_unused_properties__ = ["num_classes"]

    def __init__(self, name: str | BackboneInfo) -> None:
        super().__init__()
        if isinstance(name, BackboneInfo):
            record = name
            name = record.name
            self.min_input_size = record.min_input_size
            if record.classifier is not None:
                self.classifier_name = record.classifier
            self.first_conv_name = record.first_conv
        self.name = name

    def forward_features(self, x: Tensor) -> Tensor:
        """The body: the ``(N, num_features)`` vector the classifier reads."""
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits from the output of :meth:`forward_features`."""
        return self.get_classifier()(features)

    def forward(self, x: Tensor) -> Tensor:
        x = check_image_batch(x, self.name, self.in_channels, self.min_input_size)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: Tensor) -> None:
        """Reject inputs the network cannot process before any computation is spent on them."""
        check_image_batch(x, self.name, self.in_channels, self.min_input_size)

    def get_classifier(self) -> nn.Linear:
        """The classifier: the final linear layer, at ``classifier_name``."""
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a new, freshly initialised one for ``num_classes``."""
        old = self.get_classifier()
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device)
        self.init_classifier(new)
        self.set_submodule(self.classifier_name, new)

    def init_classifier(self, layer: nn.Linear) -> None:
        """Initialise a new classifier the way the architecture's paper does (overridden)."""
        nn.init.normal_(layer.weight, 0, 0.01)
        nn.init.zeros_(layer.bias)

    @property
    def num_classes(self) -> int:
        return self.get_classifier().out_features
