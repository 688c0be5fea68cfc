"""The checks of our own that turn a failed parse into one line (lit_classifiers/cli_mistakes.py),
in-process on hand-made option tables: no parser, no Lightning run."""

from __future__ import annotations

from lit_classifiers.cli_mistakes import (
    command_line_options,
    unknown_option,
    wrong_number,
    wrong_value,
)

#: A parser's flattened defaults, as ``parser.get_defaults()`` gives them (a few of them).
DEFAULTS = {
    "model.lr": None,
    "model.optimizer.class_path": "torch.optim.SGD",
    "model.optimizer.init_args.lr": 0.1,
    "trainer.max_epochs": None,
    "trainer.logger.class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "data": None,
}


def test_command_line_options_read_both_spellings_and_appends() -> None:
    args = ["--a=1", "--b", "2", "--c", "--trainer.logger+", "CSVLogger"]
    assert list(command_line_options(args)) == [
        ("a", "1"),
        ("b", "2"),
        ("c", None),
        ("trainer.logger", "CSVLogger"),
    ]


def test_an_unknown_option_gets_the_one_people_meant() -> None:
    assert unknown_option("lr", DEFAULTS, {}) == "--lr: no such option; did you mean --model.lr?"
    assert unknown_option("trainer.max_epoch", DEFAULTS, {}) == (
        "--trainer.max_epoch: no such option; did you mean --trainer.max_epochs?"
    )
    assert unknown_option("model.num_classes", DEFAULTS, {}).endswith("(--data.num_classes)")


def test_options_inside_a_class_are_checked_against_that_class() -> None:
    assert unknown_option("model.optimizer.init_args.lrr", DEFAULTS, {}) == (
        "--model.optimizer.init_args.lrr: SGD has no such argument; did you mean "
        "--model.optimizer.init_args.lr?"
    )
    # Adam's betas is fine once --model.optimizer Adam is given, and SGD has none.
    given = {"model.optimizer": "Adam"}
    assert unknown_option("model.optimizer.init_args.betas", DEFAULTS, given) is None
    assert unknown_option("model.optimizer.init_args.betas", DEFAULTS, {}) is not None
    assert unknown_option("model.optimizer.lrr", DEFAULTS, {}) == (
        "--model.optimizer.lrr: SGD has no such argument; did you mean --model.optimizer.lr?"
    )
    assert unknown_option("data.imagesize", DEFAULTS, {"data": "DigitsDataModule"}) == (
        "--data.imagesize: DigitsDataModule has no such argument; did you mean --data.image_size?"
    )
    # A logger's arguments are its class's to check: no verdict here.
    assert unknown_option("trainer.logger.save_dir", DEFAULTS, {}) is None


def test_wrong_values_are_named_with_what_to_write() -> None:
    assert wrong_value("data", "Digits").startswith(
        "--data Digits: no such datamodule; did you mean DigitsDataModule?"
    )
    assert "--model.backbone resnet18" in wrong_value("model", "resnet18")
    assert wrong_value("model.optimizer", "Adamm").startswith(
        "--model.optimizer Adamm: no such class; did you mean Adam"
    )
    assert wrong_value("model.optimizer", "AdamW") is None
    assert wrong_value("model.lr_scheduler", "CosineAnnealingLR") is None
    for bad in ("nan", "inf", "0", "-0.1", "fast"):
        assert "lr must be a positive finite number" in wrong_value("model.lr", bad), bad
    assert wrong_value("model.lr", "0.05") is None


def test_a_number_option_given_text_says_what_it_takes() -> None:
    # From the classes' type hints: Trainer.max_epochs is Optional[int], val_check_interval
    # int | float | None, ClassifierModule.label_smoothing a float, image_size an int.
    assert wrong_number("trainer.max_epochs", "abc", {}) == (
        "--trainer.max_epochs abc: expected an integer or null"
    )
    assert wrong_number("trainer.max_epochs", "2.5", {}) is not None
    assert wrong_number("trainer.max_epochs", "null", {}) is None
    assert wrong_number("trainer.val_check_interval", "0.5", {}) is None
    assert wrong_number("model.label_smoothing", "lots", {}) == (
        "--model.label_smoothing lots: expected a number"
    )
    given = {"data": "DigitsDataModule"}
    assert wrong_number("data.image_size", "big", given) == (
        "--data.image_size big: expected an integer"
    )
    assert wrong_number("data.image_size", "16", given) is None
    # Options that take more than numbers are the parser's to judge.
    assert wrong_number("trainer.devices", "auto", {}) is None
    assert wrong_number("model.backbone", "resnet18", {}) is None
