"""Top-level networks, volumes, secrets and configs, as docker's LoadNetworks,
LoadVolumes, LoadSecrets and LoadConfigObjs: `external` becomes a boolean and
an external object always gets its `name` (external.name, deprecated, moves to
name); secret and config files become absolute paths."""
from __future__ import annotations

from stacks.forms import FileContext, abs_path, to_mapping, version_at_least
from stacks.gofmt import go_sprint

_KIND = {"networks": "network", "volumes": "volume", "secrets": "secret", "configs": "config"}
# docker warns about external.name from these file versions on
_DEPRECATED_FROM = {"networks": "3.5", "volumes": "3.4", "secrets": "3.5", "configs": "3.5"}


def normalize_objects(section: str, objects: dict, ctx: FileContext) -> dict:
    return {name: _object(section, name, dict(obj or {}), ctx) for name, obj in objects.items()}


def _object(section: str, name: str, obj: dict, ctx: FileContext) -> dict:
    for key in ("labels",):
        if key in obj:
            obj[key] = to_mapping(obj[key])
    if isinstance(obj.get("driver_opts"), dict):
        obj["driver_opts"] = {k: go_sprint(v) for k, v in obj["driver_opts"].items()}
    external = obj.get("external")
    if external is True or isinstance(external, dict):
        _external(section, name, obj, ctx)
    elif section in ("secrets", "configs"):
        _file_object(section, name, obj, ctx)
    return obj


def _external(section: str, name: str, obj: dict, ctx: FileContext) -> None:
    kind = _KIND[section]
    path = (section, name)
    if section == "volumes":
        for key in ("driver", "driver_opts", "labels"):
            if obj.get(key):
                raise ctx.where.error(path, f'conflicting parameters "external" and "{key}" '
                                            f'specified for volume "{name}"', with_path=False)
    external = obj["external"]
    obj["external"] = True
    old_name = external.get("name") if isinstance(external, dict) else None
    if old_name:
        if obj.get("name"):
            raise ctx.where.error(path, f"{kind} {name}: {kind}.external.name and {kind}.name "
                                        f"conflict; only use {kind}.name", with_path=False)
        if version_at_least(ctx.version, _DEPRECATED_FROM[section]):
            ctx.warnings.append(f"{kind} {name}: {kind}.external.name is deprecated "
                                f"in favor of {kind}.name")
        obj["name"] = old_name
    elif not obj.get("name"):
        obj["name"] = name


def _file_object(section: str, name: str, obj: dict, ctx: FileContext) -> None:
    kind = _KIND[section]
    if obj.get("driver"):
        if obj.get("file"):
            raise ctx.where.error((section, name), f"{kind} {name}: {kind}.driver and {kind}.file "
                                                   f"conflict; only use {kind}.driver",
                                  with_path=False)
    elif obj.get("file"):
        obj["file"] = abs_path(ctx.working_dir, obj["file"])
