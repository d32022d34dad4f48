"""Ctrl-C and SIGTERM held to the end of a training step.

A training step changes its state in several places (ω after an outer step, then each
student's weights and optimiser state), so an interrupt raised in the middle of one leaves a
state that is no step's: a checkpoint of it, labelled with the last completed step, would
resume into that step again with part of it already done. :class:`HeldInterrupts` takes
over the handlers of SIGINT (Python's own, which raises ``KeyboardInterrupt``) and of
SIGTERM where a Python handler is installed (``minidml``'s command line turns it into an
interrupt), notes the signal, and lets :meth:`HeldInterrupts.check`, called between steps,
hand it to the handler it replaced. A second signal before that is handed on at once, and
the state is then marked torn (:attr:`HeldInterrupts.torn`): no checkpoint should be made of
it. Signals reach the main thread only, so elsewhere nothing is held (nothing interrupts a
step there either).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

HELD = (signal.SIGINT, signal.SIGTERM)  # the signals that stop a run with a checkpoint


class HeldInterrupts:
    """A context in which SIGINT and SIGTERM wait for :meth:`check` (see the module)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.pending: int | None = None
        self.torn = False
        self._before: dict[int, Any] = {}

    def __enter__(self) -> HeldInterrupts:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in HELD:
                handler = signal.getsignal(sig)
                if callable(handler):  # not SIG_DFL or SIG_IGN: a handler that raises
                    self._before[sig] = handler
                    signal.signal(sig, self._hold)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        self._before = {}

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = signum
            return
        self.torn = True  # asked twice: at once, whatever the step has done
        self._hand_on(signum, frame)

    def _hand_on(self, signum: int, frame: FrameType | None) -> None:
        handler = self._before[signum]
        self._restore()  # what follows (a checkpoint) is interrupted as usual
        handler(signum, frame)

    def check(self) -> None:
        """Between steps: a signal held since the last call is handed on now."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self._hand_on(signum, None)
