"""The wall-clock budget of ``stream-recs tune``: a clock started before the data is loaded, the
projection that decides whether one more epoch or trial fits, and an alarm that interrupts
training when the budget runs out (so one slow epoch cannot overrun it)."""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Projected work fits only if what is left exceeds its projected cost by this factor: epochs of
# different settings vary, and an epoch cut short by the budget is wasted.
MARGIN = 1.25
_SLACK = 0.05  # seconds: an alarm this close to its due time counts as due (clocks differ)


class BudgetSpent(Exception):
    """Raised inside :meth:`Budget.enforced` when the budget runs out."""


class Budget:
    """``seconds`` of wall-clock time from ``started`` (``time.monotonic``; default: now), and the
    cost of every finished epoch (training plus validation), which the projections use."""

    def __init__(self, seconds: float, started: float | None = None):
        if seconds <= 0:
            raise ValueError("the budget must be positive")
        self.seconds = float(seconds)
        self.started = time.monotonic() if started is None else started
        self.epoch_costs: list[float] = []
        self._armed = self._rang = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def epoch_estimate(self) -> float | None:
        """The median cost of an epoch so far (None before the first)."""
        return statistics.median(self.epoch_costs) if self.epoch_costs else None

    def fits(self, cost: float | None) -> bool:
        """Whether work projected to take ``cost`` seconds (None: unknown) can finish in what is
        left, with ``MARGIN``; unknown work fits while any time is left."""
        return self.left() > MARGIN * (cost or 0.0)

    @contextmanager
    def enforced(self) -> Iterator[None]:
        """Run the block under an alarm that raises :class:`BudgetSpent` when the budget runs
        out. Only the main thread can take signals: elsewhere the block runs unguarded and the
        callers' checks between epochs are the only bound. An alarm already set outside (a test
        timeout, say) still rings when due and is set again afterwards."""
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
            yield
            return
        if self.left() <= 0:
            raise BudgetSpent
        outer_left, outer_interval = signal.getitimer(signal.ITIMER_REAL)
        outer = time.monotonic() + outer_left if outer_left else None  # when the outer one is due

        def ring(signum, frame):
            nonlocal outer
            if outer is not None and time.monotonic() >= outer - _SLACK:
                outer = None
                if callable(previous):
                    previous(signum, frame)
            if self.left() > _SLACK:  # the outer alarm rang, not ours: wait for ours
                signal.setitimer(signal.ITIMER_REAL, self.left())
                return
            self._rang = True
            if self._armed:
                raise BudgetSpent

        previous = signal.signal(signal.SIGALRM, ring)
        self._armed, self._rang = True, False
        signal.setitimer(signal.ITIMER_REAL, min(self.left(), outer_left or self.left()))
        try:
            yield
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer is not None:
                signal.setitimer(signal.ITIMER_REAL, max(outer - time.monotonic(), _SLACK),
                                 outer_interval)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Inside :meth:`enforced`, a section the alarm must not cut (bookkeeping of the search
        itself); a budget that ran out meanwhile is raised after it."""
        armed, self._armed = self._armed, False
        try:
            yield
        finally:
            self._armed = armed
        if armed and (self._rang or self.left() <= 0):
            raise BudgetSpent
