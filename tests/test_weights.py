"""Loading weights: torchvision names through torchvision's cache, files, and adaptation."""

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from lit_classifiers import create_backbone
from lit_classifiers.weights import adapt_input_conv, load_weights


@pytest.fixture(scope="module")
def resnet18_imagenet_file(tmp_path_factory):
    """A 1000-class resnet18 state_dict saved to disk, standing in for trained weights."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_file_with_other_num_classes_loads_all_but_the_classifier(resnet18_imagenet_file):
    saved = torch.load(resnet18_imagenet_file, weights_only=True)
    model = create_backbone("resnet18", 10, weights=resnet18_imagenet_file)
    for key, value in model.state_dict().items():
        if key.startswith("fc."):
            assert value.shape[0] == 10
        else:
            assert torch.equal(value, saved[key]), key
    assert model.fc.weight.abs().sum() > 0  # a fresh classifier, not zeros


def test_file_with_same_num_classes_loads_everything(resnet18_imagenet_file):
    saved = torch.load(resnet18_imagenet_file, weights_only=True)
    model = create_backbone("resnet18", 1000, weights=str(resnet18_imagenet_file))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_first_convolution_is_adapted_to_other_channels(resnet18_imagenet_file):
    rgb = torch.load(resnet18_imagenet_file, weights_only=True)["conv1.weight"]
    gray = create_backbone("resnet18", 10, in_channels=1, weights=resnet18_imagenet_file)
    torch.testing.assert_close(gray.conv1.weight, rgb.sum(1, keepdim=True))
    rgbn = create_backbone("resnet18", 10, in_channels=4, weights=resnet18_imagenet_file)
    assert rgbn.conv1.weight.shape == (64, 4, 7, 7)
    torch.testing.assert_close(rgbn.conv1.weight[:, 3], rgb[:, 0] * 3 / 4)
    # Two RGB images stacked: the kernel is repeated and halved, so the response is the same.
    six = create_backbone("resnet18", 10, in_channels=6, weights=resnet18_imagenet_file)
    image = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(
        torch.nn.functional.conv2d(image.repeat(1, 2, 1, 1), six.conv1.weight),
        torch.nn.functional.conv2d(image, rgb),
        atol=1e-5,
        rtol=1e-4,
    )
    assert adapt_input_conv(rgb, 3).equal(rgb)


def test_torchvision_name_loads_from_torchvisions_cache(tmp_path, monkeypatch):
    """weights="DEFAULT" works offline once the file is in torch hub's cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    entry = torchvision.models.ResNet18_Weights.DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / Path(entry.url).name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(2)
    reference = torchvision.models.resnet18().eval()
    torch.save(reference.state_dict(), cached)
    for weights in ("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        ours = create_backbone("resnet18", weights=weights).eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert (ours(x) - reference(x)).abs().max() <= 1e-5


def test_unknown_torchvision_weights_name_lists_the_available_ones():
    with pytest.raises(
        ValueError, match=r"unknown weights 'IMAGENET9K'.*IMAGENET1K_V1.*IMAGENET1K_V2"
    ):
        create_backbone("resnet50", weights="IMAGENET9K")


def test_torchvision_name_for_a_backbone_without_counterpart():
    with pytest.raises(ValueError, match="'alexnet' has no torchvision counterpart"):
        create_backbone("alexnet", weights="DEFAULT")


def test_lightning_checkpoint_of_the_module_is_accepted(tmp_path, resnet18_imagenet_file):
    saved = torch.load(resnet18_imagenet_file, weights_only=True)
    checkpoint = {"epoch": 3, "state_dict": {f"backbone.{k}": v for k, v in saved.items()}}
    checkpoint["state_dict"]["criterion.weight"] = torch.ones(3)
    torch.save(checkpoint, tmp_path / "run.ckpt")
    model = create_backbone("resnet18", weights=tmp_path / "run.ckpt")
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])


def test_checkpoint_with_ema_gives_the_averaged_weights(tmp_path, resnet18_imagenet_file):
    saved = torch.load(resnet18_imagenet_file, weights_only=True)
    state = {f"backbone.{k}": torch.zeros_like(v) for k, v in saved.items()}
    state |= {f"ema.module.{k}": v for k, v in saved.items()}
    state["ema.n_averaged"] = torch.tensor(7)
    torch.save({"state_dict": state}, tmp_path / "ema.ckpt")
    model = create_backbone("resnet18", weights=tmp_path / "ema.ckpt")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_bad_weight_files_are_named(tmp_path, resnet18_imagenet_file):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_backbone("resnet18", weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"do not fit backbone 'resnet34'.*missing layer1\.2"):
        create_backbone("resnet34", weights=resnet18_imagenet_file)
    (tmp_path / "list.pt").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list.pt.*holds a list"):
        create_backbone("resnet18", weights=tmp_path / "list.pt")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_files_never_run_code(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"conv1.weight": _Payload(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match=r"evil.pt holds getattr, which is not a tensor") as e:
        create_backbone("resnet18", weights=tmp_path / "evil.pt")
    assert not marker.exists()
    # One line, and never torch's advice to load it with weights_only=False.
    assert "\n" not in str(e.value) and "False" not in str(e.value), str(e.value)


def test_paths_given_for_a_network_without_the_backbone_api(tmp_path):
    """A registry record's ``classifier`` and ``first_conv`` serve any nn.Module, not only
    lit_classifiers' Backbones: other classes and other input channels still load."""

    def net(num_classes: int, in_channels: int) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 4, 3),
            torch.nn.Flatten(),
            torch.nn.Linear(4, num_classes),
        )

    torch.manual_seed(3)
    trained = net(10, 3)
    torch.save(trained.state_dict(), tmp_path / "net.pt")
    model = net(2, 1)
    with pytest.raises(ValueError, match=r"do not fit backbone 'net'.*shape mismatch 0\.weight"):
        load_weights(model, tmp_path / "net.pt", "net")
    load_weights(model, tmp_path / "net.pt", "net", classifier="2", first_conv="0")
    torch.testing.assert_close(model[0].weight, trained[0].weight.sum(1, keepdim=True))
    assert torch.equal(model[0].bias, trained[0].bias)
    assert model[2].weight.shape == (2, 4)
