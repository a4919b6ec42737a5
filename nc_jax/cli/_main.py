"""The command line (`nc-sweep`, `python -m nc_jax.cli`): any registered experiment preset or a
custom sweep, with config overrides, your own data and model by name.

    nc-sweep --preset demo                                 # a custom sweep from a config preset
    nc-sweep --config my.json --set model.width=128 --set weight_decays=[1e-4,1e-3] --out runs/x
    nc-sweep --experiment fig3_1 --preset quick            # a thesis experiment (= its script)
    nc-sweep --preset demo --model cnn --data digits.npz --loss mse --out runs/cnn
    nc-sweep --import mymodels --model mynet --loss mine   # your registered model and loss

Every run writes the NC report (final numbers, per-run curves; `--layers`: per-layer metrics)
to `results.json` / `results.csv` in the output directory (experiments: `runs/<name>/<preset>`
by default; a custom sweep writes only with `--out`, checkpointing every 10 epochs there and
resuming on a re-run). `--set field=value` sets any `SweepConfig` field by its dotted name
(value as JSON, else a string), validated by `SweepConfig.from_dict`: an unknown field is
named. `--import MODULE` imports a module of yours first, so that its `register_model` /
`register_loss` calls make a model or loss usable by name. Bad values print `error: <message>`
and exit with status 2, never a traceback.

The output directory is locked for the whole run (`nc_jax.runs.OutDirLock`: a second run on it is refused at
once, naming the holder; the lock also proves the directory writable before any training).
SIGTERM / SIGINT stop training after the current compiled chunk, save a checkpoint there, print
how to resume and exit with 143 / 130 (`nc_jax.training.PreemptionGuard`). A full disk, a
file-size limit or a lack of memory prints `error: ...`, what is saved and how to resume, and
exits with 75 (`nc_jax.cli._faults`). An unfinished checkpoint written by
other software is only continued with --allow-version-change (`nc_jax.runs.software`).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import shlex
import signal
import sys
import time
from typing import Dict, List, Optional

import jax

import nc_jax.thesis  # noqa: F401  (registers the thesis' experiments)
from nc_jax._files import ResourceError, resource_fault
from nc_jax.cli._custom import CUSTOM, CUSTOM_FIGURES
from nc_jax.cli._faults import ignore_sigxfsz, report_resource
from nc_jax.cli._outdir import own_results, report_preemption, resume_notes
from nc_jax.config import PRESETS, ConfigError, SweepConfig
from nc_jax.runs import (CHECKPOINT_NAME, RESULT_FILES, CheckpointError, Experiment, OutDirError,
                         OutDirLock, check_reanalysable, enable_compile_cache, get_experiment,
                         load_results, prepare_out_dir, run_experiment, runs_table,
                         write_results)
from nc_jax.training import Preempted, PreemptionGuard, is_main_process

#: Checkpoint interval (epochs) of a custom sweep's `--out` when neither --checkpoint-every nor
#: the preset sets one: frequent enough to lose little on a kill, rare enough to cost nothing.
DEFAULT_CHECKPOINT_EVERY = 10


class ModuleImportError(ImportError):
    """A module named by `--import` cannot be imported."""


ERRORS = (ConfigError, ValueError, FileNotFoundError, OutDirError, CheckpointError, KeyError,
          ModuleImportError)


def import_modules(names: List[str]) -> None:
    """Import every module of `--import`, in order, before any config is built: a module that
    registers a model or loss (`nc_jax.models.register_model`, `nc_jax.losses.register_loss`)
    makes its name valid in `--model` / `--loss` / `--set`. The `nc-sweep` script, unlike
    `python -m`, does not search the current directory, so it is added at the end of the search
    path: `--import mymodels` finds `./mymodels.py`, and shadows no installed package. Any
    failure of the import, the module's own code included, is a ModuleImportError naming the
    module."""
    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 (a user's module may fail in any way on import)
            reason = str(e) if isinstance(e, ImportError) else f"{type(e).__name__}: {e}"
            raise ModuleImportError(f"cannot import {name}: {reason}") from e


def _unique_keys(pairs):
    """A JSON object whose keys are distinct: with json's default the last duplicate would win
    silently (`{"optim": {...}, "optim": {...}}` trains the second)."""
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"--config: key(s) {dup} appear more than once in one object; "
                          f"write each once")
    return dict(pairs)


def _read_config(path: str) -> dict:
    """The JSON object of a --config file; every way the file can be unusable is a ConfigError
    that names it (a directory, unreadable, not JSON, nested beyond reason, duplicate keys)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except IsADirectoryError:
        raise ConfigError(f"--config {path} is a directory; give a SweepConfig JSON file") from None
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path} cannot be read ({e})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {path} is not valid JSON ({e})") from None
    except RecursionError:
        raise ConfigError(f"--config {path} is nested too deeply to be a SweepConfig") from None


