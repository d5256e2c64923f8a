"""The shape every leader-side component shares: watch the store, note what changed,
and reconcile after a short debounce, so that a burst of events costs one pass.

Reconciliation is level-triggered: a pass reads the current state, so a missed
or coalesced event never leaves things wrong, and `run()` starts with a full pass.
"""
from __future__ import annotations

import asyncio

from raft.errors import StoreError
from raft.store import ClusterStore
from raft.tables import Event
from swarmpy import log


class Component:
    name = "component"
    debounce_s = 0.005
    resync_s = 30.0         # a periodic full pass, a safety net: events and timers drive the rest

    def __init__(self, store: ClusterStore) -> None:
        self.store = store
        self.log = log.get(self.name)
        self._wake = asyncio.Event()
        self._full = True
        self._task: asyncio.Task | None = None

    # subclasses -------------------------------------------------------------
    def note(self, events: list[Event]) -> bool:
        """Record what the events touch; return True if a pass is needed."""
        return True

    async def reconcile(self, full: bool) -> None:
        raise NotImplementedError

    # plumbing -----------------------------------------------------------------
    def wake(self, full: bool = False) -> None:
        self._full = self._full or full
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        queue = self.store.watch()
        feeder = asyncio.create_task(self._feed(queue))
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.resync_s)
                except asyncio.TimeoutError:
                    self._full = True
                await asyncio.sleep(self.debounce_s)
                self._wake.clear()
                full, self._full = self._full, False
                try:
                    await self.reconcile(full)
                except StoreError as exc:
                    self.log.warning("reconcile_failed", error=str(exc))
                    await asyncio.sleep(0.1)
                    self.wake(full=True)
                except Exception:
                    self.log.exception("reconcile_crashed")
                    await asyncio.sleep(0.5)
                    self.wake(full=True)
        finally:
            feeder.cancel()
            self.store.unwatch(queue)

    async def _feed(self, queue: asyncio.Queue) -> None:
        while True:
            events = await queue.get()
            if self.note(events):
                self._wake.set()
