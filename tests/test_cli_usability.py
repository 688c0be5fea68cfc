"""The ``lit-classifiers`` command as a user meets it (in this process through ``main``, and once
as a real process for what a fresh interpreter prints): its help,
the one line each common mistake gets, what a normal run prints, and one folder per run (the
fit, its test and its predictions, for every logger; none in the working directory)."""

from __future__ import annotations

import csv
import inspect
import re
import shutil
from pathlib import Path

import pytest
from helpers.cli import (
    TINY,
    Case,
    assert_one_line_error,
    cli_env,
    hparams_trials,
    run_cli,
    run_dirs,
    run_each,
    scalars,
)
from PIL import Image

from lit_classifiers import cli, list_backbones

HELP_ENV = {"COLUMNS": "80"}  # the width a terminal gives unless told otherwise
TRIAL_METRICS = ("val/acc1", "val/acc5", "val/loss", "test/acc1", "test/acc5", "test/loss")


def option_helps(help_text: str) -> dict[str, str]:
    """``--option`` -> its help, joined into one line, from ``--help`` output."""
    helps: dict[str, str] = {}
    option = None
    for line in help_text.splitlines():
        if match := re.match(r"  (-\S+)", line):
            option = match.group(1).rstrip(",")
            helps[option] = ""
        elif option and line.startswith("      "):
            helps[option] += " " + line.strip()
        else:
            option = None
    return {k: v.strip() for k, v in helps.items()}


# -------------------------------------------------------------------------------------- help
def test_fit_help_is_short_and_names_the_backbones_and_datamodules(tmp_path: Path) -> None:
    result = run_cli("fit", "--help", cwd=tmp_path, env=cli_env(**HELP_ENV))
    text = result.stdout
    assert len(text.splitlines()) < 400, len(text.splitlines())
    assert "known subclasses" not in text and "torch.nn.Identity" not in text
    helps = option_helps(text)
    assert all(helps.values()), [k for k, v in helps.items() if not v]
    backbone = helps["--model.backbone"]
    assert all(re.search(rf"\b{name}\b", backbone) for name in list_backbones()), backbone
    assert "lit-classifiers backbones" in backbone
    # The datamodules' own summaries, not Lightning's cut-off "The main advantage is:".
    assert "The main advantage is" not in text
    assert "DigitsDataModule: Handwritten digits" in helps["--data"]
    assert "STL10DataModule: STL-10" in helps["--data"]
    # Lightning's options keep a sentence each, without reStructuredText markup.
    assert helps["--trainer.max_epochs"].startswith("Stop training once this number of epochs")
    assert "``" not in text and ":paramref:" not in text


def test_every_subcommand_main_runs_is_listed() -> None:
    dispatched = re.findall(r'args\[:1\] == \["(\w+)"\]', inspect.getsource(cli.main))
    assert dispatched and set(dispatched) == set(cli.OTHER_SUBCOMMANDS), dispatched


def test_top_level_help_and_missing_subcommand_name_every_subcommand(tmp_path: Path) -> None:
    subcommands = ("fit", "validate", "test", "predict", *cli.OTHER_SUBCOMMANDS)
    assert {"backbones", "export"} <= set(subcommands)
    helped, bare = run_each(
        [Case(["--help"], tmp_path, HELP_ENV), Case([], tmp_path)], tmp_path / "io"
    )
    listed = re.findall(r"^    (\w+)\s", helped.stdout, re.MULTILINE)
    assert tuple(listed) == subcommands, helped.stdout
    assert bare.returncode == 2
    line = assert_one_line_error(bare, "subcommand is required")
    assert all(name in line for name in subcommands), line


