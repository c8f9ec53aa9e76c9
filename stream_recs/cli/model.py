"""``stream-recs train | retire-items | evaluate | tune``: train a GRU4Rec checkpoint (from scratch,
or from a parent whose item indices it keeps), retire items, evaluate a checkpoint next to the
baselines on a full-ranking protocol (refusing a checkpoint that trained on the evaluation cases),
search hyper-parameters with Optuna.

Heavy imports (torch, numpy, optuna) happen inside the commands so other commands stay fast.
"""

from __future__ import annotations

import os
import sys

import click

from .data_source import data_options


def _gap(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def _split(events, protocol: str, max_len: int, session_gap: float | None, test_days: float):
    from stream_recs.models.evaluate import leave_one_out, session_split

    if protocol == "loo":
        return leave_one_out(events, max_len)
    return session_split(events, test_days=test_days, valid_days=test_days,
                         session_gap=session_gap, max_len=max_len)


@click.command()
@data_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Checkpoint directory to write.")
@click.option("--holdout", type=click.Choice(["none", "loo", "session"]), default="none",
              show_default=True, help="Train only on the training part of this protocol's split.")
@click.option("--loss", type=click.Choice(["xe", "bpr-max"]),
              help="Loss (default: the --settings file's, else xe).")
@click.option("--settings", "settings_path", type=click.Path(exists=True, dir_okay=False),
              help="A settings file of `stream-recs tune --out`: its hyper-parameters replace the "
                   "defaults (--param and --epochs still override); warns if tuned on other data.")
@click.option("--session-gap", default="none", show_default=True,
              help="Seconds of inactivity that start a new sequence, or 'none' (one per user).")
@click.option("--max-len", type=int,
              help="Items that rebuild a state (default: the data set's history length).")
@click.option("--epochs", type=int,
              help="Train exactly this many epochs on all the data (default: early stopping on a "
                   "validation part held out by the data's shape, keeping the best epoch).")
@click.option("--seed", default=0, show_default=True)
@click.option("--test-days", default=1.0, show_default=True, help="session holdout: test days.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Override a training hyper-parameter (repeatable), e.g. --param bptt=8.")
@click.option("--threads", default=0, show_default=True,
              help="torch threads (0: one per core; 1 can be faster on a CPU busy with other work).")
@click.option("--parent", "parent_dir", type=click.Path(exists=True, file_okay=False),
              help="Start from this checkpoint: its weights, its architecture, and its item "
                   "indices, which the new model keeps (new items are appended).")
@click.option("--retire-after", type=float, metavar="SECONDS",
              help="Retire the items unseen for this long before the newest event.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data, out_dir, holdout, loss, settings_path, session_gap, max_len, epochs, seed, test_days,
          params, threads, parent_dir, retire_after, quiet):
    """Train a GRU4Rec model and write a checkpoint directory.

    Unless --epochs is given, a validation part is held out (each user's last item for user
    histories, the last day's sessions for session logs), the epochs are chosen on it by early
    stopping and, unless --param seen_size=... is given, the seen memory is kept only where it
    validates better; the per-epoch validation figures are printed."""
    import dataclasses
    import time

    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)

    from stream_recs.models import load_model, save_model
    from stream_recs.models.checkpoint import read_meta
    from stream_recs.models.evaluate import training_record
    from stream_recs.models.fit import fit_model
    from stream_recs.models.train import TrainConfig
    from stream_recs.models.tune import defaults_for
    from stream_recs.models.warm_start import inherited

    events = source = data.load()
    gap, max_len = _gap(session_gap), max_len or data.history_len
    if holdout != "none":
        events = _split(events, holdout, max_len, gap, test_days).train
    tuned, settings = _tuned(settings_path, source.fingerprint(), loss) if settings_path else ({}, None)
    loss = loss or tuned.get("loss", "xe")
    values = {**defaults_for(loss), **tuned, "loss": loss, "max_len": max_len, "seed": seed}
    parent = load_model(parent_dir) if parent_dir else None
    if parent is not None:
        values.update(inherited(parent))
    if epochs is not None:
        values["epochs"] = epochs
    overrides = _parse_params(params)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise click.BadParameter(f"unknown hyper-parameter(s): {', '.join(sorted(unknown))}",
                                 param_hint="--param")
    values.update(overrides)
    fixed = epochs is not None or "epochs" in overrides
    fingerprint = events.fingerprint()
    version = f"gru4rec-{fingerprint[:8]}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    started = time.perf_counter()
    try:
        model, history, registry, n_sequences, choice = fit_model(
            events, values, gap, max_len, version, parent, fixed,
            seen_fixed=parent is not None or "seen_size" in {**tuned, **overrides}, quiet=quiet,
            retire=None if retire_after is None else (float(events.ts.max()), retire_after),
            say=lambda line: click.echo(line, err=True))
    except ValueError as exc:  # RegistryError: the parameters contradict the parent's
        raise click.UsageError(str(exc)) from exc
    seconds = time.perf_counter() - started
    config = TrainConfig.from_dict({**values, **choice.pop("config")})
    hyper = {**dataclasses.asdict(config), "session_gap": gap, "epoch_choice": choice,
             "trainings": training_record(holdout, source.fingerprint(), fingerprint,
                                          read_meta(parent_dir) if parent_dir else None)}
    if settings is not None:
        hyper["settings"] = settings
    n_ev = sum(h["events"] for h in history)
    metrics = {"train_seconds": round(seconds, 2),
               "train_events_per_s": round(n_ev / max(sum(h["seconds"] for h in history), 1e-9)),
               "final_loss": history[-1]["loss"] if history else None}
    if "valid" in choice:
        metrics["valid"] = choice["valid"]
    save_model(model, out_dir, hyperparameters=hyper, fingerprint=fingerprint, metrics=metrics)
    added = f", {len(registry.ids) - parent.n_items} new" if parent is not None else ""
    click.echo(f"trained {len(registry.ids)} items{added} ({len(registry.retired)} retired), "
               f"{n_sequences} sequences, {config.epochs} epochs ({choice['how']}) in {seconds:.1f}s "
               f"({metrics['train_events_per_s']:,} events/s); wrote {out_dir} (version {version})")


