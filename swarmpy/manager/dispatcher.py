"""The dispatcher: the manager's side of every agent session.

An agent registers (with its join token and resources), then receives the full
set of its tasks whenever something it must act on changes, reports task status
in batches, and heartbeats.  Status reports from all sessions are written as one
transaction per `STATUS_BATCH_S`.  A node that misses heartbeats for
NODE_DOWN_AFTER_PERIODS periods is marked down, and its tasks are rescheduled.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from raft import wire
from raft.errors import StoreError
from raft.store import ClusterStore
from swarmpy import ca, defaults, log
from swarmpy.config import raft_to_cluster_addr
from swarmpy.manager import networks
from swarmpy.manager.caserver import manager_addrs, root_ca
from swarmpy.manager.secrets import Sealer, task_files
from swarmpy.models import TaskState, now, status_patch
from swarmpy.rpc import Channel, ChannelClosed

CA_REQUESTS = ("ca", "join")
AGENT_TASK_FIELDS = ("id", "service_id", "service_name", "slot", "node_id", "spec", "desired_state",
                     "assigned_generic", "service_version", "start_after", "networks")


def agent_view(task: dict) -> dict:
    view = {k: task.get(k) for k in AGENT_TASK_FIELDS}
    view["state"] = task["status"]["state"]
    return view


@dataclass
class Session:
    node_id: str
    channel: Channel
    role: str = "worker"            # the role the node runs as now (its certificate's)
    role_offered: str = ""          # the role last asked of it
    fingerprint: dict = field(default_factory=dict)
    networks: list = field(default_factory=list)     # the network views last sent
    managers: list = field(default_factory=list)     # the manager addresses last sent
    log_streams: dict[int, asyncio.Queue] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, store: ClusterStore, heartbeat_period: float = defaults.HEARTBEAT_PERIOD_S,
                 ca_server=None, cluster_secret: str = "", sealer: Sealer | None = None) -> None:
        self.store = store
        self.sealer = sealer
        self.ca_server = ca_server
        self.cluster_secret = cluster_secret      # handed to nodes promoted to manager
        self.heartbeat_period = heartbeat_period
        self.sessions: dict[str, Session] = {}
        self.log = log.get("dispatcher")
        self._status: dict[str, tuple[str, dict]] = {}
        self._status_event = asyncio.Event()
        self._dirty_nodes: set[str] = set()
        self._push_event = asyncio.Event()
        self._views: dict | None = None       # network views, by network id; None: to work out
        self._managers: list[str] | None = None   # manager addresses; None: to work out
        self._started = time.monotonic()
        self._req_ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._renewals: set[asyncio.Task] = set()
        self._last_seen: dict[str, float] = {}
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle ---------------------------------------------------------------
    async def start(self, host: str, port: int, ssl=None) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, ssl=ssl)
        self._tasks = [asyncio.create_task(f()) for f in (self._write_status, self._push_loop,
                                                         self._watch, self._check_heartbeats)]

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for session in list(self.sessions.values()):
            await session.channel.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- sessions ------------------------------------------------------------------
    async def _serve(self, reader, writer) -> None:
        channel = Channel(reader, writer)
        session = None
        try:
            hello = await asyncio.wait_for(channel.recv(), 10)
            if hello["type"] in CA_REQUESTS:
                if self.ca_server is not None:
                    await self.ca_server.handle(channel, hello)
                return
            session = await self._register(channel, hello, ca.identity(writer.get_extra_info("peercert")))
            if session is None:
                return
            while True:
                self._handle(session, await channel.recv())
        except (ChannelClosed, asyncio.TimeoutError):
            pass
        except Exception:
            self.log.exception("session_crashed")
        finally:
            if session is not None and self.sessions.get(session.node_id) is session:
                del self.sessions[session.node_id]
                for queue in session.log_streams.values():
                    queue.put_nowait(None)
            await channel.close()

    def _refusal(self, hello: dict, identity: tuple[str, str] | None) -> dict | None:
        if hello.get("type") != "register":
            return {"type": "error", "error": f"unexpected {hello.get('type')!r} before register"}
        if identity is None:
            return {"type": "error", "error": "a node certificate of this cluster is required; "
                                              "join the cluster first (swarmpy join)"}
        if not self.store.is_leader():
            leader = self.store.leader()
            # Without a leader to point at (an election; this manager just removed from
            # Raft), the managers it knows of let the agent try the others.
            return {"type": "error", "error": "this manager is not the leader",
                    "leader": raft_to_cluster_addr(leader) if leader else None,
                    "managers": self._manager_addrs()}
        if self.store.get("nodes", identity[0]) is None:
            return {"type": "error", "removed": True,
                    "error": f"node {identity[0]} is not a member of this swarm (it was removed); "
                             "run 'swarmpy leave --force' on it and join again"}
        return None

    async def _register(self, channel: Channel, hello: dict,
                        identity: tuple[str, str] | None) -> Session | None:
        refusal = self._refusal(hello, identity)
        if refusal is not None:
            await channel.send(refusal)
            return None
        node_id = identity[0]      # the certificate names the node, not what it claims
        await self.store.commit([self._node_op(node_id, hello, channel)])
        old = self.sessions.get(node_id)
        session = self.sessions[node_id] = Session(node_id, channel, role=identity[1])
        self._last_seen[node_id] = time.monotonic()
        if old is not None:
            await old.channel.close()
        session.managers = self._manager_addrs()
        await channel.send({"type": "registered", "node_id": node_id,
                            "heartbeat_period": self.heartbeat_period,
                            "managers": session.managers})
        self.log.info("node_registered", node=node_id, hostname=hello.get("hostname"))
        await self._push(session)
        return session

    def _node_op(self, node_id: str, hello: dict, channel: Channel) -> dict:
        current = self.store.get("nodes", node_id)
        # raft_wire: what its Raft port would speak if promoted.
        description = dict(hello["description"], raft_wire=wire.announced_version(hello))
        node = {"id": node_id, "spec": current["spec"], "description": description,
                "status": {"state": "ready", "message": "", "addr": str((channel.peer or ("",))[0]),
                           "cluster_addr": hello.get("cluster_addr", ""), "timestamp": now()},
                "created_at": current["created_at"]}
        if current.get("manager_status"):
            node["manager_status"] = current["manager_status"]
        return {"op": "update", "kind": "nodes", "obj": node}

    # -- leadership --------------------------------------------------------------------
    async def leadership_changed(self, leader: bool) -> None:
        """A new leader gives every node a full heartbeat grace before calling it down; a
        former leader drops its sessions, so agents find the new one."""
        self._started = time.monotonic()
        if not leader:
            for session in list(self.sessions.values()):
                await session.channel.close()

    def _handle(self, session: Session, msg: dict) -> None:
        kind = msg["type"]
        if kind in ("heartbeat", "status"):
            self._last_seen[session.node_id] = time.monotonic()
        if kind == "renew":
            task = asyncio.create_task(self._renew(session, msg))
            self._renewals.add(task)
            task.add_done_callback(self._renewals.discard)
        elif kind == "status":
            for update in msg["updates"]:
                self._status[update["id"]] = (session.node_id, update)
            self._status_event.set()
        elif kind in ("log", "log_end"):
            queue = session.log_streams.get(msg["req"])
            if queue is not None:
                queue.put_nowait(msg.get("data") if kind == "log" else None)

    # -- task status -----------------------------------------------------------------
    async def _write_status(self) -> None:
        while True:
            await self._status_event.wait()
            await asyncio.sleep(defaults.STATUS_BATCH_S)
            self._status_event.clear()
            batch, self._status = self._status, {}
            ops = []
            for task_id, (node_id, u) in batch.items():
                task = self.store.get("tasks", task_id)
                if task is None or task.get("node_id") != node_id:
                    continue    # a node may only report on its own tasks
                ops.append(status_patch(task_id, TaskState(u["state"]), u.get("message", ""),
                                        u.get("err", ""), container_id=u.get("container_id", ""),
                                        exit_code=u.get("exit_code")))
            if ops:
                try:
                    await self.store.commit(ops)
                except StoreError as exc:
                    self.log.warning("status_write_failed", error=str(exc), updates=len(ops))
                    for task_id, item in batch.items():
                        self._status.setdefault(task_id, item)
                    self._status_event.set()
                    await asyncio.sleep(0.2)

    # -- assignments -----------------------------------------------------------------
    async def _watch(self) -> None:
        queue = self.store.watch()
        try:
            while True:
                events = await queue.get()
                for e in events:
                    if e.kind == "nodes" and e.action == "delete" and e.obj["id"] in self.sessions:
                        # A removed node's certificate no longer opens a session.
                        await self.sessions[e.obj["id"]].channel.close()
                    if e.kind == "nodes" and e.action != "delete":
                        self._dirty_nodes.add(e.obj["id"])      # its role may have changed
                        self._push_event.set()
                    if e.kind == "tasks" and e.obj.get("node_id"):
                        self._dirty_nodes.add(e.obj["node_id"])
                        self._push_event.set()
                    if networks.changes_views(e):
                        # Every node on a network hears of its services' tasks coming and going.
                        self._views = None
                        self._dirty_nodes.update(self.sessions)
                        self._push_event.set()
                # Once per transaction, not per event: one may hold every node (nodes marked down).
                if any(e.kind == "nodes" for e in events) and self._managers_changed():
                    self._dirty_nodes.update(self.sessions)     # every node hears of it
                    self._push_event.set()
        finally:
            self.store.unwatch(queue)

    async def _push_loop(self) -> None:
        while True:
            await self._push_event.wait()
            await asyncio.sleep(0.005)
            self._push_event.clear()
            dirty, self._dirty_nodes = self._dirty_nodes, set()
            sessions = [self.sessions[n] for n in dirty if n in self.sessions]
            # Network views go to every node before any assignment: a task told to stop is
            # out of the other nodes' rotation by the time its own node stops it.
            for session in sessions:
                await self._send_quietly(self._push_networks(session))
            for session in sessions:
                await self._send_quietly(self._push(session))

    @staticmethod
    async def _send_quietly(coro) -> None:
        try:
            await coro
        except ChannelClosed:
            pass

    async def _push_networks(self, session: Session) -> None:
        if self._views is None:         # worked out again only after an event that changes them
            self._views = networks.network_views(self.store)
        mine = networks.node_views(self.store, session.node_id, self._views)
        if mine != session.networks:
            session.networks = mine
            await session.channel.send({"type": "networks", "networks": mine})

    def _manager_addrs(self) -> list[str]:
        if self._managers is None:
            self._managers = manager_addrs(self.store)
        return self._managers

    def _managers_changed(self) -> bool:
        before, self._managers = self._managers, manager_addrs(self.store)
        return self._managers != before

    async def _push_managers(self, session: Session) -> None:
        """Agents learn of managers that came or went while their session lasts, not only
        at registration: a worker that joined a one-manager cluster must find the managers
        promoted since once its own goes away."""
        managers = self._manager_addrs()
        if managers != session.managers:
            session.managers = managers
            await session.channel.send({"type": "managers", "managers": managers})

    async def _push(self, session: Session) -> None:
        await self._push_networks(session)
        await self._push_managers(session)
        await self._offer_role(session)
        tasks = [t for t in self.store.tables.node_tasks(session.node_id)
                 if t["status"]["state"] >= TaskState.ASSIGNED]
        fingerprint = {t["id"]: (t["desired_state"], t.get("service_version")) for t in tasks}
        if fingerprint == session.fingerprint:
            return
        session.fingerprint = fingerprint
        await session.channel.send({"type": "assignments", "tasks": [self._agent_view(t) for t in tasks]})

    def _agent_view(self, task: dict) -> dict:
        """A task as its node needs it: with the data of its secrets and configs, which
        go to the nodes that run tasks naming them, and only while the task should run."""
        view = agent_view(task)
        if self.sealer is not None and task["desired_state"] <= TaskState.RUNNING:
            view["files"] = task_files(self.store, self.sealer, task)
        return view

    # -- roles and certificates -----------------------------------------------------------
    def _grantable_role(self, node_id: str) -> str | None:
        """The role a certificate may carry now: a promoted node becomes a manager only
        once the role manager has recorded its Raft membership."""
        node = self.store.get("nodes", node_id)
        if node is None:
            return None
        role = node["spec"].get("role", "worker")
        if role == "manager" and not node.get("manager_status"):
            return None
        if role == "worker" and node.get("manager_status"):
            return None     # still a Raft member: the role manager removes it first
        return role

    async def _offer_role(self, session: Session) -> None:
        role = self._grantable_role(session.node_id)
        if role and role != session.role and role != session.role_offered:
            session.role_offered = role
            await session.channel.send({"type": "role", "role": role})

    async def _renew(self, session: Session, msg: dict) -> None:
        """Sign a new certificate for the node's current role (role change or expiry)."""
        role = self._grantable_role(session.node_id)
        reply = {"type": "renewed", "req": msg.get("req")}
        try:
            if role is None:
                raise ValueError("the node's role is changing; ask again once it is settled")
            cert = ca.sign_csr(root_ca(self.store), str(msg.get("csr", "")).encode(), session.node_id, role)
            reply.update(role=role, cert=cert.decode())
            if role == "manager":
                reply.update(cluster_secret=self.cluster_secret, raft_peers=self.store.members())
        except (ValueError, KeyError) as exc:
            reply.update(error=str(exc))
        try:
            await session.channel.send(reply)
        except ChannelClosed:
            pass

    # -- node health -------------------------------------------------------------------
    async def _check_heartbeats(self) -> None:
        grace = self.heartbeat_period * defaults.NODE_DOWN_AFTER_PERIODS
        while True:
            await asyncio.sleep(self.heartbeat_period / 2)
            t = time.monotonic()
            ops = []
            for node in self.store.list("nodes"):
                if node.get("status", {}).get("state") != "ready":
                    continue
                # Counted from the last heartbeat, not the session: a node whose session just
                # dropped (a restart, a manager change) has the rest of its grace to come back.
                last = max(self._last_seen.get(node["id"], 0.0), self._started)
                if t - last > grace:
                    ops.append({"op": "patch", "kind": "nodes", "id": node["id"], "skip_missing": True,
                                "set": {"status.state": "down", "status.message": "heartbeat failure",
                                        "status.timestamp": now()}})
            if ops and self.store.is_leader():
                try:
                    await self.store.commit(ops)
                except StoreError as exc:
                    self.log.warning("node_down_write_failed", error=str(exc))

    # -- logs ----------------------------------------------------------------------------
    async def container_logs(self, node_id: str, container_id: str, follow: bool, tail: str):
        """Yield chunks of a container's output, fetched from the agent that runs it."""
        session = self.sessions.get(node_id)
        if session is None:
            return
        req = next(self._req_ids)
        queue: asyncio.Queue = asyncio.Queue()
        session.log_streams[req] = queue
        try:
            await session.channel.send({"type": "logs", "req": req, "container_id": container_id,
                                        "follow": follow, "tail": tail})
            while (chunk := await queue.get()) is not None:
                yield chunk
        finally:
            session.log_streams.pop(req, None)
            if follow:
                try:
                    await session.channel.send({"type": "log_cancel", "req": req})
                except ChannelClosed:
                    pass
