import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax.models import MLP, BatchNorm, last_layer_weights


def np_batchnorm_train(x, gamma, beta, run_mean, run_var, momentum=0.1, eps=1e-5):
    """PyTorch BatchNorm1d in train mode, float64."""
    x = x.astype(np.float64)
    n = x.shape[0]
    mean = x.mean(0)
    var = ((x - mean) ** 2).mean(0)
    y = (x - mean) / np.sqrt(var + eps) * gamma + beta
    new_mean = (1 - momentum) * run_mean + momentum * mean
    new_var = (1 - momentum) * run_var + momentum * var * n / (n - 1)
    return y, new_mean, new_var


def test_batchnorm_matches_pytorch_formulas_train_and_eval():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(37, 5)) * 3 + 100).astype(np.float32)  # large offset: fast variance would fail
    bn = BatchNorm(affine=True)
    v = bn.init(jax.random.key(0), jnp.asarray(x), train=False)
    gamma = rng.normal(size=5).astype(np.float32)
    beta = rng.normal(size=5).astype(np.float32)
    v = {"params": {"scale": jnp.asarray(gamma), "bias": jnp.asarray(beta)},
         "batch_stats": v["batch_stats"]}
    y, upd = bn.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    y_ref, m_ref, v_ref = np_batchnorm_train(x, gamma, beta, np.zeros(5), np.ones(5))
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["mean"]), m_ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["var"]), v_ref, rtol=1e-4)
    # eval mode normalizes with the running statistics
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    y_eval = bn.apply(v2, jnp.asarray(x), train=False)
    ref = (x - m_ref) / np.sqrt(v_ref + 1e-5) * gamma + beta
    np.testing.assert_allclose(np.asarray(y_eval), ref, rtol=1e-4, atol=1e-3)


def test_plain_bn_has_no_parameters_and_none_has_no_bn():
    x = jnp.ones((4, 3))
    plain = MLP(depth=3, width=6, num_classes=2, bn="plain").init(jax.random.key(0), x)
    assert set(plain["params"]) == {"dense_0", "dense_1", "head"}
    assert set(plain["batch_stats"]) == {"bn_0", "bn_1"}
    affine = MLP(depth=3, width=6, num_classes=2, bn="affine").init(jax.random.key(0), x)
    assert set(affine["params"]["bn_0"]) == {"scale", "bias"}
    none = MLP(depth=3, width=6, num_classes=2, bn="none").init(jax.random.key(0), x)
    assert "batch_stats" not in none and set(none["params"]) == {"dense_0", "dense_1", "head"}


def test_plain_bn_output_is_standardized_per_feature():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(64, 7)).astype(np.float32))
    m = MLP(depth=4, width=9, num_classes=3, bn="plain")
    v = m.init(jax.random.key(1), x)
    (_, feats), _ = m.apply(v, x, train=True, return_features=True, mutable=["batch_stats"])
    for h in feats:
        h = np.asarray(h, np.float64)
        np.testing.assert_allclose(h.mean(0), 0, atol=1e-5)
        var = h.var(0)
        # a dead ReLU unit has zero variance and stays 0 after BN; every other unit has variance
        # v / (v + eps) of its pre-BN variance v, i.e. 1 up to eps / v
        alive = var > 0.1
        assert alive.sum() >= 5
        np.testing.assert_allclose(var[alive], 1.0, rtol=1e-2)
        assert np.all(var <= 1.0 + 1e-5)


def test_features_and_logits_consistent_with_numpy_forward():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    m = MLP(depth=3, width=5, num_classes=3, bn="none")
    v = m.init(jax.random.key(3), jnp.asarray(x))
    logits, feats = m.apply(v, jnp.asarray(x), return_features=True)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    h = x.astype(np.float64)
    ref_feats = []
    for layer in range(2):
        h = np.maximum(h @ p[f"dense_{layer}"]["kernel"] + p[f"dense_{layer}"]["bias"], 0)
        ref_feats.append(h)
    ref_logits = h @ p["head"]["kernel"] + p["head"]["bias"]
    assert len(feats) == 2
    for f, r in zip(feats, ref_feats):
        np.testing.assert_allclose(np.asarray(f), r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-5, atol=1e-6)
    assert last_layer_weights(v["params"]).shape == (3, 5)


def test_torch_default_init_range():
    m = MLP(depth=2, width=400, num_classes=3, bn="none")
    v = m.init(jax.random.key(0), jnp.ones((1, 200)))
    k = np.asarray(v["params"]["dense_0"]["kernel"])
    b = np.asarray(v["params"]["dense_0"]["bias"])
    bound = 1 / np.sqrt(200)
    assert np.abs(k).max() <= bound and np.abs(b).max() <= bound
    # U(-a, a) has std a / sqrt(3)
    assert abs(k.std() - bound / np.sqrt(3)) < 0.02 * bound


def test_bad_bn_variant_rejected():
    with pytest.raises(ValueError, match="bn must be one of"):
        MLP(depth=3, width=4, num_classes=2, bn="batch").init(jax.random.key(0), jnp.ones((2, 3)))
