"""Sessions as they are deployed: many users, two traffic mixes, one and two server processes,
MemoryStore, SQLite, Redis and PostgreSQL, beside a no-library floor and peer libraries, measured
with wrk.

    python bench/deployed.py                       # everything available; prints the time it will take
    python bench/deployed.py --quick               # a short smoke run of the same rows
    python bench/deployed.py --servers waitress --stores sqlite,memory --mixes writes --pin unpinned
    python bench/deployed.py --peers none --users 200 --rounds 5 --json results.json
    python bench/deployed.py --stores postgres --users 200 --rounds 3 --duration 2

The method, what every row and column means and the latest tables are in bench/README.md.
In short: each row is a server of its own on 127.0.0.1; before measuring, --users sessions are
created through the row's own app; wrk's Lua script then sends every request as one of those
users, in turn, either reading the session's counter (/read) or incrementing it (/incr).
Rounds of all the rows of one server run interleaved, and every row is compared with the bare
app of its own framework measured in the same round; ours also runs inside Flask and Django,
beside their peers, so that each peer is compared with ours on the same framework.

Server-side pieces, started by the harness (environment: BENCH_STORE, BENCH_SQLITE, BENCH_REDIS,
BENCH_POSTGRES, BENCH_STATS):
    python bench/deployed.py --serve KIND --port N          waitress, one process, 4 threads
    python -m gunicorn -w 2 -k gthread --threads 4 ... --pythonpath bench "deployed:gunicorn_app('KIND')"
    node tests/interop/app.js                                Express (SESSION_STORE=none, redis or pg)
Needs wrk, redis-server and postgresql (apt-get), node with `npm ci` in tests/interop for the Express
rows, and pip install waitress gunicorn redis "psycopg[binary]" beaker flask flask-session
flask-sqlalchemy sqlalchemy django.  The PostgreSQL rows share one private cluster (tests/postgres_server.py,
run as the `postgres` user when we are root), a database per row.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from urllib.parse import quote, unquote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INTEROP = os.path.join(ROOT, "tests", "interop")
SECRET = "bench secret"
TTL = 86400                       # seconds a session lives in every store, ours, floor and peers
STATS_SIGNAL = signal.SIGRTMIN + 2 if hasattr(signal, "SIGRTMIN") else None  # "write your counters now"


# ================================================================ the apps (server processes)

def _json(start_response, views: int) -> list:
    body = json.dumps({"views": views}).encode()
    start_response("200 OK", [("Content-Type", "application/json; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _visit(sess, path: str) -> int:
    """What every session app does: /incr adds one view to the session, anything else only reads it."""
    if path == "/incr":
        sess["views"] = views = sess.get("views", 0) + 1
        return views
    return sess.get("views", 0)


def _session_app(key: str = "session"):
    def app(environ, start_response):
        return _json(start_response, _visit(environ[key], environ.get("PATH_INFO", "")))
    return app


def wsgi_bare(store: str):
    """The WSGI apps' baseline: the same routes, a counter in a global, no session."""
    counter, last = itertools.count(1), [0]

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/incr":
            last[0] = next(counter)
        return _json(start_response, last[0])
    return app


def ours(store: str):
    return _with_ours(_session_app(), store)


def _with_ours(app, store: str):
    """``app`` behind our middleware on the store, default options."""
    import session
    return session.SessionMiddleware(app, secret=SECRET, store=_our_store(store))


def _our_store(store: str):
    import session
    if store == "memory":
        return _counted_memory_store(session.MemoryStore(ttl=TTL))
    if store == "sqlite":
        from stores import SQLiteStore
        return SQLiteStore(os.environ["BENCH_SQLITE"], ttl=TTL)
    if store == "postgres":
        from stores.postgres_store import PostgresStore
        return PostgresStore(conninfo=os.environ["BENCH_POSTGRES"], ttl=TTL,
                             create_table_if_missing=bool(os.environ.get("BENCH_PREPARE")))
    from stores import RedisStore
    return RedisStore(url=os.environ["BENCH_REDIS"], ttl=TTL)


def floor(store: str):
    """The least a correct server-side session costs on this store's driver, hand-written: find the
    cookie, unsign it (a verified value is remembered, as any library may), one read, one write
    when the data's JSON changed, sign a new ID.  No expiry rules, no touch, no options."""
    import session
    app, driver = _session_app(), _FLOOR_DRIVERS[store]()
    verified: dict = {}
    name = "connect.sid="

    def middleware(environ, start_response):
        header = environ.get("HTTP_COOKIE") or ""
        at = header.find(name)
        while at > 0 and header[at - 1] not in " ;":
            at = header.find(name, at + 1)
        sid = None
        if at >= 0:
            raw = header[at + len(name):].split(";", 1)[0]
            sid = verified.get(raw)
            if sid is None:
                value = unquote(raw)
                sid = session.unsign(value[2:], SECRET) if value.startswith("s:") else None
                if sid is not None:
                    if len(verified) > 100_000:
                        verified.clear()
                    verified[raw] = sid
        text = driver.get(sid) if sid is not None else None
        data = environ["session"] = json.loads(text) if text else {}
        if sid is None:
            sid = secrets.token_urlsafe(24)
            start_response = _with_cookie(start_response, sid, data)
        body = app(environ, start_response)
        if data or text:
            new = json.dumps(data, separators=(",", ":"))
            if new != text:
                driver.set(sid, new)
        return body
    return middleware


def _with_cookie(start_response, sid: str, data: dict):
    """start_response for a new visitor: the floor's cookie is sent once the session holds something."""
    import session

    def reply(status, headers, exc_info=None):
        if data:
            cookie = quote("s:" + session.sign(sid, SECRET), safe="")
            headers = headers + [("Set-Cookie", f"connect.sid={cookie}; Path=/; HttpOnly")]
        return start_response(status, headers, exc_info)
    return reply


class _FloorMemory:
    """A dict of JSON strings (dict operations are atomic under the GIL)."""

    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, sid: str):
        return self.data.get(sid)

    def set(self, sid: str, text: str) -> None:
        next(_MEMORY_COUNTS["set"])
        self.data[sid] = text


