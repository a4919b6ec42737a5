"""`nc_jax.run_sweep` with in-loop recording records the command line's NC curves (the recorder
`nc_jax.analysis.record_fn(task)`), and `nc_jax.analyse` returns them: the last recorded
min intra is the final one of the report."""
import json

import numpy as np
import pytest

import nc_jax
from nc_jax.cli import main
from nc_jax.config import SweepConfig
from nc_jax.data import make_dataset

TINY = ["--set", "model.depth=3", "--set", "model.width=8", "--set", "data.n=240",
        "--set", "data.dim=8", "--set", "data.num_classes=4", "--set", "data.teacher_width=16",
        "--set", "optim.epochs=2", "--set", "optim.batch_size=32", "--weight-decays", "1e-3,1e-2",
        "--seeds", "0", "--set", "record_every=1", "--quiet"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "run"
    assert main(TINY + ["--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    return SweepConfig.from_dict(doc["configs"]["sweep"]), doc["runs"]


def test_python_curves_have_the_cli_keys_and_end_at_the_final_report(cli_run, capsys):
    cfg, cli_runs = cli_run
    capsys.readouterr()
    data = make_dataset(cfg.data)
    runs = nc_jax.analyse(nc_jax.run_sweep(cfg, data, progress=False), data)
    cli_keys = set(cli_runs[0]["curves"])
    assert {"epoch", "loss", "accuracy", "min_intra", "max_inter", "nc1"} <= cli_keys
    for r, c in zip(runs, cli_runs):
        assert set(r["curves"]) == cli_keys
        assert r["curves"]["epoch"] == [1, 2]
        # the last record is taken after the last epoch: the final state's report
        np.testing.assert_allclose(r["curves"]["min_intra"][-1], r["min_intra"], rtol=1e-5)
        np.testing.assert_allclose(r["curves"]["accuracy"][-1], r["train_accuracy"], rtol=1e-6)
        # the same configuration trains the same runs as the command line
        np.testing.assert_allclose(r["curves"]["min_intra"], c["curves"]["min_intra"],
                                   rtol=1e-4)


def test_record_every_as_a_keyword_records_the_same_curves(cli_run):
    cfg, cli_runs = cli_run
    data = make_dataset(cfg.data)
    res = nc_jax.run_sweep(cfg.replace(record_every=0), data, progress=False, record_every=1)
    assert set(res.records) | {"epoch"} == set(cli_runs[0]["curves"])
    # without recording nothing is recorded (and the recorder is not part of the run)
    assert nc_jax.run_sweep(cfg.replace(record_every=0), data, progress=False).records == {}
