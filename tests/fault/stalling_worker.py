"""``python -m tests.fault.stalling_worker worker ...``: the stream-recs CLI, whose worker's event
loop blocks for ``STALL_SECONDS`` in a synchronous call once the file ``STALL_TRIGGER`` appears
(the trigger is removed first): a loop stuck as a hung library call would leave it, while the
process and its HTTP thread live on. For the liveness test only."""

from __future__ import annotations

import os
import time
from pathlib import Path

from stream_recs.cli import main
from stream_recs.topology import agents

_wire = agents.wire


def _stalling_wire(topology, *args, **kwargs) -> None:
    _wire(topology, *args, **kwargs)
    trigger, seconds = Path(os.environ["STALL_TRIGGER"]), float(os.environ["STALL_SECONDS"])

    @topology.app.timer(0.2)
    async def stall() -> None:
        if trigger.exists():
            trigger.unlink()
            time.sleep(seconds)  # blocks the loop: no await


agents.wire = _stalling_wire  # the worker command imports wire when it runs
main()
