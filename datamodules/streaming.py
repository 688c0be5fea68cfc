"""Training from litdata's optimized chunks, on local disk or in object storage.

``lit-classifiers prepare`` (:mod:`datamodules.prepare`) writes a dataset that another
datamodule reads (ImageNet, an image folder, STL-10) as litdata chunks::

    OUT/dataset.json          what the classes are and how the images are stored (see below)
    OUT/train/index.json      litdata's index, then chunk-<worker>-<n>.bin beside it
    OUT/val/...
    OUT/test/...              only when the source has a test split distinct from val

:class:`StreamingDataModule` reads them with ``litdata.StreamingDataset`` and
``StreamingDataLoader`` from that folder or from a URL litdata can stream (``s3://``,
``gs://``, ``azure://``, ``r2://``; chunks are cached locally in ``cache_dir``)::

    lit-classifiers fit --data StreamingDataModule --data.input_dir s3://bucket/imagenet ...

Each sample holds the original file's bytes (a JPEG is not re-encoded), its label, the path it
came from (``key``, so errors can name it) and a CRC-32 of all three, checked on every read.
STL-10, which has no files, stores each image's raw ``(C, H, W)`` uint8 pixels instead.

The transforms are the source datamodule's, with the same arguments: for image files the
``train_augment`` presets of :mod:`datamodules.augment` and the exact evaluation centre crop (and
the ten-crop / dense views of ``eval_protocol``) of :mod:`datamodules.eval_views`, for STL-10 the
transforms :class:`~datamodules.stl10.STL10DataModule` builds. A file transform reads a path,
so each stored file is handed to it as an anonymous in-memory file (:func:`bytes_as_file`): a
streamed image is decoded exactly as its file is. Normalisation happens on the device, as for
every datamodule.

Distribution (checked by ``tests/test_streaming.py``):

* Training shuffles chunks and samples each epoch (``seed``). Under DDP litdata gives every rank
  the same number of batches, as DDP training needs, and leaves the remainder of the epoch out:
  fewer than ``batch_size * world_size`` samples on a local disk (on NFS, Lustre, GPFS and VAST
  mounts litdata hands whole chunks to each worker and may leave out more).
* Evaluation splits the samples between ranks one by one, without padding and without dropping
  any (``drop_last=False``), so every validation/test image is counted exactly once whatever
  the split size, batch size and number of processes (ranks differ by at most ``world_size - 1``
  samples). With a single process the order is the source datamodule's.
* The training loader's position is saved in every checkpoint, so a run resumed from a
  checkpoint saved mid-epoch sees the rest of that epoch, each image once, as long as
  ``input_dir``, ``batch_size``, ``num_workers`` and the number of processes are unchanged.

litdata is an optional dependency: ``pip install -e ".[streaming]"``. It is imported when a
stream is first built, so ``import datamodules`` neither needs it nor pays for it.
"""

from __future__ import annotations

import json
import math
import operator
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.augment import TrainAugment
from datamodules.base import (
    ImageClassificationDataModule,
    check_image_size,
    check_min_scale,
    check_on_bad_image,
)
from datamodules.datasets import OnBadImage
from datamodules.decoding import ImageDecodeError
from datamodules.eval_views import (
    ExactCenterCrop,
    eval_batch_size,
    eval_views,
    views_transform,
)
from datamodules.files import display_name
from datamodules.info import DatasetInfo

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "SAMPLE_FORMAT",
    "FromStoredFile",
    "RawPixels",
    "StreamingDataModule",
    "bytes_as_file",
    "check_split_dir",
    "read_metadata",
    "sample_checksum",
]

FORMAT = "lit-classifiers-streaming"
#: Bumped whenever what ``prepare`` writes changes in a way older readers would misread.
FORMAT_VERSION = 1
METADATA_FILE = "dataset.json"
INDEX_FILE = "index.json"
#: Sample fields in the order litdata flattens them, and the serializer litdata picks for each.
SAMPLE_FORMAT = {"image": "bytes", "label": "int", "key": "bytes", "crc32": "int"}
#: Where ``(C, H, W)`` pixels are stored raw instead of as an encoded image file.
RAW_TRANSFORM_SOURCES = ("STL10DataModule",)
LITDATA_HINT = 'litdata is not installed: pip install -e ".[streaming]" (or pip install litdata)'


