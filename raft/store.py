"""The cluster store: `Tables` replicated by pysyncobj, bridged to asyncio.

pysyncobj applies commands on its own tick thread.  This module is the one seam
between that thread and the daemon's event loop: commits resolve asyncio
futures and change events reach watchers through `call_soon_threadsafe`.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import socket
import threading
import time
from typing import Callable

import msgpack
import structlog
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, SyncObjException, replicated
from pysyncobj.monotonic import monotonic as raft_clock   # pysyncobj's deadlines use this clock

from raft import wire
from raft.errors import ERRORS_BY_CODE, NotLeaderError, StoreError, UnavailableError
from raft.tables import Event, Tables

_log = structlog.get_logger(component="raft")

COMMIT_TIMEOUT_S = 10.0
# A write waits this long for an election in progress before it reports that there is no leader.
LEADER_WAIT_S = 2.0
NO_LEADER = ("The swarm does not have a leader. It's possible that too few managers are online. "
             "Make sure more than half of the managers are online.")
QUEUE_FULL_RETRIES = 50
BIND_WAIT_S = 2.0          # a Raft port still held by a daemon that is exiting
GROUP_COMMIT_BYTES = 48 * 1024   # one entry stays under pysyncobj's 64 KiB append batch
# The store drives pysyncobj's ticks itself: fast while writes are in flight (a commit
# completes on the tick after it is appended), slow when idle, where a 2 ms tick would
# cost 4% of a core for nothing.  Network events and new commands wake a tick early.
BUSY_TICK_S = 0.002
IDLE_TICK_S = 0.03
KEEPALIVE_S = 0.25         # well under connectionTimeout (1 s)
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
        result, events = self._apply(payload)
        if events:
            self._on_events(events)
        return result

    # Named to sort after apply_txn: pysyncobj numbers replicated methods by sorted name,
    # and journals written before this method existed must still replay as apply_txn.
    @replicated
    def apply_txns(self, payloads: list[bytes]) -> list[dict]:
        """Several independent transactions in one Raft entry (group commit): each is
        applied whole or not at all, in order, and gets its own result. Watchers get the
        entry's events in one delivery, in order: one wake-up of each watcher per entry,
        not per write (with many writes in flight an entry holds ten or more)."""
        results, events = [], []
        for payload in payloads:
            result, txn_events = self._apply(payload)
            results.append(result)
            events += txn_events
        if events:
            self._on_events(events)
        return results

    def _apply(self, payload: bytes) -> tuple[dict, list[Event]]:
        self.last_activity = time.monotonic()
        return self.tables.apply(msgpack.unpackb(payload), owned=True)


class _CoalescingSyncObj(SyncObj):
    """SyncObj that sends append entries at most once per tick.

    With appendEntriesUseBatch off (kept off: it also drops the pipe that wakes the tick
    when a write arrives), pysyncobj sends every follower one message per new command and
    one per apply: with many writes in flight, most of the leader's time went into
    pickling, encrypting and answering those. The name-mangled method is overridden to
    mark a send as due; a tick callback, which runs before the tick's poll, sends once
    with every entry since the follower's next index."""

    _send_due = False
    _forward_waiting = False    # a follower forwarded a command not yet in the log
    _forward_idx = 0            # the last log index a follower waits to see committed
    _forward_sent = 0

    def _SyncObj__sendAppendEntries(self) -> None:
        self._send_due = True

    # pysyncobj sends every follower an AppendEntries as soon as the leader applies an
    # entry, only to carry the new commit index, and each follower answers it: half the
    # messages of a write. The commit index travels anyway with the next entry and with
    # the heartbeat (appendEntriesPeriod); it is sent at once only when a follower waits
    # for it: one that forwarded a write, whose client gets its answer once that follower
    # has applied it. Followers' reads may thus trail the leader by up to one heartbeat.
    def _applyCommand(self, command, callback, commandType=None) -> None:
        if isinstance(callback, tuple):      # (follower, request id): a forwarded command
            self._forward_waiting = True
        super()._applyCommand(command, callback, commandType)

    def _checkCommandsToApply(self) -> None:
        super()._checkCommandsToApply()
        # It drains the queue unless that takes longer than appendEntriesPeriod; a forwarded
        # command left behind then commits with the next entry or heartbeat.
        if self._forward_waiting:
            self._forward_waiting = False
            self._forward_idx = self._SyncObj__getCurrentLogIndex()

    def _SyncObj__applyLogEntries(self) -> bool:
        applied = SyncObj._SyncObj__applyLogEntries(self)
        if applied and self._forward_sent < self._forward_idx <= self._SyncObj__raftLastApplied:
            self._forward_sent = self._forward_idx
            return True
        return False

    def _forget_unreachable_leader(self) -> None:
        """pysyncobj starts an election only while it has a link up to some member, so a
        follower whose links all went down (the other managers died) kept its last leader
        for good: a write waited out COMMIT_TIMEOUT_S and `node ls` named a dead leader.
        Past the election deadline with no link up, it forgets the leader as an election
        would, and the writes waiting on that leader fail at once (LEADER_CHANGED)."""
        # Runs every tick: the usual case (some link up) is decided by the first test.
        if (not self._SyncObj__connectedNodes and self._SyncObj__raftLeader is not None
                and self._SyncObj__otherNodes and not self._isLeader()
                and self._SyncObj__raftElectionDeadline < raft_clock()):
            self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()

    def _flush_append_entries(self) -> None:
        if self._send_due:
            self._send_due = False
            SyncObj._SyncObj__sendAppendEntries(self)


