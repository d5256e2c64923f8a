"""The node's side of overlay networks: what the dispatcher's network views ask for,
built from parts the kernel and the engine already have (docs/networks.md).

Per network this node takes part in:
- a Docker bridge network named as the swarm network, with the network's subnet, this
  node's own address as gateway and a fixed bridge name, so the engine attaches task
  containers with the addresses the allocator chose;
- a VXLAN device on that bridge (VNI of the network, UDP 4789 from this node's underlay
  address) with one all-zeros forwarding entry per peer node: head-end replication, which
  carries broadcast, unknown unicast and multicast to every other node on the network once;
- multicast: the bridge's IGMP snooping is off, so group traffic floods to every port and
  is never held back for want of a querier; `multicast=false` stops it at the VXLAN port;
- the resolver listening on the gateway address (worker/network/dns.py);
- VIP rules inside each task container's namespace, and the routing mesh's rules on the
  node for ingress (worker/network/rules.py).

Nodes that share one engine (several nodes on 127.0.0.x in tests) share its networks: the
first builds one, the others use it, and VXLAN is left out, every task being on one host.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess

from docker.errors import APIError, NotFound

from swarmpy import defaults, log
from worker.network import routes, rules
from worker.network.dns import Resolver

LABEL_NETWORK = "com.swarmpy.network.id"
UNDERLAY_MTU = 1500
RETRY_S = 0.5            # a network that could not be built is tried again this soon


class NetworkError(Exception):
    """A network could not be built on this node; the task that needs it is rejected."""


def bridge_name(network_id: str) -> str:
    return f"sp-{network_id[:10]}"          # IFNAMSIZ: at most 15 characters


def vxlan_name(network_id: str) -> str:
    return f"vx-{network_id[:10]}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _bridge(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["bridge", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise NetworkError(f"bridge {' '.join(args)}: {done.stderr.strip()}")
    return done


def mac_of(addr: str) -> str:
    """The engine gives a container with a fixed address the MAC 02:42 + its IPv4 bytes;
    the agent gives each node's bridge the same kind of MAC for its gateway address, so
    every node knows where each MAC of the network lives without learning."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(addr).packed)


def _loose_rp_filter(bridge: str) -> None:
    """A mesh connection another node forwarded here is answered by the task's default route,
    which may be this bridge although the request went in by the ingress bridge; strict
    reverse-path filtering (rp_filter 1, e.g. RHEL's default) would drop that reply.  The
    kernel applies the larger of `all` and the device's value, so 2 (loose) here wins."""
    try:
        rules.set_conf(bridge, "rp_filter", "2")
    except rules.RuleError as exc:
        raise NetworkError(str(exc)) from None


