"""End-to-end cost of a session over real HTTP on loopback: Express vs this project, measured with wrk.

    python bench/http_load.py [--server {waitress,gunicorn,uvicorn,both,all}] [--duration 3] [--rounds 5]
                              [--threads 2] [--connections 16] [--app-cpu] [--floor] [--no-pin]
                              [--bare-cookie] [--paired] [--stores sqlite,redis,postgres] [--users N]

Scenario: a returning visitor whose app increments a counter in the session (the wrk Lua
script sends the cookie it was given and keeps any new one the server sets); with --users N,
N visitors, made before the runs, each wrk thread walking them in turn. Rows, each a
server of its own on 127.0.0.1, run interleaved round after round so drift hits all alike:

    express bare                  node tests/interop/app.js, SESSION_STORE=none (needs npm ci there)
    express + express-session     the same app with express-session's MemoryStore
    waitress bare                 a WSGI app counting in a global
    waitress + SessionMiddleware  the same app behind session.SessionMiddleware (MemoryStore)
    waitress + Beaker             the same app behind beaker.middleware.SessionMiddleware (memory), if installed
    gunicorn bare                 the same three WSGI apps under gunicorn
    gunicorn + SessionMiddleware
    gunicorn + Beaker
    uvicorn bare                  a Starlette app counting in a global, under uvicorn (ASGI)
    uvicorn + ASGISessionMiddleware   the same app with session.ASGISessionMiddleware (MemoryStore)
    uvicorn + Starlette sessions  the same app with Starlette's SessionMiddleware (data in a signed cookie)
    uvicorn + starsessions        the same app with starsessions (InMemoryStore, autoload), if installed
    (--stores sqlite,redis,postgres adds SessionMiddleware rows on those stores per WSGI server,
    and with uvicorn two ASGISessionMiddleware rows on SQLiteStore and on PostgresStore: through
    the store's coroutines, and with every call in the loop's thread pool; and a third on
    SQLiteStore with loop_writes = False: reads on the loop, writes in the thread pool)

The WSGI rows run under two WSGI servers, each one process with 4 threads, so an in-memory
store is shared by every request the way express-session's MemoryStore is in Node's one
process; the ASGI rows under uvicorn, one process with one event loop, as Node runs (--server
picks waitress, gunicorn, uvicorn, both WSGI servers, or all three: the default):

  waitress (pip install waitress): pure Python, one process with a thread pool, and the server
      the issue's reference figures for Beaker name. Served by this file:
      python bench/http_load.py --serve KIND --port N
  gunicorn (pip install gunicorn): the most deployed Python WSGI server, with its gthread
      worker and a single worker process (several workers would be processes with a store each):
      python -m gunicorn --worker-class gthread --workers 1 --threads 4 --bind 127.0.0.1:N
          --log-level warning --pythonpath bench "http_load:gunicorn_app('KIND')"
      Its own cost per request is higher than waitress's, so the same middleware costs a smaller
      share of it: the ratio with-session / bare depends on the server, and is given per server.
  uvicorn (pip install uvicorn starlette; starsessions for its row), h11, no access log:
      python bench/http_load.py --serve-asgi KIND --port N

Servers are pinned to CPU 0 and wrk to CPU 1 (--no-pin to let them roam): on this 2-core VM a
multithreaded Python server whose threads run on both cores spends most of its time handing
the GIL from core to core (measured: waitress bare at 16 connections, 1,400 req/s unpinned vs
8,700 pinned, with swings of 3x between runs), while Node's one event loop does not care.
Pinned, every server gets one core, as Node uses one, and runs repeat.
Prints median req/s and server CPU per request per row (gunicorn's: its master and worker
together) and, per server, the ratio with-session / bare. With --app-cpu the Python servers
also add up the CPU spent inside the app call itself (thread CPU time), which separates the
middleware's cost from the server's. With --floor each WSGI server also gets a row for the
least any server-side JSON session can do here (find the cookie, decode the stored JSON, call
the app, encode and store it: no expiry, no Vary, no express rules), the ceiling any session
library's ratio can approach on that server. The bare rows get no Cookie header (the bare app
never sets one); --bare-cookie sends them a returning visitor's, so that only the app differs.

--paired adds rounds in which each with-session server is loaded at the same time as its bare
server (two wrk runs at once, both servers on the one server CPU), and reports bare / with-session
server CPU per request. On a shared VM the load from neighbours swings by 2x within a minute, so
two runs made one after the other can meet different machines; two runs made at the same time
meet the same one. For a CPU-bound server this is the throughput ratio.
Needs wrk (apt-get install -y wrk), node, and pip install waitress gunicorn [beaker]
uvicorn starlette [starsessions].
"""
from __future__ import annotations

