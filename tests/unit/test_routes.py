"""worker/network/routes.py when `ip` cannot run: an error the agent logs, never a crash.
(The routes themselves are tested against the kernel in tests/integration/test_rules_netns.py.)"""
import subprocess

import pytest

from worker.network import routes


def test_no_ip_command_is_a_route_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(routes.RouteError, match="ip -j route show proto 95"):
        routes.sync({"10.255.0.4": "10.77.0.12"})
    assert routes.on_link_dev("10.77.0.12") is None


def test_a_hung_ip_command_is_a_route_error(monkeypatch):
    def hang(argv, **kw):
        raise subprocess.TimeoutExpired(argv, kw.get("timeout"))
    monkeypatch.setattr(routes.subprocess, "run", hang)
    with pytest.raises(routes.RouteError, match="timed out"):
        routes.ours()
