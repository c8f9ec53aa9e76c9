"""Secret keys given as a setting or as a file that holds one (the pseudonymisation key, the
model-signing key): read once, checked for length, never shown."""

from __future__ import annotations

from pathlib import Path

MIN_KEY_BYTES = 16


class KeyConfigError(ValueError):
    """A key is set twice, unreadable or too short; the message names which key."""


def read_key(key: str, key_file: str, what: str) -> bytes | None:
    """The key set as ``key`` or held by the file ``key_file`` (surrounding whitespace dropped);
    None when neither is set. ``what`` names the key in errors."""
    if key and key_file:
        raise KeyConfigError(f"set the {what} or its file, not both")
    if key_file:
        try:
            secret = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise KeyConfigError(f"cannot read the {what} file {key_file}: {exc}") from exc
    elif key:
        secret = key.encode()
    else:
        return None
    if len(secret) < MIN_KEY_BYTES:
        raise KeyConfigError(f"the {what} must be at least {MIN_KEY_BYTES} bytes")
    return secret
