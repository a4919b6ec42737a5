"""Checkpoints written by nc-jax 0.2.0 (checkpoint format 1, whose run identity named nc-jax's
model class, classifier rule and recorder by module path) still resume and reanalyse after the
package moved into subpackages.

The fixtures in tests/fixtures/checkpoint_v1 were written by nc-jax 0.2.0's command line:
`finished` and `unfinished` by `nc-sweep --preset demo <FLAGS> [--layers] --out DIR` (the
unfinished one stopped after its first checkpoint, at epoch 2 of 4), `fig3_1` by
`nc-sweep --experiment fig3_1 --preset smoke --set optim.epochs=2 --checkpoint-every 2 --out DIR`.
Their results.json files are 0.2.0's numbers.
"""
import json
import os
import shutil

import numpy as np
import pytest

from nc_jax.cli import main
from nc_jax.runs import read_checkpoint

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "checkpoint_v1")
FLAGS = ["--set", "model.depth=3", "--set", "model.width=8", "--set", "data.n=48",
         "--set", "data.dim=6", "--set", "data.num_classes=4", "--set", "data.teacher_width=8",
         "--set", "optim.epochs=4", "--set", "optim.batch_size=16", "--set", "record_every=2",
         "--weight-decays", "1e-3,5e-3", "--seeds", "0", "--checkpoint-every", "2", "--quiet",
         "--no-compile-cache"]


def _copy(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), dst)
    return str(dst)


def _numbers(run: dict) -> dict:
    """The run's numbers (floats, ints, bools), nested per-layer values flattened."""
    out = {}
    for k, v in run.items():
        if isinstance(v, (bool, int, float)) or v is None:
            out[k] = v
        elif k == "layers":
            for i, layer in enumerate(v):
                out.update({f"layers.{i}.{n}": x for n, x in layer.items()})
        elif k == "curves":
            out.update({f"curves.{n}": tuple(x) for n, x in v.items()})
    return out


def _assert_same_runs(new: list, old: list, *, rtol: float = 0.0, keys=None):
    assert len(new) == len(old)
    for a, b in zip(new, old):
        na, nb = _numbers(a), _numbers(b)
        for k in (keys or nb):
            if k not in na or k not in nb:
                continue
            if isinstance(nb[k], (float, tuple)) and rtol:
                np.testing.assert_allclose(na[k], nb[k], rtol=rtol, atol=1e-6, err_msg=k)
            else:
                assert na[k] == nb[k], (k, na[k], nb[k])


def test_fixture_is_format_1_and_upgrades_to_registered_names():
    meta, _ = read_checkpoint(os.path.join(FIXTURES, "finished", "checkpoint.npz"))
    assert meta["version"] == 1
    task = meta["config"]["task"]
    assert task["classifier"] == "head" and "class" not in task["model"]
    assert task["model"]["name"] == "mlp"
    assert meta["config"]["runs"]["record_fn"] == "record:collapse"


def test_finished_v1_checkpoint_reanalyses_to_its_numbers(tmp_path):
    out = _copy("finished", tmp_path)
    old = json.load(open(os.path.join(out, "results.json")))
    assert main(["--preset", "demo", *FLAGS, "--layers", "--reanalyse", "--out", out]) == 0
    new = json.load(open(os.path.join(out, "results.json")))
    _assert_same_runs(new["runs"], old["runs"])


def test_unfinished_v1_checkpoint_resumes_only_when_allowed(tmp_path, capsys):
    out = _copy("unfinished", tmp_path)
    # other software wrote it, so continuing it needs the explicit flag
    assert main(["--preset", "demo", *FLAGS, "--out", out]) == 2
    assert "--allow-version-change" in capsys.readouterr().err
    assert main(["--preset", "demo", *FLAGS, "--allow-version-change", "--out", out]) == 0
    meta, _ = read_checkpoint(os.path.join(out, "checkpoint.npz"))
    assert meta["version"] == 2 and meta["epoch"] == 4
    assert len(meta["software_history"]) == 2  # 0.2.0 trained epochs 1-2, this code 3-4
    new = json.load(open(os.path.join(out, "results.json")))["runs"]
    old = json.load(open(os.path.join(FIXTURES, "finished", "results.json")))["runs"]
    # the uninterrupted 0.2.0 run (with --layers, which only adds keys)
    _assert_same_runs(new, old, rtol=1e-5)


@pytest.mark.slow
def test_v1_experiment_checkpoints_reanalyse(tmp_path):
    out = _copy("fig3_1", tmp_path)
    old = json.load(open(os.path.join(out, "results.json")))
    assert main(["--preset", "smoke", "--set", "optim.epochs=2", "--checkpoint-every", "2",
                 "--reanalyse", "--quiet", "--no-compile-cache", "--out", out],
                experiment="fig3_1") == 0
    new = json.load(open(os.path.join(out, "results.json")))
    _assert_same_runs(new["runs"], old["runs"])
