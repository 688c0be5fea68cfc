"""The architectures: torchvision equivalence, the papers' numbers, every option, every size.

Expected values come from outside the code under test: torchvision's models, and the papers
(Krizhevsky et al. 2012; Simonyan & Zisserman 2014, arXiv:1409.1556; He et al. 2015,
arXiv:1512.03385), quoted by section where they are used.
"""

import pytest
import torch
import torchvision
from helpers.modules import quick_backbone, random_weights
from torch import nn

from lit_classifiers import create_backbone, get_backbone_info, list_backbones
from lit_classifiers.models.alexnet import AlexNet

ALL = list_backbones()
IMAGENET_RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR_RESNETS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
VGGS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
# Ours -> torchvision's model of the same architecture.
TORCHVISION = {"alexnet_owt": "alexnet", **{n: n for n in IMAGENET_RESNETS + VGGS}}
# Building one of these takes seconds (VGG's 25088x4096 fc6 alone holds 103M weights to draw):
# their checks run in the slow tier; vgg11, vgg11_bn and resnet18-101 hold the same blocks in
# the fast one.
DEEP = {*VGGS[2:], "resnet152"}


def meta_backbone(name: str, *args, **kwargs) -> nn.Module:
    """The backbone built on the meta device: its modules, shapes and parameter counts, and a
    forward that propagates shapes and runs every input check, without drawing any weight."""
    with torch.device("meta"):
        return create_backbone(name, *args, **kwargs)


