"""train -> checkpoint -> evaluate through the CLI on a tiny synthetic log."""

import json

from click.testing import CliRunner

from stream_recs.cli import main
from stream_recs.models import load_model


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
    payload = json.loads(result.output)
    assert set(payload["results"]) == {"GRU4Rec (ours)", "most popular", "Markov", "V-SKNN"}
    assert 0.0 <= payload["results"]["GRU4Rec (ours)"]["ndcg@10"] <= 1.0
    assert (tmp_path / "report" / "results.png").stat().st_size > 0


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
