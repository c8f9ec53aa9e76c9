"""The ``stream-recs`` command line: one group, subcommands grouped by concern.

- ``cli/kafka.py``: the embedded broker (``kafka up|down|status``) and ``topics apply``;
- ``cli/model.py``: ``train``, ``evaluate``, ``tune``;
- ``cli/stream.py``: ``worker``, ``produce``, ``tail``, ``publish-model``, ``forget``, ``demo``;
- ``cli/trainer.py``: ``trainer``, the continuous-learning service;
- ``cli/items.py``: ``items load|set``, the item catalogue;
- ``cli/settings.py``: ``settings``, and the worker's and trainer's flags (made from the settings'
  declarations).

Submodules import heavy libraries (torch, faust) inside their commands, so ``stream-recs kafka
status`` stays fast.
"""

from __future__ import annotations

import importlib
import logging

import click

_COMMAND_MODULES = ("kafka", "model", "stream", "trainer", "items", "settings")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Sequence-aware streaming recommender on Kafka."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:  # the Kafka clients log every refused connection; our errors say it once
        for name in ("kafka", "aiokafka"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(f"{__name__}.{_name}").COMMANDS:
        main.add_command(_command)
