"""Settings: declared once, validated where loaded, the configuration table and the worker's flags made
from the same declarations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_recs.cli import main
from stream_recs.config import (
    ServingOptions,
    Settings,
    SettingsError,
    Trainer,
    Worker,
    load_settings,
    specs,
)
from stream_recs.settings_listing import describe, markdown_table

TABLE_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
TABLE_MARKER = "<!-- settings table: stream-recs settings --markdown -->"


def test_every_variable_is_declared_once():
    variables = [spec.variable for spec in specs()]
    assert len(variables) == len(set(variables))
    assert all(re.fullmatch(r"STREAM_RECS_[A-Z0-9_]+", v) for v in variables)


def test_values_come_from_the_environment_and_flags_win():
    env = {"STREAM_RECS_K": "7", "STREAM_RECS_TOPIC_CLICKS": "c2", "STREAM_RECS_SECURITY_PROTOCOL": "SSL",
           "STREAM_RECS_NEVER_RECOMMEND": " a, b ,,", "STREAM_RECS_BATCH_WINDOW": "0.5",
           "STREAM_RECS_DATA_DIR": ""}
    settings = load_settings(env, batch_size=9, k=None)
    assert settings.serving.k == 7 and settings.serving.never_recommend == ("a", "b")
    assert settings.topics.clicks == "c2" and settings.security.protocol == "SSL"
    assert settings.worker.batch_window == 0.5 and settings.worker.batch_size == 9
    assert settings.worker.data_dir == ""  # empty is unset: the default
    assert load_settings(env, k=3).serving.k == 3


def test_the_bootstrap_alias():
    assert load_settings({"KAFKA_BOOTSTRAP_SERVERS": "h:1"}).bootstrap_servers == "h:1"
    both = {"KAFKA_BOOTSTRAP_SERVERS": "h:1", "STREAM_RECS_BOOTSTRAP_SERVERS": "h:2"}
    assert load_settings(both).bootstrap_servers == "h:2"
    assert load_settings({}).embedded


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("STREAM_RECS_RANKER", "thread", "RANKER must be one of auto, process, inline; got 'thread'"),
        ("STREAM_RECS_BF16_SCREEN", "yes", "STREAM_RECS_BF16_SCREEN must be one of auto, on, off"),
        ("STREAM_RECS_PROCESSING_GUARANTEE", "once", "must be one of at_least_once, exactly_once"),
        ("STREAM_RECS_STORE", "redis://", "STREAM_RECS_STORE must be one of rocksdb://, memory://"),
        ("STREAM_RECS_SECURITY_PROTOCOL", "TLS", "STREAM_RECS_SECURITY_PROTOCOL must be one of PLAINTEXT"),
        ("STREAM_RECS_SECURITY_SASL_MECHANISM", "GSSAPI", "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ("STREAM_RECS_K", "ten", "STREAM_RECS_K must be a number (int); got 'ten'"),
        ("STREAM_RECS_BATCH_WINDOW", "1s", "STREAM_RECS_BATCH_WINDOW must be a number (float)"),
        ("STREAM_RECS_K", "0", "STREAM_RECS_K must be at least 1; got 0"),
        ("STREAM_RECS_PARTITIONS", "0", "STREAM_RECS_PARTITIONS must be at least 1"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(variable, value, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings({variable: value})


def test_settings_built_in_code_are_checked_too():
    with pytest.raises(SettingsError, match="STREAM_RECS_RANKER"):
        Worker(ranker="threads")
    with pytest.raises(SettingsError, match="STREAM_RECS_MASK_RECENT must be at least 0"):
        ServingOptions(mask_recent=-1)


def test_an_unknown_override_is_an_error():
    with pytest.raises(TypeError, match="no such setting: nope"):
        load_settings({}, nope=1)


def test_secrets_are_never_listed():
    settings = load_settings({"STREAM_RECS_SECURITY_SASL_PASSWORD": "pw-secret",
                              "STREAM_RECS_PSEUDONYMISE_KEY": "key-secret-0123456789"})
    rows = {variable: current for variable, _, _, current in describe(settings)}
    assert rows["STREAM_RECS_SECURITY_SASL_PASSWORD"] == rows["STREAM_RECS_PSEUDONYMISE_KEY"] == "***"
    assert "secret" not in repr(settings)


def test_the_readme_table_is_the_settings():
    """The configuration table (docs/configuration.md) is ``stream-recs settings --markdown``, row for row."""
    lines = TABLE_DOC.read_text().splitlines()
    start = lines.index(TABLE_MARKER) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    assert "\n".join(lines[start:end]) == markdown_table(), "run `stream-recs settings --markdown`"


def test_the_settings_command_prints_the_table():
    result = CliRunner().invoke(main, ["settings", "--markdown"])
    assert result.exit_code == 0 and result.output.strip() == markdown_table()
    listing = CliRunner().invoke(main, ["settings"], env={"STREAM_RECS_K": "5"})
    assert listing.exit_code == 0 and "STREAM_RECS_K" in listing.output and "(default 20)" in listing.output
    bad = CliRunner().invoke(main, ["settings"], env={"STREAM_RECS_K": "x"})
    assert bad.exit_code != 0 and "STREAM_RECS_K must be a number" in bad.output


@pytest.mark.parametrize("command", ["worker", "trainer"])
def test_the_flags_are_the_flagged_settings_with_their_defaults(command):
    """The worker's flags: every flagged setting but the trainer's; the trainer's: its own."""
    help_text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    for spec in specs():
        flag = f"--{spec.name.replace('_', '-')}"
        ours = spec.flag and (spec.group is Trainer) == (command == "trainer")
        assert (flag in help_text) == ours, flag
        if ours:
            assert spec.variable in help_text
    shown = {"worker": "(STREAM_RECS_K; default 20)", "trainer": "(STREAM_RECS_TRAINER_EPOCHS; default 2)"}
    assert shown[command] in help_text
    refused = CliRunner().invoke(main, ["worker", "--ranker", "thread"])
    assert refused.exit_code != 0 and "'thread' is not one of" in refused.output


def test_defaults_are_the_dataclass_defaults():
    settings = load_settings({})
    assert settings.serving == ServingOptions() and settings.worker == Worker()
    assert Settings().partitions == settings.partitions
