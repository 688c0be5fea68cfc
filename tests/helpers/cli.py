"""Running the ``lit-classifiers`` command, in this process through its ``main``
(:func:`run_cli`, :func:`run_each`) or as a real subprocess (:func:`run`, :func:`start`) where the
process is the point, and reading what it wrote."""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SCRIPT = Path(sys.executable).with_name("lit-classifiers")
# Tiny digits run: 8x8 images, a few batches. Everything a real run writes, in seconds.
TINY = [
    "--model.backbone=resnet20",
    "--data=DigitsDataModule",
    "--data.image_size=8",
    "--data.batch_size=32",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("LIT_CLASSIFIERS_DEBUG", None)
    env.pop("LIT_CLASSIFIERS_RUN_VERSION", None)
    return {**env, **extra}


def run(
    *args: str | Path, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; with ``check``, fail the test with its stderr."""
    command = [str(a) for a in args]
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env=env or cli_env(), timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def start(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a command without waiting for it (``communicate()`` collects its output)."""
    return subprocess.Popen(
        [str(a) for a in args],
        cwd=cwd,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Case(typing.NamedTuple):
    """One command of :func:`run_each`: its arguments, folder and extra environment."""

    args: list[str]
    cwd: Path
    env: dict[str, str] = {}


#: The loggers Lightning gives a stderr handler of their own when it is imported outside pytest.
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _fresh_warning_filters(option: str) -> None:
    """The warning filters of a new interpreter started with ``PYTHONWARNINGS=option`` (its
    ``action[:message[:category]]`` entries) that has imported Lightning, printing to stderr
    (pytest records warnings instead)."""
    from lightning.fabric.utilities.warnings import LightningDeprecationWarning

    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category, append=True)
    for entry in filter(None, option.split(",")):
        action, message, category, *_ = [*entry.split(":"), "", "", ""]
        kind = getattr(builtins, category, None) if category else Warning
        warnings.filterwarnings(action, message, kind if isinstance(kind, type) else Warning)
    warnings.simplefilter("default", LightningDeprecationWarning)  # what ``import lightning`` adds
    warnings.showwarning = _show_warning


@contextlib.contextmanager
def _process_state(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """The working directory, environment, warning filters and Lightning's log handlers of a
    fresh ``lit-classifiers`` process for the duration of the block, restored afterwards."""
    environ, old_cwd = dict(os.environ), os.getcwd()
    loggers = [logging.getLogger(name) for name in ("", *_LIGHTNING_LOGGERS)]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with warnings.catch_warnings():
            _fresh_warning_filters(env.get("PYTHONWARNINGS", ""))
            # As in a new process: no handler on the root logger (pytest's own are there now),
            # so other loggers' warnings reach stderr through logging's last resort, and
            # Lightning's loggers with the stderr handler ``import lightning`` gives them.
            loggers[0].handlers = []
            for logger in loggers[1:]:
                logger.handlers = [logging.StreamHandler(sys.stderr)]
                logger.propagate = False
                logger.setLevel(logging.INFO)
            yield
    finally:
        for logger, (handlers, propagate, level) in zip(loggers, saved, strict=True):
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(environ)


def run_cli(
    *args: str | Path, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``lit-classifiers ARGS`` in this process, through ``lit_classifiers.cli.main`` (the
    function the console script calls), as :func:`run` runs it as a subprocess.

    A subprocess costs ~5 s of imports (torch, Lightning, torchvision) before the command does
    anything; use :func:`run` where the process itself is the point. The working directory,
    environment (``env``, default :func:`cli_env`), warning filters and Lightning's log handlers
    are those of a new process for the command and restored after it. Its stdout and stderr are
    captured both as Python streams and as file descriptors 1 and 2, so DataLoader workers and C
    code are captured too. The result has ``imported_this``: whether the command imported the
    module ``this`` (what hostile checkpoints try, to prove code ran).
    """
    from lit_classifiers.cli import main

    command = [str(a) for a in args]
    sys.modules.pop("this", None)
    with (
        tempfile.TemporaryFile(buffering=0) as out_file,
        tempfile.TemporaryFile(buffering=0) as err_file,
    ):
        saved_fds = (os.dup(1), os.dup(2))
        saved_streams = (sys.stdout, sys.stderr)
        out = io.TextIOWrapper(out_file, encoding="utf-8", errors="replace", write_through=True)
        err = io.TextIOWrapper(err_file, encoding="utf-8", errors="replace", write_through=True)
        os.dup2(out_file.fileno(), 1)
        os.dup2(err_file.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        try:
            with _process_state(cwd, env or cli_env()):
                try:
                    code = main(command)
                except SystemExit as exit:  # as the interpreter reports it
                    code = exit.code if isinstance(exit.code, int) else 0
                    if exit.code is not None and not isinstance(exit.code, int):
                        print(exit.code, file=sys.stderr)
                        code = 1
                except Exception:
                    traceback.print_exc()
                    code = 1
        finally:
            out.flush()
            err.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
        texts = []
        for handle in (out_file, err_file):
            handle.seek(0)
            texts.append(handle.read().decode("utf-8", errors="replace"))
        out.detach()
        err.detach()
    result = subprocess.CompletedProcess(["lit-classifiers", *command], code, *texts)
    result.imported_this = "this" in sys.modules  # type: ignore[attr-defined]
    if check and code != 0:
        raise AssertionError(f"{command} failed ({code}):\n{result.stderr[-3000:]}")
    return result


def run_each(
    cases: list[Case], scratch: Path | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``lit-classifiers`` commands one after another with :func:`run_cli` (in this
    process); each gets its own exit code, stdout, stderr and ``imported_this``."""
    return [
        run_cli(*case.args, cwd=case.cwd, check=False, env=cli_env(**case.env)) for case in cases
    ]


def assert_one_line_error(result: subprocess.CompletedProcess[str], pattern: str) -> str:
    """The command failed with exactly one ``error:`` line matching ``pattern``, no traceback."""
    assert result.returncode != 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if re.search(r"\berror:", line)]
    assert len(errors) == 1, result.stderr[-3000:]
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def hparams_trials(logdir: Path) -> dict[str, dict[str, float]]:
    """What TensorBoard's HParams tab lists for ``logdir``: each trial (a run folder with an
    HParams session) and its metric columns, computed by TensorBoard's own HParams backend."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb_context = base_plugin.TBContext(
        logdir=str(logdir), multiplexer=multiplexer, data_provider=provider
    )
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, allowed_statuses=list(api_pb2.Status.values())
    )
    response = list_session_groups.Handler(
        context.RequestContext(), backend_context.Context(tb_context), "", request
    ).run()
    return {
        session.name: {m.name.tag: m.value for m in session.metric_values}
        for group in response.session_groups
        for session in group.sessions
    }


def readme_quickstart() -> str:
    """The README's first shell block's training command, as written."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1)
    commands = [c.strip() for c in block.replace("\\\n", " ").split("&&")]
    (train,) = [c for c in commands if "lit-classifiers fit" in c]
    return train


def run_readme_quickstart(folder: Path) -> None:
    """Start :func:`readme_quickstart` in ``folder`` as a reader would (through bash, from a folder
    holding ``configs/`` and a ``.venv/bin`` that is this interpreter's, its output to a pipe and
    Python's warnings shown: ``PYTHONWARNINGS=default``) and, at the same moment, a TINY fit of
    the console script in the same folder: two fits of ``digits-resnet20`` started at once.
    Their ``returncode``, ``stdout`` and ``stderr`` are written beside what they trained
    (``runs/``), the second's as ``tiny.returncode`` and so on."""
    shutil.copytree(CONFIGS, folder / "configs")
    (folder / ".venv").mkdir()
    (folder / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    readme = start(
        "bash", "-c", readme_quickstart(), cwd=folder, env=cli_env(PYTHONWARNINGS="default")
    )
    tiny = start(SCRIPT, "fit", *TINY, cwd=folder)
    try:
        for process, prefix in ((readme, ""), (tiny, "tiny.")):
            stdout, stderr = process.communicate(timeout=300)
            (folder / f"{prefix}returncode").write_text(str(process.returncode))
            (folder / f"{prefix}stdout").write_text(stdout)
            (folder / f"{prefix}stderr").write_text(stderr)
    finally:
        for process in (readme, tiny):
            if process.poll() is None:  # still running after a timeout: end it
                process.kill()
                process.communicate()


def readme_quickstart_run_dir(folder: Path) -> Path:
    """The run folder of the README's command among those :func:`run_readme_quickstart` left:
    the one trained for the recipe's epochs."""
    recipe = yaml.safe_load((CONFIGS / "digits" / "resnet20.yaml").read_text())
    epochs = recipe["trainer"]["max_epochs"]
    (run_dir,) = [
        d
        for d in run_dirs(folder)
        if yaml.safe_load((d / "config.yaml").read_text())["trainer"]["max_epochs"] == epochs
    ]
    return run_dir


def run_dirs(cwd: Path, name: str = "digits-resnet20") -> list[Path]:
    return sorted((cwd / "runs" / name).glob("version_*"), key=lambda p: int(p.name[8:]))
