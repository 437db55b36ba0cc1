"""A private, throwaway PostgreSQL cluster for tests: initdb + pg_ctl in a temporary directory.

    with PostgresServer(timezone="Asia/Kathmandu") as server:
        conn = psycopg.connect(server.url)
        server.stop()    # simulate an outage (the data stays on disk)
        server.start()   # back on the same port, with the same data

The cluster listens on 127.0.0.1:<free port> and on a Unix socket in its own
directory, trusts local connections (user ``postgres``, no password), and
skips fsync: it lives for one test run.  PostgreSQL refuses to run as root, so
when the tests run as root (as CI does) initdb and pg_ctl run as the
``postgres`` system user that Debian's package creates.  Needs only the
standard library and the server programs (``apt-get install -y postgresql``).
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import weakref
from typing import Optional

from tests.support import PrivateServer, free_port

_running: "weakref.WeakSet[PostgresServer]" = weakref.WeakSet()
INSTALL = 'apt-get install -y postgresql'


def postgres_bindir() -> Optional[str]:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest
    /usr/lib/postgresql/<version>/bin (which Debian does not put on PATH)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(versions[-1]) if versions else None


def server_user() -> Optional[str]:
    """Who runs the server: None for the current user, ``postgres`` when that is root."""
    return "postgres" if os.geteuid() == 0 else None


def postgres_server_available() -> bool:
    """True when the server programs are installed and there is a non-root user to run them."""
    if postgres_bindir() is None:
        return False
    user = server_user()
    if user is None:
        return True
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _scratch_parent(user: Optional[str]) -> Optional[str]:
    """Where the cluster's directory goes: the usual temporary directory, unless another user
    runs the server and cannot reach it (a TMPDIR inside /root), then /tmp."""
    if user is None:
        return None
    path = os.path.abspath(tempfile.gettempdir())
    while True:
        if not os.stat(path).st_mode & 0o001:  # others may not enter it
            return "/tmp"
        if path == os.path.dirname(path):
            return None
        path = os.path.dirname(path)


class PostgresServer(PrivateServer):
    """One PostgreSQL cluster on 127.0.0.1:<port>; stopped on ``stop()``/``close()`` and at exit.

    ``timezone`` is the server's TimeZone setting, the one every session starts
    with (the tests use a zone away from UTC: connect-pg-simple's ``expire``
    column is local time in it).  ``settings`` are extra ``-c name=value`` options.
    """

    def __init__(self, *, timezone: str = "UTC", settings: Optional[dict] = None,
                 startup_timeout: float = 60.0) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError(f"PostgreSQL server programs not found: {INSTALL}")
        self.bindir = bindir
        self.port = free_port()
        self.timezone = timezone
        self.settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.user = server_user()
        self.dir = tempfile.mkdtemp(prefix="pg-test-", dir=_scratch_parent(self.user))
        self.data = os.path.join(self.dir, "data")
        self.socket_dir = os.path.join(self.dir, "socket")
        self.log_path = os.path.join(self.dir, "server.log")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.socket_url = f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"
        self._initialised = False

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "PostgresServer":
        """Create the cluster on first use, start it, and wait until it accepts connections."""
        if self.running:
            return self
        if not self._initialised:
            self._init_cluster()
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1",
                   f"-c unix_socket_directories='{self.socket_dir}'", f"-c timezone='{self.timezone}'",
                   "-c fsync=off", "-c full_page_writes=off", "-c max_connections=200"]
        options += [f"-c {name}='{value}'" for name, value in self.settings.items()]
        done = self._run("pg_ctl", "-D", self.data, "-l", self.log_path, "-w",
                         "-t", str(int(self.startup_timeout)), "-o", " ".join(options), "start")
        if done.returncode != 0 or not self.ping():
            log = self.log()
            self.stop()
            raise RuntimeError(f"PostgreSQL on port {self.port} did not start:\n"
                               f"{done.stdout}{done.stderr}\n{log[-3000:]}")
        _running.add(self)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, disconnect everyone;
        ``immediate``: the postmaster and its backends quit at once, as in a crash)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")
        _running.discard(self)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", self.data, "status").returncode == 0 if self._initialised \
            else False

    def ping(self) -> bool:
        """True when the server accepts TCP connections on its port."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    # -- private ---------------------------------------------------------
    def _init_cluster(self) -> None:
        os.makedirs(self.socket_dir, exist_ok=True)
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            for path in (self.dir, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        done = self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                         "--locale=C", "--no-sync", "--no-instructions")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
        self._initialised = True

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        """Run a server program as the server's user, from a directory that user can enter."""
        return subprocess.run([os.path.join(self.bindir, program), *args], cwd=self.dir,
                              user=self.user, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=self.startup_timeout + 30,
                              env=dict(os.environ, LC_ALL="C"))


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.close()
