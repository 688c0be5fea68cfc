"""The two dataset shapes every datamodule is built from: in-memory/memory-mapped arrays, and files.

Both return ``(image, target)`` with the image a ``(C, H, W)`` uint8 tensor; the target is the
int label, ``-1`` for unlabeled images, or the file path for prediction.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from datamodules.decoding import ImageDecodeError
from datamodules.transforms import EncodedCrop

__all__ = [
    "ArrayImageDataset",
    "EncodedCollate",
    "FileImageDataset",
    "SkipCollate",
    "decode_or_skip",
]

OnBadImage = Literal["error", "skip"]

_skipped_in_this_process = 0


class ArrayImageDataset(Dataset):
    """Images from an indexable source of ``(C, H, W)`` uint8 arrays or tensors.

    ``indices`` selects a subset without copying the source, which matters when the source is a
    memory map of several gigabytes: each split is a view of the same file.
    """

    def __init__(
        self,
        images: Any,
        labels: np.ndarray | None,
        indices: np.ndarray | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        source = int(self.indices[index])
        image = self.images[source]
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(image)
        if self.transform is not None:
            image = self.transform(image)
        label = -1 if self.labels is None else int(self.labels[source])
        return image, label


class FileImageDataset(Dataset):
    """Image files under ``root``, decoded by ``loader`` (a ``path -> tensor`` transform).

    ``paths`` is a NumPy bytes array of paths relative to ``root`` (see
    :mod:`datamodules.files` for why not a list of str). Without ``labels`` the target is the
    file's full path, which is what prediction wants back (an ``os.fsdecode`` string: a name
    that is not UTF-8 holds surrogate escapes, so that the string opens the same file; convert
    it with :func:`~datamodules.files.display_name` before storing it as text).

    With ``on_bad_image='skip'`` an undecodable file yields ``None``, which :class:`SkipCollate`
    drops from the batch, and a warning with the running count of skips is issued. Dropping
    (rather than substituting another image) keeps evaluation metrics honest.
    """

    def __init__(
        self,
        root: str | Path,
        paths: np.ndarray,
        labels: np.ndarray | None,
        loader: Callable[[str], torch.Tensor],
        on_bad_image: OnBadImage = "error",
    ) -> None:
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.root = os.fspath(root)
        self.paths = paths
        self.labels = labels
        self.loader = loader
        self.on_bad_image = on_bad_image

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.paths[index]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | str] | None:
        path = self.path(index)
        try:
            image = self.loader(path)
        except ImageDecodeError as err:
            if self.on_bad_image == "error":
                raise _with_advice(err) from err.__cause__
            _warn_skipped(err)
            return None
        target: int | str = path if self.labels is None else int(self.labels[index])
        return image, target


class SkipCollate:
    """``default_collate`` minus the samples a dataset skipped (``None``).

    A batch in which every sample was skipped becomes an empty batch of the right shape rather
    than a crash, so one bad file cannot kill a run that asked for skipping.
    """

    def __init__(self, image_shape: tuple[int, int, int], paths: bool = False) -> None:
        self.image_shape = image_shape
        self.paths = paths

    def __call__(self, batch: list[Any]) -> Any:
        kept = [sample for sample in batch if sample is not None]
        if kept:
            images = [sample[0] for sample in kept]
            if _channels_last(images):
                collated = [stack_channels_last(images), *default_collate([s[1:] for s in kept])]
            else:
                collated = default_collate(kept)
            if self.paths:  # default_collate gives a tuple of str; a list is what users expect
                collated[1] = list(collated[1])
            return collated
        images = torch.empty((0, *self.image_shape), dtype=torch.uint8)
        return [images, [] if self.paths else torch.empty(0, dtype=torch.int64)]


def _channels_last(images: list[Any]) -> bool:
    """Whether every image is a ``(C, H, W)`` tensor of one shape laid out as ``(H, W, C)``, as
    the decoders give them (PIL's arrays and torch's channels-last resize)."""
    first = images[0]
    return (
        isinstance(first, torch.Tensor)
        and first.ndim == 3
        and first.shape[0] > 1
        and all(
            isinstance(image, torch.Tensor)
            and image.shape == first.shape
            and image.dtype == first.dtype
            and image.permute(1, 2, 0).is_contiguous()
            for image in images
        )
    )


def stack_channels_last(images: list[torch.Tensor]) -> torch.Tensor:
    """Channels-last ``(C, H, W)`` images as one ``(N, C, H, W)`` channels-last batch.

    One contiguous copy per image, where stacking them into the default layout transposes each
    (benchmarks/README.md, 2b); the step's normalisation makes the batch contiguous on its own
    device.
    """
    return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------- encoded crops
# Training with ``decode_device`` other than "worker" (datamodules.base.FileImageDataModule): the
# workers only draw crops (``RandomResizedCropDecode.encode``) and the decoding, with its bad
# images, happens after the batch reached its device.


class EncodedCollate:
    """:class:`SkipCollate` for samples whose image is an :class:`EncodedCrop`.

    Gives ``[crops, labels]``: the crops stay a list, to be decoded together on the training
    device by :func:`decode_or_skip`; the labels are an int64 tensor, so that they travel to that
    device with the batch (and say which device it is). Skipped samples (``None``) are dropped.
    """

    def __call__(self, batch: list[Any]) -> list[Any]:
        kept = [sample for sample in batch if sample is not None]
        labels = torch.tensor([int(sample[1]) for sample in kept], dtype=torch.int64)
        return [[sample[0] for sample in kept], labels]


def decode_or_skip(
    crops: list[EncodedCrop],
    labels: torch.Tensor,
    decode: Callable[[list[EncodedCrop]], torch.Tensor],
    on_bad_image: OnBadImage,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(decode(crops), labels)``, with an undecodable crop handled as :class:`FileImageDataset`
    handles one: the same one-line error, or (``'skip'``) the same counting warning and the crop
    and its label left out of the batch.

    The whole batch is decoded at once (nvJPEG decodes a list together); only a batch that fails
    is decoded again crop by crop, to find what to leave out.
    """
    try:
        return decode(crops), labels
    except ImageDecodeError as err:
        if on_bad_image == "error":
            raise _with_advice(err) from err.__cause__
    kept: list[int] = []
    images: list[torch.Tensor] = []
    for i, crop in enumerate(crops):
        try:
            images.append(decode([crop]))
        except ImageDecodeError as err:
            _warn_skipped(err)
            continue
        kept.append(i)
    index = torch.tensor(kept, dtype=torch.int64, device=labels.device)
    return (torch.cat(images) if images else decode([])), labels[index]


def _with_advice(err: ImageDecodeError) -> ImageDecodeError:
    # Still one line: torch's worker re-raise and the CLI both rely on it.
    return ImageDecodeError(
        f"{err}; replace or remove the file, or set on_bad_image='skip' to leave "
        "undecodable images out"
    )


def _warn_skipped(err: ImageDecodeError) -> None:
    # One count per process, whichever path skipped the image.
    global _skipped_in_this_process
    _skipped_in_this_process += 1
    warnings.warn(
        f"skipped an undecodable image ({_skipped_in_this_process} skipped so far in this "
        f"process; on_bad_image='skip'): {err}",
        RuntimeWarning,
        stacklevel=3,
    )
