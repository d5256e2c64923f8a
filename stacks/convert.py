"""A loaded compose config -> swarmpy service specs, as docker/cli's cli/compose/convert
does for `docker stack deploy` (see shared/compose/SOURCES.md, key by key).

The result is a `StackPlan`: the namespaced service specs (dicts in the shape of
`swarmpy.models.ServiceSpec`, which the manager validates again), plus the warnings
for what swarmpy does not do yet, the overlay networks the services join (to create,
or external: to exist), and the secrets and configs the stack creates (the files'
bytes, read here as docker's CLI reads them) or expects to exist (external).
Names follow docker: service `STACK_svc`, networks, volumes, secrets and configs
`STACK_key` unless `name:`/`external`, and every object carries
`com.docker.stack.namespace=STACK`.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field

from stacks.duration import parse_duration
from stacks.errors import StackFileError
from stacks.loader import LoadedStack
from swarmpy import units

NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"

DEFAULT_NETWORK = "default"          # what a service without `networks:` joins: STACK_default
NETWORK_OPTIONS = ("multicast",)     # the driver_opts swarmpy's overlay takes
# moby's NetworkMode.IsUserDefined: these are the engine's own networks, never a swarm's
ENGINE_NETWORKS = ("bridge", "host", "none", "default")

# docker's convertRestartPolicy for the service-level `restart:` key
_RESTART_KEY = {"always": "any", "unless-stopped": "any", "on-failure": "on-failure", "no": None}


@dataclass
class StackPlan:
    """What a deploy sends: the services; the networks they join, to create (the body of
    POST /networks: {"name", "driver", "labels", "attachable", "internal", "options",
    ["subnet"]}) or to exist already ({"name", "external": True}); and the secrets/configs
    the stack creates ({"name", "labels", "data": base64 of the file}) or needs to exist
    already ({"name", "external": True})."""
    namespace: str
    services: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    secrets: list[dict] = field(default_factory=list)
    configs: list[dict] = field(default_factory=list)
    networks: list[dict] = field(default_factory=list)


def convert(loaded: LoadedStack, namespace: str) -> StackPlan:
    config = loaded.config
    plan = StackPlan(namespace, warnings=list(loaded.warnings))
    plan.networks = _network_objects(config, namespace, plan.warnings)
    plan.secrets = _file_objects("secrets", config.get("secrets") or {}, namespace)
    plan.configs = _file_objects("configs", config.get("configs") or {}, namespace)
    for name in sorted(config["services"]):
        plan.services.append(_service(name, config["services"][name], config, namespace, plan.warnings))
    return plan


# --- networks (docker's convert/compose.go Networks and convertServiceNetworks) ------------------

def _attached(svc: dict) -> dict:
    """A service's networks as {key: None | {aliases, ...}}; none named is `default`."""
    return svc.get("networks") or {DEFAULT_NETWORK: None}


def _network_objects(config: dict, namespace: str, warnings: list[str]) -> list[dict]:
    """The networks the services join (as docker: a declared network no service uses is not
    made), sorted by name: created ones with their create body, external ones by name.  An
    undeclared key other than `default` is left to the service's conversion (docker's error)."""
    declared = config.get("networks") or {}
    used = {key for svc in config["services"].values() for key in _attached(svc)}
    out = []
    for key in sorted(used):
        if key not in declared and key != DEFAULT_NETWORK:
            continue
        out.append(_network_object(key, declared.get(key) or {}, namespace, warnings))
    return sorted(out, key=lambda n: n["name"])


def _network_object(key: str, net: dict, namespace: str, warnings: list[str]) -> dict:
    where = ("networks", key)
    if net.get("external"):
        name = net.get("name") or key
        if name in ENGINE_NETWORKS:
            raise StackFileError(f"networks.{key}: the engine's {name!r} network is not a swarm network and "
                                 "swarmpy's services cannot join it; use an overlay network "
                                 "(`swarmpy network create NAME`, then external: true, name: NAME)",
                                 path=where)
        return {"name": name, "external": True}
    name = net.get("name") or scoped(namespace, key)
    driver = net.get("driver") or "overlay"
    if driver != "overlay":
        raise StackFileError(f"networks.{key}.driver: network {name} asks for driver {driver!r}, but a stack's "
                             "networks span the swarm: swarmpy makes overlay networks only; use "
                             "driver: overlay (or leave driver out)", path=where + ("driver",))
    body = {"name": name, "driver": "overlay",
            "labels": {**_strings(net.get("labels")), NAMESPACE_LABEL: namespace},
            "attachable": bool(net.get("attachable")), "internal": bool(net.get("internal")),
            "options": _network_options(key, name, net.get("driver_opts") or {}, warnings)}
    subnet = _subnet(key, name, net.get("ipam") or {}, warnings)
    if subnet:
        body["subnet"] = subnet
    if net.get("enable_ipv6"):
        warnings.append(f"Ignoring enable_ipv6 of network {name}: swarmpy's overlay networks are IPv4 only")
    return body


