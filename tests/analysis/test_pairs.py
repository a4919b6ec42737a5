"""Theorem 2.3.1's class-pair statement (`nc_jax.analysis.pair_*`) against direct counts."""
import itertools

import numpy as np
import pytest

from nc_jax.analysis import pair_cosines, pair_fraction, pair_quantiles, simplex_cosine


def _simplex(C):
    """The Gram matrix of C unit vectors at the centred simplex: 1 on the diagonal, -1/(C-1) off."""
    return np.full((C, C), -1.0 / (C - 1)) + np.eye(C) * (1 + 1.0 / (C - 1))


def test_simplex_has_every_pair_within_any_tolerance():
    for C in (2, 3, 10):
        assert pair_fraction(_simplex(C), 0.0) == 1.0
        np.testing.assert_allclose(pair_quantiles(_simplex(C)), -1.0 / (C - 1))
    assert simplex_cosine(10) == pytest.approx(-1 / 9)


def test_fraction_and_quantiles_count_the_pairs_by_hand():
    rng = np.random.default_rng(0)
    C = 6
    A = rng.uniform(-0.4, 0.3, (C, C))
    G = (A + A.T) / 2
    np.fill_diagonal(G, 1.0)
    pairs = [G[i, j] for i, j in itertools.combinations(range(C), 2)]
    assert sorted(pair_cosines(G).tolist()) == sorted(pairs)
    for tol in (0.01, 0.05, 0.2):
        want = sum(abs(p + 1 / (C - 1)) <= tol for p in pairs) / len(pairs)
        assert pair_fraction(G, tol) == want
    s = np.sort(pairs)
    q = pair_quantiles(G, (0.0, 0.5, 1.0))
    assert (q[0], q[2]) == (s[0], s[-1])
    assert q[1] == pytest.approx(np.median(s))
    # only the off-diagonal entries count: the diagonal (intra) changes nothing
    G2 = G.copy()
    np.fill_diagonal(G2, -5.0)
    assert pair_fraction(G2, 0.05) == pair_fraction(G, 0.05)


def test_batched_over_runs():
    G = np.stack([_simplex(4), np.eye(4)])
    np.testing.assert_array_equal(pair_fraction(G, 0.05), [1.0, 0.0])
    assert pair_quantiles(G, (0.5,)).shape == (1, 2)


@pytest.mark.parametrize("bad, msg", [(np.ones((3, 4)), "shape"), (np.ones(3), "shape"),
                                      (np.full((3, 3), np.nan), "NaN")])
def test_bad_matrices_are_named(bad, msg):
    with pytest.raises(ValueError, match=msg):
        pair_fraction(bad, 0.05)


def test_bad_tolerance_and_quantiles():
    with pytest.raises(ValueError, match="tol"):
        pair_fraction(np.eye(3), -0.1)
    with pytest.raises(ValueError, match="quantiles"):
        pair_quantiles(np.eye(3), (0.5, 1.5))
