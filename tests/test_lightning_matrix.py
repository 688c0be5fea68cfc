"""Every Lightning feature a user reaches for, tried on ClassifierModule and the digits.

One small real run per feature (resnet20 on 8x8 digits, a few steps), each asserting what the
feature must do: steps and batches counted, metrics equal where they must be, files written.
Runs use their own datamodule: a datamodule is stateful (its split, its normaliser).
"""

from __future__ import annotations

import functools
import pickle
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers.modules import make_trainer
from lightning.fabric import Fabric
from lightning.pytorch.callbacks import (
    BackboneFinetuning,
    BatchSizeFinder,
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    GradientAccumulationScheduler,
    LearningRateFinder,
    ModelCheckpoint,
    ModelPruning,
    OnExceptionCheckpoint,
    StochasticWeightAveraging,
    ThroughputMonitor,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.profilers import AdvancedProfiler, PyTorchProfiler, SimpleProfiler
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from datamodules import DigitsDataModule
from lit_classifiers import BodyFinetuning, ClassifierModule

SIZE = 8


def digits(**kwargs: Any) -> DigitsDataModule:
    kwargs = {"image_size": SIZE, "batch_size": 16, "augment": False, **kwargs}
    return DigitsDataModule(**kwargs)


def resnet20(**kwargs: Any) -> ClassifierModule:
    return ClassifierModule("resnet20", num_classes=10, in_channels=1, **kwargs)


def trainer(**kwargs: Any) -> pl.Trainer:
    """``make_trainer`` limited to a few batches: each feature needs only a few steps."""
    limits = {"limit_train_batches": 2, "limit_val_batches": 1}
    return make_trainer(**{**limits, **kwargs})


def float_loader(n: int = 32, seed: int = 0) -> DataLoader:
    """Normalised-looking float digits-shaped batches (no datamodule hook needed)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, SIZE, SIZE, generator=generator)
    labels = torch.arange(n) % 10
    return DataLoader(TensorDataset(images, labels), batch_size=8)


class Counter(Callback):
    """Counts the batches each loop ran, sanity check apart, and the validation runs."""

    def __init__(self) -> None:
        self.train = self.val = self.sanity = self.test = self.val_runs = 0

    def on_train_batch_end(self, *args: Any) -> None:
        self.train += 1

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.sanity_checking:
            self.sanity += 1
        else:
            self.val += 1

    def on_validation_epoch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.val_runs += not trainer.sanity_checking

    def on_test_batch_end(self, *args: Any) -> None:
        self.test += 1


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------- loop control
def test_fast_dev_run() -> None:
    counter = Counter()
    tr = trainer(fast_dev_run=True, callbacks=[counter])
    tr.fit(resnet20(), digits())
    assert (tr.global_step, counter.train, counter.val, counter.sanity) == (1, 1, 1, 0)


def test_overfit_batches_trains_on_the_same_batches() -> None:
    seen: list[list[int]] = []

    class Labels(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(batch[1].tolist())

    tr = trainer(overfit_batches=2, max_epochs=2, limit_train_batches=None, callbacks=[Labels()])
    tr.fit(resnet20(), digits())
    assert tr.global_step == 4 and seen[:2] == seen[2:]


def test_limit_batches() -> None:
    counter = Counter()
    tr = trainer(
        limit_train_batches=3, limit_val_batches=2, limit_test_batches=2, callbacks=[counter]
    )
    model, dm = resnet20(), digits()
    tr.fit(model, dm)
    tr.test(model, dm, verbose=False)
    assert (counter.train, counter.val, counter.test) == (3, 2, 2)


def test_val_check_interval() -> None:
    counter = Counter()
    trainer(limit_train_batches=4, val_check_interval=2, callbacks=[counter]).fit(
        resnet20(), digits()
    )
    assert counter.val_runs == 2 and counter.train == 4


def test_check_val_every_n_epoch() -> None:
    counter = Counter()
    tr = trainer(
        max_epochs=3, limit_train_batches=1, check_val_every_n_epoch=2, callbacks=[counter]
    )
    tr.fit(resnet20(), digits())
    assert counter.val_runs == 1 and tr.global_step == 3


@pytest.mark.parametrize(("steps", "expected"), [(0, 0), (-1, 3)])
def test_num_sanity_val_steps(steps: int, expected: int) -> None:
    counter = Counter()
    tr = trainer(num_sanity_val_steps=steps, limit_val_batches=3, max_steps=1, callbacks=[counter])
    tr.fit(resnet20(), digits())
    assert counter.sanity == expected


def test_max_time_stops_the_fit() -> None:
    class Slow(Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            time.sleep(1.1)

    tr = trainer(max_time={"seconds": 1}, max_epochs=3, limit_train_batches=5, callbacks=[Slow()])
    tr.fit(resnet20(), digits())
    assert tr.global_step == 1  # the timer is checked after each step


def test_deterministic_runs_are_bitwise_equal() -> None:
    def run() -> dict[str, torch.Tensor]:
        pl.seed_everything(0, verbose=False)
        model = resnet20(mixup_alpha=0.2)  # a random transform inside the step too
        trainer(deterministic=True, limit_train_batches=3).fit(model, digits(augment=True))
        return weights(model)

    first, second = run(), run()
    assert all(torch.equal(first[k], second[k]) for k in first)


# ---------------------------------------------------------------------------------- grad modes
def test_validate_then_fit() -> None:
    """The baseline-before-training pattern: metric states made under inference mode must not
    reach fit's validation (no_grad). Plain float loaders: the datamodule half is data-hot's."""
    model = resnet20()
    tr = trainer(max_steps=2)
    before = tr.validate(model, float_loader(), verbose=False)[0]
    tr.fit(model, float_loader(), float_loader())
    after = tr.validate(model, float_loader(), verbose=False)[0]
    assert tr.global_step == 2 and before["val/loss"] != after["val/loss"]


def test_validate_then_fit_on_the_datamodule() -> None:
    model, dm = resnet20(), digits()
    tr = trainer(max_steps=2)
    tr.validate(model, dm, verbose=False)
    tr.fit(model, dm)
    assert tr.global_step == 2


def test_inference_mode_false_equals_true_after_it() -> None:
    model = resnet20()
    first = trainer(inference_mode=True).validate(model, float_loader(), verbose=False)[0]
    second = trainer(inference_mode=False).validate(model, float_loader(), verbose=False)[0]
    assert first == second


def test_accumulate_grad_batches() -> None:
    tr = trainer(accumulate_grad_batches=2, limit_train_batches=4)
    tr.fit(resnet20(), digits())
    assert tr.global_step == 2


def test_gradient_accumulation_scheduler() -> None:
    tr = trainer(limit_train_batches=4, callbacks=[GradientAccumulationScheduler({0: 4})])
    tr.fit(resnet20(), digits())
    assert tr.global_step == 1


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping(algorithm: str) -> None:
    # Plain SGD at lr 1: the update is minus the clipped gradient.
    model = resnet20(optimizer=functools.partial(torch.optim.SGD, lr=1.0))
    before = [p.detach().clone() for p in model.parameters()]
    tr = trainer(max_steps=1, gradient_clip_val=1e-3, gradient_clip_algorithm=algorithm)
    tr.fit(model, digits())
    steps = [(b - p.detach()).flatten() for b, p in zip(before, model.parameters(), strict=True)]
    if algorithm == "norm":
        assert torch.cat(steps).norm().item() == pytest.approx(1e-3, rel=1e-3)
    else:
        assert torch.cat(steps).abs().max().item() == pytest.approx(1e-3, rel=1e-4)


# ---------------------------------------------------------------------------------- precision
@pytest.mark.parametrize(
    "precision",
    [
        "bf16-mixed",
        "bf16-true",
        "64-true",
    ],
)
def test_precision(precision: str) -> None:
    model = resnet20()
    tr = trainer(precision=precision, max_steps=2)
    tr.fit(model, digits())
    assert tr.global_step == 2
    assert torch.isfinite(torch.tensor(tr.callback_metrics["val/loss"].item()))


# ---------------------------------------------------------------------------------- strategies
# slow: spawns two processes
@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_ddp_spawn_trains_and_validates_like_one_process() -> None:
    """2 CPU processes (gloo). Plain ddp (the script relaunched per rank) is held to one process
    by test_module_ddp.py."""
    model = resnet20()
    pickle.dumps(model)  # ddp_spawn pickles the module, default optimizer included
    before = weights(model)
    tr = trainer(strategy="ddp_spawn", devices=2, max_steps=2, limit_val_batches=None)
    tr.fit(model, digits(batch_size=64))
    # The ranks' trained weights came back to this process (its own step count does not).
    assert any(not torch.equal(before[k], v) for k, v in weights(model).items())
    spawned = {k: v.item() for k, v in tr.callback_metrics.items() if k.startswith("val/")}
    # The same weights in one process: equal, and no metric state carried back from the ranks.
    single = trainer(limit_val_batches=None).validate(model, digits(batch_size=64), verbose=False)
    assert spawned["val/acc1"] == single[0]["val/acc1"]
    assert spawned["val/acc5"] == single[0]["val/acc5"]
    assert spawned["val/loss"] == pytest.approx(single[0]["val/loss"], abs=1e-5)


def test_modules_pickle_and_keep_their_ema_update() -> None:
    """ddp_spawn pickles the module: the default optimizer and the EMA's update must pickle."""
    model = resnet20(ema_decay=0.9)
    copy = pickle.loads(pickle.dumps(model))
    assert isinstance(copy.optimizer_factory([torch.zeros(1, requires_grad=True)]), torch.optim.SGD)
    for net in (model, copy):
        net.ema.update_parameters(net.backbone)  # the first update copies the weights
        with torch.no_grad():
            net.backbone.fc.weight.add_(1.0)
        net.ema.update_parameters(net.backbone)
    torch.testing.assert_close(copy.ema.module.fc.weight, model.ema.module.fc.weight)
    torch.testing.assert_close(
        model.ema.module.fc.weight, model.backbone.fc.weight - 0.9
    )  # 0.9 * w + 0.1 * (w + 1) = (w + 1) - 0.9


# ---------------------------------------------------------------------------------- callbacks
def test_early_stopping() -> None:
    stop = EarlyStopping("val/acc1", mode="max", patience=1, min_delta=1.0)
    tr = trainer(max_epochs=5, limit_train_batches=1, callbacks=[stop])
    tr.fit(resnet20(), digits())
    assert stop.stopped_epoch == 1 and tr.current_epoch == 2


def test_model_checkpoint_every_n_train_steps(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(tmp_path, every_n_train_steps=2, save_top_k=-1)
    tr = trainer(
        max_steps=4, limit_train_batches=4, enable_checkpointing=True, callbacks=[checkpoint]
    )
    tr.fit(resnet20(), digits())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch=0-step=2.ckpt",
        "epoch=0-step=4.ckpt",
    ]


def test_stochastic_weight_averaging() -> None:
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1, annealing_epochs=1)
    tr = trainer(max_epochs=2, limit_train_batches=1, callbacks=[swa])
    tr.fit(resnet20(), digits())
    assert all(g["lr"] == pytest.approx(0.01) for g in tr.optimizers[0].param_groups)


