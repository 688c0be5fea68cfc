"""Where a run writes: one folder ``runs/<data>-<backbone>/version_N`` per run, for all its
loggers, claimed atomically, shared with the other ranks of a distributed run, and the run's
config saved beside its logs without overwriting an earlier one."""

from __future__ import annotations

import csv
import inspect
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger

#: Passes the run folder the launching process claimed to the processes Lightning starts for
#: the other DDP ranks (they inherit the environment), so all ranks log to the same folder.
RUN_VERSION_ENV = "LIT_CLASSIFIERS_RUN_VERSION"
_RANK_VARIABLES = (
    "RANK",  # torchrun
    "LOCAL_RANK",  # torchrun, Lightning's own launcher
    "NODE_RANK",
    "GROUP_RANK",
    "SLURM_PROCID",  # SLURM
    "JSM_NAMESPACE_RANK",  # LSF (jsrun)
    "OMPI_COMM_WORLD_RANK",  # Open MPI
    "PMI_RANK",  # MPICH, Intel MPI
)
_VERSION_FOLDER = re.compile(r"version_(\d+)")


class RunConfigCallback(SaveConfigCallback):
    """Saves the run's config beside its logs, never over an earlier one, never in the working
    directory.

    A resumed run, or a validate/test/predict of a run's checkpoint, writes into the folder of
    that run, which already holds its ``config.yaml``: the new config goes to
    ``config-resumed-N.yaml`` (``config-test-N.yaml``, ...) instead. Without a logger the
    config is saved only where the CLI gave the run a folder (``fit``, or a run's checkpoint);
    Lightning would put it in the working directory, where the next run would find it.
    """

    def __init__(self, *args: Any, save_without_logger: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_without_logger = save_without_logger

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if not trainer.loggers and not self.save_without_logger:
            return
        log_dir = trainer.log_dir if self.save_to_log_dir and not self.already_saved else None
        if log_dir is not None and "://" not in log_dir:
            first = Path(log_dir, self.config_filename)
            if first.exists():
                kind = str(getattr(stage, "value", stage)) if stage != "fit" else "resumed"
                if stage == "fit" and not self.config.get("ckpt_path"):
                    kind = "run"
                k = 1
                while Path(log_dir, f"{first.stem}-{kind}-{k}{first.suffix}").exists():
                    k += 1
                self.config_filename = f"{first.stem}-{kind}-{k}{first.suffix}"
        super().setup(trainer, pl_module, stage)


def with_save_dirs(args: list[str]) -> list[str]:
    """``--trainer.logger+ CSVLogger`` as ``... --trainer.logger.save_dir=runs``.

    Lightning's file loggers require a ``save_dir``, which a logger appended with ``+`` does not
    inherit from the default one, so parsing would fail; the folder under it is then the run's
    (see ``before_instantiate_classes``). Only for a class that requires it and when the
    command line does not give it.
    """
    out: list[str] = []
    k = 0
    while k < len(args):
        arg = args[k]
        out.append(arg)
        k += 1
        if arg.startswith("--trainer.logger+="):
            value = arg.split("=", 1)[1]
        elif arg == "--trainer.logger+" and k < len(args):
            value = args[k]
            out.append(value)
            k += 1
        else:
            continue
        rest = args[k:]
        following = rest[
            : next((i for i, a in enumerate(rest) if a.startswith("--trainer.logger+")), len(rest))
        ]
        given = any(
            a.split("=", 1)[0]
            in ("--trainer.logger.save_dir", "--trainer.logger.init_args.save_dir")
            for a in following
        )
        if not given and _requires_save_dir(value):
            out.append("--trainer.logger.save_dir=runs")
    return out


def _requires_save_dir(name: str) -> bool:
    """Whether the logger class ``name`` (as ``--trainer.logger`` takes it: a class name of
    ``lightning.pytorch.loggers`` or an imported class path) has a required ``save_dir``."""
    import lightning.pytorch.loggers as loggers

    module_name, _, class_name = name.rpartition(".")
    # Nothing is imported for this: a class path names a module already loaded, or nothing.
    cls = getattr(sys.modules.get(module_name) if module_name else loggers, class_name, None)
    try:
        parameter = inspect.signature(cls).parameters.get("save_dir") if cls else None
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


#: The ``name`` Lightning's loggers default to, replaced by the run's name.
LIGHTNING_LOG_NAME = "lightning_logs"


def logger_args(config: Namespace) -> list[Namespace]:
    """The ``init_args`` of the run's loggers that write ``save_dir/name/version_N`` folders
    (TensorBoardLogger, CSVLogger and their subclasses), in order.

    Other loggers' ``name`` and ``version`` mean something else (W&B's version is the id of
    the run to resume), so they are left as given.
    """
    from lightning.fabric.loggers import CSVLogger as FabricCSVLogger
    from lightning.fabric.loggers import TensorBoardLogger as FabricTensorBoardLogger

    logger = config.trainer.logger
    found = []
    for item in logger if isinstance(logger, list) else [logger]:
        init_args = getattr(item, "init_args", None)
        module_name, _, class_name = str(getattr(item, "class_path", "")).rpartition(".")
        cls = getattr(sys.modules.get(module_name), class_name, None)  # imported when parsed
        if (
            isinstance(init_args, Namespace)
            and isinstance(cls, type)
            and issubclass(cls, (FabricCSVLogger, FabricTensorBoardLogger))
            and {"save_dir", "name", "version"} <= set(vars(init_args))
        ):
            found.append(init_args)
    return found


def logger_init_args(config: Namespace) -> Namespace | None:
    """The first logger's ``init_args`` (see :func:`logger_args`), or ``None``."""
    loggers = logger_args(config)
    return loggers[0] if loggers else None


def run_name(config: Namespace) -> str:
    init_args = logger_init_args(config)
    name = getattr(init_args, "name", None) if init_args is not None else None
    if name and name != LIGHTNING_LOG_NAME:
        return str(name)
    data_name = config.data.class_path.rsplit(".", 1)[-1].removesuffix("DataModule").lower()
    backbone = config.model.backbone
    return f"{data_name}-{backbone if isinstance(backbone, str) else 'custom'}"


def run_root(config: Namespace) -> Path | None:
    """``save_dir/name`` of the run's folders; ``runs/<name>`` without a logger; ``None`` for a
    remote ``save_dir`` or a logger without one."""
    init_args = logger_init_args(config)
    if init_args is None:
        if config.trainer.logger is False and config.trainer.default_root_dir is None:
            return Path("runs") / run_name(config)
        return None
    save_dir = str(getattr(init_args, "save_dir", None) or "runs")
    return None if "://" in save_dir else Path(save_dir) / run_name(config)


def version_of_checkpoint(ckpt_path: object, run_root: Path) -> int | None:
    """N where ``ckpt_path`` is ``run_root/version_N/checkpoints/*.ckpt``, else ``None``."""
    if not ckpt_path or "://" in str(ckpt_path):
        return None
    path = Path(str(ckpt_path))
    match = _VERSION_FOLDER.fullmatch(path.parent.parent.name)
    if path.parent.name != "checkpoints" or match is None:
        return None
    try:
        same = path.parent.parent.parent.resolve() == run_root.resolve()
    except OSError:
        return None
    return int(match.group(1)) if same else None


def open_csv_log(logger: CSVLogger) -> None:
    """Start a CSV logger's file now, keeping the ``metrics.csv`` already in its folder.

    Lightning's CSV writer deletes the ``metrics.csv`` it finds in a non-empty folder when it
    starts, warning that "previous log files will be deleted", and when it adds a column it
    rewrites the file with only the columns it logged itself: a resumed run, or a test logged
    into its fit's folder, would lose the fit's metrics. With the file set aside while the
    writer starts and the writer told the file's columns, it appends to the file instead
    (rewriting it with the new columns added).
    """
    log_dir = str(logger.log_dir)
    if "://" in log_dir:
        return
    metrics = Path(log_dir, "metrics.csv")
    kept = metrics.with_name("metrics.csv.kept")
    if metrics.is_file():
        os.replace(metrics, kept)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* not empty")
            writer = logger.experiment
    finally:
        if kept.is_file():
            os.replace(kept, metrics)
    if metrics.is_file() and isinstance(getattr(writer, "metrics_keys", None), list):
        with open(metrics, newline="", encoding="utf-8") as handle:
            writer.metrics_keys = sorted(next(csv.reader(handle), []))


def is_launching_process() -> bool:
    """True in the process the user started; False in the other ranks of a distributed run."""
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


def claim_version(init_args: Namespace) -> int | None:
    """The run's ``version`` under ``save_dir/name``: claimed here (see :func:`claim_run_folder`)
    in the launching process, the launching process's choice in the other ranks of a
    distributed run; ``None`` for a remote ``save_dir`` (left to Lightning)."""
    save_dir = str(getattr(init_args, "save_dir", None) or "")
    if not save_dir or "://" in save_dir:
        return None
    root = Path(save_dir) / str(init_args.name or "lightning_logs")
    key = f"{root.resolve()}|"
    inherited = os.environ.get(RUN_VERSION_ENV, "")
    if inherited.startswith(key):
        return int(inherited[len(key) :])
    if not is_launching_process():
        return None
    version = claim_run_folder(root, next_version(root))
    os.environ[RUN_VERSION_ENV] = f"{key}{version}"
    return version


def save_last_every_epoch(trainer: Trainer) -> None:
    """Make ``last.ckpt`` the latest epoch's, as ``--ckpt_path last`` needs.

    Since Lightning 2.6 a ``ModelCheckpoint`` with a monitored metric writes ``save_last`` only
    when it also writes a top-k checkpoint, so ``last.ckpt`` stays at the best epoch. Each such
    callback gives ``save_last`` up to a second ``ModelCheckpoint`` beside it that monitors
    nothing and keeps one file, ``last.ckpt``, written every epoch.
    """
    for best in trainer.checkpoint_callbacks:
        if isinstance(best, ModelCheckpoint) and best.save_last is True and best.monitor:
            best.save_last = False
            last = ModelCheckpoint(
                dirpath=best.dirpath,
                filename=best.CHECKPOINT_NAME_LAST,
                save_weights_only=best.save_weights_only,
                enable_version_counter=False,
            )
            trainer.callbacks.append(last)


def last_checkpoint(root: Path) -> tuple[int, Path] | None:
    """``(N, root/version_N/checkpoints/last.ckpt)`` of the highest N that has one."""
    versions = sorted(
        (int(m.group(1)), path / "checkpoints" / "last.ckpt")
        for path in (root.iterdir() if root.is_dir() else [])
        if (m := _VERSION_FOLDER.fullmatch(path.name))
        and (path / "checkpoints" / "last.ckpt").is_file()
    )
    return versions[-1] if versions else None


def next_version(root: Path) -> int:
    """One more than the highest N of the ``root/version_N`` folders (0 for none)."""
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION_FOLDER.fullmatch(p.name))]
    return max(taken, default=-1) + 1


