"""docker-compose.test.yml deployed side by side on swarmpy and on Docker's own swarm, and what
runs compared field by field (issue 4's end-to-end test).

Docker's side: one test host (tests/netns.py: a network namespace with a dockerd of its own and
no route out; the test image imported there, never pulled), `docker swarm init` inside it and
`docker stack deploy --resolve-image never -c docker-compose.test.yml e2e` with the machine's
docker CLI (tests/dockerswarm.py; /usr/bin/docker, Debian's 20.10, when present, as in CI).
swarmpy's side: a one-node swarmpy cluster on the machine's main engine and `swarmpy stack deploy
-c docker-compose.test.yml --detach=false e2e`.  Both CLIs get the same interpolation variables
(STACK_ENV; any other variable the file names is unset on both sides), and both sides are waited
for until every service shows n/n replicas running (web has a healthcheck: running means healthy).

What is compared, for every service and every running container (matched by task slot, or by
node for global services):

* each side's service listing (`docker stack services` / `swarmpy stack services`): the set of
  services, their mode, running/desired replicas and image;
* per service: its labels, and its published ports as specified (Docker's
  Endpoint.Spec.Ports form).  Docker publishes ingress ports through its routing mesh, which
  needs IPVS, which this kernel lacks (swarmpy's mesh uses iptables: tests/integration/
  test_overlay_hosts.py): so for ingress ports the service-level spec is compared here;
* per container, `docker inspect` as each engine reports it, flattened: Name, Path/Args, State,
  every Config field (env per variable, labels per key, hostname, working dir, entrypoint, cmd,
  healthcheck, exposed ports, ...), every HostConfig field (NanoCpus, Memory, RestartPolicy,
  mounts, port bindings, ...), the mounts as run (type, name, read-only, driver, ...), the
  networks;
* per container, for every secret and config the services name: the file at its path inside
  the container (mode, uid, gid, size, content, whether it may be written);
* per volume a container mounts: the volume as the engine made it (driver, labels, options).

Node, service, task and container ids are replaced by placeholders before the comparison
(`<node>`, `<service e2e_web>`, `<task e2e_web.1>`, `<container>`), each only where it is that
side's own id: a task label must name the container's own task on both sides.  The labels the
two orchestrators put on containers for the same facts are mapped onto one name (LABELS_MAPPED).

Every other difference the test tolerates is a row of KNOWN, with its reason; everything else
must match.  A row marked "BUG:" is a real difference in swarmpy, kept visible here until fixed;
a row that is `needed` and no longer matches any difference fails the last test, so a fixed bug
leaves the table.  Teardown removes the swarmpy stack and cluster and the namespace host (the
harness, by pid and name), also after a failure.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import dockerswarm
from dockerswarm import DockerSwarm, exec_in
from swarmtest import RUNNING

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The file under test; SWARMPY_E2E_COMPOSE points the comparison at another file (by hand only).
COMPOSE = os.environ.get("SWARMPY_E2E_COMPOSE") or str(ROOT / "docker-compose.test.yml")
STACK = "e2e"
NAMESPACE_LABEL = "com.docker.stack.namespace"
CONVERGE_TIMEOUT = 60

class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ANY = _Marker("ANY")        # a KNOWN row's value: whatever that side shows
EMPTY = _Marker("EMPTY")    # a KNOWN row's value: null, [], {} or absent (not "": an empty label is a label)
ABSENT = "<absent>"         # the value of a field one side does not have

# The labels both orchestrators put on a task's container for the same fact, under one name.
LABELS_MAPPED = {
    "com.docker.swarm.node.id": "<orchestrator> node.id", "com.swarmpy.node.id": "<orchestrator> node.id",
    "com.docker.swarm.service.id": "<orchestrator> service.id",
    "com.swarmpy.service.id": "<orchestrator> service.id",
    "com.docker.swarm.service.name": "<orchestrator> service.name",
    "com.swarmpy.service.name": "<orchestrator> service.name",
    "com.docker.swarm.task.id": "<orchestrator> task.id", "com.swarmpy.task.id": "<orchestrator> task.id",
}


@dataclass(frozen=True)
class Known:
    """A difference the test tolerates: fields (patterns over the flattened field names, `*` the
    only wildcard) where Docker shows `docker` and swarmpy `swarmpy` (ANY: any value), for the
    services matching `services`; the first row that fits a difference explains it.  `needed`:
    the row must explain at least one difference, else the last test fails (the difference is
    gone: the row must go)."""
    fields: tuple[str, ...]
    docker: object
    swarmpy: object
    reason: str
    services: str = "*"
    needed: bool = True


# The one table of tolerated differences.
KNOWN: tuple[Known, ...] = (
    # -- per container and per engine, by nature
    Known(("Image",), ANY, ANY,
          "the image id: the test image is imported into each engine on its own (the import's time "
          "is in its config); the reference, Config.Image, is compared"),
    Known(("Created", "State.StartedAt", "State.Pid", "State.Health.Log", "State.Health.FailingStreak",
           "ExecIDs"), ANY, ANY,
          "when and as which process each container started; the health log holds the probes' times (and "
          "a probe late on a loaded machine counts in FailingStreak; State.Health.Status is compared); "
          "ExecIDs: a health probe (an exec) may be running as the container is inspected"),
    Known(("GraphDriver.Data.*", "HostnamePath", "HostsPath", "ResolvConfPath", "LogPath", "Mounts[/*].Source"),
          ANY, ANY,
          "paths under each engine's data root (the namespace engine's lies under /tmp/swarmpy-netns-*); "
          "a volume's name, driver and options are compared"),
    # -- networks (both sides join <stack>_default; compared as `networks`)
    Known(("NetworkSettings.*",), ANY, ANY,
          "per engine and allocator: addresses, MACs, endpoints and sandboxes (and host ports the "
          "engines pick for published: 0)"),
    Known(("HostConfig.NetworkMode",), "default", ANY,
          "docker creates a task's container on 'default' and connects it to its networks before the "
          "start; swarmpy creates it on its first network, at the allocator's address (worker/engine.py)"),
    Known(("HostConfig.Dns",), EMPTY, ANY,
          "swarmpy names the node's resolver (its address on the task's first network) as the container's "
          "DNS server, which docker's embedded DNS forwards swarm names to; docker's engine answers them "
          "itself (docs/networks.md)"),
    # -- the orchestrators' own container labels beyond LABELS_MAPPED
    Known(("Config.Labels[com.docker.swarm.task]",), "", ABSENT,
          "an empty label docker's executor always sets (a legacy one); swarmpy sets none"),
    Known(("Config.Labels[com.docker.swarm.task.name]",), ANY, ABSENT,
          "SERVICE.SLOT.TASK_ID (or SERVICE.NODE_ID.TASK_ID): the same text is the container's name on "
          "both sides, compared as Name"),
    Known(("Config.Labels[com.swarmpy.task.slot]",), ABSENT, ANY,
          "swarmpy's agent labels the slot; docker keeps it in the task's name only"),
    # -- engine arguments
    Known(("HostConfig.Isolation",), "default", "",
          "docker's executor passes the spec's isolation, 'default'; swarmpy passes none: on Linux both "
          "are the engine's one isolation"),
    # -- published ports (only when the file has them)
    Known(("Config.ExposedPorts[* ingress]",), ABSENT, ANY,
          "both publish ingress ports through a routing mesh, not on the container (docker's with IPVS, "
          "which this kernel lacks; swarmpy's with iptables): swarmpy still lists them as exposed; "
          "service.ports compares the spec", needed=False),
    # -- secrets and configs (only when the file has them)
    Known(("Mounts[file:*]*", "HostConfig.Mounts[file:*]*"), ABSENT, ANY,
          "docker mounts secret and config files itself (not listed as mounts); swarmpy bind-mounts each "
          "read-only from /dev/shm (worker/taskfiles.py); the files (mode, owner, content) are compared "
          "as file[PATH]", needed=False),
    # -- last: the engines' JSON
    Known(("*",), EMPTY, EMPTY,
          "null, [], {} and absent alike: how the engines' JSON shows an unset list or map "
          "(HostConfig.PortBindings {} vs null, HostConfig.Ulimits [] vs null)", needed=False),
)


# -- the two sides, as comparable views -----------------------------------------------------------
@dataclass
class Side:
    name: str
    listing: dict[str, dict[str, str]]                  # service -> mode, replicas, image
    services: dict[str, dict[str, object]] = field(default_factory=dict)    # service -> field -> value
    containers: dict[str, dict[str, object]] = field(default_factory=dict)  # SERVICE.SLOT|NODE -> field -> value
    ids: dict[str, str] = field(default_factory=dict)   # id -> placeholder


def placeholders(value, ids: dict[str, str]):
    """Every id of `ids` inside strings (and dict keys) replaced by its placeholder; a
    container's id also by its 12-character short form (its default hostname, its alias)."""
    if isinstance(value, str):
        for ident, name in ids.items():
            value = value.replace(ident, name)
        return value
    if isinstance(value, list):
        return [placeholders(v, ids) for v in value]
    if isinstance(value, dict):
        return {placeholders(k, ids): placeholders(v, ids) for k, v in value.items()}
    return value


