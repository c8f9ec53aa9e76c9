"""The worker's wiring: clicks in, recommendations and dead letters out, model updates and the
canary, the shared counts (the popularity fallback's, the canary's), the item catalogue, timers.

Follow one click: ``recommend`` takes a micro-batch (of clicks and forget requests, whose topics
are co-partitioned); ``offsets.InOrder`` admits each partition's records once and in offset
order, a forget request only after its user's earlier clicks (``forgetting.py``);
``intake.route_batch`` decides what each record becomes (a
dead letter, a re-keyed copy, a forget request, or an event to answer); for each group of events
to answer, the clicks are counted for the popularity fallback (by partition and offset,
``popularity.py``), ``tables.load_states`` fetches the users' states, and for each side of the
canary (``Recommender.split``: a candidate's users and the others) ``begin_batch`` (scoring.py)
advances them, ``Ranker.top_k`` (ranker_child.py) finds their top-K, in a child process while
the event loop goes on, and ``finish_batch`` makes the answers; the online evaluations are
counted for the canary (``canary.py``), ``tables.save_states`` writes the states back, and one
Recommendation per event is produced, keyed by user.

Offsets are committed after the batch body (at-least-once: a crash replays the batch; outputs
carry the event id), and only admitted records count (``offsets.mark_processed``). Under
exactly-once, a click's outputs go into its partition's transaction and commits wait for the
batch to end (transactions.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import faust

from stream_recs.batch_result import merged
from stream_recs.canary import LIVE_ARM, CanaryCounts, judge
from stream_recs.catalogue_feed import catalogue_intake, follow_catalogue
from stream_recs.counts_feed import CANARY, POPULARITY, follow_counts
from stream_recs.events import Limits
from stream_recs.intake import DEAD_LETTER, Answer, Erase, Rules, Send, route_batch
from stream_recs.messages import ModelUpdate, encode_recommendation
from stream_recs.metrics import Metrics
from stream_recs.model_updates import UNCHECKED, Trust
from stream_recs.privacy import load_pseudonymiser
from stream_recs.ranker_child import Ranker
from stream_recs.rollout import Rollout
from stream_recs.rollout_follower import DecisionPublisher, ModelFollower, follow_model_updates
from stream_recs.scoring import Recommender

from .app import Topology
from .forgetting import start_forgetting
from .offsets import InOrder, first_record, mark_processed, transactional
from .tables import SharedCounts, StoredUsers, forget, load_states, save_states
from .timers import start_timers
from .transactions import BatchGate, output_sender

log = logging.getLogger(__name__)


def wire(
    topology: Topology, recommender: Recommender, metrics: Metrics, bootstrap: str,
    ranker: Ranker | None = None, trust: Trust = UNCHECKED, live: ModelUpdate | None = None,
    start: tuple[Rollout, int] | None = None,
) -> None:
    """Attach the agent, the model-update follower (which serves the announcements that satisfy
    ``trust``, from ``start``'s rollout and offset: ``rollout_follower.py``; ``live``: the
    announcement of the model the recommender serves), the canary's judge, the shared counts'
    reader, the ranker's lifecycle and the timers to the app. Without ``ranker``, batches are
    ranked in-process."""
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
    canary = CanaryCounts()
    kinds = {POPULARITY: popularity, CANARY: canary}
    counts = SharedCounts(topology.counts, kinds, settings.topics.clicks)
    follower = ModelFollower(recommender, metrics, ranker, trust, settings.canary.share, canary, live)
    publisher = DecisionPublisher(bootstrap, settings.security, settings.topics.model_updates)
    recommendations = settings.topics.recommendations
    details = recommender.catalogue if settings.serving.item_details == "on" else None
    forget_topic = settings.topics.forget
    barriers = start_forgetting(topology, order, bootstrap)

    async def answer(step: Answer, batch: Sequence[faust.types.EventT], received: float) -> None:
        """Step and score ``step.events``, store their states, send their answers."""
        events = step.events
        sources = [batch[source] for source in step.sources]
        messages = [source.message for source in sources]
        popularity.count(((m.partition, m.offset, e.item_id) for e, m in zip(events, messages, strict=True)),
                         received)
        event_of_user = {event.user_id: source for event, source in zip(events, sources, strict=True)}
        states, unstored = load_states(topology.sessions, event_of_user)
        parts = []
        for arm, positions in recommender.split(events):
            pending = recommender.begin_batch([events[i] for i in positions], states, received, arm)
            ranked = None
            if pending.query is not None:
                ranked = await ranker.top_k(pending)
                if arm == LIVE_ARM:  # the candidate's side is ranked in-process
                    metrics.set_ranker_child(ranker.child_ready)
            parts.append((positions, recommender.finish_batch(pending, ranked)))
        result = merged(len(events), parts)
        canary.count((messages[i].partition, messages[i].offset, arm, rank)
                     for i, arm, rank in recommender.canary_evaluations(result))
        save_states(topology.sessions, result.states, event_of_user)
        stored.created(unstored)
        produced = time.time()
        for rec, source in zip(result.recommendations, sources, strict=True):
            key, value = rec.user_id.encode(), encode_recommendation(rec, produced, details)
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
        await follow_model_updates(bootstrap, settings.security, settings.topics.model_updates, follower,
                                   lambda: app.should_stop, start)

    @app.task
    async def read_counts() -> None:
        await follow_counts(bootstrap, settings.security, topology.counts.changelog_topic.get_topic_name(),
                            settings.partitions, kinds, lambda: app.should_stop)

    @app.task
    async def read_catalogue() -> None:
        catalogue = recommender.catalogue

        def changed() -> None:
            metrics.set_catalogue(len(catalogue), len(catalogue.unavailable))

        await follow_catalogue(bootstrap, settings.security, settings.topics.items, catalogue, changed,
                               lambda: app.should_stop)

    @app.task
    async def check_catalogue() -> None:
        await catalogue_intake(bootstrap, settings.security, settings.topics.items, w.app_id,
                               settings.topics.dead_letters, metrics.record_rejected_item,
                               lambda: app.should_stop)

    async def judge_canary() -> None:
        """Publish the canary's verdict once the counts of every partition reach one."""
        version = recommender.candidate_version
        verdict = judge(*canary.totals(), settings.canary) if version is not None else None
        if verdict is not None:
            await publisher.publish(version, verdict)

    app.task(ranker.start)

    @app.on_before_shutdown.connect
    async def stop_ranker(app: faust.App, **_: object) -> None:
        try:
            counts.save()  # what was counted since the last interval: a clean stop loses nothing
        except Exception:  # a stop must go on
            log.exception("the shared counts could not be saved at shutdown")
        await ranker.close()
        await publisher.close()

    start_timers(topology, metrics, order, stored, counts, judge_canary)

