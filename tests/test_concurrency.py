"""Concurrent requests on one session, over real HTTP, with every store: nothing lost,
nothing brought back.

Each store runs the same rules (ConcurrencyRules) behind tests/concurrency_app.py,
served with a thread per request in this process and, for the stores several
processes share (SQLite, Redis, PostgreSQL), by three server processes at once,
every request going to the next one.  Requests that must overlap in a given order
wait at gates (files the test creates), so those tests do not depend on timing.

Redis and PostgreSQL run on private servers (tests/redis_server.py,
tests/postgres_server.py); MongoStore runs on mongomock, in this process only.
"""
from __future__ import annotations

import email.utils
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional
from urllib.parse import urlencode

import session
from tests.concurrency_app import WholeRecord, listening_port, make_app, mongomock_store, serve
from tests.postgres_server import INSTALL as POSTGRES_INSTALL, PostgresServer, postgres_server_available
from tests.redis_server import RedisServer, redis_server_available
from tests.support import has_module, requires

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "connect.sid"
CONCURRENT = 16   # requests at once on the one session
ROUNDS = 8
DB_CALL_MS = 5    # what each request "waits for" between loading the session and changing it
PROCESSES = 3     # server processes sharing a store

HAVE_REDIS = redis_server_available() and has_module("redis")
NEEDS_REDIS = "needs redis-server and redis-py: apt-get install -y redis-server && pip install redis"
HAVE_POSTGRES = postgres_server_available() and has_module("psycopg")
NEEDS_POSTGRES = f'needs the PostgreSQL server and psycopg 3: {POSTGRES_INSTALL} && pip install "psycopg[binary]"'
HAVE_MONGOMOCK = has_module("pymongo") and has_module("mongomock")
NEEDS_MONGOMOCK = "needs pymongo and mongomock: pip install pymongo mongomock"


def merges(store_class: type) -> tuple:
    """(whether the store class has a merge() of its own, the reason to give if not)."""
    owner = next(c for c in store_class.__mro__ if "merge" in vars(c))
    return owner is not session.Store, (f"{store_class.__name__} has no merge() of its own yet: "
                                        "Store's default (get, then set, without a lock) cannot "
                                        "keep concurrent changes")


# ---------------------------------------------------------------- servers shared by the module

_servers: dict = {}


def _shared(kind: str) -> Any:
    """The module's private redis-server or PostgreSQL cluster, started on first use."""
    if kind not in _servers:
        _servers[kind] = (RedisServer() if kind == "redis" else PostgresServer()).__enter__()
    return _servers[kind]


def tearDownModule() -> None:
    for server in _servers.values():
        server.__exit__(None, None, None)
    _servers.clear()


# ---------------------------------------------------------------- HTTP

class Response:
    def __init__(self, status: int, set_cookies: list, body: bytes) -> None:
        self.status = status
        self.set_cookies = set_cookies  # our cookie's Set-Cookie headers
        self.body = json.loads(body) if status == 200 else body

    @property
    def cookie(self) -> Optional[str]:
        """``connect.sid=<value>`` from our Set-Cookie, or None."""
        return self.set_cookies[-1].split(";", 1)[0] if self.set_cookies else None


def get(port: int, path: str, cookie: Optional[str] = None, **query: Any) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        url = path + ("?" + urlencode(query) if query else "")
        conn.request("GET", url, headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        body = resp.read()
        ours = [v for k, v in resp.getheaders()
                if k.lower() == "set-cookie" and v.startswith(NAME + "=")]
        return Response(resp.status, ours, body)
    finally:
        conn.close()


class Processes:
    """``count`` server processes (python -m tests.concurrency_app) sharing one store."""

    def __init__(self, count: int, spec: str, gates: str) -> None:
        self.procs: list = []
        self.ports: list = []
        try:
            for _ in range(count):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.concurrency_app", "--store", spec,
                     "--gates", gates], cwd=ROOT, stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                self.procs.append(proc)
            for proc in self.procs:
                self.ports.append(listening_port(proc))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> str:
        """Stop every process; what they printed after starting (errors the apps raised)."""
        out = []
        for proc in self.procs:
            try:
                proc.stdin.close()
                out.append(proc.stdout.read().decode(errors="replace"))
                proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(5)
            proc.stdout.close()
        self.procs = []
        return "".join(out)