def meta_images(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def unless_deep(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n for n in names]


def test_every_family_is_registered():
    assert list_backbones("alexnet*") == ["alexnet", "alexnet_owt"]
    assert list_backbones("vgg*") == VGGS
    assert set(list_backbones("resnet*")) == set(IMAGENET_RESNETS + CIFAR_RESNETS)
    assert {n: get_backbone_info(n).torchvision_name for n in ALL} == {
        n: TORCHVISION.get(n) for n in ALL
    }


@pytest.mark.parametrize("name", unless_deep(list(TORCHVISION)))
def test_matches_torchvision(name):
    """Same parameter count; torchvision's state_dict loads strictly and gives the same logits."""
    with torch.device("meta"):  # shapes only: random tensors given to theirs, assigned to ours
        theirs = torchvision.models.get_model(TORCHVISION[name])
        ours = create_backbone(name).eval()
    theirs = random_weights(theirs).eval()  # any weights do: drawing torchvision's takes ~1 s
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


# Krizhevsky et al. 2012, Section 3.5 and Figure 2, run as one tower (the second, fourth and
# fifth convolutions see all channels of the previous layer): (out, in, kernel) per
# convolution, then the fully-connected layers, 6x6x256 = 9216 inputs to the first.
ALEXNET_2012_CONVS = [(96, 3, 11), (256, 96, 5), (384, 256, 3), (384, 384, 3), (256, 384, 3)]
ALEXNET_2012_FCS = [(4096, 9216), (4096, 4096), (1000, 4096)]


def test_alexnet_2012_parameter_count():
    expected = sum(out * inp * k * k + out for out, inp, k in ALEXNET_2012_CONVS)
    expected += sum(out * inp + out for out, inp in ALEXNET_2012_FCS)
    assert expected == 62_378_344
    model = meta_backbone("alexnet")
    assert sum(p.numel() for p in model.parameters()) == expected
    assert get_backbone_info("alexnet").num_params == expected


# He et al. 2015, Section 4.2: "The first layer is 3x3 convolutions. Then we use a stack of 6n
# layers with 3x3 convolutions on the feature maps of sizes {32, 16, 8} respectively, with 2n
# layers for each feature map size. The numbers of filters are {16, 32, 64} respectively. [...]
# a global average pooling, a 10-way fully-connected layer" and "identity shortcuts in all
# cases (i.e., option A)". Table 6 gives the parameter counts in millions.
CIFAR_N = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
CIFAR_TABLE_6_MILLIONS = {
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.85,
    "resnet110": 1.7,
}


def _option_a_params(n: int, classes: int = 10) -> int:
    """Section 4.2's network counted by hand: 3x3 convolutions without bias, each followed by a
    BatchNorm (Section 3.4) of 2 parameters per channel; option-A shortcuts have none."""

    def conv_bn(cin: int, cout: int) -> int:
        return cin * cout * 9 + 2 * cout

    total = conv_bn(3, 16)
    for cin, cout in ((16, 16), (16, 32), (32, 64)):
        total += conv_bn(cin, cout) + conv_bn(cout, cout)  # the stage's first block
        total += (n - 1) * 2 * conv_bn(cout, cout)
    return total + 64 * classes + classes


@pytest.mark.parametrize("name", CIFAR_N)
def test_small_image_resnet_parameter_counts(name):
    n = CIFAR_N[name]
    model = create_backbone(name, 10)
    count = sum(p.numel() for p in model.parameters())
    assert count == _option_a_params(n)
    digits = 1 if name == "resnet110" else 2
    assert round(count / 1e6, digits) == CIFAR_TABLE_6_MILLIONS[name]
    convs_and_fc = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(convs_and_fc) == 6 * n + 2 == int(name.removeprefix("resnet"))


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_small_image_resnet_stages_are_the_papers(name):
    """At 32x32: a 16-filter first layer, then 2n layers on 32x32 maps with 16 filters, 2n on
    16x16 with 32 and 2n on 8x8 with 64, then global pooling and 10 outputs."""
    model = create_backbone(name).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    shapes = []
    hooks = [c.register_forward_hook(lambda m, i, o: shapes.append(o.shape[1:])) for c in convs]
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    n = CIFAR_N[name]
    expected = [(16, 32, 32)] * (1 + 2 * n) + [(32, 16, 16)] * (2 * n) + [(64, 8, 8)] * (2 * n)
    assert [tuple(shape) for shape in shapes] == expected
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert logits.shape == (1, 10)


# He et al. 2015, Table 1: the kernels of a block's convolutions (two 3x3 in the 18- and
# 34-layer networks, 1x1-3x3-1x1 bottlenecks from 50 layers), its output widths in stages
# conv2_x to conv5_x, and the number of blocks per stage.
BASIC = ([3, 3], [64, 128, 256, 512])
BOTTLENECK = ([1, 3, 1], [256, 512, 1024, 2048])
RESNET_TABLE_1 = {
    "resnet18": (BASIC, [2, 2, 2, 2]),
    "resnet34": (BASIC, [3, 4, 6, 3]),
    "resnet50": (BOTTLENECK, [3, 4, 6, 3]),
    "resnet101": (BOTTLENECK, [3, 4, 23, 3]),
    "resnet152": (BOTTLENECK, [3, 8, 36, 3]),
}


@pytest.mark.parametrize("name", RESNET_TABLE_1)
def test_imagenet_resnet_stages_are_table_1(name):
    with torch.device("meta"):
        model = create_backbone(name)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    (kernels, widths), blocks = RESNET_TABLE_1[name]
    assert [len(stage) for stage in stages] == blocks
    for stage, width in zip(stages, widths, strict=True):
        for block in stage:
            convs = [m for n, m in block.named_children() if isinstance(m, nn.Conv2d)]
            assert [c.kernel_size[0] for c in convs] == kernels
            assert convs[-1].out_channels == width


# The 2012 network's layers in order. Section 3.3: LRN is "applied after applying the ReLU
# nonlinearity"; Section 3.5: "Response-normalization layers follow the first and second
# convolutional layers. Max-pooling layers [...] follow both response-normalization layers as
# well as the fifth convolutional layer. The ReLU non-linearity is applied to the output of
# every convolutional and fully-connected layer." and "The third, fourth, and fifth
# convolutional layers are connected to one another without any intervening pooling or
# normalization layers."
ALEXNET_2012_FEATURES = [
    *("conv", "relu", "lrn", "maxpool"),
    *("conv", "relu", "lrn", "maxpool"),
    *("conv", "relu", "conv", "relu", "conv", "relu", "maxpool"),
]
# Section 4.2: dropout sets "to zero the output of each hidden neuron with probability 0.5";
# "We use dropout in the first two fully-connected layers".
ALEXNET_2012_HEAD = ["fc", "relu", "dropout", "fc", "relu", "dropout", "fc"]
LAYER_KINDS = {
    nn.Conv2d: "conv",
    nn.ReLU: "relu",
    nn.LocalResponseNorm: "lrn",
    nn.MaxPool2d: "maxpool",
    nn.Linear: "fc",
    nn.Dropout: "dropout",
}


def _kinds(layers: nn.Sequential) -> list[str]:
    return [LAYER_KINDS[type(layer)] for layer in layers]


def test_alexnet_2012_layer_order_is_the_papers():
    model = meta_backbone("alexnet")
    assert _kinds(model.features) == ALEXNET_2012_FEATURES
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.in_channels, c.kernel_size[0]) for c in convs] == (
        ALEXNET_2012_CONVS
    )
    assert convs[0].stride == (4, 4)  # "with a stride of 4 pixels"
    # Section 3.4: overlapping pooling, "s = 2 and z = 3".
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 3 and p.stride == 2 for p in pools)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(fc.out_features, fc.in_features) for fc in linears] == ALEXNET_2012_FCS
    assert [k for k in _kinds(model.classifier) if k != "dropout"] == [
        k for k in ALEXNET_2012_HEAD if k != "dropout"
    ]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    # 227x227 gives the paper's 6x6x256 = 9216 features before the head.
    assert model.features(meta_images(1, 3, 227, 227)).shape == (1, 256, 6, 6)


