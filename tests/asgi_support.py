"""Helpers for the ASGI suites: an in-process ASGI caller with a cookie jar, and uvicorn on a port.

``call_asgi`` plays a strict server for one request (standard library only): it checks every
message the app sends, records them, and answers ``receive`` as a server does (the request body,
then ``http.disconnect`` once the response is complete).  ``ASGIHarness`` mirrors tests.harness's
``Harness`` for ASGISessionMiddleware, so one scenario can run through either adapter.
``UvicornServer`` and ``Browser`` are for the suites that use a real server over real sockets.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import logging
import os
import re
import socket
import subprocess
import threading
import time
from typing import Any, Callable, Optional

import session
from tests.harness import MISSING, NAME, SECRET, RecordingStore, Response, SetCookie, cookie_value, make_record
from tests.support import free_port

__all__ = ["ASGIResponse", "call_asgi", "make_scope", "ASGIClient", "ASGIHarness", "UvicornServer",
           "HypercornTrioServer", "HypercornServer", "CommandServer", "h2_request",
           "Browser", "simple_app", "run_with_counted_threads"]


class ASGIResponse(Response):
    """tests.harness's Response (headers as str pairs) plus the raw ASGI messages sent."""

    def __init__(self, status, headers, body, events, messages, raw_headers):
        super().__init__(status, headers, body, events)
        self.messages = messages          # every message the middleware passed on, in order
        self.raw_headers = raw_headers    # http.response.start's headers, as sent


