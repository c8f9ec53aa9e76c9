"""``stream-recs settings``, and the worker's and the trainer's flags, all made from the settings'
declarations (``stream_recs.config``), so no default or help text is written twice."""

from __future__ import annotations

import click

from stream_recs.config import GROUPS, SettingsError, Trainer, load_settings, specs
from stream_recs.settings_listing import describe, markdown_table, shown_default


def _click_type(spec):
    if spec.choices:
        return click.Choice([str(c) for c in spec.choices])
    return spec.base if spec.base in (int, float) else str


def flags_of(*groups: type):
    """A decorator adding a ``--name`` flag for every setting of ``groups`` declared with
    ``flag=True``; a flag left out is None, so the environment (or the default) stands."""

    def decorate(func):
        for spec in reversed([spec for spec in specs() if spec.flag and spec.group in groups]):
            default = shown_default(spec)
            text = f"{spec.help[0].upper()}{spec.help[1:]} ({spec.variable}; default {default or 'unset'})."
            name = f"--{spec.name.replace('_', '-')}"
            func = click.option(name, spec.name, type=_click_type(spec), help=text)(func)
        return func

    return decorate


setting_flags = flags_of(*(group for group in GROUPS if group is not Trainer))  # the worker's
trainer_flags = flags_of(Trainer)


def load_or_fail(**overrides: object):
    """``load_settings``, a bad value ending the command with the setting's own message."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--markdown", is_flag=True, help="The README's table: defaults and meanings only.")
def settings(markdown: bool) -> None:
    """Print every STREAM_RECS_* setting: its value here, its default, what it does."""
    if markdown:
        click.echo(markdown_table())
        return
    rows = describe(load_or_fail())
    width = max(len(variable) for variable, *_ in rows)
    for variable, default, meaning, current in rows:
        changed = "" if current == default else f"   (default {default or 'unset'})"
        click.echo(f"{variable:<{width}}  {current or '-'}{changed}\n{'':<{width}}  {meaning}")


COMMANDS = [settings]