def test_alexnet_2012_dropout_follows_fc6_and_fc7():
    assert _kinds(meta_backbone("alexnet").classifier) == ALEXNET_2012_HEAD
    # torchvision's order, dropout before fc6 and fc7, stays torchvision's.
    assert _kinds(meta_backbone("alexnet_owt").classifier) == [
        "dropout",
        "fc",
        "relu",
        "dropout",
        "fc",
        "relu",
        "fc",
    ]


def test_alexnet_2012_dropout_drops_the_outputs_of_fc6_and_fc7_in_training():
    """What each linear layer receives in training: fc6 the pooled features untouched, fc7 and
    fc8 the ReLU outputs of the layer before, each zeroed or scaled by 1 / (1 - p)."""
    torch.manual_seed(0)
    model = create_backbone("alexnet", 10, dropout=0.5).train()
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    inputs, outputs = [], []

    def record(module: nn.Module, args: tuple[torch.Tensor], output: torch.Tensor) -> None:
        # Copies: the in-place ReLU after each linear layer rewrites its output.
        inputs.append(args[0].clone())
        outputs.append(output.clone())

    hooks = [fc.register_forward_hook(record) for fc in linears]
    x = torch.randn(4, 3, 96, 96)
    with torch.no_grad():
        model(x)
        pooled = torch.flatten(model.avgpool(model.features(x)), 1)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(inputs[0], pooled)
    for before, received in ((outputs[0], inputs[1]), (outputs[1], inputs[2])):
        kept = torch.relu(before) * 2
        dropped = received == 0
        assert 0.3 < dropped.float().mean() < 0.7
        torch.testing.assert_close(received[~dropped], kept[~dropped])


def test_alexnet_2012_state_dict_keys_did_not_move_with_the_dropout():
    """Checkpoints written while dropout sat before fc6 and fc7 still load: the linear layers
    keep torchvision's positions, the same keys as ``alexnet_owt``'s head."""
    keys = [k for k in meta_backbone("alexnet").state_dict() if k.startswith("classifier.")]
    assert keys == [
        k for k in meta_backbone("alexnet_owt").state_dict() if k.startswith("classifier.")
    ]
    assert keys == [f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")]
    assert get_backbone_info("alexnet").classifier == "classifier.6"


def test_alexnet_2012_paper_initialisation():
    torch.manual_seed(0)
    model = create_backbone("alexnet")
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    biases = [layer.bias.unique().tolist() for layer in layers]
    assert biases == [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0]]
    for layer in layers:
        assert abs(layer.weight.std().item() - 0.01) < 0.002
        assert abs(layer.weight.mean().item()) < 0.002


