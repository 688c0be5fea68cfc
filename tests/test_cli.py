"""The ``lit-classifiers`` command on tiny data: in this process through ``main`` (what the
console script calls), and as real subprocesses for the console script, ``python -m`` and the
README's quick start."""

from __future__ import annotations

import csv
import re
import runpy
import shutil
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers.cli import (
    CONFIGS,
    REPO,
    SCRIPT,
    TINY,
    Case,
    readme_quickstart_run_dir,
    run,
    run_cli,
    run_dirs,
    run_each,
    scalars,
)
from helpers.data import write_stl10
from PIL import Image

from datamodules import DigitsDataModule
from lit_classifiers import ClassifierModule, list_backbones


def test_fit_writes_checkpoint_config_and_tensorboard_events(fitted_run):
    (run_dir,) = run_dirs(fitted_run)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    best = [p for p in (run_dir / "checkpoints").glob("epoch*.ckpt")]
    assert len(best) == 1 and re.fullmatch(r"epoch000-acc1_\d\.\d{4}\.ckpt", best[0].name)
    config = (run_dir / "config.yaml").read_text()
    assert "backbone: resnet20" in config and "DigitsDataModule" in config
    logged = scalars(run_dir)
    for name in ("train/loss", "train/acc1", "val/loss", "val/acc1", "val/acc5"):
        assert name in logged, sorted(logged)
    # One learning-rate curve, the module's own (no LearningRateMonitor "lr-SGD" beside it),
    # and the Scalars view holds train/ and val/ only: no "epoch", no "hp_metric" placeholder.
    assert "train/lr" in logged and not any(name.startswith("lr") for name in logged)
    assert {name.split("/")[0] for name in logged} == {"train", "val"}, sorted(logged)
    # The data's classes reached the model without being given on the command line.
    hparams = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)[
        "hyper_parameters"
    ]
    assert hparams["num_classes"] == 10 and hparams["in_channels"] == 1
    assert hparams["class_names"] == [str(d) for d in range(10)]


