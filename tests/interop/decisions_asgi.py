"""Differential harness, ASGI side: decisions_diff.py's scenarios through ASGISessionMiddleware.

Each scenario runs in-process on asyncio with a minimal ASGI driver (an ``http`` scope with the
Cookie header as a bytes pair, ``receive`` giving one ``http.request``, ``send`` collecting
``http.response.start`` / ``http.response.body``).  The handler does the scenario's actions on
``scope["session"]`` as decisions_py.run_actions does, but with ``await session.asave()`` /
``await session.areload()`` (the plain ones raise SessionError under ASGI by design).  The
outcome has decisions_py.run_scenario's shape, so decisions_diff.normalise applies.

Compared: (a) ASGI against WSGI (decisions_py), (b) ASGI against express (decisions_node.js),
and for reference (c) WSGI against express.  Normalised away besides what normalise() does:
the order of destroy calls within a request (under ASGI regenerate()/destroy() delete the
record before the response ends, not at once: by design) -- destroys are moved, in their
order, to the end of each request's calls on both sides.

    python tests/interop/decisions_asgi.py --n 1000 --seed 20250601 [--show 1] [--no-node]
        [--store inline|coroutine|thread]   # how the store is reached (default inline, MemoryStore's way)
    python tests/interop/decisions_asgi.py --replay scenario.json
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import json
import os
import sys
import time

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import session  # noqa: E402
from tests.interop import decisions_diff, decisions_py  # noqa: E402

SECRET = decisions_py.SECRET


class RecordingAsyncMemoryStore(decisions_py.RecordingMemoryStore):
    """decisions_py's recording MemoryStore, still taken as one that never blocks (so it is
    called inline under ASGI, as MemoryStore is), with coroutine methods that go through the
    recorded plain ones: each call is recorded once, whichever the middleware uses."""

    blocking = False

    async def aget(self, sid):
        return self.get(sid)

    async def aget_text(self, sid):
        return self.get_text(sid)

    async def aset(self, sid, record):
        return self.set(sid, record)

    async def amerge(self, sid, change):
        return self.merge(sid, change)

    async def atouch(self, sid, record):
        return self.touch(sid, record)

    async def adestroy(self, sid):
        return self.destroy(sid)


class RecordingCoroutineStore(RecordingAsyncMemoryStore):
    """The same, but said to block: the middleware awaits its coroutine methods (not inline)."""

    blocking = True


# How the middleware reaches the store: inline (MemoryStore's way), through its coroutines,
# or in a thread (a store with plain methods only that may block).
STORES = {"inline": RecordingAsyncMemoryStore, "coroutine": RecordingCoroutineStore,
          "thread": decisions_py.RecordingMemoryStore}
PATH = {"store": "inline"}


class Held:
    """The environ or scope as the handler sees it in --held mode: get(key) gives the session
    the request began with, even after destroy() or the session set to None (an app holding a
    reference to it); setting goes to the real environ or scope."""

    def __init__(self, env, key):
        self.env, self.held = env, env.get(key)

    def get(self, key):
        return self.held

    def __setitem__(self, key, value):
        self.env[key] = value


def held_mode():
    """Actions (on both adapters) go on with the session first found, where the app dropped it."""
    plain = decisions_py.run_actions
    decisions_py.run_actions = lambda environ, actions, key="session": plain(Held(environ, key), actions, key)
    globals()["run_actions"] = _held_run_actions


async def _held_run_actions(scope, actions, key="session"):
    return await _run_actions(Held(scope, key), actions, key)


async def run_actions(scope, actions, key="session"):
    return await _run_actions(scope, actions, key)


async def _run_actions(scope, actions, key="session"):
    """decisions_py.run_action for each action, but save and reload awaited (asave, areload)."""
    notes = []
    for a in actions:
        s = scope.get(key)
        if s is None or a[0] not in ("save", "reload"):
            decisions_py.run_action(scope, a, key, notes)
            continue
        try:
            await getattr(s, "a" + a[0])()
            notes.append("ok")
        except session.SessionError:
            notes.append("err")
    return notes


def make_middleware(sc, store):
    state = {}

    async def app(scope, receive, send):
        await receive()
        step = sc["requests"][state["i"]]
        seen = decisions_py.found(scope["session"])
        notes = await run_actions(scope, step["actions"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({**seen, "notes": notes}).encode()})

    return session.ASGISessionMiddleware(app, store=store, **decisions_py.middleware_options(sc)), state


async def call(mw, path, cookie):
    headers = [(b"host", b"localhost")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": headers, "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 80)}
    sent_request = False
    messages = []

    async def receive():
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect during the response

    async def send(message):
        messages.append(message)

    await mw(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    set_cookies = [v.decode("latin-1") for k, v in start.get("headers", []) if k.lower() == b"set-cookie"]
    return start["status"], set_cookies, body


async def arun_scenario(sc):
    mode = PATH["store"]
    store = STORES[mode]()
    mw, state = make_middleware(sc, store)
    assert mw._inline == (mode == "inline"), mode
    assert (mode == "coroutine") == ("merge" in mw._async_calls and not mw._inline), mode
    steps = decisions_py.scenario_steps(sc, store, state)
    try:
        path, cookie = next(steps)
        while True:
            try:
                got = await call(mw, path, cookie)
            except Exception as exc:  # an exception reaching the server
                got = exc
            path, cookie = steps.send(got)
    except StopIteration as end:
        return end.value


def run_scenario(sc):
    return asyncio.run(arun_scenario(sc))


def run_all(scenarios):
    async def go():
        return [await arun_scenario(sc) for sc in scenarios]
    return asyncio.run(go())


# ---------------------------------------------------------------- comparison

def destroys_last(norm):
    """``norm`` (a normalised outcome) with each request's destroy calls moved, in order, to the end."""
    norm = copy.deepcopy(norm)
    for r in norm["requests"]:
        r["calls"] = [c for c in r["calls"] if c[0] != "destroy"] + [c for c in r["calls"] if c[0] == "destroy"]
    return norm


