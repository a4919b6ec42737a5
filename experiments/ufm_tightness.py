"""How tight is Theorem 2.3.1? The layer-peeled model's worst cases against the theorem's guarantee,
with every committed trained network placed on the same axes.

    python experiments/ufm_tightness.py --preset quick     # < 2 min on a 2-core CPU
    python experiments/ufm_tightness.py --preset paper --out experiments/results/ufm/paper
    python experiments/ufm_tightness.py --preset paper-peeled --out experiments/results/ufm/paper-peeled

What it computes (nc_jax.ufm, nc_jax.ufm.tightness; method and caveats in docs/ufm.md):
  1. frontier: for each alpha beta of a grid and a ladder of relative gaps r = eps/m, the worst
     intra_0 / inter_01 reachable at loss <= m + eps (adversarial penalty search, every point feasible);
  2. the same search at each trained run's own (alpha_aug beta_aug, eps), bias folded in as the thesis
     does (alpha_aug = sqrt(alpha^2 + 1), beta_aug = ||[W b]||_F / sqrt(C));
  3. typical points: the iterates of plain descent from random starts (the solver stopped at eps);
  4. a phase diagram over (C, d, alpha beta) in one compiled solve_grid call (d < C-1: no ETF);
  5. the weight-decay UFM's optimal alpha beta against the trained runs' at the same lambda.
Writes results.json (the preset's config and every number) and ufm_tightness.png, ufm_phase.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import ufm
from nc_jax.runs import atomic_write_text, environment
from nc_jax.ufm import plots
from nc_jax.ufm import tightness as T

TAUS, plot_all = plots.TAUS, plots.plot_all

NAME = "ufm_tightness"
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ALL_SOURCES = ["fig3_1/paper", "fig3_3/paper", "fig3_3/paper-seeds", "real_data/paper", "data_complexity/paper"]
#: The theorem's own network (no head bias, no last shift: its cosines are those of the model's
#: features exactly) at the thesis' WDs and at large WD, beside the bias-folded Figure 3.1 runs.
PEELED_SOURCES = ["fig3_1/paper", "fig3_1/paper-peeled", "fig3_1/paper-peeled-large"]

PRESETS = {
    # coarse grid, fig3_1 networks only: the whole pipeline in about a minute
    "quick": dict(num_classes=10, dim=20, n_per_class=4, frontier_alpha_beta=[1, 2, 4, 8, 16, 32],
                  levels=12, r_min=1e-5, r_max=1e5, level_steps=200, solve_steps=600,
                  path_alpha_beta=[2, 8, 32], path_steps=300, network_sources=["fig3_1/paper"],
                  phase_classes=[2, 3, 5, 10], phase_dims=list(range(1, 11)), phase_alpha_beta=[1, 16],
                  phase_n=3, phase_steps=600, reg_lambdas=[1e-4, 1e-3, 1e-2], reg_steps=1500, seed=0),
    # finer alpha beta grid and ladders, every committed run
    "paper": dict(num_classes=10, dim=20, n_per_class=6,
                  frontier_alpha_beta=[0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48],
                  levels=18, r_min=1e-5, r_max=1e6, level_steps=300, solve_steps=1000,
                  path_alpha_beta=[1, 2, 4, 8, 16, 32], path_steps=400, network_sources=ALL_SOURCES,
                  phase_classes=[2, 3, 4, 5, 6, 8, 10, 12], phase_dims=list(range(1, 14)),
                  phase_alpha_beta=[0.5, 2, 8, 32], phase_n=3, phase_steps=1000,
                  reg_lambdas=[1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 7e-3, 1e-2], reg_steps=3000, seed=0,
                  # the grid frontier again with another seed, 2x the steps and n = 10 per class
                  robustness=dict(seed=1, level_steps=600, n_per_class=10)),
}
# the paper grid with the peeled runs placed on it (no robustness rerun: `paper` has it)
PRESETS["paper-peeled"] = dict({k: v for k, v in PRESETS["paper"].items() if k != "robustness"},
                               network_sources=PEELED_SOURCES)


def load_networks(sources, C):
    pts = []
    for src in sources:
        with open(os.path.join(RESULTS, src, "results.json")) as fh:
            doc = json.load(fh)
        for r in doc["runs"]:
            p = T.augmented_run(r, C)
            # skip runs that collapsed to the zero network (alpha beta ~ 1e-3) or have no gap to study
            if p is not None and p["alpha_beta"] >= 0.5 and p["eps"] > 0:
                pts.append(dict(p, source=src))
    return pts


def _ladder(lo, hi, L):
    return np.logspace(np.log10(lo), np.log10(hi), L)


def r_floor(ab):
    """Smallest relative gap the search resolves: L carries float32 rounding ~1e-7 ab (the logits), and
    below ~30x that the penalty sees noise (observed: stuck levels at r = 1e-5..1e-4 for ab = 32)."""
    return 3e-5 * (1.0 + ab)


def summarize_curve(ab, out, i, C):
    """Looseness numbers of one (alpha beta, target) ladder i of the frontier output."""
    intra = bool(out["is_intra"][i])
    bad = 1 - out["intra0"][i] if intra else out["inter01"][i] + 1 / (C - 1)
    e, env = T.envelope(out["eps"][i], bad)
    # the small-eps regime, above the search's resolution of r
    small = (bad > 0) & (bad <= (0.2 if intra else 0.3)) & (out["rel_gap"][i] >= 0.9 * r_floor(ab))
    row = dict(alpha_beta=ab, target="intra" if intra else "inter",
               slope_vs_eps=T.loglog_slope(out["rel_gap"][i][small], bad[small]),
               theorem_slope=0.5 if intra else 1 / 6, min_loss=float(np.exp(out["log_min_loss"][i][0])))
    for tau in TAUS:
        et = T.crossing_eps(e, env, tau)
        lt = T.log10_eps_for(tau, ab, C, row["target"])
        row[f"eps_true_tau{tau}"] = et
        row[f"log10_eps_theorem_tau{tau}"] = float(lt)
        row[f"orders_loose_tau{tau}"] = float(np.log10(et) - lt) if np.isfinite(et) else None
        if intra:  # the proof's explicit constants (Sec. 2.4): bound = c * sqrt(eps)
            lp = 2 * (np.log10(tau) - T.proof_intra_bound(ab, C, 1.0))
            row[f"orders_loose_proof_tau{tau}"] = float(np.log10(et) - lp) if np.isfinite(et) else None
    return row


def run(cfg, out_dir):
    t0 = time.perf_counter()
    C, key = cfg["num_classes"], jax.random.key(cfg["seed"])
    nets = load_networks(cfg["network_sources"], C)
    grid = [float(a) for a in cfg["frontier_alpha_beta"]]
    L = cfg["levels"]
    abs_, ladders, targets = [], [], []
    for tg in ("intra", "inter"):
        for a in grid:
            abs_.append(a), targets.append(tg)
            ladders.append(_ladder(max(cfg["r_min"], r_floor(a)), cfg["r_max"], L))
        for p in nets:  # each run's own ladder ends exactly at its relative gap
            abs_.append(p["alpha_beta"]), targets.append(tg)
            lo = max(min(cfg["r_min"], p["rel_gap"] / 100), min(r_floor(p["alpha_beta"]), p["rel_gap"] / 10))
            ladders.append(_ladder(lo, p["rel_gap"], L))
    print(f"frontier: {len(abs_)} problems x {L} levels x {cfg['level_steps']} steps "
          f"({len(nets)} trained runs)", flush=True)
    fr = T.frontier(np.array(abs_), np.array(ladders), num_classes=C, dim=cfg["dim"],
                    n_per_class=cfg["n_per_class"], key=jax.random.fold_in(key, 1), target=targets,
                    steps=cfg["level_steps"], solve_steps=cfg["solve_steps"])
    fr["is_intra"] = np.array([t == "intra" for t in targets])
    fr["requested"] = np.array(ladders)
    t_frontier = time.perf_counter() - t0
    G, NN = len(grid), len(nets)
    idx = {"intra": (0, G + NN), "inter": (G + NN, 2 * (G + NN))}
    curves = [summarize_curve(a, fr, idx[tg][0] + j, C) for tg in ("intra", "inter") for j, a in enumerate(grid)]
    frontier_doc = {tg: {k: fr[k][s:s + G].tolist() for k in ("rel_gap", "eps", "intra0", "inter01", "min_intra",
                                                                "max_inter", "requested")}
                    for tg, (s, _) in idx.items()}
    frontier_doc["alpha_beta"] = grid

    for j, p in enumerate(nets):  # place each run against the frontier at its own point
        for tg, bad_net in (("intra", p["one_minus_intra"]), ("inter", p["inter_dev"])):
            i = idx[tg][0] + G + j
            bad = 1 - fr["intra0"][i] if tg == "intra" else fr["inter01"][i] + 1 / (C - 1)
            ok = fr["rel_gap"][i] <= 1.01 * p["rel_gap"]
            e, env = T.envelope(fr["eps"][i][ok], bad[ok])
            ef = T.crossing_eps(e, env, bad_net) if bad_net > 0 else float("nan")
            lt = T.log10_eps_for(bad_net, p["alpha_beta"], C, tg) if bad_net > 0 else float("nan")
            lb = (T.log10_intra_bound if tg == "intra" else T.log10_inter_bound)(p["alpha_beta"], C, p["eps"])
            p.update({f"ufm_worst_{tg}": float(env[-1]) if env.size else None,
                      f"eps_force_{tg}": ef, f"log10_eps_theorem_{tg}": float(lt), f"log10_bound_{tg}": float(lb),
                      f"below_frontier_{tg}": bool(env.size and bad_net <= env[-1] + 1e-3)})

    robustness, t = None, time.perf_counter()
    if cfg.get("robustness"):  # does the search's answer depend on its seed, budget or n?
        rb = cfg["robustness"]
        sel = [i for tg in ("intra", "inter") for i in range(idx[tg][0], idx[tg][0] + G)]
        fr2 = T.frontier(np.array(abs_)[sel], np.array(ladders)[sel], num_classes=C, dim=cfg["dim"],
                         n_per_class=rb["n_per_class"], key=jax.random.fold_in(jax.random.key(rb["seed"]), 1),
                         target=[targets[i] for i in sel], steps=rb["level_steps"], solve_steps=cfg["solve_steps"])
        fr2["is_intra"] = fr["is_intra"][sel]
        curves2 = [summarize_curve(a, fr2, j, C) for j, a in enumerate(grid + grid)]
        diffs = [abs(c1[k] - c2[k]) for c1, c2 in zip(curves, curves2) for k in c1
                 if k.startswith("orders_loose") and c1[k] is not None and c2[k] is not None]
        robustness = dict(settings=rb, curves=curves2, max_abs_diff_orders=max(diffs) if diffs else None,
                          median_abs_diff_orders=float(np.median(diffs)) if diffs else None)
    t_robust = time.perf_counter() - t

    t = time.perf_counter()
    paths = jax.vmap(lambda a, k: T.descent_path(a, k, C=C, d=cfg["dim"], n=cfg["n_per_class"],
                                                  steps=cfg["path_steps"]))(
        jnp.asarray(cfg["path_alpha_beta"], jnp.float32),
        jax.random.split(jax.random.fold_in(key, 2), len(cfg["path_alpha_beta"])))
    paths = {k: np.asarray(v).tolist() for k, v in paths.items()}
    t_paths = time.perf_counter() - t

    t = time.perf_counter()
    Cs, ds, As = np.meshgrid(cfg["phase_classes"], cfg["phase_dims"], cfg["phase_alpha_beta"], indexing="ij")
    ph = ufm.solve_grid(np.sqrt(As.ravel()), np.sqrt(As.ravel()), Cs.ravel(), ds.ravel(), cfg["phase_n"],
                        np.arange(As.size), key=jax.random.fold_in(key, 3), steps=cfg["phase_steps"])
    phase = dict(num_classes=Cs.ravel().tolist(), dim=ds.ravel().tolist(), alpha_beta=As.ravel().tolist(),
                 **{k: np.asarray(v).tolist() for k, v in ph.items()})
    t_phase = time.perf_counter() - t

    t = time.perf_counter()
    lams = np.asarray(cfg["reg_lambdas"], np.float32)
    reg = jax.vmap(lambda l: ufm.solve_regularized(l, l, num_classes=C, dim=C, n_per_class=4,
                                                   key=jax.random.fold_in(key, 4), steps=cfg["reg_steps"]))(lams)
    regularized = dict(lambdas=lams.tolist(),
                       closed_form_alpha_beta=[ufm.regularized_optimum(float(l), float(l), C)["alpha_beta"] for l in lams],
                       solver_alpha_beta=(np.asarray(reg["alpha"]) * np.asarray(reg["beta"])).tolist(),
                       closed_form_objective=[ufm.regularized_optimum(float(l), float(l), C)["objective"] for l in lams],
                       solver_objective=np.asarray(reg["objective"]).tolist())
    t_reg = time.perf_counter() - t

    def med(key_, sel=lambda p: True):
        v = [p[key_] for p in nets if sel(p) and p.get(key_) is not None and np.isfinite(p[key_])]
        return dict(median=float(np.median(v)), min=float(np.min(v)), max=float(np.max(v)), n=len(v)) if v else None

    for p in nets:
        p["log10_rel_gap"], p["log10_eps"] = float(np.log10(p["rel_gap"])), float(np.log10(p["eps"]))
        for tg in ("intra", "inter"):
            ef = p[f"eps_force_{tg}"]
            p[f"log10_net_over_force_{tg}"] = float(np.log10(p["eps"] / ef)) if ef and np.isfinite(ef) else None
            p[f"log10_force_over_theorem_{tg}"] = (float(np.log10(ef) - p[f"log10_eps_theorem_{tg}"])
                                                   if ef and np.isfinite(ef) else None)
    by_source = {src: dict(
        n=sum(p["source"] == src for p in nets),
        **{f"below_frontier_{tg}": int(sum(p[f"below_frontier_{tg}"] for p in nets if p["source"] == src))
           for tg in ("intra", "inter")},
        **{k: med(k, lambda p, s=src: p["source"] == s)
           for k in ("alpha_beta", "log10_rel_gap", "log10_bound_intra", "log10_net_over_force_intra",
                     "log10_force_over_theorem_intra")}) for src in dict.fromkeys(p["source"] for p in nets)}
    summary = dict(
        curves=curves, by_source=by_source,
        networks=dict(n=len(nets), alpha_beta=med("alpha_beta"),
                      log10_rel_gap=med("log10_rel_gap"), log10_eps=med("log10_eps"),
                      below_frontier_intra=int(sum(p["below_frontier_intra"] for p in nets)),
                      below_frontier_inter=int(sum(p["below_frontier_inter"] for p in nets)),
                      theorem_nonvacuous_intra=int(sum(p["log10_bound_intra"] < 0 for p in nets)),
                      theorem_nonvacuous_inter=int(sum(p["log10_bound_inter"] < 0 for p in nets)),
                      ufm_worst_intra=med("ufm_worst_intra"), ufm_worst_inter=med("ufm_worst_inter"),
                      **{f"{a}_{tg}": med(f"{a}_{tg}") for a in ("log10_net_over_force", "log10_force_over_theorem",
                                                                  "log10_bound") for tg in ("intra", "inter")}),
        phase=dict(max_abs_rel_gap_etf=float(np.max(np.abs(np.array(phase["rel_gap"])[
                       np.array(phase["dim"]) >= np.array(phase["num_classes"]) - 1]))),
                   min_rel_gap_no_etf=float(np.min(np.array(phase["rel_gap"])[
                       np.array(phase["dim"]) < np.array(phase["num_classes"]) - 1]))),
    )
    timing = dict(frontier_s=t_frontier, robustness_s=t_robust, paths_s=t_paths, phase_s=t_phase, regularized_s=t_reg,
                  total_s=time.perf_counter() - t0)
    return dict(frontier=frontier_doc, networks=nets, paths=dict(alpha_beta=cfg["path_alpha_beta"], **paths),
                phase=phase, regularized=regularized, summary=summary, robustness=robustness, timing=timing)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="quick", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--out", help="output directory (default runs/ufm/<preset>)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figures from results.json")
    args = ap.parse_args(argv)
    if args.preset not in PRESETS:
        print(f"error: unknown preset {args.preset!r}; known presets: {sorted(PRESETS)}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", "ufm", args.preset)
    res_file = os.path.join(out, "results.json")
    if args.plot_only:
        if not os.path.exists(res_file):
            print(f"error: {res_file} does not exist; run without --plot-only first", file=sys.stderr)
            return 2
        with open(res_file) as fh:
            plot_all(json.load(fh), out)
        return 0
    if os.path.exists(res_file) and not args.overwrite:
        print(f"error: {res_file} exists; pass --overwrite to replace it or --out to write elsewhere",
              file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    cfg = PRESETS[args.preset]
    t0 = time.perf_counter()
    doc = run(cfg, out)
    env = dict(environment(), load_average_1min=os.getloadavg()[0])
    doc = _jsonable(dict(experiment=NAME, preset=args.preset, config=cfg, environment=env,
                         wall_time_s=time.perf_counter() - t0, **doc))
    atomic_write_text(res_file, json.dumps(doc, indent=1))
    plot_all(doc, out)
    s = doc["summary"]
    for c in s["curves"]:
        print(f"ab={c['alpha_beta']:5g} {c['target']}: slope {c['slope_vs_eps']} (theorem "
              f"{c['theorem_slope']:.3g}); orders loose at tau=0.01 / 0.1: {c['orders_loose_tau0.01']} / "
              f"{c['orders_loose_tau0.1']}")
    print("networks:", json.dumps(s["networks"], indent=None)[:2000])
    print(f"done in {doc['wall_time_s']:.1f} s; results and figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
