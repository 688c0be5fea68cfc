"""What the command writes, and where: nothing replaced, nothing written through a planted link,
no empty run folders, the newest run resumed. In-process through ``cli.main``."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers.cli import TINY, run_dirs
from PIL import Image

from lit_classifiers import cli, run_folders


@pytest.fixture()
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working folder, with no run folder inherited from an earlier run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.RUN_VERSION_ENV, raising=False)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    return tmp_path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


def photos(folder: Path) -> Path:
    folder.mkdir()
    for k in range(3):
        Image.new("L", (8, 8), color=60 * k).save(folder / f"{k}.png")
    return folder


def test_predict_output_path_is_honoured_never_replaced_and_never_written_through_a_link(
    fitted_run: Path, here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(fitted_run / "runs", here / "runs")
    (run_dir,) = run_dirs(here)
    out = here / "out.csv"
    victim = here / "victim.txt"
    victim.write_text("precious")
    (here / "out.csv.partial").symlink_to(victim)  # planted where the old code wrote first
    predict = [
        "predict",
        "--config",
        str(run_dir / "config.yaml"),
        "--ckpt_path",  # a checkpoint in a run's checkpoints/: logs into that run
        str(run_dir / "checkpoints" / "last.ckpt"),
        "--data.predict_dir",
        str(photos(here / "photos")),
        "--predictions.output_path",
        str(out),
    ]
    assert cli.main(predict) == 0
    assert victim.read_text() == "precious"
    assert out.is_file() and not out.is_symlink()
    assert len(list(csv.reader(out.open()))) == 4  # header and three images
    assert not list(run_dir.glob("predictions*.csv"))  # the flag chose the path
    assert not list(here.glob(".out.csv.*"))  # no temporary file left

    out.write_text("an earlier result\n")
    capsys.readouterr()
    assert cli.main(predict) != 0
    line = one_error_line(capsys)
    assert "out.csv exists" in line and "--predictions.overwrite" in line
    assert out.read_text() == "an earlier result\n"

    assert cli.main([*predict, "--predictions.overwrite", "true"]) == 0
    assert len(list(csv.reader(out.open()))) == 4


def test_predict_without_output_path_never_replaces_an_earlier_csv(
    fitted_run: Path, here: Path
) -> None:
    shutil.copytree(fitted_run / "runs", here / "runs")
    (run_dir,) = run_dirs(here)
    (run_dir / "predictions.csv").write_text("an earlier result\n")
    predict = [
        "predict",
        "--config",
        str(run_dir / "config.yaml"),
        "--ckpt_path",
        str(run_dir / "checkpoints" / "last.ckpt"),
        "--data.predict_dir",
        str(photos(here / "photos")),
    ]
    assert cli.main(predict) == 0
    assert (run_dir / "predictions.csv").read_text() == "an earlier result\n"
    assert len(list(csv.reader((run_dir / "predictions-1.csv").open()))) == 4


def test_ckpt_path_last_takes_the_highest_version_not_the_oldest_or_the_last_by_name(
    fitted_run: Path, here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run_dir,) = run_dirs(fitted_run)
    root = here / "runs" / "digits-resnet20"
    for version in (0, 1, 9, 10):  # by name, version_9 sorts last; by age, version_0 is first
        shutil.copytree(run_dir, root / f"version_{version}")
    os.utime(root / "version_9" / "checkpoints" / "last.ckpt")  # and the newest file
    assert cli.main(["fit", *TINY, "--trainer.max_epochs=2", "--ckpt_path", "last"]) == 0
    err = capsys.readouterr().err
    assert f"resuming {Path('runs', 'digits-resnet20', 'version_10')}" in err
    # The second epoch went on in version_10 (its copied last.ckpt, saved in another folder,
    # is kept by Lightning beside the new one), and in no other folder.
    continued = sorted(p.parent.parent.name for p in root.glob("*/checkpoints/epoch001-*.ckpt"))
    assert continued == ["version_10"]
    assert [p.name for p in run_dirs(here)] == ["version_0", "version_1", "version_9", "version_10"]


def test_a_run_folder_taken_after_the_listing_is_not_shared(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "digits-resnet20"
    (root / "version_1").mkdir(parents=True)
    listed = run_folders.next_version(root)
    assert listed == 2
    (root / "version_2").mkdir()  # another run, started at the same time, claims it first
    (root / "version_2" / "config.yaml").write_text("the other run's")
    assert run_folders.claim_run_folder(root, listed) == 3
    assert sorted(p.name for p in root.iterdir()) == ["version_1", "version_2", "version_3"]
    assert run_folders.claim_run_folder(root, listed) == 4  # never a folder given twice


@pytest.mark.parametrize(
    "args",
    [
        ["fit", *TINY, "--trainer.fast_dev_run=true"],
        ["test", *TINY, "--ckpt_path", "best"],  # fails: there is no best checkpoint
        ["fit", *TINY, "--trainer.max_epochs=-5"],  # fails once the folder is claimed
    ],
    ids=["fast_dev_run", "failed_test", "failed_trainer"],
)
def test_a_run_that_writes_nothing_leaves_no_folder(args: list[str], here: Path) -> None:
    (here / "runs" / "digits-resnet20" / "version_0" / "checkpoints").mkdir(parents=True)
    (here / "runs" / "digits-resnet20" / "version_0" / "config.yaml").write_text("an earlier run")
    cli.main(args)
    assert [p.name for p in run_dirs(here)] == ["version_0"]
    assert os.environ.get(cli.RUN_VERSION_ENV) is None  # the next run in this process claims anew


def test_last_ckpt_is_the_latest_epoch_even_when_the_best_is_an_earlier_one(here: Path) -> None:
    # Monitoring "epoch" in mode min makes epoch 0 the best for good: Lightning (>= 2.6) alone
    # would then leave last.ckpt at epoch 0, and --ckpt_path last would lose the later epochs.
    fit = ["fit", *TINY, "--trainer.max_epochs=3", "--checkpoint.monitor=epoch"]
    assert cli.main([*fit, "--checkpoint.mode=min", "--checkpoint.filename=best-{epoch}"]) == 0
    folder = run_dirs(here)[0] / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-0.ckpt", "last.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 9
