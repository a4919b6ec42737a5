"""An output directory of the CLI: whose results it holds, what resumes from it, and what a
stop left in it.

`own_results` refuses to overwrite another run's results (another experiment, preset or config);
`resume_notes` says which checkpoint resumes at which epoch, refusing an unfinished checkpoint of
other software before anything is compiled (`nc_jax.runs.software`); `report_preemption` tells, after
SIGTERM / SIGINT, which checkpoints were saved and the command that resumes them.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

from nc_jax.config import SweepConfig, canonical_dict
from nc_jax.runs import (CheckpointError, Experiment, OutDirError, check_software, checkpoint_epoch,
                         config_differences, load_results, read_checkpoint)
from nc_jax.training import Preempted, is_main_process


def same_configs(stored: Optional[dict], configs: Dict[str, SweepConfig]) -> bool:
    if not isinstance(stored, dict) or sorted(stored) != sorted(configs):
        return False
    return not any(config_differences(canonical_dict(stored[g]), canonical_dict(c.to_dict()))
                   for g, c in configs.items())


def own_results(out: str, exp: Experiment, preset: str, configs: Dict[str, SweepConfig], *,
                 overwrite: bool, action: str, compare_configs: bool = True) -> Optional[dict]:
    """results.json of `out` when it is this very run's (same experiment, preset and, with
    `compare_configs`, configs), None when there is none (or `overwrite` allows replacing
    another's); any other results are refused, so `action` never overwrites another
    experiment's results and figures."""
    res_file = os.path.join(out, "results.json")
    if not os.path.exists(res_file):
        return None
    try:
        doc = load_results(out)
        if not isinstance(doc, dict):
            raise ValueError("not a results document")
    except (OSError, ValueError) as e:
        if overwrite:
            return None
        raise OutDirError(f"{res_file} cannot be read ({e}); {action} would replace it: pass "
                          f"--overwrite to do so, or choose another --out") from e
    if (doc.get("experiment") == exp.name and doc.get("preset") == preset
            and (not compare_configs or same_configs(doc.get("configs"), configs))):
        return doc
    if overwrite:
        return None
    theirs = f"experiment {doc.get('experiment')!r}, preset {doc.get('preset')!r}"
    if doc.get("experiment") == exp.name and doc.get("preset") == preset:
        theirs += ", another configuration"
    raise OutDirError(f"output directory {out} holds results of another run ({theirs}); {action} "
                      f"would overwrite them and their figures: pass --overwrite to replace "
                      f"them, or choose another --out")


def resume_notes(out: str, found: List[str], ckpts: Dict[str, SweepConfig], allow: bool) -> None:
    """Say what resumes from where, and refuse (before any data is made or compiled) an
    unfinished checkpoint of other software."""
    for c in found:
        path = os.path.join(out, c)
        meta = read_checkpoint(path)[0]
        epoch, total = int(meta["epoch"]), ckpts[c].optim.epochs
        if epoch < total:
            note = check_software(path, meta, allow_version_change=allow)
            if note:
                print(f"warning: {note}\n--allow-version-change: continuing anyway",
                      file=sys.stderr)
        print(f"resuming from {path} (epoch {epoch} of {total})", file=sys.stderr)


def saved_checkpoints(out: str, ckpts: Dict[str, SweepConfig]) -> List[str]:
    """One line per checkpoint present in `out`: its path and epoch (or why it is unreadable)."""
    saved = []
    for c, cfg in ckpts.items():
        path = os.path.join(out, c)
        try:
            ep = checkpoint_epoch(path)
        except CheckpointError as e:
            saved.append(f"  {path}: unreadable ({e})")
            continue
        if ep is not None:
            saved.append(f"  {path}: epoch {ep} of {cfg.optim.epochs}")
    return saved


def how_to_resume(out: Optional[str], ckpts: Dict[str, SweepConfig], command: str,
                  none_yet: str = "stopped before the first chunk ended") -> List[str]:
    """What a stopped run left to resume from, and the command that does it."""
    if out is None:
        return ["Nothing was saved: without --out a sweep keeps no checkpoint (pass --out DIR to "
                "make it resumable)."]
    saved = saved_checkpoints(out, ckpts)
    if saved:
        return ["Checkpoints saved:"] + saved + [f"Resume with the same command: {command}"]
    return [f"No checkpoint was written yet ({none_yet}); the same command starts afresh: "
            f"{command}"]


def report_preemption(p: Preempted, out: Optional[str], ckpts: Dict[str, SweepConfig],
                       command: str) -> None:
    if not is_main_process():
        return
    lines = [f"interrupted by {p.signal_name}: stopped after the last complete compiled chunk."]
    print("\n".join(lines + how_to_resume(out, ckpts, command)), file=sys.stderr)
