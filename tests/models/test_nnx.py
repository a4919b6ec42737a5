import operator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nc_jax.models import head_classifier
from nc_jax.models import from_nnx, linear_classifier

EPS = 1e-5
# LLVM -O0: the same semantics at a fraction of XLA's CPU compile time (compiles dominate here).
_FAST = {"xla_backend_optimization_level": 0}


class NNXMLP(nnx.Module):
    """Two hidden blocks BN(ReLU(Linear)) and a head. `explicit=True` passes the BN mode per
    call; `explicit=False` relies on the adapter setting `use_running_average` on the layers."""

    def __init__(self, din, width, num_classes, explicit=True, *, rngs: nnx.Rngs):
        self.explicit = explicit
        self.hidden = nnx.List([nnx.Linear(din, width, rngs=rngs),
                                nnx.Linear(width, width, rngs=rngs)])
        # PyTorch's momentum 0.1 is flax's 0.9; two-pass variance (see the pitfalls notes)
        self.bns = nnx.List([nnx.BatchNorm(width, momentum=0.9, epsilon=EPS,
                                           use_fast_variance=False, rngs=rngs)
                             for _ in range(2)])
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(self, x, train=False, return_features=False):
        feats = []
        h = x
        for dense, bn in zip(self.hidden, self.bns):
            h = nnx.relu(dense(h))
            h = bn(h, use_running_average=not train) if self.explicit else bn(h)
            feats.append(h)
        logits = self.head(h)
        return (logits, tuple(feats)) if return_features else logits


class Stochastic(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.rngs = rngs
        self.head = nnx.Linear(2, 2, rngs=rngs)

    def __call__(self, x, train=False, return_features=False):
        return self.head(x)


def np_forward(params, stats, x, train):
    """float64 NumPy forward of NNXMLP; returns logits, features, new running stats."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = np.asarray(x, np.float64)
    feats, new_stats = [], {}
    for i in ("0", "1"):
        h = np.maximum(h @ p["hidden"][i]["kernel"] + p["hidden"][i]["bias"], 0)
        rm = np.asarray(stats[i]["mean"], np.float64)
        rv = np.asarray(stats[i]["var"], np.float64)
        if train:
            mean, var = h.mean(0), ((h - h.mean(0)) ** 2).mean(0)
            # flax: running = m * running + (1 - m) * batch, biased variance
            new_stats[i] = (0.9 * rm + 0.1 * mean, 0.9 * rv + 0.1 * var)
        else:
            mean, var = rm, rv
        h = (h - mean) / np.sqrt(var + EPS) * p["bns"][i]["scale"] + p["bns"][i]["bias"]
        feats.append(h)
    return h @ p["head"]["kernel"] + p["head"]["bias"], feats, new_stats


def data(n=16, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray((rng.normal(size=(n, d)) * 2 + 1).astype(np.float32))


def randomize(params, seed=1):
    """Non-trivial BN gamma/beta and biases (nnx inits them to 1 / 0)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: a + jnp.asarray(0.3 * rng.normal(size=a.shape), a.dtype), params)


def setup(explicit=True, seed=0):
    model = from_nnx(NNXMLP, 5, 6, 3, explicit=explicit)
    x = data()
    v = jax.jit(model.init, compiler_options=_FAST)(jax.random.key(seed), x)
    return model, x, {"params": randomize(v["params"]), "batch_stats": v["batch_stats"]}


def apply_fn(model, **kw):
    return jax.jit(lambda v, x: model.apply(v, x, **kw), compiler_options=_FAST)


def test_init_collections_and_names():
    _, _, v = setup()
    shapes = jax.tree.map(jnp.shape, v)
    assert shapes["params"]["hidden"] == {"0": {"kernel": (5, 6), "bias": (6,)},
                                          "1": {"kernel": (6, 6), "bias": (6,)}}
    assert shapes["params"]["head"] == {"kernel": (6, 3), "bias": (3,)}
    assert shapes["params"]["bns"]["0"] == {"scale": (6,), "bias": (6,)}
    assert set(v) == {"params", "batch_stats"}  # no RNG state leaks into the variables
    stats = v["batch_stats"]["bns"]
    for i in ("0", "1"):
        np.testing.assert_array_equal(np.asarray(stats[i]["mean"]), 0.0)
        np.testing.assert_array_equal(np.asarray(stats[i]["var"]), 1.0)


