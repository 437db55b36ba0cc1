"""A private, throwaway redis-server for tests: free 127.0.0.1 port, no persistence.

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        server.stop()    # simulate an outage
        server.start()   # back on the same port, empty

Readiness is checked with a raw-socket PING, so this module needs only the
standard library and the ``redis-server`` program (``apt-get install -y redis-server``).
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref

from tests.support import PrivateServer, free_port, has_program

_running: "weakref.WeakSet[RedisServer]" = weakref.WeakSet()


def redis_server_available() -> bool:
    """True when the ``redis-server`` program is on PATH."""
    return has_program("redis-server")


class RedisServer(PrivateServer):
    """One redis-server process on 127.0.0.1:<port>; stopped on exit, on ``stop()`` and at interpreter exit."""

    def __init__(self, port: int | None = None, *, args: tuple = (),
                 startup_timeout: float = 10.0, program: str = "redis-server") -> None:
        self.port = port or free_port()
        self.program = program  # another build: tests/test_redis6.py runs a Redis 6
        self.args = tuple(args)  # extra redis-server options, e.g. ("--rename-command", "KEYS", "")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="redis-test-")
        self.log_path = f"{self._dir}/redis.log"

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "RedisServer":
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.running:
            return self
        if not has_program(self.program):
            raise RuntimeError(f"{self.program} not found: apt-get install -y redis-server")
        os.makedirs(self._dir, exist_ok=True)
        cmd = [
            self.program,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--logfile", self.log_path,
            *self.args,
        ]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _running.add(self)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self.ping():
                return self
            time.sleep(0.02)
        log = self.log()
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING:\n{log[-2000:]}")

    def stop(self) -> None:
        """Stop the server (data is lost: there is no persistence). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        _running.discard(self)

    def close(self) -> None:
        """Stop the server and remove its scratch directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ping(self) -> bool:
        """True when the server answers ``PING`` with ``+PONG``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.close()
