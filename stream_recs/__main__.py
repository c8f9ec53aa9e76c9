"""``python -m stream_recs``: the same CLI as the ``stream-recs`` script."""

from stream_recs.cli import main

main()
