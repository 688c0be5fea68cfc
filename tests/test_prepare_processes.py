"""Preparation in other processes: a wait on another process's ImageNet lock is announced, and
the conversion processes of ``prepare`` stop when ``prepare`` is killed with ``kill -9``."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock
from helpers.data import jpeg_bytes, make_archives, write
from helpers.fresh import read_report

from datamodules import ImageNetDataModule
from datamodules.imagenet import PREPARE_LOCK

THIS = Path(__file__).resolve()


def test_a_wait_on_another_process_s_prepare_lock_is_announced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = make_archives(tmp_path / "imagenet")
    data_module = ImageNetDataModule(
        str(root), num_workers=0, verify_archives=False, cache_dir=str(tmp_path / "cache")
    )
    said: list[str] = []

    def heard(text: str) -> bool:
        said.append(capsys.readouterr().err)
        return text in "".join(said)

    holder = FileLock(root / PREPARE_LOCK)  # another node unpacking the archives
    holder.acquire()
    preparing = threading.Thread(target=data_module.prepare_data)
    try:
        preparing.start()
        deadline = time.monotonic() + 30
        while not heard("waiting for") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (root / "train").exists()  # it waited
    finally:
        holder.release()
        preparing.join(120)
    heard("")
    message = "".join(said)
    assert message.count("waiting for") == 1, message
    assert f"waiting for {root / PREPARE_LOCK}: another process is unpacking" in message
    assert (root / "train").is_dir()  # and then prepared


# slow: a fresh interpreter: which modules it imported is the point (one for the checks of five
# modules, helpers/fresh.py)
@pytest.mark.slow
def test_prepare_never_imports_the_model_package(fresh_interpreter: Path) -> None:
    """The data side stands alone: the version written into dataset.json is the installed
    package's, read from its metadata, not ``lit_classifiers.__version__``."""
    pytest.importorskip("litdata")
    report = read_report(fresh_interpreter)["prepare"]
    assert "error" not in report, report.get("error")
    assert report["model_modules"] == []
    written = json.loads((fresh_interpreter / "lit" / "dataset.json").read_text())["written_by"]
    assert written["lit_classifiers"] == importlib.metadata.version("lit-classifiers")


# ------------------------------------------------------------------------------------ kill -9
def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    return [
        pid for pid, (_, group, state) in _process_table().items() if group == pgid and state != "Z"
    ]


# slow: kill -9 of a real process and its conversion processes
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_conversion_processes_stop_with_a_killed_prepare(tmp_path: Path) -> None:
    pytest.importorskip("litdata")
    for k in range(40):
        write(tmp_path / "photos" / "train" / f"c{k % 2}" / f"{k}.jpg", jpeg_bytes(size=(8, 8)))
    env = {
        **os.environ,
        "LIT_CLASSIFIERS_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(THIS.parents[1]),  # this checkout's datamodules
    }
    prepare = subprocess.Popen(
        [
            sys.executable,
            str(THIS),
            "slow-prepare",
            str(tmp_path / "photos"),
            str(tmp_path / "lit"),
        ],
        env=env,
        cwd=THIS.parent,
    )
    job = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and prepare.poll() is None:
            children = [p for p, (ppid, *_) in _process_table().items() if ppid == prepare.pid]
            job = children[0] if children else None
            if job is not None and len(_group(job)) >= 3:  # the job and its two writers
                break
            time.sleep(0.1)
        assert job is not None and len(_group(job)) >= 3, "the conversion never started"
        prepare.send_signal(signal.SIGKILL)
        prepare.wait()
        deadline = time.monotonic() + 8  # the conversion itself would take 20 s more
        while _group(job) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _group(job) == []
    finally:
        if prepare.poll() is None:
            prepare.kill()
            prepare.wait()
        if job is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job, signal.SIGKILL)


def _slow_prepare(data: str, out: str) -> None:
    """``prepare`` of an image folder, each sample taking a second: a conversion that is still
    running when the test kills it."""
    from datamodules import ImageFolderDataModule
    from datamodules import prepare as prepare_module

    read = prepare_module.FileSamples.__call__

    def slowly(self: object, index: int) -> object:
        time.sleep(1.0)
        return read(self, index)  # type: ignore[arg-type]

    prepare_module.FileSamples.__call__ = slowly  # type: ignore[method-assign]
    source = ImageFolderDataModule(data, num_workers=0, val_split=2)
    prepare_module.convert_datamodule(source, out, num_workers=2, progress=False)


if __name__ == "__main__":
    if sys.argv[1] == "slow-prepare":
        _slow_prepare(sys.argv[2], sys.argv[3])
