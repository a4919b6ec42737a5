"""The agreement check of `bench_vs_torch.py`: nc-jax and both PyTorch trainers on one protocol,
compared per WD on seed means of accuracy, loss and last-layer NC measures; a speed comparison
of different computations would be meaningless. Parent side only (no JAX, no torch import):
the training runs in `bench_vs_torch.py`'s workers, launched with the `spawn` given."""
from __future__ import annotations

import math
import os
import time

#: measure -> (absolute floor, relative floor) of the agreement tolerance (nc1 is a ratio)
CHECK_FLOORS = {"accuracy": (0.005, 0), "log10_loss": (0.05, 0), "min_intra": (0.02, 0),
                "max_inter": (0.03, 0), "mean_inter": (0.01, 0), "nc1": (0.02, 0.1)}
CHECK_SIGMAS = 3.0
CHECK = {"n": 2000, "width": 128, "epochs": 60, "wds": (1e-4, 1e-3, 5e-3), "seeds": 6}
CHECK_QUICK = {"n": 300, "width": 32, "epochs": 4, "wds": (1e-4, 5e-3), "seeds": 6}


def compare(runs, wds, n_seeds):
    """Per WD, measure and torch variant: seed means, pooled std, tolerance, agreement."""
    import statistics as st
    out = []
    for i, wd in enumerate(wds):
        sl = slice(i * n_seeds, (i + 1) * n_seeds)
        for key, (floor, rel) in CHECK_FLOORS.items():
            vj = [r[key] for r in runs["jax"][sl]]
            for fw in ("torch_seq", "torch_bat"):
                vt = [r[key] for r in runs[fw][sl]]
                mj, mt = st.fmean(vj), st.fmean(vt)
                pooled = math.sqrt((st.variance(vj) + st.variance(vt)) / 2) if n_seeds > 1 else 0
                tol = CHECK_SIGMAS * pooled + floor + rel * abs(mj)
                ok = math.isfinite(mj) and math.isfinite(mt) and abs(mj - mt) <= tol
                out.append({"wd": wd, "key": key, "fw": fw, "jax_mean": mj, "torch_mean": mt,
                            "jax_std": math.sqrt(st.variance(vj)) if n_seeds > 1 else 0.0,
                            "torch_std": math.sqrt(st.variance(vt)) if n_seeds > 1 else 0.0,
                            "tolerance": tol, "ok": ok})
    return out


def run_check(c, tmp, threads, xla_flags, log, spawn):
    data = os.path.join(tmp, f"data_{c['n']}.npz")
    if not os.path.exists(data):
        spawn("data", {"n": c["n"], "path": data})
    wds, seeds = list(c["wds"]), list(range(c["seeds"]))
    spec = {"data": data, "width": c["width"], "wds": wds, "seeds": seeds, "epochs": c["epochs"],
            "threads": threads, "out": os.path.join(tmp, "check_torch.npz")}
    t0 = time.perf_counter()
    spawn("check_torch", spec)
    runs = spawn("check_jax", {**spec, "torch": spec["out"]}, xla_flags)["runs"]
    log(f"  check trained in {time.perf_counter() - t0:.0f} s")
    rows = compare(runs, wds, len(seeds))
    print(f"\nagreement check: n={c['n']}, width {c['width']}, {c['epochs']} epochs, WDs {wds} x "
          f"{len(seeds)} seeds; seed mean ± std; ok if |jax - torch| <= {CHECK_SIGMAS:g} pooled "
          f"std + floor (nc1: + 10% |jax|)")
    print(f"{'wd':>8} {'measure':>10} {'jax':>17} {'torch-seq':>17} {'torch-bat':>17} "
          f"{'tol seq/bat':>13}  ok")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        print(f"{a['wd']:>8.0e} {a['key']:>10} {a['jax_mean']:>9.4f} ± {a['jax_std']:.4f} "
              f"{a['torch_mean']:>9.4f} ± {a['torch_std']:.4f} {b['torch_mean']:>9.4f} ± "
              f"{b['torch_std']:.4f} {a['tolerance']:>6.3f}/{b['tolerance']:.3f}  "
              f"{'yes' if a['ok'] and b['ok'] else 'NO'}")
    # does the check have power? the WD effect on each measure against its tolerance
    sep = {}
    for key in CHECK_FLOORS:
        means = [r["jax_mean"] for r in rows if r["key"] == key]
        sep[key] = (max(means) - min(means)) / max(r["tolerance"] for r in rows if r["key"] == key)
    print("WD effect (range of jax means over WDs) / largest tolerance: "
          + ", ".join(f"{k} {v:.1f}" for k, v in sep.items()))
    bad = sum(not r["ok"] for r in rows)
    print(f"check: {'DISAGREEMENT' if bad else 'torch and nc-jax agree'} ({bad} of {len(rows)} "
          f"comparisons outside tolerance)")
    return not bad, {"protocol": {**c, "wds": wds}, "rows": rows, "wd_effect_over_tol": sep,
                     "runs": runs, "ok": not bad}
