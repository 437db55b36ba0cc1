"""CPU instructions per operation, counted by valgrind's callgrind: a measure no neighbour disturbs.

    apt-get install -y valgrind
    python bench/instructions.py                 # every case below (about 25 min)
    python bench/instructions.py session floor   # only these cases

On a shared machine timings swing by 2x from one minute to the next; the
number of instructions an operation executes does not.  It is not time (a
cache miss costs more than an add), so the timed benchmarks stay the judges
of speed; this one tells whether a change to the code made it do less.

Each case runs its operation N and 6N times in a fresh interpreter under
callgrind; the difference over 5N is the count per operation, so start-up
and imports cancel out.  Cases:

    bare        bench/http_load.py's bare WSGI app, called in-process by bench/overhead.py's driver
    session     the same app behind SessionMiddleware: a returning visitor increments a counter
    floor       the same behind http_load's no-library floor (find cookie, decode, encode, store)
    waitress-bare, waitress-session, waitress-floor (and gunicorn-...)
                the same three apps served by waitress or gunicorn as bench/http_load.py
                runs them, under callgrind, over real HTTP: the whole server's instructions
                per request, the noise-free counterpart of http_load's req/s ratio (a client
                outside callgrind sends keep-alive GET /incr, keeping the cookie as wrk's
                script does; gunicorn's master and worker are counted together)
    waitress-bare+cookie, gunicorn-bare+cookie
                the bare app sent a returning visitor's Cookie header: what the server
                itself spends reading one, apart from what the session spends
    deployed-bare, deployed-floor-memory, deployed-ours-memory (and -sqlite)
                bench/deployed.py's apps, in-process, over 1,000 users made first (one /incr
                each), a request that only reads (/read), as 90% of its reads mix do; with
                /incr appended (deployed-ours-sqlite/incr), one that increments
    asgi-bare, asgi-ours, asgi-floor, asgi-starsessions
                bench/asgi_overhead.py's rows (bare Starlette; + ASGISessionMiddleware with a
                MemoryStore; + its hand-written floor; + starsessions), one request each
                through its driver on one event loop: a returning visitor increments a counter
    select      raw sqlite3 SELECT by primary key (store_ops's ceiling)
    select+json the same with json.loads
    sqlite-get  SQLiteStore.get
"""
from __future__ import annotations

import http.client
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import http_load  # bench/ is sys.path[0] when this file runs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N = 1000

# Each case: Python code run with `n` in scope; `op()` is timed after `setup` and 200 warm-up calls.
WSGI_SETUP = """
import http_load, overhead
app = http_load.PY_APPS[KIND]()
template = dict(overhead.TEMPLATE, PATH_INFO="/incr")
cookies = overhead.set_cookies(overhead.request(app, template)[1])  # the first visit
if cookies:
    template["HTTP_COOKIE"] = cookies[0].split(";")[0]
op = lambda: overhead.request(app, template)  # bench/overhead.py's driver: one request
"""

STORE_SETUP = """
import tempfile, store_ops
folder = tempfile.mkdtemp()
ops = MAKE(folder)
record = store_ops.typical_record()
for sid in store_ops.IDS:
    ops.set(sid, record)
ids, i = store_ops.IDS, [0]
def op():
    i[0] += 1
    return ops.get(ids[i[0] % 1000])
"""

DEPLOYED_SETUP = """
import os, tempfile, deployed, overhead
os.environ["BENCH_SQLITE"] = os.path.join(tempfile.mkdtemp(), "sessions.db")
app = deployed.APPS[KIND](STORE)
template = dict(overhead.TEMPLATE, PATH_INFO="/incr")
cookies = [overhead.set_cookies(overhead.request(app, template)[1]) for _ in range(1000)]
templates = [dict(template, PATH_INFO=REQUEST_PATH, HTTP_COOKIE=c[0].split(";")[0]) if c else
             dict(template, PATH_INFO=REQUEST_PATH) for c in cookies]
i = [0]
def op():
    i[0] += 1
    return overhead.request(app, templates[i[0] % 1000])
"""

CASES = {
    "bare": WSGI_SETUP.replace("KIND", "'bare'"),
    "session": WSGI_SETUP.replace("KIND", "'session'"),
    "floor": WSGI_SETUP.replace("KIND", "'floor'"),
    "select": STORE_SETUP.replace("MAKE", "(lambda tmp: store_ops.raw_sqlite(tmp, False))"),
    "select+json": STORE_SETUP.replace("MAKE", "(lambda tmp: store_ops.raw_sqlite(tmp, True))"),
    "sqlite-get": STORE_SETUP.replace("MAKE", "store_ops.make_sqlite_store"),
}
CASES.update({f"deployed-{kind}{store and '-' + store}{path}":
              DEPLOYED_SETUP.replace("KIND", repr(kind)).replace("STORE", repr(store or "memory"))
              .replace("REQUEST_PATH", repr(path or "/read"))
              for kind, store in (("bare", ""), ("floor", "memory"), ("ours", "memory"),
                                  ("floor", "sqlite"), ("ours", "sqlite"))
              for path in ("", "/incr")})

ASGI_SETUP = """
import argparse, asyncio, asgi_overhead
rows = asgi_overhead.rows(argparse.Namespace(redis=False, postgres=False), [])
row = next(row for row in rows if row.label == LABEL)
loop = asyncio.new_event_loop()
op = lambda: loop.run_until_complete(asgi_overhead.drive(row, 1))
"""