def parse_value(text: str):
    """A `--set` value: JSON (numbers, lists, dicts, true/false, null), a comma list of JSON
    values, with or without brackets (`[last_bn,head]`: unquoted names), else the string itself
    (`--set model.name=cnn`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if text.startswith("[") and text.endswith("]"):
        return [parse_value(p.strip()) for p in text[1:-1].split(",") if p.strip()]
    if "," in text:
        return [parse_value(p.strip()) for p in text.split(",") if p.strip()]
    return text


def apply_overrides(cfg: SweepConfig, sets: List[str]) -> SweepConfig:
    """`cfg` with every `field=value` of `sets` applied (dotted names into the sections)."""
    if not sets:
        return cfg
    d = cfg.to_dict()
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects field=value, got {item!r}")
        field, value = item.split("=", 1)
        keys = field.strip().split(".")
        node = d
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise ConfigError(f"unknown config field {field!r}: {k!r} is not a section; "
                                  f"sections: {[n for n, v in d.items() if isinstance(v, dict)]}")
            node = node[k]
        node[keys[-1]] = parse_value(value.strip())
    return SweepConfig.from_dict(d)


def build_parser(experiment: Optional[str]) -> argparse.ArgumentParser:
    what = f"experiment {experiment}" if experiment else "a sweep or experiment"
    ap = argparse.ArgumentParser(description=f"nc-jax: train {what} as one vmapped program and "
                                             f"write its NC report.")
    if experiment is None:
        ap.add_argument("--experiment", help="a registered experiment (fig3_1, fig3_3, "
                                             "data_complexity, real_data); default: a custom sweep")
        ap.add_argument("--config", metavar="FILE", help="a SweepConfig JSON file (custom sweep)")
    ap.add_argument("--preset", help="the experiment's preset (custom sweep: a config preset, "
                                     f"one of {sorted(PRESETS)})")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field, e.g. model.width=128, optim.epochs=50, "
                         "weight_decays=[1e-4,1e-3], loss.name=mse (repeatable)")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                    help="import MODULE first (repeatable), e.g. one whose register_model / "
                         "register_loss calls make --model / --loss NAME of yours usable")
    ap.add_argument("--model", help="model by name (mlp, cnn, resnet or registered): "
                                    "--set model.name=NAME")
    ap.add_argument("--loss", help="loss by name (ce, mse, label_smoothing or registered): "
                                   "--set loss.name=NAME")
    ap.add_argument("--data", metavar="NPZ", help="train on x (N, ...), y (N,) from an .npz file")
    for flag, kind, field in (("--bn", str, "model.bn"), ("--depth", int, "model.depth"),
                              ("--width", int, "model.width"), ("--epochs", int, "optim.epochs"),
                              ("--weight-decays", str, "weight_decays"), ("--seeds", str, "seeds")):
        ap.add_argument(flag, type=kind, help=f"shortcut for --set {field}=...")
    ap.add_argument("--layers", action="store_true", help="per-layer metrics and effective depth")
    ap.add_argument("--out", metavar="DIR", help="output directory")
    ap.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    ap.add_argument("--plot-only", action="store_true", help="redraw figures from results.json")
    ap.add_argument("--reanalyse", action="store_true",
                    help="recompute results.json, results.csv and the figures from the final "
                         "checkpoints in --out without training (e.g. after adding a metric)")
    ap.add_argument("--checkpoint-every", type=int, metavar="N",
                    help="save every N epochs (custom sweep with --out: default "
                         f"{DEFAULT_CHECKPOINT_EVERY}); the end is always saved")
    ap.add_argument("--runs-per-device", type=int, metavar="B",
                    help="runs each device computes per compiled call (default: all of a group's "
                         "runs in one call); a fixed B gives bit-identical results on any number "
                         "of devices")
    ap.add_argument("--allow-version-change", action="store_true",
                    help="continue an unfinished checkpoint written by other software (nc-jax "
                         "source, JAX, jaxlib, Flax, Optax); by default that is refused")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--no-compile-cache", action="store_true",
                    help="do not use the persistent compilation cache (default: on, in "
                         "~/.cache/nc-jax/xla or $NC_JAX_CACHE_DIR; a hit loads the executable "
                         "the compiler would produce, so numbers do not change)")
    return ap


def _numbers(text: str, kind, flag: str, what: str) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} expects comma-separated {what}, got {text!r}") from None


def _floats(text: str) -> list:
    return _numbers(text, float, "--weight-decays", "numbers (e.g. 1e-4,1e-3)")


def _ints(text: str) -> list:
    return _numbers(text, int, "--seeds", "integers (e.g. 0,1,2)")


def _overrides(args) -> List[str]:
    """The shortcut flags as `--set` items (applied before the explicit `--set`s)."""
    values = (("model.name", args.model), ("loss.name", args.loss), ("model.bn", args.bn),
              ("model.depth", args.depth), ("model.width", args.width),
              ("optim.epochs", args.epochs),
              ("weight_decays",
               None if args.weight_decays is None else _floats(args.weight_decays)),
              ("seeds", None if args.seeds is None else _ints(args.seeds)),
              ("runs_per_device", args.runs_per_device),
              ("checkpoint_every", args.checkpoint_every))
    sets = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values if v is not None]
    if args.data is not None:
        sets += ["data.kind=npz", f"data.path={os.path.abspath(args.data)}"]
    return sets + list(args.set)


def _configs(exp: Experiment, args, custom: bool) -> Dict[str, SweepConfig]:
    if custom and getattr(args, "config", None):
        configs = {"sweep": SweepConfig.from_dict(_read_config(args.config))}
    else:
        configs = exp.configs(args.preset)
    sets = _overrides(args)
    configs = {g: apply_overrides(c, sets) for g, c in configs.items()}
    if custom and args.out is not None:
        # a custom sweep with --out checkpoints by default, on a multiple of its compiled chunk
        configs = {g: c if c.checkpoint_every else c.replace(checkpoint_every=(
            c.record_every * math.ceil(DEFAULT_CHECKPOINT_EVERY / c.record_every)
            if c.record_every else DEFAULT_CHECKPOINT_EVERY)) for g, c in configs.items()}
    return configs


def _command(argv, experiment: Optional[str], *, for_resume: bool = False) -> str:
    """The command line as typed (for the lock file and the resume hint); `for_resume` drops
    --overwrite, which would delete the checkpoint that the resume needs."""
    if argv is None:
        argv, prog0 = sys.argv[1:], sys.argv[0]
        prog = (["python", "-m", "nc_jax.cli"] if prog0.endswith(os.path.join("nc_jax", "cli.py"))
                else ["python", prog0] if prog0.endswith(".py") else [os.path.basename(prog0)])
    else:
        prog = ["nc-sweep"] + (["--experiment", experiment] if experiment else [])
    argv = [str(a) for a in argv]
    if for_resume:  # argparse also accepts any unambiguous prefix of --overwrite
        argv = [a for a in argv if not (a.startswith("--ov") and "--overwrite".startswith(a))]
    return shlex.join(prog + argv)


def main(argv=None, experiment: Optional[str] = None) -> int:
    ap = build_parser(experiment)
    args = ap.parse_args(argv)
    name = experiment or args.experiment
    custom = name is None
    if not args.no_compile_cache:
        # before the first compile: ~60% of a `quick` preset's wall time is compiling
        enable_compile_cache()
    if custom and args.out is None and (args.overwrite or args.checkpoint_every is not None
                                        or args.reanalyse or args.plot_only):
        ap.error("--overwrite, --checkpoint-every, --reanalyse and --plot-only need --out DIR")
    ignore_sigxfsz()
    try:
        import_modules(args.imports)
        with contextlib.ExitStack() as stack:
            return _run(args, name, custom, stack, _command(argv, experiment),
                        _command(argv, experiment, for_resume=True))
    except KeyboardInterrupt:
        print("error: stopped at once by a second signal; the last checkpoint saved before it "
              "(if any) is intact: re-run the same command to resume from it", file=sys.stderr)
        return 130
    except ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ResourceError, MemoryError, OSError) as e:  # before training: nothing to resume
        # (the last clause: any other OSError propagates as before)
        if not isinstance(e, ResourceError) and resource_fault(e) is None:
            raise
        return report_resource(e, None, None, _command(argv, experiment, for_resume=True))


def _run(args, name: Optional[str], custom: bool, stack: contextlib.ExitStack, command: str,
         resume_command: str) -> int:
    exp = CUSTOM if custom else get_experiment(name)
    args.preset = args.preset or exp.default_preset
    if args.layers:
        import dataclasses
        exp = dataclasses.replace(exp, layers=True)
    out = args.out if (custom or args.out is not None) else os.path.join("runs", exp.name,
                                                                         args.preset)
    if out == "":
        raise OutDirError("--out must name a directory, got ''")

    def lock(create: bool = True) -> None:
        # one writer per directory for the whole run; taking the lock also proves, before any
        # training, that the directory can be created and written
        if out is not None and is_main_process() and (create or os.path.isdir(out)):
            stack.enter_context(OutDirLock(out, command))

    if args.plot_only:
        lock(create=False)
        if not os.path.exists(os.path.join(out, "results.json")):
            raise OutDirError(f"--plot-only: no results in {out} (results.json is missing); run "
                              f"without --plot-only first")
        exp.plot(load_results(out), out)
        return 0
    configs = _configs(exp, args, custom)
    ckpts = {exp.checkpoint_name(g): c for g, c in configs.items()}
    lock(create=not args.reanalyse)
    previous = None
    if out is None:
        pass
    elif args.reanalyse:
        check_reanalysable(exp, configs, out, args.preset)
        previous = own_results(out, exp, args.preset, configs, overwrite=args.overwrite,
                                action="--reanalyse")
    else:
        found = [c for c in ckpts if os.path.exists(os.path.join(out, c))]
        res_file = os.path.join(out, "results.json")
        if os.path.exists(res_file) and not args.overwrite:
            if not (custom and found):
                raise OutDirError(f"output directory {out} already holds results of another "
                                  f"run ({res_file}); pass --overwrite to replace them, --out to "
                                  f"write elsewhere, or --reanalyse to recompute them from the "
                                  f"checkpoints")
            # the checkpoint's identity check names any differing config field
            own_results(out, exp, args.preset, configs, overwrite=False, action="resuming",
                         compare_configs=False)
        mode = prepare_out_dir(out, overwrite=args.overwrite, resume=bool(found),
                               checkpoint_name=found[0] if found else CHECKPOINT_NAME,
                               artifacts=tuple(ckpts) + RESULT_FILES
                               + (CUSTOM_FIGURES if custom else ()))
        if mode == "overwrite":  # the checkpoints found are deleted: the run starts afresh
            found = []
        resume_notes(out, found, ckpts, args.allow_version_change)
    t0 = time.perf_counter()
    try:
        with PreemptionGuard() as guard:
            runs, extra = run_experiment(exp, configs, out_dir=out, progress=not args.quiet,
                                         allow_version_change=args.allow_version_change)
            wall = time.perf_counter() - t0
            _finish(args, exp, configs, out, runs, extra, previous, wall)
    except Preempted as p:
        report_preemption(p, out, ckpts, resume_command)
        return p.exit_code
    except (ResourceError, MemoryError, OSError) as e:  # a full disk, a file-size limit, ...
        if not isinstance(e, ResourceError) and resource_fault(e) is None:
            raise
        return report_resource(e, out, ckpts, resume_command)
    if guard.signum is not None and is_main_process():
        print(f"({signal.Signals(guard.signum).name} arrived after training: the results above "
              f"are complete)", file=sys.stderr)
    return 0


def _finish(args, exp: Experiment, configs, out: Optional[str], runs: List[dict], extra: dict,
            previous: Optional[dict], wall: float) -> None:
    extra = {"wall_time_s": wall, **extra}
    if args.reanalyse:
        extra["reanalysed"] = True
        if previous is not None:
            # the training times are those of the run that wrote the checkpoints (only ever
            # taken from this run's own results: `own_results`)
            extra.update({k: previous[k] for k in ("wall_time_s", "timing") if k in previous})
            extra["reanalysis_wall_time_s"] = wall
    if out is not None and is_main_process():
        try:
            write_results(out, exp.name, args.preset, configs, runs, extra)
            exp.plot(load_results(out), out)
        except OSError as e:
            raise OutDirError(f"cannot write the results to {out} ({e}); the checkpoints there "
                              f"are intact: re-run the same command to write them") from e
    if is_main_process():
        print(runs_table(runs, cols=("group", "model", "loss", "weight_decay", "seed",
                                     "train_accuracy", "train_loss", "min_intra", "max_inter",
                                     "nc1")))
        where = f"; results and figures in {out}" if out else ""
        print(f"{len(runs)} runs in {wall:.1f} s on {jax.devices()[0].platform}{where}")


def experiment_main(name: str, argv=None) -> int:
    """The command line of one registered experiment (what `experiments/<script>.py` calls):
    `main` with the experiment fixed, so every script takes the same flags; `merge PART ...`
    joins the results of presets split by group (`nc_jax.thesis.merge_results`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["merge"]:
        return nc_jax.thesis.merge_main(args[1:], experiment=name)
    return main(argv, experiment=name)
