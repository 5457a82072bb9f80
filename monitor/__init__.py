"""Express notification service: the monitoring centre daemon."""

__version__ = "0.1.0"
