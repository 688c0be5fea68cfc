"""Reading and writing checkpoints without running code, without losing the previous one.

* :func:`read_checkpoint` loads local files, ``http(s)://`` URLs and anything fsspec opens with
  ``torch.load(weights_only=True)`` only, and turns every way a file can be unusable into one
  :class:`CheckpointError` line. Lightning itself reads ``http`` checkpoints with
  ``torch.hub.load_state_dict_from_url(weights_only=False)``: unpickling runs whatever the file
  asks for, and the hub cache keeps the file for the next call.
* :func:`check_checkpoint_hparams` refuses stored hyper-parameters that would make
  ``load_from_checkpoint`` import or instantiate something (jsonargparse ``class_path`` dicts,
  foreign instantiators, unregistered backbone names).
* :class:`SafeCheckpointIO` is the ``CheckpointIO`` that ``ClassifierModule`` installs in its
  trainer: it loads through :func:`read_checkpoint`, refuses to write non-finite weights and
  writes atomically in the destination folder. Lightning's own save stages the file in the
  system temp folder and, when that is another filesystem, copies it over the old checkpoint,
  so a kill in the middle leaves a truncated ``last.ckpt``.
"""

from __future__ import annotations

import errno
import glob
import io
import os
import pickle
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import fsspec.utils
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from torch import Tensor

__all__ = [
    "CLASSIFIER_CLASS_PATHS",
    "CheckpointError",
    "NonFiniteWeightsError",
    "SafeCheckpointIO",
    "UnsafeCheckpointError",
    "check_checkpoint_hparams",
    "first_non_finite",
    "read_checkpoint",
]

#: The values ``_class_path`` may hold in a ClassifierModule checkpoint (LightningCLI stores it
#: in subclass mode): our class under its module and under its package export.
CLASSIFIER_CLASS_PATHS = frozenset(
    {"lit_classifiers.module.ClassifierModule", "lit_classifiers.ClassifierModule"}
)
#: The only instantiator LightningCLI records in checkpoints it writes.
ALLOWED_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_2 = b"\x80"  # torch's legacy (pre-1.6) format starts with a pickle header
_PLAIN_SCALARS = (type(None), bool, int, float, str)


class CheckpointError(ValueError):
    """A checkpoint cannot be read, written or used; the message names the file and the cause."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The checkpoint holds objects that unpickling would have to import or call."""


class NonFiniteWeightsError(RuntimeError):
    """Parameters or buffers became NaN or infinite."""