# ---------------------------------------------------------------- the rules, for every store

class ConcurrencyRules:
    """Every rule of "Concurrent requests on one session", over HTTP; one subclass per store
    and serving mode.  A subclass gives ``open_store()`` (this process's handle on the
    store) and, to be served by several processes, ``processes`` and ``spec()``."""

    processes = 0  # 0: served in this process, a thread per request

    @classmethod
    def open_store(cls) -> Any:
        """The store, fresh: this process's handle on it (the one served, in threads)."""
        raise NotImplementedError

    @classmethod
    def spec(cls) -> str:
        """The store as concurrency_app's --store names it, for the server processes."""
        raise NotImplementedError

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.dir = tempfile.mkdtemp(prefix="concurrency-")
        cls.gates = os.path.join(cls.dir, "gates")
        os.mkdir(cls.gates)
        try:
            cls.store = cls.open_store()
            if cls.processes:
                cls.servers = Processes(cls.processes, cls.spec(), cls.gates)
                cls.ports = cls.servers.ports
            else:
                port, cls.errors, cls.stop = serve(make_app(cls.store, cls.gates))
                cls.ports = [port]
        except BaseException:
            if hasattr(cls, "store"):
                cls.store.close()
            shutil.rmtree(cls.dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        errors = []
        if cls.processes:
            errors = [line for line in cls.servers.stop().splitlines() if line.startswith("error:")]
        else:
            cls.stop()
        cls.store.close()
        shutil.rmtree(cls.dir, ignore_errors=True)
        super().tearDownClass()
        if errors:
            raise AssertionError("the server processes' apps raised:\n" + "\n".join(errors))

    def setUp(self) -> None:
        self.turn = 0
        if not self.processes:
            self.errors.clear()
            self.addCleanup(lambda: self.assertEqual(self.errors, [], "the app raised"))

    def port(self) -> int:
        """The next server, in turn: with several processes, consecutive requests of a test
        (and the concurrent ones) go to different processes."""
        self.turn += 1
        return self.ports[self.turn % len(self.ports)]

    def start_session(self, **data: Any) -> tuple:
        """A new session holding ``data``: (its cookie, its ID)."""
        resp = get(self.port(), "/put", data=json.dumps(data))
        self.assertEqual(resp.status, 200, resp.body)
        return resp.cookie, resp.body["id"]

    def stored(self, sid: str) -> Optional[dict]:
        """The record as the store holds it now, without its cookie; None if there is none."""
        record = self.store.get(sid)
        if record is None:
            return None
        record = dict(record)
        del record["cookie"]
        return record

    # -- gated requests: saves in an exact order

    def gated(self, path: str, cookie: str, **query: Any) -> "Gated":
        """Send a request that loads the session, then waits at a gate until ``open()``."""
        return Gated(self, path, cookie, query)

    # -- the rules

    def test_concurrent_requests_each_setting_its_own_key_keep_every_key(self):
        cookie, sid = self.start_session(seed="s")
        expected = {"seed": "s"}
        overlapped = 0
        with ThreadPoolExecutor(CONCURRENT) as pool:
            for r in range(ROUNDS):
                barrier = threading.Barrier(CONCURRENT)
                ports = [self.port() for _ in range(CONCURRENT)]

                def one(i: int) -> Response:
                    barrier.wait(10)
                    return get(ports[i], "/set", cookie, key=f"r{r}k{i}", value=str(i),
                               ms=DB_CALL_MS)
                responses = list(pool.map(one, range(CONCURRENT)))
                for i, resp in enumerate(responses):
                    self.assertEqual(resp.status, 200, resp.body)
                    self.assertEqual(resp.body["id"], sid)
                    expected[f"r{r}k{i}"] = str(i)
                spans = [(resp.body["t0"], resp.body["t1"]) for resp in responses]
                overlapped += sum(any(a0 < b1 and b0 < a1 for j, (b0, b1) in enumerate(spans)
                                      if j != i) for i, (a0, a1) in enumerate(spans))
        self.assertEqual(self.stored(sid), expected)
        self.assertEqual(get(self.port(), "/raw", cookie).body["session"], expected)
        # The requests did overlap (else keeping every key would prove nothing).
        self.assertGreater(overlapped, CONCURRENT * ROUNDS // 2)

    def test_a_slow_save_racing_a_logout_does_not_bring_the_session_back(self):
        cookie, sid = self.start_session(user="ada")
        slow = self.gated("/set", cookie, key="late", value="x")
        out = get(self.port(), "/logout", cookie)
        self.assertEqual(out.status, 200, out.body)
        self.assertIn("Expires=Thu, 01 Jan 1970 00:00:00 GMT", out.set_cookies[0])
        self.assertIsNone(self.store.get(sid))
        resp = slow.open()
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.set_cookies, [], "no cookie for a session that is gone")
        self.assertIsNone(self.store.get(sid), "the logged-out session came back")
        after = get(self.port(), "/raw", cookie)
        self.assertEqual(after.body["session"], {})
        self.assertNotEqual(after.body["id"], sid)

    def test_a_slow_save_racing_a_login_regenerate_does_not_bring_the_old_id_back(self):
        cookie, old = self.start_session(cart=["book"])
        slow = self.gated("/set", cookie, key="late", value="x")
        login = get(self.port(), "/login", cookie, user="ada")
        self.assertEqual(login.status, 200, login.body)
        new = login.body["id"]
        self.assertNotEqual(new, old)
        self.assertIsNone(self.store.get(old))
        resp = slow.open()
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.set_cookies, [], "no cookie for the ID that login ended")
        self.assertIsNone(self.store.get(old), "the pre-login ID came back")
        self.assertEqual(self.stored(new), {"user": "ada"})
        self.assertEqual(get(self.port(), "/raw", login.cookie).body["session"], {"user": "ada"})

    def test_in_place_changes_to_different_nested_keys_merge(self):
        cookie, sid = self.start_session(cart={"a": ["pen"]}, prefs={"b": "light"})
        first = self.gated("/append", cookie, key="cart", sub="a", value="ink")
        second = self.gated("/setin", cookie, key="prefs", sub="b", value="dark")
        self.assertEqual(first.open().status, 200)
        self.assertEqual(second.open().status, 200)
        self.assertEqual(self.stored(sid), {"cart": {"a": ["pen", "ink"]}, "prefs": {"b": "dark"}})

    def test_same_key_the_later_save_wins_not_the_later_start(self):
        cookie, sid = self.start_session(color="none")
        for first_value, second_value in (("red", "blue"), ("green", "white")):
            started_first = self.gated("/set", cookie, key="color", value=first_value)
            started_second = self.gated("/set", cookie, key="color", value=second_value)
            # Saved in the reverse order of their starts: the one saved last wins.
            self.assertEqual(started_second.open().status, 200)
            self.assertEqual(self.stored(sid), {"color": second_value})
            self.assertEqual(started_first.open().status, 200)
            self.assertEqual(self.stored(sid), {"color": first_value})

    def test_same_key_changed_in_place_the_later_save_wins_the_whole_key(self):
        """The unit of a merge is the top-level key: two requests changing different parts
        of one key each write the whole key, and the later save wins."""
        cookie, sid = self.start_session(cart={"a": [], "b": []})
        first = self.gated("/append", cookie, key="cart", sub="a", value="pen")
        second = self.gated("/append", cookie, key="cart", sub="b", value="ink")
        self.assertEqual(first.open().status, 200)
        self.assertEqual(second.open().status, 200)
        self.assertEqual(self.stored(sid), {"cart": {"a": [], "b": ["ink"]}})

    def test_same_key_counter_keeps_one_of_two_overlapping_increments(self):
        """What a merge cannot do: both requests read 1 and write 2.  A counter that must
        count every request needs an app-level lock (see the next test) or an atomic
        operation of the store's own (Redis INCR, an SQL UPDATE ... SET n = n + 1)."""
        cookie, sid = self.start_session(n=1)
        first = self.gated("/incr", cookie, key="n")
        second = self.gated("/incr", cookie, key="n")
        self.assertEqual(first.open().body["session"], {"n": 2})
        self.assertEqual(second.open().body["session"], {"n": 2})
        self.assertEqual(self.stored(sid), {"n": 2})


    def test_a_longer_lifetime_set_meanwhile_goes_out_with_the_slower_response_too(self):
        """'Remember me' (a 30-day cookie) saved while a slower request, loaded before it,
        saves its cart: the merge keeps the later expiry, and the slower response's cookie
        must carry it, since the browser keeps the last cookie it gets."""
        cookie, sid = self.start_session(user="ada")
        cart = self.gated("/set", cookie, key="cart", value="pen")
        remember = get(self.port(), "/remember", cookie, days=30)
        self.assertEqual(remember.status, 200, remember.body)
        slower = cart.open()
        self.assertEqual(slower.status, 200, slower.body)
        self.assertEqual(self.stored(sid), {"user": "ada", "remember": 30, "cart": "pen"})
        stored = session.expires_at(self.store.get(sid))
        for resp in (remember, slower):
            sent = email.utils.parsedate_to_datetime(
                re.search(r"Expires=([^;]+)", resp.set_cookies[0]).group(1)).timestamp()
            self.assertAlmostEqual(sent, stored, delta=1.5)
        self.assertAlmostEqual(stored, time.time() + 30 * 86400, delta=60)