# ------------------------------------------------------------------------------------ mistakes
#: Each mistake: the command, and the one error line it must get.
MISTAKES: dict[str, tuple[list[str], str]] = {
    "missing-data-dir": (
        [
            "fit",
            "--model.backbone=resnet18",
            "--data=ImageFolderDataModule",
            "--data.data_dir=no/such/dir",
        ],
        r"^lit-classifiers: error: .*no/such/dir",
    ),
    "learning-rate": (
        ["fit", *TINY, "--lr", "0.01"],
        r"--lr: no such option; did you mean --model\.lr\?",
    ),
    "datamodule-name": (
        ["fit", "--model.backbone=resnet20", "--data", "Digits"],
        r"--data Digits: no such datamodule; did you mean DigitsDataModule\?",
    ),
    "model-as-backbone": (
        ["fit", "--model", "resnet18", "--data=DigitsDataModule"],
        r"--model takes a config file.*the backbone is --model\.backbone resnet18",
    ),
    "abbreviated-option": (
        ["fit", *TINY, "--trainer.max_epoch", "1"],
        r"--trainer\.max_epoch: no such option; did you mean --trainer\.max_epochs",
    ),
    "datamodule-argument": (
        ["fit", *TINY, "--data.imagesize=8"],
        r"--data\.imagesize: DigitsDataModule has no such argument; did you mean "
        r"--data\.image_size\?",
    ),
    "optimizer-argument": (
        ["fit", *TINY, "--model.optimizer.init_args.lrr=0.1"],
        r"--model\.optimizer\.init_args\.lrr: SGD has no such argument; did you mean "
        r"--model\.optimizer\.init_args\.lr\?",
    ),
    "linked-argument": (
        ["fit", *TINY, "--model.num_classes=3"],
        r"--model\.num_classes: no such option; the data sets it",
    ),
    "required-data-dir": (
        ["fit", "--data=ImageFolderDataModule", "--model.backbone=resnet18"],
        r"ImageFolderDataModule needs --data\.data_dir",
    ),
    "config-key": (
        ["fit", "--config", "typo.yaml"],
        r"config key 'model\.learning_rate'.*--model\.lr",
    ),
    # A config.yaml saved by an earlier version, which had Lightning's LearningRateMonitor.
    "removed-section": (
        ["fit", "--config", "old.yaml", *TINY],
        r"config key 'lr_monitor\.logging_interval': removed: the module logs the learning rate "
        r"itself.*delete the lr_monitor section",
    ),
    "class-name": (
        ["fit", *TINY, "--model.optimizer", "Adamm"],
        r"--model\.optimizer Adamm: no such class; did you mean Adam\b",
    ),
    "literal": (
        ["fit", *TINY, "--model.lr_scheduler_interval", "epochs"],
        r"model\.lr_scheduler_interval.*'epoch', 'step'.*epochs",
    ),
    "subcommand": (["fti"], r"unknown subcommand 'fti'"),
}


