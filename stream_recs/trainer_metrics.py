"""Prometheus metrics of the continuous-learning trainer (names are a contract: the alert rules and
the dashboard read them). Served on the trainer's own port (``STREAM_RECS_TRAINER_PORT``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream_recs.metrics import PREFIX

RESULTS = ("published", "rejected", "failed")  # what a cycle ends in
FIGURES = ("recall@20", "ndcg@20", "mrr@20")  # the gate's held-out figures exported per model
CYCLE_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class TrainerMetrics:
    """The trainer's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def declare(kind: type, name: str, doc: str, labels: tuple[str, ...] = (), **options):
            return kind(f"{PREFIX}trainer_{name}", doc, labels, registry=self.registry, **options)

        self.cycles = declare(Counter, "cycles", "Training cycles by result.", ("result",))
        self.cycle_seconds = declare(Histogram, "cycle_seconds", "Seconds per training cycle.",
                                     buckets=CYCLE_BUCKETS)
        self.window_events = declare(Gauge, "window_events", "Clicks in the rolling window.")
        self.window_bytes = declare(Gauge, "window_bytes", "Bytes the window and replay sample take on disk.")
        self.consumed = declare(Counter, "clicks", "Clicks added to the window.")
        self.skipped = declare(Counter, "records_skipped", "Records left out of the window, by reason.",
                               ("reason",))
        self.forgotten = declare(Counter, "forgotten", "Forget requests applied to the window.")
        self.items_added = declare(Counter, "items_added", "Items added to the model by published cycles.")
        self.content_rows = declare(Counter, "content_rows", "Rows published cycles gave catalogue items "
                                    "without clicks from their content.")
        self.validation = declare(Gauge, "validation", "The last gate's held-out figures (masked, full "
                                  "ranking), of the candidate and of the live model.", ("model", "metric"))
        self.live_info = declare(Gauge, "model_info", "1 for the model the trainer fine-tunes from.",
                                 ("version",))
        for result in RESULTS:
            self.cycles.labels(result)

    def record_cycle(self, result: str, seconds: float, candidate: dict, live: dict, added: int,
                     content_rows: int = 0) -> None:
        """One cycle's outcome and the gate's figures (empty when it did not get that far)."""
        self.cycles.labels(result).inc()
        self.cycle_seconds.observe(seconds)
        if result == "published":
            self.items_added.inc(added)
            self.content_rows.inc(content_rows)
        for model, figures in (("candidate", candidate), ("live", live)):
            for metric in FIGURES:
                if metric in figures:
                    self.validation.labels(model, metric).set(figures[metric])

    def set_live(self, version: str) -> None:
        self.live_info.clear()
        self.live_info.labels(version).set(1)

    def set_window(self, events: int, size: int) -> None:
        self.window_events.set(events)
        self.window_bytes.set(size)