class Gated:
    """A request running in a thread of its own: it has loaded its session and waits at its
    gate once constructed; ``open()`` lets it finish and returns its response."""

    def __init__(self, case: ConcurrencyRules, path: str, cookie: str, query: dict) -> None:
        self.gates, self.token = case.gates, uuid.uuid4().hex
        self.result: list = []
        port = case.port()
        self.thread = threading.Thread(
            target=lambda: self.result.append(get(port, path, cookie, gate=self.token, **query)),
            daemon=True)
        self.thread.start()
        started = os.path.join(self.gates, self.token + ".started")
        deadline = time.monotonic() + 20
        while not os.path.exists(started):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.thread.join(1)
                raise AssertionError(f"the gated request never reached its gate: {self.result}")
            time.sleep(0.002)

    def open(self) -> Response:
        with open(os.path.join(self.gates, self.token), "w"):
            pass
        self.thread.join(30)
        if not self.result:
            raise AssertionError("the gated request did not finish")
        return self.result[0]


class InProcess:
    """What only a single server process can show."""

    def test_same_key_counter_under_an_app_lock_counts_every_request(self):
        """The app-level lock for a counter within one process: reload(), increment, save()
        while holding it (across processes, the store's own atomic operation is needed)."""
        cookie, sid = self.start_session(n=0)
        with ThreadPoolExecutor(CONCURRENT) as pool:
            barrier = threading.Barrier(CONCURRENT)

            def one(i: int) -> Response:
                barrier.wait(10)
                return get(self.ports[0], "/locked-incr", cookie, key="n", ms=DB_CALL_MS)
            statuses = [r.status for r in pool.map(one, range(CONCURRENT * 2))]
        self.assertEqual(statuses, [200] * CONCURRENT * 2)
        self.assertEqual(self.stored(sid), {"n": CONCURRENT * 2})


