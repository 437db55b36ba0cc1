"""RedisStore against a real, private redis-server: connect-redis's rules, and outages.

Needs ``apt-get install -y redis-server`` and ``pip install redis``.
"""
from __future__ import annotations

import asyncio
import gc
import http.client
import io
import json
import logging
import os
import re
import sys
import threading
import time
import unittest
import warnings
from datetime import datetime, timezone
from unittest import mock
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import session
from tests.asgi_support import cancel_a_write_then_aclose
from tests.harness import SECRET, call_wsgi, cookie_value, make_environ
from tests.redis_server import RedisServer, redis_server_available
from tests.store_contract import StoreContract
from tests.support import LostReply, exit_code_of_a_child, has_module, has_program, requires

HAVE_REDIS = redis_server_available() and has_module("redis")
REASON = "needs redis-server and redis-py: apt-get install -y redis-server && pip install redis"

if HAVE_REDIS:
    import redis
    from stores.redis_store import RedisStore

_server: RedisServer | None = None


def setUpModule() -> None:
    global _server
    if HAVE_REDIS:
        # KEYS is renamed away: any use of it by the store fails the tests.
        _server = RedisServer(args=("--rename-command", "KEYS", "")).__enter__()


def tearDownModule() -> None:
    if _server is not None:
        _server.__exit__(None, None, None)


def iso(epoch: float) -> str:
    """``cookie.expires`` as express writes it."""
    dt = datetime.fromtimestamp(epoch, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def record(expires: float | None = None, **data) -> dict:
    cookie = {"originalMaxAge": None if expires is None else 3600000,
              "expires": None if expires is None else iso(expires),
              "httpOnly": True, "path": "/"}
    return {"cookie": cookie, **data}


def prepared(expires: float | None, keep_later: bool = True, **data) -> "session._Record":
    """A record as the middleware hands it to set and touch (with ``keep_later``)."""
    rec = session._Record.of(session.encode_record(record(expires, **data)), expires)
    rec.keep_later = keep_later
    return rec


def text_of(expires: float | None = None, **data) -> str:
    """A record's JSON, as express writes it."""
    return session.encode_record(record(expires, **data))


def with_keys(text: str, **sets) -> str:
    """``text`` with some top-level keys set, as a request that changed them would write it."""
    rec = json.loads(text)
    rec.update(sets)
    return session.encode_record(rec)


def pause_gc(test: unittest.TestCase) -> None:
    """Keep the garbage collector from closing what ``test`` abandons until it ends, then
    collect it without the ResourceWarnings of its finalizers (the async clients of a closed
    loop: their sockets are closed, but without that loop their transports cannot know)."""
    if gc.isenabled():
        gc.disable()
        test.addCleanup(gc.enable)

    def collect():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    test.addCleanup(collect)


class RedisTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.raw = redis.Redis.from_url(_server.url)
        self.raw.flushdb()
        self.addCleanup(self.raw.close)

    def store(self, **kwargs) -> "RedisStore":
        store = RedisStore(url=_server.url, **kwargs)
        self.addCleanup(store.close)
        return store


@requires(HAVE_REDIS, REASON)
class TestRedisStoreContract(StoreContract, unittest.TestCase):
    """The conformance suite every store passes."""

    expiry_slack = 1.0     # EX is whole seconds, rounded up
    prune_counts = False   # Redis expires keys itself

    def make_store(self):
        return self.ttl_store(86400)

    def ttl_store(self, ttl):
        store = RedisStore(url=_server.url, ttl=ttl)
        store.client.flushdb()
        return store

    def reopen(self, store):
        return RedisStore(url=_server.url, prefix=store.prefix, ttl=store.ttl)

    def other_process(self, store):
        return RedisStore(url=_server.url, prefix=store.prefix, ttl=store.ttl)

    def raw_bytes(self, store, sid):
        with redis.Redis.from_url(_server.url) as client:
            return client.get(store.prefix + sid)

    def plant_text(self, store, sid, text):
        with redis.Redis.from_url(_server.url) as client:
            client.set(store.prefix + sid, text.encode("utf-8", "surrogatepass"), ex=60)


@requires(HAVE_REDIS, REASON)
class TestRedisStoreFormat(RedisTestCase):
    """What is in Redis is exactly what connect-redis writes and reads."""

    def test_key_is_prefix_plus_id_and_value_is_the_express_json(self):
        rec = record(time.time() + 600, user="ada", name="Zoë")
        self.store().set("abc", rec)
        self.assertEqual(self.raw.get("sess:abc"), session.encode_record(rec).encode("utf-8"))
        self.assertIn("Zoë".encode("utf-8"), self.raw.get("sess:abc"))

    def test_a_record_written_by_express_is_read_as_is(self):
        text = ('{"cookie":{"originalMaxAge":3599999,"expires":"2099-01-01T00:00:00.000Z",'
                '"httpOnly":true,"path":"/","sameSite":"lax"},"passport":{"user":"7"}}')
        self.raw.set("sess:fromnode", text, ex=60)
        got = self.store().get("fromnode")
        self.assertEqual(got, json.loads(text))
        self.assertEqual(session.encode_record(got), text)

    def test_custom_prefix_names_the_key_and_separates_stores(self):
        a, b = self.store(prefix="app-a:"), self.store(prefix="app-b:")
        a.set("1", record(None, n=1))
        b.set("2", record(None, n=2))
        self.assertTrue(self.raw.exists("app-a:1"))
        self.assertEqual(a.ids(), ["1"])
        self.assertEqual(b.all(), {"2": record(None, n=2)})
        a.clear()
        self.assertEqual((a.length(), b.length()), (0, 1))

    def test_prefix_with_glob_characters_matches_literally(self):
        odd = self.store(prefix="a[1]*?:")
        odd.set("x", record(None))
        self.raw.set("a1zz:y", "{}")  # would match the unescaped pattern a[1]*?:*
        self.assertEqual(odd.ids(), ["x"])

    def test_unreadable_value_is_treated_as_missing_with_a_warning(self):
        self.raw.set("sess:bad", "not json")
        self.raw.set("sess:nocookie", '{"user":"x"}')
        store = self.store()
        with self.assertLogs("stores.redis_store", logging.WARNING):
            self.assertIsNone(store.get("bad"))
            self.assertIsNone(store.get("nocookie"))
        with self.assertLogs("stores.redis_store", logging.WARNING):
            self.assertEqual(store.all(), {})

    def test_client_with_decode_responses_works(self):
        client = redis.Redis.from_url(_server.url, decode_responses=True)
        self.addCleanup(client.close)
        store = RedisStore(client)
        store.set("d", record(None, k="v"))
        self.assertEqual(store.get("d")["k"], "v")
        self.assertEqual(store.ids(), ["d"])
        self.assertEqual(list(store.all()), ["d"])


@requires(HAVE_REDIS, REASON)
class TestRedisStoreExpiry(RedisTestCase):
    """connect-redis's TTL: EX = ceil(seconds to cookie.expires); <= 0 deletes; else ``ttl``."""

    def test_ttl_is_seconds_to_cookie_expires_rounded_up(self):
        self.store().set("r", record(time.time() + 10.2))
        pttl = self.raw.pttl("sess:r")
        self.assertGreater(pttl, 10_300)   # EX 11: not floor (10) nor round (10)
        self.assertLessEqual(pttl, 11_000)

    def test_ttl_rule_is_exact_at_the_millisecond(self):
        store = self.store()
        now_ms = 1_800_000_000_000
        with mock.patch("stores.redis_store.time.time", return_value=now_ms / 1000):
            for left_ms, expected in [(1, 1), (999, 1), (1000, 1), (1001, 2), (0, 0), (-1, 0),
                                      (-1000, -1), (-1001, -1)]:
                rec = record((now_ms + left_ms) / 1000)
                self.assertEqual(store._ttl_for(rec), expected, left_ms)

    def test_record_without_expires_lives_for_the_store_ttl(self):
        self.store(ttl=1234).set("n", record(None))
        self.assertEqual(self.raw.ttl("sess:n"), 1234)

    def test_default_ttl_is_one_day(self):
        self.assertEqual(self.store().ttl, 86400)

    def test_expired_record_is_deleted_instead_of_written(self):
        store = self.store()
        store.set("gone", record(time.time() + 600))
        store.set("gone", record(time.time() - 1))
        self.assertFalse(self.raw.exists("sess:gone"))

    def test_key_expires_in_redis(self):
        store = self.store()
        store.set("short", record(time.time() + 0.3))   # EX 1
        self.assertIsNotNone(store.get("short"))
        time.sleep(1.2)
        self.assertIsNone(store.get("short"))
        self.assertEqual(store.length(), 0)

    def test_touch_is_expire_only_and_never_rewrites_the_json(self):
        store = self.store()
        first = record(time.time() + 100, v=1)
        store.set("t", first)
        store.touch("t", record(time.time() + 500, v=2))
        self.assertEqual(self.raw.get("sess:t"), session.encode_record(first).encode())
        self.assertGreater(self.raw.ttl("sess:t"), 490)

    def test_touch_of_a_missing_session_creates_nothing(self):
        self.store().touch("nobody", record(time.time() + 100))
        self.assertFalse(self.raw.exists("sess:nobody"))

    def test_stale_expires_in_a_live_key_is_still_returned(self):
        # What an Express app with rolling sessions leaves behind: touch moved the
        # key's TTL, the JSON still holds the first expires, long past.
        stale = record(time.time() - 3600, user="ada")
        self.raw.set("sess:rolled", session.encode_record(stale), ex=600)
        self.assertEqual(self.store().get("rolled"), stale)

    def test_disable_touch_leaves_the_ttl_alone(self):
        store = self.store(disable_touch=True)
        store.set("t", record(time.time() + 100))
        store.touch("t", record(time.time() + 5000))
        self.assertLessEqual(self.raw.ttl("sess:t"), 100)

    def test_disable_ttl_writes_keys_without_expiry_and_disables_touch(self):
        store = self.store(disable_ttl=True)
        store.set("p", record(time.time() + 100))
        self.assertEqual(self.raw.ttl("sess:p"), -1)
        store.touch("p", record(time.time() + 100))
        self.assertEqual(self.raw.ttl("sess:p"), -1)

    def test_disable_ttl_still_deletes_an_already_expired_record(self):
        store = self.store(disable_ttl=True)
        store.set("p", record(None))
        store.set("p", record(time.time() - 5))
        self.assertFalse(self.raw.exists("sess:p"))

    def test_prune_is_redis_own_job(self):
        self.assertEqual(self.store().prune(), 0)


@requires(HAVE_REDIS, REASON)
class TestRedisStoreWholeStore(RedisTestCase):
    """all/ids/length/clear walk the keyspace with SCAN (KEYS is disabled on this server)."""

    def test_scan_walks_many_keys_in_batches(self):
        store = self.store()
        pipe = self.raw.pipeline(transaction=False)
        for i in range(1203):
            pipe.set(f"sess:{i}", session.encode_record(record(None, i=i)), ex=600)
        pipe.set("other:1", "{}")
        pipe.execute()
        self.assertEqual(store.length(), 1203)
        self.assertEqual(sorted(store.ids(), key=int), [str(i) for i in range(1203)])
        everything = store.all()
        self.assertEqual(len(everything), 1203)
        self.assertEqual(everything["777"]["i"], 777)
        store.clear()
        self.assertEqual(store.length(), 0)
        self.assertTrue(self.raw.exists("other:1"))

    def test_commands_sent_are_scan_based(self):
        store = self.store()
        store.set("a", record(None))
        with self.raw.monitor() as monitor:
            store.length()
            store.all()
            store.clear()
            store.set("end", record(None))
            commands = []
            for event in monitor.listen():
                commands.append(event["command"].split()[0].upper())
                if event["command"].startswith("SET sess:end"):
                    break
        self.assertIn("SCAN", commands)
        self.assertIn("MGET", commands)
        self.assertNotIn("KEYS", commands)

    def test_all_returns_records_by_id(self):
        store = self.store()
        store.set("x", record(None, a=1))
        store.set("y", record(time.time() + 60, b=2))
        self.assertEqual(store.all(), {"x": record(None, a=1), "y": store.get("y")})


@requires(HAVE_REDIS, REASON)
class TestRedisStoreClient(RedisTestCase):
    def test_a_client_passed_in_is_never_closed(self):
        client = redis.Redis.from_url(_server.url, client_name="the-apps-client")
        self.addCleanup(client.close)
        store = RedisStore(client)
        store.set("c", record(None))
        with mock.patch.object(client, "close", wraps=client.close) as close:
            store.close()
        close.assert_not_called()
        names = [c["name"] for c in self.raw.client_list()]
        self.assertIn("the-apps-client", names)

    def test_a_store_made_from_a_url_closes_its_own_client(self):
        store = RedisStore(url=_server.url + "?client_name=store-owned")
        store.get("x")
        self.assertIn("store-owned", [c["name"] for c in self.raw.client_list()])
        store.close()
        deadline = time.monotonic() + 5
        while "store-owned" in [c["name"] for c in self.raw.client_list()]:
            self.assertLess(time.monotonic(), deadline, "the store's connection stayed open")
            time.sleep(0.02)

    def test_a_redis_py_older_than_5_0_1_is_refused_with_the_version_to_install(self):
        # 4.5.2 returns another command's reply after a cancelled one (CVE-2023-28859), and
        # its asyncio clients have no aclose().
        with mock.patch.object(redis, "__version__", "4.5.2"):
            with self.assertRaisesRegex(ImportError, r"redis-py 5\.0\.1 or newer, not 4\.5\.2"):
                RedisStore(url=_server.url)
        with mock.patch.object(redis, "__version__", "5.0.1"):
            RedisStore(url=_server.url).close()

    def test_client_and_url_together_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "client or a url"):
            RedisStore(self.raw, url=_server.url)

    def test_a_client_that_is_not_a_redis_client_is_refused_at_construction(self):
        for bad in (_server.url, 5):
            with self.subTest(client=bad), self.assertRaisesRegex(TypeError, "client.*url="):
                RedisStore(bad)

    def test_bad_ttl_is_rejected_at_construction(self):
        for bad in (0, -5, 1.5, True, "60", 10 ** 400):
            with self.assertRaises(ValueError, msg=repr(bad)):
                RedisStore(self.raw, ttl=bad)

    def test_missing_driver_names_the_package_to_install(self):
        with mock.patch.dict(sys.modules, {"redis": None}):
            with self.assertRaisesRegex(ImportError, "pip install redis"):
                RedisStore(url="redis://127.0.0.1:1/0")

    def test_importing_the_module_does_not_import_the_driver(self):
        import subprocess
        code = ("import sys; import stores.redis_store; "
                "print('redis' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        self.assertEqual(out, "False")


KINDS = ("sync", "async")


class _Calls:
    """A store's methods called one way: ``sync``, or their coroutine forms (``async``) run
    on ``loop``, so one test definition proves both follow the same rules."""

    def __init__(self, store, kind: str, loop) -> None:
        self.store, self.kind, self.loop = store, kind, loop

    def __getattr__(self, name):
        if self.kind == "sync":
            return getattr(self.store, name)
        method = getattr(self.store, "a" + name)
        return lambda *args: self.loop.run_until_complete(method(*args))


def _monitored(raw, action) -> list:
    """(client type, command) of every command Redis ran while ``action()`` ran, but for
    what a new connection sends first."""
    marker = f"end-of-action-{time.monotonic_ns()}"
    with raw.monitor() as monitor:
        action()
        with redis.Redis(connection_pool=raw.connection_pool) as other:
            other.echo(marker)
        seen = []
        for event in monitor.listen():
            if event["command"] == f"ECHO {marker}":
                return seen
            if event["command"].split()[0] not in _HANDSHAKE:
                seen.append((event["client_type"], event["command"]))


_HANDSHAKE = {"HELLO", "CLIENT", "SELECT", "AUTH"}


def _sent(commands: list) -> list:
    """The names of the commands a client sent (not those a script ran)."""
    return [command.split()[0] for kind, command in commands if kind != "lua"]


class AsyncRedisTestCase(RedisTestCase):
    """A RedisTestCase with an event loop of its own for the coroutine methods."""

    def setUp(self) -> None:
        super().setUp()
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)

    def store(self, **kwargs) -> "RedisStore":
        store = super().store(**kwargs)
        self.addCleanup(lambda: self.loop.run_until_complete(store.aclose()))
        return store

    def calls(self, store, kind: str) -> _Calls:
        return _Calls(store, kind, self.loop)


