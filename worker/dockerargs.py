"""A task's container spec as docker-SDK arguments: what `create_container` and
`create_host_config` take, beyond image, command, env, labels and resources.

Pure functions over the spec's dict form (the store's), so they are tested without an
engine.  Specs stored before a field existed lack its key: every read has a default."""
from __future__ import annotations

from docker.types import DriverConfig, Healthcheck, LogConfig, Mount, Ulimit

NANOS = 1_000_000_000


def container_config(spec: dict) -> dict:
    """Keyword arguments for `APIClient.create_container` (its Config part)."""
    return {"entrypoint": spec.get("entrypoint") or None, "hostname": spec.get("hostname") or None,
            "user": spec.get("user") or None, "working_dir": spec.get("working_dir") or None,
            "stop_signal": spec.get("stop_signal") or None, "tty": bool(spec.get("tty")),
            "stdin_open": bool(spec.get("open_stdin")), "healthcheck": healthcheck(spec.get("healthcheck")),
            "ports": [(p["target"], p.get("protocol", "tcp")) for p in spec.get("ports") or []] or None}


def host_config(spec: dict) -> dict:
    """Keyword arguments for `APIClient.create_host_config`."""
    log_driver = spec.get("log_driver")
    return {"read_only": bool(spec.get("read_only")) or None, "init": spec.get("init"),
            "extra_hosts": extra_hosts(spec.get("hosts") or []) or None,
            "dns": spec.get("dns_nameservers") or None, "dns_search": spec.get("dns_search") or None,
            "dns_opt": spec.get("dns_options") or None, "sysctls": spec.get("sysctls") or None,
            "ulimits": [Ulimit(name=u["name"], soft=u["soft"], hard=u["hard"])
                        for u in spec.get("ulimits") or []] or None,
            "cap_add": spec.get("cap_add") or None, "cap_drop": spec.get("cap_drop") or None,
            "log_config": LogConfig(type=log_driver["name"], config=log_driver.get("options") or {})
            if log_driver else None,
            "mounts": [mount(m) for m in spec.get("mounts") or []] or None,
            "port_bindings": port_bindings(spec.get("ports") or []) or None}


def extra_hosts(hosts: list[str]) -> list[str]:
    """Swarm stores hosts as /etc/hosts lines ("IP NAME [ALIAS...]"); the engine takes
    "NAME:IP" (as SwarmKit converts them; aliases get their own entries here)."""
    out = []
    for entry in hosts:
        ip, *names = entry.split()
        out += [f"{name}:{ip}" for name in names]
    return out


def port_bindings(ports: list[dict]) -> dict:
    """Ports published in `host` mode are bound on the node that runs the task; `ingress`
    ones are the routing mesh's, answered on every node (worker/network/rules.py).
    Published 0: the engine picks a host port, as swarm's host mode does."""
    bindings: dict[str, list] = {}
    for p in ports:
        if p.get("mode", "ingress") != "host":
            continue
        key = f"{p['target']}/{p.get('protocol', 'tcp')}"
        bindings.setdefault(key, []).append(p.get("published") or None)
    return bindings


def healthcheck(check: dict | None) -> Healthcheck | None:
    if check is None:
        return None
    # start_interval is not in the SDK's type; Engine.create adds it to the config itself.
    return Healthcheck(test=list(check.get("test") or []), interval=nanos(check.get("interval")),
                       timeout=nanos(check.get("timeout")), start_period=nanos(check.get("start_period")),
                       retries=check.get("retries") or 0)


def nanos(seconds: float | None) -> int:
    return int(round((seconds or 0) * NANOS))


def mount(m: dict) -> Mount:
    kind = m.get("type", "volume")
    driver = None
    if kind == "volume" and (m.get("volume_driver") or m.get("volume_driver_options")):
        driver = DriverConfig(m.get("volume_driver") or "local", m.get("volume_driver_options") or None)
    return Mount(target=m["target"], source=m.get("source") or "", type=kind,
                 read_only=bool(m.get("read_only")), consistency=m.get("consistency") or None,
                 propagation=(m.get("bind_propagation") or None) if kind == "bind" else None,
                 no_copy=bool(m.get("volume_nocopy")) if kind == "volume" else False,
                 labels=(m.get("volume_labels") or None) if kind == "volume" else None, driver_config=driver,
                 tmpfs_size=(m.get("tmpfs_size_bytes") or None) if kind == "tmpfs" else None,
                 tmpfs_mode=(m.get("tmpfs_mode") or None) if kind == "tmpfs" else None)


def has_healthcheck(check: dict | None, image_has_one: bool) -> bool:
    """Whether the container will report health: its own test, else the image's (an empty
    test inherits the image's; ["NONE"] turns it off), as SwarmKit reads the created config."""
    test = (check or {}).get("test") or []
    if test:
        return test[0] != "NONE"
    return image_has_one