def claim_run_folder(root: Path, version: int) -> int:
    """Create ``root/version_N`` for the first N from ``version`` that no one has, and return N.

    ``mkdir`` either creates the folder or fails because it exists, so two runs started at once
    in one folder get two versions, also when another run took ``version`` after it was listed
    (Lightning lists the folders and picks the next number, which races).
    """
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and the folders in it if no file is anywhere under it."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not path.is_dir() or path.is_symlink():
            return
        path.rmdir()  # fails, and keeps everything, if something was written meanwhile
    folder.rmdir()


@dataclass
class RunFolder:
    """What :func:`assign_run_folder` did: the config entries it set (``(namespace, key)``, to
    unset before the config is saved), the folder it created, and whether the run has no
    logger but a folder of its own for its config and checkpoints."""

    pinned: list[tuple[Namespace, str]] = field(default_factory=list)
    claimed: Path | None = None
    without_logger: bool = False

    def pin(self, namespace: Namespace, key: str, value: Any) -> None:
        if value is not None:
            setattr(namespace, key, value)
            self.pinned.append((namespace, key))

    def claim(self, init_args: Namespace) -> int | None:
        before = os.environ.get(RUN_VERSION_ENV)
        version = claim_version(init_args)
        if os.environ.get(RUN_VERSION_ENV) != before and version is not None:  # claimed here
            self.claimed = Path(init_args.save_dir, init_args.name, f"version_{version}")
        return version


