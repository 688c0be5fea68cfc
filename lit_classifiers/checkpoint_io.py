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
  trainer (:func:`install_safe_checkpoint_io`): it loads through :func:`read_checkpoint`,
  refuses to write non-finite weights and writes atomically in the destination folder.
  Lightning's own save stages the file in the system temp folder and, when that is another
  filesystem, copies it over the old checkpoint, so a kill in the middle leaves a truncated
  ``last.ckpt``.
* :func:`load_classifier_checkpoint` is what ``ClassifierModule.load_from_checkpoint`` does:
  Lightning's loading, made safe, with old hyper-parameter names upgraded
  (:func:`upgrade_hparams`), and :func:`check_checkpoint_fits` turns a state_dict that does
  not fit the model into one line instead of ``load_state_dict``'s page of mismatches.
"""

from __future__ import annotations

import contextvars
import errno
import glob
import io
import logging
import os
import pickle
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import fsspec.utils
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.core.saving import load_hparams_from_tags_csv, load_hparams_from_yaml
from lightning.pytorch.utilities.migration import migrate_checkpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_deprecation, rank_zero_warn
from torch import Tensor

from lit_classifiers.lightning_compat import (
    is_checkpoint_io_wrapper,
    load_module_state,
    replace_wrapped_checkpoint_io,
)

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "CLASSIFIER_CLASS_PATHS",
    "RENAMED_HPARAMS",
    "CheckpointError",
    "NonFiniteWeightsError",
    "SafeCheckpointIO",
    "UnsafeCheckpointError",
    "check_checkpoint_fits",
    "check_checkpoint_hparams",
    "default_map_location",
    "first_non_finite",
    "install_safe_checkpoint_io",
    "load_classifier_checkpoint",
    "read_checkpoint",
    "upgrade_hparams",
    "warn_renamed_hparam",
]

_log = logging.getLogger(__name__)

#: The values ``_class_path`` may hold in a ClassifierModule checkpoint (LightningCLI stores it
#: in subclass mode): our class under its module and under its package export.
CLASSIFIER_CLASS_PATHS = frozenset(
    {"lit_classifiers.module.ClassifierModule", "lit_classifiers.ClassifierModule"}
)
#: The only instantiator LightningCLI records in checkpoints it writes.
ALLOWED_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"

#: ClassifierModule arguments renamed after 0.1.0 (old name -> new name). The old names are
#: accepted, with a deprecation warning, until the next release; checkpoints that stored them
#: load under the new ones.
RENAMED_HPARAMS = {"freeze_backbone": "freeze_body", "backbone_lr_scale": "body_lr_scale"}

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


# ------------------------------------------------------------------------------------ renamed names
def warn_renamed_hparam(old: str) -> None:
    """The deprecation warning for a ClassifierModule argument given by its old name."""
    rank_zero_deprecation(
        f"ClassifierModule's argument {old!r} is deprecated and will be removed in the next "
        f"release: use {RENAMED_HPARAMS[old]!r}, the same setting under its new name"
    )


def upgrade_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Stored hyper-parameters with the old names of :data:`RENAMED_HPARAMS` replaced by the new
    ones (a new name already present wins). Silent: the checkpoint's owner cannot act on a
    warning short of re-saving it, and the model it builds stores the new names."""
    upgraded = dict(hparams)
    for old, new in RENAMED_HPARAMS.items():
        if old in upgraded:
            value = upgraded.pop(old)
            if value is not None:
                upgraded.setdefault(new, value)
    return upgraded


def _rename_caller_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    renamed = dict(kwargs)
    for old, new in RENAMED_HPARAMS.items():
        if old not in renamed:
            continue
        value = renamed.pop(old)
        if value is None:
            continue
        warn_renamed_hparam(old)
        if new in renamed and renamed[new] != value:
            raise ValueError(
                f"load_from_checkpoint got {old}={value!r} and {new}={renamed[new]!r}; {old} is "
                f"the deprecated name of {new}: give only {new}"
            )
        renamed[new] = value
    return renamed


# ------------------------------------------------------------------------------------------ loading
def default_map_location(storage: Any, location: str) -> Any:
    """Storages of a device this machine lacks (CUDA, MPS, XLA) go to the CPU; all others stay
    where they were saved. Lightning's ``load_from_checkpoint`` default, from public parts."""
    unavailable = (
        (location.startswith("mps") and not MPSAccelerator.is_available())
        or (location.startswith("cuda") and not CUDAAccelerator.is_available())
        or (location.startswith("xla") and not XLAAccelerator.is_available())
    )
    return storage.cpu() if unavailable else None


# (source, strict, stored hyper-parameters before the caller's overrides) of the
# load_classifier_checkpoint call in progress, for check_checkpoint_fits's errors.
_LOADING: contextvars.ContextVar[tuple[str, bool | None, Mapping[str, Any]] | None] = (
    contextvars.ContextVar("classifier_loading", default=None)
)

_Module = TypeVar("_Module", bound="pl.LightningModule")


