"""Prometheus metrics of a worker (names are a contract: alert rules and dashboards use them).

``Metrics`` owns its ``CollectorRegistry``; the agent calls ``record_batch`` after producing a
batch's recommendations, ``record_dead_letter`` per rejected record, and the setters when
partitions, sessions or the model change; a timer on the event loop calls ``beat`` (liveness,
which ``health.py`` serves beside ``/metrics``). ``summarize`` turns one or two scrapes into the
figures the demo prints (events/s, latency percentiles from histogram buckets, online HR@K, MRR).

Online accuracy: for an event continuing a session whose last answer came from the model, rank
r >= 1 when its item was at position r of that answer, 0 when it was not; HR@K = hits /
evaluated and MRR = sum(1/r) / evaluated. They are labelled with the version of the model whose
answer was judged (``model_version``: the live model, a candidate in its canary, or "previous"
for a model no longer served), so a canary's two sides can be compared on a dashboard.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_recs.events import REASONS
from stream_recs.messages import REFUSAL_REASONS

if TYPE_CHECKING:
    from stream_recs.batch_result import BatchResult

PREFIX = "stream_recs_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
END_TO_END_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OUTCOMES = ("recommended", "dead_lettered", "repartitioned", "forgotten")
STRATEGIES = ("model", "popular")
PREVIOUS = "previous"  # the model_version label of answers by a model no longer served
CANARY_DECISIONS = ("promote", "rollback")


def online_counts(ranks: Iterable[int | None]) -> tuple[int, int, float]:
    """(evaluated, hits, sum of reciprocal ranks) of per-event ranks (None: not evaluated)."""
    evaluated = hits = 0
    reciprocal = 0.0
    for rank in ranks:
        if rank is None:
            continue
        evaluated += 1
        if rank > 0:
            hits += 1
            reciprocal += 1.0 / rank
    return evaluated, hits, reciprocal


class Metrics:
    """The worker's metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()

        def declare(kind: type, name: str, doc: str, labels: tuple[str, ...] = (), **options):
            return kind(f"{PREFIX}{name}", doc, labels, registry=self.registry, **options)

        self.events = declare(Counter, "events", "Events by outcome.", ("outcome",))
        self.recommendations = declare(
            Counter, "recommendations", "Recommendations by strategy.", ("strategy",)
        )
        self.dead_letters = declare(Counter, "dead_letters", "Dead-lettered records by reason.", ("reason",))
        self.processing = declare(Histogram, "processing_seconds",
                                  "Per event: batch received to recommendation produced.",
                                  buckets=LATENCY_BUCKETS)
        self.end_to_end = declare(Histogram, "end_to_end_seconds",
                                  "Per event: event timestamp to recommendation produced.",
                                  buckets=END_TO_END_BUCKETS)
        self.batch_size = declare(Histogram, "batch_size", "Events per micro-batch.",
                                  buckets=BATCH_SIZE_BUCKETS)
        self.inference = declare(Histogram, "inference_seconds", "Per batch: GRU steps, scoring and top-K.",
                                 buckets=INFERENCE_BUCKETS)
        self.active_sessions = declare(Gauge, "active_sessions", "Users with a session state.")
        self.lag = declare(Gauge, "consumer_lag", "Records behind the partition end.", ("topic", "partition"))
        self.model_info = declare(Gauge, "model_info", "1 for the live model version.", ("version",))
        self.reloads = declare(Counter, "model_reloads", "Model reload attempts by result.", ("result",))
        self.refused_updates = declare(Counter, "model_updates_refused",
                                       "Model announcements refused, by reason.", ("reason",))
        version = ("model_version",)
        self.online_evaluated = declare(Counter, "online_evaluated",
                                        "Events compared with the previous answer.", version)
        self.online_hits = declare(Counter, "online_hits", "Events whose item was in the previous top-K.",
                                   version)
        self.online_rr = declare(Counter, "online_reciprocal_rank", "Sum of 1/rank (0 when missed).", version)
        self._serving: tuple[str, ...] = ()  # the versions served now (live, candidate)
        self.canary_active = declare(Gauge, "canary_active", "1 while a candidate model serves its share.")
        self.canary_decisions = declare(Counter, "canary_decisions",
                                        "Canaries ended, by decision (promote, rollback).", ("decision",))
        self.catalogue_items = declare(Gauge, "catalogue_items",
                                       "Items with a catalogue record, by availability.", ("available",))
        self.truncated = declare(Counter, "truncated_records",
                                 "Clicks removed from the log before they were processed, skipped.")
        self.ready = declare(Gauge, "ready", "1 when serving with partitions assigned.")
        self._beat: float | None = None  # monotonic time of the event loop's last heartbeat
        self.heartbeat_age = declare(Gauge, "heartbeat_age_seconds",
                                     "Seconds since the event loop's last heartbeat (0 before the first).")
        self.heartbeat_age.set_function(lambda: self.stalled_for() or 0.0)
        self.ranker_child = declare(
            Gauge, "ranker_child",
            "1 while a ranker child process serves the live model, 0 when the worker ranks in its own.",
        )
        self.ranker_child_enabled = declare(Gauge, "ranker_child_enabled",
                                            "1 when this worker ranks in a child process (not inline).")
        self.ranker_restarts = declare(Counter, "ranker_restarts",
                                       "Ranker children started again after one failed.")
        for outcome in OUTCOMES:
            self.events.labels(outcome)
        for strategy in STRATEGIES:
            self.recommendations.labels(strategy)
        for reason in REASONS:
            self.dead_letters.labels(reason)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for reason in REFUSAL_REASONS:
            self.refused_updates.labels(reason)
        for decision in CANARY_DECISIONS:
            self.canary_decisions.labels(decision)

    def record_batch(
        self,
        result: BatchResult,
        *,
        received_at: float,
        produced_at: float,
        taken: int | None = None,
    ) -> None:
        """Account for one answered micro-batch; ``taken``: records taken from the stream
        (valid and rejected; default: the answered events). Times are epoch seconds."""
        recs = result.recommendations
        self.batch_size.observe(len(recs) if taken is None else taken)
        self.inference.observe(result.inference_seconds)
        self.events.labels("recommended").inc(len(recs))
        processing = max(0.0, produced_at - received_at)
        by_strategy = dict.fromkeys(STRATEGIES, 0)
        for rec in recs:
            self.processing.observe(processing)
            self.end_to_end.observe(max(0.0, produced_at - rec.event_ts))
            by_strategy[rec.strategy] += 1
        for strategy, count in by_strategy.items():
            if count:
                self.recommendations.labels(strategy).inc(count)
        by_version: dict[str, list[int | None]] = {}
        for rank, judged in zip(result.ranks, result.judged, strict=True):
            if rank is not None:
                by_version.setdefault(judged if judged in self._serving else PREVIOUS, []).append(rank)
        for label, ranks in by_version.items():
            evaluated, hits, reciprocal = online_counts(ranks)
            self.online_evaluated.labels(label).inc(evaluated)
            self.online_hits.labels(label).inc(hits)
            self.online_rr.labels(label).inc(reciprocal)

    def record_dead_letter(self, reason: str) -> None:
        """One record rejected with ``reason`` (an ``events`` reason code)."""
        self.events.labels("dead_lettered").inc()
        self.dead_letters.labels(reason).inc()

    def record_repartitioned(self, count: int) -> None:
        """Events that arrived without a key and were re-sent keyed by their user."""
        self.events.labels("repartitioned").inc(count)

    def record_forgotten(self) -> None:
        """A user's state deleted on request (a ``forget`` control record)."""
        self.events.labels("forgotten").inc()

    def record_truncated(self, count: int) -> None:
        """Clicks no longer in the log (retention, deleted records) when they were to be read."""
        self.truncated.inc(count)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(lag)

    def clear_lag(self, topic: str, partition: int) -> None:
        """Forget a partition's lag (when it is revoked from this worker)."""
        try:
            self.lag.remove(topic, str(partition))
        except KeyError:
            return

    def set_active_sessions(self, count: int) -> None:
        self.active_sessions.set(count)

    def set_model(self, version: str | None, candidate: str | None = None) -> None:
        """The live model version (None: only the popularity fallback serves) and the candidate
        in its canary (None: none). The online series of versions no longer served go."""
        self.model_info.clear()
        if version is not None:
            self.model_info.labels(version).set(1)
        self.canary_active.set(1 if candidate is not None else 0)
        serving = tuple(v for v in (version, candidate) if v is not None)
        for gone in set(self._serving) - set(serving):
            for counter in (self.online_evaluated, self.online_hits, self.online_rr):
                with contextlib.suppress(KeyError):  # never counted
                    counter.remove(gone)
        self._serving = serving

    def record_rejected_item(self, reason: str) -> None:
        """A catalogue record dead-lettered for ``reason`` (an ``events`` reason code)."""
        self.dead_letters.labels(reason).inc()

    def set_catalogue(self, items: int, unavailable: int) -> None:
        self.catalogue_items.labels("true").set(items - unavailable)
        self.catalogue_items.labels("false").set(unavailable)

    def record_canary_decision(self, decision: str) -> None:
        """A canary ended: ``promote`` or ``rollback``."""
        self.canary_decisions.labels(decision).inc()

    def record_reload(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()

    def record_refused_update(self, reason: str) -> None:
        """An announcement refused (a failed reload) for ``reason`` (``REFUSAL_REASONS``)."""
        self.record_reload(False)
        self.refused_updates.labels(reason).inc()

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def beat(self, now: float | None = None) -> None:
        """The event loop is making progress (a timer on it calls this every second)."""
        self._beat = time.monotonic() if now is None else now

    def stalled_for(self, now: float | None = None) -> float | None:
        """Seconds since the last heartbeat; None before the first (the worker is starting)."""
        if self._beat is None:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self._beat)

    def set_ranker_child(self, ready: bool) -> None:
        self.ranker_child.set(1 if ready else 0)

    def set_ranker_child_enabled(self, enabled: bool) -> None:
        self.ranker_child_enabled.set(1 if enabled else 0)

    def record_ranker_restart(self) -> None:
        self.ranker_restarts.inc()

    def scrape(self) -> str:
        """The text exposition /metrics serves."""
        return generate_latest(self.registry).decode()


