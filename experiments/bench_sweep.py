"""Benchmark of the vmapped sweep against a sequential baseline and the machine's FLOP rate.

For the Figure 3.1 model (6-layer MLP, affine BN, batch 128, d = 32, C = 10, teacher data,
n = 10000) at every width in --widths and run count K in --runs it measures, each in its own
subprocess (so the peak RSS is that configuration's):

  * the vmapped sweep: the real chunk function of `nc_jax.sweep` (`init_states` +
    `make_chunk_fn`, jit(vmap(scan over epochs of scan over minibatches)), AOT-compiled with
    `.lower().compile()` exactly as `train_runs` does). Compile time is reported separately; one
    warm-up call, then --repeats timed calls of --epochs epochs each (steady state). The chunk has
    no record function (pure training), so the FLOP count below is the whole work;
  * the sequential baseline: the K = 1 program of the same code called once per run, for
    --seq-runs runs (different weight decays), timed, and extrapolated linearly to K runs
    (t_seq(K) = K * mean time per run). The table marks these numbers "extrap.";
  * FLOPs of one run-step (forward + backward of the Dense layers, analytic:
    2 * B * sum(in * out) * 3) cross-checked with XLA's `cost_analysis()` of one jitted
    `train_step` (which also counts BN, softmax and the optimizer update);
  * achieved GFLOP/s (6 * samples * sum(in * out) per epoch, per run) next to the fp32 matmul rate
    measured in this script: a large jnp.dot (2048^3), the batch-shaped forward matmul
    128x256 @ 256x256, the weight-gradient shape 256x128 @ 128x256, and the vmapped
    batch-shaped one K x (128x256 @ 256x256) (each in a jitted `lax.scan` of dependent matmuls so
    dispatch overhead does not count);
  * peak memory: ru_maxrss of the configuration's subprocess, and its growth over the state after
    importing JAX and loading the data (the "baseline");
  * with --devices 2,4: the same sweep (--device-width, --device-runs) with N forced CPU devices
    (`XLA_FLAGS=--xla_force_host_platform_device_count=N` in a subprocess), the run axis sharded
    over a Mesh as `train_runs` does (K padded to a multiple of N), and its scaling over N = 1;
  * compile time as a fraction of the wall time of `experiments/fig3_1_wd_bn.py --preset quick`
    (trained in a subprocess through that script's own `run`, without writing files or figures),
    counting both the sweep chunk compiles (`SweepResult.compile_time_s`) and every XLA backend
    compile (`jax.monitoring`); or read from an existing results.json with --preset-results.

To fit its time budget a measurement is capped at --max-gflop GFLOP: a larger configuration trains
on the first n' samples of the data (n' keeps the n = 10000 remainder of 16, so the epoch has the
same structure: full batches + one partial batch); the "n" column shows it.

The machine is shared and noisy: every timing is printed for each repeat; rates use the best.

Usage:
    python experiments/bench_sweep.py                      # full benchmark, ~10 min idle 2-core CPU
    python experiments/bench_sweep.py --quick              # ~1 min: tiny sizes, checks the script
    python experiments/bench_sweep.py --widths 256 --runs 1,21 --devices 2,4 --repeats 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTH, BATCH, DIM, CLASSES, N_FULL = 6, 128, 32, 10, 10000


# --------------------------------------------------------------------------------------------
# helpers shared by parent and workers (no JAX import at module level; every measurement runs in
# a worker subprocess, so the forced-device workers get XLA_FLAGS before their own JAX import)
# --------------------------------------------------------------------------------------------
def dense_macs(width: int, dim: int = DIM, depth: int = DEPTH, classes: int = CLASSES) -> int:
    """sum(in * out) over the Dense layers of the MLP."""
    return dim * width + (depth - 2) * width * width + width * classes


def flops_per_run_step(width: int, batch: int = BATCH) -> float:
    """Forward + backward FLOPs of one run-step (Dense layers only): 2 * B * sum(in*out) * 3."""
    return 2.0 * batch * dense_macs(width) * 3.0


def subset_n(n: int, width: int, k: int, epochs: int, max_gflop: float) -> int:
    """Largest n' <= n with n' = m * BATCH + (n % BATCH) whose measurement stays under the cap."""
    per_sample = 6.0 * dense_macs(width) * k * epochs
    if per_sample * n <= max_gflop * 1e9:
        return n
    rem = n % BATCH
    m = max(1, int((max_gflop * 1e9 / per_sample - rem) // BATCH))
    return min(n, m * BATCH + rem)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --------------------------------------------------------------------------------------------
# workers (each runs in its own subprocess and prints one JSON line)
# --------------------------------------------------------------------------------------------
def _setup(spec):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from nc_jax.config import OptimConfig
    from nc_jax.models import MLP
    from nc_jax.optim import make_optimizer
    from nc_jax.train import steps_per_epoch

    d = np.load(spec["data"])
    n = int(spec["n"])
    x_np, y_np = d["x"][:n], d["y"][:n]
    model = MLP(depth=DEPTH, width=int(spec["width"]), num_classes=CLASSES, bn="affine")
    spe = steps_per_epoch(n, BATCH)
    tx = make_optimizer(OptimConfig(batch_size=BATCH), spe)
    return jax, jnp, np, model, tx, x_np, y_np, spe


def _grid(k: int):
    import numpy as np
    from nc_jax.config import THESIS_WEIGHT_DECAYS
    wds = np.asarray([THESIS_WEIGHT_DECAYS[i % len(THESIS_WEIGHT_DECAYS)] for i in range(k)],
                     np.float32)
    seeds = np.asarray([i // len(THESIS_WEIGHT_DECAYS) for i in range(k)], np.int64)
    lrs = np.full(k, OPTIM_LR, np.float32)
    return wds, seeds, lrs


OPTIM_LR = 0.0679


def worker_sweep(spec):
    """The vmapped sweep (K runs, one program), optionally sharded over forced CPU devices."""
    jax, jnp, np, model, tx, x_np, y_np, spe = _setup(spec)
    from jax.sharding import PartitionSpec as P
    from nc_jax.sweep import RUN_AXIS, _put, init_states, make_chunk_fn, run_layout

    k, epochs, repeats = int(spec["k"]), int(spec["epochs"]), int(spec["repeats"])
    layout, mesh = run_layout(k)  # automatic: one call over all K runs
    padded = layout.padded
    wds, seeds, lrs = _grid(k)
    pad = padded - k
    wds, seeds, lrs = (np.concatenate([a, np.repeat(a[-1:], pad)]) for a in (wds, seeds, lrs))
    x = _put(jnp.asarray(x_np), mesh, P())
    y = _put(jnp.asarray(y_np), mesh, P())
    states = init_states(model, tx, seeds, lrs, wds, x_np.shape[1])
    states = _put(states, mesh, P(RUN_AXIS))
    jax.block_until_ready((states, x, y))
    rss_base = maxrss_mb()

    t = time.perf_counter()
    fn = make_chunk_fn(model, tx, BATCH, epochs, None).lower(states, x, y).compile()
    compile_s = time.perf_counter() - t

    def call(s):
        t0 = time.perf_counter()
        out = fn(s, x, y)
        jax.block_until_ready(out)
        return out[0], time.perf_counter() - t0

    states, warm_s = call(states)
    times = []
    for _ in range(repeats):
        states, dt = call(states)
        times.append(dt)
    n_dev = len(states.step.sharding.device_set)
    return {"compile_s": compile_s, "warmup_s": warm_s, "times_s": times,
            "steps_per_run": spe * epochs, "padded_runs": padded, "devices": n_dev,
            "rss_base_mb": rss_base, "rss_peak_mb": maxrss_mb()}


def worker_seq(spec):
    """Sequential baseline: the K = 1 program of the same code, once per run, for m runs.
    Also XLA's cost analysis of one train_step (FLOP cross-check)."""
    jax, jnp, np, model, tx, x_np, y_np, spe = _setup(spec)
    import functools
    from nc_jax.sweep import init_states, make_chunk_fn
    from nc_jax.train import train_step

    m, epochs, repeats = int(spec["m"]), int(spec["epochs"]), int(spec["repeats"])
    wds, seeds, lrs = _grid(m)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    all_states = [init_states(model, tx, seeds[i:i + 1], lrs[i:i + 1], wds[i:i + 1],
                              x_np.shape[1]) for i in range(m)]
    jax.block_until_ready(all_states)
    t = time.perf_counter()
    fn = make_chunk_fn(model, tx, BATCH, epochs, None).lower(all_states[0], x, y).compile()
    compile_s = time.perf_counter() - t
    # warm-up on a copy of run 0's state (the chunk donates its input)
    jax.block_until_ready(fn(jax.tree.map(jnp.copy, all_states[0]), x, y))
    reps = []
    for _ in range(repeats):
        per_run = []
        for i in range(m):  # one run after another, each one dispatch of the K = 1 program
            t0 = time.perf_counter()
            out = fn(all_states[i], x, y)
            jax.block_until_ready(out)
            per_run.append(time.perf_counter() - t0)
            all_states[i] = out[0]
        reps.append(per_run)

    # XLA's own FLOP count of one single-run step (batch BATCH)
    xla_flops = None
    try:
        s0 = jax.tree.map(lambda a: a[0], all_states[0])
        step = jax.jit(functools.partial(train_step, model=model, tx=tx))
        ca = step.lower(s0, x[:BATCH], y[:BATCH]).compile().cost_analysis()
        if isinstance(ca, (list, tuple)):
            ca = ca[0]
        xla_flops = float(ca["flops"]) if ca and "flops" in ca else None
    except Exception as e:  # cost analysis is optional and backend-dependent
        print(f"cost_analysis unavailable: {e}", file=sys.stderr)
    return {"compile_s": compile_s, "per_run_times_s": reps, "steps_per_run": spe * epochs,
            "xla_flops_per_step": xla_flops, "rss_peak_mb": maxrss_mb()}