def flatten(value, prefix: str, out: dict[str, object]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def container_view(attrs: dict, ids: dict[str, str], port_modes: dict[str, str], files: set[str],
                   run, volume) -> tuple[str, dict[str, object]]:
    """(SERVICE.SLOT or SERVICE.<node>, flattened fields) of one container's inspect.  `port_modes`:
    "8080/tcp" -> its publish mode in this side's service spec; `files`: the secret and config
    paths of its service; `run(argv)` execs in the container; `volume(name)` inspects a volume."""
    attrs = dict(attrs)
    ids = dict(ids, **{attrs["Id"]: "<container>", attrs["Id"][:12]: "<container>"})
    cfg, host = dict(attrs.pop("Config")), dict(attrs.pop("HostConfig"))
    net = attrs.pop("NetworkSettings", None) or {}
    mounts = attrs.pop("Mounts", None) or []
    out: dict[str, object] = {}
    for entry in cfg.pop("Env", None) or []:
        name, _, val = entry.partition("=")
        out[f"Config.Env[{name}]"] = val
    for key, val in (cfg.pop("Labels", None) or {}).items():
        out[f"Config.Labels[{LABELS_MAPPED.get(key, key)}]"] = val

    def port_key(spec: str) -> str:
        return f"{spec} {port_modes.get(spec, 'unpublished')}"

    for spec, val in (cfg.pop("ExposedPorts", None) or {}).items():
        out[f"Config.ExposedPorts[{port_key(spec)}]"] = val
    for spec, val in (host.pop("PortBindings", None) or {}).items():
        out[f"HostConfig.PortBindings[{port_key(spec)}]"] = val

    def mount_key(target: str) -> str:
        return f"file:{target}" if target in files else target

    for m in host.pop("Mounts", None) or []:
        m = dict(m)
        flatten(m, f"HostConfig.Mounts[{mount_key(m.pop('Target'))}]", out)
    for m in mounts:
        m = dict(m)
        flatten(m, f"Mounts[{mount_key(m.pop('Destination'))}]", out)
        if m.get("Type") == "volume":        # the volume itself (made by the engine from the mount)
            info = volume(m["Name"])
            flatten({k: info.get(k) for k in ("Driver", "Labels", "Options", "Scope")}, f"volume[{m['Name']}]", out)
    out["networks"] = sorted(net.get("Networks") or {})
    flatten(net, "NetworkSettings", out)
    flatten(cfg, "Config", out)
    flatten(host, "HostConfig", out)
    flatten(attrs, "", out)
    for path in sorted(files):
        code, text = run(["busybox", "stat", "-c", "mode %a uid %u gid %g size %s", path])
        out[f"file[{path}].stat"] = text.strip() if code == 0 else f"(stat failed: {text.strip()})"
        code, text = run(["busybox", "cat", path])
        out[f"file[{path}].content"] = text if code == 0 else f"(cat failed: {text.strip()})"
        code, text = run(["busybox", "touch", "-c", path])      # only its time, if it may at all
        out[f"file[{path}].write"] = "allowed" if code == 0 else f"refused: {text.strip()}"
    # SERVICE.SLOT.TASK_ID or SERVICE.NODE_ID.TASK_ID (both sides name containers so): the task goes.
    key = placeholders(str(attrs["Name"]).lstrip("/").rsplit(".", 1)[0], ids)
    return key, placeholders(out, ids)


def _file_path(kind: str, target: str) -> str:
    if kind == "secrets":
        return target if target.startswith("/") else f"/run/secrets/{target}"
    return target if target.startswith("/") else f"/{target}"


def _docker_ports(ports: list[dict]) -> list[dict]:
    """Docker's Endpoint.Spec.Ports entries, sorted, with the keys the engine leaves out when zero."""
    norm = [{k: p[k] for k in ("Protocol", "TargetPort", "PublishedPort", "PublishMode") if p.get(k)}
            for p in ports]
    return sorted(norm, key=lambda p: sorted(p.items()))


def docker_side(swarm: DockerSwarm, listing: dict) -> Side:
    side = Side("docker", listing)
    services = swarm.services(STACK)
    side.ids[swarm.node_id] = "<node>"
    files: dict[str, set[str]] = {}
    modes: dict[str, dict[str, str]] = {}
    for name, svc in services.items():
        side.ids[svc["ID"]] = f"<service {name}>"
        spec = svc["Spec"]
        cspec = spec["TaskTemplate"]["ContainerSpec"]
        files[name] = ({_file_path("secrets", r["File"]["Name"]) for r in cspec.get("Secrets") or []}
                       | {_file_path("configs", r["File"]["Name"]) for r in cspec.get("Configs") or []})
        ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
        modes[name] = {f"{p['TargetPort']}/{p.get('Protocol', 'tcp')}": p.get("PublishMode", "ingress")
                       for p in ports}
        side.services[name] = {"service.ports": _docker_ports(ports)}
        for key, val in (spec.get("Labels") or {}).items():
            side.services[name][f"service.Labels[{key}]"] = val
    for task in swarm.tasks(STACK):
        if task.state.startswith("Running"):
            side.ids[task.id] = f"<task {placeholders(task.name, side.ids)}>"
    for attrs in swarm.containers(STACK):
        service = attrs["Config"]["Labels"].get("com.docker.swarm.service.name", "?")
        key, view = container_view(attrs, side.ids, modes.get(service, {}), files.get(service, set()),
                                   lambda argv, cid=attrs["Id"]: swarm.exec(cid, argv),
                                   swarm.client.api.inspect_volume)
        side.containers[key] = view
    return side


def swarmpy_listing(cluster) -> dict[str, dict[str, str]]:
    rows = [line.split() for line in cluster.ok("stack", "services", STACK).splitlines()[1:] if line.strip()]
    return {r[1]: {"mode": r[2], "replicas": r[3], "image": r[4]} for r in rows}


def swarmpy_side(cluster, listing: dict) -> Side:
    side = Side("swarmpy", listing)
    side.ids[cluster.node_id] = "<node>"
    files: dict[str, set[str]] = {}
    modes: dict[str, dict[str, str]] = {}
    for name in listing:
        svc = cluster.service(name)
        spec = svc["spec"]
        side.ids[svc["id"]] = f"<service {name}>"
        files[name] = ({_file_path("secrets", r["target"]) for r in spec.get("secrets") or []}
                       | {_file_path("configs", r["target"]) for r in spec.get("configs") or []})
        ports = [{"Protocol": p.get("protocol", "tcp"), "TargetPort": p["target"],
                  "PublishedPort": p.get("published") or 0, "PublishMode": p.get("mode", "ingress")}
                 for p in spec.get("ports") or []]
        modes[name] = {f"{p['TargetPort']}/{p['Protocol']}": p["PublishMode"] for p in ports}
        side.services[name] = {"service.ports": _docker_ports(ports)}
        for key, val in (spec.get("labels") or {}).items():
            side.services[name][f"service.Labels[{key}]"] = val
        for task in cluster.tasks(name):
            if task["desired_state"] == RUNNING and task["status"]["state"] == RUNNING:
                where = task["slot"] if spec.get("mode") != "global" else "<node>"
                side.ids[task["id"]] = f"<task {name}.{where}>"
    for container in cluster.running_containers():
        attrs = cluster.docker.api.inspect_container(container.id)
        if attrs["Config"]["Labels"].get(NAMESPACE_LABEL) != STACK:
            continue
        service = attrs["Config"]["Labels"].get("com.swarmpy.service.name", "?")
        key, view = container_view(attrs, side.ids, modes.get(service, {}), files.get(service, set()),
                                   lambda argv, cid=container.id: exec_in(cluster.docker, cid, argv),
                                   cluster.docker.api.inspect_volume)
        side.containers[key] = view
    return side


# -- the comparison ------------------------------------------------------------------------------------
def _empty(value) -> bool:
    return value is None or value == [] or value == {} or value == ABSENT


def matches(pattern: str, text: str) -> bool:
    """`*` matches anything; every other character itself ([ and ] too, unlike fnmatch)."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), text) is not None


def _value_fits(expected, actual) -> bool:
    if expected is ANY:
        return True
    if expected is EMPTY:
        return _empty(actual)
    return expected == actual


def known_row(service: str, name: str, docker, swarmpy) -> Known | None:
    for row in KNOWN:
        if (matches(row.services, service) and any(matches(pattern, name) for pattern in row.fields)
                and _value_fits(row.docker, docker) and _value_fits(row.swarmpy, swarmpy)):
            return row
    return None


def category(name: str) -> str:
    """Which test reports a field: listing (services, modes, replicas, which containers run),
    service (labels, published ports), file (secret and config files), container (the rest)."""
    if name.startswith("listing.") or name == "container":
        return "listing"
    if name.startswith("service."):
        return "service"
    return "file" if name.startswith("file[") else "container"


@dataclass
class Judgement:
    unexplained: list[tuple[str, str]] = field(default_factory=list)   # (category, message)
    tolerated: list[tuple[Known, str]] = field(default_factory=list)

    def compare(self, service: str, where: str, docker: dict, swarmpy: dict) -> None:
        for name in sorted(set(docker) | set(swarmpy)):
            d, s = docker.get(name, ABSENT), swarmpy.get(name, ABSENT)
            if d == s:
                continue
            row = known_row(service, name, d, s)
            if row is not None:
                self.tolerated.append((row, f"{where}: {name}"))
            else:
                self.unexplained.append((category(name), f"service {service} ({where}), field {name}: "
                                                          f"docker={d!r} swarmpy={s!r}"))

    def used(self, row: Known) -> bool:
        return any(r is row for r, _ in self.tolerated)

    def failures(self, kind: str) -> str:
        return "\n".join(message for cat, message in self.unexplained if cat == kind)


def service_of(key: str) -> str:
    return key.split(".", 1)[0]


# -- deploying both sides ----------------------------------------------------------------------------------
def interpolated_names(path: str) -> set[str]:
    """The variables a compose file interpolates (`$$` is a literal dollar)."""
    text = Path(path).read_text().replace("$$", "")
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


@pytest.fixture(scope="module")
def stack_env(test_image) -> dict[str, str]:
    return {"TEST_IMAGE": test_image, "GREETING": "bonjour from the stack"}


@pytest.fixture(scope="module")
def docker_stack(test_image, stack_env):
    """Docker's side, deployed and converged: (DockerSwarm, listing, seconds it took)."""
    from netns import Hosts, netns_available
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    cli = dockerswarm.find_cli()
    if cli is None:
        pytest.skip("no docker CLI with `stack deploy --resolve-image` (install docker.io)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="swarmpy-e2e-cli-") as docker_config, \
            Hosts(1, image=test_image) as hosts:
        swarm = DockerSwarm(hosts[0], cli, docker_config, env=stack_env)
        swarm.no_route_out()
        swarm.tag_image(test_image, stack_env["TEST_IMAGE"])
        swarm.init()
        try:
            swarm.deploy(COMPOSE, STACK)
            listing = swarm.wait_converged(STACK, timeout=CONVERGE_TIMEOUT)
            yield swarm, listing, time.monotonic() - started
        finally:
            swarm.remove_stack(STACK)
            swarm.leave()


def _remove_volumes(cluster, names: list[str]) -> None:
    for name in names:
        try:
            cluster.docker.api.remove_volume(name)
        except Exception:
            pass            # absent, or in use by someone else's stack of the same name


@pytest.fixture(scope="module")
def swarmpy_stack(module_cluster_factory, stack_env):
    """swarmpy's side, deployed and converged: (Cluster, listing, seconds it took)."""
    started = time.monotonic()
    cluster = module_cluster_factory(hostname="swarmpy-e2e")
    volumes = [f"{STACK}_data"]
    _remove_volumes(cluster, volumes)        # left by an earlier run: its labels would be stale
    env = {k: v for k, v in cluster.env.items() if k not in interpolated_names(COMPOSE)}
    cluster.env = dict(env, **stack_env)
    try:
        cluster.ok("stack", "deploy", "-c", COMPOSE, "--detach=false", STACK, timeout=120)

        def converged():
            listing = swarmpy_listing(cluster)
            counts = [r["replicas"].split("/") for r in listing.values()]
            return listing if listing and all(a == b and a != "0" for a, b in counts) else None

        listing = cluster.wait_for(converged, timeout=CONVERGE_TIMEOUT, interval=0.3,
                                   message=f"swarmpy's stack {STACK} to converge")
        yield cluster, listing, time.monotonic() - started
    finally:
        cluster.cli("stack", "rm", STACK)
        try:
            cluster.wait_for(lambda: not cluster.containers(all=True), timeout=30)
        finally:
            _remove_volumes(cluster, volumes)


@pytest.fixture(scope="module")
def sides(docker_stack, swarmpy_stack) -> tuple[Side, Side]:
    swarm, docker_listing, docker_s = docker_stack
    cluster, swarmpy_listing_, swarmpy_s = swarmpy_stack
    docker = docker_side(swarm, docker_listing)
    swarmpy = swarmpy_side(cluster, swarmpy_listing_)
    print(f"\n{swarm.version()}; docker side up and converged in {docker_s:.1f}s, "
          f"swarmpy side in {swarmpy_s:.1f}s")
    return docker, swarmpy


@pytest.fixture(scope="module")
def judgement(sides) -> Judgement:
    docker, swarmpy = sides
    judged = Judgement()
    for name in sorted(set(docker.listing) | set(swarmpy.listing)):
        judged.compare(name, "listing", {f"listing.{k}": v for k, v in docker.listing.get(name, {}).items()},
                       {f"listing.{k}": v for k, v in swarmpy.listing.get(name, {}).items()})
        judged.compare(name, "service", docker.services.get(name, {}), swarmpy.services.get(name, {}))
    for key in sorted(set(docker.containers) | set(swarmpy.containers)):
        d, s = docker.containers.get(key), swarmpy.containers.get(key)
        if d is None or s is None:
            judged.compare(service_of(key), key, {"container": "running" if d else ABSENT},
                           {"container": "running" if s else ABSENT})
            continue
        judged.compare(service_of(key), key, d, s)
    return judged


# -- the tests ------------------------------------------------------------------------------------------
def test_the_same_services_run_with_the_same_replica_counts(sides, judgement):
    """The same services, modes, running/desired replicas and image in both listings, and on
    each engine as many running containers per service as its listing says, in the same slots."""
    for side in sides:
        assert side.containers, f"{side.name}: no container of stack {STACK} runs"
        for name, row in side.listing.items():
            running = int(row["replicas"].split("/")[0])
            mine = [key for key in side.containers if service_of(key) == name]
            assert len(mine) == running, f"{side.name}: service {name} lists {row['replicas']}, runs {mine}"
    wrong = judgement.failures("listing")
    assert not wrong, wrong


def test_the_services_carry_the_same_labels_and_published_ports(judgement):
    wrong = judgement.failures("service")
    assert not wrong, wrong


def test_every_running_container_matches_field_by_field(judgement):
    wrong = judgement.failures("container")
    assert not wrong, wrong


def test_secret_and_config_files_match_inside_the_containers(sides, judgement):
    docker, swarmpy = sides
    paths = {name for view in [*docker.containers.values(), *swarmpy.containers.values()]
             for name in view if name.startswith("file[")}
    if not paths:
        pytest.skip(f"{Path(COMPOSE).name} gives its services no secrets or configs (yet)")
    for key, view in docker.containers.items():     # docker's files are there: the reference holds
        for name in (n for n in view if n.startswith("file[")):
            assert "failed" not in str(view[name]), f"docker {key}: {name} = {view[name]!r}"
    wrong = judgement.failures("file")
    assert not wrong, wrong


def test_every_tolerated_difference_is_still_there(judgement):
    """A needed row of KNOWN that no difference matched describes something that changed: a
    fixed BUG, or a departure that went; the table must say what is, so the row goes."""
    stale = [f"{row.fields} docker={row.docker!r} swarmpy={row.swarmpy!r}: {row.reason}"
             for row in KNOWN if row.needed and not judgement.used(row)]
    assert not stale, "rows of KNOWN that no longer match a difference (remove them):\n" + "\n".join(stale)
    bugs = sorted({f"{row.fields}: {row.reason}" for row, _ in judgement.tolerated if row.reason.startswith("BUG")})
    print("\nknown swarmpy bugs still present:\n" + "\n".join(bugs) if bugs else "\nno BUG rows used")
