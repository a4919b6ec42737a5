"""Experiment `product_law` (`nc_jax.thesis`): the fit that decides the verdict, checked on
synthetic runs with a known law, and the smoke preset end to end."""
import json
import math
import os

import numpy as np
import pytest

from nc_jax.cli import experiment_main
from nc_jax.thesis import _product_law as pl

DECAYS = (1e-4, 1e-3, 1e-2)


def _runs(law, seeds=(0, 1, 2), noise=0.01):
    """Runs on the 3 x 3 grid whose min_intra is law(lambda_H, lambda_W) + seeded noise."""
    rng = np.random.default_rng(0)
    return [{"weight_decay_last_bn": lh, "weight_decay_head": lw, "seed": s, "converged": True,
             "train_accuracy": 1.0, "diverged": False,
             "min_intra": law(lh, lw) + noise * rng.standard_normal()}
            for lh in DECAYS for lw in DECAYS for s in seeds]


def test_fit_recovers_a_function_of_the_product():
    f = pl.product_law_fit(_runs(lambda lh, lw: 0.1 * math.log10(lh * lw)), "min_intra", 500)
    assert f["a"] == pytest.approx(0.1, abs=0.01) and f["b"] == pytest.approx(0.1, abs=0.01)
    lo, hi = f["a_minus_b_95"]
    assert lo <= 0 <= hi and f["product_law_holds"] is True
    assert f["r2_product_only"] == pytest.approx(f["r2_both"], abs=0.01) and f["runs"] == 27


def test_fit_rejects_a_function_of_one_decay():
    f = pl.product_law_fit(_runs(lambda lh, lw: 0.1 * math.log10(lh)), "min_intra", 500)
    assert f["a"] == pytest.approx(0.1, abs=0.01) and abs(f["b"]) < 0.01
    assert f["product_law_holds"] is False and f["a_minus_b_95"][0] > 0
    # a measure that depends on one decay is poorly explained by the product
    assert f["r2_product_only"] < 0.6 < f["r2_both"]


def test_one_seed_per_cell_gives_no_interval():
    f = pl.product_law_fit(_runs(lambda lh, lw: math.log10(lh), seeds=(0,)), "min_intra", 50)
    assert f["a_minus_b_95"] is None and f["product_law_holds"] is None and f["a"] is not None


def test_balance_and_alpha_beta_by_hand():
    run = {"weight_decay_last_bn": 1e-3, "weight_decay_head": 1e-2, "gamma_norm": 3.0,
           "beta_norm": 4.0, "alpha": 2.0, "beta": 0.5, "cosine_matrix": np.eye(10).tolist()}
    # lambda_H ||(gamma, beta)||^2 / (lambda_W ||W||_F^2), ||W||_F^2 = C beta^2
    assert pl.value(run, "log10_balance") == pytest.approx(
        math.log10(1e-3 * 25.0 / (1e-2 * 10 * 0.25)))
    assert pl.value(run, "alpha_beta") == 1.0
    assert pl.value(run, "pairs_within_0.05") == 0.0  # orthogonal classes: cos 0, not -1/9


def test_ufm_prediction_depends_on_the_product_only():
    a, b = pl.ufm_prediction(1e-4, 1e-2, 10), pl.ufm_prediction(1e-2, 1e-4, 10)
    assert a["alpha_beta"] == pytest.approx(b["alpha_beta"], rel=1e-12)
    # the balance lambda_H alpha^2 = C lambda_W beta^2 of the closed form
    for lh, lw, o in ((1e-4, 1e-2, a), (1e-2, 1e-4, b)):
        assert lh * o["alpha"] ** 2 == pytest.approx(10 * lw * o["beta"] ** 2, rel=1e-9)


def test_smoke_preset_end_to_end(tmp_path):
    out = str(tmp_path)
    assert experiment_main("product_law", ["--preset", "smoke", "--out", out, "--quiet"]) == 0
    doc = json.load(open(os.path.join(out, "results.json")))
    cells = {(r["weight_decay_last_bn"], r["weight_decay_head"]) for r in doc["runs"]}
    assert cells == {(a, b) for a in (1e-4, 1e-2) for b in (1e-4, 1e-2)}
    assert {r["weight_decay"] for r in doc["runs"]} == {pl.REST_DECAY} and len(doc["runs"]) == 8
    v = json.load(open(os.path.join(out, "product_law.json")))
    assert [f["key"] for f in v["fits"]] == [*pl.MEASURES, "log10_balance"]
    assert len(v["cells"]) == 4 and all(c["seeds"] == 2 for c in v["cells"])
    assert os.path.getsize(os.path.join(out, "product_law.png")) > 0
    assert "| min_intra |" in open(os.path.join(out, "product_law.md")).read()


def test_iso_product_spread_by_hand():
    cells = [{"product": 1e-6, "min_intra": v, "min_intra_std": sd}
             for v, sd in ((0.7, 0.01), (0.9, 0.03), (0.8, 0.02))]
    cells.append({"product": 1e-4, "min_intra": 0.95, "min_intra_std": 0.02})  # a line of one cell
    s = pl.iso_product_spread(cells, "min_intra")
    assert s["iso_range_max"] == pytest.approx(0.2) and s["iso_range_at_log10_product"] == -6.0
    assert s["seed_std_median"] == pytest.approx(0.02)