def make_scope(path: str = "/", *, https: bool = False, headers=None, cookie: Optional[str] = None,
               root_path: str = "", kind: str = "http", extra: Optional[dict] = None) -> dict:
    """An ASGI scope; ``headers`` is a list of (name, value) str or bytes pairs, kept as given
    (names are not lowercased: a middleware must not rely on it)."""
    raw = [(k.encode("latin-1") if isinstance(k, str) else k, v.encode("latin-1") if isinstance(v, str) else v)
           for k, v in (headers or [])]
    if cookie is not None:
        raw.append((b"cookie", cookie.encode("latin-1")))
    scheme = ("https" if https else "http") if kind == "http" else ("wss" if https else "ws")
    scope = {"type": kind, "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "GET", "scheme": scheme, "path": path, "raw_path": path.encode(),
             "root_path": root_path, "query_string": b"", "headers": raw,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
    if kind == "websocket":
        del scope["method"]
        scope["subprotocols"] = []
    scope.update(extra or {})
    return scope


def run_with_counted_threads(work):
    """(``await work()``'s result, the names of the functions the event loop sent to its thread
    pool meanwhile), on a fresh loop."""
    calls = []

    class Counting(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            called = getattr(fn, "func", fn)
            if called.__name__ == "run":   # Context.run(function, *args): session._in_thread's
                called = fn.args[0]
            calls.append(getattr(called, "func", called).__name__)
            return super().submit(fn, *args, **kwargs)
    loop, pool = asyncio.new_event_loop(), Counting(1)
    loop.set_default_executor(pool)
    try:
        return loop.run_until_complete(work()), calls
    finally:
        loop.close()
        pool.shutdown()


def cancel_a_write_then_aclose(store: Any, sid: str, change: Any, after: float) -> Optional[str]:
    """On a fresh loop: ``store.amerge(sid, change)`` cancelled ``after`` seconds in (the
    client went away), then ``await store.aclose()``, as an app's lifespan shutdown does,
    before the loop ends (which would cancel the write itself); returns the record's text as
    stored when aclose() returned (uvicorn ends its process then, in its loop)."""
    async def app_then_shutdown() -> Optional[str]:
        request = asyncio.ensure_future(store.amerge(sid, change))
        await asyncio.sleep(after)
        request.cancel()
        try:
            await request
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the write ended before its request was cancelled")
        await store.aclose()
        return store.get_text(sid)
    return asyncio.run(app_then_shutdown())


def _check_header_list(headers: Any) -> list:
    assert isinstance(headers, (list, tuple)), f"headers must be a list or tuple: {headers!r}"
    out = []
    for pair in headers:
        name, value = pair
        assert isinstance(name, bytes) and isinstance(value, bytes), (name, value)
        assert not re.search(rb"[\x00-\x1f\x7f]", name + value), f"control character in {name!r}: {value!r}"
        out.append((name, value))
    return out


def call_asgi(app: Callable, scope: dict, *, body: bytes = b"", events: Optional[list] = None,
              receive_messages: Optional[list] = None) -> ASGIResponse:
    """Run one HTTP request through ``app`` as a server would; raise what the app raises."""
    return asyncio.run(acall_asgi(app, scope, body=body, events=events, receive_messages=receive_messages))


async def acall_asgi(app: Callable, scope: dict, *, body: bytes = b"", events: Optional[list] = None,
                     receive_messages: Optional[list] = None) -> ASGIResponse:
    """``call_asgi`` inside a running loop."""
    events = events if events is not None else []
    messages: list = []
    state = {"start": None, "complete": False}
    done = asyncio.Event()
    incoming = list(receive_messages) if receive_messages is not None else \
        [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        assert isinstance(message, dict), message
        kind = message["type"]
        messages.append(message)
        if kind == "http.response.start":
            assert state["start"] is None, "http.response.start sent twice"
            assert isinstance(message["status"], int), message
            state["start"] = message
            events.append(("start",))
            return
        assert kind != "http.response.early_hint" or state["start"] is None
        if kind == "http.response.early_hint":
            return
        assert state["start"] is not None, f"{kind} before http.response.start"
        assert not state["complete"], f"{kind} after the response was complete"
        if kind == "http.response.body":
            assert isinstance(message.get("body", b""), bytes), message
            more = message.get("more_body", False)
            events.append(("chunk", message.get("body", b""), more))
        elif kind in ("http.response.pathsend", "http.response.zerocopysend"):
            more = message.get("more_body", False) if kind.endswith("zerocopysend") else False
            events.append((kind.rsplit(".", 1)[1], more))
        else:
            raise AssertionError(f"unexpected message {message!r}")
        if not more:
            state["complete"] = True
            done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    start = state["start"]
    assert start is not None, "http.response.start never sent"
    raw = _check_header_list(start.get("headers", []))
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return ASGIResponse(start["status"], headers, payload, events, messages, raw)


class ASGIClient:
    """Calls an ASGI app in-process and keeps cookies like a browser (one path, one host)."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.jar: dict = {}

    def request(self, path: str = "/", *, https: bool = False, headers=None, cookie: Optional[str] = None,
                events: Optional[list] = None, **kw: Any) -> ASGIResponse:
        if cookie is None and self.jar:
            cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        header_list = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
        resp = call_asgi(self.app, make_scope(path, https=https, headers=header_list, cookie=cookie, **kw),
                         events=events)
        self.keep(resp)
        return resp

    def keep(self, resp: Response) -> None:
        for raw in resp.values("Set-Cookie"):
            sc = SetCookie(raw)
            if sc.clears:
                self.jar.pop(sc.name, None)
            else:
                self.jar[sc.name] = sc.value


def simple_app(action: Optional[Callable[[dict], Any]] = None, *, body=(b"ok",), app_headers=(),
               status: int = 200) -> Callable:
    """An ASGI app that runs ``action(scope)`` (awaited if it is a coroutine), then answers."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if action is not None:
            result = action(scope)
            if asyncio.iscoroutine(result):
                await result
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain")] + list(app_headers)})
        chunks = list(body)
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
        if not chunks:
            await send({"type": "http.response.body", "body": b""})
    return app


class ASGIHarness:
    """tests.harness's Harness for ASGISessionMiddleware: ``action(scope)`` runs in the app, the
    session is at ``scope["session"]``, and setting it to None detaches it, as in the environ."""

    def __init__(self, action=None, *, store=None, body=(b"ok",), app_headers=(), **options):
        self.action = action
        self.store = store if store is not None else RecordingStore()
        options.setdefault("secret", SECRET)
        if "environ_key" in options:
            options["scope_key"] = options.pop("environ_key")
        self.options = options
        self.key = options.get("scope_key", "session")
        self.seen: list = []

        def record(scope):
            self.seen.append(scope.get(self.key, MISSING))
            if self.action is not None:
                return self.action(scope)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in app_headers]
        self.mw = session.ASGISessionMiddleware(simple_app(record, body=body, app_headers=headers),
                                                store=self.store, **options)
        self.client = ASGIClient(self.mw)

    def request(self, **kw) -> ASGIResponse:
        return self.client.request(**kw)

    @property
    def first_secret(self):
        secret = self.options["secret"]
        return secret[0] if isinstance(secret, (list, tuple)) else secret

    def seed(self, data=None, *, sid=None, record=None, **record_kw) -> str:
        """Store a record as if an earlier request had saved it, and give the client its cookie."""
        sid = sid or "seed-" + str(time.monotonic_ns())
        self.store.set(sid, record if record is not None else make_record(data, **record_kw))
        if isinstance(self.store, RecordingStore):
            self.store.reset()
        self.client.jar[self.options.get("name", NAME)] = cookie_value(sid, self.first_secret)
        return sid


# ---------------------------------------------------------------- a real server

class UvicornServer:
    """An ASGI app served by uvicorn on 127.0.0.1:<free port>, in a thread of this process (so
    a test can share a store object with it); ``stop()`` ends it.  Needs ``pip install uvicorn``."""

    def __init__(self, app: Callable, **config: Any) -> None:
        import uvicorn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config.setdefault("log_level", "critical")
        config.setdefault("lifespan", "auto")
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **config))
        self._error: list = []
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start on port {self.port}: {self._error}")
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # reported by the constructor, which waits for this thread
            self._error.append(exc)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(10)


