"""Pseudonymisation of user ids with a keyed hash (HMAC-SHA256), applied as a click is decoded.

With a key configured (``STREAM_RECS_PSEUDONYMISE_KEY``, or ``STREAM_RECS_PSEUDONYMISE_KEY_FILE``
naming a file that holds it), a worker replaces every user id by ``p-`` + the first 32 hex digits
of HMAC-SHA256(key, user id) before the id reaches the sessions table, its changelog, the logs or
the recommendations (which are then keyed by, and carry, the pseudonym). The same key gives the
same pseudonym on every worker and after restarts; without the key a pseudonym cannot be linked
back to a user id, nor computed from a guessed one. Records on the clicks and dead-letters topics
keep what producers sent.
"""

from __future__ import annotations

import hashlib
import hmac

from stream_recs.keys import MIN_KEY_BYTES, KeyConfigError, read_key

PREFIX = "p-"
DIGITS = 32  # 128 bits of the digest: collisions are negligible for any number of users


class Pseudonymiser:
    """``pseudonymiser(user_id)`` -> a stable pseudonym under a secret key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise KeyConfigError(f"the pseudonymisation key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self._key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return PREFIX + digest[:DIGITS]

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymiser(key=***)"


def load_pseudonymiser(key: str = "", key_file: str = "") -> Pseudonymiser | None:
    """The configured pseudonymiser; None when neither a key nor a key file is set."""
    secret = read_key(key, key_file, "pseudonymisation key")
    return Pseudonymiser(secret) if secret is not None else None
