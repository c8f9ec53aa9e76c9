"""Ranking in a child process: a batch's top-K (``LiveModel.top_k``) runs on another core while
the worker's event loop goes on with Kafka's work.

The worker is one Python thread: fetching, decoding, state, producing and the GRU step take turns
on it, and on a large catalogue the top-K over every item (or the ann index) is most of the cost.
A thread would not help: its Python glue between tensor calls waits for the GIL. A child process
has its own interpreter: it loads the same checkpoint (``model_updates.load_checkpoint``, pinned
by the sha256 of the metadata the worker loaded), builds
the same ``LiveModel`` from the same ``ServingOptions``, and answers one request at a time over
its stdin and stdout (length-prefixed raw arrays, nothing unpickled).

    ranker = Ranker(options, enabled=True)  # the recommender's ServingOptions
    await ranker.load(model_dir, version)  # at start-up and after each model swap
    values, indices = await ranker.top_k(pending)  # pending: Recommender.begin_batch(...)

A model swap reloads the running child in place (a load request on the same pipes): a new
interpreter and torch import on every swap would cost seconds of CPU, a real share of a small
machine when a trainer publishes often. A batch is ranked in-process instead when it is small
(``MIN_ROWS``), and while no child serves its model version (start-up, a swap in progress,
ranking off, or a child failed). A child that
fails to start, dies, misses a batch's deadline (``REQUEST_TIMEOUT_S``) or is cut off mid-request
is retired (logged; that batch is ranked in-process) and a new one is started after a delay that
grows while failures repeat (``RESPAWN_DELAYS_S``). A child exits when its stdin closes, so also
when the worker is killed.

    # the child, as Ranker starts it:
    python -m stream_recs.ranker_child '{"model_dir": ..., "version": ..., "meta_sha256": ...,
                                         "threads": 1, "options": {...}}'
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from stream_recs.config import ServingOptions

log = logging.getLogger(__name__)

# rows, dims, masked columns; then float32 rows x dims, int64 rows x masked columns. A load
# request has rows = dims = 0 and the length of its JSON in place of the columns.
_REQUEST = struct.Struct("<III")
_ANSWER = struct.Struct("<II")  # rows, k; then float32 rows x k values, int64 rows x k indices
_HELLO = struct.Struct("<I")  # length of the JSON that follows: {"version": ...} or {"error": ...}
START_TIMEOUT_S = 300.0  # loading a checkpoint and building its ann index take seconds
REQUEST_TIMEOUT_S = 2.0  # a batch's deadline: it takes milliseconds, so a child this late is hung
RESPAWN_DELAYS_S = (1.0, 2.0, 5.0, 15.0, 60.0)  # after the n-th failure in a row (the last repeats)
# Smaller batches are ranked in-process: they come under light load, where latency counts and
# the round trip (and the event loop's other work before the agent resumes) costs more than
# their top-K; under load, batches are fuller.
MIN_ROWS = 64


class RankerError(RuntimeError):
    """The child process could not start, or stopped answering."""


class RankerProcess:
    """One child process serving one model version."""

    def __init__(self, proc: asyncio.subprocess.Process, version: str) -> None:
        self.proc, self.version = proc, version
        self._lock = asyncio.Lock()  # one request on the pipes at a time
        self._broken = False  # a request was cut short: the pipes are out of step for good

    @classmethod
    async def start(
        cls, model_dir: str | Path, options: ServingOptions, version: str | None = None,
        meta_sha256: str | None = None,
    ) -> RankerProcess:
        """Start a child for the checkpoint at ``model_dir`` (which must be of this ``version``,
        with metadata of this ``meta_sha256``, when given); returns once it is ready to rank."""
        config = {
            "options": dataclasses.asdict(options), "model_dir": str(model_dir), "version": version,
            "meta_sha256": meta_sha256, "threads": torch.get_num_threads(),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream_recs.ranker_child", json.dumps(config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        try:
            head = await asyncio.wait_for(proc.stdout.readexactly(_HELLO.size), START_TIMEOUT_S)
            hello = json.loads(await proc.stdout.readexactly(_HELLO.unpack(head)[0]))
        except (asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            await _stop(proc)
            raise RankerError(f"the ranker for {model_dir} did not start: {exc!r}") from exc
        except BaseException:  # cancelled (the worker stops): no child is left behind
            await _stop(proc, kill=True)
            raise
        if "error" in hello:
            await _stop(proc)
            raise RankerError(f"the ranker for {model_dir} did not start: {hello['error']}")
        return cls(proc, hello["version"])

    async def reload(self, model_dir: str | Path, version: str, meta_sha256: str | None = None) -> None:
        """Make the child serve another checkpoint (checked as ``start`` checks it); no batch is
        sent to it meanwhile. RankerError when it could not: the child is then of no use."""
        body = json.dumps({"model_dir": str(model_dir), "version": version, "meta_sha256": meta_sha256})
        self.version = None  # batches are ranked in-process until it answers
        async with self._lock:
            if self._broken:
                raise RankerError("the ranker was cut short by an earlier request")
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    self.proc.stdin.write(_REQUEST.pack(0, 0, len(body)) + body.encode())
                    await self.proc.stdin.drain()
                    head = await self.proc.stdout.readexactly(_HELLO.size)
                    hello = json.loads(await self.proc.stdout.readexactly(_HELLO.unpack(head)[0]))
            except BaseException as exc:
                self._broken = True
                if isinstance(exc, (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError)):
                    raise RankerError(f"the ranker could not load {model_dir}: {exc!r}") from exc
                raise
        if "error" in hello:
            self._broken = True
            raise RankerError(f"the ranker could not load {model_dir}: {hello['error']}")
        self.version = hello["version"]

    async def top_k(
        self, outputs: torch.Tensor, masked: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``LiveModel.top_k(outputs, masked)``, computed by the child."""
        rows, dims = outputs.shape
        columns = masked.shape[1] if masked is not None else 0
        parts = [_REQUEST.pack(rows, dims, columns), outputs.float().contiguous().numpy().tobytes()]
        if masked is not None:
            parts.append(masked.contiguous().numpy().astype(np.int64, copy=False).tobytes())
        async with self._lock:
            if self._broken:
                raise RankerError("the ranker was cut short by an earlier request")
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    self.proc.stdin.write(b"".join(parts))
                    await self.proc.stdin.drain()
                    rows, width = _ANSWER.unpack(await self.proc.stdout.readexactly(_ANSWER.size))
                    body = await self.proc.stdout.readexactly(rows * width * 12)
            except BaseException as exc:  # also a cancellation: its answer would answer the next
                self._broken = True
                if isinstance(exc, TimeoutError):
                    raise RankerError(f"the ranker did not answer within {REQUEST_TIMEOUT_S:.0f} s") from exc
                if isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
                    raise RankerError(f"the ranker stopped (exit code {self.proc.returncode})") from exc
                raise
        values = np.frombuffer(body, np.float32, rows * width).reshape(rows, width)
        indices = np.frombuffer(body, np.int64, rows * width, offset=rows * width * 4).reshape(rows, width)
        return torch.from_numpy(values.copy()), torch.from_numpy(indices.copy())

    async def close(self) -> None:
        await _stop(self.proc, kill=self._broken)