def _network_options(key: str, name: str, opts: dict, warnings: list[str]) -> dict[str, str]:
    options, ignored = {}, []
    for option, value in sorted(_strings(opts).items()):
        if option not in NETWORK_OPTIONS:
            ignored.append(option)
        elif value.lower() not in ("true", "false", "1", "0"):
            raise StackFileError(f"networks.{key}.driver_opts.{option}: {value!r} is invalid; use true or false",
                                 path=("networks", key, "driver_opts", option))
        else:
            options[option] = value.lower()
    if ignored:
        warnings.append(f"Ignoring driver_opts {', '.join(ignored)} of network {name}: swarmpy's overlay "
                        f"takes {', '.join(NETWORK_OPTIONS)} only (no encryption, no other driver options)")
    return options


def _subnet(key: str, name: str, ipam: dict, warnings: list[str]) -> str:
    where = ("networks", key, "ipam")
    if ipam.get("driver") not in (None, "", "default"):
        raise StackFileError(f"networks.{key}.ipam.driver: IPAM driver {ipam['driver']!r} is not supported "
                             "by swarmpy; leave it out (swarmpy's own addresses, as docker's default)",
                             path=where + ("driver",))
    configs = ipam.get("config") or []
    if len(configs) > 1:
        raise StackFileError(f"networks.{key}.ipam.config: swarmpy's networks have one subnet; "
                             "give one entry", path=where + ("config",))
    ignored = sorted({k for c in configs for k in (c or {}) if k != "subnet"}
                     | ({"options"} if ipam.get("options") else set()))
    if ignored:
        warnings.append(f"Ignoring ipam {', '.join(ignored)} of network {name}: swarmpy takes the subnet only")
    return str((configs[0] or {}).get("subnet") or "") if configs else ""


def _service_networks(service: str, svc: dict, config: dict, namespace: str, warnings: list[str]) -> list[dict]:
    """docker's convertServiceNetworks: each attachment's target is the network's real name,
    its aliases the file's plus the service's own name; sorted by target."""
    declared = config.get("networks") or {}
    out = []
    for key, attachment in _attached(svc).items():
        if key not in declared and key != DEFAULT_NETWORK:
            raise StackFileError(f'service {service}: undefined network "{key}"',       # docker's text
                                 path=("services", service, "networks"))
        target = (declared.get(key) or {}).get("name") or scoped(namespace, key)
        aliases = [str(a) for a in (attachment or {}).get("aliases") or []]
        if target not in ENGINE_NETWORKS:
            aliases.append(service)
        ignored = sorted(k for k, v in (attachment or {}).items() if k != "aliases" and v not in (None, "", [], {}))
        if ignored:
            warnings.append(f"Ignoring {', '.join(ignored)} of service {service} on network {target}: "
                            "swarmpy gives each task its address")
        out.append({"target": target, "aliases": aliases})
    return sorted(out, key=lambda n: n["target"])


# --- secrets and configs (docker's convert/compose.go Secrets/Configs) ---------------------------

def _file_objects(section: str, objects: dict, namespace: str) -> list[dict]:
    """Every declared secret/config (used or not, as docker): external ones by name for the
    manager to check, the others with the file's bytes for it to create."""
    return [_file_object(section, key, objects[key] or {}, namespace) for key in sorted(objects)]


