"""Shared helpers for the test suites: prerequisites that skip locally and fail in CI.

A suite that needs Redis, Node.js, a browser or a driver package decorates its
TestCase with ``@requires(ok, "install X: apt-get install -y x")``.  Locally a
missing prerequisite skips the suite with that one-line reason; when CI sets
``SESSION_TESTS_STRICT=1`` the same suite fails instead, so a broken install
step can never hide behind a skip.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
import unittest
from typing import Callable, Optional

STRICT = os.environ.get("SESSION_TESTS_STRICT") == "1"


def has_module(name: str) -> bool:
    """True when ``import name`` would find the module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def has_program(name: str) -> bool:
    """True when an executable of that name is on PATH."""
    return shutil.which(name) is not None


def requires(ok: bool, reason: str):
    """Class or test decorator: run when ``ok``; else skip (locally) or fail (in CI)."""
    if ok:
        return lambda obj: obj
    if not STRICT:
        return unittest.skip(reason)

    def fail_instead(obj):
        if isinstance(obj, type):
            def setUpClass(cls):
                raise AssertionError(f"prerequisite missing (SESSION_TESTS_STRICT=1): {reason}")
            obj.setUpClass = classmethod(setUpClass)
            return obj

        def failing(*args, **kwargs):
            raise AssertionError(f"prerequisite missing (SESSION_TESTS_STRICT=1): {reason}")
        failing.__name__ = obj.__name__
        return failing
    return fail_instead


def exit_code_of_a_child(child: Callable[[], int], timeout: float = 10) -> Optional[int]:
    """Fork; the child runs ``child()``, whose result is its exit code (1 if it raises), and
    ends without running anything of the parent's (``os._exit``).  Returns the child's exit
    code, or None, the child killed, if it has not ended within ``timeout`` seconds."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServer:
    """What the suites' private servers (redis-server, PostgreSQL) share: a context manager
    that closes the server on the way out, even when starting fails, its log, and a repr.
    A subclass gives ``start()``, ``close()``, ``url``, ``running`` and ``log_path``."""

    log_path: str

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {'running' if self.running else 'stopped'}>"


class LostReply:
    """A TCP proxy to a server on 127.0.0.1 that loses one reply, as a network can: the first
    client message holding ``trigger`` reaches the server, which acts on it, and the
    connection is dropped as the reply comes back, unsent.  ``lost`` tells it happened.

        with LostReply(server.port, b"sid-1") as proxy:   # the client connects to proxy.port
    """

    def __init__(self, port: int, trigger: bytes) -> None:
        self.target, self.trigger, self.lost = port, trigger, False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list = []
        self._threads: list = []
        self._lock = threading.Lock()

    def __enter__(self) -> "LostReply":
        self._start(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        for sock in list(self._sockets):
            _shut(sock)
        for thread in self._threads:
            thread.join(5)
        for sock in self._sockets:
            sock.close()

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [client, server]
            armed = threading.Event()  # this connection sent the trigger
            self._start(self._pump, client, server, armed, True)
            self._start(self._pump, server, client, armed, False)

    def _pump(self, source, sink, armed, upward: bool) -> None:
        tail = b""
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                break
            if not data:
                break
            if upward and self.trigger in tail + data:
                armed.set()
            tail = (tail + data)[-len(self.trigger):]  # a trigger split over two reads
            if not upward and armed.is_set():
                with self._lock:
                    lose, self.lost = not self.lost, True
                if lose:
                    break  # the reply to the trigger: dropped with the connection
            try:
                sink.sendall(data)
            except OSError:
                break
        _shut(source)
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
