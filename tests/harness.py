"""The core suite's harness: the real SessionMiddleware driven in-process, with a cookie jar.

A strict WSGI caller (``call_wsgi``) and a browser-like ``Client``; ``Harness``, an app
whose behaviour each test sets, wrapped by the middleware; real MemoryStores that record
what the middleware asks of them (``RecordingStore``, and the two stores the decisions run
over: ``CapableMemoryStore``, which offers get_text and merge, and ``PlainMemoryStore``,
which overrides get and set only); reference helpers written independently of session.py
(cookie-signature's sign, express's record and cookie formats).  Standard library only.

A test module adds ``from tests.harness import setUpModule, tearDownModule`` to keep
the warnings its tests provoke off the output (assertLogs still sees them).
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import logging
import re
import secrets
import time
import urllib.parse
from wsgiref.util import setup_testing_defaults

import session

SECRET = "keyboard cat"
NAME = "connect.sid"
HOUR = 3600
UTC = dt.timezone.utc
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HTTP_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
                       r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$")
MISSING = object()


# ---------------------------------------------------------------- reference helpers

def js_encode(value: str) -> str:
    """JavaScript's encodeURIComponent."""
    return urllib.parse.quote(value, safe="!'()*~")


def ref_sign(value: str, secret) -> str:
    """cookie-signature's sign(), written independently of session.py."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, value.encode(), hashlib.sha256).digest()
    return value + "." + base64.b64encode(mac).decode().rstrip("=")


def cookie_value(sid: str, secret=SECRET) -> str:
    """The Cookie value express-session sends for ``sid``."""
    return js_encode("s:" + ref_sign(sid, secret))


def iso_ms(ts: float) -> str:
    d = dt.datetime.fromtimestamp(ts, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (d.microsecond // 1000)


def parse_iso(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def http_date(ts: float) -> str:
    """JavaScript's Date.toUTCString(): the instant cut to the second."""
    return email.utils.formatdate(int(ts), usegmt=True)


def make_record(data=None, *, max_age=HOUR, expires_in=None, **cookie_extra) -> dict:
    """A record as express-session writes it; ``max_age=None`` is a browser-session cookie."""
    if max_age is None:
        cookie = {"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"}
    else:
        left = max_age if expires_in is None else expires_in
        cookie = {"originalMaxAge": int(max_age * 1000), "expires": iso_ms(time.time() + left),
                  "httpOnly": True, "path": "/"}
    cookie.update(cookie_extra)
    record = {"cookie": cookie}
    record.update(data or {})
    return record