def test_ema_weight_averaging() -> None:
    model = resnet20()
    ema = EMAWeightAveraging(decay=0.5)
    tr = trainer(max_steps=3, limit_train_batches=3, callbacks=[ema])
    tr.fit(model, digits())
    assert tr.global_step == 3 and "val/acc1" in tr.callback_metrics


def test_batch_size_finder() -> None:
    dm = digits(batch_size=8)
    finder = BatchSizeFinder(mode="power", init_val=8, max_trials=2, steps_per_trial=1)
    trainer(max_steps=1, callbacks=[finder]).fit(resnet20(), dm)
    assert dm.batch_size == finder.optimal_batch_size > 8  # no trial runs out of memory


def test_learning_rate_finder() -> None:
    model = resnet20()
    # 13 points at least: the suggestion skips the first 10 and the last one.
    finder = LearningRateFinder(num_training_steps=13, early_stop_threshold=None)
    tr = trainer(max_steps=1, limit_train_batches=13, callbacks=[finder])
    tr.fit(model, digits(batch_size=8))
    assert model.hparams.lr is not None
    assert model.hparams.lr == finder.optimal_lr.suggestion()
    assert tr.optimizers[0].param_groups[0]["lr"] == pytest.approx(model.hparams.lr)


def test_backbone_finetuning_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="use lit_classifiers.BodyFinetuning"):
        trainer(callbacks=[BackboneFinetuning(1)]).fit(resnet20(), digits())


