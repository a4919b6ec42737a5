"""`nc_jax.analyse(result, data, test=...)`: held-out NC of a trained sweep on data given as
arrays, against NumPy float64 computed from the model's own features; bad `test=` is refused."""
import dataclasses

import numpy as np
import pytest

import nc_jax
from nc_jax.config import DataConfig
from nc_jax.data import from_arrays, make_dataset
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def trained():
    # the held-out rows of a DataConfig split serve as "your test arrays" (same teacher)
    cfg = tiny_config(data=DataConfig(n=240, dim=8, num_classes=4, teacher_width=16,
                                      test_size=80), seeds=(0,))
    split = make_dataset(cfg.data)
    train = dataclasses.replace(split, test=None)
    res = nc_jax.run_sweep(cfg, train, progress=False)
    return train, split.test.x, split.test.y, res


def _np_features(res, i, x):
    st = res.state(i)
    logits, feats = res.task.features(st.params, st.batch_stats, x)
    h = np.asarray(feats[-1], np.float64)
    return np.asarray(logits, np.float64), h.reshape(len(h), -1)


def _np_min_intra(h, y, C):
    """The thesis' cosine measure: min_c <nu_c, nu_c>, nu_c the mean of the unit features."""
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    nu = np.stack([u[y == c].mean(0) for c in range(C)])
    return np.diag(nu @ nu.T).min()


def _np_nc1(h, y, C):
    """tr(Sigma_W Sigma_B^+) / C, the pseudo-inverse on the top C-1 eigen-directions
    (Papyan et al. 2020), mu_G the mean of the class means."""
    mu = np.stack([h[y == c].mean(0) for c in range(C)])
    d = h - mu[y]
    sigma_w = d.T @ d / len(y)
    M = mu - mu.mean(0)
    evals, evecs = np.linalg.eigh(M.T @ M / C)
    top = np.argsort(evals)[::-1][:C - 1]
    pinv = (evecs[:, top] / evals[top]) @ evecs[:, top].T
    return np.trace(sigma_w @ pinv) / C


def test_test_keys_match_numpy_float64(trained):
    train, x_test, y_test, res = trained
    C = train.num_classes
    test = from_arrays(x_test, y_test)
    runs = nc_jax.analyse(res, train, test=test)
    assert len(runs) == res.num_runs == 2
    for i, r in enumerate(runs):
        logits, h = _np_features(res, i, test.x)
        assert r["test_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == test.y))
        np.testing.assert_allclose(r["test_min_intra"], _np_min_intra(h, test.y, C), atol=1e-5)
        np.testing.assert_allclose(r["test_nc1"], _np_nc1(h, test.y, C), rtol=1e-3)
        # the training report is the training set's, untouched by test=
        _, h_train = _np_features(res, i, train.x)
        np.testing.assert_allclose(r["min_intra"], _np_min_intra(h_train, train.y, C),
                                   atol=1e-5)
        assert r["test_min_intra"] != pytest.approx(r["min_intra"], abs=1e-6)
    assert not any(k.startswith("test_") for k in nc_jax.analyse(res, train)[0])


def test_test_of_other_classes_or_shapes_is_refused(trained):
    train, x_test, y_test, res = trained
    three = y_test < 3
    with pytest.raises(ValueError, match=r"analyse: test has 3 classes but the sweep's task 4"):
        nc_jax.analyse(res, train, test=from_arrays(x_test[three], y_test[three]))
    with pytest.raises(ValueError, match=r"analyse: test samples have shape \(4,\) but the "
                                         r"training samples \(8,\)"):
        nc_jax.analyse(res, train, test=from_arrays(x_test[:, :4], y_test))
    with pytest.raises(TypeError, match=r"test must be a nc_jax.data.Dataset .*got tuple"):
        nc_jax.analyse(res, train, test=(x_test, y_test))
