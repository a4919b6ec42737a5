"""Run a subprocess that file permissions apply to, even when the tests run as root.

Root ignores permission bits (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so `chmod` alone cannot
make a directory unwritable or a file unreadable for it. `setpriv` (util-linux) drops those two
capabilities from the bounding set before exec; root's capabilities after exec are bounded by
that set, so the child is root without the override and the owner's permission bits apply to it.
Its own files (the interpreter under /root, the repository) stay readable: they are root's, with
owner bits set. (A `preexec_fn` doing the same would run Python between fork and exec of a
multithreaded JAX process, which can deadlock.)
"""
import os
import shutil
import subprocess
import sys

_SETPRIV = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def command(argv):
    """`argv` prefixed so that permission bits apply to the process."""
    return (_SETPRIV + list(argv)) if os.geteuid() == 0 else list(argv)


def why_impossible():
    """None when `command` works here, else the reason (for pytest.skip)."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        return "running as root and setpriv (util-linux) is missing: cannot drop CAP_DAC_OVERRIDE"
    p = subprocess.run(command([sys.executable, "-c", "pass"]), check=False, capture_output=True, text=True,
                       timeout=60)
    return None if p.returncode == 0 else f"setpriv cannot drop CAP_DAC_OVERRIDE: {p.stderr[-300:]}"
