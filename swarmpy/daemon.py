"""The node daemon: one per host, hosting the manager role (store, API, dispatcher,
and on the leader the orchestrators, allocator, scheduler and task reaper) and
the agent role.  `python -m swarmpy daemon --data-dir DIR` runs it."""
from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import socket
import sys

import docker.errors

from raft.errors import StoreError
from raft.store import ClusterStore, RaftPortError, derive_raft_password
from swarmpy import ca, defaults, log, tls
from swarmpy.config import NodeConfig, erase_state
from swarmpy.manager.allocator import Allocator
from swarmpy.manager.caserver import CAServer
from swarmpy.manager.controlapi import ControlAPI
from swarmpy.manager.dispatcher import Dispatcher
from swarmpy.manager.httpapi import HttpApi
from swarmpy.manager import networks
from swarmpy.manager.orchestrator.orchestrator import Orchestrator
from swarmpy.manager.rolemanager import RoleManager
from swarmpy.manager.scheduler.scheduler import Scheduler
from swarmpy.manager.secrets import Sealer
from swarmpy.manager.taskreaper import TaskReaper
from swarmpy.models import now
from swarmpy.spec import SpecError
from worker.agent import Agent
from worker.resources import discover, hostname

VERSION = "0.1.0"
LEADERSHIP_POLL_S = 0.05
MEMBERSHIP_POLL_S = 1.0
START_TIMEOUT_S = 60.0
LEAVE_RAFT_TIMEOUT_S = 10.0   # a leaving manager waits this long for its Raft member to go


