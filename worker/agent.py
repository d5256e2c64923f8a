"""The agent: one session with a dispatcher, the task controllers it feeds, and the
batched status reports that flow back.  Tasks keep running while the session is
down; on reconnect every last status is sent again (writes are forward-only)."""
from __future__ import annotations

import asyncio
import random
import threading
import time

from raft import wire
from swarmpy import ca, defaults, log
from swarmpy.config import split_addr
from swarmpy.models import TaskState
from swarmpy.rpc import Channel, ChannelClosed
from worker import taskfiles
from worker.controller import TaskController
from worker.engine import LABEL_TASK, Engine
from worker.network.overlay import Overlays
from worker.network.upstream import upstream_for
from worker.resources import NodeResources

RECONNECT_S = (0.2, 2.0)
CERT_RENEW_BEFORE_S = 30 * 24 * 3600     # node certificates last 90 days; renewed in their last 30


class Redirect(Exception):
    def __init__(self, addr: tuple[str, int]) -> None:
        super().__init__(f"{addr[0]}:{addr[1]}")
        self.addr = addr
RESYNC_S = 5.0


class Backoff:
    """The pause before the next session attempt: short before trying the next manager in
    the list, and doubling (up to RECONNECT_S[1]) each time a whole round of them failed.
    It starts short again once a session registered: an agent whose manager dies after
    hours must not wait out the backoff its first connection built up, or a new leader's
    grace (NODE_DOWN_AFTER_PERIODS heartbeats) runs out first."""

    def __init__(self) -> None:
        self._round = RECONNECT_S[0]

    def reset(self) -> None:
        self._round = RECONNECT_S[0]

    def next(self, round_done: bool) -> float:
        if not round_done:
            return RECONNECT_S[0]
        pause, self._round = self._round, min(self._round * 2, RECONNECT_S[1])
        return pause


