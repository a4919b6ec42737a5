"""Theorem 2.3.1's statement about class *pairs*, tested directly (arXiv 2309.04644).

The theorem bounds the inter-class cosine of a 1 - delta fraction of the class pairs, not of the
worst pair (`max_inter`) nor of the average: for features with sum_c u_c ~ 0 (BN outputs),
sum_{c != c'} <u_c, u_c'> = ||sum_c u_c||^2 - sum_c intra_c makes `mean_inter` ~ -mean_intra /
(C - 1), a restatement of the intra-class cosines. These functions read the full (C, C) matrix of
class-mean cosines (`cosine_matrix` of a run, `nc_jax.metrics.cosine_similarity_matrix`) instead.
Plain NumPy (float64): they run on stored results."""
from __future__ import annotations

import numpy as np


def _matrix(G) -> np.ndarray:
    G = np.asarray(G, dtype=np.float64)
    if G.ndim < 2 or G.shape[-1] != G.shape[-2] or G.shape[-1] < 2:
        raise ValueError(f"a cosine matrix must have shape (..., C, C) with C >= 2, got {G.shape}")
    if not np.isfinite(G).all():
        raise ValueError("the cosine matrix holds NaN or inf (a diverged run?)")
    return G


def pair_cosines(G) -> np.ndarray:
    """The C (C - 1) / 2 inter-class cosines G[c, c'], c < c', of a (..., C, C) cosine matrix, as
    (..., C (C - 1) / 2) in row-major order of the upper triangle."""
    G = _matrix(G)
    i, j = np.triu_indices(G.shape[-1], k=1)
    return G[..., i, j]


def simplex_cosine(num_classes: int) -> float:
    """-1 / (C - 1): the cosine between any two vertices of the centred simplex (the theorem's
    limit of every inter-class cosine)."""
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return -1.0 / (int(num_classes) - 1)


def pair_fraction(G, tol: float) -> np.ndarray:
    """The fraction of class pairs c < c' with |G[c, c'] + 1/(C - 1)| <= tol: the 1 - delta of
    Theorem 2.3.1 at tolerance `tol` (shape G.shape[:-2])."""
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    G = _matrix(G)
    dev = np.abs(pair_cosines(G) - simplex_cosine(G.shape[-1]))
    return (dev <= tol).mean(axis=-1)


def pair_quantiles(G, qs=(0.0, 0.1, 0.5, 0.9, 1.0)) -> np.ndarray:
    """Quantiles (linear interpolation) of the inter-class cosines over the class pairs, shape
    (len(qs), *G.shape[:-2]); q = 0 / 1 are the smallest / largest pair (1 is `max_inter`)."""
    qs = np.asarray(qs, dtype=np.float64)
    if qs.ndim != 1 or ((qs < 0) | (qs > 1) | ~np.isfinite(qs)).any():
        raise ValueError(f"quantiles must be numbers in [0, 1], got {qs.tolist()}")
    return np.quantile(pair_cosines(G), qs, axis=-1)
