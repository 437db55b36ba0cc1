"""Concurrent requests on one session, over real HTTP: what each store keeps and brings back.

For each store, the same app (tests/concurrency_app.py) is served by server processes of its
own, and driven by one visitor's requests sent at once, with two columns from the same run:

    set()   the middleware writing the whole record at the end of each request, as every
            session library does (the store seen without merge(), as a third-party store
            with only get/set/touch/destroy is: tests/concurrency_app.py's WholeRecord)
    merge   the store as it is: merge() writes only what the request changed, atomically

Beside them, peers where installed: Beaker (memory backend, one process) and express-session
(tests/interop/app.js under node; needs ``npm ci`` in tests/interop) with its MemoryStore,
connect-redis and connect-pg-simple.

Every app has the session loaded when its request starts (by the middleware; Beaker's app
reads it first, since Beaker loads it lazily), as an app checking who is logged in has.
Measures, each on a session of its own:

    keys kept       ROUNDS rounds of CONCURRENT requests at once, each setting its own key
                    after a DB_CALL_MS "database call": the share of those keys the session
                    holds at the end (a merge must keep them all)
    counter kept    the same, all incrementing one key: the share of the increments counted
                    (a merge cannot keep them: the same key's later save wins; a counter needs
                    an app-level lock or an atomic store operation)
    back after      out of TRIES: a request that sleeps SLOW_MS after loading the session,
    logout / login  while /logout (destroy) or /login (regenerate) runs LEAD_MS after it
                    started; counted when the old session ID holds the session again after
                    the slow request ended

    python bench/concurrency.py                 # every store and peer found: about 75 s
    python bench/concurrency.py --only memory,sqlite --tries 3
    python bench/concurrency.py --processes 3   # multi-process rows with 3 processes (default 2)

Needs redis-server and redis-py for the Redis rows, PostgreSQL and psycopg for the PostgreSQL
rows, mongomock for the MongoStore row, beaker and node for the peers; a missing one skips its
rows with a reason.  Not run in CI: every figure here comes from real concurrency, so it varies
from run to run (keys and counter kept under set() most).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INTEROP = os.path.join(ROOT, "tests", "interop")
sys.path.insert(1, ROOT)

CONCURRENT = 16
ROUNDS = 8
DB_CALL_MS = 5
TRIES = 5
SLOW_MS = 250
LEAD_MS = 80


# ---------------------------------------------------------------- servers

class Server:
    """Server processes of one row, each printing ``listening <port>`` when ready."""

    def __init__(self, commands: list, cwd: str = ROOT, env: Optional[dict] = None) -> None:
        self.procs: list = []
        self.ports: list = []
        try:
            for command in commands:
                self.procs.append(subprocess.Popen(
                    command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT))
            for proc in self.procs:
                self.ports.append(_wait_listening(proc))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
                proc.terminate()  # node ignores stdin; python stops either way
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            proc.stdout.close()
        self.procs = []


def _wait_listening(proc: subprocess.Popen) -> int:
    """The port a server prints once it listens; its later output is drained in a thread."""
    from tests.concurrency_app import listening_port
    port = listening_port(proc)
    threading.Thread(target=_drain, args=(proc,), daemon=True).start()
    return port


def _drain(proc: subprocess.Popen) -> None:
    """Keep reading what a server prints, so a full pipe never stalls it."""
    for _ in proc.stdout:
        pass


# ---------------------------------------------------------------- one visitor's requests

class Client:
    """One row's servers as a visitor sees them: routes, and requests spread over the ports."""

    def __init__(self, ports: list, set_path: str = "/set", incr_path: str = "/incr") -> None:
        self.ports, self.set_path, self.incr_path = ports, set_path, incr_path
        self.turn = 0

    def get(self, path: str, cookie: Optional[str], port: Optional[int] = None,
            **query: Any) -> tuple:
        """(status, the cookie pair a Set-Cookie gave or None, the JSON body or None)."""
        if port is None:
            self.turn += 1
            port = self.ports[self.turn % len(self.ports)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", path + ("?" + urlencode(query) if query else ""),
                         headers={"Cookie": cookie} if cookie else {})
            resp = conn.getresponse()
            body = resp.read()
            pairs = [v.strip().split(";", 1)[0] for k, v in resp.getheaders()
                     if k.lower() == "set-cookie"]
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            return resp.status, (pairs[-1] if pairs else None), data
        finally:
            conn.close()

    def session(self, cookie: str) -> dict:
        """The session the cookie finds, without its cookie (empty if none)."""
        status, _, body = self.get("/raw", cookie)
        assert status == 200, (status, body)
        data = dict(body.get("session") or {})
        data.pop("cookie", None)
        return data

    def new_session(self, **data: str) -> str:
        cookie = None
        for key, value in data.items():
            status, pair, _ = self.get(self.set_path, cookie, key=key, value=value, ms=0)
            assert status == 200 and (pair or cookie), (status, pair)
            cookie = pair or cookie
        return cookie

    def at_once(self, pool: ThreadPoolExecutor, path: str, cookie: str, queries: list) -> None:
        """Send one request per query at the same moment (a barrier), to every port in turn."""
        barrier = threading.Barrier(len(queries))
        ports = [self.ports[i % len(self.ports)] for i in range(len(queries))]

        def one(i: int) -> int:
            barrier.wait(30)
            return self.get(path, cookie, port=ports[i], **queries[i])[0]
        statuses = list(pool.map(one, range(len(queries))))
        assert set(statuses) == {200}, statuses

    def keys_kept(self, pool: ThreadPoolExecutor) -> float:
        cookie = self.new_session(seed="s")
        for r in range(ROUNDS):
            self.at_once(pool, self.set_path, cookie,
                         [dict(key=f"r{r}k{i}", value="1", ms=DB_CALL_MS) for i in range(CONCURRENT)])
        kept = [k for k in self.session(cookie) if k.startswith("r")]
        return 100 * len(kept) / (ROUNDS * CONCURRENT)

    def counter_kept(self, pool: ThreadPoolExecutor) -> float:
        cookie = self.new_session(seed="s")
        for _ in range(ROUNDS):
            self.at_once(pool, self.incr_path, cookie, [dict(key="n", ms=DB_CALL_MS)] * CONCURRENT)
        return 100 * self.session(cookie).get("n", 0) / (ROUNDS * CONCURRENT)

    def brought_back(self, ending: str, tries: int) -> int:
        """How often the session a slow request loaded holds data again after ``ending``
        (/logout or /login) ran while it slept."""
        back = 0
        for t in range(tries):
            cookie = self.new_session(user="ada")
            slow: list = []
            thread = threading.Thread(target=lambda: slow.append(self.get(
                self.set_path, cookie, key="late", value="x", ms=SLOW_MS)))
            thread.start()
            time.sleep(LEAD_MS / 1000)
            query = {"user": "bob"} if ending == "/login" else {}
            status = self.get(ending, cookie, **query)[0]
            thread.join(30)
            assert status == 200 and slow and slow[0][0] == 200, (status, slow)
            if self.session(cookie):
                back += 1
        return back


