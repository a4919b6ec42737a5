"""Bring your own model: a Flax module defined here (not in nc_jax), on image inputs, goes through
the public API (`nc_jax.run_sweep`, `nc_jax.analyse`, checkpoints) and its NC report equals the
metrics computed independently (NumPy float64) from its own features and classifier."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nc_jax
from nc_jax.runs import CheckpointMismatchError, run_sweep
from nc_jax.config import DataConfig, ModelConfig, OptimConfig, SweepConfig
from nc_jax.data import from_arrays
from tests.metrics.test_metrics import ref_report

C = 3


class TinyConvNet(nn.Module):
    """conv3x3 -> ReLU -> flax BatchNorm -> global average pool -> Dense "head"."""

    num_classes: int = C
    channels: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        h = nn.relu(nn.Conv(self.channels, (3, 3), padding="SAME", name="conv")(x))
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         use_fast_variance=False, name="bn")(h)
        pooled = h.mean(axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="head")(pooled)
        return (logits, (h, pooled)) if return_features else logits


def image_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    x = rng.normal(size=(n, 6, 6, 1)) + y[:, None, None, None] * 0.7
    return from_arrays(x.astype(np.float32), y)


def cfg(**changes):
    base = SweepConfig(model=ModelConfig(depth=2, width=4), optim=OptimConfig(lr=0.05, epochs=3,
                                                                              batch_size=16),
                       data=DataConfig(n=48, num_classes=C), weight_decays=(1e-4, 1e-2), seeds=(0, 1))
    return base.replace(**changes)


def np_forward(params, stats, x):
    """Eval-mode forward of TinyConvNet in float64, written without flax."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    s = jax.tree.map(lambda a: np.asarray(a, np.float64), stats)
    x = np.asarray(x, np.float64)
    K, b = p["conv"]["kernel"], p["conv"]["bias"]          # (3, 3, 1, 4) HWIO
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    H, W = x.shape[1:3]
    h = sum(np.einsum("nhwc,co->nhwo", xp[:, i:i + H, j:j + W], K[i, j])
            for i in range(3) for j in range(3)) + b
    h = np.maximum(h, 0)
    h = (h - s["bn"]["mean"]) / np.sqrt(s["bn"]["var"] + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
    pooled = h.mean(axis=(1, 2))
    return pooled @ p["head"]["kernel"] + p["head"]["bias"], pooled


@pytest.fixture(scope="module")
def swept():
    data = image_data()
    res = nc_jax.run_sweep(cfg(), data, model=TinyConvNet(), progress=False)
    return data, res, nc_jax.analyse(res, data)


def test_own_module_on_images_analyse_equals_independent_metrics(swept):
    data, res, runs = swept
    assert res.num_runs == 4 and len(runs) == 4
    for i, r in enumerate(runs):
        st = res.state(i)
        assert set(st.params) == {"conv", "bn", "head"} and set(st.batch_stats) == {"bn"}
        logits, h = np_forward(st.params, st.batch_stats, data.x)
        W = np.asarray(st.params["head"]["kernel"], np.float64).T
        ref = ref_report(h, data.y, C, W=W, logits=logits)
        for k in ("min_intra", "max_inter", "mean_inter", "nc1", "ncc_accuracy", "cdnv", "nc3",
                  "nc4", "nc2_equinorm"):
            np.testing.assert_allclose(r[k], ref[k], rtol=2e-4, atol=2e-5, err_msg=k)
        np.testing.assert_allclose(r["train_accuracy"], np.mean(logits.argmax(1) == data.y))
        z = logits - logits.max(1, keepdims=True)
        ce = -(z - np.log(np.exp(z).sum(1, keepdims=True)))[np.arange(data.n), data.y].mean()
        np.testing.assert_allclose(r["train_loss"], ce, rtol=1e-4)
        # the run's identity is what ran, not the config's MLP defaults
        assert r["model"] == "TinyConvNet" and r["loss"] == "ce"
        assert r["depth"] is None and r["bn"] is None and r["width"] is None
    assert [r["weight_decay"] for r in runs] == [1e-4, 1e-4, 1e-2, 1e-2]  # as given
    assert [r["seed"] for r in runs] == [0, 1, 0, 1]
    # seeds differ -> different inits; BN statistics are per run
    assert not np.allclose(res.states.batch_stats["bn"]["mean"][0],
                           res.states.batch_stats["bn"]["mean"][1])


def test_own_module_per_layer_metrics_flatten_feature_maps(swept):
    data, res, _ = swept
    runs = nc_jax.analyse(res, data, layers=True)
    st = res.state(0)
    _, pooled = np_forward(st.params, st.batch_stats, data.x)
    assert len(runs[0]["layers"]) == 2  # (conv map, pooled)
    ref = ref_report(pooled, data.y, C)
    np.testing.assert_allclose(runs[0]["layers"][1]["min_intra"], ref["min_intra"], rtol=2e-4)


def test_custom_classifier_and_protocol_errors():
    data = image_data()

    def renamed(params):
        return params["head"]["kernel"].T, None  # a classifier without bias

    res = nc_jax.run_sweep(cfg(weight_decays=(0.0,), seeds=(0,)), data, model=TinyConvNet(),
                           classifier=renamed, progress=False)
    r = nc_jax.analyse(res, data)[0]
    # without a bias the theorem's quantities are not augmented
    assert r["alpha_aug"] == pytest.approx(r["alpha"]) and r["beta_aug"] == pytest.approx(r["beta"])

    class LogitsOnly(nn.Module):
        @nn.compact
        def __call__(self, x, train=False, return_features=False):
            return nn.Dense(C, name="head")(x.reshape(x.shape[0], -1))

    with pytest.raises(TypeError, match="must return \\(logits, features tuple\\)"):
        nc_jax.run_sweep(cfg(), data, model=LogitsOnly(), progress=False)

    class NoHead(nn.Module):
        @nn.compact
        def __call__(self, x, train=False, return_features=False):
            h = x.reshape(x.shape[0], -1)
            z = nn.Dense(C, name="out")(h)
            return (z, (h,)) if return_features else z

    with pytest.raises(KeyError, match="no Dense layer named 'head'.*classifier=fn"):
        nc_jax.run_sweep(cfg(), data, model=NoHead(), progress=False)
    with pytest.raises(ValueError, match=r"logits of shape \(3, 5\).*expected \(3, 3\)"):
        nc_jax.run_sweep(cfg(), data, model=TinyConvNet(num_classes=5), progress=False)
    with pytest.raises(TypeError, match="flax.linen.Module"):
        nc_jax.run_sweep(cfg(), data, model=lambda x: x, progress=False)


def test_model_by_name_needs_images_and_says_so():
    flat = from_arrays(np.random.default_rng(0).normal(size=(48, 8)).astype(np.float32),
                       np.arange(48) % C)
    with pytest.raises(ValueError, match=r"model 'cnn' needs image inputs"):
        nc_jax.run_sweep(cfg(model=ModelConfig(name="cnn", depth=1, width=4)), flat,
                         progress=False)


def test_checkpoint_refuses_another_model_or_loss(tmp_path):
    data = image_data()
    c = cfg(weight_decays=(1e-3,), seeds=(0,), checkpoint_every=1)
    run_sweep(c, data, out_dir=tmp_path, model=TinyConvNet(), progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"task\.loss: checkpoint ce, command mse"):
        run_sweep(c, data, out_dir=tmp_path, model=TinyConvNet(), loss="mse", progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"task\.model\.fields\.channels"):
        run_sweep(c, data, out_dir=tmp_path, model=TinyConvNet(channels=5), progress=False)


def test_result_state_exposes_params_and_batch_stats(swept):
    _, res, _ = swept
    st = res.state(3)
    assert st.params["head"]["kernel"].shape == (4, C)
    np.testing.assert_array_equal(np.asarray(st.batch_stats["bn"]["var"]),
                                  np.asarray(res.states.batch_stats["bn"]["var"][3]))
    hp = res.states.opt_state.hyperparams["weight_decay"]
    np.testing.assert_allclose(np.asarray(hp), np.float32([1e-4, 1e-4, 1e-2, 1e-2]))
    assert jnp.issubdtype(res.states.key.dtype, jax.dtypes.prng_key)
