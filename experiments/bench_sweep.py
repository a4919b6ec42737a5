"""Benchmark of the vmapped sweep against a sequential baseline and the machine's FLOP rate.

For the Figure 3.1 model (6-layer MLP, affine BN, batch 128, d = 32, C = 10, teacher data,
n = 10000) at every width in --widths and run count K in --runs it measures, each in its own
subprocess (so the peak RSS is that configuration's; the workers are in `bench_workers.py` and
run as `python experiments/bench_sweep.py --worker KIND SPEC_JSON`):

  * the vmapped sweep: the real chunk function of `nc_jax.training` (`init_states` +
    `make_chunk_fn`, jit(vmap(scan over epochs of scan over minibatches)), AOT-compiled with
    `.lower().compile()` exactly as `train_runs` does). Compile time is reported separately; one
    warm-up call, then --repeats timed calls of --epochs epochs each (steady state). The chunk has
    no record function (pure training), so the FLOP count below is the whole work;
  * the sequential baseline: the K = 1 program of the same code called once per run, for
    --seq-runs runs (different weight decays), timed, and extrapolated linearly to K runs
    (t_seq(K) = K * mean time per run). The table marks these numbers "extrap.". With
    --plain-seq (default for conv models) also the un-vmapped single-run program (the same scan
    over epochs, jitted without a run axis), column "plain rs/s";
  * FLOPs of one run-step (forward + backward of the Dense layers, analytic:
    2 * B * sum(in * out) * 3; for conv models the MACs of the convs and the head) cross-checked
    with XLA's `cost_analysis()` of one jitted `train_step` (which also counts BN, softmax and
    the optimizer update);
  * achieved GFLOP/s (6 * samples * sum(in * out) per epoch, per run) next to the fp32 matmul rate
    measured in this script: a large jnp.dot (2048^3), the batch-shaped forward matmul
    128x256 @ 256x256, the weight-gradient shape 256x128 @ 128x256, and the vmapped
    batch-shaped one K x (128x256 @ 256x256) (each in a jitted `lax.scan` of dependent matmuls so
    dispatch overhead does not count); MLP only (skipped for conv models, "%mm" n/a);
  * peak memory: ru_maxrss of the configuration's subprocess, and its growth over the state after
    importing JAX and loading the data (the "baseline");
  * with --devices 2,4: the same sweep (--device-width, --device-runs) with N forced CPU devices
    (`XLA_FLAGS=--xla_force_host_platform_device_count=N` in a subprocess), the run axis sharded
    over a Mesh as `train_runs` does (K padded to a multiple of N), and its scaling over N = 1;
  * compile time as a fraction of the wall time of `experiments/fig3_1_wd_bn.py --preset quick`
    (trained in a subprocess through `nc_jax.runs.run_experiment`, without writing files or
    figures), counting both the sweep chunk compiles (`SweepResult.compile_time_s`) and every XLA
    backend compile (`jax.monitoring`); or read from an existing results.json with
    --preset-results.

--model cnn / resnet (`nc_jax.models`) measures the same on MNIST-shaped random images
(N, 28, 28, 1) with balanced random labels, C = 10, n = 5000 (the size of MNIST-5k); --widths
are then channels (default 16,32), --depth defaults to 4 (cnn) / 8 (resnet), K to 1,7,21, and
the compile fraction (an MLP preset) is skipped unless --preset is given. The target is then the vmapped sweep at least as fast as the faster sequential program at K = 1, 7, 21.

To fit its time budget a measurement is capped at --max-gflop GFLOP: a larger configuration trains
on the first n' samples of the data (n' keeps n's remainder modulo 128, 16 for n = 10000, so
the epoch has the same structure: full batches + one partial batch); the "n" column shows it.

The machine is shared and noisy: every timing is printed for each repeat; rates use the best.

Usage:
    python experiments/bench_sweep.py                      # full benchmark, ~10 min idle 2-core CPU
    python experiments/bench_sweep.py --quick              # ~1 min: tiny sizes, checks the script
    python experiments/bench_sweep.py --widths 256 --runs 1,21 --devices 2,4 --repeats 3
    python experiments/bench_sweep.py --model cnn --widths 16,32 --runs 1,7,21 --devices ''
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_workers import (BATCH, CLASSES, DEFAULT_DEPTH, DIM, IMAGE, MODELS, N_FULL,  # noqa: E402
                           ROOT, WORKERS, dense_macs, flops_per_run_step, make_data, model_macs,
                           spawn, subset_n, worker_main)
from bench_report import fmt_times, print_device_table, print_sweep_table, targets  # noqa: E402
from nc_jax.config import ConfigError, ModelConfig  # noqa: E402


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (width 32 (conv: 8), K in {1, 3}, 1 epoch on n = 1000, "
                         "smoke preset): ~1 min")
    ap.add_argument("--model", choices=MODELS, default="mlp",
                    help="mlp (default: Figure 3.1's), or cnn / resnet on 28x28x1 random images")
    ap.add_argument("--depth", type=int, default=None,
                    help="model depth (default: mlp 6, cnn 4, resnet 8)")
    ap.add_argument("--widths", help="comma-separated widths, channels for conv models "
                                     "(default 128,256,512; conv: 16,32)")
    ap.add_argument("--runs", help="comma-separated run counts K (default 1,7,21,63; conv: 1,7,21)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed call (default 1)")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per configuration (>= 2)")
    ap.add_argument("--devices", default=None,
                    help="forced CPU device counts to compare with 1 (default 2,4; '' = skip)")
    ap.add_argument("--device-width", type=int, default=None, help="width of the device run")
    ap.add_argument("--device-runs", type=int, default=None, help="K of the device run")
    ap.add_argument("--seq-runs", type=int, default=3,
                    help="runs timed for the sequential baseline (extrapolated to K)")
    ap.add_argument("--plain-seq", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the un-vmapped single-run program as a sequential baseline "
                         "(default: on for cnn / resnet, off for mlp)")
    ap.add_argument("--max-gflop", type=float, default=None,
                    help="cap on the GFLOP of one timed call (default 400; quick: none)")
    ap.add_argument("--vmap-runs", type=int, default=0, metavar="B",
                    help="the sweep's SweepConfig.vmap_runs: 0 = all K runs vmapped (default), "
                         "B > 0 = lax.map over the runs, B at a time vmapped")
    ap.add_argument("--n", type=int, default=None,
                    help="data set size (default 10000; conv: 5000)")
    ap.add_argument("--preset", default=None,
                    help="fig3_1 preset for the compile fraction (default quick; --quick: smoke; "
                         "conv models: skipped; '' = skip)")
    ap.add_argument("--compile-cache", action="store_true",
                    help="also run the preset twice with a fresh persistent compilation cache "
                         "(fill, then warm: a user's second run); the target uses the warm run")
    ap.add_argument("--preset-results", default=None,
                    help="read the preset's wall/compile times from this results.json instead")
    ap.add_argument("--out", default=os.path.join(ROOT, "experiments", "results",
                                                  "bench_sweep.json"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def measure_widths(s, data_path, big_rate, t_bench):
    """The vmapped sweep at every (width, K) and the sequential baseline per width: table rows."""
    rows = []
    model, depth, n, epochs, repeats = s["model"], s["depth"], s["n"], s["epochs"], s["repeats"]
    base = {"data": data_path, "model": model, "depth": depth, "epochs": epochs,
            "repeats": repeats}
    for w in s["widths"]:
        macs = model_macs(model, w, depth)
        seq = spawn("seq", {**base, "n": n, "width": w, "m": s["seq_runs"],
                            "plain": s["plain_seq"]})
        seq_per_run = [sum(r) / len(r) for r in seq["per_run_times_s"]]  # mean s/run, per repeat
        seq_best = min(seq_per_run)
        seq_rate = seq["steps_per_run"] / seq_best  # run-steps/s, independent of K
        plain_rate = None
        if seq.get("plain_per_run_times_s"):
            plain_rate = seq["steps_per_run"] / min(sum(r) / len(r)
                                                    for r in seq["plain_per_run_times_s"])
        for k in s["runs"]:
            nk = subset_n(n, macs, k, epochs, s["max_gflop"])
            r = spawn("sweep", {**base, "n": nk, "width": w, "k": k,
                                "vmap_runs": s["vmap_runs"]})
            best = min(r["times_s"])
            run_steps = k * r["steps_per_run"]
            flops = 6.0 * nk * macs * k * epochs
            gflops = flops / best / 1e9
            state_mb = (k * 2 * (dense_macs(w, depth=depth) + (depth - 1) * (w + 4 * w) + CLASSES)
                        * 4 / 2 ** 20 if model == "mlp" else k * r["state_bytes_per_run"] / 2 ** 20)
            row = {"width": w, "k": k, "n": nk, "steps_per_run": r["steps_per_run"],
                   "compile_s": r["compile_s"], "warmup_s": r["warmup_s"],
                   "times_s": r["times_s"], "run_steps_per_s": run_steps / best,
                   "gflops": gflops, "frac_of_big_matmul": gflops / big_rate if big_rate else None,
                   "seq_run_steps_per_s_extrap": seq_rate,
                   "seq_time_for_k_runs_s_extrap": k * seq_best * nk / n,
                   "vmap_over_seq": (run_steps / best) / seq_rate,
                   "flops_per_run_step": flops_per_run_step(macs),
                   "xla_flops_per_run_step": seq["xla_flops_per_step"],
                   "rss_peak_mb": r["rss_peak_mb"], "rss_base_mb": r["rss_base_mb"],
                   "state_mb": state_mb,
                   "seq": {"per_run_times_s": seq["per_run_times_s"], "compile_s": seq["compile_s"],
                           "runs_timed": s["seq_runs"], "rss_peak_mb": seq["rss_peak_mb"]}}
            if plain_rate is not None:
                row["plain_run_steps_per_s_extrap"] = plain_rate
                row["vmap_over_plain"] = (run_steps / best) / plain_rate
                row["seq"].update(plain_per_run_times_s=seq["plain_per_run_times_s"],
                                  plain_compile_s=seq["plain_compile_s"])
            rows.append(row)
            print(f"  measured width {w} K {k} ({time.perf_counter() - t_bench:.0f} s)",
                  file=sys.stderr, flush=True)
    return rows


def measure_devices(s, rows, data_path, dev_counts):
    """The (device width, device K) sweep on 1 and on N forced CPU devices."""
    w, k, n, epochs = s["device_width"], s["device_runs"], s["n"], s["epochs"]
    spec = {"data": data_path, "model": s["model"], "depth": s["depth"], "width": w, "k": k,
            "epochs": epochs, "repeats": s["repeats"], "vmap_runs": s["vmap_runs"],
            "n": subset_n(n, model_macs(s["model"], w, s["depth"]), k, epochs, s["max_gflop"])}
    base = next((r for r in rows if r["width"] == w and r["k"] == k), None)
    if base is None:
        b = spawn("sweep", spec)
        base = {"run_steps_per_s": k * b["steps_per_run"] / min(b["times_s"]),
                "times_s": b["times_s"], "compile_s": b["compile_s"]}
    drows = [{"devices": 1, "padded_runs": k, "times_s": base["times_s"],
              "compile_s": base["compile_s"], "run_steps_per_s": base["run_steps_per_s"],
              "scaling": 1.0}]
    for nd in dev_counts:
        r = spawn("sweep", spec, devices=nd)
        rate = k * r["steps_per_run"] / min(r["times_s"])  # useful runs only
        drows.append({"devices": r["devices"], "padded_runs": r["padded_runs"],
                      "times_s": r["times_s"], "compile_s": r["compile_s"],
                      "run_steps_per_s": rate, "scaling": rate / base["run_steps_per_s"],
                      "rss_peak_mb": r["rss_peak_mb"]})
    out = {"width": w, "k": k, "n": spec["n"], "rows": drows}
    print_device_table(out)
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, WORKERS)

    q, model = args.quick, args.model
    conv = model != "mlp"
    widths = [int(w) for w in (args.widths or ("8" if q and conv else "32" if q else
                                               "16,32" if conv else "128,256,512")).split(",")]
    ks = [int(k) for k in (args.runs or ("1,3" if q else "1,7,21" if conv else "1,7,21,63")
                           ).split(",")]
    depth = args.depth or DEFAULT_DEPTH[model]
    n = args.n or (1000 if q else 5000 if conv else N_FULL)
    dev_counts = [int(d) for d in (args.devices if args.devices is not None else "2,4").split(",")
                  if d.strip()]
    preset = args.preset if args.preset is not None else ("" if conv else "smoke" if q else "quick")
    s = {"model": model, "depth": depth, "widths": widths, "runs": ks, "n": n,
         "epochs": args.epochs, "repeats": max(2, args.repeats), "seq_runs": args.seq_runs,
         "max_gflop": args.max_gflop if args.max_gflop is not None else (1e9 if q else 400.0),
         "plain_seq": conv if args.plain_seq is None else args.plain_seq,
         "vmap_runs": args.vmap_runs,
         "device_width": args.device_width or (widths[0] if q else
                                               (256 if 256 in widths else widths[0])),
         "device_runs": args.device_runs or (max(ks) if q else (21 if 21 in ks else max(ks)))}
    for w in widths:  # fail here, not in a worker, on a bad depth or width
        try:
            ModelConfig(name=model, depth=depth, width=w)
        except ConfigError as e:
            sys.exit(f"bench_sweep: {e}")
    t_bench = time.perf_counter()

    tmp = tempfile.mkdtemp(prefix="bench_sweep_")
    data_path = os.path.join(tmp, "data.npz")
    make_data(data_path, n, model)

    doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpu_count": os.cpu_count(), "python": platform.python_version()},
           "settings": {"widths": widths, "runs": ks, "n": n, "epochs": s["epochs"],
                        "repeats": s["repeats"], "max_gflop": s["max_gflop"], "batch": BATCH,
                        "depth": depth, "dim": None if conv else DIM, "classes": CLASSES,
                        "quick": q, "seq_runs": args.seq_runs, "model": model,
                        "sample_shape": list(IMAGE) if conv else [DIM],
                        "plain_seq": s["plain_seq"], "vmap_runs": s["vmap_runs"]},
           "load_average_at_start": os.getloadavg()}
    try:
        import jax
        doc["machine"]["jax"] = jax.__version__
    except Exception:
        pass

    print(f"# bench_sweep {doc['date']}  {doc['machine']['platform']}  "
          f"cpus={os.cpu_count()}  load={os.getloadavg()[0]:.2f}"
          + (f"  model={model} depth={depth}" if conv else ""), flush=True)

    # 1. matmul rates (the MLP's reference; a conv model's work is not these matmuls)
    mm_name, big_rate, doc["matmul"] = None, None, None
    if not conv:
        mm = spawn("matmul", {"repeats": s["repeats"], "big": 512 if q else 2048,
                              "ks": ks if q else sorted(set(ks) | {21}), "chain": 20 if q else 200})
        doc["matmul"] = mm
        print("\nfp32 matmul rate (GFLOP/s, best of repeats; all timings in s)")
        for name, r in mm.items():
            print(f"  {name:<26} {r['gflops']:8.1f}   [{fmt_times(r['times_s'])}]")
        mm_name = next(iter(mm))
        big_rate = next(v["gflops"] for kname, v in mm.items() if kname.startswith("dot"))
    else:
        print(f"\n(fp32 matmul rates skipped for --model {model}; %mm is n/a)")

    # 2. sweep + sequential per width
    rows = measure_widths(s, data_path, big_rate, t_bench)
    doc["sweep"] = rows
    print_sweep_table(s, rows, mm_name, big_rate)

    # 3. forced devices
    if dev_counts:
        doc["devices"] = measure_devices(s, rows, data_path, dev_counts)

    # 4. compile fraction of the fig3_1 preset
    if args.preset_results:
        with open(args.preset_results) as f:
            res = json.load(f)
        chunk = sum(v["compile_time_s"] for v in res["timing"].values())
        doc["preset"] = {"preset": res.get("preset"), "wall_time_s": res["wall_time_s"],
                         "chunk_compile_s": chunk, "backend_compile_s": None,
                         "source": args.preset_results}
    elif preset:
        doc["preset"] = spawn("preset", {"preset": preset})
        if args.compile_cache:
            # a fresh persistent cache: the first process fills it, a second one (a user's
            # rerun, as the CLI and scripts run by default) reads it
            cache = os.path.join(tmp, "xla_cache")
            doc["preset_cache_fill"] = spawn("preset", {"preset": preset, "cache_dir": cache})
            doc["preset_cache_warm"] = spawn("preset", {"preset": preset, "cache_dir": cache})
    for key, what in (("preset", "no persistent cache"),
                      ("preset_cache_fill", "empty persistent cache"),
                      ("preset_cache_warm", "warm persistent cache: the second run")):
        p = doc.get(key)
        if not p:
            continue
        print(f"\ncompile time vs fig3_1 --preset {p['preset']} wall time "
              f"({p['wall_time_s']:.1f} s, training + analysis, no files; {what}):")
        print(f"  sweep chunk compiles  {p['chunk_compile_s']:7.2f} s = "
              f"{100 * p['chunk_compile_s'] / p['wall_time_s']:5.1f}%")
        if p.get("backend_compile_s") is not None:
            print(f"  all XLA compiles      {p['backend_compile_s']:7.2f} s = "
                  f"{100 * p['backend_compile_s'] / p['wall_time_s']:5.1f}%  "
                  f"(init, chunks, analysis; jax.monitoring)")
        if p.get("compile_total_s") is not None:
            st = p["compile_stages_s"]
            print(f"  trace + lower + compile + cache read {p['compile_total_s']:7.2f} s = "
                  f"{100 * p['compile_total_s'] / p['wall_time_s']:5.1f}%  ("
                  + ", ".join(f"{k} {v:.2f}" for k, v in st.items()) + ")")

    # 5. targets
    checks = targets(model, rows, doc.get("preset_cache_warm") or doc.get("preset"))
    doc["targets"] = {k: {"met": bool(v[0]), "value": v[1]} for k, v in checks.items()}
    if checks:
        print("\ntargets")
        for name, (ok, val) in checks.items():
            print(f"  [{'met' if ok else 'NOT met'}] {name}: {val}")

    doc["load_average_at_end"] = os.getloadavg()
    doc["bench_wall_time_s"] = time.perf_counter() - t_bench
    print(f"\nbenchmark wall time {doc['bench_wall_time_s']:.0f} s; load average at start "
          f"{doc['load_average_at_start'][0]:.2f}, at end {doc['load_average_at_end'][0]:.2f} "
          f"(numbers are only meaningful on an otherwise idle machine)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
