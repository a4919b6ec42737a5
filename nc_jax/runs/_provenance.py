"""Which software produced a checkpoint or a results file.

A checkpoint resumed by other code would silently mix two versions in one run's numbers: the
epochs before the stop come from one, the rest from the other. Every checkpoint therefore records
`software()`: the nc-jax version, a SHA-256 of the package's source files (any edit, committed
or not, changes it), the git commit when the package sits in a git work tree, and the versions of
the libraries that compute the numbers (JAX, jaxlib, Flax, Optax). A resume compares the
`COMPARED` fields; the git commit is recorded to name the code, not compared, since a commit that
touches no file of the package changes no number (the source hash decides).
"""
from __future__ import annotations

import functools
import glob
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from typing import Any, List, Optional, Tuple

import jax

from nc_jax._version import __version__

#: The fields whose change makes a resumed run mix versions.
COMPARED = ("nc_jax", "nc_jax_source", "jax", "jaxlib", "flax", "optax")

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_sha256(package_dir: str = _PACKAGE_DIR) -> str:
    """SHA-256 over the package's .py files (relative path and content, in path order)."""
    h = hashlib.sha256()
    files = sorted(glob.glob(os.path.join(package_dir, "**", "*.py"), recursive=True))
    for f in files:
        h.update(os.path.relpath(f, package_dir).replace(os.sep, "/").encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(fh.read())
        h.update(b"\0")
    return h.hexdigest()


def git_commit(package_dir: str = _PACKAGE_DIR) -> Optional[str]:
    """HEAD of the git work tree holding the package, None when there is none (an installed
    wheel) or git is missing; "+dirty" when the package has uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", "-C", package_dir, *args], capture_output=True,
                              text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        # a virtualenv inside some unrelated repository is not this package's history
        tracked = git("ls-files", "--error-unmatch", "__init__.py")
        if tracked.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


@functools.lru_cache(maxsize=None)
def software() -> dict:
    """The software of this process (computed once: the code that was loaded)."""
    return {"nc_jax": __version__, "nc_jax_source": source_sha256(),
            "git_commit": git_commit(), "jax": jax.__version__, "jaxlib": _version("jaxlib"),
            "flax": _version("flax"), "optax": _version("optax"), "numpy": _version("numpy"),
            "python": platform.python_version()}


def differences(stored: dict, current: dict) -> List[Tuple[str, Any, Any]]:
    """(field, stored, current) for every `COMPARED` field that differs."""
    return [(k, stored.get(k), current.get(k)) for k in COMPARED
            if stored.get(k) != current.get(k)]


def describe(sw: Optional[dict]) -> str:
    """One line naming a `software()` dict (None: not recorded)."""
    if not sw:
        return "unrecorded versions (written before nc-jax recorded them)"
    commit = sw.get("git_commit")
    code = f"git {commit[:12]}{'+dirty' if commit.endswith('+dirty') else ''}, " if commit else ""
    return (f"nc-jax {sw.get('nc_jax')} ({code}source {str(sw.get('nc_jax_source'))[:12]}), "
            f"jax {sw.get('jax')}, jaxlib {sw.get('jaxlib')}, flax {sw.get('flax')}, "
            f"optax {sw.get('optax')}")
