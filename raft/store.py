"""The cluster store: `Tables` replicated by pysyncobj, bridged to asyncio.

pysyncobj applies commands on its own tick thread.  This module is the one seam
between that thread and the daemon's event loop: commits resolve asyncio
futures and change events reach watchers through `call_soon_threadsafe`.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from typing import Callable

import msgpack
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

from raft.errors import ERRORS_BY_CODE, NotLeaderError, StoreError, UnavailableError
from raft.tables import Event, Tables

COMMIT_TIMEOUT_S = 10.0
QUEUE_FULL_RETRIES = 50
# The store drives pysyncobj's ticks itself: fast while writes are in flight (a commit
# completes on the tick after it is appended), slow when idle, where a 2 ms tick would
# cost 4% of a core for nothing.  Network events and new commands wake a tick early.
BUSY_TICK_S = 0.002
IDLE_TICK_S = 0.03
BUSY_FOR_S = 0.5


class _Replica(SyncObjConsumer):
    """The replicated state machine.  Attributes set before `super().__init__()`
    are plumbing and are not written to the snapshot; `tables` is."""

    def __init__(self, on_events: Callable[[list[Event]], None]) -> None:
        self._on_events = on_events
        self.last_activity = 0.0
        super().__init__()
        self.tables = Tables()

    @replicated
    def apply_txn(self, payload: bytes) -> dict:
        self.last_activity = time.monotonic()
        result, events = self.tables.apply(msgpack.unpackb(payload))
        if events:
            self._on_events(events)
        return result


def raft_conf(data_dir: str, password: str, **overrides) -> SyncObjConf:
    # Timings from ARCHITECTURE.md: sub-second elections, and a 2 ms tick so a
    # single write we wait on commits in ~2 ms instead of the default 50 ms.
    conf = dict(password=password, appendEntriesUseBatch=False, autoTick=False,
                raftMinTimeout=0.15, raftMaxTimeout=0.3, appendEntriesPeriod=0.04,
                connectionTimeout=1.0, connectionRetryTime=0.2, dynamicMembershipChange=True,
                journalFile=os.path.join(data_dir, "raft.journal"),
                fullDumpFile=os.path.join(data_dir, "raft.dump"),
                commandsQueueSize=100000)
    conf.update(overrides)
    return SyncObjConf(**conf)


def derive_raft_password(cluster_secret: str) -> str:
    return hashlib.sha256(b"swarmpy-raft:" + cluster_secret.encode()).hexdigest()


class ClusterStore:
    """Reads are local; writes are transactions committed through Raft."""

    def __init__(self, self_addr: str, partners: list[str], data_dir: str, password: str,
                 **conf_overrides) -> None:
        if not password:
            raise ValueError("the Raft password must be set: pysyncobj peer traffic is pickle")
        os.makedirs(data_dir, exist_ok=True)
        self._watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._replica = _Replica(self._publish)
        self._raft = SyncObj(self_addr, partners, raft_conf(data_dir, password, **conf_overrides),
                             consumers=[self._replica])
        self._closing = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="raft-tick", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        raft = self._raft
        while not self._closing.is_set():
            busy = time.monotonic() - self._replica.last_activity < BUSY_FOR_S
            try:
                raft.doTick(BUSY_TICK_S if busy else IDLE_TICK_S)
            except Exception:   # as pysyncobj's own tick thread: keep ticking
                time.sleep(BUSY_TICK_S)

    # -- reads -------------------------------------------------------------
    @property
    def tables(self) -> Tables:
        return self._replica.tables

    def get(self, kind: str, obj_id: str) -> dict | None:
        return self.tables.get(kind, obj_id)

    def by_name(self, kind: str, name: str) -> dict | None:
        return self.tables.by_name(kind, name)

    def list(self, kind: str) -> list[dict]:
        return self.tables.list(kind)

    # -- raft status ---------------------------------------------------------
    def is_ready(self) -> bool:
        return self._raft.isReady()

    def is_leader(self) -> bool:
        return self._raft._isLeader()

    def leader(self) -> str | None:
        leader = self._raft._getLeader()
        return None if leader is None else str(leader)

    def status(self) -> dict:
        st = self._raft.getStatus()
        return {"term": st.get("raft_term"), "leader": self.leader(), "self": str(st.get("self")),
                "commit_index": st.get("commit_idx"), "last_applied": st.get("last_applied")}

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.is_ready() and self.leader() is not None):
            if time.monotonic() > deadline:
                raise UnavailableError("the cluster store did not become ready: no Raft leader")
            await asyncio.sleep(0.01)

    # -- writes --------------------------------------------------------------
    async def commit(self, ops: list[dict]) -> dict:
        """Commit one transaction; raises a StoreError subclass if it was not applied."""
        payload = msgpack.packb(ops)
        for attempt in range(QUEUE_FULL_RETRIES):
            result, reason = await self._submit(payload)
            if reason != FAIL_REASON.QUEUE_FULL:
                break
            await asyncio.sleep(0.01 * (attempt + 1))
        if reason == FAIL_REASON.SUCCESS:
            if not result["ok"]:
                raise ERRORS_BY_CODE.get(result["code"], StoreError)(result["error"])
            return result
        if reason in (FAIL_REASON.NOT_LEADER, FAIL_REASON.MISSING_LEADER):
            raise NotLeaderError("this manager is not the Raft leader")
        if reason == FAIL_REASON.LEADER_CHANGED:
            raise UnavailableError("the Raft leader changed before the write was committed; retry")
        raise UnavailableError(f"the write's outcome is unknown ({_reason_name(reason)}); "
                               "the cluster may have lost quorum")

    async def _submit(self, payload: bytes) -> tuple[dict | None, int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def done(result, reason):
            loop.call_soon_threadsafe(_resolve, fut, (result, reason))

        self._replica.last_activity = time.monotonic()
        self._replica.apply_txn(payload, callback=done)
        try:
            return await asyncio.wait_for(fut, COMMIT_TIMEOUT_S)
        except asyncio.TimeoutError:
            return None, FAIL_REASON.REQUEST_DENIED

    # -- watch ---------------------------------------------------------------
    def watch(self) -> asyncio.Queue:
        """A queue that receives each committed transaction's list of Events."""
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.append((asyncio.get_running_loop(), queue))
        return queue

    def unwatch(self, queue: asyncio.Queue) -> None:
        self._watchers = [(lp, q) for lp, q in self._watchers if q is not queue]

    def _publish(self, events: list[Event]) -> None:
        for loop, queue in list(self._watchers):
            if not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, events)

    def close(self) -> None:
        self._closing.set()
        self._ticker.join(timeout=2)
        self._raft.destroy()


def _resolve(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _reason_name(reason: int) -> str:
    for name in dir(FAIL_REASON):
        if getattr(FAIL_REASON, name) == reason:
            return name
    return str(reason)
