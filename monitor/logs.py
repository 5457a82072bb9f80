"""structlog JSON lines on stderr (journald keeps them; SPEC 5)."""

from __future__ import annotations

import logging
import os
import sys

import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that remembers the name given to get_logger(), which
    structlog's PrintLoggerFactory drops: every line names its component."""

    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name


def _named(*args: object) -> _NamedPrintLogger:
    return _NamedPrintLogger(str(args[0]) if args else "")


def _add_logger_name(
    logger: object, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    name = getattr(logger, "name", "")
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def configure(level: str | None = None) -> None:
    name = (level or os.environ.get("MONITOR_LOG_LEVEL") or "info").lower()
    numeric = LEVELS.get(name, 20)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_named,
        cache_logger_on_first_use=True,
    )
    # Libraries (aiohttp, amqtt, paho) log through stdlib logging: keep their
    # warnings, as plain lines on the same stream.
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=sys.stderr,
        format='{"level": "%(levelname)s", "logger": "%(name)s", "event": "%(message)s"}',
    )
