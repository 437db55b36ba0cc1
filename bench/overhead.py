"""Per-request overhead of SessionMiddleware, side by side with a bare app and Beaker.

Runs every contender in-process through the same minimal WSGI driver and
prints microseconds per request (median of interleaved runs), the overhead
over the bare app, our overhead as a fraction of Beaker's, and the "floor":
what just parsing, unsigning, decoding, encoding and signing one cookie and
record costs in the same run.  Beaker rows appear when ``beaker`` is
installed (``pip install beaker``).  The "set()" row is ours on the same
MemoryStore offered without merge(), so each save writes the whole record as it
did before merge(): in (c), a returning visitor who writes, the two rows differ
only in that write, and merge's overhead should stay within 10% of set()'s.

    python bench/overhead.py            # full run: about 10 s of CPU (longer on a busy machine)
    python bench/overhead.py --quick    # about a quarter of that
"""
from __future__ import annotations

import argparse
import gc
import logging
import http.cookies
import json
import os
import statistics
import sys
import time
from typing import Callable, Optional
from urllib.parse import unquote

# `python bench/overhead.py` puts bench/ first on sys.path; the module under test is in the repo root.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import session as sx  # noqa: E402

try:
    from beaker.middleware import SessionMiddleware as BeakerMiddleware
except ImportError:  # the Beaker rows are skipped
    BeakerMiddleware = None

SECRET = "keyboard cat, a secret long enough to be realistic"
MAX_AGE = 3600          # seconds: a typical app's cookie lifetime, for both libraries
VIEWS = 41              # what the returning visitor's stored session holds
# CPU time of this process: on a shared machine, time spent descheduled is not ours to count.
CLOCK = time.process_time
SLICES = 10             # alternations of the contenders within one run
SCENARIOS = {
    "a": "new visitor, app never touches the session (no cookie sent)",
    "b": 'returning visitor, app reads session["views"]',
    "c": 'returning visitor, app increments session["views"]',
}
TEMPLATE = {  # what a WSGI server puts in every environ; copied once per request
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000",
    "HTTP_USER_AGENT": "bench/1.0", "HTTP_ACCEPT": "*/*",
    "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": None,
    "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


# ---------------------------------------------------------------- the apps and the driver

def list_body(chunk: bytes) -> list:
    return [chunk]


def generator_body(chunk: bytes):
    """A body the server must iterate (as most frameworks return), not a list."""
    yield chunk


BODY = list_body        # what the apps return; main() switches it for --body generator


def make_app(scenario: str, key: str, probe: list) -> Callable:
    """The app of one scenario, reading its session at ``environ[key]``; ``probe[0]`` = views seen."""
    body = BODY
    if scenario == "a":
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return body(b"ok")
    elif scenario == "b":
        def app(environ, start_response):
            probe[0] = environ[key]["views"]
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return body(b"ok")
    else:
        def app(environ, start_response):
            sess = environ[key]
            sess["views"] = probe[0] = sess["views"] + 1
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return body(b"ok")
    return app



def seed_app(key: str) -> Callable:
    """The first visit: stores ``views`` so later requests are returning visitors."""
    def app(environ, start_response):
        environ[key]["views"] = VIEWS
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"seeded"]
    return app