# ---------------------------------------------------------------- one class per store and mode

def _merges(module: str, name: str, available: bool) -> tuple:
    """``merges()`` of stores.<module>.<name>, or (True, "") when its driver is missing
    (the suite is then skipped for that reason instead)."""
    if not available:
        return True, ""
    return merges(getattr(__import__(f"stores.{module}", fromlist=[name]), name))


class TestMemoryStore(InProcess, ConcurrencyRules, unittest.TestCase):
    @classmethod
    def open_store(cls):
        return session.MemoryStore()


class TestAChangeAppliedOverAnotherWrite(unittest.TestCase):
    """Change.apply: what a store's merge writes when another request saved meanwhile."""

    COOKIE = {"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"}

    def apply(self, loaded: dict, theirs: dict, mine: dict) -> dict:
        encode = session.encode_record
        change = session.Change(encode({"cookie": self.COOKIE, **loaded}),
                                encode({"cookie": self.COOKIE, **mine}), None)
        text, _ = change.apply(encode({"cookie": self.COOKIE, **theirs}))
        return {k: v for k, v in session.decode_record(text).items() if k != "cookie"}

    def test_data_nested_deeper_than_the_encoders_limit_is_merged(self):
        deep: Any = "leaf"
        for _ in range(sys.getrecursionlimit() - 15):  # the app could save it: on a new stack
            deep = [deep]
        merged = self.apply({"tree": deep}, {"tree": deep, "b": 1}, {"tree": deep, "a": 1})
        self.assertEqual((merged["a"], merged["b"]), (1, 1))

    def test_a_deep_value_another_request_changed_is_kept_when_this_one_did_not_touch_it(self):
        # Compared on this stack, the two trees raised RecursionError and counted as changed:
        # the tree as loaded then overwrote the other request's.
        def tree(leaf):
            deep: Any = leaf
            for _ in range(sys.getrecursionlimit() - 15):
                deep = [deep]
            return deep
        merged = self.apply({"tree": tree("v0"), "n": 0}, {"tree": tree("v1"), "n": 0},
                            {"tree": tree("v0"), "n": 1})
        leaf = merged["tree"]
        while type(leaf) is list:
            leaf = leaf[0]
        self.assertEqual((leaf, merged["n"]), ("v1", 1))

    def test_zero_changed_to_minus_zero_is_a_change(self):
        # 0.0 == -0.0 in Python, but the record's JSON differs, as JavaScript's Object.is does.
        merged = self.apply({"t": 0.0}, {"t": 0.0, "b": 1}, {"t": -0.0})
        self.assertEqual(str(merged["t"]), "-0.0")
        self.assertEqual(merged["b"], 1)

    def test_a_value_changed_to_an_equal_value_of_another_type_is_a_change(self):
        # 1 == 1.0 == True in Python, but the record's JSON differs.
        for new in (True, 1.0):
            with self.subTest(new=new):
                merged = self.apply({"t": 1}, {"t": 1, "b": 1}, {"t": new})
                self.assertIs(type(merged["t"]), type(new))
                self.assertEqual(merged["b"], 1)

    def test_a_later_expiry_stored_meanwhile_is_kept_over_a_browser_session_cookie(self):
        # Another request set "remember me" (30 days) while this one, loaded with a
        # browser-session cookie (no expiry), saved its cart.
        later = time.time() + 30 * 86400
        remember = {"originalMaxAge": 30 * 86400 * 1000, "expires": session._iso_ms(int(later * 1000)),
                    "httpOnly": True, "path": "/"}
        encode = session.encode_record
        change = session.Change(encode({"cookie": self.COOKIE, "u": 1}),
                                encode({"cookie": self.COOKIE, "u": 1, "cart": [1]}), None, keep_later=True)
        text, expires = change.apply(encode({"cookie": remember, "u": 1}))
        self.assertEqual(session.decode_record(text), {"cookie": remember, "u": 1, "cart": [1]})
        self.assertAlmostEqual(expires, later, delta=1)


    def cookie_after(self, loaded: dict, theirs: dict, mine: dict, keep_later: bool = True) -> tuple:
        """(the merged record's cookie, its expiry): cookies as loaded, as stored meanwhile by
        another request, and as this request would write them; the data is left alone."""
        encode = session.encode_record
        expires = session.expires_at({"cookie": mine})
        change = session.Change(encode({"cookie": loaded, "u": 1}), encode({"cookie": mine, "u": 1}),
                                expires, keep_later=keep_later)
        text, expiry = change.apply(encode({"cookie": theirs, "u": 2}))
        return session.decode_record(text)["cookie"], expiry

    @staticmethod
    def hour_cookie(in_seconds: float, **fields) -> dict:
        return {"originalMaxAge": 3600000, "expires": session._iso_ms(int((time.time() + in_seconds) * 1000)),
                "httpOnly": True, "path": "/", **fields}

    def test_attributes_this_request_changed_are_kept_with_a_later_stored_expiry(self):
        # Another request (with no change to the cookie) stored a later expiry meanwhile.
        loaded, theirs = self.hour_cookie(3000), self.hour_cookie(3600)
        mine = {**self.hour_cookie(3599), "domain": "example.com", "sameSite": "strict"}
        mine["httpOnly"] = False
        cookie, expiry = self.cookie_after(loaded, theirs, mine)
        self.assertEqual(cookie, {**theirs, "httpOnly": False, "domain": "example.com",
                                  "sameSite": "strict"})
        self.assertEqual(list(cookie), ["originalMaxAge", "expires", "httpOnly", "domain", "path",
                                        "sameSite"])
        self.assertAlmostEqual(expiry, session.expires_at({"cookie": theirs}), delta=0.001)

    def test_attributes_the_other_request_changed_are_kept_with_this_requests_times(self):
        loaded = self.hour_cookie(3000, sameSite="lax", priority="high")
        theirs = {**self.hour_cookie(3500), "sameSite": "strict", "domain": "example.com"}
        mine = self.hour_cookie(3600, sameSite="lax", priority="high")
        del mine["priority"]  # this request unset one attribute
        cookie, expiry = self.cookie_after(loaded, theirs, mine)
        self.assertEqual(cookie, {**mine, "sameSite": "strict", "domain": "example.com"})
        self.assertEqual(list(cookie), ["originalMaxAge", "expires", "httpOnly", "domain", "path",
                                        "sameSite"])
        self.assertAlmostEqual(expiry, session.expires_at({"cookie": mine}), delta=0.001)

    def test_with_no_cookie_loaded_this_requests_cookie_is_written_and_foreign_fields_go(self):
        # A change a store built from a record without a cookie object, and a stored cookie
        # with fields express never writes: neither makes the merge fail or keeps them.
        theirs = {**self.hour_cookie(3000), "maxAge": 5, "foo": 1, "sameSite": "lax"}
        mine = self.hour_cookie(3600, domain="example.com")
        change = session.Change('{"u":1}', session.encode_record({"cookie": mine, "u": 1}),
                                session.expires_at({"cookie": mine}))
        text, _ = change.apply(session.encode_record({"cookie": theirs, "u": 2}))
        self.assertEqual(session.decode_record(text)["cookie"], mine)
        loaded, mine = self.hour_cookie(2000), self.hour_cookie(3600)
        cookie, _ = self.cookie_after(loaded, theirs, mine)
        self.assertEqual(cookie, {**mine, "sameSite": "lax"})

    def test_a_lifetime_this_request_set_replaces_a_later_stored_expiry(self):
        loaded, theirs = self.hour_cookie(3000), self.hour_cookie(3600)
        mine = {**self.hour_cookie(60), "originalMaxAge": 60000}
        cookie, expiry = self.cookie_after(loaded, theirs, mine, keep_later=False)
        self.assertEqual(cookie, mine)
        self.assertAlmostEqual(expiry, session.expires_at({"cookie": mine}), delta=0.001)

    def test_fields_stored_null_for_unset_are_not_taken_for_this_requests_change(self):
        # connect-mongo (stringify false) stores express's unset fields as null: loaded so,
        # they must not undo the attributes another request set meanwhile.
        loaded = self.hour_cookie(3000, domain=None, sameSite=None)
        theirs = self.hour_cookie(3500, domain="example.com", sameSite="lax")
        cookie, _ = self.cookie_after(loaded, theirs, self.hour_cookie(3600))
        self.assertEqual((cookie.get("domain"), cookie.get("sameSite")), ("example.com", "lax"))

    def test_kept_times_tell_what_the_last_apply_kept(self):
        # A compare-and-set store applies the change again after losing a race: times kept
        # the first time, from a record overwritten since, must not reach the cookie.
        loaded, mine = self.hour_cookie(3000), self.hour_cookie(3600)
        encode = session.encode_record
        change = session.Change(encode({"cookie": loaded, "u": 1}), encode({"cookie": mine, "u": 1}),
                                session.expires_at({"cookie": mine}))
        later = self.hour_cookie(7200)
        change.apply(encode({"cookie": later, "u": 2}))
        self.assertEqual(change.kept_times, (later["originalMaxAge"], later["expires"]))
        change.apply(encode({"cookie": self.hour_cookie(3500), "u": 3}))
        self.assertIsNone(change.kept_times)

    def test_a_stored_text_that_is_not_a_session_is_replaced_by_this_change(self):
        mine = {"cookie": self.hour_cookie(3600), "u": 1}
        change = session.Change(session.encode_record({"cookie": self.COOKIE}),
                                session.encode_record(mine), session.expires_at(mine))
        for stored in ("not json", "[]", '{"u":2}'):
            with self.subTest(stored=stored):
                self.assertEqual(change.apply(stored), (change.text, change.expires))


