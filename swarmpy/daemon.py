"""The node daemon: one per host, hosting the manager role (store, API, dispatcher,
and on the leader the orchestrators, allocator, scheduler and task reaper) and
the agent role.  `python -m swarmpy daemon --data-dir DIR` runs it."""
from __future__ import annotations

import asyncio
import os
import signal
import socket

from raft.store import ClusterStore, derive_raft_password
from swarmpy import log, tls
from swarmpy.config import NodeConfig, erase_state, join_token
from swarmpy.manager.allocator import Allocator
from swarmpy.manager.controlapi import ControlAPI
from swarmpy.manager.dispatcher import Dispatcher
from swarmpy.manager.httpapi import HttpApi
from swarmpy.manager.orchestrator.orchestrator import Orchestrator
from swarmpy.manager.scheduler.scheduler import Scheduler
from swarmpy.manager.taskreaper import TaskReaper
from swarmpy.models import now
from worker.agent import Agent
from worker.resources import discover, hostname

VERSION = "0.1.0"
LEADERSHIP_POLL_S = 0.05


class Daemon:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.is_manager = config.role == "manager"
        self.log = log.get("daemon")
        self._stop = asyncio.Event()
        self._leaving = False
        self._leader_components: list = []
        self.store: ClusterStore | None = None

    # -- start and stop ---------------------------------------------------------------
    async def run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        self.store = ClusterStore(cfg.raft_addr, [], os.path.join(cfg.data_dir, "raft"),
                                  derive_raft_password(cfg.cluster_secret))
        await self.store.wait_ready()
        await self._ensure_cluster()
        self.control = ControlAPI(self.store)
        self.dispatcher = Dispatcher(self.store, cfg.heartbeat_period)
        cfg.ensure_certificates()
        node_tls = cfg.node_tls()
        # Node traffic is mutual TLS: both ends present certificates of the cluster's CA.
        await self.dispatcher.start(cfg.listen_host, cfg.port, ssl=tls.server_context(node_tls))
        self.api = HttpApi(self)
        _claim_socket(cfg.socket)
        ssl_context = (tls.server_context(tls.TLSFiles(cfg.tls_ca, cfg.tls_cert, cfg.tls_key))
                       if cfg.api_tcp else None)
        await self.api.start(cfg.socket, cfg.api_tcp, ssl_context)
        # Written only now: a second daemon for the same data dir has failed before this point.
        with open(os.path.join(cfg.data_dir, "swarmpy.pid"), "w") as f:
            f.write(str(os.getpid()))
        resources = discover(cfg.generic_resources)
        self.agent = Agent(cfg.node_id, ("127.0.0.1" if cfg.listen_host in ("0.0.0.0", "") else cfg.listen_host,
                                         cfg.port),
                           self.control.join_tokens()["manager"], cfg.role, cfg.hostname or hostname(),
                           resources, cfg.labels,
                           manager_status={"raft_addr": cfg.raft_addr, "reachability": "reachable",
                                           "addr": f"{cfg.advertise_addr}:{cfg.port}"},
                           ssl=tls.client_context(node_tls))
        self._background = background = [asyncio.create_task(self._follow_leadership()),
                                         asyncio.create_task(self.agent.run())]
        self.log.info("daemon_started", node=cfg.node_id, socket=cfg.socket, port=cfg.port,
                      nvml=resources.nvml)
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(background)

    async def _shutdown(self, background: list[asyncio.Task]) -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for component in self._leader_components:
            await component.stop()
        await self.dispatcher.stop()
        self.agent.engine.close()
        self.store.close()
        if self._leaving:
            erase_state(self.config.data_dir)
        # The API goes last: `swarmpy leave` returns when it stops answering, and by then
        # the node has forgotten the cluster.
        await self.api.stop()
        if os.path.exists(self.config.socket):
            os.unlink(self.config.socket)
        self.log.info("daemon_stopped", left=self._leaving)

    def request_stop(self) -> None:
        self._stop.set()

    async def prepare_leave(self) -> int:
        """Stop everything that could start a task, then remove the containers of this node's tasks."""
        self._leaving = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for component in self._leader_components:
            await component.stop()
        self._leader_components = []
        return await self.agent.remove_all_containers()

    # -- cluster object and leadership ------------------------------------------------------
    async def _ensure_cluster(self) -> None:
        if self.store.get("cluster", "default") is None and self.store.is_leader():
            secret = self.config.cluster_secret
            await self.store.commit([{"op": "create", "kind": "cluster", "obj": {
                "id": "default", "cluster_id": self.config.cluster_id, "created_at": now(),
                "join_tokens": {"worker": join_token(secret, "worker"),
                                "manager": join_token(secret, "manager")}}}])

    async def _follow_leadership(self) -> None:
        while True:
            leader = self.store.is_leader()
            if leader and not self._leader_components:
                self._leader_components = [Allocator(self.store), Orchestrator(self.store),
                                           Scheduler(self.store),
                                           TaskReaper(self.store, self.config.task_history_limit)]
                for component in self._leader_components:
                    component.start()
                self.log.info("became_leader")
            elif not leader and self._leader_components:
                for component in self._leader_components:
                    await component.stop()
                self._leader_components = []
                self.log.info("lost_leadership")
            await asyncio.sleep(LEADERSHIP_POLL_S)

    def info(self) -> dict:
        node = self.store.get("nodes", self.config.node_id) or {}
        return {"version": VERSION, "node_id": self.config.node_id, "cluster": self.control.cluster(),
                "cluster_id": self.config.cluster_id, "role": self.config.role,
                "hostname": node.get("description", {}).get("hostname", ""),
                "node_state": node.get("status", {}).get("state", "pending"),
                "is_leader": self.store.is_leader(), "raft": self.store.status(),
                "addr": f"{self.config.advertise_addr}:{self.config.port}",
                "data_dir": self.config.data_dir, "pid": os.getpid(),
                "log_readers": self.agent.log_readers}


class PortInUse(Exception):
    pass


def check_ports(config: NodeConfig) -> None:
    """Name a taken port up front: pysyncobj would otherwise just never elect a leader."""
    wanted = [(config.listen_host, config.port, "cluster (dispatcher)"),
              (config.advertise_addr, config.port + 1, "Raft")]
    if config.api_tcp:
        wanted.append((*config.api_tcp, "API (TCP)"))
    for host, port, what in wanted:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise PortInUse(f"the {what} port {host}:{port} is not available ({exc.strerror}); "
                                "choose others with --listen-addr / --api-addr") from None


def _claim_socket(path: str) -> None:
    """Remove a socket left by a daemon that died; refuse if a live one answers on it."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise SystemExit(f"another daemon is already listening on {path}")


def main(data_dir: str) -> None:
    log.configure()
    config = NodeConfig.load(data_dir)
    try:
        check_ports(config)
        asyncio.run(Daemon(config).run())
    except PortInUse as exc:
        log.get("daemon").error("cannot_start", error=str(exc))
        raise SystemExit(f"swarmpy daemon: {exc}") from None
