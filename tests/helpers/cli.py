"""Running the ``lit-classifiers`` command for real, as a subprocess, and reading what it wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

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
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **extra}
    env.pop("LIT_CLASSIFIERS_DEBUG", None)
    env.pop("LIT_CLASSIFIERS_RUN_VERSION", None)
    return env


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


# Runs each case through lit_classifiers.cli.main, the console script's function, with the
# process's own stdout and stderr (file descriptors 1 and 2, so DataLoader workers and C code
# are captured too) sent to that case's files; the environment, working directory and warning
# filters are restored after each case.
_EACH_DRIVER = r"""
import json, os, sys, warnings
cases = json.loads(sys.argv[1])
from lit_classifiers.cli import main
for case in cases:
    environ, cwd, saved = dict(os.environ), os.getcwd(), (os.dup(1), os.dup(2))
    os.environ.update(case["env"])
    os.chdir(case["cwd"])
    with open(case["out"], "wb") as out, open(case["err"], "wb") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            with warnings.catch_warnings():
                try:
                    code = main(case["args"])
                except SystemExit as exit:
                    code = exit.code if isinstance(exit.code, int) else 1
                except BaseException as error:
                    import traceback
                    traceback.print_exc()
                    code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    with open(case["rc"], "w") as handle:
        handle.write(f"{code} {int('this' in sys.modules)}")
"""


class Case(typing.NamedTuple):
    """One command of :func:`run_each`: its arguments, folder and extra environment."""

    args: list[str]
    cwd: Path
    env: dict[str, str] = {}


def run_each(cases: list[Case], scratch: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``lit-classifiers`` commands one after another in ONE new Python process.

    Each subprocess of its own costs ~5 s of imports (torch, Lightning, torchvision) before the
    command does anything; commands that end early (the mistakes) are run this way instead. Each
    command runs through ``lit_classifiers.cli.main``, the function the console script calls, and
    gets its own exit code, stdout and stderr, and ``imported_this``: whether the module ``this``
    had been imported by the end of it (what hostile checkpoints try, to prove code ran).
    """
    scratch.mkdir(parents=True, exist_ok=True)
    specs = []
    for k, case in enumerate(cases):
        files = {key: str(scratch / f"case{k}.{key}") for key in ("out", "err", "rc")}
        specs.append(
            {"args": list(map(str, case.args)), "cwd": str(case.cwd), "env": case.env, **files}
        )
    driver = subprocess.run(
        [sys.executable, "-c", _EACH_DRIVER, json.dumps(specs)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    results = []
    for case, spec in zip(cases, specs, strict=True):
        if not Path(spec["rc"]).is_file():
            raise AssertionError(f"the driver stopped before {case.args}:\n{driver.stderr[-3000:]}")
        code, imported_this = Path(spec["rc"]).read_text().split()
        result = subprocess.CompletedProcess(
            list(map(str, case.args)),
            int(code),
            Path(spec["out"]).read_text(errors="replace"),
            Path(spec["err"]).read_text(errors="replace"),
        )
        result.imported_this = bool(int(imported_this))  # type: ignore[attr-defined]
        results.append(result)
    return results


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


def run_dirs(cwd: Path, name: str = "digits-resnet20") -> list[Path]:
    return sorted((cwd / "runs" / name).glob("version_*"), key=lambda p: int(p.name[8:]))