def _file_object(section: str, key: str, obj: dict, namespace: str) -> dict:
    where = f"{section}.{key}"
    if obj.get("external"):
        return {"name": obj.get("name") or key, "external": True}
    for option, what in (("environment", "an environment variable"), ("content", "inline content")):
        if option in obj:
            raise StackFileError(f"{where}.{option}: a {section[:-1]} from {what} is not supported by "
                                 "stack deploy; use file: or external: true", path=(section, key, option))
    for option in ("driver", "template_driver"):
        if obj.get(option):
            raise StackFileError(f"{where}.{option}: {section[:-1]} drivers are not supported by swarmpy; "
                                 "use file: or external: true", path=(section, key, option))
    if not obj.get("file"):
        raise StackFileError(f"{where}: no file given; use file: PATH or external: true", path=(section, key))
    return {"name": obj.get("name") or scoped(namespace, key),
            "labels": {**_strings(obj.get("labels")), NAMESPACE_LABEL: namespace},
            "data": base64.b64encode(_read_file((section, key, "file"), obj["file"])).decode()}


def _read_file(where: tuple, path: str) -> bytes:
    # The CLI reads the file (the loader made it absolute, relative to the compose file).
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        # Go's os.ReadFile text: "open PATH: no such file or directory"
        reason = (exc.strerror or str(exc)).lower()
        raise StackFileError(f"{'.'.join(where)}: open {path}: {reason}", path=where) from None


def _file_refs(service: str, kind: str, refs: list[dict], declared: dict, namespace: str) -> list[dict]:
    """A service's secrets:/configs: -> FileRefs, as docker's convertFileObject; docker's texts
    for an undefined object and for two refs with one target (ParseSecrets/ParseConfigs)."""
    out, targets = [], set()
    for ref in refs:
        source = ref["source"]
        if source not in declared:
            raise StackFileError(f'service {service}: undefined {kind} "{source}"',
                                 path=("services", service, f"{kind}s"))
        obj = declared[source] or {}
        name = obj.get("name") or scoped(namespace, source)
        target = ref.get("target") or source
        if target in targets:
            raise StackFileError(f"service {service}: duplicate {kind} target for {name} not allowed",
                                 path=("services", service, f"{kind}s"))
        targets.add(target)
        out.append({"source": name, "target": target, "uid": str(ref.get("uid") or "0"),
                    "gid": str(ref.get("gid") or "0"),
                    "mode": 0o444 if ref.get("mode") is None else int(ref["mode"])})
    return out


