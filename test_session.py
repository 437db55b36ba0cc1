"""The core's test suite: session.py against DESIGN.md and express-session 1.19.

Every test drives the real SessionMiddleware with
real stores, in-process through a small WSGI caller with a cookie jar, and once
over real sockets with wsgiref.  Test names state the rule each one proves, so
the list of names reads as the specification.  Standard library only.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import gc
import hashlib
import hmac
import http.client
import json
import logging
import re
import secrets
import sys
import threading
import time
import tracemalloc
import unittest
import urllib.parse
from pathlib import Path
from unittest import mock
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

REPO = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import session  # noqa: E402
from tests import support  # noqa: E402

# CI clones the repository with shared/ beside it.
# Made with the npm packages cookie-signature 1.0.7 and cookie 0.7.2 (copied from shared/vectors).
VECTORS = REPO / "tests" / "vectors" / "cookie-signature.json"
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
    """A real MemoryStore that records each outer call and the JSON each set() wrote."""

    def __init__(self, *args, events=None, **kwargs):
        self.calls = []
        self.texts = {}
        self.events = events if events is not None else []
        self._depth = 0
        super().__init__(*args, **kwargs)
        self.reset()

    def reset(self):
        del self.calls[:]
        self.texts.clear()

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def ids(self, name: str) -> list:
        return [sid for n, sid in self.calls if n == name]

    def _run(self, name, sid, fn, *args):
        outer = self._depth == 0
        if outer:
            self.calls.append((name, sid))
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


def load_vectors():
    if not VECTORS.exists():
        return None
    return json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]


VECTOR_LIST = load_vectors()
needs_vectors = unittest.skipIf(VECTOR_LIST is None, f"shared vectors not found at {VECTORS} "
                                                     "(clone the repo with shared/ beside it)")


def setUpModule():
    # Keep the expected warnings (withheld secure cookies...) off the test output; assertLogs
    # and captured_warnings still see them through the root logger.
    logging.getLogger("session").addHandler(_QUIET)


def tearDownModule():
    logging.getLogger("session").removeHandler(_QUIET)


_QUIET = logging.NullHandler()


# ================================================================ express-session's predicates

class TestExpressPredicates(unittest.TestCase):
    """Scenarios of express-session's decisions on the WSGI side.  The truth tables of
    shouldSetCookie / shouldSave / shouldTouch / shouldDestroy run over both adapters from one
    definition, in tests/test_decisions_both_adapters.py."""

    def test_unmodified_session_is_not_saved(self):
        h = Harness(lambda e: sess(e).get("n"))
        h.seed({"n": 1})
        h.request()
        self.assertEqual(h.store.count("set"), 0)

    def test_unmodified_existing_session_is_touched_and_its_record_left_as_it_was(self):
        h = Harness(lambda e: sess(e).get("n"))
        sid = h.seed({"n": 1, "z": [1, 2]}, expires_in=100)
        h.request()
        self.assertEqual(h.store.ids("touch"), [sid])
        record = h.store.get(sid)
        self.assertEqual((record["n"], record["z"]), (1, [1, 2]))
        # touch ran with the cookie reset to originalMaxAge: the stored expiry moved forward.
        self.assertAlmostEqual(parse_iso(record["cookie"]["expires"]), time.time() + HOUR, delta=5)

    def test_new_unmodified_session_is_neither_saved_nor_sent_by_default(self):
        h = Harness(lambda e: sess(e).get("n"))
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.length(), 0)

    def test_modified_session_is_saved_and_cookie_sent(self):
        h = Harness(lambda e: sess(e).__setitem__("user", "ada"))
        resp = h.request()
        sc = resp.cookie()
        self.assertIsNotNone(sc)
        self.assertEqual(h.store.get(sc.sid)["user"], "ada")

    def test_nested_mutation_is_saved_without_a_flag(self):
        h = Harness(lambda e: sess(e)["cart"].append(3))
        sid = h.seed({"cart": [1, 2]})
        h.request()
        self.assertEqual(h.store.get(sid)["cart"], [1, 2, 3])
        h.action = lambda e: sess(e)["cart"].clear() or sess(e)["cart"].append({"deep": [1]})
        h.request()
        h.action = lambda e: sess(e)["cart"][0]["deep"].append(2)
        h.request()
        self.assertEqual(h.store.get(sid)["cart"], [{"deep": [1, 2]}])

    def test_assigning_an_equal_value_is_not_a_modification(self):
        h = Harness(lambda e: sess(e).__setitem__("n", sess(e)["n"]))
        h.seed({"n": 1})
        h.request()
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.count("touch"), 1)

    def test_returning_visitor_cookie_is_resent_when_modified_and_expires_set(self):
        h = Harness(lambda e: sess(e).__setitem__("n", 2), cookie={"max_age": HOUR})
        sid = h.seed({"n": 1})
        sc = h.request().cookie()
        self.assertIsNotNone(sc)
        self.assertEqual(sc.sid, sid)
        self.assertAlmostEqual(sc.expires, time.time() + HOUR, delta=5)

    def test_rolling_resends_cookie_on_every_response_with_fresh_expiry(self):
        h = Harness(None, rolling=True, cookie={"max_age": HOUR})
        sid = h.seed({"n": 1}, expires_in=100)
        sc = h.request().cookie()
        self.assertEqual(sc.sid, sid)
        self.assertAlmostEqual(sc.expires, time.time() + HOUR, delta=5)
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.count("touch"), 1)

    def test_resave_writes_unmodified_session_back(self):
        h = Harness(None, resave=True)
        sid = h.seed({"n": 1})
        self.assertIsNone(h.request().cookie())
        self.assertEqual(h.store.ids("set"), [sid])

    def test_save_uninitialized_saves_and_sends_untouched_new_session(self):
        h = Harness(None, save_uninitialized=True)
        sc = h.request().cookie()
        self.assertIsNotNone(sc)
        self.assertEqual(list(h.store.all()), [sc.sid])
        self.assertEqual(list(h.store.get(sc.sid)), ["cookie"])

    def test_session_survives_across_requests(self):
        def count(environ):
            s = sess(environ)
            s["views"] = s.get("views", 0) + 1
        h = Harness(count)
        for _ in range(3):
            h.request()
        (record,) = h.store.all().values()
        self.assertEqual(record["views"], 3)

    def test_untouched_new_visitor_costs_no_id_and_no_store_call(self):
        made = []
        h = Harness(None, genid=lambda environ: made.append(1) or "id-%d" % len(made))
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(made, [], "no ID is generated for a session nobody used")
        self.assertEqual(h.store.calls, [])

    def test_unset_destroy_on_new_session_sends_no_cookie(self):
        def drop(environ):
            sess(environ)["n"] = 1
            environ["session"] = None
        h = Harness(drop, unset="destroy")
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.length(), 0)

    def test_session_expired_in_store_gets_new_id(self):
        def count(environ):
            s = sess(environ)
            s["n"] = s.get("n", 0) + 1
        h = Harness(count, cookie={"max_age": 0.2})
        first = h.request().cookie().sid
        time.sleep(0.3)
        second = h.request().cookie()
        self.assertNotEqual(second.sid, first)
        self.assertEqual(h.store.get(second.sid)["n"], 1)

    def test_expires_is_computed_when_the_response_is_sent(self):
        def slow(environ):
            sess(environ)["u"] = 1
            time.sleep(0.3)
        h = Harness(slow, cookie={"max_age": HOUR})
        sc = h.request().cookie()
        done = time.time()
        expires = parse_iso(h.store.get(sc.sid)["cookie"]["expires"])
        self.assertGreater(expires, done + HOUR - 0.1)
        self.assertLessEqual(expires, done + HOUR + 0.001)

    def test_unset_keep_leaves_record_untouched(self):
        def drop(environ):
            sess(environ)["n"] = 9
            environ["session"] = None
        h = Harness(drop, unset="keep")
        sid = h.seed({"n": 1})
        resp = h.request()
        self.assertEqual(h.store.get(sid)["n"], 1)
        self.assertEqual([n for n, _ in h.store.calls if n != "get"], [])
        self.assertIsNone(resp.cookie())

    def test_unset_destroy_deletes_record(self):
        def drop(environ):
            sess(environ).get("n")
            environ["session"] = None
        h = Harness(drop, unset="destroy")
        sid = h.seed({"n": 1})
        h.request()
        self.assertIn(sid, h.store.ids("destroy"))
        self.assertIsNone(h.store.get(sid))
        self.assertEqual(h.store.count("set"), 0)


# ================================================================ cookies, security options, scoping

class TestCookieSecurity(unittest.TestCase):

    def test_secure_cookie_withheld_on_insecure_request_but_session_saved(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": True})
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.count("set"), 1)

    def test_secure_cookie_sent_on_https_request(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": True})
        sc = h.request(https=True).cookie()
        self.assertIs(sc.attrs.get("secure"), True)

    def test_proxy_true_trusts_first_x_forwarded_proto(self):
        cases = [("https", True), ("https, http", True), (" HTTPS ", True), ("http, https", False),
                 ("http", False), ("", False)]
        for header, sent in cases:
            with self.subTest(x_forwarded_proto=header):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), proxy=True, cookie={"secure": True})
                resp = h.request(headers={"X-Forwarded-Proto": header})
                self.assertEqual(resp.cookie() is not None, sent)

    def test_x_forwarded_proto_ignored_without_proxy(self):
        for proxy in (None, False):
            with self.subTest(proxy=proxy):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), proxy=proxy, cookie={"secure": True})
                self.assertIsNone(h.request(headers={"X-Forwarded-Proto": "https"}).cookie())

    def test_https_url_scheme_is_secure_whatever_proxy_says(self):
        for proxy in (None, False, True):
            with self.subTest(proxy=proxy):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), proxy=proxy, cookie={"secure": True})
                self.assertIsNotNone(h.request(https=True, headers={"X-Forwarded-Proto": "http"}).cookie())

    def test_secure_auto_follows_the_request_and_is_stored_as_bool(self):
        for https, secure in ((True, True), (False, False)):
            with self.subTest(https=https):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": "auto"})
                sc = h.request(https=https).cookie()
                self.assertIsNotNone(sc)
                self.assertEqual("secure" in sc.attrs, secure)
                self.assertIs(h.store.get(sc.sid)["cookie"]["secure"], secure)

    def test_secure_auto_with_proxy_reads_x_forwarded_proto(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), proxy=True, cookie={"secure": "auto"})
        sc = h.request(headers={"X-Forwarded-Proto": "https"}).cookie()
        self.assertIn("secure", sc.attrs)
        self.assertIs(h.store.get(sc.sid)["cookie"]["secure"], True)

    def test_same_site_auto_is_none_on_secure_and_lax_otherwise(self):
        for https, attr, stored in ((True, "None", "none"), (False, "Lax", "lax")):
            with self.subTest(https=https):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": "auto", "secure": "auto"})
                sc = h.request(https=https).cookie()
                self.assertEqual(sc.attrs.get("samesite"), attr)
                self.assertEqual(h.store.get(sc.sid)["cookie"]["sameSite"], stored)

    def test_cookie_options_callable_is_resolved_per_request(self):
        seen = []

        def options(environ):
            seen.append(environ)
            return {"domain": environ["HTTP_HOST"], "max_age": 60}
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie=options)
        for host in ("a.example", "b.example"):
            h.client.jar.clear()
            sc = h.request(headers={"Host": host}).cookie()
            self.assertEqual(sc.attrs.get("domain"), host)
            self.assertAlmostEqual(sc.expires, time.time() + 60, delta=3)
        self.assertTrue(all(isinstance(e, dict) and "PATH_INFO" in e for e in seen))

    def test_outside_cookie_path_the_app_runs_without_a_session(self):
        h = Harness(lambda e: "session" in e and sess(e).__setitem__("u", 1), cookie={"path": "/app"})
        resp = h.request(path="/other")
        self.assertIs(h.seen[-1], MISSING)
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.length(), 0)
        resp = h.request(path="/app/page")
        self.assertIsNot(h.seen[-1], MISSING)
        self.assertEqual(resp.cookie().attrs.get("path"), "/app")

    def test_cookie_path_from_callable_options_scopes_the_session(self):
        h = Harness(None, cookie=lambda environ: {"path": "/app"})
        h.request(path="/other")
        self.assertIs(h.seen[-1], MISSING)
        h.request(path="/app/x")
        self.assertIsNot(h.seen[-1], MISSING)

    def test_cookie_path_is_matched_against_script_name_plus_path_info(self):
        h = Harness(None, cookie={"path": "/app"})
        h.request(path="/page", script_name="/app")
        self.assertIsNot(h.seen[-1], MISSING)
        h.request(path="/app", script_name="/mount")
        self.assertIs(h.seen[-1], MISSING)

    def test_empty_path_means_root(self):
        h = Harness(None)
        h.request(path="")
        self.assertIsNot(h.seen[-1], MISSING)

    def test_first_secret_signs_and_every_secret_verifies(self):
        h = Harness(lambda e: sess(e).__setitem__("n", sess(e).get("n", 0) + 1),
                    secret=["new secret", "old secret"], cookie={"max_age": HOUR})
        sid = h.seed({"n": 1})
        h.client.jar[NAME] = cookie_value(sid, "old secret")
        sc = h.request().cookie()
        self.assertEqual(sc.sid, sid, "a cookie signed with a retired secret still logs in")
        self.assertEqual(h.store.get(sid)["n"], 2)
        self.assertEqual(sc.value, cookie_value(sid, "new secret"))
        h.client.jar[NAME] = cookie_value(sid, "unknown secret")
        sc = h.request().cookie()
        self.assertNotEqual(sc.sid, sid)

    def test_bytes_secret_signs_like_its_utf8_string(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), secret="sécret".encode())
        sc = h.request().cookie()
        self.assertEqual(sc.value, cookie_value(sc.sid, "sécret"))

    def test_badly_signed_cookie_never_reaches_the_store(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        sid = h.seed({"u": 0})
        h.request(cookie=f"{NAME}={cookie_value(sid, 'not our secret')}")
        self.assertNotIn(sid, h.store.ids("get"))
        self.assertEqual(h.store.get(sid)["u"], 0)

    def test_genid_values_are_encoded_as_express_sends_them(self):
        # Values from express-session's own test suite (secret "keyboard cat").
        for sid, sent in (("apple", "s%3Aapple.D8Y%2BpkTAmeR0PobOhY4G97PRW%2Bj7bUnP%2F5m6%2FOn1MCU"),
                          ("%", "s%3A%25.kzQ6x52kKVdF35Qh62AWk4ZekS28K5XYCXKa%2FOTZ01g"),
                          ("/foo", "s%3A%2Ffoo.paEKBtAHbV5s1IB8B2zPnzAgYmmnRPIqObW4VRYj%2FMQ")):
            with self.subTest(genid=sid):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), genid=lambda environ, sid=sid: sid)
                self.assertEqual(h.request().cookie().value, sent)

    def test_apps_own_set_cookie_headers_are_kept(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1),
                    app_headers=[("Set-Cookie", "theme=dark; Path=/"), ("Set-Cookie", "lang=en")])
        resp = h.request()
        self.assertIn("theme=dark; Path=/", resp.values("Set-Cookie"))
        self.assertIn("lang=en", resp.values("Set-Cookie"))
        self.assertIsNotNone(resp.cookie())

    def test_custom_name_and_environ_key(self):
        keys = []
        h = Harness(lambda e: keys.append("session" in e) or e["sess"].__setitem__("u", 1),
                    name="sid", environ_key="sess")
        resp = h.request()
        self.assertIsNone(resp.cookie(NAME))
        sc = resp.cookie("sid")
        self.assertEqual(h.store.get(sc.sid)["u"], 1)
        self.assertEqual(keys, [False])

    def test_genid_receives_environ_and_its_value_is_the_id(self):
        calls = []

        def genid(environ):
            calls.append(environ)
            return "id-%d" % len(calls)
        h = Harness(lambda e: sess(e).__setitem__("u", 1), genid=genid)
        sc = h.request().cookie()
        self.assertEqual(sc.sid, "id-1")
        self.assertIn("PATH_INFO", calls[0])

    def test_default_id_is_32_url_safe_characters(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        ids = {h.request(cookie="").cookie().sid for _ in range(5)}
        self.assertEqual(len(ids), 5)
        for sid in ids:
            self.assertRegex(sid, r"^[A-Za-z0-9_-]{32}$")

    def test_valid_signature_for_unknown_id_gets_new_server_chosen_id(self):
        for save_uninitialized in (False, True):
            with self.subTest(save_uninitialized=save_uninitialized):
                h = Harness(lambda e: sess(e).__setitem__("user", "ada"), save_uninitialized=save_uninitialized)
                h.client.jar[NAME] = cookie_value("attacker-chosen-id")
                sc = h.request().cookie()
                self.assertNotEqual(sc.sid, "attacker-chosen-id")
                self.assertEqual(list(h.store.all()), [sc.sid])
                self.assertNotIn("attacker-chosen-id", h.store.ids("set"))

    def test_second_middleware_passes_the_request_through(self):
        inner_store, outer_store = RecordingStore(), RecordingStore()

        def app(environ, start_response):
            environ["session"]["u"] = 1
            start_response("200 OK", [])
            return [b"ok"]
        inner = session.SessionMiddleware(app, secret="inner", store=inner_store)
        outer = session.SessionMiddleware(inner, secret=SECRET, store=outer_store)
        resp = Client(outer).request()
        self.assertEqual(len(resp.cookies()), 1)
        self.assertEqual(outer_store.length(), 1)
        self.assertEqual(inner_store.calls, [])

    def test_warns_once_when_secure_cookie_is_withheld_pointing_at_proxy(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": True})
        with self.assertLogs(level="WARNING") as logs:
            h.request()
        self.assertTrue(any("proxy=True" in m or "proxy" in m for m in logs.output), logs.output)
        with captured_warnings() as records:
            h.client.jar.clear()
            h.request()
        self.assertEqual([r.getMessage() for r in records if "proxy" in r.getMessage()], [])

    def test_warns_when_same_site_none_without_secure(self):
        with self.assertLogs(level="WARNING") as logs:
            h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": "none"})
            h.request()
        text = " ".join(logs.output).lower()
        self.assertIn("secure", text)
        self.assertTrue("samesite" in norm(text), logs.output)

    def test_same_site_none_with_secure_does_not_warn(self):
        with captured_warnings() as records:
            h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": "none", "secure": True})
            h.request(https=True)
        self.assertEqual([r.getMessage() for r in records], [])


# ================================================================ Vary: Cookie

class TestVary(unittest.TestCase):

    READS = {
        "in": lambda s: "user" in s,
        "len": lambda s: len(s),
        "get": lambda s: s.get("user"),
        "getitem": lambda s: s["views"],
        "iter": lambda s: list(s),
        "items": lambda s: list(s.items()),
        "bool": lambda s: bool(s),
        "keys": lambda s: list(s.keys()),
        "values": lambda s: list(s.values()),
        "copy": lambda s: s.copy(),
        "eq": lambda s: s == {},
    }

    def test_vary_cookie_when_returning_session_is_read(self):
        for name, read in self.READS.items():
            with self.subTest(read=name):
                h = Harness(lambda e, read=read: read(sess(e)))
                h.seed({"views": 1})
                resp = h.request()
                self.assertIsNone(resp.cookie())
                self.assertEqual(resp.vary, ["cookie"])

    def test_vary_cookie_when_new_visitor_session_is_read(self):
        for name in ("in", "len", "get"):
            with self.subTest(read=name):
                h = Harness(lambda e, read=self.READS[name]: read(sess(e)))
                resp = h.request()
                self.assertIsNone(resp.cookie())
                self.assertEqual(resp.vary, ["cookie"])

    def test_vary_cookie_when_session_changed(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        self.assertEqual(h.request().vary, ["cookie"])

    def test_vary_cookie_when_our_set_cookie_is_sent(self):
        h = Harness(None, save_uninitialized=True)
        resp = h.request()
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(resp.vary, ["cookie"])

    def test_no_vary_when_session_untouched_and_no_cookie_sent(self):
        h = Harness(None)
        self.assertEqual(h.request().values("Vary"), [])
        h.seed({"views": 1})
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(resp.values("Vary"), [])

    def test_no_vary_outside_cookie_path(self):
        h = Harness(None, cookie={"path": "/app"}, save_uninitialized=True)
        self.assertEqual(h.request(path="/x").values("Vary"), [])

    def test_vary_merged_with_apps_vary(self):
        h = Harness(lambda e: sess(e).get("u"), app_headers=[("Vary", "Accept-Encoding")])
        resp = h.request()
        self.assertEqual(len(resp.values("Vary")), 1, resp.values("Vary"))
        self.assertEqual(sorted(resp.vary), ["accept-encoding", "cookie"])

    def test_vary_merged_into_the_apps_first_vary_given_as_a_list(self):
        h = Harness(lambda e: sess(e).get("u"),
                    app_headers=[["Vary", "Accept-Encoding"], ("Vary", "Accept")])
        resp = h.request()
        self.assertEqual(resp.values("Vary"), ["Accept-Encoding, Cookie", "Accept"])

    def test_vary_cookie_not_duplicated_when_app_already_varies_on_it(self):
        h = Harness(lambda e: sess(e).get("u"), app_headers=[("Vary", "Accept, cookie")])
        resp = h.request()
        self.assertEqual(sorted(resp.vary), ["accept", "cookie"])

    def test_vary_cookie_when_session_destroyed(self):
        h = Harness(lambda e: sess(e).destroy())
        h.seed({"u": 1})
        self.assertIn("cookie", h.request().vary)


# ================================================================ Session

class TestSession(unittest.TestCase):

    def test_session_is_a_dict_of_the_stored_data(self):
        out = {}

        def look(environ):
            s = sess(environ)
            out.update(isinstance=isinstance(s, dict), d=dict(s), json=json.loads(json.dumps(s)),
                       copy=s.copy(), star={**s}, items=sorted(s.items()), has="cookie" in s)
        h = Harness(look)
        h.seed({"a": 1, "b": [1, 2]})
        h.request()
        want = {"a": 1, "b": [1, 2]}
        self.assertTrue(out["isinstance"])
        for key in ("d", "json", "copy", "star"):
            self.assertEqual(out[key], want, key)
        self.assertEqual(out["items"], sorted(want.items()))
        self.assertFalse(out["has"], '"cookie" is not a key of the Session')

    def test_dict_mutators_as_first_operation_are_saved(self):
        cases = {
            "del": (lambda s: s.__delitem__("a"), {"b": [1]}),
            "pop": (lambda s: s.pop("a"), {"b": [1]}),
            "popitem": (lambda s: s.popitem(), {"a": 1}),
            "clear": (lambda s: s.clear(), {}),
            "setdefault-append": (lambda s: s.setdefault("c", []).append(1), {"a": 1, "b": [1], "c": [1]}),
            "nested-append": (lambda s: s["b"].append(2), {"a": 1, "b": [1, 2]}),
            "update": (lambda s: s.update(a=2), {"a": 2, "b": [1]}),
            "ior": (lambda s: s.__ior__({"d": 4}), {"a": 1, "b": [1], "d": 4}),
        }
        for name, (op, want) in cases.items():
            with self.subTest(op=name):
                self.assertEqual(run_on_loaded_session(op)[1], want)

    def test_writes_then_later_changes_are_saved_exactly(self):
        # Plain writes are tracked by key; a later mutable read or dict method must
        # still compare against the data as loaded, not as already written.
        cases = {
            "write-then-append": (lambda s: (s.__setitem__("a", 2), s["b"].append(2)),
                                  {"a": 2, "b": [1, 2]}),
            "write-new-then-del-it": (lambda s: (s.__setitem__("n", 1), s.__delitem__("n")),
                                      None),
            "write-then-items": (lambda s: (s.__setitem__("a", 5), list(s.items())),
                                 {"a": 5, "b": [1]}),
            "write-back-same-value": (lambda s: s.__setitem__("a", 1), None),
            "int-to-float-is-a-change": (lambda s: s.__setitem__("a", 1.0), {"a": 1.0, "b": [1]}),
            "int-to-true-is-a-change": (lambda s: s.__setitem__("a", True), {"a": True, "b": [1]}),
            "same-list-value": (lambda s: s.__setitem__("b", [1]), None),
            "write-twice-back-to-original": (lambda s: (s.__setitem__("a", 7), s.__setitem__("a", 1)),
                                             None),
            "write-then-reload-keeps-store": (lambda s: (s.__setitem__("a", 9), s.reload()), None),
        }
        for name, (op, want) in cases.items():
            with self.subTest(op=name):
                h, data = run_on_loaded_session(op)
                if want is None:
                    self.assertEqual(h.store.count("set"), 0, "unchanged data is not saved")
                    self.assertEqual(data, {"a": 1, "b": [1]})
                else:
                    self.assertEqual(h.store.count("set"), 1)
                    self.assertEqual(data, want)

    def test_reading_plain_values_only_writes_nothing_back(self):
        h = Harness(lambda e: (sess(e)["a"], sess(e).get("missing"), "a" in sess(e), len(sess(e))))
        sid = h.seed({"a": 1, "b": [1]})
        response = h.request()
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.count("touch"), 1)
        self.assertIn("cookie", response.vary)
        self.assertIsNone(response.cookie(), "no Set-Cookie: nothing changed and not rolling")
        self.assertIsNotNone(h.store.get(sid))

    def test_id_is_the_cookie_id_and_read_only(self):
        out = {}

        def look(environ):
            s = sess(environ)
            out["id"] = s.id
            try:
                s.id = "other"
            except AttributeError:
                out["readonly"] = True
        h = Harness(look)
        sid = h.seed({"a": 1})
        h.request()
        self.assertEqual(out["id"], sid)
        self.assertTrue(out.get("readonly"))

    def test_reserved_key_cookie_gives_a_clear_error(self):
        errors = {}

        def abuse(environ):
            s = sess(environ)
            for name, op in (("setitem", lambda: s.__setitem__("cookie", 1)),
                             ("update", lambda: s.update({"cookie": 1})),
                             ("update_kw", lambda: s.update(cookie=1)),
                             ("setdefault", lambda: s.setdefault("cookie", 1)),
                             ("ior", lambda: s.__ior__({"cookie": 1}))):
                try:
                    op()
                except Exception as exc:  # the type is the implementation's; the message must say why
                    errors[name] = exc
            errors["left"] = "cookie" in s
        h = Harness(abuse)
        h.request()
        for name in ("setitem", "update", "update_kw", "setdefault", "ior"):
            self.assertIn(name, errors, f"{name} accepted the reserved key")
            self.assertIn("cookie", str(errors[name]).lower())
            self.assertIsInstance(errors[name], (KeyError, ValueError, TypeError, session.SessionError))
        self.assertFalse(errors["left"])

    def test_regenerate_replaces_id_in_place_destroys_old_record_and_sends_cookie(self):
        out = {}

        def login(environ):
            s = sess(environ)
            out["old"] = s.id
            s.regenerate()
            out.update(same=environ["session"] is s, new=s.id, empty=len(s) == 0)
            s["user"] = "ada"
        h = Harness(login)
        old = h.seed({"anon": 1})
        sc = h.request().cookie()
        self.assertEqual(out["old"], old)
        self.assertTrue(out["same"])
        self.assertTrue(out["empty"])
        self.assertNotEqual(out["new"], old)
        self.assertIsNone(h.store.get(old))
        self.assertEqual(sc.sid, out["new"])
        self.assertEqual(h.store.get(out["new"]), {**h.store.get(out["new"]), "user": "ada"})
        self.assertNotIn("anon", h.store.get(out["new"]))

    def test_regenerated_session_is_saved_and_sent_even_when_empty(self):
        h = Harness(lambda e: sess(e).regenerate())
        old = h.seed({"anon": 1})
        sc = h.request().cookie()
        self.assertIsNotNone(sc)
        self.assertNotEqual(sc.sid, old)
        self.assertIsNotNone(h.store.get(sc.sid))

    def test_destroy_deletes_record_sets_environ_none_and_expires_cookie(self):
        out = {}

        def logout(environ):
            sess(environ).destroy()
            out["value"] = environ.get("session", MISSING)
        h = Harness(lambda e: sess(e).__setitem__("user", "ada"),
                    cookie={"domain": "example.com", "path": "/", "max_age": HOUR})
        sid = h.request().cookie().sid
        h.store.reset()
        h.action = logout
        resp = h.request()
        self.assertIsNone(out["value"])
        self.assertIsNone(h.store.get(sid))
        self.assertEqual(h.store.count("set"), 0)
        sc = resp.cookie()
        self.assertIsNotNone(sc, "destroy() clears the cookie in the response")
        self.assertTrue(sc.clears, sc.raw)
        self.assertEqual(sc.attrs.get("domain"), "example.com")
        self.assertEqual(sc.attrs.get("path"), "/")
        self.assertNotIn(NAME, h.client.jar)

    def test_one_set_cookie_per_response_with_rolling_destroy_or_regenerate(self):
        for name, op in (("destroy", lambda s: s.destroy()), ("regenerate", lambda s: s.regenerate())):
            with self.subTest(op=name):
                h = Harness(lambda e, op=op: op(sess(e)), rolling=True, save_uninitialized=True,
                            cookie={"max_age": HOUR})
                sid = h.seed({"u": 1})
                resp = h.request()
                self.assertEqual(len(resp.cookies()), 1, resp.values("Set-Cookie"))
                self.assertIsNone(h.store.get(sid))
                if name == "destroy":
                    self.assertTrue(resp.cookie().clears)
                else:
                    self.assertNotEqual(resp.cookie().sid, sid)

    def test_reload_restores_stored_data_in_place(self):
        out = {}

        def act(environ):
            s = sess(environ)
            s["views"] = 50
            s.reload()
            out.update(views=s["views"], same=environ["session"] is s)
        h = Harness(act)
        sid = h.seed({"views": 1})
        h.request()
        self.assertEqual(out, {"views": 1, "same": True})
        self.assertEqual(h.store.get(sid)["views"], 1)

    def test_reload_sees_another_requests_write(self):
        out = {}
        h = Harness(None)
        sid = h.seed({"views": 1})

        def act(environ):
            h.store.set(sid, make_record({"views": 7}))
            sess(environ).reload()
            out["views"] = sess(environ)["views"]
        h.action = act
        h.request()
        self.assertEqual(out["views"], 7)

    def test_reload_raises_session_error_when_record_is_gone(self):
        out = {}
        h = Harness(None)
        sid = h.seed({"views": 1})

        def act(environ):
            h.store.destroy(sid)
            try:
                sess(environ).reload()
            except session.SessionError as exc:
                out["error"] = exc
        h.action = act
        h.request()
        self.assertIsInstance(out.get("error"), session.SessionError)

    def test_save_writes_now_and_not_again_when_unchanged(self):
        out = {}
        h = Harness(None)

        def act(environ):
            s = sess(environ)
            s["a"] = 1
            s.save()
            out["stored"] = h.store.get(s.id)
        h.action = act
        h.request()
        self.assertEqual(out["stored"]["a"], 1)
        self.assertEqual(h.store.count("set"), 1)

    def test_change_after_save_is_saved_at_the_end(self):
        h = Harness(None)

        def act(environ):
            s = sess(environ)
            s["a"] = 1
            s.save()
            s["b"] = 2
        h.action = act
        sc = h.request().cookie()
        self.assertEqual(h.store.count("set"), 2)
        self.assertEqual(h.store.get(sc.sid)["b"], 2)

    def test_touch_resets_max_age_to_original_max_age(self):
        out = {}

        def act(environ):
            c = sess(environ).cookie
            out["before"] = c.max_age
            sess(environ).touch()
            out["after"] = c.max_age
            out["original"] = c.original_max_age
        h = Harness(act, cookie={"max_age": HOUR})
        h.seed({"a": 1}, expires_in=100)
        h.request()
        self.assertAlmostEqual(out["before"], 100, delta=3)
        self.assertAlmostEqual(out["after"], HOUR, delta=3)
        self.assertEqual(out["original"], HOUR)

    def test_nested_cookie_key_is_ordinary_data(self):
        h = Harness(lambda e: sess(e).__setitem__("user", {"cookie": 1, "name": "bob"}))
        sc = h.request().cookie()
        self.assertEqual(h.store.get(sc.sid)["user"], {"cookie": 1, "name": "bob"})

    def test_non_json_value_raises_type_error_naming_key_and_record_unchanged(self):
        for where in ("end", "save"):
            with self.subTest(where=where):
                def act(environ, where=where):
                    s = sess(environ)
                    s["when"] = dt.datetime.now()
                    if where == "save":
                        s.save()
                h = Harness(act)
                sid = h.seed({"views": 1})
                before = h.store.get(sid)
                with self.assertRaises(TypeError) as ctx:
                    h.request()
                self.assertIn("when", str(ctx.exception))
                self.assertEqual(h.store.get(sid), before)

    def test_nested_non_json_value_names_the_top_level_key(self):
        h = Harness(lambda e: sess(e).__setitem__("profile", {"ok": 1, "tags": {1, 2}}))
        with self.assertRaises(TypeError) as ctx:
            h.request()
        self.assertIn("profile", str(ctx.exception))
        self.assertEqual(h.store.length(), 0)


# ================================================================ Cookie

class TestCookie(unittest.TestCase):

    def grab(self, act, **options):
        out = {}
        options.setdefault("save_uninitialized", True)
        h = Harness(lambda e: act(sess(e).cookie, out), **options)
        resp = h.request()
        return out, resp, h

    def test_max_age_is_seconds_left_and_original_max_age_the_configured_value(self):
        def act(c, out):
            out.update(max_age=c.max_age, original=c.original_max_age, expires=c.expires)
        out, resp, h = self.grab(act, cookie={"max_age": HOUR})
        self.assertAlmostEqual(out["max_age"], HOUR, delta=2)
        self.assertEqual(out["original"], HOUR)
        self.assertIsNotNone(out["expires"].tzinfo)
        self.assertEqual(out["expires"].utcoffset(), dt.timedelta(0))
        self.assertAlmostEqual(out["expires"].timestamp(), time.time() + HOUR, delta=2)

    def test_max_age_accepts_timedelta(self):
        out, resp, h = self.grab(lambda c, out: out.update(original=c.original_max_age),
                                 cookie={"max_age": dt.timedelta(minutes=90)})
        self.assertEqual(out["original"], 5400)
        self.assertEqual(h.store.get(resp.cookie().sid)["cookie"]["originalMaxAge"], 5400000)

    def test_setting_max_age_sets_expires_and_original_max_age(self):
        def act(c, out):
            c.max_age = 60
            out.update(max_age=c.max_age, original=c.original_max_age, expires=c.expires.timestamp())
        out, resp, h = self.grab(act, cookie={"max_age": HOUR})
        self.assertAlmostEqual(out["max_age"], 60, delta=1)
        self.assertAlmostEqual(out["original"], 60, delta=1)
        self.assertAlmostEqual(out["expires"], time.time() + 60, delta=2)
        record = h.store.get(resp.cookie().sid)["cookie"]
        self.assertAlmostEqual(record["originalMaxAge"], 60000, delta=1000)
        self.assertAlmostEqual(parse_iso(record["expires"]), time.time() + 60, delta=2)
        self.assertAlmostEqual(resp.cookie().expires, time.time() + 60, delta=2)

    def test_setting_expires_sets_max_age_and_original_max_age_as_express(self):
        def act(c, out):
            c.expires = dt.datetime.now(UTC) + dt.timedelta(seconds=120)
            out.update(max_age=c.max_age, original=c.original_max_age)
        out, resp, h = self.grab(act, cookie={"max_age": HOUR})
        self.assertAlmostEqual(out["max_age"], 120, delta=1)
        self.assertAlmostEqual(out["original"], 120, delta=1)

    def test_max_age_none_is_a_browser_session_cookie(self):
        def act(c, out):
            c.max_age = None
            out.update(max_age=c.max_age, original=c.original_max_age, expires=c.expires)
        out, resp, h = self.grab(act, cookie={"max_age": HOUR})
        self.assertEqual(out, {"max_age": None, "original": None, "expires": None})
        sc = resp.cookie()
        self.assertNotIn("expires", sc.attrs)
        cookie = h.store.get(sc.sid)["cookie"]
        self.assertIsNone(cookie["originalMaxAge"])
        self.assertIsNone(cookie["expires"])

    def test_expires_option_is_an_absolute_date(self):
        when = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(microsecond=0)
        out, resp, h = self.grab(lambda c, out: out.update(expires=c.expires), cookie={"expires": when})
        self.assertEqual(out["expires"], when)
        self.assertEqual(resp.cookie().attrs["expires"], http_date(when.timestamp()))

    def test_cookie_attributes_are_readable(self):
        def act(c, out):
            out.update(http_only=c.http_only, secure=c.secure, path=c.path, domain=c.domain,
                       same_site=c.same_site, partitioned=c.partitioned, priority=c.priority)
        out, _, _ = self.grab(act, cookie={"domain": "example.com", "path": "/", "secure": True,
                                           "same_site": "strict", "partitioned": True, "priority": "high"})
        self.assertEqual(out, {"http_only": True, "secure": True, "path": "/", "domain": "example.com",
                               "same_site": "strict", "partitioned": True, "priority": "high"})

    def test_default_set_cookie_is_path_root_http_only_browser_session(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        sc = h.request().cookie()
        self.assertEqual(sc.raw, f"{NAME}={cookie_value(sc.sid)}; Path=/; HttpOnly")

    def test_set_cookie_expires_is_record_expires_cut_to_the_second_and_no_max_age(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"max_age": HOUR})
        sc = h.request().cookie()
        expires = h.store.get(sc.sid)["cookie"]["expires"]
        self.assertRegex(expires, ISO_MS)
        self.assertRegex(sc.attrs["expires"], HTTP_DATE)
        self.assertEqual(sc.attrs["expires"], http_date(parse_iso(expires)))
        self.assertNotIn("max-age", sc.attrs)

    def test_set_cookie_attributes_follow_options(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={
            "max_age": HOUR, "domain": "example.com", "path": "/", "secure": True, "http_only": True,
            "same_site": "lax", "partitioned": True, "priority": "medium"})
        sc = h.request(https=True).cookie()
        self.assertEqual(sc.attrs["domain"], "example.com")
        self.assertEqual(sc.attrs["path"], "/")
        self.assertIs(sc.attrs["httponly"], True)
        self.assertIs(sc.attrs["secure"], True)
        self.assertIs(sc.attrs["partitioned"], True)
        self.assertEqual(sc.attrs["priority"], "Medium")
        self.assertEqual(sc.attrs["samesite"], "Lax")
        self.assertEqual(set(sc.attr_names),
                         {"Domain", "Path", "Expires", "HttpOnly", "Secure", "Partitioned", "Priority", "SameSite"})

    def test_set_cookie_matches_express_byte_for_byte(self):
        # cookie 0.7.2 order: Domain, Path, Expires, HttpOnly, Secure, Partitioned, Priority, SameSite
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={
            "max_age": HOUR, "domain": "example.com", "path": "/", "secure": True,
            "same_site": "strict", "partitioned": True, "priority": "high"})
        sc = h.request(https=True).cookie()
        expires = http_date(parse_iso(h.store.get(sc.sid)["cookie"]["expires"]))
        self.assertEqual(sc.raw, f"{NAME}={cookie_value(sc.sid)}; Domain=example.com; Path=/; Expires={expires}; "
                                 "HttpOnly; Secure; Partitioned; Priority=High; SameSite=Strict")

    def test_same_site_values_map_to_express_spelling(self):
        for option, attr in ((True, "Strict"), ("strict", "Strict"), ("lax", "Lax"), ("none", "None")):
            with self.subTest(same_site=option):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": option, "secure": True})
                self.assertEqual(h.request(https=True).cookie().attrs["samesite"], attr)

    def test_priority_values_map_to_express_spelling(self):
        for option, attr in (("low", "Low"), ("medium", "Medium"), ("high", "High")):
            with self.subTest(priority=option):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"priority": option})
                self.assertEqual(h.request().cookie().attrs["priority"], attr)

    def test_http_only_false_omits_attribute(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"http_only": False})
        sc = h.request().cookie()
        self.assertNotIn("httponly", sc.attrs)
        self.assertIs(h.store.get(sc.sid)["cookie"]["httpOnly"], False)

    def test_cookie_attributes_set_in_the_app_are_sent(self):
        def act(environ):
            c = sess(environ).cookie
            c.http_only = False
            c.secure = True
            sess(environ)["u"] = 1
        h = Harness(act, proxy=True, cookie={"priority": "low"})
        sc = h.request(headers={"X-Forwarded-Proto": "https"}).cookie()
        self.assertNotIn("httponly", sc.attrs)
        self.assertIs(sc.attrs.get("secure"), True)
        self.assertEqual(sc.attrs.get("priority"), "Low")
        cookie = h.store.get(sc.sid)["cookie"]
        self.assertEqual((cookie["httpOnly"], cookie["secure"]), (False, True))

    def test_header_injection_in_options_or_name_raises_value_error(self):
        cases = [
            {"cookie": {"domain": "example.com; Secure"}},
            {"cookie": {"domain": "example.com\r\nX-Evil: 1"}},
            {"cookie": {"domain": "ex\x00ample.com"}},
            {"cookie": {"domain": "ex\x7fample.com"}},
            {"cookie": {"path": "/\n"}},
            {"cookie": {"path": "/a;b"}},
            {"cookie": {"path": "/\x1f"}},
            {"name": "sid; Domain=evil"},
            {"name": "sid\r\nX-Evil: 1"},
            {"name": "si\x01d"},
        ]
        for kw in cases:
            with self.subTest(**{k: repr(v) for k, v in kw.items()}):
                with self.assertRaises(ValueError):
                    session.SessionMiddleware(lambda e, s: [], secret=SECRET, **kw)

    def test_header_injection_from_callable_options_raises_at_request(self):
        for bad in ({"domain": "a.example; Secure"}, {"path": "/\r\nX-Evil: 1"}):
            with self.subTest(bad=repr(bad)):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie=lambda environ, bad=bad: bad)
                with self.assertRaises(ValueError):
                    h.request()

    def test_cookie_value_is_percent_encoded_like_encode_uri_component(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), genid=lambda environ: "a+b/c:d é")
        sc = h.request().cookie()
        self.assertEqual(sc.value, cookie_value("a+b/c:d é"))
        self.assertTrue(sc.value.startswith("s%3Aa%2Bb%2Fc%3Ad%20%C3%A9."), sc.value)


# ================================================================ signing

class TestBadRecords(unittest.TestCase):

    def test_a_record_with_a_malformed_cookie_is_a_fresh_session_not_an_error(self):
        bad_cookies = [{"originalMaxAge": "soon"}, {"path": "/\r\nX: y"}, {"domain": 5},
                       {"originalMaxAge": True}, "not an object", None]
        for bad in bad_cookies:
            with self.subTest(cookie=bad):
                out = []
                h = Harness(lambda e: out.append((sess(e).id, dict(sess(e)))))
                sid = h.seed(record={"cookie": bad, "user": "ada"})
                with self.assertLogs("session", "WARNING"):
                    response = h.request()
                self.assertEqual(response.status.split()[0], "200")
                self.assertNotEqual(out[0][0], sid)
                self.assertEqual(out[0][1], {})


class TestCookieJson(unittest.TestCase):

    def test_to_json_is_the_encoded_record_for_every_attribute_combination(self):
        import itertools
        combos = itertools.product((None, True, False), (None, "high"), (None, True, False),
                                   (True, False), (None, "example.com"), ("/", "/app", None),
                                   (None, True, "lax", "none"))
        for partitioned, priority, secure, http_only, domain, path, same_site in combos:
            c = session.Cookie(max_age=90.5, secure=secure, http_only=http_only, domain=domain,
                               same_site=same_site, partitioned=partitioned, priority=priority)
            c.path = path
            self.assertEqual(c.to_json(), json.dumps(c.to_record(), separators=(",", ":")))
        for original in (None, 0, 3600000, 3599999, 1500.5):
            c = session.Cookie()
            c._original = original
            self.assertEqual(json.loads(c.to_json()), c.to_record())

    def test_to_record_is_a_fresh_dict_each_time(self):
        # Records share a cached template per set of attributes: changing one must not leak.
        first = session.Cookie(domain="example.com").to_record()
        first["domain"] = "evil.example"
        first["extra"] = 1
        again = session.Cookie(domain="example.com")
        self.assertEqual(again.to_record(), {"originalMaxAge": None, "expires": None, "httpOnly": True,
                                             "domain": "example.com", "path": "/"})
        self.assertEqual(json.loads(again.to_json()), again.to_record())


class TestSigning(unittest.TestCase):

    @needs_vectors
    def test_sign_matches_cookie_signature_vectors(self):
        for v in VECTOR_LIST:
            with self.subTest(value=v["value"], secret=v["secret"]):
                self.assertEqual(session.sign(v["value"], v["secret"]), v["signed"])
                self.assertEqual(session.sign(v["value"], v["secret"].encode()), v["signed"])

    @needs_vectors
    def test_unsign_verifies_vectors_and_rejects_other_secrets(self):
        for v in VECTOR_LIST:
            with self.subTest(value=v["value"], secret=v["secret"]):
                self.assertEqual(session.unsign(v["signed"], v["secret"]), v["value"])
                self.assertEqual(session.unsign(v["signed"], ["wrong", v["secret"]]), v["value"])
                self.assertIsNone(session.unsign(v["signed"], "wrong"))
                self.assertIsNone(session.unsign(v["signed"], ["wrong", "also wrong"]))

    @needs_vectors
    def test_middleware_sends_vector_cookie_header_value(self):
        for v in VECTOR_LIST:
            if not v["value"]:
                continue
            with self.subTest(value=v["value"], secret=v["secret"]):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), secret=v["secret"],
                            genid=lambda environ, value=v["value"]: value)
                self.assertEqual(h.request().cookie().value, v["cookie_header_value"])

    @needs_vectors
    def test_middleware_reads_vector_cookie_header_value(self):
        for v in VECTOR_LIST:
            if not v["value"]:
                continue
            with self.subTest(value=v["value"], secret=v["secret"]):
                out = {}
                h = Harness(lambda e: out.update(id=sess(e).id, n=sess(e).get("n")), secret=v["secret"])
                h.store.set(v["value"], make_record({"n": 42}))
                h.request(cookie=f"{NAME}={v['cookie_header_value']}")
                self.assertEqual(out, {"id": v["value"], "n": 42})

    @needs_vectors
    def test_vectors_cookie_header_value_is_s_prefix_plus_signed(self):
        for v in VECTOR_LIST:
            self.assertEqual(urllib.parse.unquote(v["cookie_header_value"]), "s:" + v["signed"])
            self.assertEqual(cookie_value(v["value"], v["secret"]), v["cookie_header_value"])

    def test_signed_empty_value_verifies_as_empty_string(self):
        self.assertEqual(session.unsign(ref_sign("", SECRET), SECRET), "")

    def test_unsign_splits_at_the_last_dot(self):
        self.assertEqual(session.unsign(ref_sign("a.b.c", SECRET), SECRET), "a.b.c")

    def test_unsign_rejects_malformed_input_without_raising(self):
        good = ref_sign("abc", SECRET)
        bad = ["", ".", "abc", "abc.", good + "x", good[:-1], "x" + good, good.replace("abc", "abd"),
               "abc.ü", "ü.ü", "abc." + "é" * 43, "abc.\x00", "abc." + good.split(".")[1] + "=",
               "\udcff.abc", good + "\n"]
        for signed in bad:
            with self.subTest(signed=signed):
                self.assertIsNone(session.unsign(signed, SECRET))
                self.assertIsNone(session.unsign(signed, [SECRET + "x", SECRET + "y"]))

    @contextlib.contextmanager
    def patched_compare_digest(self, replacement):
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(hmac, "compare_digest", replacement))
            stack.enter_context(mock.patch.object(secrets, "compare_digest", replacement))
            for attr in ("compare_digest", "_compare_digest"):
                if hasattr(session, attr):
                    stack.enter_context(mock.patch.object(session, attr, replacement))
            yield

    def test_unsign_decides_with_hmac_compare_digest(self):
        real = hmac.compare_digest
        calls = []

        def spy(a, b):
            calls.append((a, b))
            return real(a, b)
        good = ref_sign("abc", SECRET)
        with self.patched_compare_digest(spy):
            self.assertEqual(session.unsign(good, SECRET), "abc")
            self.assertTrue(calls, "unsign did not call hmac.compare_digest")
            del calls[:]
            self.assertIsNone(session.unsign(good[:-1] + ("A" if good[-1] != "A" else "B"), SECRET))
            self.assertTrue(calls, "a near-miss signature was rejected without compare_digest")
        # The verdict is compare_digest's: forcing it False rejects a correct signature.
        with self.patched_compare_digest(lambda a, b: False):
            self.assertIsNone(session.unsign(good, SECRET))
            self.assertIsNone(session.unsign(good, [SECRET, "other"]))

    def test_middleware_verifies_cookies_with_hmac_compare_digest(self):
        # Every cookie value the middleware has not verified before goes through
        # compare_digest; only values that passed it are remembered.
        out = []
        h = Harness(lambda e: out.append(sess(e).get("user")))
        h.seed({"user": "ada"})
        with self.patched_compare_digest(lambda a, b: False):
            h.request()
        h.request()
        self.assertEqual(out, [None, "ada"], "the middleware's signature check bypasses compare_digest")

    def test_a_forged_cookie_is_never_taken_from_the_verified_cache(self):
        out = []
        h = Harness(lambda e: out.append(sess(e).get("user")))
        h.seed({"user": "ada"})
        good = h.client.jar[NAME]
        h.request()
        for forged in (good[:-1] + ("A" if good[-1] != "A" else "B"), good + "x", good[:-3]):
            h.client.jar[NAME] = forged
            h.request()
        self.assertEqual(out, ["ada", None, None, None])

    def test_a_remembered_header_or_value_never_vouches_for_a_different_header(self):
        out = []
        h = Harness(lambda e: out.append(sess(e).get("user")))
        h.seed({"user": "ada"})
        good = h.client.jar[NAME]
        ours = f"{NAME}={good}"
        forged = good[:-1] + ("A" if good[-1] != "A" else "B")
        headers = [ours, f"a=1; {ours}",            # verified: remembered by value and by header
                   good, f"x{ours}", f"{NAME}x={good}",  # the value, but not as our cookie
                   f"{NAME}={forged}; {ours}",       # the first of two wins, as in express
                   f"a=1; {ours}", ours]             # remembered ones still read right
        for header in headers:
            h.request(cookie=header)
        self.assertEqual(out, ["ada", "ada", None, None, None, None, "ada", "ada"])

    def test_remembered_cookies_stay_bounded_and_long_headers_are_not_kept(self):
        out = []
        h = Harness(lambda e: out.append(sess(e).get("user")))
        with mock.patch.object(session, "_VERIFIED_CACHE_SIZE", 8):
            for i in range(20):
                h.seed({"user": f"u{i}"})
                h.request(cookie=f"{NAME}={h.client.jar[NAME]}; pad={'x' * i}")
        self.assertEqual(out, [f"u{i}" for i in range(20)])
        self.assertLessEqual(len(h.mw._verified), 8)
        self.assertLessEqual(len(h.mw._verified_headers), 8)
        long_header = f"{NAME}={h.client.jar[NAME]}; pad={'x' * 2000}"
        h.request(cookie=long_header)
        h.request(cookie=long_header)
        self.assertEqual(out[-2:], ["u19", "u19"])
        self.assertNotIn(long_header, h.mw._verified_headers)

    def test_unsign_accepts_one_secret_or_a_list(self):
        signed = ref_sign("abc", "second")
        self.assertEqual(session.unsign(signed, "second"), "abc")
        self.assertEqual(session.unsign(signed, b"second"), "abc")
        self.assertEqual(session.unsign(signed, ["first", "second"]), "abc")
        self.assertEqual(session.unsign(signed, ("first", b"second")), "abc")
        self.assertIsNone(session.unsign(signed, ["first"]))


# ================================================================ bad input

class TestBadInput(unittest.TestCase):

    def setUp(self):
        self.out = []
        self.h = Harness(lambda e: self.out.append((sess(e).id, sess(e).get("user"))))
        self.sid = self.h.seed({"user": "ada"})
        self.ours = f"{NAME}={cookie_value(self.sid)}"

    def assert_logged_in(self, header):
        del self.out[:]
        self.h.request(cookie=header)
        self.assertEqual(self.out, [(self.sid, "ada")], repr(header[:200]))

    def assert_fresh(self, header):
        del self.out[:]
        self.h.request(cookie=header)
        ((sid, user),) = self.out
        self.assertIsNone(user, repr(header[:200]))
        self.assertNotEqual(sid, self.sid)

    def test_other_malformed_cookies_never_cost_us_ours(self):
        ours = self.ours
        headers = [
            f"garbage\x01\x02\x7f; {ours}",
            f'a="unbalanced; {ours}',
            f'{ours}; b="unbalanced',
            f"=; {ours}",
            f"=; =; ;;; {ours}; ;",
            f"nokey; {ours}",
            f"a=%E0%A4%A; {ours}",
            f"a=%zz; {ours}; b=%",
            f"x=\xff\xfe\xc3; {ours}",
            f"$Version=1; {ours}",
            f"a=b=c=d; {ours}",
            f"a=[]{{}}(),/:?@; {ours}",
            f"{ours};other=1",
            f"  {ours}  ",
            f"{NAME.upper()}=junk; {ours}",
        ]
        for header in headers:
            with self.subTest(header=header):
                self.assert_logged_in(header)

    def test_hundred_kilobyte_cookie_header(self):
        self.assert_logged_in("big=" + "a" * 100_000 + "; " + self.ours)
        self.assert_fresh("big=" + "a" * 100_000)

    def test_thousand_cookies_in_header(self):
        many = "; ".join(f"c{i}=v{i}" for i in range(1000))
        self.assert_logged_in(f"{many}; {self.ours}")
        self.assert_logged_in(f"{self.ours}; {many}")

    def test_first_cookie_of_our_name_wins(self):
        other = self.h.seed({"user": "bob"})
        self.assert_logged_in(f"{self.ours}; {NAME}={cookie_value(other)}")

    def test_first_cookie_of_our_name_wins_even_when_invalid(self):
        self.assert_fresh(f"{NAME}=s%3Agarbage.sig; {self.ours}")

    def test_quoted_cookie_value_is_unquoted(self):
        self.assert_logged_in(f'{NAME}="{cookie_value(self.sid)}"')

    def test_unencoded_value_is_used_raw(self):
        self.assert_logged_in(f"{NAME}=s:{ref_sign(self.sid, SECRET)}")

    def test_value_is_decoded_only_when_it_holds_a_percent_and_kept_raw_when_decoding_fails(self):
        for sid in ("a+b", "%", "50%off", "x%zz"):
            with self.subTest(sid=sid):
                self.h.store.set(sid, make_record({"user": "raw"}))
                del self.out[:]
                self.h.request(cookie=f"{NAME}=s:{ref_sign(sid, SECRET)}")
                self.assertEqual(self.out, [(sid, "raw")])

    def test_whitespace_around_name_and_value_is_trimmed(self):
        self.assert_logged_in(f"{NAME} = {cookie_value(self.sid)} ")
        self.assert_logged_in(f"a=1;{NAME}={cookie_value(self.sid)};b=2")

    def test_invalid_percent_escapes_in_our_cookie_give_fresh_session(self):
        for value in ("%zz", "s%3A%zz.abc", "s%3A%FF%FE.abc", "%", "s%3A" + cookie_value(self.sid)[4:] + "%"):
            with self.subTest(value=value):
                self.assert_fresh(f"{NAME}={value}")

    def test_value_without_s_prefix_is_ignored(self):
        self.assert_fresh(f"{NAME}={js_encode(ref_sign(self.sid, SECRET))}")

    def test_bad_signatures_and_ids_of_any_shape_give_fresh_session(self):
        good = cookie_value(self.sid)
        values = ["", "s%3A", "s:", "s%3A.", "s%3Aabc", good[:-2], good + "A", good.replace("s%3A", "s%3Ax"),
                  "s%3A" + "a." * 2000, "s%3A" + "ü" * 50, "s%3A\xc3\xbc.\xc3\xbc", "s:abc.\xc3\xbc\xc3\xbc",
                  "s%3Aabc.%C3%BC%C3%BC", "s%3A" + "%00" * 10, "\x00\x01\x02", "s%3A" + "x" * 10000 + ".sig",
                  cookie_value(self.sid, "wrong secret")]
        for value in values:
            with self.subTest(value=value[:60]):
                self.assert_fresh(f"{NAME}={value}")

    def test_validly_signed_ids_of_any_shape_give_fresh_session(self):
        for sid in ("", "../../etc/passwd", "a" * 5000, "ü-日本", "a b;c=d", "sess:x", "\x00", "null", "{}"):
            with self.subTest(sid=sid[:40]):
                self.assert_fresh(f"{NAME}={cookie_value(sid)}")
                self.assertIsNone(self.h.store.get(sid) if sid else None)

    def test_bad_input_never_costs_an_exception_nor_a_client_chosen_id(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        for header in ("\x00", "=", ";", '"', "connect.sid", "connect.sid=", 'connect.sid="', "connect.sid=%",
                       f"connect.sid={cookie_value('chosen')}"):
            with self.subTest(header=header):
                h.store.reset()
                sc = h.request(cookie=header).cookie()
                self.assertNotEqual(sc.sid, "chosen")
                self.assertEqual(h.store.ids("set"), [sc.sid])

    def test_store_record_without_cookie_is_not_a_session(self):
        class Broken(session.Store):
            def get(self, sid):
                return {"user": "mallory"}

            def set(self, sid, record):
                pass

            def touch(self, sid, record):
                pass

            def destroy(self, sid):
                pass
        out = {}
        mw = session.SessionMiddleware(Harness(lambda e: out.update(id=sess(e).id, user=sess(e).get("user"))).app,
                                       secret=SECRET, store=Broken())
        try:
            Client(mw).request(cookie=f"{NAME}={cookie_value('known')}")
        except Exception:
            return  # express answers 500; an error is acceptable
        self.assertIsNone(out.get("user"))
        self.assertNotEqual(out.get("id"), "known")

    def test_decode_record_rejects_invalid_records(self):
        for text in ("not json", "[1]", '"x"', "{}", '{"user": 1}', '{"cookie": 3}', b"\xff\xfe"):
            with self.subTest(text=text):
                with self.assertRaises(ValueError):
                    session.decode_record(text)
        self.assertEqual(session.decode_record(b'{"cookie":{},"a":"\xc3\xbc"}'), {"cookie": {}, "a": "ü"})

    def test_bad_options_raise_at_construction_naming_the_option(self):
        app = lambda e, s: []  # noqa: E731
        naive = dt.datetime.now() + dt.timedelta(days=1)
        cases = [
            ("secret", {"secret": ""}), ("secret", {"secret": b""}), ("secret", {"secret": []}),
            ("secret", {"secret": None}), ("secret", {"secret": 42}),
            ("maxAge", {"cookie": {"maxAge": 10}}), ("colour", {"cookie": {"colour": "red"}}),
            ("unset", {"unset": "maybe"}),
            ("same_site", {"cookie": {"same_site": "sometimes"}}),
            ("genid", {"genid": "abc"}),
            ("max_age", {"cookie": {"max_age": -1}}), ("max_age", {"cookie": {"max_age": True}}),
            ("max_age", {"cookie": {"max_age": "3600"}}),
            ("priority", {"cookie": {"priority": "urgent"}}),
            ("secure", {"cookie": {"secure": "sometimes"}}),
            ("expires", {"cookie": {"expires": naive}}), ("expires", {"cookie": {"expires": "tomorrow"}}),
            ("cookie", {"cookie": "max_age=3"}),
        ]
        for option, kw in cases:
            kw = dict(kw)
            kw.setdefault("secret", SECRET)
            with self.subTest(option=option, kw=repr(kw)):
                with self.assertRaises((ValueError, TypeError)) as ctx:
                    session.SessionMiddleware(app, **kw)
                self.assertIn(norm(option), norm(str(ctx.exception)), str(ctx.exception))

    def test_missing_secret_raises_naming_it(self):
        with self.assertRaises((TypeError, ValueError)) as ctx:
            session.SessionMiddleware(lambda e, s: [])
        self.assertIn("secret", str(ctx.exception))

    def test_store_get_error_propagates_and_nothing_is_written(self):
        class Down(RecordingStore):
            def get(self, sid):
                super().get(sid)
                raise ConnectionError("store down")
        h = Harness(lambda e: sess(e).__setitem__("u", 1), store=Down())
        h.seed({"u": 0})
        with self.assertRaises(ConnectionError):
            h.request()
        self.assertEqual([n for n, _ in h.store.calls if n != "get"], [])

    def test_store_set_error_propagates_and_record_stays_as_it_was(self):
        class Full(RecordingStore):
            def set(self, sid, record):
                if self._depth == 0 and getattr(self, "armed", False):
                    raise OSError("disk full")
                return super().set(sid, record)
        store = Full()
        h = Harness(lambda e: sess(e).__setitem__("u", 2), store=store)
        sid = h.seed({"u": 1})
        store.armed = True
        with self.assertRaises(OSError):
            h.request()
        store.armed = False
        self.assertEqual(store.get(sid)["u"], 1)

    def test_store_touch_and_destroy_errors_propagate(self):
        class Flaky(RecordingStore):
            def touch(self, sid, record):
                raise ConnectionError("touch failed")

            def destroy(self, sid):
                raise ConnectionError("destroy failed")
        for label, action, kw in (("touch", None, {}),
                                  ("destroy", lambda e: e.__setitem__("session", None), {"unset": "destroy"})):
            with self.subTest(label):
                h = Harness(action, store=Flaky(), **kw)
                h.seed({"u": 1})
                with self.assertRaises(ConnectionError):
                    h.request()

    def test_app_raising_saves_nothing(self):
        def boom(environ):
            sess(environ)["u"] = 2
            raise RuntimeError("app failed")
        h = Harness(boom)
        sid = h.seed({"u": 1})
        with self.assertRaises(RuntimeError):
            h.request()
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.get(sid)["u"], 1)

    def test_app_raising_mid_body_saves_nothing(self):
        store = RecordingStore()

        def app(environ, start_response):
            def body():
                environ["session"]["u"] = 2
                start_response("200 OK", [("Content-Type", "text/plain")])
                yield b"first"
                yield b"second"
                raise RuntimeError("app failed mid-body")
            return body()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        with self.assertRaises(RuntimeError):
            Client(mw).request()
        self.assertEqual(store.count("set"), 0)
        self.assertEqual(store.length(), 0)


# ================================================================ response streaming

class TestStreaming(unittest.TestCase):

    def run_ordering(self, make_body, lazy):
        events = []
        store = RecordingStore(events=events)

        def app(environ, start_response):
            if lazy:
                def gen():
                    environ["session"]["views"] = 1
                    start_response("200 OK", [("Content-Type", "text/plain")])
                    yield from make_body()
                return gen()
            environ["session"]["views"] = 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            return make_body()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        resp = Client(mw).request(events=events)
        return resp, events, store

    def test_store_write_completes_before_the_last_chunk_reaches_the_server(self):
        bodies = {"three-chunk generator": lambda: (c for c in (b"a", b"b", b"c")),
                  "one-chunk list": lambda: [b"abc"],
                  "empty list": lambda: [],
                  "chunks with empty tail": lambda: [b"a", b""]}
        for lazy in (False, True):
            for label, make_body in bodies.items():
                with self.subTest(body=label, lazy_start_response=lazy):
                    resp, events, store = self.run_ordering(make_body, lazy)
                    kinds = [e[0] for e in events]
                    self.assertIn("set-done", kinds)
                    data_chunks = [i for i, e in enumerate(events) if e[0] == "chunk"]
                    cut = data_chunks[-1] if data_chunks else kinds.index("end")
                    self.assertLess(kinds.index("set-done"), cut, events)
                    self.assertEqual(resp.body, b"".join(make_body()))
                    self.assertIsNotNone(resp.cookie(), "lazy start_response still gets Set-Cookie")
                    self.assertEqual(store.get(resp.cookie().sid)["views"], 1)

    def test_touch_also_completes_before_the_last_chunk(self):
        events = []
        store = RecordingStore(events=events)
        mw = session.SessionMiddleware(lambda e, s: (s("200 OK", []), iter([b"a", b"b"]))[1],
                                       secret=SECRET, store=store)
        store.set("sid-1", make_record({"n": 1}))
        Client(mw).request(cookie=f"{NAME}={cookie_value('sid-1')}", events=events)
        kinds = [e[0] for e in events]
        last_chunk = max(i for i, k in enumerate(kinds) if k == "chunk")
        self.assertLess(kinds.index("touch-done"), last_chunk, events)

    def test_legacy_write_callable_works(self):
        store = RecordingStore()

        def app(environ, start_response):
            environ["session"]["u"] = 1
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"hello, ")
            return [b"world"]
        resp = Client(session.SessionMiddleware(app, secret=SECRET, store=store)).request()
        self.assertEqual(resp.body, b"hello, world")
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(store.get(resp.cookie().sid)["u"], 1)

    def test_start_response_with_exc_info_passes_through(self):
        def app(environ, start_response):
            environ["session"]["u"] = 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise ValueError("late failure")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"error page"]
        resp = Client(session.SessionMiddleware(app, secret=SECRET)).request()
        self.assertEqual(resp.status, "500 Internal Server Error")
        self.assertEqual(resp.body, b"error page")

    def test_close_of_the_apps_iterable_is_called(self):
        closed = []

        class Body:
            def __iter__(self):
                yield b"x"

            def close(self):
                closed.append(True)

        def app(environ, start_response):
            start_response("200 OK", [])
            return Body()
        Client(session.SessionMiddleware(app, secret=SECRET)).request()
        self.assertEqual(closed, [True])

    def test_middleware_is_wsgi_compliant(self):
        # wsgiref's validator wants dotless environ keys to be strings (CGI variables), so the
        # session goes under a dotted, server-style key here.
        def app(environ, start_response):
            s = environ["app.session"]
            s["n"] = s.get("n", 0) + 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"n=%d" % s["n"]]
        client = Client(validator(session.SessionMiddleware(validator(app), secret=SECRET,
                                                            environ_key="app.session")))
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            self.assertEqual(client.request().body, b"n=1")
            self.assertEqual(client.request().body, b"n=2")


# ================================================================ record format

class TestRecordFormat(unittest.TestCase):

    def express_text(self, first_key_views=False):
        expires = iso_ms(time.time() + 3599.999)
        cookie = ('{"originalMaxAge":3599999,"expires":"%s","secure":false,"httpOnly":true,'
                  '"path":"/","sameSite":"lax"}' % expires)
        if first_key_views:
            return '{"views":3,"cookie":%s,"zeta":1}' % cookie
        return '{"cookie":%s,"views":3,"user":{"name":"Ada","tags":["a","ü"]}}' % cookie

    def test_reads_a_record_written_by_express(self):
        out = {}

        def look(environ):
            s = sess(environ)
            c = s.cookie
            out.update(views=s["views"], user=s["user"], original=c.original_max_age, same_site=c.same_site,
                       secure=c.secure, http_only=c.http_only, path=c.path, keys=sorted(s))
        h = Harness(look)
        text = self.express_text()
        h.seed(record=json.loads(text))
        h.request()
        self.assertEqual(out, {"views": 3, "user": {"name": "Ada", "tags": ["a", "ü"]}, "original": 3599.999,
                               "same_site": "lax", "secure": False, "http_only": True, "path": "/",
                               "keys": ["user", "views"]})

    def test_written_record_keeps_loaded_key_order_and_original_max_age_as_stored(self):
        h = Harness(lambda e: sess(e).__setitem__("views", 4))
        sid = h.seed(record=json.loads(self.express_text()))
        h.request()
        text = h.store.texts[sid]
        record = json.loads(text)
        self.assertEqual(list(record), ["cookie", "views", "user"])
        self.assertEqual(list(record["cookie"]), ["originalMaxAge", "expires", "secure", "httpOnly", "path", "sameSite"])
        self.assertEqual(record["cookie"]["originalMaxAge"], 3599999)
        self.assertRegex(record["cookie"]["expires"], ISO_MS)
        self.assertAlmostEqual(parse_iso(record["cookie"]["expires"]), time.time() + 3600, delta=5)
        self.assertIn('"tags":["a","ü"]', text)
        self.assertEqual(record["views"], 4)

    def test_loaded_record_with_cookie_not_first_keeps_its_order(self):
        h = Harness(lambda e: sess(e).update(views=4, alpha=1))
        sid = h.seed(record=json.loads(self.express_text(first_key_views=True)))
        h.request()
        self.assertEqual(list(json.loads(h.store.texts[sid])), ["views", "cookie", "zeta", "alpha"])

    def test_new_record_is_compact_cookie_first_camel_case(self):
        def act(environ):
            s = sess(environ)
            s["user"] = "Ada Lovelace ü"
            s["views"] = 3
        h = Harness(act, cookie={"max_age": HOUR, "same_site": "lax"})
        sc = h.request().cookie()
        text = h.store.texts[sc.sid]
        expires = json.loads(text)["cookie"]["expires"]
        self.assertRegex(expires, ISO_MS)
        self.assertAlmostEqual(parse_iso(expires), time.time() + HOUR, delta=3)
        self.assertEqual(text, '{"cookie":{"originalMaxAge":3600000,"expires":"%s","httpOnly":true,"path":"/",'
                               '"sameSite":"lax"},"user":"Ada Lovelace ü","views":3}' % expires)

    def test_fractional_max_age_is_written_as_whole_milliseconds(self):
        h = Harness(lambda e: sess(e).__setitem__("a", 1), cookie={"max_age": 90.5})
        sc = h.request().cookie()
        self.assertIn('"originalMaxAge":90500,', h.store.texts[sc.sid])

    def test_browser_session_cookie_record_keeps_nulls(self):
        h = Harness(lambda e: sess(e).__setitem__("a", 1))
        sc = h.request().cookie()
        self.assertEqual(h.store.texts[sc.sid],
                         '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"a":1}')

    def test_cookie_keys_follow_express_order_with_every_option(self):
        h = Harness(lambda e: sess(e).__setitem__("a", 1), cookie={
            "max_age": 60, "partitioned": True, "priority": "high", "secure": True, "http_only": False,
            "domain": "example.com", "path": "/", "same_site": "strict"})
        sc = h.request(https=True).cookie()
        cookie = json.loads(h.store.texts[sc.sid])["cookie"]
        self.assertEqual(list(cookie), ["originalMaxAge", "partitioned", "priority", "expires", "secure",
                                        "httpOnly", "domain", "path", "sameSite"])
        self.assertNotIn("maxAge", cookie)
        self.assertEqual({k: cookie[k] for k in cookie if k != "expires"},
                         {"originalMaxAge": 60000, "partitioned": True, "priority": "high", "secure": True,
                          "httpOnly": False, "domain": "example.com", "path": "/", "sameSite": "strict"})

    def test_encode_record_is_compact_raw_utf8_and_rejects_nan(self):
        record = {"cookie": {"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"}, "n": "ü"}
        self.assertEqual(session.encode_record(record),
                         '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"n":"ü"}')
        with self.assertRaises(ValueError):
            session.encode_record({"cookie": {}, "n": float("nan")})

    def test_store_expiry_time_is_cookie_expires_or_ttl_from_now(self):
        store = session.MemoryStore(ttl=100)
        self.assertEqual(store.expiry_time(make_record(max_age=None), now=1000.0), 1100.0)
        ts = time.time() + 50
        self.assertAlmostEqual(store.expiry_time({"cookie": {"expires": iso_ms(ts)}}, now=1000.0), ts, places=2)

    def test_expires_at_reads_iso_and_aware_datetime(self):
        ts = 1795872488.123
        self.assertAlmostEqual(session.expires_at({"cookie": {"expires": iso_ms(ts)}}), ts, places=3)
        aware = dt.datetime.fromtimestamp(ts, UTC)
        self.assertAlmostEqual(session.expires_at({"cookie": {"expires": aware}}), ts, places=3)
        self.assertIsNone(session.expires_at({"cookie": {"expires": None}}))
        self.assertIsNone(session.expires_at({"cookie": {}}))


# ================================================================ MemoryStore

class TestMemoryStore(unittest.TestCase):

    def test_get_set_destroy_round_trip(self):
        store = session.MemoryStore()
        self.assertIsNone(store.get("a"))
        store.set("a", make_record({"n": 1}))
        self.assertEqual(store.get("a")["n"], 1)
        store.destroy("a")
        self.assertIsNone(store.get("a"))
        store.destroy("never-there")

    def test_records_are_kept_as_json_not_references(self):
        store = session.MemoryStore()
        record = make_record({"cart": [1]})
        store.set("a", record)
        record["cart"].append(2)
        record["cookie"]["path"] = "/mutated"
        got = store.get("a")
        self.assertEqual(got["cart"], [1])
        got["cart"].append(3)
        store.all()["a"]["cart"].append(4)
        self.assertEqual(store.get("a")["cart"], [1])
        self.assertEqual(store.get("a")["cookie"]["path"], "/")

    def test_expired_record_is_never_returned(self):
        store = session.MemoryStore()
        store.set("past", make_record({"n": 1}, expires_in=-1))
        store.set("soon", make_record({"n": 2}, expires_in=0.3))
        store.set("live", make_record({"n": 3}))
        self.assertIsNone(store.get("past"))
        self.assertEqual(sorted(store.all()), ["live", "soon"])
        time.sleep(0.4)
        self.assertIsNone(store.get("soon"))
        self.assertEqual(list(store.all()), ["live"])
        self.assertEqual(store.length(), 1)

    def test_record_without_expires_lives_ttl_from_last_write(self):
        store = session.MemoryStore(ttl=0.3)
        store.set("a", make_record({"n": 1}, max_age=None))
        time.sleep(0.2)
        store.set("a", make_record({"n": 2}, max_age=None))
        time.sleep(0.2)
        self.assertEqual(store.get("a")["n"], 2)
        time.sleep(0.2)
        self.assertIsNone(store.get("a"))

    def test_a_session_saved_by_the_middleware_without_expires_lives_ttl(self):
        # The middleware hands the store its record with the JSON and expiry already
        # worked out; a browser-session cookie has none, so the store's ttl applies.
        for ttl, kept in ((0.3, False), (60, True)):
            with self.subTest(ttl=ttl):
                out = []
                h = Harness(lambda e: out.append(sess(e).setdefault("n", len(out))),
                            store=session.MemoryStore(ttl=ttl))
                h.request()
                time.sleep(0.4)
                h.request()
                self.assertEqual(out, [0, 0] if kept else [0, 1])

    def test_expired_records_are_reclaimed_under_normal_traffic(self):
        store = session.MemoryStore()
        blob = "x" * 20_000
        tracemalloc.start()
        try:
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            deadline = time.time() + 0.5
            for i in range(200):
                store.set(f"old-{i}", make_record({"blob": blob}, expires_in=deadline - time.time()))
            self.assertEqual(store.length(), 200, "inserting took longer than the records live")
            grown = tracemalloc.get_traced_memory()[0] - base
            time.sleep(max(0.0, deadline - time.time()) + 0.1)
            # Only what a server does (get/set/touch), never all()/length()/prune().
            for i in range(300):
                store.set(f"new-{i}", make_record({"n": i}))
                store.get(f"new-{i}")
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        self.assertGreater(grown, 200 * 20_000)
        self.assertLess(left, grown * 0.35, f"expired records still held: {left} of {grown} bytes")
        self.assertEqual(store.length(), 300)

    def test_many_expired_records_disappear_from_length_as_time_passes(self):
        store = session.MemoryStore()
        for i in range(3000):
            store.set(f"s{i}", make_record({"n": i}, expires_in=2.0 if i % 3 else 60))
        self.assertEqual(store.length(), 3000, "inserting took longer than the records live")
        time.sleep(2.1)
        self.assertEqual(store.length(), 1000)
        self.assertEqual(len(store.all()), 1000)

    def test_a_record_whose_expiry_moved_later_expires_at_the_new_time(self):
        store = session.MemoryStore()
        store.set("slide", make_record({"n": 1}, expires_in=0.3))
        store.touch("slide", make_record({"n": 1}, expires_in=0.8))
        store.set("moved", make_record({"n": 2}, expires_in=0.3))
        store.set("moved", make_record({"n": 3}, expires_in=0.8))
        store.set("earlier", make_record({"n": 4}, expires_in=60))
        store.set("earlier", make_record({"n": 5}, expires_in=0.3))
        time.sleep(0.5)
        self.assertEqual(store.prune(), 1, "only the record moved earlier has expired")
        self.assertEqual(sorted(store.all()), ["moved", "slide"])
        self.assertEqual(store.get("moved")["n"], 3)
        time.sleep(0.45)
        self.assertEqual(store.length(), 0, "the later expiries are honoured, without a get")

    def test_prune_deletes_expired_and_returns_count(self):
        store = session.MemoryStore()
        for i in range(3):
            store.set(f"soon{i}", make_record({"n": i}, expires_in=0.2))
        store.set("live", make_record({"n": 9}))
        time.sleep(0.3)
        self.assertEqual(store.prune(), 3)
        self.assertEqual(store.prune(), 0)
        self.assertEqual(list(store.all()), ["live"])

    def test_touch_refreshes_expiry_only(self):
        store = session.MemoryStore()
        store.set("a", make_record({"n": 1}, expires_in=0.3))
        fresh = make_record({"n": 99}, expires_in=60)
        store.touch("a", fresh)
        time.sleep(0.4)
        got = store.get("a")
        self.assertIsNotNone(got, "touch must extend the expiry")
        self.assertEqual(got["n"], 1, "touch must not write data")
        self.assertEqual(got["cookie"]["expires"], fresh["cookie"]["expires"])

    def test_touch_of_missing_record_creates_nothing(self):
        store = session.MemoryStore()
        store.touch("ghost", make_record({"n": 1}))
        self.assertIsNone(store.get("ghost"))
        self.assertEqual(store.length(), 0)

    def test_all_length_clear_close(self):
        store = session.MemoryStore()
        for i in range(5):
            store.set(f"s{i}", make_record({"n": i}))
        self.assertEqual(store.length(), 5)
        self.assertEqual({k: v["n"] for k, v in store.all().items()}, {f"s{i}": i for i in range(5)})
        store.clear()
        self.assertEqual((store.length(), store.all()), (0, {}))
        store.close()
        store.close()

    def test_safe_under_concurrent_threads(self):
        store = session.MemoryStore()
        errors = []
        start = threading.Barrier(8)

        def worker(n):
            try:
                start.wait()
                for i in range(300):
                    sid = f"t{n}-{i % 20}"
                    store.set(sid, make_record({"n": n, "i": i}))
                    got = store.get(sid)
                    assert got is not None and got["n"] == n, got
                    store.set("shared", make_record({"n": n, "i": i}))
                    shared = store.get("shared")
                    assert shared is None or set(shared) == {"cookie", "n", "i"}, shared
                    store.touch(sid, make_record({"n": n}))
                    if i % 7 == 0:
                        store.destroy(sid)
                    if i % 50 == 0:
                        store.all()
                        store.length()
                        store.prune()
            except Exception as exc:  # collected and reported by the main thread
                errors.append(exc)
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        for n in range(8):
            for j in range(20):
                got = store.get(f"t{n}-{j}")
                last_i = max(i for i in range(300) if i % 20 == j)
                if last_i % 7:
                    self.assertEqual((got["n"], got["i"]), (n, last_i))
                else:
                    self.assertIsNone(got)
        self.assertEqual(store.length(), len(store.all()))

    def test_memory_store_through_the_middleware_under_threads(self):
        store = session.MemoryStore()

        def app(environ, start_response):
            s = environ["session"]
            s["views"] = s.get("views", 0) + 1
            start_response("200 OK", [])
            return [b"%d" % s["views"]]
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        errors = []

        def visitor():
            try:
                client = Client(mw)
                for i in range(30):
                    assert client.request().body == b"%d" % (i + 1)
            except Exception as exc:  # collected and reported by the main thread
                errors.append(exc)
        threads = [threading.Thread(target=visitor) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(sorted(r["views"] for r in store.all().values()), [30] * 6)


class PlainMemoryStore(RecordingStore):
    """A RecordingStore whose get() and set() are its own: it is read through get() and written
    through set() (Store's merge over them), never as text."""

    def get(self, sid):
        return super().get(sid)

    def set(self, sid, record):
        return super().set(sid, record)

    def expiry(self, sid):
        return self._data[sid][0]


class CapableMemoryStore(RecordingStore):
    """A RecordingStore that counts what the middleware asks of it, capabilities included."""

    def expiry(self, sid):
        return self._data[sid][0]


def _counting_ids():
    counter = iter(range(1, 10 ** 6))
    return lambda environ: f"id{next(counter)}"


def _incr(s):
    s["n"] = s.get("n", 0) + 1


def _set_max_age(s):
    s.cookie.max_age = 60
    _incr(s)


def _reload(s):
    s["n"] = 99
    s.reload()


def _save_then_change(s):
    _incr(s)
    s.save()
    s["after"] = True


def _regenerate(s):
    s.regenerate()
    s["fresh"] = 1


# Each: the middleware's options, then one action per request (None: the app does not
# touch the session).  Cookies here have no expiry until an action gives them one.
TEXT_SCENARIOS = {
    "default": ({}, [_incr, _incr, lambda s: s.get("n"), None, lambda s: s.setdefault("l", []).append(1),
                     lambda s: s["l"].append(2), lambda s: s.cookie.path, lambda s: s.clear(),
                     lambda s: len(s), _incr, _save_then_change, _reload, lambda s: s.touch(), _incr,
                     _regenerate, _incr, _set_max_age, _incr, lambda s: s.destroy(), _incr, _incr]),
    "rolling": ({"rolling": True}, [_incr, _incr, None, lambda s: s.get("n"), _incr]),
    "resave": ({"resave": True}, [_incr, None, lambda s: s.get("n"), _incr]),
    "save_uninitialized": ({"save_uninitialized": True}, [None, None, _incr, lambda s: s.clear(), None]),
    "unset destroy": ({"unset": "destroy"}, [_incr, _incr, lambda s: s.pop("n"), _incr]),
    "cookie options": ({"cookie": {"domain": "example.com", "same_site": "lax", "priority": "High",
                                   "partitioned": True, "secure": False, "http_only": False}},
                       [_incr, _incr, None, lambda s: s.cookie.domain, _incr]),
}


class TestStoreCapabilities(unittest.TestCase):
    """A store that offers get_text and merge is read and written through them; one that does
    not (a subclass overriding get and set) through get and set.  Everything a request does
    must come out the same either way, whatever the options."""

    def run_scenario(self, store, options, actions, body="list"):
        seen, views = [], []

        def action(environ):
            s = sess(environ)
            seen.append(s)
            views.append(dict(dict.items(s)))
            if actions[len(seen) - 1] is not None:
                if options.get("unset") == "destroy" and len(seen) == len(actions):
                    environ["session"] = None
                else:
                    actions[len(seen) - 1](s)
        h = Harness(action, store=store, genid=_counting_ids(), **options)
        if body != "list":
            h.app = self.streaming_app(h.app, body)
            h.mw.app = h.app
        results = []
        for _ in actions:
            resp = h.request()
            headers = [(k, re.sub(r"Expires=[^;]*", "Expires=~", v)) for k, v in resp.headers]
            cookie = resp.cookie()
            records = {}
            for sid, record in sorted(session.MemoryStore.all(store).items()):
                expires = record["cookie"].pop("expires")
                records[sid] = (record, expires is not None,
                                expires and abs(parse_iso(expires) - time.time()) // 2,
                                round((store.expiry(sid) - time.time()) / 2))
            results.append((resp.status, headers, resp.body, cookie and cookie.expires is not None,
                            records))
        return results, views

    @staticmethod
    def streaming_app(app, body):
        """The Harness app with its body as a generator of one chunk ("generator") or of two
        ("generator2"), or given to write() with an empty list returned ("write")."""
        def streaming(environ, start_response):
            chunks = []
            write = None

            def capture(status, headers, exc_info=None):
                nonlocal write
                write = start_response(status, headers, exc_info)
                return write
            chunks = app(environ, capture)
            if body == "write":
                for chunk in chunks:
                    write(chunk)
                return []
            if body == "generator":
                return (chunk for chunk in chunks)
            return (chunk[:i] for chunk in chunks for i in (1, len(chunk)))  # "o", "ok"
        return streaming

    def test_with_and_without_capabilities_requests_responses_and_records_are_the_same(self):
        for body in ("list", "generator", "generator2", "write"):
            for name, (options, actions) in TEXT_SCENARIOS.items():
                for max_age in (None, 60):
                    if max_age is not None:
                        options = {**options, "cookie": {**options.get("cookie", {}),
                                                         "max_age": max_age}}
                    with self.subTest(name, body=body, max_age=max_age):
                        capable, plain = CapableMemoryStore(), PlainMemoryStore()
                        as_text, views_text = self.run_scenario(capable, options, actions, body)
                        as_records, views_records = self.run_scenario(plain, options, actions, body)
                        self.assertEqual(views_text, views_records)
                        for i, (a, b) in enumerate(zip(as_text, as_records)):
                            self.assertEqual(a, b, f"request {i + 1}")

    def test_a_store_that_offers_get_text_and_merge_is_used_through_them(self):
        # As Django's test_exists_searches_cache_first: the shortcut is taken when offered.
        for cookie in (None, {"max_age": 60}, {"secure": "auto", "same_site": "auto"},
                       lambda environ: {"max_age": 30}):
            with self.subTest(cookie=cookie):
                calls = []

                class Watched(session.MemoryStore):
                    def get(self, sid):
                        calls.append("get")
                        return super().get(sid)

                    def get_text(self, sid):
                        calls.append("get_text")
                        return super().get_text(sid)

                    def set(self, sid, record):
                        calls.append("set")
                        return super().set(sid, record)

                    def merge(self, sid, change):
                        calls.append("merge")
                        return super().merge(sid, change)
                h = Harness(lambda e: _incr(sess(e)), store=Watched(), cookie=cookie)
                h.request()
                h.request()
                self.assertEqual(calls, ["merge", "get_text", "merge"])

    def test_a_subclass_overriding_get_and_set_alone_is_read_and_written_through_them(self):
        store = PlainMemoryStore()
        h = Harness(lambda e: _incr(sess(e)), store=store)
        h.request()
        h.request()
        self.assertEqual(store.count("set"), 2)
        self.assertGreaterEqual(store.count("get"), 1)
        self.assertEqual(session.MemoryStore.get(store, store.ids("set")[0])["n"], 2)

    def test_a_record_express_wrote_in_its_own_form_is_read_through_the_fast_path_too(self):
        # Another key order and spacing than ours: found not to match, decoded in full.
        store = CapableMemoryStore()
        seen = []
        h = Harness(lambda e: (seen.append(dict(dict.items(sess(e)))), _incr(sess(e))),
                    store=store, cookie={"max_age": 60})
        sid = "express-written"
        store._data[sid] = (time.time() + 60, '{"n": 1, "cookie": {"path": "/", "httpOnly": true, '
                            f'"expires": "{iso_ms(time.time() + 60)}", "originalMaxAge": 60000}}}}')
        h.client.jar[NAME] = cookie_value(sid)
        h.request()
        self.assertEqual(seen, [{"n": 1}])
        self.assertEqual(store.get(sid)["n"], 2)
        self.assertEqual(list(store.get(sid)), ["n", "cookie"])

    def writes_meanwhile(self, store, change):
        """A request whose app does ``change(session)`` and then, before the response, another
        writer replaces the record: what the store holds after the request."""
        def action(environ):
            s = sess(environ)
            change(s)
            store.set(sid, make_record({"n": 9}, max_age=None))
        h = Harness(action, store=store)
        sid = h.seed({"n": 1, "l": [1]}, max_age=None)
        h.request()
        return store.get(sid)

    def test_an_unchanged_session_is_touched_and_leaves_a_write_made_meanwhile(self):
        for store in (CapableMemoryStore(), PlainMemoryStore()):
            with self.subTest(type(store).__name__):
                # Reading a list takes a snapshot; the data is unchanged at the end: no save.
                self.assertEqual(self.writes_meanwhile(store, lambda s: s["l"])["n"], 9)

    def test_a_session_the_app_saved_is_not_saved_again_over_a_write_made_meanwhile(self):
        def save(s):
            s["n"] = 5
            s.save()
        for store in (CapableMemoryStore(), PlainMemoryStore()):
            with self.subTest(type(store).__name__):
                self.assertEqual(self.writes_meanwhile(store, save)["n"], 9)

    def test_a_session_read_as_text_is_compared_with_its_stored_json_not_encoded_twice(self):
        # Reading a list hands out something the app may change: the data as loaded must be
        # kept to compare with.  Read as text, that is the stored JSON itself.
        counts = {}
        for store in (CapableMemoryStore(), PlainMemoryStore()):
            h = Harness(lambda e: sess(e)["l"], store=store)
            h.seed({"l": [1]}, max_age=None)
            encode = session._encode
            calls = []
            session._encode = lambda value: calls.append(value) or encode(value)
            try:
                h.request()
            finally:
                session._encode = encode
            counts[type(store).__name__] = len(calls)
        # The current data once at the end; through get(), the loaded data once more before.
        self.assertEqual(counts, {"CapableMemoryStore": 1, "PlainMemoryStore": 2})

    def test_the_session_lets_go_of_the_environ_when_the_request_ends(self):
        for options in ({}, {"rolling": True}):
            for store in (CapableMemoryStore(), PlainMemoryStore()):
                with self.subTest(type(store).__name__, **options):
                    seen = []
                    h = Harness(lambda e: (seen.append(sess(e)), _incr(sess(e))), store=store, **options)
                    h.request()
                    h.request()
                    self.assertEqual([s._req.context for s in seen], [None, None])

    def test_a_record_with_another_cookie_is_read_whole(self):
        store = session.MemoryStore()
        h = Harness(lambda e: (seen.append((sess(e).cookie.domain, sess(e).cookie.http_only)),
                               _incr(sess(e))), store=store)
        seen = []
        sid = h.seed({"n": 1}, max_age=None, domain="example.com", httpOnly=False)
        h.request()
        self.assertEqual(seen, [("example.com", False)])
        record = store.get(sid)
        self.assertEqual((record["n"], record["cookie"]["domain"], record["cookie"]["httpOnly"]),
                         (2, "example.com", False))

    def test_a_touched_record_is_read_with_its_new_cookie(self):
        store = session.MemoryStore()
        seen = []
        h = Harness(lambda e: seen.append((dict(dict.items(sess(e))), sess(e).cookie.http_only)),
                    store=store)
        sid = h.seed({"n": 1}, max_age=None)
        store.touch(sid, make_record({"n": 1}, max_age=None, httpOnly=False))
        h.request()
        self.assertEqual(seen, [({"n": 1}, False)])

    def test_an_unchanged_session_moves_its_expiry(self):
        store = session.MemoryStore(ttl=0.6)
        h = Harness(lambda e: sess(e).get("n"), store=store)
        sid = h.seed({"n": 1}, max_age=None)
        for _ in range(3):
            time.sleep(0.3)
            h.request()  # read only: a touch, which moves the expiry 0.6 s on
        self.assertEqual(store.get(sid)["n"], 1)
        time.sleep(0.7)
        self.assertIsNone(store.get(sid))


# ================================================================ over real sockets

class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class TestOverSockets(unittest.TestCase):

    def test_session_round_trip_over_wsgiref(self):
        def app(environ, start_response):
            s = environ["session"]
            s["views"] = s.get("views", 0) + 1
            start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "Accept-Encoding")])
            return [b"views=", b"%d" % s["views"]]
        store = session.MemoryStore()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store, cookie={"max_age": HOUR})
        server = make_server("127.0.0.1", support.free_port(), mw, handler_class=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            cookie = None
            for n in (1, 2, 3):
                conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
                conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
                resp = conn.getresponse()
                body = resp.read()
                self.assertEqual(resp.status, 200)
                self.assertEqual(body, b"views=%d" % n)
                set_cookie = resp.getheader("Set-Cookie")
                self.assertIsNotNone(set_cookie)
                sc = SetCookie(set_cookie)
                self.assertRegex(sc.attrs["expires"], HTTP_DATE)
                self.assertEqual(sorted(t.strip().lower() for t in resp.getheader("Vary").split(",")),
                                 ["accept-encoding", "cookie"])
                cookie = f"{sc.name}={sc.value}"
                conn.close()
                # The write finished before the body ended, so the store already holds it.
                self.assertEqual(store.get(sc.sid)["views"], n)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


if __name__ == "__main__":
    unittest.main()
