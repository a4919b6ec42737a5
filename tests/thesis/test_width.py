"""Experiment `width` (`nc_jax.thesis`): the per-group summary on synthetic runs whose peaks
are known, the rank correlation against a hand count, and the smoke preset end to end."""
import json
import os

import numpy as np
import pytest

from nc_jax.cli import experiment_main
from nc_jax.thesis import _width as w


def _run(width, seed, raw, centred, erank, bn="affine", depth=None):
    layers = [{"max_inter": a, "eval_centered_max_inter": b, "effective_rank": e,
               "raw_effective_rank": e + 1} for a, b, e in zip(raw, centred, erank)]
    return {"group": f"g{width}-{seed}", "width": width, "depth": depth or len(raw), "bn": bn,
            "seed": seed, "converged": True, "train_accuracy": 1.0, "diverged": False,
            "min_intra": 0.9, "layers": layers}


def test_summary_finds_the_mid_layer_peak_and_its_rank():
    runs = [_run(128, 0, [0.1, 0.6, 0.3, 0.9, 0.0], [0.1, 0.4, 0.2, 0.8, 0.0], [9, 5, 7, 9, 9]),
            _run(128, 1, [0.2, 0.4, 0.5, 0.9, 0.1], [0.0, 0.1, 0.3, 0.7, 0.0], [9, 8, 6, 9, 9]),
            _run(512, 0, [0.1, 0.2, 0.1, 0.9, 0.0], [0.1, 0.1, 0.1, 0.9, 0.0], [9, 8, 8, 9, 9]),
            _run(256, 0, [0.1, 0.1, 0.1], [0.0, 0.0, 0.0], [3, 3, 3], bn="none", depth=3)]
    s = w.summary({"runs": runs})
    g = {r["group"]: r for r in s["groups"]}
    assert set(g) == {"width 128, depth 5", "width 512, depth 5", "no BN, depth 3, width 256"}
    # the last two layers are left out of the peak (0.9 at layer 4 is not the rise)
    r = g["width 128, depth 5"]
    assert r["peak_max_inter"] == pytest.approx([0.55, 0.05]) and r["peak_layer"] == [2, 3]
    assert r["peak_centered_max_inter"] == pytest.approx([0.35, 0.05])
    assert r["effective_rank_at_peak"] == pytest.approx([5.5, 0.5])
    assert r["min_effective_rank"] == pytest.approx([5.5, 0.5])
    assert r["last_max_inter"] == pytest.approx([0.05, 0.05]) and r["seeds"] == 2
    # a network of <= 3 layers: every layer counts
    assert g["no BN, depth 3, width 256"]["peak_max_inter"] == pytest.approx([0.1, 0.0])
    # peaks (0.6, 0.5) at width 128, 0.2 at 512; the no-BN run is left out: ranks by hand
    assert s["runs"] == 3 and s["spearman_peak_vs_width"] == pytest.approx(-np.sqrt(3) / 2)
    # effective ranks at the peaks: 5, 6, 8 against peaks 0.6, 0.5, 0.2: reversed order
    assert s["spearman_peak_vs_effective_rank"] == pytest.approx(-1.0)


def test_smoke_preset_end_to_end(tmp_path):
    out = str(tmp_path)
    assert experiment_main("width", ["--preset", "smoke", "--out", out, "--quiet"]) == 0
    doc = json.load(open(os.path.join(out, "results.json")))
    assert len(doc["runs"]) == 4 and all(len(r["layers"]) == 4 for r in doc["runs"])
    layer = doc["runs"][0]["layers"][0]
    assert len(layer["spectrum"]) == 4 and layer["spectrum"][0] == pytest.approx(1.0)
    assert 1.0 <= layer["effective_rank"] <= 3.0 + 1e-5  # 4 centred class means: rank <= 3
    s = json.load(open(os.path.join(out, "width.json")))
    assert [g["group"] for g in s["groups"]] == ["width 8, depth 5", "width 16, depth 5"]
    assert os.path.getsize(os.path.join(out, "width.png")) > 0
    assert "| width 8, depth 5 | 2 (" in open(os.path.join(out, "width.md")).read()
