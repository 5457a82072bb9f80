"""A private PostgreSQL cluster per test session, and a fresh database per test.

``pg_server`` (session): initdb into a temporary folder, ``pg_ctl start`` on a
free port with its unix socket in that folder (run as the ``postgres`` user
when the tests run as root; PostgreSQL refuses to run as root).  Without the
server binaries it falls back to a local server on the default socket when
one answers (``PGTEST_URL`` names another), else the tests skip with the
reason.  ``pg_url`` (function): a new empty database on it, dropped after.
A private cluster can be stopped (``-m immediate``: a crash), started and
restarted (``PgServer.stop/start/restart``; ``controllable`` says whether it
is one); a test that does so must leave it running.

Import the fixtures into a test module::

    from tests.support.postgres import pg_server, pg_url  # noqa: F401
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .ports import free_port

__all__ = ["PgServer", "pg_server", "pg_url", "point_write_config_at"]


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in dirs:
        if (Path(d) / "initdb").exists():
            return Path(d)
    return None


@dataclass
class PgServer:
    host: str  # socket folder
    port: int
    user: str
    datadir: Path | None = None
    bindir: Path | None = None
    run_as: list[str] | None = None
    opts: str = ""  # postgres options of the private cluster (pg_ctl -o)
    logfile: Path | None = None

    @property
    def controllable(self) -> bool:
        """A private cluster (stop/start/restart work); not the machine's server."""
        return self.datadir is not None and self.bindir is not None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.host}&port={self.port}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_db(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name}")
        return name

    def drop_db(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _pg_ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        assert self.datadir is not None and self.bindir is not None, "not a private cluster"
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args]
        done = subprocess.run(
            [*(self.run_as or []), *cmd], capture_output=True, text=True, timeout=90
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def stop(self, mode: str = "immediate") -> None:
        """Stop the private cluster (`immediate`: a crash; `fast`: a clean
        shutdown).  A no-op on the machine's own server."""
        if not self.controllable:
            return
        self._pg_ctl("-m", mode, "-w", "stop")

    def start(self) -> None:
        """Start the private cluster again (same port, socket and options)."""
        log = ["-l", str(self.logfile)] if self.logfile else []
        self._pg_ctl(*log, "-o", self.opts, "-w", "-t", "60", "start", check=True)

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m MODE` of the private cluster."""
        log = ["-l", str(self.logfile)] if self.logfile else []
        self._pg_ctl(*log, "-o", self.opts, "-m", mode, "-w", "-t", "60", "restart", check=True)


def start_private(root: Path) -> PgServer:
    """initdb + pg_ctl start on a free port; raises RuntimeError with the reason."""
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries (initdb) not found")
    root.mkdir(parents=True, exist_ok=True)
    run_as: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError("running as root and no 'postgres' user to run initdb") from exc
        run_as = ["runuser", "-u", "postgres", "--"]
        user = "postgres"
        shutil.chown(root, "postgres")
    root.chmod(0o755)
    data = root / "data"
    sock = root
    init = subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user,
         "-E", "UTF8", "--no-sync", "--no-instructions"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
    port = free_port()
    opts = (
        f"-p {port} -k {sock} -c listen_addresses='' -c fsync=on -c max_connections=100"
        " -c shared_buffers=64MB"
    )
    start = subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
         "-o", opts, "-w", "-t", "60", "start"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    if start.returncode != 0:
        log = (root / "log").read_text(errors="replace")[-800:] if (root / "log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log}")
    return PgServer(str(sock), port, user, data, bindir, run_as, opts, root / "log")


def local_server() -> PgServer | None:
    """The machine's own server on its default socket, when one answers."""
    try:
        import psycopg
    except ImportError:
        return None
    for host in ("/var/run/postgresql", "/tmp"):
        if not Path(host, ".s.PGSQL.5432").exists():
            continue
        user = pwd.getpwuid(os.getuid()).pw_name
        server = PgServer(host, 5432, user)
        try:
            with psycopg.connect(server.url(), connect_timeout=3):
                return server
        except psycopg.Error:
            continue
    return None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed (pip install 'psycopg[binary]')")
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))
    server: PgServer | None = None
    reason = ""
    try:
        server = start_private(root)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        reason = str(exc)
        server = local_server()
    if server is None:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"no PostgreSQL for the tests: {reason}; and no local server answers")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_db()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_db(name)


def point_write_config_at(
    url: str, monkeypatch: pytest.MonkeyPatch, *modules: types.ModuleType
) -> None:
    """Rerun SQLite test modules on PostgreSQL: their `write_config` writes
    `db_url = url` instead of an SQLite file (an SQLite path a test passes,
    to share one database between runs, becomes that same database)."""
    from tests.support import daemon

    original = daemon.write_config

    @functools.wraps(original)
    def write_config(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("db", None)
        kwargs.setdefault("db_url", url)
        return original(*args, **kwargs)

    for module in modules:
        monkeypatch.setattr(module, "write_config", write_config)