def worker_matmul(spec):
    """fp32 matmul rates (GFLOP/s): best of `repeats` timed calls after a warm-up."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    repeats = int(spec["repeats"])
    big = int(spec["big"])
    ks = [int(k) for k in spec["ks"]]
    chain = int(spec["chain"])
    rng = np.random.default_rng(0)

    def orth(*shape):  # orthogonal matrices: the chained products neither blow up nor underflow
        a = rng.standard_normal(shape).astype(np.float32)
        q, _ = np.linalg.qr(a)
        return jnp.asarray(q)

    def best(fn, *args):
        jax.block_until_ready(fn(*args))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ts.append(time.perf_counter() - t0)
        return min(ts), ts

    out = {}
    a = jnp.asarray(rng.standard_normal((big, big)).astype(np.float32))
    b = jnp.asarray(rng.standard_normal((big, big)).astype(np.float32))
    t, ts = best(jax.jit(jnp.dot), a, b)
    out[f"dot {big}^3"] = {"gflops": 2 * big ** 3 / t / 1e9, "times_s": ts}

    def chained(step):
        def f(h, w):
            return jax.lax.scan(lambda c, _: (step(c, w), None), h, None, length=chain)[0]
        return jax.jit(f)

    w = orth(256, 256)
    h = jnp.asarray(rng.standard_normal((128, 256)).astype(np.float32))
    t, ts = best(chained(lambda c, w: c @ w), h, w)
    out["fwd 128x256x256"] = {"gflops": chain * 2 * 128 * 256 * 256 / t / 1e9, "times_s": ts}
    # weight-gradient shape: dW = h^T g, (256x128) @ (128x256), contracting the batch axis as in
    # the backward pass; accumulated over `chain` different (h, g) pairs
    hs = jnp.asarray(rng.standard_normal((chain, 128, 256)).astype(np.float32))
    gs = jnp.asarray(rng.standard_normal((chain, 128, 256)).astype(np.float32))

    @jax.jit
    def wgrad(hs, gs):
        return jax.lax.scan(lambda acc, hg: (acc + jnp.einsum("bi,bj->ij", *hg), None),
                            jnp.zeros((256, 256), jnp.float32), (hs, gs))[0]

    t, ts = best(wgrad, hs, gs)
    out["wgrad 256x128x256"] = {"gflops": chain * 2 * 256 * 128 * 256 / t / 1e9, "times_s": ts}
    for k in ks:
        wk = jnp.stack([orth(256, 256) for _ in range(k)])
        hk = jnp.asarray(rng.standard_normal((k, 128, 256)).astype(np.float32))
        t, ts = best(chained(lambda c, w: jnp.einsum("kbi,kij->kbj", c, w)), hk, wk)
        out[f"vmapped {k}x128x256x256"] = {"gflops": k * chain * 2 * 128 * 256 * 256 / t / 1e9,
                                            "times_s": ts}
    return out


def worker_preset(spec):
    """Wall time of fig3_1_wd_bn.py's preset (training + analysis, no files) and its compiles."""
    import jax
    import jax.monitoring as mon

    backend = []
    mon.register_event_duration_secs_listener(
        lambda name, secs, **kw: backend.append(secs)
        if name == "/jax/core/compile/backend_compile_duration" else None)
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    import fig3_1_wd_bn as fig

    configs = fig.PRESETS[spec["preset"]]()
    t0 = time.perf_counter()
    _, extra = fig.run(configs, None, False)
    wall = time.perf_counter() - t0
    chunk = sum(v["compile_time_s"] for v in extra["timing"].values())
    return {"preset": spec["preset"], "wall_time_s": wall, "chunk_compile_s": chunk,
            "backend_compile_s": float(sum(backend)), "groups": extra["timing"],
            "jax_devices": len(jax.devices())}


