"""Random-number state in a form that checkpoints can carry and ``weights_only`` loading accepts.

Lightning's checkpoints keep the weights, optimizer and loops but no random-number state, so a
resumed run draws other shuffles, augmentations, dropout masks and MixUp ratios than the run it
continues. :class:`~lit_classifiers.ClassifierModule` stores the state returned by
:func:`capture_rng_state` in every checkpoint and restores it when training resumes.

Everything here is built from tensors, lists, ints, floats, strings and ``None``: numpy's state
is a tuple holding an ``ndarray``, which ``torch.load(weights_only=True)`` refuses (rightly: it
would need numpy's unpickler), so it is converted to a tensor and back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state"]


def capture_rng_state() -> dict[str, Any]:
    """The state of torch (CPU and initialised CUDA devices), numpy and Python's ``random``."""
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(bit_generator),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    # Only when CUDA is already in use: querying it would otherwise initialise it for nothing.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back a state from :func:`capture_rng_state` (missing parts are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        np_state = state["numpy"]
        np.random.set_state(
            (
                np_state["bit_generator"],
                np_state["keys"].numpy().astype(np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
    if "python" in state:
        py_state = state["python"]
        random.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss_next"]))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:  # another machine: each device takes the first saved stream rather than failing
            for device in range(torch.cuda.device_count()):
                torch.cuda.set_rng_state(cuda_states[0].cpu(), device)
