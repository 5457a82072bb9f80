"""A private mosquitto broker per test, on a free port, with its own files.

Usage::

    from tests.support.mosquitto import Mosquitto

    with Mosquitto(tmp_path / "broker") as broker:
        ...  # broker.url == "mqtt://127.0.0.1:<port>"
        broker.restart()  # graceful: SIGTERM saves the persistence file
        broker.kill()  # crash: SIGKILL, nothing since the last save survives
        broker.start()

or the fixtures at the end of this module (``mosquitto_broker`` yields a
started broker; ``mosquitto_factory`` makes more, with options). Register them
once in ``tests/conftest.py`` with ``pytest_plugins = ["tests.support.mosquitto"]``
rather than importing fixture names into test modules.

The broker's own log (its stderr, all starts appended) is ``broker.log_path``;
``broker.log_text()`` returns it, and start failures include its tail.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import pytest

from .ports import free_port, port_is_open, wait_port

__all__ = [
    "Mosquitto",
    "MosquittoError",
    "find_mosquitto",
    "mosquitto_broker",
    "mosquitto_factory",
]

# Debian installs the broker in /usr/sbin, which is not on a non-root PATH.
_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")

_live: weakref.WeakSet[Mosquitto] = weakref.WeakSet()


class MosquittoError(RuntimeError):
    """The broker could not be found, started or stopped cleanly."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary: $MOSQUITTO_BIN, PATH, then the sbin dirs."""
    env = os.environ.get("MOSQUITTO_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class Mosquitto:
    """One mosquitto process with a generated config in ``workdir``.

    Defaults suit the monitor's tests: persistence on (saved on graceful stop
    only, ``autosave_interval=0``, so a ``kill()`` deterministically loses
    everything since the last graceful stop), deep per-client queues
    (``max_queued_messages=100000``: an alarm burst to an offline daemon must
    not be silently dropped at mosquitto's default of 1000) and a wider
    in-flight window than the default 20 (the daemon acknowledges only after
    its group commit, so 20 would cap its batch size).

    The port is chosen on the first ``start()`` and kept across restarts, so
    clients can reconnect to the same URL.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence: bool = True,
        autosave_interval: int = 0,
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 1000,
        extra_config: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="mosquitto-")
        self.workdir = Path(workdir).resolve()
        self.host = host
        self._port = port
        self._port_fixed = port is not None
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.extra_config = list(extra_config)
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.data_dir = self.workdir / "data"

    # -- properties ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise MosquittoError("broker has no port before its first start()")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``, as the daemon's ``[mqtt] url`` wants it."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def persistence_file(self) -> Path:
        return self.data_dir / "mosquitto.db"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- config -------------------------------------------------------------

    def config_text(self) -> str:
        lines = [
            "# generated by tests/support/mosquitto.py",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            # mosquitto < 2 needed the trailing slash; 2.x accepts it.
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_interval}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            "set_tcp_nodelay true",
            # stderr goes to log_path (see start()); config errors land there too.
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root mosquitto switches to user "mosquitto", which can't write
            # our tmp dir. Staying root here is a test-only choice.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        lines.extend(self.extra_config)
        return "\n".join(lines) + "\n"

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            raise MosquittoError(f"mosquitto already running (pid {self.pid})")
        binary = self._binary or find_mosquitto()
        if binary is None:
            raise MosquittoError(
                "mosquitto not found (PATH, /usr/sbin); install it with "
                "`make test-deps` or `apt-get install mosquitto`, or set MOSQUITTO_BIN"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        # A port picked by free_port() can be taken before mosquitto binds it;
        # retry with a fresh one unless the caller fixed the port (or a restart
        # must keep it).
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            if self._port is None:
                self._port = free_port(self.host)
            try:
                self._spawn(binary, timeout)
                self._port_fixed = True  # keep this port across restarts
                return self
            except MosquittoError as exc:
                if attempt + 1 == attempts or "in use" not in str(exc):
                    raise
                self._port = None
        raise AssertionError("unreachable")

    def _spawn(self, binary: str, timeout: float) -> None:
        if port_is_open(self.host, self.port):
            raise MosquittoError(f"port {self.host}:{self.port} already in use")
        self.config_path.write_text(self.config_text())
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {binary} on port {self.port}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own process group: a Ctrl-C aimed at pytest must not kill the
                # broker before the fixture's teardown does.
                start_new_session=True,
            )
        self._proc = proc
        _live.add(self)
        try:
            wait_port(self.host, self.port, timeout, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            self._terminate(signal.SIGKILL, 5.0)
            raise MosquittoError(
                f"mosquitto did not start on {self.host}:{self.port}: {exc}\n"
                f"--- {self.log_path} (tail):\n{self._log_tail()}"
            ) from None

    def stop(self, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop the broker; a no-op if it isn't running.

        ``graceful``: SIGTERM and wait, which makes mosquitto write its
        persistence file. Otherwise (or if it hangs past ``timeout``) SIGKILL.
        """
        if not self.running:
            self._proc = None
            return
        if not graceful:
            self._terminate(signal.SIGKILL, timeout)
            return
        rc = self._terminate(signal.SIGTERM, timeout)
        if rc is None:
            self._terminate(signal.SIGKILL, 5.0)
            raise MosquittoError(
                f"mosquitto ignored SIGTERM for {timeout:g}s and was killed; "
                "its persistence file may be stale"
            )
        if rc != 0:
            raise MosquittoError(f"mosquitto exited with {rc}:\n{self._log_tail()}")

    def kill(self) -> None:
        """SIGKILL: a broker crash. State since the last save is lost."""
        self.stop(graceful=False)

    def restart(self, graceful: bool = True, timeout: float = 10.0) -> Self:
        """Stop (gracefully by default) and start again on the same port and files."""
        self.stop(graceful=graceful)
        return self.start(timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP: the broker hangs with its sockets open (a stuck broker)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or not self.running:
            raise MosquittoError("mosquitto is not running")
        self._proc.send_signal(sig)

    def _terminate(self, sig: signal.Signals, timeout: float) -> int | None:
        """Send ``sig`` and wait; the exit code, or None if it is still running."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig != signal.SIGKILL:
                # A paused broker would never act on SIGTERM.
                proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        self._proc = None
        return proc.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        port = self._port if self._port is not None else "?"
        return f"<Mosquitto {self.host}:{port} {state} {self.workdir}>"


@atexit.register
def _kill_leftovers() -> None:
    # A test that forgot stop() must not leave a broker behind the session.
    for broker in list(_live):
        if broker.running:
            broker.kill()


# -- pytest fixtures ----------------------------------------------------------
# Each depends only on pytest's built-in fixtures, so a test module may import
# just the one it uses.


@pytest.fixture
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A started private broker (default options); stopped after the test."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        _teardown(broker)


@pytest.fixture
def mosquitto_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Mosquitto]]:
    """Make brokers with options: ``mosquitto_factory(max_queued_messages=10)``.

    Each is started unless ``start=False`` is passed; all are stopped after
    the test.
    """
    made: list[Mosquitto] = []

    def make(*, start: bool = True, **options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), **options)
        made.append(broker)
        if start:
            broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in made:
            _teardown(broker)


def _teardown(broker: Mosquitto) -> None:
    try:
        broker.stop(timeout=10.0)
    except MosquittoError:
        broker.kill()
        raise
    # The tmp dir (config, log, persistence file) stays for post-mortem;
    # pytest keeps the last few runs' tmp dirs.