# --- reading a scrape back (the demo's live summary) -------------------------------------
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_scrape(text: str) -> Samples:
    """Every sample of a text exposition, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Quantile ``q`` from cumulative ``(upper bound, count)`` buckets, as Prometheus does:
    linear within the bucket that holds the rank (from 0 for the first); a rank in the +Inf
    bucket gives the largest finite bound. None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _buckets(samples: Samples, name: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for (sample, labels), value in samples.items():
        if sample == f"{name}_bucket":
            bound = float(dict(labels)["le"])
            out[bound] = out.get(bound, 0.0) + value
    return out


@dataclass(frozen=True)
class Summary:
    """Figures over the window between two scrapes (or since start with one)."""

    events: float
    events_per_s: float | None
    dead_letters: float
    processing_p50: float | None
    processing_p99: float | None
    end_to_end_p50: float | None
    end_to_end_p99: float | None
    evaluated: float
    hit_rate: float | None
    mrr: float | None

    def format(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:.1f}ms"

        def ratio(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        rate = "-" if self.events_per_s is None else f"{self.events_per_s:.0f}/s"
        return (
            f"events {self.events:.0f} ({rate}), dead letters {self.dead_letters:.0f} | "
            f"processing p50 {ms(self.processing_p50)} p99 {ms(self.processing_p99)} | "
            f"end-to-end p50 {ms(self.end_to_end_p50)} p99 {ms(self.end_to_end_p99)} | "
            f"online HR@K {ratio(self.hit_rate)} MRR {ratio(self.mrr)} "
            f"({self.evaluated:.0f} evaluated)"
        )


def summarize(current: str, previous: str | None = None, interval_s: float | None = None) -> Summary:
    """Summary of the scrape ``current`` minus ``previous`` (when given) over ``interval_s``."""
    now = parse_scrape(current)
    before = parse_scrape(previous) if previous is not None else {}

    def delta(name: str) -> float:  # over the series of ``current`` (a version's series may go)
        return sum(value - before.get(key, 0.0) for key, value in now.items() if key[0] == name)

    def quantile(q: float, name: str) -> float | None:
        after, prior = _buckets(now, name), _buckets(before, name)
        return histogram_quantile(q, [(b, c - prior.get(b, 0.0)) for b, c in after.items()])

    events = delta(f"{PREFIX}events_total")
    evaluated = delta(f"{PREFIX}online_evaluated_total")
    hits = delta(f"{PREFIX}online_hits_total")
    reciprocal = delta(f"{PREFIX}online_reciprocal_rank_total")
    return Summary(
        events=events,
        events_per_s=events / interval_s if interval_s else None,
        dead_letters=delta(f"{PREFIX}dead_letters_total"),
        processing_p50=quantile(0.5, f"{PREFIX}processing_seconds"),
        processing_p99=quantile(0.99, f"{PREFIX}processing_seconds"),
        end_to_end_p50=quantile(0.5, f"{PREFIX}end_to_end_seconds"),
        end_to_end_p99=quantile(0.99, f"{PREFIX}end_to_end_seconds"),
        evaluated=evaluated,
        hit_rate=hits / evaluated if evaluated else None,
        mrr=reciprocal / evaluated if evaluated else None,
    )
