"""Shared fixtures for the unit tests (pure and in-memory pieces; no Docker)."""
from __future__ import annotations

import warnings

import pytest

from swarmtest import free_port_pair

# pynvml warns on import that the package is deprecated; that is not what these tests are about.
warnings.filterwarnings("ignore", message="The pynvml package is deprecated", category=FutureWarning)


@pytest.fixture
def free_port() -> int:
    # Below the ephemeral range, as the daemons' ports: a port the kernel handed out for
    # binding to port 0 can be taken by an outgoing connection before pysyncobj binds it
    # on every interface (a store test failed so in CI).
    return free_port_pair()