def without_misses_after_destroy(raw):
    """``raw`` (an outcome before normalising) without a store read that found nothing of an ID
    destroyed earlier in its request: only in --held mode, where the app reloads the session it
    destroyed (WSGI reads the store and misses; ASGI's areload() knows the deletion is pending
    and raises the same SessionError without reading)."""
    raw = copy.deepcopy(raw)
    for r in raw["requests"]:
        gone, calls = set(), []
        for c in r["calls"]:
            if c[0] == "destroy":
                gone.add(c[1])
            if not (c[0] == "get" and c[2] is None and c[1] in gone):
                calls.append(c)
        r["calls"] = calls
    return raw


HELD = {"on": False}


def outcomes(scenarios, *, node=True):
    """Per scenario {"asgi", "wsgi", "express"?}: normalised, destroys last."""
    asgi = run_all(scenarios)
    wsgi = [decisions_py.run_scenario(sc) for sc in scenarios]
    expr = decisions_diff.run_node(scenarios) if node else [None] * len(scenarios)
    out = []
    for sc, a, w, e in zip(scenarios, asgi, wsgi, expr):
        if HELD["on"]:
            a, w = without_misses_after_destroy(a), without_misses_after_destroy(w)
        o = {"asgi": destroys_last(decisions_diff.normalise(sc, dict(a, side="ours"))),
             "wsgi": destroys_last(decisions_diff.normalise(sc, dict(w, side="ours")))}
        if e is not None:
            o["express"] = destroys_last(decisions_diff.normalise(sc, e))
        out.append(o)
    return out


PAIRS = {"asgi-vs-wsgi": ("wsgi", "asgi"), "asgi-vs-express": ("express", "asgi"),
         "wsgi-vs-express": ("express", "wsgi")}


def differing(scenarios, pair, *, node=True):
    left, right = PAIRS[pair]
    return [(sc, o[left], o[right]) for sc, o in zip(scenarios, outcomes(scenarios, node=node))
            if o[left] != o[right]]


def shrink(sc, a, b, pair, *, node=True):
    while True:
        found = differing(list(decisions_diff.smaller(sc)), pair, node=node)
        if not found:
            return sc, a, b
        sc, a, b = found[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20250601)
    ap.add_argument("--known", action="store_true")
    ap.add_argument("--show", type=int, default=1)
    ap.add_argument("--no-node", action="store_true", help="compare ASGI with WSGI only")
    ap.add_argument("--replay")
    ap.add_argument("--held", action="store_true",
                    help="actions go on with the session first found, after destroy() or None (ASGI vs WSGI only)")
    ap.add_argument("--store", choices=sorted(STORES), default="inline",
                    help="how the middleware reaches the recording store (default: inline, as MemoryStore)")
    args = ap.parse_args()
    node = not args.no_node and not args.held
    if args.held:
        held_mode()
        HELD["on"] = True
    PATH["store"] = args.store
    if args.replay:
        with open(args.replay) as f:
            scs = json.load(f)
        scs = scs if isinstance(scs, list) else [scs]
        for sc, o in zip(scs, outcomes(scs, node=node)):
            for pair, (l, r) in PAIRS.items():
                if l in o and r in o:
                    print(f"--- {pair}: " + ("same" if o[l] == o[r] else "DIFFERENT"))
                    print(decisions_diff.describe(sc, o[l], o[r]).replace(" express:", f" {l}:")
                          .replace(" ours:   ", f" {r}:"))
        return
    scs = decisions_diff.gen_scenarios(args.n, args.seed, known=args.known)
    t0 = time.time()
    outs = outcomes(scs, node=node)
    requests = sum(len(s["requests"]) for s in scs)
    print(f"{len(scs)} scenarios, {requests} requests in {time.time() - t0:.1f}s", file=sys.stderr)
    failed = False
    for pair, (l, r) in PAIRS.items():
        if l not in outs[0]:
            continue
        found = [(sc, o[l], o[r]) for sc, o in zip(scs, outs) if o[l] != o[r]]
        print(f"\n##### {pair}: {len(found)} of {len(scs)} differ")
        failed |= bool(found)
        classes = collections.defaultdict(list)
        for sc, a, b in found:
            classes[decisions_diff.classify(a, b)].append((sc, a, b))
        for key, items in sorted(classes.items(), key=lambda kv: -len(kv[1])):
            print(f"\n=== {len(items)} x {key}  [{l} | {r}]")
            for sc, a, b in sorted(items, key=lambda t: decisions_diff.size(t[0]))[:args.show]:
                print(decisions_diff.describe(*shrink(sc, a, b, pair, node=node))
                      .replace(" express:", f" {l}:").replace(" ours:   ", f" {r}:"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
