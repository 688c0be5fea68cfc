"""Downloading, checksumming and safe tar extraction for dataset archives.

Tar members are extracted one by one in streaming mode, never with ``extractall``: the
ImageNet train archive is 138 GB of nested tars, and streaming lets an inner tar be unpacked
straight from the outer one without landing on disk first. Every member is checked before a
byte is written: a name that is absolute or climbs out with ``..``, a link, or a device file is
refused (``ValueError`` naming the archive and the member). Dataset archives contain only
regular files and folders, so refusing everything else costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm.auto import tqdm

__all__ = ["download_url", "extract_tar", "md5sum", "offline_hint", "safe_member_path"]

_CHUNK = 1 << 20


def md5sum(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(url: str, dest: str | Path, md5: str | None = None, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` with a progress bar and an optional md5 check.

    The data goes to ``dest + '.part'`` first and is renamed only once complete and verified,
    so an interrupted download never looks like a finished archive.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
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


class _ProgressReader:
    """A read-only file wrapper that advances a progress bar by the bytes read through it."""

    def __init__(self, raw: IO[bytes], bar: tqdm) -> None:
        self._raw = raw
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._bar.update(len(data))
        return data


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
    ``source`` is a path.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    name = archive_name or (str(source) if isinstance(source, (str, Path)) else "<stream>")
    bar = None
    raw: IO[bytes] | None = None
    try:
        if isinstance(source, (str, Path)):
            raw = open(source, "rb")  # noqa: SIM115 - closed in finally
            if desc is not None:
                bar = tqdm(total=os.path.getsize(source), unit="B", unit_scale=True, desc=desc)
                fileobj: IO[bytes] = _ProgressReader(raw, bar)  # type: ignore[assignment]
            else:
                fileobj = raw
        else:
            fileobj = source
        written = 0
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                safe_member_path(dest, member.name, name)
                if member.isdir():
                    continue  # folders are created on demand for the files inside them
                if not member.isfile():
                    kind = "link" if (member.issym() or member.islnk()) else "special file"
                    raise ValueError(
                        f"refusing to extract {name}: member {member.name!r} is a {kind}; "
                        "dataset archives should contain only regular files"
                    )
                if on_member is not None and on_member(tar, member):
                    written += 1
                    continue
                relative = rename(member.name) if rename is not None else member.name
                target = safe_member_path(dest, relative, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # regular files always have a payload
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                written += 1
        return written
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