def _papers_lrn(a: torch.Tensor) -> torch.Tensor:
    """Section 3.3, written out: b^i = a^i / (k + alpha * sum_j (a^j)^2)^beta with j from
    max(0, i - n/2) to min(N - 1, i + n/2), and "k = 2, n = 5, alpha = 10^-4, and beta = 0.75"."""
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    channels = a.shape[1]
    b = torch.empty_like(a)
    for i in range(channels):
        window = a[:, max(0, i - n // 2) : min(channels - 1, i + n // 2) + 1]
        b[:, i] = a[:, i] / (k + alpha * window.pow(2).sum(1)).pow(beta)
    return b


def test_alexnet_lrn_is_the_papers_formula():
    lrns = [m for m in meta_backbone("alexnet").features if isinstance(m, nn.LocalResponseNorm)]
    torch.manual_seed(0)
    # ReLU outputs at the scale where k and the sum both matter (alpha * sum of a^2 is about
    # k at a ~ 60), and a channel of zeros whose neighbours still normalise each other.
    a = (
        torch.relu(torch.randn(2, 12, 5, 5))
        * torch.tensor([1.0, 30.0, 100.0]).repeat(4)[:, None, None]
    )
    a[:, 5] = 0
    expected = _papers_lrn(a)
    assert len(lrns) == 2
    for lrn in lrns:
        torch.testing.assert_close(lrn(a), expected, rtol=1e-5, atol=1e-6)


# The deeper VGGs repeat vgg11's layers (their forward is held to torchvision's above): their
# backward adds nothing but seconds.
# vgg11_bn (slow): vgg11's backward through BatchNorm, which the ResNets hold in the fast tier.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in DEEP | {"vgg11_bn"} else n
        for n in ALL
        if n not in VGGS[2:]
    ],
)
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
    model = meta_backbone(name, 10).eval()
    size = get_backbone_info(name).min_input_size
    assert size == model.min_input_size
    assert model(meta_images(1, 3, size, size)).shape == (1, 10)
    with pytest.raises(ValueError, match=rf"{name} needs inputs of at least {size}x{size}.*got"):
        model(meta_images(1, 3, size - 1, size + 5))


@pytest.mark.parametrize("name", ["alexnet", "alexnet_owt", "vgg11"])
def test_minimum_size_is_tight(name):
    """For AlexNet and VGG the pools make the minimum a hard limit of the network itself."""
    model = meta_backbone(name, 10).eval()  # the meta kernels check their shapes as the real do
    size = model.min_input_size
    with pytest.raises(RuntimeError, match="Output size is too small"):
        model.forward_head(model.forward_features(meta_images(1, 3, size - 1, size - 1)))


def test_vgg_keeps_samples_apart_at_any_size():
    """The founding document's view(-1, 512*7*7) mixed samples at 96x96; ours must not."""
    model = quick_backbone("vgg11", 10).eval()
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 10)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_other_input_channels(name):
    model = meta_backbone(name, 5, in_channels=1)
    assert model(meta_images(2, 1, 96, 96)).shape == (2, 5)
    with pytest.raises(ValueError, match="in_channels=1.*3 channels"):
        model(meta_images(2, 3, 96, 96))
    model4 = meta_backbone(name, 5, in_channels=4)
    assert model4(meta_images(2, 4, 96, 96)).shape == (2, 5)


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_features_and_classifier_api(name):
    model = quick_backbone(name, 7, dropout=0.0).eval()
    x = torch.randn(2, 3, 96, 96)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    torch.testing.assert_close(model.get_classifier()(features), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    assert isinstance(model.get_classifier(), nn.Linear)


def test_dropout_option_reaches_the_head():
    assert [
        m.p for m in meta_backbone("vgg16", dropout=0.2).modules() if isinstance(m, nn.Dropout)
    ] == [0.2, 0.2]
    assert meta_backbone("resnet18", dropout=0.3).head_drop.p == 0.3
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
    block = meta_backbone("resnet50").layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


def test_alexnet_is_an_alexnet():
    assert isinstance(meta_backbone("alexnet"), AlexNet)
