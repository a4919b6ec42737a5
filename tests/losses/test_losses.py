"""Losses by name against closed forms in NumPy float64; the registry (built-ins and a user's loss
by name); the theorem's keys are cross-entropy only."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nc_jax
from nc_jax.config import ConfigError, LossConfig
from nc_jax.losses import (LOSSES, cross_entropy, get_loss, known_losses, label_smoothing,
                           loss_name, mse, register_loss)
from tests.helpers import tiny_config, tiny_data


def _logits(seed=0, n=7, c=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)) * 3, rng.integers(0, c, size=n)


def _np_log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_cross_entropy_closed_form():
    z, y = _logits()
    ref = -_np_log_softmax(z)[np.arange(len(y)), y].mean()
    np.testing.assert_allclose(cross_entropy(jnp.float32(z), jnp.asarray(y)), ref, rtol=1e-5)


def test_mse_is_half_the_squared_distance_to_one_hot():
    z, y = _logits(1)
    target = np.eye(4)[y]
    ref = 0.5 * np.mean(np.sum((z - target) ** 2, axis=1))  # Han et al. 2022, eq. 1
    np.testing.assert_allclose(mse(jnp.float32(z), jnp.asarray(y)), ref, rtol=1e-5)
    # zero exactly at the one-hot logits
    assert float(mse(jnp.eye(4)[jnp.asarray(y)], jnp.asarray(y))) == 0.0


@pytest.mark.parametrize("s", [0.0, 0.1, 0.5])
def test_label_smoothing_closed_form(s):
    z, y = _logits(2)
    C = 4
    t = (1 - s) * np.eye(C)[y] + s / C
    ref = -np.mean(np.sum(t * _np_log_softmax(z), axis=1))
    np.testing.assert_allclose(label_smoothing(jnp.float32(z), jnp.asarray(y), s), ref, rtol=1e-5)
    fn, name = get_loss(None, LossConfig(name="label_smoothing", smoothing=s))
    assert name == "label_smoothing"
    np.testing.assert_allclose(fn(jnp.float32(z), jnp.asarray(y)), ref, rtol=1e-5)
    if s == 0.0:  # no smoothing is plain cross-entropy
        np.testing.assert_allclose(ref, -_np_log_softmax(z)[np.arange(7), y].mean(), rtol=1e-12)


def test_loss_config_and_lookup_errors():
    with pytest.raises(ConfigError, match="loss.smoothing must be < 1"):
        LossConfig(smoothing=1.0)
    # an unknown name's error lists the known ones
    with pytest.raises(ConfigError) as e:
        LossConfig(name="hinge")
    assert "loss.name must be one of ('ce', 'mse', 'label_smoothing'" in str(e.value)
    assert "got 'hinge'" in str(e.value) and "register_loss" in str(e.value)
    with pytest.raises(ValueError) as e:
        get_loss("hinge")
    assert "unknown loss 'hinge'; known losses: ['ce', 'mse', 'label_smoothing'" in str(e.value)
    with pytest.raises(ConfigError, match="loss.name must be a string"):
        LossConfig(name=3)
    with pytest.raises(ValueError, match="non-empty string"):
        register_loss("")


def test_builtins_are_registered_under_the_names_of_checkpoints():
    assert known_losses()[:3] == ("ce", "mse", "label_smoothing")
    # the names results and checkpoint identities use, for a name and for the function itself
    for name, fn in (("ce", cross_entropy), ("mse", mse), ("label_smoothing", label_smoothing)):
        assert get_loss(name, LossConfig(name=name))[1] == name
        assert loss_name(fn) == name and get_loss(fn)[1] == name
    assert get_loss(None, LossConfig())[0] is cross_entropy


@pytest.fixture
def registered():
    """Registers losses for one test and removes them afterwards (the registry is global)."""
    before = dict(LOSSES)
    yield
    LOSSES.clear()
    LOSSES.update(before)


def test_a_registered_loss_trains_by_name_through_run_sweep(registered):
    seen = []

    @register_loss("scaled_mse")
    def scaled_mse(loss_cfg):
        seen.append(loss_cfg)
        # the factory gets the whole LossConfig: here `smoothing` is read as a scale
        return lambda logits, y: (1.0 + loss_cfg.smoothing) * mse(logits, y)

    assert "scaled_mse" in known_losses()
    cfg = tiny_config(weight_decays=(1e-3,), seeds=(0,), loss=LossConfig("scaled_mse", 0.5))
    data = tiny_data(cfg)
    res = nc_jax.run_sweep(cfg, data, progress=False)
    assert seen and seen[-1] == cfg.loss
    assert res.task.loss_name == "scaled_mse"
    r = nc_jax.analyse(res, data)[0]
    assert r["loss"] == "scaled_mse" and "min_loss" not in r  # the theorem is cross-entropy's
    # the reported train loss is 1.5 x the MSE of the eval-mode logits, in NumPy float64
    st = res.state(0)
    z = np.asarray(res.task.model.apply({"params": st.params, "batch_stats": st.batch_stats},
                                        data.x), np.float64)
    ref = 1.5 * 0.5 * np.mean(np.sum((z - np.eye(4)[data.y]) ** 2, axis=1))
    np.testing.assert_allclose(r["train_loss"], ref, rtol=1e-4)


@pytest.mark.parametrize("loss", ["mse", "label_smoothing"])
def test_sweep_with_other_losses_reports_no_theorem_keys(loss):
    cfg = tiny_config(weight_decays=(1e-3,), seeds=(0,))
    data = tiny_data(cfg)
    res = nc_jax.run_sweep(cfg, data, loss=loss, progress=False)
    r = nc_jax.analyse(res, data)[0]
    assert r["loss"] == loss
    for k in ("min_loss", "loss_gap", "rate", "alpha_aug", "beta_aug"):
        assert k not in r, k
    assert {"alpha", "beta", "min_intra", "nc1"} <= set(r)
    # the reported train loss is this loss on the eval-mode logits (recomputed from the state)
    logits = res.task.model.apply({"params": res.state(0).params,
                                   "batch_stats": res.state(0).batch_stats}, data.x)
    z = np.asarray(logits, np.float64)
    if loss == "mse":
        ref = 0.5 * np.mean(np.sum((z - np.eye(4)[data.y]) ** 2, axis=1))
    else:
        t = 0.9 * np.eye(4)[data.y] + 0.1 / 4
        ref = -np.mean(np.sum(t * _np_log_softmax(z), axis=1))
    np.testing.assert_allclose(r["train_loss"], ref, rtol=1e-4)
    ce = nc_jax.analyse(nc_jax.run_sweep(cfg, data, progress=False), data)[0]
    assert ce["loss"] == "ce" and ce["train_loss"] >= ce["min_loss"]


def test_user_loss_callable_trains_and_is_named():
    cfg = tiny_config(weight_decays=(0.0,), seeds=(0,))
    data = tiny_data(cfg)

    def doubled_ce(logits, y):
        return 2.0 * cross_entropy(logits, y)

    import dataclasses
    half = cfg.replace(optim=dataclasses.replace(cfg.optim, lr=cfg.optim.lr / 2))
    res = nc_jax.run_sweep(half, data, loss=doubled_ce, progress=False)
    assert res.task.loss_name.endswith("doubled_ce")
    # (2 CE, lr / 2) and (CE, lr) take the same SGD path (no weight decay here)
    ref = nc_jax.run_sweep(cfg, data, progress=False)
    for a, b in zip(jax.tree.leaves(res.state(0).params), jax.tree.leaves(ref.state(0).params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
