"""Reading and writing checkpoints without running code, without losing the previous one.

What Lightning leaves open, filled through its public seams:

* :func:`read_checkpoint` loads local files, ``http(s)://`` URLs and any URL fsspec opens
  (chains included) with ``torch.load(weights_only=True)`` only, and turns every way a file can
  be unusable into one :class:`CheckpointError` line. A URL is streamed to a temporary file,
  bounded in size and in time (:func:`local_checkpoint_file`). Lightning itself reads ``http``
  checkpoints with ``torch.hub.load_state_dict_from_url`` and, unless told ``weights_only``,
  with ``weights_only=False``: unpickling runs whatever the file asks for.
* :func:`check_checkpoint_hparams` refuses stored hyper-parameters that would make
  ``load_from_checkpoint`` or the CLI import or instantiate something (jsonargparse
  ``class_path`` dicts, foreign instantiators, unregistered backbone names);
  ``ClassifierModule.load_from_checkpoint`` runs it (:func:`checked_classifier_checkpoint`)
  before Lightning's own ``load_from_checkpoint(weights_only=True)`` builds anything, and the
  CLI through :func:`stored_model_hparams`.
* :class:`SafeCheckpointIO`, a Trainer plugin (``Trainer(plugins=[SafeCheckpointIO()])``; the
  CLI's default), loads through :func:`read_checkpoint`, refuses to write non-finite weights
  and writes atomically in the destination folder. Lightning's own save stages the file in the
  system temp folder and, when that is another filesystem, copies it over the old checkpoint,
  so a kill in the middle leaves a truncated ``last.ckpt``.
* :func:`check_checkpoint_fits` turns a state_dict that does not fit the model into one line
  instead of ``load_state_dict``'s page of mismatches.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import glob
import os
import pickle
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import fsspec.core
import fsspec.utils
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.core.saving import (
    CHECKPOINT_PAST_HPARAMS_KEYS,
    load_hparams_from_tags_csv,
    load_hparams_from_yaml,
)
from torch import Tensor

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "CLASSIFIER_CLASS_PATHS",
    "CheckpointError",
    "NonFiniteWeightsError",
    "SafeCheckpointIO",
    "UnsafeCheckpointError",
    "atomic_save",
    "check_checkpoint_fits",
    "check_checkpoint_hparams",
    "checked_classifier_checkpoint",
    "first_non_finite",
    "local_checkpoint_file",
    "read_checkpoint",
    "stored_model_hparams",
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
#: Environment variables that bound a download: its size in bytes, and the seconds a server may
#: send nothing before the download is given up.
MAX_DOWNLOAD_ENV = "LIT_CLASSIFIERS_MAX_DOWNLOAD_BYTES"
DOWNLOAD_TIMEOUT_ENV = "LIT_CLASSIFIERS_DOWNLOAD_TIMEOUT"
DEFAULT_MAX_DOWNLOAD = 8 * 2**30  # VGG-19, SGD momentum and EMA: 3 x 143.7 M floats, 1.6 GiB
DEFAULT_DOWNLOAD_TIMEOUT = 60.0
_CHUNK = 2**20
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]{0,99}")


def read_checkpoint(
    path: str | os.PathLike[str] | IO[bytes], map_location: Any = "cpu", *, kind: str = "checkpoint"
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; never anything less safe.

    ``path`` is a local path, an ``http(s)://`` URL or any URL fsspec opens, chains included
    (see :func:`local_checkpoint_file`). Every failure is a :class:`CheckpointError` with one
    line naming ``path`` (as a ``kind``: "checkpoint", "weights file").
    """
    if not isinstance(path, (str, os.PathLike)):  # an open file or buffer: the caller's to close
        source = getattr(path, "name", None) or type(path).__name__
        return _load(path, f"{kind} {source}", map_location)
    source = os.fspath(path)
    with local_checkpoint_file(source, kind=kind) as local:
        return _read_local(local, source, kind, map_location)


