"""A `DataConfig` made into a `Dataset`: the generator or file it names, and the seeded,
class-balanced hold-out (`split_heldout`)."""
from __future__ import annotations

import jax
import numpy as np

from nc_jax.config import MIN_TRAIN_PER_CLASS, DataConfig
from nc_jax.data._datasets import (HELDOUT_STREAM, Dataset, conic_hull_dataset, mnist5k,
                                   teacher_dataset)
from nc_jax.data._npz import load_npz


def split_heldout(data: Dataset, test_size: int, seed: int) -> Dataset:
    """Hold out `test_size` samples, test_size / C of every class, drawn with the key
    `fold_in(key(seed), HELDOUT_STREAM)`: the same seed gives the same split.

    Returns the training part (x, y: the other N - test_size rows, in their original order) with
    the held-out rows (also in original order) as `.test`; train and test are disjoint and their
    union is `data`. `info` gains `test_size` and `heldout_indices` (rows of `data`).
    `test_size=0` returns `data` itself. A test_size that is not a multiple of C, or that would
    leave a class fewer than MIN_TRAIN_PER_CLASS training samples, raises a ValueError naming
    data.test_size.
    """
    if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) or test_size < 0:
        raise ValueError(f"data.test_size must be an integer >= 0, got {test_size!r}")
    if test_size == 0:
        return data
    C = data.num_classes
    if test_size % C:
        raise ValueError(f"data.test_size ({test_size}) must be a multiple of the number of "
                         f"classes ({C}) for a class-balanced hold-out")
    per = test_size // C
    counts = data.class_counts()
    short = int(np.argmin(counts))
    if counts[short] - per < MIN_TRAIN_PER_CLASS:
        raise ValueError(f"data.test_size ({test_size}) holds out {per} samples per class, but "
                         f"class {short} has only {counts[short]}: every class must keep at "
                         f"least {MIN_TRAIN_PER_CLASS} training samples (class counts: "
                         f"{counts.tolist()})")
    key = jax.random.fold_in(jax.random.key(seed), HELDOUT_STREAM)
    # one permutation of all rows; each class holds out its first `per` rows in that order, so
    # the draw is uniform within every class
    order = np.asarray(jax.random.permutation(key, data.n))
    test_idx = np.sort(np.concatenate([order[data.y[order] == c][:per] for c in range(C)]))
    train_mask = np.ones(data.n, bool)
    train_mask[test_idx] = False
    info = {**data.info, "test_size": int(test_size), "heldout_indices": test_idx.tolist()}
    test = Dataset(data.x[test_idx], data.y[test_idx], C,
                   {"kind": data.info.get("kind"), "split": "test", "seed": int(seed)})
    return Dataset(data.x[train_mask], data.y[train_mask], C, info, test=test)


def make_dataset(cfg: DataConfig) -> Dataset:
    """The data set a `DataConfig` describes (the key is `jax.random.key(cfg.seed)`), minus a
    class-balanced hold-out of `cfg.test_size` samples attached as `.test` (`split_heldout`).
    Standardization (mnist, npz) uses all N samples before the split: a label-free per-pixel
    statistic, and it keeps every held-out row a row of the test_size=0 data set."""
    return split_heldout(_make_full(cfg), cfg.test_size, cfg.seed)


def _make_full(cfg: DataConfig) -> Dataset:
    key = jax.random.key(cfg.seed)
    if cfg.kind == "teacher":
        return teacher_dataset(key, cfg.n, cfg.dim, cfg.num_classes, cfg.teacher_depth,
                               cfg.teacher_width, cfg.teacher_bn)
    if cfg.kind == "conic":
        return conic_hull_dataset(key, cfg.n, cfg.dim, cfg.num_classes)
    if cfg.kind == "npz":
        # data.num_classes is the one source of truth: the labels must be 0..C-1, all present
        return load_npz(cfg.path, standardize=cfg.standardize, num_classes=cfg.num_classes)
    if cfg.kind == "mnist":
        data = mnist5k(standardize=cfg.standardize)
        if data.num_classes != cfg.num_classes:
            raise ValueError(f"MNIST-5k has {data.num_classes} classes but data.num_classes is "
                             f"{cfg.num_classes}; set data.num_classes={data.num_classes}")
        return data
    raise ValueError(f"unknown data kind {cfg.kind!r}")
