"""Lightning's ``BackboneFinetuning`` for :class:`~lit_classifiers.ClassifierModule`.

Lightning's callback freezes ``pl_module.backbone`` and later unfreezes it as a new parameter
group. In ``ClassifierModule`` the backbone is the whole network, classifier included (its
state_dict keys are ``backbone.*``), so the plain callback would freeze the classifier too and
train nothing. :class:`BodyFinetuning` takes the same arguments and does what its users
expect: the body (everything but the classifier) is frozen until ``unfreeze_backbone_at_epoch``,
then trained at its own, rising learning rate; the classifier trains from the first step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BackboneFinetuning
from torch import nn
from torch.optim import Optimizer

__all__ = ["BodyFinetuning", "body_modules"]


def body_modules(backbone: nn.Module, classifier: nn.Module) -> list[nn.Module]:
    """The modules of ``backbone`` that hold parameters or buffers outside ``classifier``."""
    head = set(classifier.modules())
    return [
        module
        for module in backbone.modules()
        if module not in head
        and (
            any(True for _ in module.parameters(recurse=False))
            or any(True for _ in module.buffers(recurse=False))
        )
    ]


class BodyFinetuning(BackboneFinetuning):
    """``BackboneFinetuning`` (same arguments) that freezes and later unfreezes the body of a
    ``ClassifierModule``'s network, never its classifier."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backbone: nn.Module | None = None
        self._body: list[nn.Module] = []

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self._backbone = pl_module.backbone
        self._body = body_modules(pl_module.backbone, pl_module.get_classifier())
        self.freeze(self._body)

    def unfreeze_and_add_param_group(  # type: ignore[override]
        self,
        modules: nn.Module | Iterable[nn.Module | Iterable],
        optimizer: Optimizer,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        # BackboneFinetuning.finetune_function hands pl_module.backbone: the whole network.
        if modules is self._backbone:
            modules = self._body
        super().unfreeze_and_add_param_group(modules, optimizer, *args, **kwargs)