def _tuned(path: str, fingerprint: str, loss: str | None) -> tuple[dict, dict]:
    """A settings file's hyper-parameters and the record the checkpoint keeps of it; warns when
    it was tuned on other data or for another loss than ``--loss``."""
    from stream_recs.models.tune_settings import SettingsError, read_settings, use_warnings

    try:
        params, record = read_settings(path)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--settings") from None
    for warning in use_warnings(path, params, record, fingerprint, loss):
        click.echo(f"warning: {warning}", err=True)
    return params, record


@click.command("retire-items")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Checkpoint directory to write (a new version, same weights).")
@click.option("--restore", is_flag=True, help="Put the items back in ranking instead.")
@click.argument("item_ids", nargs=-1, required=True)
def retire_items(model_dir, out_dir, restore, item_ids):
    """Retire items from ranking (they keep their index), or restore them; announce the result
    with publish-model."""
    import time

    from stream_recs.models import load_model, save_model
    from stream_recs.models.checkpoint import read_meta
    from stream_recs.models.registry import RegistryError

    model = load_model(model_dir)
    meta = read_meta(model_dir)
    try:
        registry = model.registry.restore(item_ids) if restore else model.registry.retire(item_ids)
    except RegistryError as exc:
        raise click.UsageError(str(exc)) from exc
    model.use_registry(registry)
    model.version = f"{model.version.split('+')[0]}+r{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    save_model(model, out_dir, hyperparameters=meta["hyperparameters"],
               fingerprint=meta.get("data_fingerprint"), metrics=meta.get("metrics"))
    click.echo(f"{'restored' if restore else 'retired'} {len(item_ids)} items; {len(registry.retired)} "
               f"retired in all; wrote {out_dir} (version {model.version})")


