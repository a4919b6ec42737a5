"""Joining the results of presets that were split by group (so that each trains within an hour
on a small CPU) into one results document and its figures: `merge_results`, and the `merge`
subcommand of every experiment's command line (`python experiments/<script>.py merge ...`)."""
from __future__ import annotations

import argparse
import os
import sys

from nc_jax.config import SweepConfig
from nc_jax.runs import get_experiment, load_results, write_results


def merge_results(out_dir: str, parts, preset: str, rename=None, experiment=None) -> dict:
    """One results document (and its figures) in `out_dir` from the results directories `parts`
    of per-group presets (e.g. paper-cnn-affine, -plain, -none), so that a figure shows every
    group. The parts must hold one experiment (`experiment`, when given), have been trained on
    the same data and have distinct groups; runs, configs and timings are concatenated in the
    given order, and the experiment's own figures are drawn.

    rename: {old group: new group}, applied to every part before joining. A group's name does not
    enter its random keys (they come from the config's seeds), so two groups with equal configs
    train the same runs: e.g. "cnn affine" of paper-cnn-affine *is* the loss panel's "cnn ce",
    and renaming it saves training that group again. Every old name must be a group of a part."""
    docs = [load_results(p) for p in parts]
    if not docs:
        raise ValueError("merge: name at least one results directory")
    name = experiment or docs[0].get("experiment")
    rename = dict(rename or {})
    unknown = set(rename) - {g for d in docs for g in d.get("configs", {})}
    if unknown:
        raise ValueError(f"merge: --rename names group(s) {sorted(unknown)} that no part has")
    docs = [_renamed(d, rename) for d in docs]
    configs, runs, timing = {}, [], {}
    for p, d in zip(parts, docs):
        if d.get("experiment") != name:
            raise ValueError(f"merge: {p} holds experiment {d.get('experiment')!r}, not {name!r}")
        if d.get("data") != docs[0].get("data"):
            raise ValueError(f"merge: {p} was trained on other data than {parts[0]}")
        clash = set(d["configs"]) & set(configs)
        if clash:
            raise ValueError(f"merge: group(s) {sorted(clash)} of {p} appear in another part")
        configs.update({g: SweepConfig.from_dict(c) for g, c in d["configs"].items()})
        runs += d["runs"]
        timing.update(d.get("timing") or {})
    extra = {"wall_time_s": sum(d.get("wall_time_s") or 0.0 for d in docs), "timing": timing,
             "data": docs[0].get("data"), "merged_from": [os.path.abspath(p) for p in parts],
             "merged_presets": [d.get("preset") for d in docs], "renamed_groups": rename}
    write_results(out_dir, name, preset, configs, runs, extra)
    doc = load_results(out_dir)
    get_experiment(name).plot(doc, out_dir)
    return doc


def _renamed(doc: dict, rename: dict) -> dict:
    """`doc` with its groups renamed by {old: new} (configs, runs, timing)."""
    if not rename:
        return doc
    new = lambda g: rename.get(g, g)  # noqa: E731
    return dict(doc, configs={new(g): c for g, c in doc["configs"].items()},
                runs=[dict(r, group=new(r["group"])) for r in doc["runs"]],
                timing={new(g): t for g, t in (doc.get("timing") or {}).items()})


def merge_main(argv=None, experiment=None) -> int:
    """`python experiments/<script>.py merge --out DIR [--preset NAME] PART ...`."""
    ap = argparse.ArgumentParser(prog="merge", description=merge_results.__doc__)
    ap.add_argument("parts", nargs="+", help="results directories of per-group presets")
    ap.add_argument("--out", required=True, help="directory of the merged results.json")
    ap.add_argument("--preset", default="merged", help="preset name recorded (e.g. paper-cnn)")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                    help="rename group OLD to NEW (repeatable), e.g. 'cnn affine=cnn ce'")
    args = ap.parse_args(argv)
    try:
        rename = {}
        for item in args.rename:
            old, sep, new = item.partition("=")
            if not sep or not old.strip() or not new.strip():
                raise ValueError(f"merge: --rename {item!r} is not of the form OLD=NEW")
            rename[old.strip()] = new.strip()
        doc = merge_results(args.out, args.parts, args.preset, rename, experiment)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(doc['runs'])} runs of {len(doc['configs'])} groups merged into {args.out}")
    return 0