def load_classifier_checkpoint(
    cls: type[_Module],
    checkpoint_path: str | os.PathLike[str] | IO[bytes],
    map_location: Any = None,
    hparams_file: str | os.PathLike[str] | None = None,
    strict: bool | None = None,
    weights_only: bool | None = True,
    **kwargs: Any,
) -> _Module:
    """``ClassifierModule.load_from_checkpoint``: Lightning's loading, made safe.

    The file (local, ``http(s)://`` or any fsspec URL) is read once with ``weights_only=True``;
    its hyper-parameters (or ``hparams_file``'s) must be plain data naming a registered backbone
    (:func:`check_checkpoint_hparams`) before anything is built from them; old argument names
    are upgraded (:func:`upgrade_hparams`); stored ``weights`` are dropped, since the state_dict
    supersedes them. ``kwargs`` override stored hyper-parameters.
    """
    if weights_only is False:
        raise ValueError(
            "ClassifierModule checkpoints load with weights_only=True only; a checkpoint "
            "that needs weights_only=False can execute code when unpickled"
        )
    is_path = isinstance(checkpoint_path, (str, os.PathLike))
    source = os.fspath(checkpoint_path) if is_path else type(checkpoint_path).__name__
    checkpoint = read_checkpoint(checkpoint_path, map_location or default_map_location)
    if "state_dict" not in checkpoint:
        raise CheckpointError(
            f"checkpoint {source} has no state_dict: it is not a Lightning checkpoint (a "
            "bare weights file loads with backbone_kwargs={'weights': path})"
        )
    checkpoint = _migrate(checkpoint, source if is_path else None)
    kwargs = _rename_caller_kwargs(kwargs)
    key = cls.CHECKPOINT_HYPER_PARAMS_KEY
    if hparams_file is not None:
        checkpoint[key] = _read_hparams_file(hparams_file)
    stored = _checked_stored_hparams(checkpoint, key, source, hparams_file, kwargs)
    if "backbone" not in kwargs and "backbone" not in stored:
        raise CheckpointError(
            f"checkpoint {source} was trained with a custom backbone module, which is not "
            "stored: pass it, ClassifierModule.load_from_checkpoint(path, backbone=module)"
        )
    hparams = upgrade_hparams(checkpoint.get(key) or {})
    backbone_kwargs = hparams.get("backbone_kwargs")
    if isinstance(backbone_kwargs, Mapping) and "weights" in backbone_kwargs:
        # The state_dict supersedes them; loading them would read or download a file.
        hparams["backbone_kwargs"] = {k: v for k, v in backbone_kwargs.items() if k != "weights"}
    checkpoint[key] = {**hparams, **kwargs}

    token = _LOADING.set((source, strict, hparams))
    try:
        model = load_module_state(cls, checkpoint, strict=strict, **kwargs)
    finally:
        _LOADING.reset(token)
    tensors = (t for t in checkpoint["state_dict"].values() if isinstance(t, Tensor))
    device = next(tensors, torch.tensor(0)).device
    return model.to(device)  # type: ignore[return-value]


def _migrate(checkpoint: dict[str, Any], path: str | None) -> dict[str, Any]:
    """Lightning's upgrades of checkpoints written by older Lightning versions."""
    if "pytorch-lightning_version" not in checkpoint:  # not written by a Trainer: nothing to do
        return checkpoint
    old_version = checkpoint["pytorch-lightning_version"]
    checkpoint, migrations = migrate_checkpoint(checkpoint)
    if migrations and path is not None:
        _log.info(
            f"Lightning upgraded the loaded checkpoint from v{old_version} to "
            f"v{checkpoint['pytorch-lightning_version']} in memory; to upgrade the file, run "
            f"`python -m lightning.pytorch.utilities.upgrade_checkpoint {path}`"
        )
    return checkpoint


def _read_hparams_file(hparams_file: str | os.PathLike[str]) -> dict[str, Any]:
    extension = str(hparams_file).rsplit(".", 1)[-1].lower()
    if extension == "csv":
        return load_hparams_from_tags_csv(hparams_file)
    if extension in ("yml", "yaml"):
        return load_hparams_from_yaml(hparams_file, use_omegaconf=False)
    raise ValueError(f"hparams_file must be .csv, .yml or .yaml, got {hparams_file}")


def _checked_stored_hparams(
    checkpoint: Mapping[str, Any],
    key: str,
    source: str,
    hparams_file: str | os.PathLike[str] | None,
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """Every hyper-parameter the checkpoint would feed to the model, checked to be plain data.

    Lightning also reads them from the keys of its 0.7 checkpoints. What the caller passes is
    not taken from the checkpoint, so it is not checked either.
    """
    stored: dict[str, Any] = {}
    for name in ("hparams", "module_arguments", key):
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

    Inside :func:`load_classifier_checkpoint` it names that call's source and honours its
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


def install_safe_checkpoint_io(trainer: pl.Trainer) -> None:
    """Make ``trainer`` read and write checkpoints through :class:`SafeCheckpointIO`.

    Replaces Lightning's default ``TorchCheckpointIO``, also inside a wrapper such as
    ``AsyncCheckpointIO``; a checkpoint IO of the user's own is kept, with a warning that the
    guarantees then depend on it.
    """
    strategy = trainer.strategy
    current = strategy.checkpoint_io  # Lightning fills in its default on first access
    if isinstance(current, SafeCheckpointIO):
        return
    if type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = SafeCheckpointIO()
        return
    wrapper = current
    while is_checkpoint_io_wrapper(wrapper):
        inner = wrapper.checkpoint_io
        if inner is None or type(inner) is TorchCheckpointIO:
            replace_wrapped_checkpoint_io(wrapper, SafeCheckpointIO())
            return
        if isinstance(inner, SafeCheckpointIO):
            return
        wrapper = inner
    rank_zero_warn(
        f"the trainer uses its own checkpoint IO ({type(wrapper).__name__}), so "
        "ClassifierModule does not install SafeCheckpointIO: whether checkpoints load "
        "without running code and save atomically depends on that IO"
    )
