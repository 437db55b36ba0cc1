"""Per-request overhead of ASGISessionMiddleware in a Starlette app, beside Starlette's own
SessionMiddleware and starsessions, in-process (no server, no sockets).

Scenario: a returning visitor whose handler increments ``session["views"]`` (with --reads: only
reads it, after the first visit).  Every row is the
same Starlette app (one route), the session middleware added the way each library documents
(``Middleware(...)`` in the app's list), driven by the same minimal ASGI driver that keeps the
cookie the response sets, as a browser does.  Rows:

    bare Starlette                     the handler counts in a global (no session)
    + ours, MemoryStore                ASGISessionMiddleware; MemoryStore's coroutines run inline
    + ours, MemoryStore in a thread    the same store with Store's default coroutines, which run
                                       its methods in the loop's thread pool (what a store
                                       without coroutines of its own costs)
    + ours, SQLiteStore                stores/sqlite_store.py, a file in a temporary directory,
                                       through its coroutines: on the event loop unless a call
                                       would wait (then in the loop's thread pool)
    + ours, SQLiteStore, writes in a thread   the same with loop_writes = False: reads on the
                                       loop, writes in the thread pool
    + ours, SQLiteStore through a thread   the same with Store's default coroutines: every call
                                       in a thread
    + ours, RedisStore                 with --redis: a private redis-server (tests/redis_server.py),
                                       through the store's coroutines (redis.asyncio), and through
                                       a thread (the same store with Store's default coroutines)
    + ours, PostgresStore              with --postgres: a private PostgreSQL cluster
                                       (tests/postgres_server.py), through the store's coroutines
                                       (psycopg's AsyncConnection) and through a thread
    + floor                            the least a server-side session costs here, hand-written
                                       (FloorMiddleware): find the cookie, unsign it (a verified
                                       value is remembered), one read from a dict, one write when
                                       the data's JSON changed, the cookie re-sent with its
                                       Expires; no express rules, no merge, no Vary, no options
    + Starlette SessionMiddleware      the whole session in a signed cookie (itsdangerous)
    + starsessions (memory)            starsessions' SessionMiddleware + SessionAutoloadMiddleware,
                                       InMemoryStore

All rows send a cookie with a one-hour lifetime.  The rows alternate within each run (SLICES
rounds, order rotated), and the overhead is the median over runs of (row - bare Starlette in
the same run).  Clock: process CPU time (the thread pool's work counts; time descheduled by a
busy machine does not); with --loop-thread, the event loop's own thread's alone (what a row
takes from every other request the loop serves).

    python bench/asgi_overhead.py             # about 20 s
    python bench/asgi_overhead.py --quick     # about a quarter of that
    python bench/asgi_overhead.py --redis     # adds the RedisStore row (needs redis-server, redis)
    python bench/asgi_overhead.py --postgres  # adds PostgresStore rows (needs PostgreSQL, psycopg)
    python bench/asgi_overhead.py --reads     # requests that only read the session
    python bench/asgi_overhead.py --loop-thread   # CPU time of the event loop's thread only

Needs: pip install starlette itsdangerous starsessions (.ci/requirements.txt pins them).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, ROOT)

import session as sx  # noqa: E402
from http_load import threaded  # noqa: E402  (this directory: run as a script)

SECRET = "keyboard cat, a secret long enough to be realistic"
MAX_AGE = 3600
SLICES = 10
CLOCK = time.process_time
READS = False  # --reads: after the first visit the handler only reads the session


# ---------------------------------------------------------------- the apps

def starlette_app(middleware: list, with_session: bool, probe: list):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    counter = [0]

    async def incr(request):
        if with_session:
            sess = request.session
            views = sess.get("views", 0)
            if not READS or not views:  # --reads: the first visit counts, the others only read
                sess["views"] = views = views + 1
        else:
            counter[0] = views = counter[0] + 1
        probe[0] = views
        return PlainTextResponse(str(views))
    return Starlette(routes=[Route("/incr", incr)], middleware=middleware)


_COMPACT = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, as a library keeps


class FloorMiddleware:
    """The floor row: a correct server-side session and nothing more (see the module's doc)."""

    def __init__(self, app) -> None:
        self.app = app
        self.data: dict = {}      # sid -> (expiry, the data's JSON)
        self.verified: dict = {}  # cookie value as sent -> its session ID

    async def __call__(self, scope, receive, send) -> None:
        raw = sid = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                at = value.find(b"connect.sid=")
                if at >= 0:
                    raw = value[at + 12:].split(b";", 1)[0]
        if raw is not None:
            sid = self.verified.get(raw)
            if sid is None:
                text = sx._decode_uri_component(raw.decode("latin-1"))
                sid = sx.unsign(text[2:], SECRET) if text.startswith("s:") else None
                if sid is not None:
                    self.verified[raw] = sid
        entry = self.data.get(sid) if sid is not None else None
        text = entry[1] if entry is not None and entry[0] > time.time() else None
        data = scope["session"] = json.loads(text) if text else {}
        if sid is None:
            sid, raw = secrets.token_urlsafe(24), None
        held: list = []

        async def send_with_session(message) -> None:
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if held:  # the body begins: write the session if it changed, then the head
                start = held.pop()
                new = _COMPACT(data) if data or text else None
                if new is not None and new != text:
                    expiry = time.time() + MAX_AGE
                    self.data[sid] = (expiry, new)
                    value = raw or sx._encode_uri_component("s:" + sx.sign(sid, SECRET)).encode()
                    cookie = (b"connect.sid=" + value + b"; Path=/; Expires="
                              + sx._http_date(int(expiry)).encode() + b"; HttpOnly")
                    start = {**start, "headers": [*start.get("headers", ()), (b"set-cookie", cookie)]}
                await send(start)
            await send(message)
        await self.app(scope, receive, send_with_session)


class Row:
    """One row: a ready app, its cookie jar, and a check that every request did its work."""

    def __init__(self, label: str, app, probe: list, cookie_name: Optional[str],
                 stored: Optional[Callable[[], int]] = None) -> None:
        self.label, self.app, self.probe, self.cookie_name = label, app, probe, cookie_name
        self.stored = stored        # the views the store holds (for the after-run check)
        self.cookie: Optional[str] = None
        self.times: list = []
        self.requests = 0


def rows(args, cleanup: list) -> list:
    from starlette.middleware import Middleware
    out = []
    probe: list = [0]
    out.append(Row("bare Starlette", starlette_app([], False, probe), probe, None))

    def ours(label: str, store) -> Row:
        probe = [0]
        app = starlette_app([Middleware(sx.ASGISessionMiddleware, secret=SECRET, store=store,
                                        cookie={"max_age": MAX_AGE})], True, probe)
        row = Row(label, app, probe, "connect.sid")
        row.store = store
        return row
    out.append(ours("+ ours, MemoryStore", sx.MemoryStore()))
    out.append(ours("+ ours, MemoryStore in a thread", threaded(sx.MemoryStore)()))
    from stores.sqlite_store import SQLiteStore
    tmp = tempfile.mkdtemp(prefix="asgi-bench-")
    sqlite = SQLiteStore(os.path.join(tmp, "sessions.db"))
    cleanup.append(sqlite.close)
    out.append(ours("+ ours, SQLiteStore", sqlite))
    writes_in_threads = type("SQLiteStore", (SQLiteStore,), {"loop_writes": False})(
        os.path.join(tmp, "writes-in-threads.db"))
    cleanup.append(writes_in_threads.close)
    out.append(ours("+ ours, SQLiteStore, writes in a thread", writes_in_threads))
    threaded_sqlite = threaded(SQLiteStore)(os.path.join(tmp, "threaded.db"))
    cleanup.append(threaded_sqlite.close)
    out.append(ours("+ ours, SQLiteStore through a thread", threaded_sqlite))
    if args.redis:
        from stores.redis_store import RedisStore
        from tests.redis_server import RedisServer
        server = RedisServer().start()
        cleanup.append(server.stop)
        redis_store = RedisStore(url=server.url)
        cleanup.append(redis_store.close)
        if sx._owner(redis_store, "aget") is not sx.Store:
            out.append(ours("+ ours, RedisStore (coroutines)", redis_store))
        threaded_redis = threaded(RedisStore)(url=server.url)
        cleanup.append(threaded_redis.close)
        out.append(ours("+ ours, RedisStore (thread)", threaded_redis))

    if args.postgres:
        from stores.postgres_store import PostgresStore
        from tests.postgres_server import PostgresServer
        server = PostgresServer().start()
        cleanup.append(server.stop)
        pg = PostgresStore(conninfo=server.url, create_table_if_missing=True)
        cleanup.append(pg.close)
        out.append(ours("+ ours, PostgresStore (coroutines)", pg))
        threaded_pg = threaded(PostgresStore)(conninfo=server.url)
        cleanup.append(threaded_pg.close)
        out.append(ours("+ ours, PostgresStore through a thread", threaded_pg))

    probe = [0]
    out.append(Row("+ floor", starlette_app([Middleware(FloorMiddleware)], True, probe), probe,
                   "connect.sid"))
    from starlette.middleware.sessions import SessionMiddleware as StarletteSessions
    probe = [0]
    out.append(Row("+ Starlette SessionMiddleware",
                   starlette_app([Middleware(StarletteSessions, secret_key=SECRET, max_age=MAX_AGE)],
                                 True, probe), probe, "session"))
    try:
        from starsessions import InMemoryStore, SessionAutoloadMiddleware
        from starsessions import SessionMiddleware as StarSessions
    except ImportError:
        print("starsessions row skipped: pip install starsessions", file=sys.stderr)
    else:
        probe = [0]
        out.append(Row("+ starsessions (memory)",
                       starlette_app([Middleware(StarSessions, store=InMemoryStore(), lifetime=MAX_AGE,
                                                 cookie_https_only=False),
                                      Middleware(SessionAutoloadMiddleware)], True, probe),
                       probe, "session"))
    return out


# ---------------------------------------------------------------- the driver

TEMPLATE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/incr", "raw_path": b"/incr", "root_path": "",
            "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
BASE_HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")]
REQUEST = {"type": "http.request", "body": b"", "more_body": False}
DISCONNECT = {"type": "http.disconnect"}


async def drive(row: Row, n: int) -> float:
    """n requests through the row's app as a returning visitor; CPU µs per request."""
    app, name = row.app, row.cookie_name
    prefix = None if name is None else name.encode() + b"="
    clock = CLOCK
    t0 = clock()
    for _ in range(n):
        headers = list(BASE_HEADERS)
        if row.cookie is not None:
            headers.append((b"cookie", row.cookie))
        scope = dict(TEMPLATE, headers=headers)
        sent = [False]
        start: list = []

        async def receive():
            if not sent[0]:
                sent[0] = True
                return REQUEST
            return DISCONNECT

        async def send(message):
            if message["type"] == "http.response.start":
                start.append(message)

        await app(scope, receive, send)
        if prefix is not None:
            for key, value in start[0]["headers"]:
                if key.lower() == b"set-cookie" and value.startswith(prefix):
                    row.cookie = value.split(b";", 1)[0]
    row.requests += n
    return (clock() - t0) / n * 1e6


async def run(args) -> int:
    cleanup: list = []
    try:
        table = rows(args, cleanup)
        return await measure(table, args)
    finally:
        for fn in reversed(cleanup):
            fn()


async def measure(table: list, args) -> int:
    runs = args.runs or (5 if args.quick else 9)
    per_run = args.requests or (1000 if args.quick else 3000)
    for row in table:                      # the first visit (creates the session), then warm-up
        await drive(row, 1)
        if row.cookie_name is not None:
            assert row.cookie is not None, f"{row.label}: no session cookie after the first visit"
        await drive(row, 300)
    started = time.perf_counter()
    chunk = per_run // SLICES
    for r in range(runs):
        gc.collect()
        spent = dict.fromkeys([row.label for row in table], 0.0)
        for k in range(SLICES):
            i = (r + k) % len(table)
            for row in table[i:] + table[:i]:
                spent[row.label] += await drive(row, chunk)
        for row in table:
            row.times.append(spent[row.label] / SLICES)
    elapsed = time.perf_counter() - started
    expected = 1 if READS else None
    for row in table[1:]:                  # every request counted in the session, and was stored
        want = expected or row.requests
        assert row.probe[0] == want, f"{row.label}: {row.probe[0]} views after {row.requests} requests"
        store = getattr(row, "store", None)
        if store is not None:
            sid = sx.unsign(sx._decode_uri_component(row.cookie.decode().split("=", 1)[1])[2:], SECRET)
            stored = store.get(sid)["views"]
            assert stored == want, f"{row.label}: the store holds {stored} views"

    base = table[0].times
    over = {row.label: statistics.median([t - b for t, b in zip(row.times, base)]) for row in table[1:]}
    spread = {}
    for row in table[1:]:
        diffs = [t - b for t, b in zip(row.times, base)]
        q = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
        spread[row.label] = (q[0], q[2])
    import starlette
    versions = [f"Python {sys.version.split()[0]}", f"starlette {starlette.__version__}"]
    try:
        import importlib.metadata as md
        versions += [f"starsessions {md.version('starsessions')}", f"itsdangerous {md.version('itsdangerous')}"]
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    clock = {time.perf_counter: "wall-clock", time.thread_time: "event loop thread's CPU"}.get(CLOCK, "CPU")
    print(f"ASGI session middleware overhead in a Starlette app, in-process, {clock} µs per request: "
          f"median of {runs} runs of {per_run} requests, rows alternating every {chunk}; "
          f"took {elapsed:.0f} s.")
    scenario = "reads session['views']" if READS else "increments session['views']"
    print(", ".join(versions) + f"; cookie lifetime {MAX_AGE} s; returning visitor {scenario}."
          f"\noverhead = median over runs of (row - bare Starlette in the same run); "
          f"p25-p75 its spread.\n")
    width = max(len(row.label) for row in table)
    star = over.get("+ starsessions (memory)")
    print(f"{'row':{width}}  {'µs/req':>8}  {'overhead':>8}  {'p25-p75':>13}  {'/ starsessions':>14}")
    for row in table:
        label = row.label
        if row is table[0]:
            print(f"{label:{width}}  {statistics.median(row.times):8.2f}  {'-':>8}")
            continue
        ratio = f"{over[label] / star:14.2f}" if star else ""
        print(f"{label:{width}}  {statistics.median(row.times):8.2f}  {over[label]:8.2f}  "
              f"{spread[label][0]:5.1f} -{spread[label][1]:5.1f}  {ratio}")
    mine = over["+ ours, MemoryStore"]
    floor = over["+ floor"]
    print(f"\nours (MemoryStore) overhead / floor's: {mine / floor:.2f}; floor / starsessions': "
          + (f"{floor / star:.2f}" if star else "n/a"))
    if star:
        ok = mine <= star / 2
        print(f"\ntarget: ours (MemoryStore) overhead <= half of starsessions': {mine:.2f} <= "
              f"{star / 2:.2f} µs  {'PASS' if ok else 'MISS'}")
    else:
        print("\ntarget: n/a (starsessions not installed)")
    return 0


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--runs", type=int, help="interleaved runs (default 9, quick 5)")
    parser.add_argument("--requests", type=int, help="requests per row per run (default 3000, quick 1000)")
    parser.add_argument("--redis", action="store_true", help="add a RedisStore row (private redis-server)")
    parser.add_argument("--postgres", action="store_true",
                        help="add PostgresStore rows (a private PostgreSQL cluster)")
    parser.add_argument("--wall", action="store_true", help="time with perf_counter instead of CPU time")
    parser.add_argument("--loop-thread", action="store_true",
                        help="count only the event loop's own thread's CPU time (not the thread pool's)")
    parser.add_argument("--reads", action="store_true",
                        help="the returning visitor's requests only read the session")
    args = parser.parse_args(argv)
    global CLOCK, READS
    if args.wall:
        CLOCK = time.perf_counter
    elif args.loop_thread:
        CLOCK = time.thread_time
    READS = args.reads
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
