"""``lit-classifiers prepare``: a dataset another datamodule reads, as litdata chunks.

    lit-classifiers prepare imagenet /data/imagenet /data/imagenet-litdata --workers 16
    lit-classifiers prepare imagefolder photos/ photos-litdata --val-split 0.1
    lit-classifiers prepare stl10 data/ stl10-litdata

The source datamodule (:class:`~datamodules.imagenet.ImageNetDataModule` in any of its layouts,
including the original archives, which its ``prepare_data`` unpacks first;
:class:`~datamodules.image_folder.ImageFolderDataModule`;
:class:`~datamodules.stl10.STL10DataModule`) lists the samples of each split, and
``litdata.optimize`` writes them with several worker processes into
``OUTPUT/train``, ``OUTPUT/val`` and, when distinct from val, ``OUTPUT/test``, with the class
names (and ImageNet's WordNet ids) in ``OUTPUT/dataset.json``; :mod:`datamodules.streaming`
describes the format and :class:`~datamodules.streaming.StreamingDataModule` reads it. Image
files are stored byte for byte (JPEGs are not re-encoded), after checking that PIL recognises
each one; STL-10's pixels are stored raw, ``(3, 96, 96)`` uint8, lossless.

Interrupting is safe and the conversion resumes: each split is written into a hidden
``OUTPUT/.<split>.partial`` folder with litdata's checkpoints and renamed into place only when
complete, and ``dataset.json`` is written last. Running the same command again skips the
finished splits and continues a partial one from its last finished chunks; a partial split
made from a different listing (files added or removed, other options or worker count) is
started over. Nothing that ``prepare`` did not write is replaced: a ``train/``, ``val/``,
``test/`` or ``dataset.json`` of other origin in ``OUTPUT`` is refused. Output goes to a local
folder; copy it to object storage to stream it from there
(``aws s3 cp --recursive OUTPUT s3://bucket/name``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datamodules.base import ImageClassificationDataModule, default_num_workers
from datamodules.datasets import ArrayImageDataset, FileImageDataset
from datamodules.decoding import read_image_file
from datamodules.files import display_name
from datamodules.streaming import (
    FORMAT,
    FORMAT_VERSION,
    LITDATA_HINT,
    METADATA_FILE,
    check_split_dir,
    sample_checksum,
)

__all__ = ["SOURCES", "convert_datamodule", "prepare_main", "prepare_streaming"]

SOURCES = ("imagenet", "imagefolder", "stl10")
SPLITS = ("train", "val", "test")
#: Written into a split folder once it is complete: what it was made from.
SPLIT_MARKER = ".lit_classifiers_split.json"
DEFAULT_CHUNK_BYTES = "64MB"
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"64MB"`` (decimal units, as litdata's)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?b?)\s*", str(value).lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"chunk size must be a positive size such as '64MB', got {value!r}")
    return max(1, int(float(match.group(1)) * _UNITS[match.group(2)]))


# ---------------------------------------------------------------------------- samples
def _stored_sample(image: bytes, label: int, key: bytes) -> dict[str, Any]:
    """One sample as ``optimize`` writes it: the image bytes, label, key and their CRC-32."""
    return {"image": image, "label": label, "key": key, "crc32": sample_checksum(image, label, key)}


class FileSamples:
    """Sample ``i`` of a :class:`FileImageDataset`: the file's bytes, its label and path."""

    encoding = "file"

    def __init__(self, dataset: FileImageDataset) -> None:
        if dataset.labels is None:
            raise ValueError("prepare needs labelled splits")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def digest(self, hasher: Any) -> None:
        hasher.update(os.fsencode(self.dataset.root))
        hasher.update(np.ascontiguousarray(self.dataset.paths).tobytes())
        hasher.update(np.asarray(self.dataset.labels, dtype=np.int64).tobytes())

    def labels(self) -> np.ndarray:
        return np.asarray(self.dataset.labels, dtype=np.int64)

    def __call__(self, index: int) -> dict[str, Any]:
        path = self.dataset.path(index)
        data = read_image_file(path)  # not a byte of a file larger than its image can be
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.size  # noqa: B018  (the header is parsed: the file is an image PIL reads)
        except Exception as err:
            raise ValueError(
                f"cannot convert image file {display_name(path)}: not an image PIL can read "
                f"({' '.join(str(err).split()) or type(err).__name__})"
            ) from None
        label = int(self.dataset.labels[index])  # type: ignore[index]
        return _stored_sample(data, label, bytes(self.dataset.paths[index]))


