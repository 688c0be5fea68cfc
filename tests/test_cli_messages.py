"""Bad numbers get one line naming the option and what it takes (in-process, ``cli.main``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.cli import TINY

from lit_classifiers import cli


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (
            ["--trainer.max_epochs", "-5"],
            r"^lit-classifiers: error: --trainer: `max_epochs` must be a non-negative integer "
            r"or -1\. You passed in -5\.$",
        ),
        (
            ["--model.optimizer.init_args.lr", "nan"],
            r"^lit-classifiers fit: error: --model\.optimizer\.init_args\.lr nan: lr must be a "
            r"positive finite number",
        ),
    ],
    ids=["max_epochs", "optimizer_lr"],
)
def test_a_bad_number_is_named_with_what_it_takes(
    option: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    try:
        code = cli.main(["fit", *TINY, *option])
    except SystemExit as exit:  # a parsing error ends in the parser, as argparse's do
        code = exit.code
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    assert "accelerator" not in errors[0] and "no such class" not in errors[0]
    assert re.search(expected, errors[0]), errors[0]
