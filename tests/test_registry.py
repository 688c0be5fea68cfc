"""The registry: one record per backbone, natural order, wildcards, errors, outside packages.

Expected values are facts from outside the code under test: the papers, and torchvision's
weights metadata (``num_params``, ``min_size``, ``_ops``) for the networks it has.
"""

import importlib
import sys
import textwrap

import pytest
import torch
from torch import nn
from torchvision.models import get_model_weights

import lit_classifiers
from lit_classifiers import (
    BackboneInfo,
    Paper,
    create_backbone,
    get_backbone_info,
    list_backbones,
    register_backbone,
    registry,
)
from lit_classifiers import models as models_package
from lit_classifiers.summary import count_macs

# Natural order: digits compare as numbers (resnet18 before resnet101), "_bn" after its base.
ALL_NAMES = [
    "alexnet",
    "alexnet_owt",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]
CIFAR_RESNETS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
# Ours -> torchvision's model of the same architecture.
TORCHVISION = {
    "alexnet_owt": "alexnet",
    **{f"resnet{depth}": f"resnet{depth}" for depth in (18, 34, 50, 101, 152)},
    **{f"vgg{depth}{bn}": f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")},
}
# The package's attributes of these names are the builders alexnet(), ...: take the files.
FAMILY_FILES = {
    family: importlib.import_module(f"lit_classifiers.models.{family}")
    for family in ("alexnet", "vgg", "resnet", "resnet_cifar")
}


@pytest.fixture
def clean_registry():
    """Leave the registry as it was, whatever a test registers."""
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_list_is_in_natural_order_and_filters_with_wildcards():
    assert list_backbones() == ALL_NAMES
    assert list_backbones("*_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    assert list_backbones("vgg1[36]") == ["vgg13", "vgg16"]
    assert list_backbones("resnet1*") == ["resnet18", "resnet101", "resnet110", "resnet152"]
    assert list_backbones("nothing*") == []


def test_natural_order_of_names_registered_from_outside(clean_registry):
    for name in ("net10b", "net9b", "Net2", "net10a"):
        register_backbone(name, paper=Paper("x", 2024), default_input_size=8)(nn.Linear)
    assert list_backbones("[nN]et*") == ["Net2", "net9b", "net10a", "net10b"]


def test_papers():
    resnet50 = get_backbone_info("resnet50").paper
    assert (resnet50.arxiv, resnet50.year) == ("1512.03385", 2015)
    assert resnet50.title == "Deep Residual Learning for Image Recognition"
    assert get_backbone_info("resnet20").paper == resnet50  # Section 4.2 of the same paper
    assert get_backbone_info("vgg16").paper.arxiv == "1409.1556"
    assert get_backbone_info("alexnet_owt").paper.arxiv == "1404.5997"
    alexnet_2012 = get_backbone_info("alexnet").paper
    assert (alexnet_2012.year, alexnet_2012.arxiv) == (2012, None)
    assert alexnet_2012.title == "ImageNet Classification with Deep Convolutional Neural Networks"


# resnet101 and resnet152 (slow): counting their MACs takes seconds; resnet50 has their blocks.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in ("resnet101", "resnet152") else n
        for n in TORCHVISION
    ],
)
def test_records_agree_with_torchvisions_metadata(name):
    """Parameter count and GMACs at 224 (torchvision's ``_ops``) of torchvision's weights."""
    info = get_backbone_info(name)
    meta = get_model_weights(TORCHVISION[name]).DEFAULT.meta
    assert info.torchvision_name == TORCHVISION[name]
    assert info.num_classes == len(meta["categories"]) == 1000
    assert info.num_params == meta["num_params"]
    assert info.default_input_size == 224
    assert round(count_macs(name) / 1e9, 3) == meta["_ops"]
    if not name.startswith("resnet"):  # torchvision lets ResNets run below their total stride
        assert (info.min_input_size, info.min_input_size) == meta["min_size"]