async def _stop(proc: asyncio.subprocess.Process, kill: bool = False) -> None:
    """Close the child's stdin (it exits), then wait for it; kill it if it does not exit (or at
    once with ``kill``)."""
    if proc.returncode is None:
        if kill:
            proc.kill()
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class Ranker:
    """Where the worker's batches are ranked: by the child serving their model version if they
    hold ``min_rows`` model events or more, else in-process. ``enabled`` False: always
    in-process. ``model_dir``, ``version``: the checkpoint served at start-up; ``start`` loads it,
    and the first batches wait for that (the worker is starting anyway: with the child starting
    alongside Faust, they seldom wait at all)."""

    def __init__(
        self, options: ServingOptions, enabled: bool, model_dir: str | Path | None = None,
        version: str | None = None, meta_sha256: str | None = None, min_rows: int = MIN_ROWS,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self.options, self.enabled, self.min_rows = options, enabled, min_rows
        self.process: RankerProcess | None = None
        self.child_ready = False  # at the last top_k: a child served the batch's model version
        self._initial = (model_dir, version, meta_sha256)
        self._started = asyncio.Event()
        self._loads = 0  # a load that finishes after a later one started is discarded
        self._newest: tuple[str | Path, str, str | None] | None = None  # what the child should serve
        self._failures = 0  # in a row: a child that answers a batch resets it
        self._respawn: asyncio.Task | None = None
        self._on_restart = on_restart  # told of each child started after a failure
        self._closed = False

    async def start(self) -> None:
        model_dir, version, meta_sha256 = self._initial
        try:
            if model_dir is not None:
                await self.load(model_dir, version, meta_sha256)
        finally:
            self._started.set()

    async def load(self, model_dir: str | Path, version: str, meta_sha256: str | None = None) -> None:
        """Have a child serve this checkpoint (``meta_sha256``: of the metadata the worker
        loaded): the running child reloads in place, or a new one starts. Until it is ready,
        batches are ranked in-process; a child that fails to load or start is logged (and
        replaced later), and the batches of that version are ranked in-process."""
        if not self.enabled:
            return
        if self._respawn is not None and self._respawn is not asyncio.current_task():
            self._respawn.cancel()  # this load is the retry: a second start would race it
        self._newest = (model_dir, version, meta_sha256)
        self._loads += 1  # a start still under way for an older load is discarded when it ends
        ticket = self._loads
        process = self.process
        if process is not None and process.proc.returncode is None:
            try:
                await process.reload(model_dir, version, meta_sha256)
            except RankerError as exc:
                await self._retire(process, exc)
            else:
                log.warning("the ranker child (pid %d) serves model %s", process.proc.pid, process.version)
            return
        try:
            started = await RankerProcess.start(model_dir, self.options, version, meta_sha256)
        except RankerError as exc:
            log.error("%s; ranking in-process", exc)
            if ticket == self._loads:
                self._respawn_later()
            return
        if ticket != self._loads or self._closed:  # a newer model was announced, or closed, meanwhile
            await started.close()
            return
        old, self.process = self.process, started
        if old is not None:
            await old.close()
        log.warning("ranking in a child process (pid %d) for model %s", started.proc.pid, version)

    async def top_k(self, pending) -> tuple[torch.Tensor, torch.Tensor]:
        """The top-K of ``pending.query`` (``Recommender.begin_batch``), by ``pending.live``."""
        if self.enabled and self._initial[0] is not None:
            await self._started.wait()
        process = self.process
        if process is not None and process.proc.returncode is not None:  # died between batches
            code = process.proc.returncode
            await self._retire(process, RankerError(f"the ranker stopped (exit code {code})"))
            process = None
        self.child_ready = process is not None and process.version == pending.live.version
        if self.child_ready and len(pending.query[0]) >= self.min_rows:
            try:
                ranked = await process.top_k(*pending.query)
            except RankerError as exc:
                await self._retire(process, exc)
            else:
                self._failures = 0
                return ranked
        return pending.live.top_k(*pending.query)

    async def _retire(self, process: RankerProcess, exc: RankerError) -> None:
        """Stop a failed child; batches are ranked in-process until its successor is ready."""
        self.child_ready = False
        log.error("%s; ranking in-process until a new child is ready", exc)
        if self.process is process:
            self.process = None
        await process.close()
        self._respawn_later()

    def _respawn_later(self) -> None:
        """Start a child for the newest model after a delay that grows with the failures in a row."""
        pending = self._respawn is not None and not self._respawn.done()
        if self._closed or self._newest is None or (pending and self._respawn is not asyncio.current_task()):
            return
        delay = RESPAWN_DELAYS_S[min(self._failures, len(RESPAWN_DELAYS_S) - 1)]
        self._failures += 1
        self._respawn = asyncio.ensure_future(self._respawn_after(delay))

    async def _respawn_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closed or self.process is not None or self._newest is None:
            return
        log.warning("starting a new ranker child (failure %d in a row)", self._failures)
        if self._on_restart is not None:
            self._on_restart()
        await self.load(*self._newest)

    async def close(self) -> None:
        self._closed = True
        if self._respawn is not None and self._respawn is not asyncio.current_task():
            self._respawn.cancel()  # also a start it is waiting for: that child is stopped
            with contextlib.suppress(asyncio.CancelledError):
                await self._respawn
        if self.process is not None:
            await self.process.close()
            self.process = None


def _serve(config: dict, requests, answers) -> None:
    """The child: load the model, say hello, answer requests until stdin closes."""
    from stream_recs.live_model import LiveModel
    from stream_recs.model_updates import load_checkpoint

    torch.set_num_threads(config["threads"])
    sent = config["options"]  # JSON: the tuple came as a list
    options = ServingOptions(**{**sent, "never_recommend": tuple(sent["never_recommend"])})

    def load(checkpoint: dict) -> LiveModel | None:
        """The checkpoint's LiveModel, after saying hello; None (said as an error) if it failed."""
        try:
            model, _ = load_checkpoint(checkpoint["model_dir"], checkpoint["version"],
                                       checkpoint["meta_sha256"])
            live = LiveModel(model, options)
        except Exception as exc:  # the parent logs it and ranks in-process
            _hello(answers, {"error": f"{type(exc).__name__}: {exc}"})
            return None
        _hello(answers, {"version": live.version})
        return live

    live = load(config)
    if live is None:
        return
    while header := requests.read(_REQUEST.size):
        rows, dims, columns = _REQUEST.unpack(header)
        if rows == dims == 0:  # a load request
            live = load(json.loads(requests.read(columns)))
            if live is None:
                return
            continue
        outputs = np.frombuffer(requests.read(rows * dims * 4), np.float32).reshape(rows, dims)
        masked = None
        if columns:
            masked = np.frombuffer(requests.read(rows * columns * 8), np.int64).reshape(rows, columns)
            masked = torch.from_numpy(masked.copy())
        values, indices = live.top_k(torch.from_numpy(outputs.copy()), masked)
        answers.write(_ANSWER.pack(*values.shape))
        answers.write(values.float().contiguous().numpy().tobytes())
        answers.write(indices.to(torch.int64).contiguous().numpy().tobytes())
        answers.flush()


def _hello(answers, message: dict) -> None:
    body = json.dumps(message).encode()
    answers.write(_HELLO.pack(len(body)) + body)
    answers.flush()


def main() -> None:
    """Entry point of the child; the protocol owns stdout (anything printed goes to stderr)."""
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(json.loads(sys.argv[1]), sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