def is_url(path: str) -> bool:
    """Whether litdata streams ``path`` from elsewhere (``s3://``, ``local:``, ...)."""
    return "://" in path or path.startswith("local:")


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_url(base) else os.path.join(base, name)


def sample_checksum(image: bytes, label: int, key: bytes) -> int:
    """CRC-32 over a sample's key, label and image bytes, as ``prepare`` stores it."""
    return zlib.crc32(image, zlib.crc32(b"%s\0%d\0" % (key, label)))


# ---------------------------------------------------------------------------- metadata
def _fetch(location: str, storage_options: dict[str, Any] | None, into: str) -> str:
    """A local path holding the file at ``location`` (downloaded to ``into`` for a URL)."""
    if not is_url(location):
        return location
    try:
        from litdata.streaming.downloader import get_downloader
    except ImportError as err:
        raise ModuleNotFoundError(LITDATA_HINT) from err
    local = os.path.join(into, os.path.basename(location))
    base = location.rsplit("/", 1)[0]
    try:
        get_downloader(base, into, [], storage_options).download_file(location, local)
    except FileNotFoundError:
        raise
    except Exception as err:  # botocore, gcs and azure clients raise their own types
        raise FileNotFoundError(f"could not read {location}: {err}") from err
    return local


def _load_json(path: str, shown: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{shown} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{shown} is not valid JSON ({err}): the file is damaged") from None


def read_metadata(input_dir: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checked ``dataset.json`` of a folder (or URL) that ``prepare`` wrote."""
    location = _join(input_dir, METADATA_FILE)
    if not is_url(input_dir) and not os.path.isdir(input_dir):
        raise FileNotFoundError(
            f"input_dir={input_dir!r} is not a folder; convert a dataset into it with "
            "`lit-classifiers prepare`"
        )
    with tempfile.TemporaryDirectory() as temporary:
        local = _fetch(location, storage_options, temporary)
        if not os.path.isfile(local):
            raise FileNotFoundError(
                f"{location} does not exist: {input_dir} was not written by `lit-classifiers "
                "prepare`, or its conversion has not finished (run prepare again to complete it)"
            )
        meta = _load_json(local, location)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{location} is not a {FORMAT} description (its 'format' is missing)")
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{location} has format version {version!r}; this lit-classifiers reads version "
            f"{FORMAT_VERSION}: convert the data again with this version's `prepare`"
        )
    required = {
        "name": str,
        "class_names": list,
        "in_channels": int,
        "image_size": int,
        "mean": list,
        "std": list,
        "encoding": str,
        "splits": dict,
        "source": dict,
    }
    for field, kind in required.items():
        if not isinstance(meta.get(field), kind):
            raise ValueError(f"{location}: {field!r} must be a {kind.__name__}")
    if meta["encoding"] not in ("file", "raw"):
        raise ValueError(f"{location}: unknown encoding {meta['encoding']!r}")
    _check_class_names(meta["class_names"], location)
    for split, entry in meta["splits"].items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("folder"), str)
            or entry["folder"] not in ("train", "val", "test")
            or not isinstance(entry.get("count"), int)
            or entry["count"] < 1
        ):
            raise ValueError(f"{location}: split {split!r} must name its folder and count")
        _check_label_counts(entry, len(meta["class_names"]), f"{location}: split {split!r}")
    return meta


def _check_class_names(names: list[Any], location: str) -> None:
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"{location}: 'class_names' must be a list of non-empty strings")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{location}: class names {repeated} appear more than once")


def _check_label_counts(entry: dict[str, Any], num_classes: int, shown: str) -> None:
    """``label_counts`` (samples per class, written by ``prepare``) against the class list."""
    counts = entry.get("label_counts")
    if counts is None:  # older conversions: each label is still checked as it is read
        return
    if not isinstance(counts, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts
    ):
        raise ValueError(f"{shown}: 'label_counts' must be a list of counts")
    if len(counts) != num_classes or sum(counts) != entry["count"]:
        raise ValueError(
            f"{shown} has labels of {len(counts)} classes ({sum(counts)} samples) but "
            f"'class_names' lists {num_classes} classes and the split {entry['count']} "
            "samples: the file was edited or belongs to another conversion"
        )


def _check_index(index: Any, shown: str) -> list[dict[str, Any]]:
    """The chunk entries of a litdata ``index.json`` written by ``prepare``."""
    expected = list(SAMPLE_FORMAT.values())
    config = index.get("config") if isinstance(index, dict) else None
    chunks = index.get("chunks") if isinstance(index, dict) else None
    if not isinstance(config, dict) or not isinstance(chunks, list) or not chunks:
        raise ValueError(f"{shown} is not a litdata index (no 'config' and 'chunks')")
    found = (
        config.get("data_format"),
        config.get("item_loader"),
        config.get("compression"),
        config.get("encryption"),
    )
    if found != (expected, "PyTreeLoader", None, None) or config.get("types", SAMPLE_FORMAT) != (
        SAMPLE_FORMAT
    ):
        raise ValueError(
            f"{shown} was written by an incompatible litdata version or another tool: expected "
            f"uncompressed PyTreeLoader samples of {expected}, found data_format="
            f"{config.get('data_format')!r}, item_loader={config.get('item_loader')!r}, "
            f"compression={config.get('compression')!r}; convert the data again"
        )
    if not _is_sample_spec(config.get("data_spec")):
        raise ValueError(
            f"{shown}: its data_spec {str(config.get('data_spec'))[:80]!r} is not the sample "
            f"layout prepare writes (a dict of {list(SAMPLE_FORMAT)}); convert the data again"
        )
    for chunk in chunks:
        name = chunk.get("filename") if isinstance(chunk, dict) else None
        if (
            not isinstance(name, str)
            or os.path.basename(name) != name
            or name.startswith(".")
            or not isinstance(chunk.get("chunk_bytes"), int)
            or not isinstance(chunk.get("chunk_size"), int)
        ):
            # The index is input too: a name with a folder in it could point anywhere.
            raise ValueError(f"{shown} lists an invalid chunk {chunk!r}")
    return chunks


def _is_sample_spec(spec: Any) -> bool:
    """Whether a litdata ``data_spec`` (a JSON pytree description) is the flat dict of
    :data:`SAMPLE_FORMAT`'s fields that ``prepare`` writes. Checked before litdata reads it:
    it names the types to rebuild a sample with."""
    leaf = {"type": None, "context": None, "children_spec": []}
    try:
        protocol, node = json.loads(spec)
        return (
            protocol == 1
            and node["type"] == "builtins.dict"
            and json.loads(node["context"]) == list(SAMPLE_FORMAT)
            and node["children_spec"] == [leaf] * len(SAMPLE_FORMAT)
        )
    except (TypeError, ValueError, KeyError):
        return False


def _chunk_item_count(path: str) -> int:
    """The number of samples a chunk file's header says it holds (its first 4 bytes, a
    little-endian uint32, in litdata's chunk format)."""
    with open(path, "rb") as handle:
        return int.from_bytes(handle.read(4), "little")


def check_split_dir(
    folder: str, expected: int | None, storage_options: dict[str, Any] | None = None
) -> int:
    """Check a split's ``index.json`` and, for a local folder, every chunk file it lists.

    Returns the number of samples. A missing, truncated or partially copied chunk, an index
    from an incompatible litdata version, or a sample count other than ``expected`` (what
    ``dataset.json`` says) is an error naming the file, raised before any training starts.
    """
    return sum(chunk["chunk_size"] for chunk in _checked_chunks(folder, expected, storage_options))


def _checked_chunks(
    folder: str, expected: int | None, storage_options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The chunk entries of a split's ``index.json``, checked as :func:`check_split_dir` says."""
    location = _join(folder, INDEX_FILE)
    with tempfile.TemporaryDirectory() as temporary:
        index = _load_json(_fetch(location, storage_options, temporary), location)
    chunks = _check_index(index, location)
    count = sum(chunk["chunk_size"] for chunk in chunks)
    if expected is not None and count != expected:
        raise ValueError(
            f"{location} indexes {count} samples but {METADATA_FILE} says the split has "
            f"{expected}: the folder is incomplete or from another conversion"
        )
    if not is_url(folder):
        for chunk in chunks:
            path = os.path.join(folder, chunk["filename"])
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"chunk file {path} is missing (listed in {location}): the folder is "
                    "incomplete; copy it again or run `lit-classifiers prepare` again"
                )
            size = os.path.getsize(path)
            if size != chunk["chunk_bytes"]:
                raise ValueError(
                    f"chunk file {path} has {size} bytes but {location} says "
                    f"{chunk['chunk_bytes']}: it is truncated or damaged; copy it again"
                )
            held = _chunk_item_count(path)
            if held != chunk["chunk_size"]:
                raise ValueError(
                    f"chunk file {path} holds {held} samples but {location} says "
                    f"{chunk['chunk_size']}: the index or the chunk is damaged or from another "
                    "conversion; copy the folder again or convert the data again"
                )
    return chunks


# ---------------------------------------------------------------------------- decoding
_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


@contextmanager
def bytes_as_file(data: bytes) -> Iterator[str]:
    """A path that reads ``data`` inside the ``with`` block: an anonymous in-memory file on
    Linux (``memfd``, no disk), a temporary file elsewhere."""
    if _MEMFD:
        fd = os.memfd_create("lit-classifiers-image", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    handle = tempfile.NamedTemporaryFile(suffix=".image", delete=False)  # noqa: SIM115
    try:
        with handle:
            handle.write(data)
        yield handle.name
    finally:
        os.unlink(handle.name)


class FromStoredFile:
    """A ``path -> image`` transform of image files, applied to a file's stored bytes.

    The bytes are handed to ``transform`` as a file (:func:`bytes_as_file`), so every transform
    the file datamodules use (training presets, the exact evaluation crop, ten-crop and dense
    views) decodes a stored image exactly as it decodes the original file. Errors name
    ``name`` (the sample's original path) instead of that temporary path.
    """

    def __init__(self, transform: Callable[[str], Any]) -> None:
        self.transform = transform

    def __call__(self, data: bytes, name: str = "<bytes>") -> Any:
        with bytes_as_file(data) as path:
            try:
                return self.transform(path)
            except ImageDecodeError as err:
                raise ImageDecodeError(str(err).replace(path, name)) from err.__cause__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


class RawPixels:
    """Raw ``(C, H, W)`` uint8 bytes as a tensor, then ``transform`` (``None``: as they are)."""

    def __init__(
        self, shape: tuple[int, int, int], transform: Callable[[Tensor], Tensor] | None
    ) -> None:
        self.shape = tuple(shape)
        self.transform = transform

    def __call__(self, data: bytes, name: str = "<bytes>") -> Tensor:
        if len(data) != math.prod(self.shape):
            raise ImageDecodeError(
                f"cannot decode image {name}: {len(data)} bytes, expected {self.shape} uint8"
            )
        image = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).reshape(self.shape).copy())
        return image if self.transform is None else self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, transform={self.transform!r})"