def test_mistakes_get_one_line_saying_what_to_write(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text(
        "model:\n  backbone: resnet20\n  learning_rate: 0.1\ndata: DigitsDataModule\n"
    )
    (tmp_path / "old.yaml").write_text("lr_monitor:\n  logging_interval: step\n")
    results = run_each([Case(args, tmp_path) for args, _ in MISTAKES.values()], tmp_path / "io")
    for (name, (_, pattern)), result in zip(MISTAKES.items(), results, strict=True):
        assert result.returncode == 2, (name, result.stderr[-2000:])
        line = assert_one_line_error(result, pattern)
        assert "Namespace(" not in line and "Union" not in line and "<class '" not in line, name
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.ckpt"))


def test_learning_rate_shortcut_and_full_option_both_reach_the_config(tmp_path: Path) -> None:
    shortcut, full = run_each(
        [
            Case(["fit", *TINY, "--model.lr=0.01", "--print_config"], tmp_path),
            Case(["fit", *TINY, "--model.optimizer.init_args.lr=0.02", "--print_config"], tmp_path),
        ],
        tmp_path / "io",
    )
    assert re.search(r"^  lr: 0\.01$", shortcut.stdout, re.MULTILINE), shortcut.stdout
    assert re.search(r"^      lr: 0\.02$", full.stdout, re.MULTILINE), full.stdout


# -------------------------------------------------------------------------- one place per run
def test_logger_false_twice_in_one_directory_leaves_it_clean(tmp_path: Path) -> None:
    for _ in range(2):
        result = run_cli("fit", *TINY, "--trainer.logger", "false", cwd=tmp_path)
        assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # no config.yaml, no checkpoints/
    folders = run_dirs(tmp_path)
    assert [p.name for p in folders] == ["version_0", "version_1"]
    for folder in folders:
        assert (folder / "config.yaml").is_file()
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert not list(folder.glob("events.out.tfevents*"))
        # The folder is not pinned in the config: a run started from it gets its own.
        config = (folder / "config.yaml").read_text()
        assert re.search(r"^  default_root_dir: null$", config, re.MULTILINE), config


# slow: a test and two predicts through the CLI
@pytest.mark.slow
def test_test_and_predict_of_a_runs_checkpoint_stay_in_its_folder(fitted_run, tmp_path):
    shutil.copytree(fitted_run / "runs", tmp_path / "runs")  # the shared run stays as it is
    (fit_dir,) = run_dirs(tmp_path)
    config = (fit_dir / "config.yaml").read_text()
    ckpt = Path("runs", "digits-resnet20", "version_0", "checkpoints", "last.ckpt")
    run_cli("test", *TINY, "--trainer.limit_test_batches=2", "--ckpt_path", ckpt, cwd=tmp_path)
    assert run_dirs(tmp_path) == [fit_dir]
    assert (fit_dir / "config.yaml").read_text() == config
    assert (fit_dir / "config-test-1.yaml").is_file()
    logged = scalars(fit_dir)
    assert {"val/acc1", "train/loss", "test/acc1", "test/acc5"} <= set(logged)
    # One HParams trial, the fit's, with the test's metrics as its columns.
    (trial,) = hparams_trials(tmp_path / "runs" / "digits-resnet20").items()
    assert trial[0] == "version_0"
    assert set(TRIAL_METRICS) <= set(trial[1]), trial
    assert trial[1]["test/acc1"] == pytest.approx(logged["test/acc1"][-1])

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("L", (8, 8), 90).save(photos / "a.png")
    for _ in range(2):
        run_cli(
            "predict",
            *TINY,
            "--ckpt_path",
            ckpt,
            "--data.predict_dir",
            photos,
            cwd=tmp_path,
        )
    assert run_dirs(tmp_path) == [fit_dir]
    for name in ("predictions.csv", "predictions-1.csv"):  # the first one is kept
        rows = list(csv.reader((fit_dir / name).open()))
        assert len(rows) == 2 and rows[1][0].endswith("a.png")
    assert list(hparams_trials(tmp_path / "runs" / "digits-resnet20")) == ["version_0"]


# slow: a fit and a test through the CLI; the CSV logger alone stays fast
@pytest.mark.slow
def test_a_second_logger_shares_the_run_folder_and_keeps_what_it_wrote(tmp_path: Path) -> None:
    run_cli("fit", *TINY, "--trainer.logger+", "CSVLogger", cwd=tmp_path)
    (folder,) = run_dirs(tmp_path)
    assert len(list(folder.glob("events.out.tfevents*"))) == 1
    fit_rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert any(row["val/acc1"] for row in fit_rows)
    ckpt = folder / "checkpoints" / "last.ckpt"
    run_cli("test", *TINY, "--trainer.logger+", "CSVLogger", "--ckpt_path", ckpt, cwd=tmp_path)
    assert run_dirs(tmp_path) == [folder]
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [r["val/acc1"] for r in rows[: len(fit_rows)]] == [r["val/acc1"] for r in fit_rows]
    assert any(row["test/acc1"] for row in rows[len(fit_rows) :])


def test_a_csv_logger_alone_works_without_tensorboard(tmp_path: Path) -> None:
    run_cli("fit", *TINY, "--trainer.logger", "CSVLogger", cwd=tmp_path)
    (folder,) = run_dirs(tmp_path)
    assert not list(folder.glob("events.out.tfevents*"))
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert any(row["val/acc1"] for row in rows)
    assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "config.yaml").is_file()
