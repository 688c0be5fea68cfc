"""Downloading, checksumming and safe tar extraction for dataset archives.

Tar members are extracted one by one in streaming mode, never with ``extractall``: the
ImageNet train archive is 138 GB of nested tars, and streaming lets an inner tar be unpacked
straight from the outer one without landing on disk first. Every member is checked before a
byte is written: a name that is absolute or climbs out with ``..``, a link, or a device file is
refused (``ValueError`` naming the archive and the member). Dataset archives contain only
regular files and folders, so refusing everything else costs nothing. A damaged archive (empty,
truncated, not a tar) is reported as one ``ValueError`` naming it, never as a bare
``tarfile``/``EOFError`` traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm.auto import tqdm

__all__ = [
    "download_url",
    "extract_tar",
    "md5sum",
    "offline_hint",
    "safe_folder_name",
    "safe_member_path",
    "verify_md5",
]

_CHUNK = 1 << 20


# What a broken compressed or tar stream raises; all of them mean "this archive is damaged".
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
_DRIVE = re.compile(r"^[A-Za-z]:")


def md5sum(path: str | Path, desc: str | None = None) -> str:
    """The md5 of a file, read in chunks; with ``desc``, a progress bar over its bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with (
        open(path, "rb") as f,
        tqdm(
            total=os.path.getsize(path),
            unit="B",
            unit_scale=True,
            desc=desc,
            disable=desc is None,
        ) as bar,
    ):
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.md5-verified")