# ---------------------------------------------------------------------------- litdata classes
# Defined on first use (module __getattr__ below), so that importing this module needs no
# litdata; pickle finds them by name, which also defines them in a spawned worker.
_LITDATA_CLASSES = ("StreamingImageDataset", "StreamingImageLoader")


def _define_litdata_classes() -> None:
    """Create the litdata subclasses and publish them under their names (see above)."""
    try:
        from litdata import StreamingDataLoader, StreamingDataset
    except ImportError as err:
        raise ModuleNotFoundError(LITDATA_HINT) from err
    _register_litdata_class(_make_dataset_class(StreamingDataset))
    _register_litdata_class(_make_loader_class(StreamingDataLoader))


def _register_litdata_class(cls: type) -> None:
    """Make ``cls`` a module global named as pickle looks it up (``streaming.<name>``)."""
    cls.__qualname__ = cls.__name__
    globals()[cls.__name__] = cls


def _make_dataset_class(base: type) -> type:
    """``StreamingImageDataset``, subclassing litdata's ``StreamingDataset`` (``base``)."""

    class StreamingImageDataset(base):  # type: ignore[misc,valid-type]
        """A split written by ``prepare``, yielding ``(image, label)`` with ``image`` decoded.

        ``evaluation=True`` spreads the samples over ranks and workers one by one rather than a
        batch at a time (litdata's default), so no rank is left without samples and none gets
        a whole extra batch; evaluation must also be built with ``drop_last=False``.
        ``on_bad_image='skip'`` yields ``None`` for an undecodable image (dropped by
        :class:`~datamodules.datasets.SkipCollate`); a sample that fails its checksum or a
        chunk that cannot be read is always an error naming the chunk file.
        """

        def __init__(
            self,
            input_dir: str,
            decode: Callable[[bytes, str], Tensor],
            *,
            evaluation: bool,
            on_bad_image: OnBadImage = "error",
            num_classes: int | None = None,
            chunk_files: list[str] | None = None,
            shuffle: bool = False,
            seed: int = 0,
            cache_dir: str | None = None,
            max_cache_size: int | str | None = None,
            storage_options: dict[str, Any] | None = None,
        ) -> None:
            self.evaluation = evaluation  # set_batch_size (called by super) reads it
            litdata_options = {
                "cache_dir": cache_dir,
                "shuffle": shuffle,
                "seed": seed,
                "max_cache_size": max_cache_size,
                "storage_options": storage_options,
            }
            super().__init__(input_dir, **litdata_options)
            self.decode = decode
            self.on_bad_image = on_bad_image
            self.num_classes = num_classes
            self.chunk_files = chunk_files
            self.location = input_dir
            # everything but input_dir and decode, for with_decode to build the same split
            self._options = {
                "evaluation": evaluation,
                "on_bad_image": on_bad_image,
                "num_classes": num_classes,
                "chunk_files": chunk_files,
            }
            self._options.update(litdata_options)

        def with_decode(self, decode: Callable[[bytes, str], Any]) -> StreamingImageDataset:
            """The same split decoded by ``decode`` instead (e.g. into ten-crop views)."""
            return type(self)(self.location, decode, **self._options)

        def set_batch_size(self, batch_size: int) -> None:
            # litdata hands out whole batches per worker; for evaluation single samples.
            super().set_batch_size(1 if self.evaluation else batch_size)

        def __getitem__(self, index: Any) -> tuple[Tensor, int] | None:
            image, label, key = _checked_sample(self, index, super().__getitem__)
            return _decoded_sample(self, index, image, label, key)

    return StreamingImageDataset


