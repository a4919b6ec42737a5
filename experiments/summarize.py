"""Markdown table of a results directory: per group and weight decay, mean +- std over seeds of
the chosen metrics (converged runs), and how many seeds converged.

    python experiments/summarize.py experiments/results/fig3_1/paper --keys min_intra,max_inter,nc1
"""
from __future__ import annotations

import argparse
import collections
import sys

import numpy as np

from nc_jax.results import load_results


def summary_table(runs, keys=("min_intra", "max_inter", "nc1")) -> str:
    cells = collections.OrderedDict()
    for r in runs:
        cells.setdefault((r["group"], r["weight_decay"]), []).append(r)
    head = "| group | WD | converged | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (3 + len(keys))]
    for (g, wd), rs in cells.items():
        conv = [r for r in rs if r["converged"]]
        vals = []
        for k in keys:
            v = [r[k] for r in conv if r.get(k) is not None]
            vals.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v else "—")
        lines.append(f"| {g} | {wd:g} | {len(conv)}/{len(rs)} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--keys", default="min_intra,max_inter,nc1")
    args = ap.parse_args(argv)
    try:
        doc = load_results(args.results)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_table(doc["runs"], tuple(k for k in args.keys.split(",") if k)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
