"""Shared pytest settings and fixtures. Helper functions (tiny datasets in their on-disk formats,
tiny networks, running the CLI) live in the ``helpers`` package beside this file."""

import atexit
import functools
import gc
import http.server
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# One compute thread per test process under pytest-xdist (and for the subprocesses tests start):
# with two workers on two cores, two threads each would oversubscribe the cores, and OpenMP's
# spinning threads then slow every test down several-fold. torch is imported here only in the
# workers: the xdist controller runs no test and would spend ~1.7 s of CPU importing it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")

# Index caches go to the user's cache folder by default: the tests' go to a folder of their own,
# removed at exit, never into the home of whoever runs them.
if "LIT_CLASSIFIERS_CACHE" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="lit-classifiers-test-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["LIT_CLASSIFIERS_CACHE"] = _cache


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working folder of one short CLI ``fit`` on the digits, whose run is
    ``runs/digits-resnet20/version_0``: once per session, also under xdist (see
    ``helpers.shared``). Shared by the tests: read it, do not change it.
    """
    from helpers.cli import TINY, run_cli
    from helpers.shared import once_per_session

    return once_per_session(
        tmp_path_factory, "fitted-run", lambda cwd: run_cli("fit", *TINY, cwd=cwd)
    )


@pytest.fixture(scope="session")
def readme_quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where the README's quick start command ran as written, beside a TINY fit
    started at the same moment (see ``helpers.cli.run_readme_quickstart``): once per session,
    also under xdist, for test_cli.py (what the README's command trained), test_run_output.py
    (what it printed to a pipe) and test_cli_hostile.py (the two fits' run folders). Read it,
    do not change it."""
    from helpers.cli import run_readme_quickstart
    from helpers.shared import once_per_session

    return once_per_session(tmp_path_factory, "readme-quickstart", run_readme_quickstart)


@pytest.fixture(scope="session")
def fresh_interpreter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the one fresh interpreter that checks what a new process imports or warns,
    for five modules (see ``helpers.fresh``): once per session, also under xdist. Read it, do
    not change it."""
    from helpers.fresh import run_fresh_interpreter
    from helpers.shared import once_per_session

    return once_per_session(tmp_path_factory, "fresh-interpreter", run_fresh_interpreter)


@pytest.fixture(scope="session")
def two_rank_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the one two-rank DDP launch of test_module_ddp.py, test_eval_protocols.py,
    test_streaming.py and test_sampling.py (see ``helpers.ddp``): once per session, also under
    xdist. Read it, do not change it."""
    from helpers.ddp import run_two_rank_job
    from helpers.shared import once_per_session

    return once_per_session(tmp_path_factory, "two-rank-job", run_two_rank_job)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; each request (method and path) is a line of ``requests.log`` beside it."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        with open(Path(self.directory).parent / "requests.log", "a") as log:
            log.write(f"{self.command} {self.path}\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder and the loopback URL it is served at; stopped at the end of the test. The
    requests it answered are listed in ``requests.log`` beside the folder."""
    folder = tmp_path / "www"
    folder.mkdir()

    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.hookimpl(tryfirst=True)
def pytest_warning_recorded(warning_message: warnings.WarningMessage) -> None:
    """Under xdist a worker sends each warning it recorded to the controller, which rebuilds the
    warning's class by importing its module to list it in the summary: Lightning's and torch's
    warning classes would have the controller import both (~4 s of CPU in a process that runs
    no test). A worker hands such a warning on as its builtin base class instead, the text
    prefixed with the class's full name, before xdist sends it."""
    category = warning_message.category
    if not os.environ.get("PYTEST_XDIST_WORKER") or category.__module__ == "builtins":
        return
    base = next(c for c in category.__mro__ if c.__module__ == "builtins")
    name = f"{category.__module__}.{category.__qualname__}"
    warning_message.message = base(f"{name}: {warning_message.message}")
    warning_message.category = base


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported (torch, Lightning, jsonargparse, the test modules: ~650k objects)
    lives as long as the process: frozen out of the collector's sight, each full collection
    during the tests scans only what the tests made. The youngest generation is collected every
    10,000 allocations instead of 700: the tests allocate millions of short-lived objects (CLI
    parsers, Trainers), and collections of the young ones each cost a few ms. Garbage
    collection takes ~5 s of the fast tier's CPU instead of ~9 s."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules holding ``slow`` tests run first, each module's tests kept together.

    Under ``pytest -n 2`` the longest tests (a notebook, torchrun, concurrent fits: up to 45 s)
    would otherwise start last, in file order, and leave one worker idle while the other
    finishes them; started first, the short ones fill in around them. Kept together, a
    module's fixtures are set up once per worker, as before.
    """
    slow_modules = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow_modules)  # stable: file order kept
