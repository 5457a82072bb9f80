"""structlog JSON lines on stderr (journald keeps them; SPEC 5)."""

from __future__ import annotations

import logging
import os
import sys

import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure(level: str | None = None) -> None:
    name = (level or os.environ.get("MONITOR_LOG_LEVEL") or "info").lower()
    numeric = LEVELS.get(name, 20)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiohttp, amqtt, paho) log through stdlib logging: keep their
    # warnings, as plain lines on the same stream.
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=sys.stderr,
        format='{"level": "%(levelname)s", "logger": "%(name)s", "event": "%(message)s"}',
    )
