"""Checked mode (`metrics.checked`): the input checks inside `jit` / `vmap` with checkify, what the
unchecked mode returns instead, and correct values when the input is valid."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from nc_jax import metrics
from tests.metrics.test_metrics import assert_close, make_data, ref_nc1, ref_report

C = 6


def _missing_class(y, c=2):
    return np.where(y == c, (c + 1) % C, y).astype(np.int32)


def _throws(err, match):
    with pytest.raises(checkify.JaxRuntimeError, match=match) as info:
        err.throw()
    assert isinstance(info.value, ValueError)  # bad input is a ValueError, as eagerly


def test_unchecked_jit_returns_numbers_where_checked_raises():
    h, y, W, logits = make_data(0, C=C)
    plain = jax.jit(lambda h, y: metrics.collapse_report(h, y, C, W=W, logits=logits))
    f = jax.jit(metrics.checked(metrics.collapse_report), static_argnums=2)
    # valid input: no error and the report of the NumPy float64 reference
    err, out = f(h, y, C, W=W, logits=logits)
    assert err.get() is None
    ref = ref_report(h.astype(np.float64), y, C, W.astype(np.float64), logits.astype(np.float64))
    for k, v in ref.items():
        assert_close(out[k], v, what=k)
    # a class with no sample: the unchecked report is finite (min_intra 0 from the empty class)
    ym = _missing_class(y)
    rep = plain(h, ym)
    assert all(np.isfinite(float(v)) for v in rep.values()) and float(rep["min_intra"]) == 0.0
    err, _ = f(h, ym, C, W=W, logits=logits)
    _throws(err, r"class 2 has no sample; every class in \[0, 6\) needs at least one")
    # a label >= C: unchecked nc1 is NaN, the other keys finite
    yo = y.copy()
    yo[17] = C
    rep = plain(h, yo)
    assert np.isnan(float(rep["nc1"]))
    assert all(np.isfinite(float(v)) for k, v in rep.items() if k != "nc1")
    err, _ = f(h, yo, C, W=W, logits=logits)
    _throws(err, r"labels outside \[0, 6\) \(num_classes=6\): y\[17\] = 6")
    yn = y.copy()
    yn[3] = -1  # unchecked: the row is silently dropped, every key finite
    assert all(np.isfinite(float(v)) for v in plain(h, yn).values())
    err, _ = f(h, yn, C, W=W, logits=logits)
    _throws(err, r"y\[3\] = -1")
    # non-finite features, weights and logits are counted
    hn = h.copy()
    hn[[1, 5], 0] = [np.nan, np.inf]
    _throws(f(hn, y, C, W=W)[0], r"features h contain 2 non-finite value\(s\)")
    Wn = W.copy()
    Wn[0, 0] = np.nan
    _throws(f(h, y, C, W=Wn)[0], r"weights W contain 1 non-finite")
    ln = logits.copy()
    ln[0, :3] = np.inf
    _throws(f(h, y, C, logits=ln)[0], r"logits contain 3 non-finite")


def test_checked_under_vmap_names_the_failing_run():
    h, y, _, _ = make_data(1, C=C)
    hs = np.stack([h, 2 * h, h])
    ys = np.stack([y, y, _missing_class(y, 4)])
    f = jax.jit(jax.vmap(lambda h, y: metrics.checked(metrics.nc1)(h, y, C)))
    err, out = f(hs[:2], ys[:2])
    assert err.get() is None
    ref = ref_nc1(h.astype(np.float64), y, C)
    assert_close(out, [ref, ref], what="nc1 per run")
    err, _ = f(hs, ys)
    assert err.get().startswith("at mapped index 2: class 4 has no sample")
    _throws(err, r"class 4 has no sample")
    ys_bad = ys.copy()
    ys_bad[1, 0] = 99
    err, _ = f(hs, ys_bad)
    assert err.get().startswith("at mapped index 1: labels outside [0, 6) (num_classes=6): "
                                "y[0] = 99")


def test_checked_positional_weights_layers_static_args_and_eager_calls():
    h, y, W, _ = make_data(2, C=C)
    Wn = W.copy()
    Wn[1, 2] = np.inf
    nc3 = jax.jit(metrics.checked(metrics.nc3), static_argnums=2)
    assert nc3(h, y, C, W)[0].get() is None
    _throws(nc3(h, y, C, Wn)[0], r"weights W contain 1 non-finite")
    lw = jax.jit(metrics.checked(metrics.layerwise), static_argnums=2)
    ym = _missing_class(y, 0)
    _throws(lw((h, h[:, :5]), ym, C)[0], r"class 0 has no sample")
    hn = h[:, :5].copy()
    hn[0, 0] = np.nan
    _throws(lw((h, hn), y, C)[0], r"features of layer 1 contain 1 non-finite")
    # a non-array argument stays static (here a keyword, static for the outer jit too)
    cos = jax.jit(metrics.checked(metrics.cosine_similarity_matrix), static_argnums=2,
                  static_argnames="center")
    err, G = cos(h, y, C, center=True)
    assert err.get() is None and G.shape == (C, C)
    # called eagerly, the same checks and the same error value
    err, out = metrics.checked(metrics.nc1)(h, ym, C)
    _throws(err, r"class 0 has no sample")
    # static problems are ValueErrors at trace time, as eagerly
    with pytest.raises(ValueError, match="labels y must be integers"):
        metrics.checked(metrics.nc1)(h, y.astype(np.float32), C)
    with pytest.raises(ValueError, match="num_classes must be a static Python int"):
        metrics.checked(metrics.nc3)(h, y, W, C)
    # further checkify error sets can be added (here: division by zero in a user's function)
    f = metrics.checked(lambda h, y, C: jnp.sum(y) // jnp.int32(0), errors=checkify.div_checks)
    _throws(f(h, y, C)[0], "division by zero")