def test_same_command_twice_starts_a_new_run_folder(fitted_run, tmp_path):
    shutil.copytree(fitted_run / "runs", tmp_path / "runs")  # the first run of the command
    (first,) = run_dirs(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    run_cli("fit", *TINY, cwd=tmp_path)
    assert [p.name for p in run_dirs(tmp_path)] == ["version_0", "version_1"]
    assert all((p / "config.yaml").is_file() for p in run_dirs(tmp_path))
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == before  # left as it was


def test_validate_from_checkpoint_reproduces_the_fit_metrics(fitted_run, tmp_path):
    shutil.copytree(fitted_run / "runs", tmp_path / "runs")  # the shared run stays as it is
    (fit_dir,) = run_dirs(tmp_path)
    ckpt = fit_dir / "checkpoints" / "last.ckpt"
    run_cli("validate", "--config", fit_dir / "config.yaml", "--ckpt_path", ckpt, cwd=tmp_path)
    # The run's own folder: the validation's points continue the fit's curves.
    assert run_dirs(tmp_path) == [fit_dir]
    assert (fit_dir / "config-validate-1.yaml").is_file()
    metrics = scalars(fit_dir)
    for name in ("val/acc1", "val/acc5", "val/loss"):
        fit_value, validate_value = metrics[name]
        assert validate_value == pytest.approx(fit_value, abs=1e-6)


def test_test_from_checkpoint_matches_the_checkpoint_evaluated_in_python(fitted_run, tmp_path):
    (fit_dir,) = run_dirs(fitted_run)
    ckpt = fit_dir / "checkpoints" / "last.ckpt"
    run_cli("test", "--config", fit_dir / "config.yaml", "--ckpt_path", ckpt, cwd=tmp_path)
    cli_metrics = scalars(run_dirs(tmp_path)[-1])
    model = ClassifierModule.load_from_checkpoint(ckpt)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    data = DigitsDataModule(image_size=8, batch_size=32)
    (expected,) = trainer.test(model, datamodule=data, verbose=False)
    assert cli_metrics["test/acc1"][-1] == pytest.approx(expected["test/acc1"], abs=1e-6)
    assert cli_metrics["test/loss"][-1] == pytest.approx(expected["test/loss"], rel=1e-5)


def test_predict_on_a_folder_writes_a_csv(fitted_run, tmp_path):
    (fit_dir,) = run_dirs(fitted_run)
    images = tmp_path / "photos"
    (images / "nested").mkdir(parents=True)
    for k, name in enumerate(["a.png", "b.jpg", "nested/c.png"]):
        Image.new("L", (8, 8), color=40 * k).save(images / name)
    out = tmp_path / "predictions.csv"
    run_cli(
        "predict",
        "--config",
        fit_dir / "config.yaml",
        "--ckpt_path",
        fit_dir / "checkpoints" / "last.ckpt",
        "--data.predict_dir",
        images,
        "--predictions.output_path",
        out,
        cwd=tmp_path,
    )
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["file", *[f"{kind}_{k}" for k in range(1, 6) for kind in ("class", "prob")]]
    assert sorted(Path(r[0]).name for r in rows[1:]) == ["a.png", "b.jpg", "c.png"]
    for row in rows[1:]:
        names, probs = row[1::2], [float(p) for p in row[2::2]]
        assert set(names) <= {str(d) for d in range(10)} and len(set(names)) == 5
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5


def test_python_m_runs_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lit_classifiers", "backbones", "resnet20", "--no-flops"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("lit_classifiers", run_name="__main__", alter_sys=True)
    assert exited.value.code == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resnet")]
    assert row.split()[0] == "resnet20"


def _printed_configs(tmp_path: Path) -> tuple[str, str]:
    """What ``fit --print_config`` prints for the digits recipe and with no config at all."""
    recipe = ["fit", "--config", CONFIGS / "digits" / "resnet20.yaml", "--print_config"]
    first, bare = run_each(
        [Case(recipe, tmp_path), Case(["fit", "--print_config"], tmp_path)], tmp_path / "io"
    )
    assert first.returncode == 0 and bare.returncode == 0, first.stderr + bare.stderr
    return first.stdout, bare.stdout


def test_print_config_lists_every_option(tmp_path):
    first, bare = _printed_configs(tmp_path)
    assert "backbone: resnet20" in first and "class_path: datamodules.DigitsDataModule" in first
    for key in ("model:", "backbone:", "data:", "checkpoint:", "monitor: val/acc1"):
        assert key in bare
    assert "class_path: lit_classifiers.callbacks.ClassifierTensorBoardLogger" in bare
    # The module logs the rate itself; Lightning's LearningRateMonitor would log each scheduler
    # (warm-up included) as a second set of curves.
    assert "lr_monitor" not in bare and "LearningRateMonitor" not in bare


# slow: the console script as a real process
@pytest.mark.slow
def test_print_config_round_trips_through_the_console_script(tmp_path):
    first, _ = _printed_configs(tmp_path)
    (tmp_path / "printed.yaml").write_text(first)
    # The console script itself, as a real process, once in the suite.
    second = run(
        SCRIPT, "fit", "--config", tmp_path / "printed.yaml", "--print_config", cwd=tmp_path
    )
    assert first == second.stdout


def test_readme_stl10_example_runs_as_written(tmp_path):
    """The README example (fit with --data STL10DataModule), as written."""
    write_stl10(tmp_path / "stl10", n_train=40, n_test=10)
    example = "fit --model.backbone resnet18 --data STL10DataModule --data.data_dir DIR"
    args = example.replace("DIR", str(tmp_path / "stl10")).split()
    extra = ["--data.batch_size=4", "--data.num_workers=0", "--trainer.fast_dev_run=true"]
    result = run_cli(*args, *extra, cwd=tmp_path)
    assert "`Trainer.fit` stopped" in result.stdout + result.stderr


def test_backbones_lists_parameters_flops_and_papers(tmp_path):
    listed, missing = run_each(
        [Case(["backbones", "resnet*"], tmp_path), Case(["backbones", "nothing*"], tmp_path)],
        tmp_path / "io",
    )
    out = listed.stdout
    assert listed.returncode == 0, listed.stderr
    assert "25,557,032" in out and "4.089" in out  # resnet50: parameters and GMACs at 224
    assert "Deep Residual Learning" in out
    assert sum(line.startswith("resnet") for line in out.splitlines()) == len(
        list_backbones("resnet*")
    )
    assert missing.returncode == 1 and "no backbone matches 'nothing*'" in missing.stderr


#: Each mistake: the command, and what its error must name.
BAD_INPUT: dict[str, tuple[list[str], str]] = {
    "unknown-backbone": (
        ["fit", "--model.backbone=resnet5", "--data=DigitsDataModule"],
        r"unknown backbone 'resnet5'.*did you mean",
    ),
    "missing-data-dir": (
        [
            "fit",
            "--model.backbone=resnet18",
            "--data=STL10DataModule",
            "--data.data_dir=no/such/dir",
        ],
        r"no/such/dir",
    ),
    "malformed-yaml": (["fit", "--config", "broken.yaml"], r"broken\.yaml"),
}


def test_bad_input_exits_non_zero_and_names_the_problem(tmp_path):
    (tmp_path / "broken.yaml").write_text("model:\n  backbone: [resnet18\n data: {")
    cases = [Case([*args, "--trainer.max_epochs=1"], tmp_path) for args, _ in BAD_INPUT.values()]
    for (name, (_, message)), result in zip(
        BAD_INPUT.items(), run_each(cases, tmp_path / "io"), strict=True
    ):
        assert result.returncode != 0, name
        assert re.search(message, result.stderr, re.DOTALL), (name, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, name


# slow: the README's command as a real process: bash, the console script, four epochs
@pytest.mark.slow
def test_readme_quickstart_command_runs_as_written(readme_quickstart_run):
    folder = readme_quickstart_run
    assert (folder / "returncode").read_text() == "0", (folder / "stderr").read_text()[-3000:]
    run_dir = readme_quickstart_run_dir(folder)  # beside it, a TINY fit started at once
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    accuracy = scalars(run_dir)["val/acc1"]
    assert accuracy[-1] >= 0.8 and accuracy[-1] > accuracy[0]  # it visibly learns


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    test_command = next(
        block.strip()
        for block in re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
        if "pytest" in block
    )
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()
