"""Every recipe under configs/ parses and builds its model, datamodule and optimiser."""

from __future__ import annotations

from pathlib import Path

import pytest
from datamodule_fixtures import make_folder_layout, write_stl10

from lit_classifiers.cli import cli_main
from lit_classifiers.models.base import Backbone

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.rglob("*.yaml"))
PAPER_RECIPES = {
    f"{d}/{b}"
    for d in ("stl10", "imagenet")
    for b in ("alexnet", "vgg16", "vgg16_bn", "resnet18", "resnet50")
}


def test_every_dataset_has_the_five_recipes():
    assert {str(p.relative_to(CONFIGS).with_suffix("")) for p in RECIPES} >= PAPER_RECIPES


def test_every_recipe_says_where_its_numbers_come_from():
    for recipe in RECIPES:
        comments = [line for line in recipe.read_text().splitlines() if line.startswith("#")]
        assert len(comments) >= 3, recipe
        assert any(
            word in " ".join(comments) for word in ("et al.", "Section", "reference", "arXiv")
        ), recipe


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipes")
    write_stl10(root / "stl10", n_train=100, n_test=20)
    return {"stl10": root / "stl10", "imagenet": make_folder_layout(root / "imagenet")}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_recipe_instantiates_model_and_datamodule(recipe, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(recipe)]
    dataset = recipe.parent.name
    if dataset in tiny_data:
        args += ["--data.init_args.data_dir", str(tiny_data[dataset])]
    cli = cli_main(args, run=False)
    model, data = cli.model, cli.datamodule
    assert model.hparams.backbone == recipe.stem
    assert isinstance(model.backbone, Backbone)
    data.setup("fit")
    assert model.num_classes == data.num_classes == len(data.class_names)
    assert model.hparams.in_channels == data.in_channels
    assert data.image_size >= model.backbone.min_input_size
    images, labels = next(iter(data.val_dataloader()))
    assert tuple(images.shape[1:]) == (data.in_channels, data.image_size, data.image_size)
    assert int(labels.max()) < model.num_classes
    model.trainer = cli.trainer
    optimizers = model.configure_optimizers()
    assert optimizers is not None
