"""The worker's HTTP endpoint: ``/metrics``, and the probes that tell the truth about it.

It answers from a thread of its own, so it must not take its own answering for the worker's health:

- ``/healthz`` (liveness): 200 ``{"alive": true}`` while the event loop beats (``Metrics.beat``,
  every second from a timer on the loop) or has not beaten yet (starting); 503 once the last beat is
  older than ``liveness_timeout`` (``STREAM_RECS_LIVENESS_TIMEOUT``): a loop stuck in a call that
  never returns still has its HTTP thread, but serves nothing;
- ``/readyz`` (readiness): 200 with the live model version while ``stream_recs_ready`` is 1
  (partitions assigned, the broker answering, no rebalance or recovery under way) and the loop is
  alive, else 503.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

from stream_recs.config import Worker
from stream_recs.metrics import PREFIX, Metrics


@dataclass(frozen=True)
class MetricsServer:
    """A running /metrics, /healthz, /readyz endpoint; ``stop()`` shuts it down."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # probes and scrapes every few seconds
        return


def health_app(metrics: Metrics, liveness_timeout: float) -> Callable:
    """WSGI app: ``/metrics`` (the registry), ``/healthz`` (liveness) and ``/readyz`` (readiness),
    each JSON, 200 or 503 (see the module docstring)."""
    serve_metrics = make_wsgi_app(metrics.registry)

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/", "/metrics"):
            return serve_metrics(environ, start_response)
        stalled = metrics.stalled_for()
        alive = stalled is None or stalled <= liveness_timeout
        if path == "/healthz":
            body = {"alive": True} if alive else {"alive": False, "heartbeat_age_s": round(stalled, 1)}
            ok = alive
        elif path == "/readyz":
            ready = alive and metrics.registry.get_sample_value(f"{PREFIX}ready") == 1.0
            versions = [s.labels["version"] for s in metrics.model_info.collect()[0].samples if s.value == 1]
            body, ok = {"ready": ready, "model_version": versions[0] if versions else None}, ready
        else:
            body, ok = {"error": f"no such endpoint: {path}"}, None
        status = "404 Not Found" if ok is None else "200 OK" if ok else "503 Service Unavailable"
        payload = orjson.dumps(body) + b"\n"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [payload]

    return app


def start_server(
    metrics: Metrics, port: int, host: str = "127.0.0.1", liveness_timeout: float = Worker.liveness_timeout
) -> MetricsServer:
    """Serve ``metrics`` on ``http://host:port/metrics`` with ``/healthz`` and ``/readyz`` beside
    it (port 0: any free port; an IPv6 host works too), from a daemon thread."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    server_class = type("_Server", (_ThreadingServer,), {"address_family": family})
    app = health_app(metrics, liveness_timeout)
    server = make_server(address[0], port, app, server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