class ArraySamples:
    """Sample ``i`` of an :class:`ArrayImageDataset`: raw ``(C, H, W)`` uint8 pixels."""

    encoding = "raw"

    def __init__(self, dataset: ArrayImageDataset, name: str) -> None:
        if dataset.labels is None:
            raise ValueError("prepare needs labelled splits")
        self.dataset = dataset
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)

    def digest(self, hasher: Any) -> None:
        hasher.update(self.name.encode())
        hasher.update(np.asarray(self.dataset.indices, dtype=np.int64).tobytes())
        hasher.update(np.asarray(self.dataset.labels, dtype=np.int64).tobytes())

    def labels(self) -> np.ndarray:
        indices = np.asarray(self.dataset.indices, dtype=np.int64)
        return np.asarray(self.dataset.labels, dtype=np.int64)[indices]

    def pixels(self, index: int) -> np.ndarray:
        source = int(self.dataset.indices[index])
        image = np.ascontiguousarray(np.asarray(self.dataset.images[source]))
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(
                f"{self.name}[{source}] is a {image.dtype} array of shape {image.shape}; prepare "
                "stores (C, H, W) uint8 images"
            )
        return image

    def __call__(self, index: int) -> dict[str, Any]:
        source = int(self.dataset.indices[index])
        data = self.pixels(index).tobytes()
        label = int(self.dataset.labels[source])  # type: ignore[index]
        return _stored_sample(data, label, f"{self.name}[{source}]".encode())


class _CountingWriter:
    """What every ``optimize`` worker calls: a sample, and one more on the progress counter.
    A sample's error is also put on ``errors`` in one line, to be shown as it is (litdata
    reports a failed worker with its whole traceback)."""

    def __init__(self, samples: FileSamples | ArraySamples, counter: Any, errors: Any) -> None:
        self.samples = samples
        self.counter = counter
        self.errors = errors

    def __call__(self, index: int) -> dict[str, Any]:
        try:
            sample = self.samples(index)
        except Exception as err:
            self.errors.put(" ".join(str(err).split()).rstrip(".") or type(err).__name__)
            raise
        with self.counter.get_lock():
            self.counter.value += 1
        return sample


def _samples(datamodule: ImageClassificationDataModule, split: str, dataset: Any) -> Any:
    if isinstance(dataset, FileImageDataset):
        return FileSamples(dataset)
    if isinstance(dataset, ArrayImageDataset):
        path = getattr(dataset.images, "path", None)
        return ArraySamples(dataset, Path(path).name if path is not None else split)
    raise TypeError(
        f"{type(datamodule).__name__}'s {split} split is a {type(dataset).__name__}; prepare "
        "converts splits of image files (FileImageDataset) or uint8 arrays (ArrayImageDataset)"
    )


# ---------------------------------------------------------------------------- writing
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, content: Any) -> None:
    """Whole or not at all: a reader never sees half a file. The temporary file is created
    with a fresh name (``mkstemp``: exclusively), so a planted link is never written through."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(content, indent=2) + "\n")
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _start_method() -> str:
    # Forked workers start in milliseconds; spawned ones re-import torch first (seconds each).
    return "fork" if sys.platform == "linux" else "spawn"


def _stop_with_parent(parent: int) -> None:
    """Kill this job's whole process group once ``parent`` has gone: a ``kill -9`` of
    ``prepare`` runs none of its cleanup, and the job would otherwise convert on to the end."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os.killpg(0, signal.SIGKILL)


