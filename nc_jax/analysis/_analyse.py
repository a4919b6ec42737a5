"""`analyse`: one JSON-able dict per run of a trained sweep, from the reporters of
`nc_jax.analysis` on the training set and, with `test=`, the held-out report on other data.

A module of its own because it joins the two: the held-out report (`_heldout`) is built on the
reporters (`_reporting`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from nc_jax import metrics
from nc_jax.analysis._heldout import heldout_values
from nc_jax.analysis._reporting import (CONVERGED_ACCURACY, DEFAULT_REPORTERS,
                                        EFFECTIVE_DEPTH_EPS, Reporter, py, sweep_reports)
from nc_jax.data._datasets import Dataset


def _check_test(result, data, test) -> None:
    """A held-out set must be a Dataset of the same classes and sample shape as the training
    data, or its measures would compare other things."""
    if not isinstance(test, Dataset):
        raise TypeError(f"analyse: test must be a nc_jax.data.Dataset (e.g. "
                        f"nc_jax.data.from_arrays(x_test, y_test)), got {type(test).__name__}")
    if test.num_classes != result.task.num_classes:
        raise ValueError(f"analyse: test has {test.num_classes} classes but the sweep's task "
                         f"{result.task.num_classes}; the held-out data must hold the training "
                         f"classes (from_arrays numbers the labels it finds 0..C-1)")
    if tuple(test.sample_shape) != tuple(data.sample_shape):
        raise ValueError(f"analyse: test samples have shape {tuple(test.sample_shape)} but the "
                         f"training samples {tuple(data.sample_shape)}")


def analyse(result, data, layers: bool = False, *, test: Optional[Dataset] = None,
            group: str = "", eps: float = EFFECTIVE_DEPTH_EPS,
            reporters: Sequence[Reporter] = DEFAULT_REPORTERS) -> List[dict]:
    """One dict per run of a `SweepResult`: the run's identity (model, depth, width, bn, loss,
    weight decay, seed, learning rate, data kind; from what ran), the `run_report` keys (BN in
    eval mode, whole training set `data`), `converged` (100% train accuracy), the training
    curves recorded in the loop (`curves`: `epoch` and one list per recorded key, every
    `record_every` epochs; `history`: train-mode loss and accuracy of every epoch, the last one
    also as `last_epoch_train_mode_accuracy`) and, with `layers`, per-layer metrics (`layers`: a
    list of dicts) and the eps-effective depth.

    `test` (a `nc_jax.data.Dataset` with the training classes, e.g.
    `nc_jax.data.from_arrays(x_test, y_test)`, or `data.test` of a `DataConfig.test_size`
    hold-out) adds the `test_*` keys of `nc_jax.analysis.heldout_report(result, test, data)`:
    loss, accuracy and the collapse report of the held-out features, and NCC accuracy against
    the training class means. A diverged run keeps its identity but every metric is None."""
    if data.num_classes != result.task.num_classes:
        raise ValueError(f"analyse: the data has {data.num_classes} classes but the sweep's task "
                         f"{result.task.num_classes}")
    if test is not None:
        _check_test(result, data, test)
    reps = sweep_reports(result.states, data.x, data.y, result.task, layers=layers,
                         reporters=reporters)
    held = heldout_values(result, test, data) if test is not None else None
    info = getattr(data, "info", {}) or {}
    out = []
    for i, base in enumerate(result.runs()):
        r = dict(base, group=group, data=info.get("kind", result.config.data.kind),
                 teacher_depth=info.get("teacher_depth"), epochs=result.config.optim.epochs)
        div = bool(result.diverged[i])
        for k, v in reps.items():
            if not k.startswith("layer_"):
                r[k] = None if div else py(v[i])
        r["converged"] = (not div) and r["train_accuracy"] is not None and \
            r["train_accuracy"] >= CONVERGED_ACCURACY
        if layers:
            keys = [k for k in reps if k.startswith("layer_")]
            n_layers = reps[keys[0]].shape[1]
            r["layers"] = None if div else [
                {k[len("layer_"):]: py(reps[k][i, l]) for k in keys} for l in range(n_layers)]
            r["effective_depth"] = None if div else int(metrics.effective_depth(
                1.0 - reps["layer_ncc_accuracy"][i], eps))
            r["effective_depth_eps"] = eps
        r["history"] = None if div else {k: py(v[i]) for k, v in result.history.items()}
        # the thesis' rule reads the eval-mode accuracy above; the last epoch's train-mode
        # accuracy (running average over its batches) is what a training log would show
        r["last_epoch_train_mode_accuracy"] = None if div or not r["history"] else \
            r["history"]["accuracy"][-1]
        if result.records:
            r["curves"] = None if div else {"epoch": py(result.record_epochs),
                                            **{k: py(v[i]) for k, v in result.records.items()}}
        if held is not None:
            r.update(held[i])
        out.append(r)
    return out
