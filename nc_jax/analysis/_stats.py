"""Rank statistics for verdicts over stored runs (plain NumPy, float64)."""
from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks of a 1-D array, ties given the mean of the ranks they span: a value seen k
    times after `start` smaller ones spans start .. start + k - 1, mean start + (k - 1) / 2."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts
    return (start + (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(a, b) -> float | None:
    """Spearman's rank correlation of two equal-length sequences: Pearson's correlation of their
    ranks, ties given their mean rank (weight decays and widths repeat across seeds, and ranking
    ties by position would make the value depend on the order the runs were listed in).

    Returns None when there are fewer than 3 pairs or one side has no spread (every value tied),
    where the correlation is undefined; raises on unequal lengths or NaN / inf / None."""
    # NumPy reads None as NaN here, so one check covers both
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"spearman needs two 1-D sequences of one length, got {a.shape} and "
                         f"{b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("spearman got NaN, inf or None (a diverged run, or one without the "
                         "value?)")
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])
