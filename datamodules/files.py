"""Finding image files in folder trees, with an on-disk index cache.

Listing ImageNet's 1.28M training files takes seconds on a local SSD and minutes on network
storage, on every run and on every DDP rank. The listing is therefore cached, and the cache is
trusted only while the folders are unchanged. "Unchanged" is judged from the folders, never from
the files: adding, removing or renaming a file changes the mtime of the folder holding it, so the
cache records every folder's mtime plus the number of entries at the top. Checking that costs
one ``stat`` per folder (about a thousand for ImageNet) instead of a million directory entries.

The cache lives in the user's cache folder (:func:`user_cache_dir`), keyed by the folder's
resolved path, never in the dataset folder: data folders are often read-only or shared. A cache
is input too (a hostile one may be planted where it is read): one that lists a path leaving its
folder (``..``, an absolute path, a hidden component) is ignored and the folder listed again.

A folder modified within a couple of seconds of the scan is not trusted (file systems with
coarse timestamps could hide a later change behind an unchanged mtime; git's index has the same
"racy" rule), so such a cache is rebuilt on the next run, after which it is stable.

Paths are kept in one NumPy bytes array rather than a list of ``str``: DataLoader workers fork
the dataset, and touching a million Python objects (refcounts) would copy their memory pages into
every worker.

File names are bytes on Linux and need not be valid UTF-8. Paths keep their exact bytes (as bytes,
or as ``os.fsdecode`` strings with surrogate escapes, which ``open`` turns back into the same
bytes). Anything shown to people or stored as text (class names, error messages, CSV cells)
goes through :func:`display_name` instead, because a string holding surrogate escapes cannot be
encoded as UTF-8 and crashes whatever writes it (matplotlib, YAML, TensorBoard, a CSV file).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageIndex",
    "class_tree_samples",
    "default_cache_dirs",
    "display_name",
    "index_images",
    "is_image_file",
    "list_class_dirs",
    "user_cache_dir",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)
_CACHE_VERSION = 1
#: Overrides where lit-classifiers keeps its caches (default: see :func:`user_cache_dir`).
CACHE_ENV = "LIT_CLASSIFIERS_CACHE"
# Folder mtimes this close to the scan are ambiguous on file systems with coarse timestamps.
_RACY_NS = 2_000_000_000


def display_name(name: str | bytes) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 become ``\\xNN`` escapes.

    ``b"caf\\xe9"`` and its ``os.fsdecode`` form ``"caf\\udce9"`` both give ``"caf\\\\xe9"``
    (the four characters ``\\xe9``), i.e. UTF-8 decoding with ``backslashreplace``. Valid text is
    returned unchanged. Not reversible in general (a name may literally contain ``\\xe9``); use it
    for what people read, never to find the file again.
    """
    if isinstance(name, str):
        try:
            name = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that stands for no byte (not from fsdecode)
            return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name.decode("utf-8", "backslashreplace")


def is_image_file(name: str) -> bool:
    """Image extension, case-insensitively; hidden files (macOS ``._x.jpg`` debris) excluded."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class ImageIndex:
    """The image files under ``root``: sorted, ``/``-separated relative paths as bytes."""

    root: Path
    paths: np.ndarray
    from_cache: bool

    def __len__(self) -> int:
        return len(self.paths)


def list_class_dirs(root: str | Path) -> list[str]:
    """Sorted names of the (non-hidden) sub-folders of ``root``: the class list of a class tree."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"expected a folder of class sub-folders at {display_name(os.fspath(root))}"
        )
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def _count_entries(root: Path) -> int:
    with os.scandir(root) as entries:
        return sum(1 for e in entries if not e.name.startswith("."))


def _scan(root: Path) -> tuple[np.ndarray, list[str], list[int], int]:
    """Walk ``root`` (following folder links, once each) and list its image files."""
    files: list[bytes] = []
    dirs: list[str] = []
    mtimes: list[int] = []
    seen: set[tuple[int, int]] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else os.fspath(root)
        # stat before listing: a file added during the listing then leaves a newer mtime behind
        st = os.stat(path)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.append(rel)
        mtimes.append(st.st_mtime_ns)
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                child = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir():
                    stack.append(child)
                elif is_image_file(entry.name) and entry.is_file():
                    files.append(os.fsencode(child))
    paths = np.sort(np.array(files, dtype=np.bytes_)) if files else np.array([], dtype="S1")
    return paths, dirs, mtimes, _count_entries(root)