class Agent:
    def __init__(self, node_id: str, managers: list[tuple[str, int]], role: str,
                 hostname: str, resources: NodeResources, labels: dict | None = None,
                 engine: Engine | None = None, ssl=None, on_managers=None, cluster_addr: str = "",
                 cert_expires_at: float = 0.0, on_certificate=None) -> None:
        self.node_id = node_id
        self.cluster_addr = cluster_addr          # where managers reach this node (for a promotion)
        self.cert_expires_at = cert_expires_at
        self.on_certificate = on_certificate      # (reply, key_pem): a renewed or role-changed certificate
        self._renewing = False
        self.managers = list(managers)
        self.on_managers = on_managers       # called with the managers' addresses the leader names
        self.role = role
        self.hostname = hostname
        self.resources = resources
        self.labels = labels or {}
        self.ssl = ssl
        self.engine = engine or Engine()
        self.nvml_gpu_ids = {g.uuid for g in resources.gpus}
        self.controllers: dict[str, TaskController] = {}
        self.overlays = Overlays(self.engine, split_addr(cluster_addr)[0] if cluster_addr else "127.0.0.1",
                                 upstream_for(self), self._task_addrs)
        self.log = log.get("agent")
        self.connected = asyncio.Event()
        self._channel: Channel | None = None
        self._statuses: dict[str, dict] = {}     # last report per task, resent on reconnect
        self._unsent: set[str] = set()
        self._flush = asyncio.Event()
        self._existing: dict[str, dict] | None = None   # containers found at start, by task id
        self._log_threads: dict[int, object] = {}
        self._bg: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        containers = await self.engine.call(self.engine.node_containers, self.node_id)
        self._existing = {c["Labels"].get(LABEL_TASK): c for c in containers}
        self.engine.follow_exits(self.node_id, self._on_exit_threadsafe)
        self.spawn(self._send_statuses())
        self.spawn(self._resync())
        backoff, target = Backoff(), 0
        while True:
            addr = self.managers[target % len(self.managers)]
            try:
                await self._session(addr)
            except Redirect as redirect:
                target = self._index_of(redirect.addr)
                await asyncio.sleep(0.05)       # elections may briefly point followers at each other
                continue
            except (OSError, ChannelClosed, asyncio.TimeoutError) as exc:
                self.log.info("session_lost", manager=f"{addr[0]}:{addr[1]}", error=str(exc))
                target += 1       # the next manager in the list
            if self.connected.is_set():
                backoff.reset()   # a session that registered: its loss starts a fresh search
            self.connected.clear()
            self._channel = None
            self._renewing = False
            await asyncio.sleep(backoff.next(round_done=target % len(self.managers) == 0))

    def _task_addrs(self) -> dict[str, list[str]]:
        addrs: dict[str, list[str]] = {}
        for controller in self.controllers.values():
            for attachment in controller.task.get("networks") or []:
                addrs.setdefault(attachment["addr"], []).append(attachment["network_id"])
        return addrs

    def _index_of(self, addr: tuple[str, int]) -> int:
        if addr not in self.managers:
            self.managers.append(addr)
        return self.managers.index(addr)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    async def stop(self) -> None:
        tasks = list(self._bg) + [c._runner for c in self.controllers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.overlays.close()

    async def remove_all_containers(self) -> int:
        """For `leave --force`: every container of this node's tasks goes.  Docker calls
        already running on the pool may still create one, so sweep until none are left."""
        await self.stop()
        removed: set[str] = set()
        for attempt in range(10):
            containers = await self.engine.call(self.engine.node_containers, self.node_id)
            if not containers and (removed or attempt > 0):
                break
            await asyncio.gather(*(self.engine.call(self.engine.remove, c["Id"]) for c in containers))
            removed.update(c["Id"] for c in containers)
            await asyncio.sleep(0.2)
        taskfiles.remove_node(self.node_id)
        await self.overlays.remove_all()
        return len(removed)

    # -- the session ------------------------------------------------------------------
    async def _session(self, addr: tuple[str, int]) -> None:
        channel = await Channel.connect(*addr, ssl=self.ssl)
        try:
            engine = await self.engine.call(self.engine.describe)
            await channel.send({"type": "register", "node_id": self.node_id, "cluster_addr": self.cluster_addr,
                                "role": self.role, "hostname": self.hostname, "labels": self.labels,
                                "description": self.resources.description(self.hostname, engine),
                                "raft_wire": wire.VERSION})
            reply = await asyncio.wait_for(channel.recv(), 15)
            if reply["type"] != "registered":
                if reply.get("leader"):
                    raise Redirect(split_addr(reply["leader"]))
                self._learn_managers(reply.get("managers") or [])     # the next one tried is among them
                raise ChannelClosed(f"registration refused: {reply.get('error')}")
            self._learn_managers(reply.get("managers") or [])
            self._channel = channel
            self._unsent.update(self._statuses)
            self._flush.set()
            self.connected.set()
            heartbeats = self.spawn(self._heartbeat(channel, reply["heartbeat_period"]))
            if self.cert_expires_at - time.time() < CERT_RENEW_BEFORE_S:
                self._renew(channel)
            try:
                while True:
                    self._handle(await channel.recv())
            finally:
                heartbeats.cancel()
        finally:
            await channel.close()

    def _learn_managers(self, addrs: list[str]) -> None:
        learned = [split_addr(a) for a in addrs]
        if learned and set(learned) != set(self.managers):
            self.managers = list(dict.fromkeys(self.managers[:1] + learned))
            if self.on_managers is not None:
                self.on_managers(addrs)

    async def _heartbeat(self, channel: Channel, period: float) -> None:
        while True:
            await channel.send({"type": "heartbeat"})
            await asyncio.sleep(period * random.uniform(0.8, 1.0))

    def _handle(self, msg: dict) -> None:
        if msg["type"] == "role" and msg.get("role") != self.role:
            self._renew(self._channel)
        elif msg["type"] == "renewed":
            self._renewed(msg)
        elif msg["type"] == "managers":
            self._learn_managers(msg["managers"])
        elif msg["type"] == "networks":
            self.spawn(self._apply_networks(msg["networks"]))
        elif msg["type"] == "assignments":
            self.spawn(self._assign(msg["tasks"]))
        elif msg["type"] == "logs":
            self._start_logs(msg)
        elif msg["type"] == "log_cancel":
            stream = self._log_threads.get(msg["req"])    # the reader removes itself when it ends
            if stream is not None:
                stream.close()

    async def _apply_networks(self, views: list[dict]) -> None:
        try:
            await self.overlays.apply(views)
        except Exception:
            self.log.exception("networks_not_applied")

    # -- certificates ------------------------------------------------------------------
    def _renew(self, channel: Channel | None) -> None:
        """Ask for a certificate for the node's current role; the new key stays here."""
        if channel is None or self._renewing:
            return
        self._renewing = True
        csr, self._pending_key = ca.new_key_and_csr()
        self.spawn(channel.send({"type": "renew", "req": 0, "csr": csr.decode()}))

    def _renewed(self, msg: dict) -> None:
        self._renewing = False
        if msg.get("error"):
            self.log.info("certificate_not_renewed", reason=msg["error"])
            return
        self.log.info("certificate_renewed", role=msg["role"])
        if self.on_certificate is not None:
            self.on_certificate(msg, self._pending_key)

    # -- assignments -----------------------------------------------------------------
    async def _assign(self, tasks: list[dict]) -> None:
        wanted = {t["id"]: t for t in tasks}
        for task_id, task in wanted.items():
            controller = self.controllers.get(task_id)
            if controller is not None:
                controller.update(task)
            else:
                container = (self._existing or {}).pop(task_id, None)
                self.controllers[task_id] = TaskController(self, task, container)
        gone = [c for tid, c in self.controllers.items() if tid not in wanted]
        orphans = list((self._existing or {}).values())
        self._existing = {}
        for controller in gone:
            del self.controllers[controller.id]
            self._statuses.pop(controller.id, None)
        await asyncio.gather(*(c.remove() for c in gone),
                             *(self.engine.call(self.engine.remove, c["Id"]) for c in orphans))

    # -- status reports ------------------------------------------------------------------
    def report(self, task_id: str, state: TaskState, message: str, err: str,
               container_id: str, exit_code: int | None) -> None:
        self._statuses[task_id] = {"id": task_id, "state": int(state), "message": message, "err": err,
                                   "container_id": container_id, "exit_code": exit_code}
        self._unsent.add(task_id)
        self._flush.set()

    async def _send_statuses(self) -> None:
        while True:
            await self._flush.wait()
            await asyncio.sleep(defaults.STATUS_BATCH_S)
            self._flush.clear()
            channel = self._channel
            if channel is None:
                continue
            batch = [self._statuses[t] for t in self._unsent if t in self._statuses]
            self._unsent.clear()
            try:
                await channel.send({"type": "status", "updates": batch})
            except ChannelClosed:
                self._unsent.update(u["id"] for u in batch)

    # -- container exits ----------------------------------------------------------------
    def _on_exit_threadsafe(self, container_id: str, exit_code: int | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_exit, container_id, exit_code)

    def _on_exit(self, container_id: str, exit_code: int | None) -> None:
        for controller in self.controllers.values():
            if controller.container_id == container_id:
                controller.exited(exit_code)

    async def _resync(self) -> None:
        """Catch exits the event stream missed (engine restarts, dropped streams)."""
        while True:
            await asyncio.sleep(RESYNC_S)
            try:
                containers = await self.engine.call(self.engine.node_containers, self.node_id)
            except Exception as exc:
                self.log.warning("resync_failed", error=str(exc))
                continue
            await self.overlays.retry()
            await self.overlays.heal()
            running = {c["Id"] for c in containers if c.get("State") == "running"}
            for controller in list(self.controllers.values()):
                if controller.state == TaskState.RUNNING and controller.container_id not in running:
                    await controller._check_exit()

    # -- logs --------------------------------------------------------------------------
    @property
    def log_readers(self) -> int:
        """Container log streams this agent is reading for clients right now."""
        return len(self._log_threads)

    def _start_logs(self, msg: dict) -> None:
        loop, channel, req = asyncio.get_running_loop(), self._channel, msg["req"]

        def send(message: dict) -> None:
            if channel is not None:
                asyncio.run_coroutine_threadsafe(channel.send(message), loop)

        def pump() -> None:
            try:
                stream = self.engine.logs(msg["container_id"], msg["follow"], msg["tail"])
                self._log_threads[req] = stream
                for chunk in stream:
                    send({"type": "log", "req": req, "data": chunk})
            except Exception as exc:
                send({"type": "log", "req": req, "data": f"error reading logs: {exc}\n".encode()})
            finally:
                self._log_threads.pop(req, None)
                send({"type": "log_end", "req": req})

        threading.Thread(target=pump, name=f"logs-{req}", daemon=True).start()