@requires(HAVE_REDIS, REASON)
class TestRedisStoreGetText(AsyncRedisTestCase):
    """get_text hands over the stored JSON as it is, and never raises on what it finds."""

    def test_get_text_is_the_stored_json_byte_for_byte(self):
        text = ('{"cookie":{"originalMaxAge":3599999,"expires":"2099-01-01T00:00:00.000Z",'
                '"httpOnly":true,"path":"/"},"name":"Zoë 🐍","url":"a/b","n":1.0,"s":"\u2028"}')
        self.raw.set("sess:t", text.encode("utf-8"), ex=60)
        for kind in KINDS:
            with self.subTest(kind):
                calls = self.calls(self.store(), kind)
                self.assertEqual(calls.get_text("t"), text)
                self.assertIsNone(calls.get_text("missing"))

    def test_a_value_that_is_not_utf8_is_missing_with_a_warning(self):
        for kind in KINDS:
            for raw in (b'{"cookie":{},"x":"\xff"}', b"\xed\xa0\x80", b"\x80"):
                with self.subTest(kind, raw=raw):
                    self.raw.set("sess:bad", raw, ex=60)
                    with self.assertLogs("stores.redis_store", logging.WARNING):
                        self.assertIsNone(self.calls(self.store(), kind).get_text("bad"))

    def test_a_key_of_another_type_is_missing_with_a_warning(self):
        # Another app's hash, list, set, sorted set or stream under the session's key name:
        # GET answers WRONGTYPE, which raised to the app on every request with that cookie.
        plant = {"hash": lambda k: self.raw.hset(k, "a", "b"),
                 "list": lambda k: self.raw.rpush(k, "a"),
                 "set": lambda k: self.raw.sadd(k, "a"),
                 "zset": lambda k: self.raw.zadd(k, {"a": 1}),
                 "stream": lambda k: self.raw.xadd(k, {"a": "b"})}
        for kind in KINDS:
            for name, make in plant.items():
                with self.subTest(kind, planted=name):
                    self.raw.delete("sess:other")
                    make("sess:other")
                    calls = self.calls(self.store(), kind)
                    for method in ("get", "get_text"):
                        with self.assertLogs("stores.redis_store", logging.WARNING):
                            self.assertIsNone(getattr(calls, method)("other"))
                    text = text_of(None, n=1)
                    for base in (None, text):  # a create, and a write over what it loaded
                        self.assertFalse(calls.merge("other", session.Change(base, text, None)))
                    self.assertEqual(self.raw.type("sess:other"), name.encode())

    def test_a_ttl_too_long_for_a_lua_integer_is_read(self):
        # Lua prints a PTTL of 1e14 ms (3,170 years) or more as "4.6116860184274e+18".
        self.raw.set("sess:long", text_of(None, n=1))
        self.raw.pexpire("sess:long", 2 ** 62)
        for kind in KINDS:
            with self.subTest(kind):
                self.assertEqual(self.calls(self.store(), kind).get_text("long"), text_of(None, n=1))

    def test_the_middleware_gives_a_fresh_session_for_a_key_of_another_type(self):
        store = self.store()
        self.raw.hset("sess:abc", "a", "b")
        with self.assertLogs("stores.redis_store", logging.WARNING):
            seen = _session_seen(store, "abc", n=1)
        self.assertEqual(seen, {})
        self.assertEqual(self.raw.hgetall("sess:abc"), {b"a": b"b"})

    def test_a_client_with_decode_responses_gets_the_same_text(self):
        client = redis.Redis.from_url(_server.url, decode_responses=True)
        self.addCleanup(client.close)
        store = RedisStore(client)
        text = text_of(None, name="Zoë")
        self.raw.set("sess:ok", text.encode("utf-8"), ex=60)
        self.raw.set("sess:bad", b"\xff\xfe", ex=60)
        for kind in KINDS:
            with self.subTest(kind):
                calls = self.calls(store, kind)
                self.assertEqual(calls.get_text("ok"), text)
                with self.assertLogs("stores.redis_store", logging.WARNING):
                    self.assertIsNone(calls.get_text("bad"))
                with self.assertLogs("stores.redis_store", logging.WARNING):
                    self.assertIsNone(calls.get("bad"))
        self.loop.run_until_complete(store.aclose())
        store.close()

    def test_the_middleware_reads_through_get_text(self):
        store = self.store()
        self.raw.set("sess:abc", text_of(None, n=1), ex=60)
        with mock.patch.object(RedisStore, "get", side_effect=AssertionError("read through get")):
            seen = _session_seen(store, "abc")
        self.assertEqual(seen, {"n": 1})


