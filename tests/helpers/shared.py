"""Work that tests in several modules read, done once per test session, also under pytest-xdist:
the first worker to ask does it (another that asks meanwhile waits for it), later asks read what
it left. What the work leaves is read, not changed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock


def once_per_session(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]
) -> Path:
    """The folder ``make(folder)`` filled, once per session. The xdist workers' temporary folders
    (``pytest-N/popen-gwK``) share their parent, which holds the folder and its lock. A ``make``
    that raised leaves no mark of completion: the next ask does it again (and fails again)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / f"once-{name}"
    done = folder / ".done"
    with FileLock(base / f"once-{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder
