import jax
import numpy as np
import pytest

from nc_jax.data._datasets import _balanced_select
from nc_jax.data import conic_hull_dataset, from_arrays, load_npz, make_teacher, teacher_dataset


def test_teacher_balanced_deterministic_and_labels_follow_teacher():
    key = jax.random.key(7)
    a = teacher_dataset(key, n=600, dim=8, num_classes=6, teacher_width=32)
    b = teacher_dataset(key, n=600, dim=8, num_classes=6, teacher_width=32)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.class_counts(), np.full(6, 100))
    c = teacher_dataset(jax.random.key(8), n=600, dim=8, num_classes=6, teacher_width=32)
    assert not np.array_equal(a.x, c.x)
    # labels are the (centered) teacher's argmax of each kept sample, whatever pool it came from
    k_teacher, _ = jax.random.split(key)
    label_fn = make_teacher(k_teacher, 8, 6, 3, 32, "affine")
    np.testing.assert_array_equal(np.asarray(label_fn(a.x)), a.y)
    assert a.info["teacher_depth"] == 3 and len(a.info["selected_indices"]) == 600
    assert a.x.dtype == np.float32 and a.y.dtype == np.int32


def test_centered_teacher_is_roughly_balanced_before_selection():
    # the raw candidate pool should not be dominated by one class (the uncentered failure mode)
    d = teacher_dataset(jax.random.key(0), n=1000, dim=32, num_classes=10, teacher_width=64)
    counts = np.asarray(d.info["candidate_counts"], float)
    assert counts.min() > 0.3 * counts.mean() and counts.max() < 2.5 * counts.mean()


def test_conic_hull_labels_are_linear_argmax_and_cones():
    d = conic_hull_dataset(jax.random.key(3), n=500, dim=6, num_classes=5)
    b = np.asarray(d.info["teacher_weights"], np.float64)
    np.testing.assert_array_equal(np.argmax(d.x.astype(np.float64) @ b.T, axis=1), d.y)
    np.testing.assert_array_equal(d.class_counts(), np.full(5, 100))
    # a cone with apex at the origin: positive rescaling never changes the class
    scaled = d.x.astype(np.float64) * np.random.default_rng(0).uniform(0.01, 100, (500, 1))
    np.testing.assert_array_equal(np.argmax(scaled @ b.T, axis=1), d.y)


def test_rare_class_raises_clear_error():
    def never_class_two(x):
        return (np.asarray(x[:, 0]) > 0).astype(np.int32)  # only classes 0 and 1

    with pytest.raises(ValueError, match=r"class 2 is too rare.*counts"):
        _balanced_select(jax.random.key(0), never_class_two, n=30, dim=3, num_classes=3,
                         balanced=True, pool=100, max_draws=3)


def test_unbalanced_option_and_bad_n():
    d = teacher_dataset(jax.random.key(1), n=101, dim=4, num_classes=3, teacher_width=16,
                        balanced=False)
    assert d.n == 101
    with pytest.raises(ValueError, match="multiple of num_classes"):
        teacher_dataset(jax.random.key(1), n=101, dim=4, num_classes=3)


def test_load_npz_keeps_the_sample_shape_and_remaps(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2, 3))
    y = np.array([3, 7, 9, 3, 7, 9, 3, 7, 9, 3, 7, 9])
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=y)
    d = load_npz(str(p))
    # inputs keep their per-sample shape (images stay images; an MLP flattens them itself)
    assert d.x.shape == (12, 2, 3) and d.sample_shape == (2, 3) and d.dim == 6
    assert d.num_classes == 3
    np.testing.assert_array_equal(d.y, np.searchsorted([3, 7, 9], y))
    np.testing.assert_allclose(d.x, x, rtol=1e-6)
    assert d.info["original_labels"] == [3, 7, 9]


@pytest.mark.parametrize("y, match", [
    (np.array([0.5, 1.0, 2.0, 1.0]), "labels must be integers"),
    (np.array(["a", "b", "a", "b"]), "labels must be integers"),
    (np.array([1, 1, 1, 1]), "at least 2 classes"),
    (np.array([0, 1, 0]), "4 samples but y has 3"),
])
def test_load_npz_rejects_bad_labels(tmp_path, y, match):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros((4, 3)), y=y)
    with pytest.raises(ValueError, match=match):
        load_npz(str(p))