def _session_seen(store: RedisStore, sid: str, **writes) -> dict:
    """One request with ``sid``'s cookie through SessionMiddleware over ``store``: the data the
    app found (it then sets ``writes``)."""
    seen = []

    def app(environ, start_response):
        sess = environ["session"]
        seen.append(dict(sess))
        for key, value in writes.items():
            sess[key] = value
        start_response("200 OK", [])
        return [b""]
    call_wsgi(session.SessionMiddleware(app, secret=SECRET, store=store),
              make_environ(cookie=f"connect.sid={cookie_value(sid)}"))
    return seen[0]


@requires(HAVE_REDIS, REASON)
class TestRedisStoreMerge(AsyncRedisTestCase):
    """merge: one compare-and-set on the key, by the rules of Store.merge, sync and async alike."""

    def test_stored_text_equal_to_the_base_is_replaced_by_the_change_as_given(self):
        for kind in KINDS:
            with self.subTest(kind):
                base = text_of(time.time() + 600, user="ada")
                self.raw.set("sess:s", base, ex=600)
                mine = with_keys(base, views=2, name="Zoë/🐍\u2028", big=1e300, half=0.5)
                merged = self.calls(self.store(), kind).merge(
                    "s", session.Change(base, mine, time.time() + 600))
                self.assertTrue(merged)
                self.assertEqual(self.raw.get("sess:s"), mine.encode("utf-8"), "byte for byte")

    def test_a_new_session_is_created_only_if_its_id_is_free(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.raw.flushdb()
                calls = self.calls(self.store(), kind)
                theirs, mine = text_of(None, user="someone"), text_of(None, user="me")
                self.raw.set("sess:taken", theirs, ex=600)
                self.assertFalse(calls.merge("taken", session.Change(None, mine, None)))
                self.assertEqual(self.raw.get("sess:taken"), theirs.encode())
                self.assertTrue(calls.merge("free", session.Change(None, mine, None)))
                self.assertEqual(self.raw.get("sess:free"), mine.encode())

    def test_a_create_is_refused_even_over_a_record_identical_to_its_own(self):
        # Two visitors given one ID by a genid that repeats may write the same first record:
        # taking it as one's own would give the second the first's session.
        for kind in KINDS:
            with self.subTest(kind):
                self.raw.flushdb()
                calls = self.calls(self.store(), kind)
                mine = session.Change(None, text_of(None, cart=[]), None)
                self.assertTrue(calls.merge("s1", mine))
                self.assertFalse(calls.merge("s1", mine))

    def test_a_create_resent_after_its_reply_was_lost_counts_as_written(self):
        # The script writes the key and its reply is lost with the connection: sent again by
        # redis-py (an app's client retries), it would find that key and be refused; the store
        # resends it itself, as a resend.  Its own clients (from a URL) do not retry at all.
        for kind in KINDS:
            for made in ("app", "url"):
                sid = f"lost-reply-{kind}-{made}"
                with self.subTest(kind, client=made), LostReply(_server.port, sid.encode()) as proxy:
                    if made == "url":
                        store = RedisStore(url=f"redis://127.0.0.1:{proxy.port}/0")
                    else:
                        client = redis.Redis(host="127.0.0.1", port=proxy.port)
                        self.addCleanup(client.close)
                        store = RedisStore(client)
                    self.addCleanup(store.close)
                    self.addCleanup(lambda store=store: self.loop.run_until_complete(store.aclose()))
                    calls, text = self.calls(store, kind), text_of(None, user="ada")
                    self.assertTrue(calls.merge(f"first-{kind}-{made}", session.Change(None, text, None)),
                                    "the script is loaded: the reply lost is the create's own")
                    self.assertTrue(calls.merge(sid, session.Change(None, text, None)))
                    self.assertTrue(proxy.lost)
                    self.assertEqual(self.raw.get("sess:" + sid), text.encode())

    def test_a_create_that_never_reached_redis_still_refuses_an_identical_record(self):
        # The pool had no connection to give within its timeout: nothing was sent, so the
        # create is sent again as a first attempt, and a live key is refused even when it
        # holds exactly this JSON (another visitor's, under an ID a genid repeated).
        text = text_of(None, cart=[])
        for kind in KINDS:
            with self.subTest(kind):
                self.raw.set(f"sess:dup-{kind}", text)
                if kind == "sync":
                    pool = redis.BlockingConnectionPool.from_url(_server.url, max_connections=1,
                                                                 timeout=0.3)
                    client = redis.Redis(connection_pool=pool)
                    self.addCleanup(pool.disconnect)
                    busy = pool.get_connection()  # another request holds the only connection
                    threading.Timer(0.5, pool.release, (busy,)).start()
                    created = RedisStore(client).merge(f"dup-{kind}", session.Change(None, text, None))
                else:
                    async def create():
                        pool = redis.asyncio.BlockingConnectionPool.from_url(
                            _server.url, max_connections=1, timeout=0.3)
                        client = redis.asyncio.Redis(connection_pool=pool)
                        busy = await pool.get_connection()
                        asyncio.get_running_loop().call_later(
                            0.5, lambda: asyncio.ensure_future(pool.release(busy)))
                        try:
                            return await RedisStore(client).amerge(f"dup-{kind}",
                                                                   session.Change(None, text, None))
                        finally:
                            await pool.disconnect()  # a pool given to a client is not its own
                    created = self.loop.run_until_complete(create())
                self.assertFalse(created)
                self.assertEqual(self.raw.get(f"sess:dup-{kind}"), text.encode())

    def test_a_key_redis_has_expired_frees_the_id(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.raw.set("sess:old", text_of(None), px=30)
                time.sleep(0.1)
                calls = self.calls(self.store(), kind)
                self.assertTrue(calls.merge("old", session.Change(None, text_of(None, n=1), None)))
                self.assertEqual(json.loads(self.raw.get("sess:old"))["n"], 1)

    def test_a_session_gone_from_redis_is_not_written_back(self):
        for kind in KINDS:
            with self.subTest(kind):
                base = text_of(None, user="ada")
                calls = self.calls(self.store(), kind)
                self.assertFalse(calls.merge("gone", session.Change(base, with_keys(base, n=2), None)))
                self.assertFalse(self.raw.exists("sess:gone"))

    def test_keys_another_request_wrote_meanwhile_are_kept(self):
        for kind in KINDS:
            with self.subTest(kind):
                base = text_of(time.time() + 600, user="ada", cart=[1])
                theirs = with_keys(base, theirs=1, cart=[1, 2])
                self.raw.set("sess:s", theirs, ex=600)
                mine = with_keys(base, mine="é")
                calls = self.calls(self.store(), kind)
                self.assertTrue(calls.merge("s", session.Change(base, mine, time.time() + 600)))
                stored = self.raw.get("sess:s").decode()
                self.assertEqual(json.loads(stored), {**json.loads(theirs), "mine": "é"})
                self.assertEqual(list(json.loads(stored)), ["cookie", "user", "cart", "theirs", "mine"])
                self.assertEqual(stored, session.encode_record(json.loads(stored)), "express's form")

    def test_a_stored_value_that_is_not_a_session_is_replaced(self):
        for kind in KINDS:
            for bad in (b"\xff not UTF-8", b"not json", b'{"no":"cookie"}'):
                with self.subTest(kind, stored=bad):
                    self.raw.set("sess:s", bad, ex=600)
                    base = text_of(None, user="ada")
                    mine = with_keys(base, n=1)
                    calls = self.calls(self.store(), kind)
                    self.assertTrue(calls.merge("s", session.Change(base, mine, None)))
                    self.assertEqual(self.raw.get("sess:s"), mine.encode())

    def test_concurrent_merges_into_one_session_lose_nothing(self):
        store = self.store()

        def change(base: str, key: str) -> session.Change:
            return session.Change(base, with_keys(base, **{key: 1}), None)

        with self.subTest("threads"):
            self.raw.set("sess:busy", text_of(None), ex=600)
            errors: list = []
            start = threading.Barrier(8)

            def worker(t: int) -> None:
                try:
                    start.wait()
                    for i in range(15):
                        if not store.merge("busy", change(store.get_text("busy"), f"t{t}-{i}")):
                            errors.append(f"thread {t}: merge refused")
                except Exception as exc:  # collected: the test reports every thread's failure
                    errors.append(f"thread {t}: {exc!r}")
            threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            self.assertEqual(errors, [])
            self.assertEqual(len(json.loads(self.raw.get("sess:busy"))), 1 + 8 * 15)

        with self.subTest("tasks"):
            self.raw.set("sess:busy", text_of(None), ex=600)

            async def task(t: int) -> list:
                return [await store.amerge("busy", change(await store.aget_text("busy"), f"a{t}-{i}"))
                        for i in range(15)]

            async def main():
                return await asyncio.gather(*(task(t) for t in range(8)))
            self.assertEqual(self.loop.run_until_complete(main()), [[True] * 15] * 8)
            self.assertEqual(len(json.loads(self.raw.get("sess:busy"))), 1 + 8 * 15)

    def test_the_common_case_is_one_round_trip(self):
        store = self.store()
        base = text_of(None, n=0)
        store.set("s", json.loads(base))
        store.merge("s", session.Change(base, base, None))  # Redis now knows the script
        mine = with_keys(base, n=1)
        for kind in KINDS:
            with self.subTest(kind):
                calls = self.calls(store, kind)
                calls.get_text("s")   # the connection is open
                commands = _monitored(self.raw, lambda: calls.merge("s", session.Change(base, mine, None)))
                self.assertEqual(_sent(commands), ["EVALSHA"])
                self.assertEqual([c.split()[0] for kind, c in commands if kind == "lua"],
                                 ["GET", "PTTL", "SET"])
                self.raw.set("sess:s", base, keepttl=True)

    def test_a_server_without_the_script_gets_it_by_eval_once(self):
        store = self.store()
        base = text_of(None, n=0)
        store.set("s", json.loads(base))
        for kind in KINDS:
            with self.subTest(kind):
                calls = self.calls(store, kind)
                calls.get_text("s")
                self.raw.script_flush()

                def twice():
                    calls.merge("s", session.Change(base, base, None))
                    calls.merge("s", session.Change(base, base, None))
                self.assertEqual(_sent(_monitored(self.raw, twice)), ["EVALSHA", "EVAL", "EVALSHA"])

    def test_a_change_made_after_a_concurrent_write_costs_one_more_round_trip(self):
        store = self.store()
        base = text_of(None, n=0)
        for kind in KINDS:
            with self.subTest(kind):
                self.raw.set("sess:s", with_keys(base, other=1), ex=600)
                calls = self.calls(store, kind)
                calls.merge("s", session.Change(text_of(None, n=0, other=1), text_of(None, n=0, other=1), None))
                commands = _monitored(
                    self.raw, lambda: calls.merge("s", session.Change(base, with_keys(base, n=1), None)))
                self.assertEqual(_sent(commands), ["EVALSHA", "EVALSHA"])
                self.assertEqual(json.loads(self.raw.get("sess:s")), json.loads(text_of(None, n=1, other=1)))


def _within(pttl: int, seconds: float) -> bool:
    """Whether a key's PTTL is what EX ceil(seconds to the expiry) gives, ``seconds`` from when
    the expiry was taken (its millisecond rounding may add one second)."""
    return seconds * 1000 - 1000 < pttl <= seconds * 1000 + 1000


@requires(HAVE_REDIS, REASON)
class TestRedisStoreMergeExpiry(AsyncRedisTestCase):
    """merge keeps connect-redis's TTL rule, and never shortens a key unless asked to."""

    def merge(self, kind, expires, keep_later=True, *, stored_ms=None, persist=False, **options):
        """Merge a change with this expiry into ``sess:s``: a new session, or one stored with
        ``stored_ms`` left (or without expiry, ``persist``)."""
        base = text_of(None, n=0)
        if stored_ms is not None or persist:
            self.raw.set("sess:s", base, px=stored_ms)
        else:
            self.raw.delete("sess:s")
        change = session.Change(None if stored_ms is None and not persist else base,
                                with_keys(base, n=1), expires, keep_later)
        return self.calls(self.store(**options), kind).merge("s", change)

    def test_ttl_is_seconds_to_the_expiry_rounded_up(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.assertTrue(self.merge(kind, time.time() + 10.2))
                self.assertTrue(10_300 < self.raw.pttl("sess:s") <= 11_000, self.raw.pttl("sess:s"))

    def test_no_expiry_means_the_store_ttl(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.merge(kind, None, ttl=1234)
                self.assertEqual(self.raw.ttl("sess:s"), 1234)

    def test_an_expiry_already_past_deletes_the_key(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.assertTrue(self.merge(kind, time.time() - 1, False, stored_ms=60_000))
                self.assertFalse(self.raw.exists("sess:s"))
                self.assertTrue(self.merge(kind, time.time() - 1), "a new one: nothing to write")
                self.assertFalse(self.raw.exists("sess:s"))

    def test_a_later_stored_expiry_is_kept(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.merge(kind, time.time() + 100, stored_ms=500_000)
                self.assertTrue(_within(self.raw.pttl("sess:s"), 500))
                self.assertEqual(json.loads(self.raw.get("sess:s"))["n"], 1)
                self.merge(kind, time.time() - 5, stored_ms=500_000)
                self.assertTrue(_within(self.raw.pttl("sess:s"), 500), "nor deleted")

    def test_an_earlier_stored_expiry_moves_later(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.merge(kind, time.time() + 900, stored_ms=100_000)
                self.assertTrue(_within(self.raw.pttl("sess:s"), 900))

    def test_keep_later_false_sets_the_expiry_it_is_given(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.merge(kind, time.time() + 100, False, stored_ms=500_000)
                self.assertTrue(_within(self.raw.pttl("sess:s"), 100))

    def test_a_key_without_expiry_keeps_none_unless_asked(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.merge(kind, time.time() + 100, persist=True)
                self.assertEqual(self.raw.pttl("sess:s"), -1)
                self.merge(kind, time.time() + 100, False, persist=True)
                self.assertTrue(_within(self.raw.pttl("sess:s"), 100))

    def test_disable_ttl_writes_without_expiry_and_still_deletes_the_expired(self):
        for kind in KINDS:
            with self.subTest(kind):
                self.merge(kind, time.time() + 100, stored_ms=5_000, disable_ttl=True)
                self.assertEqual(self.raw.pttl("sess:s"), -1)
                self.merge(kind, time.time() + 100, disable_ttl=True)
                self.assertEqual(self.raw.pttl("sess:s"), -1)
                self.merge(kind, time.time() - 1, False, persist=True, disable_ttl=True)
                self.assertFalse(self.raw.exists("sess:s"))


@requires(HAVE_REDIS, REASON)
class TestRedisStoreTouch(AsyncRedisTestCase):
    """touch is EXPIRE, with GT unless the request set the cookie's lifetime itself."""

    def check_touch_rules(self, store) -> None:
        for kind in KINDS:
            with self.subTest(kind):
                calls = self.calls(store, kind)
                self.raw.set("sess:t", text_of(None), ex=500)
                calls.get_text("t")   # as a request does before it touches: the expiry is read
                calls.touch("t", prepared(time.time() + 100))
                self.assertTrue(_within(self.raw.pttl("sess:t"), 500), "not shortened")
                calls.touch("t", record(time.time() + 100))   # a plain dict: keep_later too
                self.assertTrue(_within(self.raw.pttl("sess:t"), 500))
                calls.touch("t", prepared(time.time() + 900))
                self.assertTrue(_within(self.raw.pttl("sess:t"), 900))
                calls.touch("t", prepared(time.time() + 100, keep_later=False))
                self.assertTrue(_within(self.raw.pttl("sess:t"), 100), "shortened when asked")
                calls.touch("missing", prepared(time.time() + 900))
                self.assertFalse(self.raw.exists("sess:missing"))
                self.raw.persist("sess:t")
                calls.get_text("t")
                calls.touch("t", prepared(time.time() + 900))
                self.assertEqual(self.raw.pttl("sess:t"), -1, "no expiry is the latest")
                calls.touch("t", prepared(time.time() - 1, keep_later=False))
                self.assertFalse(self.raw.exists("sess:t"), "EXPIRE with 0 or less deletes")

    def test_touch_never_shortens_the_key_unless_asked(self):
        self.check_touch_rules(self.store())

    def test_a_touch_that_would_barely_move_the_expiry_is_not_sent(self):
        self.check_a_barely_moving_touch_is_not_sent(self.store(), "EXPIRE")

    def check_a_barely_moving_touch_is_not_sent(self, store, command: str) -> None:
        """A touch 10 s past what a read found is not sent; one 100 s past it sends ``command``."""
        for kind in KINDS:
            with self.subTest(kind):
                self.raw.set("sess:t", text_of(None), ex=3600)
                calls = self.calls(store, kind)
                self.assertIsNotNone(calls.get_text("t"))   # one script: GET and PTTL
                sent = _sent(_monitored(self.raw, lambda: calls.touch("t", prepared(time.time() + 3610))))
                self.assertEqual(sent, [])                  # 10 s: under 1% of an hour
                sent = _sent(_monitored(self.raw, lambda: calls.touch("t", prepared(time.time() + 3700))))
                self.assertEqual(sent, [command])           # 100 s: sent

    def test_a_touch_is_skipped_only_against_the_expiry_a_read_found(self):
        # Another client (connect-redis's touch, another worker) may shorten the key at any time:
        # neither a plain read, which does not tell the expiry (a subclass overriding get is read
        # through it), nor what this process itself sent may stand for it.
        store = self.store()
        for kind in KINDS:
            for before in ("a plain read", "a touch sent"):
                with self.subTest(kind, before=before):
                    self.raw.set("sess:t", text_of(None), ex=3600)
                    calls = self.calls(store, kind)
                    calls.get_text("t")
                    if before == "a touch sent":
                        calls.touch("t", prepared(time.time() + 3700))
                    self.raw.expire("sess:t", 3)   # shortened behind this process's back
                    if before == "a plain read":
                        self.assertIsNotNone(calls.get("t"))
                    last = 3710 if before == "a touch sent" else 3610  # each barely past the one before
                    calls.touch("t", prepared(time.time() + last))
                    self.assertTrue(_within(self.raw.pttl("sess:t"), last), "touched again")

    def test_touch_sends_expire_gt(self):
        store = self.store()
        for kind in KINDS:
            with self.subTest(kind):
                self.raw.set("sess:t", text_of(None), ex=500)
                calls = self.calls(store, kind)
                calls.get_text("t")
                sent = [c for _, c in _monitored(
                    self.raw, lambda: calls.touch("t", prepared(time.time() + 900)))]
                self.assertEqual(len(sent), 1)
                self.assertRegex(sent[0], r"^EXPIRE sess:t 90[01] GT$")

    def test_before_redis_7_a_script_keeps_the_same_rules(self):
        store = self.store()
        store._expire_gt = False  # as it becomes when Redis refuses EXPIRE's GT option
        self.check_touch_rules(store)
        self.raw.set("sess:t", text_of(None), ex=500)
        sent = _sent(_monitored(self.raw, lambda: store.touch("t", prepared(time.time() + 900))))
        self.assertEqual(sent, ["EVALSHA"])


@requires(HAVE_REDIS, REASON)
class TestRedisStoreAsync(AsyncRedisTestCase):
    """The coroutine methods: the same records through redis.asyncio, clients made as needed."""

    def test_records_written_either_way_are_the_same_bytes_and_ttl(self):
        store = self.store()
        rec = record(time.time() + 600, user="Zoë")
        store.set("sync", rec)
        self.loop.run_until_complete(store.aset("async", rec))
        self.assertEqual(self.raw.get("sess:async"), self.raw.get("sess:sync"))
        self.assertLessEqual(abs(self.raw.pttl("sess:async") - self.raw.pttl("sess:sync")), 1000)
        self.assertEqual(self.loop.run_until_complete(store.aget("sync")), rec)
        self.assertEqual(self.loop.run_until_complete(store.aget_text("sync")),
                         session.encode_record(rec))
        self.assertEqual(store.get("async"), rec)

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_a_forked_child_uses_its_own_clients_and_leaves_the_parents_working(self):
        # A server that forks its workers after loading the app (gunicorn --preload): a child
        # that closes the store as it ends must not close the clients of its parent's loops
        # (running a copy of the parent's loop to do it would unregister the parent's sockets
        # from the epoll the two processes share), nor wait for a lock a parent's thread held.
        store = self.store()
        store.set("parent", record(user="ada"))
        self.loop.run_until_complete(store.aget("parent"))  # the parent's loop has its client

        def child():
            code = 2 if store._async_clients else 0
            store.set("child", record(user="bob"))
            loop = asyncio.new_event_loop()
            got = loop.run_until_complete(store.aget("child"))
            code = code or (0 if got and got["user"] == "bob" else 3)
            store.close()
            gc.collect()
            return code
        store._lock.acquire()  # as a parent's thread making a client at the fork would hold it
        try:
            code = exit_code_of_a_child(child, 20)
        finally:
            store._lock.release()
        self.assertEqual(code, 0)
        self.assertEqual(store.get("child")["user"], "bob")
        got = self.loop.run_until_complete(asyncio.wait_for(store.aget("child"), 5))
        self.assertEqual(got["user"], "bob")

    def test_a_cancelled_write_still_reaches_redis_whole(self):
        # A client that goes away cancels the response, and the middleware's last write with it.
        store = self.store()
        store.set("s", record(None, n=1))
        base = self.raw.get("sess:s").decode()
        change = session.Change(base, session.encode_record(record(None, n=2)), None)

        async def main():
            task = asyncio.ensure_future(store.amerge("s", change))
            await asyncio.sleep(0)   # the write has started
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            for _ in range(100):     # the shielded write goes on
                if store.get("s")["n"] == 2:
                    return
                await asyncio.sleep(0.01)
        self.loop.run_until_complete(main())
        self.assertEqual(store.get("s")["n"], 2)

    def test_aclose_at_shutdown_lets_a_write_whose_request_was_cancelled_finish(self):
        # An event loop that ends (asyncio.run, uvicorn's shutdown) cancels every task still
        # running, the shielded write included: an app's lifespan shutdown awaits aclose().
        store = self.store()
        store.set("s", record(None, n=1))
        change = session.Change(self.raw.get("sess:s").decode(), session.encode_record(record(None, n=2)),
                                None)
        self.raw.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # the write waits
        cancel_a_write_then_aclose(store, "s", change, after=0.05)
        self.assertEqual(store.get("s")["n"], 2)

    def test_adestroy_and_an_expired_aset_delete(self):
        store = self.store()
        store.set("a", record(None))
        store.set("b", record(None))
        self.loop.run_until_complete(store.adestroy("a"))
        self.loop.run_until_complete(store.aset("b", record(time.time() - 1)))
        self.assertEqual(self.raw.exists("sess:a", "sess:b"), 0)

    def test_the_coroutine_writes_take_their_arguments_by_keyword_too(self):
        # As Store's own do, and their hints say: the shielded writes pass keywords on.
        store = self.store()
        run = self.loop.run_until_complete
        run(store.aset(sid="s", record=record(None, n=1)))
        change = session.Change(self.raw.get("sess:s").decode(),
                                session.encode_record(record(None, n=2)), None)
        self.assertTrue(run(store.amerge(sid="s", change=change)))
        run(store.atouch(sid="s", record=record(time.time() + 600, n=2)))
        self.assertEqual(store.get("s"), record(None, n=2))
        run(store.adestroy(sid="s"))
        self.assertEqual(self.raw.exists("sess:s"), 0)

    def test_one_store_serves_event_loops_one_after_another(self):
        store = self.store()
        store.set("s", record(None, n=1))

        async def read():
            try:
                return await store.aget("s")
            finally:
                await store.aclose()
        for _ in range(3):   # a new loop each time: a client bound to the last one would fail
            self.assertEqual(asyncio.run(read()), record(None, n=1))

    def test_one_store_serves_event_loops_in_several_threads_at_once(self):
        store = self.store()
        store.set("s", record(None, n=1))
        results: list = []

        def in_a_thread():
            async def main():
                for _ in range(20):
                    results.append(await store.aget("s"))
                    await asyncio.sleep(0)
                await store.aclose()
            asyncio.run(main())
        threads = [threading.Thread(target=in_a_thread) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(results, [record(None, n=1)] * 80)

    def test_sync_and_async_code_share_one_store_at_once(self):
        store = self.store()
        store.set("s", record(None))
        errors: list = []

        def sync_worker(t):
            try:
                for i in range(20):
                    base = store.get_text("s")
                    store.merge("s", session.Change(base, with_keys(base, **{f"sync{t}-{i}": i}), None))
            except Exception as exc:  # collected: reported by the assertion below
                errors.append(exc)

        async def async_worker(t):
            for i in range(20):
                base = await store.aget_text("s")
                await store.amerge("s", session.Change(base, with_keys(base, **{f"async{t}-{i}": i}), None))

        async def main():
            await asyncio.gather(*(async_worker(t) for t in range(4)))
        threads = [threading.Thread(target=sync_worker, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        self.loop.run_until_complete(main())
        for thread in threads:
            thread.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(store.get("s")), 1 + 8 * 20)

    def test_the_async_client_takes_the_sync_clients_connection_options(self):
        client = redis.Redis.from_url(_server.url.rsplit("/", 1)[0] + "/3", client_name="apps-client")
        self.addCleanup(client.close)
        store = RedisStore(client)
        self.loop.run_until_complete(store.aset("x", record(None)))
        self.assertEqual([c["name"] for c in self.raw.client_list()].count("apps-client"), 1,
                         "the async connection, named as the app's client names its own")
        self.assertIsNotNone(client.get("sess:x"), "in the app's database, 3")
        self.assertIsNone(self.raw.get("sess:x"))
        self.loop.run_until_complete(store.aclose())
        store.close()
        self.assertTrue(client.ping(), "the app's client is not closed")

    def test_an_async_client_given_is_used_as_is_and_never_closed(self):
        async def main():
            client = redis.asyncio.Redis.from_url(_server.url, client_name="apps-async")
            store = RedisStore(client)
            await store.aset("a", record(None, n=1))
            # The sync methods, from a thread: a sync client made from the async one's options.
            got = await asyncio.to_thread(store.get, "a")
            await asyncio.to_thread(store.set, "b", record(None, n=2))
            names = [c["name"] for c in await client.client_list()]
            await store.aclose()
            store.close()
            alive = await client.ping()
            await client.aclose()
            return got, names, alive
        got, names, alive = self.loop.run_until_complete(main())
        self.assertEqual(got, record(None, n=1))
        self.assertEqual(json.loads(self.raw.get("sess:b"))["n"], 2)
        self.assertEqual(names.count("apps-async"), 2, "the app's connection and the store's sync one")
        self.assertTrue(alive)

    def test_a_client_that_cannot_be_mirrored_is_used_through_threads(self):
        class OwnPool(redis.ConnectionPool):
            pass
        client = redis.Redis(connection_pool=OwnPool.from_url(_server.url, client_name="own-pool"))
        self.addCleanup(client.close)
        store = RedisStore(client)
        store.set("s", record(None, n=1))

        async def main():
            got = await store.aget("s")
            await store.amerge("s", session.Change(await store.aget_text("s"), text_of(None, n=2), None))
            return got
        self.assertEqual(self.loop.run_until_complete(main()), record(None, n=1))
        self.assertEqual(store.get("s")["n"], 2)
        self.assertEqual([c["name"] for c in self.raw.client_list()].count("own-pool"), 1,
                         "no second client: the app's, from the loop's threads")

    def test_an_async_client_that_cannot_be_mirrored_serves_the_async_methods_only(self):
        class OwnPool(redis.asyncio.ConnectionPool):
            pass

        async def main():
            client = redis.asyncio.Redis(connection_pool=OwnPool.from_url(_server.url))
            store = RedisStore(client)
            await store.aset("s", record(None, n=1))
            got = await store.aget("s")
            with self.assertRaisesRegex(TypeError, "give it a redis.Redis"):
                store.get("s")
            store.close()
            await client.aclose()
            await client.connection_pool.disconnect()  # a pool given to the client is not its to close
            return got
        self.assertEqual(self.loop.run_until_complete(main()), record(None, n=1))

    @requires(has_module("trio"), "pip install trio")
    def test_aclose_in_a_trio_apps_shutdown_returns(self):
        # Under trio the store is called in threads (see session._async_call): no client of
        # the loop's to close, and no asyncio loop to look one up by.
        import trio
        store = self.store()
        store.set("s", record(None, n=1))
        trio.run(store.aclose)
        self.assertEqual(store.get("s"), record(None, n=1))

    def test_close_closes_the_async_connections_the_store_made(self):
        store = RedisStore(url=_server.url + "?client_name=store-async")
        self.loop.run_until_complete(store.aset("x", record(None)))
        self.assertIn("store-async", [c["name"] for c in self.raw.client_list()])
        store.close()   # from sync code, with the loop idle
        deadline = time.monotonic() + 5
        while "store-async" in [c["name"] for c in self.raw.client_list()]:
            self.assertLess(time.monotonic(), deadline, "the store's async connection stayed open")
            time.sleep(0.02)

    def test_a_closed_store_connects_again_and_a_second_close_closes_those_connections(self):
        store = RedisStore(url=_server.url + "?client_name=reopened")
        self.addCleanup(store.close)
        store.set("s", record(None, n=1))
        store.close()
        self.assertEqual(store.get("s"), record(None, n=1))
        self.assertEqual(self.loop.run_until_complete(store.aget("s")), record(None, n=1))
        self.assertEqual([c["name"] for c in self.raw.client_list()].count("reopened"), 2)
        store.close()
        deadline = time.monotonic() + 5
        while "reopened" in [c["name"] for c in self.raw.client_list()]:
            self.assertLess(time.monotonic(), deadline, "the store's connections stayed open")
            time.sleep(0.02)

    def test_close_from_another_thread_lets_the_writes_in_flight_on_a_loop_finish(self):
        store = RedisStore(url=_server.url + "?client_name=store-async")
        self.addCleanup(store.close)
        store.set("s", record(None, n=1))
        change = session.Change(self.raw.get("sess:s").decode(), text_of(None, n=2), None)
        loop = asyncio.new_event_loop()  # an ASGI server's, in a thread of its own
        thread = threading.Thread(target=loop.run_forever)
        thread.start()
        self.addCleanup(loop.close)
        self.addCleanup(thread.join, 10)
        self.addCleanup(loop.call_soon_threadsafe, loop.stop)
        self.raw.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # the write waits
        write = asyncio.run_coroutine_threadsafe(store.amerge("s", change), loop)
        time.sleep(0.1)  # sent: its connection waits for the reply
        store.close()    # a shutdown hook on another thread, meanwhile
        self.assertTrue(write.result(5))
        self.assertEqual(json.loads(self.raw.get("sess:s"))["n"], 2)
        deadline = time.monotonic() + 5
        while "store-async" in [c["name"] for c in self.raw.client_list()]:
            self.assertLess(time.monotonic(), deadline, "the store's async connection stayed open")
            time.sleep(0.02)

    def test_connections_of_an_ended_loop_are_closed_and_close_closes_the_rest(self):
        store = RedisStore(url=_server.url + "?client_name=ended-loops")
        self.addCleanup(store.close)
        store.set("s", record(None, n=1))

        def connections():
            return [c["name"] for c in self.raw.client_list()].count("ended-loops")

        async def requests():  # no aclose(): the loop ends with its connections open
            return await asyncio.gather(*(store.aget("s") for _ in range(3)))
        pause_gc(self)  # the garbage collector would close them, some time later
        for _ in range(5):
            self.assertEqual(asyncio.run(requests()), [record(None, n=1)] * 3)
        deadline = time.monotonic() + 5
        while connections() > 4:  # the sync one, and the last loop's
            self.assertLess(time.monotonic(), deadline, "connections of ended loops stayed open")
            time.sleep(0.02)
        store.close()
        while connections():
            self.assertLess(time.monotonic(), deadline, "the store's connections stayed open")
            time.sleep(0.02)

    def test_outage_raises_connection_error_and_the_same_store_recovers(self):
        with RedisServer() as server:
            store = RedisStore(url=server.url)
            self.addCleanup(store.close)
            run = self.loop.run_until_complete
            base = text_of(None, n=1)
            self.assertTrue(run(store.amerge("s", session.Change(None, base, None))))
            server.stop()
            far = prepared(time.time() + 5 * 86400)  # a touch that moves the expiry: it is sent
            for call in (store.aget_text("s"), store.amerge("s", session.Change(base, base, None)),
                         store.atouch("s", far), store.adestroy("s")):
                with self.assertRaises(redis.ConnectionError):
                    run(call)
            server.start()   # empty: there is no persistence
            self.assertIsNone(run(store.aget_text("s")))
            self.assertTrue(run(store.amerge("s", session.Change(None, base, None))))
            self.assertEqual(run(store.aget_text("s")), base)
            run(store.aclose())


    def test_a_restart_fails_no_call_on_the_connections_pooled_before_it(self):
        # The server closes them; under redis.asyncio each one's next command failed
        # ("Connection closed by server"), a 500 for as many requests as it had connections.
        with RedisServer() as server:
            store = RedisStore(url=server.url)
            self.addCleanup(store.close)
            run = self.loop.run_until_complete

            async def burst():
                return await asyncio.gather(*(store.aget_text(f"s{i}") for i in range(8)))

            def sync_burst():
                found: list = []
                threads = [threading.Thread(target=lambda i=i: found.append(store.get_text(f"s{i}")))
                           for i in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                return found
            self.assertEqual(run(burst()), [None] * 8)  # eight connections in each pool
            self.assertEqual(sync_burst(), [None] * 8)
            server.stop()
            server.start()
            self.assertEqual(run(burst()), [None] * 8)
            self.assertEqual(sync_burst(), [None] * 8)
            run(store.aclose())


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too; Redis caps it at 55535."""
    import random
    import socket
    rng = random.Random()
    while True:
        port = rng.randint(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue


@requires(HAVE_REDIS and has_program("redis-cli"),
          "needs redis-server, redis-cli and redis-py: apt-get install -y redis-server && pip install redis")
class TestRedisStoreOnACluster(unittest.TestCase):
    """A real three-node Redis Cluster: per-session commands are single-key, whole-store
    commands reach every node."""

    @classmethod
    def setUpClass(cls):
        import subprocess
        cls.nodes = []
        try:
            for _ in range(3):
                node = RedisServer(_cluster_port(), args=(
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
                cls.nodes.append(node)
                node.start()
            subprocess.run(["redis-cli", "--cluster", "create",
                            *[f"127.0.0.1:{n.port}" for n in cls.nodes],
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            deadline = time.monotonic() + 20
            for node in cls.nodes:
                with redis.Redis(port=node.port) as probe:
                    while probe.cluster("info").get("cluster_state") != "ok":
                        if time.monotonic() > deadline:
                            raise RuntimeError("Redis Cluster did not reach state ok")
                        time.sleep(0.05)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for node in cls.nodes:
            node.close()

    def test_store_works_across_the_nodes_of_a_cluster(self):
        from redis.cluster import RedisCluster
        client = RedisCluster(host="127.0.0.1", port=self.nodes[0].port)
        self.addCleanup(client.close)
        store = RedisStore(client)
        for i in range(60):
            store.set(f"s{i}", record(None, i=i))
        per_node = []
        for node in self.nodes:
            with redis.Redis(port=node.port) as direct:
                per_node.append(direct.dbsize())
        self.assertEqual(sum(per_node), 60)
        self.assertTrue(all(per_node), f"keys should spread over every node: {per_node}")
        self.assertEqual(store.get("s7")["i"], 7)
        store.touch("s7", record(time.time() + 99))
        self.assertGreater(client.ttl("sess:s7"), 86000, "a touch never shortens by default")
        store.touch("s7", prepared(time.time() + 99, keep_later=False))
        self.assertIn(client.ttl("sess:s7"), (98, 99, 100))   # ceil of 99 s and a millisecond: 100
        store.destroy("s8")
        self.assertIsNone(store.get("s8"))
        self.assertEqual(store.length(), 59)
        self.assertEqual(sorted(store.ids(), key=lambda s: int(s[1:])),
                         [f"s{i}" for i in range(60) if i != 8])
        self.assertEqual(len(store.all()), 59)
        store.clear()
        self.assertEqual(store.length(), 0)
        store.close()
        self.assertEqual(client.get("absent"), None, "the app's cluster client stays usable")

    def test_merge_and_touch_work_on_every_node_sync_and_async(self):
        from redis.cluster import RedisCluster
        client = RedisCluster(host="127.0.0.1", port=self.nodes[0].port)
        self.addCleanup(client.close)
        store = RedisStore(client)
        self.addCleanup(store.close)
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        self.addCleanup(lambda: loop.run_until_complete(store.aclose()))
        for kind in KINDS:
            with self.subTest(kind):
                calls = _Calls(store, kind, loop)
                sids = [f"{kind}{i}" for i in range(30)]
                for sid in sids:
                    self.assertTrue(calls.merge(sid, session.Change(None, text_of(None, sid=sid), None)))
                    self.assertFalse(calls.merge(sid, session.Change(None, text_of(None), None)))
                slots = {client.keyslot("sess:" + sid) for sid in sids}
                nodes = {client.get_node_from_key("sess:" + sid).name for sid in sids}
                self.assertEqual(len(nodes), 3, f"sessions on every node ({len(slots)} slots)")
                for sid in sids:
                    base = text_of(None, sid=sid)
                    client.set("sess:" + sid, with_keys(base, theirs=1), keepttl=True)
                    self.assertTrue(calls.merge(sid, session.Change(base, with_keys(base, mine=1), None)))
                    self.assertEqual(json.loads(calls.get_text(sid)),
                                     json.loads(text_of(None, sid=sid, theirs=1, mine=1)))
                    calls.touch(sid, prepared(time.time() + 99))
                    self.assertGreater(client.ttl("sess:" + sid), 86000, "never shortened")
                    calls.touch(sid, prepared(time.time() + 99, keep_later=False))
                    self.assertIn(client.ttl("sess:" + sid), (98, 99, 100))
                    calls.destroy(sid)
                    self.assertFalse(calls.merge(sid, session.Change(base, base, None)), "gone")

    def test_close_closes_the_connections_of_an_ended_loops_cluster_client(self):
        from redis.cluster import RedisCluster
        client = RedisCluster(host="127.0.0.1", port=self.nodes[0].port, client_name="cluster-app")
        self.addCleanup(client.close)
        store = RedisStore(client)
        self.addCleanup(store.close)

        def connections():
            named = 0
            for node in self.nodes:
                with redis.Redis(port=node.port) as direct:
                    named += [c["name"] for c in direct.client_list()].count("cluster-app")
            return named
        for i in range(30):
            store.set(f"s{i}", record(None, i=i))
        before = connections()  # the app's own client's

        async def requests():  # no aclose(): the loop ends with its connections open
            return [(await store.aget(f"s{i}"))["i"] for i in range(30)]
        pause_gc(self)  # the garbage collector would close them, some time later
        self.assertEqual(asyncio.run(requests()), list(range(30)))
        self.assertGreater(connections(), before)
        store.close()
        deadline = time.monotonic() + 5
        while connections() > before:
            self.assertLess(time.monotonic(), deadline, "the ended loop's connections stayed open")
            time.sleep(0.02)

    def test_an_async_cluster_client_given_serves_the_sync_methods_too(self):
        from redis.asyncio.cluster import RedisCluster

        async def main():
            client = RedisCluster(host="127.0.0.1", port=self.nodes[1].port)
            store = RedisStore(client)
            for i in range(20):
                await store.amerge(f"a{i}", session.Change(None, text_of(None, i=i), None))
            got = await asyncio.to_thread(lambda: [store.get(f"a{i}")["i"] for i in range(20)])
            count = await asyncio.to_thread(store.length)
            await asyncio.to_thread(store.clear)
            store.close()
            alive = await client.ping()
            await client.aclose()
            return got, count, alive
        got, count, alive = asyncio.run(main())
        self.assertEqual((got, count, alive), (list(range(20)), 20, True))


@requires(HAVE_REDIS, REASON)
class TestRedisStoreOnAClusterLosingAReply(unittest.TestCase):
    """A one-node Redis Cluster that tells clients a proxy's port, so that they reach it
    through the proxy, which loses the reply to a create."""

    def one_node_cluster(self) -> tuple:
        """(port, a plain client of the node, an event loop) of a cluster that is up."""
        port = _cluster_port()
        node = RedisServer(port, args=("--cluster-enabled", "yes", "--cluster-config-file",
                                       "nodes.conf", "--cluster-announce-ip", "127.0.0.1"))
        self.addCleanup(node.close)
        node.start()
        direct = redis.Redis(port=port)
        self.addCleanup(direct.close)
        direct.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
        deadline = time.monotonic() + 20
        while direct.cluster("info").get("cluster_state") != "ok":
            self.assertLess(time.monotonic(), deadline, "Redis Cluster did not reach state ok")
            time.sleep(0.05)
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        return port, direct, loop

    def test_a_create_the_cluster_did_not_run_still_refuses_an_identical_record(self):
        # CLUSTERDOWN (the key's slot briefly served by no node) says the script ran nowhere:
        # sent again, it is a first attempt, which refuses a live key holding exactly its JSON.
        from redis.cluster import RedisCluster, key_slot
        port, direct, loop = self.one_node_cluster()
        text = text_of(None, cart=[])
        for kind in KINDS:
            with self.subTest(kind):
                sid = f"dup-{kind}"
                direct.set("sess:" + sid, text)
                if kind == "sync":
                    client = RedisCluster(host="127.0.0.1", port=port)
                    self.addCleanup(client.close)
                else:
                    async def make() -> "redis.asyncio.RedisCluster":  # Python 3.9: its lock takes
                        return redis.asyncio.RedisCluster(host="127.0.0.1", port=port)  # this loop
                    client = loop.run_until_complete(make())
                    self.addCleanup(lambda client=client: loop.run_until_complete(client.aclose()))
                store = RedisStore(client)
                self.addCleanup(store.close)
                self.addCleanup(lambda store=store: loop.run_until_complete(store.aclose()))
                calls = _Calls(store, kind, loop)
                self.assertFalse(calls.merge(sid, session.Change(None, text, None)))  # slot served
                slot = key_slot(("sess:" + sid).encode())
                direct.execute_command("CLUSTER", "DELSLOTS", slot)
                threading.Timer(0.1, direct.execute_command, ("CLUSTER", "ADDSLOTS", slot)).start()
                self.assertFalse(calls.merge(sid, session.Change(None, text, None)))
                self.assertEqual(direct.get("sess:" + sid), text.encode())

    def test_a_create_resent_after_its_reply_was_lost_counts_as_written(self):
        from redis.cluster import RedisCluster
        if tuple(int(part) for part in re.findall(r"\d+", redis.__version__)[:2]) < (7, 4):
            self.skipTest("redis-py before 7.4 forgets a one-node cluster's only node when a "
                          "connection to it fails: pip install 'redis>=7.4'")
        port, direct, loop = self.one_node_cluster()
        text = text_of(None, user="ada")
        for kind in KINDS:
            sid = f"lost-reply-{kind}"
            with self.subTest(kind), LostReply(port, sid.encode()) as proxy:
                direct.config_set("cluster-announce-port", proxy.port)
                client = RedisCluster(host="127.0.0.1", port=proxy.port)
                self.addCleanup(client.close)
                store = RedisStore(client)
                self.addCleanup(store.close)
                self.addCleanup(lambda store=store: loop.run_until_complete(store.aclose()))
                calls = _Calls(store, kind, loop)
                self.assertTrue(calls.merge(f"first-{kind}", session.Change(None, text, None)))
                self.assertTrue(calls.merge(sid, session.Change(None, text, None)))
                self.assertTrue(proxy.lost)
                self.assertEqual(direct.get("sess:" + sid), text.encode())


# ---------------------------------------------------------------- the middleware over Redis

def _counter_app(environ, start_response):
    sess = environ["session"]
    sess["n"] = sess.get("n", 0) + 1
    body = str(sess["n"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def get_stderr(self):  # wsgiref prints each 500's traceback here; _serve records it
        return io.StringIO()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _serve(app):
    """Serve ``app`` on a free port, a thread per request; returns (errors, port, stop)."""
    errors: list = []

    def recording(environ, start_response):
        try:
            return app(environ, start_response)
        except Exception as exc:  # recorded for the test, then raised on to wsgiref's 500
            errors.append(exc)
            raise
    server = make_server("127.0.0.1", 0, recording, server_class=_ThreadingServer,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
        thread.join(5)
    return errors, server.server_address[1], stop


def _request(port: int, cookie: str | None = None, path: str = "/") -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        body = resp.read()
        set_cookie = resp.getheader("Set-Cookie")
        return resp.status, body, set_cookie.split(";")[0] if set_cookie else None
    finally:
        conn.close()


async def _asgi_get(app, path: str, cookie: str) -> list:
    """GET ``path`` through an ASGI app, in this process: the messages it sent."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"host", b"test"), (b"cookie", cookie.encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
    sent: list = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)
    await app(scope, receive, send)
    return sent


@requires(HAVE_REDIS, REASON)
class TestMiddlewareOverRedis(unittest.TestCase):
    def test_rolling_session_with_stale_stored_expires_stays_logged_in(self):
        store = RedisStore(url=_server.url)
        self.addCleanup(store.close)
        store.client.flushdb()
        stale = record(time.time() - 7200, n=41)
        store.client.set("sess:rolled", session.encode_record(stale), ex=600)
        seen = []

        def app(environ, start_response):
            seen.append(dict(environ["session"]))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        mw = session.SessionMiddleware(app, secret="s3", store=store, rolling=True,
                                       cookie={"max_age": 3600})
        cookie = "connect.sid=s%3A" + session.sign("rolled", "s3").replace("/", "%2F")
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
                   "wsgi.url_scheme": "http", "HTTP_COOKIE": cookie}
        list(mw(environ, lambda *a: None))
        self.assertEqual(seen, [{"n": 41}])
        self.assertGreater(store.client.ttl("sess:rolled"), 3500)  # rolled on: touched

    def test_one_store_serves_a_wsgi_and_an_asgi_app_on_one_session_at_once(self):
        store = RedisStore(url=_server.url)
        self.addCleanup(store.close)

        def wsgi_app(environ, start_response):
            sess = environ["session"]
            time.sleep(0.005)   # the app's work, between load and save
            sess[environ["PATH_INFO"][1:]] = "wsgi"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        async def asgi_app(scope, receive, send):
            sess = scope["session"]
            await asyncio.sleep(0.005)
            sess[scope["path"][1:]] = "asgi"
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        options = dict(secret="shared", store=store, cookie={"max_age": 3600})
        errors, port, stop = _serve(session.SessionMiddleware(wsgi_app, **options))
        self.addCleanup(stop)
        asgi = session.ASGISessionMiddleware(asgi_app, **options)
        status, _, cookie = _request(port, path="/start")
        self.assertEqual(status, 200)
        statuses: list = []

        def wsgi_client(t):
            for i in range(8):
                statuses.append(_request(port, cookie, path=f"/w{t}-{i}")[0])

        async def asgi_client(t):
            for i in range(8):
                messages = await _asgi_get(asgi, f"/a{t}-{i}", cookie)
                statuses.append(messages[0]["status"])

        async def main():
            await asyncio.gather(*(asgi_client(t) for t in range(4)))
            await store.aclose()
        threads = [threading.Thread(target=wsgi_client, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        asyncio.run(main())
        for thread in threads:
            thread.join(30)
        self.assertEqual((errors, statuses), ([], [200] * 64))
        [sid] = store.ids()
        data = store.get(sid)
        expected = {"start": "wsgi", **{f"w{t}-{i}": "wsgi" for t in range(4) for i in range(8)},
                    **{f"a{t}-{i}": "asgi" for t in range(4) for i in range(8)}}
        self.assertEqual({k: v for k, v in data.items() if k != "cookie"}, expected)

    def _serve_counter(self, server):
        """The counter app behind SessionMiddleware + RedisStore on ``server``, served over
        HTTP until the test ends: (store, errors the app raised, port)."""
        store = RedisStore(url=server.url)
        self.addCleanup(store.close)
        app = session.SessionMiddleware(_counter_app, secret="fault", store=store)
        errors, port, stop = _serve(app)
        self.addCleanup(stop)
        return store, errors, port

    def test_outage_fails_requests_cleanly_and_the_same_instance_recovers(self):
        with RedisServer() as server:
            store, errors, port = self._serve_counter(server)

            status, body, cookie = _request(port)
            self.assertEqual((status, body), (200, b"1"))
            for expected in (b"2", b"3"):
                self.assertEqual(_request(port, cookie)[:2], (200, expected))

            server.stop()
            # Loading an existing session, and saving a new one, both fail with a 500.
            for c in (cookie, None, cookie):
                status, body, set_cookie = _request(port, c)
                self.assertEqual(status, 500)
                self.assertIsNone(set_cookie, "no cookie for a session that was not saved")
            self.assertEqual(len(errors), 3)
            for error in errors:
                self.assertIsInstance(error, redis.ConnectionError)
                self.assertIn(f"127.0.0.1:{server.port}", str(error))

            server.start()  # empty: there is no persistence
            status, body, new_cookie = _request(port, cookie)
            self.assertEqual((status, body), (200, b"1"), "the lost session starts over")
            self.assertIsNotNone(new_cookie)
            for expected in (b"2", b"3"):
                self.assertEqual(_request(port, new_cookie)[:2], (200, expected))
            # Nothing half-written: every key is a whole, readable record.
            raw = redis.Redis.from_url(server.url)
            self.addCleanup(raw.close)
            keys = raw.keys("*")
            self.assertEqual(len(keys), 1)
            self.assertEqual(json.loads(raw.get(keys[0]))["n"], 3)

    def test_outage_during_a_run_of_concurrent_requests(self):
        with RedisServer() as server:
            store, errors, port = self._serve_counter(server)
            cookies = [_request(port)[2] for _ in range(4)]
            statuses: list = []
            stop_at = threading.Event()

            def client(cookie):
                while not stop_at.is_set():
                    statuses.append(_request(port, cookie)[0])
            threads = [threading.Thread(target=client, args=(c,)) for c in cookies]
            for t in threads:
                t.start()
            time.sleep(0.2)
            server.stop()
            time.sleep(0.2)
            server.start()
            time.sleep(0.2)
            stop_at.set()
            for t in threads:
                t.join(10)
            self.assertEqual(set(statuses) - {200, 500}, set())
            self.assertIn(500, statuses)
            for error in errors:
                self.assertIsInstance(error, redis.ConnectionError)
            # Served again afterwards by the same instance; every stored value is whole JSON.
            self.assertEqual(_request(port)[0], 200)
            for key in store.client.scan_iter("sess:*"):
                session.decode_record(store.client.get(key))


if __name__ == "__main__":
    unittest.main()
