"""Regularisation, EMA, fine-tuning and schedules: each checked where breaking it would show."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers.modules import NUM_CLASSES, TinyNet, make_loader, make_tensors, make_trainer, sgd
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from torchvision.transforms import v2

from lit_classifiers.module import ClassifierModule


def _record_loss_targets(model: ClassifierModule) -> list[torch.Tensor]:
    """Spy on what the training loss is computed against."""
    seen: list[torch.Tensor] = []
    forward = model.criterion.forward

    def spy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen.append(targets.detach().clone())
        return forward(logits, targets)

    model.criterion.forward = spy  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize(
    ("mixup", "cutmix", "kind"),
    [(0.4, 0.0, v2.MixUp), (0.0, 1.0, v2.CutMix), (0.4, 1.0, v2.RandomChoice)],
)
def test_mixup_and_cutmix_train_on_soft_targets(mixup: float, cutmix: float, kind: type) -> None:
    model = ClassifierModule(
        TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, mixup_alpha=mixup, cutmix_alpha=cutmix
    )
    assert isinstance(model.batch_mix, kind)
    targets = _record_loss_targets(model)
    make_trainer(limit_train_batches=4).fit(model, make_loader(16, shuffle=True))
    assert len(targets) == 4
    for soft in targets:
        assert soft.shape == (4, NUM_CLASSES) and soft.is_floating_point()
        torch.testing.assert_close(soft.sum(-1), torch.ones(4))
    assert any(((soft > 0) & (soft < 1)).any() for soft in targets)  # something was mixed


def test_without_mixing_targets_are_the_labels() -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    assert model.batch_mix is None
    targets = _record_loss_targets(model)
    make_trainer(limit_train_batches=1).fit(model, make_loader(8))
    assert targets[0].dtype == torch.int64


def test_label_smoothing_is_in_the_training_loss_only() -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, label_smoothing=0.2)
    logits = torch.tensor([[8.0, 0, 0, 0, 0]])
    target = torch.tensor([0])
    smoothed = model.criterion(logits, target)
    assert smoothed == pytest.approx(F.cross_entropy(logits, target, label_smoothing=0.2).item())
    assert smoothed > F.cross_entropy(logits, target) + 0.5
    # Validation reports plain cross-entropy, comparable across recipes.
    result = make_trainer().validate(model, make_loader(8), verbose=False)[0]
    model.eval()
    images, labels = make_tensors(8)
    assert result["val/loss"] == pytest.approx(
        F.cross_entropy(model(images), labels).item(), abs=1e-5
    )


def test_ema_weights_are_kept_used_for_evaluation_and_saved(tmp_path: Any) -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, ema_decay=0.7)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, make_loader(24, shuffle=True))
    live, ema = model.backbone.fc.weight, model.ema.module.fc.weight
    assert not torch.equal(live, ema)
    assert int(model.ema.n_averaged) == trainer.global_step

    images, labels = make_tensors(8)
    model.eval()
    with torch.no_grad():
        ema_loss = F.cross_entropy(model.ema.module(images), labels).item()
        live_loss = F.cross_entropy(model.backbone(images), labels).item()
    assert ema_loss != pytest.approx(live_loss, abs=1e-4)
    result = trainer.validate(model, make_loader(8), verbose=False)[0]
    assert result["val/loss"] == pytest.approx(ema_loss, abs=1e-5)

    trainer.save_checkpoint(tmp_path / "ema.ckpt")
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "ema.ckpt", backbone=TinyNet())
    assert torch.equal(loaded.ema.module.fc.weight, ema)
    assert int(loaded.ema.n_averaged) == trainer.global_step


def _group_members(model: ClassifierModule) -> dict[str, set[int]]:
    optimizer = model.configure_optimizers()["optimizer"]
    return {g["name"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}


def test_no_weight_decay_on_norm_layers_and_biases() -> None:
    model = ClassifierModule(
        TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, no_weight_decay_norm_and_bias=True
    )
    optimizer = model.configure_optimizers()["optimizer"]
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay == {"decay": 1e-4, "no_decay": 0.0}
    members = _group_members(model)
    net = model.backbone
    assert members["decay"] == {id(net.conv.weight), id(net.fc.weight)}
    assert members["no_decay"] == {id(net.bn.weight), id(net.bn.bias), id(net.fc.bias)}

    plain = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd)
    (group,) = plain.configure_optimizers()["optimizer"].param_groups
    assert group["weight_decay"] == 1e-4 and len(group["params"]) == 5


@pytest.mark.filterwarnings("ignore:Found 1 module.s. in eval mode")
def test_freeze_body_trains_only_the_classifier() -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, freeze_body=True)
    net = model.backbone
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert _group_members(model) == {"classifier": {id(net.fc.weight), id(net.fc.bias)}}
    assert model.training and not net.bn.training  # the frozen body's BN keeps its statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}

    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, make_loader(24, shuffle=True), make_loader(8))
    after = net.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        assert changed == key.startswith("fc."), key
    assert model.training and not net.bn.training  # still so after validation restored modes
    model.train()
    assert not net.bn.training


def test_body_lr_scale_gives_the_body_a_smaller_rate() -> None:
    model = ClassifierModule(
        TinyNet(),
        num_classes=NUM_CLASSES,
        optimizer=sgd,
        body_lr_scale=0.1,
        no_weight_decay_norm_and_bias=True,
    )
    optimizer = model.configure_optimizers()["optimizer"]
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates == pytest.approx(
        {"classifier": 0.05, "classifier_no_decay": 0.05, "body": 0.005, "body_no_decay": 0.005}
    )
    assert optimizer.param_groups[0]["name"] == "classifier"
    members = _group_members(model)
    assert members["classifier"] == {id(model.backbone.fc.weight)}
    assert members["body_no_decay"] == {id(model.backbone.bn.weight), id(model.backbone.bn.bias)}


def test_the_pre_release_names_are_gone_and_get_classifier_is_the_final_linear() -> None:
    # 0.1.0 had no released users: the names freeze_backbone, backbone_lr_scale and
    # classifier() were removed rather than kept as deprecated aliases.
    for old in ({"freeze_backbone": True}, {"backbone_lr_scale": 0.1}):
        with pytest.raises(TypeError, match=next(iter(old))):
            ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, **old)
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES)
    assert model.get_classifier() is model.backbone.fc
    assert not hasattr(model, "classifier")


class _LearningRates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, *args: Any) -> None:  # type: ignore[no-untyped-def]
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_step_warmup_composes_with_an_epoch_schedule() -> None:
    model = ClassifierModule(
        TinyNet(),
        num_classes=NUM_CLASSES,
        optimizer=sgd,
        lr_scheduler=lambda optimizer: StepLR(optimizer, step_size=1, gamma=0.5),
        warmup_steps=4,
        warmup_start_factor=0.2,
    )
    rates = _LearningRates()
    make_trainer(max_epochs=2, callbacks=[rates]).fit(model, make_loader(24))  # 6 steps/epoch
    expected = [0.05 * f for f in (0.2, 0.4, 0.6, 0.8, 1, 1)] + [0.025] * 6
    assert rates.rates == pytest.approx(expected)


def test_epoch_warmup_alone() -> None:
    model = ClassifierModule(TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, warmup_epochs=2)
    rates = _LearningRates()
    make_trainer(max_epochs=3, callbacks=[rates], limit_train_batches=1).fit(model, make_loader(8))
    assert rates.rates == pytest.approx([0.0005, 0.05 * 0.505, 0.05])


def test_plateau_schedule_follows_val_acc1_with_the_right_mode() -> None:
    wrong = ClassifierModule(
        TinyNet(), num_classes=NUM_CLASSES, optimizer=sgd, lr_scheduler=ReduceLROnPlateau
    )
    with pytest.raises(ValueError, match="mode='max'"):
        wrong.configure_optimizers()

    model = ClassifierModule(
        # No batch norm, whose running statistics would move val/acc1 whatever the rate.
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES)),
        num_classes=NUM_CLASSES,
        # So small a rate that val/acc1 stays put: every epoch after the first is a plateau.
        optimizer=lambda params: torch.optim.SGD(params, lr=1e-6),
        lr_scheduler=lambda opt: ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5),
        warmup_steps=2,
    )
    _, (plateau, warmup) = model.configure_optimizers()
    assert plateau["monitor"] == "val/acc1" and warmup["interval"] == "step"
    trainer = make_trainer(max_epochs=3, limit_train_batches=2)
    trainer.fit(model, make_loader(8), make_loader(8))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25e-6)


def test_user_module_trains_with_all_parameters_in_one_group() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))
    model = ClassifierModule(net, num_classes=NUM_CLASSES, optimizer=sgd)
    assert list(_group_members(model)) == ["params"]
    make_trainer(limit_train_batches=2).fit(model, make_loader(16))