class TestWholeRecordWritesLoseKeys(unittest.TestCase):
    """The same requests through a store the middleware writes with set() (no merge) lose
    keys: the requests above do overlap enough to lose them."""

    def test_whole_record_writes_lose_keys_under_the_same_load(self):
        store = session.MemoryStore()
        with self.assertLogs("session", "WARNING"):
            app = make_app(WholeRecord(store))
        port, errors, stop = serve(app)
        self.addCleanup(stop)
        resp = get(port, "/put", data='{"seed":"s"}')
        cookie, sid = resp.cookie, resp.body["id"]
        with ThreadPoolExecutor(CONCURRENT) as pool:
            barrier = threading.Barrier(CONCURRENT)

            def one(i: int) -> Response:
                barrier.wait(10)
                return get(port, "/set", cookie, key=f"k{i}", value="1", ms=DB_CALL_MS)
            self.assertEqual({r.status for r in pool.map(one, range(CONCURRENT))}, {200})
        kept = len(store.get(sid)) - 2  # less the cookie and the seed
        self.assertLess(kept, CONCURRENT)


class _SQLite:
    @classmethod
    def open_store(cls):
        from stores.sqlite_store import SQLiteStore
        return SQLiteStore(os.path.join(cls.dir, "sessions.db"))

    @classmethod
    def spec(cls):
        return "sqlite:" + os.path.join(cls.dir, "sessions.db")


