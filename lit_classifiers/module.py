"""``ClassifierModule``: any registered backbone (or your own network) as a LightningModule.

It holds the network, the loss, the metrics, the steps and the optimizer setup, and adds what
Lightning alone gets wrong for classification:

* evaluation under DDP counts every sample exactly once (Lightning's sampler pads with repeats);
* checkpoints carry the random-number state, so a resumed run continues bit for bit;
* loading a checkpoint never runs code from it (``weights_only`` loading, also of ``http(s)://``
  URLs, and everything stored is plain tensors, lists and numbers), and saving one is atomic:
  every Trainer run of the module uses :class:`~lit_classifiers.checkpoint_io.SafeCheckpointIO`;
* weights that became NaN or infinite (a diverging run whose loss is still finite) stop the run
  at the end of the epoch, and such weights are never saved;
* a non-finite loss or a ``num_classes`` that does not fit the data stops the run with an error
  that says so, instead of a CUDA assert or a quietly wrong metric.

Logged names: ``train/loss``, ``train/acc1``, ``train/lr`` (unless a ``LearningRateMonitor``
logs the rate already), ``val/loss``, ``val/acc1``,
``val/acc5``, ``test/loss``, ``test/acc1``, ``test/acc5``.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import IO, Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.saving import (
    _default_map_location,
    _load_state,
    load_hparams_from_tags_csv,
    load_hparams_from_yaml,
)
from lightning.pytorch.plugins.io.wrapper import _WrappingCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.migration.utils import _pl_migrate_checkpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2
from typing_extensions import Self

from lit_classifiers.callbacks import ClassifierTensorBoard, check_finite_loss, datamodule_attribute
from lit_classifiers.checkpoint_io import (
    CheckpointError,
    NonFiniteWeightsError,
    SafeCheckpointIO,
    check_checkpoint_hparams,
    first_non_finite,
    read_checkpoint,
)
from lit_classifiers.exact_eval import EvalSampleCounter
from lit_classifiers.optimization import (
    NORM_LAYERS,
    apply_lr_scales,
    build_param_groups,
    check_plateau_mode,
    warmup_scheduler_config,
)
from lit_classifiers.registry import create_backbone
from lit_classifiers.rng_state import capture_rng_state, restore_rng_state

__all__ = ["ClassifierModule"]

RNG_KEY = "rng_states"

# (source, strict, stored hyper-parameters before the caller's overrides) of the
# load_from_checkpoint call in progress, for on_load_checkpoint's errors.
_LOADING: contextvars.ContextVar[tuple[str, bool | None, Mapping[str, Any]] | None] = (
    contextvars.ContextVar("classifier_loading", default=None)
)


class ClassifierModule(pl.LightningModule):
    """Image classification with a backbone from the registry or one you built.

    Args:
        backbone: A registered name (see ``lit_classifiers.list_backbones()``) or an
            ``nn.Module`` mapping ``(N, C, H, W)`` images to ``(N, num_classes)`` logits. A
            module is not stored in the hyperparameters: pass it again to
            ``load_from_checkpoint(path, backbone=...)``.
        num_classes: Classes of the data; checked against the datamodule and the labels.
        in_channels: Image channels, for registered backbones.
        class_names: Names of the classes, kept in the checkpoint so predictions can be named.
            Taken from the datamodule when not given.
        backbone_kwargs: Extra arguments of ``create_backbone``: ``weights``, ``dropout`` ...
            The checkpoint's state_dict supersedes ``weights``, so it is not saved with it.
        optimizer: Builds the optimizer from parameter groups. Default: SGD with momentum
            0.9, learning rate 0.1 and weight decay 1e-4 (torchvision's ImageNet recipe).
        lr_scheduler: Builds the learning-rate scheduler from the optimizer, or ``None``.
        lr_scheduler_interval: Step the scheduler every ``"epoch"`` or every ``"step"``.
        lr_scheduler_monitor: Metric a ``ReduceLROnPlateau`` follows (its ``mode`` must fit).
        warmup_epochs: Linear warm-up over this many epochs (stepped per epoch), or
        warmup_steps: over this many optimizer steps; multiplies the main schedule.
        warmup_start_factor: Learning-rate fraction the warm-up starts from.
        label_smoothing: Label smoothing of the training loss (evaluation loss is plain
            cross-entropy, comparable across recipes).
        mixup_alpha: MixUp's Beta parameter; 0 disables it.
        cutmix_alpha: CutMix's Beta parameter; 0 disables it. With both, each batch uses one
            of the two at random. ``train/acc1`` then compares with the original labels.
        no_weight_decay_norm_and_bias: Exempt normalisation layers and biases from weight decay.
        ema_decay: Keep an exponential moving average of the weights with this decay (e.g.
            0.9999) and evaluate, predict and export with it; ``None`` disables it.
        freeze_backbone: Train only the classifier; the rest keeps its weights and its
            batch-norm statistics (its norm layers stay in eval mode).
        backbone_lr_scale: Learning-rate factor of everything but the classifier.
        channels_last: Run convolutions in channels-last memory format (faster on tensor cores).
        compile: ``torch.compile`` the backbone.
        predict_topk: Classes returned per image by ``predict_step``.
    """

    def __init__(
        self,
        backbone: str | nn.Module,
        num_classes: int = 1000,
        in_channels: int = 3,
        class_names: list[str] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(
            params, lr=0.1, momentum=0.9, weight_decay=1e-4
        ),
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        lr_scheduler_monitor: str = "val/acc1",
        warmup_epochs: int = 0,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.01,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        no_weight_decay_norm_and_bias: bool = False,
        ema_decay: float | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        channels_last: bool = False,
        compile: bool = False,
        predict_topk: int = 5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes={num_classes}"
            )
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}"
            )
        if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}")
        if warmup_epochs and warmup_steps:
            raise ValueError("give warmup_epochs or warmup_steps, not both")
        # The callables are code, not data: they stay out of the checkpoint (weights_only).
        ignore = ["optimizer", "lr_scheduler"]
        if isinstance(backbone, nn.Module):
            ignore.append("backbone")
        self.save_hyperparameters(ignore=ignore)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler

        if isinstance(backbone, str):
            backbone = create_backbone(
                backbone, num_classes, in_channels=in_channels, **(backbone_kwargs or {})
            )
        self.backbone = backbone
        if freeze_backbone or backbone_lr_scale != 1.0:
            self.classifier()  # fails now, not at the first step, if there is none to find
        if freeze_backbone:
            for param in self.backbone.parameters():
                param.requires_grad_(False)
            for param in self.classifier().parameters():
                param.requires_grad_(True)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.ema = (
            AveragedModel(
                self.backbone, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            )
            if ema_decay is not None
            else None
        )
        if self.ema is not None:  # updated by averaging, never by gradients (DDP needs to know)
            self.ema.requires_grad_(False)
        if compile:
            self.backbone.compile()

        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        mixers = [
            transform(alpha=alpha, num_classes=num_classes)
            for transform, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha))
            if alpha > 0
        ]
        self.batch_mix = v2.RandomChoice(mixers) if len(mixers) > 1 else (mixers or [None])[0]

        top5 = min(5, num_classes)
        self.train_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self._eval_counter = EvalSampleCounter()
        self._rng_to_restore: dict[str, Any] | None = None
        self._lr_monitored = False
        self._finite_checked_step = -1
        self.train(self.training)  # puts a frozen body's norm layers in eval mode

    # ------------------------------------------------------------------------------ network
    @property
    def num_classes(self) -> int:
        return int(self.hparams.num_classes)

    @property
    def class_names(self) -> list[str] | None:
        return self.hparams.get("class_names")

    def classifier(self) -> nn.Module:
        """The final layer: what fine-tuning trains and ``backbone_lr_scale`` leaves alone."""
        get_classifier = getattr(self.backbone, "get_classifier", None)
        if get_classifier is None:
            raise ValueError(
                f"{type(self.backbone).__name__} has no get_classifier(); freeze_backbone and "
                "backbone_lr_scale need to know which layer is the classifier"
            )
        return get_classifier()

    def forward(self, x: Tensor) -> Tensor:
        """Logits; outside training mode the EMA weights answer when they are kept."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self.ema.module if self.ema is not None and not self.training else self.backbone
        return net(x)

    def train(self, mode: bool = True) -> Self:
        # A frozen body must not update its batch-norm statistics either, whoever calls train().
        super().train(mode)
        if self.hparams.freeze_backbone:
            head = set(self.classifier().modules())
            for module in self.backbone.modules():
                if isinstance(module, NORM_LAYERS) and module not in head:
                    module.eval()
        return self

    # ------------------------------------------------------------------------------ checks
    def setup(self, stage: str) -> None:
        """Catch a model built for other data before any step runs.

        Also installs :class:`SafeCheckpointIO`: Lightning calls ``setup`` before it restores
        ``ckpt_path``, so the checkpoint is already read with ``weights_only=True``.
        """
        self._install_safe_checkpoint_io()
        data_classes = datamodule_attribute(self._trainer, "num_classes")
        if data_classes is not None and int(data_classes) != self.num_classes:
            raise ValueError(
                f"the model has num_classes={self.num_classes} but the datamodule has "
                f"{data_classes} classes; build the model with num_classes={data_classes}"
            )
        data_names = datamodule_attribute(self._trainer, "class_names")
        if data_names is not None:
            data_names = [str(name) for name in data_names]
            if self.class_names is None:
                self.hparams["class_names"] = data_names
            elif list(self.class_names) != data_names:
                raise ValueError(
                    f"the model's class_names {list(self.class_names)[:5]}... differ from the "
                    f"datamodule's {data_names[:5]}...: the label indices would mean other classes"
                )

    def _install_safe_checkpoint_io(self) -> None:
        if self._trainer is None:  # setup() called by hand
            return
        strategy = self._trainer.strategy
        current = strategy.checkpoint_io  # Lightning fills in its default on first access
        if isinstance(current, SafeCheckpointIO):
            return
        if type(current) is TorchCheckpointIO:
            strategy.checkpoint_io = SafeCheckpointIO()
            return
        wrapper = current
        while isinstance(wrapper, _WrappingCheckpointIO):  # e.g. AsyncCheckpointIO
            inner = wrapper.checkpoint_io
            if inner is None or type(inner) is TorchCheckpointIO:
                # Its public setter refuses to replace a base IO that is already set.
                wrapper._checkpoint_io = SafeCheckpointIO()
                return
            if isinstance(inner, SafeCheckpointIO):
                return
            wrapper = inner
        rank_zero_warn(
            f"the trainer uses its own checkpoint IO ({type(wrapper).__name__}), so "
            "ClassifierModule does not install SafeCheckpointIO: whether checkpoints load "
            "without running code and save atomically depends on that IO"
        )

    def _check_finite_weights(self) -> None:
        """Stop a diverged fit before this epoch's checkpoints are saved.

        Called where the module's hooks run before ModelCheckpoint's (validation epoch start,
        train epoch end); a loss can stay finite while BatchNorm statistics overflow.
        """
        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if self._finite_checked_step == trainer.global_step:
            return
        self._finite_checked_step = trainer.global_step
        bad = first_non_finite(chain(self.named_parameters(), self.named_buffers()))
        if bad is not None:
            name, description = bad
            raise NonFiniteWeightsError(
                f"non-finite weights at epoch {self.current_epoch} (global step "
                f"{trainer.global_step}): {name} holds {description}; training stopped before "
                "this epoch's checkpoints were saved. The run diverged: lower the learning rate, "
                "add warm-up or gradient clipping."
            )

    def _check_labels(self, labels: Tensor) -> None:
        # On the first batch of each epoch and stage only: it costs a device synchronisation.
        if labels.ndim != 1 or labels.is_floating_point():
            raise ValueError(
                f"labels must be a 1-D tensor of class indices, got dtype {labels.dtype} "
                f"and shape {tuple(labels.shape)}"
            )
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels range from {int(labels.min())} to {int(labels.max())} but the model "
                f"has num_classes={self.num_classes} (valid labels: 0..{self.num_classes - 1})"
            )

    def _check_logits(self, logits: Tensor) -> None:
        if logits.ndim != 2 or logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"the backbone returns logits of shape {tuple(logits.shape)} but the module "
                f"expects (N, num_classes={self.num_classes})"
            )

    # ------------------------------------------------------------------------------ steps
    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        images, labels = batch[0], batch[1]
        if batch_idx == 0:
            self._check_labels(labels)
        targets = labels
        if self.batch_mix is not None:  # soft targets; train/acc1 keeps the original labels
            images, targets = self.batch_mix(images, labels)
        logits = self(images)
        if batch_idx == 0:
            self._check_logits(logits)
        loss = self.criterion(logits, targets)
        check_finite_loss(
            loss, epoch=self.current_epoch, global_step=self.global_step, batch_idx=batch_idx
        )
        self.train_acc1.update(logits.detach(), labels)
        self.log("train/loss", loss, prog_bar=True)
        if not self._lr_monitored:  # the CLI's LearningRateMonitor logs it already
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_train_epoch_start(self) -> None:
        self._lr_monitored = any(
            isinstance(callback, LearningRateMonitor) for callback in self.trainer.callbacks
        )

    def on_train_epoch_end(self) -> None:
        self._check_finite_weights()  # runs before ModelCheckpoint's on_train_epoch_end
        # Once per epoch rather than a self.log call per step: each costs ~0.4 ms of Python.
        self.log("train/acc1", self.train_acc1)

    def validation_step(
        self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        return self._evaluate(batch, batch_idx, dataloader_idx, "val")

    def test_step(
        self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        return self._evaluate(batch, batch_idx, dataloader_idx, "test")

    def _evaluate(
        self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int, stage: str
    ) -> dict[str, Tensor]:
        images, labels = batch[0], batch[1]
        if batch_idx == 0:
            self._check_labels(labels)
        logits = self(images)
        if batch_idx == 0:
            self._check_logits(logits)
        # Drop the repeats a DistributedSampler pads the last batches with.
        keep = self._eval_counter.num_real(self.trainer, len(labels), dataloader_idx)
        logits, labels = logits[:keep], labels[:keep]
        loss_metric = getattr(self, f"{stage}_loss")
        acc1, acc5 = getattr(self, f"{stage}_acc1"), getattr(self, f"{stage}_acc5")
        if keep:
            loss_metric.update(F.cross_entropy(logits.float(), labels, reduction="none"))
            acc1.update(logits, labels)
            acc5.update(logits, labels)
        self.log(f"{stage}/loss", loss_metric, prog_bar=stage == "val")
        self.log(f"{stage}/acc1", acc1, prog_bar=stage == "val")
        self.log(f"{stage}/acc5", acc5)
        return {"preds": logits.argmax(-1), "target": labels}

    def on_validation_epoch_start(self) -> None:
        self._check_finite_weights()  # ModelCheckpoint saves at the end of this validation
        self._eval_counter.reset()

    def on_test_epoch_start(self) -> None:
        self._eval_counter.reset()

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Probabilities and the top-k classes of each image (with names where known).

        ``batch`` is an image tensor, ``(images, paths)`` as the datamodules' predict loaders
        give, or ``(images, labels)``.
        """
        images, extra = (batch, None) if isinstance(batch, Tensor) else (batch[0], batch[1:])
        probs = self(images).float().softmax(dim=-1)
        k = min(self.hparams.predict_topk, self.num_classes)
        topk_probs, topk_indices = probs.topk(k, dim=-1)
        result: dict[str, Any] = {
            "probs": probs.cpu(),
            "topk_probs": topk_probs.cpu(),
            "topk_indices": topk_indices.cpu(),
        }
        if self.class_names:
            names = self.class_names
            result["topk_names"] = [[names[i] for i in row] for row in topk_indices.tolist()]
        paths = extra[0] if extra else None
        if isinstance(paths, (list, tuple)) and all(isinstance(p, str) for p in paths):
            result["paths"] = list(paths)
        return result

    # ------------------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> OptimizerLRScheduler:
        split = self.hparams.freeze_backbone or self.hparams.backbone_lr_scale != 1.0
        groups = build_param_groups(
            self.backbone,
            self.classifier() if split else None,
            body_lr_scale=self.hparams.backbone_lr_scale,
            no_weight_decay_norm_and_bias=self.hparams.no_weight_decay_norm_and_bias,
        )
        optimizer = self.optimizer_factory(groups)
        apply_lr_scales(optimizer)
        schedulers = []
        # The main schedule is built first, so that it records the learning rates before
        # warm-up scales them down.
        if self.lr_scheduler_factory is not None:
            scheduler = self.lr_scheduler_factory(optimizer)
            monitor = self.hparams.lr_scheduler_monitor
            check_plateau_mode(scheduler, monitor)
            config = {"scheduler": scheduler, "interval": self.hparams.lr_scheduler_interval}
            if isinstance(scheduler, ReduceLROnPlateau):
                config["monitor"] = monitor
            schedulers.append(config)
        warmup = warmup_scheduler_config(
            optimizer,
            epochs=self.hparams.warmup_epochs,
            steps=self.hparams.warmup_steps,
            start_factor=self.hparams.warmup_start_factor,
        )
        if warmup is not None:
            schedulers.append(warmup)
        if not schedulers:
            return {"optimizer": optimizer}
        if len(schedulers) == 1:
            return {"optimizer": optimizer, "lr_scheduler": schedulers[0]}
        return [optimizer], schedulers

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.backbone)

    def configure_callbacks(self) -> list[Callback]:
        # Not when the user configured their own: Lightning would replace theirs with this one.
        trainer_callbacks = self._trainer.callbacks if self._trainer is not None else []
        if any(isinstance(cb, ClassifierTensorBoard) for cb in trainer_callbacks):
            return []
        return [ClassifierTensorBoard()]

    # ------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = capture_rng_state()
        hparams = checkpoint.get("hyper_parameters")
        if hparams and hparams.get("backbone_kwargs"):
            kwargs = {k: v for k, v in hparams["backbone_kwargs"].items() if k != "weights"}
            checkpoint["hyper_parameters"] = {**hparams, "backbone_kwargs": kwargs}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_checkpoint_fits(checkpoint)
        # Only a resumed fit moves the global generators; load_from_checkpoint (no trainer) and
        # validate/test runs leave them alone.
        trainer = self._trainer
        resuming = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        self._rng_to_restore = checkpoint.get(RNG_KEY) if resuming else None

    def _check_checkpoint_fits(self, checkpoint: Mapping[str, Any]) -> None:
        """One line instead of load_state_dict's page of size mismatches."""
        loading = _LOADING.get()
        if loading is not None:
            source, strict, stored = loading
            strict = self.strict_loading if strict is None else strict
        else:
            path = self._trainer.ckpt_path if self._trainer is not None else None
            source, strict = (str(path) if path else "(unnamed)"), self.strict_loading
            stored = checkpoint.get("hyper_parameters") or {}
        state = checkpoint.get("state_dict")
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"checkpoint {source} has no state_dict: it is not a Lightning checkpoint (a "
                "bare weights file loads with backbone_kwargs={'weights': path})"
            )
        own = self.state_dict()
        mismatched = [
            (key, tuple(value.shape), tuple(own[key].shape))
            for key, value in state.items()
            if key in own and isinstance(value, Tensor) and value.shape != own[key].shape
        ]
        missing = [key for key in own if key not in state] if strict else []
        unexpected = [key for key in state if key not in own] if strict else []
        if not (mismatched or missing or unexpected):
            return
        theirs, mine = stored.get("backbone"), self.hparams.get("backbone")
        their_classes = stored.get("num_classes")
        if (isinstance(theirs, str) and isinstance(mine, str) and theirs != mine) or (
            their_classes is not None and their_classes != self.num_classes
        ):
            their_backbone = theirs if isinstance(theirs, str) else "a custom module"
            my_backbone = mine if isinstance(mine, str) else type(self.backbone).__name__
            raise CheckpointError(
                f"checkpoint {source} was trained with backbone={their_backbone}, "
                f"num_classes={their_classes}; this model is backbone={my_backbone}, "
                f"num_classes={self.num_classes}: build the model to match the checkpoint or "
                "use ClassifierModule.load_from_checkpoint"
            )
        if mismatched:
            key, their_shape, my_shape = mismatched[0]
            more = f" ({len(mismatched) - 1} more tensors differ)" if len(mismatched) > 1 else ""
            raise CheckpointError(
                f"checkpoint {source} does not fit this model: {key} has shape {their_shape} in "
                f"the checkpoint but {my_shape} in the model{more}"
            )
        if missing:
            ema = "a model with ema_decay needs a checkpoint trained with it, or "
            raise CheckpointError(
                f"checkpoint {source} does not fit this model: it lacks {len(missing)} of the "
                f"model's tensors (first: {missing[0]}); "
                f"{ema if missing[0].startswith('ema.') else ''}load with strict=False to skip them"
            )
        raise CheckpointError(
            f"checkpoint {source} does not fit this model: it has {len(unexpected)} tensors the "
            f"model lacks (first: {unexpected[0]}); load with strict=False to ignore them"
        )

    def on_fit_start(self) -> None:
        # Last hook before the training loop creates its dataloader iterator, which draws the
        # shuffling and worker seeds; the sanity check in between runs with isolated RNG.
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike[str] | IO[bytes],
        map_location: Any = None,
        hparams_file: str | os.PathLike[str] | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> Self:
        """Lightning's ``load_from_checkpoint`` made safe: the file (local, ``http(s)://`` or
        any fsspec URL) is read once with ``weights_only=True``, and its hyper-parameters must
        be plain data naming a registered backbone (see
        :func:`~lit_classifiers.checkpoint_io.check_checkpoint_hparams`) before anything is
        built from them. A checkpoint of a custom backbone needs ``backbone=<the module>``."""
        if weights_only is False:
            raise ValueError(
                "ClassifierModule checkpoints load with weights_only=True only; a checkpoint "
                "that needs weights_only=False can execute code when unpickled"
            )
        is_path = isinstance(checkpoint_path, (str, os.PathLike))
        source = os.fspath(checkpoint_path) if is_path else type(checkpoint_path).__name__
        checkpoint = read_checkpoint(checkpoint_path, map_location or _default_map_location)
        migrated_path = checkpoint_path if isinstance(checkpoint_path, (str, Path)) else None
        checkpoint = _pl_migrate_checkpoint(checkpoint, checkpoint_path=migrated_path)
        if "state_dict" not in checkpoint:
            raise CheckpointError(
                f"checkpoint {source} has no state_dict: it is not a Lightning checkpoint (a "
                "bare weights file loads with backbone_kwargs={'weights': path})"
            )
        key = cls.CHECKPOINT_HYPER_PARAMS_KEY
        if hparams_file is not None:
            extension = str(hparams_file).rsplit(".", 1)[-1].lower()
            if extension == "csv":
                checkpoint[key] = load_hparams_from_tags_csv(hparams_file)
            elif extension in ("yml", "yaml"):
                checkpoint[key] = load_hparams_from_yaml(hparams_file, use_omegaconf=False)
            else:
                raise ValueError(f"hparams_file must be .csv, .yml or .yaml, got {hparams_file}")
        # Lightning also reads hyper-parameters from the keys of its 0.7 checkpoints.
        stored: dict[str, Any] = {}
        for name in ("hparams", "module_arguments", key):
            if name in checkpoint:
                where = str(hparams_file) if name == key and hparams_file else source
                found = checkpoint[name]
                if isinstance(found, Mapping):  # what the caller passes is not used from it
                    found = {k: v for k, v in found.items() if k not in kwargs}
                check_checkpoint_hparams(found, where)
                stored.update(found)
        if "backbone" not in kwargs and "backbone" not in stored:
            raise CheckpointError(
                f"checkpoint {source} was trained with a custom backbone module, which is not "
                "stored: pass it, ClassifierModule.load_from_checkpoint(path, backbone=module)"
            )
        hparams = dict(checkpoint.get(key) or {})
        backbone_kwargs = hparams.get("backbone_kwargs")
        if isinstance(backbone_kwargs, Mapping) and "weights" in backbone_kwargs:
            # The state_dict supersedes them; loading them would read or download a file.
            hparams["backbone_kwargs"] = {
                k: v for k, v in backbone_kwargs.items() if k != "weights"
            }
        checkpoint[key] = {**hparams, **kwargs}

        token = _LOADING.set((source, strict, hparams))
        try:
            model = _load_state(cls, checkpoint, strict=strict, **kwargs)
        finally:
            _LOADING.reset(token)
        tensors = (t for t in checkpoint["state_dict"].values() if isinstance(t, Tensor))
        device = next(tensors, torch.tensor(0)).device
        return model.to(device)  # type: ignore[return-value]