def test_load_npz_rejects_missing_arrays_and_nan(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, features=np.zeros((4, 3)), y=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"missing array\(s\) \['x'\]"):
        load_npz(str(p))
    q = tmp_path / "n.npz"
    np.savez(q, x=np.array([[0.0, np.nan], [1, 2]]), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        load_npz(str(q))


@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e200, 1e-200])
def test_standardize_is_exact_at_any_magnitude(tmp_path, scale):
    # float32 statistics overflow (1e30: every feature came out 0) or underflow (1e-30: every
    # feature was squashed to ~0); the result must not depend on the magnitude at all
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 4)) + 3.0
    np.savez(tmp_path / "d.npz", x=base * scale, y=np.arange(200) % 2)
    d = load_npz(str(tmp_path / "d.npz"), standardize=True)
    assert d.x.dtype == np.float32 and np.all(np.isfinite(d.x))
    np.testing.assert_allclose(d.x.std(0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(d.x.mean(0), 0.0, atol=1e-5)
    ref = (base - base.mean(0)) / base.std(0)
    np.testing.assert_allclose(d.x, ref, rtol=1e-5, atol=1e-5)


def test_standardize_keeps_the_float32_bits_of_ordinary_data():
    # published numbers (MNIST-5k) were computed with the float32 formula: same bits, constant
    # features (MNIST's empty corner pixels) at 0
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(300, 6)).astype(np.float32)
    x[:, 2] = 0.0
    d = from_arrays(x, np.arange(300) % 3, standardize=True)
    np.testing.assert_array_equal(d.x, (x - x.mean(0)) / np.maximum(x.std(0), 1e-8))
    assert np.all(d.x[:, 2] == 0)
    # a constant column that float32 cannot average exactly is 0, not rounding noise blown up
    c = np.full((300, 1), 1000.1, np.float32)
    assert np.all(from_arrays(np.hstack([x, c]), np.arange(300) % 3,
                              standardize=True).x[:, -1] == 0)


def test_values_beyond_float32_are_an_error_without_standardize():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"beyond the float32 range .*data\.standardize=true"):
        from_arrays(np.full((4, 2), 1e39), y)
    with pytest.raises(ValueError, match=r"float32 rounds to 0 \(e\.g\. 1e-46\)"):
        from_arrays(np.full((4, 2), 1e-46), y)
    with pytest.raises(ValueError, match="must hold real numbers, got dtype complex128"):
        from_arrays(np.ones((4, 2), complex), y)
    assert from_arrays(np.full((4, 2), 1e39), y, standardize=True).x.max() == 0  # constant


# ---- num_classes as the one source of truth --------------------------------------------------

