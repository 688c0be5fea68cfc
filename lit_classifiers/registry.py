"""The backbone registry: one record of facts per network, and names to build networks by.

Modelled on timm's registry (``register_model``, ``default_cfgs``, ``list_models``):

- A family file (``lit_classifiers/models/resnet.py``, ...) starts with its ``BACKBONES``
  table: one :class:`BackboneInfo` record per variant, holding everything known about it
  before it is built (paper, input sizes, default number of classes, where its classifier and
  first convolution sit, its torchvision counterpart).
- Below the table, one builder per variant adds the architecture and passes ``**kwargs``
  through to the family's class. Decorated with a bare ``@register_backbone``, the builder is
  paired with the record of its own name and exported from its file (``__all__``), so
  ``lit_classifiers.models.<name>`` exists without further edits. A new variant is one record
  and one builder; a new family is one file and one import line in ``models/__init__.py``.
- :func:`list_backbones` lists the names in natural order (``resnet18`` before ``resnet101``)
  and :func:`create_backbone` builds one by name.

Other packages can register a network with its facts given inline::

    from lit_classifiers import Paper, register_backbone

    @register_backbone(paper=Paper("My net", 2024), default_input_size=64, min_input_size=32)
    def mynet(num_classes: int = 1000, in_channels: int = 3) -> nn.Module: ...
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, overload

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

# The name of the table of records a family file holds, as timm's ``default_cfgs``.
RECORDS_TABLE = "BACKBONES"


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
    """The record of one backbone variant: the facts written down for it, in one place.

    A family file writes one per variant in its ``BACKBONES`` table; ``name``, ``family`` and
    ``builder`` are filled in when the variant's builder is registered. What can be measured
    instead of written down (``num_params``) is measured.

    Attributes:
        paper: the publication the architecture comes from.
        default_input_size: the square side the network was designed for.
        min_input_size: the smallest side it accepts (1: any).
        num_classes: what :func:`create_backbone` builds when not told: the classes of the
            paper's dataset (1000 for ImageNet, 10 for CIFAR-10).
        classifier: dotted path of the final ``nn.Linear`` (``"fc"``, ``"classifier.6"``): the
            layer ``get_classifier()`` returns, left new when weights have other classes.
        first_conv: dotted path of the first convolution, adapted when weights were trained on
            another number of input channels.
        torchvision_name: the torchvision model whose state_dict ours loads with
            ``strict=True`` (``None`` where there is none).
        family: the file that defines it (``"resnet"``, ``"resnet_cifar"``, ...).
    """

    paper: Paper
    default_input_size: int
    min_input_size: int = 1
    num_classes: int = 1000
    classifier: str | None = None
    first_conv: str | None = None
    torchvision_name: str | None = None
    name: str = ""
    family: str = ""
    builder: Callable[..., nn.Module] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def num_params(self) -> int:
        """Parameters of the network as built by default (``num_classes`` classes, 3 input
        channels), counted on the meta device: no memory, no initialisation cost."""
        if self.builder is None:
            raise ValueError(f"backbone record {self.name!r} has no builder registered")
        with torch.device("meta"):
            model = self.builder(num_classes=self.num_classes)
        return sum(p.numel() for p in model.parameters())

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "paper": str(self.paper),
            "paper_title": self.paper.title,
            "year": self.paper.year,
            "arxiv": self.paper.arxiv,
            "num_params": self.num_params,
            "num_classes": self.num_classes,
            "min_input_size": self.min_input_size,
            "default_input_size": self.default_input_size,
            "torchvision_name": self.torchvision_name,
        }


_REGISTRY: dict[str, BackboneInfo] = {}


@overload
def register_backbone(name: BuilderT, /) -> BuilderT: ...


@overload
def register_backbone(
    name: str | None = None,
    *,
    paper: Paper,
    default_input_size: int,
    min_input_size: int = 1,
    num_classes: int = 1000,
    classifier: str | None = None,
    first_conv: str | None = None,
    torchvision_name: str | None = None,
    family: str | None = None,
) -> Callable[[BuilderT], BuilderT]: ...


def register_backbone(
    name: str | Callable[..., nn.Module] | None = None,
    *,
    paper: Paper | None = None,
    default_input_size: int | None = None,
    min_input_size: int = 1,
    num_classes: int = 1000,
    classifier: str | None = None,
    first_conv: str | None = None,
    torchvision_name: str | None = None,
    family: str | None = None,
) -> Any:
    """Register a builder ``f(num_classes=..., in_channels=..., **kwargs) -> nn.Module``.

    Bare, ``@register_backbone`` registers the builder under its ``__name__`` with the record
    of that name in its file's ``BACKBONES`` table, and adds the name to the file's
    ``__all__``. Called, ``@register_backbone(name, paper=..., default_input_size=..., ...)``
    takes the record's facts as arguments (see :class:`BackboneInfo`); the name defaults to
    the builder's ``__name__``. Registering a name twice is an error: silently replacing a
    network would change what every recipe using that name trains.
    """
    if callable(name):
        return _register_from_table(name)
    if paper is None or default_input_size is None:
        raise TypeError(
            f"register_backbone({name!r}): paper= and default_input_size= are required when the "
            f"facts are given inline (bare @register_backbone reads them from {RECORDS_TABLE})"
        )
    record = BackboneInfo(
        paper=paper,
        default_input_size=default_input_size,
        min_input_size=min_input_size,
        num_classes=num_classes,
        classifier=classifier,
        first_conv=first_conv,
        torchvision_name=torchvision_name,
        family=family or "",
    )

    def decorator(builder: BuilderT) -> BuilderT:
        _add(name or builder.__name__, record, builder)
        return builder

    return decorator


def _register_from_table(builder: BuilderT) -> BuilderT:
    module = sys.modules[builder.__module__]
    where = f"{builder.__module__}.{builder.__qualname__}"
    table = getattr(module, RECORDS_TABLE, None)
    if not isinstance(table, dict):
        raise TypeError(
            f"@register_backbone on {where}: {builder.__module__} has no {RECORDS_TABLE} table "
            "of BackboneInfo records; define one, or pass the facts: "
            "@register_backbone(paper=..., default_input_size=...)"
        )
    name = builder.__name__
    if name not in table:
        raise KeyError(
            f"@register_backbone on {where}: no record {name!r} in {builder.__module__}."
            f"{RECORDS_TABLE} (it has {', '.join(map(repr, table)) or 'none'})"
        )
    _add(name, table[name], builder)
    exported = getattr(module, "__all__", None)
    if isinstance(exported, list) and name not in exported:
        exported.append(name)
    return builder


def _add(name: str, record: BackboneInfo, builder: Callable[..., nn.Module]) -> None:
    if not isinstance(record, BackboneInfo):
        raise TypeError(
            f"backbone {name!r}: its record must be a BackboneInfo, got {type(record).__name__}"
        )
    if name in _REGISTRY:
        existing = _REGISTRY[name].builder
        raise ValueError(
            f"backbone {name!r} is already registered (by {existing.__module__}."
            f"{existing.__qualname__}); choose another name"
        )
    _check_record(name, record)
    _REGISTRY[name] = dataclasses.replace(
        record,
        name=name,
        family=record.family or builder.__module__.rsplit(".", 1)[-1],
        builder=builder,
    )


def _check_record(name: str, record: BackboneInfo) -> None:
    if not isinstance(record.paper, Paper):
        raise TypeError(
            f"backbone {name!r}: paper must be a Paper, got {type(record.paper).__name__}"
        )
    for key in ("default_input_size", "min_input_size", "num_classes"):
        value = getattr(record, key)
        if not _is_positive_int(value):
            raise ValueError(f"backbone {name!r}: {key} must be an integer >= 1, got {value!r}")
    if record.min_input_size > record.default_input_size:
        raise ValueError(
            f"backbone {name!r}: need 1 <= min_input_size <= default_input_size, got "
            f"{record.min_input_size} and {record.default_input_size}"
        )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _natural_key(name: str) -> list[int | str]:
    """``resnet18`` < ``resnet101``: runs of digits compare as numbers (as timm sorts)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def list_backbones(pattern: str | None = None) -> list[str]:
    """Names of the registered backbones in natural order (``resnet18``, ``resnet20``, ...,
    ``resnet101``), optionally filtered by an fnmatch pattern such as ``"resnet*"``."""
    names = sorted(_REGISTRY, key=_natural_key)
    return names if pattern is None else fnmatch.filter(names, pattern)