@requires(*_merges("sqlite_store", "SQLiteStore", True))
class TestSQLiteStore(InProcess, _SQLite, ConcurrencyRules, unittest.TestCase):
    pass


@requires(*_merges("sqlite_store", "SQLiteStore", True))
class TestSQLiteStoreProcesses(_SQLite, ConcurrencyRules, unittest.TestCase):
    processes = PROCESSES


@requires(*_merges("shelve_store", "ShelveStore", True))
class TestShelveStore(InProcess, ConcurrencyRules, unittest.TestCase):
    """One process only, by design: threads."""

    @classmethod
    def open_store(cls):
        from stores.shelve_store import ShelveStore
        return ShelveStore(os.path.join(cls.dir, "sessions"))


@requires(HAVE_MONGOMOCK, NEEDS_MONGOMOCK)
@requires(*_merges("mongo_store", "MongoStore", HAVE_MONGOMOCK))
class TestMongoStoreOnMongomock(InProcess, ConcurrencyRules, unittest.TestCase):
    """In this process only: mongomock is no server that several processes could share."""

    stringify = True

    @classmethod
    def open_store(cls):
        return mongomock_store(cls.stringify)


class TestMongoStoreUnstringifiedOnMongomock(TestMongoStoreOnMongomock):
    stringify = False


