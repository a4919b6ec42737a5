import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax.config import ModelConfig
from nc_jax.models import CNN, BasicBlock, ResNet, TorchConv, cnn_strides
from nc_jax.models import MODELS, head_classifier, make_model


def np_conv(x, k, stride, pad, bias=None):
    """PyTorch Conv2d semantics in float64: symmetric zero padding `pad`, NHWC x, HWIO k."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = np.asarray(k, np.float64)
    kh, kw = k.shape[:2]
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, k.shape[3]))
    for i in range(ho):
        for j in range(wo):
            window = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", window, k)
    return out if bias is None else out + np.asarray(bias, np.float64)


def np_bn_train(h, eps=1e-5):
    """Train-mode BN over N, H, W: (normalized, batch mean, unbiased batch variance)."""
    axes = tuple(range(h.ndim - 1))
    n = math.prod(h.shape[:-1])
    mean = h.mean(axes)
    var = ((h - mean) ** 2).mean(axes)
    return (h - mean) / np.sqrt(var + eps), mean, var * n / (n - 1)


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def n_params(tree):
    return sum(a.size for a in jax.tree.leaves(tree))


# Compile time dominates these tests. Eager flax compiles every op separately (ResNet-8 init: ~30 s
# on a loaded 2-core CPU) and a jitted init at XLA's default optimization level still took ~22 s
# (the threefry sampling of every parameter); LLVM -O0 brings that to ~4 s and changes no
# semantics. eval_shape, for tests that need only shapes, compiles nothing.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def init(model, x, seed=0, **kw):
    fn = jax.jit(lambda k, x: model.init(k, x, **kw), compiler_options=_FAST_COMPILE)
    return fn(jax.random.key(seed), x)


def shapes_of_init(model, x):
    return jax.eval_shape(model.init, jax.random.key(0), x)


def apply(model, v, x, **kw):
    return jax.jit(lambda v, x: model.apply(v, x, **kw), compiler_options=_FAST_COMPILE)(v, x)


def test_shapes_of_logits_and_features():
    x = jnp.ones((2, 12, 12, 1))
    cnn = CNN(depth=3, width=4, num_classes=5)
    logits, feats = jax.eval_shape(
        lambda v: cnn.apply(v, x, return_features=True), shapes_of_init(cnn, x))
    assert logits.shape == (2, 5) and [f.shape for f in feats] == [(2, 4)] * 3
    x = jnp.ones((2, 8, 8, 3))
    res = ResNet(depth=14, width=4, num_classes=5)
    logits, feats = jax.eval_shape(
        lambda v: res.apply(v, x, return_features=True), shapes_of_init(res, x))
    # stem + 2 blocks per stage; channels w, w, w, 2w, 2w, 4w, 4w
    assert logits.shape == (2, 5)
    assert [f.shape[1] for f in feats] == [4, 4, 4, 8, 8, 16, 16]
    assert all(f.shape[0] == 2 for f in feats)


def test_cnn_downsampling_rule():
    assert cnn_strides(5) == (1, 2, 1, 2, 1)
    model = CNN(depth=5, width=3, num_classes=2, bn="none")
    for side, expected in ((28, [28, 14, 14, 7, 7]), (12, [12, 6, 6, 3, 3]), (1, [1] * 5)):
        x = jnp.ones((1, side, side, 1))
        _, state = jax.eval_shape(
            lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
            shapes_of_init(model, x), x)
        sides = [state["intermediates"][f"conv_{i}"]["__call__"][0].shape[1] for i in range(5)]
        assert sides == expected


def test_bn_variants():
    x = jnp.ones((2, 8, 8, 3))
    v = shapes_of_init(CNN(2, 3, 4, bn="plain"), x)
    assert set(v["params"]) == {"conv_0", "conv_1", "head"}
    assert set(v["batch_stats"]) == {"bn_0", "bn_1"}
    v = shapes_of_init(CNN(2, 3, 4, bn="none"), x)
    assert "batch_stats" not in v
    v = shapes_of_init(ResNet(8, 2, 4, bn="none"), x)
    assert "batch_stats" not in v and "bias" in v["params"]["stage1_block1"]["conv1"]
    v = shapes_of_init(ResNet(8, 2, 4, bn="plain"), x)
    assert not any("bn" in k for k in v["params"]["stage2_block1"])
    assert set(v["batch_stats"]["stage2_block1"]) == {"bn1", "bn2", "proj_bn"}
    assert "bias" not in v["params"]["stage1_block1"]["conv1"]  # cancelled by BN


def test_torch_conv_init_bounds_match_pytorch_formula():
    for in_ch, k, out in ((16, 3, 64), (50, 1, 200)):
        x = jnp.ones((1, 4, 4, in_ch))
        p = init(TorchConv(out, kernel_size=k), x, seed=1)["params"]
        bound = 1.0 / math.sqrt(in_ch * k * k)  # kaiming_uniform(a=sqrt(5)): gain sqrt(1/3)
        w = np.asarray(p["kernel"], np.float64)
        assert w.shape == (k, k, in_ch, out)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
        assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.03
        assert abs(w.mean()) < 0.05 * bound
        b = np.asarray(p["bias"], np.float64)
        assert np.abs(b).max() <= bound and np.abs(b).max() > 0.8 * bound
    b = init(TorchConv(4000, kernel_size=1), jnp.ones((1, 2, 2, 9)), seed=2)["params"]
    assert abs(np.asarray(b["bias"]).std() / ((1 / 3) / math.sqrt(3)) - 1) < 0.05


@pytest.mark.parametrize("side,stride", [(6, 2), (7, 2), (5, 1)])
def test_torch_conv_matches_pytorch_padding(side, stride):
    rng = np.random.default_rng(side)
    x = rng.normal(size=(2, side, side, 3)).astype(np.float32)
    conv = TorchConv(4, kernel_size=3, strides=stride)
    p = init(conv, jnp.asarray(x))["params"]
    y = apply(conv, {"params": p}, jnp.asarray(x))
    ref = np_conv(x, p["kernel"], stride, 1, p["bias"])
    assert y.shape == ref.shape == (2, -(-side // stride), -(-side // stride), 4)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)


def test_cnn_bn_statistics_over_nhw_train_and_eval():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(4, 5, 5, 2)) * 2 + 3).astype(np.float32)
    model = CNN(depth=1, width=3, num_classes=2, bn="affine")
    v = init(model, jnp.asarray(x), seed=4)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    params = dict(v["params"], bn_0={"scale": jnp.asarray(gamma, jnp.float32),
                                     "bias": jnp.asarray(beta, jnp.float32)})
    (_, feats), upd = apply(model, {"params": params, "batch_stats": v["batch_stats"]},
                            jnp.asarray(x), train=True, return_features=True,
                            mutable=["batch_stats"])
    p = f64(params)
    pre = np.maximum(np_conv(x, p["conv_0"]["kernel"], 1, 1, p["conv_0"]["bias"]), 0)
    z, mean, var_unbiased = np_bn_train(pre)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["bn_0"]["mean"]), 0.1 * mean,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["bn_0"]["var"]),
                               0.9 + 0.1 * var_unbiased, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(feats[0]), (z * gamma + beta).mean((1, 2)),
                               rtol=1e-4, atol=1e-4)
    # eval mode normalizes with the running statistics just written
    rm, rv = 0.1 * mean, 0.9 + 0.1 * var_unbiased
    _, feats_eval = apply(model, {"params": params, "batch_stats": upd["batch_stats"]},
                          jnp.asarray(x), return_features=True)
    ref = ((pre - rm) / np.sqrt(rv + 1e-5) * gamma + beta).mean((1, 2))
    np.testing.assert_allclose(np.asarray(feats_eval[0]), ref, rtol=1e-4, atol=1e-4)


def test_basic_block_with_projection_against_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 6, 6, 2)).astype(np.float32)
    block = BasicBlock(features=4, strides=2, bn="plain")
    v = init(block, jnp.asarray(x), seed=6, train=True)
    y, _ = apply(block, v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    p = f64(v["params"])
    h = np.maximum(np_bn_train(np_conv(x, p["conv1"]["kernel"], 2, 1))[0], 0)
    h = np_bn_train(np_conv(h, p["conv2"]["kernel"], 1, 1))[0]
    shortcut = np_bn_train(np_conv(x, p["proj_conv"]["kernel"], 2, 0))[0]
    np.testing.assert_allclose(np.asarray(y), np.maximum(h + shortcut, 0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", [CNN(2, 4, 3), ResNet(8, 2, 3)], ids=["cnn", "resnet"])
def test_last_feature_times_head_is_logits(model):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(5, 8, 8, 3)).astype(np.float32))
    v = init(model, x, seed=8)
    for train in (True, False):
        out = apply(model, v, x, train=train, return_features=True, mutable=["batch_stats"])
        logits, feats = out[0]
        kernel = np.asarray(v["params"]["head"]["kernel"], np.float64)
        bias = np.asarray(v["params"]["head"]["bias"], np.float64)
        ref = np.asarray(feats[-1], np.float64) @ kernel + bias
        np.testing.assert_allclose(np.asarray(logits), ref, rtol=1e-5, atol=1e-5)
        W, b = head_classifier(v["params"])
        assert W.shape == (3, feats[-1].shape[1]) and b.shape == (3,)


def test_eval_mode_is_per_sample_train_mode_is_not():
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(6, 8, 8, 1)).astype(np.float32))
    model = ResNet(8, 2, 3)
    v = init(model, x, seed=10)

    def outputs(v, x):  # one program instead of five compilations
        train = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0]
        _, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
        v = {"params": v["params"], "batch_stats": upd["batch_stats"]}
        return (model.apply(v, x), model.apply(v, x[:2]), train(v, x), train(v, x[:2]))

    full, part, t_full, t_part = jax.jit(outputs, compiler_options=_FAST_COMPILE)(v, x)
    # eval mode: a sample's logits do not depend on the rest of the batch
    np.testing.assert_allclose(np.asarray(part), np.asarray(full[:2]), rtol=1e-5, atol=1e-6)
    # train mode: they do, through the batch statistics
    assert not np.allclose(np.asarray(t_full[:2]), np.asarray(t_part), atol=1e-3)


def test_resnet8_parameter_count_by_hand():
    w, c, cin = 4, 5, 3
    x = jnp.ones((1, 8, 8, cin))
    conv = lambda k, i, o, bias=False: k * k * i * o + (o if bias else 0)
    stage1 = conv(3, w, w) + 2 * w + conv(3, w, w) + 2 * w
    stage2 = conv(3, w, 2 * w) + 4 * w + conv(3, 2 * w, 2 * w) + 4 * w + conv(1, w, 2 * w) + 4 * w
    stage3 = (conv(3, 2 * w, 4 * w) + 8 * w + conv(3, 4 * w, 4 * w) + 8 * w
              + conv(1, 2 * w, 4 * w) + 8 * w)
    affine = conv(3, cin, w) + 2 * w + stage1 + stage2 + stage3 + 4 * w * c + c
    assert affine == 298 * w * w + (27 + 42) * w + 4 * w * c + c  # closed form of the same sum
    v = shapes_of_init(ResNet(8, w, c), x)
    assert n_params(v["params"]) == affine
    # running mean + var for each BN: channels w | w, w | 2w x 3 | 4w x 3
    assert n_params(v["batch_stats"]) == 2 * 21 * w
    # bn="none": no gamma/beta (2 * 21w) but every conv gets a bias (21w)
    v = shapes_of_init(ResNet(8, w, c, bn="none"), x)
    assert n_params(v["params"]) == affine - 2 * 21 * w + 21 * w


def test_non_image_input_is_rejected():
    x = jnp.ones((2, 32))
    with pytest.raises(ValueError, match=r"model 'cnn' needs image inputs \(B, H, W, C\); "
                                         r"got shape \(2, 32\)"):
        CNN(2, 3, 4).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="model 'resnet' needs image inputs"):
        ResNet(8, 3, 4).init(jax.random.key(0), x)


def test_depth_validation_and_registry():
    for depth in (7, 10, 2):
        with pytest.raises(ValueError, match=r"6n \+ 2"):
            ResNet(depth, 2, 3).init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))
        with pytest.raises(ValueError, match=r"6n \+ 2"):
            MODELS["resnet"](SimpleNamespace(depth=depth, width=2, bn="affine"), 3)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        CNN(0, 2, 3).init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="bn must be one of"):
        CNN(1, 2, 3, bn="batch").init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))
    m = make_model(ModelConfig(depth=14, width=3, bn="plain", name="resnet"), 7)
    assert isinstance(m, ResNet) and (m.depth, m.width, m.num_classes, m.bn) == (14, 3, 7, "plain")
    m = make_model(ModelConfig(depth=2, width=3, bn="none", name="cnn"), 4)
    assert isinstance(m, CNN) and (m.depth, m.width, m.num_classes, m.bn) == (2, 3, 4, "none")


@pytest.mark.parametrize("shape, k, stride, pad", [
    ((2, 7, 7, 3), 3, 1, 1), ((2, 8, 8, 3), 3, 2, 1), ((3, 9, 6, 2), 3, 2, 1),
    ((2, 8, 8, 4), 1, 2, 0), ((2, 5, 5, 2), 3, 1, 0)])
def test_conv2d_gradients_equal_the_stock_convolution(shape, k, stride, pad):
    """nc_jax.models.conv2d (hand-written VJP in canonical layouts) against jax.grad of
    lax.conv_general_dilated, also vmapped over a run axis of kernels as in a sweep."""
    import jax
    import jax.numpy as jnp
    from nc_jax.models import conv2d
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape)
    K = jax.random.normal(kk, (2, k, k, shape[-1], 5))   # 2 runs

    def stock(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    out = stock(x, K[0])
    g = jax.random.normal(kg, out.shape)
    for f in (stock, lambda x, w: conv2d(x, w, stride, pad)):
        np.testing.assert_allclose(f(x, K[0]), out, rtol=1e-6, atol=1e-6)
    loss = lambda f: (lambda x, w: jnp.sum(f(x, w) * g))  # noqa: E731
    want = jax.vmap(jax.grad(loss(stock), argnums=(0, 1)), (None, 0))(x, K)
    got = jax.vmap(jax.grad(loss(lambda x, w: conv2d(x, w, stride, pad)), argnums=(0, 1)),
                   (None, 0))(x, K)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