def norm(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


# ---------------------------------------------------------------- a tiny WSGI client

class SetCookie:
    """One Set-Cookie header, split into name, value and attributes."""

    def __init__(self, raw: str):
        self.raw = raw
        parts = raw.split("; ")
        self.name, _, self.value = parts[0].partition("=")
        self.attr_names = []
        self.attrs = {}
        for part in parts[1:]:
            key, eq, val = part.partition("=")
            self.attr_names.append(key)
            self.attrs[key.lower()] = val if eq else True

    @property
    def sid(self) -> str:
        value = urllib.parse.unquote(self.value)
        assert value.startswith("s:"), self.raw
        return value[2:].rsplit(".", 1)[0]

    @property
    def expires(self):
        text = self.attrs.get("expires")
        return None if text is None else email.utils.parsedate_to_datetime(text).timestamp()

    @property
    def clears(self) -> bool:
        if "max-age" in self.attrs and int(self.attrs["max-age"]) <= 0:
            return True
        return self.expires is not None and self.expires <= time.time()


class Response:
    def __init__(self, status, headers, body, events):
        self.status, self.headers, self.body, self.events = status, headers, body, events

    def values(self, name: str) -> list:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def cookies(self, name=NAME) -> list:
        return [SetCookie(v) for v in self.values("Set-Cookie") if v.startswith(name + "=")]

    def cookie(self, name=NAME):
        found = self.cookies(name)
        assert len(found) <= 1, f"several Set-Cookie for {name}: {found}"
        return found[0] if found else None

    @property
    def vary(self) -> list:
        return [t.strip().lower() for v in self.values("Vary") for t in v.split(",") if t.strip()]


def call_wsgi(app, environ, events=None) -> Response:
    """Call a WSGI app as a strict server would: headers checked, body iterated, close() called."""
    events = events if events is not None else []
    state = {}

    def start_response(status, headers, exc_info=None):
        if exc_info is not None and state.get("sent"):
            raise exc_info[1].with_traceback(exc_info[2])
        assert isinstance(status, str) and re.match(r"^\d{3} ", status), status
        for name, value in headers:
            assert isinstance(name, str) and isinstance(value, str), (name, value)
            assert not re.search(r"[\x00-\x1f\x7f]", name + value), f"control character in {name}: {value!r}"
        state["status"], state["headers"] = status, list(headers)
        events.append(("start_response",))

        def write(data):
            assert isinstance(data, bytes), type(data)
            state["sent"] = True
            chunks.append(data)
            events.append(("chunk", data))
        return write

    chunks = []
    result = app(environ, start_response)
    try:
        for chunk in result:
            assert isinstance(chunk, bytes), type(chunk)
            assert "status" in state, "body chunk before start_response"
            if chunk:
                state["sent"] = True
            chunks.append(chunk)
            events.append(("chunk", chunk))
        events.append(("end",))
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    assert "status" in state, "start_response never called"
    return Response(state["status"], state["headers"], b"".join(chunks), events)


def make_environ(path="/", *, https=False, headers=None, cookie=None, script_name="", extra=None) -> dict:
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": script_name, "QUERY_STRING": "",
           "wsgi.url_scheme": "https" if https else "http"}
    for key, value in (headers or {}).items():
        env["HTTP_" + key.upper().replace("-", "_")] = value
    if cookie is not None:
        env["HTTP_COOKIE"] = cookie
    env.update(extra or {})
    setup_testing_defaults(env)
    return env


class Client:
    """Calls a WSGI app in-process and keeps cookies like a browser (one path, one host)."""

    def __init__(self, app):
        self.app = app
        self.jar = {}

    def request(self, path="/", *, https=False, headers=None, cookie=None, events=None, **kw) -> Response:
        if cookie is None and self.jar:
            cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        resp = call_wsgi(self.app, make_environ(path, https=https, headers=headers, cookie=cookie, **kw), events)
        for raw in resp.values("Set-Cookie"):
            sc = SetCookie(raw)
            if sc.clears:
                self.jar.pop(sc.name, None)
            else:
                self.jar[sc.name] = sc.value
        return resp


class RecordingStore(session.MemoryStore):
    """A real MemoryStore that records each outer call and the JSON each set() wrote.

    ``calls`` names a read "get" and a write "set" whichever method made it (get_text and
    merge stand for them); ``methods`` names the methods themselves."""

    def __init__(self, *args, events=None, **kwargs):
        self.calls = []
        self.methods = []
        self.texts = {}
        self.events = events if events is not None else []
        self._depth = 0
        super().__init__(*args, **kwargs)
        self.reset()

    def reset(self):
        del self.calls[:]
        del self.methods[:]
        self.texts.clear()

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def ids(self, name: str) -> list:
        return [sid for n, sid in self.calls if n == name]

    def _run(self, name, sid, fn, *args):
        outer = self._depth == 0
        if outer:
            self.calls.append((name, sid))
            self.methods.append(fn.__name__)
        self._depth += 1
        try:
            result = fn(*args)
        finally:
            self._depth -= 1
        if outer and name in ("set", "touch", "destroy"):
            self.events.append((name + "-done", sid))
        return result

    def get(self, sid):
        return self._run("get", sid, super().get, sid)

    # The capabilities MemoryStore offers, recorded under the names of the methods they stand
    # for: a read is a "get", a write a "set" (see TestStoreCapabilities for the difference).
    def get_text(self, sid):
        return self._run("get", sid, super().get_text, sid)

    def merge(self, sid, change):
        outer = self._depth == 0
        written = self._run("set", sid, super().merge, sid, change)
        if outer and written:
            self.texts[sid] = session.MemoryStore.get_text(self, sid)
        return written

    def set(self, sid, record):
        outer = self._depth == 0
        self._run("set", sid, super().set, sid, record)
        if outer:
            self.texts[sid] = session.encode_record(record)

    def destroy(self, sid):
        return self._run("destroy", sid, super().destroy, sid)

    def touch(self, sid, record):
        return self._run("touch", sid, super().touch, sid, record)

    def all(self):
        return self._run("all", None, super().all)

    def length(self):
        return self._run("length", None, super().length)

    def clear(self):
        return self._run("clear", None, super().clear)

    def prune(self):
        return self._run("prune", None, super().prune)

    def expiry(self, sid):
        """The expiry MemoryStore holds for ``sid``.  No public API tells it, so this reads
        MemoryStore's internals (its ``_data``: sid -> (expiry, JSON))."""
        return self._data[sid][0]