def test_records_without_torchvision_counterpart():
    alexnet_2012 = get_backbone_info("alexnet")
    assert alexnet_2012.torchvision_name is None
    # 227, not the paper's "224": 11x11/4 without padding needs (55 - 1) * 4 + 11 = 227 pixels
    # to give the 55x55 maps of the paper's Figure 2.
    assert (alexnet_2012.default_input_size, alexnet_2012.num_classes) == (227, 1000)
    assert alexnet_2012.num_params == 62_378_344  # derived by hand in test_backbones.py
    for name in CIFAR_RESNETS:
        info = get_backbone_info(name)
        # Section 4.2: 32x32 inputs, a 10-way fully-connected layer (CIFAR-10).
        assert (info.default_input_size, info.num_classes, info.torchvision_name) == (32, 10, None)
    row = get_backbone_info("resnet20").as_dict()
    assert (row["num_params"], row["num_classes"], row["family"]) == (269_722, 10, "resnet_cifar")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_default_build_is_what_the_record_reports(name):
    """``create_backbone(name)`` builds the record's classes: the count ``num_params`` gives."""
    info = get_backbone_info(name)
    with torch.device("meta"):
        model = create_backbone(name)
        explicit = create_backbone(name, 7)
    assert model.num_classes == info.num_classes
    assert sum(p.numel() for p in model.parameters()) == info.num_params
    assert explicit.num_classes == 7


@pytest.mark.parametrize("name", ALL_NAMES)
def test_record_names_the_models_classifier_and_first_convolution(name):
    """The record's paths lead to the last Linear and the first Conv2d of the built model."""
    info = get_backbone_info(name)
    with torch.device("meta"):
        model = create_backbone(name)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert model.get_submodule(info.classifier) is linears[-1] is model.get_classifier()
    assert model.get_submodule(info.first_conv) is convs[0]
    assert (model.name, model.min_input_size) == (name, info.min_input_size)