def test_body_finetuning_freezes_the_body_only_until_its_epoch() -> None:
    model = resnet20()
    start = weights(model)
    after_first: dict[str, torch.Tensor] = {}

    class Snapshot(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 0:
                after_first.update(weights(pl_module))

    finetuning = BodyFinetuning(unfreeze_backbone_at_epoch=1)
    tr = trainer(max_epochs=2, limit_train_batches=2, callbacks=[finetuning, Snapshot()])
    tr.fit(model, digits())
    changed = {k for k in start if not torch.equal(start[k], after_first[k])}
    assert {"backbone.fc.weight", "backbone.fc.bias"} <= changed
    assert "backbone.conv1.weight" not in changed  # the body waited for epoch 1
    assert not torch.equal(after_first["backbone.conv1.weight"], model.backbone.conv1.weight)
    assert len(tr.optimizers[0].param_groups) == 2  # the body joined as its own group


def test_model_pruning() -> None:
    model = resnet20()
    pruning = ModelPruning("l1_unstructured", amount=0.5, use_global_unstructured=False)
    trainer(max_steps=1, callbacks=[pruning]).fit(model, digits())
    weight = model.backbone.conv1.weight
    assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_on_exception_checkpoint(tmp_path: Path) -> None:
    class Boom(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 2:
                raise RuntimeError("boom")

    callbacks = [OnExceptionCheckpoint(tmp_path), Boom()]
    with pytest.raises(RuntimeError, match="boom"):
        trainer(limit_train_batches=4, enable_checkpointing=True, callbacks=callbacks).fit(
            resnet20(), digits()
        )
    saved = torch.load(tmp_path / "on_exception.ckpt", weights_only=True)
    assert saved["global_step"] == 2


def test_throughput_monitor_and_both_loggers(tmp_path: Path) -> None:
    loggers = [TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")]
    monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch[0].size(0), window_size=2)
    tr = trainer(logger=loggers, limit_train_batches=3, log_every_n_steps=1, callbacks=[monitor])
    tr.fit(resnet20(), digits())
    rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {
        "train/loss",
        "train/lr",
        "val/acc1",
        "train/samples",
        "train/device/samples_per_sec",
    } <= set(header)
    assert list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("profiler", "recorded"),
    [
        (SimpleProfiler, "training_step"),
        (AdvancedProfiler, "training_step"),
        (PyTorchProfiler, "aten::"),
    ],
)
def test_profilers(profiler: type, recorded: str, tmp_path: Path) -> None:
    tr = trainer(profiler=profiler(dirpath=tmp_path, filename="perf"), max_steps=1)
    tr.fit(resnet20(), digits())
    assert recorded in (tmp_path / "fit-perf.txt").read_text()


# ---------------------------------------------------------------------------------- outputs
def test_predict_output(tmp_path: Path) -> None:
    folder = tmp_path / "predict"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (SIZE, SIZE), 40 * i).save(folder / f"{i}.png")
    results = trainer().predict(resnet20(predict_topk=3), digits(predict_dir=str(folder)))
    rows = [
        row for batch in results for row in zip(batch["paths"], batch["topk_names"], strict=True)
    ]
    assert [Path(p).name for p, _ in rows] == ["0.png", "1.png", "2.png"]
    assert all(len(names) == 3 and set(names) <= set("0123456789") for _, names in rows)
    probs = torch.cat([batch["probs"] for batch in results])
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_loader_outside_the_trainer_says_what_to_call() -> None:
    dm = digits()
    dm.setup("fit")
    with pytest.raises(TypeError, match=r"images = datamodule\.normalize\(images\)"):
        trainer().predict(resnet20(), dataloaders=dm.val_dataloader())


