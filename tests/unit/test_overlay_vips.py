"""worker/network/overlay.py: VIP rules go only into the namespace of the container they
were started for, never through a pid whose process is gone (it may name another process,
in another namespace, by then)."""
from __future__ import annotations

import asyncio
import subprocess

from worker.network import overlay, rules


def test_vip_rules_stop_once_the_containers_process_is_gone(monkeypatch):
    applied: list[tuple[str, int]] = []
    monkeypatch.setattr(rules, "sync_vips", lambda pid, services: applied.append(("sync", pid)))
    monkeypatch.setattr(rules, "apply_in_netns", lambda pid, text: applied.append(("apply", pid)))
    view = {"services": [{"id": "s1", "name": "web", "endpoint_mode": "vip", "vip": "10.0.9.2",
                          "tasks": [{"id": "t1", "addr": "10.0.9.3"}]}]}

    async def run() -> None:
        overlays = overlay.Overlays(engine=None, underlay="127.0.0.1", upstream=None)
        overlays.views = {"net1": view}
        container = subprocess.Popen(["sleep", "30"])
        try:
            await overlays.container_started("task1", container.pid, ["net1"], ["10.0.9.4"])
            assert applied == [("sync", container.pid)]
            overlays.views = {"net1": dict(view, services=[dict(view["services"][0], vip="10.0.9.5")])}
            await overlays._refresh_vips()
            assert applied[-1] == ("apply", container.pid)
        finally:
            container.kill()
            container.wait()
        overlays.views = {"net1": view}
        await overlays._refresh_vips()          # its pid no longer names its process
        assert len(applied) == 2

    asyncio.run(run())