@pytest.mark.parametrize("family", FAMILY_FILES)
def test_a_family_file_is_its_records_and_builders(family):
    """Each record has a builder, each builder a record; both are exported from the package."""
    module = FAMILY_FILES[family]
    registered = [
        n for n in ALL_NAMES if get_backbone_info(n).builder.__module__ == module.__name__
    ]
    assert sorted(module.BACKBONES) == sorted(registered)
    for name in registered:
        info = get_backbone_info(name)
        assert info.family == family
        assert name in module.__all__
        assert getattr(models_package, name) is info.builder is getattr(module, name)


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet5'.*did you mean.*'resnet50'"):
        create_backbone("resnet5")
    with pytest.raises(KeyError, match="vgg16_bn"):
        get_backbone_info("vgg16bn")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        create_backbone("resnet20", 0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got '10'"):
        create_backbone("resnet20", "10")
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1, got 0"):
        create_backbone("resnet20", 10, in_channels=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'depth'"):
        create_backbone("resnet20", 10, depth=3)


def test_registering_a_name_twice_is_an_error(clean_registry):
    with pytest.raises(ValueError, match="'resnet18' is already registered"):

        @register_backbone(paper=Paper("x", 2024), default_input_size=32)
        def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
            return nn.Linear(in_channels, num_classes)

    assert get_backbone_info("resnet18").torchvision_name == "resnet18"


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ({"min_input_size": 64}, r"'bad': need 1 <= min_input_size <= default_input_size, got 64"),
        ({"min_input_size": 0}, r"'bad': min_input_size must be an integer >= 1, got 0"),
        ({"num_classes": 2.5}, r"'bad': num_classes must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_facts_are_refused_at_registration(clean_registry, facts, message):
    with pytest.raises(ValueError, match=message):
        register_backbone("bad", paper=Paper("x", 2024), default_input_size=32, **facts)(nn.Linear)
    assert "bad" not in list_backbones()


def test_inline_registration_needs_the_facts(clean_registry):
    with pytest.raises(TypeError, match=r"register_backbone\('x'\): paper= and default_input"):
        register_backbone("x", default_input_size=32)


@pytest.fixture
def package_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("their_")]:
        sys.modules.pop(name)


def test_backbone_registered_from_another_package(package_dir, clean_registry):
    package = package_dir / "their_models"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from lit_classifiers import Paper, register_backbone

            @register_backbone(
                "their_mlp", paper=Paper("An MLP", 2024, arxiv="2401.00001"),
                default_input_size=16, min_input_size=8, classifier="4",
            )
            def build(num_classes: int = 1000, in_channels: int = 3, hidden: int = 32):
                return nn.Sequential(
                    nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                    nn.Linear(in_channels * 16, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
                )
            """
        )
    )
    import their_models  # noqa: F401

    assert "their_mlp" in list_backbones("their_*")
    model = create_backbone("their_mlp", 4, hidden=8)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    info = get_backbone_info("their_mlp")
    assert (info.min_input_size, info.classifier, info.family) == (8, "4", "their_models")
    assert info.num_params == 3 * 16 * 32 + 32 + 32 * 1000 + 1000
    # The record's classifier path lets weights of another class count load without it.
    saved = package_dir / "mlp.pt"
    torch.save(create_backbone("their_mlp", hidden=8).state_dict(), saved)
    reloaded = create_backbone("their_mlp", 3, hidden=8, weights=saved)
    assert torch.equal(reloaded[2].weight, torch.load(saved, weights_only=True)["2.weight"])


def test_a_new_family_file_registers_and_exports_its_variants(package_dir, clean_registry):
    """The layout of the built-in families works for a file outside the package too: a table
    of records and one bare ``@register_backbone`` builder per record."""
    (package_dir / "their_family.py").write_text(
        textwrap.dedent(
            """
            from typing import Any

            from torch import Tensor, nn
            from lit_classifiers import Backbone, BackboneInfo, Paper, get_backbone_info
            from lit_classifiers import register_backbone

            __all__ = ["TinyConv"]

            BACKBONES = {
                "their_tiny8": BackboneInfo(
                    paper=Paper("Tiny", 2024), default_input_size=32, min_input_size=8,
                    num_classes=7, classifier="fc", first_conv="conv",
                ),
            }

            class TinyConv(Backbone):
                def __init__(self, name: str, width: int, num_classes=None, in_channels=3):
                    record = get_backbone_info(name)
                    super().__init__(record)
                    num_classes = record.num_classes if num_classes is None else num_classes
                    self.in_channels, self.num_features = in_channels, width
                    self.conv = nn.Conv2d(in_channels, width, 3, stride=2)
                    self.fc = nn.Linear(width, num_classes)

                def forward_features(self, x: Tensor) -> Tensor:
                    return self.conv(x).mean((2, 3))

            @register_backbone
            def their_tiny8(**kwargs: Any) -> TinyConv:
                return TinyConv("their_tiny8", 8, **kwargs)
            """
        )
    )
    import their_family

    assert their_family.__all__ == ["TinyConv", "their_tiny8"]
    info = get_backbone_info("their_tiny8")
    assert (info.family, info.builder) == ("their_family", their_family.their_tiny8)
    model = create_backbone("their_tiny8")
    assert model.num_classes == 7 == info.num_classes
    assert info.num_params == 3 * 8 * 9 + 8 + 8 * 7 + 7
    with pytest.raises(ValueError, match="their_tiny8 needs inputs of at least 8x8"):
        model(torch.randn(1, 3, 7, 7))
    gray = create_backbone("their_tiny8", 2, in_channels=1)
    assert gray(torch.randn(1, 1, 8, 8)).shape == (1, 2)


def test_bare_registration_needs_a_record(package_dir, clean_registry):
    (package_dir / "their_untabled.py").write_text(
        "from torch import nn\nfrom lit_classifiers import register_backbone\n\n"
        "@register_backbone\ndef net(**kwargs):\n    return nn.Linear(3, 3)\n"
    )
    with pytest.raises(TypeError, match="their_untabled.net: their_untabled has no BACKBONES"):
        import their_untabled  # noqa: F401
    (package_dir / "their_mistabled.py").write_text(
        "from torch import nn\nfrom lit_classifiers import BackboneInfo, Paper\n"
        "from lit_classifiers import register_backbone\n\n"
        "BACKBONES = {'other': BackboneInfo(paper=Paper('x', 2024), default_input_size=8)}\n\n"
        "@register_backbone\ndef net(**kwargs):\n    return nn.Linear(3, 3)\n"
    )
    with pytest.raises(KeyError, match=r"no record 'net' in their_mistabled.BACKBONES.*'other'"):
        import their_mistabled  # noqa: F401
    assert "net" not in list_backbones()


def test_public_api():
    for name in ("register_backbone", "list_backbones", "create_backbone", "get_backbone_info"):
        assert name in lit_classifiers.__all__
    assert {"Backbone", "BackboneInfo", "Paper"} <= set(lit_classifiers.__all__)
    assert isinstance(get_backbone_info("vgg11"), BackboneInfo)
    from lit_classifiers.models import alexnet_owt, resnet18, resnet110, vgg19_bn  # noqa: F401