def test_num_classes_keeps_the_labels_and_refuses_any_mismatch(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = np.concatenate([np.repeat(np.arange(4), 10), [100] * 10])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    # without num_classes the five distinct labels become five classes (what a config with 4
    # classes would have trained silently)
    assert load_npz(str(tmp_path / "d.npz")).num_classes == 5
    with pytest.raises(ValueError, match=r"labels outside \[0, 4\) with num_classes=4: found "
                                         r"\[100\] \(5 distinct labels\).*relabel y as 0\.\.4 .*"
                                         r"data\.num_classes=5"):
        load_npz(str(tmp_path / "d.npz"), num_classes=4)
    # a class that never occurs: named, with the count to set
    with pytest.raises(ValueError, match=r"num_classes=10 but class\(es\) \[3, 4, 5, 6, 7, 8, "
                                         r"9\] have no sample.*set num_classes=3 "
                                         r"\(data\.num_classes=3"):
        from_arrays(x[:30], np.repeat(np.arange(3), 10), num_classes=10)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no sample.*relabel y as 0\.\.1"):
        from_arrays(x[:20], np.repeat([0, 2], 10), num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        from_arrays(x, y, num_classes=1)
    # matching labels are kept as they are (float labels that are integers included)
    y_ok = np.tile(np.arange(5), 10)
    d = from_arrays(x, y_ok.astype(np.float64), num_classes=5)
    assert d.num_classes == 5 and d.y.dtype == np.int32
    np.testing.assert_array_equal(d.y, y_ok)


def test_make_dataset_takes_num_classes_from_the_config(tmp_path):
    from nc_jax.config import DataConfig
    from nc_jax.data import make_dataset
    x = np.random.default_rng(1).normal(size=(30, 2)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    with pytest.raises(ValueError, match=r"set num_classes=3 \(data\.num_classes=3; --set "
                                         r"data\.num_classes=3\)"):
        make_dataset(DataConfig(kind="npz", path=str(tmp_path / "d.npz")))  # default C = 10
    d = make_dataset(DataConfig(kind="npz", path=str(tmp_path / "d.npz"), num_classes=3))
    assert d.num_classes == 3 and np.array_equal(d.y, np.arange(30) % 3)


# ---- sizes declared in the archive, checked before reading -------------------------------------

def _npz_member(zf, name, shape, dtype, body: bytes):
    import io
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": np.dtype(dtype).str,
                                                "fortran_order": False, "shape": shape})
    zf.writestr(f"{name}.npy", head.getvalue() + body)


def test_an_archive_declaring_a_huge_shape_is_refused_before_reading(tmp_path, monkeypatch):
    import zipfile
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        # 4 TB declared (np.load would allocate it first), a few bytes stored
        _npz_member(zf, "x", (1 << 20, 1 << 20), "<f4", b"\0" * 64)
        _npz_member(zf, "y", (4,), "<i8", np.arange(4).astype("<i8").tobytes())
    def no_load(*a, **k):
        raise AssertionError("np.load must not be reached")
    monkeypatch.setattr(np, "load", no_load)
    with pytest.raises(ValueError, match=r"is damaged: array x declares shape \(1048576, "
                                         r"1048576\) of float32 \(4\.4e\+03 GB\) but the archive "
                                         r"stores 6\.4e-05 MB"):
        load_npz(str(p))


def test_a_zip_bomb_is_refused_by_its_declared_size(tmp_path, monkeypatch):
    import zipfile
    p = tmp_path / "bomb.npz"
    n, d = 20_000, 500  # 40 MB of float32 zeros; ~40 kB compressed
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        _npz_member(zf, "x", (n, d), "<f4", bytes(n * d * 4))
        _npz_member(zf, "y", (n,), "<i8", (np.arange(n) % 2).astype("<i8").tobytes())
    assert p.stat().st_size < 200_000
    def no_load(*a, **k):
        raise AssertionError("np.load must not be reached")
    with monkeypatch.context() as m:
        m.setattr(np, "load", no_load)
        with pytest.raises(ValueError, match=r"holds 40\.2 MB of arrays \(x: \(20000, 500\) "
                                             r"float32, y: \(20000,\) int64\) in 0\.0\d+ MB on "
                                             r"disk, more than the 10 MB .*NC_JAX_MAX_DATA_BYTES"):
            load_npz(str(p), max_bytes=10_000_000)
        m.setenv("NC_JAX_MAX_DATA_BYTES", "1e7")
        with pytest.raises(ValueError, match="more than the 10 MB"):
            load_npz(str(p))
    monkeypatch.setenv("NC_JAX_MAX_DATA_BYTES", "1e8")  # a limit it fits: read as usual
    ds = load_npz(str(p), num_classes=2)
    assert ds.x.shape == (n, d) and not ds.x.any()


def test_loading_makes_no_float64_copy_for_the_finiteness_check():
    import tracemalloc
    x = np.random.default_rng(0).normal(size=(4000, 500)).astype(np.float32)  # 8 MB
    y = np.arange(4000) % 4
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        d = from_arrays(x, y, num_classes=4)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # the float32 copy kept by the Dataset is x.nbytes; a float64 copy alone would be 2 x.nbytes
    assert x.nbytes <= peak < 1.5 * x.nbytes, peak / x.nbytes
    np.testing.assert_array_equal(d.x, x)
    bad = np.ones((8, 3), np.float16)
    bad[5, 1] = np.inf
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        from_arrays(bad, np.arange(8) % 2)