# ---------------------------------------------------------------- rows

class Row:
    """One line of the table: a name, and how to start its servers for either column."""

    def __init__(self, label: str, processes: int, start: Callable[[bool], tuple],
                 peer: bool = False, note: str = "") -> None:
        self.label, self.processes, self.start, self.peer, self.note = \
            label, processes, start, peer, note
        self.results: dict = {}  # column ("set()" or "merge") -> (keys %, counter %, logout, login)


def python_row(label: str, spec: str, processes: int, note: str = "") -> Row:
    def start(whole_record: bool) -> tuple:
        command = [sys.executable, "-m", "tests.concurrency_app", "--store", spec]
        if whole_record:
            command.append("--whole-record")
        server = Server([command] * processes)
        return server, Client(server.ports)
    return Row(label, processes, start, note=note)


def beaker_row() -> Row:
    def start(_: bool) -> tuple:
        server = Server([[sys.executable, os.path.abspath(__file__), "--serve-beaker"]])
        return server, Client(server.ports)
    import beaker
    return Row(f"Beaker {beaker.__version__} (memory)", 1, start, peer=True)


def express_row(label: str, env: dict) -> Row:
    def start(_: bool) -> tuple:
        from tests.support import free_port
        full = dict(os.environ, PORT=str(free_port()), SECRETS='["keyboard cat"]', MAX_AGE="3600000", **env)
        full.pop("NODE_ENV", None)
        server = Server([["node", "app.js"]], cwd=INTEROP, env=full)
        return server, Client(server.ports, "/slow/set", "/slow/incr")
    return Row(label, 1, start, peer=True)


