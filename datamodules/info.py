"""What a datamodule declares about its data, in one frozen object.

Every fact a model or a callback needs from the data (class names, channels, crop size,
normalisation) is resolved once by the datamodule into a :class:`DatasetInfo`, and everything
else reads that object: the CLI link that builds the model, ``ClassifierModule.setup``'s checks,
the TensorBoard figures. Whatever goes wrong while resolving it (a missing label file, a name
table without an entry for a class) is raised where it happens, never turned into "unknown".

Lightning code that must also work with datamodules from elsewhere reads it through
:func:`dataset_info`, which answers ``None`` for a datamodule that declares nothing.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Trainer

__all__ = ["DatasetInfo", "dataset_info"]

_MISSING = object()


@dataclass(frozen=True)
class DatasetInfo:
    """The facts of one dataset as a datamodule serves it.

    Args:
        name: Short name of the dataset (``"stl10"``, ``"imagenet"``, ``"digits"``,
            ``"imagefolder"``).
        class_names: One name per label, in label order. Names need not be unique: ImageNet's
            devkit names two different synsets "crane" and two "maillot" (its WordNet ids are
            the unique keys).
        in_channels: Channels of the images the loaders yield (3 for RGB, 1 for grayscale).
        image_size: Side of the square images the loaders yield.
        mean, std: Per-channel normalisation in [0, 1] units, one value per channel.
    """

    name: str
    class_names: tuple[str, ...]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"DatasetInfo: name must be a non-empty str, got {self.name!r}")
        where = f"DatasetInfo({self.name!r})"
        # Lists are accepted and stored as tuples, so the object stays immutable and hashable.
        for field in ("class_names", "mean", "std"):
            value = getattr(self, field)
            if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
                raise ValueError(f"{where}: {field} must be a tuple or list, got {value!r}")
            object.__setattr__(self, field, tuple(value))
        names = self.class_names
        bad = [name for name in names if not isinstance(name, str) or not name]
        if bad:
            raise ValueError(f"{where}: class names must be non-empty str, got {bad[:5]!r}")
        if len(names) < 2:
            raise ValueError(f"{where}: needs at least 2 classes, got {list(names)!r}")
        for field in ("in_channels", "image_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: {field} must be a positive int, got {value!r}")
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) != self.in_channels:
                raise ValueError(
                    f"{where}: {field} has {len(values)} values {values!r}, expected one per "
                    f"channel (in_channels={self.in_channels})"
                )
            if any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                for v in values
            ):
                raise ValueError(f"{where}: {field} must be finite numbers, got {values!r}")
            object.__setattr__(self, field, tuple(float(v) for v in values))
        if any(v <= 0 for v in self.std):
            raise ValueError(f"{where}: std must be positive, got {self.std!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _datamodule_of(source: Any) -> Any:
    """The datamodule ``source`` stands for: itself, or a trainer's (``None`` if it has none)."""
    if isinstance(source, Trainer):
        return source.datamodule
    return source


def dataset_info(source: Any) -> DatasetInfo | None:
    """The :class:`DatasetInfo` of a datamodule, or of a trainer's datamodule.

    ``None`` only when there is no datamodule, or when it declares no ``info`` holding a
    :class:`DatasetInfo` (any ``LightningDataModule`` works with the code that calls this).
    Whatever resolving the facts raises propagates: a datamodule that cannot say what its
    classes are is an error, not an unknown.
    """
    datamodule = _datamodule_of(source)
    if datamodule is None:
        return None
    # Looked up without running it: a property that raises must raise, not mean "absent".
    if inspect.getattr_static(datamodule, "info", _MISSING) is _MISSING:
        return None
    info = datamodule.info
    return info if isinstance(info, DatasetInfo) else None
