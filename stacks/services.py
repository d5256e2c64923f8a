"""One service's normalisation, as docker's LoadService: every key that has a
short and a long form gets the long one, environment and env_file become one
mapping, bind sources become absolute. `deploy` is left as written (only its
labels list becomes a mapping); durations stay strings."""
from __future__ import annotations

from stacks import shellwords
from stacks.envfile import parse_env_file
from stacks.errors import Path
from stacks.forms import FileContext, abs_path, hosts_list, is_abs, string_list, to_mapping
from stacks.gofmt import go_sprint
from stacks.ports import parse_port_range, parse_port_spec
from swarmpy.units import parse_memory
from stacks.volumes import parse_volume


def normalize_service(name: str, service: dict, ctx: FileContext) -> dict:
    path: Path = ("services", name)
    out = dict(service)
    for key, fix in _FIELDS.items():
        if key in out and out[key] is not None:
            out[key] = fix(out[key], path + (key,), ctx)
    out["environment"] = _environment(out, path, ctx)
    return out


def _command(value, path, ctx):
    if not isinstance(value, str):
        return [go_sprint(v) for v in value]
    try:
        return shellwords.split(value)
    except ValueError as exc:
        raise ctx.where.error(path, str(exc)) from None


def _file_refs(value, path, ctx):
    # secrets/configs: "name" is {"source": "name"}
    return [{"source": item} if isinstance(item, str) else item for item in value]


def _healthcheck(value, path, ctx):
    if isinstance(value, dict) and isinstance(value.get("test"), str):
        return {**value, "test": ["CMD-SHELL", value["test"]]}
    return value


def _deploy(value, path, ctx):
    if not isinstance(value, dict):
        return value
    _check_memory(value.get("resources"), path + ("resources",), ctx)
    if "labels" in value:
        return {**value, "labels": to_mapping(value["labels"])}
    return value


def _check_memory(resources, path, ctx) -> None:
    # docker parses these while loading (an error names no service); we only
    # check them here and leave the text for the converter (swarmpy.units.parse_memory)
    for part in ("limits", "reservations"):
        section = resources.get(part) if isinstance(resources, dict) else None
        if isinstance(section, dict) and section.get("memory") is not None:
            try:
                parse_memory(section["memory"])
            except ValueError as exc:
                raise ctx.where.error(path + (part, "memory"), str(exc)) from None


def _logging(value, path, ctx):
    if isinstance(value, dict) and isinstance(value.get("options"), dict):
        return {**value, "options": to_mapping(value["options"])}
    return value


def _networks(value, path, ctx):
    return {name: None for name in value} if isinstance(value, list) else value


def _ports(value, path, ctx):
    ports: list = []
    for index, item in enumerate(value):
        try:
            ports.extend(_port(item, ctx))
        except ValueError as exc:
            raise ctx.where.error(path + (index,), str(exc)) from None
    return ports


def _port(item, ctx) -> list:
    if isinstance(item, dict):
        ports = _long_port(item)
        _warn_host_ip(ports, ctx)
        return ports
    configs, warnings = parse_port_spec(go_sprint(item))
    ctx.warnings.extend(warnings)
    return configs


def _long_port(item: dict) -> list:
    # compose-spec allows strings here ("8080", "8000-8001"); docker's v3 types
    # are numbers, so make them numbers and expand a published range.
    port = dict(item)
    if isinstance(port.get("target"), str):
        port["target"] = parse_port_range(port["target"])[0]
    published = port.get("published")
    if not isinstance(published, str):
        return [port]
    start, end = parse_port_range(published)
    return [{**port, "published": p} for p in range(start, end + 1)]


def _warn_host_ip(ports: list, ctx: FileContext) -> None:
    # compose-spec's long form may name a host_ip; a swarm service cannot
    # listen on one address, so say so as docker does for the short form
    for port in ports:
        ip = port.get("host_ip")
        if ip and ip not in ("0.0.0.0", "::"):
            shown = f"[{ip}]" if ":" in ip else ip
            ctx.warnings.append(f"ignoring IP-address ({shown}:{port.get('published', '')}:"
                                f"{port.get('target')}/{port.get('protocol', 'tcp')}) "
                                "service will listen on '0.0.0.0'")


def _volumes(value, path, ctx):
    volumes = []
    for index, item in enumerate(value):
        try:
            volume = parse_volume(item) if isinstance(item, str) else dict(item)
        except ValueError as exc:
            raise ctx.where.error(path + (index,), str(exc)) from None
        if volume.get("type") == "bind":
            volume["source"] = _bind_source(volume.get("source"), path + (index,), ctx)
        volumes.append(volume)
    return volumes


def _bind_source(source, path, ctx) -> str:
    if not source:
        raise ctx.where.error(path, 'invalid mount config for type "bind": '
                                    "field Source must not be empty")
    if source.startswith("~"):
        if "HOME" in ctx.env:
            source = source.replace("~", ctx.env["HOME"], 1)
        else:
            ctx.warnings.append("cannot expand '~', because the environment lacks HOME")
    return source if is_abs(source) else abs_path(ctx.working_dir, source)


_FIELDS = {
    "build": lambda v, p, c: {"context": v} if isinstance(v, str) else v,
    "command": _command,
    "entrypoint": _command,
    "configs": _file_refs,
    "secrets": _file_refs,
    "deploy": _deploy,
    "dns": lambda v, p, c: string_list(v),
    "dns_search": lambda v, p, c: string_list(v),
    "env_file": lambda v, p, c: string_list(v),
    "tmpfs": lambda v, p, c: string_list(v),
    "expose": lambda v, p, c: [go_sprint(x) for x in v],
    "extra_hosts": lambda v, p, c: hosts_list(v),
    "healthcheck": _healthcheck,
    "labels": lambda v, p, c: to_mapping(v),
    "sysctls": lambda v, p, c: to_mapping(v),
    "logging": _logging,
    "networks": _networks,
    "ports": _ports,
    "volumes": _volumes,
}


# --- environment -------------------------------------------------------------

def _environment(service: dict, path: Path, ctx: FileContext) -> dict:
    """env_file entries in order, then `environment` over them; a variable
    with no value (or an empty one) takes the value from the environment when
    it is set there (docker's resolveEnvironment)."""
    environment: dict = {}
    for index, entry in enumerate(service.get("env_file") or []):
        _update(environment, dict(_read_env_file(entry, path + ("env_file", index), ctx)), ctx)
    _update(environment, to_mapping(service.get("environment") or {}, allow_none=True), ctx)
    return environment


def _read_env_file(entry, path: Path, ctx: FileContext) -> list:
    # compose-spec also allows {path, required}
    file, required = (entry.get("path", ""), entry.get("required", True)) \
        if isinstance(entry, dict) else (entry, True)
    full = abs_path(ctx.working_dir, file)
    try:
        return parse_env_file(full, ctx.env)
    except FileNotFoundError:
        if not required:
            return []
        raise ctx.where.error(path, f"open {full}: no such file or directory") from None
    except (OSError, ValueError) as exc:
        raise ctx.where.error(path, str(exc)) from None


def _update(environment: dict, variables: dict, ctx: FileContext) -> None:
    for key, value in variables.items():
        if not value and key in ctx.env:
            environment[key] = ctx.env[key]
        else:
            environment[key] = value