def beaker_app() -> Callable:
    """The concurrency app's /set, /incr, /login, /logout and /raw behind Beaker."""
    from beaker.middleware import SessionMiddleware

    def app(environ: dict, start_response: Callable) -> list:
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        sess = environ["beaker.session"]
        sess.get("user")  # Beaker loads lazily: read first, as the other apps' middleware does
        if "ms" in query:
            time.sleep(int(query["ms"]) / 1000)
        path, key = environ["PATH_INFO"], query.get("key")
        if path == "/set":
            sess[key] = query["value"]
        elif path == "/incr":
            sess[key] = sess.get(key, 0) + 1
        elif path == "/login":
            sess.invalidate()
            sess["user"] = query["user"]
        elif path == "/logout":
            sess.delete()
        body = json.dumps({"session": {k: v for k, v in sess.items()
                                       if not k.startswith("_")}}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return SessionMiddleware(app, {"session.type": "memory", "session.key": "beaker.session.id",
                                   "session.secret": "bench secret", "session.auto": True,
                                   "session.cookie_expires": 3600, "session.httponly": True})


# ---------------------------------------------------------------- running

def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def _own_merge(module: str, name: str) -> bool:
    cls = getattr(__import__(f"stores.{module}", fromlist=[name]), name)
    return next(c for c in cls.__mro__ if "merge" in vars(c)).__name__ != "Store"


def build_rows(args: argparse.Namespace, workdir: str, cleanup: list) -> tuple:
    """The rows to run, and the reasons for those left out."""
    only = set(args.only.split(",")) if args.only else None
    rows, skipped = [], []
    many = args.processes

    def wanted(name: str) -> bool:
        return only is None or name in only

    def note(module: str, name: str) -> str:
        return "" if _own_merge(module, name) else "Store's default merge (no merge() of its own)"

    if wanted("memory"):
        rows.append(python_row("MemoryStore", "memory", 1))
    if wanted("sqlite"):
        n = note("sqlite_store", "SQLiteStore")
        rows.append(python_row("SQLiteStore", "sqlite:" + os.path.join(workdir, "t.db"), 1, n))
        rows.append(python_row("SQLiteStore", "sqlite:" + os.path.join(workdir, "p.db"), many, n))
    if wanted("shelve"):
        rows.append(python_row("ShelveStore", "shelve:" + os.path.join(workdir, "shelf"), 1,
                               note("shelve_store", "ShelveStore")))
    if wanted("mongo"):
        if _has("mongomock") and _has("pymongo"):
            rows.append(python_row("MongoStore (mongomock)", "mongomock", 1,
                                   note("mongo_store", "MongoStore")))
        else:
            skipped.append("MongoStore: pip install pymongo mongomock")
    redis_url = pg_url = None
    if wanted("redis") or wanted("express"):
        from tests.redis_server import RedisServer, redis_server_available
        if redis_server_available() and _has("redis"):
            server = RedisServer().__enter__()
            cleanup.append(server.close)
            redis_url = server.url
        elif wanted("redis"):
            skipped.append("RedisStore: apt-get install -y redis-server && pip install redis")
    if redis_url and wanted("redis"):
        n = note("redis_store", "RedisStore")
        rows.append(python_row("RedisStore", "redis:" + redis_url, 1, n))
        rows.append(python_row("RedisStore", "redis:" + redis_url, many, n))
    if wanted("postgres") or wanted("express"):
        from tests.postgres_server import PostgresServer, postgres_server_available
        if postgres_server_available() and _has("psycopg"):
            server = PostgresServer().__enter__()
            cleanup.append(server.close)
            pg_url = server.url
        elif wanted("postgres"):
            skipped.append('PostgresStore: apt-get install -y postgresql && pip install "psycopg[binary]"')
    if pg_url and wanted("postgres"):
        n = note("postgres_store", "PostgresStore")
        rows.append(python_row("PostgresStore", "postgres:" + pg_url, 1, n))
        rows.append(python_row("PostgresStore", "postgres:" + pg_url, many, n))
    if wanted("beaker"):
        if _has("beaker"):
            rows.append(beaker_row())
        else:
            skipped.append("Beaker: pip install beaker")
    if wanted("express"):
        if shutil.which("node") and os.path.isdir(os.path.join(INTEROP, "node_modules")):
            version = json.load(open(os.path.join(INTEROP, "node_modules", "express-session",
                                                  "package.json")))["version"]
            rows.append(express_row(f"express-session {version} (MemoryStore)",
                                    {"SESSION_STORE": "memory"}))
            if redis_url:
                rows.append(express_row(f"express-session {version} + connect-redis",
                                        {"SESSION_STORE": "redis", "REDIS_URL": redis_url}))
            if pg_url:
                rows.append(express_row(f"express-session {version} + connect-pg-simple",
                                        {"SESSION_STORE": "pg", "DATABASE_URL": pg_url}))
        else:
            skipped.append("express-session: node, and npm ci in tests/interop")
    return rows, skipped


def measure(row: Row, column: str, tries: int) -> None:
    server, client = row.start(column == "set()")
    try:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            row.results[column] = (client.keys_kept(pool), client.counter_kept(pool),
                                   client.brought_back("/logout", tries),
                                   client.brought_back("/login", tries))
    finally:
        server.stop()


def report(rows: list, skipped: list, tries: int, elapsed: float) -> None:
    print(f"\nConcurrent requests on one session, over HTTP on 127.0.0.1: {ROUNDS} rounds of "
          f"{CONCURRENT} requests at once, each after a {DB_CALL_MS} ms \"database call\"; "
          f"back after logout/login: a request sleeping {SLOW_MS} ms while /logout or /login "
          f"ran {LEAD_MS} ms after it started, {tries} tries.  set() = the whole record written "
          f"at the end of each request (every library's way); merge = the store's merge().  "
          f"Took {elapsed:.0f} s.\n")
    width = max(len(r.label) for r in rows)
    head = f"{'':{width}}  {'procs':>5}  {'keys kept %':>13}  {'counter kept %':>14}  " \
           f"{'back after logout':>17}  {'back after login':>16}"
    sub = f"{'':{width}}  {'':5}  {'set()':>6} {'merge':>6}  {'set()':>7} {'merge':>6}  " \
          f"{'set()':>8} {'merge':>8}  {'set()':>7} {'merge':>8}"
    print(head)
    print(sub)
    notes: list = []
    for row in rows:
        before = row.results.get("set()")
        after = row.results.get("merge")

        def cell(result: Optional[tuple], i: int, w: int) -> str:
            if result is None:
                return f"{'':>{w}}"
            value = result[i]
            return f"{value:{w}.0f}" if i < 2 else f"{value:>{w - 2}d}/{tries}"
        mark = ""
        if row.note:
            if row.note not in notes:
                notes.append(row.note)
            mark = "*" * (notes.index(row.note) + 1)
        label = row.label + mark
        print(f"{label:{width + 2}}{row.processes:>5}  {cell(before, 0, 6)} {cell(after, 0, 6)}  "
              f"{cell(before, 1, 7)} {cell(after, 1, 6)}  {cell(before, 2, 8)} {cell(after, 2, 8)}  "
              f"{cell(before, 3, 7)} {cell(after, 3, 8)}")
    for i, note in enumerate(notes):
        print(f"{'*' * (i + 1)} {note}")
    if any(r.label.startswith("Beaker") for r in rows):
        print("Beaker's invalidate() (its regenerate) leaves the old ID's record in place.")
    for reason in skipped:
        print(f"skipped: {reason}")


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated: memory,sqlite,shelve,mongo,redis,"
                                       "postgres,beaker,express (default: all found)")
    parser.add_argument("--tries", type=int, default=TRIES,
                        help=f"slow requests racing a logout, and a login (default {TRIES})")
    parser.add_argument("--processes", type=int, default=2,
                        help="server processes of the multi-process rows (default 2)")
    parser.add_argument("--serve-beaker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_beaker:
        from tests.concurrency_app import serve
        port, errors, stop = serve(beaker_app())
        print(f"listening {port}", flush=True)
        sys.stdin.read()
        stop()
        return 0
    workdir = tempfile.mkdtemp(prefix="bench-concurrency-")
    cleanup: list = [lambda: shutil.rmtree(workdir, ignore_errors=True)]
    started = time.perf_counter()
    try:
        rows, skipped = build_rows(args, workdir, cleanup)
        for row in rows:
            for column in (("set()",) if row.peer else ("set()", "merge")):
                print(f"{row.label} x{row.processes} {column} ...", file=sys.stderr, flush=True)
                measure(row, column, args.tries)
        report(rows, skipped, args.tries, time.perf_counter() - started)
    finally:
        for step in reversed(cleanup):
            step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
