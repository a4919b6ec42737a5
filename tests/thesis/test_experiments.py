"""End-to-end smoke runs of the experiment scripts (tiny presets, same code path as `paper`)."""
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from nc_jax.cli import experiment_main
from nc_jax.runs import get_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXP = os.path.join(ROOT, "experiments")


def _load(name):
    if EXP not in sys.path:
        sys.path.insert(0, EXP)  # theorem_checks imports its sibling conjectures
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXP, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fig31(tmp_path_factory):
    # the script itself, in a fresh process: the thin wrapper and the console entry point
    out = str(tmp_path_factory.mktemp("fig31"))
    p = subprocess.run([sys.executable, os.path.join(EXP, "fig3_1_wd_bn.py"), "--preset", "smoke",
                        "--out", out, "--quiet"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "6 runs in" in p.stdout
    return out, "fig3_1"


@pytest.fixture(scope="module")
def fig33(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fig33"))
    # one run per compiled call: the grouped layout end to end
    assert experiment_main("fig3_3", ["--preset", "smoke", "--out", out, "--quiet",
                                      "--runs-per-device", "1"]) == 0
    return out


def test_fig31_outputs(fig31):
    out, mod = fig31
    doc = json.load(open(os.path.join(out, "results.json")))
    runs = doc["runs"]
    assert len(runs) == 6 and {r["bn"] for r in runs} == {"affine", "plain", "none"}
    for r in runs:
        for k in ("bn", "depth", "weight_decay", "seed", "train_accuracy", "train_loss",
                  "converged", "min_intra", "max_inter", "nc1", "cdnv", "nc3", "nc4", "loss_gap"):
            assert k in r, k
        assert r["converged"] == (not r["diverged"] and r["train_accuracy"] >= 1.0)
        assert -1 <= r["max_inter"] <= r["min_intra"] + 2 and r["min_intra"] <= 1 + 1e-6
        assert r["train_loss"] >= r["min_loss"] - 1e-6
        assert r["curves"]["epoch"] == [2, 4] and len(r["curves"]["min_intra"]) == 2
    assert doc["configs"]["affine"]["model"]["bn"] == "affine"
    rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
    assert len(rows) == 6 and "min_intra" in rows[0] and "layers" not in rows[0]
    for f in ("fig3_1.png", "training_curves.png", "theorem.png"):
        assert os.path.getsize(os.path.join(out, f)) > 1000


def test_fig31_refuses_overwrite_and_replots(fig31, capsys):
    out, name = fig31
    args = ["--preset", "smoke", "--out", out, "--quiet"]
    assert experiment_main(name, args) == 2
    assert "--overwrite" in capsys.readouterr().err
    os.remove(os.path.join(out, "fig3_1.png"))
    assert experiment_main(name, args + ["--plot-only"]) == 0
    assert os.path.exists(os.path.join(out, "fig3_1.png"))
    assert experiment_main(name, ["--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_reanalyse_recomputes_results_from_the_checkpoints(fig33, capsys):
    doc = json.load(open(os.path.join(fig33, "results.json")))
    args = ["--preset", "smoke", "--out", fig33, "--quiet", "--runs-per-device", "1"]
    assert experiment_main("fig3_3", args + ["--reanalyse"]) == 0
    again = json.load(open(os.path.join(fig33, "results.json")))
    assert again["reanalysed"] and again["wall_time_s"] == doc["wall_time_s"]
    # the same saved states give the same analysis, number for number
    assert again["runs"] == doc["runs"]
    # no checkpoint (another output directory): refused, nothing trained
    other = os.path.join(fig33, "empty")
    assert experiment_main("fig3_3", ["--preset", "smoke", "--out", other, "--quiet",
                                      "--reanalyse"]) == 2
    assert "needs the final checkpoint of every group" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(other, "results.json"))


def test_fig33_layers_and_effective_depth(fig33):
    doc = json.load(open(os.path.join(fig33, "results.json")))
    assert doc["configs"]["affine"]["runs_per_device"] == 1
    assert [t["runs_per_device"] for t in doc["timing"].values()] == [1]
    for r in doc["runs"]:
        assert len(r["layers"]) == 4  # depth 5 -> 4 hidden blocks
        for lay in r["layers"]:
            assert {"ncc_accuracy", "min_intra", "max_inter"} <= set(lay)
        errs = [1 - lay["ncc_accuracy"] for lay in r["layers"]]
        hit = [i + 1 for i, e in enumerate(errs) if e <= r["effective_depth_eps"]]
        assert r["effective_depth"] == (hit[0] if hit else len(errs))
    assert os.path.exists(os.path.join(fig33, "fig3_3.png"))


def test_conjectures_and_theorem_scripts(fig31, fig33, tmp_path):
    conj = _load("conjectures")
    assert conj.main(["--wd", fig31[0], "--depth", fig33, "--out", str(tmp_path)]) == 0
    res = json.load(open(tmp_path / "conjectures.json"))
    assert [c["conjecture"] for c in res] == ["3.1.1", "3.2.1", "3.2.2"]
    thm = _load("theorem_checks")
    assert thm.main([fig31[0], fig33, "--out", str(tmp_path)]) == 0
    rep = json.load(open(tmp_path / "theorem.json"))
    assert rep["all"]["loss_ge_min_loss"] == rep["all"]["analysed"] == 8
    # BN's eps in Prop. 2.2.1's right-hand side makes it an identity (float32 rounding left)
    assert rep["all"]["prop221_eps_runs"] == rep["all"]["prop221_runs"] > 0 and rep["all"]["prop221_eps_max_rel_error"] < 1e-5
    assert rep["all"]["thm_runs"] == 8 and rep["all"]["thm_exact_features"] == 0  # head bias


def test_conjectures_per_data_set_and_peak_of_min_intra(tmp_path):
    """Runs of two data sets are tested separately; 3.2.1 reports the last hidden layer's min
    intra against its peak over the layers."""
    conj = _load("conjectures")
    lay = lambda vals: [{"min_intra": v, "max_inter": 0.0} for v in vals]  # noqa: E731
    runs = [{"data": d, "weight_decay": 1e-3, "seed": 0, "converged": True, "layers": lay(v),
             "effective_depth": 2} for d, v in (("teacher", [0.2, 0.9, 0.7]),
                                                ("conic", [0.3, 0.5, 0.8]))]
    for i, r in enumerate(runs):
        os.makedirs(tmp_path / str(i))
        json.dump({"experiment": "fig3_3", "preset": "x", "runs": [r]},
                  open(tmp_path / str(i) / "results.json", "w"))
    by = conj.by_data([str(tmp_path / "0"), str(tmp_path / "1")])
    assert list(by) == ["teacher (x)", "conic (x)"]
    t, c = (conj.conjecture_321(by[k])["per_run"][0] for k in ("teacher (x)", "conic (x)"))
    assert (t["peak_min_intra"], t["peak_layer"], t["last_min_intra"]) == (0.9, 2, 0.7)
    assert t["eps_star"] == pytest.approx(0.2) and c["eps_star"] == 0.0
    assert c["peak_layer"] == 3


def _run(gap_by_wd, group="affine", seed=0):
    return [{"group": group, "seed": seed, "converged": True, "weight_decay": w,
             "min_intra": g, "max_inter": 0.0} for w, g in gap_by_wd]


def test_conjecture_311_eps_star_by_hand():
    conj = _load("conjectures")
    # gap drops by 0.4 from WD 1e-3 to 1e-2: eps* = 0.4 / log(10) (the 1e-4 -> 1e-2 pair: 0)
    c = conj.conjecture_311(_run([(1e-4, 0.5), (1e-3, 0.9), (1e-2, 0.5)]))
    assert c["eps_star"] == pytest.approx(0.4 / math.log(10))
    assert c["supported"] is False
    c = conj.conjecture_311(_run([(1e-4, 0.5), (1e-3, 0.6), (1e-2, 0.5)]))
    assert c["eps_star"] == pytest.approx(0.1 / math.log(10)) and c["supported"] is True
    c = conj.conjecture_311(_run([(1e-4, 0.1), (1e-3, 0.2), (1e-2, 0.9)]))
    assert c["eps_star"] == 0.0 and c["supported"] is True


def test_conjecture_322_counts_violations():
    conj = _load("conjectures")
    runs = [{"seed": 0, "converged": True, "weight_decay": w, "effective_depth": d}
            for w, d in [(1e-4, 5), (1e-3, 6), (1e-2, 2)]]
    c = conj.conjecture_322(runs)
    assert c["violating_pairs"] == 1 and c["pairs"] == 3 and c["supported"] is False


def test_data_complexity_smoke(tmp_path):
    assert experiment_main("data_complexity",
                           ["--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    doc = json.load(open(tmp_path / "results.json"))
    assert [r["group"] for r in doc["runs"]] == ["conic hull", "teacher depth 3", "teacher depth 6"]
    assert [r["data"] for r in doc["runs"]] == ["conic", "teacher", "teacher"]


def test_real_data_on_user_npz(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3, 3)).astype(np.float32)
    y = np.repeat([0, 1, 2], 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "out"
    assert experiment_main("real_data", [
        "--preset", "smoke", "--data", str(tmp_path / "d.npz"), "--set", "data.standardize=true",
        "--set", "data.num_classes=3",
        "--set", "optim.epochs=2", "--set", "optim.batch_size=32", "--set", "weight_decays=1e-3",
        "--out", str(out), "--quiet"]) == 0
    doc = json.load(open(out / "results.json"))
    assert doc["data"]["num_classes"] == 3 and doc["data"]["dim"] == 9 and len(doc["runs"]) == 3
    assert doc["data"]["sample_shape"] == [3, 3]
    assert doc["configs"]["affine"]["data"]["path"] == str(tmp_path / "d.npz")
    assert [r["weight_decay"] for r in doc["runs"]] == [1e-3] * 3  # as given, not 0.0010000000474


def test_experiment_checkpoints_and_resumes(tmp_path, monkeypatch):
    """A preset with checkpoint_every writes per-group checkpoints; re-running after the results
    are gone resumes from them (restoring finished sweeps) and reproduces the same numbers."""
    import dataclasses
    presets = get_experiment("fig3_3").presets
    base = presets["smoke"]()
    monkeypatch.setitem(presets, "ckpt", lambda: {
        g: dataclasses.replace(c, checkpoint_every=2) for g, c in base.items()})
    out = tmp_path / "o"
    args = ["--preset", "ckpt", "--out", str(out), "--quiet"]
    assert experiment_main("fig3_3", args) == 0
    assert (out / "checkpoint_affine.npz").exists()
    first = json.load(open(out / "results.json"))["runs"]
    os.remove(out / "results.json")
    assert experiment_main("fig3_3", args) == 0
    again = json.load(open(out / "results.json"))["runs"]
    assert [r["min_intra"] for r in again] == [r["min_intra"] for r in first]
    assert [r["layers"] for r in again] == [r["layers"] for r in first]


def test_summary_table_means_over_converged_seeds():
    summ = _load("summarize")
    runs = [{"group": "affine", "weight_decay": 1e-3, "converged": c, "min_intra": v}
            for c, v in [(True, 0.5), (True, 0.7), (False, 0.1)]]
    table = summ.summary_table(runs, keys=("min_intra",))
    assert "| affine | 0.001 | 2/3 | 0.600 ± 0.100 |" in table


def test_summary_table_reads_per_layer_measures():
    summ = _load("summarize")
    runs = [{"group": "g", "weight_decay": 1e-3, "converged": True,
             "layers": [{"m": 9.0}, {"m": v}]} for v in (0.25, 0.75)]
    runs.append({"group": "g", "weight_decay": 1e-3, "converged": True})  # no layers: skipped
    table = summ.summary_table(runs, keys=("layers[-1].m", "layers[0].m", "layers[2].m"))
    assert "| g | 0.001 | 3/3 | 0.500 ± 0.250 | 9.000 ± 0.000 | — |" in table
    # extremes over the layers: per run max(9, v) and min(9, v), then mean ± std over runs
    table = summ.summary_table(runs, keys=("max(layers.m)", "min(layers.m)", "max(layers.x)"))
    assert "| g | 0.001 | 3/3 | 9.000 ± 0.000 | 0.500 ± 0.250 | — |" in table


def test_summary_table_relative_gap_and_alpha_beta_by_hand():
    summ = _load("summarize")
    runs = [{"group": "peeled", "weight_decay": 1e-2, "converged": True, "loss_gap": g,
             "min_loss": 0.1, "alpha_aug": 3.0, "beta_aug": b} for g, b in ((0.2, 2.0), (0.4, 4.0))]
    runs.append({"group": "peeled", "weight_decay": 1e-2, "converged": True})  # no gap: skipped
    table = summ.summary_table(runs, keys=("eps_over_m", "alpha_beta"))
    # eps / m = 2 and 4, alpha beta = 6 and 12: mean ± std over the two runs that have them
    assert "| peeled | 0.01 | 3/3 | 3.000 ± 1.000 | 9.000 ± 3.000 |" in table
    # log10 of a derived key: log10(2) and log10(4), mean 0.452 (= log10(8) / 2)
    table = summ.summary_table(runs, keys=("log10(eps_over_m)", "log10(min_intra)"))
    assert "| peeled | 0.01 | 3/3 | 0.452 ± 0.151 | — |" in table


def test_summary_table_all_runs_keeps_unconverged_but_not_failed():
    summ = _load("summarize")
    runs = [{"group": "affine", "weight_decay": 1e-3, "converged": c, "min_intra": v,
             "train_accuracy": a, "diverged": False}
            for c, v, a in [(True, 0.5, 1.0), (False, 0.8, 0.9994), (False, 0.0, 0.1)]]
    table = summ.summary_table(runs, keys=("min_intra", "train_accuracy"), all_runs=True)
    # the chance-level run (0.1 <= 2/C) is left out; the 99.94% run is kept
    assert "| affine | 0.001 | 1/3 | 0.650 ± 0.150 | 0.9997 ± 0.0003 |" in table


def test_conjectures_worst_eps_star_per_wd_and_data_set():
    """The per-WD table: the largest eps* over seeds at each WD, per data set and network, with
    the number of converged seeds (WDs written as float32-rounded numbers still share a column)."""
    import numpy as np
    conj = _load("conjectures")
    runs = {"teacher": _run([(1e-4, 0.5), (1e-3, 0.9), (1e-2, 0.5)], seed=0)
            + _run([(1e-4, 0.5), (1e-3, 0.6)], seed=1),
            "conic": _run([(1e-4, 0.5), (1e-3, 0.4)], group="plain")}
    lay = lambda vals: [{"min_intra": v, "max_inter": 0.0} for v in vals]  # noqa: E731
    depth = [{"weight_decay": float(np.float32(1e-3)), "seed": s, "converged": True,
              "layers": lay(v)} for s, v in ((0, [0.2, 0.9, 0.7]), (1, [0.2, 0.5, 0.4]))]
    results = ([dict(conj.conjecture_311(r), data=d) for d, r in runs.items()]
               + [dict(conj.conjecture_321(depth), data="conic")])
    rows = {(c, d, n): v for c, d, n, v in conj.worst_by_wd(results)}
    assert rows[("3.1.1", "teacher", "affine")] == {1e-4: (0.0, 2), 1e-3: (0.0, 2),
                                                    1e-2: (pytest.approx(0.4 / math.log(10)), 1)}
    assert rows[("3.1.1", "conic", "plain")] == {1e-4: (0.0, 1),
                                                 1e-3: (pytest.approx(0.1 / math.log(10)), 1)}
    # seed 0 drops 0.2 from layer 2 to 3, seed 1 0.1: the worst is 0.2, at the WD 1e-3 column
    assert rows[("3.2.1", "conic", "affine, depth 4")] == {1e-3: (pytest.approx(0.2), 2)}
    # the run's own depth field names the network, not the count of its recorded layers
    named = conj.conjecture_321([dict(depth[0], depth=7)])["per_run"][0]["network"]
    assert named == "affine, depth 7"
    table = "\n".join(conj.render_by_wd(results))
    assert "| 3.1.1 | teacher | affine | 0.000 (2) | 0.000 (2) | 0.174 (1) |" in table
    assert "| 3.1.1 | conic | plain | 0.000 (1) | 0.043 (1) | — |" in table


def test_merge_joins_groups_of_any_experiment(fig31, tmp_path):
    """`<script>.py merge`: per-group parts of fig3_1 joined into one document and figure."""
    from nc_jax.config import SweepConfig
    from nc_jax.runs import load_results, write_results
    doc = load_results(fig31[0])
    parts = []
    for g in ("affine", "plain"):
        p = str(tmp_path / g)
        write_results(p, "fig3_1", f"smoke-{g}", {g: SweepConfig.from_dict(doc["configs"][g])},
                      [r for r in doc["runs"] if r["group"] == g],
                      {"data": doc.get("data"), "wall_time_s": 1.0})
        parts.append(p)
    out = str(tmp_path / "merged")
    assert experiment_main("fig3_1", ["merge", "--preset", "smoke-5", "--out", out, *parts]) == 0
    m = load_results(out)
    assert m["experiment"] == "fig3_1" and m["preset"] == "smoke-5" and m["wall_time_s"] == 2.0
    assert [r["group"] for r in m["runs"]] == [r["group"] for r in doc["runs"]
                                              if r["group"] != "none"]
    # runs with a cosine_matrix also get the class-pair figure
    assert all(os.path.exists(os.path.join(out, f)) for f in ("fig3_1.png", "pairs.png"))
    # a part of another experiment is refused by name
    assert experiment_main("fig3_3", ["merge", "--out", str(tmp_path / "x"), *parts]) == 2


def test_conjecture_311_sensitivity_by_hand():
    conj = _load("conjectures")
    # seed 0 drops 0.2 from 1e-3 to 1e-2 but misses 1% of the samples there; seed 1 rises
    runs = _run([(1e-4, 0.5), (1e-3, 0.7)], seed=0) + _run([(1e-4, 0.5), (1e-3, 0.8)], seed=1)
    runs += [dict(r, converged=False, train_accuracy=0.995) for r in
             _run([(1e-2, 0.5)], seed=0)] + _run([(1e-2, 0.9)], seed=1)
    for r in runs:
        r.setdefault("train_accuracy", 1.0)
    rows = {r["min_accuracy"]: r for r in conj.sensitivity(runs, replicates=200)}
    assert rows[1.0]["eps_star"] == 0.0 and rows[0.999]["eps_star"] == 0.0
    assert rows[0.99]["eps_star"] == pytest.approx(0.2 / math.log(10))
    assert rows[0.99]["holds"] == {0.01: False, 0.05: False, 0.1: True}  # 0.087
    # the mean curve at >= 99%: 0.5, 0.75, 0.7 -> drop 0.05 over one decade
    assert rows[0.99]["mean_curve_eps_star"] == pytest.approx(0.05 / math.log(10))
    lo, hi = rows[0.99]["bootstrap_95"]
    assert 0.0 <= lo <= rows[0.99]["mean_curve_eps_star"] <= hi
    assert conj.sensitivity(runs, replicates=200) == conj.sensitivity(runs, replicates=200)