# ------------------------------------------------------------------------------------------ reading
def read_checkpoint(
    path: str | os.PathLike[str] | IO[bytes], map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; never anything less safe.

    Local paths are read directly; ``http(s)://`` URLs and other fsspec URLs (``s3://``,
    ``gs://`` ... where their fsspec backend is installed) are read into memory, so nothing is
    cached on disk. Every failure is a :class:`CheckpointError` with one line naming ``path``.
    """
    if not isinstance(path, (str, os.PathLike)):  # an open file or buffer: the caller's to close
        source = getattr(path, "name", None) or type(path).__name__
        return _load(path, str(source), map_location)
    source = os.fspath(path)
    if fsspec.utils.get_protocol(source) == "file":
        with _open_local(source) as handle:
            return _load(handle, source, map_location)
    return _load(io.BytesIO(_fetch_remote(source)), source, map_location)


def _open_local(source: str) -> IO[bytes]:
    local = source.removeprefix("file://")
    if not os.path.exists(local):
        raise CheckpointError(f"checkpoint {source} does not exist")
    if os.path.isdir(local):
        raise CheckpointError(f"checkpoint {source} is a folder, not a checkpoint file")
    try:
        return open(local, "rb")
    except OSError as error:
        raise CheckpointError(f"cannot open checkpoint {source}: {error.strerror}") from None


def _fetch_remote(source: str) -> bytes:
    protocol = fsspec.utils.get_protocol(source)
    try:
        fs = get_filesystem(source)
    except (ImportError, ValueError) as error:
        raise CheckpointError(
            f"cannot read checkpoint {source}: the {protocol}:// scheme needs an fsspec backend "
            f"that is not installed ({_one_line(error)})"
        ) from None
    try:
        return bytes(fs.cat_file(source))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {source} does not exist (not found)") from None
    except Exception as error:  # aiohttp, botocore ... each raise their own network errors
        raise CheckpointError(
            f"cannot download checkpoint {source}: {type(error).__name__}: {_one_line(error)}"
        ) from None


def _load(handle: IO[bytes], source: str, map_location: Any) -> dict[str, Any]:
    start = handle.tell()
    head = handle.read(64)
    handle.seek(start)
    _check_header(head, source)
    try:
        checkpoint = torch.load(handle, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refusal(error, source) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        # The header was right, so the rest is missing or damaged (a truncated zip makes torch
        # seek past the end: OSError EINVAL).
        raise CheckpointError(_damage(error, source)) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(checkpoint).__name__}, not a checkpoint dictionary"
        )
    return checkpoint


def _check_header(head: bytes, source: str) -> None:
    if not head:
        raise CheckpointError(
            f"checkpoint {source} is empty (0 bytes): probably an interrupted save or download"
        )
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL_2):
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:  # the 64 bytes may end inside a character
        text = head[: error.start].decode("utf-8") if error.start >= len(head) - 3 else ""
    if text.startswith("version https://git-lfs"):
        raise CheckpointError(
            f"checkpoint {source} is a Git LFS pointer, not the checkpoint: fetch it with "
            "`git lfs pull`"
        )
    if text and all(char.isprintable() or char.isspace() for char in text):
        raise CheckpointError(
            f"checkpoint {source} is a text file, not a PyTorch checkpoint "
            f"(it starts with {_one_line(text)[:40]!r})"
        )
    raise CheckpointError(
        f"checkpoint {source} is not a PyTorch checkpoint (neither a zip archive nor a pickle)"
    )


def _refusal(error: pickle.UnpicklingError, source: str) -> CheckpointError:
    message = str(error)
    if "Weights only load failed" not in message:
        return CheckpointError(_damage(error, source))
    # torch's own message recommends weights_only=False; we name what was asked for instead.
    found = re.search(r"GLOBAL ([\w.]+)", message)
    needs = f" (it needs {found.group(1)})" if found else ""
    return UnsafeCheckpointError(
        f"checkpoint {source} holds objects other than tensors and plain data{needs}; it may "
        "contain code and was refused: only checkpoints of tensors and plain data are loaded"
    )


def _damage(error: BaseException, source: str) -> str:
    detail = getattr(error, "strerror", None) or _one_line(error) or type(error).__name__
    return (
        f"checkpoint {source} is truncated or corrupt ({type(error).__name__}: {detail}): "
        "probably an interrupted save or download"
    )


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


# ------------------------------------------------------------------------------------------ hparams
def check_checkpoint_hparams(hparams: Mapping[str, Any], source: str) -> None:
    """Refuse stored hyper-parameters that could make loading import or instantiate anything.

    A ClassifierModule checkpoint holds plain data: ``backbone`` is a registered name, the
    only instantiator is LightningCLI's and ``_class_path`` names ClassifierModule. Nested
    ``class_path``/``init_args`` dicts (which jsonargparse would import and build) and any
    value that is not None/bool/int/float/str/list/tuple/dict are refused with a
    :class:`CheckpointError` naming ``source`` and the key.
    """
    if not isinstance(hparams, Mapping):
        raise CheckpointError(
            f"checkpoint {source}: hyper_parameters is a {type(hparams).__name__}, not a dict"
        )
    for key, value in hparams.items():
        if key == "_instantiator":
            if value != ALLOWED_INSTANTIATOR:
                raise CheckpointError(
                    f"checkpoint {source}: hyper-parameter _instantiator={_short(value)} is "
                    f"refused; only {ALLOWED_INSTANTIATOR!r} is trusted"
                )
        elif key == "_class_path":
            if value not in CLASSIFIER_CLASS_PATHS:
                raise CheckpointError(
                    f"checkpoint {source}: hyper-parameter _class_path={_short(value)} is "
                    "refused; a ClassifierModule checkpoint names lit_classifiers.ClassifierModule"
                )
        elif key == "backbone":
            _check_backbone_name(value, source)
        _check_plain(value, f"{key}", source)


def _check_backbone_name(value: Any, source: str) -> None:
    from lit_classifiers import models as _models  # noqa: F401  (registers the built-in names)
    from lit_classifiers.registry import list_backbones

    if not isinstance(value, str):
        raise CheckpointError(
            f"checkpoint {source}: hyper-parameter backbone={_short(value)} is refused; it must "
            "be a registered backbone name (a custom nn.Module is passed as "
            "load_from_checkpoint(path, backbone=module))"
        )
    if value not in list_backbones():
        raise CheckpointError(
            f"checkpoint {source}: hyper-parameter backbone={value!r} is not a registered "
            "backbone name (see `lit-classifiers backbones`); register it before loading or pass "
            "load_from_checkpoint(path, backbone=module)"
        )


def _check_plain(value: Any, key: str, source: str) -> None:
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{key}[{index}]", source)
        return
    if isinstance(value, Mapping):
        if "class_path" in value or "init_args" in value:
            raise CheckpointError(
                f"checkpoint {source}: hyper-parameter {key} is a class_path/init_args "
                "specification, which loading would import and instantiate; it is refused"
            )
        for name, item in value.items():
            if not isinstance(name, str):
                raise CheckpointError(
                    f"checkpoint {source}: hyper-parameter {key} has a non-string key {name!r}"
                )
            _check_plain(item, f"{key}.{name}", source)
        return
    raise CheckpointError(
        f"checkpoint {source}: hyper-parameter {key} is a {type(value).__name__}; only None, "
        "bool, int, float, str and lists/dicts of those are accepted"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------------------ finite
def first_non_finite(tensors: Iterable[tuple[str, Any]]) -> tuple[str, str] | None:
    """``(name, description)`` of the first floating-point tensor holding NaN or inf, or None.

    One device synchronisation per device rather than one per tensor.
    """
    by_device: dict[torch.device, list[tuple[str, Tensor]]] = {}
    order: list[str] = []
    for name, tensor in tensors:
        if isinstance(tensor, Tensor) and (tensor.is_floating_point() or tensor.is_complex()):
            by_device.setdefault(tensor.device, []).append((name, tensor))
            order.append(name)
    bad: dict[str, Tensor] = {}
    for named in by_device.values():
        finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named])
        if not bool(finite.all()):
            bad.update(named[i] for i in torch.nonzero(~finite).flatten().tolist())
    if not bad:
        return None
    name = next(n for n in order if n in bad)
    tensor = bad[name].detach()
    nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
    kinds = ", ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "inf")) if n)
    return name, f"{kinds} of {tensor.numel()} values"


# ------------------------------------------------------------------------------------------ the IO
class SafeCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that loads with ``weights_only=True`` only (remote files through
    fsspec, in memory), never saves non-finite weights and saves atomically: a temporary file
    in the destination folder is written, flushed, fsync'ed and renamed onto the final name,
    so a checkpoint on disk is always either the previous one or the complete new one."""

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(
                f"checkpoint {os.fspath(path)}: weights_only=False is not supported; "
                "ClassifierModule checkpoints load with weights_only=True only"
            )
        return read_checkpoint(path, map_location=map_location)

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike[str],
        storage_options: Any | None = None,
    ) -> None:
        target = os.fspath(path)
        bad = first_non_finite((checkpoint.get("state_dict") or {}).items())
        if bad is not None:
            name, description = bad
            raise NonFiniteWeightsError(
                f"refusing to save checkpoint {target}: {name} holds non-finite values "
                f"({description}); the previous checkpoint under that name is kept"
            )
        if fsspec.utils.get_protocol(target) != "file":
            # Object stores replace an object in one request; Lightning's save does that.
            super().save_checkpoint(checkpoint, target, storage_options=storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` is not supported for local "
                f"files by {type(self).__name__}"
            )
        atomic_save(checkpoint, target.removeprefix("file://"))


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` that leaves either the old file or the complete new one.

    The temporary file lives next to ``path`` (same filesystem, so the rename is atomic) and is
    removed on any failure; a disk-full error says how much space was left.
    """
    target = Path(path)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(
            f"cannot save checkpoint {target}: cannot create its folder ({error.strerror})"
        ) from None
    _remove_stale_temporaries(target)
    temporary = folder / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        # os.open with 0o666 honours the umask like a plain open(), unlike mkstemp's 0o600.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            writer = _RecordingWriter(handle)
            try:
                torch.save(obj, writer)
            except RuntimeError:
                # torch reports a failed write as "unexpected pos ..."; the OSError says why.
                if writer.error is not None:
                    raise writer.error from None
                raise
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CheckpointError(_save_failure(error, target)) from error
        raise
    _fsync_folder(folder)


def _remove_stale_temporaries(target: Path) -> None:
    # Left by a save that was killed; the name pattern is ours alone.
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


class _RecordingWriter:
    """A file's ``write`` that keeps the OSError torch.save would swallow."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def _save_failure(error: OSError, target: Path) -> str:
    previous = "the previous checkpoint is intact" if target.exists() else "nothing was written"
    if error.errno == errno.ENOSPC:
        free = shutil.disk_usage(target.parent).free
        return f"disk full while saving {target} ({_size(free)} free); {previous}"
    reason = error.strerror or _one_line(error)
    return f"cannot save checkpoint {target}: {reason}; {previous}"


def _size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GiB"


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened or fsync'ed.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
