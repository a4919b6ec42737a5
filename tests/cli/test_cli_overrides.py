"""The one front end: `--set field=value`, `--config file.json`, `--model` / `--loss` by name and
experiments by name land in the stored config; unknown fields are named with exit status 2."""
import json

import pytest

from nc_jax.cli import apply_overrides, main, parse_value
from nc_jax.config import ConfigError, SweepConfig
from tests.helpers import tiny_config

TINY = ["--set", "model.depth=2", "--set", "model.width=4", "--set", "data.n=240",
        "--set", "data.dim=8", "--set", "data.num_classes=4", "--set", "data.teacher_width=16",
        "--set", "optim.epochs=1", "--set", "optim.batch_size=32", "--seeds", "0", "--quiet"]


def test_parse_value_json_lists_and_strings():
    assert parse_value("1e-4") == 1e-4 and parse_value("[1, 2]") == [1, 2]
    assert parse_value("1e-4,1e-3") == [1e-4, 1e-3] and parse_value("true") is True
    assert parse_value("cnn") == "cnn" and parse_value("null") is None


def test_apply_overrides_sets_nested_fields_and_validates():
    cfg = apply_overrides(SweepConfig(), ["model.name=cnn", "model.depth=3", "loss.name=mse",
                                          "weight_decays=[1e-4,1e-3]", "optim.lr_decay_epochs=[5]"])
    assert cfg.model.name == "cnn" and cfg.model.depth == 3 and cfg.loss.name == "mse"
    assert cfg.weight_decays == (1e-4, 1e-3) and cfg.optim.lr_decay_epochs == (5,)
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['model.widht'\]"):
        apply_overrides(SweepConfig(), ["model.widht=3"])
    with pytest.raises(ConfigError, match=r"weight_decays must be a list of numbers, got 'a'"):
        apply_overrides(SweepConfig(), ["weight_decays=a"])


def test_set_and_loss_land_in_the_stored_config(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(TINY + ["--set", "optim.lr=0.07", "--loss", "label_smoothing",
                        "--set", "loss.smoothing=0.2", "--weight-decays", "1e-3",
                        "--out", str(out)]) == 0
    assert "label_smoothing" in capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    cfg = SweepConfig.from_dict(doc["configs"]["sweep"])
    assert cfg.optim.lr == 0.07 and cfg.loss.name == "label_smoothing" and cfg.loss.smoothing == 0.2
    assert cfg.model.width == 4 and cfg.data.n == 240
    run = doc["runs"][0]
    assert run["loss"] == "label_smoothing" and run["learning_rate"] == 0.07
    assert "min_loss" not in run and "min_intra" in run  # theorem keys are cross-entropy only


def test_config_file_is_the_base_of_a_custom_sweep(tmp_path, capsys):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(tiny_config(weight_decays=(2e-3,), seeds=(3,)).to_dict()))
    assert main(["--config", str(path), "--set", "optim.epochs=1", "--quiet",
                 "--out", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [(r["weight_decay"], r["seed"]) for r in doc["runs"]] == [(2e-3, 3)]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"depht": 3}}))
    capsys.readouterr()
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'model.depht'" in err


def test_experiment_by_name_with_overrides(tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["--experiment", "fig3_1", "--preset", "smoke", "--set", "optim.epochs=2",
                 "--set", "weight_decays=[1e-3]", "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["experiment"] == "fig3_1" and sorted(doc["configs"]) == ["affine", "none", "plain"]
    assert all(c["optim"]["epochs"] == 2 for c in doc["configs"].values())
    assert [r["group"] for r in doc["runs"]] == ["affine", "plain", "none"]
    assert (out / "fig3_1.png").exists()
