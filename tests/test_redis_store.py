"""RedisStore against a real, private redis-server: connect-redis's rules, and outages.

Needs ``apt-get install -y redis-server`` and ``pip install redis``.
"""
from __future__ import annotations

import http.client
import io
import json
import logging
import sys
import threading
import time
import unittest
from datetime import datetime, timezone
from unittest import mock
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import session
from tests.redis_server import RedisServer, redis_server_available
from tests.store_contract import StoreContract
from tests.support import has_module, has_program, requires

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

    def test_client_and_url_together_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "client or a url"):
            RedisStore(self.raw, url=_server.url)

    def test_bad_ttl_is_rejected_at_construction(self):
        for bad in (0, -5, 1.5, True, "60"):
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
        self.assertIn(client.ttl("sess:s7"), (98, 99))
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


def _request(port: int, cookie: str | None = None) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        body = resp.read()
        set_cookie = resp.getheader("Set-Cookie")
        return resp.status, body, set_cookie.split(";")[0] if set_cookie else None
    finally:
        conn.close()


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
