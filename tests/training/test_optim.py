import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nc_jax.config import OptimConfig
from nc_jax.training import make_optimizer, set_hyperparams


def _params(rng):
    return {"dense": {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=(2,))},
            "bn": {"scale": rng.normal(size=(2,)), "bias": rng.normal(size=(2,))}}


def _run(cfg, steps_per_epoch, wd, grads_seq, p0):
    tx = make_optimizer(cfg, steps_per_epoch)
    p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p0)
    s = set_hyperparams(tx.init(p), weight_decay=wd)
    for g in grads_seq:
        u, s = tx.update(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g), s, p)
        p = optax.apply_updates(p, u)
    return jax.tree.map(np.asarray, p)


def _np_reference(mode, lr0, mom, wd, boundaries, factor, grads_seq, p0, decayed):
    """torch.optim.SGD(momentum, weight_decay) (coupled) / SGDW (decoupled), float64."""
    leaves, treedef = jax.tree.flatten(p0)
    flags = jax.tree.leaves(decayed)
    p = [np.array(a, np.float64) for a in leaves]
    m = [np.zeros_like(a) for a in p]
    for t, g in enumerate(grads_seq):
        lr = lr0 * factor ** sum(t >= b for b in boundaries)
        gl = jax.tree.leaves(g)
        for i in range(len(p)):
            w = wd if flags[i] else 0.0
            if mode == "coupled":
                m[i] = mom * m[i] + (gl[i] + w * p[i])
                p[i] = p[i] - lr * m[i]
            else:
                m[i] = mom * m[i] + gl[i]
                p[i] = p[i] - lr * (m[i] + w * p[i])
    return jax.tree.unflatten(treedef, p)


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
@pytest.mark.parametrize("mask", ["all", "kernels"])
def test_update_rule_matches_numpy(mode, mask):
    rng = np.random.default_rng(0)
    p0 = _params(rng)
    grads = [jax.tree.map(lambda a: rng.normal(size=a.shape), p0) for _ in range(7)]
    # 7 steps, 2 steps per epoch, decays at epochs 1 and 2 -> steps 2 and 4 (crossed within the run)
    cfg = OptimConfig(lr=0.1, momentum=0.9, epochs=3, lr_decay_epochs=(1, 2),
                      weight_decay_mode=mode, decay_mask=mask)
    got = _run(cfg, 2, 0.05, grads, p0)
    decayed = jax.tree_util.tree_map_with_path(
        lambda path, _: mask == "all" or path[-1].key == "kernel", p0)
    ref = _np_reference(mode, 0.1, 0.9, 0.05, (2, 4), 0.1, grads, p0, decayed)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_zero_gradient_step_shrinks_every_decayed_parameter():
    rng = np.random.default_rng(1)
    p0 = _params(rng)
    zeros = [jax.tree.map(np.zeros_like, p0)]
    cfg = OptimConfig(lr=0.5, epochs=10)
    got = _run(cfg, 5, 0.1, zeros, p0)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(p0)):
        np.testing.assert_allclose(a, b * (1 - 0.5 * 0.1), rtol=1e-6)  # shrunk by lr * wd
    masked = _run(OptimConfig(lr=0.5, epochs=10, decay_mask="kernels"), 5, 0.1, zeros, p0)
    np.testing.assert_allclose(masked["bn"]["scale"], p0["bn"]["scale"], rtol=1e-7)
    np.testing.assert_allclose(masked["dense"]["bias"], p0["dense"]["bias"], rtol=1e-7)
    assert np.all(np.abs(masked["dense"]["kernel"]) < np.abs(p0["dense"]["kernel"]))


def test_per_run_weight_decay_under_vmap_one_program():
    rng = np.random.default_rng(2)
    p0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _params(rng))
    tx = make_optimizer(OptimConfig(lr=0.1, epochs=10), 5)
    wds = jnp.asarray([0.0, 0.01, 0.3])

    def one(wd):
        s = set_hyperparams(tx.init(p0), weight_decay=wd)
        g = jax.tree.map(jnp.zeros_like, p0)
        u, s = tx.update(g, s, p0)
        return optax.apply_updates(p0, u)

    out = jax.jit(jax.vmap(one))(wds)
    for i, wd in enumerate([0.0, 0.01, 0.3]):
        np.testing.assert_allclose(np.asarray(out["dense"]["kernel"][i]),
                                   np.asarray(p0["dense"]["kernel"]) * (1 - 0.1 * wd), rtol=1e-6)


def test_default_schedule_two_decays_at_thirds():
    assert OptimConfig(epochs=300).decay_epochs == (100, 200)
    assert OptimConfig(epochs=9, lr_decay_epochs=[4]).decay_epochs == (4,)