def scoped(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def _service(name: str, svc: dict, config: dict, namespace: str, warnings: list[str]) -> dict:
    where = f"services.{name}"
    image = svc.get("image")
    if not image:
        raise StackFileError(f"{where}.image: no image specified; every service of a stack needs one")
    deploy = svc.get("deploy") or {}
    ns_label = {NAMESPACE_LABEL: namespace}
    spec = {
        "name": scoped(namespace, name),
        "image": image,
        "labels": {**_strings(deploy.get("labels")), **ns_label, IMAGE_LABEL: image},
        "container_labels": {**_strings(svc.get("labels")), **ns_label},
        "env": _env(svc.get("environment") or {}),
    }
    _copy(spec, svc, {"command": "command", "entrypoint": "entrypoint", "hostname": "hostname",
                      "user": "user", "working_dir": "working_dir", "stop_signal": "stop_signal",
                      "tty": "tty", "stdin_open": "open_stdin", "read_only": "read_only",
                      "init": "init", "cap_add": "cap_add", "cap_drop": "cap_drop",
                      "dns_opt": "dns_options"})
    if "dns" in svc:
        spec["dns_nameservers"] = _as_list(svc["dns"])
    if "dns_search" in svc:
        spec["dns_search"] = _as_list(svc["dns_search"])
    if svc.get("extra_hosts"):
        spec["hosts"] = [_host_entry(entry) for entry in svc["extra_hosts"]]
    if svc.get("sysctls"):
        spec["sysctls"] = _strings(svc["sysctls"])
    if svc.get("ulimits"):
        spec["ulimits"] = [_ulimit(k, v) for k, v in sorted(svc["ulimits"].items())]
    if "stop_grace_period" in svc:
        spec["stop_grace_period"] = _seconds(f"{where}.stop_grace_period", svc["stop_grace_period"])
    if svc.get("healthcheck"):
        spec["healthcheck"] = _healthcheck(f"{where}.healthcheck", svc["healthcheck"])
    if svc.get("logging"):
        spec["log_driver"] = {"name": svc["logging"].get("driver", ""),
                              "options": _strings(svc["logging"].get("options"))}
    if svc.get("ports"):
        spec["ports"] = [_port(p) for p in svc["ports"]]
    if svc.get("volumes"):
        spec["mounts"] = [_mount(name, v, config, namespace) for v in svc["volumes"]]
    for kind in ("secret", "config"):
        if svc.get(f"{kind}s"):
            spec[f"{kind}s"] = _file_refs(name, kind, svc[f"{kind}s"], config.get(f"{kind}s") or {}, namespace)
    spec["networks"] = _service_networks(name, svc, config, namespace, warnings)
    _deploy(spec, name, deploy, svc)
    if deploy.get("endpoint_mode"):
        spec["endpoint_mode"] = _endpoint_mode(where, deploy["endpoint_mode"], spec.get("ports") or [])
    return spec


def _endpoint_mode(where: str, mode: str, ports: list[dict]) -> str:
    # What docker's engine refuses (swarmkit's validateEndpointSpec) is refused here, before
    # anything is sent, naming the key; the manager checks it again.
    mode = mode.lower()       # docker lower-cases it (convertEndpointSpec)
    if mode not in ("vip", "dnsrr"):
        raise StackFileError(f"{where}.deploy.endpoint_mode: invalid resolution mode {mode!r}; "
                             "use vip or dnsrr")
    if mode == "dnsrr" and any(p["mode"] == "ingress" for p in ports):
        raise StackFileError(f"{where}.deploy.endpoint_mode: EndpointSpec: port published with ingress "
                             "mode can't be used with dnsrr mode")
    return mode


def _deploy(spec: dict, service: str, deploy: dict, svc: dict) -> None:
    where = f"services.{service}"
    mode = deploy.get("mode") or "replicated"
    if mode not in ("replicated", "global", "replicated-job", "global-job"):
        raise StackFileError(f"service {service}: Unknown mode: {mode}")  # docker's text
    spec["mode"] = mode
    if deploy.get("replicas") is not None:
        if mode.startswith("global"):
            raise StackFileError(f"{where}.deploy.replicas: replicas can only be used with replicated "
                                 "or replicated-job mode")
        # a replicated-job's replicas are both its completions and its concurrency (docker:
        # MaxConcurrent = TotalCompletions = replicas); swarmpy's max_concurrent 0 means that
        spec["replicas"] = deploy["replicas"]
    placement = deploy.get("placement") or {}
    if placement.get("constraints"):
        spec["constraints"] = list(placement["constraints"])
    # docker keeps only spread preferences (nodeset.go ignores other descriptors)
    spec["preferences"] = [f"spread={p['spread']}" for p in placement.get("preferences") or [] if "spread" in p]
    if placement.get("max_replicas_per_node"):
        spec["max_replicas_per_node"] = placement["max_replicas_per_node"]
    resources = deploy.get("resources") or {}
    spec["limits"] = _resources(f"{where}.deploy.resources.limits", resources.get("limits") or {})
    spec["reservations"] = _resources(f"{where}.deploy.resources.reservations",
                                      resources.get("reservations") or {})
    policy = _restart_policy(service, deploy.get("restart_policy"), svc.get("restart"))
    if policy:
        spec["restart_policy"] = policy
    for key in ("update_config", "rollback_config"):
        if deploy.get(key):
            spec[key] = _update_config(f"{where}.deploy.{key}", deploy[key])


def _resources(where: str, res: dict) -> dict:
    out = {"nano_cpus": 0, "memory_bytes": 0, "generic": {}}
    try:
        if res.get("cpus") not in (None, ""):
            out["nano_cpus"] = units.parse_cpus(res["cpus"])
        if res.get("memory") not in (None, ""):
            out["memory_bytes"] = units.parse_memory(res["memory"])
    except ValueError as exc:
        raise StackFileError(f"{where}: {exc}") from None
    for item in res.get("generic_resources") or []:
        discrete = item.get("discrete_resource_spec") or {}
        if discrete.get("kind"):
            out["generic"][discrete["kind"]] = int(discrete.get("value", 0))
    return out


def _restart_policy(service: str, policy: dict | None, restart_key: str | None) -> dict | None:
    where = f"services.{service}.deploy.restart_policy"
    if policy is not None:
        out = {"condition": policy.get("condition") or "any"}
        for key in ("delay", "window"):
            if policy.get(key) is not None:
                out[key] = _seconds(f"{where}.{key}", policy[key])
        if policy.get("max_attempts") is not None:
            out["max_attempts"] = policy["max_attempts"]
        return out
    if not restart_key:
        return None
    # The deprecated service-level `restart:` still counts when deploy.restart_policy is absent.
    name, _, attempts = restart_key.partition(":")
    if name not in _RESTART_KEY:
        raise StackFileError(f"service {service}: unknown restart policy: {restart_key}")  # docker's text
    condition = _RESTART_KEY[name]
    if condition is None:
        return None
    out = {"condition": condition}
    if attempts.isdigit():
        out["max_attempts"] = int(attempts)
    return out


def _update_config(where: str, cfg: dict) -> dict:
    out = {}
    for key in ("parallelism", "failure_action", "max_failure_ratio", "order"):
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    for key in ("delay", "monitor"):
        if cfg.get(key) is not None:
            out[key] = _seconds(f"{where}.{key}", cfg[key])
    return out


def _healthcheck(where: str, hc: dict) -> dict:
    if hc.get("disable"):
        if hc.get("test"):
            raise StackFileError(f"{where}: test and disable can't be set at the same time")
        return {"test": ["NONE"]}
    out = {"test": list(hc.get("test") or [])}
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if hc.get(key) is not None:
            out[key] = _seconds(f"{where}.{key}", hc[key])
    if hc.get("retries") is not None:
        out["retries"] = int(hc["retries"])
    return out


def _port(port: dict) -> dict:
    return {"target": int(port["target"]), "published": int(port.get("published") or 0),
            "protocol": port.get("protocol", "tcp"), "mode": port.get("mode", "ingress")}


def _mount(service: str, vol: dict, config: dict, namespace: str) -> dict:
    where = f"services.{service}.volumes"
    kind = vol.get("type", "volume")
    mount = {"type": kind, "target": vol["target"], "read_only": bool(vol.get("read_only"))}
    if vol.get("consistency"):
        mount["consistency"] = vol["consistency"]
    source = vol.get("source") or ""
    if kind == "volume":
        mount.update(_volume_source(service, source, config, namespace))
        # docker drops volume options (nocopy) for an anonymous volume (handleVolumeToMount)
        if source:
            mount["volume_nocopy"] = bool((vol.get("volume") or {}).get("nocopy"))
    elif kind == "bind":
        mount["source"] = source
        propagation = (vol.get("bind") or {}).get("propagation")
        if propagation:
            mount["bind_propagation"] = propagation
    elif kind == "tmpfs":
        size = (vol.get("tmpfs") or {}).get("size")
        if size:
            mount["tmpfs_size_bytes"] = units.parse_memory(size)
    else:
        raise StackFileError(f"{where}: volume type {kind!r} is not supported by swarmpy; "
                             "use volume, bind or tmpfs")
    return mount


def _volume_source(service: str, source: str, config: dict, namespace: str) -> dict:
    if not source:      # anonymous volume
        return {"source": ""}
    declared = (config.get("volumes") or {})
    if source not in declared:
        raise StackFileError(f'service {service}: undefined volume "{source}"')     # docker's text
    top = declared[source] or {}
    if top.get("external"):
        return {"source": top.get("name") or source}
    return {"source": top.get("name") or scoped(namespace, source),
            "volume_labels": {**_strings(top.get("labels")), NAMESPACE_LABEL: namespace},
            "volume_driver": top.get("driver") or "",
            "volume_driver_options": _strings(top.get("driver_opts"))}


def _env(environment: dict) -> list[str]:
    # docker: a name without a value stays a bare NAME; sorted (convertEnvironment)
    return sorted(k if v is None else f"{k}={v}" for k, v in environment.items())


def _host_entry(entry: str) -> str:
    """compose's "host:ip" (or "host=ip") -> swarm's "ip host" (as /etc/hosts)."""
    sep = "=" if "=" in entry else ":"
    host, _, ip = entry.partition(sep)
    return f"{ip} {host}"


def _ulimit(name: str, value) -> dict:
    if isinstance(value, dict):
        return {"name": name, "soft": int(value["soft"]), "hard": int(value["hard"])}
    return {"name": name, "soft": int(value), "hard": int(value)}


def _seconds(where: str, value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise StackFileError(f"{where}: {exc}") from None


def _strings(mapping) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in (mapping or {}).items()}


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _copy(spec: dict, svc: dict, keys: dict[str, str]) -> None:
    for src, dst in keys.items():
        if svc.get(src) is not None:
            spec[dst] = svc[src]
