"""experiments/bench_report.py: bench_sweep's targets and tables, on rows written by hand."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "experiments"))
import bench_report as br  # noqa: E402


def _row(width, k, rate, seq, plain=None, frac=None):
    r = {"width": width, "k": k, "n": 1000, "compile_s": 1.0, "times_s": [1.0, 1.25],
         "run_steps_per_s": rate, "gflops": 10.0, "frac_of_big_matmul": frac,
         "seq_run_steps_per_s_extrap": seq, "vmap_over_seq": rate / seq,
         "flops_per_run_step": 2e6, "xla_flops_per_run_step": None, "rss_peak_mb": 600.0,
         "rss_base_mb": 400.0}
    if plain is not None:
        r.update(plain_run_steps_per_s_extrap=plain, vmap_over_plain=rate / plain)
    return r


def test_conv_targets_use_the_faster_sequential_program():
    # K = 7 beats the K = 1 program run 7 times (20 / 16) but not the plain one (20 / 25): the
    # target compares with the faster of the two, so it is missed at K = 7 only
    rows = [_row(16, 1, 17.0, 16.0, plain=16.5), _row(16, 7, 20.0, 16.0, plain=25.0),
            _row(16, 21, 18.0, 16.0, plain=17.0)]
    checks = br.targets("cnn", rows, None)
    assert checks["cnn: 1 run(s) vmapped at least as fast as sequential"] == (True, "w16: 1.03x")
    assert checks["cnn: 7 run(s) vmapped at least as fast as sequential"] == (False, "w16: 0.80x")
    assert checks["cnn: 21 run(s) vmapped at least as fast as sequential"][0]
    assert len(checks) == 3  # no compile target without a preset


def test_mlp_targets_and_the_compile_fraction():
    rows = [_row(128, 21, 1000.0, 400.0), _row(256, 21, 300.0, 320.0, frac=0.35)]
    preset = {"preset": "quick", "wall_time_s": 40.0, "compile_total_s": 3.0,
              "persistent_cache": True}
    checks = br.targets("mlp", rows, preset)
    assert checks["21 runs at width 256 >= 70% of the fp32 matmul rate"] == (False, "35%")
    assert checks["21 runs vmapped >= 2x sequential at width 128"] == (True, "2.50x")
    assert checks["21 runs vmapped never slower than sequential"] == (
        False, "w128: 2.50x, w256: 0.94x")
    assert checks["compile < 10% of the quick preset's wall time (second run, warm persistent "
                  "cache)"] == (True, "7.5%")


def test_tables_print_every_row(capsys):
    s = {"model": "cnn", "depth": 4, "plain_seq": True, "epochs": 1, "seq_runs": 3}
    br.print_sweep_table(s, [_row(16, 7, 20.0, 16.0, plain=25.0)], "dot 2048^3", None)
    br.print_device_table({"width": 16, "k": 7, "n": 1000, "rows": [
        {"devices": 1, "padded_runs": 7, "times_s": [2.0], "compile_s": 1.0,
         "run_steps_per_s": 20.0, "scaling": 1.0},
        {"devices": 2, "padded_runs": 8, "times_s": [1.5], "compile_s": 1.0,
         "run_steps_per_s": 30.0, "scaling": 1.5}]})
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.split()[:2] == ["16", "7"])
    assert "20.0" in line and "1.25x" in line and "0.80x" in line and "n/a" in line
    assert "1 / 1.25" not in out and "1/1.25" in out  # every repeat shown
    assert any(x.split()[:3] == ["2", "8", "1.00"] and x.endswith("1.50x")
               for x in out.splitlines())
