"""`--import MODULE`: a user's module registers a model and a loss, which the command line then
uses by name (`--model mynet --loss mine`); a module that cannot be imported is a bad value
(`error: cannot import ...`, status 2)."""
import json
import sys
import textwrap

import pytest

from nc_jax.cli import main
from nc_jax.losses import LOSSES
from nc_jax.models import MODELS

TINY = ["--set", "model.depth=2", "--set", "model.width=4", "--set", "data.n=240",
        "--set", "data.dim=8", "--set", "data.num_classes=4", "--set", "data.teacher_width=16",
        "--set", "optim.epochs=2", "--set", "optim.batch_size=32", "--weight-decays", "1e-3",
        "--seeds", "0", "--quiet"]

PLUGIN = "nc_jax_user_plugin"
OFFSET = 5.0

PLUGIN_SOURCE = f'''
from nc_jax.losses import cross_entropy, register_loss
from nc_jax.models import MODELS, register_model

CALLS = []


@register_loss("mine")
def mine(loss_cfg):
    CALLS.append(("loss", loss_cfg.name))
    # cross-entropy plus a constant: the same gradients, so the same training as "ce"
    return lambda logits, y: cross_entropy(logits, y) + {OFFSET}


@register_model("mynet")
def mynet(model_cfg, num_classes):
    CALLS.append(("model", model_cfg.name))
    return MODELS["mlp"](model_cfg, num_classes)
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory on sys.path holding the plugin module; the registries and sys.modules are
    restored afterwards (they are global)."""
    d = tmp_path / "plugins"
    d.mkdir()
    (d / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    (d / "nc_jax_broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(d))
    models, losses = dict(MODELS), dict(LOSSES)
    yield d
    for reg, before in ((MODELS, models), (LOSSES, losses)):
        reg.clear()
        reg.update(before)
    for name in (PLUGIN, "nc_jax_broken_plugin"):
        sys.modules.pop(name, None)


def test_imported_model_and_loss_train_by_name(plugin_dir, tmp_path, capsys):
    # without the import the names are unknown, and the error lists the known ones
    assert main(TINY + ["--loss", "mine"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: loss.name must be one of ('ce', 'mse', 'label_smoothing'")
    assert "got 'mine'" in err

    mine, ce = tmp_path / "mine", tmp_path / "ce"
    assert main(TINY + ["--import", PLUGIN, "--model", "mynet", "--loss", "mine",
                        "--out", str(mine)]) == 0
    assert ("loss", "mine") in sys.modules[PLUGIN].CALLS
    assert ("model", "mynet") in sys.modules[PLUGIN].CALLS
    assert main(TINY + ["--out", str(ce)]) == 0
    capsys.readouterr()
    doc = json.loads((mine / "results.json").read_text())
    run = doc["runs"][0]
    assert doc["configs"]["sweep"]["loss"]["name"] == "mine"
    assert run["loss"] == "mine" and run["model"] == "mynet"
    assert "min_loss" not in run  # the theorem's keys are cross-entropy's
    ref = json.loads((ce / "results.json").read_text())["runs"][0]
    # the constant changes no gradient: the same training, and a loss larger by exactly OFFSET
    assert run["train_loss"] == pytest.approx(ref["train_loss"] + OFFSET, abs=1e-5)
    assert run["min_intra"] == pytest.approx(ref["min_intra"], abs=1e-6)
    assert run["train_accuracy"] == ref["train_accuracy"]


@pytest.mark.parametrize("module, reason", [
    ("nc_jax_no_such_module", "No module named 'nc_jax_no_such_module'"),
    ("nc_jax_broken_plugin", "RuntimeError: boom at import"),
])
def test_a_module_that_cannot_be_imported_is_refused(plugin_dir, tmp_path, capsys, module,
                                                      reason):
    out = tmp_path / "o"
    assert main(TINY + ["--import", PLUGIN, "--import", module, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: cannot import {module}: {reason}"
    assert captured.out == "" and not out.exists()
