"""The measurements of `experiments/bench_sweep.py`, each run in its own subprocess.

`bench_sweep.py --worker KIND SPEC_JSON` calls `WORKERS[KIND](spec)` and prints its result as one
JSON line; the parent (`bench_sweep.main`) launches them with `spawn` and prints the tables.
This module also holds the helpers both sides need (FLOP counts, the budget cap, the data). It
imports no JAX at module level: the forced-device workers get `XLA_FLAGS` in their environment
before their own JAX import, and the parent only imports it to make the data.

Models (`--model`): "mlp" is the Figure 3.1 model (Dense layers of `width` units on d = 32 teacher
data); "cnn" and "resnet" (`nc_jax.models`) train on MNIST-shaped random images (N, 28, 28, 1)
with balanced random labels, `width` being their (base) channel count.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_SCRIPT = os.path.join(ROOT, "experiments", "bench_sweep.py")  # runs a worker: --worker
BATCH, DIM, CLASSES, N_FULL = 128, 32, 10, 10000
IMAGE = (28, 28, 1)  # MNIST-shaped inputs of the conv models
MODELS = ("mlp", "cnn", "resnet")
DEFAULT_DEPTH = {"mlp": 6, "cnn": 4, "resnet": 8}
OPTIM_LR = 0.0679


# --------------------------------------------------------------------------------------------
# helpers shared by parent and workers
# --------------------------------------------------------------------------------------------
def dense_macs(width: int, dim: int = DIM, depth: int = 6, classes: int = CLASSES) -> int:
    """sum(in * out) over the Dense layers of the MLP."""
    return dim * width + (depth - 2) * width * width + width * classes


def conv_macs(model: str, width: int, depth: int, image=IMAGE, classes: int = CLASSES) -> int:
    """Multiply-accumulates per sample of the convolutions and the head of a "cnn" / "resnet"
    (3x3 convs with padding 1, output side ceil(side / stride), as in `nc_jax.models`)."""
    side_h, side_w, c_in = image
    macs = 0

    def conv(c_in, c_out, k, stride):
        nonlocal side_h, side_w, macs
        side_h, side_w = math.ceil(side_h / stride), math.ceil(side_w / stride)
        macs += side_h * side_w * k * k * c_in * c_out

    if model == "cnn":
        for block in range(1, depth + 1):  # stride 2 at blocks 2 and 4 (`cnn_strides`)
            conv(c_in if block == 1 else width, width, 3, 2 if block in (2, 4) else 1)
        return macs + width * classes
    if model == "resnet":
        n = (depth - 2) // 6
        conv(c_in, width, 3, 1)  # stem
        c = width
        for stage in range(3):
            out = width * 2 ** stage
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                conv(c, out, 3, stride)
                conv(out, out, 3, 1)
                if stride != 1 or c != out:  # 1x1 projection shortcut on the block's output grid
                    macs += side_h * side_w * c * out
                c = out
        return macs + c * classes
    raise ValueError(f"no conv MAC count for model {model!r}")


def model_macs(model: str, width: int, depth: int) -> int:
    """sum(in * out) of the Dense layers (mlp) or MACs per sample of conv + head (cnn, resnet)."""
    return dense_macs(width, depth=depth) if model == "mlp" else conv_macs(model, width, depth)


def flops_per_run_step(macs: int, batch: int = BATCH) -> float:
    """Forward + backward FLOPs of one run-step (Dense / conv layers only): 2 * B * macs * 3."""
    return 2.0 * batch * macs * 3.0


def subset_n(n: int, macs: int, k: int, epochs: int, max_gflop: float) -> int:
    """Largest n' <= n with n' = m * BATCH + (n % BATCH) whose measurement stays under the cap."""
    per_sample = 6.0 * macs * k * epochs
    if per_sample * n <= max_gflop * 1e9:
        return n
    rem = n % BATCH
    m = max(1, int((max_gflop * 1e9 / per_sample - rem) // BATCH))
    return min(n, m * BATCH + rem)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def make_data(path: str, n: int, model: str = "mlp") -> None:
    """The benchmark's data, generated once and shared by the workers: the teacher data of
    Figure 3.1 (Section 3.1.1) for the MLP, MNIST-shaped N(0, 1) images with balanced random
    labels for the conv models."""
    import numpy as np
    if model == "mlp":
        from nc_jax.config import DataConfig
        from nc_jax.data import make_dataset
        data = make_dataset(DataConfig(n=n, dim=DIM, num_classes=CLASSES))
        x, y = data.x, data.y
    else:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, *IMAGE), dtype=np.float32)
        y = rng.permutation(np.arange(n) % CLASSES).astype(np.int32)
    np.savez(path, x=x, y=y)


def run_worker(script, kind, spec, xla_flags: str = "", timeout=1800):
    """Run `script --worker KIND SPEC_JSON` in a fresh Python and return its last JSON line:
    the benchmarks' measurements run in their own process so that `xla_flags` (appended to
    XLA_FLAGS before the worker's JAX import) and thread pools reach only that measurement."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.dirname(os.path.abspath(script)),
                                         env.get("PYTHONPATH", "")])
    env.setdefault("JAX_PLATFORMS", "cpu")
    if xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    proc = subprocess.run([sys.executable, os.path.abspath(script), "--worker", kind,
                           json.dumps(spec)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


def worker_main(worker_arg, workers) -> int:
    """The worker side of `run_worker`: `workers[KIND](spec)` printed as one JSON line."""
    kind, spec = worker_arg
    print(json.dumps(workers[kind](json.loads(spec))))
    return 0


def spawn(kind, spec, devices=None, timeout=1800):
    """Run worker `kind` of `bench_sweep.py` on `spec` (`run_worker`); `devices` forces that
    many CPU devices."""
    flags = f"--xla_force_host_platform_device_count={devices}" if devices else ""
    return run_worker(BENCH_SCRIPT, kind, spec, flags, timeout)


# --------------------------------------------------------------------------------------------
# workers (each runs in its own subprocess; the parent prints its result as one JSON line)
# --------------------------------------------------------------------------------------------
def _setup(spec):
    """(task, data, steps per epoch) of a spec: the first `n` samples of the data file and the
    Task of the spec's model (affine BN) with the default optimizer (batch BATCH)."""
    import numpy as np
    from nc_jax.config import ModelConfig, OptimConfig, SweepConfig
    from nc_jax.data import Dataset
    from nc_jax.training import steps_per_epoch
    from nc_jax.training import make_task

    d = np.load(spec["data"])
    n = int(spec["n"])
    # Dataset directly (not from_arrays): a small subset must keep all CLASSES outputs even if
    # a class were missing from it
    data = Dataset(d["x"][:n], d["y"][:n], CLASSES, {"kind": "bench"})
    model = spec.get("model", "mlp")
    mcfg = ModelConfig(name=model, depth=int(spec.get("depth", DEFAULT_DEPTH[model])),
                       width=int(spec["width"]), bn="affine")
    cfg = SweepConfig(model=mcfg, optim=OptimConfig(batch_size=BATCH))
    return make_task(cfg, data), data, steps_per_epoch(n, BATCH)


def _grid(k: int):
    import numpy as np
    from nc_jax.config import THESIS_WEIGHT_DECAYS
    wds = np.asarray([THESIS_WEIGHT_DECAYS[i % len(THESIS_WEIGHT_DECAYS)] for i in range(k)],
                     np.float32)
    seeds = np.asarray([i // len(THESIS_WEIGHT_DECAYS) for i in range(k)], np.int64)
    lrs = np.full(k, OPTIM_LR, np.float32)
    return wds, seeds, lrs


def _state_bytes(states) -> int:
    import jax
    from nc_jax.training import is_key
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(states) if not is_key(a))


def worker_sweep(spec):
    """The sweep (K runs, one program: vmapped, or lax.map with spec["vmap_runs"] > 0),
    optionally sharded over forced CPU devices."""
    import jax
    from jax.sharding import PartitionSpec as P
    from nc_jax.training import putter
    from nc_jax.training import RUN_AXIS, init_states, make_chunk_fn, run_layout

    task, data, spe = _setup(spec)
    k, epochs, repeats = int(spec["k"]), int(spec["epochs"]), int(spec["repeats"])
    layout, mesh = run_layout(k)  # automatic: one call over all K runs
    padded = layout.padded
    wds, seeds, lrs = (layout.pad(a) for a in _grid(k))
    x, y = putter(mesh, P())((data.x, data.y))
    states = init_states(task, seeds, lrs, wds, data.sample_shape)
    state_bytes = _state_bytes(states) / padded
    states = putter(mesh, P(RUN_AXIS))(states)
    jax.block_until_ready((states, x, y))
    rss_base = maxrss_mb()

    t = time.perf_counter()
    fn = make_chunk_fn(task, BATCH, epochs, None, int(spec.get("vmap_runs", 0)),
                       mesh).lower(states, x, y).compile()
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
            "state_bytes_per_run": state_bytes,
            "rss_base_mb": rss_base, "rss_peak_mb": maxrss_mb()}


def _time_runs(jax, fn, states, x, y, repeats):
    """Compile `fn` on run 0's state, warm it up on a copy (it donates its input), then time it
    once per run, one run after another, `repeats` times. Returns (compile_s, per-repeat lists)."""
    t = time.perf_counter()
    fn = fn.lower(states[0], x, y).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(fn(jax.tree.map(jax.numpy.copy, states[0]), x, y))
    reps = []
    for _ in range(repeats):
        per_run = []
        for i in range(len(states)):  # each run one dispatch of the single-run program
            t0 = time.perf_counter()
            out = fn(states[i], x, y)
            jax.block_until_ready(out)
            per_run.append(time.perf_counter() - t0)
            states[i] = out[0]
        reps.append(per_run)
    return compile_s, reps


def worker_seq(spec):
    """Sequential baseline: the K = 1 program of the same code, once per run, for m runs; with
    spec["plain"] also the un-vmapped single-run program (jit of the same scan over epochs, no
    run axis). Also XLA's cost analysis of one train_step (FLOP cross-check)."""
    import functools

    import jax
    import jax.numpy as jnp
    from nc_jax.training import init_states, make_chunk_fn
    from nc_jax.training import train_epoch, train_step

    task, data, spe = _setup(spec)
    m, epochs, repeats = int(spec["m"]), int(spec["epochs"]), int(spec["repeats"])
    wds, seeds, lrs = _grid(m)
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    all_states = [init_states(task, seeds[i:i + 1], lrs[i:i + 1], wds[i:i + 1],
                              data.sample_shape) for i in range(m)]
    jax.block_until_ready(all_states)
    plain_states = [jax.tree.map(lambda a: a[0], s) for s in all_states]  # before donation
    compile_s, reps = _time_runs(jax, make_chunk_fn(task, BATCH, epochs, None), all_states,
                                 x, y, repeats)
    out = {"compile_s": compile_s, "per_run_times_s": reps, "steps_per_run": spe * epochs}

    if spec.get("plain"):
        def one_run(state, x, y):
            return jax.lax.scan(lambda s, _: train_epoch(s, x, y, task, BATCH), state, None,
                                length=epochs)

        plain = jax.jit(one_run, donate_argnums=0)
        out["plain_compile_s"], out["plain_per_run_times_s"] = _time_runs(
            jax, plain, plain_states, x, y, repeats)

    # XLA's own FLOP count of one single-run step (batch BATCH)
    xla_flops = None
    try:
        s0 = jax.tree.map(lambda a: a[0], all_states[0])
        step = jax.jit(functools.partial(train_step, task=task))
        ca = step.lower(s0, x[:BATCH], y[:BATCH]).compile().cost_analysis()
        if isinstance(ca, (list, tuple)):
            ca = ca[0]
        xla_flops = float(ca["flops"]) if ca and "flops" in ca else None
    except Exception as e:  # cost analysis is optional and backend-dependent
        print(f"cost_analysis unavailable: {e}", file=sys.stderr)
    return {**out, "xla_flops_per_step": xla_flops, "rss_peak_mb": maxrss_mb()}


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
    """Wall time of the fig3_1 preset (training + analysis, no files) and its compiles: what
    `experiments/fig3_1_wd_bn.py --preset P` runs, through `nc_jax.runs`."""
    import jax
    import jax.monitoring as mon
    from nc_jax.runs import get_experiment, run_experiment

    if spec.get("cache_dir"):  # what the CLI and the experiment scripts do by default
        from nc_jax.runs import enable_compile_cache
        enable_compile_cache(spec["cache_dir"])
    # every stage of turning a function into an executable: tracing, lowering, XLA's compile
    # and, with a persistent cache, reading the executable back
    stages = {"/jax/core/compile/jaxpr_trace_duration": "trace",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
              "/jax/core/compile/backend_compile_duration": "backend",
              "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read"}
    secs = {v: 0.0 for v in stages.values()}

    def listen(name, s, **kw):
        if name in stages:
            secs[stages[name]] += s

    mon.register_event_duration_secs_listener(listen)
    exp = get_experiment("fig3_1")
    configs = exp.configs(spec["preset"])
    t0 = time.perf_counter()
    _, extra = run_experiment(exp, configs, out_dir=None, progress=False)
    wall = time.perf_counter() - t0
    chunk = sum(v["compile_time_s"] for v in extra["timing"].values())
    return {"preset": spec["preset"], "wall_time_s": wall, "chunk_compile_s": chunk,
            "backend_compile_s": secs["backend"], "compile_stages_s": secs,
            "compile_total_s": float(sum(secs.values())), "groups": extra["timing"],
            "persistent_cache": jax.config.jax_compilation_cache_dir,
            "jax_devices": len(jax.devices())}


WORKERS = {"sweep": worker_sweep, "seq": worker_seq, "matmul": worker_matmul,
           "preset": worker_preset}
