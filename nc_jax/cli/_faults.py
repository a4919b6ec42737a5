"""The machine ran out of something: disk space or quota, the file-size limit, or memory.

Such a run did nothing wrong and its files are intact (every write is atomic: the previous
checkpoint or results file stays, the temp file is removed), so the command says what ran out,
what to do, and how to resume, and exits with `EXIT_RESOURCE` (75, `EX_TEMPFAIL` of sysexits.h:
retry once the resource is back), distinct from the 2 of bad input.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Dict, Optional

from nc_jax._files import ResourceError, resource_fault
from nc_jax.cli._outdir import how_to_resume
from nc_jax.config import SweepConfig
from nc_jax.training import is_main_process

#: Exit status of a run stopped by a lack of disk space, quota, file size or memory.
EXIT_RESOURCE = 75


def ignore_sigxfsz() -> None:
    """A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills the process without
    a word (and loses the training); ignored, the write fails with EFBIG, which is reported.
    CPython ignores it at start-up; an embedding program may have restored the default."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _advice(what: str) -> str:
    if what == "out of memory":
        return ("free memory (other programs, or fewer runs per compiled call: "
                "--runs-per-device; a smaller grid or model)")
    if "file-size limit" in what:
        return "raise the limit (ulimit -f unlimited) or write elsewhere (--out)"
    return "free space on that file system (or write elsewhere: --out)"


def report_resource(e: BaseException, out: Optional[str],
                    ckpts: Optional[Dict[str, SweepConfig]], command: str) -> int:
    """Print `error: <what ran out> while writing <file>; <what to do>`, what is saved and the
    command that resumes (`ckpts` None: stopped before training); return EXIT_RESOURCE."""
    if is_main_process():
        what = e.what if isinstance(e, ResourceError) else resource_fault(e)
        where = f" while writing {e.path}" if isinstance(e, ResourceError) else ""
        detail = e.__cause__ if isinstance(e, ResourceError) else e
        why = f" ({detail.strerror})" if isinstance(detail, OSError) and detail.strerror else ""
        lines = [f"error: {what}{where}{why}; {_advice(what)}, then re-run the same command.",
                 "No file was corrupted: every file is written whole to a temp file and renamed "
                 "into place, and the unfinished temp file was removed."]
        if ckpts is None:
            lines.append(f"Nothing was trained; re-run with: {command}")
        else:
            lines += how_to_resume(out, ckpts, command, none_yet="the first save failed")
        print("\n".join(lines), file=sys.stderr)
    return EXIT_RESOURCE
