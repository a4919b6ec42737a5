"""Data sets: a `Dataset` (x (N, ...), y (N,), num_classes, optional held-out part) from the
thesis' synthetic generators, MNIST-5k, an .npz file or your own arrays."""
from nc_jax.data._datasets import (Dataset, conic_hull_dataset, from_arrays, linear_teacher_weights,
                                   make_teacher, mnist5k, teacher_dataset)
from nc_jax.data._npz import load_npz
from nc_jax.data._make import make_dataset, split_heldout

__all__ = ["Dataset", "conic_hull_dataset", "from_arrays", "linear_teacher_weights", "load_npz",
           "make_dataset", "make_teacher", "mnist5k", "split_heldout", "teacher_dataset"]