class _FloorSQLite:
    """One sqlite3 connection per thread, WAL and synchronous=NORMAL as SQLiteStore, its table
    without the expires index (only pruning needs it), autocommit."""

    def __init__(self) -> None:
        self.path, self.local = os.environ["BENCH_SQLITE"], threading.local()
        self._cursor().execute("CREATE TABLE IF NOT EXISTS floor (sid TEXT PRIMARY KEY NOT NULL, "
                               "expires REAL NOT NULL, data TEXT NOT NULL) WITHOUT ROWID")

    def _cursor(self):
        import sqlite3
        cur = getattr(self.local, "cur", None)
        if cur is None:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            cur = self.local.cur = conn.cursor()
        return cur

    def get(self, sid: str):
        row = self._cursor().execute("SELECT data FROM floor WHERE sid = ? AND expires > ?",
                                     (sid, time.time())).fetchone()
        return row[0] if row else None

    def set(self, sid: str, text: str) -> None:
        self._cursor().execute("INSERT INTO floor (sid, expires, data) VALUES (?, ?, ?) ON CONFLICT (sid) "
                               "DO UPDATE SET expires = excluded.expires, data = excluded.data",
                               (sid, time.time() + TTL, text))


class _FloorRedis:
    """redis-py: GET, and SET ... EX on a change."""

    def __init__(self) -> None:
        import redis
        self.client = redis.Redis.from_url(os.environ["BENCH_REDIS"])

    def get(self, sid: str):
        raw = self.client.get("floor:" + sid)
        return raw.decode() if raw is not None else None

    def set(self, sid: str, text: str) -> None:
        self.client.set("floor:" + sid, text, ex=TTL)


class _FloorPostgres:
    """psycopg 3, one autocommit connection per thread, connect-pg-simple's table shape (the one
    PostgresStore and the Express peer use): a SELECT of the live row, and one upsert on a change."""

    def __init__(self) -> None:
        self.url, self.local = os.environ["BENCH_POSTGRES"], threading.local()
        self._cursor().execute("CREATE TABLE IF NOT EXISTS floor (sid varchar PRIMARY KEY, sess json NOT NULL, "
                               "expire timestamp(6) NOT NULL)")
        self._cursor().execute('CREATE INDEX IF NOT EXISTS "IDX_floor_expire" ON floor (expire)')

    def _cursor(self):
        cur = getattr(self.local, "cur", None)
        if cur is None:
            import psycopg
            cur = self.local.cur = psycopg.connect(self.url, autocommit=True).cursor()
        return cur

    def get(self, sid: str):
        row = self._cursor().execute("SELECT sess::text FROM floor WHERE sid = %s AND expire >= to_timestamp(%s)",
                                     (sid, time.time())).fetchone()
        return row[0] if row else None

    def set(self, sid: str, text: str) -> None:
        self._cursor().execute("INSERT INTO floor (sid, sess, expire) VALUES (%s, %s, to_timestamp(%s)) "
                               "ON CONFLICT (sid) DO UPDATE SET sess = excluded.sess, expire = excluded.expire",
                               (sid, text, time.time() + TTL))


_FLOOR_DRIVERS = {"memory": _FloorMemory, "sqlite": _FloorSQLite, "redis": _FloorRedis, "postgres": _FloorPostgres}


def beaker(store: str):
    from beaker.middleware import SessionMiddleware

    def app(environ, start_response):
        sess, path = environ["beaker.session"], environ.get("PATH_INFO", "")
        views = _visit(sess, path)
        if path == "/incr":
            sess.save()    # before start_response, where Beaker decides on its Set-Cookie
        return _json(start_response, views)
    options = {"session.key": "beaker.session.id", "session.secret": SECRET, "session.timeout": TTL}
    if store == "sqlite":
        _sqlalchemy_pragmas()
        options.update({"session.type": "ext:database", "session.url": "sqlite:///" + os.environ["BENCH_SQLITE"],
                        "session.lock_dir": os.environ["BENCH_SQLITE"] + ".locks"})
    else:
        options.update({"session.type": "ext:redis", "session.url": os.environ["BENCH_REDIS"]})
    return SessionMiddleware(app, options)


def _sqlalchemy_pragmas() -> None:
    """Every SQLAlchemy SQLite connection gets SQLiteStore's synchronous level (WAL is set in the file)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def pragmas(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA synchronous = NORMAL")


def _flask(sessions: str | None, store: str):
    """The Flask app: no session (None), Flask-Session's ("flask"), or ours around Flask ("ours")."""
    from flask import Flask, request, session
    app = Flask("bench")
    app.config["SECRET_KEY"] = SECRET
    counter, last = itertools.count(1), [0]
    if sessions == "flask":
        from flask_session import Session
        if store == "sqlite":
            from flask_sqlalchemy import SQLAlchemy
            _sqlalchemy_pragmas()
            app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.environ["BENCH_SQLITE"]
            app.config.update(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=SQLAlchemy(app))
        else:
            import redis
            app.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.Redis.from_url(os.environ["BENCH_REDIS"]))
        Session(app)

    def current():
        return request.environ["session"] if sessions == "ours" else session

    @app.get("/read")
    def read():
        return {"views": current().get("views", 0) if sessions else last[0]}

    @app.get("/incr")
    def incr():
        if sessions:
            return {"views": _visit(current(), "/incr")}
        last[0] = next(counter)
        return {"views": last[0]}
    if sessions == "ours":
        app.wsgi_app = _with_ours(app.wsgi_app, store)
    return app


def flask_bare(store: str):
    return _flask(None, store)


def flask_session(store: str):
    return _flask("flask", store)


def flask_ours(store: str):
    return _flask("ours", store)


def _django(sessions: str | None, store: str):
    """The Django app: no session (None), Django's ("django"), or ours around Django ("ours")."""
    import types
    from django.conf import settings
    counter, last = itertools.count(1), [0]
    options: dict = dict(DEBUG=False, SECRET_KEY=SECRET, ALLOWED_HOSTS=["*"], USE_TZ=True,
                         ROOT_URLCONF="bench_django_urls", MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={},
                         LOGGING_CONFIG=None)
    if sessions == "django":
        options["MIDDLEWARE"] = ["django.contrib.sessions.middleware.SessionMiddleware"]
        options["SESSION_COOKIE_AGE"] = TTL
        if store == "sqlite":
            options["INSTALLED_APPS"] = ["django.contrib.sessions"]
            # Persistent connections (one per thread) and SQLiteStore's synchronous level.
            options["DATABASES"] = {"default": {
                "ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["BENCH_SQLITE"],
                "CONN_MAX_AGE": None, "OPTIONS": {"init_command": "PRAGMA synchronous = NORMAL"}}}
        else:
            options["SESSION_ENGINE"] = "django.contrib.sessions.backends.cache"
            options["CACHES"] = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                             "LOCATION": os.environ["BENCH_REDIS"]}}
    settings.configure(**options)
    from django.core.wsgi import get_wsgi_application
    from django.http import JsonResponse
    from django.urls import path

    def current(request):
        return request.META["session"] if sessions == "ours" else request.session

    def read(request):
        return JsonResponse({"views": current(request).get("views", 0) if sessions else last[0]})

    def incr(request):
        if sessions:
            return JsonResponse({"views": _visit(current(request), "/incr")})
        last[0] = next(counter)
        return JsonResponse({"views": last[0]})
    urls = types.ModuleType("bench_django_urls")
    urls.urlpatterns = [path("read", read), path("incr", incr)]
    sys.modules[urls.__name__] = urls
    app = get_wsgi_application()
    if sessions == "django" and store == "sqlite" and os.environ.get("BENCH_PREPARE"):
        from django.core.management import call_command
        call_command("migrate", "sessions", verbosity=0)
    if sessions == "ours":
        app = _with_ours(app, store)
    return app