def drive(app: Callable, template: dict, n: int) -> float:
    """Run ``n`` requests as a WSGI server would; return µs per request.  Same code for every contender."""
    slot = [None]

    def start_response(status, headers, exc_info=None):
        slot[0] = headers
        return _write

    copy = template.copy
    perf = CLOCK
    t0 = perf()
    for _ in range(n):
        body = app(copy(), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (perf() - t0) / n * 1e6


def request(app: Callable, template: dict) -> tuple:
    """One request through the same steps as ``drive``; returns (environ, headers, body)."""
    slot = [None]

    def start_response(status, headers, exc_info=None):
        slot[0] = headers
        return _write

    environ = template.copy()
    body = app(environ, start_response)
    data = b"".join(body)
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return environ, slot[0], data


def _write(data: bytes) -> None:
    """The write() callable start_response returns (the apps here never call it)."""


def set_cookies(headers: list) -> list:
    return [v for k, v in headers if k.lower() == "set-cookie"]


# ---------------------------------------------------------------- contenders, each checked before timing

class Contender:
    """One row of the table: a ready WSGI app per scenario, its environ template and an after-run check."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.apps: dict = {}
        self.templates: dict = {}
        self.probes: dict = {}
        self.after: dict = {}   # scenario -> callable(total requests so far) raising AssertionError


def bare() -> Contender:
    """The app alone; (b) and (c) get a plain dict where the session would be."""
    c = Contender("bare app")
    for s in SCENARIOS:
        probe = [None]
        c.apps[s] = make_app(s, "session", probe)
        c.templates[s] = dict(TEMPLATE) if s == "a" else dict(TEMPLATE, session={"views": VIEWS})
        c.probes[s] = probe
    for s in SCENARIOS:
        environ, headers, body = request(c.apps[s], c.templates[s])
        assert body == b"ok" and not set_cookies(headers)
    c.after = {"a": lambda n: None, "b": lambda n: None, "c": lambda n: None}
    return c


class WholeRecordStore:
    """A MemoryStore offered to the middleware without its merge(): not a session.Store, so
    each save writes the whole record with set(), as before merge() (a Store subclass that
    lacks merge() would get Store's default merge instead, a get and a set).  Its methods are
    the MemoryStore's own bound methods, so only merge-or-set differs between the rows."""

    def __init__(self, store: sx.MemoryStore) -> None:
        self.get, self.get_text, self.set = store.get, store.get_text, store.set
        self.touch, self.destroy, self.length = store.touch, store.destroy, store.length


def ours(whole_record: bool = False) -> Contender:
    """session.SessionMiddleware with a MemoryStore and a max_age cookie; ``whole_record``:
    the store offered without merge(), so saves go through set()."""
    c = Contender("ours, set() (before merge)" if whole_record else "ours (MemoryStore)")
    name = "connect.sid"
    for s in SCENARIOS:
        store = sx.MemoryStore()
        options = {"max_age": MAX_AGE}
        probe = [None]
        app = sx.SessionMiddleware(make_app(s, "session", probe), secret=SECRET,
                                   store=WholeRecordStore(store) if whole_record else store,
                                   cookie=options)
        assert app._merges is not whole_record, "the row would not measure what it says"
        template = dict(TEMPLATE)
        c.apps[s], c.probes[s], c.templates[s] = app, probe, template
        if s == "a":
            environ, headers, body = request(app, template)
            assert body == b"ok", body
            assert not set_cookies(headers), f"(a) must send no cookie: {headers}"
            assert store.length() == 0, "(a) must store nothing"
            c.after[s] = _check_empty(store)
            continue
        seeder = sx.SessionMiddleware(seed_app("session"), secret=SECRET, store=app.store,
                                      cookie=options)
        seed_env, headers, _ = request(seeder, template)
        sid = seed_env["session"].id
        (cookie,) = set_cookies(headers)
        pair = cookie.split(";", 1)[0]
        assert pair.startswith(name + "=s%3A" + sid + "."), pair
        template["HTTP_COOKIE"] = pair
        environ, headers, body = request(app, template)
        assert environ["session"].id == sid, "the cookie did not load the seeded session"
        assert store.length() == 1
        if s == "b":
            assert probe[0] == VIEWS, probe
            assert not set_cookies(headers), "(b) unchanged session: express sends no cookie"
            assert ("Vary", "Cookie") in headers, headers
        else:
            assert probe[0] == VIEWS + 1, probe
            (again,) = set_cookies(headers)
            assert again.split(";", 1)[0] == pair, "(c) must re-send the same signed ID"
            assert store.get(sid)["views"] == VIEWS + 1
            request(app, template)
            assert probe[0] == VIEWS + 2 and store.get(sid)["views"] == VIEWS + 2, "(c) not persisted"
        c.after[s] = _check_views(s, probe, lambda sid=sid, store=store: store.get(sid)["views"])
    return c


def beaker(serializer: str) -> Optional[Contender]:
    """Beaker's SessionMiddleware: memory backend, cookie signed with session.secret (HMAC-SHA1)."""
    if BeakerMiddleware is None:
        return None
    from beaker.container import MemoryNamespaceManager
    c = Contender(f"Beaker ({serializer})")
    name = "beaker.session.id"
    config = {
        "session.type": "memory",
        "session.key": name,
        # For server-side sessions Beaker signs the ID cookie with session.secret
        # (SignedCookie); validate_key/encrypt_key only apply to type="cookie".
        "session.secret": SECRET,
        "session.cookie_expires": MAX_AGE,
        "session.httponly": True,
        "session.data_serializer": serializer,
        # auto: save when changed without an explicit save() call, as ours does,
        # so the app code is identical for every contender.
        "session.auto": True,
    }
    key = "beaker.session"
    for s in SCENARIOS:
        probe = [None]
        app = BeakerMiddleware(make_app(s, key, probe), config)
        template = dict(TEMPLATE)
        c.apps[s], c.probes[s], c.templates[s] = app, probe, template
        if s == "a":
            before = len(MemoryNamespaceManager.namespaces.dict)
            environ, headers, body = request(app, template)
            assert body == b"ok" and not set_cookies(headers), headers
            assert not environ[key].accessed(), "(a) Beaker must not create a session"
            assert len(MemoryNamespaceManager.namespaces.dict) == before
            continue
        seeder = BeakerMiddleware(seed_app(key), config)
        seed_env, headers, _ = request(seeder, template)
        sid = seed_env[key].id
        (cookie,) = set_cookies(headers)
        pair = cookie.strip().split(";", 1)[0]
        assert pair.startswith(name + "=") and pair.endswith(sid), pair
        template["HTTP_COOKIE"] = pair
        environ, headers, body = request(app, template)
        sess = environ[key]._session()
        assert sess.id == sid and not sess.is_new, "Beaker did not load the seeded session"
        assert probe[0] == (VIEWS if s == "b" else VIEWS + 1), probe

        def stored(pair=pair):
            loader = BeakerMiddleware(lambda e, r: [], config)
            env = dict(TEMPLATE, HTTP_COOKIE=pair)
            loader(env, lambda *a: None)
            return env[key]._session().get("views")
        if s == "c":
            assert stored() == VIEWS + 1, "(c) Beaker did not persist the increment"
            request(app, template)
            assert probe[0] == VIEWS + 2 == stored(), "(c) Beaker round-trip failed"
        c.after[s] = _check_views(s, probe, stored)
    sessions = len(MemoryNamespaceManager.namespaces.dict)

    def check_a(n: int) -> None:
        assert len(MemoryNamespaceManager.namespaces.dict) == sessions, "(a) Beaker stored a session"
    c.after["a"] = check_a
    return c


def find_cookie(header: str, name: str):
    """Our cookie's value in a Cookie header, as the middleware finds and decodes it."""
    raw = sx._raw_cookie(header, name)
    return None if raw is None else sx._decode_uri_component(raw)


def _check_empty(store: sx.Store) -> Callable:
    def check(n: int) -> None:
        assert store.length() == 0, "(a) stored a session"
    return check


def _check_views(scenario: str, probe: list, stored: Callable[[], int]) -> Callable:
    """After timing: (b) saw VIEWS throughout, (c) counted every request and the store agrees."""
    start = probe[0]

    def check(n: int) -> None:
        expected = start if scenario == "b" else start + n
        assert probe[0] == expected, f"({scenario}) app saw views={probe[0]}, expected {expected}"
        assert stored() == expected, f"({scenario}) store holds {stored()}, expected {expected}"
    return check


# ---------------------------------------------------------------- the floor

def floor_ops(ours_c: Contender) -> tuple:
    """The unavoidable work of a returning visitor, as zero-argument callables; and the record's size."""
    header = ours_c.templates["c"]["HTTP_COOKIE"]
    name = "connect.sid"
    value = find_cookie(header, name)
    assert value is not None and value.startswith("s:")
    signed = value[2:]
    sid = sx.unsign(signed, SECRET)
    assert sid is not None
    record = ours_c.apps["c"].store.get(sid)
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    assert http.cookies.SimpleCookie(header)[name].value == header.split("=", 1)[1]

    def parse_stdlib():
        return unquote(http.cookies.SimpleCookie(header)[name].value)
    return {
        "parse cookie: session._raw_cookie + decode": lambda: find_cookie(header, name),
        "parse cookie: http.cookies + unquote": parse_stdlib,
        "unsign (session.unsign)": lambda: sx.unsign(signed, SECRET),
        "json.loads(record)": lambda: json.loads(text),
        "json.dumps(record)": lambda: dumps(record),
        "sign (session.sign)": lambda: sx.sign(sid, SECRET),
    }, len(text)


def time_op(fn: Callable, n: int) -> float:
    perf = CLOCK
    t0 = perf()
    for _ in range(n):
        fn()
    return (perf() - t0) / n * 1e6


# ---------------------------------------------------------------- running and printing

def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (about a quarter of the time)")
    parser.add_argument("--runs", type=int, help="interleaved runs per contender (default 7, quick 5)")
    parser.add_argument("--requests", type=int,
                        help="requests per run in (b) and (c); (a) runs 4x as many (default 5000)")
    parser.add_argument("--beaker-serializer", choices=("pickle", "json"), default="pickle",
                        help="Beaker's data_serializer (default: Beaker's own default, pickle)")
    parser.add_argument("--wall", action="store_true",
                        help="time with the wall clock (perf_counter) instead of process CPU time")
    parser.add_argument("--profile", choices=tuple(SCENARIOS), metavar="{a,b,c}",
                        help="instead of the table, cProfile our middleware in one scenario")
    parser.add_argument("--body", choices=("list", "generator"), default="list",
                        help="what the apps return: a list (default) or a generator")
    args = parser.parse_args(argv)
    global BODY, CLOCK
    BODY = list_body if args.body == "list" else generator_body
    if args.wall:
        CLOCK = time.perf_counter
    runs = args.runs or (5 if args.quick else 7)
    per_run = args.requests or (1500 if args.quick else 5000)
    counts = {"a": per_run * 4, "b": per_run, "c": per_run}

    if args.profile:
        return profile(ours(), args.profile, args.requests or 20000)
    contenders = [bare(), ours()]
    theirs = beaker(args.beaker_serializer)
    if theirs is not None:
        contenders.append(theirs)
    quiet = sx.log.level
    sx.log.setLevel(logging.ERROR)  # its warning, at construction, that the store has no merge()
    whole = ours(whole_record=True)
    sx.log.setLevel(quiet)
    contenders.append(whole)
    ops, record_len = floor_ops(contenders[1])

    times = {(c.label, s): [] for c in contenders for s in SCENARIOS}
    op_times = {op: [] for op in ops}
    done = {(c.label, s): 0 for c in contenders for s in SCENARIOS}
    for c in contenders:  # warm up: caches, first-call costs
        for s in SCENARIOS:
            drive(c.apps[s], c.templates[s], 200)
            done[c.label, s] += 200
    started = time.perf_counter()
    for r in range(runs):
        for s in SCENARIOS:
            # Each run is cut into SLICES rounds that alternate the contenders (order rotated
            # every round), so a burst of load from a neighbour lands on all of them alike.
            gc.collect()
            spent = dict.fromkeys([c.label for c in contenders], 0.0)
            chunk = counts[s] // SLICES
            for k in range(SLICES):
                i = (r + k) % len(contenders)
                for c in contenders[i:] + contenders[:i]:
                    spent[c.label] += drive(c.apps[s], c.templates[s], chunk)
            for c in contenders:
                times[c.label, s].append(spent[c.label] / SLICES)
                done[c.label, s] += chunk * SLICES
        for op, fn in ops.items():
            op_times[op].append(time_op(fn, 2000))
    elapsed = time.perf_counter() - started
    for c in contenders:
        for s in SCENARIOS:
            c.after[s](done[c.label, s])   # every request really did the session work

    floor = {op: statistics.median(v) for op, v in op_times.items()}
    floor_total = sum(v for op, v in floor.items() if "http.cookies" not in op)
    floor_stdlib = sum(v for op, v in floor.items() if "_raw_cookie" not in op)
    results = {}
    spreads = {}
    for s in SCENARIOS:
        base = times["bare app", s]
        for c in contenders:
            diffs = [x - b for x, b in zip(times[c.label, s], base)]
            results[c.label, s] = statistics.median(diffs)
            q = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
            spreads[c.label, s] = (q[0], q[2])

    print(f"Session middleware overhead, in-process, µs per request: median of {runs} runs of "
          f"{counts['b']} requests ({counts['a']} in (a)), contenders alternating every "
          f"{counts['b'] // SLICES} ({counts['a'] // SLICES}).")
    print(f"Python {sys.version.split()[0]}, {_beaker_version()}, cookie max_age={MAX_AGE}s, "
          f"our MemoryStore, Beaker memory backend with signed cookies, apps return a "
          f"{args.body}; took {elapsed:.0f} s.")
    print("overhead = median over runs of (contender - bare app in the same run); "
          "p25-p75 = its spread over runs; "
          f"clock: {'wall (perf_counter)' if CLOCK is time.perf_counter else 'process CPU time'}\n")
    print(f"Floor, same run (median µs per call; record = {record_len} bytes of JSON):")
    for op, v in floor.items():
        print(f"    {op:40} {v:6.2f}")
    print(f"    {'floor total (our parser)':40} {floor_total:6.2f}   <- used for the targets")
    print(f"    {'floor total (http.cookies parser)':40} {floor_stdlib:6.2f}\n")

    mine = contenders[1].label
    width = max(len(c.label) for c in contenders)
    verdicts = []
    print(f"{'':4}{'contender':{width}}  {'µs/req':>8}  {'overhead':>8}  {'p25-p75':>13}  "
          f"{'ours/Beaker':>11}")
    for s, title in SCENARIOS.items():
        print(f"({s}) {title}")
        for c in contenders:
            shown = f"{'-':>8}" if c is contenders[0] else f"{results[c.label, s]:8.2f}"
            spread = "" if c is contenders[0] else "{:5.1f} -{:5.1f}".format(*spreads[c.label, s])
            ratio = ""
            if c is contenders[1] and theirs is not None and results[theirs.label, s] > 0:
                ratio = f"{results[mine, s] / results[theirs.label, s]:11.2f}"
            print(f"{'':4}{c.label:{width}}  {statistics.median(times[c.label, s]):8.2f}  {shown}  "
                  f"{spread:>13}  {ratio}")
        theirs_over = results[theirs.label, s] if theirs is not None else None
        targets = []
        if s == "a":
            targets.append(("overhead <= Beaker's", theirs_over))
        else:
            targets.append(("overhead <= half of Beaker's",
                            None if theirs_over is None else theirs_over / 2))
            targets.append(("overhead <= 2x floor", 2 * floor_total))
        if s == "c":
            targets.append(("overhead <= 1.10x set()'s", 1.10 * results[whole.label, s]))
        for text, limit in targets:
            if limit is None:
                print(f"{'':8}target {text:30} n/a (Beaker not installed)")
                continue
            ok = results[mine, s] <= limit
            verdicts.append(ok)
            print(f"{'':8}target {text:30} ours {results[mine, s]:6.2f} <= {limit:6.2f} µs  "
                  f"{'PASS' if ok else 'MISS'}")
        if s == "c":
            print(f"{'':8}merge / set() = {results[mine, s] / results[whole.label, s]:.2f} "
                  "(overhead over the bare app)")
        if s != "a":
            print(f"{'':8}ours = {results[mine, s] / floor_total:.2f}x the floor "
                  f"({results[mine, s] / floor_stdlib:.2f}x the http.cookies floor)")
    print(f"\n{sum(verdicts)} of {len(verdicts)} targets met.")
    return 0


def profile(c: Contender, scenario: str, n: int) -> int:
    """Where our time goes in one scenario: cProfile's top functions (it inflates small calls)."""
    import cProfile
    import pstats
    app, template = c.apps[scenario], c.templates[scenario]
    drive(app, template, 500)
    plain = min(drive(app, template, n // 4) for _ in range(3))
    profiler = cProfile.Profile()
    profiler.runcall(drive, app, template, n)
    print(f"({scenario}) {SCENARIOS[scenario]}: {plain:.2f} µs per request unprofiled; "
          f"profile of {n} requests:")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(25)
    return 0


def _beaker_version() -> str:
    if BeakerMiddleware is None:
        return "Beaker not installed"
    import beaker
    return f"Beaker {beaker.__version__}"


if __name__ == "__main__":
    sys.exit(main())
