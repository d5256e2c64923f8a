"""Go's time.ParseDuration, which docker uses for every compose duration
(stop_grace_period, healthcheck intervals, update delay, ...). The loader only
checks the syntax and leaves durations as the strings written; the converter
calls parse_duration to get seconds. The parser is the CLI's (swarmpy.units), so
a flag and a compose key accept and refuse the same texts."""
from __future__ import annotations

from swarmpy.units import parse_go_duration as parse_duration

__all__ = ["HINT", "is_duration", "parse_duration"]

HINT = "a Go duration such as 1h2m3.5s, 300ms or 10us"


def is_duration(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True
