"""Shared fixtures for the unit tests (pure and in-memory pieces; no Docker)."""
from __future__ import annotations

import socket
import warnings

import pytest

# pynvml warns on import that the package is deprecated; that is not what these tests are about.
warnings.filterwarnings("ignore", message="The pynvml package is deprecated", category=FutureWarning)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return _free_port()
