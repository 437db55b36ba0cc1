"""RedisStore on a real Redis 6, which has no ``EXPIRE ... GT`` (Redis 7): the store finds that
out at its first touch and keeps the same rules with a script; everything else runs as on 7.

Debian 11 and Ubuntu 22.04 ship Redis 6.0.  Needs a Redis 6 ``redis-server`` named by
REDIS6_SERVER (``.ci/build-redis6`` builds Debian's 6.0.16 and prints its path) and
``pip install redis``.  The suites of tests/test_redis_store.py that cover every command the
store sends run here again, on that server.
"""
from __future__ import annotations

import logging
import os
import time
import unittest

from tests import test_redis_store as on_redis
from tests.redis_server import RedisServer
from tests.support import has_module, has_program, requires

REDIS6 = os.environ.get("REDIS6_SERVER", "")
HAVE_REDIS6 = bool(REDIS6) and has_program(REDIS6) and has_module("redis")
REASON = ("needs a Redis 6 redis-server named by REDIS6_SERVER (bash .ci/build-redis6 builds "
          "one and prints its path) and redis-py: pip install redis")

_saved: list = []


def setUpModule() -> None:
    # The classes below are test_redis_store's, run again: they reach their server through
    # that module's ``_server``, which points at the Redis 6 one while this module runs.
    if HAVE_REDIS6:
        server = RedisServer(program=REDIS6, args=("--rename-command", "KEYS", "")).__enter__()
        with on_redis.redis.Redis.from_url(server.url) as client:
            version = client.info("server")["redis_version"]
        if not version.startswith("6."):
            server.__exit__(None, None, None)
            raise RuntimeError(f"REDIS6_SERVER runs Redis {version}, not 6")
        _saved.append(on_redis._server)
        on_redis._server = server


def tearDownModule() -> None:
    if _saved:
        server, on_redis._server = on_redis._server, _saved.pop()
        server.__exit__(None, None, None)


@requires(HAVE_REDIS6, REASON)
class TestContractOnRedis6(on_redis.TestRedisStoreContract):
    pass


@requires(HAVE_REDIS6, REASON)
class TestFormatOnRedis6(on_redis.TestRedisStoreFormat):
    pass


@requires(HAVE_REDIS6, REASON)
class TestExpiryOnRedis6(on_redis.TestRedisStoreExpiry):
    pass


@requires(HAVE_REDIS6, REASON)
class TestWholeStoreOnRedis6(on_redis.TestRedisStoreWholeStore):
    pass


@requires(HAVE_REDIS6, REASON)
class TestGetTextOnRedis6(on_redis.TestRedisStoreGetText):
    pass


@requires(HAVE_REDIS6, REASON)
class TestMergeOnRedis6(on_redis.TestRedisStoreMerge):
    pass


@requires(HAVE_REDIS6, REASON)
class TestMergeExpiryOnRedis6(on_redis.TestRedisStoreMergeExpiry):
    pass


@requires(HAVE_REDIS6, REASON)
class TestTouchOnRedis6(on_redis.TestRedisStoreTouch):
    """Redis 6 refuses ``EXPIRE ... GT``: the store's first touch that would send it sends the
    script instead, and so does every later one, under the same rules."""

    test_touch_sends_expire_gt = None  # not on Redis 6: see test_touch_sends_the_script_instead

    def test_touch_never_shortens_the_key_unless_asked(self):
        store = self.store()
        with self.assertLogs("stores.redis_store", logging.INFO) as logs:
            self.check_touch_rules(store)  # sync, then async: the first touch finds it out
        self.assertEqual(sum("no EXPIRE ... GT" in line for line in logs.output), 1, logs.output)

    def test_touch_sends_the_script_instead(self):
        for kind in on_redis.KINDS:
            with self.subTest(kind):
                store = self.store()
                calls = self.calls(store, kind)
                self.raw.set("sess:t", on_redis.text_of(None), ex=500)
                calls.get_text("t")
                # The refused EXPIRE ... GT is not in MONITOR's feed (Redis checks a command's
                # arguments before it runs one), but the store says it once.
                with self.assertLogs("stores.redis_store", logging.INFO) as logs:
                    sent = on_redis._sent(on_redis._monitored(
                        self.raw, lambda: calls.touch("t", on_redis.prepared(time.time() + 900))))
                self.assertIn("no EXPIRE ... GT (Redis < 7)", logs.output[0])
                self.assertIn(sent, (["EVALSHA"], ["EVALSHA", "EVAL"]))  # EVAL: not loaded yet
                self.assertTrue(on_redis._within(self.raw.pttl("sess:t"), 900))
                sent = on_redis._sent(on_redis._monitored(
                    self.raw, lambda: calls.touch("t", on_redis.prepared(time.time() + 1900))))
                self.assertEqual(sent, ["EVALSHA"])
                self.assertTrue(on_redis._within(self.raw.pttl("sess:t"), 1900))

    def test_a_touch_that_would_barely_move_the_expiry_is_not_sent(self):
        store = self.store()
        store._expire_gt = False  # as its first touch on Redis 6 leaves it (tests above)
        self.check_a_barely_moving_touch_is_not_sent(store, "EVALSHA")


if __name__ == "__main__":
    unittest.main()