def test_plain_loop_over_a_datamodule_loader() -> None:
    """The README's plain PyTorch loop."""
    dm = digits()
    dm.setup("fit")
    model = ClassifierModule("resnet20", num_classes=dm.num_classes, in_channels=dm.in_channels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, (images, labels) in enumerate(dm.train_dataloader()):
        loss = F.cross_entropy(model(dm.normalize(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 2:
            break
    assert torch.isfinite(loss)


def test_test_best_checkpoint_and_load_from_checkpoint(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(tmp_path, monitor="val/acc1", mode="max")
    tr = trainer(
        max_epochs=2, limit_test_batches=2, enable_checkpointing=True, callbacks=[checkpoint]
    )
    model, dm = resnet20(), digits()
    tr.fit(model, dm)
    tested = tr.test(ckpt_path="best", datamodule=dm, verbose=False)[0]
    loaded = ClassifierModule.load_from_checkpoint(
        checkpoint.best_model_path, map_location="cpu", strict=True, predict_topk=3
    )
    assert loaded.hparams.predict_topk == 3 and loaded.class_names == list("0123456789")
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    assert all(torch.equal(best[k], v) for k, v in loaded.state_dict().items())
    again = trainer(limit_test_batches=2).test(loaded, dm, verbose=False)[0]
    assert again == tested


def test_to_onnx(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model = resnet20().eval()
    images = torch.randn(2, 1, SIZE, SIZE)
    model.to_onnx(tmp_path / "model.onnx", images, input_names=["images"], dynamo=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    out = session.run(None, {"images": images.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), model(images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ema_decay", [None, 0.9])
@pytest.mark.parametrize("method", ["script", "trace"])
def test_to_torchscript(method: str, ema_decay: float | None) -> None:
    model = resnet20(ema_decay=ema_decay, class_names=list("abcdefghij")).eval()
    images = torch.randn(2, 1, SIZE, SIZE)
    with pytest.warns(Warning):  # Lightning deprecates to_torchscript; it must still work
        scripted = model.to_torchscript(method=method, example_inputs=images)
    torch.testing.assert_close(scripted(images), model(images))


# slow: TorchDynamo's tracing takes seconds; the rest of this file trains the same module eagerly
@pytest.mark.slow
def test_torch_compile_of_the_module() -> None:
    # The eager backend runs TorchDynamo's tracing (graph breaks, guards) without code generation.
    model = resnet20()
    before = weights(model)
    tr = trainer(max_steps=3, limit_train_batches=3, limit_val_batches=0)  # one step traced
    tr.fit(torch.compile(model, backend="eager"), digits())
    assert tr.global_step == 3 and not torch.equal(
        before["backbone.fc.weight"], model.backbone.fc.weight
    )


def test_fabric_loop_calls_the_steps() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    dm = digits()
    dm.setup("fit")
    model = resnet20()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    train, val = fabric.setup_dataloaders(dm.train_dataloader(), dm.val_dataloader())
    model.train()
    for batch_idx, (images, labels) in enumerate(train):
        loss = model.training_step([dm.normalize(images), labels], batch_idx)
        optimizer.zero_grad()
        fabric.backward(loss)
        optimizer.step()
        if batch_idx == 2:
            break
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch_idx, (images, labels) in enumerate(val):
            out = model.validation_step([dm.normalize(images), labels], batch_idx)
            correct += int((out["preds"] == labels).sum())
            total += len(labels)
    assert model.val_acc1.compute().item() == pytest.approx(correct / total)


def test_ema_decay_follows_the_formula() -> None:
    """torch's AveragedModel copies the weights at the first step, then after each optimizer
    step ema = decay * ema + (1 - decay) * weights (decay 0.9: a ``1 - decay`` slip differs)."""
    model = resnet20(ema_decay=0.9)
    expected: dict[str, torch.Tensor] = {}

    class Follow(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            for name, value in pl_module.backbone.state_dict().items():
                if not value.is_floating_point():
                    continue
                if trainer.global_step == 1:
                    expected[name] = value.clone()
                else:
                    expected[name].mul_(0.9).add_(value, alpha=0.1)

    trainer(max_steps=3, limit_train_batches=3, callbacks=[Follow()]).fit(model, digits())
    averaged = model.ema.module.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(averaged["fc.weight"], model.backbone.fc.weight)


def test_print_config_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lit_classifiers.cli import cli_main

    def printed(*args: str) -> str:
        with pytest.raises(SystemExit):
            cli_main(["fit", "--model.backbone=resnet20", "--data=DigitsDataModule", *args])
        return capsys.readouterr().out

    first = printed("--data.image_size=8", "--model.ema_decay=0.9", "--print_config")
    config = yaml.safe_load(first)
    assert config["model"]["optimizer"]["class_path"] == "torch.optim.SGD"
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.1
    (tmp_path / "printed.yaml").write_text(first)
    assert printed("--config", str(tmp_path / "printed.yaml"), "--print_config") == first
