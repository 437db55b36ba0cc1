"""One login across Express and an ASGI app: app.js (express-session + connect-redis) and the same
routes on ASGISessionMiddleware + RedisStore (asgi_app.py) under uvicorn, sharing one private
redis-server.  RedisStore is called through its coroutines where it has them, else its sync
methods run in a thread: both must give Express the records it expects.

Needs what test_interop.py needs, plus ``pip install uvicorn``.
"""
from __future__ import annotations

import json
import unittest
from urllib.parse import quote

from tests.interop.test_interop import (DATA, HOUR_MS, NODE_MODULES, OLD, Browser, NodeApp, _ordered,
                                        fetch)
from tests.redis_server import RedisServer, redis_server_available
from tests.support import has_module, has_program, requires


@requires(has_program("node"), "install Node.js 18+: apt-get install -y nodejs npm")
@requires(NODE_MODULES, "install the Express app: run: cd tests/interop && npm ci")
@requires(redis_server_available(), "install Redis: apt-get install -y redis-server")
@requires(has_module("redis"), "install redis-py: pip install redis")
@requires(has_module("uvicorn"), "install uvicorn: pip install uvicorn")
class TestExpressReadsASGISessions(unittest.TestCase):
    """Express and ASGISessionMiddleware + RedisStore under uvicorn, one Redis, one secret."""

    @classmethod
    def setUpClass(cls) -> None:
        import redis
        from stores.redis_store import RedisStore
        from tests.asgi_support import UvicornServer
        from tests.interop.asgi_app import make_app

        cls.redis_server = RedisServer().start()
        cls.addClassCleanup(cls.redis_server.close)
        cls.redis = redis.Redis.from_url(cls.redis_server.url)
        cls.addClassCleanup(cls.redis.close)
        node = NodeApp(cls.redis_server.url, [OLD], HOUR_MS, False)
        cls.addClassCleanup(node.stop)
        cls.store = RedisStore(url=cls.redis_server.url)
        cls.addClassCleanup(cls.store.close)
        asgi = UvicornServer(make_app([OLD], cls.store, max_age=HOUR_MS / 1000))
        cls.addClassCleanup(asgi.stop)
        cls.node, cls.py = node.port, asgi.port

    def raw(self, sid: str) -> bytes | None:
        return self.redis.get("sess:" + sid)

    def both_ways(self):
        for label, order in (("asgi→express", (self.py, self.node)), ("express→asgi", (self.node, self.py))):
            with self.subTest(label):
                yield order

    def test_a_login_on_one_app_is_seen_by_the_other(self):
        for first, second in self.both_ways():
            browser = Browser()
            login = browser.get(first, "/login?user=ada")
            self.assertEqual(browser.get(second, "/whoami").body, {"user": "ada", "id": browser.sid})
            self.assertEqual(login.body["id"], browser.sid)

    def test_a_counter_incremented_alternately_on_both_counts_1_2_3_4(self):
        for first, second in self.both_ways():
            browser = Browser()
            counts = [browser.get(port, "/incr").body["views"] for port in (first, second, first, second)]
            self.assertEqual(counts, [1, 2, 3, 4])
            self.assertEqual(json.loads(self.raw(browser.sid))["views"], 4)

    def test_logout_on_either_app_ends_the_session_on_both(self):
        for first, second in self.both_ways():
            browser = Browser()
            browser.get(second, "/login?user=grace")
            sid, cookie = browser.sid, browser.cookie
            browser.get(first, "/logout")
            self.assertIsNone(self.raw(sid))
            for port in (first, second):
                self.assertIsNone(fetch(port, "/whoami", cookie).body["user"])
            self.assertIsNone(self.raw(sid))

    def test_a_record_the_asgi_app_wrote_is_read_by_express_as_written(self):
        browser = Browser()
        browser.get(self.py, "/login?user=ada")
        browser.get(self.py, "/put?data=" + quote(json.dumps(DATA)))
        stored = self.raw(browser.sid)
        seen = browser.get(self.node, "/raw").body
        self.assertEqual(seen["id"], browser.sid)
        self.assertEqual(_ordered(json.dumps(seen["session"])), _ordered(stored))
        self.assertEqual(seen["session"]["cookie"]["originalMaxAge"], HOUR_MS)
        self.assertEqual(self.raw(browser.sid), stored, "reading must leave the record as it was")

    def test_the_asgi_app_sets_the_same_redis_ttl_as_connect_redis(self):
        for first, second in self.both_ways():
            browser = Browser()
            ttls = []
            for port in (first, second):
                browser.get(port, "/incr")
                ttls.append(self.redis.pttl("sess:" + browser.sid))
            self.assertLessEqual(abs(ttls[0] - ttls[1]), 1000, ttls)
            for ttl in ttls:
                self.assertTrue(HOUR_MS - 2000 <= ttl <= HOUR_MS, ttls)


if __name__ == "__main__":
    unittest.main()
