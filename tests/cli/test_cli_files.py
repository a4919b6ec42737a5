"""What a custom sweep leaves in --out besides results.json: the long-form curves.csv and
layers.csv (row for row the curves and layers of results.json) and its figures, which
--plot-only redraws and --overwrite removes with the other results."""
import csv
import json
import os

import pytest

from nc_jax.cli import CUSTOM_FIGURES, main
from nc_jax.runs import CURVES_COLUMNS, LAYERS_COLUMNS, RUN_ARTIFACTS, prepare_out_dir

TINY = ["--set", "model.depth=3", "--set", "model.width=8", "--set", "data.n=240",
        "--set", "data.dim=8", "--set", "data.num_classes=4", "--set", "data.teacher_width=16",
        "--set", "optim.epochs=2", "--set", "optim.batch_size=32", "--weight-decays", "1e-3,1e-2",
        "--seeds", "0", "--quiet"]


def _read(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _typed(row):
    """A long-form row as Python values: run, seed and epoch / layer ints, weight decay and
    value floats (an empty value cell is None)."""
    run, group, model, wd, seed, where, metric, value = row
    return (int(run), group, model, float(wd), int(seed), int(where), metric,
            None if value == "" else float(value))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("files") / "run"
    assert main(TINY + ["--layers", "--set", "record_every=1", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_curves_csv_is_results_json_curves_in_long_form(recorded):
    out, doc = recorded
    header, rows = _read(out / "curves.csv")
    assert tuple(header) == CURVES_COLUMNS
    expected = []
    for i, r in enumerate(doc["runs"]):
        c = r["curves"]
        assert c["epoch"] == [1, 2] and "min_intra" in c
        for j, epoch in enumerate(c["epoch"]):
            expected += [(i, r["group"], r["model"], r["weight_decay"], r["seed"], epoch, k,
                          c[k][j]) for k in c if k != "epoch"]
    assert [_typed(row) for row in rows] == expected
    assert len(rows) == 2 * 2 * (len(doc["runs"][0]["curves"]) - 1)  # runs x epochs x metrics


def test_layers_csv_is_results_json_layers_in_long_form(recorded):
    out, doc = recorded
    header, rows = _read(out / "layers.csv")
    assert tuple(header) == LAYERS_COLUMNS
    expected = []
    for i, r in enumerate(doc["runs"]):
        assert len(r["layers"]) == 2  # depth 3: two hidden blocks
        for layer, metrics in enumerate(r["layers"], start=1):
            # the per-layer arrays (cosine_matrix C x C, spectrum C) are results.json's alone
            expected += [(i, r["group"], r["model"], r["weight_decay"], r["seed"], layer, k, v)
                         for k, v in metrics.items() if k not in ("cosine_matrix", "spectrum")]
    assert [_typed(row) for row in rows] == expected


def test_figures_are_drawn_and_plot_only_redraws_them(recorded, capsys):
    out, _ = recorded
    for name in CUSTOM_FIGURES:  # weight decay, curves, theorem (cross-entropy), layers
        assert (out / name).stat().st_size > 0, name
        os.unlink(out / name)
    assert main(["--plot-only", "--out", str(out)]) == 0
    assert all((out / name).stat().st_size > 0 for name in CUSTOM_FIGURES)
    capsys.readouterr()


def test_overwrite_removes_the_long_form_files_and_figures(tmp_path, capsys):
    # unit: the results writer's files are run artifacts
    for name in ("curves.csv", "layers.csv", "results.csv"):
        (tmp_path / name).write_text("old")
    assert {"curves.csv", "layers.csv"} <= set(RUN_ARTIFACTS)
    assert prepare_out_dir(tmp_path, overwrite=True) == "overwrite"
    assert os.listdir(tmp_path) == []
    # a run with curves and layers, overwritten by one without: nothing of the first is left
    out = tmp_path / "o"
    assert main(TINY + ["--layers", "--set", "record_every=1", "--out", str(out)]) == 0
    assert main(TINY + ["--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "nc_vs_weight_decay.png",
                                       "results.csv", "results.json", "theorem.png"]
