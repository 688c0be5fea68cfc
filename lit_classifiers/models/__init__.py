"""Built-in architectures, one file per family; importing this package registers them.

Each family file holds a ``BACKBONES`` table (one record of facts per variant) and one
``@register_backbone`` builder per variant, which the decorator adds to the file's
``__all__``; the star imports below make every builder ``lit_classifiers.models.<name>``.
A new family is a new file and one import line here.
"""

from lit_classifiers.models.alexnet import *  # noqa: F403
from lit_classifiers.models.base import Backbone as Backbone
from lit_classifiers.models.resnet import *  # noqa: F403
from lit_classifiers.models.resnet_cifar import *  # noqa: F403
from lit_classifiers.models.vgg import *  # noqa: F403
