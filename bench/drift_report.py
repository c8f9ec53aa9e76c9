"""The text and the plot of bench/drift.py: every figure is computed here from the run's records."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import table
from drift_eval import Scores, first_recommendations, latency_split, score
from drift_run import LiveResult
from drift_stream import Stream

TARGET_B_OVER_A, TARGET_B_OVER_C, TARGET_CYCLES, TARGET_P99 = 1.5, 0.9, 2, 1.2
NEW_ITEM_CLICKS = 20  # the target's new items: from their 20th click (whatever --min-item-count is)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    q = np.percentile(values, [50, 90])
    return f"median {q[0]:.1f}, p90 {q[1]:.1f}, max {max(values):.1f}"


class Report:
    """Collects lines (printed as they come) and the per-window figures for the plot."""

    def __init__(self, command: str) -> None:
        self.lines = [f"$ {command}", f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
        self.series: dict[str, list[float]] = {}
        self.hours = 0
        self.static_hours = 0
        self.shift = 0.0

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def setup(self, stream: Stream, rate: float, hyper: dict, trainer_args: list[str], static_hours: int):
        o, ev = stream.options, stream.events
        self.hours, self.static_hours, self.shift = o.hours, static_hours, stream.shift_at / 3600
        measured = int(np.searchsorted(ev.ts, o.hours * 3600.0))
        start = int(np.sum(stream.birth <= 0))
        self.say(f"stream: {measured} clicks in {o.hours} simulated hours ({o.events_per_hour}/h), "
                 f"{len(set(ev.user[:measured].tolist()))} users, {start} items at the start + "
                 f"{o.new_per_hour} new each hour ({len(stream.new_items())} in the measured hours), "
                 f"tau {o.tau_hours:g} h, topic popularity reversed at hour {self.shift:g}, seed {o.seed}")
        self.say(f"replayed at {rate:g} clicks/s to each arm ({3600 * rate / o.events_per_hour:.0f}x "
                 f"time compression); model: {hyper}")
        self.say(f"(a) static: trained on hours 0-{static_hours}, never updated; (b) continuous: same start, "
                 f"stream-recs trainer {' '.join(trainer_args)}, STREAM_RECS_CANARY_SHARE=0 (each candidate "
                 "that passes the gate serves every user at once); (c) oracle: per window, trained from "
                 "scratch on every click before it")
        self.say("protocol, all arms: a click continuing a session is judged against the answer to the "
                 "session's previous click (top 20, the user's recent items masked as the workers mask); "
                 "(a) and (b): the answers their workers wrote, (c): the workers' Recommender replayed "
                 "offline; a missing answer is a miss")
        self.say()

    def results(self, stream: Stream, live: LiveResult, oracle: Scores, static_hours: int,
                serve_from: int) -> None:
        hours = stream.options.hours
        arms = {arm: score(stream, {r: a.items for r, a in live.answers[arm].items()})
                for arm in ("static", "continuous")}
        a, b, c = arms["static"], arms["continuous"], oracle
        rows = []
        for w in range(hours):
            row = {"hour": w, "cases": int(a.cases[w]), "HR_a": a.hr(w), "HR_b": b.hr(w),
                   "MRR_a": a.mrr(w), "MRR_b": b.mrr(w)}
            if w >= static_hours:
                row.update(HR_c=c.hr(w), MRR_c=c.mrr(w))
            rows.append(row)
        self.say("online HR@20 and MRR@20 per simulated hour (a static, b continuous, c oracle; "
                 f"hours before {static_hours}: the static model's training data, no oracle)")
        self.say(table(rows, ["hour", "cases", "HR_a", "HR_b", "HR_c", "MRR_a", "MRR_b", "MRR_c"]))
        self.series = {"static": [a.hr(w) for w in range(hours)],
                       "continuous": [b.hr(w) for w in range(hours)],
                       "oracle": [c.hr(w) if w >= static_hours else np.nan for w in range(hours)]}
        versions = {x.version for x in live.answers["continuous"].values() if x.strategy == "model"}
        self.say(f"answers missing: static {a.missing}, continuous {b.missing}; model versions that "
                 f"answered in the continuous arm: {len(versions)}")
        half = slice(hours // 2, hours)
        ba, bc = b.hr(half) / max(a.hr(half), 1e-9), b.hr(half) / max(c.hr(half), 1e-9)
        mba, mbc = b.mrr(half) / max(a.mrr(half), 1e-9), b.mrr(half) / max(c.mrr(half), 1e-9)
        self.say(f"\nsecond half (hours {hours // 2}-{hours - 1}, pooled): HR@20 a {a.hr(half):.3f}, "
                 f"b {b.hr(half):.3f}, c {c.hr(half):.3f}; MRR@20 a {a.mrr(half):.3f}, b {b.mrr(half):.3f}, "
                 f"c {c.mrr(half):.3f}")
        self.say(f"  HR b/a {ba:.2f} (target >= {TARGET_B_OVER_A}: {_verdict(ba >= TARGET_B_OVER_A)}); "
                 f"HR b/c {bc:.2f} (target >= {TARGET_B_OVER_C}: {_verdict(bc >= TARGET_B_OVER_C)}); "
                 f"MRR b/a {mba:.2f}, b/c {mbc:.2f}")
        self._trainer(live, serve_from)
        self._new_items(stream, live, NEW_ITEM_CLICKS)
        self._serving(live, serve_from)

    def _trainer(self, live: LiveResult, serve_from: int) -> None:
        w0, w1 = live.sent[0], live.sent[serve_from - 1]
        main = [c for c in live.cycles if c[1] <= w1 + 1.0]
        results = Counter(r for _, _, r in main)
        spans = [e - s for s, e, _ in main]
        done = ", ".join(f"{k} {v}" for k, v in sorted(results.items()))
        first: dict[str, float] = {}
        for answer in live.answers["continuous"].values():
            if answer.version is not None:
                first[answer.version] = min(first.get(answer.version, np.inf), answer.produced)
        lags = [first[v] - seen for seen, v, _ in live.published if v in first]
        self.say(f"\nmodels published: {len(live.published)}; checkpoint on disk -> first answer by it: "
                 + _quantiles(lags) + " s")
        self.say(f"trainer, over the measured hours ({w1 - w0:.0f} s): {len(main)} cycles ({done})"
                 + (f", {statistics.mean(spans):.1f} s each on average" if spans else ""))
        cpu = [(w, c) for w, c in live.cpu if w0 <= w <= w1]
        if len(cpu) >= 2:
            (t0, c0), (t1, c1) = cpu[0], cpu[-1]
            busy = sum(min(e, t1) - max(s, t0) for s, e, _ in main if e > t0 and s < t1)
            self.say(f"  CPU share: {(c1 - c0) / (t1 - t0):.2f} CPU-seconds per wall second (the machine has "
                     f"{os.cpu_count()} cores); a cycle was running {busy / (t1 - t0):.0%} of the time")

    def _new_items(self, stream: Stream, live: LiveResult, min_clicks: int) -> None:
        ends = [e for _, e, _ in live.cycles]
        since = self.static_hours * 3600.0
        items = first_recommendations(stream, live.answers["continuous"], live.sent, ends, min_clicks, since,
                                      live.published)
        got = [i for i in items if "rec_wall" in i]
        added = [i for i in items if "added_wall" in i]
        self.say(f"\nnew items (born from hour {self.static_hours} on, after the static model's data) with "
                 f">= {min_clicks} clicks: {len(items)}; in a published model by the end: {len(added)}; in a "
                 f"continuous-arm model answer by the end: {len(got)}")
        if added:
            cycles = Counter(i["cycles_to_added"] for i in added)
            self.say(f"  {min_clicks}th click -> first published model holding it: wall s "
                     + _quantiles([max(0.0, i["added_wall"] - i["enough_wall"]) for i in added])
                     + f"; trainer cycles completed: {dict(sorted(cycles.items()))}")
        if got:
            self.say("  first click -> first answer holding it: wall s "
                     + _quantiles([i["rec_wall"] - i["first_wall"] for i in got])
                     + "; simulated min " + _quantiles([(i["rec_sim"] - i["first_sim"]) / 60 for i in got]))
            self.say(f"  {min_clicks}th click -> first answer: wall s "
                     + _quantiles([max(0.0, i["rec_wall"] - i["enough_wall"]) for i in got]))
            first = Counter(i["cycles_from_first"] for i in got)
            enough = Counter(i["cycles_from_enough"] for i in got)
            self.say(f"  trainer cycles completed from the first click: {dict(sorted(first.items()))}; "
                     f"from the {min_clicks}th: {dict(sorted(enough.items()))}")
        late = [i for i in items if i.get("cycles_from_enough", TARGET_CYCLES + 1) > TARGET_CYCLES]
        if late:
            clicks, age = (np.median([i[key] for i in items]) for key in ("clicks", "age_at_enough_sim"))
            self.say(f"  all of them: clicks in the run median {clicks:.0f}, {min_clicks}th click at "
                     f"simulated age median {age / 60:.0f} min")
        for i in late:
            self.say(f"  later: {i['item']}, {i['clicks']} clicks in the run, its {min_clicks}th at "
                     f"{i['age_at_enough_sim'] / 60:.0f} simulated min of age, first answer after "
                     f"{i.get('cycles_from_enough', 'no')} cycles")
        within = len(items) - len(late)
        share = within / max(len(items), 1)
        self.say(f"  recommended within {TARGET_CYCLES} cycles of the {min_clicks}th click: {within} of "
                 f"{len(items)} ({share:.0%}; never recommended counts as not within; target: every such "
                 f"item: {_verdict(within == len(items) and len(items) > 0)})")

    def _serving(self, live: LiveResult, serve_from: int) -> None:
        phase = range(serve_from, len(live.sent))
        running = [(a, b) for a, b, on in live.segments if on]
        turns = Counter(on for _, _, on in live.segments)
        self.say(f"\nserving phase ({len(phase)} clicks after the measured hours, "
                 f"{len(live.segments)} turns: "
                 f"trainer running {turns[True]}, stopped by SIGSTOP {turns[False]}): answer latency "
                 "(ms, produced - sent) by the turn the click was sent in")
        rows, ratio = [], {}
        for arm in ("continuous", "static"):
            split = latency_split(live.answers[arm], live.sent, running, phase)
            for key, label in (("in", "running"), ("out", "stopped")):
                if len(split[key]):
                    p50, p99 = np.percentile(split[key], [50, 99])
                    rows.append({"worker": arm, "trainer": label, "answers": len(split[key]), "p50_ms": p50,
                                 "p99_ms": p99})
            if len(split["in"]) and len(split["out"]):
                ratio[arm] = np.percentile(split["in"], 99) / np.percentile(split["out"], 99)
        self.say(table(rows, ["worker", "trainer", "answers", "p50_ms", "p99_ms"]))
        if "continuous" in ratio:
            r = ratio["continuous"]
            control = f"; static worker: {ratio['static']:.2f}" if "static" in ratio else ""
            self.say(f"  p99 running/stopped, continuous worker: {r:.2f} (target <= {TARGET_P99}: "
                     f"{_verdict(r <= TARGET_P99)}){control}")
        else:
            self.say("  p99 ratio: not measured (no answers in one of the two kinds of turn)")
        main = [r for r in range(serve_from) if live.sent[r] >= live.sent[0] + 30.0]
        cycles = [(s, e) for s, e, _ in live.cycles]
        self.say("measured hours (first 30 s left out): latency of clicks sent while a cycle ran / "
                 "while none did")
        rows = []
        for arm in ("continuous", "static"):
            split = latency_split(live.answers[arm], live.sent, cycles, main)
            for key, label in (("in", "in a cycle"), ("out", "between cycles")):
                if len(split[key]):
                    p50, p99 = np.percentile(split[key], [50, 99])
                    rows.append({"worker": arm, "clicks_sent": label, "answers": len(split[key]),
                                 "p50_ms": p50, "p99_ms": p99})
        self.say(table(rows, ["worker", "clicks_sent", "answers", "p50_ms", "p99_ms"]))
        p99 = {arm: np.percentile([(live.answers[arm][r].produced - live.sent[r]) * 1e3 for r in main
                                   if r in live.answers[arm]], 99) for arm in ("continuous", "static")}
        r = p99["continuous"] / p99["static"]
        self.say(f"  p99 over the measured hours, continuous worker (model swaps every published cycle) "
                 f"{p99['continuous']:.1f} ms / static worker (none; same stream, same machine, the "
                 f"trainer's CPU load shared) {p99['static']:.1f} ms: {r:.2f} (target <= {TARGET_P99}: "
                 f"{_verdict(r <= TARGET_P99)})")
        for arm in ("continuous", "static"):
            got = [live.answers[arm][r].produced for r in range(serve_from) if r in live.answers[arm]]
            if len(got) > 1:
                rate = len(got) / (max(got) - min(got))
                self.say(f"  {arm}: {len(got)} answers in the measured hours at {rate:.1f}/s "
                         f"(offered {serve_from / (live.sent[serve_from - 1] - live.sent[0]):.1f} clicks/s)")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        hours = np.arange(self.hours)
        for name, label, style in (("static", "(a) static", "o-"), ("continuous", "(b) continuous", "s-"),
                                   ("oracle", "(c) oracle", "^--")):
            ax.plot(hours, self.series[name], style, label=label)
        ax.axvline(self.shift - 0.5, color="grey", linestyle=":", label="popularity shift")
        ax.axvspan(-0.5, self.static_hours - 0.5, color="grey", alpha=0.15,
                   label="static model's training data")
        ax.set_xlabel("simulated hour")
        ax.set_ylabel("online HR@20")
        ax.set_title("Drift: online HR@20 per simulated hour")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
