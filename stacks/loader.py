"""`stack deploy`'s compose loading: files -> one validated, interpolated,
normalised and merged dict, as docker/cli's cli/compose/loader and
cli/command/stack/loader do, with docker's warnings.

Per file, in docker's order: parse YAML, check `version` (same in every file),
refuse forbidden keys, interpolate (os.environ by default; no .env file),
validate against the schema, normalise (long forms, environment, paths). Then
the files merge in order (stacks/merge.py), and docker's "Ignoring ..."
warnings are added.

The result (LoadedStack.config) always has version, services, networks,
volumes, secrets and configs. In it:
- environment: {name: str | None} (None: declared without a value and not set
  in the environment), env_file already read in, `environment` winning;
- labels, sysctls, deploy.labels, logging.options: {str: str};
- ports: long form dicts; short ones become {mode: "ingress", target, protocol,
  published (absent when not published)}, ranges expanded;
- volumes: long form {type, source, target, read_only, bind, volume, ...},
  bind sources absolute (`~` expanded, relative to working_dir);
- secrets/configs references: {source, ...}; command/entrypoint: lists;
  networks (per service): {name: None | {...}}; extra_hosts: ["host:ip"];
  healthcheck.test: a list (a string becomes ["CMD-SHELL", text]);
- top-level networks/volumes/secrets/configs: `external` a bool, `name` set
  for external ones, secret/config `file` absolute;
- durations are left as written (strings, Go syntax checked by the v3 schema);
  stacks.duration.parse_duration gives seconds. Memory sizes are checked and
  left as written (swarmpy.units.parse_memory gives bytes). `deploy` is
  otherwise as written.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import reduce
from typing import Mapping

from stacks.errors import StackFileError, Where
from stacks.forms import FileContext
from stacks.gofmt import go_sprint
from stacks.interpolate import interpolate
from stacks.merge import merge_configs
from stacks.objects import normalize_objects
from stacks.schema import SPEC_SCHEMA, V3_SCHEMA, validate
from stacks.services import normalize_service
from stacks.yamlsrc import parse_yaml

__all__ = ["LoadedStack", "StackFileError", "load", "load_text"]

DEFAULT_VERSION = "3.13"  # docker/cli's schema.defaultVersion

# cli/compose/types/types.go
UNSUPPORTED = ("build", "cgroupns_mode", "cgroup_parent", "devices", "domainname",
               "external_links", "ipc", "links", "mac_address", "network_mode", "pid",
               "privileged", "restart", "security_opt", "shm_size", "userns_mode")
DEPRECATED = {
    "container_name": "Setting the container name is not supported.",
    "expose": "Exposing ports is unnecessary - services on the same network can access "
              "each other's containers on any port.",
}
FORBIDDEN = {
    "extends": "Support for `extends` is not implemented yet.",
    "volume_driver": "Instead of setting the volume driver on the service, define a volume "
                     "using the top-level `volumes` option and specify the driver there.",
    "volumes_from": "To share a volume between services, define it using the top-level "
                    "`volumes` option and reference it from each service that shares it "
                    "using the service-level `volumes` option.",
    "cpu_quota": "Set resource limits using deploy.resources",
    "cpu_shares": "Set resource limits using deploy.resources",
    "cpuset": "Set resource limits using deploy.resources",
    "mem_limit": "Set resource limits using deploy.resources",
    "memswap_limit": "Set resource limits using deploy.resources",
}


@dataclass
class LoadedStack:
    config: dict          # merged, interpolated, validated, normalised (see above)
    working_dir: str      # directory of the first file; relative paths resolve against it
    warnings: list[str] = field(default_factory=list)  # docker's texts
    files: list[str] = field(default_factory=list)


def load(paths: list[str], env: Mapping[str, str] | None = None) -> LoadedStack:
    """Load compose files from disk (docker's `-c a.yml -c b.yml`)."""
    if not paths:
        raise StackFileError("Specify a Compose file (with --compose-file)")
    texts = [(path, _read(path)) for path in paths]
    working_dir = os.path.dirname(os.path.abspath(paths[0]))
    return load_text(texts, env, working_dir)


def _read(path: str) -> str:
    if path == "-":
        raise StackFileError("reading a compose file from stdin (-) is not supported")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise StackFileError(f"open {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise StackFileError(f"{path}: not UTF-8 text ({exc.reason})") from None


def load_text(texts: list[tuple[str, str]], env: Mapping[str, str] | None = None,
              working_dir: str | None = None) -> LoadedStack:
    """Load (filename, YAML text) pairs; filename is only used in messages."""
    if not texts:
        raise StackFileError("No files specified")
    env = os.environ if env is None else env
    working_dir = working_dir or os.getcwd()
    parsed = [(name, *parse_yaml(text, name)) for name, text in texts]
    version = docker_version(parsed[0][1])
    warnings: list[str] = []
    configs = [_load_file(raw, where, FileContext(where, working_dir, env, version, warnings))
               for _, raw, where in parsed]
    raws = [raw for _, raw, _ in parsed]
    return LoadedStack(reduce(merge_configs, configs), working_dir,
                       warnings + property_warnings(raws), [name for name, _ in texts])


def _load_file(raw: dict, where: Where, ctx: FileContext) -> dict:
    version = docker_version(raw)
    if version != ctx.version:
        raise where.error(("version",), "version mismatched between two composefiles : "
                                        f"{ctx.version} and {version}", with_path=False)
    _check_forbidden(raw, where)
    schema = _schema_for(raw, where)
    config = interpolate(raw, ctx.env, where, cast_all=schema == SPEC_SCHEMA)
    validate(config, schema, where)
    return _normalize(config, ctx)


def docker_version(raw: dict) -> str:
    """docker's schema.Version: missing, "" or "3" mean the newest 3.x."""
    if "version" not in raw:
        return DEFAULT_VERSION
    text = go_sprint(raw["version"])
    return DEFAULT_VERSION if text in ("", "3") else text


def _schema_for(raw: dict, where: Where) -> str:
    if "include" in raw:
        raise where.error(("include",), "not supported by stack deploy "
                                        "(pass each file with its own -c)")
    if "version" not in raw:
        return SPEC_SCHEMA  # the compose specification: files without `version`
    version = docker_version(raw)
    match = re.fullmatch(r"3(?:\.(\d+))?", version)
    if match and int(match.group(1) or 0) <= 13:
        return V3_SCHEMA
    raise where.error(("version",), f"unsupported Compose file version: {version}",
                      with_path=False)


def _check_forbidden(raw: dict, where: Where) -> None:
    services = raw.get("services")
    found: dict = {}  # key -> path of its first use, in document order
    for name, service in (services.items() if isinstance(services, dict) else ()):
        for key in service if isinstance(service, dict) else ():
            if key in FORBIDDEN:
                found.setdefault(key, ("services", name, key))
    if found:
        text = "\n\n".join(sorted(f"{key}: {FORBIDDEN[key]}" for key in found))
        first = min(found.values(), key=lambda p: where.line(p) or 0)
        raise where.error(first, f"Compose file contains unsupported options:\n\n{text}",
                          with_path=False)


def _normalize(config: dict, ctx: FileContext) -> dict:
    out = dict(config)
    out["version"] = ctx.version
    out["services"] = {name: normalize_service(name, service, ctx)
                       for name, service in (config.get("services") or {}).items()}
    for section in ("networks", "volumes", "secrets", "configs"):
        out[section] = normalize_objects(section, config.get(section) or {}, ctx)
    return out


def property_warnings(raws: list[dict]) -> list[str]:
    """docker's "Ignoring unsupported options" / "Ignoring deprecated options"
    (stack/loader.go), from the files as written."""
    used: set = set()
    for raw in raws:
        services = raw.get("services")
        for service in services.values() if isinstance(services, dict) else ():
            used.update(service if isinstance(service, dict) else ())
    warnings = []
    unsupported = sorted(used.intersection(UNSUPPORTED))
    if unsupported:
        warnings.append(f"Ignoring unsupported options: {', '.join(unsupported)}")
    deprecated = sorted(f"{key}: {DEPRECATED[key]}" for key in used.intersection(DEPRECATED))
    if deprecated:
        warnings.append("Ignoring deprecated options:\n\n" + "\n\n".join(deprecated))
    return warnings