def _stamp_key(path: Path, md5: str) -> dict[str, object]:
    stat = path.stat()
    return {"md5": md5, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def verify_md5(path: str | Path, expected: str, *, what: str, remedy: str) -> None:
    """Check that ``path`` has md5 ``expected`` or raise a ``ValueError`` saying ``remedy``.

    Hashing the 138 GB ImageNet train archive takes minutes, so a success is remembered in a
    hidden stamp file next to the archive (``.<name>.md5-verified``) keyed by the file's size
    and modification time: a later call trusts the stamp while both are unchanged, and hashes
    again after the file is replaced or touched. Where the folder is read-only, nothing is
    remembered and the next call hashes again.
    """
    path = Path(path)
    stamp = _stamp_path(path)
    key = _stamp_key(path, expected)
    try:
        if json.loads(stamp.read_text()) == key:
            return
    except (OSError, ValueError):
        pass  # no stamp, or an unreadable one: hash
    actual = md5sum(path, desc=f"Checking md5 of {path.name}")
    if actual != expected:
        raise ValueError(
            f"{path.name} ({path}) has md5 {actual}, expected {expected} ({what}): it is "
            f"truncated, damaged or not the official file; {remedy}"
        )
    if _stamp_key(path, expected) != key:
        return  # the file changed while it was hashed; what was hashed may not be on disk
    tmp = None
    try:  # a fresh, exclusively created name: a link planted beside the archive is not followed
        fd, tmp = tempfile.mkstemp(dir=stamp.parent, prefix=f"{stamp.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(key))
        os.replace(tmp, stamp)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def download_url(url: str, dest: str | Path, md5: str | None = None, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` with a progress bar and an optional md5 check.

    The data goes to a fresh ``dest.<random>.part`` file first and is renamed only once
    complete and verified, so an interrupted download never looks like a finished archive.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f"{dest.name}.", suffix=".part")
    part = Path(name)  # a fresh name, created exclusively: a planted link is never written through
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"Downloading {dest.name}"
            ) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if md5 is not None:
        actual = md5sum(part)
        if actual != md5:
            part.unlink(missing_ok=True)
            raise ValueError(
                f"downloaded {url} has md5 {actual}, expected {md5}; the download was corrupted "
                f"or the file changed upstream (deleted the partial file {part})"
            )
    os.replace(part, dest)
    return dest


def safe_member_path(dest: Path, name: str, archive: str) -> Path:
    """Where ``name`` lands under ``dest``, or a ``ValueError`` if it would land anywhere else."""
    pure = PurePosixPath(name.replace("\\", "/"))
    drive = bool(pure.parts) and re.match(r"^[A-Za-z]:", pure.parts[0]) is not None
    if pure.is_absolute() or ".." in pure.parts or drive:
        raise ValueError(
            f"refusing to extract {archive}: member {name!r} would land outside {dest}"
        )
    target = dest.joinpath(*pure.parts) if pure.parts else dest
    root = dest.resolve()
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(
            f"refusing to extract {archive}: member {name!r} would land outside {dest}"
        )
    return target


def safe_folder_name(name: str, archive: str, what: str) -> str:
    """``name`` if it is one ordinary folder name, else a ``ValueError`` naming ``archive``.

    For folder names derived from archive content (a class folder from an inner tar's stem, a
    wnid from a label file): ``..``, ``.``, an empty name, a separator (``/`` or ``\\``), a
    drive letter or a NUL byte would put files somewhere other than one folder below the
    extraction root.
    """
    if (
        name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or _DRIVE.match(name) is not None
    ):
        raise ValueError(
            f"refusing to extract {archive}: {what} gives the folder name {name!r}; expected a "
            "single plain folder name (not empty, '.', '..', or containing '/', '\\' or a "
            "drive letter)"
        )
    return name


class _ProgressReader:
    """A read-only file wrapper that advances a progress bar by the bytes read through it."""

    def __init__(self, raw: IO[bytes], bar: tqdm) -> None:
        self._raw = raw
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._bar.update(len(data))
        return data


def _damaged(archive: str, err: BaseException, started: bool) -> ValueError:
    """The one-line error for an archive that cannot be read to its end."""
    detail = str(err) or type(err).__name__
    if not started:
        what = f"it is not a readable tar archive ({detail})"
    elif isinstance(err, EOFError) or "unexpected end" in detail or "truncated" in detail:
        what = f"it ends early ({detail}), so it is truncated"
    else:
        what = f"it is damaged part-way through ({detail})"
    return ValueError(
        f"cannot extract {archive}: {what}; expected a complete tar archive (an interrupted "
        "download or copy leaves a short file: get it again)"
    )


def extract_tar(
    source: str | Path | IO[bytes],
    dest: str | Path,
    *,
    rename: Callable[[str], str] | None = None,
    on_member: Callable[[tarfile.TarFile, tarfile.TarInfo], bool] | None = None,
    desc: str | None = None,
    archive_name: str | None = None,
) -> int:
    """Stream-extract a (possibly compressed) tar into ``dest``; returns the files written.

    ``rename`` maps a member name to its path relative to ``dest`` (the ImageNet val archive
    uses it to sort flat files into class folders in one pass); both the original and the new
    name are checked. ``on_member`` may handle a regular-file member itself and return True
    (nested tars). A progress bar over the archive's bytes is shown when ``desc`` is given and
    ``source`` is a path. ``archive_name`` is how errors name the archive (default for a path:
    ``<file name> (<path>)``). An empty, truncated or non-tar archive raises one ``ValueError``
    naming it; what was written to ``dest`` before that is left for the caller to discard.
    """
    dest = Path(dest)
    path = Path(source) if isinstance(source, (str, Path)) else None
    if archive_name is not None:
        name = archive_name
    else:
        name = f"{path.name} ({path})" if path is not None else "<stream>"
    if path is not None and path.stat().st_size == 0:
        raise ValueError(
            f"cannot extract {name}: the file is empty (0 bytes); expected a tar archive (an "
            "interrupted download or copy leaves an empty file: get it again)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    bar = None
    raw: IO[bytes] | None = None
    started = False
    try:
        fileobj: IO[bytes]
        if path is not None:
            raw = open(path, "rb")  # noqa: SIM115 - closed in finally
            fileobj = raw
            if desc is not None:
                bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=desc)
                fileobj = _ProgressReader(raw, bar)  # type: ignore[assignment]
        else:
            fileobj = source  # type: ignore[assignment]
        written = 0
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            started = True
            for member in tar:
                target = safe_member_path(dest, member.name, name)
                if member.isdir():
                    continue  # folders are created on demand for the files inside them
                if not member.isfile():
                    kind = "link" if (member.issym() or member.islnk()) else "special file"
                    raise ValueError(
                        f"refusing to extract {name}: member {member.name!r} is a {kind}; "
                        "dataset archives should contain only regular files"
                    )
                if target == dest:
                    raise ValueError(
                        f"cannot extract {name}: the file member {member.name!r} names the "
                        "extraction folder itself; expected a file name such as <folder>/<file>"
                    )
                if on_member is not None and on_member(tar, member):
                    written += 1
                    continue
                if rename is not None:
                    relative = rename(member.name)
                    target = safe_member_path(dest, relative, name)
                    if target == dest:
                        raise ValueError(
                            f"cannot extract {name}: member {member.name!r} is renamed to "
                            f"{relative!r}, the extraction folder itself; expected <folder>/<file>"
                        )
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # regular files always have a payload
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                written += 1
            # In stream mode tarfile takes an archive cut off exactly at a header boundary for a
            # complete one; only a complete one has the end-of-archive block after the last
            # header it read.
            if tar.fileobj.tell() < tar.offset + tarfile.BLOCKSIZE:
                raise tarfile.ReadError("unexpected end of data: no end-of-archive marker")
        return written
    except _DAMAGED as err:
        raise _damaged(name, err, started) from err
    finally:
        if bar is not None:
            bar.close()
        if raw is not None:
            raw.close()


def offline_hint(url: str, archive: Path, extracted: Path) -> str:
    """The message telling a user without network access how to provide the data by hand."""
    return (
        f"download it from {url} on a machine with internet access and put the archive at "
        f"{archive} (it is checked and extracted on the next run), or extract it yourself so "
        f"that {extracted} exists"
    )
