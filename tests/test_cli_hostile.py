"""The CLI facing hostile or damaged input: checkpoints (local and over HTTP) that try to run
code, concurrent runs in one folder, resuming with ``--ckpt_path last``, and every user mistake
ending in one line that names the problem."""

from __future__ import annotations

import pathlib
import re
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from helpers.cli import (
    TINY,
    Case,
    assert_one_line_error,
    cli_env,
    readme_quickstart_run_dir,
    run_cli,
    run_dirs,
    run_each,
    scalars,
)
from PIL import Image

ZEN = "Beautiful is better than ugly"  # what importing the module `this` prints


class CreatesFile:
    """Unpickling this creates a file (through a stdlib function, so it would really run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture(scope="module")
def good_checkpoint(fitted_run: Path) -> Path:
    return run_dirs(fitted_run)[0] / "checkpoints" / "last.ckpt"


def edited_checkpoint(source: Path, target: Path, **hparams: object) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["hyper_parameters"].update(hparams)
    torch.save(checkpoint, target)
    return target


# slow: eight commands, each subcommand twice; the other hostile-checkpoint tests here stay fast
@pytest.mark.slow
def test_checkpoint_url_never_runs_code_in_any_subcommand(
    good_checkpoint: Path, served: tuple[Path, str], tmp_path: Path
) -> None:
    www, base = served
    marker = tmp_path / "pwned"
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = CreatesFile(marker)
    torch.save(checkpoint, www / "evil.ckpt")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("L", (8, 8), 100).save(photos / "a.png")
    torch_home = tmp_path / "torch_home"
    commands = [
        [sub, *TINY, "--ckpt_path", f"{base}/evil.ckpt"]
        for sub in ("fit", "validate", "test", "predict")
    ]
    commands[-1] += ["--data.predict_dir", str(photos)]
    env = {"TORCH_HOME": str(torch_home)}
    # Twice: a cached copy must not run on the next call either.
    cases = [Case(command, tmp_path, env) for command in commands * 2]
    for result in run_each(cases, tmp_path / "io"):
        assert_one_line_error(result, r"evil\.ckpt.*(weights_only|code)")
        assert "weights_only=False" not in result.stderr
    assert not marker.exists()
    assert not list(torch_home.rglob("*.ckpt"))  # the hub cache is no back door


def test_good_checkpoint_url_is_loaded(
    good_checkpoint: Path,
    served: tuple[Path, str],
    fitted_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    www, base = served
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the download goes
    (www / "good.ckpt").write_bytes(good_checkpoint.read_bytes())
    env = cli_env(TORCH_HOME=str(tmp_path / "torch_home"))
    result = run_cli("validate", *TINY, "--ckpt_path", f"{base}/good.ckpt", cwd=tmp_path, env=env)
    assert re.search(r"checkpoint at \S*lit-classifiers-download-\w+/good\.ckpt", result.stderr)
    from_url = scalars(run_dirs(tmp_path)[-1])["val/acc1"][-1]
    assert from_url == pytest.approx(scalars(run_dirs(fitted_run)[0])["val/acc1"][-1], abs=1e-6)
    assert not list((tmp_path / "torch_home").rglob("*.ckpt"))
    # Downloaded once, for the hyper-parameters and the Trainer; the saved config keeps the URL
    # and the copy is gone.
    assert (tmp_path / "requests.log").read_text().splitlines() == ["GET /good.ckpt"]
    saved = yaml.safe_load((run_dirs(tmp_path)[-1] / "config.yaml").read_text())
    assert saved["ckpt_path"] == f"{base}/good.ckpt"
    assert not list(tmp_path.glob("lit-classifiers-download-*"))


#: Hyper-parameters a hostile checkpoint could carry to make jsonargparse import or build a class.
HOSTILE_HPARAMS: dict[str, dict[str, object]] = {
    "backbone-class-path": {"backbone": {"class_path": "this.Foo"}},
    "instantiator": {"_instantiator": "this.Foo"},
    "class-path": {"_class_path": "this.Foo"},
    "torch-class": {"backbone": "torch.nn.Identity"},
    "nested": {"backbone_kwargs": {"weights": {"class_path": "this.Foo", "init_args": {}}}},
}


def test_checkpoint_hparams_cannot_import_or_build_classes(
    good_checkpoint: Path, tmp_path: Path
) -> None:
    cases = []
    for name, hparams in HOSTILE_HPARAMS.items():
        folder = tmp_path / name
        folder.mkdir()
        evil = edited_checkpoint(good_checkpoint, folder / "evil.ckpt", **hparams)
        cases.append(Case(["validate", *TINY, "--ckpt_path", evil], folder))
    for (name, hparams), result in zip(
        HOSTILE_HPARAMS.items(), run_each(cases, tmp_path / "io"), strict=True
    ):
        assert ZEN not in result.stdout + result.stderr, name
        assert not result.imported_this, name  # `this` would print the Zen only once
        assert_one_line_error(result, rf"evil\.ckpt.*{next(iter(hparams))}")
        runs = tmp_path / name / "runs"
        assert not runs.exists() or not list(runs.rglob("*.tfevents*")), name


# slow: two console-script fits started at once: the README's quick start and a TINY fit, in
# one folder (helpers.cli.run_readme_quickstart; the quick start's own checks are test_cli.py's)
@pytest.mark.slow
def test_two_fits_started_at_once_get_their_own_run_folders(readme_quickstart_run: Path) -> None:
    folder = readme_quickstart_run
    for prefix in ("", "tiny."):
        stderr = (folder / f"{prefix}stderr").read_text()
        assert (folder / f"{prefix}returncode").read_text() == "0", stderr[-3000:]
    folders = run_dirs(folder)
    assert [p.name for p in folders] == ["version_0", "version_1"]
    for run_dir in folders:
        assert len(list(run_dir.glob("config*.yaml"))) == 1
        assert len(list(run_dir.glob("events.out.tfevents*"))) == 1
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run_dir / "checkpoints").glob("epoch*.ckpt"))) == 1
    # Each process wrote its own folder: one has the README command's run, the other TINY's.
    (readme,) = [d for d in folders if d == readme_quickstart_run_dir(folder)]
    (tiny,) = [d for d in folders if d != readme]
    assert yaml.safe_load((tiny / "config.yaml").read_text())["trainer"]["max_epochs"] == 1


# slow: three CLI runs, two of them fits; test_cli_outputs.py resolves `last` in the fast tier
@pytest.mark.slow
def test_ckpt_path_last_resumes_the_latest_run_in_its_own_folder(tmp_path: Path) -> None:
    missing, _ = run_each(
        [
            Case(["fit", *TINY, "--ckpt_path", "last"], tmp_path),
            Case(["fit", *TINY], tmp_path),
        ],
        tmp_path / "io",
    )
    assert_one_line_error(missing, r"no earlier run to resume.*digits-resnet20")
    (first,) = run_dirs(tmp_path)
    config = (first / "config.yaml").read_text()
    before = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = run_cli("fit", *TINY, "--trainer.max_epochs=2", "--ckpt_path", "last", cwd=tmp_path)
    assert f"resuming {Path('runs', 'digits-resnet20', 'version_0', 'checkpoints')}" in (
        resumed.stderr
    )
    assert run_dirs(tmp_path) == [first]  # no version_1
    assert (first / "config.yaml").read_text() == config  # the first run's config is kept
    assert "max_epochs: 2" in (first / "config-resumed-1.yaml").read_text()
    checkpoint = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    assert before["global_step"] == 3 and checkpoint["global_step"] == 6  # 3 steps an epoch
    steps = scalars(first)["val/acc1"]
    assert len(steps) == 2  # the curve continues in the same folder


def bad_image_folder(root: Path) -> Path:
    """``root/train/{a,b}`` with tiny PNGs, and one damaged PNG in ``b``."""
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (12, 12), (40 * k, 0, 0)).save(root / "train" / name / f"{k}.png")
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


def write_damaged(kind: str, good: Path, target: Path) -> Path:
    data = good.read_bytes()
    content = {
        "zero-bytes": b"",
        "truncated": data[: len(data) // 2],
        "text": b"epoch: 3\nthis is not a checkpoint\n",
        "corrupt": data[:100] + bytes(b ^ 0xFF for b in data[100:400]) + data[400:],
    }[kind]
    target.write_bytes(content)
    return target


def test_damaged_or_refused_checkpoints_give_one_line(good_checkpoint: Path, tmp_path: Path):
    kinds = ["zero-bytes", "truncated", "text", "corrupt"]
    cases = [
        Case(
            [
                "test",
                *TINY,
                "--ckpt_path",
                write_damaged(kind, good_checkpoint, tmp_path / f"damaged-{kind}.ckpt"),
            ],
            tmp_path,
        )
        for kind in kinds
    ]
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["extra"] = CreatesFile(tmp_path / "pwned")
    torch.save(checkpoint, tmp_path / "unsafe.ckpt")
    cases.append(Case(["test", *TINY, "--ckpt_path", "unsafe.ckpt"], tmp_path))
    folder = bad_image_folder(tmp_path / "three")
    (folder / "train" / "b" / "broken.png").unlink()
    (folder / "train" / "c").mkdir()
    Image.new("RGB", (12, 12)).save(folder / "train" / "c" / "0.png")
    three_classes = [
        "--model.backbone=resnet20",
        "--data=ImageFolderDataModule",
        f"--data.data_dir={folder}",
        "--data.image_size=8",
        "--data.num_workers=0",
        "--trainer.enable_progress_bar=false",
    ]
    cases.append(Case(["test", *three_classes, "--ckpt_path", good_checkpoint], tmp_path))
    *damaged, unsafe, other_count = run_each(cases, tmp_path / "io")
    for kind, result in zip(kinds, damaged, strict=True):
        assert_one_line_error(result, rf"damaged-{kind}\.ckpt")
    # refused by weights_only: the message never advises loading it unsafely
    line = assert_one_line_error(unsafe, r"unsafe\.ckpt")
    assert "weights_only=False" not in unsafe.stderr and "weights_only=False" not in line
    assert not (tmp_path / "pwned").exists()
    assert_one_line_error(other_count, r"(num_classes|classes).*(10|3)")


#: Each mistake: the command, and the one error line it must get.
MISTAKES: dict[str, tuple[list[str], str]] = {
    "no-gpu": (["fit", *TINY, "--trainer.accelerator=gpu"], r"accelerator=gpu.*no GPU"),
    "backbones-input-size": (
        ["backbones", "resnet18", "--input-size", "8"],
        r"resnet18.*(8|size)",
    ),
    "option-type": (["fit", *TINY, "--trainer.max_epochs=abc"], r"max_epochs.*abc"),
    "empty-yaml": (["fit", "--config", "empty.yaml"], r"empty\.yaml.*empty"),
    "divergence": (
        ["fit", *TINY, "--model.optimizer=SGD", "--model.optimizer.init_args.lr=1e12"],
        r"non-finite",
    ),
    "bad-image": (
        [
            "fit",
            "--model.backbone=resnet20",
            "--data=ImageFolderDataModule",
            "--data.data_dir=images",
            "--data.image_size=8",
            "--data.batch_size=8",
            "--data.num_workers=1",
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
        ],
        r"broken\.png",
    ),
}


def test_mistakes_end_in_one_line_and_the_debug_variable_keeps_the_traceback(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty.yaml").write_text("")
    bad_image_folder(tmp_path / "images")
    cases = [Case(args, tmp_path) for args, _ in MISTAKES.values()]
    debug = Case(["fit", "--config", "empty.yaml"], tmp_path, {"LIT_CLASSIFIERS_DEBUG": "1"})
    *results, debugged = run_each([*cases, debug], tmp_path / "io")
    for (name, (_, pattern)), result in zip(MISTAKES.items(), results, strict=True):
        assert result.returncode != 0, name
        assert_one_line_error(result, pattern)
    assert debugged.returncode != 0 and "Traceback" in debugged.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
