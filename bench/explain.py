"""Explanations: how faithful each ``because`` is, what it looks like, and what it costs.

    .venv/bin/python bench/explain.py [--cases 600] [--epochs 3] [--out bench/results/explain.txt]

Faithfulness, on MovieLens-100K (each user's last 6-15 ratings are a session, their earlier ones
a history before it; the model trained on the rest, hidden 64) and on synthetic sessions
(``synthetic_sessions``; trained on all days but the last, sessions of the last day with 6 or
more clicks, the user's earlier clicks as history). Every case is served click by click through
``Recommender.step_batch`` in each mode, and its last answer judged against a replay of the
whole session from the zero state: for each recommended item, removing the explained item from
the session must lower the item's score more than removing another item of the session drawn at
random. The pass rate counts each other item of the session as one draw (ties fail); an
explanation outside the session (``similarity`` searches the whole history) lowers nothing.
Also: unexplained slots, distinct explanations per list, the most frequent explanation's share
of all slots (hub share), and lists whose top 5 all have one explanation.

Cost: ``Recommender.step_batch`` per event at 10k items, d=64, K=20, batches of 256 returning
users whose sessions hold 4 clicks, 13 (the replay's window full), or as many as the events of
bench/e2e.py's stream, and batches of 8 (about what the worker takes at once at 500 events/s); the
modes timed in turn in one run; and the part the worker's main thread keeps when its ranker
child finds the top-K (``begin_batch`` + ``finish_batch``). Times are the
process's CPU time (one torch thread), medians of ``--repeat`` rounds, the variants in a new
order each round: CPU time is what bounds the worker's events/s, and it is what other jobs on a
shared machine disturb least.
"""

from __future__ import annotations

import shlex
import statistics
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import synthetic_model, table

from stream_recs.config import ServingOptions
from stream_recs.datasets import load_dataset, synthetic_sessions, to_sequences
from stream_recs.events import Event
from stream_recs.models.train import TrainConfig, train_model
from stream_recs.scoring import Recommender

MODES = ("replay", "similarity", "off")
T0 = 1_700_000_000.0


# --- faithfulness ---------------------------------------------------------------------------
def ml_cases(n_cases: int, rng) -> tuple[list, list[str], list[tuple[list[str], list[str]]]]:
    """MovieLens-100K: training sequences, item ids, and (history, session) cases in item ids."""
    events = load_dataset("movielens-100k")
    order = np.lexsort((np.arange(len(events)), events.ts, events.user))
    users, items = events.user[order], events.item[order]
    ids = events.item_ids
    train, cases = [], []
    for user in np.unique(users):
        seq = items[users == user]
        length = int(rng.integers(6, 16))
        if len(seq) < length + 6:
            train.append(seq)
            continue
        train.append(seq[:-length])
        cases.append(([ids[i] for i in seq[:-length][-40:]], [ids[i] for i in seq[-length:]]))
    picked = rng.permutation(len(cases))[:n_cases]
    return train, ids, [cases[i] for i in picked]


def synthetic_cases(n_cases: int, rng):
    """Synthetic sessions: train on every day but the last; cases are last-day sessions >= 6."""
    events = synthetic_sessions(n_users=3000, n_items=2000, n_events=150_000, seed=1)
    cut = events.ts.max() - 86_400.0
    old = events.ts < cut
    before = to_sequences(events.take(np.flatnonzero(old)))
    test = to_sequences(events.take(np.flatnonzero(~old)))
    ids = events.item_ids
    history: dict[int, list[int]] = {}
    for seq, user in zip(before.items, before.users, strict=True):
        history.setdefault(int(user), []).extend(seq.tolist())
    cases = [([ids[i] for i in history.get(int(user), [])[-40:]], [ids[i] for i in seq[:15]])
             for seq, user in zip(test.items, test.users, strict=True) if len(seq) >= 6]
    picked = rng.permutation(len(cases))[:n_cases]
    return before.items, ids, [cases[i] for i in picked]


def serve_cases(rec: Recommender, cases) -> list:
    """Each case's last answer: its history (an earlier session), then its session, click by click,
    every case a user of its own, one click of each case per batch."""
    streams = []
    for n, (history, session) in enumerate(cases):
        clicks = [Event(f"h{n}-{j}", f"u{n}", item, "click", T0 + j, "h") for j, item in enumerate(history)]
        clicks += [Event(f"s{n}-{j}", f"u{n}", item, "click", T0 + 1000 + j, "s")
                   for j, item in enumerate(session)]
        streams.append(clicks)
    states, last = {}, [None] * len(cases)
    for step in range(max(len(s) for s in streams)):
        batch = [(n, s[step]) for n, s in enumerate(streams) if step < len(s)]
        result = rec.step_batch([e for _, e in batch], states, T0 + 2000)
        states.update(result.states)
        for (n, _), answer in zip(batch, result.recommendations, strict=True):
            last[n] = answer
    return last


