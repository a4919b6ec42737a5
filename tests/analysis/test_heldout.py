"""The seeded, class-balanced hold-out (`DataConfig.test_size`) and its report (`nc_jax.analysis`),
checked against independent NumPy computations."""
import dataclasses

import jax
import numpy as np
import pytest

from nc_jax.cli._outdir import same_configs
from nc_jax.config import ConfigError, DataConfig, SweepConfig
from nc_jax.data import load_npz, make_dataset, split_heldout, teacher_dataset
from nc_jax.runs import data_summary, run_group
from nc_jax.analysis import heldout_report, heldout_runs
from nc_jax.runs import run_identity
from tests.helpers import tiny_config

TEACHER = dict(n=200, dim=6, num_classes=4, teacher_width=16)


def _sorted_rows(x, y):
    """Rows (x_i flattened, y_i) as float64, sorted lexicographically: a multiset of samples."""
    a = np.column_stack([np.asarray(x, np.float64).reshape(len(y), -1), np.asarray(y, np.float64)])
    return a[np.lexsort(a.T[::-1])]


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    """Images (N, 3, 2, 1) with 3 classes of 8 samples: the data do not depend on the seed."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("heldout") / "d.npz"
    np.savez(path, x=rng.normal(size=(24, 3, 2, 1)), y=np.repeat([0, 1, 2], 8))
    return str(path)


def test_split_is_balanced_disjoint_and_its_union_is_the_data():
    full = make_dataset(DataConfig(**TEACHER))
    d = make_dataset(DataConfig(**TEACHER, test_size=40))
    assert d.n == 160 and d.test.n == 40
    np.testing.assert_array_equal(d.test.class_counts(), [10] * 4)
    np.testing.assert_array_equal(d.class_counts(), [40] * 4)
    # union = the full data set, as multisets of (x, y) rows
    np.testing.assert_array_equal(_sorted_rows(np.concatenate([d.x, d.test.x]),
                                               np.concatenate([d.y, d.test.y])),
                                  _sorted_rows(full.x, full.y))
    # disjoint: no held-out row is a training row
    train_rows = {r.tobytes() for r in d.x.reshape(d.n, -1)}
    assert not any(r.tobytes() in train_rows for r in d.test.x.reshape(d.test.n, -1))
    # the recorded indices are the held-out rows; training keeps the others in their order
    idx = np.asarray(d.info["heldout_indices"])
    np.testing.assert_array_equal(full.x[idx], d.test.x)
    np.testing.assert_array_equal(full.y[idx], d.test.y)
    keep = np.setdiff1d(np.arange(full.n), idx)
    np.testing.assert_array_equal(full.x[keep], d.x)
    np.testing.assert_array_equal(full.y[keep], d.y)
    assert d.info["test_size"] == 40 and d.test.info["split"] == "test"


def test_split_is_deterministic_per_seed_and_changes_with_it(npz_path):
    def split(seed):
        return make_dataset(DataConfig(kind="npz", path=npz_path, num_classes=3, seed=seed, test_size=6))

    a, b, c = split(0), split(0), split(1)
    for name in ("x", "y"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(getattr(a.test, name), getattr(b.test, name))
    assert a.info["heldout_indices"] == b.info["heldout_indices"]
    assert a.info["heldout_indices"] != c.info["heldout_indices"]  # same data, another split
    np.testing.assert_array_equal(a.test.class_counts(), [2, 2, 2])
    assert a.sample_shape == a.test.sample_shape == (3, 2, 1)


def test_test_size_zero_is_exactly_the_old_data_set(npz_path):
    d = make_dataset(DataConfig(**TEACHER))
    old = teacher_dataset(jax.random.key(0), n=200, dim=6, num_classes=4, teacher_width=16)
    np.testing.assert_array_equal(d.x, old.x)
    np.testing.assert_array_equal(d.y, old.y)
    assert d.info == old.info and d.test is None
    e = make_dataset(DataConfig(kind="npz", path=npz_path, num_classes=3))
    old = load_npz(npz_path)
    assert np.array_equal(e.x, old.x) and e.info == old.info and e.test is None
    assert split_heldout(old, 0, 3) is old


@pytest.mark.parametrize("bad, match", [
    (-4, r"data\.test_size must be >= 0"), (6, r"data\.test_size \(6\) must be a multiple"),
    (2.0, r"data\.test_size must be an integer"), (True, r"data\.test_size must be an integer"),
    (196, r"data\.test_size \(196\) leaves 1 training samples per class")])
def test_bad_test_size_is_refused_naming_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        DataConfig(**TEACHER, test_size=bad)


def test_bad_test_size_of_loaded_data_is_refused_naming_the_field(npz_path):
    # the class counts of an npz are only known once it is loaded: split_heldout checks them
    with pytest.raises(ValueError, match=r"data\.test_size \(4\) must be a multiple of the "
                                         r"number of classes \(3\)"):
        make_dataset(DataConfig(kind="npz", path=npz_path, num_classes=3, test_size=4))
    with pytest.raises(ValueError, match=r"data\.test_size \(21\).*class 0 has only 8.*at "
                                         r"least 2 training samples"):
        make_dataset(DataConfig(kind="npz", path=npz_path, num_classes=3, test_size=21))


def test_old_configs_and_checkpoint_identities_stay_compatible():
    cfg = tiny_config()
    old = cfg.to_dict()
    del old["data"]["test_size"]  # a results.json / checkpoint written before the field
    assert SweepConfig.from_dict(old) == cfg and cfg.data.test_size == 0
    assert same_configs({"g": old}, {"g": cfg})
    assert not same_configs({"g": old}, {"g": cfg.replace(data=dataclasses.replace(
        cfg.data, test_size=40))})
    data = make_dataset(cfg.data)
    kw = dict(weight_decays=[1e-4], seeds=[0], learning_rates=[0.05], chunk_epochs=1)
    assert "test_size" not in run_identity(cfg, data, **kw)["data"]
    held = cfg.replace(data=dataclasses.replace(cfg.data, test_size=40))
    assert run_identity(held, make_dataset(held.data), **kw)["data"]["test_size"] == 40


@pytest.fixture(scope="module")
def trained():
    cfg = tiny_config(data=DataConfig(n=240, dim=8, num_classes=4, teacher_width=16,
                                      test_size=80), seeds=(0,))
    data = make_dataset(cfg.data)
    runs, res = run_group(cfg, group="g", data=data, progress=False)
    return cfg, data, runs, res


def _np_forward(res, i, x):
    st = res.state(i)
    logits, feats = res.task.features(st.params, st.batch_stats, x, train=False)
    h = np.asarray(feats[-1], np.float64)
    return np.asarray(logits, np.float64), h.reshape(len(h), -1)


def test_heldout_report_matches_numpy_float64(trained):
    cfg, data, runs, res = trained
    rep = heldout_report(res, data.test, data)
    C, yt = data.num_classes, data.test.y
    for i in range(res.num_runs):
        logits, h = _np_forward(res, i, data.test.x)
        _, h_train = _np_forward(res, i, data.x)
        z = logits - logits.max(1, keepdims=True)
        ce = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(yt)), yt])
        np.testing.assert_allclose(rep["test_loss"][i], ce, rtol=1e-5)
        assert rep["test_accuracy"][i] == pytest.approx(np.mean(logits.argmax(1) == yt))
        # NCC against the TRAINING class means, and against the held-out set's own means
        for means, key in ((np.stack([h_train[data.y == c].mean(0) for c in range(C)]),
                            "test_ncc_accuracy_train_means"),
                           (np.stack([h[yt == c].mean(0) for c in range(C)]),
                            "test_ncc_accuracy")):
            d2 = ((h[:, None, :] - means[None]) ** 2).sum(-1)
            assert rep[key][i] == pytest.approx(np.mean(d2.argmin(1) == yt)), key
        # the measures are those of the held-out features, not of the training ones
        u = h / np.linalg.norm(h, axis=1, keepdims=True)
        nu = np.stack([u[yt == c].mean(0) for c in range(C)])
        G = nu @ nu.T
        np.testing.assert_allclose(rep["test_min_intra"][i], np.diag(G).min(), atol=1e-5)
        np.testing.assert_allclose(rep["test_max_inter"][i], G[~np.eye(C, dtype=bool)].max(),
                                   atol=1e-5)
    for k in ("test_nc1", "test_nc3", "test_nc4", "test_cdnv", "test_mean_inter"):
        assert k in rep and rep[k].shape == (res.num_runs,)


def test_run_group_merges_the_heldout_keys(trained):
    cfg, data, runs, res = trained
    rep = heldout_report(res, data.test, data)
    assert len(runs) == res.num_runs
    for i, r in enumerate(runs):
        for k, v in rep.items():
            assert r[k] == pytest.approx(float(v[i])), k
        assert "train_accuracy" in r and "min_intra" in r  # the training report is untouched
    s = data_summary(data)
    assert s["n"] == 160 and s["test_size"] == 80 and "heldout_indices" not in s["info"]
    assert "test_size" not in data_summary(make_dataset(tiny_config().data))


def test_diverged_runs_get_none(trained):
    cfg, data, runs, res = trained
    fake = dataclasses.replace(res, diverged=np.array([False, True]))
    held = heldout_runs(fake, data)
    assert all(v is None for v in held[1].values())
    assert all(v is not None for v in held[0].values())
    assert heldout_runs(res, dataclasses.replace(data, test=None)) == []
