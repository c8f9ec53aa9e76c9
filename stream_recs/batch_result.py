"""What scoring a micro-batch produces, aligned with its events, and how the results of a batch's
two canary sides (``Recommender.split``) become one again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stream_recs.canary import LIVE_ARM
from stream_recs.messages import Recommendation
from stream_recs.state import SessionState


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What ``step_batch`` produced, aligned with its input events."""

    recommendations: list[Recommendation]
    states: dict[str, SessionState]
    ranks: list[int | None]
    judged: list[str | None]  # per rank: the version whose answer it judged (None: not known)
    arms: list[int]  # the side of the canary that answered each event
    inference_seconds: float


def merged(n: int, parts: Sequence[tuple[Sequence[int], BatchResult]]) -> BatchResult:
    """One result for ``n`` events from the results of the parts ``split`` made of them."""
    if len(parts) == 1 and len(parts[0][0]) == n:  # one side (no canary): in order already
        return parts[0][1]
    recommendations: list = [None] * n
    ranks: list = [None] * n
    judged: list = [None] * n
    arms = [LIVE_ARM] * n
    states: dict[str, SessionState] = {}
    for positions, part in parts:
        for j, i in enumerate(positions):
            recommendations[i], ranks[i], judged[i], arms[i] = (
                part.recommendations[j], part.ranks[j], part.judged[j], part.arms[j])
        states.update(part.states)
    return BatchResult(recommendations, states, ranks, judged, arms,
                       sum(part.inference_seconds for _, part in parts))