@torch.inference_mode()
def drops(model, session: list[str], targets: list[str]) -> dict[str, np.ndarray]:
    """For each distinct item x of the session, the targets' score drop when every click on x is
    removed (whole-session replay from zero, float16 between steps, as served)."""
    index = model.item_index
    distinct = list(dict.fromkeys(session))
    sequences = [session] + [[i for i in session if i != x] for x in distinct]
    longest = max(len(s) for s in sequences)
    items = torch.zeros(len(sequences), longest, dtype=torch.long)
    starts = torch.tensor([longest - len(s) for s in sequences])
    for row, seq in enumerate(sequences):
        items[row, longest - len(seq):] = torch.tensor([index(i) for i in seq])
    hidden = model.init_hidden(len(sequences))
    for t in range(longest):
        active = (starts <= t).nonzero()[:, 0]
        hidden[active] = model.step(hidden[active], items[active, t]).half().float()
    scores = model.score(hidden)[:, [index(t) for t in targets]].numpy()
    return {x: scores[0] - scores[1 + j] for j, x in enumerate(distinct)}


def judge(model, cases, answers) -> dict:
    """Pass rate and the shape of the explanations of ``answers`` (see the module docstring)."""
    passes, draws, slots, unexplained, outside = 0.0, 0, 0, 0, 0
    distinct, one_for_five, counts = [], 0, {}
    for (_, session), answer in zip(cases, answers, strict=True):
        targets = [it.item_id for it in answer.items]
        drop = drops(model, session, targets)
        for k, it in enumerate(answer.items):
            slots += 1
            if it.because is None:
                unexplained += 1
                continue
            counts[it.because] = counts.get(it.because, 0) + 1
            if it.because not in drop:
                outside += 1
            mine = drop[it.because][k] if it.because in drop else 0.0
            others = [d[k] for x, d in drop.items() if x != it.because]
            if others:
                passes += sum(mine > o for o in others) / len(others)
                draws += 1
        labels = [it.because for it in answer.items if it.because is not None]
        distinct.append(len(set(labels)))
        top5 = [it.because for it in answer.items[:5]]
        one_for_five += len(top5) == 5 and None not in top5 and len(set(top5)) == 1
    return {
        "pass_rate": passes / max(draws, 1),
        "unexplained": unexplained / slots,
        "outside_session": outside / slots,
        "distinct_per_list": statistics.mean(distinct),
        "hub_share": max(counts.values()) / sum(counts.values()) if counts else 0.0,
        "top5_one_item": one_for_five / len(answers),
        "lists": len(answers),
    }


def faithfulness(name: str, train, ids, cases, epochs: int, log) -> list[dict]:
    started = time.perf_counter()
    config = TrainConfig(hidden_size=64, epochs=epochs, seed=0)
    model, _ = train_model(train, ids, config, version=f"explain-{name}", show_progress=False)
    model.eval()
    log(f"{name}: trained {epochs} epochs in {time.perf_counter() - started:.0f} s; "
        f"{len(cases)} cases, sessions of {min(len(s) for _, s in cases)}-{max(len(s) for _, s in cases)}")
    rows = []
    for mode in ("replay", "similarity"):
        answers = serve_cases(Recommender(model, ServingOptions(explain=mode, explain_share=1.0)), cases)
        for label, keep in (("", lambda n: True), (", 6 clicks", lambda n: n == 6),
                            (", 11+ clicks", lambda n: n > 10)):
            part = [i for i, (_, session) in enumerate(cases) if keep(len(session))]
            if part:
                judged = judge(model, [cases[i] for i in part], [answers[i] for i in part])
                rows.append({"data": name + label, "explain": mode, **judged})
    return rows


# --- cost -----------------------------------------------------------------------------------
def variants() -> dict[str, ServingOptions]:
    default = ServingOptions().explain_share
    return {"replay, every answer": ServingOptions(explain="replay", explain_share=1.0),
            f"replay, share {default:g} (default)": ServingOptions(explain="replay"),
            "similarity": ServingOptions(explain="similarity"), "off": ServingOptions(explain="off")}


def stream_positions(n: int, rng) -> list[int]:
    """Clicks so far in the session of ``n`` events drawn from the stream bench/e2e.py sends
    (``synthetic_sessions``, mean session length 8)."""
    lengths = [len(s) for s in to_sequences(synthetic_sessions(n_users=2000, n_events=50_000)).items]
    positions = [p for length in lengths for p in range(1, length + 1)]
    return [positions[i] for i in rng.integers(len(positions), size=n)]


