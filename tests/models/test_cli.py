"""train -> checkpoint -> evaluate through the CLI on a tiny synthetic log; evaluate's leakage
refusal."""

import json

from click.testing import CliRunner

from stream_recs.cli import main
from stream_recs.models import load_model
from stream_recs.models.checkpoint import read_meta

DATA = ["--dataset", "synthetic", "--n-events", "3000", "--n-users", "50", "--n-items", "60"]
TINY = ["--epochs", "1", "--quiet", "--param", "hidden_size=8", "--param", "bptt=2"]


def test_train_and_evaluate(tmp_path):
    runner = CliRunner()
    data = ["--dataset", "synthetic", "--n-events", "3000", "--n-users", "50", "--n-items", "60"]
    out = tmp_path / "model"
    result = runner.invoke(main, ["train", *data, "--out", str(out), "--epochs", "1", "--quiet",
                                  "--holdout", "session", "--session-gap", "1800",
                                  "--param", "hidden_size=8", "--param", "bptt=2"])
    assert result.exit_code == 0, result.output
    model = load_model(out)
    assert model.hidden_size == 8 and model.version.startswith("gru4rec-")
    result = runner.invoke(main, ["evaluate", "--model", str(out), *data, "--protocol", "session",
                                  "--json", "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload["results"]) == {"GRU4Rec (ours)", "most popular", "Markov", "V-SKNN"}
    for scored in payload["results"].values():
        assert set(scored) == {"masked", "unmasked", "masked-all"}
        assert 0.0 <= scored["masked"]["ndcg@10"] <= 1.0 and 0.0 <= scored["unmasked"]["ndcg@10"] <= 1.0
    assert payload["max_len"] == 50 and payload["targets_in_input"] > 0  # synthetic users click again
    assert (tmp_path / "report" / "results.png").stat().st_size > 0
    assert (tmp_path / "report" / "results-unmasked.png").stat().st_size > 0


def _train(tmp_path, name, *extra):
    result = CliRunner().invoke(main, ["train", *DATA, *TINY, "--out", str(tmp_path / name), *extra])
    assert result.exit_code == 0, result.output
    return str(tmp_path / name)


def _evaluate(model, *extra):
    return CliRunner().invoke(main, ["evaluate", "--model", model, *DATA, "--no-baselines", *extra])


def test_evaluate_refuses_a_model_trained_on_the_test_part(tmp_path):
    everything = _train(tmp_path, "all")
    result = _evaluate(everything, "--protocol", "loo")
    assert result.exit_code == 1
    assert "trained on all of synthetic" in result.output and "--holdout loo" in result.output
    held_out = _train(tmp_path, "loo", "--holdout", "loo")
    [record] = read_meta(held_out)["hyperparameters"]["trainings"]
    assert record["holdout"] == "loo" and record["source"] != record["data"]
    assert _evaluate(held_out, "--protocol", "loo").exit_code == 0
    result = _evaluate(held_out, "--protocol", "session")  # loo's training part holds the last day
    assert result.exit_code == 1 and "another split" in result.output
    assert "--test-days" in result.output
    child = _train(tmp_path, "child", "--holdout", "loo", "--parent", everything)
    assert len(read_meta(child)["hyperparameters"]["trainings"]) == 2
    result = _evaluate(child, "--protocol", "loo")
    assert result.exit_code == 1 and "descends from" in result.output


def test_evaluate_warns_when_it_cannot_tell(tmp_path):
    other = ["--dataset", "synthetic", "--n-events", "2000", "--n-users", "40", "--n-items", "60",
             "--data-seed", "1"]
    result = CliRunner().invoke(main, ["train", *other, *TINY, "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    result = _evaluate(str(tmp_path / "m"), "--protocol", "loo", "--json")
    assert result.exit_code == 0 and "cannot rule out leakage" in result.stderr
    assert json.loads(result.stdout)["cases"] == 50  # one per user


def test_tune_smoke(tmp_path):
    out = tmp_path / "tune.json"
    result = CliRunner().invoke(main, [
        "tune", "--dataset", "synthetic", "--n-events", "2000", "--n-users", "40", "--n-items",
        "50", "--protocol", "session", "--session-gap", "1800", "--trials", "2", "--epochs", "1",
        "--metric", "mrr@20", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert len(payload["trials"]) == 2 and payload["best_params"]["epochs"] == 1
