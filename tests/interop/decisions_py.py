"""Differential harness, Python side: the scenarios decisions_node.js runs, through SessionMiddleware.

A scenario: {"options": {resave, saveUninitialized, rolling, unset, maxAge (ms or null), httpOnly,
sameSite (null, true, "lax", "strict"), name}, "requests": [{"cookie": "jar"|"none"|"old"|"unknown",
"actions": [[verb, args...], ...]}, ...]}.  The cookie a request sends: the browser's (jar), none,
the first one the session got (old), or one signed right for an ID the store never held (unknown).
Verbs: read k, write k v, writeSame k (k set to its own value, if present), append k (push 1 onto
a list, else set [1]), delete k, regenerate, destroy, null (the session set to None), touch, save,
reload, maxAge ms|null, expiresIn ms (cookie.expires = now + ms), httpOnly bool, sameSite str,
move k (taken out and put back), clear, nothing.

Each request is run in-process (tests.harness.call_wsgi) with a browser-like jar; the outcome has
the same shape as the Node side's: per request the status, Set-Cookie headers, store calls (get /
set / touch / destroy, with what the store holds after a write), what the handler saw, the cookie
sent and the clock (ms) before and after it (at, done); then the store's records (final) and the
clock then (finalAt).  decisions_diff.py compares the two; by hand:

    python tests/interop/decisions_py.py < scenarios.json > ours.json
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time

if not __package__:  # run as a script, or imported by one: session and tests from the repo root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import session  # noqa: E402
from tests.harness import SetCookie, call_wsgi, cookie_value, make_environ  # noqa: E402

SECRET = "keyboard cat"


class RecordingMemoryStore(session.MemoryStore):
    """MemoryStore recording each outer call: get (get_text), set (merge), touch, destroy."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []
        self._depth = 0

    def _stored(self, sid):
        text = session.MemoryStore.get_text(self, sid)
        return None if text is None else json.loads(text)

    def _outer(self, kind, sid, fn, *args, after=None):
        outer = self._depth == 0
        self._depth += 1
        try:
            result = fn(*args)
        finally:
            self._depth -= 1
        if outer:
            self.calls.append([kind, sid, after(result) if after else None])
        return result

    def get(self, sid):
        return self._outer("get", sid, super().get, sid, after=lambda r: None if r is None else "hit")

    def get_text(self, sid):
        return self._outer("get", sid, super().get_text, sid, after=lambda r: None if r is None else "hit")

    def set(self, sid, record):
        return self._outer("set", sid, super().set, sid, record, after=lambda r: self._stored(sid))

    def merge(self, sid, change):
        return self._outer("set", sid, super().merge, sid, change,
                           after=lambda r: self._stored(sid) if r else "REFUSED")

    def touch(self, sid, record):
        return self._outer("touch", sid, super().touch, sid, record, after=lambda r: self._stored(sid))

    def destroy(self, sid):
        return self._outer("destroy", sid, super().destroy, sid)


def run_actions(environ, actions, key="session"):
    notes = []
    for a in actions:
        run_action(environ, a, key, notes)
    return notes


def run_action(environ, a, key, notes):
    """One action on the session at environ[key] (an ASGI scope too: decisions_asgi.py), its
    result, if any, appended to ``notes``."""
    s = environ.get(key)
    if s is None:
        notes.append("skip")
        return
    verb = a[0]
    if verb == "read":
        notes.append(s.get(a[1]))
    elif verb == "write":
        s[a[1]] = json.loads(json.dumps(a[2]))
    elif verb == "writeSame":
        if a[1] in s:
            s[a[1]] = s[a[1]]
    elif verb == "append":
        if isinstance(s.get(a[1]), list):
            s[a[1]].append(1)
        else:
            s[a[1]] = [1]
    elif verb == "delete":
        if a[1] in s:
            del s[a[1]]
    elif verb == "regenerate":
        s.regenerate()
        notes.append("ok")
    elif verb == "destroy":
        s.destroy()
        notes.append("ok")
    elif verb == "null":
        environ[key] = None
    elif verb == "touch":
        s.touch()
    elif verb in ("save", "reload"):
        try:
            getattr(s, verb)()
            notes.append("ok")
        except session.SessionError:
            notes.append("err")
    elif verb == "maxAge":
        s.cookie.max_age = None if a[1] is None else a[1] / 1000
    elif verb == "move":
        if a[1] in s:
            v = s[a[1]]
            del s[a[1]]
            s[a[1]] = v
    elif verb == "httpOnly":
        s.cookie.http_only = a[1]
    elif verb == "sameSite":
        s.cookie.same_site = a[1]
    elif verb == "expiresIn":
        now = datetime.datetime.now(datetime.timezone.utc)
        s.cookie.expires = now + datetime.timedelta(milliseconds=a[1])
    elif verb == "clear":
        s.clear()
    elif verb == "nothing":
        pass
    else:
        raise ValueError(verb)