def cost_rows(profiles: dict[str, list[int]], repeat: int) -> list[dict]:
    """Per event: ``step_batch``, and ``begin_batch`` + ``finish_batch`` (the worker's main thread
    when its ranker child finds the top-K), for batches of users whose sessions hold ``clicks``."""
    model = synthetic_model(10_000, 64)
    ids = model.item_ids
    rng = np.random.default_rng(0)
    recs = {name: Recommender(model, options) for name, options in variants().items()}
    rows = []
    for profile, clicks in profiles.items():
        users = [f"u{i}" for i in range(len(clicks))]
        states: dict = {}
        for r in range(max(clicks) - 1):
            events = [Event(f"w{r}-{u}", u, ids[rng.integers(len(ids))], "click", T0 + r, "s")
                      for u, c in zip(users, clicks, strict=True) if r < c - 1]
            states = {**states, **recs["off"].step_batch(events, states, T0 + r).states}
        now = T0 + max(clicks)
        batches = [[Event(f"e{v}-{u}", u, ids[rng.integers(len(ids))], "click", now, "s") for u in users]
                   for v in range(4)]
        n = 4 * len(users)
        whole: dict[str, list[float]] = {name: [] for name in recs}
        main: dict[str, list[float]] = {name: [] for name in recs}
        ranked = {name: [rec._live.top_k(*rec.begin_batch(b, states, now).query) for b in batches]
                  for name, rec in recs.items()}
        for _ in range(repeat):  # the variants in turn, in a new order each round
            for name in rng.permutation(list(recs)):
                rec = recs[name]
                started = time.process_time()
                for b in batches:
                    rec.step_batch(b, states, now)
                middle = time.process_time()
                for b, top in zip(batches, ranked[name], strict=True):
                    rec.finish_batch(rec.begin_batch(b, states, now), top)
                whole[name].append((middle - started) / n)
                main[name].append((time.process_time() - middle) / n)
        base, base_main = (statistics.median(x["similarity"]) for x in (whole, main))
        for name in recs:
            us, us_main = statistics.median(whole[name]) * 1e6, statistics.median(main[name]) * 1e6
            rows.append({"sessions": profile, "explain": name, "us_per_event": us, "events_per_s": 1e6 / us,
                         "batch_ms": us * len(clicks) / 1e3,
                         "of_similarity": base * 1e6 / us, "main_thread_us": us_main,
                         "main_of_similarity": base_main * 1e6 / us_main})
    return rows


@click.command()
@click.option("--cases", default=600, show_default=True, help="Sessions judged per data set.")
@click.option("--epochs", default=3, show_default=True)
@click.option("--repeat", default=40, show_default=True, help="Cost: rounds of the modes in turn.")
@click.option("--parts", default="faithfulness,cost", show_default=True)
@click.option("--out", default="bench/results/explain.txt", show_default=True)
def main(cases, epochs, repeat, parts, out):
    torch.set_num_threads(1)
    lines = ["$ .venv/bin/python " + shlex.join(["bench/explain.py", *sys.argv[1:]]), ""]

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    rng = np.random.default_rng(0)
    if "faithfulness" in parts:
        faithfulness_part(cases, epochs, rng, log)
    if "cost" in parts:
        cost_part(repeat, rng, log)
    Path(out).write_text("\n".join(lines) + "\n")


def faithfulness_part(cases: int, epochs: int, rng, log) -> None:
    rows = faithfulness("movielens-100k", *ml_cases(cases, rng), epochs, log)
    rows += faithfulness("synthetic", *synthetic_cases(cases, rng), epochs, log)
    log("\nfaithfulness (pass: removing the explained item lowers the score more than removing "
        "another session item)")
    log(table(rows, ["data", "explain", "pass_rate", "unexplained", "outside_session", "distinct_per_list",
                     "hub_share", "top5_one_item", "lists"]))


def cost_part(repeat: int, rng, log) -> None:
    profiles = {"4 clicks": [4] * 256, "13 clicks": [13] * 256, "e2e stream": stream_positions(256, rng),
                "13 clicks, batch of 8": [13] * 8}
    costs = cost_rows(profiles, repeat)
    log("\ncost per event: step_batch at 10k items, d=64, K=20, batches of 256 users (or 8: a batch at "
        "500 events/s) whose sessions hold that many clicks (e2e stream: drawn from bench/e2e.py's); "
        "CPU time; main_thread: without the top-K, which the worker's ranker child finds")
    log(table(costs, ["sessions", "explain", "us_per_event", "batch_ms", "events_per_s", "of_similarity",
                      "main_thread_us", "main_of_similarity"]))


if __name__ == "__main__":
    main()
