"""Rank statistics for verdicts over stored runs (plain NumPy, float64)."""
from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks of a 1-D array, ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float | None:
    """Spearman's rank correlation of two equal-length sequences: Pearson's correlation of their
    ranks, ties given their mean rank (weight decays and widths repeat across seeds, and ranking
    ties by position would make the value depend on the order the runs were listed in).

    Returns None when there are fewer than 3 pairs or one side has no spread (every value tied),
    where the correlation is undefined; raises on unequal lengths or non-finite values."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"spearman needs two 1-D sequences of one length, got {a.shape} and "
                         f"{b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("spearman got NaN or inf (a diverged run?)")
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])