CASES.update({f"asgi-{name}": ASGI_SETUP.replace("LABEL", repr(label))
              for name, label in (("bare", "bare Starlette"), ("ours", "+ ours, MemoryStore"),
                                  ("floor", "+ floor"), ("starsessions", "+ starsessions (memory)"))})

SERVER_CASES = {f"{server}-{kind}": (server, kind.split("+")[0])
                for server in ("waitress", "gunicorn")
                for kind in ("bare", "bare+cookie", "session", "floor")}

RUNNER = """
import sys
sys.path[:0] = [{root!r}, {here!r}]
{setup}
for _ in range(200):
    op()
for _ in range({n}):
    op()
"""


def count(setup: str, n: int) -> int:
    """Instructions callgrind counts for a whole interpreter running ``op`` n times."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RUNNER.format(root=ROOT, here=HERE, setup=setup, n=n))
    try:
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                              sys.executable, f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode or not found:
        raise RuntimeError(f"no count in callgrind's output:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def count_server(server: str, kind: str, n: int, cookie: str = "") -> int:
    """Instructions callgrind counts for a WSGI server serving ``n`` returning-visitor requests
    (gunicorn's master and worker processes together)."""
    port = http_load._free_port()
    command = [part.replace("{port}", str(port)) for part in http_load.python_command(server, kind, False)]
    if server == "gunicorn":  # a worker under callgrind runs ~50x slower: give it time to stop
        command += ["--timeout", "600", "--graceful-timeout", "120"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            # A shell's background job ignores SIGINT, and children inherit that.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        http_load._wait_port(port, proc, log, timeout=300)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Cookie": cookie} if cookie else {}
        for _ in range(200 + n):
            conn.request("GET", "/incr", headers=headers)
            resp = conn.getresponse()
            resp.read()
            set_cookie = resp.getheader("Set-Cookie")
            if set_cookie:
                headers["Cookie"] = set_cookie.split(";", 1)[0]
        conn.close()
    finally:
        # waitress stops on KeyboardInterrupt, gunicorn's master on SIGTERM; callgrind reports.
        proc.send_signal(signal.SIGINT if server == "waitress" else signal.SIGTERM)
        try:
            proc.wait(180)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.seek(0)
    out = log.read().decode(errors="replace")
    found = re.findall(r"Collected : (\d+)", out)
    if not found:
        raise RuntimeError(f"no count in callgrind's output:\n{out[-2000:]}")
    return sum(map(int, found))


SERVER_N = 300


def main() -> None:
    if not shutil.which("valgrind"):
        sys.exit("missing: valgrind (apt-get install -y valgrind)")
    names = sys.argv[1:] or [*CASES, *SERVER_CASES]
    unknown = [name for name in names if name not in CASES and name not in SERVER_CASES]
    if unknown:
        sys.exit(f"unknown case(s): {', '.join(unknown)} (known: {', '.join([*CASES, *SERVER_CASES])})")
    print(f"CPU instructions per operation (callgrind; {sys.executable}, Python {sys.version.split()[0]})")
    per_op = {}
    for name in names:
        if name in SERVER_CASES:
            # bare+cookie: the bare app sent a returning visitor's Cookie header, to separate what
            # the server spends reading one from what the session spends.
            server, kind = SERVER_CASES[name]
            cookie = http_load.VISITOR_COOKIE if name.endswith("+cookie") else ""
            per_op[name] = (count_server(server, kind, 6 * SERVER_N, cookie)
                            - count_server(server, kind, SERVER_N, cookie)) // (5 * SERVER_N)
        else:
            per_op[name] = (count(CASES[name], 6 * N) - count(CASES[name], N)) // (5 * N)
        print(f"  {name:20} {per_op[name]:>9,}", flush=True)
    if "bare" in per_op:
        for name, what in (("session", "SessionMiddleware"), ("floor", "the no-library floor")):
            if name in per_op:
                print(f"  {name} - bare: {per_op[name] - per_op['bare']:,} (what {what} adds)")
    for server, bare, name in itertools.product(("waitress", "gunicorn"), ("bare", "bare+cookie"),
                                                ("session", "floor")):
        bare, name = f"{server}-{bare}", f"{server}-{name}"
        if bare in per_op and name in per_op:
            print(f"  {bare} / {name}: {per_op[bare] / per_op[name]:.2f}"
                  " (the req/s ratio of a CPU-bound server, were every instruction as costly)")
    for store, path in itertools.product(("memory", "sqlite"), ("", "/incr")):
        ours, floor = f"deployed-ours-{store}{path}", f"deployed-floor-{store}{path}"
        if ours in per_op and floor in per_op:
            print(f"  {ours} - {floor}: {per_op[ours] - per_op[floor]:,}")
    if "asgi-bare" in per_op:
        over = {name: per_op[f"asgi-{name}"] - per_op["asgi-bare"]
                for name in ("ours", "floor", "starsessions") if f"asgi-{name}" in per_op}
        for name, value in over.items():
            print(f"  asgi-{name} - asgi-bare: {value:,}")
        if "starsessions" in over:
            for name in ("ours", "floor"):
                if name in over:
                    print(f"  asgi-{name}'s overhead / starsessions': {over[name] / over['starsessions']:.2f}")
    if "select" in per_op:
        for name in ("sqlite-get", "select+json"):
            if name in per_op:
                print(f"  select / {name}: {per_op['select'] / per_op[name]:.0%}")


if __name__ == "__main__":
    main()