import argparse
import functools
import http.client
import itertools
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INTEROP = os.path.join(ROOT, "tests", "interop")
SECRET = "bench secret"
# A returning visitor's Cookie header, as sent to the bare rows with --bare-cookie.
VISITOR_COOKIE = "connect.sid=s%3A" + "x" * 32 + "." + "y" * 43

# wrk keeps one prebuilt request per thread and rebuilds it only when the server sets a new cookie.
LUA = r"""
local req
function init(args)
  if args[1] and args[1] ~= "" then wrk.headers["Cookie"] = args[1] end
  req = wrk.format("GET", "/incr")
end
function request() return req end
function response(status, headers, body)
  for name, value in pairs(headers) do
    if string.lower(name) == "set-cookie" then
      wrk.headers["Cookie"] = string.match(value, "^[^;]+")
      req = wrk.format("GET", "/incr")
    end
  end
end
"""

# --users N: each wrk thread walks N returning visitors' cookies (made before the runs, one
# /incr each) in turn from a random start, sending /read instead of /incr with probability
# --reads (args: the cookie file, that probability).
LUA_USERS = r"""
local reqs, read_reqs, n, i, reads = {}, {}, 0, 0, 0
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
function init(args)
  reads = tonumber(args[2])
  for line in io.lines(args[1]) do
    n = n + 1
    local headers = {}
    if line ~= "" then headers["Cookie"] = line end
    reqs[n] = wrk.format("GET", "/incr", headers)
    read_reqs[n] = wrk.format("GET", "/read", headers)
  end
  math.randomseed(os.time() * 100 + id)
  i = math.random(n) - 1
end
function request()
  i = i % n + 1
  if reads > 0 and math.random() < reads then return read_reqs[i] end
  return reqs[i]
end
"""

# -- the WSGI apps (run in a server subprocess: waitress via --serve KIND, gunicorn via gunicorn_app) --

