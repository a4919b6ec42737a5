"""The one results writer of the CLI and the experiment scripts: `results.json` (the configs,
the environment, one dict per run with the NC report and training curves), `results.csv` (one
row per run, scalars only) and, when runs have them, the tidy long-form `curves.csv` (one row
per run, recorded epoch and metric) and `layers.csv` (one row per run, layer and metric), all
written atomically; plus reading them back and a text table of runs."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import time
from typing import List, Mapping, Optional, Sequence

import jax

from nc_jax.config import SweepConfig
from nc_jax.training._distributed import is_main_process
from nc_jax._files import atomic_write_text
from nc_jax.runs._provenance import software

#: Per-run keys that are lists or dicts: in results.json, not in the CSV.
CSV_SKIP = ("layers", "curves", "history", "cosine_matrix")

#: What identifies a run in the long-form files: its index in results.json's `runs`, then
#: fields of the run.
_RUN_ID = ("run", "group", "model", "weight_decay", "seed")
#: Columns of curves.csv: one row per run, recorded epoch and metric of `run["curves"]`.
CURVES_COLUMNS = _RUN_ID + ("epoch", "metric", "value")
#: Columns of layers.csv: one row per run, layer (1 = the first entry of the model's features)
#: and metric of `run["layers"]`.
LAYERS_COLUMNS = _RUN_ID + ("layer", "metric", "value")


def environment() -> dict:
    """Where the numbers came from: versions (`software`: nc-jax version, source hash and git
    commit, library versions; see `nc_jax.runs`), backend, devices, machine, date."""
    return {"jax": jax.__version__, "software": software(), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "processes": jax.process_count(),
            "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_results(out_dir: str, name: str, preset: str, configs: Mapping[str, SweepConfig],
                  runs: List[dict], extra: Optional[dict] = None) -> None:
    """results.json (configs + every run), results.csv (one row per run, scalars only) and the
    long-form curves.csv / layers.csv (`CURVES_COLUMNS`, `LAYERS_COLUMNS`) when some run has
    curves / layers. Only process 0 writes (all processes hold the same gathered results)."""
    if not is_main_process():
        return
    os.makedirs(out_dir, exist_ok=True)
    doc = {"experiment": name, "preset": preset,
           "configs": {k: v.to_dict() for k, v in configs.items()},
           "environment": environment(), "runs": runs, **(extra or {})}
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps(doc, indent=1))
    cols: List[str] = []
    for r in runs:
        cols += [k for k in r if k not in cols and k not in CSV_SKIP]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in runs:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write_text(os.path.join(out_dir, "results.csv"), buf.getvalue())
    curves, layers = _long_rows(runs)
    _write_long(os.path.join(out_dir, "curves.csv"), CURVES_COLUMNS, curves)
    _write_long(os.path.join(out_dir, "layers.csv"), LAYERS_COLUMNS, layers)


def _long_rows(runs: List[dict]):
    """(curves rows, layers rows) of `runs` in CURVES_COLUMNS / LAYERS_COLUMNS order: by run,
    then epoch (layer), then metric in stored order. A diverged run (curves / layers None) has
    no rows; a None value (NaN or inf in results.json) is an empty cell."""
    curves, layers = [], []
    for i, r in enumerate(runs):
        ident = [i] + [r.get(k) for k in _RUN_ID[1:]]
        c = r.get("curves") or {}
        metrics = [k for k in c if k != "epoch"]
        for j, epoch in enumerate(c.get("epoch") or ()):
            curves += [ident + [epoch, k, c[k][j]] for k in metrics]
        for l, layer in enumerate(r.get("layers") or (), start=1):
            # a layer's cosine_matrix (C x C) stays in results.json: a cell holds one number
            layers += [ident + [l, k, v] for k, v in layer.items() if not isinstance(v, list)]
    return curves, layers


def _write_long(path: str, columns: Sequence[str], rows: List[list]) -> None:
    """A long-form CSV, atomically; with no rows the file is removed, so that a results
    directory never keeps curves or layers that its results.json no longer holds."""
    if not rows:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    atomic_write_text(path, buf.getvalue())


def load_results(path: str) -> dict:
    """The results document of a directory (or of a results.json path)."""
    p = os.path.join(path, "results.json") if os.path.isdir(path) else path
    with open(p) as f:
        return json.load(f)


def runs_table(runs: List[dict], cols=("group", "weight_decay", "seed", "train_accuracy",
                                       "train_loss", "min_intra", "max_inter", "nc1")) -> str:
    """A fixed-width text table of runs; unconverged runs are marked as the thesis drops them."""
    def fmt(v):
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    rows = [[fmt(r.get(c)) for c in cols] + ["" if r.get("converged") else
                                             ("DIVERGED" if r["diverged"] else "not converged")]
            for r in runs]
    head = list(cols) + ["status"]
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
