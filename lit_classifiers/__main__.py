"""``python -m lit_classifiers`` is the ``lit-classifiers`` command."""

import sys

from lit_classifiers.cli import main

sys.exit(main())