def is_local_only(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return True


class Overlays:
    """Builds and removes this node's networks as views come; answers what tasks need."""

    def __init__(self, engine, underlay: str, upstream, local_addrs=None) -> None:
        self.engine = engine
        self.underlay = underlay                     # this node's address towards the others
        self.views: dict[str, dict] = {}             # network id -> the latest view
        self.built: dict[str, str] = {}              # network id -> the gateway its bridge has
        self.resolver = Resolver(upstream, vip_ready=self._vip_ready)
        # address -> network ids of this node's own tasks: a task not yet in a rotation
        # (starting, or unhealthy) still resolves the names of all its networks.
        self.local_addrs = local_addrs or (lambda: {})
        self.log = log.get("overlay")
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._ingress_applied = ""
        # (wanted, placed) the last time; None: sync the first time (a crashed run may have left some)
        self._routes: tuple[dict[str, str] | None, dict[str, str]] = (None, {})
        self._shape: dict[str, tuple] = {}          # network id -> what was last built for it
        self._macs: dict[str, dict] = {}            # network id -> the unicast entries last written
        self.containers: dict[str, tuple[int, list[str], int | None]] = {}   # task id -> (pid, network ids, netns inode)
        self._vip_text: dict[str, str] = {}         # task id -> the VIP rules last applied
        self._addrs: dict[str, list[str]] = {}      # task id -> its container's addresses
        self._retrying: asyncio.Task | None = None

    # -- views in ---------------------------------------------------------------------
    async def apply(self, views: list[dict]) -> None:
        async with self._lock:
            self.views = {v["id"]: v for v in views}
            self.resolver.set_views(views, self.local_addrs())
            for view in views:
                shape = (view["subnet"], view["addr"], tuple(view["peers"]), view["multicast"], view["internal"])
                if self._shape.get(view["id"]) == shape and self.built.get(view["id"]):
                    continue
                try:
                    await self._ensure(view)
                    self._shape[view["id"]] = shape
                except Exception as exc:        # the engine away, a device refused: try again soon
                    self.log.warning("network_not_built", network=view["name"], error=str(exc))
                    self._retry_soon()
            for view in views:
                if self.built.get(view["id"]):
                    await self._unicast(view)
            for network_id in [n for n in self.built if n not in self.views]:
                await self._remove(network_id)
            await self._apply_ingress()
            await self._refresh_vips()
            self._changed.set()
            self._changed = asyncio.Event()

    async def retry(self) -> None:
        """Networks kept because a container still used them go once it has gone; ones
        that could not be built are tried again."""
        if any(n not in self.views for n in self.built) or any(not self.built.get(n) for n in self.views):
            await self.apply(list(self.views.values()))

    def _retry_soon(self) -> None:
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._retry_after(RETRY_S))

    async def _retry_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retrying = None           # a failure of this try schedules the next one
        try:
            await self.retry()
        except Exception:
            self.log.exception("network_retry_failed")

    async def wait_built(self, network_ids: list[str], timeout: float = 30.0) -> list[dict]:
        """The views of these networks, once built here (the dispatcher sends the view with
        or just after the task)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(self.built.get(n) and n in self.views for n in network_ids):
            left = deadline - loop.time()
            if left <= 0:
                missing = [n for n in network_ids if not self.built.get(n)]
                raise NetworkError(f"network {', '.join(m[:12] for m in missing)} is not available on this node")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return [dict(self.views[n], gateway=self.built[n]) for n in network_ids]

    # -- one network ------------------------------------------------------------------------
    async def _ensure(self, view: dict) -> None:
        gateway = await self.engine.call(self._docker_network, view)
        self.built[view["id"]] = gateway
        await asyncio.to_thread(self._vxlan, view)
        await self.resolver.listen(gateway)

    def _docker_network(self, view: dict) -> str:
        """The engine's bridge network for `view`, created if missing; its gateway."""
        api = self.engine.api
        existing = self._find(view)
        if existing is not None:
            return existing["IPAM"]["Config"][0].get("Gateway") or view["addr"]
        self._clear_stale(view)
        pool = {"Subnet": view["subnet"], "Gateway": view["addr"]}
        if view.get("engine_range"):
            pool["IPRange"] = view["engine_range"]      # standalone containers' addresses
        ipam = {"Driver": "default", "Config": [pool]}
        try:
            api.create_network(view["name"], driver="bridge", internal=view["internal"],
                               ipam=ipam, check_duplicate=True, attachable=True,
                               labels={LABEL_NETWORK: view["id"]},
                               options={"com.docker.network.bridge.name": bridge_name(view["id"]),
                                        "com.docker.network.driver.mtu": str(UNDERLAY_MTU - defaults.VXLAN_OVERHEAD)})
        except APIError as exc:
            found = self._find(view)         # another node on this engine made it first
            if found is None:
                raise NetworkError(f"creating network {view['name']} on this node's engine failed: "
                                   f"{exc.explanation or exc}") from None
            return found["IPAM"]["Config"][0].get("Gateway") or view["addr"]
        self.log.info("network_created", network=view["name"], subnet=view["subnet"], gateway=view["addr"])
        return view["addr"]

    def _clear_stale(self, view: dict) -> None:
        """A network of ours that the cluster no longer has here but that is still on the
        engine (its removal waits for a container) and has this one's name or subnet: it
        goes now if it can, else this one is built on a later try."""
        api, subnet = self.engine.api, ipaddress.ip_network(view["subnet"])
        for net in api.networks(filters={"label": LABEL_NETWORK}):
            info = api.inspect_network(net["Id"])
            owner = (info.get("Labels") or {}).get(LABEL_NETWORK)
            subnets = [c.get("Subnet") for c in (info.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
            clash = info["Name"] == view["name"] or any(ipaddress.ip_network(s).overlaps(subnet) for s in subnets)
            if owner == view["id"] or owner in self.views or not clash:
                continue
            try:
                api.remove_network(net["Id"])
                _ip("link", "del", vxlan_name(owner), check=False)
                self.log.info("stale_network_removed", network=info["Name"], id=owner[:12])
            except APIError as exc:
                raise NetworkError(f"network {info['Name']} of an earlier use is still on this node's engine "
                                   f"({exc.explanation or exc}); retrying") from None

    def _find(self, view: dict) -> dict | None:
        api = self.engine.api
        for net in api.networks(names=[view["name"]]):
            if net["Name"] != view["name"]:
                continue
            info = api.inspect_network(net["Id"])
            owner = (info.get("Labels") or {}).get(LABEL_NETWORK)
            if owner == view["id"]:
                return info
            if owner:
                return None             # ours, of an earlier use: _clear_stale deals with it
            raise NetworkError(f"a network named {view['name']} that swarmpy did not make exists on this "
                               f"node's engine; remove it (docker network rm {view['name']})")
        return None

    def _vxlan(self, view: dict) -> None:
        if is_local_only(self.underlay):
            return
        bridge, vx = bridge_name(view["id"]), vxlan_name(view["id"])
        if _ip("link", "show", vx, check=False).returncode != 0:
            _ip("link", "add", vx, "type", "vxlan", "id", str(view["vni"]), "dstport", str(defaults.VXLAN_PORT),
                "local", self.underlay, "nolearning", "noudpcsum")
            _ip("link", "set", vx, "mtu", str(UNDERLAY_MTU - defaults.VXLAN_OVERHEAD))
            _ip("link", "set", vx, "master", bridge)
            _ip("link", "set", vx, "up")
        _ip("link", "set", "dev", bridge, "address", mac_of(view["addr"]))
        _ip("link", "set", "dev", bridge, "type", "bridge", "mcast_snooping", "0")
        _loose_rp_filter(bridge)
        _bridge("link", "set", "dev", vx, "mcast_flood", "on" if view["multicast"] else "off")
        self._peers(vx, [p for p in view["peers"] if p != self.underlay and not is_local_only(p)])

    async def _unicast(self, view: dict) -> None:
        """One forwarding entry per remote task and remote node gateway: unicast goes to the
        one node that has the address (the all-zeros entries carry only what must flood)."""
        if is_local_only(self.underlay):
            return
        wanted = {mac_of(addr): underlay for addr, underlay in view.get("peer_gateways", {}).items()}
        for service in view["services"]:
            for task in service["tasks"]:
                if task.get("underlay") and task["underlay"] != self.underlay and not is_local_only(task["underlay"]):
                    wanted[mac_of(task["addr"])] = task["underlay"]
        last = self._macs.get(view["id"], {})
        if wanted == last:
            return
        vx = vxlan_name(view["id"])
        try:
            await asyncio.to_thread(self._write_unicast, vx, last, wanted)
            self._macs[view["id"]] = wanted
        except NetworkError as exc:
            self.log.warning("forwarding_entries_not_written", network=view["name"], error=str(exc))

    @staticmethod
    def _write_unicast(vx: str, last: dict, wanted: dict) -> None:
        for mac, underlay in wanted.items():
            if last.get(mac) != underlay:
                _bridge("fdb", "replace", mac, "dev", vx, "dst", underlay, "self", "permanent")
        for mac in set(last) - set(wanted):
            _bridge("fdb", "del", mac, "dev", vx, "self", check=False)

    @staticmethod
    def _peers(vx: str, peers: list[str]) -> None:
        listed = _bridge("fdb", "show", "dev", vx).stdout.splitlines()
        current = {line.split()[3] for line in listed
                   if line.startswith("00:00:00:00:00:00") and len(line.split()) > 3 and line.split()[2] == "dst"}
        for peer in sorted(set(peers) - current):
            _bridge("fdb", "append", "00:00:00:00:00:00", "dev", vx, "dst", peer)
        for peer in sorted(current - set(peers)):
            _bridge("fdb", "del", "00:00:00:00:00:00", "dev", vx, "dst", peer, check=False)

    async def _remove(self, network_id: str) -> None:
        gateway = self.built.pop(network_id)
        self._shape.pop(network_id, None)
        self._macs.pop(network_id, None)
        if gateway:
            await self.resolver.unlisten(gateway)
        removed = await self.engine.call(self._remove_docker_network, network_id)
        if removed:
            _ip("link", "del", vxlan_name(network_id), check=False)
            self.log.info("network_removed", network=network_id[:12])

    def _remove_docker_network(self, network_id: str) -> bool:
        api = self.engine.api
        for net in api.networks(filters={"label": f"{LABEL_NETWORK}={network_id}"}):
            try:
                api.remove_network(net["Id"])
            except NotFound:
                pass
            except APIError as exc:
                # In use by a container still here (or another node's on a shared engine): later.
                self.log.info("network_kept", network=net["Name"], reason=exc.explanation or str(exc))
                self.built[network_id] = ""
                return False
        return True

    # -- containers ---------------------------------------------------------------------------
    async def container_started(self, task_id: str, pid: int, network_ids: list[str],
                                addrs: list[str] = ()) -> None:
        """VIP load balancing for one container: DNAT rules in its own namespace, kept up
        to date as views change, until `container_gone`.  Until they are in, the resolver
        answers it a service's tasks instead of the VIP."""
        async with self._lock:          # not at the same time as a refresh of every container
            self.containers[task_id] = (pid, network_ids, _netns_of(pid))
            self._addrs[task_id] = list(addrs)
            await self._apply_vips(task_id)

    def container_gone(self, task_id: str) -> None:
        self.containers.pop(task_id, None)
        self._vip_text.pop(task_id, None)
        self._addrs.pop(task_id, None)

    def _vip_ready(self, src_ip: str) -> bool:
        return any(src_ip in addrs for task_id, addrs in self._addrs.items() if task_id in self._vip_text)

    async def _apply_vips(self, task_id: str) -> None:
        pid, network_ids, netns = self.containers[task_id]
        services = [s for n in network_ids for s in self.views.get(n, {}).get("services", [])]
        text = rules.vip_rules(services)
        last = self._vip_text.get(task_id)
        if last == text:
            return
        if netns is None or _netns_of(pid) != netns:
            # The container's process is gone, and its pid may name another process by now,
            # in another namespace (this host's own): rules written through it would land there.
            self.log.info("vip_rules_not_applied", task=task_id[:12], error="the container's process is gone")
            return
        try:
            if last is None:        # the first time: the chains and their hooks
                await asyncio.to_thread(rules.sync_vips, pid, services)
            else:                   # then one atomic restore of the chains
                await asyncio.to_thread(rules.apply_in_netns, pid, text)
            self._vip_text[task_id] = text
        except rules.RuleError as exc:
            # The container is gone or going: its namespace went with it.
            self.log.info("vip_rules_not_applied", task=task_id[:12], error=str(exc))

    async def _refresh_vips(self) -> None:
        await asyncio.gather(*(self._apply_vips(task_id) for task_id in list(self.containers)))

    async def _apply_ingress(self) -> None:
        """The routing mesh: every published ingress port answers on this node."""
        ingress = next((v for v in self.views.values() if v["ingress"] and self.built.get(v["id"])), None)
        forward_to = await self._mesh_routes(ingress)
        try:
            if ingress is not None:
                bridge = bridge_name(ingress["id"])
                underlay = "" if is_local_only(self.underlay) else self.underlay
                nat, filt = rules.ingress_rules(ingress, bridge, forward_to, underlay)
                if nat + filt != self._ingress_applied:
                    await asyncio.to_thread(rules.sync_ingress, ingress, bridge,
                                            forward_to=forward_to, underlay=underlay)
                    self._ingress_applied = nat + filt
            elif self._ingress_applied:
                await asyncio.to_thread(rules.remove_ingress)
                self._ingress_applied = ""
        except (rules.RuleError, ValueError) as exc:
            self.log.warning("mesh_rules_not_applied", error=str(exc))

    async def _mesh_routes(self, ingress: dict | None) -> dict[str, str]:
        """The routes over the link to the nodes that run mesh tasks (routes.py); returns
        underlay address -> ingress address of the nodes reached that way.  Without them
        (an error, or nodes sharing one engine) the mesh reaches every task over the overlay."""
        if is_local_only(self.underlay):
            return {}                   # nodes sharing one engine: one host, no link between
        wanted: dict[str, str] = {}
        if ingress is not None:
            ingress_addr = {u: a for a, u in (ingress.get("peer_gateways") or {}).items()}
            for svc in ingress["services"]:
                for task in svc["tasks"]:
                    underlay = task.get("underlay") or ""
                    if underlay in ingress_addr and underlay != self.underlay and not is_local_only(underlay):
                        wanted[ingress_addr[underlay]] = underlay
        if wanted != self._routes[0]:
            try:
                self._routes = (wanted, await asyncio.to_thread(routes.sync, wanted))
            except routes.RouteError as exc:
                self.log.warning("mesh_routes_not_applied", error=str(exc))
                self._routes = (None, {})       # tried again with the next view
        return {underlay: addr for addr, underlay in self._routes[1].items()}

    async def heal(self) -> None:
        """Put the routing mesh back when someone else took part of it away: a link that went
        down takes its routes along, a firewall reload flushes the hooks (kube-proxy resyncs
        for the same reasons).  Runs with the agent's resync: two cheap checks, and the
        whole apply only when one fails."""
        async with self._lock:
            lost = await asyncio.to_thread(self._mesh_lost)
            if lost:
                self.log.warning("mesh_restored", lost=lost)
                # Forget what was applied, so that _apply_ingress writes routes and rules again.
                self._routes = (None, self._routes[1])
                self._ingress_applied = ""
                await self._apply_ingress()

    def _mesh_lost(self) -> list[str]:
        lost = []
        try:
            if self._routes[1] and {a: via for a, (via, _) in routes.ours().items()} != self._routes[1]:
                lost.append("routes")
        except routes.RouteError:
            pass                        # `ip` itself failing is logged where routes are written
        try:
            if self._ingress_applied and not rules.ingress_hooked():
                lost.append("rules")
        except rules.RuleError:
            pass
        return lost

    async def remove_all(self) -> None:
        """For `leave --force`: the node's networks, devices and rules go with its tasks."""
        async with self._lock:
            self.views = {}
            for network_id in list(self.built):
                await self._remove(network_id)
            await self._apply_ingress()
        await self.close()

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
        await self.resolver.close()


def _netns_of(pid: int) -> int | None:
    """The inode of process `pid`'s network namespace; None once the process is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None
