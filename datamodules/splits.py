"""Seeded, stratified hold-out splits shared by every datamodule.

The split must be a pure function of ``(labels, size, seed)``: under DDP every rank builds its
own datamodule and they must agree on which images are held out without talking to each other.
NumPy's ``default_rng`` (PCG64) gives the same stream on every platform and NumPy version, and
nothing here depends on dict or set iteration order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_split_size", "resolve_split_size", "stratified_split"]


def check_split_size(value: int | float, name: str = "val_split") -> int | float:
    """``value`` if it can be a split size: an int count >= 0 or a float fraction in [0, 1).

    What needs no dataset, so datamodules check it when they are built; whether a count fits
    is :func:`resolve_split_size`'s business once the data is known. ``bool`` is rejected
    explicitly: ``val_split=True`` would otherwise silently mean one image.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be an int (a count) or a float in [0, 1), got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name}={value} must be a count >= 0, or a float fraction in [0, 1)")
    if isinstance(value, float) and not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value} must be a fraction in [0, 1), or an int count")
    return value


def resolve_split_size(value: int | float, total: int, name: str = "val_split") -> int:
    """Turn a count (int) or a fraction (float in [0, 1)) into a number of items of ``total``."""
    check_split_size(value, name)
    if isinstance(value, int):
        if not value < total:
            raise ValueError(
                f"{name}={value} must be a count in [0, {total}) (there are {total} images to "
                "split), or a float fraction in [0, 1)"
            )
        return value
    return round(value * total)


def stratified_split(labels: np.ndarray, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held out) with every class represented in proportion.

    Per-class quotas use the largest-remainder method so the total is exactly ``holdout``, and
    every class keeps at least one image on the kept side (a class that exists only in the
    hold-out could never be learned). Both returned index arrays are sorted, so datasets built from
    them read files in a stable order.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if not 0 <= holdout < total:
        raise ValueError(f"cannot hold out {holdout} of {total} items")
    indices = np.arange(total)
    if holdout == 0:
        return indices, indices[:0]

    classes, counts = np.unique(labels, return_counts=True)
    capacity = counts - 1  # leave one image of each class on the kept side
    if holdout > capacity.sum():
        raise ValueError(
            f"cannot hold out {holdout} of {total} images and still keep one image of each of "
            f"the {len(classes)} classes for training; use a smaller val_split"
        )
    exact = holdout * counts / total
    quota = np.minimum(np.floor(exact).astype(np.int64), capacity)
    # Hand out what is left one by one, largest fractional part first; ties go to the lower
    # class so the result never depends on sort stability.
    order = np.lexsort((np.arange(len(classes)), -(exact - np.floor(exact))))
    remaining = holdout - int(quota.sum())
    while remaining > 0:
        for c in order:
            if remaining == 0:
                break
            if quota[c] < capacity[c]:
                quota[c] += 1
                remaining -= 1

    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c, cls in enumerate(classes):
        members = indices[labels == cls]
        held.append(rng.permutation(members)[: quota[c]])
    held_out = np.sort(np.concatenate(held))
    kept = np.setdiff1d(indices, held_out, assume_unique=True)
    return kept, held_out