def _chunk_name(dataset: Any, index: Any) -> str:
    """The chunk file holding the sample at ``index`` (litdata's ``ChunkedIndex``), for
    error messages, from the chunk list read at setup."""
    names = dataset.chunk_files
    try:
        return _join(dataset.location, names[operator.index(index.chunk_index)])
    except (AttributeError, TypeError, IndexError):  # not a ChunkedIndex, or no chunk list
        return f"a chunk of {dataset.location}"


def _checked_sample(
    dataset: Any, index: Any, read: Callable[[Any], dict[str, Any]]
) -> tuple[bytes, int, bytes]:
    """``(image, label, key)`` of the sample ``read`` (litdata's ``__getitem__``) returns.

    Whatever litdata raises on a damaged chunk, and a sample failing its CRC-32, becomes a
    ``ValueError`` naming the chunk file and how to repair it.
    """
    try:
        sample = read(index)
        image, label, key = sample["image"], int(sample["label"]), bytes(sample["key"])
        stored = int(sample["crc32"])
    except Exception as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(
            f"cannot read a sample of chunk file {_chunk_name(dataset, index)}: {reason}; "
            "the chunk is damaged: copy it again or convert the data again"
        ) from err
    if sample_checksum(image, label, key) != stored:
        raise ValueError(
            f"chunk file {_chunk_name(dataset, index)} is damaged: its sample of "
            f"{display_name(key)} fails its CRC-32 check; copy the file again or "
            "convert the data again"
        )
    classes = dataset.num_classes
    if classes is not None and not 0 <= label < classes:
        raise ValueError(
            f"chunk file {_chunk_name(dataset, index)}: the sample of {display_name(key)} has "
            f"label {label}, but {METADATA_FILE} names {classes} classes: the chunks and "
            f"{METADATA_FILE} come from different conversions; convert the data again"
        )
    return image, label, key


