"""One login across Express and Python on PostgreSQL: the real express-session + connect-pg-simple 10
app (app.js, SESSION_STORE=pg) and the same routes on SessionMiddleware + PostgresStore
(wsgi_app.py) share one table in one private cluster, whose TimeZone is not UTC.

Needs node with ``cd tests/interop && npm ci``, ``apt-get install -y postgresql`` and
``pip install "psycopg[binary]"``.
"""
from __future__ import annotations

import json
import math
import time
import unittest
from urllib.parse import quote

import session
from tests.interop.test_interop import DATA, HOUR_MS, NODE_MODULES, OLD, Browser, NodeApp, _ordered, fetch
from tests.postgres_server import INSTALL, PostgresServer, postgres_server_available
from tests.support import free_port, has_module, has_program, requires

ZONE = "America/St_Johns"  # UTC-03:30 (-02:30 in summer): half-hour offset and daylight saving


@requires(has_program("node"), "install Node.js 18+: apt-get install -y nodejs npm")
@requires(NODE_MODULES, "install the Express app: run: cd tests/interop && npm ci")
@requires(postgres_server_available(), f"install PostgreSQL: {INSTALL}")
@requires(has_module("psycopg"), 'install psycopg 3: pip install "psycopg[binary]"')
class TestExpressInteropOnPostgres(unittest.TestCase):
    """Express 4 (express-session 1.19 + connect-pg-simple 10) and SessionMiddleware + PostgresStore."""

    EXPRESS = "4"

    @classmethod
    def setUpClass(cls) -> None:
        import psycopg
        from stores.postgres_store import PostgresStore

        cls.server = PostgresServer(timezone=ZONE).start()
        cls.addClassCleanup(cls.server.close)
        cls.db = psycopg.connect(cls.server.url, autocommit=True)
        cls.addClassCleanup(cls.db.close)
        cls._apps: dict = {}

        def pair(key, max_age_ms=HOUR_MS):
            """(node port, python port) for one cookie lifetime, started once per class."""
            if key not in cls._apps:
                store = PostgresStore(conninfo=cls.server.url, create_table_if_missing=True)
                cls.addClassCleanup(store.close)
                node = NodeApp(None, [OLD], max_age_ms, False,
                               store_env={"SESSION_STORE": "pg", "DATABASE_URL": cls.server.url},
                               express=cls.EXPRESS)
                cls.addClassCleanup(node.stop)
                py = cls.serve_python(store, None if max_age_ms is None else max_age_ms / 1000)
                cls.addClassCleanup(py.stop)
                cls._apps[key] = (node.port, py.port)
            return cls._apps[key]

        cls.pair = staticmethod(pair)
        cls.node, cls.py = pair("main")

    @classmethod
    def serve_python(cls, store, max_age):
        """The Python side: the routes on SessionMiddleware, served (``.port``, ``.stop()``)."""
        from tests.interop.wsgi_app import ServedApp, make_app
        return ServedApp(make_app([OLD], store, max_age=max_age), free_port())

    def row(self, sid: str) -> tuple | None:
        """(sess as stored, expire as epoch seconds in the server's TimeZone) or None."""
        row = self.db.execute("SELECT sess::text, extract(epoch FROM expire::timestamptz) "
                              "FROM session WHERE sid = %s", (sid,)).fetchone()
        return None if row is None else (row[0], float(row[1]))

    def raw(self, sid: str) -> str | None:
        row = self.row(sid)
        return None if row is None else row[0]

    def both_ways(self):
        for label, order in (("express→python", (self.node, self.py)),
                             ("python→express", (self.py, self.node))):
            with self.subTest(label):
                yield order

    # -- shared login ---------------------------------------------------------------------------
    def test_a_login_on_one_app_is_seen_by_the_other(self):
        for first, second in self.both_ways():
            browser = Browser()
            login = browser.get(first, "/login?user=ada")
            self.assertEqual(login.body["id"], browser.sid)
            self.assertEqual(browser.get(second, "/whoami").body, {"user": "ada", "id": browser.sid})

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
            self.assertIsNotNone(self.row(sid))
            browser.get(first, "/logout")
            self.assertIsNone(self.row(sid))
            for port in (first, second):
                who = fetch(port, "/whoami", cookie).body
                self.assertIsNone(who["user"])
                self.assertNotEqual(who["id"], sid)
            self.assertIsNone(self.row(sid), "a read after logout must not resurrect the row")

    # -- expire ---------------------------------------------------------------------------------
    def test_both_apps_write_expire_as_cookie_expires_rounded_up_in_the_servers_zone(self):
        for first, second in self.both_ways():
            browser = Browser()
            for port in (first, second):
                browser.get(port, "/incr")
                text, expire = self.row(browser.sid)
                expires = session.expires_at(json.loads(text))
                self.assertEqual(expire, math.ceil(expires), port)

    def test_a_browser_session_cookie_gets_now_plus_one_day_on_both(self):
        node, py = self.pair("browser-cookie", None)
        for first, second in ((node, py), (py, node)):
            browser = Browser()
            expires = []
            for port in (first, second):
                browser.get(port, "/incr")
                expires.append(self.row(browser.sid)[1] - time.time())
            for left in expires:
                self.assertTrue(86400 - 3 <= left <= 86400 + 1, expires)

    def test_a_read_refreshes_expire_on_both_as_connect_pg_simples_touch_does(self):
        node, py = self.pair("browser-cookie", None)
        for first, second in ((node, py), (py, node)):
            browser = Browser()
            browser.get(first, "/incr")
            before = self.raw(browser.sid)
            for port in (first, second):
                self.db.execute("UPDATE session SET expire = to_timestamp(%s) WHERE sid = %s",
                                (time.time() + 100, browser.sid))
                browser.get(port, "/whoami")
                self.assertGreater(self.row(browser.sid)[1] - time.time(), 86400 - 5, port)
            self.assertEqual(self.raw(browser.sid), before, "a read must only touch, not rewrite")

    def test_a_session_expires_on_both_apps_within_a_second_of_each_other(self):
        # Every request to a live session moves its expiry on (express-session's touch), so each
        # probe reads its own copy of the row: copy k is asked, once, by one app at probe time k.
        node, py = self.pair("short", 2000)
        for first in (node, py):
            with self.subTest(created_by="express" if first == node else "python"):
                browser = Browser()
                browser.get(first, "/login?user=ada")
                expires = session.expires_at(json.loads(self.raw(browser.sid)))
                probes = [expires - 0.6 + 0.2 * k for k in range(16)]  # to ceil(expires) + 1.4 at least
                for k in range(len(probes)):
                    for app in ("node", "py"):
                        self.db.execute("INSERT INTO session SELECT %s, sess, expire FROM session "
                                        "WHERE sid = %s", (f"{browser.sid}-{app}{k}", browser.sid))
                gone: dict = {}
                for k, at in enumerate(probes):
                    time.sleep(max(0.0, at - time.time()))
                    for app, port in (("node", node), ("py", py)):
                        cookie = quote("s:" + session.sign(f"{browser.sid}-{app}{k}", OLD), safe="")
                        if fetch(port, "/whoami", cookie).body["user"] is None:
                            gone.setdefault(app, time.time())
                self.assertEqual(set(gone), {"node", "py"}, "the session never expired on one app")
                self.assertLess(abs(gone["node"] - gone["py"]), 1.0, gone)
                for at in gone.values():
                    self.assertTrue(expires <= at <= math.ceil(expires) + 1.5, (expires, gone))

    # -- records --------------------------------------------------------------------------------
    def test_a_python_record_is_read_by_express_as_written(self):
        self._check_record_read_across(writer=self.py, reader=self.node)

    def test_an_express_record_is_read_by_python_as_written(self):
        self._check_record_read_across(writer=self.node, reader=self.py)

    def _check_record_read_across(self, writer: int, reader: int) -> None:
        browser = Browser()
        browser.get(writer, "/login?user=ada")
        browser.get(writer, "/put?data=" + quote(json.dumps(DATA)))
        stored = self.raw(browser.sid)
        seen = browser.get(reader, "/raw").body
        self.assertEqual(seen["id"], browser.sid)
        self.assertEqual(_ordered(json.dumps(seen["session"])), _ordered(stored))
        self.assertEqual(seen["types"], {"user": "string", "z_last_first": "integer", "user_name": "string",
                                         "count": "integer", "ratio": "float", "tiny": "float",
                                         "neg": "integer", "big": "integer", "flag": "boolean",
                                         "off": "boolean", "nothing": "null", "list": "array",
                                         "nested": "object", "escapes": "string", "empty": "object",
                                         "empty_list": "array"})
        self.assertEqual(self.raw(browser.sid), stored, "reading must leave the record as it was")

    def test_both_apps_write_byte_identical_records_but_for_the_expiry_instant(self):
        raws = []
        for port in (self.node, self.py):
            browser = Browser()
            browser.get(port, "/login?user=ada")
            browser.get(port, "/put?data=" + quote(json.dumps(DATA)))
            browser.get(port, "/incr")
            raws.append(self.raw(browser.sid))
        node_raw, py_raw = raws
        node_cookie, py_cookie = (json.loads(r)["cookie"] for r in raws)
        same = py_raw.replace(f'"expires":"{py_cookie["expires"]}"', f'"expires":"{node_cookie["expires"]}"')
        same = same.replace(f'"originalMaxAge":{py_cookie["originalMaxAge"]},',
                            f'"originalMaxAge":{node_cookie["originalMaxAge"]},')
        self.assertEqual(same, node_raw)


class TestExpress5InteropOnPostgres(TestExpressInteropOnPostgres):
    """The same against Express 5: the app's routes, express-session and connect-pg-simple as on 4."""

    EXPRESS = "5"
    # 9 s of waiting for a rule Express does not reach: connect-pg-simple's query (expire against
    # now) and express-session decide when a session ends, whichever Express routes the request.
    test_a_session_expires_on_both_apps_within_a_second_of_each_other = None


if __name__ == "__main__":
    unittest.main()


@requires(has_module("uvicorn"), "install uvicorn: pip install uvicorn")
class TestExpressInteropOnPostgresUnderASGI(TestExpressInteropOnPostgres):
    """The same, the Python side on ASGISessionMiddleware under uvicorn: PostgresStore's
    coroutines (psycopg's AsyncConnection) must give Express the rows it expects."""

    @classmethod
    def serve_python(cls, store, max_age):
        from tests.asgi_support import UvicornServer
        from tests.interop.asgi_app import make_app
        return UvicornServer(make_app([OLD], store, max_age=max_age))
