"""Swarm's service templates, expanded by the agent for each task, as SwarmKit's
template package does: in env values, the hostname and mount sources and targets.

    --hostname '{{.Node.Hostname}}-{{.Task.Slot}}'  --env 'ME={{.Task.Name}}'

Placeholders: .Service.ID .Service.Name .Service.Labels .Node.ID .Node.Hostname
.Node.Platform.OS .Node.Platform.Architecture .Task.ID .Task.Name .Task.Slot, and
`{{index .Service.Labels "KEY"}}`. Anything else fails the task with Go's text.
"""
from __future__ import annotations

import platform
import re

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_INDEX = re.compile(r'^index\s+\.Service\.Labels\s+"([^"]*)"$')
_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64"}


class TemplateError(Exception):
    pass


def context(task: dict, node_id: str, hostname: str) -> dict[str, str | dict]:
    spec = task["spec"]
    slot = task.get("slot")
    suffix = slot if slot is not None else task.get("node_id")
    return {".Service.ID": task["service_id"], ".Service.Name": task["service_name"],
            ".Service.Labels": spec.get("labels") or {},
            ".Node.ID": node_id, ".Node.Hostname": hostname,
            ".Node.Platform.OS": platform.system().lower(),
            ".Node.Platform.Architecture": _ARCH.get(platform.machine(), platform.machine()),
            ".Task.ID": task["id"], ".Task.Name": f"{task['service_name']}.{suffix}.{task['id']}",
            ".Task.Slot": "" if slot is None else str(slot)}


def expand(text: str, ctx: dict) -> str:
    if "{{" not in text:
        return text
    return _ACTION.sub(lambda m: _evaluate(m.group(1), ctx, text), text)


def _evaluate(action: str, ctx: dict, text: str) -> str:
    label = _INDEX.match(action)
    if label:
        return ctx[".Service.Labels"].get(label.group(1), "")
    value = ctx.get(action)
    if value is None or isinstance(value, dict):
        field = action.rsplit(".", 1)[-1] or action
        raise TemplateError(f'template: expansion error: template: context:1:2: executing "context" at '
                            f'<{action}>: can\'t evaluate field {field} in {text!r}')
    return value


def expand_spec(spec: dict, ctx: dict) -> dict:
    """The spec with env values, hostname and mount source/target expanded."""
    out = dict(spec)
    out["env"] = [_expand_env(e, ctx) for e in spec.get("env") or []]
    if spec.get("hostname"):
        out["hostname"] = expand(spec["hostname"], ctx)
    out["mounts"] = [dict(m, source=expand(m.get("source") or "", ctx), target=expand(m["target"], ctx))
                     for m in spec.get("mounts") or []]
    return out


def _expand_env(entry: str, ctx: dict) -> str:
    name, sep, value = entry.partition("=")
    return f"{name}{sep}{expand(value, ctx)}" if sep else entry
