"""The backbone registry: one name per architecture, with the metadata a user needs to choose one.

Modelled on timm's registry: a decorator registers a builder under its function name (or an
explicit one), :func:`list_backbones` filters names with shell-style wildcards, and
:func:`create_backbone` builds a network by name and optionally loads weights into it.

Other packages register their own networks the same way::

    from lit_classifiers import Paper, register_backbone

    @register_backbone(paper=Paper("My net", 2024), default_input_size=64, min_input_size=32)
    def mynet(num_classes: int = 1000, in_channels: int = 3) -> nn.Module: ...
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from lit_classifiers.weights import load_weights

__all__ = [
    "BackboneInfo",
    "Paper",
    "create_backbone",
    "get_backbone_info",
    "list_backbones",
    "register_backbone",
]

BuilderT = TypeVar("BuilderT", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class Paper:
    """The publication an architecture comes from."""

    title: str
    year: int
    arxiv: str | None = None
    authors: str | None = None

    @property
    def url(self) -> str | None:
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else None

    def __str__(self) -> str:
        cite = f"{self.authors}, " if self.authors else ""
        arxiv = f", arXiv:{self.arxiv}" if self.arxiv else ""
        return f"{cite}{self.title} ({self.year}{arxiv})"


@dataclass(frozen=True)
class BackboneInfo:
    """Metadata of a registered backbone.

    ``default_input_size`` is the side the network was designed for; ``torchvision_name`` the
    torchvision model whose state_dict ours loads with ``strict=True`` (``None`` where there is
    none).
    """

    name: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    family: str
    paper: Paper
    default_input_size: int
    torchvision_name: str | None = None
    declared_min_input_size: int | None = field(default=None, repr=False)

    @cached_property
    def _meta_model(self) -> nn.Module:
        # Built on the meta device: no memory, no initialisation cost, even for VGG19.
        with torch.device("meta"):
            return self.builder()

    @cached_property
    def num_params(self) -> int:
        """Parameter count as designed: the builder's default classes (1000 for the ImageNet
        networks, 10 for the small-image ResNets) and 3 input channels."""
        return sum(p.numel() for p in self._meta_model.parameters())

    @property
    def min_input_size(self) -> int:
        """Smallest square input side the network accepts: as registered, or else the
        ``min_input_size`` the network itself declares (every built-in backbone does)."""
        if self.declared_min_input_size is not None:
            return self.declared_min_input_size
        return int(getattr(self._meta_model, "min_input_size", 1))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "paper": str(self.paper),
            "paper_title": self.paper.title,
            "year": self.paper.year,
            "arxiv": self.paper.arxiv,
            "num_params": self.num_params,
            "min_input_size": self.min_input_size,
            "default_input_size": self.default_input_size,
            "torchvision_name": self.torchvision_name,
        }


_REGISTRY: dict[str, BackboneInfo] = {}


def register_backbone(
    name: str | None = None,
    *,
    paper: Paper,
    default_input_size: int,
    min_input_size: int | None = None,
    family: str | None = None,
    torchvision_name: str | None = None,
) -> Callable[[BuilderT], BuilderT]:
    """Register a builder ``f(num_classes=..., in_channels=..., **kwargs) -> nn.Module``.

    The name defaults to the builder's ``__name__``. ``min_input_size`` is needed only for
    networks that do not declare it as an attribute (as :class:`~lit_classifiers.Backbone` does).
    Registering a name twice is an error: silently replacing a network would change what every
    recipe using that name trains.
    """

    def decorator(builder: BuilderT) -> BuilderT:
        key = name or builder.__name__
        if key in _REGISTRY:
            existing = _REGISTRY[key].builder
            raise ValueError(
                f"backbone {key!r} is already registered (by {existing.__module__}."
                f"{existing.__qualname__}); choose another name"
            )
        if min_input_size is not None and not 1 <= min_input_size <= default_input_size:
            raise ValueError(
                f"backbone {key!r}: need 1 <= min_input_size <= default_input_size, got "
                f"{min_input_size} and {default_input_size}"
            )
        _REGISTRY[key] = BackboneInfo(
            name=key,
            builder=builder,
            family=family or builder.__module__.rsplit(".", 1)[-1],
            paper=paper,
            default_input_size=default_input_size,
            torchvision_name=torchvision_name,
            declared_min_input_size=min_input_size,
        )
        return builder

    return decorator


def list_backbones(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered backbones, optionally filtered by an fnmatch pattern
    such as ``"resnet*"`` or ``"*_bn"``."""
    names = sorted(_REGISTRY)
    return names if pattern is None else fnmatch.filter(names, pattern)


def get_backbone_info(name: str) -> BackboneInfo:
    """The metadata of a registered backbone; an unknown name lists the close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise KeyError(
            f"unknown backbone {name!r}; {hint}registered: {', '.join(list_backbones())}"
        ) from None


def create_backbone(
    name: str,
    num_classes: int = 1000,
    *,
    in_channels: int = 3,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered backbone by name.

    Args:
        name: a name from :func:`list_backbones`.
        num_classes: outputs of the classifier.
        in_channels: channels of the input images (1 for grayscale, 4 for RGB-NIR, ...).
        weights: ``None`` for the architecture's own initialisation; a torchvision weights name
            (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) for backbones with a torchvision counterpart,
            fetched through torchvision's cache; or a path to a saved state_dict (or a
            lit-classifiers checkpoint). With other ``num_classes`` than the weights' the
            classifier is left new; with ``in_channels`` other than the weights' the first
            convolution's weights are adapted.
        **kwargs: architecture options such as ``dropout`` or ``zero_init_residual``.
    """
    info = get_backbone_info(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    model = info.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if weights is not None:
        load_weights(model, weights, info.name, info.torchvision_name)
    return model
