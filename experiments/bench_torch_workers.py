"""The measurements of `experiments/bench_vs_torch.py`, each run in its own subprocess.

`bench_vs_torch.py --worker KIND SPEC_JSON` calls `WORKERS[KIND](spec)` and prints its result as
one JSON line (`bench_workers.run_worker` / `worker_main`); the parent launches them with
`bench_vs_torch.spawn` and prints the tables. Every import of JAX, nc-jax or PyTorch happens
inside a worker, so the parent stays free of both frameworks and each worker gets only its own
thread pool and XLA_FLAGS. `_jax_sweep` and `_load` are shared with `bench_levers.py`.
"""
from __future__ import annotations

import math
import time

from bench_agreement import CHECK_FLOORS

DEPTH, DIM, CLASSES, BATCH, N_FULL = 6, 32, 10, 128, 10000


def expand(wds, seeds):
    """Per-run (weight decays, seeds) of a WD x seed grid, in nc-jax's order (wd-major)."""
    return [w for w in wds for _ in seeds], [s for _ in wds for s in seeds]


def _load(path):
    import numpy as np
    d = np.load(path)
    return d["x"], d["y"]


def worker_data(spec):
    import numpy as np
    from nc_jax.config import DataConfig
    from nc_jax.data import make_dataset
    data = make_dataset(DataConfig(n=spec["n"], dim=DIM, num_classes=CLASSES))
    np.savez(spec["path"], x=np.asarray(data.x, np.float32), y=np.asarray(data.y, np.int64))
    return {"n": data.n, "class_counts": data.class_counts().tolist()}


def _jax_sweep(x, y, width, wds, seeds, epochs, decay=None, vmap_runs=0, epochs_per_call=1):
    """nc-jax's public `run_sweep` on the exported data: (SweepResult, Dataset)."""
    import nc_jax
    from nc_jax.config import DataConfig, ModelConfig, OptimConfig, SweepConfig
    from nc_jax.data import Dataset
    data = Dataset(x.astype("float32"), y.astype("int32"), CLASSES, {"kind": "bench"})
    cfg = SweepConfig(model=ModelConfig(depth=DEPTH, width=width, bn="affine"),
                      optim=OptimConfig(epochs=epochs, batch_size=BATCH, lr_decay_epochs=decay),
                      data=DataConfig(n=len(y) - len(y) % CLASSES or CLASSES),
                      weight_decays=tuple(wds), seeds=tuple(seeds), vmap_runs=vmap_runs)
    return nc_jax.run_sweep(cfg, data, progress=False, epochs_per_call=epochs_per_call), data


def _torch_train(kind, x, y, width, wds, seeds, epochs, threads, features=False, decay=None):
    import bench_torch as bt
    fn = bt.train_sequential if kind == "torch_seq" else bt.train_batched
    kw, ks = expand(wds, seeds)
    return fn(x, y, CLASSES, width, kw, ks, epochs, bt.Protocol(lr_decay_epochs=decay),
              depth=DEPTH, threads=threads, return_features=features)


def worker_time(spec):
    """A warm-up call, then the calls of spec["order"] (epochs each), timed. The LR stays
    constant on both sides: nc-jax compiles the schedule's boundaries into the program, so
    with the default schedule the short and long calls would be two programs and a warm cache
    could serve only one of them; a schedule costs nothing measurable either way."""
    fw, (x, y) = spec["fw"], _load(spec["data"])
    wds, seeds, width = spec["wds"], spec["seeds"], spec["width"]
    cache = None
    if fw == "jax":
        import jax
        if spec.get("cache_dir"):
            from nc_jax.runs import enable_compile_cache
            enable_compile_cache(spec["cache_dir"])
        cache = jax.config.jax_compilation_cache_dir  # also a user's JAX_COMPILATION_CACHE_DIR
        # with a persistent cache the warm-up must compile the measured program, or only the
        # first timed call would pay its compile and the difference would not cancel it;
        # without one, a small program brings up backend and compiler (each call recompiles)
        def call(e, warm=False):
            few = warm and not cache
            return _jax_sweep(x, y, width, wds[:1] if few else wds, seeds[:1] if few else seeds,
                              e, decay=())
    else:
        def call(e, warm=False):  # warm-up: first-call costs (lazy imports, allocator, threads)
            return _torch_train(fw, x, y, width, wds[:1] if warm else wds,
                                seeds[:1] if warm else seeds, e, spec["threads"], decay=())
    call(1, warm=True)
    times = {}
    for e in spec["order"]:
        t0 = time.perf_counter()
        call(e)
        times[str(e)] = time.perf_counter() - t0
    return {"times_s": times, "persistent_cache": cache}


def worker_check_torch(spec):
    import numpy as np
    x, y = _load(spec["data"])
    out = {}
    for fw in ("torch_seq", "torch_bat"):
        r = _torch_train(fw, x, y, spec["width"], spec["wds"], spec["seeds"], spec["epochs"],
                         spec["threads"], features=True)
        out.update({f"{fw}/{k}": v for k, v in r.items()})
    np.savez(spec["out"], **out)
    return {"saved": spec["out"]}


def worker_check_jax(spec):
    """Train the check protocol with nc-jax; NC measures of it and of the torch runs."""
    import numpy as np
    from nc_jax.metrics import collapse_report
    x, y = _load(spec["data"])
    res, data = _jax_sweep(x, y, spec["width"], spec["wds"], spec["seeds"], spec["epochs"])

    def report(h, w, logits, loss, acc):
        r = collapse_report(h, data.y, CLASSES, W=w, logits=logits)
        return {**{k: float(r[k]) for k in CHECK_FLOORS if k in r},
                "accuracy": float(acc), "log10_loss": math.log10(max(float(loss), 1e-30))}

    runs = {"jax": []}
    for i in range(res.num_runs):
        st = res.state(i)
        logits, feats = res.task.features(st.params, st.batch_stats, data.x)
        runs["jax"].append(report(feats[-1], res.task.weights(st.params)[0], logits,
                                  res.final_loss[i], res.final_accuracy[i]))
    t = np.load(spec["torch"])
    for fw in ("torch_seq", "torch_bat"):
        runs[fw] = [report(t[f"{fw}/features"][i], t[f"{fw}/W"][i], t[f"{fw}/logits"][i],
                           t[f"{fw}/loss"][i], t[f"{fw}/accuracy"][i])
                    for i in range(len(t[f"{fw}/loss"]))]
    return {"runs": runs}


WORKERS = {"data": worker_data, "time": worker_time, "check_torch": worker_check_torch,
           "check_jax": worker_check_jax}