@contextlib.contextmanager
def local_checkpoint_file(source: str, *, kind: str = "checkpoint") -> Iterator[str]:
    """A local path holding the file that ``source`` names: ``source`` itself when it is local,
    else a temporary copy, removed on exit.

    ``http(s)://`` URLs are streamed to disk (never held in memory), at most
    ``$LIT_CLASSIFIERS_MAX_DOWNLOAD_BYTES`` (8 GiB), and given up when the server sends nothing
    for ``$LIT_CLASSIFIERS_DOWNLOAD_TIMEOUT`` seconds (60); the torch hub cache is not used.
    Other URLs go through fsspec, chained ones too (``zip://a.ckpt::file:///x.zip``,
    ``tar://a.ckpt::https://host/x.tar``, ``reference://...``): a chain's last link, when it
    is ``http(s)://``, is downloaded under the same bounds first.
    """
    if fsspec.utils.get_protocol(source) == "file":
        yield source.removeprefix("file://")
        return
    with tempfile.TemporaryDirectory(prefix="lit-classifiers-download-") as folder:
        links = source.split("::")
        # The URL's file name where it is a plain one: Lightning's messages name the copy.
        name = urllib.parse.urlsplit(links[0]).path.rpartition("/")[2]
        target = os.path.join(folder, name if _PLAIN_NAME.fullmatch(name) else "download")
        if fsspec.utils.get_protocol(links[-1]) in ("http", "https"):
            if len(links) == 1:
                _download_http(links[-1], target, f"{kind} {source}")
                yield target
                return
            archive = os.path.join(folder, ".archive")  # an archive or index holding the file
            _download_http(links[-1], archive, f"{kind} {source}", checkpoint=False)
            links[-1] = f"file://{archive}"
        _copy_fsspec("::".join(links), target, f"{kind} {source}")
        yield target


def _download_limits() -> tuple[int, float]:
    try:
        return (
            int(os.environ.get(MAX_DOWNLOAD_ENV, DEFAULT_MAX_DOWNLOAD)),
            float(os.environ.get(DOWNLOAD_TIMEOUT_ENV, DEFAULT_DOWNLOAD_TIMEOUT)),
        )
    except ValueError as error:
        raise CheckpointError(
            f"{MAX_DOWNLOAD_ENV} must be a number of bytes and {DOWNLOAD_TIMEOUT_ENV} a number "
            f"of seconds ({error})"
        ) from None


