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
        s = environ.get(key)
        if s is None:
            notes.append("skip")
            continue
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
    return notes


def make_middleware(sc, store):
    o = sc["options"]
    cookie = {"max_age": None if o["maxAge"] is None else o["maxAge"] / 1000,
              "http_only": o["httpOnly"], "path": "/"}
    if o["sameSite"] is not None:
        cookie["same_site"] = o["sameSite"]
    state = {}

    def app(environ, start_response):
        step = sc["requests"][state["i"]]
        s = environ["session"]
        seen = None if s is None else json.loads(json.dumps(dict(s)))
        oma = None
        if s is not None and s.cookie.original_max_age is not None:
            oma = round(s.cookie.original_max_age * 1000)
        seen_cookie = None if s is None else {"httpOnly": s.cookie.http_only, "sameSite": s.cookie.same_site}
        notes = run_actions(environ, step["actions"])
        body = json.dumps({"seen": seen, "seenOMA": oma, "seenCookie": seen_cookie, "notes": notes}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    mw = session.SessionMiddleware(app, secret=SECRET, store=store, name=o["name"], cookie=cookie,
                                   resave=o["resave"], save_uninitialized=o["saveUninitialized"],
                                   rolling=o["rolling"], unset=o["unset"])
    return mw, state


def run_scenario(sc):
    store = RecordingMemoryStore()
    mw, state = make_middleware(sc, store)
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
        try:
            resp = call_wsgi(mw, make_environ(f"/r/{i}", cookie=None if value is None else f"{name}={value}"))
        except Exception as exc:  # an exception reaching the server: a 500 with no session headers
            results.append({"status": 500, "setCookie": [], "calls": store.calls,
                            "body": {"raw": f"{type(exc).__name__}: {exc}"}, "sentCookie": value,
                            "at": at, "done": time.time() * 1000})
            continue
        done = time.time() * 1000
        raws = resp.values("Set-Cookie")
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
        results.append({"status": int(resp.status.split()[0]), "setCookie": raws, "calls": store.calls,
                        "body": json.loads(resp.body), "sentCookie": value, "at": at, "done": done})
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
