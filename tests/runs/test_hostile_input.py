"""Hostile input and a hostile output directory: no write follows a symlink, and values that
would be silently misread are refused with a message that names them."""
import json
import os

import pytest

from nc_jax.cli import main
from nc_jax.config import ConfigError, DataConfig, OptimConfig
from nc_jax.runs import LOCK_NAME

TINY = ["--preset", "demo", "--set", "model.depth=2", "--set", "model.width=4",
        "--set", "data.n=240", "--set", "data.dim=8", "--set", "data.num_classes=4",
        "--set", "data.teacher_width=16", "--set", "optim.epochs=2",
        "--set", "optim.batch_size=32", "--seeds", "0", "--weight-decays", "1e-3", "--quiet"]


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / LOCK_NAME)
    assert main(TINY + ["--out", str(out)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious"


def test_a_symlinked_figure_is_replaced_not_written_through(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(TINY + ["--out", str(out)]) == 0
    figure = out / "nc_vs_weight_decay.png"
    assert figure.is_file()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    figure.unlink()
    os.symlink(victim, figure)
    assert main(TINY + ["--out", str(out), "--plot-only"]) == 0
    capsys.readouterr()
    assert victim.read_text() == "precious"
    assert not figure.is_symlink() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_data_seed_beyond_uint32_is_refused():
    with pytest.raises(ConfigError, match=r"data.seed must be <= 4294967295"):
        DataConfig(seed=2 ** 32)


def test_a_learning_rate_that_is_zero_in_float32_is_refused():
    with pytest.raises(ConfigError, match="0 in float32"):
        OptimConfig(lr=1e-46)


def test_duplicate_keys_in_a_config_file_are_refused(tmp_path, capsys):
    path = tmp_path / "cfg.json"
    path.write_text('{"optim": {"epochs": 2}, "optim": {"epochs": 300}}')
    assert main(["--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "['optim']" in err and "more than once" in err
    json.loads(path.read_text())  # valid JSON all the same: only the duplicate is refused


def test_one_sample_in_a_class_is_refused_not_reported_as_collapse():
    import numpy as np
    from nc_jax.data import from_arrays
    x = np.random.default_rng(0).normal(size=(7, 3))
    y = np.array([0, 0, 1, 1, 2, 2, 7])
    with pytest.raises(ValueError, match=r"class 7 has 1 sample\(s\)"):
        from_arrays(x, y)
    assert from_arrays(x, y, min_per_class=1).num_classes == 4  # a scored-only held-out set


@pytest.mark.parametrize("make, match", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_text("{not json"), "is not valid JSON"),
    (lambda p: p.write_text("[" * 100000 + "]" * 100000), "nested too deeply"),
])
def test_an_unusable_config_file_is_a_clear_error(tmp_path, capsys, make, match):
    path = tmp_path / "cfg.json"
    make(path)
    assert main(["--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and match in err and "Traceback" not in err