WORKERS = {"sweep": worker_sweep, "seq": worker_seq, "matmul": worker_matmul,
           "preset": worker_preset}


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------
def spawn(kind, spec, devices=None, timeout=1800):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("JAX_PLATFORMS", "cpu")
    if devices:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind,
                           json.dumps(spec)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {spec} failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def make_data(path, n):
    """Teacher data of Figure 3.1 (Section 3.1.1), generated once and shared by the workers."""
    import numpy as np
    from nc_jax.config import DataConfig
    from nc_jax.data import make_dataset
    data = make_dataset(DataConfig(n=n, dim=DIM, num_classes=CLASSES))
    np.savez(path, x=data.x, y=data.y)


def fmt_times(ts):
    return "/".join(f"{t:.3g}" for t in ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (width 32, K in {1, 3}, 1 epoch on n = 1000, smoke preset): ~1 min")
    ap.add_argument("--widths", help="comma-separated widths (default 128,256,512)")
    ap.add_argument("--runs", help="comma-separated run counts K (default 1,7,21,63)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed call (default 1)")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per configuration (>= 2)")
    ap.add_argument("--devices", default=None,
                    help="forced CPU device counts to compare with 1 (default 2,4; '' = skip)")
    ap.add_argument("--device-width", type=int, default=None, help="width of the device run")
    ap.add_argument("--device-runs", type=int, default=None, help="K of the device run")
    ap.add_argument("--seq-runs", type=int, default=3,
                    help="runs timed for the sequential baseline (extrapolated to K)")
    ap.add_argument("--max-gflop", type=float, default=None,
                    help="cap on the GFLOP of one timed call (default 400; quick: none)")
    ap.add_argument("--n", type=int, default=None, help="data set size (default 10000)")
    ap.add_argument("--preset", default=None,
                    help="fig3_1 preset for the compile fraction (default quick; --quick: smoke; "
                         "'' = skip)")
    ap.add_argument("--preset-results", default=None,
                    help="read the preset's wall/compile times from this results.json instead")
    ap.add_argument("--out", default=os.path.join(ROOT, "experiments", "results",
                                                  "bench_sweep.json"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        kind, spec = args.worker
        print(json.dumps(WORKERS[kind](json.loads(spec))))
        return 0

    q = args.quick
    widths = [int(w) for w in (args.widths or ("32" if q else "128,256,512")).split(",")]
    ks = [int(k) for k in (args.runs or ("1,3" if q else "1,7,21,63")).split(",")]
    n = args.n or (1000 if q else N_FULL)
    dev_counts = [int(d) for d in (args.devices if args.devices is not None else "2,4").split(",")
                  if d.strip()]
    dev_width = args.device_width or (widths[0] if q else (256 if 256 in widths else widths[0]))
    dev_k = args.device_runs or (max(ks) if q else (21 if 21 in ks else max(ks)))
    max_gflop = args.max_gflop if args.max_gflop is not None else (1e9 if q else 400.0)
    preset = args.preset if args.preset is not None else ("smoke" if q else "quick")
    repeats = max(2, args.repeats)
    epochs = args.epochs
    t_bench = time.perf_counter()

    tmp = tempfile.mkdtemp(prefix="bench_sweep_")
    data_path = os.path.join(tmp, "data.npz")
    make_data(data_path, n)

    doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpu_count": os.cpu_count(), "python": platform.python_version()},
           "settings": {"widths": widths, "runs": ks, "n": n, "epochs": epochs,
                        "repeats": repeats, "max_gflop": max_gflop, "batch": BATCH,
                        "depth": DEPTH, "dim": DIM, "classes": CLASSES, "quick": q,
                        "seq_runs": args.seq_runs},
           "load_average_at_start": os.getloadavg()}
    try:
        import jax
        doc["machine"]["jax"] = jax.__version__
    except Exception:
        pass

    print(f"# bench_sweep {doc['date']}  {doc['machine']['platform']}  "
          f"cpus={os.cpu_count()}  load={os.getloadavg()[0]:.2f}", flush=True)

    # 1. matmul rates
    mm = spawn("matmul", {"repeats": repeats, "big": 512 if q else 2048,
                          "ks": ks if q else sorted(set(ks) | {21}), "chain": 20 if q else 200})
    doc["matmul"] = mm
    print("\nfp32 matmul rate (GFLOP/s, best of repeats; all timings in s)")
    for name, r in mm.items():
        print(f"  {name:<26} {r['gflops']:8.1f}   [{fmt_times(r['times_s'])}]")
    big_rate = next(v["gflops"] for kname, v in mm.items() if kname.startswith("dot"))

    # 2. sweep + sequential per width
    rows = []
    for w in widths:
        seq = spawn("seq", {"data": data_path, "n": n, "width": w, "m": args.seq_runs,
                            "epochs": epochs, "repeats": repeats})
        seq_per_run = [sum(r) / len(r) for r in seq["per_run_times_s"]]  # mean s/run, per repeat
        seq_best = min(seq_per_run)
        seq_rate = seq["steps_per_run"] / seq_best  # run-steps/s, independent of K
        for k in ks:
            nk = subset_n(n, w, k, epochs, max_gflop)
            r = spawn("sweep", {"data": data_path, "n": nk, "width": w, "k": k,
                                "epochs": epochs, "repeats": repeats})
            best = min(r["times_s"])
            run_steps = k * r["steps_per_run"]
            flops = 6.0 * nk * dense_macs(w) * k * epochs
            row = {"width": w, "k": k, "n": nk, "steps_per_run": r["steps_per_run"],
                   "compile_s": r["compile_s"], "warmup_s": r["warmup_s"],
                   "times_s": r["times_s"], "run_steps_per_s": run_steps / best,
                   "gflops": flops / best / 1e9, "frac_of_big_matmul": flops / best / 1e9 / big_rate,
                   "seq_run_steps_per_s_extrap": seq_rate,
                   "seq_time_for_k_runs_s_extrap": k * seq_best * nk / n,
                   "vmap_over_seq": (run_steps / best) / seq_rate,
                   "flops_per_run_step": flops_per_run_step(w),
                   "xla_flops_per_run_step": seq["xla_flops_per_step"],
                   "rss_peak_mb": r["rss_peak_mb"], "rss_base_mb": r["rss_base_mb"],
                   "state_mb": k * 2 * (dense_macs(w) + (DEPTH - 1) * (w + 4 * w) + CLASSES)
                   * 4 / 2 ** 20,
                   "seq": {"per_run_times_s": seq["per_run_times_s"], "compile_s": seq["compile_s"],
                           "runs_timed": args.seq_runs, "rss_peak_mb": seq["rss_peak_mb"]}}
            rows.append(row)
            print(f"  measured width {w} K {k} ({time.perf_counter() - t_bench:.0f} s)",
                  file=sys.stderr, flush=True)
    doc["sweep"] = rows

    print(f"\nvmapped sweep vs sequential (batch {BATCH}, {DEPTH} layers, d={DIM}, C={CLASSES}; "
          f"{epochs} epoch(s) per timed call; seq = K=1 program x K runs, extrap. from "
          f"{args.seq_runs} runs)")
    head = (f"{'width':>5} {'K':>3} {'n':>6} {'compile':>7} {'timed calls s':>17} "
            f"{'run-steps/s':>11} {'GFLOP/s':>8} {'%mm':>5} {'seq rs/s':>9} "
            f"{'vmap/seq':>8} {'MFLOP/rs':>9} {'XLA':>6} {'RSS MB':>7} {'+MB':>5}")
    print(head)
    print("-" * len(head))
    for r in rows:
        xla = r["xla_flops_per_run_step"]
        print(f"{r['width']:>5} {r['k']:>3} {r['n']:>6} {r['compile_s']:>7.2f} "
              f"{fmt_times(r['times_s']):>17} {r['run_steps_per_s']:>11.1f} {r['gflops']:>8.1f} "
              f"{100 * r['frac_of_big_matmul']:>4.0f}% {r['seq_run_steps_per_s_extrap']:>9.1f} "
              f"{r['vmap_over_seq']:>7.2f}x {r['flops_per_run_step'] / 1e6:>9.1f} "
              f"{(xla / 1e6 if xla else float('nan')):>6.1f} {r['rss_peak_mb']:>7.0f} "
              f"{r['rss_peak_mb'] - r['rss_base_mb']:>5.0f}")
    print(f"(%mm: achieved GFLOP/s over the {next(iter(mm))} rate {big_rate:.1f} GFLOP/s; "
          f"MFLOP/rs: analytic Dense FLOPs per run-step, XLA: cost_analysis of one train_step; "
          f"RSS: peak of the configuration's process, +MB over its state after import and data)")

    # 3. forced devices
    if dev_counts:
        base = next((r for r in rows if r["width"] == dev_width and r["k"] == dev_k), None)
        nk = subset_n(n, dev_width, dev_k, epochs, max_gflop)
        if base is None:
            b = spawn("sweep", {"data": data_path, "n": nk, "width": dev_width, "k": dev_k,
                                "epochs": epochs, "repeats": repeats})
            base = {"run_steps_per_s": dev_k * b["steps_per_run"] / min(b["times_s"]),
                    "times_s": b["times_s"], "compile_s": b["compile_s"]}
        drows = [{"devices": 1, "padded_runs": dev_k, "times_s": base["times_s"],
                  "compile_s": base["compile_s"], "run_steps_per_s": base["run_steps_per_s"],
                  "scaling": 1.0}]
        for nd in dev_counts:
            r = spawn("sweep", {"data": data_path, "n": nk, "width": dev_width, "k": dev_k,
                                "epochs": epochs, "repeats": repeats}, devices=nd)
            rate = dev_k * r["steps_per_run"] / min(r["times_s"])  # useful runs only
            drows.append({"devices": r["devices"], "padded_runs": r["padded_runs"],
                          "times_s": r["times_s"], "compile_s": r["compile_s"],
                          "run_steps_per_s": rate, "scaling": rate / base["run_steps_per_s"],
                          "rss_peak_mb": r["rss_peak_mb"]})
        doc["devices"] = {"width": dev_width, "k": dev_k, "n": nk, "rows": drows}
        print(f"\nforced CPU devices (width {dev_width}, K {dev_k}, n {nk}; run axis sharded over "
              f"a Mesh, K padded to a multiple of the device count; rate counts the K real runs)")
        print(f"{'devices':>7} {'padded K':>8} {'compile':>7} {'timed calls s':>17} "
              f"{'run-steps/s':>11} {'scaling':>7}")
        for d in drows:
            print(f"{d['devices']:>7} {d['padded_runs']:>8} {d['compile_s']:>7.2f} "
                  f"{fmt_times(d['times_s']):>17} {d['run_steps_per_s']:>11.1f} "
                  f"{d['scaling']:>6.2f}x")

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
    if doc.get("preset"):
        p = doc["preset"]
        print(f"\ncompile time vs fig3_1 --preset {p['preset']} wall time "
              f"({p['wall_time_s']:.1f} s, training + analysis, no files):")
        print(f"  sweep chunk compiles  {p['chunk_compile_s']:7.2f} s = "
              f"{100 * p['chunk_compile_s'] / p['wall_time_s']:5.1f}%")
        if p.get("backend_compile_s") is not None:
            print(f"  all XLA compiles      {p['backend_compile_s']:7.2f} s = "
                  f"{100 * p['backend_compile_s'] / p['wall_time_s']:5.1f}%  "
                  f"(init, chunks, analysis; jax.monitoring)")

    # 5. targets
    def find(w, k):
        return next((r for r in rows if r["width"] == w and r["k"] == k), None)

    checks = {}
    r = find(256, 21)
    if r:
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
    if doc.get("preset") and doc["preset"]["preset"] == "quick":
        p = doc["preset"]
        comp = p["backend_compile_s"] if p.get("backend_compile_s") is not None else \
            p["chunk_compile_s"]
        checks["compile < 10% of the quick preset's wall time"] = (
            comp / p["wall_time_s"] < 0.1, f"{100 * comp / p['wall_time_s']:.1f}%")
    doc["targets"] = {k: {"met": bool(v[0]), "value": v[1]} for k, v in checks.items()}
    if checks:
        print("\ntargets (issue 5)")
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