def _parse_params(params) -> dict:
    import json

    out = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        try:
            out[name.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[name.replace("-", "_")] = value
    return out


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@data_options
@click.option("--protocol", type=click.Choice(["loo", "session"]), default="loo", show_default=True)
@click.option("--part", type=click.Choice(["test", "valid"]), default="test", show_default=True)
@click.option("--max-len", type=int,
              help="Input items per case (default: the data set's history length).")
@click.option("--session-gap", default="1800", show_default=True,
              help="session protocol: inactivity gap in seconds (ignored when session ids exist).")
@click.option("--test-days", default=1.0, show_default=True, help="session protocol: test days.")
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Also write results.json and results.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evaluate(model_dir, data, protocol, part, max_len, session_gap, test_days, baselines, report_dir,
             as_json):
    """Full-ranking evaluation of a checkpoint (and the baselines) on one protocol, with the
    input items masked (as served), unmasked, and with every earlier item masked. Refuses a
    checkpoint whose training data (its ancestors' included) held the evaluated cases."""
    import json
    from pathlib import Path

    import torch

    torch.set_num_threads(1)

    from stream_recs.models import load_model
    from stream_recs.models.checkpoint import read_meta
    from stream_recs.models.evaluate import MASKINGS, ModelPredictor, leakage
    from stream_recs.models.evaluate import evaluate as run_eval
    from stream_recs.models.report import table, write_chart, write_json

    events = data.load()
    max_len = max_len or data.history_len
    split = _split(events, protocol, max_len, _gap(session_gap), test_days)
    _refuse_leakage(leakage(read_meta(model_dir), events, split), model_dir, data, protocol, part)
    cases = split.test if part == "test" else split.valid
    model = load_model(model_dir)
    predictors = [ModelPredictor(model, events.item_ids)]
    if baselines:
        predictors += _baselines(split, protocol, len(events.item_ids), _gap(session_gap))
    scored = {p.name: run_eval(p, cases) for p in predictors}
    results = {name: {m: r[m] for m in MASKINGS} for name, r in scored.items()}
    payload = {"protocol": protocol, "part": part, "model": str(model_dir),
               "model_version": model.version, "dataset": data.name, "max_len": max_len,
               "items": len(events.item_ids), "cases": len(cases),
               "targets_in_input": scored[predictors[0].name]["targets_in_input"], "results": results}
    title = (f"{protocol} protocol, {part} part, {len(cases)} cases, input <= {max_len} items, "
             f"full ranking over {len(events.item_ids):,} items")
    if report_dir:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(report_dir) / "results.json", payload)
        for masking in MASKINGS:
            write_chart(Path(report_dir) / ("results.png" if masking == MASKINGS[0] else
                                            f"results-{masking}.png"),
                        {name: r[masking] for name, r in results.items()},
                        f"{data.name}: {protocol}, {part} ({len(cases)} cases), {masking}")
    if as_json:
        click.echo(json.dumps(payload, indent=1))
        return
    click.echo(f"{data.name}: {title}")
    for masking, caption in zip(MASKINGS, _MASKING_CAPTIONS, strict=True):
        click.echo(f"\n{masking}: {caption.format(**payload)}")
        click.echo(table({name: r[masking] for name, r in results.items()}))


_MASKING_CAPTIONS = (
    "each case's input items never recommended, as the worker serves ({targets_in_input} targets "
    "occur in their input: unreachable, ranked last)",
    "input items ranked like any other",
    "every earlier item of the user never recommended, also those older than the input (as the "
    "published leave-one-out figures rank; the same as masked where no history outgrows the input)",
)


def _refuse_leakage(verdict: str | None, model_dir, data, protocol: str, part: str) -> None:
    """Stop on a checkpoint that trained on the evaluated cases; warn when that cannot be told."""
    same = " and the same --test-days and --session-gap" if protocol == "session" else ""
    fix = (f"train on the training part only (`stream-recs train` with the same data options and "
           f"`--holdout {protocol}`{same}) and evaluate that checkpoint")
    if verdict == "all":
        raise click.ClickException(
            f"{model_dir} (or a checkpoint it descends from) was trained on all of {data.name}, the "
            f"{part} part included (its data fingerprint matches): its scores would be inflated; {fix}")
    if verdict == "other split":
        raise click.ClickException(
            f"{model_dir} (or a checkpoint it descends from) was trained on the training part of "
            f"another split of {data.name} (another --holdout, --test-days or --session-gap), which "
            f"holds cases of this {part} part; {fix}")
    if verdict == "unknown":
        click.echo(f"warning: {model_dir} was trained on data other than {data.name} or its {protocol} "
                   f"training part (no fingerprint matches): evaluate cannot rule out leakage", err=True)


