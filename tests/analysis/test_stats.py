"""`nc_jax.analysis.spearman` against SciPy's tie-averaged Spearman and hand-computed values."""
import numpy as np
import pytest
from scipy import stats

from nc_jax.analysis import spearman


def test_matches_scipy_with_and_without_ties():
    rng = np.random.default_rng(0)
    for n in (3, 7, 40):
        a, b = rng.normal(size=n), rng.normal(size=n)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        # ties: a grid value repeated over seeds, as weight decays are
        a = np.repeat(rng.choice([1e-4, 1e-3, 1e-2], size=n // 3 + 1), 3)[:n]
        if np.unique(a).size > 1:
            assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_by_hand():
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    # ranks (0.5, 0.5, 2, 3) vs (0, 1, 2, 3): Pearson by hand
    ra, rb = np.array([0.5, 0.5, 2, 3]), np.arange(4.0)
    want = ((ra - ra.mean()) @ (rb - rb.mean())) / np.sqrt(((ra - ra.mean()) ** 2).sum()
                                                           * ((rb - rb.mean()) ** 2).sum())
    assert spearman([5, 5, 7, 9], [1, 2, 3, 4]) == pytest.approx(want)


def test_invariant_to_the_order_the_runs_are_listed_in():
    a = [1e-3, 1e-3, 1e-3, 1e-2, 1e-2, 1e-2]
    b = [0.3, 0.1, 0.2, 0.05, 0.07, 0.06]
    p = [5, 2, 0, 4, 1, 3]
    assert spearman(a, b) == pytest.approx(spearman([a[i] for i in p], [b[i] for i in p]))


def test_undefined_cases_are_none_and_bad_input_raises():
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        spearman([1, 2, np.nan], [1, 2, 3])
    with pytest.raises(ValueError, match="None"):
        spearman([1, 2, None], [1, 2, 3])