def django_bare(store: str):
    return _django(None, store)


def django_session(store: str):
    return _django("django", store)


def django_ours(store: str):
    return _django("ours", store)


APPS = {"bare": wsgi_bare, "ours": ours, "floor": floor, "beaker": beaker,
        "flask-bare": flask_bare, "flask": flask_session, "flask-ours": flask_ours,
        "django-bare": django_bare, "django": django_session, "django-ours": django_ours}


# -- counting store writes inside a server process, without changing what is measured ------------

# MemoryStore's writes, by kind: next() on an itertools.count is atomic under the GIL.
_MEMORY_COUNTS = {"set": itertools.count(), "touch": itertools.count(), "destroy": itertools.count()}
_SQLITE_OPEN: list = []          # every sqlite3 connection this process opened and has not closed
_SQLITE_CLOSED = [0]             # total_changes of the ones closed
_SQLITE_LOCK = threading.Lock()


def _counted_memory_store(store):
    """Count a MemoryStore's writes by wrapping its methods on the instance, before the
    middleware is built (it takes the store's methods when it gets the store): a save is a
    merge() (or a set()), a touch a touch() that replaced the stored entry (one that would
    barely move the expiry is skipped); none of them calls another."""
    def counted(method, kind):
        count = _MEMORY_COUNTS[kind]

        def wrapper(*args, **kwargs):
            next(count)
            return method(*args, **kwargs)
        return wrapper

    def counted_touch(method):
        count, entries = _MEMORY_COUNTS["touch"], store._data

        def touch(sid, record):
            before = entries.get(sid)
            method(sid, record)
            if entries.get(sid) is not before:
                next(count)
        return touch
    for kind, names in (("set", ("merge", "set")), ("destroy", ("destroy",))):
        for name in names:
            setattr(store, name, counted(getattr(store, name), kind))
    store.touch = counted_touch(store.touch)
    return store


def _count_sqlite_changes() -> None:
    """Make every sqlite3 connection of this process countable: ``total_changes`` (rows inserted,
    updated or deleted) is read from them only when the harness asks, so it costs nothing per
    statement.  Patches sqlite3.connect and sqlite3.dbapi2.connect (Django and SQLAlchemy use the latter)."""
    import sqlite3
    import sqlite3.dbapi2
    real, classes = sqlite3.connect, {}

    def connect(*args, factory=sqlite3.Connection, **kwargs):
        cls = classes.get(factory)
        if cls is None:
            def close(self, _base=factory):
                with _SQLITE_LOCK:
                    if self in _SQLITE_OPEN:
                        _SQLITE_OPEN.remove(self)
                        _SQLITE_CLOSED[0] += self.total_changes
                _base.close(self)
            cls = classes[factory] = type("Counted" + factory.__name__, (factory,), {"close": close})
        conn = real(*args, factory=cls, **kwargs)
        with _SQLITE_LOCK:
            _SQLITE_OPEN.append(conn)
        return conn
    sqlite3.connect = sqlite3.dbapi2.connect = connect


def _counters() -> dict:
    import sqlite3
    changes = _SQLITE_CLOSED[0]
    with _SQLITE_LOCK:
        for conn in _SQLITE_OPEN:
            try:
                changes += conn.total_changes
            except sqlite3.ProgrammingError:   # closed without close() (its owner's finalizer)
                pass
    counts = {"sqlite rows": changes}
    for kind, count in _MEMORY_COUNTS.items():
        counts["memory " + kind] = int(repr(count)[6:-1])    # "count(5)"
    return counts


def _install_probe() -> None:
    """In a server process: count SQLite changes, and on STATS_SIGNAL write the counters to
    BENCH_STATS/<pid>.json (seq increases by one per signal).  Announces itself with <pid>.ready."""
    _count_sqlite_changes()
    folder = os.environ.get("BENCH_STATS")
    if not folder or STATS_SIGNAL is None:
        return
    seq = itertools.count(1)
    pid = os.getpid()

    def write(*_):
        path = os.path.join(folder, f"{pid}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(dict(_counters(), seq=next(seq)), f)
        os.replace(path + ".tmp", path)
    signal.signal(STATS_SIGNAL, write)
    open(os.path.join(folder, f"{pid}.ready"), "w").close()


def build_app(kind: str):
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    _install_probe()
    return APPS[kind](os.environ.get("BENCH_STORE", "memory"))


def gunicorn_app(kind: str):
    """gunicorn's app factory: ... --pythonpath bench "deployed:gunicorn_app('KIND')"."""
    return build_app(kind)


def serve(kind: str, port: int) -> None:
    """waitress, one process, 4 threads (python bench/deployed.py --serve KIND --port N)."""
    import logging
    import waitress
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)   # "Task queue depth" on every burst
    app = build_app(kind)
    waitress.serve(app, host="127.0.0.1", port=port, threads=4, _quiet=True)


def prepare(kind: str) -> None:
    """Create a row's tables before its server starts (two gunicorn workers would race to; SQLite
    or PostgreSQL), put its SQLite file in WAL mode (persistent), and check that the app counts:
    one request in-process."""
    from wsgiref.util import setup_testing_defaults
    os.environ["BENCH_PREPARE"] = "1"
    app = build_app(kind)
    environ: dict = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = "/incr"
    status = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    if not status or not status[0].startswith("200") or json.loads(body)["views"] != 1:
        sys.exit(f"prepare {kind}: unexpected answer {status} {body[:200]!r}")
    if os.environ.get("BENCH_STORE") == "sqlite":
        import sqlite3
        conn = sqlite3.connect(os.environ["BENCH_SQLITE"])
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.close()
        if mode != "wal":
            sys.exit(f"prepare {kind}: journal mode {mode}")


