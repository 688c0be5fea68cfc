"""Built-in architectures; importing this package registers them."""

from lit_classifiers.models.alexnet import AlexNet, alexnet, alexnet_owt
from lit_classifiers.models.base import Backbone
from lit_classifiers.models.resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from lit_classifiers.models.resnet_cifar import (
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from lit_classifiers.models.vgg import (
    VGG,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)

__all__ = [
    "VGG",
    "AlexNet",
    "Backbone",
    "CifarResNet",
    "ResNet",
    "alexnet",
    "alexnet_owt",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]
