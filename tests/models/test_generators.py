"""The journey and shopping session generators: seeded, session-keyed, and of different shapes."""

import numpy as np

from stream_recs.datasets import to_sequences
from stream_recs.generators import journey_sessions, shopping_sessions


def _revisit_share(events) -> float:
    seqs = to_sequences(events).items
    repeats = sum(len(s) - len(np.unique(s)) for s in seqs)
    return repeats / sum(len(s) for s in seqs)


def test_generators_are_seeded_and_keyed_by_session():
    for make in (journey_sessions, shopping_sessions):
        a, b = make(n_events=3000, seed=1), make(n_events=3000, seed=1)
        assert a.fingerprint() == b.fingerprint() != make(n_events=3000, seed=2).fingerprint()
        assert a.session is not None and np.all(np.diff(a.ts) >= 0)
        assert all(len(s) >= 2 for s in to_sequences(a).items)


def test_shopping_goes_back_to_viewed_items_and_journeys_move_on():
    assert _revisit_share(shopping_sessions(n_events=5000)) > 0.15
    assert _revisit_share(journey_sessions(n_events=5000)) < 0.05
