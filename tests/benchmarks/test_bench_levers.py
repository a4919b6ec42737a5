"""experiments/bench_levers.py: its summary (rates, ratios, bit-identity) and a tiny run."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "experiments"))
pytest.importorskip("torch")  # bench_levers shares bench_vs_torch's data and grid helpers
import bench_levers as bl  # noqa: E402


def _raw(short, long, sha, loss):
    return {"times_s": {"2": short, "6": long}, "sha256": sha, "final_loss": loss}


def test_summary_rates_ratios_and_bit_identity_by_hand():
    s = {"k": 7, "n": 1000, "es": 2, "el": 6}
    steps = 7 * 8  # 7 runs x ceil(1000 / 128) steps per epoch
    raw = {"default": [_raw(3.0, 7.0, "a", [0.5, 0.25]), _raw(3.0, 8.0, "a", [0.5, 0.25])],
           "fast": [_raw(2.0, 4.0, "a", [0.5, 0.25])],
           "other": [_raw(3.0, 7.0, "b", [0.55, 0.25])],
           "broken": [{"error": "Unknown flag in XLA_FLAGS: --xla_nope\n"}]}
    rows = {r["lever"]: r for r in bl.summarize(s, list(raw), raw)}
    assert rows["default"]["steady"] == pytest.approx(steps * 4 / 4.0)  # best of the two rounds
    assert rows["default"]["whole"] == pytest.approx(steps * 6 / 7.0)
    assert rows["fast"]["speedup"] == pytest.approx(2.0)
    assert rows["fast"]["bit_identical"] and not rows["other"]["bit_identical"]
    assert rows["other"]["max_rel_loss_diff"] == pytest.approx(0.1)
    assert rows["broken"]["error"].startswith("Unknown flag")


@pytest.mark.slow
def test_quick_run_writes_rows(tmp_path):
    out = tmp_path / "levers.json"
    assert bl.main(["--quick", "--levers", "default,vmap_runs=1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = {r["lever"]: r for r in doc["rows"]}
    assert set(rows) == {"default", "vmap_runs=1"}
    assert rows["default"]["bit_identical"] and rows["default"]["speedup"] == pytest.approx(1.0)
    # the same computation batched differently: equal to float32 rounding over 3 tiny epochs
    assert rows["vmap_runs=1"]["max_rel_loss_diff"] < 1e-3
    assert len(doc["raw"]["vmap_runs=1"]) == 1 and doc["settings"]["k"] == 2


def test_unknown_lever_is_named():
    with pytest.raises(SystemExit, match="unknown lever"):
        bl.main(["--quick", "--levers", "default,warp_drive"])