def _run_optimize(
    writer: _CountingWriter,
    count: int,
    output: str,
    workers: int,
    chunk_bytes: int,
    method: str,
    report: Any,
    parent: int,
) -> None:
    """The conversion job, in a process of its own session (see :func:`_optimize`)."""
    os.setsid()
    threading.Thread(target=_stop_with_parent, args=(parent,), daemon=True).start()
    from litdata import optimize

    try:
        optimize(
            fn=writer,
            inputs=list(range(count)),
            output_dir=output,
            chunk_bytes=chunk_bytes,
            num_workers=workers,
            keep_data_ordered=True,  # chunk order = listing order, and needed by checkpoints
            use_checkpoint=True,
            reorder_files=False,
            start_method=method,
            verbose=False,
        )
    except BaseException as err:
        # litdata's own failure (not a sample's): the last line of its report
        report.send((str(err).strip().splitlines() or [type(err).__name__])[-1])
        sys.exit(1)


def _optimize(
    samples: FileSamples | ArraySamples,
    output: Path,
    workers: int,
    chunk_bytes: int,
    progress: bool,
    title: str,
) -> None:
    """``litdata.optimize`` of every sample into ``output``, with a progress bar.

    It runs in a child process that leads its own process group, and the whole group is killed
    when the job ends, fails or is interrupted: when one of litdata's workers fails, it
    terminates the others, whose own helper processes would otherwise be left running forever.
    The group also kills itself when this process dies without cleaning up (``kill -9``).
    That child also keeps litdata's process-wide settings (the start method) out of this one.
    """
    from tqdm.auto import tqdm

    method = _start_method()
    context = multiprocessing.get_context(method)
    counter = context.Value("q", 0)
    receive, send = context.Pipe(duplex=False)
    errors = context.SimpleQueue()
    job = context.Process(
        target=_run_optimize,
        args=(
            _CountingWriter(samples, counter, errors),
            len(samples),
            str(output),
            workers,
            chunk_bytes,
            method,
            send,
            os.getpid(),
        ),
        name="lit-classifiers-prepare",
    )
    bar = tqdm(total=len(samples), desc=title, unit="img", disable=not progress, file=sys.stderr)
    job.start()
    try:
        while job.is_alive():
            job.join(0.25)
            bar.update(counter.value - bar.n)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signal.SIGKILL)  # whatever of the job is left
        job.join()
        bar.close()
    if job.exitcode != 0:
        if not errors.empty():  # a sample's own error, the cause of everything else
            reason = errors.get()
        elif receive.poll():
            reason = receive.recv()
        else:
            reason = f"the job exited with {job.exitcode}"
        raise ValueError(
            f"{reason}; fix that and run the same command again: the finished chunks are kept"
        )


def _fingerprint(
    datamodule: ImageClassificationDataModule, split: str, samples: Any
) -> dict[str, Any]:
    hasher = hashlib.sha256()
    samples.digest(hasher)
    return {
        "format_version": FORMAT_VERSION,
        "datamodule": type(datamodule).__name__,
        "split": split,
        "count": len(samples),
        "listing_sha256": hasher.hexdigest(),
    }


def _write_split(
    samples: FileSamples | ArraySamples,
    folder: Path,
    fingerprint: dict[str, Any],
    workers: int,
    chunk_bytes: int,
    progress: bool,
) -> None:
    """Write one split into ``folder``, resuming or skipping what an earlier run finished."""
    if folder.exists():  # complete and made from this listing: convert_datamodule checked it
        check_split_dir(str(folder), len(samples))
        print(f"{folder}: already converted, kept", file=sys.stderr)
        return
    partial = folder.with_name(f".{folder.name}.partial")
    job = {**fingerprint, "workers": workers, "chunk_bytes": chunk_bytes}
    job_file = partial / SPLIT_MARKER
    if partial.exists() and _read_json(job_file) != job:
        if not job_file.is_file() and any(partial.iterdir()):
            raise FileExistsError(f"{partial} exists and was not written by prepare; remove it")
        print(f"{partial}: made from another listing or settings, started over", file=sys.stderr)
        shutil.rmtree(partial)
    elif partial.exists():
        print(f"{partial}: resuming the interrupted conversion", file=sys.stderr)
    partial.mkdir(parents=True, exist_ok=True)
    _write_json(job_file, job)
    if not (partial / "index.json").is_file():  # else it finished but was not yet renamed
        _optimize(samples, partial, workers, chunk_bytes, progress, folder.name)
    check_split_dir(str(partial), len(samples))
    _write_json(job_file, fingerprint)
    os.replace(partial, folder)


