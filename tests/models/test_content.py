"""Content tower: the featuriser, the tower's rows for items without clicks (they must rank an item
of the right category far above chance), adding them to a model and saving the tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_recs.catalogue import CatalogueItem
from stream_recs.models import load_model, save_model
from stream_recs.models.checkpoint import read_meta
from stream_recs.models.content import (
    ContentTower,
    Vocabulary,
    fit_tower,
    load_tower,
    raw_tokens,
    save_tower,
    unclicked,
    with_content_rows,
)
from stream_recs.models.train import TrainConfig, train_model

N_CATS, PER_CAT = 8, 6


def test_tokens_of_each_field():
    item = CatalogueItem("1", True, "Toy Story 2 (1999)", ("Animation", " Comedy"),
                         {"year": 1999, "colour": "Red", "kids": True, "tags": ["a", "b"], "x": None})
    edges = {"year": {4: [1980.0, 1990.0, 1995.0]}}
    assert raw_tokens(item, edges) == [
        (0, "c:animation"), (0, "c:comedy"), (1, "t:toy"), (1, "t:story"), (2, "a:colour=red"),
        (2, "a:kids=true"), (2, "a:tags=a"), (2, "a:tags=b"), (2, "a:year/4#3")]
    assert (2, "a:year/4#0") in raw_tokens({"attributes": {"year": 1900}}, edges)  # a dict works too
    assert raw_tokens(item, {}) == raw_tokens(item, edges)[:-1]  # no edges: numbers are skipped


def test_vocabulary_keeps_shared_tokens_and_weighs_fields_equally():
    items = [CatalogueItem(str(n), True, f"The film {w}", ("Drama",), {"year": 1950 + 10 * n})
             for n, w in enumerate(["alpha", "beta", "gamma", "delta"])]
    vocab = Vocabulary.build(items, min_items=2)
    assert "t:alpha" not in vocab.tokens and {"t:the", "t:film", "c:drama"} <= set(vocab.tokens)
    assert list(vocab.edges) == ["year"] and set(vocab.edges["year"]) == {4, 16}
    ids, offsets, weights = vocab.encode([items[0], CatalogueItem("new", True, "Unheard of")])
    assert offsets.tolist() == [0, len(ids)]  # the second item has no known token: an empty bag
    assert weights.sum().item() == pytest.approx(1.0)
    by_token = dict(zip((vocab.tokens[i - 1] for i in ids.tolist()), weights.tolist(), strict=True))
    assert by_token["c:drama"] == pytest.approx(1 / 2)  # its field's whole share (2 fields known)
    assert by_token["t:the"] == pytest.approx(1 / 4)
    assert Vocabulary.from_meta(vocab.to_meta()) == vocab


def _catalogue() -> dict[str, CatalogueItem]:
    return {f"c{k}-{j}": CatalogueItem(f"c{k}-{j}", True, f"Film number {k * PER_CAT + j}",
                                       (f"genre{k}",), {"shade": f"s{k % 2}"})
            for k in range(N_CATS) for j in range(PER_CAT)}


def _sequences(rng, items: list[str], n: int = 600, length: int = 10) -> list[np.ndarray]:
    """Each sequence stays in one category: categories alone decide what is clicked together."""
    index = {item: i for i, item in enumerate(items)}
    out = []
    for _ in range(n):
        k = rng.integers(N_CATS)
        members = [index[f"c{k}-{j}"] for j in range(PER_CAT) if f"c{k}-{j}" in index]
        out.append(rng.choice(members, size=length))
    return out


def test_content_rows_rank_an_unclicked_item_of_the_right_category_far_above_chance():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    catalogue = _catalogue()
    known = [i for i in catalogue if not i.endswith("-0")]  # one item per category never clicked
    config = TrainConfig(hidden_size=16, batch_size=32, epochs=3, n_sample=0, seed=0)
    model, _ = train_model(sequences := _sequences(rng, known), known, config, "t", show_progress=False)
    tower = fit_tower(model, sequences, catalogue, width=16, max_events=4000, epochs=30,
                      batch_size=256, seed=0)
    new = [catalogue[f"c{k}-0"] for k in range(N_CATS)]
    served = with_content_rows(model, tower, new)
    assert served.item_ids == model.item_ids + [r.item_id for r in new]
    ranks = []
    for k in range(N_CATS):
        context = torch.tensor([served.item_index(f"c{k}-{j}") for j in (1, 2, 3)])
        hidden = served.init_hidden(1)
        for item in context:
            hidden = served.step(hidden, item[None])
        scores = served.score(hidden)[0].clone()
        scores[context] = -torch.inf  # masked, as served
        target = scores[served.item_index(f"c{k}-0")]
        ranks.append(int((scores >= target).sum()))
    # chance: about half of the 45 unmasked items (an untrained tower: 21 on average); the
    # category's own items: 3 unmasked others
    assert np.mean(ranks) <= 5, ranks


def test_rows_are_added_without_touching_the_known_ones(tmp_path):
    torch.manual_seed(0)
    catalogue = _catalogue()
    model, _ = train_model([np.array([0, 1, 2]), np.array([2, 1])], ["c0-1", "c0-2", "c1-1"],
                           TrainConfig(hidden_size=8, epochs=1, n_sample=0, seen_size=4), "v",
                           show_progress=False)
    tower = ContentTower(Vocabulary.build(catalogue.values()), model.hidden_size + model.seen_size)
    grown = with_content_rows(model, tower, [catalogue["c0-1"], catalogue["c2-0"]])
    assert grown.item_ids == ["c0-1", "c0-2", "c1-1", "c2-0"]
    assert grown.registry.lineage == model.registry.lineage and grown.version == "v"
    assert grown.item_counts == (*model.item_counts, 0)
    rows = tower.rows([catalogue["c0-1"], catalogue["c2-0"]])
    weight, bias = grown.output_embeddings()
    torch.testing.assert_close(weight[[0, 3]], rows[:, :-1])
    torch.testing.assert_close(bias[[0, 3]], rows[:, -1])
    torch.testing.assert_close(weight[1:3], model.output_embeddings()[0][1:3])  # untouched
    # only items never clicked are due a content row: c0-1 was seen, c2-0 only given a row
    grown.use_registry(grown.registry.seen({"c0-1": 100}))
    gone = CatalogueItem("c3-0", False, "Withdrawn")
    assert [r.item_id for r in unclicked(grown, [*catalogue.values(), gone])] == [
        i for i in catalogue if i != "c0-1"]
    save_model(grown, tmp_path / "m")  # a model with content rows is an ordinary checkpoint
    torch.testing.assert_close(load_model(tmp_path / "m").output_embeddings()[0], weight)


def test_tower_round_trip_and_integrity(tmp_path):
    catalogue = _catalogue()
    tower = ContentTower(Vocabulary.build(catalogue.values()), 12, width=8)
    assert load_tower(tmp_path) is None  # a checkpoint without a tower
    save_tower(tower, tmp_path, weights_sha256="abc")
    again = load_tower(tmp_path, weights_sha256="abc")
    records = list(catalogue.values())[:5]
    torch.testing.assert_close(again.rows(records), tower.rows(records))
    with pytest.raises(ValueError, match="other model weights"):
        load_tower(tmp_path, weights_sha256="other")
    blob = bytearray((tmp_path / "content.safetensors").read_bytes())
    blob[-1] ^= 1
    (tmp_path / "content.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256"):
        load_tower(tmp_path)


def test_saved_beside_a_checkpoint_it_is_tied_to_its_weights(tmp_path):
    model = train_model([np.array([0, 1])], ["c0-1", "c0-2"], TrainConfig(hidden_size=8, epochs=0),
                        "v", show_progress=False)[0]
    save_model(model, tmp_path)
    tower = ContentTower(Vocabulary.build(_catalogue().values()), model.hidden_size)
    save_tower(tower, tmp_path, read_meta(tmp_path)["weights_sha256"])
    assert load_tower(tmp_path, read_meta(tmp_path)["weights_sha256"]) is not None
    assert load_model(tmp_path).item_ids == model.item_ids  # the checkpoint still loads as before


def test_a_fit_starts_no_epoch_after_its_time_budget():
    rng = np.random.default_rng(1)
    catalogue = _catalogue()
    known = list(catalogue)
    model, _ = train_model(sequences := _sequences(rng, known, n=100), known,
                           TrainConfig(hidden_size=8, epochs=1, n_sample=0, seed=0), "t", show_progress=False)
    epochs = []
    fit_tower(model, sequences, catalogue, width=8, max_events=500, epochs=30, max_seconds=0.0,
              log=epochs.append)
    assert len(epochs) == 1, epochs
