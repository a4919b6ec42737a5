"""NC and accuracy of trained runs on held-out data (`DataConfig.test_size`, `Dataset.test`).

For every run of a sweep, on the held-out set with BN in eval mode (running statistics, as
every measure of nc-jax):

- `test_loss`, `test_accuracy`: the task's loss and the accuracy of argmax logits;
- `test_<key>` for every key of `metrics.collapse_report` (the `collapse` reporter) of the
  held-out penultimate features h_test: the cosine measures, NC1, NC2, NC3 with the classifier,
  NC4 with the logits, and `test_ncc_accuracy` (NCC against the held-out set's *own* class means);
- `test_ncc_accuracy_train_means`: nearest-class-center accuracy of h_test against the
  *training* class means mu_c = mean of the training features of class c,
      (1/N_test) sum_i [argmin_c ||h_test_i - mu_c|| == y_i]
  (ties to the lowest c), the generalization measure of Hui, Belkin & Wright (2022) and
  Galanti, Gyorgy & Hutter (2022): a classifier built from training data only.

The reporters are those of `nc_jax.analysis` applied to the held-out set, so the numbers are
computed exactly as their training-set counterparts.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import metrics
from nc_jax.data._datasets import Dataset
from nc_jax.analysis._reporting import RunView, collapse, loss_accuracy, py, sweep_reports
from nc_jax.training._step import forward

#: Prefix of every held-out key in the per-run results.
PREFIX = "test_"


def ncc_train_means_reporter(x_train, y_train):
    """A reporter (RunView of the held-out set -> dict) giving `ncc_accuracy_train_means`: NCC
    accuracy of the view's features h (N, d) against the class means (C, d) of the same run's
    eval-mode features on (x_train (M, ...), y_train (M,)).

    (`nc_jax.metrics.ncc_predict_centers`)."""

    def reporter(v: RunView) -> Dict[str, jax.Array]:
        h_train = forward(v.state, x_train, v.task, train=False)[1][-1]
        h_train = h_train.reshape(h_train.shape[0], -1)  # conv maps are measured as vectors
        mu = metrics.class_means(h_train, y_train, v.num_classes)             # (C, d)
        pred = metrics.ncc_predict_centers(v.h, mu)
        return {"ncc_accuracy_train_means": jnp.mean(pred == v.y)}

    return reporter


def _renamed(rep):
    """loss_accuracy's `train_*` keys are named after what they measure: `loss`, `accuracy`."""

    def reporter(v: RunView):
        return {k[len("train_"):] if k.startswith("train_") else k: a for k, a in rep(v).items()}

    return reporter


def heldout_report(result, test: Dataset, train: Dataset, *,
                   batch_size: int = 1) -> Dict[str, np.ndarray]:
    """{`test_<key>`: (K,) array} for the K runs of a `SweepResult` (or anything with `.states`
    and `.task`) on `test`, BN in eval mode; `train` supplies the training class means of
    `test_ncc_accuracy_train_means`. Diverged runs give whatever their NaN parameters give
    (`heldout_runs` turns them into None)."""
    task = result.task
    for name, d in (("test", test), ("train", train)):
        if d.num_classes != task.num_classes:
            raise ValueError(f"heldout_report: the {name} data has {d.num_classes} classes but "
                             f"the sweep's task {task.num_classes}")
    if test.sample_shape != train.sample_shape:
        raise ValueError(f"heldout_report: test samples {test.sample_shape} and training samples "
                         f"{train.sample_shape} differ in shape")
    reps = sweep_reports(result.states, test.x, test.y, task, batch_size=batch_size,
                         reporters=(_renamed(loss_accuracy), collapse,
                                    ncc_train_means_reporter(train.x, train.y)))
    return {PREFIX + k: v for k, v in reps.items()}


def heldout_values(result, test: Dataset, train: Dataset, **kwargs) -> List[dict]:
    """One dict per run of `heldout_report(result, test, train)`, as JSON-able Python values;
    every value of a diverged run is None (as in `nc_jax.analysis.analyse`)."""
    reps = heldout_report(result, test, train, **kwargs)
    diverged = np.asarray(result.diverged, bool)
    return [{k: None if diverged[i] else py(v[i]) for k, v in reps.items()}
            for i in range(len(diverged))]


def heldout_runs(result, data: Dataset, **kwargs) -> List[dict]:
    """`heldout_values(result, data.test, data)`: the held-out part of `data`
    (`DataConfig.test_size`); [] when `data` has none."""
    test: Optional[Dataset] = getattr(data, "test", None)
    if test is None:
        return []
    return heldout_values(result, test, data, **kwargs)