def _metadata(
    datamodule: ImageClassificationDataModule,
    encoding: str,
    raw_shape: list[int] | None,
    splits: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    import litdata

    info = datamodule.info
    hparams = {
        key: value
        for key, value in dict(getattr(datamodule, "hparams", {})).items()
        if isinstance(value, (str, int, float, bool, type(None)))
    }
    wnids = getattr(datamodule, "wnids", None)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": info.name,
        "class_names": list(info.class_names),
        "wnids": list(wnids) if wnids is not None else None,
        "in_channels": info.in_channels,
        "image_size": info.image_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "encoding": encoding,
        "raw_shape": raw_shape,
        "splits": splits,
        "source": {"datamodule": type(datamodule).__name__, "hparams": hparams},
        "written_by": {"lit_classifiers": _installed_version(), "litdata": litdata.__version__},
    }


def _installed_version() -> str | None:
    """lit-classifiers' installed version, read without importing the model package."""
    try:
        return importlib.metadata.version("lit-classifiers")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return None


def _require_litdata() -> None:
    """Fail with the install hint before the source datamodule unpacks or lists anything."""
    try:
        import litdata  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(LITDATA_HINT) from err


def _local_output(output_dir: str | Path) -> Path:
    """The output folder, refused early when it cannot be one: hours of conversion come next."""
    output = Path(output_dir)
    if "://" in str(output_dir):
        raise ValueError(
            f"prepare writes a local folder, got {output_dir!r}; copy the folder to object "
            "storage afterwards (e.g. aws s3 cp --recursive OUT s3://bucket/name)"
        )
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"output {output} exists and is not a folder")
    return output


def _worker_count(num_workers: int | None) -> int:
    workers = default_num_workers() if num_workers is None else num_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {num_workers!r}")
    return workers


def _check_separate(datamodule: ImageClassificationDataModule, output: Path) -> None:
    """Refuse nested folders: replacing a split would delete source data, or vice versa."""
    data_dir = getattr(datamodule, "data_dir", None)
    if data_dir is None:
        return
    source, target = Path(data_dir).resolve(), output.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise ValueError(
            f"output {output} and the data {data_dir} must be separate folders (neither "
            "inside the other)"
        )


def _label_counts(samples: Any, num_classes: int, split: str) -> list[int]:
    """Samples per class, which the reader checks against the class list at setup."""
    labels = samples.labels()
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{split} has labels from {labels.min()} to {labels.max()} but the datamodule "
            f"names {num_classes} classes"
        )
    return np.bincount(labels, minlength=num_classes).tolist()


def _list_splits(
    datamodule: ImageClassificationDataModule,
) -> tuple[list[tuple[str, Any]], dict[str, dict[str, Any]]]:
    """The splits to write, as ``(split, samples)``, and every split's entry in dataset.json.

    A dataset shared by two splits (val doubling as test) is written once, into the folder of
    the first split that has it, and the other split's entry points at that folder.
    """
    chosen: list[tuple[str, Any]] = []
    folders: dict[int, tuple[str, list[int]]] = {}
    splits: dict[str, dict[str, Any]] = {}
    num_classes = datamodule.info.num_classes
    for split in SPLITS:
        dataset = getattr(datamodule, f"{split}_dataset", None)
        if dataset is None:
            continue
        if id(dataset) not in folders:
            samples = _samples(datamodule, split, dataset)
            folders[id(dataset)] = (split, _label_counts(samples, num_classes, split))
            chosen.append((split, samples))
        folder, counts = folders[id(dataset)]
        splits[split] = {"folder": folder, "count": len(dataset), "label_counts": counts}
    if "train" not in splits:
        raise ValueError(f"{type(datamodule).__name__} has no train split to convert")
    return chosen, splits