class PlainMemoryStore(RecordingStore):
    """A RecordingStore whose get() and set() are its own: it is read through get() and written
    through set() (Store's merge over them), never as text."""

    def get(self, sid):
        return super().get(sid)

    def set(self, sid, record):
        return super().set(sid, record)


class CapableMemoryStore(RecordingStore):
    """A RecordingStore that counts what the middleware asks of it, capabilities included:
    MemoryStore's get_text and merge, recorded as the get and set they stand for."""


class Harness:
    """An app whose behaviour is ``self.action(environ)``, wrapped by the middleware under test."""

    def __init__(self, action=None, *, store=None, body=(b"ok",), app_headers=(), **options):
        self.action = action
        self.body = body
        self.app_headers = list(app_headers)
        self.store = store if store is not None else RecordingStore()
        options.setdefault("secret", SECRET)
        self.options = options
        self.key = options.get("environ_key", "session")
        self.seen = []
        self.mw = session.SessionMiddleware(self.app, store=self.store, **options)
        self.client = Client(self.mw)

    def app(self, environ, start_response):
        self.seen.append(environ.get(self.key, MISSING))
        if self.action is not None:
            self.action(environ)
        start_response("200 OK", [("Content-Type", "text/plain")] + self.app_headers)
        return list(self.body)

    def request(self, **kw) -> Response:
        return self.client.request(**kw)

    @property
    def first_secret(self):
        secret = self.options["secret"]
        return secret[0] if isinstance(secret, (list, tuple)) else secret

    def seed(self, data=None, *, sid=None, record=None, **record_kw) -> str:
        """Store a record as if an earlier request had saved it, and give the client its cookie."""
        sid = sid or "seed-" + secrets.token_urlsafe(12)
        self.store.set(sid, record if record is not None else make_record(data, **record_kw))
        if isinstance(self.store, RecordingStore):
            self.store.reset()
        self.client.jar[self.options.get("name", NAME)] = cookie_value(sid, self.first_secret)
        return sid


def sess(environ):
    return environ["session"]


def run_on_loaded_session(op, data=None):
    """Run ``op(session)`` in one request on a stored session holding ``data``
    ({"a": 1, "b": [1]} by default); return the harness and the data then stored."""
    h = Harness(lambda e: op(sess(e)))
    sid = h.seed({"a": 1, "b": [1]} if data is None else data)
    h.request()
    return h, {k: v for k, v in h.store.get(sid).items() if k != "cookie"}


@contextlib.contextmanager
def captured_warnings():
    """Collect WARNING+ records reaching the root logger (assertNoLogs needs Python 3.10)."""
    records = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Catch(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


_QUIET = logging.NullHandler()


def setUpModule() -> None:
    """Keep the expected warnings (withheld secure cookies...) off the test output;
    assertLogs and captured_warnings still see them through the root logger."""
    logging.getLogger("session").addHandler(_QUIET)


def tearDownModule() -> None:
    logging.getLogger("session").removeHandler(_QUIET)
