"""Preemption: SIGTERM (what cloud VMs and batch schedulers send before they kill a job) and
SIGINT (Ctrl-C) stop a sweep at the end of the current compiled chunk, after a checkpoint.

Without this, SIGTERM kills the process at once and SIGINT raises KeyboardInterrupt wherever the
interpreter happens to be: both lose every epoch since the last periodic checkpoint. Inside
`with PreemptionGuard():` (the command line holds one around training) the first signal only sets
a flag; the sweep loop (`nc_jax.training.train_runs`) sees it after the chunk in flight, lets its
hooks save (`CheckpointHook` writes a checkpoint at that epoch whatever its interval) and raises
`Preempted`, which the command line reports with the way to resume and exit status 128 + signal
(130 for SIGINT, 143 for SIGTERM). A second signal stops at once, as without the guard.

Outside a guard nothing changes: library calls keep Python's default signal behaviour.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Optional

#: SIGHUP: a closed terminal or a dropped ssh connection, which must save like any other stop.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Preempted(Exception):
    """A sweep stopped early on a signal, after saving what its hooks save."""

    def __init__(self, signum: int, epoch: Optional[int] = None,
                 total_epochs: Optional[int] = None):
        self.signum, self.epoch, self.total_epochs = int(signum), epoch, total_epochs
        at = f" at epoch {epoch} of {total_epochs}" if epoch is not None else ""
        super().__init__(f"interrupted by {self.signal_name}{at}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's status of a process killed by the signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signum


_active: Optional["PreemptionGuard"] = None


def pending() -> Optional[int]:
    """The signal number that asked the active guard to stop, or None."""
    guard = _active
    return guard.signum if guard is not None else None


def raise_if_pending(epoch: Optional[int] = None, total_epochs: Optional[int] = None) -> None:
    signum = pending()
    if signum is not None:
        raise Preempted(signum, epoch, total_epochs)


class PreemptionGuard:
    """Turns the first SIGINT / SIGTERM into a stop request (`pending()`) for the duration of
    the `with` block; previous handlers are restored on exit. Outside the main thread (where
    Python cannot install handlers) it does nothing."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}
        self._outer = None
        self._installed = self._entered = False

    def __enter__(self) -> "PreemptionGuard":
        global _active
        if threading.current_thread() is not threading.main_thread():
            return self
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handle)
        self._installed = self._entered = True
        self._outer, _active = _active, self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        self._restore()  # a second signal restored them already
        if self._entered:
            _active, self._entered = self._outer, False

    def _restore(self) -> None:
        if self._installed:
            for s, h in self._previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
            self._installed = False

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            name = signal.Signals(signum).name
            # os.write, not print: a handler may run in the middle of another write to stderr
            os.write(2, f"\n{name} received: stopping after the current compiled chunk and saving "
                        f"a checkpoint (send it again to stop at once)\n".encode())
            return
        self._restore()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)  # the previous disposition (default: terminate)