# ================================================================ the harness

# wrk walks the users' cookie file, each thread from a random start, sending /read with the
# mix's probability and /incr otherwise (http_load.py --users uses the same script).
from http_load import LUA_USERS as LUA, _cpu_seconds, _free_port, _stat, _wait_port  # noqa: E402  (stdlib only)

STORE_LABELS = {"memory": "MemoryStore", "sqlite": "SQLite", "redis": "Redis", "postgres": "PostgreSQL"}
STORE_SERVERS = {"redis": "redis-server", "postgres": "PostgreSQL"}
SERVER_TITLES = {"waitress": "waitress 3, one process, 4 threads",
                 "gunicorn": "gunicorn -w 2 -k gthread --threads 4 (two processes sharing the store)",
                 "node": "Node, Express 4, one process"}
FAMILIES = ("wsgi", "flask", "django", "express")
MIXES = {"writes": 0.0, "reads": 0.9}     # the share of requests that only read
REDIS_WRITES = {"set", "setex", "psetex", "setnx", "getset", "getex", "getdel", "expire", "pexpire",
                "expireat", "pexpireat", "persist", "del", "unlink", "mset", "msetnx", "incr", "incrby",
                "decr", "decrby", "append", "hset", "hsetnx", "hmset", "hdel", "eval", "evalsha", "rename"}
# Counted to be listed, not summed: Redis counts the commands a script runs themselves.
SCRIPT_CALLS = {"redis eval", "redis evalsha"}


def _writes_per_1k(run: dict) -> float:
    """A run's store writes per 1,000 requests (a script's call is not a write of its own)."""
    return sum(v for k, v in run["writes"].items() if k not in SCRIPT_CALLS) * 1000 / run["requests"]


