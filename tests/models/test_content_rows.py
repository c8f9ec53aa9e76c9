"""The trainer's content rows (``content_rows.ContentRows``): catalogue items without clicks get
rows a session of their category ranks high, in every candidate while they have no click; the
tower is refitted only when due; nothing happens without such items or with too few records."""

from __future__ import annotations

import numpy as np
import torch

from stream_recs.catalogue import CatalogueItem
from stream_recs.content_rows import ContentOptions, ContentRows
from stream_recs.models.train import TrainConfig, train_model
from tests.models.test_content import N_CATS, _catalogue, _sequences


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _trained():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    catalogue = _catalogue()
    known = [i for i in catalogue if not i.endswith("-0")]  # one item per category never clicked
    config = TrainConfig(hidden_size=16, batch_size=32, epochs=3, n_sample=0, seed=0)
    model, _ = train_model(sequences := _sequences(rng, known), known, config, "t", show_progress=False)
    model.use_registry(model.registry.seen(dict.fromkeys(known, 100)))  # as a trainer's candidate
    return model, sequences, catalogue


def test_catalogue_items_without_clicks_get_rows_refitted_only_when_due():
    model, sequences, catalogue = _trained()
    gone = CatalogueItem("gone", False, "Withdrawn", ("genre0",))
    clock = Clock()
    rows = ContentRows(ContentOptions(refit_seconds=100.0, fit_seconds=30.0), clock)
    served, written = rows.apply(model, sequences, {**catalogue, "gone": gone})
    assert written == N_CATS and "gone" not in served.item_ids  # unavailable: no row
    assert served.item_ids[: model.n_items] == model.item_ids
    ranks = []
    for k in range(N_CATS):
        hidden = served.init_hidden(1)
        for j in (1, 2):
            hidden = served.step(hidden, torch.tensor([served.item_index(f"c{k}-{j}")]))
        scores = served.score(hidden)[0]
        ranks.append(int((scores >= scores[served.item_index(f"c{k}-0")]).sum()))
    assert np.mean(ranks) <= 8, ranks  # chance: about 24 of 48
    tower = rows.tower
    clock.now += 50  # not due: the same tower writes the rows of the next candidate
    again, written = rows.apply(served, sequences, catalogue)
    assert rows.tower is tower and written == N_CATS and again.item_ids == served.item_ids
    clock.now += 60  # due
    rows.apply(served, sequences, catalogue)
    assert rows.tower is not tower


def test_nothing_to_do_without_unclicked_items_or_with_too_few_records():
    model, sequences, catalogue = _trained()
    rows = ContentRows(ContentOptions(refit_seconds=100.0, fit_seconds=30.0), Clock())
    clicked = {i: r for i, r in catalogue.items() if not i.endswith("-0")}
    assert rows.apply(model, sequences, clicked) == (model, 0) and rows.tower is None
    few = {i: catalogue[i] for i in ["c0-0", "c0-1", "c0-2"]}  # 2 of the model's items: too few
    assert rows.apply(model, sequences, few) == (model, 0) and rows.tower is None