def _baselines(split, protocol, n_items, gap):
    from stream_recs.datasets import to_sequences
    from stream_recs.models.baselines import VSKNN, Markov, MostPopular

    seqs = to_sequences(split.train, None if protocol == "loo" else gap)
    return [
        MostPopular(seqs.items, n_items),
        Markov(seqs.items, n_items),
        VSKNN(seqs.items, n_items, users=seqs.users, exclude_same_user=protocol == "loo"),
    ]


@click.command()
@data_options
@click.option("--protocol", type=click.Choice(["loo", "session"]), default="loo", show_default=True)
@click.option("--metric", type=click.Choice(["mrr@20", "ndcg@10"]), default="ndcg@10",
              show_default=True, help="Validation metric to maximise.")
@click.option("--masking", type=click.Choice(["masked", "unmasked"]), default="masked",
              show_default=True, help="Rank the validation cases with their input items masked "
                                      "(as served) or not.")
@click.option("--loss", type=click.Choice(["xe", "bpr-max"]), default="xe", show_default=True)
@click.option("--trials", default=30, show_default=True, help="At most this many trials.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=3600.0,
              show_default=True, metavar="SECONDS",
              help="Wall-clock time for the whole run, loading the data included: no trial starts "
                   "unless an epoch fits in what is left, a trial's epochs are capped to its share, "
                   "a running epoch stops when it is spent; the best trial so far is the result.")
@click.option("--epochs", default=20, show_default=True,
              help="At most this many epochs per trial; the best epoch on validation is reported.")
@click.option("--max-train-seconds", type=float,
              help="Prune trials whose projected training time exceeds this.")
@click.option("--session-gap", default="none", show_default=True)
@click.option("--max-len", type=int,
              help="Input items per case (default: the data set's history length).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Write the settings file (the best parameters, the data's fingerprint, protocol, "
                   "metric, budget, every trial) for `stream-recs train --settings`.")
@click.option("--threads", default=1, show_default=True, help="torch threads.")
def tune(data, protocol, metric, masking, loss, trials, budget, epochs, max_train_seconds, session_gap,
         max_len, seed, out_path, threads):
    """Optuna search over the GRU4Rec ranges within a time budget, optimising a metric of the
    split's validation part (never its test part). Prints the settings file (less its trials)."""
    import json
    import time

    started = time.monotonic()  # before anything else: importing torch and loading the data count

    import torch

    from stream_recs.models.tune_budget import Budget

    clock = Budget(budget, started)

    torch.set_num_threads(threads)

    from stream_recs.models.tune import NoResult, run_study, summary
    from stream_recs.models.tune_settings import settings_document

    events = data.load()
    gap, max_len = _gap(session_gap), max_len or data.history_len
    split = _split(events, protocol, max_len, gap, 1.0)
    try:
        result = run_study(split, events.item_ids, budget=clock, loss=loss, metric=metric,
                           masking=masking, n_trials=trials, epochs=epochs,
                           max_train_seconds=max_train_seconds, session_gap=gap, max_len=max_len,
                           seed=seed, log=lambda line: click.echo(line, err=True))
    except NoResult as exc:
        raise click.ClickException(str(exc)) from None
    tuned_on = {"data": data.name, "fingerprint": events.fingerprint(),
                "train_fingerprint": split.train.fingerprint(), "protocol": protocol,
                "session_gap": gap, "max_len": max_len, "seed": seed}
    document = settings_document(result, tuned_on)
    if out_path:
        with open(out_path, "w") as handle:
            json.dump(document, handle, indent=1)
    click.echo(f"{summary(result, clock)}{f'; wrote {out_path}' if out_path else ''}", err=True)
    json.dump({k: v for k, v in document.items() if k != "trials"}, sys.stdout, indent=1)
    click.echo()


COMMANDS = [train, retire_items, evaluate, tune]
