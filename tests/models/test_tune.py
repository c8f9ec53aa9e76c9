"""stream-recs tune within a budget, its settings file, and train --settings. The assertions are on
what the search records (when each trial started, why it stopped), never on measured times."""

import json
import signal
import time

import pytest
from click.testing import CliRunner

from stream_recs.cli import main
from stream_recs.datasets import load_dataset
from stream_recs.models import train as train_module
from stream_recs.models import tune as tune_module
from stream_recs.models.checkpoint import read_meta
from stream_recs.models.evaluate import leave_one_out
from stream_recs.models.tune import NoResult, run_study
from stream_recs.models.tune_budget import Budget, BudgetSpent

DATA = ["--dataset", "synthetic", "--n-events", "2000", "--n-users", "40", "--n-items", "50"]
BUDGET = 12.0  # enough for an epoch of the defaults on cores that other jobs keep busy


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tune run whose --trials cannot all fit in the budget: (settings file, its content)."""
    path = tmp_path_factory.mktemp("tune") / "settings.json"
    result = CliRunner().invoke(main, ["tune", *DATA, "--budget", str(BUDGET), "--trials", "1000",
                                       "--epochs", "5", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert "trials completed" in result.stderr
    assert json.loads(result.stdout)["best_params"] == json.loads(path.read_text())["best_params"]
    return path, json.loads(path.read_text())


def test_tune_stops_starting_trials_when_the_budget_is_spent(tuned):
    _, doc = tuned
    search, trials = doc["search"], doc["trials"]
    assert search["stopped_by"] == "budget" and search["budget_s"] == BUDGET
    assert 1 <= search["trials_completed"] <= search["trials_started"] == len(trials) < 1000
    assert all(t["started_s"] < BUDGET for t in trials)  # none started after the budget was spent
    assert all(t["epochs"] <= 5 for t in trials)
    # the defaults run first; a trial ends by its epochs, its share, the budget or the pruner
    assert trials[0]["params"]["hidden_size"] == 256 and trials[0]["params"]["bptt"] == 16
    assert all(t["stopped"] in (None, "share", "budget", "interrupted", "pruned")
               or t["stopped"].startswith("failed: ") for t in trials)
    best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    assert doc["best_value"] == best["value"]
    assert doc["best_params"] == {**best["params"], "epochs": best["best_epoch"]}
    assert doc["tuned_on"]["protocol"] == "loo" and doc["metric"] == "ndcg@10"
    assert doc["tuned_on"]["fingerprint"] == load_dataset(
        "synthetic", n_events=2000, n_users=40, n_items=50, seed=0).fingerprint()


def test_train_reuses_the_settings_and_param_overrides_them(tuned, tmp_path):
    path, doc = tuned
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["train", *DATA, "--settings", str(path), "--epochs", "1",
                                       "--quiet", "--param", "bptt=3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "tuned on other data" not in result.stderr
    hyper = read_meta(out)["hyperparameters"]
    tuned_params = doc["best_params"]
    for name in ("hidden_size", "batch_size", "learning_rate", "dropout_hidden", "seen_size"):
        assert hyper[name] == tuned_params[name]
    assert hyper["bptt"] == 3 and hyper["epochs"] == 1
    record = hyper["settings"]
    assert record["path"] == str(path.resolve()) and len(record["sha256"]) == 64
    assert record["content"]["best_params"] == tuned_params and "trials" not in record["content"]
    assert record["content"]["tuned_on"] == doc["tuned_on"]


def test_train_warns_on_settings_tuned_on_other_data(tuned, tmp_path):
    path, _ = tuned
    other = [*DATA[:-2], "--n-items", "60"]
    result = CliRunner().invoke(main, ["train", *other, "--settings", str(path), "--epochs", "1",
                                       "--quiet", "--param", "hidden_size=8", "--out",
                                       str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "tuned on other data" in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "is not JSON"),
    ('{"params": {}}', "no best_params object"),
    ('{"best_params": {"hiden_size": 8}}', "unknown hyper-parameter(s) hiden_size"),
    ('{"best_params": {"hidden_size": "big"}}', "hidden_size must be int, not 'big'"),
    ('{"best_params": {}, "extra": 1}', "unknown key(s) extra"),
])
def test_a_bad_settings_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "settings.json"
    path.write_text(content)
    result = CliRunner().invoke(main, ["train", *DATA, "--settings", str(path), "--epochs", "1",
                                       "--quiet", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_no_epoch_within_the_budget_is_a_clear_error():
    result = CliRunner().invoke(main, ["tune", *DATA, "--budget", "0.001"])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit
    assert "all of the 0.001s budget: no trial could start" in result.output
    assert "larger --budget" in result.output


class _Untouchable:
    def __getattr__(self, name):
        raise AssertionError("the search read the test part")

    def __len__(self):
        raise AssertionError("the search read the test part")


def _split():
    events = load_dataset("synthetic", n_events=2000, n_users=40, n_items=50, seed=0)
    split = leave_one_out(events)
    split.test = _Untouchable()
    return split, events.item_ids


def test_the_search_validates_on_the_validation_part_only():
    split, item_ids = _split()
    result = run_study(split, item_ids, budget=Budget(60), masking="masked", n_trials=2, epochs=1,
                       log=lambda line: None)
    assert result["search"]["stopped_by"] == "trials" and result["search"]["trials_completed"] == 2
    assert result["search"]["validation_cases"] == len(split.valid)


def test_no_trial_starts_when_an_epoch_cannot_fit():
    split, item_ids = _split()
    budget = Budget(100)
    budget.epoch_costs.append(1000.0)  # as if epochs took longer than the whole budget
    with pytest.raises(NoResult, match=r"\(0 started"):
        run_study(split, item_ids, budget=budget, masking="masked", epochs=1, log=lambda line: None)


def test_a_running_epoch_is_interrupted_and_its_best_epoch_kept(monkeypatch):
    real = train_module.train_model

    def one_epoch_then_stall(sequences, registry, config, version, **kwargs):
        # one real epoch of a small model (validated by the search), then a stalled second one
        config.epochs, config.hidden_size, config.seen_size = 1, 8, 0
        real(sequences, registry, config, version, **kwargs)
        time.sleep(60)

    monkeypatch.setattr(train_module, "train_model", one_epoch_then_stall)
    monkeypatch.setattr(tune_module, "MIN_TRIALS", 1)  # the trial's share: the whole budget
    split, item_ids = _split()
    result = run_study(split, item_ids, budget=Budget(5), masking="masked", n_trials=5,
                       epochs=3, log=lambda line: None)
    [trial] = result["trials"]
    assert trial["stopped"] == "interrupted" and trial["state"] == "COMPLETE" and trial["epochs"] == 1
    assert result["search"]["stopped_by"] == "budget" and result["best_params"]["epochs"] == 1


def test_the_alarm_waits_for_a_shielded_section():
    budget = Budget(0.2)
    with pytest.raises(BudgetSpent), budget.enforced(), budget.shielded():
        time.sleep(0.4)  # the alarm rings in here, and is raised only after it
        shielded_to_the_end = True
    assert shielded_to_the_end
    with pytest.raises(BudgetSpent), Budget(0.1).enforced():
        time.sleep(5)


def test_a_trial_that_cannot_train_fails_and_the_search_goes_on(monkeypatch):
    real, calls = train_module.train_model, []

    def first_fails(sequences, registry, config, version, **kwargs):
        calls.append(config)
        if len(calls) == 1:
            raise RuntimeError("these settings cannot train here")
        config.hidden_size, config.seen_size = 8, 0
        return real(sequences, registry, config, version, **kwargs)

    monkeypatch.setattr(train_module, "train_model", first_fails)
    split, item_ids = _split()
    result = run_study(split, item_ids, budget=Budget(60), masking="masked", n_trials=2, epochs=1,
                       log=lambda line: None)
    failed, done = result["trials"]
    assert failed["state"] == "FAIL" and "cannot train here" in failed["stopped"]
    assert done["state"] == "COMPLETE" and result["best_value"] == done["value"]


def test_an_alarm_set_outside_still_rings():
    rang = []
    saved_handler = signal.signal(signal.SIGALRM, lambda signum, frame: rang.append(time.monotonic()))
    saved_timer = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # due after the budget: set again afterwards
        with pytest.raises(BudgetSpent), Budget(0.1).enforced():
            time.sleep(5)
        assert not rang and signal.getitimer(signal.ITIMER_REAL)[0] > 0
        time.sleep(0.5)
        assert len(rang) == 1
        signal.setitimer(signal.ITIMER_REAL, 0.1)  # due before the budget: rings within it
        with pytest.raises(BudgetSpent), Budget(0.3).enforced():
            time.sleep(5)
        assert len(rang) == 2
    finally:
        signal.signal(signal.SIGALRM, saved_handler)
        signal.setitimer(signal.ITIMER_REAL, *saved_timer)
