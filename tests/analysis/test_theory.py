"""nc_jax.analysis.theory: closed forms of Theorem 2.3.1's quantities and Proposition 2.2.1 on a flax BN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax.analysis import _theory as theory


def np_cross_entropy(W, h, y):
    logits = np.asarray(h, np.float64) @ np.asarray(W, np.float64).T
    mx = logits.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
    return np.mean(lse - logits[np.arange(len(y)), y])


def np_min_loss(alpha, beta, C):
    return np.log1p((C - 1) * np.exp(-C / (C - 1) * alpha * beta))


def test_feature_rms_and_weight_scale():
    rng = np.random.default_rng(0)
    h, W = rng.normal(size=(50, 7)) * 3, rng.normal(size=(5, 7))
    np.testing.assert_allclose(theory.feature_rms(h), np.sqrt(np.mean(np.sum(h**2, axis=1))), rtol=1e-6)
    np.testing.assert_allclose(theory.weight_scale(W), np.linalg.norm(W) / np.sqrt(5), rtol=1e-6)
    # Leading run axis.
    hs = np.stack([h, 2 * h])
    np.testing.assert_allclose(theory.feature_rms(hs), np.array([1, 2]) * np.sqrt(np.mean(np.sum(h**2, axis=1))), rtol=1e-6)


@pytest.mark.parametrize("C", [2, 3, 10, 100])
def test_min_loss_formula_and_etf_attains_it(C):
    for ab in [(0.5, 0.3), (2.0, 3.0), (10.0, 4.0)]:
        np.testing.assert_allclose(theory.min_loss(*ab, C), np_min_loss(*ab, C), rtol=1e-5, atol=1e-30)
    # Features alpha * ETF and weights beta * ETF (balanced) reach m exactly.
    alpha, beta = 1.7, 0.9
    E = np.sqrt(C / (C - 1)) * (np.eye(C) - np.ones((C, C)) / C)  # unit rows, cos = -1/(C-1)
    y = np.repeat(np.arange(C), 3)
    h, W = alpha * E[y], beta * E
    np.testing.assert_allclose(theory.feature_rms(h), alpha, rtol=1e-6)
    np.testing.assert_allclose(theory.weight_scale(W), beta, rtol=1e-6)
    np.testing.assert_allclose(np_cross_entropy(W, h, y), np_min_loss(alpha, beta, C), rtol=1e-10)
    np.testing.assert_allclose(theory.cross_entropy(W, h, y), np_min_loss(alpha, beta, C), rtol=1e-5)
    np.testing.assert_allclose(theory.loss_gap(theory.cross_entropy(W, h, y), alpha, beta, C), 0.0, atol=5e-6)


@pytest.mark.parametrize("C", [3, 5, 20])
def test_random_cross_entropy_is_at_least_min_loss(C):
    rng = np.random.default_rng(C)
    n_per = 4
    y = np.repeat(np.arange(C), n_per)  # the theorem's balanced setting
    for trial in range(200):
        d = C - 1 if trial % 3 == 0 else 2 * C  # two shapes only: keeps compilations few
        scale_h, scale_w = np.exp(rng.uniform(-2, 2, size=2))
        h = rng.normal(size=(C * n_per, d)) * scale_h
        W = rng.normal(size=(C, d)) * scale_w
        if trial % 2:  # adversarial-ish: classifier aligned with the class means
            W = np.stack([h[y == c].mean(0) for c in range(C)]) * scale_w + 0.1 * W
        alpha = np.sqrt(np.mean(np.sum(h**2, axis=1)))
        beta = np.linalg.norm(W) / np.sqrt(C)
        ce = np_cross_entropy(W, h, y)
        assert ce >= np_min_loss(alpha, beta, C) - 1e-12
        # The module's quantities agree with the independent ones (float32).
        np.testing.assert_allclose(theory.cross_entropy(W, h, y), ce, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            theory.loss_gap(ce, theory.feature_rms(h), theory.weight_scale(W), C),
            ce - np_min_loss(alpha, beta, C), rtol=1e-3, atol=1e-5,
        )


def test_rate_term_formula_and_vmap():
    C, alpha, beta, eps, delta = 10, 1.3, 2.1, 1e-3, 0.1
    ab = alpha * beta
    expect = np.exp(C / (C - 1) * ab) / ab * np.sqrt(eps / delta)
    np.testing.assert_allclose(theory.rate_term(alpha, beta, C, eps, delta), expect, rtol=1e-5)
    assert float(theory.rate_term(alpha, beta, C, -1e-9, delta)) == 0.0
    alphas = jnp.array([0.5, 1.0, 2.0])
    out = jax.vmap(lambda a: theory.rate_term(a, beta, C, eps, delta))(alphas)
    np.testing.assert_allclose(
        out, np.exp(C / (C - 1) * np.array([0.5, 1, 2]) * beta) / (np.array([0.5, 1, 2]) * beta) * np.sqrt(eps / delta),
        rtol=1e-5,
    )
    out = jax.jit(jax.vmap(lambda a: theory.min_loss(a, beta, C)))(alphas)
    np.testing.assert_allclose(out, np_min_loss(np.array([0.5, 1, 2]), beta, C), rtol=1e-5)


def test_num_classes_checked():
    with pytest.raises(ValueError, match=">= 2"):
        theory.min_loss(1.0, 1.0, 1)
    with pytest.raises(ValueError, match="static Python int"):
        theory.rate_term(1.0, 1.0, 3.0, 0.1, 0.1)


@pytest.mark.parametrize("seed", [0, 1])
def test_proposition_2_2_1_batchnorm_rms_equals_gamma_norm(seed):
    """Prop. 2.2.1: after BN(scale gamma, no bias) in train mode, sqrt(mean ||h_i||^2) = ||gamma||.

    BN divides by sqrt(var + eps), so exactly the RMS is sqrt(sum_k gamma_k^2 var_k / (var_k + eps));
    with per-feature variances >= 1 and eps = 1e-5 that is ||gamma|| to a relative 5e-6.
    """
    rng = np.random.default_rng(seed)
    N, d = 256, 64
    x = (rng.normal(size=(N, d)) * rng.uniform(1.0, 20.0, size=d) + rng.normal(size=d) * 50).astype(np.float32)
    bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, use_fast_variance=False, use_bias=False)
    variables = bn.init(jax.random.key(seed), x)
    gamma = rng.normal(size=d).astype(np.float32) * 2.0
    variables = {"params": {"scale": jnp.asarray(gamma)}, "batch_stats": variables["batch_stats"]}
    h, _ = bn.apply(variables, x, mutable=["batch_stats"])
    var = np.var(x.astype(np.float64), axis=0)
    exact = np.sqrt(np.sum(gamma.astype(np.float64) ** 2 * var / (var + 1e-5)))
    rms = float(theory.feature_rms(h))
    np.testing.assert_allclose(rms, exact, rtol=2e-5)
    np.testing.assert_allclose(rms, np.linalg.norm(gamma.astype(np.float64)), rtol=2e-5)
