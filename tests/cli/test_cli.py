"""The command line: bad values print `error: <message>` (no traceback) and exit 2; `--out`
checkpoints, writes results atomically, resumes on a re-run and guards foreign directories."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nc_jax.runs import checkpoint_epoch
from nc_jax.cli import main
from nc_jax.models import known_models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("argv, msg", [
    (["--depth", "1"], "model.depth must be >= 2, got 1"),
    (["--width", "0"], "model.width must be >= 1, got 0"),
    (["--bn", "batch"], "model.bn must be one of ('affine', 'plain', 'none'), got 'batch'"),
    (["--weight-decays", "1e-3,-1e-4"], "weight_decays[1] must be >= 0, got -0.0001"),
    (["--weight-decays", "nan"], "weight_decays[0] must be finite, got nan"),
    (["--weight-decays", "inf"], "weight_decays[0] must be finite, got inf"),
    (["--epochs", "0"], "optim.epochs must be >= 1, got 0"),
    (["--seeds", "1,1"], "seeds must be distinct"),
    (["--preset", "huge"], "unknown preset 'huge' of experiment 'sweep'; known presets: ['demo', 'paper']"),
    (["--set", "model.widht=3"], "unknown config field(s) ['model.widht']"),
    (["--set", "optimizer.lr=3"], "unknown config field 'optimizer.lr'"),
    (["--set", "lr"], "--set expects field=value, got 'lr'"),
    (["--model", "vgg"], f"model.name must be one of {known_models()}, got 'vgg'"),
    (["--loss", "hinge"], "loss.name must be one of ('ce', 'mse', 'label_smoothing'"),
    (["--experiment", "fig9"], "unknown experiment 'fig9'"),
    (["--out", "{tmp}", "--checkpoint-every", "-2"], "checkpoint_every must be >= 0, got -2"),
    (["--runs-per-device", "-1"], "runs_per_device must be >= 0, got -1"),
])
def test_bad_values_print_the_message_and_exit_2(argv, msg, capsys, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path / "o")) for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and msg in err, err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "o").exists()  # nothing was created for a rejected command


def test_resume_flags_need_out(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--overwrite"])
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_error_exit_in_a_real_process():
    # the module entry point: exit status 2, the message, and no traceback
    p = subprocess.run([sys.executable, "-m", "nc_jax.cli", "--depth", "1"], cwd=ROOT,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2
    assert p.stderr.strip() == "error: model.depth must be >= 2, got 1"
    assert p.stdout == ""


def test_foreign_out_dir_is_refused(tmp_path, capsys):
    (tmp_path / "results.json").write_text('{"other": "run"}')
    assert main(["--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "results of another run" in err and "--overwrite" in err
    assert (tmp_path / "results.json").read_text() == '{"other": "run"}'


def test_out_writes_results_and_rerun_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--depth", "2", "--width", "4", "--epochs", "2", "--weight-decays", "1e-3",
            "--seeds", "0", "--quiet", "--out", str(out), "--checkpoint-every", "1"]
    assert main(argv) == 0
    first_table = capsys.readouterr().out.splitlines()[:3]
    assert checkpoint_epoch(out / "checkpoint.npz") == 2
    doc = json.loads((out / "results.json").read_text())
    cfg = doc["configs"]["sweep"]
    assert cfg["optim"]["epochs"] == 2 and cfg["checkpoint_every"] == 1
    assert len(doc["runs"]) == 1 and doc["runs"][0]["weight_decay"] == 1e-3  # as given
    assert len(doc["runs"][0]["history"]["loss"]) == 2
    # the NC report is in the results: final numbers and the theorem's quantities
    assert {"min_intra", "max_inter", "nc1", "cdnv", "min_loss"} <= set(doc["runs"][0])
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,depth,width,bn,loss,weight_decay") and len(csv_lines) == 2
    # no curves and no layers recorded: no long-form files, no curve or layer figures
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "nc_vs_weight_decay.png", "results.csv",
                                       "results.json", "theorem.png"]

    # the same command again: restored from the final checkpoint, the same numbers
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "resuming from" in captured.err and "epoch 2 of 2" in captured.err
    assert captured.out.splitlines()[:3] == first_table
    doc2 = json.loads((out / "results.json").read_text())
    assert doc2["runs"] == doc["runs"]

    # a different command against the checkpoint names the differing field
    changed = [a if a != "2" else "3" for a in argv]  # --depth 3 --epochs 3
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "model.depth: checkpoint 2, command 3" in err
    assert "optim.epochs: checkpoint 2, command 3" in err
    assert json.loads((out / "results.json").read_text()) == doc2  # untouched
    np.testing.assert_equal(checkpoint_epoch(out / "checkpoint.npz"), 2)


def test_compile_cache_is_on_unless_switched_off(monkeypatch, capsys):
    """The CLI turns the persistent compilation cache on before anything compiles;
    --no-compile-cache leaves JAX's configuration alone."""
    from nc_jax.cli import _main as cli
    calls = []
    monkeypatch.setattr(cli, "enable_compile_cache", lambda *a, **k: calls.append(a) or None)
    assert main(["--epochs", "0"]) == 2          # a rejected command still parses first
    assert main(["--epochs", "0", "--no-compile-cache"]) == 2
    assert len(calls) == 1
    capsys.readouterr()
