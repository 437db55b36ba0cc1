"""The app that tests/test_concurrency.py and bench/concurrency.py serve: requests on one
session that each change it in a known way, slowly, in threads or in several processes.

Served in this process with ``serve(app)`` (a thread per request), or in a server
process of its own, sharing a store with others::

    python -m tests.concurrency_app --store sqlite:/tmp/s.db [--gates DIR] [--whole-record]

which prints ``listening <port>`` once it accepts connections.

Routes (GET; SessionMiddleware with a one-hour cookie, so a changed session's
cookie is re-sent):

    /set?key=K&value=V             session[K] = V
    /incr?key=K                    session[K] = session.get(K, 0) + 1
    /append?key=K&sub=S&value=V    session[K][S].append(V)   (in place, one level down)
    /setin?key=K&sub=S&value=V     session[K][S] = V         (in place, one level down)
    /put?data=JSON                 session.update(JSON)
    /locked-incr?key=K             a counter that counts every request of this process:
                                   under a lock, reload(), increment, save()
    /login?user=U                  regenerate(), then session["user"] = U
    /logout                        destroy()
    /remember?days=N               "remember me": cookie.max_age = N days, session["remember"] = N
    /raw                           nothing changed: only the response below

Every route also takes ``ms=N`` (sleep N ms first, after the session was loaded:
a "database call") and ``gate=T`` (after the load, create ``T.started`` in the
gates directory, then wait until a file ``T`` appears there), so a test can
order two requests' saves exactly.  Every response is JSON:
``{"id": session ID, "session": the data, "t0": epoch seconds the app started,
"t1": when it returned}`` (``id`` and ``session`` are null after a logout).

The apps of the bench's other rows (Beaker, Express's app.js) have /set, /incr,
/logout and /raw with the same meaning.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any, Callable, Optional
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as python -m from elsewhere, or imported by bench/
    sys.path.insert(0, ROOT)

import session  # noqa: E402

SECRET = "concurrency secret"
MAX_AGE = 3600
GATE_TIMEOUT = 20.0  # seconds a gated request waits before failing with a 500


# ---------------------------------------------------------------- the app

def make_app(store: Any, gates: Optional[str] = None) -> Callable:
    """The routes above behind SessionMiddleware over ``store``; ``gates``: the gates directory."""
    lock = threading.Lock()

    def app(environ: dict, start_response: Callable) -> list:
        t0 = time.time()
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        sess = environ["session"]
        sid = sess.id  # the ID the request was loaded with (reading it changes nothing)
        if "gate" in query:
            _wait_at_gate(gates, query["gate"])
        if "ms" in query:
            time.sleep(int(query["ms"]) / 1000)
        path, key = environ["PATH_INFO"], query.get("key")
        if path == "/set":
            sess[key] = query["value"]
        elif path == "/incr":
            sess[key] = sess.get(key, 0) + 1
        elif path == "/append":
            sess[key][query["sub"]].append(query["value"])
        elif path == "/setin":
            sess[key][query["sub"]] = query["value"]
        elif path == "/put":
            sess.update(json.loads(query["data"]))
        elif path == "/locked-incr":
            with lock:
                sess.reload()
                sess[key] = sess.get(key, 0) + 1
                sess.save()
        elif path == "/login":
            sess.regenerate()
            sess["user"] = query["user"]
            sid = sess.id
        elif path == "/logout":
            sess.destroy()
            sid, sess = None, None
        elif path == "/remember":
            sess.cookie.max_age = int(query["days"]) * 86400
            sess["remember"] = int(query["days"])
        elif path != "/raw":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such route"]
        body = json.dumps({"id": sid, "session": None if sess is None else dict(sess),
                           "t0": t0, "t1": time.time()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return session.SessionMiddleware(app, secret=SECRET, store=store,
                                     cookie={"max_age": MAX_AGE})


def _wait_at_gate(gates: Optional[str], token: str) -> None:
    if gates is None:
        raise RuntimeError("gate= needs a gates directory")
    with open(os.path.join(gates, token + ".started"), "w"):
        pass
    deadline = time.monotonic() + GATE_TIMEOUT
    gate = os.path.join(gates, token)
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {token} was never opened")
        time.sleep(0.002)


# ---------------------------------------------------------------- stores

class WholeRecord:
    """``store`` seen as a third-party store with no merge(): get, set, touch and destroy
    only (not a session.Store), so the middleware writes the whole record with set() at
    the end of each request, as every session library does.  The bench's "before"."""

    def __init__(self, store: Any) -> None:
        self.inner = store

    def get(self, sid: str) -> Optional[dict]:
        return self.inner.get(sid)

    def set(self, sid: str, record: dict) -> None:
        self.inner.set(sid, record)

    def touch(self, sid: str, record: dict) -> None:
        self.inner.touch(sid, record)

    def destroy(self, sid: str) -> None:
        self.inner.destroy(sid)

    def all(self) -> dict:
        return self.inner.all()

    def clear(self) -> None:
        self.inner.clear()

    def close(self) -> None:
        self.inner.close()