class _Redis:
    @classmethod
    def open_store(cls):
        from stores.redis_store import RedisStore
        store = RedisStore(url=_shared("redis").url)
        store.clear()
        return store

    @classmethod
    def spec(cls):
        return "redis:" + _shared("redis").url


@requires(HAVE_REDIS, NEEDS_REDIS)
@requires(*_merges("redis_store", "RedisStore", HAVE_REDIS))
class TestRedisStore(InProcess, _Redis, ConcurrencyRules, unittest.TestCase):
    pass


@requires(HAVE_REDIS, NEEDS_REDIS)
@requires(*_merges("redis_store", "RedisStore", HAVE_REDIS))
class TestRedisStoreProcesses(_Redis, ConcurrencyRules, unittest.TestCase):
    processes = PROCESSES


class _Postgres:
    @classmethod
    def open_store(cls):
        from stores.postgres_store import PostgresStore
        store = PostgresStore(conninfo=_shared("postgres").url, create_table_if_missing=True)
        store.clear()
        return store

    @classmethod
    def spec(cls):
        return "postgres:" + _shared("postgres").url


@requires(HAVE_POSTGRES, NEEDS_POSTGRES)
@requires(*_merges("postgres_store", "PostgresStore", HAVE_POSTGRES))
class TestPostgresStore(InProcess, _Postgres, ConcurrencyRules, unittest.TestCase):
    pass


@requires(HAVE_POSTGRES, NEEDS_POSTGRES)
@requires(*_merges("postgres_store", "PostgresStore", HAVE_POSTGRES))
class TestPostgresStoreProcesses(_Postgres, ConcurrencyRules, unittest.TestCase):
    processes = PROCESSES


if __name__ == "__main__":
    unittest.main()