class HypercornTrioServer:
    """An ASGI app served by hypercorn's trio worker (``hypercorn -k trio``) on
    127.0.0.1:<free port>, in a thread of this process; ``stop()`` ends it.  Needs
    ``pip install hypercorn trio``.

    hypercorn 0.18's trio worker can stop altogether when a websocket closes from both ends
    at once (test_a_websocket_handshake_can_set_the_cookie: the app closes as the client
    does): its reply to the client's close frame (send_all) meets the send_eof() its
    TCPServer._close() does, unlocked, when the app's task ends, and trio's BusyResourceError
    ends the server.  It is hypercorn's alone: a bare Starlette app with no middleware stops
    the same way (about 1 in 100 such sockets here; none when _close takes the send lock).
    That is served again, as a supervisor would (``restarts`` counts it); any other failure
    is raised by ``stop()``."""

    def __init__(self, app: Callable) -> None:
        import trio
        from hypercorn.config import Config
        # A socket of our own, handed over: a port merely free a moment ago may be taken by
        # another process's server before hypercorn binds it, and our probe would reach that.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener = listener
        self.restarts = 0
        config = Config()
        config.accesslog = None
        quiet = logging.getLogger("tests.hypercorn")
        quiet.propagate, quiet.level = False, logging.CRITICAL
        config.errorlog = quiet  # an app's traceback (a test's /boom) is not the test's output
        self._ready = threading.Event()
        self._error: list = []
        self._thread = threading.Thread(target=self._run, args=(trio, app, config),
                                        name=f"hypercorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._listening():
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"hypercorn did not start on port {self.port}: {self._error}")
            time.sleep(0.02)

    def _run(self, trio: Any, app: Callable, config: Any) -> None:
        from hypercorn.trio import serve

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stopping = trio.Event()
            self._ready.set()
            while True:
                config.bind = [f"fd://{os.dup(self._listener.fileno())}"]  # hypercorn closes it
                try:
                    return await serve(app, config, shutdown_trigger=self._stopping.wait)
                except BaseException as exc:
                    if self._stopping.is_set() or not _all_of(exc, trio.BusyResourceError):
                        raise
                    self.restarts += 1
        try:
            trio.run(main)
        except BaseException as exc:  # reported by the constructor, which waits for this thread
            self._error.append(exc)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._ready.is_set() and self._thread.is_alive():
            import trio
            trio.from_thread.run_sync(self._stopping.set, trio_token=self._token)
        self._thread.join(10)
        self._listener.close()
        if self._error:  # it stopped on its own: the tests that followed could not reach it
            raise RuntimeError(f"hypercorn on port {self.port} failed: {self._error[0]!r}") \
                from self._error[0]


async def _new_event() -> asyncio.Event:
    """An asyncio.Event of the running loop (before Python 3.10 one binds the loop current
    where it is made, not the one that awaits it)."""
    return asyncio.Event()


class HypercornServer:
    """An ASGI app served by hypercorn's asyncio worker on 127.0.0.1:<port>, in a thread of this
    process; HTTP/1.1 and, on the same port, HTTP/2 with prior knowledge (h2c).  ``stop()``
    ends it.  Needs ``pip install hypercorn``."""

    def __init__(self, app: Callable) -> None:
        from hypercorn.config import Config
        listener = socket.socket()   # handed over, as HypercornTrioServer does
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener = listener
        config = Config()
        config.accesslog = None
        config.bind = [f"fd://{os.dup(listener.fileno())}"]
        quiet = logging.getLogger("tests.hypercorn")
        quiet.propagate, quiet.level = False, logging.CRITICAL
        config.errorlog = quiet
        self._loop = asyncio.new_event_loop()
        self._stopping = self._loop.run_until_complete(_new_event())  # of that loop (Python 3.9)
        self._error: list = []
        self._thread = threading.Thread(target=self._run, args=(app, config),
                                        name=f"hypercorn:{self.port}", daemon=True)
        self._thread.start()
        if not _wait_listening(self.port, lambda: self._thread.is_alive()):
            self.stop()
            raise RuntimeError(f"hypercorn did not start on port {self.port}: {self._error}")

    def _run(self, app: Callable, config: Any) -> None:
        from hypercorn.asyncio import serve
        try:
            self._loop.run_until_complete(serve(app, config, shutdown_trigger=self._stopping.wait))
        except BaseException as exc:  # reported by the constructor or by stop()
            self._error.append(exc)
        finally:
            self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        self._listener.close()


