"""Metric maths on hand-made rankings, protocols on tiny logs, baselines, model predictor."""

import math

import numpy as np
import pytest
import torch

from stream_recs.datasets import from_rows
from stream_recs.models import GRU4Rec
from stream_recs.models.baselines import VSKNN, Markov, MostPopular
from stream_recs.models.evaluate import (
    Cases,
    ModelPredictor,
    conservative_ranks,
    evaluate,
    leave_one_out,
    metrics_from_ranks,
    session_split,
)


def test_conservative_ranks_ties_count_against():
    scores = np.array([[0.5, 0.5, 0.1], [1.0, 1.0, 1.0], [0.2, 0.9, 0.3]])
    assert conservative_ranks(scores, np.array([0, 2, 2])).tolist() == [2, 3, 2]


def test_unknown_or_nan_target_ranks_last():
    scores = np.array([[np.nan, 0.1, 0.2], [0.3, 0.1, 0.2]])
    assert conservative_ranks(scores, np.array([0, -1])).tolist() == [3, 3]


def test_metrics_hand_values():
    m = metrics_from_ranks(np.array([1, 3, 30]), ks=(10,))
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["precision@10"] == pytest.approx(2 / 30)
    assert m["f1@10"] == pytest.approx(2 * (2 / 30) * (2 / 3) / (2 / 30 + 2 / 3))
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 3)


def test_constant_scorer_looks_bad():
    class Constant:
        def score_prefixes(self, prefixes, users=None):
            return np.zeros((len(prefixes), 50))

    cases = Cases([np.array([1])] * 4, np.array([0, 1, 2, 3]), np.zeros(4, np.int64))
    assert evaluate(Constant(), cases)["recall@20"] == 0.0


def tiny_log():
    # user a: x y z w ; user b: y z x (by time; file order breaks the tie of b's last two)
    rows = [("a", "x", 1), ("b", "y", 2), ("a", "y", 3), ("a", "z", 4), ("b", "z", 5),
            ("a", "w", 6), ("b", "x", 7), ("b", "w", 7)]
    users, items, ts = zip(*rows, strict=True)
    return from_rows(users, items, ts)


def test_leave_one_out_split():
    events = tiny_log()
    split = leave_one_out(events, max_len=2)
    name = events.item_ids.__getitem__
    assert [name(i) for i in split.test.targets] == ["w", "w"]
    assert [name(i) for i in split.valid.targets] == ["z", "x"]
    assert [[name(i) for i in p] for p in split.test.prefixes] == [["y", "z"], ["z", "x"]]
    assert [[name(i) for i in p] for p in split.valid.prefixes] == [["x", "y"], ["y", "z"]]
    assert len(split.train) == 4


def test_session_split_by_time():
    day = 86_400.0
    users = ["a", "a", "b", "b", "c", "c", "c"]
    items = ["x", "y", "x", "y", "x", "y", "q"]
    ts = [0, 10, 2 * day, 2 * day + 10, 3 * day, 3 * day + 10, 3 * day + 20]
    split = session_split(from_rows(users, items, ts), test_days=1.0, valid_days=1.0,
                          session_gap=1800)
    assert len(split.train) == 2
    assert len(split.valid) == 1 and len(split.test) == 1  # item q unseen in training: dropped


def test_baselines_on_tiny_sequences():
    seqs = [np.array([0, 1, 2]), np.array([0, 1, 3]), np.array([1, 2])]
    prefixes = [np.array([0, 1])]
    pop = MostPopular(seqs, 5).score_prefixes(prefixes)
    assert pop[0].tolist() == [2, 3, 2, 1, 0]
    markov = Markov(seqs, 5).score_prefixes(prefixes)
    assert np.argmax(markov[0]) == 2 and markov[0, 3] > markov[0, 4]
    knn = VSKNN(seqs, 5, k=2).score_prefixes([np.array([3])])
    assert np.argsort(-knn[0])[:3].tolist() == [1, 0, 3]  # all vote equally; popularity breaks the tie


def test_model_predictor_matches_stepping():
    torch.manual_seed(0)
    model = GRU4Rec(["x", "y", "z"], hidden_size=4).eval()
    # the dataset knows one item the model does not: it must rank last
    predictor = ModelPredictor(model, ["z", "new", "x", "y"])
    scores = predictor.score_prefixes([np.array([2, 3]), np.array([0]), np.array([1, 2])])
    h = model.step(model.step(model.init_hidden(1), torch.tensor([0])), torch.tensor([1]))
    np.testing.assert_allclose(scores[0, [2, 3, 0]], model.score(h)[0].numpy(), rtol=1e-5)
    assert np.isneginf(scores[:, 1]).all()
    single = predictor.score_prefixes([np.array([1, 2])])
    np.testing.assert_allclose(scores[2], single[0], rtol=1e-5)
