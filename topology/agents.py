"""The worker's wiring: clicks in, recommendations and dead letters out, model updates, the
popularity fallback's shared counts, timers.

Follow one click: ``recommend`` takes a micro-batch (of clicks and forget requests, whose topics
are co-partitioned); ``offsets.InOrder`` admits each partition's records once and in offset
order, a forget request only after its user's earlier clicks (``forgetting.py``);
``intake.route_batch`` decides what each record becomes (a
dead letter, a re-keyed copy, a forget request, or an event to answer); for each group of events
to answer, the clicks are counted for the popularity fallback (by partition and offset,
``popularity.py``), ``tables.load_states`` fetches the users' states, ``Recommender.begin_batch``
(scoring.py) advances them, ``Ranker.top_k`` (ranker_child.py) finds their top-K, in a child
process while the event loop goes on, ``finish_batch`` makes the answers, ``tables.save_states``
writes the states back, and one Recommendation per event is produced, keyed by user.

Offsets are committed after the batch body (at-least-once: a crash replays the batch; outputs
carry the event id), and only admitted records count (``offsets.mark_processed``). Under
exactly-once, a click's outputs go into its partition's transaction and commits wait for the
batch to end (transactions.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import faust

from stream_recs.events import Limits
from stream_recs.intake import DEAD_LETTER, Answer, Erase, Rules, Send, route_batch
from stream_recs.messages import encode_recommendation
from stream_recs.metrics import Metrics
from stream_recs.model_updates import UNCHECKED, Trust, follow_model_updates
from stream_recs.popularity_feed import follow_popularity
from stream_recs.privacy import load_pseudonymiser
from stream_recs.ranker_child import Ranker
from stream_recs.scoring import Recommender

from .app import Topology
from .forgetting import start_forgetting
from .offsets import InOrder, first_record, mark_processed, transactional
from .tables import SharedCounts, StoredUsers, forget, load_states, save_states
from .timers import start_timers
from .transactions import BatchGate, output_sender


def wire(
    topology: Topology, recommender: Recommender, metrics: Metrics, bootstrap: str,
    ranker: Ranker | None = None, trust: Trust = UNCHECKED,
) -> None:
    """Attach the agent, the model-update watcher (which applies announcements that satisfy
    ``trust``), the popularity counts' reader, the ranker's lifecycle and the timers to the app.
    Without ``ranker``, batches are ranked in-process."""
    app, settings = topology.app, topology.settings
    ranker = ranker or Ranker(recommender.options, enabled=False)
    w = settings.worker
    pseudonym = load_pseudonymiser(w.pseudonymise_key, w.pseudonymise_key_file)
    rules = Rules(settings.topics, Limits(max_record_bytes=w.max_record_bytes), pseudonym)
    first = first_record(bootstrap, settings.security) if transactional(app) else None
    order = InOrder(app, first, on_truncated=lambda tp, count: metrics.record_truncated(count))
    send = output_sender(topology)
    gate = BatchGate(app)
    stored = StoredUsers(topology.sessions)
    popularity = recommender.popularity
    popularity.partitions = settings.partitions
    counts = SharedCounts(topology.popularity, popularity, settings.topics.clicks)
    recommendations = settings.topics.recommendations
    forget_topic = settings.topics.forget
    barriers = start_forgetting(topology, order, bootstrap)

    async def answer(step: Answer, batch: Sequence[faust.types.EventT], received: float) -> None:
        """Step and score ``step.events``, store their states, send their answers."""
        sources = [batch[source] for source in step.sources]
        clicks = zip(step.events, sources, strict=True)
        popularity.count(((s.message.partition, s.message.offset, e.item_id) for e, s in clicks), received)
        event_of_user = {event.user_id: source for event, source in zip(step.events, sources, strict=True)}
        states, unstored = load_states(topology.sessions, event_of_user)
        pending = recommender.begin_batch(step.events, states, now=received)
        ranked = None
        if pending.query is not None:
            ranked = await ranker.top_k(pending)
            metrics.set_ranker_child(ranker.child_ready)
        result = recommender.finish_batch(pending, ranked)
        save_states(topology.sessions, result.states, event_of_user)
        stored.created(unstored)
        produced = time.time()
        for rec, source in zip(result.recommendations, sources, strict=True):
            key, value = rec.user_id.encode(), encode_recommendation(rec, produced)
            await send(recommendations, key, value, source.message)
        metrics.record_batch(result, received_at=received, produced_at=produced, taken=step.taken)

    async def process(batch: Sequence[faust.types.EventT]) -> None:
        received = time.time()
        admitted = [
            event for event in batch
            if order.admit(event.message)
            and (event.message.topic != forget_topic or await barriers.ready(event.message))
        ]
        for step in route_batch([event.message for event in admitted], rules, received):
            if isinstance(step, Answer):
                await answer(step, admitted, received)
            elif isinstance(step, Send):
                await send(step.topic, step.key, step.value, admitted[step.source].message)
                if step.kind == DEAD_LETTER:
                    metrics.record_dead_letter(step.reason)
                else:
                    metrics.record_repartitioned(1)
            elif isinstance(step, Erase):
                if forget(topology.sessions, step.user_id, admitted[step.source]):
                    stored.deleted(1)
                metrics.record_forgotten()
        mark_processed(event.message for event in admitted)

    @app.agent(topology.inputs, concurrency=1, name="recommend")
    async def recommend(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(w.batch_size, within=w.batch_window):
            async with gate.batch():
                await process(batch)

    @app.task
    async def watch_model_updates() -> None:
        await follow_model_updates(
            bootstrap, settings.security, settings.topics.model_updates, recommender, metrics,
            lambda: app.should_stop, ranker, trust,
        )

    @app.task
    async def read_popularity() -> None:
        await follow_popularity(
            bootstrap, settings.security, topology.popularity.changelog_topic.get_topic_name(),
            settings.partitions, popularity, lambda: app.should_stop,
        )

    app.task(ranker.start)

    @app.on_before_shutdown.connect
    async def stop_ranker(app: faust.App, **_: object) -> None:
        await ranker.close()

    start_timers(topology, metrics, order, stored, counts)