def user_cache_dir() -> Path:
    """``$LIT_CLASSIFIERS_CACHE``, else ``$XDG_CACHE_HOME/lit_classifiers``, else
    ``~/.cache/lit_classifiers``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lit_classifiers"


def default_cache_dirs() -> list[Path]:
    """Where index caches go by default: the user's cache folder, never the dataset's."""
    return [user_cache_dir() / "index"]


def _cache_file(cache_dir: Path, root: Path) -> Path:
    key = hashlib.sha1(os.fsencode(root), usedforsecurity=False).hexdigest()[:20]
    return cache_dir / f"index-{key}.npz"


def _inside(paths: np.ndarray) -> bool:
    """Whether every path is a sorted, relative ``a/b/c`` path of non-hidden components: no
    ``..``, ``.``, empty or absolute component can take a read outside the folder."""
    if paths.dtype.kind != "S":
        return False
    if len(paths) == 0:
        return True
    slashed = np.strings.add(b"/", paths)
    leaves = (
        (np.strings.find(slashed, b"/.") >= 0)
        | (np.strings.find(slashed, b"//") >= 0)
        | np.strings.endswith(slashed, b"/")
    )
    return not leaves.any() and bool(np.all(paths[1:] > paths[:-1]))


def _load_cache(file: Path, root: Path) -> np.ndarray | None:
    try:
        with np.load(file, allow_pickle=False) as z:
            if int(z["version"]) != _CACHE_VERSION or str(z["root"]) != os.fspath(root):
                return None
            dirs = np.array([os.fsencode(d) for d in z["dirs"].tolist() if d], dtype=np.bytes_)
            if not _inside(z["paths"]) or not _inside(np.sort(dirs)):
                return None  # planted or damaged: list the folder again
            started = int(z["scan_started_ns"])
            if int(z["root_count"]) != _count_entries(root):
                return None
            for rel, mtime in zip(z["dirs"].tolist(), z["dir_mtimes"].tolist(), strict=True):
                if mtime >= started - _RACY_NS:
                    return None
                if os.stat(os.path.join(root, rel) if rel else root).st_mtime_ns != mtime:
                    return None
            return z["paths"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # missing, unreadable, half-written by an old version: rebuild


def _save_cache(file: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a temp file in the same folder, fsync, then ``os.replace``."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def index_images(root: str | Path, cache_dirs: list[Path] | None = None) -> ImageIndex:
    """List the images under ``root``, from the cache when the folders are unchanged.

    ``cache_dirs`` are tried in order for reading and writing; an unwritable one is skipped.
    ``None`` or ``[]`` disables caching. A cache listing a path outside ``root`` is ignored.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"expected an image folder at {display_name(os.fspath(root))}")
    for cache_dir in cache_dirs or []:
        paths = _load_cache(_cache_file(cache_dir, root), root)
        if paths is not None:
            return ImageIndex(root, paths, from_cache=True)

    started = time.time_ns()
    paths, dirs, mtimes, count = _scan(root)
    arrays = {
        "version": np.array(_CACHE_VERSION),
        "root": np.array(os.fspath(root)),
        "paths": paths,
        "dirs": np.array(dirs, dtype=np.str_) if dirs else np.array([], dtype="U1"),
        "dir_mtimes": np.array(mtimes, dtype=np.int64),
        "root_count": np.array(count),
        "scan_started_ns": np.array(started),
    }
    for cache_dir in cache_dirs or []:
        try:
            _save_cache(_cache_file(cache_dir, root), arrays)
            break
        except OSError:
            continue
    return ImageIndex(root, paths, from_cache=False)


def class_tree_samples(
    index: ImageIndex, class_dirs: list[str], split: str
) -> tuple[np.ndarray, np.ndarray]:
    """(paths, labels) of a ``<class>/...`` tree, label = position of the class in ``class_dirs``.

    Paths are sorted bytewise, so each class is one contiguous run, found by binary search.
    Files directly in the root (outside any class folder) are ignored, as torchvision does.
    An empty class folder is an error: the class could never be learned or evaluated.
    """
    chunks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    empty: list[str] = []
    for label, name in enumerate(class_dirs):
        prefix = os.fsencode(name) + b"/"
        start = np.searchsorted(index.paths, prefix, side="left")
        stop = np.searchsorted(index.paths, prefix + b"\xff", side="left")
        if stop == start:
            empty.append(name)
        chunks.append(index.paths[start:stop])
        labels.append(np.full(stop - start, label, dtype=np.int64))
    if empty:
        shown = ", ".join(display_name(os.fspath(index.root / e)) for e in empty[:5])
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise ValueError(
            f"{split}: class folder(s) with no image files: {shown}{more} (expected files with "
            f"one of the extensions {sorted(IMAGE_EXTENSIONS)}); remove the folder(s) or add images"
        )
    if not chunks:
        raise ValueError(f"{split}: no class folders in {display_name(os.fspath(index.root))}")
    return np.concatenate(chunks), np.concatenate(labels)