class Row:
    """One server: a framework's bare app, or an app with a session on one store."""

    def __init__(self, label: str, family: str, role: str, server: str, store: str | None,
                 kind: str | None = None, cookie: str | None = None, db: int = 0) -> None:
        self.label, self.family, self.role, self.server, self.store = label, family, role, server, store
        self.kind, self.cookie_name, self.db = kind, cookie, db     # db: its Redis db or PostgreSQL database
        self.results: dict = {}          # (pinned, mix) -> list of per-run dicts
        self.proc: subprocess.Popen | None = None
        self.seqs: dict = {}             # pid -> last counters seq seen

    def start(self, workdir: str, backends: dict, cpus: set) -> None:
        self.dir = os.path.join(workdir, self.server, re.sub(r"[^a-z0-9]+", "-", self.label.lower()))
        self.stats = os.path.join(self.dir, "stats")
        os.makedirs(self.stats)
        self.port = _free_port()
        env = dict(os.environ, PORT=str(self.port), BENCH_STATS=self.stats, BENCH_STORE=self.store or "memory",
                   BENCH_SQLITE=os.path.join(self.dir, "sessions.db"))
        env.pop("NODE_ENV", None)
        if self.store in backends:
            env["BENCH_" + self.store.upper()] = backends[self.store].url_for(self)
        if self.server == "node":
            env.update(SESSION_STORE={"redis": "redis", "postgres": "pg"}.get(self.store, "none"),
                       SECRETS=json.dumps([SECRET]), REDIS_URL=env.get("BENCH_REDIS", ""),
                       DATABASE_URL=env.get("BENCH_POSTGRES", ""))
            cmd, cwd = ["node", "app.js"], INTEROP
        else:
            if self.store in ("sqlite", "postgres"):
                done = subprocess.run([sys.executable, os.path.abspath(__file__), "--prepare", self.kind],
                                      env=dict(env, BENCH_STATS=""), cwd=ROOT, capture_output=True, text=True)
                if done.returncode:
                    raise RuntimeError(f"{self.label}: prepare failed\n{done.stdout}{done.stderr}")
            cwd = ROOT
            if self.server == "waitress":
                cmd = [sys.executable, os.path.abspath(__file__), "--serve", self.kind, "--port", str(self.port)]
            else:
                cmd = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "2",
                       "--threads", "4", "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
                       "--graceful-timeout", "3", "--timeout", "120", "--pythonpath", HERE,
                       f"deployed:gunicorn_app({self.kind!r})"]
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        with open(self.log.name, "rb") as log:
            _wait_port(self.port, self.proc, log, timeout=60)
        if self.server != "node":      # every Python process serving has announced itself
            want, deadline = 2 if self.server == "gunicorn" else 1, time.monotonic() + 30
            while len(self._workers()) < want:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label}: {len(self._workers())} of {want} workers ready")
                time.sleep(0.05)

    def _workers(self) -> list:
        return [int(name[:-6]) for name in os.listdir(self.stats) if name.endswith(".ready")]

    def counters(self) -> dict:
        """The summed write counters of the server's Python processes, fresh (signal, then read)."""
        totals: dict = {}
        if self.server == "node" or STATS_SIGNAL is None:
            return totals
        for pid in self._workers():
            want = self.seqs.get(pid, 0) + 1
            try:
                os.kill(pid, STATS_SIGNAL)
            except ProcessLookupError:
                raise RuntimeError(f"{self.label}: worker {pid} is gone (restarted?); counts would be wrong")
            path, deadline = os.path.join(self.stats, f"{pid}.json"), time.monotonic() + 10
            while True:
                try:
                    with open(path) as f:
                        got = json.load(f)
                    if got["seq"] >= want:
                        break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label}: worker {pid} did not report its counters")
                time.sleep(0.005)
            self.seqs[pid] = got.pop("seq")
            for key, value in got.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def request(self, path: str, cookie: str | None = None, conn=None) -> tuple:
        """GET path: (views, this row's session cookie as 'name=value' from Set-Cookie, or None)."""
        own = conn is None
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
                resp = conn.getresponse()
                body = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                conn = None
                if attempt == 2:
                    raise
        if own:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{self.label}: GET {path} answered {resp.status}: {body[:300]!r}")
        got = None
        for header in resp.msg.get_all("Set-Cookie") or ():
            pair = header.split(";", 1)[0].strip()
            if self.cookie_name and pair.startswith(self.cookie_name + "="):
                got = pair
        return json.loads(body)["views"], got, conn

    def make_users(self, users: int) -> None:
        """Create the users' sessions through the app itself (one /incr each) and write the
        cookie file wrk reads; bare rows get cookies of our shape, which their apps ignore."""
        cookies = []
        if self.role == "bare":
            cookies = [f"connect.sid=s%3A{secrets.token_urlsafe(24)}.{secrets.token_urlsafe(32)[:43]}"
                       for _ in range(users)]
        else:
            conn = None
            for _ in range(users):
                views, cookie, conn = self.request("/incr", None, conn)
                if views != 1 or cookie is None:
                    raise RuntimeError(f"{self.label}: a new visitor got views={views}, cookie={cookie}")
                cookies.append(cookie)
            conn.close()
            views, _, _ = self.request("/incr", cookies[0])
            if views != 2:
                raise RuntimeError(f"{self.label}: a returning visitor's session was not found (views={views})")
        self.cookies = cookies
        self.cookie_file = os.path.join(self.dir, "cookies.txt")
        with open(self.cookie_file, "w") as f:
            f.write("\n".join(cookies) + "\n")

    def check_sessions(self) -> None:
        """After a run: a few users' sessions are still there (a lost session would read 0)."""
        if self.role == "bare":
            return
        for cookie in (self.cookies[0], self.cookies[len(self.cookies) // 2], self.cookies[-1]):
            views, _, _ = self.request("/read", cookie)
            if views < 1:
                raise RuntimeError(f"{self.label}: a user's session was lost during the run")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self.log.close()


def _tree(pid: int) -> list:
    """pid and its children (gunicorn's master and workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def _set_affinity(pid: int, cpus: set) -> None:
    """Move every thread of a process tree to cpus (threads started later inherit it)."""
    for p in _tree(pid):
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                try:
                    os.sched_setaffinity(int(tid), cpus)
                except OSError:
                    pass
        except OSError:
            pass


class Redis:
    """The private redis-server every Redis row uses (a db number each), and its command counts."""

    def __init__(self) -> None:
        import redis
        sys.path.insert(0, ROOT)
        from tests.redis_server import RedisServer
        self.server = RedisServer().start()
        self.url = self.server.url
        self.client = redis.Redis.from_url(self.url)
        self.pid = self.server._proc.pid

    def url_for(self, row: Row) -> str:
        return f"{self.url.rsplit('/', 1)[0]}/{row.db}"

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.pid)

    def counters(self, row: Row) -> dict:
        """Write commands so far, by name: the whole server's, since one row runs at a time.
        (Commands a script runs are counted too, beside its EVALSHA.)"""
        return {"redis " + name[8:]: stats["calls"] for name, stats in self.client.info("commandstats").items()
                if name[8:] in REDIS_WRITES}

    def close(self) -> None:
        self.client.close()
        self.server.close()


class Postgres:
    """The private PostgreSQL cluster every PostgreSQL row uses (a database each), and its counts.

    Writes are counted by pg_stat_statements: rows each INSERT, UPDATE or DELETE changed, per
    database, kept in shared memory as each statement ends.  (pg_stat_user_tables' n_tup_* would
    do, but an idle backend flushes its last second of counts up to 10 s later.)  Durability as
    SQLiteStore's synchronous=NORMAL: fsync on, but a commit does not wait for its WAL flush."""

    SETTINGS = {"shared_preload_libraries": "pg_stat_statements", "fsync": "on", "full_page_writes": "on",
                "synchronous_commit": "off"}

    def __init__(self) -> None:
        import psycopg
        sys.path.insert(0, ROOT)
        from tests.postgres_server import PostgresServer
        self.server = PostgresServer(settings=self.SETTINGS).start()
        self.conn = psycopg.connect(self.server.url, autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        with open(os.path.join(self.server.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    @staticmethod
    def database(row: Row) -> str:
        """The row's database: its server's name in it, so each section's rows have their own."""
        return f"bench_{row.server}_{row.db}"

    def url_for(self, row: Row) -> str:
        """Create the row's database; its URL."""
        self.conn.execute(f"CREATE DATABASE {self.database(row)}")
        return f"{self.server.url.rsplit('/', 1)[0]}/{self.database(row)}"

    def cpu_seconds(self) -> float:
        """The postmaster's and its live children's (one backend per connection), plus the
        children it has reaped: a connection closed during a run keeps its CPU counted."""
        fields = _stat(self.pid)
        return _cpu_seconds(self.pid) + (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def counters(self, row: Row) -> dict:
        """Rows written so far in the row's database, by kind of statement (an UPDATE setting only
        ``expire`` is a touch; INSERT ... ON CONFLICT an upsert), and all statements ("calls")."""
        counts: dict = {"calls": 0}
        for query, calls, rows in self.conn.execute(
                "SELECT query, calls, rows FROM pg_stat_statements JOIN pg_database d ON d.oid = dbid "
                "WHERE d.datname = %s", (self.database(row),)):
            counts["calls"] += calls
            verb = query.split(None, 1)[0].lower() if query.strip() else ""
            if verb == "update" and not re.search(r"\bset\s+\"?sess\"?\s*=", query, re.I):
                verb = "touch"
            elif verb == "insert" and re.search(r"\bon\s+conflict\b", query, re.I):
                verb = "upsert"
            if verb in ("insert", "upsert", "update", "touch", "delete"):
                counts["pg " + verb] = counts.get("pg " + verb, 0) + rows
        return counts

    def close(self) -> None:
        self.conn.close()
        self.server.close()


def _latency_ms(out: str, percent: str) -> float | None:
    found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    if not found:
        return None
    return float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[found.group(2)]


def run_wrk(row: Row, mix: str, args, duration: float, wrk_cpus: set, backends: dict) -> dict:
    """One wrk run against a row: req/s, latency, server-side CPU (with its store server's) and
    store writes per request."""
    backend = backends.get(row.store)
    counters_before = row.counters()
    store_before = backend.counters(row) if backend else {}
    store_cpu_before = backend.cpu_seconds() if backend else 0.0
    cpu_before = _cpu_seconds(row.proc.pid)
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration:g}s",
           "--timeout", "5s", "--latency", "-s", args.script, f"http://127.0.0.1:{row.port}/",
           "--", row.cookie_file, str(MIXES[mix])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                          preexec_fn=lambda: os.sched_setaffinity(0, wrk_cpus))
    out = proc.stdout
    store_cpu = (backend.cpu_seconds() - store_cpu_before) if backend else 0.0
    cpu = _cpu_seconds(row.proc.pid) - cpu_before + store_cpu
    store_after = backend.counters(row) if backend else {}
    counters_after = row.counters()
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if bad or not rate or not count:
        raise RuntimeError(f"{row.label}: wrk failed or the server answered errors\n{out}{proc.stderr}")
    requests = max(int(count.group(1)), 1)
    writes = {key: counters_after.get(key, 0) - counters_before.get(key, 0) for key in counters_after}
    writes.update((key, value - store_before.get(key, 0)) for key, value in store_after.items())
    calls = writes.pop("calls", None)
    writes = {key: value for key, value in writes.items() if value}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    row.check_sessions()
    return {"rate": float(rate.group(1)), "requests": requests, "cpu": cpu / requests,
            "store_cpu": store_cpu / requests, "store_calls": None if calls is None else calls / requests,
            "p50": _latency_ms(out, "50"), "p99": _latency_ms(out, "99"),
            "writes": writes,
            "errors": sum(map(int, errors.groups())) if errors else 0}


def _rows(server: str, stores: list, peers: set, available: dict) -> list:
    """The rows of one server section: each framework's bare app, then per store floor, ours, peers."""
    rows: list = []
    if server == "node":
        if "express" in peers:
            rows = [Row(f"express-session + {peer}", "express", "peer", "node", store, cookie="connect.sid",
                        db=1)
                    for store, peer in (("redis", "connect-redis"), ("postgres", "connect-pg-simple"))
                    if store in stores]
        return [Row("Express bare", "express", "bare", "node", None)] + rows if rows else []
    rows.append(Row("WSGI bare", "wsgi", "bare", server, None, "bare"))
    for store in stores:
        if store == "memory" and server != "waitress":
            continue
        db = itertools.count(1)   # the store's rows' Redis database or PostgreSQL database (Redis has 16)
        rows.append(Row(f"floor, {STORE_LABELS[store]}", "wsgi", "floor", server, store, "floor",
                        "connect.sid", next(db)))
        name = {"memory": "MemoryStore", "sqlite": "SQLiteStore", "redis": "RedisStore",
                "postgres": "PostgresStore"}[store]
        rows.append(Row(f"SessionMiddleware + {name}", "wsgi", "ours", server, store, "ours",
                        "connect.sid", next(db)))
        if store in ("memory", "postgres"):    # PostgreSQL's peer: express-session + connect-pg-simple
            continue
        if "beaker" in peers and available["beaker"]:
            label = "Beaker ext:database (SQLite)" if store == "sqlite" else "Beaker ext:redis"
            rows.append(Row(label, "wsgi", "peer", server, store, "beaker", "beaker.session.id", next(db)))
        # Flask's and Django's peers run on their framework's app, which costs more than a WSGI function;
        # ours runs on the same app beside each, so that every peer is also compared like for like.
        if "flask" in peers and available["flask"]:
            label = "Flask-Session sqlalchemy (SQLite)" if store == "sqlite" else "Flask-Session redis"
            rows.append(Row(label, "flask", "peer", server, store, "flask", "session", next(db)))
            rows.append(Row(f"SessionMiddleware + {name}, in Flask", "flask", "ours", server, store, "flask-ours",
                            "connect.sid", next(db)))
        if "django" in peers and available["django"]:
            label = "Django db (SQLite)" if store == "sqlite" else "Django cache (Redis)"
            rows.append(Row(label, "django", "peer", server, store, "django", "sessionid", next(db)))
            rows.append(Row(f"SessionMiddleware + {name}, in Django", "django", "ours", server, store,
                            "django-ours", "connect.sid", next(db)))
    families = {row.family for row in rows}
    bares = [Row("Flask bare", "flask", "bare", server, None, "flask-bare"),
             Row("Django bare", "django", "bare", server, None, "django-bare")]
    return rows + [row for row in bares if row.family in families]


def _available() -> dict:
    import importlib.util
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests.postgres_server import postgres_server_available

    def has(*modules):
        return all(importlib.util.find_spec(m) is not None for m in modules)
    return {"waitress": has("waitress"), "gunicorn": has("gunicorn"), "redis": has("redis") and bool(
                shutil.which("redis-server")),
            "postgres": has("psycopg") and postgres_server_available(),
            "beaker": has("beaker", "sqlalchemy"), "flask": has("flask", "flask_session", "flask_sqlalchemy"),
            "django": has("django"),
            "express": bool(shutil.which("node")) and all(
                os.path.isdir(os.path.join(INTEROP, "node_modules", m)) for m in ("connect-redis", "connect-pg-simple"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="waitress,gunicorn", help="waitress,gunicorn (default both)")
    parser.add_argument("--stores", default="memory,sqlite,redis,postgres",
                        help="memory,sqlite,redis,postgres (default all; MemoryStore only under waitress)")
    parser.add_argument("--mixes", default="writes,reads",
                        help="writes (every request increments), reads (90%% only read); default both")
    parser.add_argument("--peers", default="beaker,flask,django,express",
                        help="beaker,flask,django,express or none (default all that are installed)")
    parser.add_argument("--pin", choices=("both", "pinned", "unpinned"), default="both",
                        help="pinned: servers, redis-server and PostgreSQL on one CPU, wrk on the other; "
                             "unpinned: the OS "
                             "schedules all (default both)")
    parser.add_argument("--users", type=int, default=1000, help="distinct sessions, rotated (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per condition (default 3)")
    parser.add_argument("--duration", type=int, default=3, help="whole seconds per wrk run (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, 100 users")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--from-json", metavar="FILE", help="print the tables of a run saved with --json, and stop")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port)
    if args.prepare:
        return prepare(args.prepare)
    if args.from_json:
        return report_saved(args.from_json)
    if args.quick:
        args.rounds, args.duration, args.users = 1, 1, 100

    def listed(text, choices, what):
        names = [] if text == "none" else [n.strip() for n in text.split(",") if n.strip()]
        wrong = set(names) - set(choices)
        if wrong:
            parser.error(f"unknown {what}: {', '.join(sorted(wrong))} (choose from {', '.join(choices)})")
        return [c for c in choices if c in names]
    servers = listed(args.servers, ("waitress", "gunicorn"), "server")
    stores = listed(args.stores, ("memory", "sqlite", "redis", "postgres"), "store")
    mixes = listed(args.mixes, ("writes", "reads"), "mix")
    peers = set(listed(args.peers, ("beaker", "flask", "django", "express"), "peer"))
    if not shutil.which("wrk"):
        sys.exit("missing: wrk (apt-get install -y wrk)")
    available = _available()
    for name in servers:
        if not available[name]:
            print(f"{name} rows skipped: pip install {name}", file=sys.stderr)
    servers = [s for s in servers if available[s]]
    if "redis" in stores and not available["redis"]:
        print("Redis rows skipped: needs redis-server (apt-get) and pip install redis", file=sys.stderr)
        stores.remove("redis")
    if "postgres" in stores and not available["postgres"]:
        print('PostgreSQL rows skipped: needs postgresql (apt-get; initdb and pg_ctl, and a postgres user when '
              'run as root) and pip install "psycopg[binary]"', file=sys.stderr)
        stores.remove("postgres")
    for peer, need in (("beaker", "pip install beaker sqlalchemy"),
                       ("flask", "pip install flask flask-session flask-sqlalchemy"),
                       ("django", "pip install django"), ("express", "node and `cd tests/interop && npm ci`")):
        if peer in peers and not available[peer]:
            print(f"{peer} rows skipped: {need}", file=sys.stderr)
            peers.discard(peer)
    cpus = sorted(os.sched_getaffinity(0))
    pins = {"both": [True, False], "pinned": [True], "unpinned": [False]}[args.pin]
    if len(cpus) < 2 and True in pins:
        print("pinned rows skipped: fewer than 2 CPUs", file=sys.stderr)
        pins = [False]
    conditions = [(pinned, mix) for pinned in pins for mix in mixes]
    sections = [(server, _rows(server, stores, peers, available)) for server in servers + ["node"]]
    sections = [(server, rows) for server, rows in sections if any(row.role != "bare" for row in rows)]
    if not sections or not conditions:
        sys.exit("nothing to measure")
    runs = sum(len(rows) for _, rows in sections) * len(conditions) * args.rounds
    estimate = runs * (args.duration + 0.25) + sum(len(r) for _, r in sections) * (args.users * 0.002 + 2)
    print(f"{runs} wrk runs of {args.duration:g} s; about {estimate / 60:.0f} min", file=sys.stderr, flush=True)

    fd, args.script = tempfile.mkstemp(suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(LUA)
    workdir = tempfile.mkdtemp(prefix="bench-deployed-")
    backends: dict = {}
    started, failed = time.monotonic(), []
    try:
        for store, backend in (("redis", Redis), ("postgres", Postgres)):
            if store in stores:
                backends[store] = backend()
        for server, rows in sections:
            try:
                measure(rows, conditions, args, workdir, backends, cpus)
            except Exception:   # report what the other sections measured
                traceback.print_exc()
                failed.append(server)
            print(f"  {server}: done ({(time.monotonic() - started) / 60:.1f} min)", file=sys.stderr, flush=True)
    finally:
        for backend in backends.values():
            backend.close()
        os.unlink(args.script)
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    report(sections, conditions, args, elapsed)
    if failed:
        print(f"\nINCOMPLETE: {', '.join(failed)} stopped with an error (above, on stderr)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "script"}, "elapsed": elapsed,
                       "rows": [{"server": server, "label": row.label, "family": row.family, "role": row.role,
                                 "store": row.store,
                                 "runs": {f"{'pinned' if p else 'unpinned'} {m}": runs
                                          for (p, m), runs in row.results.items()}}
                                for server, rows in sections for row in rows]}, f, indent=1)


def measure(rows: list, conditions: list, args, workdir: str, backends: dict, cpus: list) -> None:
    """One server's rows: start them, create their users, warm up, then the interleaved rounds of
    every condition (each framework's rows run next to its bare app; the tables list them by store).
    backends: the store servers by store name (Redis, Postgres)."""
    if "redis" in backends:
        backends["redis"].client.flushall()
    order = sorted(rows, key=lambda row: FAMILIES.index(row.family))
    try:
        for row in rows:
            row.start(workdir, backends, set(cpus))
        for row in rows:
            row.make_users(args.users)
        for row in rows:                          # warm-up: imports, caches, Node's JIT
            run_wrk(row, conditions[0][1], args, 1, set(cpus), backends)
        for pinned, mix in conditions:
            server_cpus, wrk_cpus = ({cpus[0]}, {cpus[1]}) if pinned else (set(cpus), set(cpus))
            for pid in [row.proc.pid for row in rows] + [backend.pid for backend in backends.values()]:
                _set_affinity(pid, server_cpus)
            for round_no in range(args.rounds):
                for row in order if round_no % 2 == 0 else order[::-1]:
                    result = run_wrk(row, mix, args, args.duration, wrk_cpus, backends)
                    row.results.setdefault((pinned, mix), []).append(result)
            print(f"  {rows[0].server}, {'pinned' if pinned else 'unpinned'}, {mix}: measured",
                  file=sys.stderr, flush=True)
    finally:
        for row in rows:
            row.stop()
        for backend in backends.values():
            _set_affinity(backend.pid, set(cpus))


def report_saved(path: str) -> None:
    """The tables of a run saved with --json."""
    with open(path) as f:
        saved = json.load(f)
    sections: dict = {}
    keys: list = []
    for data in saved["rows"]:
        row = Row(data["label"], data["family"], data["role"], data["server"], data["store"])
        for key, runs in data["runs"].items():
            pinned, mix = key.split()
            row.results[(pinned == "pinned", mix)] = runs
            keys.append((pinned == "pinned", mix))
        sections.setdefault(data["server"], []).append(row)
    conditions = [c for c in ((True, "writes"), (True, "reads"), (False, "writes"), (False, "reads")) if c in keys]
    report(list(sections.items()), conditions, argparse.Namespace(**saved["args"]), saved["elapsed"])


def _spread(values: list, fmt: str = "{:.2f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def report(sections: list, conditions: list, args, elapsed: float) -> None:
    print(f"\nwrk -t{args.threads} -c{args.connections} --latency, {args.users} users rotated, "
          f"{args.rounds} interleaved round(s) of {args.duration:g} s per condition; took {elapsed / 60:.1f} min. "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs.")
    for server, rows in sections:
        serving = ["server"] + [name for store, name in STORE_SERVERS.items() if any(r.store == store for r in rows)]
        for pinned, mix in conditions:
            where = (f"{_listing(serving)} on CPU 0, wrk on CPU 1" if pinned
                     else f"unpinned: the OS schedules {_listing(serving + ['wrk'])}")
            what = "every request increments" if mix == "writes" else "90% of requests only read"
            print(f"\n#### {SERVER_TITLES[server]}: {mix} ({what}); {where}\n")
            print("| row | req/s | with / bare | p50 ms | p99 ms | CPU µs/req | over bare | writes / 1k req |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            bare = {row.family: row for row in rows if row.role == "bare"}
            for row in rows:
                runs = row.results.get((pinned, mix), [])
                if not runs:
                    continue
                base = bare.get(row.family)
                ratio = extra = ""
                if row is not base and base is not None and base.results.get((pinned, mix)):
                    pairs = list(zip(runs, base.results[(pinned, mix)]))
                    ratio = _spread([r["rate"] / b["rate"] for r, b in pairs])
                    extra = f"{statistics.median((r['cpu'] - b['cpu']) * 1e6 for r, b in pairs):.0f}"
                p50 = statistics.median(r["p50"] for r in runs if r["p50"] is not None)
                p99 = statistics.median(r["p99"] for r in runs if r["p99"] is not None)
                label = f"**{row.label}**" if row.role == "ours" else row.label
                errors = sum(r["errors"] for r in runs)
                label += f" ({errors} socket errors)" if errors else ""
                writes = "" if row.role == "bare" else f"{statistics.median(map(_writes_per_1k, runs)):.0f}"
                print(f"| {label} | {_spread([r['rate'] for r in runs], '{:,.0f}')} | {ratio} | {p50:.1f} | "
                      f"{p99:.1f} | {statistics.median(r['cpu'] for r in runs) * 1e6:.0f} | {extra} | {writes} |")
    print("\nreq/s: median of the rounds (range). with / bare: median of the per-round ratios against the same\n"
          "framework's bare app on the same server (range). p50/p99: medians of wrk's per-run percentiles.\n"
          "CPU: the server's processes plus, for Redis rows, redis-server's and, for PostgreSQL rows, the cluster's\n"
          "processes', per request; over bare: the median of the per-round differences from the bare app's (what\n"
          "the session costs, comparable across frameworks).  writes: store writes per 1,000 requests, touches\n"
          "included (Redis write commands; PostgreSQL rows inserted, updated or deleted; SQLite rows changed;\n"
          "MemoryStore saves, and touches it did not skip); a Redis script's own call (EVALSHA) is not one,\n"
          "the writes it runs are.")
    print("\nTargets (medians of this run; each ratio is with / bare on the same server):")
    for server, rows in sections:
        for pinned, mix in conditions:
            lines = _targets(rows, (pinned, mix))
            if lines:
                print(f"  {server}, {'pinned' if pinned else 'unpinned'}, {mix}:")
                for line in lines:
                    print(f"      {line}")
    print("\nStore writes per 1,000 requests by kind, and the store server's CPU (and PostgreSQL's statements)\n"
          "per request (median runs):")
    for server, rows in sections:
        for row in rows:
            if row.role == "bare":
                continue
            parts = []
            for pinned, mix in conditions:
                runs = row.results.get((pinned, mix), [])
                if not runs or (not pinned and (True, mix) in conditions):
                    continue                       # one line per mix: the pinned runs where there are some
                run = sorted(runs, key=_writes_per_1k)[len(runs) // 2]
                kinds = ", ".join(f"{k} {v * 1000 / run['requests']:.0f}" for k, v in sorted(run["writes"].items()))
                parts.append(f"{mix}: {kinds or 'none'}")
                if row.store in STORE_SERVERS:
                    cpu = statistics.median(r.get("store_cpu", r.get("redis_cpu", 0)) for r in runs) * 1e6
                    calls = [r["store_calls"] for r in runs if r.get("store_calls") is not None]
                    per = f", {statistics.median(calls):.2f} statements" if calls else ""
                    parts[-1] += f" ({STORE_SERVERS[row.store]} {cpu:.0f} µs{per})"
            print(f"  {server:8} {row.label:36} " + "; ".join(parts))


def _listing(names: list) -> str:
    """a, b and c."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _targets(rows: list, condition: tuple) -> list:
    """Ours against MemoryStore, against the floor, and against the best peer, per store."""
    bare = {row.family: row for row in rows if row.role == "bare"}

    def ratio(row):
        base = bare.get(row.family)
        runs = row.results.get(condition)
        if not runs or base is None or condition not in base.results:
            return None
        return statistics.median(r["rate"] / b["rate"] for r, b in zip(runs, base.results[condition]))
    def extra_cpu(row):
        base = bare.get(row.family)
        runs = row.results.get(condition)
        if not runs or base is None or condition not in base.results:
            return None
        return statistics.median((r["cpu"] - b["cpu"]) * 1e6 for r, b in zip(runs, base.results[condition]))
    ours_in = {(row.family, row.store): ratio(row) for row in rows if row.role == "ours"}
    ours = {store: value for (family, store), value in ours_in.items() if family == "wsgi"}
    ours_cpu = {row.store: extra_cpu(row) for row in rows if row.role == "ours" and row.family == "wsgi"}
    floors = {row.store: ratio(row) for row in rows if row.role == "floor"}
    parts = []
    if ours.get("memory") and ours.get("sqlite"):
        gap = ours["memory"] - ours["sqlite"]
        parts.append(f"SQLiteStore {ours['sqlite']:.2f} vs MemoryStore {ours['memory']:.2f} "
                     f"({'met' if gap <= 0.1 else 'missed'}: within 0.1)")
    for store, value in ours.items():
        if value is None:
            continue
        if floors.get(store):
            share = value / floors[store]
            parts.append(f"{STORE_LABELS[store]} ours/floor {share:.2f} ({'met' if share >= 0.9 else 'missed'}: >= 0.9)")
        peers = [(ratio(row), row.label) for row in rows if row.role == "peer" and row.store == store]
        peers = [(r, label) for r, label in peers if r is not None]
        if peers:
            best, label = max(peers)
            cheapest, cheap_label = min((extra_cpu(row), row.label) for row in rows
                                        if row.role == "peer" and row.store == store and row.results.get(condition))
            parts.append(f"{STORE_LABELS[store]} ours {value:.2f} vs best peer {best:.2f}, {label} "
                         f"({'met' if value > best else 'missed'}: above); CPU over bare: ours "
                         f"{ours_cpu[store]:.0f} µs, least of the peers {cheapest:.0f} µs ({cheap_label})")
        pairs = [(row.label, ratio(row), ours_in.get((row.family, store))) for row in rows
                 if row.role == "peer" and row.store == store]
        pairs = [(label, theirs, mine) for label, theirs, mine in pairs if theirs is not None and mine is not None]
        if pairs:
            above = sum(mine > theirs for _, theirs, mine in pairs)
            parts.append(f"{STORE_LABELS[store]}, each peer against ours on its own framework: "
                         + ", ".join(f"{label} {theirs:.2f} vs ours {mine:.2f}" for label, theirs, mine in pairs)
                         + f" ({'met' if above == len(pairs) else 'missed'}: above {above} of {len(pairs)})")
    return parts


if __name__ == "__main__":
    main()
