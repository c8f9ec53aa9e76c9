"""Development helpers shared by the demo, the local broker, the benchmarks and the tests: a free
port, a /metrics scrape, stopping a child process, and the naive reference recommender the
benchmarks compare against.

Nothing heavy is imported at module level (``stream-recs kafka status`` imports this module):
torch and the metrics parser are imported by the functions that need them.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from stream_recs.metrics import Samples
    from stream_recs.models import GRU4Rec


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def scrape_metrics(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> str | None:
    """The text of ``http://host:port/metrics``; None when nothing answers."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
            return response.read().decode()
    except OSError:
        return None


def scrape_samples(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> Samples:
    """``scrape_metrics`` parsed (``metrics.parse_scrape``); empty when nothing answers."""
    from stream_recs.metrics import parse_scrape

    text = scrape_metrics(port, host, timeout)
    return parse_scrape(text) if text is not None else {}


def stop_process(proc: subprocess.Popen, timeout_s: float = 60.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` (a clean stop by default) to a running ``proc``, wait for it to exit, and kill
    it if it has not within ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def naive_top_k(model: GRU4Rec, history: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What a tutorial service does per event, the benchmarks' reference: the GRU over the user's
    whole recent ``history`` (item indices) from the zero state, every item scored, the history
    masked, top-``k``. Returns the scores and the item indices, best first."""
    import torch

    with torch.inference_mode():
        hidden = model.init_hidden(1)
        for item in history:
            hidden = model.step(hidden, torch.tensor([item]))
        scores = model.score(hidden)[0]
        scores[history] = float("-inf")
        return torch.topk(scores, k)