def _encoding(
    datamodule: ImageClassificationDataModule, info: Any, chosen: list[tuple[str, Any]]
) -> tuple[str, list[int] | None]:
    """The one encoding of every split, and the shape of raw images (readers need it)."""
    encodings = {samples.encoding for _, samples in chosen}
    if len(encodings) != 1:
        raise ValueError(f"{type(datamodule).__name__} mixes image files and arrays")
    encoding = encodings.pop()
    raw_shape = None
    if encoding == "raw":
        raw_shape = list(chosen[0][1].pixels(0).shape)
        if raw_shape[0] != info.in_channels:
            raise ValueError(f"images of shape {raw_shape} but in_channels={info.in_channels}")
    return encoding, raw_shape


def _check_existing_splits(
    output: Path, fingerprints: dict[str, dict[str, Any]], overwrite: bool
) -> None:
    """Before anything is deleted: every file and folder prepare would replace must be
    prepare's own, and a split made from other data is replaced only with ``overwrite``."""
    metadata_file = output / METADATA_FILE
    if metadata_file.exists() or metadata_file.is_symlink():
        written = _read_json(metadata_file) if not metadata_file.is_symlink() else None
        if not isinstance(written, dict) or written.get("format") != FORMAT:
            raise FileExistsError(
                f"{metadata_file} exists and was not written by prepare; move it away or "
                "choose an empty output folder"
            )
    for split in SPLITS:
        folder = output / split
        if not folder.exists():
            continue
        marker = _read_json(folder / SPLIT_MARKER)
        if not isinstance(marker, dict):
            raise FileExistsError(
                f"{folder} exists and was not written by prepare; choose an empty output folder"
            )
        if marker != fingerprints.get(split) and not overwrite:
            raise FileExistsError(
                f"{folder} holds a conversion of other data or with other options ("
                f"{marker.get('datamodule')}, {marker.get('count')} images); pass --overwrite "
                "to replace it, or choose another output folder"
            )


def _clear_replaced(output: Path, fingerprints: dict[str, dict[str, Any]], overwrite: bool) -> Path:
    """Create ``output`` and remove what is being replaced; returns the dataset.json path.

    dataset.json goes first, so that until it is written again (last, once every split is
    complete) the folder does not pass for a finished conversion.
    """
    output.mkdir(parents=True, exist_ok=True)
    metadata_file = output / METADATA_FILE
    metadata_file.unlink(missing_ok=True)
    for split in SPLITS:
        folder = output / split
        if folder.exists() and (
            overwrite or _read_json(folder / SPLIT_MARKER) != fingerprints.get(split)
        ):
            shutil.rmtree(folder)  # prepare's own (_check_existing_splits), being replaced
    return metadata_file


