"""The tables and targets of `experiments/bench_sweep.py`, from its measured rows (no JAX).

A row (one width x K of the vmapped sweep) has `width`, `k`, `n`, `compile_s`, `times_s`,
`run_steps_per_s`, `gflops`, `frac_of_big_matmul` (None for conv models), the sequential
baseline `seq_run_steps_per_s_extrap` / `vmap_over_seq`, with --plain-seq also
`plain_run_steps_per_s_extrap` / `vmap_over_plain`, FLOPs and peak memory.
"""
from __future__ import annotations

from bench_workers import BATCH, CLASSES, DIM, IMAGE


def fmt_times(ts):
    return "/".join(f"{t:.3g}" for t in ts)


def print_sweep_table(s, rows, mm_name, big_rate):
    model, depth, plain = s["model"], s["depth"], s["plain_seq"]
    what = (f"{depth} layers, d={DIM}" if model == "mlp" else
            f"{model} depth {depth}, width = channels, {'x'.join(map(str, IMAGE))} random images")
    print(f"\nvmapped sweep vs sequential (batch {BATCH}, {what}, C={CLASSES}; "
          f"{s['epochs']} epoch(s) per timed call; seq = K=1 program x K runs, extrap. from "
          f"{s['seq_runs']} runs" + ("; plain = un-vmapped single-run program x K runs" if plain
                                     else "") + ")")
    head = (f"{'width':>5} {'K':>3} {'n':>6} {'compile':>7} {'timed calls s':>17} "
            f"{'run-steps/s':>11} {'GFLOP/s':>8} {'%mm':>5} {'seq rs/s':>9} "
            f"{'vmap/seq':>8} {'MFLOP/rs':>9} {'XLA':>6} {'RSS MB':>7} {'+MB':>5}")
    if plain:
        head += f" {'plain rs/s':>10} {'vmap/plain':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        xla = r["xla_flops_per_run_step"]
        mm = (f"{100 * r['frac_of_big_matmul']:>4.0f}%" if r["frac_of_big_matmul"] is not None
              else f"{'n/a':>5}")
        line = (f"{r['width']:>5} {r['k']:>3} {r['n']:>6} {r['compile_s']:>7.2f} "
                f"{fmt_times(r['times_s']):>17} {r['run_steps_per_s']:>11.1f} {r['gflops']:>8.1f} "
                f"{mm} {r['seq_run_steps_per_s_extrap']:>9.1f} "
                f"{r['vmap_over_seq']:>7.2f}x {r['flops_per_run_step'] / 1e6:>9.1f} "
                f"{(xla / 1e6 if xla else float('nan')):>6.1f} {r['rss_peak_mb']:>7.0f} "
                f"{r['rss_peak_mb'] - r['rss_base_mb']:>5.0f}")
        if plain:
            line += (f" {r['plain_run_steps_per_s_extrap']:>10.1f} "
                     f"{r['vmap_over_plain']:>9.2f}x")
        print(line)
    mm_note = (f"%mm: achieved GFLOP/s over the {mm_name} rate {big_rate:.1f} GFLOP/s; "
               if big_rate else "%mm: no matmul rate measured; ")
    layers = "Dense" if model == "mlp" else "conv + Dense"
    print(f"({mm_note}MFLOP/rs: analytic {layers} FLOPs per run-step, XLA: cost_analysis of one "
          f"train_step; RSS: peak of the configuration's process, +MB over its state after import "
          f"and data)")


def print_device_table(dev):
    """The forced-device scaling table of `measure_devices`' result."""
    print(f"\nforced CPU devices (width {dev['width']}, K {dev['k']}, n {dev['n']}; run axis "
          f"sharded over a Mesh, K padded to a multiple of the device count; rate counts the K "
          f"real runs)")
    print(f"{'devices':>7} {'padded K':>8} {'compile':>7} {'timed calls s':>17} "
          f"{'run-steps/s':>11} {'scaling':>7}")
    for d in dev["rows"]:
        print(f"{d['devices']:>7} {d['padded_runs']:>8} {d['compile_s']:>7.2f} "
              f"{fmt_times(d['times_s']):>17} {d['run_steps_per_s']:>11.1f} "
              f"{d['scaling']:>6.2f}x")


def targets(model, rows, preset_doc):
    """{target: (met, value)}: the MLP's (compile time, speed against sequential runs), the conv models', and the
    compile fraction of the quick preset when it was measured."""
    def find(w, k):
        return next((r for r in rows if r["width"] == w and r["k"] == k), None)

    checks = {}
    if model == "mlp":
        r = find(256, 21)
        if r and r["frac_of_big_matmul"] is not None:
            checks["21 runs at width 256 >= 70% of the fp32 matmul rate"] = (
                r["frac_of_big_matmul"] >= 0.7, f"{100 * r['frac_of_big_matmul']:.0f}%")
        r = find(128, 21)
        if r:
            checks["21 runs vmapped >= 2x sequential at width 128"] = (
                r["vmap_over_seq"] >= 2, f"{r['vmap_over_seq']:.2f}x")
        r21 = [r for r in rows if r["k"] == 21]
        if r21:
            checks["21 runs vmapped never slower than sequential"] = (
                all(r["vmap_over_seq"] >= 1 for r in r21),
                ", ".join(f"w{r['width']}: {r['vmap_over_seq']:.2f}x" for r in r21))
    else:
        def ratio(r):  # against the faster of the two sequential programs
            return min(r["vmap_over_seq"], r.get("vmap_over_plain", float("inf")))

        for k in (1, 7, 21):
            rk = [r for r in rows if r["k"] == k]
            if rk:
                checks[f"{model}: {k} run(s) vmapped at least as fast as sequential"] = (
                    all(ratio(r) >= 1 for r in rk),
                    ", ".join(f"w{r['width']}: {ratio(r):.2f}x" for r in rk))
    if preset_doc and preset_doc["preset"] == "quick":
        p = preset_doc
        comp = next(p[k] for k in ("compile_total_s", "backend_compile_s", "chunk_compile_s")
                    if p.get(k) is not None)
        warm = " (second run, warm persistent cache)" if p.get("persistent_cache") else ""
        checks[f"compile < 10% of the quick preset's wall time{warm}"] = (
            comp / p["wall_time_s"] < 0.1, f"{100 * comp / p['wall_time_s']:.1f}%")
    return checks