def _decoded_sample(
    dataset: Any, index: Any, image: bytes, label: int, key: bytes
) -> tuple[Tensor, int] | None:
    """``(decoded image, label)``; ``None`` for an undecodable image if ``on_bad_image='skip'``."""
    try:
        return dataset.decode(
            image, f"{display_name(key)} (in {_chunk_name(dataset, index)})"
        ), label
    except ImageDecodeError as err:
        if dataset.on_bad_image == "error":
            raise ImageDecodeError(
                f"{err}; set on_bad_image='skip' to leave undecodable images out"
            ) from err.__cause__
        warnings.warn(
            f"skipped an undecodable image (on_bad_image='skip'): {err}",
            RuntimeWarning,
            stacklevel=3,  # blame whoever called the dataset's __getitem__
        )
        return None


def _make_loader_class(base: type) -> type:
    """``StreamingImageLoader``, subclassing litdata's ``StreamingDataLoader`` (``base``)."""

    class StreamingImageLoader(base):  # type: ignore[misc,valid-type]
        """litdata's loader with an exact length and a fix for the epoch after a resume.

        * ``len()`` counts this rank's batches worker by worker, since each worker's last batch
          may be partial; Lightning stops an epoch after ``len()`` batches, so a count that is
          too small would silently drop samples.
        * After ``load_state_dict`` the first epoch continues from the saved position; litdata
          forgets the resume only when that epoch's iterator runs to its end, which Lightning
          (stopping after ``len()`` batches) never does, so the next epoch would replay the
          stale position. The next ``iter()`` starts a fresh epoch instead.
        """

        _resume_pending = False

        def __len__(self) -> int:
            return _batches_on_this_rank(self)

        def load_state_dict(self, obj: dict[str, Any]) -> None:
            super().load_state_dict(obj)
            self._resume_pending = self.restore

        def __iter__(self) -> Any:
            if self.restore and not self._resume_pending:
                self.restore = False
            self._resume_pending = False
            yield from super().__iter__()

    return StreamingImageLoader


