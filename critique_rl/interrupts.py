"""Clean stops: SIGINT/SIGTERM (or an alarm set to stop the run) finish the current step, checkpoint and
exit with a resume hint, or abandon an evaluation at once; a second SIGINT exits at once."""

from __future__ import annotations

import signal
from contextlib import contextmanager


class GracefulStop:
    """Context manager recording the first SIGINT/SIGTERM instead of dying mid-step.

    Inside, ``self.signal`` becomes the received signal number; the training loop checks it
    between steps. The first signal puts Python's default handlers back (KeyboardInterrupt for
    SIGINT), so a second Ctrl-C interrupts immediately; leaving restores the handlers found on entry.
    """

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        self._at_once = False

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        # Not the handlers found on entry: a process started in the background inherits an ignored
        # SIGINT, and the second Ctrl-C must still interrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if self._at_once:
            raise KeyboardInterrupt     # what libraries (vLLM, thread pools) already treat as "abort"
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
              "(press Ctrl-C again to exit at once)", flush=True)

    def __enter__(self) -> "GracefulStop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @contextmanager
    def at_once(self):
        """Inside, the first signal raises KeyboardInterrupt at once instead of waiting for the work to
        finish: for work that saves nothing and that a resume redoes (an evaluation)."""
        self._at_once = True
        try:
            yield
        finally:
            self._at_once = False

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal or 0)


ALARM_EXIT_CODE = 5        # an alarm configured to stop the run (critic.alarm_fallback_stop)


class TrainingInterrupted(Exception):
    """Raised after the checkpoint is written; carries the exit code and the resume hint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(Exception):
    """Too many optimizer steps in a row had a NaN or inf loss or gradient."""