def middleware_options(sc):
    """The scenario's options as the middleware's keyword arguments (either adapter's)."""
    o = sc["options"]
    cookie = {"max_age": None if o["maxAge"] is None else o["maxAge"] / 1000,
              "http_only": o["httpOnly"], "path": "/"}
    if o["sameSite"] is not None:
        cookie["same_site"] = o["sameSite"]
    return {"secret": SECRET, "name": o["name"], "cookie": cookie, "resave": o["resave"],
            "save_uninitialized": o["saveUninitialized"], "rolling": o["rolling"], "unset": o["unset"]}


def found(s):
    """The session as the handler found it, before its actions: data, originalMaxAge in ms, and
    the cookie's httpOnly and sameSite (s: None when there is none)."""
    if s is None:
        return {"seen": None, "seenOMA": None, "seenCookie": None}
    oma = s.cookie.original_max_age
    return {"seen": json.loads(json.dumps(dict(s))), "seenOMA": None if oma is None else round(oma * 1000),
            "seenCookie": {"httpOnly": s.cookie.http_only, "sameSite": s.cookie.same_site}}


def make_middleware(sc, store):
    state = {}

    def app(environ, start_response):
        step = sc["requests"][state["i"]]
        seen = found(environ["session"])
        notes = run_actions(environ, step["actions"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({**seen, "notes": notes}).encode()]

    return session.SessionMiddleware(app, store=store, **middleware_options(sc)), state


def run_scenario(sc):
    store = RecordingMemoryStore()
    mw, state = make_middleware(sc, store)
    steps = scenario_steps(sc, store, state)
    try:
        path, cookie = next(steps)
        while True:
            try:
                resp = call_wsgi(mw, make_environ(path, cookie=cookie))
                got = (int(resp.status.split()[0]), resp.values("Set-Cookie"), resp.body)
            except Exception as exc:  # an exception reaching the server
                got = exc
            path, cookie = steps.send(got)
    except StopIteration as end:
        return end.value


def scenario_steps(sc, store, state):
    """A scenario's requests, as a generator the WSGI and the ASGI side (decisions_asgi.py) drive:
    it yields each request's (path, Cookie header or None), is sent back (status, Set-Cookie
    values, body) or the exception the call raised (a 500 with no session headers), keeps the
    browser's jar, and returns the outcome."""
    name = sc["options"]["name"]
    jar, first, results = {}, None, []
    for i, step in enumerate(sc["requests"]):
        state["i"] = i
        mode = step["cookie"]
        value = {"jar": jar.get(name), "old": first, "none": None,
                 "unknown": cookie_value("nosuchid", SECRET)}[mode]
        if mode in ("old", "unknown") and value is not None:
            jar[name] = value  # the browser holds this cookie now (a stale one, or one planted)
        store.calls = []
        at = time.time() * 1000
        got = yield f"/r/{i}", None if value is None else f"{name}={value}"
        done = time.time() * 1000
        if isinstance(got, Exception):
            results.append({"status": 500, "setCookie": [], "calls": store.calls,
                            "body": {"raw": f"{type(got).__name__}: {got}"}, "sentCookie": value,
                            "at": at, "done": done})
            continue
        status, raws, body = got
        for raw in raws:
            sc_ = SetCookie(raw)
            if sc_.name != name:
                continue
            if sc_.clears:
                jar.pop(name, None)
            else:
                jar[name] = sc_.value
                if first is None:
                    first = sc_.value
        results.append({"status": status, "setCookie": raws, "calls": store.calls,
                        "body": json.loads(body), "sentCookie": value, "at": at, "done": done})
    final = {}
    for sid in store.ids():
        rec = store._stored(sid)
        if rec is not None:
            final[sid] = rec
    return {"requests": results, "final": final, "finalAt": time.time() * 1000}


def main():
    scenarios = json.load(sys.stdin)
    json.dump([run_scenario(sc) for sc in scenarios], sys.stdout)


if __name__ == "__main__":
    main()