def _batches_on_this_rank(loader: Any) -> int:
    """The batches ``loader`` yields on this rank, summed over its workers' partial batches."""
    dataset = loader.dataset
    workers = max(loader.num_workers, 1)
    dataset.get_len(loader.num_workers, loader.batch_size)  # builds its shuffler
    _, intervals = dataset.shuffler.get_chunks_and_intervals_per_workers(
        dataset.distributed_env, workers, dataset.batch_size, dataset.current_epoch
    )
    start = dataset.distributed_env.global_rank * workers
    per_worker = [
        sum(end - begin for _, begin, end, _ in worker)
        for worker in intervals[start : start + workers]
    ]
    return sum(math.ceil(n / loader.batch_size) for n in per_worker)


def __getattr__(name: str) -> Any:
    if name in _LITDATA_CLASSES:
        _define_litdata_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _litdata_class(name: str) -> Any:
    if name not in globals():
        _define_litdata_classes()
    return globals()[name]


# ---------------------------------------------------------------------------- datamodule
class StreamingDataModule(ImageClassificationDataModule):
    """A dataset converted by ``lit-classifiers prepare``, streamed with litdata.

    Class names (and ImageNet's WordNet ids), channels, normalisation and the default image
    size come from ``input_dir/dataset.json``; the splits are those of the datamodule the data
    was converted from (``test`` is ``val`` when the source evaluates on one set, as ImageNet
    does). The transforms are that datamodule's, with the same arguments. See the module
    docstring for the layout and how samples are spread over processes.

    Args:
        input_dir: The folder ``prepare`` wrote, or its copy at a URL litdata streams from
            (``s3://bucket/imagenet``, ``gs://...``; credentials as for litdata/boto3).
        image_size: Crop side; default the source datamodule's (224 for image files, 96 for
            STL-10).
        eval_resize: Shorter side before the evaluation centre crop (image files); default
            ``image_size * 256 / 224``.
        min_scale: Smallest crop area fraction of RandomResizedCrop (image files).
        augment: ``False`` trains on the evaluation transform (STL-10: only resized).
        train_augment, train_policy, random_erasing: Training augmentation as for the source
            datamodule (:mod:`datamodules.augment`); ``train_augment=None`` is its default
            (``"inception"`` for image files, ``"pad_crop"`` for STL-10).
        mean, std: Per-channel normalisation in [0, 1] units; default the source's.
        on_bad_image: ``"error"`` raises naming an undecodable image; ``"skip"`` drops it with
            a warning.
        cache_dir: Where litdata keeps chunks streamed from a URL (default its own,
            ``~/.lightning/chunks``); unused for a local folder, which is read in place.
        max_cache_size: Disk budget of that cache, e.g. ``"200GB"`` (default: litdata's).
        batch_size, num_workers, pin_memory, persistent_workers, seed, predict_dir,
            eval_protocol: see
            :class:`ImageClassificationDataModule`; ``seed`` also seeds the shuffling.
    """

    def __init__(
        self,
        input_dir: str,
        image_size: int | None = None,
        eval_resize: int | None = None,
        min_scale: float = 0.08,
        augment: bool = True,
        train_augment: str | None = None,
        train_policy: str | None = None,
        random_erasing: float = 0.0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        on_bad_image: Literal["error", "skip"] = "error",
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        seed: int = 0,
        predict_dir: str | None = None,
        eval_protocol: str = "center",
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            seed=seed,
            predict_dir=predict_dir,
            eval_protocol=eval_protocol,
        )
        if not isinstance(input_dir, str) or not input_dir:
            raise ValueError(f"input_dir must be a folder or URL, got {input_dir!r}")
        _litdata_class("StreamingImageDataset")  # without litdata, fail now rather than in setup
        check_min_scale(min_scale)
        check_on_bad_image(on_bad_image)
        self.input_dir = input_dir
        self.cache_dir = cache_dir
        self.max_cache_size = max_cache_size
        self.on_bad_image = on_bad_image
        self.augment = augment
        self.metadata = read_metadata(input_dir)
        meta = self.metadata
        self._image_size = check_image_size(
            meta["image_size"] if image_size is None else image_size
        )
        self._mean = tuple(meta["mean"] if mean is None else mean)
        self._std = tuple(meta["std"] if std is None else std)
        augmentation = (train_augment, train_policy, random_erasing)
        if meta["encoding"] == "file":
            eval_crop = ExactCenterCrop(self._image_size, eval_resize)  # checks eval_resize
            self._eval_resize_size = eval_crop.resize_size
            self.eval_transform = FromStoredFile(eval_crop)
            self.train_transform = self._file_train_transform(min_scale, *augmentation)
        else:
            self._eval_resize_size = self._image_size
            self.train_transform, self.eval_transform = self._raw_transforms(*augmentation)
        self.save_hyperparameters()

    def _file_train_transform(
        self, min_scale: float, preset: str | None, policy: str | None, erasing: float
    ) -> Callable[[bytes, str], Any]:
        plan = TrainAugment("inception" if preset is None else preset, policy, erasing)
        if not self.augment:
            if plan != TrainAugment("inception"):
                raise ValueError(
                    "augment=False trains on the evaluation transform, so train_augment, "
                    "train_policy and random_erasing must stay at their defaults"
                )
            return self.eval_transform
        mode = "RGB" if self.metadata["in_channels"] == 3 else "L"
        # The training crops decode bytes themselves (name= labels their errors), so they skip
        # the in-memory file FromStoredFile gives the evaluation transforms (~100 us an image).
        return plan.file_transform(self._image_size, min_scale, self._mean, mode)

    def _raw_transforms(
        self, preset: str | None, policy: str | None, erasing: float
    ) -> tuple[RawPixels, RawPixels]:
        """The source datamodule's own tensor transforms, made by the source class itself."""
        meta = self.metadata
        source = meta["source"].get("datamodule")
        shape = meta.get("raw_shape")
        if source not in RAW_TRANSFORM_SOURCES or not (
            isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) for s in shape)
        ):
            raise ValueError(
                f"{_join(self.input_dir, METADATA_FILE)}: raw pixels need a raw_shape and a "
                f"source among {list(RAW_TRANSFORM_SOURCES)}, got {source!r}, {shape!r}"
            )
        from datamodules.stl10 import STL10DataModule

        source_dm = STL10DataModule(
            image_size=self._image_size,
            augment=self.augment,
            train_augment="pad_crop" if preset is None else preset,
            train_policy=policy,
            random_erasing=erasing,
        )
        shape3 = (shape[0], shape[1], shape[2])
        return (
            RawPixels(shape3, source_dm.train_transform),
            RawPixels(shape3, source_dm.eval_transform),
        )

    # ------------------------------------------------------------------ facts
    def _resolve_info(self) -> DatasetInfo:
        meta = self.metadata
        return DatasetInfo(
            name=meta["name"],
            class_names=tuple(meta["class_names"]),
            in_channels=meta["in_channels"],
            image_size=self._image_size,
            mean=self._mean,
            std=self._std,
        )

    @property
    def wnids(self) -> list[str] | None:
        """ImageNet's WordNet ids in label order, when the source was ImageNet."""
        wnids = self.metadata.get("wnids")
        return list(wnids) if wnids is not None else None

    @property
    def eval_resize_size(self) -> int:
        return self._eval_resize_size

    # ------------------------------------------------------------------ splits
    def _build_datasets(self) -> None:
        splits = self.metadata["splits"]
        built: dict[tuple[str, bool], Dataset] = {}
        for name in ("train", "val", "test"):
            entry = splits.get(name)
            if entry is None:
                continue
            folder = _join(self.input_dir, entry["folder"])
            evaluation = name != "train"
            if (folder, evaluation) in built:  # ImageNet's test split is its val split
                setattr(self, f"{name}_dataset", built[folder, evaluation])
                continue
            chunks = _checked_chunks(folder, entry["count"])
            transform = self.eval_transform if evaluation else self.train_transform
            if transform is None:
                raise ValueError(
                    f"{type(self).__name__}.{name}_transform is None, but stored images must be "
                    "decoded: set it to a callable (bytes, name) -> (C, H, W) uint8 tensor"
                )
            dataset = _litdata_class("StreamingImageDataset")(
                folder,
                transform,
                evaluation=evaluation,
                on_bad_image=self.on_bad_image,
                num_classes=len(self.metadata["class_names"]),
                chunk_files=[chunk["filename"] for chunk in chunks],
                shuffle=not evaluation,
                seed=self.seed,
                cache_dir=self.cache_dir,
                max_cache_size=self.max_cache_size,
            )
            built[folder, evaluation] = dataset
            setattr(self, f"{name}_dataset", dataset)

    def _missing_split_message(self, name: str) -> str:
        return (
            f"{_join(self.input_dir, METADATA_FILE)} has no {name} split (it has "
            f"{sorted(self.metadata['splits'])})"
        )

    # ------------------------------------------------------------------ loaders
    def _eval_loader(
        self, dataset: Dataset, paths: bool = False, persistent: bool = False
    ) -> DataLoader:
        # litdata's loader keeps its own worker and epoch state: persistent_workers as given.
        if not isinstance(dataset, _litdata_class("StreamingImageDataset")):  # predict_dir
            return super()._eval_loader(dataset, paths, persistent)
        views = eval_views(self.eval_protocol, self.image_size)
        mode = "RGB" if self.in_channels == 3 else "L"
        transform = views_transform(views, self.image_size, self.eval_resize_size, mode)
        if transform is not None:  # ten_crop, dense: the protocol's views replace the crop
            if self.metadata["encoding"] == "file":
                dataset = dataset.with_decode(FromStoredFile(transform))
            else:
                shape = tuple(self.metadata["raw_shape"])
                dataset = dataset.with_decode(RawPixels(shape, transform))  # type: ignore[arg-type]
        batch_size = eval_batch_size(views, self.batch_size)
        return self._loader(dataset, shuffle=False, paths=paths, batch_size=batch_size)

    def _loader(
        self, dataset: Dataset, shuffle: bool, paths: bool = False, batch_size: int | None = None
    ) -> DataLoader:
        if not isinstance(dataset, _litdata_class("StreamingImageDataset")):  # predict_dir
            return super()._loader(dataset, shuffle, paths, batch_size)
        return _litdata_class("StreamingImageLoader")(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            num_workers=self.num_workers,
            pin_memory=self.uses_pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=self._collate(paths),
            # evaluation counts every sample once; training lets litdata drop the remainder
            # under DDP so that every rank runs the same number of steps
            **({"drop_last": False} if dataset.evaluation else {}),
        )
