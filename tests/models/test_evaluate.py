"""Metric maths on hand-made rankings, masking, protocols on tiny logs, baselines, model predictor,
the leakage verdict."""

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
    leakage,
    leave_one_out,
    metrics_from_ranks,
    session_split,
    training_record,
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
    scored = evaluate(Constant(), cases)
    assert scored["masked"]["recall@20"] == scored["unmasked"]["recall@20"] == 0.0


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
    # every earlier item, beyond the 2-item input too (masked-all masks these)
    assert [[name(i) for i in h] for h in split.test.histories] == [["x", "y", "z"], ["y", "z", "x"]]
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


class Fixed:
    """Scores from a table, one row per case (a read-only view, as MostPopular returns)."""

    def __init__(self, rows):
        self.rows, self.done = np.asarray(rows, np.float64), 0

    def score_prefixes(self, prefixes, users=None):
        rows = self.rows[self.done:self.done + len(prefixes)]
        self.done += len(prefixes)
        rows.flags.writeable = False
        return rows


def test_masking_removes_the_input_items_only():
    # case 0: input items 0 and 1 score highest, target 2 third -> rank 1 masked, 3 unmasked
    # case 1: the target (3) is in its own input: ranked last when masked (unreachable)
    scores = [[0.9, 0.8, 0.7, 0.1, 0.0], [0.1, 0.2, 0.3, 0.9, 0.0]]
    cases = Cases([np.array([0, 1]), np.array([3, 1])], np.array([2, 3]), np.zeros(2, np.int64))
    scored = evaluate(Fixed(scores), cases, ks=(1, 3))
    assert scored["unmasked"]["recall@1"] == 0.5 and scored["unmasked"]["recall@3"] == 1.0
    assert scored["masked"]["recall@1"] == 0.5 and scored["masked"]["mrr@3"] == 0.5
    assert scored["cases"] == 2 and scored["targets_in_input"] == 1


def test_masked_all_also_masks_the_history_older_than_the_input():
    # input [1] (the last item); history [0, 1]: item 0 scores highest, the target 2 next
    scores = [[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1]]
    cases = Cases([np.array([1]), np.array([1])], np.array([2, 2]), np.zeros(2, np.int64),
                  [np.array([0, 1]), np.array([1])])
    scored = evaluate(Fixed(scores), cases, ks=(1,))
    assert scored["masked"]["recall@1"] == 0.0  # item 0 is not in the input
    assert scored["masked-all"]["recall@1"] == 0.5  # it is in the first case's history
    no_history = Cases(cases.prefixes, cases.targets, cases.users)
    assert evaluate(Fixed(scores), no_history, ks=(1,))["masked-all"] == scored["masked"]


def test_take_keeps_every_field_of_the_chosen_cases():
    cases = leave_one_out(tiny_log(), max_len=2).test
    for keep in (np.array([False, True]), np.array([1])):
        one = cases.take(keep)
        assert len(one) == 1 and one.targets[0] == cases.targets[1] and one.users[0] == cases.users[1]
        assert np.array_equal(one.prefixes[0], cases.prefixes[1])
        assert np.array_equal(one.histories[0], cases.histories[1])


def test_every_predictor_is_masked_by_the_same_rule():
    events = tiny_log()
    split = leave_one_out(events, max_len=3)
    seqs = [np.array([0, 1, 2, 3]), np.array([1, 2, 0])]
    torch.manual_seed(0)
    predictors = [MostPopular(seqs, 4), Markov(seqs, 4), VSKNN(seqs, 4),
                  ModelPredictor(GRU4Rec(events.item_ids, hidden_size=4), events.item_ids)]
    for predictor in predictors:
        scores = np.array(predictor.score_prefixes(split.test.prefixes, split.test.users), np.float64)
        for row, prefix in enumerate(split.test.prefixes):
            scores[row, prefix] = -np.inf
        expected = metrics_from_ranks(conservative_ranks(scores, split.test.targets))
        assert evaluate(predictor, split.test)["masked"] == expected, type(predictor).__name__


def _meta(trainings=None, data=None):
    hyper = {} if trainings is None else {"trainings": trainings}
    return {"data_fingerprint": data, "hyperparameters": hyper}


def test_leakage_verdicts():
    events = tiny_log()
    two_s = 2 / 86_400
    loo = leave_one_out(events)
    session = session_split(events, test_days=two_s, valid_days=two_s, session_gap=1.5)
    full, part, other = events.fingerprint(), loo.train.fingerprint(), session.train.fingerprint()
    assert len({full, part, other}) == 3
    assert leakage(_meta(training_record("loo", full, part, None)), events, loo) is None
    assert leakage(_meta(training_record("none", full, full, None)), events, loo) == "all"
    assert leakage(_meta(training_record("session", full, other, None)), events, session) is None
    assert leakage(_meta(training_record("session", full, other, None)), events, loo) == "other split"
    assert leakage(_meta(training_record("none", "x", "x", None)), events, loo) == "unknown"
    # a child trained on the training part descends from a parent that saw everything
    parent = _meta(training_record("none", full, full, None), data=full)
    assert leakage(_meta(training_record("loo", full, part, parent)), events, loo) == "all"
    # checkpoints written before the record: only their data fingerprint
    assert leakage(_meta(data=full), events, loo) == "all"
    assert leakage(_meta(data=part), events, loo) is None
    assert leakage(_meta(data=None), events, loo) == "unknown"
