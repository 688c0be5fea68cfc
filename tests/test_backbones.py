"""The architectures: torchvision equivalence, the papers' numbers, every option, every size."""

import pytest
import torch
import torchvision
from torch import nn

from lit_classifiers import create_backbone, get_backbone_info, list_backbones
from lit_classifiers.models.alexnet import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, AlexNet

ALL = list_backbones()
WITH_TORCHVISION = [n for n in ALL if get_backbone_info(n).torchvision_name]


def test_every_family_is_registered():
    assert list_backbones("alexnet*") == ["alexnet", "alexnet_owt"]
    assert len(list_backbones("vgg*")) == 8
    assert list_backbones("resnet*") == sorted(
        f"resnet{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110)
    )
    assert len(WITH_TORCHVISION) == 1 + 8 + 5


@pytest.mark.parametrize("name", WITH_TORCHVISION)
def test_matches_torchvision(name):
    """Same parameter count; torchvision's state_dict loads strictly and gives the same logits."""
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(get_backbone_info(name).torchvision_name).eval()
    ours = create_backbone(name).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert get_backbone_info(name).num_params == sum(p.numel() for p in theirs.parameters())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


def test_alexnet_2012_parameter_count():
    model = create_backbone("alexnet")
    assert sum(p.numel() for p in model.parameters()) == 62_378_344
    assert get_backbone_info("alexnet").num_params == 62_378_344


# Table 6 of He et al. 2015 gives 0.27M, 0.46M, 0.66M, 0.85M and 1.7M; these are the exact
# counts of option-A networks with 10 classes.
CIFAR_PARAMS = {
    "resnet20": (269_722, 0.27),
    "resnet32": (464_154, 0.46),
    "resnet44": (658_586, 0.66),
    "resnet56": (853_018, 0.85),
    "resnet110": (1_727_962, 1.7),
}


@pytest.mark.parametrize("name", CIFAR_PARAMS)
def test_small_image_resnet_parameter_counts(name):
    exact, paper_millions = CIFAR_PARAMS[name]
    count = sum(p.numel() for p in create_backbone(name, 10).parameters())
    assert count == exact
    digits = 1 if name == "resnet110" else 2
    assert round(count / 1e6, digits) == paper_millions
    depth = int(name.removeprefix("resnet"))
    convs_and_fc = [
        m for m in create_backbone(name, 10).modules() if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    assert len(convs_and_fc) == depth  # 6n+2 weighted layers, parameter-free shortcuts


def test_alexnet_2012_structure():
    model = create_backbone("alexnet")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.features) == 2
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 3 and p.stride == 2 for p in pools) and len(pools) == 3
    # 227x227 gives the paper's 6x6x256 = 9216 features before the classifier.
    assert model.features(torch.randn(1, 3, 227, 227)).shape == (1, 256, 6, 6)


def test_alexnet_2012_paper_initialisation():
    torch.manual_seed(0)
    model = create_backbone("alexnet")
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    biases = [layer.bias.unique().tolist() for layer in layers]
    assert biases == [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0]]
    for layer in layers:
        assert abs(layer.weight.std().item() - 0.01) < 0.002
        assert abs(layer.weight.mean().item()) < 0.002


def test_alexnet_lrn_is_the_papers_formula():
    """b = a / (k + alpha * sum over 5 neighbouring channels of a^2)^beta, alpha=1e-4."""
    lrn = next(
        m for m in create_backbone("alexnet").features if isinstance(m, nn.LocalResponseNorm)
    )
    a = torch.randn(2, 12, 5, 5) * 30
    half = LRN_SIZE // 2
    padded = nn.functional.pad(a.pow(2), (0, 0, 0, 0, half, half))
    window_sums = torch.stack([padded[:, c : c + LRN_SIZE].sum(1) for c in range(a.shape[1])], 1)
    expected = a / (LRN_K + LRN_ALPHA * window_sums).pow(LRN_BETA)
    torch.testing.assert_close(lrn(a), expected)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_at_96_with_10_classes(name):
    model = create_backbone(name, 10)
    x = torch.randn(2, 3, 96, 96)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


FAMILY_REPRESENTATIVES = ["alexnet", "alexnet_owt", "vgg11_bn", "resnet18", "resnet50", "resnet20"]


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_minimum_size_works_and_below_is_a_clear_error(name):
    model = create_backbone(name, 10).eval()
    size = get_backbone_info(name).min_input_size
    assert size == model.min_input_size
    assert model(torch.randn(1, 3, size, size)).shape == (1, 10)
    with pytest.raises(ValueError, match=rf"{name} needs inputs of at least {size}x{size}.*got"):
        model(torch.randn(1, 3, size - 1, size + 5))


@pytest.mark.parametrize("name", ["alexnet", "alexnet_owt", "vgg11"])
def test_minimum_size_is_tight(name):
    """For AlexNet and VGG the pools make the minimum a hard limit of the network itself."""
    model = create_backbone(name, 10).eval()
    size = model.min_input_size
    with pytest.raises(RuntimeError):
        model.forward_head(model.forward_features(torch.randn(1, 3, size - 1, size - 1)))


def test_vgg_keeps_samples_apart_at_any_size():
    """The founding document's view(-1, 512*7*7) mixed samples at 96x96; ours must not."""
    model = create_backbone("vgg11", 10).eval()
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 10)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_other_input_channels(name):
    model = create_backbone(name, 5, in_channels=1)
    assert model(torch.randn(2, 1, 96, 96)).shape == (2, 5)
    with pytest.raises(ValueError, match="in_channels=1.*3 channels"):
        model(torch.randn(2, 3, 96, 96))
    model4 = create_backbone(name, 5, in_channels=4)
    assert model4(torch.randn(2, 4, 96, 96)).shape == (2, 5)


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_features_and_classifier_api(name):
    model = create_backbone(name, 7, dropout=0.0).eval()
    x = torch.randn(2, 3, 96, 96)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    torch.testing.assert_close(model.get_classifier()(features), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    assert isinstance(model.get_classifier(), nn.Linear)


def test_dropout_option_reaches_the_head():
    assert [
        m.p for m in create_backbone("vgg16", dropout=0.2).modules() if isinstance(m, nn.Dropout)
    ] == [0.2, 0.2]
    assert create_backbone("resnet18", dropout=0.3).head_drop.p == 0.3
    model = create_backbone("resnet20", 10, dropout=0.5).train()
    x = torch.randn(4, 3, 32, 32)
    assert not torch.equal(model.forward_head(model.forward_features(x)), model.eval()(x))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20"])
def test_zero_init_residual_starts_blocks_as_identity(name):
    model = create_backbone(name, 10, zero_init_residual=True)
    last_bns = [b.last_bn for b in model.modules() if hasattr(b, "last_bn")]
    assert last_bns and all(torch.all(bn.weight == 0) for bn in last_bns)
    default = create_backbone(name, 10)
    assert all(torch.all(b.last_bn.weight == 1) for b in default.modules() if hasattr(b, "last_bn"))


def test_bottleneck_is_v1_5():
    """The stride of a downsampling bottleneck sits on its 3x3 convolution."""
    block = create_backbone("resnet50").layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


def test_alexnet_is_an_alexnet():
    assert isinstance(create_backbone("alexnet"), AlexNet)
