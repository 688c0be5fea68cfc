"""What every lit-classifiers backbone offers beyond ``forward``.

A backbone is ``forward_features`` (image to the vector the classifier reads) followed by a
final linear layer, the *classifier*. Fine-tuning and the training module rely on that split:
``num_features``, ``forward_features``, ``get_classifier`` and ``reset_classifier``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Backbone"]


class Backbone(nn.Module):
    """Base class of the registered networks.

    Subclasses set ``num_features``, ``min_input_size``, ``in_channels`` and
    ``classifier_name`` (the dotted path of the final ``nn.Linear``, e.g. ``"fc"`` or
    ``"classifier.6"``, kept at torchvision's place so state_dicts line up) and implement
    ``forward_features``.
    """

    num_features: int
    min_input_size: int
    in_channels: int
    classifier_name: str
    first_conv_name: str

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward_features(self, x: Tensor) -> Tensor:
        """The ``(N, num_features)`` vector the classifier reads."""
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits from the output of :meth:`forward_features`."""
        return self.get_classifier()(features)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: Tensor) -> None:
        """Reject inputs the network cannot process before any computation is spent on them."""
        if x.ndim != 4:
            raise ValueError(
                f"{self.name} expects a batch of images (N, C, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name} was built for in_channels={self.in_channels}, "
                f"got an input with {x.shape[1]} channels"
            )
        height, width = x.shape[-2:]
        if height < self.min_input_size or width < self.min_input_size:
            raise ValueError(
                f"{self.name} needs inputs of at least {self.min_input_size}x"
                f"{self.min_input_size} pixels, got {height}x{width}"
            )

    def get_classifier(self) -> nn.Linear:
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