def assign_run_folder(config: Namespace, subcommand: str | None, version: int | None) -> RunFolder:
    """Give the run one folder, ``runs/<data>-<backbone>/version_N``, for all its loggers.

    A ``fit`` claims a new folder atomically (one resumed with ``--ckpt_path last`` passes the
    ``version`` it continues); ``validate``, ``test`` and ``predict`` of a checkpoint in a run's
    ``checkpoints/`` log into that run's folder, so its TensorBoard run (and HParams trial)
    holds the fit and the evaluation together. Without a logger, a ``fit`` still gets its
    folder for the config and the checkpoints, instead of the working directory.
    """
    folder = RunFolder()
    loggers = logger_args(config)
    name = run_name(config)
    save_dir = (loggers[0].save_dir if loggers else None) or "runs"
    for args in loggers:
        if args.save_dir is None:
            args.save_dir = save_dir
        if args.name in (None, LIGHTNING_LOG_NAME):
            args.name = name
    no_logger = config.trainer.logger is False and config.trainer.default_root_dir is None
    if not loggers and not no_logger:
        return folder
    root = run_root(config)
    if version is None and root is not None and subcommand != "fit":
        version = version_of_checkpoint(config.get("ckpt_path"), root)
    if loggers:
        if loggers[0].version is None:
            if version is None:
                version = folder.claim(loggers[0])
            folder.pin(loggers[0], "version", version)
        for args in loggers[1:]:  # the same folder, or the same number elsewhere
            if args.version is None and isinstance(loggers[0].version, int):
                folder.pin(args, "version", loggers[0].version)
    elif root is not None and (version is not None or subcommand == "fit"):
        if version is None:
            version = folder.claim(Namespace(save_dir=str(root.parent), name=root.name))
        if version is not None:
            folder.pin(config.trainer, "default_root_dir", str(root / f"version_{version}"))
            folder.without_logger = True
    return folder
