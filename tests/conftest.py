"""Shared pytest settings. Per-area fixtures live in their own ``*_fixtures.py`` modules."""

import os

# Keep every test process (and the subprocesses tests start) from oversubscribing the cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
