"""Loading pretrained weights into a backbone: torchvision's by name, or a file of ours.

Files are read with ``torch.load(weights_only=True)``, so a weights file can hold tensors but
never run code. When the weights were trained for another number of classes the classifier
is left new; when they were trained on another number of input channels the first
convolution's kernel is adapted (summed to one channel for grayscale, repeated and rescaled
for more than three) so its response to an image keeps the same scale.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import fsspec.utils
import torch
from torch import Tensor, nn

__all__ = ["adapt_input_conv", "load_weights", "read_state_dict"]

_WRAPPER_PREFIXES = ("backbone.", "_orig_mod.", "module.")


def load_weights(
    model: nn.Module,
    weights: str | os.PathLike[str],
    backbone_name: str,
    torchvision_name: str | None = None,
    *,
    classifier: str | None = None,
    first_conv: str | None = None,
) -> None:
    """Load ``weights`` (a torchvision weights name or a file path) into ``model`` in place.

    ``backbone_name`` names the model in errors; ``torchvision_name`` is the torchvision model
    whose weights a name such as ``"DEFAULT"`` refers to. ``classifier`` and ``first_conv`` are
    the dotted paths of the final linear layer and the first convolution (a backbone record's
    entries); by default a :class:`~lit_classifiers.Backbone`'s ``classifier_name`` and
    ``first_conv_name``. Without them, weights must match the model's shapes exactly.
    """
    state_dict = _fetch(weights, backbone_name, torchvision_name)
    own = model.state_dict()
    if classifier is None:
        classifier = getattr(model, "classifier_name", None)
    if first_conv is None:
        first_conv = getattr(model, "first_conv_name", None)

    dropped: set[str] = set()
    if classifier is not None:
        for key in (f"{classifier}.weight", f"{classifier}.bias"):
            if key in state_dict and key in own and state_dict[key].shape != own[key].shape:
                del state_dict[key]
                dropped.add(key)
    if first_conv is not None:
        key = f"{first_conv}.weight"
        if key in state_dict and key in own and state_dict[key].shape != own[key].shape:
            state_dict[key] = adapt_input_conv(state_dict[key], own[key].shape[1])

    mismatched = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape
    ]
    missing = sorted(set(own) - set(state_dict) - dropped)
    unexpected = sorted(set(state_dict) - set(own))
    if mismatched or missing or unexpected:
        problems = [
            *(f"shape mismatch {m}" for m in mismatched),
            *(f"missing {k}" for k in missing[:10]),
            *(f"unexpected {k}" for k in unexpected[:10]),
        ]
        raise ValueError(
            f"weights {str(weights)!r} do not fit backbone {backbone_name!r}: "
            + "; ".join(problems)
        )
    # Keys dropped above keep the model's own freshly initialised classifier.
    model.load_state_dict(state_dict, strict=False)


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """A first-convolution kernel ``(out, c, k, k)`` for ``in_channels`` instead of ``c``."""
    source_channels = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / source_channels)
    adapted = weight.repeat(1, repeats, 1, 1)[:, :in_channels]
    return adapted * (source_channels / in_channels)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A backbone state_dict from a file or URL (read as
    :func:`~lit_classifiers.checkpoint_io.read_checkpoint` reads checkpoints): a plain
    state_dict, or a Lightning checkpoint of a :class:`~lit_classifiers.ClassifierModule` (its
    EMA weights when it kept them, else its ``backbone.`` weights)."""
    from lit_classifiers.checkpoint_io import read_checkpoint

    source = os.fspath(path)
    if fsspec.utils.get_protocol(source) == "file" and not os.path.isfile(
        source.removeprefix("file://")
    ):
        raise FileNotFoundError(f"weights file {source!r} does not exist")
    loaded: object = read_checkpoint(source, map_location="cpu", kind="weights file")
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
        # A module trained with an EMA was evaluated with the averaged weights: take those.
        for prefix in ("ema.module.", "backbone."):
            if any(key.startswith(prefix) for key in loaded):
                loaded = {k[len(prefix) :]: v for k, v in loaded.items() if k.startswith(prefix)}
                break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ValueError(
            f"weights file {source!r} holds a {type(loaded).__name__}, "
            "expected a state_dict (a mapping of names to tensors)"
        )
    return {_strip_prefixes(key): value for key, value in loaded.items()}


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


_WEIGHTS_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".tar"}


def _looks_like_path(weights: str) -> bool:
    return (
        os.sep in weights
        or "/" in weights
        or Path(weights).suffix.lower() in _WEIGHTS_SUFFIXES
        or Path(weights).exists()
    )


def _fetch(
    weights: str | os.PathLike[str], backbone_name: str, torchvision_name: str | None
) -> dict[str, Tensor]:
    if not isinstance(weights, str) or _looks_like_path(weights):
        return read_state_dict(weights)
    if torchvision_name is None:
        raise ValueError(
            f"backbone {backbone_name!r} has no torchvision counterpart, so weights={weights!r} "
            "cannot name torchvision weights; pass the path of a state_dict file instead"
        )
    return dict(_torchvision_state_dict(torchvision_name, weights))


def _torchvision_state_dict(model_name: str, weights_name: str) -> Mapping[str, Tensor]:
    from torchvision.models import get_model_weights

    enum = get_model_weights(model_name)
    try:
        entry = enum.verify(weights_name)
    except (KeyError, ValueError):
        available = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ValueError(
            f"unknown weights {weights_name!r} for torchvision's {model_name}; "
            f"available: {available}"
        ) from None
    try:
        return entry.get_state_dict(progress=True, check_hash=True)
    except OSError as error:  # URLError and friends: offline and not cached yet
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
        raise RuntimeError(
            f"could not download {entry.url} for {model_name} weights {weights_name!r} "
            f"({error}). Offline, download that file elsewhere and place it at {target}"
        ) from error