class CommandServer:
    """A server run as a command (``[sys.executable, "-m", "granian", ...]``, ``["uwsgi", ...]``)
    on 127.0.0.1:<free port>: ``argv`` holds "{port}" where the port goes; ``env`` is added to
    this process's environment.  ``stop()`` ends it; its output is kept for a failing test."""

    def __init__(self, argv: list, env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = _TempLog()
        self.proc = subprocess.Popen([a.format(port=self.port) for a in argv],
                                     cwd=cwd, env={**os.environ, **(env or {})},
                                     stdout=self.log.file, stderr=subprocess.STDOUT)
        if not _wait_listening(self.port, lambda: self.proc.poll() is None):
            log = self.log.text()
            self.stop()
            raise RuntimeError(f"{argv[0]} did not start on port {self.port}:\n{log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class _TempLog:
    def __init__(self) -> None:
        import tempfile
        self.file = tempfile.TemporaryFile()

    def text(self) -> str:
        self.file.seek(0)
        return self.file.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.file.close()


def _wait_listening(port: int, alive: Callable[[], bool], timeout: float = 20) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port`` before ``alive()`` turns
    false or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def h2_request(port: int, path: str, headers=(), method: str = "GET", timeout: float = 10,
               cancel: bool = False) -> dict:
    """One request over cleartext HTTP/2 with prior knowledge (h2c) to 127.0.0.1:``port``;
    ``headers`` are (bytes, bytes) pairs sent as given (several ``cookie`` ones, as browsers
    send over HTTP/2).  Returns status, headers, body, informational (the 1xx heads) and
    trailers.  ``cancel``: the client leaves at the first body bytes (RST_STREAM), keeping
    the connection open a moment.  Needs ``pip install h2``."""
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    out: dict = {"status": None, "headers": [], "body": b"", "informational": [], "trailers": []}
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(b":method", method.encode()), (b":path", path.encode()),
                                   (b":scheme", b"http"), (b":authority", b"127.0.0.1:%d" % port),
                                   *headers], end_stream=True)
        sock.sendall(conn.data_to_send())
        ended = False
        while not ended:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"the server closed the connection: {out}")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.InformationalResponseReceived):
                    out["informational"].append(event.headers)
                elif isinstance(event, h2.events.ResponseReceived):
                    out["headers"] = event.headers
                    out["status"] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    out["body"] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                    if cancel:
                        conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                        sock.sendall(conn.data_to_send())
                        time.sleep(0.2)   # the server learns it on an open connection
                        return out
                elif isinstance(event, h2.events.TrailersReceived):
                    out["trailers"] = event.headers
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionError(f"stream reset: {event.error_code!r}")
                if isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    return out


def _all_of(exc: BaseException, kind: type) -> bool:
    """Whether ``exc`` is a ``kind``, or a group of nothing else (trio raises groups)."""
    inner = getattr(exc, "exceptions", None)
    return isinstance(exc, kind) if inner is None else all(_all_of(e, kind) for e in inner)


class HTTPResponse(Response):
    """A real HTTP response, in tests.harness's Response shape (headers as they came)."""


class Browser:
    """An HTTP client over real sockets that keeps cookies like a browser (one host, path /)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.jar: dict = {}

    def request(self, path: str = "/", *, method: str = "GET", headers: Optional[dict] = None,
                cookie: Optional[str] = None, keep: bool = True) -> HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = dict(headers or {})
        if cookie is None and self.jar:
            cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        if cookie is not None:
            headers["Cookie"] = cookie
        try:
            conn.request(method, path, headers=headers)
            raw = conn.getresponse()
            body = raw.read()
            resp = HTTPResponse(raw.status, list(raw.getheaders()), body, [])
        finally:
            conn.close()
        if keep:
            for value in resp.values("Set-Cookie"):
                sc = SetCookie(value)
                if sc.clears:
                    self.jar.pop(sc.name, None)
                else:
                    self.jar[sc.name] = sc.value
        return resp

    def get(self, path: str = "/", **kw: Any) -> HTTPResponse:
        return self.request(path, **kw)

    @property
    def sid(self) -> Optional[str]:
        value = self.jar.get(NAME)
        return None if value is None else SetCookie(f"{NAME}={value}").sid

    def ws_headers(self) -> dict:
        """The Cookie header a browser would send with a websocket handshake to this host."""
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.jar.items())} if self.jar else {}
