"""Fixtures of the operations tests: the deploy/ folder and the Prometheus binaries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def binary(name: str) -> str:
    """Path of a Prometheus binary; `make test` installs them (Debian package `prometheus`)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run `make system-deps` (apt-get install prometheus)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool")
