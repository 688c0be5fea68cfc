"""The datamodules' batches in ordinary Lightning uses: validate then fit, inference mode on and
off, true-precision training (the batch reaches the step in the precision plugin's dtype), and
loader settings that cannot work on this machine refused in one line when the datamodule is made."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from datamodules import DigitsDataModule
from datamodules.base import WORKERS_PER_CPU, physical_memory, usable_cpus
from lit_classifiers import ClassifierModule


class Plain(pl.LightningModule):
    """A 10-line LightningModule: what the datamodule must serve without any help."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.dtypes: list[torch.dtype] = []

    def forward(self, images: Tensor) -> Tensor:
        self.dtypes.append(images.dtype)
        return self.fc(images.flatten(1))

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        images.mul_(1.0)  # a step may update its batch in place
        return nn.functional.cross_entropy(self(images), labels)

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(**kwargs: object) -> pl.Trainer:
    settings: dict[str, object] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 2,
        **kwargs,
    }
    return pl.Trainer(**settings)  # type: ignore[arg-type]


def digits(num_workers: int = 0) -> DigitsDataModule:
    return DigitsDataModule(image_size=8, batch_size=16, num_workers=num_workers)


def test_validate_then_fit_and_inference_mode_on_then_off() -> None:
    datamodule, model = digits(), Plain()
    baseline = trainer(max_steps=2)
    baseline.validate(model, datamodule=datamodule)  # batches made under inference mode
    baseline.fit(model, datamodule=datamodule)  # then in-place updates outside it
    assert baseline.global_step == 2
    trainer(max_steps=2, inference_mode=True).validate(model, datamodule=datamodule)
    again = trainer(max_steps=4, inference_mode=False)
    again.fit(model, datamodule=datamodule)
    assert again.global_step == 4


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16-true", torch.bfloat16), ("64-true", torch.float64)]
)
def test_true_precision_trains_and_validates_in_its_dtype(
    precision: str, dtype: torch.dtype
) -> None:
    datamodule = digits()
    model = ClassifierModule("resnet20", num_classes=10, in_channels=1)
    fit = trainer(max_steps=2, precision=precision)
    fit.fit(model, datamodule=datamodule)
    assert fit.global_step == 2
    assert all(p.dtype == dtype for p in model.parameters())
    plain = Plain()
    trainer(max_steps=1, precision=precision).fit(plain, datamodule=datamodule)
    assert set(plain.dtypes) == {dtype}  # the batches of both training and validation
    # without a trainer (a plain loop) the loaders' batches normalise to float32, as before
    images, _ = next(iter(datamodule.train_dataloader()))
    assert datamodule.normalize(images).dtype == torch.float32


def test_loader_settings_this_machine_cannot_run_are_refused_in_one_line() -> None:
    most = WORKERS_PER_CPU * usable_cpus()
    with pytest.raises(ValueError) as caught:
        digits(num_workers=most + 1)
    message = str(caught.value)
    assert f"num_workers={most + 1} is more loader processes" in message
    assert f"at most {most} workers" in message and "\n" not in message
    assert digits(num_workers=most).num_workers == most  # the limit itself is allowed
    memory = physical_memory()
    assert memory is not None
    side = int((memory / (4 * 16)) ** 0.5) + 1  # 16 single-channel float32 images: too many
    with pytest.raises(ValueError) as caught:
        DigitsDataModule(image_size=side, batch_size=16)
    message = str(caught.value)
    assert message.startswith(f"image_size={side} cannot work here: one batch of 16 such")
    assert "memory" in message and "\n" not in message
    with pytest.raises(ValueError, match="image_size=100000 cannot work here"):
        DigitsDataModule(image_size=100_000)
