"""Output in the docker CLI's style: left-aligned tables, `--format json`, humane times."""
from __future__ import annotations

import json
import sys
import time

from swarmpy.models import TaskState


def table(headers: list[str], rows: list[list[str]], out=None) -> None:
    out = out or sys.stdout
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers] + rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        out.write("   ".join(cells).rstrip() + "\n")


def dump_json(data, out=None) -> None:
    (out or sys.stdout).write(json.dumps(data, indent=4, sort_keys=False) + "\n")


def ago(ts: float | None) -> str:
    if not ts:
        return ""
    delta = max(0.0, time.time() - ts)
    if delta < 1:
        return "Less than a second ago"
    for limit, unit, size in ((60, "second", 1), (3600, "minute", 60), (86400, "hour", 3600),
                              (float("inf"), "day", 86400)):
        if delta < limit:
            n = int(delta // size)
            if unit == "minute" and n == 1:
                return "About a minute ago"
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return ""


def state_label(value: int) -> str:
    try:
        return TaskState(value).name.capitalize()
    except ValueError:
        return str(value)


def short(obj_id: str) -> str:
    return obj_id[:12]
