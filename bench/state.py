"""State benchmark: bytes per user of an encoded ``SessionState``, and the resident memory a worker
process gains with 1M users' sessions in its store.

    .venv/bin/python bench/state.py [--users 1000000] [--json]

Sizes are exact (``len(state.encode())``) for a user with a full history (``history_len`` items),
the last K recommendations and a hidden state, at each d, with 16- and 32-bit item indices. Memory
is measured in a fresh child process per store, opened as the worker opens it: ``rocksdb`` through
Faust's ``RocksDBOptions`` with the sessions table's options (one database per partition, the
worker's default store), ``memory`` as the dict Faust's memory store is. The child writes the
users' encoded states in batches (what ``tables.save_states`` does), then reads 10,000 back, and
reports RSS before, after writing and at the end, with the database size on disk, and the time
one full count of the users takes: ``len`` of a Faust table, which for RocksDB reads every key
(why the worker's active-sessions gauge keeps a count, ``tables.StoredUsers``, instead).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit_json, table

from stream_recs.config import ServingOptions, Settings
from stream_recs.models.registry import vocabulary_fingerprint
from stream_recs.state import SessionState, fingerprint
from stream_recs.topology.tables import ROCKSDB_OPTIONS


def full_state(d: int, n_items: int, history_len: int, k: int, rng) -> SessionState:
    """A state with everything filled: a long-lived user in the middle of a session."""
    hidden = rng.uniform(-1, 1, d).astype(np.float16).tobytes()
    return SessionState(
        last_ts=1.7e9, touched=1_700_000_000, session=2**63 + 12345, model=fingerprint("model-v1"),
        vocab=vocabulary_fingerprint(["a", "b"]), hidden=hidden,
        history=tuple(rng.integers(n_items, size=history_len).tolist()), session_len=7,
        last_recs=tuple(rng.integers(n_items, size=k).tolist()),
    )


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def child(store: str, users: int, d: int, partitions: int, directory: str) -> dict:
    """Runs in the child process: fill one store with ``users`` states, report memory."""
    rng = np.random.default_rng(0)
    w = ServingOptions()
    states = [full_state(d, 10_000, w.history_len, w.k, rng).encode() for _ in range(64)]
    before = _rss()
    if store == "rocksdb":
        from faust.stores.rocksdb import RocksDBOptions

        options = RocksDBOptions(**ROCKSDB_OPTIONS)
        dbs = [options.open(Path(directory) / f"p{p}.db") for p in range(partitions)]
    else:
        dbs = [{} for _ in range(partitions)]
    opened = _rss()
    for start in range(0, users, 256):
        for u in range(start, min(start + 256, users)):
            key = f"user-{u}".encode()
            value = states[u % 64][:-4] + u.to_bytes(4, "little")  # a distinct object per user
            dbs[zlib.crc32(key) % partitions][key] = value
    written = _rss()
    for u in rng.integers(users, size=10_000).tolist():
        key = f"user-{u}".encode()
        assert dbs[zlib.crc32(key) % partitions][key]
    end = _rss()
    started = time.perf_counter()
    if store == "rocksdb":  # Faust's RocksDB store: every key but its offset record, one at a time
        from faust.stores.rocksdb import Store

        counted = sum(1 for db in dbs for key in db.keys() if key != Store.offset_key)  # noqa: SIM118
    else:
        counted = sum(len(db) for db in dbs)
    count_s = time.perf_counter() - started
    assert counted == users, counted
    if store == "rocksdb":
        for db in dbs:
            db.close()
    disk = sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())
    return {"store": store, "users": users, "rss_before_mb": before / 2**20, "rss_opened_mb": opened / 2**20,
            "rss_written_mb": written / 2**20, "rss_end_mb": end / 2**20,
            "growth_bytes_per_user": (end - opened) / users, "disk_mb": disk / 2**20,
            "count_s": count_s}


@click.command()
@click.option("--users", default=1_000_000, show_default=True)
@click.option("--dims", default="64,256", show_default=True)
@click.option("--stores", default="rocksdb,memory", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--child-of", hidden=True)
def main(users, dims, stores, as_json, child_of):
    w, partitions = ServingOptions(), Settings().partitions
    if child_of:
        store, d, directory = child_of.split(":", 2)
        print(json.dumps(child(store, users, int(d), partitions, directory)))
        return
    rng = np.random.default_rng(0)
    sizes = []
    for d in [int(x) for x in dims.split(",")]:
        for n_items, width in ((10_000, "uint16"), (100_000, "uint32")):
            state = full_state(d, n_items, w.history_len, w.k, rng)
            sizes.append({"d": d, "items": n_items, "indices": width, "bytes": len(state.encode()),
                          "header": 37, "hidden": len(state.hidden), "history": w.history_len,
                          "last_recs": w.k})
    print(f"encoded state per user (history {w.history_len}, last {w.k} recommendations)")
    print(table(sizes, ["d", "items", "indices", "bytes", "header", "hidden", "history", "last_recs"]))
    memory = []
    for store in stores.split(","):
        directory = tempfile.mkdtemp(prefix="bench-state-")
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--users", str(users), "--child-of", f"{store}:64:{directory}"],
                capture_output=True, text=True, check=True,
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        memory.append(json.loads(done.stdout.strip().splitlines()[-1]))
    from faust.stores.rocksdb import RocksDBOptions

    o = RocksDBOptions(**ROCKSDB_OPTIONS)
    print(f"\nworker-process memory with {users:,} users' states at d=64 ({partitions} partitions; "
          f"RocksDB per partition: write buffer {o.write_buffer_size / 2**20:.0f} MiB x "
          f"{o.max_write_buffer_number}, block cache {o.block_cache_size / 2**20:.0f} MiB)")
    print(table(memory, ["store", "users", "rss_opened_mb", "rss_written_mb", "rss_end_mb",
                         "growth_bytes_per_user", "disk_mb", "count_s"]))
    if as_json:
        d64 = next(s["bytes"] for s in sizes if s["d"] == 64 and s["indices"] == "uint16")
        emit_json({"bytes_per_user_d64": d64, "sizes": sizes, "memory": memory})


if __name__ == "__main__":
    main()
