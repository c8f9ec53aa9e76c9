"""Which models the model-updates topic says should serve: the live one, and a candidate on its
canary share of users. A pure state machine over the topic's records, so that a worker starting
up, a worker following the topic and the trainer all read it the same way.

- A ``FULL`` announcement makes its model live for everyone and ends any canary (a canary
  announcement with no live model goes live too).
- A ``CANARY`` announcement makes its model the candidate (replacing an earlier one), unless it
  is the live model already.
- A ``PROMOTE`` decision makes the candidate live; a ``ROLLBACK`` drops it. A decision about any
  other version is stale (another worker decided first, or a newer candidate came) and is ignored:
  the first decision on the topic wins, so every reader ends in the same state.

Workers publish the decisions (``canary.py``); the topic keeps 30 days, deleting oldest first,
so a decision is always read after the announcement it decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from stream_recs.messages import (
    CANARY,
    FULL,
    PROMOTE,
    CanaryDecision,
    ModelUpdate,
    ModelUpdateError,
    decode_model_record,
)

LIVE, CANDIDATE, PROMOTED, ROLLED_BACK = "live", "candidate", "promoted", "rolled_back"


@dataclass(frozen=True)
class Rollout:
    """The announced live model and the candidate in its canary (None: none)."""

    live: ModelUpdate | None = None
    candidate: ModelUpdate | None = None
    newest: ModelUpdate | None = None  # the last announcement read, rolled back or not

    def _with(self, live: ModelUpdate | None, candidate: ModelUpdate | None,
              newest: ModelUpdate | None = None) -> Rollout:
        return Rollout(live, candidate, newest or self.newest)

    def after(self, record: ModelUpdate | CanaryDecision) -> tuple[Rollout, str | None]:
        """The state after ``record``, and what changed: ``LIVE`` (a new live model),
        ``CANDIDATE`` (a new candidate), ``PROMOTED``, ``ROLLED_BACK``, or None (nothing)."""
        if isinstance(record, CanaryDecision):
            if self.candidate is None or record.version != self.candidate.version:
                return self, None
            if record.decision == PROMOTE:
                return self._with(dataclasses.replace(self.candidate, rollout=FULL), None), PROMOTED
            return self._with(self.live, None), ROLLED_BACK
        if record.rollout == CANARY and self.live is not None:
            if record.version == self.live.version or (
                self.candidate is not None and record.version == self.candidate.version
            ):
                return self, None
            return self._with(self.live, record, record), CANDIDATE
        if self.live is not None and record.version == self.live.version and self.candidate is None:
            return self, None
        return self._with(dataclasses.replace(record, rollout=FULL), None, record), LIVE

    @classmethod
    def replay(cls, values: Iterable[bytes | None], start: Rollout | None = None) -> Rollout:
        """The state after the raw records ``values`` in topic order (from ``start``, or nothing
        announced); a malformed record changes nothing."""
        state = start or cls()
        for raw in values:
            try:
                record = decode_model_record(raw)
            except ModelUpdateError:
                continue
            state, _ = state.after(record)
        return state
