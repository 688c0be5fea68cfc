"""One two-rank DDP launch for the tests that hold evaluation on two gloo processes to one process.

Each part is a test module's: ``ddp_prepare(folder)`` writes its inputs into its own folder in the
pytest process and returns the arguments of ``ddp_main(*args)``, which runs in each rank and
writes ``rank{0,1}.json`` beside them; the test reads those and compares them with what it
computes in one process. The parts run one after the other in the same two processes, each with
Trainers of its own (Lightning launches rank 1 once, for the first; later ones find
``LOCAL_RANK`` set and the process group up). A launch costs two new interpreters (~10 s of
imports): one launch for four tests instead of one each.

Run by the session fixture ``two_rank_job`` (conftest.py), once per session, also under xdist;
this file is also the script the ranks run (Lightning starts rank 1 by running it again with
the same arguments).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Part -> the test module that holds its ``ddp_prepare`` and ``ddp_main``.
PARTS = {
    "module": "test_module_ddp",
    "protocols": "test_eval_protocols",
    "streaming": "test_streaming",
    "sampling": "test_sampling",
}
THIS = Path(__file__).resolve()
TESTS = THIS.parents[1]


def run_two_rank_job(folder: Path, timeout: int = 300) -> None:
    """Prepare every part whose module imports here (a module that skips itself, as
    test_streaming.py does without litdata, has no part), then run them all in one launch;
    its ``returncode``, ``stdout`` and ``stderr`` are written into ``folder``."""
    import pytest

    parts: dict[str, list[str]] = {}
    for part, module_name in PARTS.items():
        try:
            module = importlib.import_module(module_name)
        except pytest.skip.Exception:
            continue
        (folder / part).mkdir()
        parts[part] = [module_name, *map(str, module.ddp_prepare(folder / part))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)  # a test run under a launcher must not make this rank 1
    result = subprocess.run(
        [sys.executable, str(THIS), json.dumps(parts)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    (folder / "returncode").write_text(str(result.returncode))
    (folder / "stdout").write_text(result.stdout)
    (folder / "stderr").write_text(result.stderr)


def read_ranks(job: Path, part: str) -> list[Any]:
    """What each rank of ``part`` wrote; fails with the launch's output if it did not finish."""
    output = (job / "stdout").read_text()[-3000:] + (job / "stderr").read_text()[-5000:]
    assert (job / "returncode").read_text() == "0", output
    return [json.loads((job / part / f"rank{rank}.json").read_text()) for rank in (0, 1)]


if __name__ == "__main__":
    sys.path[0] = str(TESTS)  # the test modules and helpers, as pytest imports them
    import torch

    torch.set_num_threads(1)
    for module_name, *args in json.loads(sys.argv[1]).values():
        importlib.import_module(module_name).ddp_main(*args)