def raft_conf(data_dir: str, password: str, **overrides) -> SyncObjConf:
    # Timings from ARCHITECTURE.md: sub-second elections, and a 2 ms tick so a
    # single write we wait on commits in ~2 ms instead of the default 50 ms.
    conf = dict(password=password, appendEntriesUseBatch=False, autoTick=False,
                raftMinTimeout=0.15, raftMaxTimeout=0.3, appendEntriesPeriod=0.04,
                connectionTimeout=1.0, connectionRetryTime=0.2, dynamicMembershipChange=True,
                # A leader cut off from the majority steps down after 1 s (default 30 s), so
                # writes on its side fail fast with NO_LEADER instead of waiting.
                leaderFallbackTimeout=1.0,
                journalFile=os.path.join(data_dir, "raft.journal"),
                fullDumpFile=os.path.join(data_dir, "raft.dump"),
                commandsQueueSize=100000,
                # Give up on a taken port instead of retrying forever (_check_raft_port).
                bindRetryTime=0.1, maxBindRetries=10)
    conf.update(overrides)
    return SyncObjConf(**conf)


def derive_raft_password(cluster_secret: str) -> str:
    return hashlib.sha256(b"swarmpy-raft:" + cluster_secret.encode()).hexdigest()


class RaftPortError(OSError):
    """The Raft port cannot be bound (another process holds it)."""


def _check_raft_port(self_addr: str) -> None:
    """pysyncobj (autoTick off) retries a failed bind in a busy loop with no end, so a Raft
    port held by another process hung the store's constructor, spinning a core. The daemon
    checks its ports up front on the advertise address, but pysyncobj binds every interface
    (a socket on another address or an outgoing connection from that port also blocks it).
    Bind as pysyncobj will, for up to BIND_WAIT_S in case a daemon that held the port is
    still exiting, then fail naming the port."""
    host, port = self_addr.rsplit(":", 1)
    family, any_host = (socket.AF_INET6, "::") if ":" in host else (socket.AF_INET, "0.0.0.0")
    deadline = time.monotonic() + BIND_WAIT_S
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((any_host, int(port)))
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RaftPortError(raft_port_in_use(port)) from exc
        time.sleep(0.1)


def raft_port_in_use(port: str | int) -> str:
    return (f"the Raft port {port} is in use by another process (a manager listens for Raft on its "
            f"cluster port + 1); stop that process or choose another port with --listen-addr")