@pytest.mark.parametrize("explicit", [True, False], ids=["flag-per-call", "flag-on-layer"])
def test_train_then_eval_against_numpy(explicit):
    model, x, v = setup(explicit)
    (logits, feats), upd = apply_fn(model, train=True, return_features=True,
                                    mutable=["batch_stats"])(v, x)
    ref_logits, ref_feats, ref_stats = np_forward(v["params"], v["batch_stats"]["bns"], x, True)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-4, atol=1e-4)
    for f, r in zip(feats, ref_feats):
        np.testing.assert_allclose(np.asarray(f), r, rtol=1e-4, atol=1e-4)
    for i in ("0", "1"):
        np.testing.assert_allclose(np.asarray(upd["batch_stats"]["bns"][i]["mean"]),
                                   ref_stats[i][0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(upd["batch_stats"]["bns"][i]["var"]),
                                   ref_stats[i][1], rtol=1e-4)
    # eval mode normalizes with the running statistics and needs no mutable collection
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    x_eval = data(7, seed=3)
    ref_eval, _, _ = np_forward(v["params"], upd["batch_stats"]["bns"], x_eval, False)
    np.testing.assert_allclose(np.asarray(apply_fn(model)(v2, x_eval)), ref_eval,
                               rtol=1e-4, atol=1e-4)


def test_train_without_mutable_raises():
    model, x, v = setup()
    with pytest.raises(ValueError, match=r"mutable=\['batch_stats'\]"):
        model.apply(v, x, train=True)


def test_matches_direct_nnx_computation():
    model, x, v = setup(seed=4)
    (logits, _), upd = apply_fn(model, train=True, return_features=True,
                                mutable=["batch_stats"])(v, x)
    net = NNXMLP(5, 6, 3, rngs=nnx.Rngs(123))  # other weights, then overwritten one by one
    p = v["params"]
    for i in range(2):
        net.hidden[i].kernel[...] = p["hidden"][str(i)]["kernel"]
        net.hidden[i].bias[...] = p["hidden"][str(i)]["bias"]
        net.bns[i].scale[...] = p["bns"][str(i)]["scale"]
        net.bns[i].bias[...] = p["bns"][str(i)]["bias"]
    net.head.kernel[...] = p["head"]["kernel"]
    net.head.bias[...] = p["head"]["bias"]
    direct = net(x, train=True)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(direct), rtol=1e-5, atol=1e-5)
    for i in range(2):
        np.testing.assert_allclose(np.asarray(upd["batch_stats"]["bns"][str(i)]["mean"]),
                                   np.asarray(net.bns[i].mean[...]), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(upd["batch_stats"]["bns"][str(i)]["var"]),
                                   np.asarray(net.bns[i].var[...]), rtol=1e-5)
    v2 = {"params": p, "batch_stats": upd["batch_stats"]}
    np.testing.assert_allclose(np.asarray(apply_fn(model)(v2, x)),
                               np.asarray(net(x, train=False)), rtol=1e-5, atol=1e-5)
    # gradients through the adapter equal nnx.grad of the NNX module itself
    loss = lambda params: jnp.sum(model.apply(
        {"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
        mutable=["batch_stats"])[0] ** 2)
    g = jax.jit(jax.grad(loss), compiler_options=_FAST)(p)
    g_direct = nnx.grad(lambda m: jnp.sum(m(x, train=True) ** 2))(net)
    np.testing.assert_allclose(np.asarray(g["head"]["kernel"]),
                               np.asarray(g_direct["head"]["kernel"][...]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g["hidden"]["0"]["kernel"]),
                               np.asarray(g_direct["hidden"][0]["kernel"][...]),
                               rtol=1e-4, atol=1e-5)


def test_vmap_over_runs_and_scan_over_batches():
    model = from_nnx(NNXMLP, 5, 6, 3)
    xs = jnp.stack([data(16, seed=s) for s in range(6)]).reshape(2, 3, 16, 5)  # (run, step, B, d)
    keys = jax.random.split(jax.random.key(7), 2)

    def run(key, batches):
        v = model.init(key, batches[0])

        def step(stats, xb):
            _, upd = model.apply({"params": v["params"], "batch_stats": stats}, xb, train=True,
                                 mutable=["batch_stats"])
            return upd["batch_stats"], None

        stats, _ = jax.lax.scan(step, v["batch_stats"], batches)
        return v["params"], stats

    params, stats = jax.jit(jax.vmap(run), compiler_options=_FAST)(keys, xs)
    k0 = np.asarray(params["hidden"]["0"]["kernel"])
    assert not np.allclose(k0[0], k0[1])  # different keys, different initializations
    for r in range(2):
        # each run's statistics are its own: replay its three batches in NumPy
        p_r = jax.tree.map(operator.itemgetter(r), params)
        st = {i: {"mean": np.zeros(6), "var": np.ones(6)} for i in ("0", "1")}
        for t in range(3):
            _, _, new = np_forward(p_r, st, xs[r, t], True)
            st = {i: {"mean": new[i][0], "var": new[i][1]} for i in new}
        for i in ("0", "1"):
            np.testing.assert_allclose(np.asarray(stats["bns"][i]["mean"][r]), st[i]["mean"],
                                       rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(np.asarray(stats["bns"][i]["var"][r]), st[i]["var"],
                                       rtol=1e-4)


def test_classifier_rules():
    model, x, v = setup(seed=5)
    logits, feats = apply_fn(model, return_features=True)(v, x)
    W, b = head_classifier(v["params"])  # nnx.Linear named `head` fits the default rule
    h = np.asarray(feats[-1], np.float64)
    ref = h @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
    np.testing.assert_allclose(np.asarray(logits), ref, rtol=1e-5, atol=1e-5)
    W1, b1 = linear_classifier("hidden/1")(v["params"])
    np.testing.assert_array_equal(np.asarray(W1),
                                  np.asarray(v["params"]["hidden"]["1"]["kernel"]).T)
    np.testing.assert_array_equal(np.asarray(b1), np.asarray(v["params"]["hidden"]["1"]["bias"]))
    with pytest.raises(KeyError, match="no nnx.Linear at params/classifier"):
        linear_classifier("classifier")(v["params"])


def test_bad_uses_are_rejected():
    x = jnp.ones((2, 2))
    with pytest.raises(ValueError, match="keeps an nnx.Rngs"):
        from_nnx(Stochastic).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="passes rngs itself"):
        from_nnx(NNXMLP, 5, 6, 3, rngs=nnx.Rngs(0))
    model, x, v = setup()
    with pytest.raises(ValueError, match="no batch_stats/bns/0/mean"):
        model.apply({"params": v["params"]}, x)
    bad = jax.tree.map(lambda a: a, v)
    bad["params"]["head"]["kernel"] = jnp.ones((6, 4))
    with pytest.raises(ValueError, match=r"params/head/kernel has shape \(6, 4\).*\(6, 3\)"):
        model.apply(bad, x)