class Daemon:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.is_manager = config.role == "manager"
        self.log = log.get("daemon")
        self._stop = asyncio.Event()
        self._leaving = False
        self._leader_components: list = []
        self.store: ClusterStore | None = None      # managers only
        self.control: ControlAPI | None = None
        self.restart = False            # exec the daemon again once stopped (a role change)
        self._forget_raft = False       # demoted: this node's copy of the Raft log goes

    # -- start and stop ---------------------------------------------------------------
    async def run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        cfg.ensure_certificates()
        node_tls = cfg.node_tls()
        self._background = []
        if self.is_manager:
            await self._start_manager(node_tls)
        self.api = HttpApi(self)
        _claim_socket(cfg.socket)
        api_files = tls.TLSFiles(cfg.tls_ca, cfg.tls_cert, cfg.tls_key) if cfg.tls_ca else node_tls
        ssl_context = tls.server_context(api_files) if cfg.api_tcp else None
        await self.api.start(cfg.socket, cfg.api_tcp, ssl_context)
        # Written only now: a second daemon for the same data dir has failed before this point.
        with open(os.path.join(cfg.data_dir, "swarmpy.pid"), "w") as f:
            f.write(str(os.getpid()))
        resources = discover(cfg.generic_resources)
        with open(node_tls.cert, "rb") as f:
            expires = ca.expires_at(f.read()).timestamp()
        self.agent = Agent(cfg.node_id, cfg.manager_addrs(), cfg.role, cfg.hostname or hostname(),
                           resources, cfg.labels, ssl=tls.client_context(node_tls),
                           on_managers=self._remember_managers, cluster_addr=cfg.cluster_addr,
                           cert_expires_at=expires, on_certificate=self._switch_certificate)
        self._background.append(asyncio.create_task(self.agent.run()))
        _settle_gc()
        self.log.info("daemon_started", node=cfg.node_id, role=cfg.role, socket=cfg.socket, port=cfg.port,
                      nvml=resources.nvml)
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(self._background)

    async def _start_manager(self, node_tls: tls.TLSFiles) -> None:
        cfg = self.config
        self.store = ClusterStore(cfg.raft_addr, cfg.raft_peers, os.path.join(cfg.data_dir, "raft"),
                                  derive_raft_password(cfg.cluster_secret))
        await self.store.wait_ready(timeout=START_TIMEOUT_S)
        await self._ensure_cluster()
        sealer = Sealer(cfg.cluster_secret)
        self.control = ControlAPI(self.store, sealer)
        self.dispatcher = Dispatcher(self.store, cfg.heartbeat_period, CAServer(self.store, cfg),
                                     cfg.cluster_secret, sealer)
        # Node traffic is mutual TLS: a node presents its certificate from the cluster's CA;
        # without one, a connection may only fetch the CA or join with a token.
        await self.dispatcher.start(cfg.listen_host, cfg.port, ssl=tls.node_server_context(node_tls))
        self._background += [asyncio.create_task(self._follow_leadership()),
                             asyncio.create_task(self._follow_membership())]

    async def _shutdown(self, background: list[asyncio.Task]) -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for component in self._leader_components:
            await component.stop()
        if self.store is not None:
            await self.dispatcher.stop()
            self.store.close()
        self.agent.engine.close()
        if self._leaving:
            erase_state(self.config.data_dir)
        elif self._forget_raft:
            shutil.rmtree(os.path.join(self.config.data_dir, "raft"), ignore_errors=True)
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
        if self.is_manager:
            await self._leave_raft()
        for component in self._leader_components:
            await component.stop()
        self._leader_components = []
        return await self.agent.remove_all_containers()

    async def _leave_raft(self) -> None:
        """A manager leaving (only with --force) first demotes itself, so the leader's role
        manager takes its Raft member out and the managers left keep their quorum. Docker
        leaves the member behind (its docs warn that this can break quorum); when the
        demotion is refused (the last manager) or cannot finish, leave the same way."""
        node = self.store.get("nodes", self.config.node_id)
        raft_addr = self.config.raft_addr
        if node is None or len(self.store.members()) < 2:
            return
        try:
            await self.control.update_node(node["id"], node["version"], {"role": "worker"})
            deadline = asyncio.get_running_loop().time() + LEAVE_RAFT_TIMEOUT_S
            while not self._taken_out_of_raft(raft_addr):
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"still a Raft member after {LEAVE_RAFT_TIMEOUT_S:.0f}s")
                await asyncio.sleep(0.05)
            self.log.info("left_raft", raft_addr=raft_addr)
        except (StoreError, SpecError, TimeoutError) as exc:
            self.log.warning("left_without_raft_removal", raft_addr=raft_addr, error=str(exc))

    def _taken_out_of_raft(self, raft_addr: str) -> bool:
        """A member taken out never sees it in its own log: the leader drops it from the
        configuration, and closes its link, as soon as it appends the change, and each other
        member does the same when the entry reaches it; from then on they refuse its links.
        So a demoted manager with no link left to any member has been taken out.  A link lost
        for another reason only ends the wait early: the demotion is committed, and the
        leader's role manager takes the member out whether or not this node waits."""
        others = [m for m in self.store.members() if m != raft_addr]
        return not others or not any(self.store.reachable(m) for m in others)

    # -- cluster object and leadership ------------------------------------------------------
    async def _ensure_cluster(self) -> None:
        """At init: the cluster object (root CA, join tokens) and the first manager's node."""
        if self.store.get("cluster", "default") is not None or not self.store.is_leader():
            return
        cfg = self.config
        with open(cfg.node_tls().ca, "rb") as f, open(os.path.join(cfg.certs_dir, "ca-key.pem"), "rb") as k:
            root = ca.KeyPair(f.read(), k.read())
        pools, mask = networks.parse_pool(cfg.default_addr_pool, cfg.default_addr_pool_mask)
        await self.store.commit([
            {"op": "create", "kind": "networks", "obj": networks.ingress_object(pools, mask)},
            {"op": "create", "kind": "cluster", "obj": {
                "id": "default", "cluster_id": cfg.cluster_id, "created_at": now(),
                "network": {"default_addr_pool": pools, "subnet_size": mask},
                # The CA key lives in the Raft store, so any manager can sign joining nodes.
                "root_ca": {"cert": root.cert_pem.decode(), "key": root.key_pem.decode()},
                "join_tokens": {"worker": ca.new_join_token(root.cert_pem),
                                "manager": ca.new_join_token(root.cert_pem)}}},
            {"op": "create", "kind": "nodes", "obj": {
                "id": cfg.node_id, "created_at": now(),
                "spec": {"role": "manager", "availability": "active", "labels": cfg.labels},
                "description": {"hostname": cfg.hostname or hostname()},
                "status": {"state": "unknown", "message": "", "addr": cfg.advertise_addr, "timestamp": now()},
                "manager_status": {"raft_addr": cfg.raft_addr, "addr": cfg.cluster_addr,
                                   "reachability": "reachable"}}}])

    async def _follow_leadership(self) -> None:
        while True:
            leader = self.store.is_leader()
            if leader and not self._leader_components:
                await self.dispatcher.leadership_changed(True)
                self._leader_components = [RoleManager(self.store, self.config.raft_addr),
                                           Allocator(self.store), Orchestrator(self.store),
                                           Scheduler(self.store),
                                           TaskReaper(self.store, self.config.task_history_limit)]
                for component in self._leader_components:
                    component.start()
                self.log.info("became_leader", term=self.store.status()["term"])
            elif not leader and self._leader_components:
                for component in self._leader_components:
                    await component.stop()
                self._leader_components = []
                await self.dispatcher.leadership_changed(False)
                self.log.info("lost_leadership")
            await asyncio.sleep(LEADERSHIP_POLL_S)

    async def _follow_membership(self) -> None:
        """Keep node.json's Raft peers current: a restart must find the members of today."""
        while True:
            peers = [m for m in self.store.members() if m != self.config.raft_addr]
            if sorted(peers) != sorted(self.config.raft_peers):
                self.config.raft_peers = peers
                self.config.save()
                self.log.info("raft_members", members=self.store.members())
            await asyncio.sleep(MEMBERSHIP_POLL_S)

    def _switch_certificate(self, reply: dict, key_pem: bytes) -> None:
        """A renewed certificate, maybe for a new role (promote/demote): keep it, then
        restart the daemon as that role.  Containers keep running across the restart."""
        cfg = self.config
        with open(cfg.node_tls().ca, "rb") as f:
            cfg.store_certificates(f.read(), reply["cert"].encode(), key_pem)
        if reply["role"] != cfg.role:
            cfg.role = reply["role"]
            if cfg.role == "manager":
                cfg.cluster_secret = reply["cluster_secret"]
                cfg.raft_peers = [p for p in reply["raft_peers"] if p != cfg.raft_addr]
            else:
                cfg.cluster_secret, cfg.raft_peers = "", []
                self._forget_raft = True
        cfg.save()
        self.log.info("restarting_for_certificate", role=cfg.role)
        self.restart = True
        self.request_stop()

    def _remember_managers(self, addrs: list[str]) -> None:
        self.config.managers = addrs
        self.config.save()

    def info(self) -> dict:
        cfg = self.config
        base = {"version": VERSION, "node_id": cfg.node_id, "cluster_id": cfg.cluster_id, "role": cfg.role,
                "hostname": cfg.hostname or hostname(), "addr": cfg.cluster_addr, "data_dir": cfg.data_dir,
                "pid": os.getpid(), "log_readers": self.agent.log_readers}
        if self.store is None:      # a worker knows only its own session
            return dict(base, node_state="ready" if self.agent.connected.is_set() else "down",
                        is_leader=False, managers=[f"{h}:{p}" for h, p in self.agent.managers])
        node = self.store.get("nodes", cfg.node_id) or {}
        return dict(base, cluster=self.control.cluster(),
                    hostname=node.get("description", {}).get("hostname", base["hostname"]),
                    node_state=node.get("status", {}).get("state", "pending"),
                    is_leader=self.store.is_leader(), raft=dict(self.store.status(), members=self.store.members()))


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


def _settle_gc() -> None:
    """What the daemon made to start (modules, the store as loaded, components) lives as
    long as it does: frozen out of every later collection, so a full collection scans only
    what came after. Collections come less often than Python's default: the churn of
    in-flight requests crossed its 700-object threshold every millisecond or so."""
    gc.freeze()
    gc.set_threshold(*defaults.GC_THRESHOLDS)


def main(data_dir: str) -> None:
    log.configure()
    config = NodeConfig.load(data_dir)
    try:
        if config.role == "manager":
            check_ports(config)
        daemon = Daemon(config)
        asyncio.run(daemon.run())
        if daemon.restart:
            os.execv(sys.executable, [sys.executable, "-m", "swarmpy", "daemon", "--data-dir", data_dir])
    except (PortInUse, RaftPortError) as exc:     # RaftPortError: pysyncobj binds every interface
        log.get("daemon").error("cannot_start", error=str(exc))
        raise SystemExit(f"swarmpy daemon: {exc}") from None
    except docker.errors.DockerException as exc:
        log.get("daemon").error("cannot_start", error=str(exc))
        raise SystemExit(f"swarmpy daemon: cannot reach the Docker engine ({exc}); "
                         "start dockerd, or point DOCKER_HOST at it") from None
