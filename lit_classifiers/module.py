"""``ClassifierModule``: any registered backbone (or your own network) as a LightningModule.

It holds the network, the loss, the metrics, the steps and the optimizer setup, and adds what
Lightning alone gets wrong for classification:

* evaluation under DDP counts every sample exactly once (Lightning's sampler pads with repeats);
* checkpoints carry the random-number state, so a resumed run continues bit for bit;
* loading a checkpoint never runs code from it (``weights_only`` loading, also of ``http(s)://``
  URLs, and everything stored is plain tensors, lists and numbers), and saving one is atomic,
  with :class:`~lit_classifiers.checkpoint_io.SafeCheckpointIO` as a Trainer plugin
  (``Trainer(plugins=[SafeCheckpointIO()])``; the CLI always uses it);
* weights that became NaN or infinite (a diverging run whose loss is still finite) stop the run
  at the end of the epoch, and such weights are never saved;
* a non-finite loss or a ``num_classes`` that does not fit the data stops the run with an error
  that says so, instead of a CUDA assert or a quietly wrong metric.

Logged names: ``train/loss``, ``train/acc1``, ``val/loss``, ``val/acc1``, ``val/acc5``,
``test/loss``, ``test/acc1``, ``test/acc5``, and the learning rate each optimizer step: ``train/lr``
with one parameter group, ``train/lr/<group>`` (``classifier``, ``body``, ``*_no_decay``) with
several. The module logs the rate itself, after warm-up and schedule, so a ``LearningRateMonitor``
is not needed (it would log each scheduler of the optimizer, warm-up included, as its own curve).

Lightning's learning-rate finder works on it, and sets the ``lr`` argument::

    from lightning.pytorch.tuner import Tuner

    tuner = Tuner(trainer)
    finder = tuner.lr_find(model, datamodule=datamodule)  # model.hparams.lr = the suggestion
    trainer.fit(model, datamodule=datamodule)  # trains with it

or, within one ``fit``, the ``LearningRateFinder`` callback (from the command line:
``--trainer.callbacks+=LearningRateFinder``). The search ramps one rate over all parameter
groups; the rate found then replaces the optimizer's rate, and ``body_lr_scale``, warm-up and
the schedule apply on top of it as they would to a rate given by hand.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Sequence
from itertools import chain
from typing import IO, Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BackboneFinetuning, Callback, LearningRateFinder
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2
from typing_extensions import Self

from datamodules.info import dataset_info
from lit_classifiers.callbacks import (
    ClassifierTensorBoard,
    InputPreprocessing,
    StepLogInterval,
    check_finite_loss,
)
from lit_classifiers.checkpoint_io import (
    NonFiniteWeightsError,
    check_checkpoint_fits,
    checked_classifier_checkpoint,
    first_non_finite,
)
from lit_classifiers.eval_protocols import protocol_logits
from lit_classifiers.exact_eval import EvalSampleCounter
from lit_classifiers.finetuning import BodyFinetuning
from lit_classifiers.optimization import (
    NORM_LAYERS,
    apply_lr_override,
    apply_lr_scales,
    build_param_groups,
    check_plateau_mode,
    warmup_scheduler_config,
)
from lit_classifiers.registry import create_backbone
from lit_classifiers.rng_state import capture_rng_state, restore_rng_state

__all__ = ["ClassifierModule"]

RNG_KEY = "rng_states"

# Not stored in the hyper-parameters: the callables are code, not data (checkpoints load with
# weights_only).
_UNSAVED = ("optimizer", "lr_scheduler")


class ClassifierModule(pl.LightningModule):
    """Image classification with a backbone from the registry or one you built.

    The *backbone* is the whole network; its *classifier* is the final linear layer
    (``num_features -> num_classes``, what :meth:`get_classifier` returns), and its *body* is
    everything before it (see :mod:`lit_classifiers.models.base`).

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
        lr: Learning rate that replaces the one ``optimizer`` was built with (a shortcut: the
            optimizer's own setting is ``optimizer.init_args.lr`` in a config); ``None`` keeps
            it. Lightning's learning-rate finder sets this. ``body_lr_scale`` and the schedules
            apply on top of it.
        lr_scheduler: Builds the learning-rate scheduler from the optimizer, or ``None``.
        lr_scheduler_interval: Step the scheduler every ``"epoch"`` or every ``"step"``.
        lr_scheduler_monitor: Metric a ``ReduceLROnPlateau`` follows (its ``mode`` must fit).
        warmup_epochs: Epochs over which the learning rate ramps up linearly from
            ``warmup_start_factor`` times its value (updated once an epoch); 0: none. Give
            this or ``warmup_steps``, not both. The warm-up multiplies the main schedule.
        warmup_steps: Optimizer steps over which the learning rate ramps up linearly from
            ``warmup_start_factor`` times its value; 0: none. Give this or ``warmup_epochs``,
            not both. The warm-up multiplies the main schedule.
        warmup_start_factor: Learning-rate fraction the warm-up starts from.
        label_smoothing: Label smoothing of the training loss (evaluation loss is plain
            cross-entropy, comparable across recipes).
        mixup_alpha: MixUp's Beta parameter; 0 disables it.
        cutmix_alpha: CutMix's Beta parameter; 0 disables it. With both, each batch uses one
            of the two at random. ``train/acc1`` then compares with the original labels.
        no_weight_decay_norm_and_bias: Exempt normalisation layers and biases from weight decay.
        ema_decay: Keep an exponential moving average of the weights with this decay (e.g.
            0.9999) and evaluate, predict and export with it; ``None`` disables it.
        freeze_body: Train only the classifier; the body keeps its weights and its
            batch-norm statistics (its norm layers stay in eval mode).
        body_lr_scale: Learning-rate factor of the body (the classifier keeps the configured
            rate), e.g. 0.1 to fine-tune pretrained weights gently.
        channels_last: Run convolutions in channels-last memory format (faster on tensor cores).
        compile: ``torch.compile`` the backbone.
        predict_topk: Classes returned per image by ``predict_step``.

    Validation, test and predict average the class probabilities over whatever views of each
    image a batch carries: ``(N, C, H, W)`` images are one view each, ``(N, V, C, H, W)`` (the
    datamodules' ``eval_protocol="ten_crop"``) or a list of those per scale (``"dense"``) are
    several; see :mod:`lit_classifiers.eval_protocols`.
    """

    # Properties TorchScript must not compile (to_torchscript): they read the hyper-parameters.
    __jit_unused_properties__: list[str] = [
        *pl.LightningModule.__jit_unused_properties__,
        "num_classes",
        "class_names",
    ]

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
        lr: float | None = None,
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
        freeze_body: bool = False,
        body_lr_scale: float = 1.0,
        channels_last: bool = False,
        compile: bool = False,
        predict_topk: int = 5,
    ) -> None:
        super().__init__()
        _check_arguments(
            num_classes=num_classes,
            class_names=class_names,
            lr=lr,
            lr_scheduler_interval=lr_scheduler_interval,
            ema_decay=ema_decay,
            warmup=(warmup_epochs, warmup_steps, warmup_start_factor),
            label_smoothing=label_smoothing,
            mix_alphas=(mixup_alpha, cutmix_alpha),
            body_lr_scale=body_lr_scale,
            predict_topk=predict_topk,
        )
        unsaved = [*_UNSAVED, *(["backbone"] if isinstance(backbone, nn.Module) else [])]
        self.save_hyperparameters(ignore=unsaved)
        # The signature's lambda is there for LightningCLI, which prints it as SGD with its
        # arguments; a lambda does not pickle (ddp_spawn), so the module keeps this equivalent.
        if optimizer is _SIGNATURE_OPTIMIZER:
            optimizer = _default_optimizer
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler

        self.backbone = _build_backbone(backbone, num_classes, in_channels, backbone_kwargs)
        if freeze_body or body_lr_scale != 1.0:
            self.get_classifier()  # fails now, not at the first step, if there is none to find
        if freeze_body:
            self._freeze_body()
        self.channels_last = channels_last  # read by forward, where TorchScript has no hparams
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.ema = _moving_average(self.backbone, ema_decay)  # of the module, not its compiled form
        if compile:
            self.backbone.compile()

        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.batch_mix = _batch_mixer(num_classes, mixup_alpha, cutmix_alpha)
        self._build_metrics(num_classes)
        self._eval_counter = EvalSampleCounter()
        self._rng_to_restore: dict[str, Any] | None = None
        self._finite_checked_step = -1
        self._lr_names: list[str] = []
        # The rate configure_optimizers last used, and whether a learning-rate range test may
        # be running (its losses diverge on purpose; see setup).
        self._configured_lr: float | None = None
        self._lr_search = False
        self.train(self.training)  # puts a frozen body's norm layers in eval mode

    # ------------------------------------------------------------------------------ construction
    def _freeze_body(self) -> None:
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        for param in self.get_classifier().parameters():
            param.requires_grad_(True)

    def _build_metrics(self, num_classes: int) -> None:
        top5 = min(5, num_classes)
        self.train_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    # ------------------------------------------------------------------------------ network
    @property
    def num_classes(self) -> int:
        return int(self.hparams.num_classes)

    @property
    def class_names(self) -> list[str] | None:
        return self.hparams.get("class_names")

    def get_classifier(self) -> nn.Module:
        """The backbone's classifier, its final linear layer: what ``freeze_body`` trains and
        ``body_lr_scale`` leaves at the configured learning rate."""
        get_classifier = getattr(self.backbone, "get_classifier", None)
        if get_classifier is None:
            raise ValueError(
                f"{type(self.backbone).__name__} has no get_classifier(); freeze_body and "
                "body_lr_scale need to know which layer is the classifier"
            )
        return get_classifier()

    def forward(self, x: Tensor) -> Tensor:
        """Logits; outside training mode the EMA weights answer when they are kept."""
        if x.dtype == torch.uint8:  # a datamodule's loader used without its Trainer hook
            raise TypeError(
                "ClassifierModule got uint8 images (0-255): normalise the datamodule's batches "
                "first, images = datamodule.normalize(images) (a Trainer does it for you)"
            )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Two calls rather than one chosen module, so that TorchScript can compile it.
        if self.ema is not None and not self.training:
            return self.ema.module(x)
        return self.backbone(x)

    def _net(self) -> nn.Module:
        """The network :meth:`forward` runs now."""
        return self.ema.module if self.ema is not None and not self.training else self.backbone

    def _eval_logits(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """One logit row per image, averaged over the views the batch carries (see
        :func:`~lit_classifiers.eval_protocols.protocol_logits`)."""
        return protocol_logits(images, self, self._net())

    def train(self, mode: bool = True) -> Self:
        # A frozen body must not update its batch-norm statistics either, whoever calls train().
        super().train(mode)
        if self.hparams.freeze_body:
            classifier = set(self.get_classifier().modules())
            for module in self.backbone.modules():
                if isinstance(module, NORM_LAYERS) and module not in classifier:
                    module.eval()
        return self

    def _attached_trainer(self) -> pl.Trainer | None:
        """The Trainer running the module; ``None`` outside one (``load_from_checkpoint``, a
        hook called by hand, a Fabric loop)."""
        if self.fabric is not None:
            return None
        try:
            return self.trainer
        except RuntimeError:
            return None

    # ------------------------------------------------------------------------------ checks
    def setup(self, stage: str) -> None:
        """Catch a model built for other data before any step runs."""
        trainer = self._attached_trainer()
        if trainer is not None:  # None when setup() is called by hand
            _check_finetuning_callbacks(trainer.callbacks)
            # A LearningRateFinder searches in on_fit_start, before this module's on_fit_start.
            self._lr_search = stage == TrainerFn.FITTING and any(
                isinstance(callback, LearningRateFinder) for callback in trainer.callbacks
            )
        info = dataset_info(trainer) if trainer is not None else None
        if info is None:  # a datamodule that declares no DatasetInfo, or plain dataloaders
            return
        # One image of the data's size: Lightning's model summary then counts real FLOPs. Not
        # for a compiled backbone, which the summary's forward pass would compile for it.
        if not self.hparams.compile:
            size = info.image_size
            self.example_input_array = torch.zeros(1, info.in_channels, size, size)
        if info.num_classes != self.num_classes:
            raise ValueError(
                f"the model has num_classes={self.num_classes} but the datamodule has "
                f"{info.num_classes} classes; build the model with num_classes={info.num_classes}"
            )
        data_names = list(info.class_names)
        if self.class_names is None:
            self.hparams["class_names"] = data_names
        elif list(self.class_names) != data_names:
            raise ValueError(
                f"the model's class_names {list(self.class_names)[:5]}... differ from the "
                f"datamodule's {data_names[:5]}...: the label indices would mean other classes"
            )

    def _check_finite_weights(self) -> None:
        """Stop a diverged fit before this epoch's checkpoints are saved.

        Called where the module's hooks run before ModelCheckpoint's (validation epoch start,
        train epoch end); a loss can stay finite while BatchNorm statistics overflow.
        """
        trainer = self._attached_trainer()
        if trainer is None or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if self._lr_search:  # the range test diverges on purpose and restores the weights after
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
    # The steps keep only tensor work on the path torch.compile traces (``torch.compile(model)``
    # compiles whole steps); checks, metric updates and logging run in eager helpers that the
    # compiler leaves alone: reading a label as a Python int breaks the graph, and each new
    # learning rate logged as a float would compile the step again.
    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        images, labels = batch[0], batch[1]
        self._check_first_labels(labels, batch_idx)
        targets = labels
        if self.batch_mix is not None:  # soft targets; train/acc1 keeps the original labels
            images, targets = self.batch_mix(images, labels)
        logits = self(images)
        loss = self.criterion(logits, targets)
        self._record_training_step(loss, logits, labels, batch_idx)
        return loss

    @torch.compiler.disable
    def _record_training_step(
        self, loss: Tensor, logits: Tensor, labels: Tensor, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            self._check_logits(logits)
        if not self._lr_search:  # a range test ends where the loss diverges, often beyond inf
            check_finite_loss(
                loss, epoch=self.current_epoch, global_step=self.global_step, batch_idx=batch_idx
            )
        self.train_acc1.update(logits.detach(), labels)
        self.log("train/loss", loss, prog_bar=True)
        trainer = self._attached_trainer()
        if trainer is not None and trainer.optimizers:
            groups = trainer.optimizers[0].param_groups
            for tag, group in zip(self._lr_names, groups, strict=False):
                self.log(tag, group["lr"])

    @torch.compiler.disable
    def _check_first_labels(self, labels: Tensor, batch_idx: int) -> None:
        if batch_idx == 0:  # once per epoch and stage: it costs a device synchronisation
            self._check_labels(labels)

    def on_train_epoch_start(self) -> None:
        trainer = self._attached_trainer()
        if trainer is not None and trainer.optimizers:
            self._lr_names = _lr_tags(trainer.optimizers[0].param_groups)
        self.train_acc1.reset()  # see _reset_metrics

    def on_train_epoch_end(self) -> None:
        self._check_finite_weights()  # runs before ModelCheckpoint's on_train_epoch_end
        # Once per epoch rather than a self.log call per step: each costs ~0.4 ms of Python.
        self._log_metric("train/acc1", self.train_acc1)

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
        self._check_first_labels(labels, batch_idx)
        logits = self._eval_logits(images)
        return self._record_evaluation(logits, labels, batch_idx, dataloader_idx, stage)

    @torch.compiler.disable
    def _record_evaluation(
        self, logits: Tensor, labels: Tensor, batch_idx: int, dataloader_idx: int, stage: str
    ) -> dict[str, Tensor]:
        if batch_idx == 0:
            self._check_logits(logits)
        # Drop the repeats a DistributedSampler pads the last batches with.
        trainer = self._attached_trainer()
        keep = (
            len(labels)
            if trainer is None
            else self._eval_counter.num_real(trainer, len(labels), dataloader_idx)
        )
        logits, labels = logits[:keep], labels[:keep]
        loss_metric = getattr(self, f"{stage}_loss")
        acc1, acc5 = getattr(self, f"{stage}_acc1"), getattr(self, f"{stage}_acc5")
        if keep:
            loss_metric.update(F.cross_entropy(logits.float(), labels, reduction="none"))
            acc1.update(logits, labels)
            acc5.update(logits, labels)
        self._log_metric(f"{stage}/loss", loss_metric, prog_bar=stage == "val")
        self._log_metric(f"{stage}/acc1", acc1, prog_bar=stage == "val")
        self._log_metric(f"{stage}/acc5", acc5)
        return {"preds": logits.argmax(-1), "target": labels}

    def _log_metric(self, name: str, metric: Metric, prog_bar: bool = False) -> None:
        """``self.log`` of a torchmetrics object under a Trainer. Fabric logs only numbers: its
        users read the metric objects (``model.val_acc1.compute()``) when their loop wants."""
        if self.fabric is None:
            self.log(name, metric, prog_bar=prog_bar)

    def on_validation_epoch_start(self) -> None:
        self._check_finite_weights()  # ModelCheckpoint saves at the end of this validation
        self._eval_counter.reset()
        self._reset_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._eval_counter.reset()
        self._reset_metrics("test")

    def _reset_metrics(self, stage: str) -> None:
        """Fresh metric states, made under this loop's grad mode.

        Lightning resets the metrics at the end of each epoch, within the loop: after a run
        under ``torch.inference_mode`` (validate, test) they hold inference tensors, which a
        later loop under ``no_grad`` (fit's validation, ``inference_mode=False``) may not update
        in place. Also drops states a ``ddp_spawn`` fit carried back from its workers.
        """
        for name in ("loss", "acc1", "acc5"):
            getattr(self, f"{stage}_{name}").reset()

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Probabilities and the top-k classes of each image (with names where known).

        ``batch`` is an image tensor, ``(images, paths)`` as the datamodules' predict loaders
        give, or ``(images, labels)``.
        """
        images, extra = (batch, None) if isinstance(batch, Tensor) else (batch[0], batch[1:])
        probs = self._eval_logits(images).float().softmax(dim=-1)
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
        split = self.hparams.freeze_body or self.hparams.body_lr_scale != 1.0
        groups = build_param_groups(
            self.backbone,
            self.get_classifier() if split else None,
            body_lr_scale=self.hparams.body_lr_scale,
            no_weight_decay_norm_and_bias=self.hparams.no_weight_decay_norm_and_bias,
        )
        optimizer = self.optimizer_factory(groups)
        self._configured_lr = self.hparams.get("lr")
        apply_lr_override(optimizer, self._configured_lr)
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
        trainer = self._attached_trainer()
        trainer_callbacks = trainer.callbacks if trainer is not None else []
        wanted = (ClassifierTensorBoard, InputPreprocessing, StepLogInterval)
        return [
            kind() for kind in wanted if not any(isinstance(cb, kind) for cb in trainer_callbacks)
        ]

    # ------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = capture_rng_state()
        hparams = checkpoint.get("hyper_parameters")
        if hparams and hparams.get("backbone_kwargs"):
            kwargs = {k: v for k, v in hparams["backbone_kwargs"].items() if k != "weights"}
            checkpoint["hyper_parameters"] = {**hparams, "backbone_kwargs": kwargs}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = self._attached_trainer()
        check_checkpoint_fits(self, checkpoint, trainer.ckpt_path if trainer is not None else None)
        # Only a resumed fit moves the global generators; load_from_checkpoint (no trainer) and
        # validate/test runs leave them alone.
        resuming = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        self._rng_to_restore = checkpoint.get(RNG_KEY) if resuming else None

    def on_fit_start(self) -> None:
        # Runs after the callbacks' on_fit_start, where a LearningRateFinder has searched and
        # set hparams.lr: Lightning then gives every group that one rate, which would undo
        # body_lr_scale and warm-up, and leaves the schedulers bound to the old rates. Building
        # optimizer and schedulers again applies the rate the way a configured one is.
        self._lr_search = False
        trainer = self._attached_trainer()
        if (
            trainer is not None
            and trainer.optimizers
            and self.hparams.get("lr") != self._configured_lr
        ):
            trainer.strategy.setup_optimizers(trainer)
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
        """Lightning's ``load_from_checkpoint(weights_only=True)``, after a check: the file
        (local, ``http(s)://`` or any fsspec URL, downloaded within bounds) is read with
        ``weights_only=True`` and its hyper-parameters must be plain data naming a registered
        backbone (see :func:`~lit_classifiers.checkpoint_io.check_checkpoint_hparams`) before
        anything is imported or built from them. A checkpoint of a custom backbone needs
        ``backbone=<the module>``."""
        with checked_classifier_checkpoint(
            checkpoint_path, hparams_file, strict, weights_only, kwargs
        ) as (local, checked_kwargs):
            return super().load_from_checkpoint(
                local,
                map_location=map_location,
                hparams_file=hparams_file,
                strict=strict,
                weights_only=True,
                **checked_kwargs,
            )


# torchvision's ImageNet recipe (references/classification/train.py: --lr 0.1, --momentum 0.9,
# --wd 1e-4), as the signature's lambda writes it.
_default_optimizer = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-4)
_SIGNATURE_OPTIMIZER = inspect.signature(ClassifierModule).parameters["optimizer"].default


def _check_arguments(
    *,
    num_classes: int,
    class_names: Sequence[str] | None,
    lr: float | None,
    lr_scheduler_interval: str,
    ema_decay: float | None,
    warmup: tuple[int, int, float],
    label_smoothing: float,
    mix_alphas: tuple[float, float],
    body_lr_scale: float,
    predict_topk: int,
) -> None:
    """One line per bad argument, before anything is built."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but num_classes={num_classes}")
    if lr is not None and (
        isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf
    ):
        raise ValueError(
            f"lr must be a positive number (it replaces the optimizer's learning rate) or None, "
            f"got {lr!r}"
        )
    if lr_scheduler_interval not in ("epoch", "step"):
        raise ValueError(
            f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}"
        )
    if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}")
    warmup_epochs, warmup_steps, warmup_start_factor = warmup
    if warmup_epochs < 0 or warmup_steps < 0:
        raise ValueError(
            f"warmup_epochs and warmup_steps must be >= 0, got {warmup_epochs} and {warmup_steps}"
        )
    if warmup_epochs and warmup_steps:
        raise ValueError("give warmup_epochs or warmup_steps, not both")
    if (warmup_epochs or warmup_steps) and not 0.0 < warmup_start_factor <= 1.0:
        raise ValueError(f"warmup_start_factor must be in (0, 1], got {warmup_start_factor}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    for name, alpha in zip(("mixup_alpha", "cutmix_alpha"), mix_alphas, strict=True):
        if alpha < 0:
            raise ValueError(f"{name} must be >= 0 (0 disables it), got {alpha}")
    if body_lr_scale < 0:
        raise ValueError(f"body_lr_scale must be >= 0, got {body_lr_scale}")
    if predict_topk < 1:
        raise ValueError(f"predict_topk must be >= 1, got {predict_topk}")


def _build_backbone(
    backbone: str | nn.Module,
    num_classes: int,
    in_channels: int,
    backbone_kwargs: dict[str, Any] | None,
) -> nn.Module:
    if isinstance(backbone, nn.Module):
        return backbone
    return create_backbone(
        backbone, num_classes, in_channels=in_channels, **(backbone_kwargs or {})
    )


def _check_finetuning_callbacks(callbacks: Sequence[Callback]) -> None:
    for callback in callbacks:
        if isinstance(callback, BackboneFinetuning) and not isinstance(callback, BodyFinetuning):
            raise ValueError(
                "BackboneFinetuning would freeze ClassifierModule's whole network, classifier "
                "included (model.backbone is the whole network): use "
                "lit_classifiers.BodyFinetuning, which takes the same arguments"
            )


def _lr_tags(param_groups: Sequence[dict[str, Any]]) -> list[str]:
    """The logged name of each parameter group's learning rate: ``train/lr`` for a single
    group, ``train/lr/<group name>`` for several (``train/lr/pg<i>`` for an unnamed one)."""
    if len(param_groups) == 1:
        return ["train/lr"]
    return [f"train/lr/{g.get('name') or f'pg{i}'}" for i, g in enumerate(param_groups)]


class _MovingAverage(AveragedModel):
    """torch's exponential-moving-average ``AveragedModel`` in a form that pickles (ddp_spawn:
    its update function is a closure, rebuilt from ``decay`` on unpickling) and that TorchScript
    compiles (``to_torchscript``): its class annotation ``n_averaged: Tensor`` is a string
    (postponed evaluation) TorchScript cannot resolve, and its ``forward(*args, **kwargs)`` has
    no fixed signature (the module calls ``.module`` directly)."""

    __annotations__ = {"n_averaged": Tensor}  # the type itself, not a string

    def __init__(self, module: nn.Module, decay: float) -> None:
        super().__init__(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay = decay

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "multi_avg_fn"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.multi_avg_fn = get_ema_multi_avg_fn(self.decay)

    @torch.jit.unused
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


def _moving_average(backbone: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``backbone``'s weights and buffers, or ``None``."""
    if decay is None:
        return None
    ema = _MovingAverage(backbone, decay)
    ema.requires_grad_(False)  # updated by averaging, never by gradients (DDP needs to know)
    return ema


def _batch_mixer(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> nn.Module | None:
    """MixUp, CutMix, a random choice of the two per batch, or ``None``."""
    mixers = [
        transform(alpha=alpha, num_classes=num_classes)
        for transform, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha))
        if alpha > 0
    ]
    if len(mixers) > 1:
        return v2.RandomChoice(mixers)
    return mixers[0] if mixers else None
