"""The registry: names, wildcards, metadata, errors, and backbones registered from outside."""

import sys
import textwrap

import pytest
import torch
from torch import nn

import lit_classifiers
from lit_classifiers import (
    Paper,
    create_backbone,
    get_backbone_info,
    list_backbones,
    register_backbone,
    registry,
)


@pytest.fixture
def clean_registry():
    """Leave the registry as it was, whatever a test registers."""
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_list_is_sorted_and_filters_with_wildcards():
    names = list_backbones()
    assert names == sorted(names)
    assert list_backbones("*_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    assert list_backbones("vgg1[36]") == ["vgg13", "vgg16"]
    assert list_backbones("nothing*") == []


def test_metadata():
    info = get_backbone_info("resnet50")
    assert info.paper.arxiv == "1512.03385" and info.paper.year == 2015
    assert "Deep Residual Learning" in info.paper.title
    assert info.torchvision_name == "resnet50"
    assert info.num_params == 25_557_032
    assert (info.min_input_size, info.default_input_size) == (32, 224)
    assert get_backbone_info("alexnet").default_input_size == 227
    assert get_backbone_info("alexnet").torchvision_name is None
    assert get_backbone_info("alexnet_owt").paper.arxiv == "1404.5997"
    assert get_backbone_info("vgg16").paper.arxiv == "1409.1556"
    row = get_backbone_info("resnet20").as_dict()
    assert row["num_params"] == 269_722 and row["family"] == "resnet_cifar"


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet5'.*did you mean.*'resnet50'"):
        create_backbone("resnet5")
    with pytest.raises(KeyError, match="vgg16_bn"):
        get_backbone_info("vgg16bn")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        create_backbone("resnet20", 0)
    with pytest.raises(ValueError, match="in_channels must be >= 1, got 0"):
        create_backbone("resnet20", 10, in_channels=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'depth'"):
        create_backbone("resnet20", 10, depth=3)


def test_registering_a_name_twice_is_an_error(clean_registry):
    with pytest.raises(ValueError, match="'resnet18' is already registered"):

        @register_backbone(paper=Paper("x", 2024), default_input_size=32)
        def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
            return nn.Linear(in_channels, num_classes)

    assert get_backbone_info("resnet18").torchvision_name == "resnet18"


def test_backbone_registered_from_another_package(tmp_path, monkeypatch, clean_registry):
    package = tmp_path / "their_models"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from lit_classifiers import Paper, register_backbone

            @register_backbone(
                "their_mlp", paper=Paper("An MLP", 2024, arxiv="2401.00001"),
                default_input_size=16, min_input_size=8,
            )
            def build(num_classes: int = 1000, in_channels: int = 3, hidden: int = 32):
                return nn.Sequential(
                    nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                    nn.Linear(in_channels * 16, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import their_models  # noqa: F401

    assert "their_mlp" in list_backbones("their_*")
    model = create_backbone("their_mlp", 4, hidden=8)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    info = get_backbone_info("their_mlp")
    assert info.min_input_size == 8
    assert info.num_params == 3 * 16 * 32 + 32 + 32 * 1000 + 1000
    assert info.family == "their_models"
    sys.modules.pop("their_models")


def test_public_api():
    for name in ("register_backbone", "list_backbones", "create_backbone", "get_backbone_info"):
        assert name in lit_classifiers.__all__