class ClusterStore:
    """Reads are local; writes are transactions committed through Raft."""

    def __init__(self, self_addr: str, partners: list[str], data_dir: str, password: str,
                 **conf_overrides) -> None:
        if not password:
            raise ValueError("the Raft password must be set: pysyncobj peer traffic is pickle")
        _check_raft_port(self_addr)
        os.makedirs(data_dir, exist_ok=True)
        self._watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._replica = _Replica(self._publish)
        wire.install()
        try:
            self._raft = _CoalescingSyncObj(self_addr, partners,
                                            raft_conf(data_dir, password, **conf_overrides),
                                            consumers=[self._replica])
        except SyncObjException as exc:     # taken between the check and pysyncobj's bind
            raise RaftPortError(raft_port_in_use(self_addr.rsplit(":", 1)[1])) from exc
        self._raft.addOnTickCallback(self._raft._flush_append_entries)
        self._raft.addOnTickCallback(self._raft._forget_unreachable_leader)
        self._on_tick_thread: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list[tuple[bytes, asyncio.Future]] = []     # writes for the next entry
        self._waiting: dict[asyncio.Future, float] = {}          # writes awaiting their outcome: deadline
        self._waiting_watch: asyncio.Task | None = None
        self._tick_errors: set[str] = set()
        self._closing = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="raft-tick", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        raft = self._raft
        last_keepalive = 0.0
        while not self._closing.is_set():
            while not self._on_tick_thread.empty():    # calls pysyncobj allows only on its thread
                self._on_tick_thread.get_nowait()()
            now = time.monotonic()
            if now - last_keepalive >= KEEPALIVE_S:
                self._send_keepalives()
                last_keepalive = now
            busy = now - self._replica.last_activity < BUSY_FOR_S
            try:
                raft.doTick(BUSY_TICK_S if busy else IDLE_TICK_S)
            except Exception as exc:   # as pysyncobj's own tick thread: keep ticking
                self._report_tick_error(exc)
                time.sleep(BUSY_TICK_S)

    def _report_tick_error(self, exc: Exception) -> None:
        """Once per kind of error: a tick that fails every time fails 500 times a second,
        and a leader whose tick fails sends no heartbeats (its followers elect another)."""
        kind = f"{type(exc).__name__}: {exc}"
        if kind not in self._tick_errors:
            self._tick_errors.add(kind)
            _log.error("raft_tick_failed", error=kind, exc_info=exc)

    def _send_keepalives(self) -> None:
        """A no-op message on every peer link. pysyncobj drops a link that has read nothing
        for connectionTimeout, and follower-to-follower links carry nothing while a leader
        lives: after an idle spell the first vote request of an election fell on a link
        being dropped, and every failover took two elections. SyncObj ignores message types
        it does not know."""
        transport = self._raft._SyncObj__transport
        for node in list(self._raft.otherNodes):
            try:
                transport.send(node, {"type": "swarmpy_keepalive"})
            except Exception:   # a link going down is the transport's business
                pass

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

    def members(self) -> list[str]:
        """Raft addresses of every voting member, this one included."""
        return sorted([str(self._raft.selfNode)] + [str(n) for n in self._raft.otherNodes])

    def reachable(self, addr: str) -> bool:
        """Whether this member holds a live connection to `addr` (itself counts)."""
        if addr == str(self._raft.selfNode):
            return True
        return any(str(n) == addr and self._raft.isNodeConnected(n) for n in self._raft.otherNodes)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.is_ready() and self.leader() is not None):
            if time.monotonic() > deadline:
                raise UnavailableError("the cluster store did not become ready: no Raft leader")
            await asyncio.sleep(0.01)

    # -- writes --------------------------------------------------------------
    async def commit(self, ops: list[dict]) -> dict:
        """Commit one transaction; raises a StoreError subclass if it was not applied.
        On a follower the write is forwarded to the leader, and this returns once the
        follower has applied it too, so a read after a write sees it."""
        payload = msgpack.packb(ops)
        if self.leader() is None:     # not a coroutine per write when there is one
            await self._wait_leader()
        for attempt in range(QUEUE_FULL_RETRIES):
            result, reason = await self._submit(payload)
            if reason != FAIL_REASON.QUEUE_FULL:
                break
            await asyncio.sleep(0.01 * (attempt + 1))
        if reason == FAIL_REASON.SUCCESS:
            if not result["ok"]:
                raise ERRORS_BY_CODE.get(result["code"], StoreError)(result["error"])
            if self.tables.index < result["index"]:     # a follower: the leader applied it first
                await self._wait_applied(result["index"])
            return result
        if reason == FAIL_REASON.MISSING_LEADER:
            raise UnavailableError(NO_LEADER + " The write was not confirmed.")
        if reason == FAIL_REASON.NOT_LEADER:
            raise NotLeaderError("this manager is not the Raft leader")
        if reason == FAIL_REASON.LEADER_CHANGED:
            await self._leader_after_change()
            raise UnavailableError("the Raft leader changed before the write was committed; retry")
        raise UnavailableError(f"the write's outcome is unknown ({_reason_name(reason)}); "
                               "the cluster may have lost quorum")

    async def _wait_leader(self) -> None:
        deadline = time.monotonic() + LEADER_WAIT_S
        while self.leader() is None:
            if time.monotonic() > deadline:
                raise UnavailableError(NO_LEADER)
            await asyncio.sleep(0.01)

    async def _leader_after_change(self) -> None:
        """A forwarded write fails as LEADER_CHANGED when this member's election timer
        fires, which is also how a member cut off from the majority first notices it. Tell
        the user which it was: a new leader (retry) or none within LEADER_WAIT_S."""
        try:
            await self._wait_leader()
        except UnavailableError:
            raise UnavailableError(NO_LEADER + " The write was not confirmed.") from None

    async def _wait_applied(self, index: int) -> None:
        deadline = time.monotonic() + COMMIT_TIMEOUT_S
        while self.tables.index < index and time.monotonic() < deadline:
            await asyncio.sleep(0.002)

    # -- membership (one change at a time; the caller serialises them) --------------------
    async def add_member(self, addr: str, wait: bool = True) -> None:
        await self._membership(self._raft.addNodeToCluster, addr, "add", wait)

    async def remove_member(self, addr: str) -> None:
        await self._membership(self._raft.removeNodeFromCluster, addr, "remove", True)

    async def transfer_leadership(self) -> None:
        """Hand leadership to the most up-to-date connected member (Raft's TimeoutNow)."""
        def transfer(arg, callback):
            self._on_tick_thread.put(lambda: self._raft.transferLeadership(arg, callback))

        _, reason = await self._call(transfer, None)
        if reason != FAIL_REASON.SUCCESS:
            raise UnavailableError(f"leadership could not be transferred ({_reason_name(reason)}): "
                                   "no other manager is connected and up to date")

    async def _membership(self, method, addr: str, what: str, wait: bool) -> None:
        await self._wait_leader()
        if not wait:
            method(addr)
            self._replica.last_activity = time.monotonic()
            return
        _, reason = await self._call(method, addr)
        if reason != FAIL_REASON.SUCCESS:
            raise UnavailableError(f"could not {what} Raft member {addr} ({_reason_name(reason)}); "
                                   "membership changes go one at a time, retry")

    async def _call(self, method, arg) -> tuple:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def done(result, reason):
            loop.call_soon_threadsafe(_resolve, fut, (result, reason))

        self._replica.last_activity = time.monotonic()
        method(arg, callback=done)
        return await self._await_outcome(fut)

    async def _submit(self, payload: bytes) -> tuple[dict | None, int]:
        """Queue a transaction for the next Raft entry. The writes that arrive in the same
        turn of the event loop share one entry (group commit): with many writes in flight,
        the leader replicates and answers one entry instead of one per write."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush_pending, loop)
        self._pending.append((payload, fut))
        return await self._await_outcome(fut)

    def _flush_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        pending, self._pending = self._pending, []
        self._replica.last_activity = time.monotonic()
        while pending:
            batch, size = [], 0
            while pending and (not batch or size + len(pending[0][0]) <= GROUP_COMMIT_BYTES):
                size += len(pending[0][0])
                batch.append(pending.pop(0))
            self._propose(loop, batch)

    def _propose(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[bytes, asyncio.Future]]) -> None:
        futures = [fut for _, fut in batch]

        def done(results, reason):
            def settle() -> None:
                for i, fut in enumerate(futures):
                    _resolve(fut, ((results[i] if results is not None else None), reason))
            loop.call_soon_threadsafe(settle)

        if len(batch) == 1:
            self._replica.apply_txn(batch[0][0], callback=lambda result, reason: done(
                None if result is None else [result], reason))
        else:
            self._replica.apply_txns([payload for payload, _ in batch], callback=done)

    async def _await_outcome(self, fut: asyncio.Future) -> tuple:
        """The callback's (result, reason); REQUEST_DENIED after COMMIT_TIMEOUT_S, and
        MISSING_LEADER once the cluster has lost its leader (both from `_watch_waiting`)."""
        loop = asyncio.get_running_loop()
        self._waiting[fut] = loop.time() + COMMIT_TIMEOUT_S
        if self._waiting_watch is None or self._waiting_watch.done():
            self._waiting_watch = loop.create_task(self._watch_waiting())
        try:
            return await fut
        finally:
            del self._waiting[fut]

    async def _watch_waiting(self) -> None:
        """While writes wait: answer those past their deadline REQUEST_DENIED, and once the
        cluster has had no leader for LEADER_WAIT_S (lost quorum), all of them
        MISSING_LEADER rather than let them wait out the timeout. One watcher for all
        waiting writes, not a timer per write: with many writes in flight, a timer set and
        cancelled for each was a heap push and a cancelled entry per write on the leader."""
        loop = asyncio.get_running_loop()
        leaderless_since = None
        while self._waiting:
            await asyncio.sleep(0.1)
            now = loop.time()
            for fut, deadline in list(self._waiting.items()):
                if deadline <= now:
                    _resolve(fut, (None, FAIL_REASON.REQUEST_DENIED))
            if self.leader() is not None:
                leaderless_since = None
            elif leaderless_since is None:
                leaderless_since = time.monotonic()
            elif time.monotonic() - leaderless_since > LEADER_WAIT_S:
                for fut in list(self._waiting):
                    _resolve(fut, (None, FAIL_REASON.MISSING_LEADER))

    # -- watch ---------------------------------------------------------------
    def watch(self) -> asyncio.Queue:
        """A queue that receives the Events of each committed Raft entry, in commit order: one
        transaction's, or those of the several transactions a group commit put in one entry."""
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.append((asyncio.get_running_loop(), queue))
        return queue

    def unwatch(self, queue: asyncio.Queue) -> None:
        self._watchers = [(lp, q) for lp, q in self._watchers if q is not queue]

    def _publish(self, events: list[Event]) -> None:
        # One wake-up of each event loop per transaction, not one per watcher: every
        # call_soon_threadsafe writes to the loop's self-pipe.
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Queue]] = {}
        for loop, watcher in self._watchers:
            by_loop.setdefault(loop, []).append(watcher)
        for loop, watchers in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_deliver, watchers, events)

    def close(self) -> None:
        self._closing.set()
        self._ticker.join(timeout=2)
        self._raft.destroy()


def _deliver(watchers: list[asyncio.Queue], events: list[Event]) -> None:
    for watcher in watchers:
        watcher.put_nowait(events)


def _resolve(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _reason_name(reason: int) -> str:
    for name in dir(FAIL_REASON):
        if getattr(FAIL_REASON, name) == reason:
            return name
    return str(reason)