def _json(start_response, views: int) -> list:
    body = json.dumps({"views": views}).encode()
    start_response("200 OK", [("Content-Type", "application/json; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _count_visit(sess, path: str = "/incr") -> int:
    """What the app behind every session row does: one more view in the session (/read, which
    --reads sends, only reads it)."""
    if path == "/read":
        return sess.get("views", 0)
    sess["views"] = views = sess.get("views", 0) + 1
    return views


def bare_app():
    counter = itertools.count(1)

    def app(environ, start_response):
        return _json(start_response, next(counter))
    return app


def session_app():
    import session

    def app(environ, start_response):
        return _json(start_response, _count_visit(environ["session"], environ["PATH_INFO"]))
    return session.SessionMiddleware(app, secret=SECRET)


def _store(kind: str, through_threads: bool = False, **attributes):
    """The store of a --stores row, on the file or private server main() named in
    HTTP_LOAD_<KIND>; ``through_threads``: with Store's default coroutines (see threaded);
    ``attributes``: class attributes set in a subclass (SQLiteStore's loop_writes)."""
    if kind == "sqlite":
        from stores.sqlite_store import SQLiteStore as cls
        arg = {"path": os.environ["HTTP_LOAD_SQLITE"]}
    elif kind == "redis":
        from stores.redis_store import RedisStore as cls
        arg = {"url": os.environ["HTTP_LOAD_REDIS"]}
    else:
        from stores.postgres_store import PostgresStore as cls
        arg = {"conninfo": os.environ["HTTP_LOAD_POSTGRES"]}
    if attributes:
        cls = type(cls.__name__, (cls,), attributes)
    return (threaded(cls) if through_threads else cls)(**arg)


def threaded(store_class: type) -> type:
    """``store_class`` with Store's default coroutines: each call in the event loop's thread
    pool, as a store without coroutines of its own is called under ASGI."""
    import session
    return type(f"Threaded{store_class.__name__}", (store_class,),
                {name: getattr(session.Store, name) for name in ASYNC_METHODS})


ASYNC_METHODS = ("aget", "aget_text", "aset", "amerge", "atouch", "adestroy")


def store_app(kind: str):
    """SessionMiddleware on a --stores store (sqlite: a file of its own per server)."""
    import session

    def app(environ, start_response):
        return _json(start_response, _count_visit(environ["session"], environ["PATH_INFO"]))
    return session.SessionMiddleware(app, secret=SECRET, store=_store(kind))


def beaker_app():
    from beaker.middleware import SessionMiddleware

    def app(environ, start_response):
        sess = environ["beaker.session"]
        views = _count_visit(sess, environ["PATH_INFO"])
        sess.save()
        return _json(start_response, views)
    return SessionMiddleware(app, {"session.type": "memory", "session.key": "beaker.session.id",
                                   "session.secret": SECRET})


def floor_app():
    """The least any server-side JSON session can do for this request, as a yardstick: find the
    cookie, take its ID from a dict of values already verified (as SessionMiddleware remembers
    them), decode the stored JSON, call the app, encode and store.  No expiry, no Vary, none of
    express's rules: not a library, the floor under one (--floor)."""
    import secrets
    import session
    store, verified = {}, {}

    def middleware(environ, start_response):
        header = environ.get("HTTP_COOKIE")
        raw = session._decode_uri_component(session._raw_cookie(header, "connect.sid") or "") if header else None
        sid = verified.get(raw)
        if sid is None and raw and raw.startswith("s:"):
            sid = session.unsign(raw[2:], SECRET)
            if sid:
                verified[raw] = sid
        reply = start_response
        if sid is None:
            sid = secrets.token_urlsafe(24)
            cookie = "connect.sid=" + quote("s:" + session.sign(sid, SECRET), safe="") + "; Path=/; HttpOnly"
            reply = lambda status, headers, exc_info=None: start_response(  # noqa: E731
                status, headers + [("Set-Cookie", cookie)], exc_info)
        data = environ["session"] = json.loads(store.get(sid, "{}"))
        result = _json(reply, _count_visit(data, environ["PATH_INFO"]))
        if environ["PATH_INFO"] != "/read" or reply is not start_response:
            store[sid] = json.dumps(data)
        return result
    return middleware


PY_APPS = {"bare": bare_app, "session": session_app, "beaker": beaker_app, "floor": floor_app,
           "sqlite": lambda: store_app("sqlite"), "redis": lambda: store_app("redis"),
           "postgres": lambda: store_app("postgres")}
PY_LABELS = {"bare": "bare", "session": "+ SessionMiddleware", "beaker": "+ Beaker",
             "floor": "+ floor, no library", "sqlite": "+ SessionMiddleware, SQLiteStore",
             "redis": "+ SessionMiddleware, RedisStore", "postgres": "+ SessionMiddleware, PostgresStore"}
WSGI_SERVERS = ("waitress", "gunicorn")


# -- the ASGI apps (run in a uvicorn subprocess: python bench/http_load.py --serve-asgi KIND) --

def starlette_app(middleware: list, with_session: bool):
    """A Starlette app with one route, /incr, behind ``middleware``."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    counter = itertools.count(1)

    async def visit(request):
        views = _count_visit(request.session, request.url.path) if with_session else next(counter)
        return JSONResponse({"views": views})
    return Starlette(routes=[Route("/incr", visit), Route("/read", visit)], middleware=middleware)


def asgi_bare():
    return starlette_app([], False)


def asgi_session():
    import session
    from starlette.middleware import Middleware
    return starlette_app([Middleware(session.ASGISessionMiddleware, secret=SECRET)], True)


def asgi_starlette():
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware
    return starlette_app([Middleware(SessionMiddleware, secret_key=SECRET)], True)


def asgi_starsessions():
    from starlette.middleware import Middleware
    from starsessions import InMemoryStore, SessionAutoloadMiddleware, SessionMiddleware
    return starlette_app([Middleware(SessionMiddleware, store=InMemoryStore(), cookie_https_only=False),
                          Middleware(SessionAutoloadMiddleware)], True)


def asgi_store(kind: str):
    """ASGISessionMiddleware on a --stores store ("sqlite", "postgres"): through its coroutines,
    or, as "KIND-thread", with every call in the loop's thread pool ("sqlite-writes-thread":
    the writes alone, SQLiteStore's loop_writes = False)."""
    import session
    from starlette.middleware import Middleware
    name, _, how = kind.partition("-")
    store = (_store(name, loop_writes=False) if how == "writes-thread"
             else _store(name, through_threads=how == "thread"))
    return starlette_app([Middleware(session.ASGISessionMiddleware, secret=SECRET, store=store)], True)


ASGI_APPS = {"bare": asgi_bare, "session": asgi_session, "starlette": asgi_starlette,
             "starsessions": asgi_starsessions,
             **{kind: functools.partial(asgi_store, kind)
                for kind in ("sqlite", "sqlite-writes-thread", "sqlite-thread", "postgres",
                             "postgres-thread")}}
ASGI_LABELS = {"bare": "bare", "session": "+ ASGISessionMiddleware", "starlette": "+ Starlette sessions",
               "starsessions": "+ starsessions", "sqlite": "+ ASGISessionMiddleware, SQLiteStore",
               "sqlite-writes-thread": "+ ASGISessionMiddleware, SQLiteStore, writes in a thread",
               "sqlite-thread": "+ ASGISessionMiddleware, SQLiteStore through a thread",
               "postgres": "+ ASGISessionMiddleware, PostgresStore",
               "postgres-thread": "+ ASGISessionMiddleware, PostgresStore through a thread"}


def serve_asgi(kind: str, port: int) -> None:
    """Serve ASGI_APPS[kind] with uvicorn: one process, one event loop, h11, no access log."""
    import uvicorn
    sys.path.insert(0, ROOT)
    uvicorn.run(ASGI_APPS[kind](), host="127.0.0.1", port=port, http="h11", log_level="warning",
                access_log=False, lifespan="off")


def serve(kind: str, port: int, app_cpu: bool = False) -> None:
    """Serve PY_APPS[kind] with waitress, 4 threads (python bench/http_load.py --serve KIND --port N)."""
    import logging
    import waitress
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)   # "Task queue depth" on every burst
    sys.path.insert(0, ROOT)
    app = PY_APPS[kind]()
    if app_cpu:
        app = _timed(app, report_on_sigterm=True)
    waitress.serve(app, host="127.0.0.1", port=port, threads=4, _quiet=True)


def gunicorn_app(kind: str, app_cpu: bool = False):
    """gunicorn's app factory: gunicorn ... --pythonpath bench "http_load:gunicorn_app('KIND')"."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    app = PY_APPS[kind]()
    # gunicorn's worker handles SIGTERM itself (a graceful stop), then exits normally: report at exit.
    return _timed(app, report_on_sigterm=False) if app_cpu else app


def python_command(server: str, kind: str, app_cpu: bool) -> list[str]:
    """The command serving PY_APPS[kind] under a WSGI server, one process with 4 threads ({port}: Server fills it)."""
    if server == "waitress":
        return ([sys.executable, os.path.abspath(__file__), "--serve", kind, "--port", "{port}"]
                + (["--app-cpu"] if app_cpu else []))
    return [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "4",
            "--bind", "127.0.0.1:{port}", "--log-level", "warning", "--graceful-timeout", "3",
            "--pythonpath", HERE, f"http_load:gunicorn_app({kind!r}, app_cpu={app_cpu})"]


def _timed(app, report_on_sigterm: bool):
    """Wrap app to add up the CPU its calls take in their own thread; print it when the server stops.

    That isolates the app's (and its middleware's) cost from the server's inside the real server.
    waitress just dies on SIGTERM, so the report comes from a SIGTERM handler; a gunicorn worker
    stops gracefully and exits, so it comes from an atexit hook.
    """
    import atexit
    import signal
    import threading
    total, calls, lock = [0.0], [0], threading.Lock()

    def timed(environ, start_response):
        start = time.thread_time()
        body = app(environ, start_response)
        chunks = list(body)
        if hasattr(body, "close"):
            body.close()
        spent = time.thread_time() - start
        with lock:
            total[0] += spent
            calls[0] += 1
        return chunks

    def report():
        print(f"app-cpu {total[0] / max(calls[0], 1):.9f}", flush=True)

    if report_on_sigterm:
        def on_sigterm(*_):
            report()
            os._exit(0)
        signal.signal(signal.SIGTERM, on_sigterm)
    else:
        atexit.register(report)
    return timed


# -- the harness ------------------------------------------------------------------------------

class Server:
    def __init__(self, label: str, group: str, role: str, cmd: list, env: dict | None = None,
                 cwd: str | None = None, cpu: int | None = None) -> None:
        self.label, self.group, self.role = label, group, role   # group: the server its ratios compare within
        self.port = _free_port()
        env = dict(os.environ, PORT=str(self.port), **(env or {}))
        env.pop("NODE_ENV", None)
        cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.log = tempfile.TemporaryFile()   # a file, not a pipe nobody reads: a full pipe stalls the server
        pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
        self.proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=pin)
        _wait_port(self.port, self.proc, self.log)
        self.results: list[float] = []    # req/s per run
        self.cpu: list[float] = []        # server CPU seconds per request, per run
        self.paired: list[float] = []     # with --paired: bare / this CPU per request, run side by side
        self.views_after: int | None = None
        self.app_cpu: float | None = None      # with --app-cpu: CPU seconds per call in the app itself

    def get(self, cookie: str | None = None) -> tuple[int, str | None]:
        """One GET /incr: (views, cookie to send next time)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/incr", headers={"Cookie": cookie} if cookie else {})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            set_cookie = resp.getheader("Set-Cookie")
            return body["views"], set_cookie.split(";", 1)[0] if set_cookie else cookie
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.seek(0)
        found = re.search(rb"app-cpu ([\d.]+)", self.log.read())
        self.app_cpu = float(found.group(1)) if found else None
        self.log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: [1] is the parent pid, [11] and [12] user and system CPU."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children (gunicorn's worker), from /proc."""
    pids, total = [pid], 0
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(_stat(int(entry))[1]) == pid:
                pids.append(int(entry))
        except (OSError, IndexError):    # gone since listdir
            pass
    for p in pids:
        try:
            fields = _stat(p)
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(server: Server, script: str, args: argparse.Namespace, duration: float) -> tuple[float, float]:
    """One bounded wrk run as a returning visitor: (req/s, server CPU seconds per request)."""
    return _wrk_result(_start_wrk(server, script, args, duration))


def run_wrk_pair(bare: Server, other: Server, script: str, args: argparse.Namespace,
                 duration: float) -> float:
    """wrk on two servers at once, sharing the server CPU: bare's CPU per request over the
    other's, a ratio that load coming and going on the machine hits on both sides alike."""
    runs = [_start_wrk(bare, script, args, duration), _start_wrk(other, script, args, duration)]
    (_, bare_cpu), (_, other_cpu) = [_wrk_result(run) for run in runs]
    return bare_cpu / other_cpu


def _start_wrk(server: Server, script: str, args: argparse.Namespace, duration: float) -> tuple:
    if args.users:
        script, cookie = args.users_script, None
        argument = _users_file(server, args) + " " + str(args.reads)
    else:
        _, cookie = server.get()      # the visit that created the session (bare: just a request)
        if cookie is None and args.bare_cookie:
            cookie = VISITOR_COOKIE   # the bare app gets the same request as the session rows
        argument = cookie or ""
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration:g}s",
           "--timeout", "5s", "-s", script, f"http://127.0.0.1:{server.port}/incr", "--", *argument.split(" ")]
    pin = None if args.wrk_cpu is None else (lambda: os.sched_setaffinity(0, {args.wrk_cpu}))
    cpu_before = _cpu_seconds(server.proc.pid)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=pin)
    return server, cookie, proc, cpu_before, duration


