"""Parameter groups and learning-rate schedules of :class:`~lit_classifiers.ClassifierModule`.

The optimizer itself is a user-given callable (``OptimizerCallable``), so the module cannot
pass learning rates or weight decays to it directly. It passes *parameter groups* instead:
per-group ``weight_decay=0`` where decay is unwanted, and an ``lr_scale`` that
:func:`apply_lr_scales` multiplies into each group's learning rate once the optimizer exists
and before any scheduler records its base learning rates.

:func:`apply_lr_override` is what ``ClassifierModule(lr=...)`` (and Lightning's learning-rate
finder, which sets that argument) does to the optimizer the callable built, and
:func:`optimizer_hparams` reads back the settings runs are compared by, whatever the callable
was (``functools.partial``, LightningCLI's ``class_path`` callable, a lambda).
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, ReduceLROnPlateau

__all__ = [
    "NORM_LAYERS",
    "WARMUP_NAME",
    "apply_lr_override",
    "apply_lr_scales",
    "build_param_groups",
    "check_plateau_mode",
    "optimizer_hparams",
    "warmup_scheduler_config",
]

#: Lightning scheduler-config name of the warm-up, which tells it apart from the main schedule.
WARMUP_NAME = "lr-warmup"

#: Layers whose parameters are scales and shifts of normalised activations: decaying them
#: towards zero fights the normalisation instead of regularising the network.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)

#: Direction of the metrics the module logs, for checking a plateau scheduler's ``mode``.
METRIC_MODES = {
    "val/acc1": "max",
    "val/acc5": "max",
    "train/acc1": "max",
    "val/loss": "min",
    "train/loss": "min",
}


def build_param_groups(
    model: nn.Module,
    classifier: nn.Module | None = None,
    *,
    body_lr_scale: float = 1.0,
    no_weight_decay_norm_and_bias: bool = False,
) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` split into named optimizer groups.

    With ``classifier`` (the model's final linear layer) given, its parameters form the
    ``classifier`` groups (learning rate as configured) and the rest, the body, the ``body``
    groups (learning rate times ``body_lr_scale``). With ``no_weight_decay_norm_and_bias`` the
    parameters of :data:`NORM_LAYERS` and every bias go to ``*_no_decay`` groups with
    ``weight_decay=0``. Classifier groups come first, so group 0 always runs at the configured
    learning rate. Empty groups are left out.
    """
    no_decay: set[int] = set()
    if no_weight_decay_norm_and_bias:
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if isinstance(module, NORM_LAYERS) or name == "bias":
                    no_decay.add(id(param))
    classifier_ids = {id(p) for p in classifier.parameters()} if classifier is not None else None

    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        in_classifier = classifier_ids is None or id(param) in classifier_ids
        buckets.setdefault((in_classifier, id(param) in no_decay), []).append(param)

    groups = []
    for in_classifier in (True, False):
        for skip_decay in (False, True):
            params = buckets.get((in_classifier, skip_decay))
            if not params:
                continue
            part = None if classifier_ids is None else ("classifier" if in_classifier else "body")
            kind = None
            if no_weight_decay_norm_and_bias:
                kind = "no_decay" if skip_decay else ("decay" if part is None else None)
            name = "_".join(s for s in (part, kind) if s) or "params"
            group: dict[str, Any] = {
                "params": params,
                "name": name,
                "lr_scale": 1.0 if in_classifier else body_lr_scale,
            }
            if skip_decay:
                group["weight_decay"] = 0.0
            groups.append(group)
    return groups


def apply_lr_override(optimizer: Optimizer, lr: float | None) -> None:
    """Give every group (and the optimizer's defaults) the learning rate ``lr``; ``None`` keeps
    the rate the optimizer was built with. Runs before :func:`apply_lr_scales`, so the scales
    still apply on top of it."""
    if lr is None:
        return
    optimizer.defaults["lr"] = lr
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_hparams(optimizer: Optimizer, lr: float | None = None) -> dict[str, Any]:
    """The settings of ``optimizer`` that runs are compared by: its class, base learning rate
    (``lr`` when given, e.g. a rate the learning-rate finder set since the optimizer was built),
    momentum, ``nesterov``, Adam-style ``beta1``/``beta2`` and weight decay, as far as it has
    them. Read from ``optimizer.defaults``, which holds the arguments it was built with."""
    defaults = optimizer.defaults
    facts: dict[str, Any] = {"optimizer": type(optimizer).__name__}
    base_lr = lr if lr is not None else defaults.get("lr")
    if isinstance(base_lr, (int, float)):  # a tensor lr (capturable optimizers) is left out
        facts["lr"] = float(base_lr)
    for key in ("momentum", "nesterov", "weight_decay"):
        if key in defaults and isinstance(defaults[key], (bool, int, float)):
            facts[key] = defaults[key]
    betas = defaults.get("betas")
    if isinstance(betas, (tuple, list)) and len(betas) == 2:
        facts["beta1"], facts["beta2"] = (float(b) for b in betas)
    return facts


def apply_lr_scales(optimizer: Optimizer) -> None:
    """Turn each group's ``lr_scale`` into its learning rate (and drop the key)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)


def warmup_scheduler_config(
    optimizer: Optimizer, *, epochs: int, steps: int, start_factor: float
) -> dict[str, Any] | None:
    """A Lightning scheduler config that ramps the learning rate linearly from
    ``start_factor`` times its value to its value over ``epochs`` epochs or ``steps`` steps.

    ``LinearLR`` multiplies the current learning rate rather than overwriting it, so it composes
    with the chainable main schedules (step, multi-step, exponential, cosine, plateau) that
    run beside it, whatever their own interval.
    """
    if epochs and steps:
        raise ValueError("give warmup_epochs or warmup_steps, not both")
    if not epochs and not steps:
        return None
    if not 0.0 < start_factor <= 1.0:
        raise ValueError(f"warmup_start_factor must be in (0, 1], got {start_factor}")
    interval: Literal["epoch", "step"] = "epoch" if epochs else "step"
    scheduler = LinearLR(optimizer, start_factor, 1.0, total_iters=epochs or steps)
    return {"scheduler": scheduler, "interval": interval, "frequency": 1, "name": WARMUP_NAME}


def check_plateau_mode(scheduler: Any, monitor: str) -> None:
    """Refuse a ``ReduceLROnPlateau`` whose ``mode`` contradicts the monitored metric: with
    torch's default ``mode="min"`` on ``val/acc1`` it would cut the rate while accuracy rises."""
    if not isinstance(scheduler, ReduceLROnPlateau):
        return
    expected = METRIC_MODES.get(monitor)
    if expected is not None and scheduler.mode != expected:
        raise ValueError(
            f"ReduceLROnPlateau(mode={scheduler.mode!r}) monitors {monitor!r}, which should be "
            f"{'maximised' if expected == 'max' else 'minimised'}: construct it with "
            f"mode={expected!r} (from YAML: lr_scheduler.init_args.mode: {expected}) or set "
            "lr_scheduler_monitor"
        )
