"""A SASL_PLAINTEXT listener for a test's own broker (``LocalKafka(extra_listener=...)``), for
testing the clients' security settings: PLAIN users live in the listener's JAAS line, SCRAM users
are written when the broker's storage is formatted. ``sasl_client`` and ``served``: a
kafka-python client's side of it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class SaslListener:
    """A SASL_PLAINTEXT listener: its mechanism and users (name -> password)."""

    name: ClassVar[str] = "SASL_PLAINTEXT"
    protocol: ClassVar[str] = "SASL_PLAINTEXT"
    mechanism: str
    users: Mapping[str, str] = field(repr=False)

    def __post_init__(self) -> None:
        if self.mechanism not in SASL_MECHANISMS:
            raise ValueError(f"SASL mechanism {self.mechanism!r} is not one of {SASL_MECHANISMS}")
        for name, password in self.users.items():
            if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or any(c in password for c in '"\\,=[]\n'):
                raise ValueError(f"SASL user {name!r}: use [A-Za-z0-9._-] names, plain passwords")

    def properties(self) -> str:
        """server.properties lines for this listener."""
        prefix = f"listener.name.{self.name.lower()}.{self.mechanism.lower()}"
        if self.mechanism == "PLAIN":
            users = " ".join(f'user_{name}="{password}"' for name, password in self.users.items())
            jaas = f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
        else:
            jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return f"sasl.enabled.mechanisms={self.mechanism}\n{prefix}.sasl.jaas.config={jaas}\n"

    def format_args(self) -> list[str]:
        """``StorageTool format`` arguments creating the SCRAM users (none for PLAIN)."""
        if self.mechanism == "PLAIN":
            return []
        return [
            arg for name, password in self.users.items()
            for arg in ("--add-scram", f"{self.mechanism}=[name={name},password={password}]")
        ]


def sasl_client(mechanism: str, user: str, password: str) -> dict:
    """kafka-python client arguments for a SASL_PLAINTEXT listener."""
    return {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
        "sasl_plain_username": user, "sasl_plain_password": password,
    }


def served(bootstrap: str, **client: str) -> bool:
    """Does an admin client with these arguments get the topic list (within about 10 s)?"""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                                 bootstrap_timeout_ms=10_000, **client)
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()