class Serialized:
    """A mongomock collection behind one lock: mongomock is not thread-safe (a MongoDB
    server is), and one lock per call keeps each operation atomic, as on a server."""

    def __init__(self, collection: Any, lock: threading.Lock) -> None:
        self._collection, self._lock = collection, lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                result = attr(*args, **kwargs)
                return list(result) if name == "find" else result
        return locked


def mongomock_store(stringify: bool = True) -> session.Store:
    """A MongoStore on a mongomock client of its own (this process only)."""
    import mongomock
    from stores.mongo_store import MongoStore
    store = MongoStore(mongomock.MongoClient(), auto_remove="disabled", stringify=stringify)
    store.collection = Serialized(store.collection, threading.Lock())
    return store


def open_store(spec: str) -> session.Store:
    """A store from ``kind:where``: ``sqlite:PATH``, ``shelve:PATH``, ``redis:URL``,
    ``postgres:URL`` (table created if missing), ``memory`` or ``mongomock``."""
    kind, _, where = spec.partition(":")
    if kind == "memory":
        return session.MemoryStore()
    if kind == "mongomock":
        return mongomock_store()
    if kind == "sqlite":
        from stores.sqlite_store import SQLiteStore
        return SQLiteStore(where)
    if kind == "shelve":
        from stores.shelve_store import ShelveStore
        return ShelveStore(where)
    if kind == "redis":
        from stores.redis_store import RedisStore
        return RedisStore(url=where)
    if kind == "postgres":
        from stores.postgres_store import PostgresStore
        return PostgresStore(conninfo=where, create_table_if_missing=True)
    raise ValueError(f"unknown store {spec!r}")


# ---------------------------------------------------------------- serving

class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def get_stderr(self) -> io.StringIO:  # a 500's traceback: recorded by serve() instead
        return io.StringIO()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # 16 clients connect at once: with socketserver's default backlog of 5, the kernel drops
    # some SYNs and those clients retry a second later, after the others are done.
    request_queue_size = 128


def serve(app: Callable, port: int = 0) -> tuple:
    """Serve ``app`` on 127.0.0.1, a thread per request: (port, errors the app raised, stop)."""
    errors: list = []

    def recording(environ: dict, start_response: Callable) -> Any:
        try:
            return app(environ, start_response)
        except Exception as exc:  # recorded, then raised on to wsgiref's 500
            errors.append(exc)
            raise
    server = make_server("127.0.0.1", port, recording, server_class=_ThreadingServer,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return server.server_address[1], errors, stop


def listening_port(proc: subprocess.Popen) -> int:
    """The port a server process reports with ``listening <port>`` once it accepts
    connections (this module's main does, after any warnings it logs); RuntimeError with
    what it printed if it does not within 30 s."""
    port: list = []
    seen: list = []

    def read() -> None:
        for line in proc.stdout:  # a thread, since a buffered pipe and select() do not mix
            if line.startswith(b"listening"):
                port.append(int(line.split()[1]))
                return
            seen.append(line)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    if not port:
        proc.kill()
        raise RuntimeError(f"server did not start: {b''.join(seen).decode(errors='replace')[-2000:]}")
    return port[0]


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="serve the concurrency app in this process")
    parser.add_argument("--store", required=True, help="kind:where, see open_store()")
    parser.add_argument("--gates", help="the gates directory")
    parser.add_argument("--whole-record", action="store_true",
                        help="write with set() only (the store seen without its merge)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    store = open_store(args.store)
    port, errors, stop = serve(make_app(WholeRecord(store) if args.whole_record else store,
                                        args.gates), args.port)
    print(f"listening {port}", flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        stop()
        store.close()
        for exc in errors:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