def _download_http(url: str, target: str, what: str, checkpoint: bool = True) -> None:
    limit, timeout = _download_limits()
    request = urllib.request.Request(url, headers={"User-Agent": "lit-classifiers"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code in (404, 410):
            raise CheckpointError(f"{what} does not exist (HTTP {error.code})") from None
        raise CheckpointError(f"cannot download {what}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            raise CheckpointError(_stalled(what, timeout, 0)) from None
        raise CheckpointError(
            f"cannot download {what}: {type(reason).__name__}: {_one_line(reason)}"
        ) from None
    with response:
        announced = response.headers.get("Content-Length")
        if announced and announced.isdigit() and int(announced) > limit:
            raise CheckpointError(_too_large(what, f"announces {_size(int(announced))}", limit))
        # read1: what has arrived, so that a stall is noticed and counted chunk by chunk
        _copy(response.read1, target, what, (limit, timeout), checkpoint)


def _copy_fsspec(url: str, target: str, what: str) -> None:
    limit, timeout = _download_limits()
    protocol = fsspec.utils.get_protocol(url)
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as error:
        raise CheckpointError(
            f"cannot read {what}: the {protocol}:// scheme needs an fsspec backend that is not "
            f"installed ({_one_line(error)})"
        ) from None
    except Exception as error:  # each backend raises its own: ValueError, TypeError, OSError ...
        raise CheckpointError(
            f"cannot read {what}: fsspec cannot open this URL ({type(error).__name__}: "
            f"{_one_line(error)})"
        ) from None
    try:
        if fs.isdir(path):
            raise CheckpointError(f"{what} is a folder, not a checkpoint file")
        size = fs.size(path)
        if size is not None and size > limit:
            raise CheckpointError(_too_large(what, f"is {_size(size)}", limit))
        with fs.open(path, "rb") as handle:
            _copy(handle.read, target, what, (limit, timeout))
    except FileNotFoundError:
        raise CheckpointError(f"{what} does not exist (not found)") from None
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"cannot read {what}: {type(error).__name__}: {_one_line(error)}"
        ) from None


def _copy(
    read: Callable[[int], bytes],
    target: str,
    what: str,
    limits: tuple[int, float],
    checkpoint: bool = True,
) -> None:
    """Copy what ``read`` returns to ``target``, at most ``limits[0]`` bytes; a ``checkpoint``'s
    first bytes are checked as they arrive, so a web page or garbage stops the copy at once."""
    limit, timeout = limits
    received, head = 0, b""
    try:
        with open(target, "wb") as out:
            while chunk := read(_CHUNK):
                if checkpoint and len(head) < 64:
                    head += chunk[: 64 - len(head)]
                    # A page that is not a checkpoint is refused on what arrived, not after 64 B.
                    if len(head) == 64 or not _may_be_checkpoint(head):
                        _check_header(head, what)
                received += len(chunk)
                if received > limit:
                    raise CheckpointError(_too_large(what, "sends more", limit))
                out.write(chunk)
    except TimeoutError:
        raise CheckpointError(_stalled(what, timeout, received)) from None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise CheckpointError(
                f"disk full while downloading {what} to {os.path.dirname(target)} after "
                f"{_size(received)}"
            ) from None
        raise CheckpointError(
            f"cannot download {what}: {type(error).__name__}: {_one_line(error)}"
        ) from None
    if checkpoint and len(head) < 64:
        _check_header(head, what)


def _too_large(what: str, how: str, limit: int) -> str:
    return (
        f"{what} {how}, over the download limit of {_size(limit)}; set {MAX_DOWNLOAD_ENV} to "
        "allow more"
    )


def _stalled(what: str, timeout: float, received: int) -> str:
    return (
        f"cannot download {what}: the server sent nothing for {timeout:g} s (after "
        f"{_size(received)}); set {DOWNLOAD_TIMEOUT_ENV} to wait longer"
    )


def _read_local(
    local: str, source: str, kind: str, map_location: Any, mmap: bool = False
) -> dict[str, Any]:
    """``torch.load`` of the local file ``local``, with errors naming ``source``. ``mmap``
    maps the tensors of a zip checkpoint instead of reading them (for a look at its contents)."""
    if not os.path.exists(local):
        raise CheckpointError(f"{kind} {source} does not exist")
    if os.path.isdir(local):
        raise CheckpointError(f"{kind} {source} is a folder, not a checkpoint file")
    try:
        handle = open(local, "rb")  # noqa: SIM115  (closed below; opening it is what may fail)
    except OSError as error:
        raise CheckpointError(f"cannot open {kind} {source}: {error.strerror}") from None
    with handle:
        mapped = mmap and handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
        handle.seek(0)
        return _load(local if mapped else handle, f"{kind} {source}", map_location, mapped)


def _load(
    handle: IO[bytes] | str, what: str, map_location: Any, mmap: bool = False
) -> dict[str, Any]:
    if not isinstance(handle, str):  # a path is only given once its header was seen
        start = handle.tell()
        head = handle.read(64)
        handle.seek(start)
        _check_header(head, what)
    try:
        checkpoint = torch.load(handle, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise _refusal(error, what) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        # The header was right, so the rest is missing or damaged (a truncated zip makes torch
        # seek past the end: OSError EINVAL).
        raise CheckpointError(_damage(error, what)) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{what} holds a {type(checkpoint).__name__}, not a checkpoint dictionary"
        )
    return checkpoint


def _may_be_checkpoint(head: bytes) -> bool:
    """Whether ``head`` is, or may still become, the start of a zip or pickle checkpoint."""
    return any(
        head.startswith(magic) or magic.startswith(head)
        for magic in (_ZIP_MAGIC, _PICKLE_PROTOCOL_2)
    )


def _check_header(head: bytes, what: str) -> None:
    if not head:
        raise CheckpointError(
            f"{what} is empty (0 bytes): probably an interrupted save or download"
        )
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL_2):
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:  # the 64 bytes may end inside a character
        text = head[: error.start].decode("utf-8") if error.start >= len(head) - 3 else ""
    if text.startswith("version https://git-lfs"):
        raise CheckpointError(
            f"{what} is a Git LFS pointer, not the checkpoint: fetch it with `git lfs pull`"
        )
    if text and all(char.isprintable() or char.isspace() for char in text):
        raise CheckpointError(
            f"{what} is a text file, not a PyTorch checkpoint "
            f"(it starts with {_one_line(text)[:40]!r})"
        )
    raise CheckpointError(
        f"{what} is not a PyTorch checkpoint (neither a zip archive nor a pickle)"
    )


def _refusal(error: pickle.UnpicklingError, what: str) -> CheckpointError:
    message = str(error)
    if "Weights only load failed" not in message:
        return CheckpointError(_damage(error, what))
    # torch's own message advises weights_only=False, which would run the file's code: we say
    # instead what in the file is not allowed.
    found = re.search(r"GLOBAL ([\w.]+)", message)
    held = f"{found.group(1)}, which is not" if found else "an object that is not"
    return UnsafeCheckpointError(
        f"{what} holds {held} a tensor or plain data; it may contain code and was refused "
        "(only tensors, numbers, strings, lists and dicts are loaded)"
    )


def _damage(error: BaseException, what: str) -> str:
    detail = getattr(error, "strerror", None) or _one_line(error) or type(error).__name__
    return (
        f"{what} is truncated or corrupt ({type(error).__name__}: {detail}): "
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


def stored_model_hparams(ckpt_path: str, source: str | None = None) -> dict[str, Any]:
    """The model arguments stored in the checkpoint at ``ckpt_path`` (a path or any URL
    :func:`read_checkpoint` takes), checked with :func:`check_checkpoint_hparams`, without
    Lightning's bookkeeping (``_instantiator``, ``_class_path``) or stored ``weights``: what
    the CLI puts under ``--model`` before the command line's own values. ``source``: the name
    errors give the file (a local copy's URL); ``ckpt_path`` by default."""
    source = source or ckpt_path
    with local_checkpoint_file(ckpt_path) as local:
        stored = _read_local(local, source, "checkpoint", "cpu", mmap=True)
    hparams = dict(stored.get("hyper_parameters") or {})
    check_checkpoint_hparams(hparams, source)
    hparams.pop("_instantiator", None)
    hparams.pop("_class_path", None)
    if isinstance(hparams.get("backbone_kwargs"), Mapping):  # the state_dict supersedes them
        hparams["backbone_kwargs"] = {
            k: v for k, v in hparams["backbone_kwargs"].items() if k != "weights"
        }
    return hparams


# ------------------------------------------------------------------------------------------ finite
def first_non_finite(tensors: Iterable[tuple[str, Any]]) -> tuple[str, str] | None:
    """``(name, description)`` of the first floating-point tensor holding NaN or inf, or None.

    One device synchronisation per device rather than one per tensor. A finite sum proves
    a tensor finite (NaN and inf propagate through it), so only tensors whose sum is not
    finite (non-finite values, or finite ones whose sum overflows) are checked element-wise;
    a sum reads each tensor once and allocates nothing of its size.
    """
    by_device: dict[torch.device, list[tuple[str, Tensor]]] = {}
    order: list[str] = []
    for name, tensor in tensors:
        if isinstance(tensor, Tensor) and (tensor.is_floating_point() or tensor.is_complex()):
            by_device.setdefault(tensor.device, []).append((name, tensor))
            order.append(name)
    bad: dict[str, Tensor] = {}
    for named in by_device.values():
        finite_sums = torch.stack([torch.isfinite(t.detach().sum()) for _, t in named])
        for i in torch.nonzero(~finite_sums).flatten().tolist():
            if not bool(torch.isfinite(named[i][1].detach()).all()):
                bad[named[i][0]] = named[i][1]
    if not bad:
        return None
    name = next(n for n in order if n in bad)
    tensor = bad[name].detach()
    nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
    kinds = ", ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "inf")) if n)
    return name, f"{kinds} of {tensor.numel()} values"


# ------------------------------------------------------------------------------------------ the IO
class SafeCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that loads with ``weights_only=True`` only (URLs as
    :func:`read_checkpoint` reads them), never saves non-finite weights and saves atomically,
    given as a Trainer plugin: ``Trainer(plugins=[SafeCheckpointIO()])``. A temporary file
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


# ------------------------------------------------------------------------------------------ loading
# (source, strict, stored hyper-parameters before the caller's overrides) of the
# ClassifierModule.load_from_checkpoint call in progress, for check_checkpoint_fits's errors.
_LOADING: contextvars.ContextVar[tuple[str, bool | None, Mapping[str, Any]] | None] = (
    contextvars.ContextVar("classifier_loading", default=None)
)


@contextlib.contextmanager
def checked_classifier_checkpoint(
    checkpoint_path: str | os.PathLike[str] | IO[bytes],
    hparams_file: str | os.PathLike[str] | None = None,
    strict: bool | None = None,
    weights_only: bool | None = True,
    overrides: Mapping[str, Any] | None = None,
) -> Iterator[tuple[str | IO[bytes], dict[str, Any]]]:
    """What ``ClassifierModule.load_from_checkpoint`` hands to Lightning's own: the checkpoint
    as a local file (a URL's download, removed on exit) and the keyword arguments to pass.

    Before that, the file is read with ``weights_only=True`` (memory-mapped, so cheaply), and
    its hyper-parameters, Lightning's legacy ``hparams``/``module_arguments`` and
    ``hparams_file``'s included, must be plain data naming a registered backbone
    (:func:`check_checkpoint_hparams`). Stored ``backbone_kwargs.weights`` are dropped from
    what the model is built with: the state_dict supersedes them, and reading them would open
    another file or URL. ``overrides`` (the caller's keyword arguments) win and are not checked.
    """
    if weights_only is False:
        raise ValueError(
            "ClassifierModule checkpoints load with weights_only=True only; a checkpoint "
            "that needs weights_only=False can execute code when unpickled"
        )
    kwargs = dict(overrides or {})
    if not isinstance(checkpoint_path, (str, os.PathLike)):  # an open file: read, then rewind
        source, start = type(checkpoint_path).__name__, checkpoint_path.tell()
        checkpoint = _load(checkpoint_path, f"checkpoint {source}", "cpu")
        checkpoint_path.seek(start)
        with _checked(checkpoint, source, hparams_file, strict, kwargs):
            yield checkpoint_path, kwargs
        return
    source = os.fspath(checkpoint_path)
    with local_checkpoint_file(source) as local:
        checkpoint = _read_local(local, source, "checkpoint", "cpu", mmap=True)
        with _checked(checkpoint, source, hparams_file, strict, kwargs):
            yield local, kwargs


@contextlib.contextmanager
def _checked(
    checkpoint: dict[str, Any],
    source: str,
    hparams_file: str | os.PathLike[str] | None,
    strict: bool | None,
    kwargs: dict[str, Any],
) -> Iterator[None]:
    if "state_dict" not in checkpoint:
        raise CheckpointError(
            f"checkpoint {source} has no state_dict: it is not a Lightning checkpoint (a "
            "bare weights file loads with backbone_kwargs={'weights': path})"
        )
    key = "hyper_parameters"
    if hparams_file is not None:
        checkpoint[key] = _read_hparams_file(hparams_file)
    stored = _checked_stored_hparams(checkpoint, key, source, hparams_file, kwargs)
    if "backbone" not in kwargs and "backbone" not in stored:
        raise CheckpointError(
            f"checkpoint {source} was trained with a custom backbone module, which is not "
            "stored: pass it, ClassifierModule.load_from_checkpoint(path, backbone=module)"
        )
    backbone_kwargs = stored.get("backbone_kwargs")
    stored_weights = isinstance(backbone_kwargs, Mapping) and "weights" in backbone_kwargs
    if stored_weights and "backbone_kwargs" not in kwargs:
        kwargs["backbone_kwargs"] = {k: v for k, v in backbone_kwargs.items() if k != "weights"}
    # The stored values before the caller's overrides name the model the checkpoint is of.
    as_saved = {
        k: v for name in (*CHECKPOINT_PAST_HPARAMS_KEYS, key) for k, v in _dict(checkpoint, name)
    }
    token = _LOADING.set((source, strict, as_saved))
    try:
        yield
    finally:
        _LOADING.reset(token)


def _read_hparams_file(hparams_file: str | os.PathLike[str]) -> dict[str, Any]:
    extension = str(hparams_file).rsplit(".", 1)[-1].lower()
    if extension == "csv":
        return load_hparams_from_tags_csv(hparams_file)
    if extension in ("yml", "yaml"):
        return load_hparams_from_yaml(hparams_file, use_omegaconf=False)
    raise ValueError(f"hparams_file must be .csv, .yml or .yaml, got {hparams_file}")


def _dict(checkpoint: Mapping[str, Any], key: str) -> Iterable[tuple[str, Any]]:
    found = checkpoint.get(key)
    return found.items() if isinstance(found, Mapping) else ()


def _checked_stored_hparams(
    checkpoint: Mapping[str, Any],
    key: str,
    source: str,
    hparams_file: str | os.PathLike[str] | None,
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """Every hyper-parameter the checkpoint would feed to the model, checked to be plain data.

    Lightning also merges those under its legacy keys (``hparams``, ``module_arguments``),
    ``_instantiator`` included. What the caller passes is
    not taken from the checkpoint, so it is not checked either.
    """
    stored: dict[str, Any] = {}
    for name in (*CHECKPOINT_PAST_HPARAMS_KEYS, key):
        if name not in checkpoint:
            continue
        where = str(hparams_file) if name == key and hparams_file else source
        found = checkpoint[name]
        if isinstance(found, Mapping):
            found = {k: v for k, v in found.items() if k not in kwargs}
        check_checkpoint_hparams(found, where)
        stored.update(found)
    return stored


def check_checkpoint_fits(
    module: pl.LightningModule, checkpoint: Mapping[str, Any], ckpt_path: Any = None
) -> None:
    """Raise one :class:`CheckpointError` line when ``checkpoint``'s state_dict does not fit
    ``module`` (wrong backbone or number of classes, other shapes, missing or extra tensors
    under strict loading), instead of ``load_state_dict``'s page of size mismatches.

    Inside ``ClassifierModule.load_from_checkpoint`` it names that call's source and honours its
    ``strict``; otherwise (a Trainer restoring ``ckpt_path``) it names ``ckpt_path``.
    """
    loading = _LOADING.get()
    if loading is not None:
        source, strict, stored = loading
        strict = module.strict_loading if strict is None else strict
    else:
        source, strict = (str(ckpt_path) if ckpt_path else "(unnamed)"), module.strict_loading
        stored = checkpoint.get("hyper_parameters") or {}
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"checkpoint {source} has no state_dict: it is not a Lightning checkpoint (a "
            "bare weights file loads with backbone_kwargs={'weights': path})"
        )
    own = module.state_dict()
    mismatched = [
        (key, tuple(value.shape), tuple(own[key].shape))
        for key, value in state.items()
        if key in own and isinstance(value, Tensor) and value.shape != own[key].shape
    ]
    missing = [key for key in own if key not in state] if strict else []
    unexpected = [key for key in state if key not in own] if strict else []
    if not (mismatched or missing or unexpected):
        return
    _check_same_model(module, stored, source)
    if mismatched:
        key, their_shape, my_shape = mismatched[0]
        more = f" ({len(mismatched) - 1} more tensors differ)" if len(mismatched) > 1 else ""
        raise CheckpointError(
            f"checkpoint {source} does not fit this model: {key} has shape {their_shape} in "
            f"the checkpoint but {my_shape} in the model{more}"
        )
    if missing:
        ema = "a model with ema_decay needs a checkpoint trained with it, or "
        raise CheckpointError(
            f"checkpoint {source} does not fit this model: it lacks {len(missing)} of the "
            f"model's tensors (first: {missing[0]}); "
            f"{ema if missing[0].startswith('ema.') else ''}load with strict=False to skip them"
        )
    raise CheckpointError(
        f"checkpoint {source} does not fit this model: it has {len(unexpected)} tensors the "
        f"model lacks (first: {unexpected[0]}); load with strict=False to ignore them"
    )


def _check_same_model(module: pl.LightningModule, stored: Mapping[str, Any], source: str) -> None:
    """When the stored hyper-parameters name another backbone or class count, say that: it
    explains every mismatch at once."""
    theirs, mine = stored.get("backbone"), module.hparams.get("backbone")
    their_classes, my_classes = stored.get("num_classes"), module.hparams.get("num_classes")
    if (isinstance(theirs, str) and isinstance(mine, str) and theirs != mine) or (
        their_classes is not None and their_classes != my_classes
    ):
        their_backbone = theirs if isinstance(theirs, str) else "a custom module"
        my_backbone = mine if isinstance(mine, str) else type(module.backbone).__name__
        raise CheckpointError(
            f"checkpoint {source} was trained with backbone={their_backbone}, "
            f"num_classes={their_classes}; this model is backbone={my_backbone}, "
            f"num_classes={my_classes}: build the model to match the checkpoint or "
            "use ClassifierModule.load_from_checkpoint"
        )