def get_backbone_info(name: str) -> BackboneInfo:
    """The record of a registered backbone; an unknown name lists the close matches."""
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
    num_classes: int | None = None,
    *,
    in_channels: int = 3,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered backbone by name.

    Args:
        name: a name from :func:`list_backbones`.
        num_classes: outputs of the classifier; by default the record's (1000 for the ImageNet
            networks, 10 for the CIFAR ResNets), the count ``num_params`` reports.
        in_channels: channels of the input images (1 for grayscale, 4 for RGB-NIR, ...).
        weights: ``None`` for the architecture's own initialisation; a torchvision weights name
            (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) for backbones with a torchvision counterpart,
            fetched through torchvision's cache; or a path to a saved state_dict (or a
            lit-classifiers checkpoint). With other ``num_classes`` than the weights' the
            classifier is left new; with ``in_channels`` other than the weights' the first
            convolution's weights are adapted.
        **kwargs: architecture options such as ``dropout`` or ``zero_init_residual``, passed
            to the builder.
    """
    info = get_backbone_info(name)
    if num_classes is None:
        num_classes = info.num_classes
    if not _is_positive_int(num_classes):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not _is_positive_int(in_channels):
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    model = info.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if weights is not None:
        load_weights(
            model,
            weights,
            info.name,
            info.torchvision_name,
            classifier=info.classifier,
            first_conv=info.first_conv,
        )
    return model
