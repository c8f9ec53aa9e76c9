"""Settings as people read them: ``stream-recs settings`` and the configuration table (docs/configuration.md),
made from the declarations in ``config.py`` so no default or help text is written twice."""

from __future__ import annotations

import dataclasses

from stream_recs.config import Settings, Spec, specs, value_of


def shown_default(spec: Spec) -> str:
    """A setting's default as the listing and the README show it."""
    if spec.shown is not None:
        return spec.shown
    if spec.default is None or spec.default == "":
        return ""
    if isinstance(spec.default, tuple):
        return ",".join(spec.default)
    return str(spec.default)


def describe(settings: Settings | None = None) -> list[tuple[str, str, str, str | None]]:
    """(variable, default, meaning, current value) of every setting; secrets show ``***`` when
    set, and no current value is given without ``settings``."""
    rows = []
    for spec in specs():
        current = None
        if settings is not None:
            value = value_of(settings, spec)
            current = ("***" if value else "") if spec.secret else shown_default(
                dataclasses.replace(spec, default=value, shown=None))
        rows.append((spec.variable, shown_default(spec), spec.help, current))
    return rows


def markdown_table() -> str:
    """The configuration table (docs/configuration.md): one row per setting."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, default, meaning, _ in describe():
        lines.append(f"| `{variable}` | {f'`{default}`' if default else ''} | {meaning} |")
    return "\n".join(lines)
