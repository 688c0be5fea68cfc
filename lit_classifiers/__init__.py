"""lit-classifiers: AlexNet, VGG and ResNet as a PyTorch Lightning module collection."""

from lit_classifiers import models as _models  # noqa: F401  (registers the built-in backbones)
from lit_classifiers.finetuning import BodyFinetuning
from lit_classifiers.models.base import Backbone
from lit_classifiers.module import ClassifierModule
from lit_classifiers.registry import (
    BackboneInfo,
    Paper,
    create_backbone,
    get_backbone_info,
    list_backbones,
    register_backbone,
)

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "BackboneInfo",
    "BodyFinetuning",
    "ClassifierModule",
    "Paper",
    "create_backbone",
    "get_backbone_info",
    "list_backbones",
    "register_backbone",
]
