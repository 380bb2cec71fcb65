"""Correction for testing several candidates against one baseline."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["holm"]


def holm(p_values: ArrayLike) -> NDArray[np.float64]:
    """Holm's step-down adjusted p-values along the last axis.

    Sorted ascending, the i-th smallest of m p-values (i from 0) is multiplied
    by m - i; a running maximum keeps the adjusted values in the same order as
    the raw ones, and they are capped at 1.  Rejecting where adjusted < alpha
    is exactly Holm's procedure, which holds the family-wise error rate at
    alpha under any dependence between the tests.  Works on a batch too
    (shape (..., m)), which the simulations use.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim == 0:
        raise ValueError("holm() needs a sequence of p-values")
    if p.shape[-1] == 0:
        return p.copy()
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    ranked = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    adjusted = np.empty_like(ranked)
    np.put_along_axis(adjusted, order, ranked, axis=-1)
    return adjusted