def convert_datamodule(
    datamodule: ImageClassificationDataModule,
    output_dir: str | Path,
    *,
    num_workers: int | None = None,
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write every split of ``datamodule`` into ``output_dir`` as litdata chunks.

    ``prepare_data`` and ``setup`` of the datamodule run first. Returns the output folder, which
    :class:`~datamodules.streaming.StreamingDataModule` reads as ``input_dir``. See the module
    docstring for resuming; ``overwrite`` converts again what an earlier run finished.
    """
    _require_litdata()
    output = _local_output(output_dir)
    workers = _worker_count(num_workers)
    size = parse_size(chunk_bytes)
    _check_separate(datamodule, output)

    datamodule.prepare_data()
    datamodule.setup("fit")
    info = datamodule.info  # class names now, before hours of conversion
    chosen, splits = _list_splits(datamodule)
    encoding, raw_shape = _encoding(datamodule, info, chosen)
    fingerprints = {split: _fingerprint(datamodule, split, samples) for split, samples in chosen}
    _check_existing_splits(output, fingerprints, overwrite)
    metadata_file = _clear_replaced(output, fingerprints, overwrite)
    for split, samples in chosen:
        _write_split(samples, output / split, fingerprints[split], workers, size, progress)
    _write_json(metadata_file, _metadata(datamodule, encoding, raw_shape, splits))
    return output


def _source_datamodule(
    source: str, data_dir: str, options: dict[str, Any]
) -> ImageClassificationDataModule:
    from datamodules.image_folder import ImageFolderDataModule
    from datamodules.imagenet import ImageNetDataModule
    from datamodules.stl10 import STL10DataModule

    classes = {
        "imagenet": ImageNetDataModule,
        "imagefolder": ImageFolderDataModule,
        "stl10": STL10DataModule,
    }
    if source not in classes:
        raise ValueError(f"unknown source {source!r}; expected one of {list(SOURCES)}")
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"data folder {data_dir!r} does not exist")
    # No loader workers: only the listings are used, the writers are optimize's processes.
    return classes[source](data_dir=data_dir, num_workers=0, **options)


def prepare_streaming(
    source: str,
    data_dir: str,
    output_dir: str | Path,
    *,
    options: dict[str, Any] | None = None,
    num_workers: int | None = None,
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert ``data_dir`` as the ``source`` datamodule reads it (``"imagenet"``,
    ``"imagefolder"``, ``"stl10"``) into ``output_dir``; ``options`` go to that datamodule
    (``val_split``, ``seed``, ``fold``, ``verify_archives``, ...)."""
    datamodule = _source_datamodule(source, data_dir, dict(options or {}))
    return convert_datamodule(
        datamodule,
        output_dir,
        num_workers=num_workers,
        chunk_bytes=chunk_bytes,
        overwrite=overwrite,
        progress=progress,
    )


def _split_size(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a count or a fraction: {text!r}") from None


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """What is converted: the dataset and the options of the datamodule that reads it."""
    parser.add_argument("source", choices=SOURCES, help="how DATA_DIR is read")
    parser.add_argument("data_dir", help="the dataset, as its datamodule's data_dir")
    parser.add_argument("output_dir", help="a new local folder for the chunks")
    parser.add_argument(
        "--val-split",
        type=_split_size,
        default=None,
        help="hold-out from train as val (count or fraction; default: the datamodule's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of that hold-out (default 0)")
    parser.add_argument("--fold", type=int, default=None, help="STL-10: one official fold")
    parser.add_argument(
        "--no-verify-archives",
        action="store_true",
        help="ImageNet archives: skip the md5 check before unpacking them",
    )


def _add_writing_arguments(parser: argparse.ArgumentParser) -> None:
    """How it is written: processes, chunk size, replacing, progress."""
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="conversion processes (default: one per CPU, at most 8)",
    )
    parser.add_argument(
        "--chunk-bytes",
        default=DEFAULT_CHUNK_BYTES,
        help=f"target chunk size (default {DEFAULT_CHUNK_BYTES})",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="convert again what an earlier run finished"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-classifiers prepare",
        description=(
            "Convert a dataset into litdata chunks for --data StreamingDataModule "
            "--data.input_dir OUTPUT_DIR. Safe to interrupt: run it again to resume."
        ),
    )
    _add_source_arguments(parser)
    _add_writing_arguments(parser)
    return parser


def _source_options(parser: argparse.ArgumentParser, options: argparse.Namespace) -> dict[str, Any]:
    """The source datamodule's keyword arguments; an option another source has no use for is a
    usage error rather than silently ignored."""
    source_options: dict[str, Any] = {"seed": options.seed}
    if options.val_split is not None:
        source_options["val_split"] = options.val_split
    if options.fold is not None:
        if options.source != "stl10":
            parser.error("--fold is for stl10")
        source_options["fold"] = options.fold
    if options.no_verify_archives:
        if options.source != "imagenet":
            parser.error("--no-verify-archives is for imagenet")
        source_options["verify_archives"] = False
    return source_options


def prepare_main(args: Sequence[str]) -> int:
    """``lit-classifiers prepare SOURCE DATA_DIR OUTPUT_DIR [options]``."""
    parser = _parser()
    options = parser.parse_args(args)
    try:
        import litdata  # noqa: F401
    except ImportError:
        print(f"lit-classifiers prepare: error: {LITDATA_HINT}", file=sys.stderr)
        return 2
    output = prepare_streaming(
        options.source,
        options.data_dir,
        options.output_dir,
        options=_source_options(parser, options),
        num_workers=options.workers,
        chunk_bytes=options.chunk_bytes,
        overwrite=options.overwrite,
        progress=not options.no_progress,
    )
    print(f"wrote {output}; train with --data StreamingDataModule --data.input_dir {output}")
    return 0


if __name__ == "__main__":
    sys.exit(prepare_main(sys.argv[1:]))