def _users_file(server: Server, args: argparse.Namespace) -> str:
    """The cookie file of ``args.users`` visitors of this server, made on its first run (one
    /incr each; a bare server's lines are empty)."""
    path = getattr(server, "users_file", None)
    if path is None:
        cookies = [server.get()[1] or "" for _ in range(args.users)]
        fd, path = tempfile.mkstemp(suffix=".cookies")
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(cookies) + "\n")
        server.users_file = path
    return path


def _wrk_result(run: tuple) -> tuple[float, float]:
    server, cookie, proc, cpu_before, duration = run
    out = proc.communicate(timeout=duration + 30)[0]
    cpu = _cpu_seconds(server.proc.pid) - cpu_before
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{server.label}: {bad.group(1)} error responses\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if not rate or not count:
        raise RuntimeError(f"{server.label}: unexpected wrk output\n{out}")
    server.views_after = server.get(cookie)[0] if cookie else None
    return float(rate.group(1)), cpu / max(int(count.group(1)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3, help="seconds per wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--server", choices=WSGI_SERVERS + ("uvicorn", "both", "all"), default="all",
                        help="the server(s) for the Python rows: a WSGI server, uvicorn (ASGI), both WSGI "
                             "servers, or all three (default)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the servers to CPU 0 and wrk to CPU 1")
    parser.add_argument("--app-cpu", action="store_true",
                        help="also report the CPU per request spent in the WSGI app and its middleware alone "
                             "(thread CPU time around the app call, inside the server; Python rows only)")
    parser.add_argument("--floor", action="store_true",
                        help="add a row per WSGI server for the least any JSON session can do here "
                             "(no library: find the cookie, decode, call the app, encode, store)")
    parser.add_argument("--bare-cookie", action="store_true",
                        help="send the bare rows a returning visitor's Cookie header too, so every row "
                             "gets the same request and the ratio leaves out the server's cost of reading it")
    parser.add_argument("--paired", action="store_true",
                        help="after the usual rounds, load each with-session server at the same time as its bare "
                             "server, both on the server CPU, and report bare / with-session CPU per request: "
                             "a ratio that other load on the machine disturbs far less")
    parser.add_argument("--users", type=int, default=0,
                        help="N returning visitors (made before the runs) walked in turn, instead of one")
    parser.add_argument("--reads", type=float, default=0.0,
                        help="with --users: the share of requests that only read the session (GET /read)")
    parser.add_argument("--stores", default="",
                        help="also rows of SessionMiddleware on these stores, per WSGI server: sqlite "
                             "(a file of each server's; under uvicorn, ASGISessionMiddleware on it too), "
                             "redis (a private redis-server; needs redis-server and pip install redis), "
                             "postgres (a private cluster; under uvicorn too); comma-separated")
    parser.add_argument("--serve", choices=sorted(PY_APPS), help=argparse.SUPPRESS)
    parser.add_argument("--serve-asgi", choices=sorted(ASGI_APPS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port, args.app_cpu)
    if args.serve_asgi:
        return serve_asgi(args.serve_asgi, args.port)

    if not shutil.which("wrk"):
        sys.exit("missing: wrk (apt-get install -y wrk)")
    wanted = {"both": WSGI_SERVERS, "all": WSGI_SERVERS + ("uvicorn",)}.get(args.server, (args.server,))
    wsgi_servers = []
    for name in (n for n in wanted if n in WSGI_SERVERS):
        if _has(name):
            wsgi_servers.append(name)
        else:
            print(f"{name} rows skipped: pip install {name}", file=sys.stderr)
    asgi_kinds = []
    if "uvicorn" in wanted:
        if _has("uvicorn") and _has("starlette"):
            asgi_kinds = ["bare", "session", "starlette"]
            if _has("starsessions"):
                asgi_kinds.append("starsessions")
            else:
                print("starsessions row skipped: pip install starsessions", file=sys.stderr)
        else:
            print("uvicorn rows skipped: pip install uvicorn starlette", file=sys.stderr)
    if not wsgi_servers and not asgi_kinds:
        sys.exit("missing: a server (pip install waitress gunicorn uvicorn starlette)")
    node_ok = shutil.which("node") and os.path.isdir(os.path.join(INTEROP, "node_modules", "express-session"))
    if not node_ok:
        print("express rows skipped: needs node and `cd tests/interop && npm ci`", file=sys.stderr)
    kinds = ["bare", "session"]
    if _has("beaker"):
        kinds.append("beaker")
    else:
        print("Beaker rows skipped: pip install beaker", file=sys.stderr)
    if args.floor:
        kinds.append("floor")
    extra_env: dict = {}
    backends: list = []            # the private redis-server and PostgreSQL cluster started
    for store in filter(None, args.stores.split(",")):
        if store not in ("sqlite", "redis", "postgres"):
            sys.exit(f"--stores: unknown store {store!r} (sqlite, redis, postgres)")
        if store != "sqlite":
            backend = _private_server(store)
            if backend is None:
                continue
            backends.append(backend)
            extra_env["HTTP_LOAD_" + store.upper()] = backend.url
        if store == "postgres":
            from stores.postgres_store import PostgresStore
            PostgresStore(conninfo=backend.url, create_table_if_missing=True).close()
        kinds.append(store)
        if asgi_kinds and store != "redis":
            asgi_kinds += [store, *(["sqlite-writes-thread"] if store == "sqlite" else []),
                           store + "-thread"]
    sqlite_dir = tempfile.mkdtemp(prefix="http-load-") if "sqlite" in kinds else None

    specs = []
    if node_ok:
        specs += [("express bare", "express", "bare", ["node", "app.js"], {"SESSION_STORE": "none"}, INTEROP),
                  ("express + express-session", "express", "session", ["node", "app.js"],
                   {"SESSION_STORE": "memory", "SECRETS": json.dumps([SECRET])}, INTEROP)]
    for name in wsgi_servers:
        specs += [(f"{name} {PY_LABELS[kind]}", name, kind, python_command(name, kind, args.app_cpu),
                   dict(extra_env, HTTP_LOAD_SQLITE=os.path.join(sqlite_dir, f"{name}.db"))
                   if sqlite_dir else extra_env or None, None)
                  for kind in kinds]
    specs += [(f"uvicorn {ASGI_LABELS[kind]}", "uvicorn", kind,
               [sys.executable, os.path.abspath(__file__), "--serve-asgi", kind, "--port", "{port}"],
               dict(extra_env, HTTP_LOAD_SQLITE=os.path.join(sqlite_dir, f"uvicorn-{kind}.db"))
               if kind.startswith("sqlite") else extra_env or None, None)
              for kind in asgi_kinds]

    pinned = not args.no_pin and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    server_cpu, args.wrk_cpu = sorted(os.sched_getaffinity(0))[:2] if pinned else (None, None)
    servers: list[Server] = []
    fd, script = tempfile.mkstemp(suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(LUA)
    fd, args.users_script = tempfile.mkstemp(suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(LUA_USERS)
    try:
        for spec in specs:
            servers.append(Server(*spec, cpu=server_cpu))
        for server in servers:                      # warm-up (Node's JIT, Python's imports)
            run_wrk(server, script, args, 1)
        for round_no in range(args.rounds):
            order = servers if round_no % 2 == 0 else servers[::-1]
            for server in order:
                rate, cpu = run_wrk(server, script, args, args.duration)
                server.results.append(rate)
                server.cpu.append(cpu)
        if args.paired:
            bare = {s.group: s for s in servers if s.role == "bare"}
            for round_no in range(args.rounds):
                for server in servers:
                    if server.role != "bare":
                        server.paired.append(run_wrk_pair(bare[server.group], server, script, args,
                                                          args.duration))
    finally:
        for server in servers:
            server.stop()
            if getattr(server, "users_file", None):
                os.unlink(server.users_file)
        os.unlink(script)
        os.unlink(args.users_script)
        for backend in backends:
            backend.stop()
        if sqlite_dir is not None:
            shutil.rmtree(sqlite_dir, ignore_errors=True)
    report(servers, args)


def _private_server(store: str):
    """A started private redis-server or PostgreSQL cluster for --stores, or None (saying what
    to install) when it cannot run here."""
    sys.path.insert(0, ROOT)
    if store == "redis":
        from tests.redis_server import RedisServer as server, redis_server_available as available
        driver, install = "redis", "apt-get install -y redis-server && pip install redis"
    else:
        from tests.postgres_server import PostgresServer as server, postgres_server_available as available
        driver, install = "psycopg", 'apt-get install -y postgresql && pip install "psycopg[binary]"'
    if not (available() and _has(driver)):
        print(f"{store} rows skipped: {install}", file=sys.stderr)
        return None
    return server().start()


def report(servers: list[Server], args: argparse.Namespace) -> None:
    pinning = "servers pinned to one CPU, wrk to the other" if args.wrk_cpu is not None else "not pinned"
    cookie = "; bare rows sent the visitor's cookie too" if args.bare_cookie else ""
    visitor = f"{args.users} returning visitors in turn" if args.users else "a returning visitor"
    if args.users and args.reads:
        visitor += f", GET /read (only reads) for {args.reads:.0%} of requests"
    print(f"wrk -t{args.threads} -c{args.connections}, {args.rounds} interleaved rounds of "
          f"{args.duration:g} s, GET /incr as {visitor}; {pinning}{cookie}")
    paired = f" {'paired ratio':>17}" if args.paired else ""
    width = max([30] + [len(s.label) for s in servers])
    print(f"{'server':{width}} {'req/s':>7} {'ratio':>17} {'CPU us/req':>11} {'ratio':>17}  {'views':>6}{paired}")
    bare = {s.group: s for s in servers if s.role == "bare"}
    for s in servers:
        base = bare.get(s.group)
        rate_ratio = cpu_ratio = ""
        if s is not base and base is not None:
            # Per-round ratios of runs made moments apart, so load that comes and goes cancels out.
            rate_ratio = _spread([w / b for w, b in zip(s.results, base.results)])
            cpu_ratio = _spread([b / w for w, b in zip(s.cpu, base.cpu)])
        views = "-" if s.role == "bare" or s.views_after is None else str(s.views_after)
        paired = f" {_spread(s.paired) if s.paired else '':>17}" if args.paired else ""
        print(f"{s.label:{width}} {statistics.median(s.results):7.0f} {rate_ratio:>17} "
              f"{statistics.median(s.cpu) * 1e6:11.0f} {cpu_ratio:>17}  {views:>6}{paired}")
    print("req/s and CPU us/req: medians over the rounds. ratio: with-session / bare on the same server, the\n"
          "median of the per-round ratios (range in brackets); for CPU it is bare / with-session server CPU per\n"
          "request, the throughput ratio a CPU-bound server would show, less disturbed by other load on the machine.\n"
          "views: the counter the kept cookie reads after the last run (the session persisted; fewer views than\n"
          "requests means concurrent requests of one session overwrote each other's increments).")
    if args.paired:
        print("paired ratio: bare / with-session CPU per request, measured with both servers under wrk at the\n"
              "same time on the one server CPU (median of the rounds, range in brackets).")
    for s in servers:
        print(f"  {s.label:{width}} req/s per run: " + " ".join(f"{r:.0f}" for r in s.results))
    timed = [s for s in servers if s.app_cpu is not None]
    if timed:
        print("CPU per request inside the WSGI app call (its own thread), all runs: "
              + ", ".join(f"{s.label}: {s.app_cpu * 1e6:.0f} us" for s in timed))


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
