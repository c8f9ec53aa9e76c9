"""Catching up on model-updates: of announcements read together that each replace what serves,
only the newest acceptable one is loaded, and a refused newest one never hides a good one."""

from __future__ import annotations

from pathlib import Path

from stream_recs.config import ServingOptions
from stream_recs.messages import CANARY, ModelUpdate, encode_model_update
from stream_recs.metrics import Metrics
from stream_recs.models import load_model
from stream_recs.models.checkpoint import read_meta
from stream_recs.rollout_follower import ModelFollower
from stream_recs.scoring import Recommender
from tests.harness import make_model


def announce(path: Path, version: str, rollout: str = "full", digest: str | None = None) -> bytes:
    sha = digest or read_meta(path)["weights_sha256"]
    return encode_model_update(ModelUpdate(str(path), version, sha, rollout=rollout))


def reloads(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("stream_recs_model_reloads_total", {"result": result}) or 0.0


def setup(tmp_path: Path) -> tuple[Recommender, Metrics, dict[str, Path]]:
    paths = {v: make_model(tmp_path / v, v, seed=n) for n, v in enumerate(["v1", "v2", "v3", "v4"])}
    return Recommender(load_model(paths["v1"]), ServingOptions(k=5)), Metrics(), paths


async def test_a_run_of_full_announcements_loads_only_the_newest(tmp_path):
    recommender, metrics, paths = setup(tmp_path)
    follower = ModelFollower(recommender, metrics)
    await follower.apply_all([announce(paths[v], v) for v in ("v2", "v3", "v4")])
    assert recommender.model_version == "v4"
    assert reloads(metrics, "success") == 1.0 and reloads(metrics, "failure") == 0.0


async def test_a_refused_newest_announcement_falls_back_to_the_one_before(tmp_path):
    recommender, metrics, paths = setup(tmp_path)
    follower = ModelFollower(recommender, metrics)
    bad = announce(paths["v4"], "v4", digest="0" * 64)  # its sha256 is not the checkpoint's
    await follower.apply_all([announce(paths["v2"], "v2"), announce(paths["v3"], "v3"), bad, None])
    assert recommender.model_version == "v3"
    assert reloads(metrics, "success") == 1.0
    refused = metrics.registry.get_sample_value("stream_recs_model_updates_refused_total",
                                                {"reason": "malformed"})
    assert refused == 1.0  # the empty record, acted on in turn after the run


async def test_canary_announcements_are_each_acted_on_when_there_is_a_canary_share(tmp_path):
    recommender, metrics, paths = setup(tmp_path)
    follower = ModelFollower(recommender, metrics, share=0.5)
    await follower.apply_all([announce(paths["v2"], "v2", CANARY), announce(paths["v3"], "v3", CANARY)])
    assert recommender.model_version == "v1" and recommender.candidate_version == "v3"
    assert reloads(metrics, "success") == 2.0  # the canary replaced: not a run that replaces all
    shareless = ModelFollower(Recommender(load_model(paths["v1"]), ServingOptions(k=5)), Metrics())
    await shareless.apply_all([announce(paths["v2"], "v2", CANARY), announce(paths["v3"], "v3", CANARY)])
    assert shareless.recommender.model_version == "v3"
    assert reloads(shareless.metrics, "success") == 1.0  # with no share a candidate serves everyone
