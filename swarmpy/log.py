"""structlog set-up: one line per event, key=value, to stderr (the daemon's log file)."""
from __future__ import annotations

import logging
import sys

import structlog

# Keys whose values are never written out, whatever logs them.
_REDACT = ("token", "secret", "password", "join_token")


def _redact(_, __, event: dict) -> dict:
    for key in list(event):
        if any(word in key.lower() for word in _REDACT):
            event[key] = "<redacted>"
    return event


def configure(level: str = "info", stream=None) -> None:
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso"),
                    _redact,
                    structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"])],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True)


def get(name: str):
    return structlog.get_logger(component=name)
