"""Free-port and wait-for-port helpers for tests that start real servers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

__all__ = ["free_port", "port_is_open", "wait_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The kernel picks it (bind to port 0). Another process may take it before
    the caller binds it; callers that start a server should retry with a new
    port if the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until ``host:port`` accepts a TCP connection.

    Raises ``TimeoutError`` after ``timeout`` seconds. If ``alive`` is given
    and returns False (e.g. the server process has exited), raises
    ``RuntimeError`` at once instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if port_is_open(host, port):
            return
        if alive is not None and not alive():
            raise RuntimeError(f"server for {host}:{port} exited before it listened")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
