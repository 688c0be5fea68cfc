"""Shared pytest settings. Per-area fixtures live in their own ``*_fixtures.py`` modules."""

import os

import torch

# One compute thread per test process under pytest-xdist (and for the subprocesses tests start):
# with two workers on two cores, two threads each would oversubscribe the cores, and OpenMP's
# spinning threads then slow every test down several-fold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
