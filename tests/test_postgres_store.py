"""PostgresStore against a real, private PostgreSQL: connect-pg-simple's table and rules, outages,
several processes, and the text / merge capabilities.

The cluster's TimeZone is Asia/Kathmandu (UTC+05:45), so a store that wrote or
compared ``expire`` in UTC, or in whole hours, would fail the expiry tests.
Needs ``apt-get install -y postgresql`` and ``pip install "psycopg[binary]" psycopg-pool``.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import unittest
from datetime import datetime
from unittest import mock
from zoneinfo import ZoneInfo

import session
from tests.postgres_server import INSTALL, PostgresServer, postgres_server_available
from tests.asgi_support import cancel_a_write_then_aclose, run_with_counted_threads
from tests.store_contract import StoreContract, make_record, user_data
from tests.support import LostReply, exit_code_of_a_child, has_module, requires

HAVE_SERVER = postgres_server_available()
HAVE_PSYCOPG = has_module("psycopg")
HAVE_POOL = has_module("psycopg_pool")
NEEDS_SERVER = f"needs the PostgreSQL server: {INSTALL}"
NEEDS_PSYCOPG = 'needs psycopg 3: pip install "psycopg[binary]"'
NEEDS_POOL = "needs psycopg_pool: pip install psycopg-pool"
ZONE = "Asia/Kathmandu"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_SQL_FILE = os.path.join(ROOT, "tests", "interop", "node_modules", "connect-pg-simple", "table.sql")

if HAVE_PSYCOPG:
    import psycopg
    from stores.postgres_store import PostgresStore, TABLE_SQL

_server: PostgresServer | None = None


def setUpModule() -> None:
    global _server
    if HAVE_SERVER and HAVE_PSYCOPG:
        _server = PostgresServer(timezone=ZONE).__enter__()


def tearDownModule() -> None:
    if _server is not None:
        _server.__exit__(None, None, None)


def needs_postgres(cls):
    return requires(HAVE_SERVER, NEEDS_SERVER)(requires(HAVE_PSYCOPG, NEEDS_PSYCOPG)(cls))


class Recording(session.Change):
    """session.Change, noting the stored texts its apply() was called with."""

    __slots__ = ("applied",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.applied: list = []

    def apply(self, stored: str) -> tuple:
        self.applied.append(stored)
        return super().apply(stored)


def change(base: str | None, record: dict, keep_later: bool = True) -> Recording:
    """A request's write of ``record`` having loaded ``base`` (None: a new session)."""
    return Recording(base, session.encode_record(record), session.expires_at(record), keep_later)


def merged(store: "PostgresStore", kind: str, sid: str, write: session.Change) -> bool:
    """``store.merge``, or for ``kind`` "async" its coroutine form on a new event loop."""
    if kind == "async":
        return asyncio.run(store.amerge(sid, write))
    return store.merge(sid, write)


class PostgresCase(unittest.TestCase):
    """A raw autocommit psycopg connection (``self.sql``) and stores closed after the test."""

    def setUp(self) -> None:
        self.raw = psycopg.connect(_server.url, autocommit=True)
        self.addCleanup(self.raw.close)
        for (schema,) in self.sql("SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' "
                                  "AND nspname <> 'information_schema'"):
            self.sql(f'DROP SCHEMA "{schema}" CASCADE')
        self.sql("CREATE SCHEMA public")

    def sql(self, query: str, *params) -> list:
        cur = self.raw.execute(query, params or None)
        return cur.fetchall() if cur.description else []

    def store(self, **kwargs) -> "PostgresStore":
        kwargs.setdefault("create_table_if_missing", True)
        if "pool" not in kwargs:
            kwargs.setdefault("conninfo", _server.url)
        store = PostgresStore(**kwargs)
        self.addCleanup(store.close)
        return store

    def expire_epoch(self, sid: str, table: str = '"session"') -> float:
        """The ``expire`` column as an instant, read as connect-pg-simple's comparisons read it."""
        return float(self.sql(f"SELECT extract(epoch FROM expire::timestamptz) FROM {table} "
                              "WHERE sid = %s", sid)[0][0])


# ---------------------------------------------------------------- the conformance suite

@needs_postgres
class TestPostgresStoreContract(StoreContract, unittest.TestCase):
    """The conformance suite every store passes, on the store's own connections."""

    expiry_slack = 1.0  # expire is cookie.expires rounded up to the second

    def make_store(self):
        return self.ttl_store(86400)

    def ttl_store(self, ttl):
        store = PostgresStore(conninfo=_server.url, ttl=ttl, create_table_if_missing=True)
        store.clear()
        return store

    def reopen(self, store):
        return PostgresStore(conninfo=_server.url, ttl=store.ttl)

    def other_process(self, store):
        return PostgresStore(conninfo=_server.url, ttl=store.ttl)

    def raw_bytes(self, store, sid):
        with psycopg.connect(_server.url) as conn:
            return conn.execute("SELECT convert_to(sess::text, 'UTF8') FROM session WHERE sid = %s",
                                (sid,)).fetchone()[0]

    def plant_text(self, store, sid, text):
        _plant(store, sid, text)


@needs_postgres
@requires(HAVE_POOL, NEEDS_POOL)
class TestPostgresStoreContractOnAPool(TestPostgresStoreContract):
    """The same suite over the app's psycopg_pool.ConnectionPool (not autocommit: the pool's
    connection() commits)."""

    def setUp(self):
        from psycopg_pool import ConnectionPool
        self.pool = ConnectionPool(_server.url, min_size=1, max_size=8, open=True)
        self.addCleanup(self.pool.close)
        super().setUp()

    def ttl_store(self, ttl):
        with self.pool.connection() as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS pooled")
        store = PostgresStore(self.pool, ttl=ttl, schema_name="pooled", create_table_if_missing=True)
        store.clear()
        return store

    def reopen(self, store):
        return PostgresStore(self.pool, ttl=store.ttl, schema_name="pooled")

    def other_process(self, store):
        return PostgresStore(self.pool, ttl=store.ttl, schema_name="pooled")

    def raw_bytes(self, store, sid):
        with psycopg.connect(_server.url) as conn:
            return conn.execute("SELECT convert_to(sess::text, 'UTF8') FROM pooled.session "
                                "WHERE sid = %s", (sid,)).fetchone()[0]


def _plant(store: "PostgresStore", sid: str, text: str) -> None:
    """Write ``text`` as ``sid``'s record with a connection of the test's own; the json column
    refuses what is not JSON (NaN, a truncated text) or nests past the server's stack depth, and
    PostgreSQL refuses what is not UTF-8."""
    with psycopg.connect(_server.url, autocommit=True) as conn:
        try:
            conn.execute(f"INSERT INTO {store.table} (sid, sess, expire) VALUES "
                         "(%s, %s, now() + interval '1 minute') ON CONFLICT (sid) DO UPDATE "
                         "SET sess = excluded.sess, expire = excluded.expire", (sid, text))
        except (psycopg.DataError, psycopg.errors.StatementTooComplex, UnicodeEncodeError) as exc:
            raise unittest.SkipTest(f"PostgreSQL's json column cannot hold this text: "
                                    f"{type(exc).__name__}") from None


# ---------------------------------------------------------------- connect-pg-simple's format

@needs_postgres
class TestTable(PostgresCase):
    """The table is connect-pg-simple's table.sql, created only when asked, names quoted."""

    def describe(self, schema: str, table: str) -> dict:
        """The table as the catalog sees it: columns, constraints, indexes."""
        oid = self.sql("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = %s", schema, table)[0][0]
        columns = self.sql("SELECT attname, format_type(atttypid, atttypmod), attnotnull, "
                           "coalesce(collname, '') FROM pg_attribute a LEFT JOIN pg_collation co "
                           "ON co.oid = a.attcollation WHERE attrelid = %s AND attnum > 0 "
                           "AND NOT attisdropped ORDER BY attnum", oid)
        constraints = self.sql("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                               "WHERE conrelid = %s ORDER BY conname", oid)
        indexes = self.sql("SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN "
                           "pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s "
                           "ORDER BY c.relname", oid)
        return {"columns": columns, "constraints": constraints, "indexes": indexes}

    def test_created_table_has_connect_pg_simples_columns_key_and_index(self):
        self.store()
        self.assertEqual(self.describe("public", "session"), {
            "columns": [("sid", "character varying", True, "default"),
                        ("sess", "json", True, ""),
                        ("expire", "timestamp(6) without time zone", True, "")],
            "constraints": [("session_pkey", "PRIMARY KEY (sid)")],
            "indexes": [("IDX_session_expire",
                         'CREATE INDEX "IDX_session_expire" ON public.session USING btree (expire)'),
                        ("session_pkey",
                         "CREATE UNIQUE INDEX session_pkey ON public.session USING btree (sid)")]})

    def test_created_table_is_what_table_sql_itself_creates(self):
        self.sql("CREATE SCHEMA theirs")
        self.sql("SET search_path TO theirs")
        self.sql(TABLE_SQL)
        self.sql("SET search_path TO public")
        self.store()
        self.assertEqual(
            json.dumps(self.describe("public", "session")),
            json.dumps(self.describe("theirs", "session")).replace("theirs.", "public."))

    @requires(os.path.exists(TABLE_SQL_FILE),
              "needs connect-pg-simple's table.sql: cd tests/interop && npm ci")
    def test_ddl_is_connect_pg_simples_table_sql_byte_for_byte(self):
        with open(TABLE_SQL_FILE, encoding="utf-8") as f:
            self.assertEqual(TABLE_SQL, f.read())

    def test_table_is_created_only_when_asked(self):
        store = self.store(create_table_if_missing=False)
        self.assertEqual(self.sql("SELECT to_regclass('session')"), [(None,)])
        with self.assertRaises(psycopg.errors.UndefinedTable) as caught:
            store.get("x")
        message = str(caught.exception)
        self.assertIn('PostgresStore: table "session" in database \'postgres\' at 127.0.0.1:', message)
        self.assertIn("create_table_if_missing=True", message)
        self.assertEqual(caught.exception.sqlstate, "42P01")

    def test_an_existing_table_and_its_rows_are_left_alone(self):
        self.store().set("kept", make_record(user="ada"))
        self.assertEqual(user_data(self.store().get("kept")), {"user": "ada"})

    def test_stores_starting_together_create_the_table_once_without_error(self):
        errors, barrier = [], threading.Barrier(6)

        def start():
            barrier.wait()
            try:
                PostgresStore(conninfo=_server.url, create_table_if_missing=True).close()
            except Exception as exc:  # collected: every thread's failure is reported
                errors.append(exc)
        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(self.sql("SELECT count(*) FROM pg_class WHERE relname = 'session' "
                                  "AND relnamespace = 'public'::regnamespace"), [(1,)])

    def test_schema_and_table_names_are_quoted_identifiers(self):
        self.sql('CREATE SCHEMA "My Schema"')
        store = self.store(schema_name="My Schema", table_name='Sess"ions; DROP')
        store.set("s", make_record(user="ada"))
        self.assertEqual(store.table, '"My Schema"."Sess""ions; DROP"')
        self.assertEqual(self.sql("SELECT table_schema, table_name FROM information_schema.tables "
                                  "WHERE table_schema = 'My Schema'"), [("My Schema", 'Sess"ions; DROP')])
        self.assertEqual(user_data(store.get("s")), {"user": "ada"})
        self.assertEqual(self.sql('SELECT sid FROM "My Schema"."Sess""ions; DROP"'), [("s",)])

    def test_a_second_table_in_one_schema_meets_table_sqls_fixed_key_and_index_names(self):
        self.store()
        with self.assertRaises(psycopg.errors.DuplicateTable) as caught:
            self.store(table_name="other_sessions")
        self.assertIn("schema_name", str(caught.exception))
        self.sql("CREATE SCHEMA other")
        self.store(table_name="other_sessions", schema_name="other").set("s", make_record())

    def test_table_name_without_schema_follows_the_search_path(self):
        self.sql("CREATE SCHEMA app")
        store = self.store(conninfo=_server.url + "?options=-csearch_path%3Dapp")
        store.set("s", make_record())
        self.assertEqual(self.sql("SELECT count(*) FROM app.session"), [(1,)])

    def test_bad_options_are_rejected_at_construction(self):
        bad = [dict(ttl=0), dict(ttl=-1), dict(ttl=True), dict(ttl="60"), dict(ttl=10 ** 400),
               dict(table_name=""),
               dict(table_name=None), dict(schema_name=""), dict(prune_interval=0),
               dict(prune_interval=True), dict(prune_interval=None)]
        for kwargs in bad:
            with self.assertRaises(ValueError, msg=repr(kwargs)):
                PostgresStore(conninfo=_server.url, **kwargs)
        with self.assertRaisesRegex(ValueError, "pool or a conninfo"):
            PostgresStore(object(), conninfo=_server.url)
        with self.assertRaisesRegex(TypeError, "ConnectionPool"):
            PostgresStore("postgresql://localhost/x")  # a URL given as the pool
        with self.assertRaises(psycopg.ProgrammingError):
            PostgresStore(conninfo="not a conninfo")  # fails here, not at the first request

    def test_defaults_are_connect_pg_simples(self):
        store = self.store()
        self.assertEqual((store.table, store.ttl, store.disable_touch, store.prune_interval),
                         ('"session"', 86400, False, 900))


@needs_postgres
class TestExpire(PostgresCase):
    """``expire`` = cookie.expires rounded up to the second, else now + ttl, via to_timestamp()."""

    def test_expire_is_cookie_expires_rounded_up_to_the_second(self):
        store = self.store()
        base = math.floor(time.time()) + 3600
        for sid, fraction in (("a", 0.001), ("b", 0.5), ("c", 0.999), ("d", 0.0)):
            record = make_record(user=sid)
            at = datetime.fromtimestamp(base + fraction, ZoneInfo("UTC"))
            record["cookie"]["expires"] = at.strftime("%Y-%m-%dT%H:%M:%S.") + \
                f"{round(fraction * 1000):03d}Z"
            store.set(sid, record)
            self.assertEqual(self.expire_epoch(sid), base + (fraction > 0), sid)

    def test_expire_holds_wall_clock_time_in_the_servers_time_zone(self):
        store = self.store()
        store.set("s", make_record(7200))
        expires = session.expires_at(store.get("s"))
        stored = self.sql("SELECT expire FROM session")[0][0]
        local = datetime.fromtimestamp(math.ceil(expires), ZoneInfo(ZONE)).replace(tzinfo=None)
        self.assertEqual(stored, local)
        self.assertEqual(self.sql("SHOW TimeZone"), [(ZONE,)])

    def test_record_without_expires_expires_ttl_seconds_from_now_rounded_up(self):
        store = self.store(ttl=1234)
        before = time.time()
        store.set("s", make_record(None))
        after = time.time()
        expire = self.expire_epoch("s")
        self.assertEqual(expire, int(expire))
        self.assertTrue(math.ceil(before + 1234) <= expire <= math.ceil(after + 1234), expire)

    def test_row_is_live_until_its_expire_second_has_passed_as_in_connect_pg_simple(self):
        store = self.store()
        text = session.encode_record(make_record())
        time.sleep(math.ceil(time.time()) - time.time() + 0.01)  # a whole second ahead
        now = time.time()
        for sid, expire in (("this-second", math.ceil(now)), ("last-second", math.floor(now))):
            self.sql("INSERT INTO session (sess, expire, sid) SELECT %s, to_timestamp(%s), %s",
                     text, expire, sid)
        seen = (store.get("this-second") is not None, store.get("last-second") is not None)
        if time.time() >= math.ceil(now):
            self.skipTest("the machine took a whole second over four statements")
        self.assertEqual(seen, (True, False))

    def test_a_stale_cookie_expires_in_a_live_row_is_kept(self):
        # An Express app's touch moves only expire: the JSON keeps the first cookie.expires.
        store = self.store()
        stale = make_record(-3600, user="ada")
        self.sql("INSERT INTO session (sess, expire, sid) SELECT %s, to_timestamp(%s), 'rolled'",
                 session.encode_record(stale), time.time() + 600)
        self.assertEqual(store.get("rolled"), stale)

    def test_a_session_whose_time_zone_differs_would_misread_expire(self):
        # Why both apps must use the server's TimeZone: the column is wall-clock time.
        store = self.store()
        store.set("s", make_record(3600))
        utc = psycopg.connect(_server.url + "?options=-ctimezone%3DUTC", autocommit=True)
        self.addCleanup(utc.close)
        shifted = utc.execute("SELECT extract(epoch FROM expire::timestamptz) FROM session").fetchone()[0]
        self.assertEqual(float(shifted) - self.expire_epoch("s"), 5 * 3600 + 45 * 60)


@needs_postgres
class TestRecords(PostgresCase):
    """The json column holds the record's text verbatim; what connect-pg-simple writes is read."""

    def test_sess_holds_the_record_json_as_express_writes_it(self):
        store = self.store()
        record = make_record(user="Zoë 🐍", n=1)
        store.set("s", record)
        self.assertEqual(self.sql("SELECT sess::text FROM session"), [(session.encode_record(record),)])

    def test_a_row_written_with_connect_pg_simples_upsert_is_read(self):
        store = self.store()
        text = ('{"cookie":{"originalMaxAge":3599999,"expires":"2099-01-01T00:00:00.000Z",'
                '"httpOnly":true,"path":"/","sameSite":"lax"},"passport":{"user":"7"}}')
        self.sql("INSERT INTO session (sess, expire, sid) SELECT %s, to_timestamp(%s), %s "
                 "ON CONFLICT (sid) DO UPDATE SET sess=%s, expire=to_timestamp(%s) RETURNING sid",
                 text, 4070908800, "fromnode", text, 4070908800)
        got = store.get("fromnode")
        self.assertEqual(got, json.loads(text))
        self.assertEqual(session.encode_record(got), text)

    def test_unreadable_record_is_missing_with_a_warning(self):
        store = self.store()
        for sid, text in (("nocookie", '{"user":"x"}'), ("array", "[1]")):
            self.sql("INSERT INTO session (sess, expire, sid) VALUES (%s, now() + interval '1 hour', %s)",
                     text, sid)
        with self.assertLogs("stores.postgres_store", logging.WARNING):
            self.assertIsNone(store.get("nocookie"))
        with self.assertLogs("stores.postgres_store", logging.WARNING):
            self.assertEqual(store.all(), {})
        self.assertEqual(store.length(), 2)

    def test_a_null_sess_where_the_schema_allows_it_is_no_session(self):
        # Another app's table without NOT NULL, and a row whose sess is NULL: all() raised
        # TypeError, and a merge that found it raised TypeError from Change.apply(None).
        store = self.store()
        store.length()  # creates the table
        self.sql('ALTER TABLE session ALTER sess DROP NOT NULL')
        self.sql("INSERT INTO session (sess, expire, sid) VALUES (NULL, now() + interval '1 hour', 'n')")
        self.assertIsNone(store.get("n"))
        self.assertIsNone(store.get_text("n"))
        with self.assertLogs("stores.postgres_store", logging.WARNING):
            self.assertEqual(store.all(), {})
        base = session.encode_record(make_record())
        for kind in ("sync", "async"):
            with self.subTest(kind):
                self.assertFalse(merged(store, kind, "n", change(base, make_record(n=1))))
        self.assertEqual(self.sql("SELECT sess FROM session"), [(None,)])

    def test_set_of_an_expired_record_deletes_the_row(self):
        store = self.store()
        store.set("s", make_record())
        store.set("s", make_record(-2))
        self.assertEqual(self.sql("SELECT count(*) FROM session"), [(0,)])


@needs_postgres
class TestTouch(PostgresCase):
    def test_touch_moves_expire_only(self):
        store = self.store()
        first = make_record(100, v=1)
        store.set("t", first)
        store.touch("t", make_record(5000, v=2))
        self.assertEqual(self.sql("SELECT sess::text FROM session"), [(session.encode_record(first),)])
        self.assertAlmostEqual(self.expire_epoch("t"), time.time() + 5000, delta=3)

    def test_touch_never_moves_expire_earlier(self):
        store = self.store()
        store.set("t", make_record(5000))
        store.touch("t", make_record(100))
        self.assertAlmostEqual(self.expire_epoch("t"), time.time() + 5000, delta=3)

    def test_touch_moves_expire_earlier_when_the_request_set_the_lifetime(self):
        store = self.store()
        store.set("t", make_record(5000))
        class SetByTheRequest(dict):
            keep_later = False
        store.touch("t", SetByTheRequest(make_record(100)))
        self.assertAlmostEqual(self.expire_epoch("t"), time.time() + 100, delta=3)

    def test_a_touch_that_would_barely_move_the_expiry_is_not_sent(self):
        store = self.store()
        store.set("t", make_record(3600, v=1))
        before = self.expire_epoch("t")
        self.assertEqual(store.get_text("t")[:10], '{"cookie":')  # the get returns the expiry
        statements = []
        real_call = store._call
        store._call = lambda work: statements.append(work) or real_call(work)
        store.touch("t", make_record(3610, v=1))      # 10 s later: under 1% of an hour
        self.assertEqual((statements, self.expire_epoch("t")), ([], before))
        store.touch("t", make_record(3700, v=1))      # 100 s later: sent
        self.assertEqual(len(statements), 1)
        self.assertAlmostEqual(self.expire_epoch("t"), time.time() + 3700, delta=3)

    def test_under_asgi_a_touch_it_skips_sends_nothing(self):
        store = self.store()
        store.set("t", make_record(3600, v=1))
        before = self.expire_epoch("t")
        store.get_text("t")

        async def touches():
            await store.atouch("t", make_record(3610, v=1))   # skipped on the event loop
            skipped = self.expire_epoch("t")
            await store.atouch("t", make_record(3700, v=1))   # sent
            return skipped
        skipped, calls = run_with_counted_threads(touches)
        self.assertEqual((skipped, calls), (before, []))
        self.assertAlmostEqual(self.expire_epoch("t"), time.time() + 3700, delta=3)
        _, calls = run_with_counted_threads(lambda: self.store(disable_touch=True).atouch(
            "t", make_record(9000)))
        self.assertEqual(calls, [])

    def test_a_save_that_barely_moves_the_expiry_writes_the_data_alone(self):
        store = self.store()
        store.set("t", make_record(3600, v=1))
        base = store.get_text("t")
        before = self.expire_epoch("t")
        text = session.encode_record(make_record(3610, v=2))
        self.assertTrue(store.merge("t", session.Change(base, text, time.time() + 3610)))
        self.assertEqual(self.sql("SELECT sess::text FROM session"), [(text,)])
        self.assertEqual(self.expire_epoch("t"), before)

    def test_disable_touch_leaves_expire_alone(self):
        store = self.store(disable_touch=True)
        store.set("t", make_record(100))
        store.touch("t", make_record(5000))
        self.assertAlmostEqual(self.expire_epoch("t"), time.time() + 100, delta=3)


# ---------------------------------------------------------------- the coroutines (ASGI)

@needs_postgres
class TestCoroutines(PostgresCase):
    """aget, aget_text, aset, amerge, adestroy, atouch: the same statements on psycopg's
    AsyncConnection, the store's own per event loop, never through a thread."""

    def backends(self, name: str) -> int:
        return self.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", name)[0][0]

    def test_each_coroutine_does_what_its_method_does_without_a_thread(self):
        store = self.store()
        record = make_record(3600, user="ada")
        other = make_record(3600, user="bob")

        async def work():
            await store.aset("s", record)
            text = await store.aget_text("s")
            mine = session.Change(text, session.encode_record(make_record(3600, user="ada", n=1)),
                                  time.time() + 3600)
            theirs = session.Change(text, session.encode_record(make_record(3600, user="ada", m=2)),
                                    time.time() + 3600)
            results = [await store.amerge("s", mine), await store.amerge("s", theirs)]  # merged
            results.append(await store.amerge("new", session.Change(None, session.encode_record(other),
                                                                    time.time() + 60)))
            results.append(await store.amerge("new", session.Change(None, "{}", None)))  # taken
            results.append(await store.aget("s"))
            await store.adestroy("new")
            results.append(await store.aget("new"))
            await store.atouch("s", make_record(7200, user="ada"))
            return text, results
        (text, results), calls = run_with_counted_threads(work)
        self.assertEqual(calls, [])
        self.assertEqual(text, session.encode_record(record))
        self.assertEqual(results[:3], [True, True, True])
        self.assertFalse(results[3])
        self.assertEqual(user_data(results[4]), {"user": "ada", "n": 1, "m": 2})
        self.assertIsNone(results[5])
        self.assertAlmostEqual(self.expire_epoch("s"), time.time() + 7200, delta=3)
        self.assertEqual(user_data(store.get("s")), {"user": "ada", "n": 1, "m": 2})

    def test_a_lost_connection_is_replaced_and_the_operation_tried_again(self):
        store = self.store(conninfo=_server.url + "?application_name=async-lost")
        store.set("s", make_record(user="ada"))

        async def work():
            first = await store.aget("s")
            lost = store._loop_connections().idle[-1].connection
            # The server ends the loop's connection (a restart, an idle timeout, a failover).
            self.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'async-lost' AND pid <> pg_backend_pid()")
            again = await store.aget("s")
            return first, again, lost, store._loop_connections().idle[-1].connection
        first, again, lost, now = run_with_counted_threads(work)[0]
        self.assertEqual(user_data(first), {"user": "ada"})
        self.assertEqual(user_data(again), {"user": "ada"})
        self.assertTrue(lost.closed)
        self.assertIsNot(now, lost)

    def test_a_statement_the_server_refuses_raises_naming_the_table_and_keeps_the_connection(self):
        store = self.store(table_name="absent", create_table_if_missing=False,
                           conninfo=_server.url + "?application_name=async-refused")

        async def work():
            with self.assertRaisesRegex(psycopg.errors.UndefinedTable, "PostgresStore: table"):
                await store.aget("s")
            return len(store._loop_connections().idle)
        self.assertEqual(run_with_counted_threads(work)[0], 1)

    def test_each_event_loop_opens_at_most_max_connections_then_waits(self):
        class Small(PostgresStore):
            max_connections = 2
            connect_wait = 0.3
        store = Small(conninfo=_server.url + "?application_name=async-small", create_table_if_missing=True)
        self.addCleanup(store.close)
        store.set("s", make_record(user="ada"))

        async def work():
            reads = await asyncio.gather(*(store.aget("s") for _ in range(20)))
            peak = self.backends("async-small")
            conns = store._loop_connections()
            held = [await conns.take() for _ in range(2)]
            started = time.monotonic()
            with self.assertRaisesRegex(psycopg.OperationalError, "all 2 connections.*stayed busy"):
                await store.aget("s")
            waited = time.monotonic() - started
            for cur in held:
                conns.give(cur)
            return reads, peak, waited
        reads, peak, waited = run_with_counted_threads(work)[0]
        self.assertEqual([user_data(r) for r in reads], [{"user": "ada"}] * 20)
        self.assertLessEqual(peak, 3)  # the loop's two, and the one store.set() opened
        self.assertGreaterEqual(waited, 0.25)

    def test_a_write_whose_request_is_cancelled_still_completes(self):
        store = self.store()
        store.set("s", make_record(user="ada"))
        base = store.get_text("s")
        change = session.Change(base, session.encode_record(make_record(user="ada", n=1)), None)

        async def work():
            task = asyncio.ensure_future(store.amerge("s", change))
            await asyncio.sleep(0)  # the write is on its way
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            for _ in range(100):  # the shielded write finishes on its own
                if store.get("s").get("n") == 1:
                    return True
                await asyncio.sleep(0.01)
            return False
        self.assertTrue(run_with_counted_threads(work)[0])

    def test_aclose_at_shutdown_lets_a_write_whose_request_was_cancelled_finish(self):
        # An event loop that ends (asyncio.run, uvicorn's shutdown) cancels every task still
        # running, the shielded write included: an app's lifespan shutdown awaits aclose().
        store = self.store()
        store.set("s", make_record(user="ada"))
        change = session.Change(store.get_text("s"), session.encode_record(make_record(user="ada", n=1)),
                                None)
        blocker = psycopg.connect(_server.url)
        self.addCleanup(blocker.close)
        blocker.execute("SELECT 1 FROM session WHERE sid = 's' FOR UPDATE")  # the write waits
        threading.Timer(0.3, blocker.rollback).start()
        cancel_a_write_then_aclose(store, "s", change, after=0.1)
        self.assertEqual(store.get("s").get("n"), 1)

    @requires(has_module("trio"), "pip install trio")
    def test_aclose_in_a_trio_apps_shutdown_returns(self):
        # Under trio the store is called in threads (see session._async_call): no connections
        # of the loop's to close, and no asyncio loop to look them up by.
        import trio
        store = self.store()
        store.set("s", make_record(user="ada"))
        trio.run(store.aclose)
        self.assertEqual(user_data(store.get("s")), {"user": "ada"})

    def test_a_write_that_fails_after_its_request_was_cancelled_is_logged(self):
        store = self.store(table_name="absent", create_table_if_missing=False)

        async def work():
            request = asyncio.ensure_future(store.aset("s", make_record(user="ada")))
            await asyncio.sleep(0)
            request.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await request
            await store.aclose()
        with self.assertLogs("session", "ERROR") as logs:
            asyncio.run(work())
        self.assertIn('relation "absent" does not exist', logs.output[0])
        self.assertIn("PostgresStore", logs.output[0])

    def test_an_async_pool_is_refused_with_a_clear_error(self):
        from psycopg_pool import AsyncConnectionPool
        pool = AsyncConnectionPool(_server.url, open=False)
        with self.assertRaisesRegex(TypeError, "sync psycopg_pool.ConnectionPool.*conninfo"):
            PostgresStore(pool)

    def test_connections_of_an_ended_loop_are_closed_and_close_closes_the_rest(self):
        store = self.store(conninfo=_server.url + "?application_name=async-loops")
        store.set("s", make_record(user="ada"))
        for _ in range(3):  # asyncio.run per call: each loop ends with its connection idle
            self.assertEqual(user_data(asyncio.run(store.aget("s"))), {"user": "ada"})
        deadline = time.monotonic() + 5
        while self.backends("async-loops") > 2:  # the sync one, and the last loop's
            self.assertLess(time.monotonic(), deadline, "connections of ended loops stayed open")
            time.sleep(0.02)
        store.close()
        while self.backends("async-loops"):
            self.assertLess(time.monotonic(), deadline, "the store's connections stayed open")
            time.sleep(0.02)
        with self.assertRaisesRegex(psycopg.OperationalError, "closed"):
            asyncio.run(store.aget("s"))

    def test_on_an_apps_pool_the_coroutines_run_the_methods_in_a_thread(self):
        from psycopg_pool import ConnectionPool
        self.store().close()  # the table
        pool = ConnectionPool(_server.url, min_size=1, max_size=2, open=True,
                              kwargs={"autocommit": True})
        self.addCleanup(pool.close)
        store = self.store(pool=pool)
        store.set("s", make_record(user="ada"))
        record, calls = run_with_counted_threads(lambda: store.aget("s"))
        self.assertEqual((user_data(record), calls), ({"user": "ada"}, ["_run"]))

    def test_an_asgi_app_on_postgres_never_uses_the_thread_pool(self):
        from tests.asgi_support import acall_asgi, make_scope
        from tests.harness import SECRET, SetCookie
        store = self.store()

        async def app(scope, receive, send):
            if scope["path"] == "/incr":
                scope["session"]["n"] = scope["session"].get("n", 0) + 1
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        mw = session.ASGISessionMiddleware(app, secret=SECRET, store=store, cookie={"max_age": 3600})
        jar = {}

        def request(path):
            cookie = "; ".join(f"{k}={v}" for k, v in jar.items()) or None
            resp, calls = run_with_counted_threads(lambda: acall_asgi(mw, make_scope(path, cookie=cookie)))
            for raw in resp.values("Set-Cookie"):
                jar[SetCookie(raw).name] = SetCookie(raw).value
            return calls
        self.assertEqual([request(p) for p in ("/incr", "/read", "/incr")], [[], [], []])
        sid = SetCookie(f"connect.sid={jar['connect.sid']}").sid
        self.assertEqual(user_data(store.get(sid)), {"n": 2})


# ---------------------------------------------------------------- pruning

@needs_postgres
class TestPrune(PostgresCase):
    def fill(self, expired: int, live: int) -> None:
        text = session.encode_record(make_record())
        self.sql("INSERT INTO session (sid, sess, expire) SELECT 'old' || i, %s, "
                 "now() - interval '1 minute' FROM generate_series(1, %s) i", text, expired)
        self.sql("INSERT INTO session (sid, sess, expire) SELECT 'live' || i, %s, "
                 "now() + interval '1 hour' FROM generate_series(1, %s) i", text, live)

    def test_prune_deletes_in_batches_of_prune_batch_rows(self):
        batches = []

        class Counting(PostgresStore):
            prune_batch = 100

            def _prune_batch(self, cur):
                batches.append(super()._prune_batch(cur))
                return batches[-1]
        store = Counting(conninfo=_server.url, create_table_if_missing=True)
        self.addCleanup(store.close)
        self.fill(1050, 20)
        self.assertEqual(store.prune(), 1050)
        self.assertEqual(batches, [100] * 10 + [50])
        self.assertEqual(self.sql("SELECT count(*) FROM session"), [(20,)])

    def test_prune_skips_a_row_a_request_holds_locked_instead_of_waiting(self):
        store = self.store()
        self.fill(5, 1)
        other = psycopg.connect(_server.url)  # a transaction holding one expired row
        self.addCleanup(other.close)
        other.execute("SELECT 1 FROM session WHERE sid = 'old1' FOR UPDATE")
        result = []
        thread = threading.Thread(target=lambda: result.append(store.prune()))
        thread.start()
        thread.join(10)
        self.assertFalse(thread.is_alive(), "prune waited for the locked row")
        self.assertEqual(result, [4])
        other.rollback()
        self.assertEqual(store.prune(), 1)

    def test_prune_uses_connect_pg_simples_rule_expire_before_now(self):
        store = self.store()
        text = session.encode_record(make_record())
        self.sql("INSERT INTO session (sid, sess, expire) VALUES ('later', %s, now() + interval '5 s')",
                 text)
        self.assertEqual(store.prune(), 0)

    def test_automatic_prune_runs_in_the_background_after_prune_interval(self):
        store = self.store(prune_interval=0.2)
        self.fill(30, 2)
        deadline = time.monotonic() + 10
        while self.sql("SELECT count(*) FROM session") != [(2,)]:
            self.assertLess(time.monotonic(), deadline, "no automatic prune happened")
            store.get("live1")  # operations are what start a due prune
            time.sleep(0.05)

    def test_prune_interval_false_never_prunes_by_itself(self):
        self.sql("CREATE SCHEMA control")
        pruning = self.store(prune_interval=0.1, schema_name="control")
        never = self.store(prune_interval=False)
        self.fill(10, 1)
        self.sql("INSERT INTO control.session SELECT * FROM session")
        deadline = time.monotonic() + 10
        while self.sql("SELECT count(*) FROM control.session") != [(1,)]:
            self.assertLess(time.monotonic(), deadline, "the control store never pruned")
            pruning.get("x")
            never.get("x")
            time.sleep(0.05)
        self.assertEqual(self.sql("SELECT count(*) FROM session"), [(11,)])


# ---------------------------------------------------------------- connections

@needs_postgres
class TestConnections(PostgresCase):
    def backends(self, name: str) -> int:
        return self.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", name)[0][0]

    def test_database_url_is_used_when_neither_pool_nor_conninfo_is_given(self):
        self.store().close()  # the table
        url = _server.url + "?application_name=from-env"
        with mock.patch.dict(os.environ, {"DATABASE_URL": url}):
            store = PostgresStore()
        self.addCleanup(store.close)
        store.set("s", make_record(user="ada"))
        self.assertEqual(self.backends("from-env"), 1)
        self.assertIn(f"127.0.0.1:{_server.port}", repr(store))

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_working(self):
        # A server that forks its workers after loading the app (gunicorn --preload): a child
        # must neither talk over the parent's sockets nor close them as it ends.
        store = self.store()
        store.set("parent", make_record(user="ada"))
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        loop.run_until_complete(store.aget("parent"))  # an async connection too
        (cur,) = store._idle
        backend = cur.connection.info.backend_pid

        def child():
            nonlocal cur
            code = 2 if store._idle or store._all or store._loops else 0
            store.set("child", make_record(user="bob"))
            code = code or (0 if store.get("parent")["user"] == "ada" else 3)
            store.close()
            del cur
            gc.collect()
            return code
        self.assertEqual(exit_code_of_a_child(child), 0)
        self.assertEqual(store._idle, [cur])
        self.assertEqual(cur.execute("SELECT pg_backend_pid()").fetchone(), (backend,))
        self.assertEqual(store.get("child")["user"], "bob")
        self.assertEqual(loop.run_until_complete(store.aget("child"))["user"], "bob")

    def test_key_value_conninfo_and_a_unix_socket_work(self):
        store = self.store(conninfo=f"host={_server.socket_dir} port={_server.port} user=postgres "
                                    "dbname=postgres")
        store.set("s", make_record())
        self.assertEqual(store.length(), 1)

    @requires(HAVE_POOL, NEEDS_POOL)
    def test_a_pool_passed_in_is_never_closed(self):
        from psycopg_pool import ConnectionPool
        pool = ConnectionPool(_server.url, min_size=1, max_size=2, open=True)
        self.addCleanup(pool.close)
        store = self.store(pool=pool)
        store.set("s", make_record())
        with mock.patch.object(pool, "close", wraps=pool.close) as close:
            store.close()
        close.assert_not_called()
        self.assertFalse(pool.closed)
        with pool.connection() as conn:
            self.assertEqual(conn.execute("SELECT count(*) FROM session").fetchone(), (1,))

    def test_a_store_made_from_conninfo_closes_its_own_connections(self):
        store = self.store(conninfo=_server.url + "?application_name=store-owned")
        threads = [threading.Thread(target=store.length) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertGreaterEqual(self.backends("store-owned"), 1)
        store.close()
        deadline = time.monotonic() + 5
        while self.backends("store-owned"):
            self.assertLess(time.monotonic(), deadline, "the store's connections stayed open")
            time.sleep(0.02)

    def test_store_opens_at_most_max_connections(self):
        class Small(PostgresStore):
            max_connections = 3
        store = Small(conninfo=_server.url + "?application_name=small", create_table_if_missing=True)
        self.addCleanup(store.close)
        peak, stop = [], threading.Event()

        def work():
            while not stop.is_set():
                store.set("s", make_record())
                store.get("s")

        threads = [threading.Thread(target=work) for _ in range(10)]
        for thread in threads:
            thread.start()
        for _ in range(20):
            peak.append(self.backends("small"))
            time.sleep(0.02)
        stop.set()
        for thread in threads:
            thread.join(10)
        self.assertLessEqual(max(peak), 3)
        self.assertGreater(max(peak), 0)

    def test_missing_driver_names_the_package_to_install(self):
        with mock.patch.dict(sys.modules, {"psycopg": None}):
            with self.assertRaisesRegex(ImportError, r'pip install "psycopg\[binary\]".*\[postgres\]'):
                PostgresStore(conninfo=_server.url)

    def test_importing_stores_does_not_import_the_driver(self):
        code = "import sys, stores; stores.__all__; print('psycopg' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             check=True).stdout.strip()
        self.assertEqual(out, "False")


# ---------------------------------------------------------------- outages and processes

WRITER = """
    import sys, time
    from stores.postgres_store import PostgresStore
    from tests.store_contract import make_record
    url, name, count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    store = PostgresStore(conninfo=url, create_table_if_missing=True)
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        store.set(f"{name}-{i}", make_record(i=i, pad="x" * (100_000 if i % 4 == 0 else 0)))
        print(i, flush=True)
    store.close()
"""


@needs_postgres
class TestOutagesAndProcesses(unittest.TestCase):
    """Each test runs its own cluster, stopped and started under the store."""

    def setUp(self):
        self.server = PostgresServer(timezone=ZONE).__enter__()
        self.addCleanup(self.server.__exit__, None, None, None)

    def store(self, **kwargs):
        store = PostgresStore(conninfo=self.server.url, create_table_if_missing=True, **kwargs)
        self.addCleanup(store.close)
        return store

    def test_a_lost_server_fails_clearly_and_the_next_operation_works_once_it_is_back(self):
        store = self.store()
        store.set("s", make_record(user="ada"))
        self.server.stop()
        for _ in range(3):
            with self.assertRaises(psycopg.OperationalError) as caught:
                store.get("s")
            self.assertIn("127.0.0.1", str(caught.exception))
            self.assertIn(f"{self.server.port}", str(caught.exception))
            self.assertIn("PostgresStore", str(caught.exception))
        self.server.start()
        self.assertEqual(user_data(store.get("s")), {"user": "ada"})  # the data survived, too

    def test_the_coroutines_fail_clearly_while_the_server_is_down_and_work_once_it_is_back(self):
        store = self.store()
        store.set("s", make_record(user="ada"))
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        self.assertEqual(user_data(loop.run_until_complete(store.aget("s"))), {"user": "ada"})
        self.server.stop("immediate")
        for _ in range(2):
            with self.assertRaises(psycopg.OperationalError) as caught:
                loop.run_until_complete(store.aget("s"))
            self.assertIn("PostgresStore", str(caught.exception))
            self.assertIn(f"{self.server.port}", str(caught.exception))
        self.server.start()
        change = session.Change(store.get_text("s"), session.encode_record(make_record(user="bob")), None)
        self.assertTrue(loop.run_until_complete(store.amerge("s", change)))
        self.assertEqual(user_data(loop.run_until_complete(store.aget("s"))), {"user": "bob"})

    def test_the_first_operation_after_a_restart_works_on_stale_connections(self):
        store = self.store()
        threads = [threading.Thread(target=store.set, args=(f"s{i}", make_record(i=i)))
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertGreaterEqual(len(store._idle), 1)
        self.server.stop("immediate")
        self.server.start()
        self.assertEqual(store.get("s1")["i"], 1)
        self.assertEqual(store.length(), 4)

    @requires(HAVE_POOL, NEEDS_POOL)
    def test_the_first_operation_after_a_restart_works_over_the_apps_pool(self):
        from psycopg_pool import ConnectionPool
        pool = ConnectionPool(self.server.url, min_size=4, max_size=4, open=True,
                              kwargs={"autocommit": True}, check=ConnectionPool.check_connection)
        self.addCleanup(pool.close)
        pool.wait()
        store = PostgresStore(pool, create_table_if_missing=True, prune_interval=False)
        store.set("s", make_record(i=1))
        self.server.stop("fast")
        self.server.start()
        self.assertEqual([store.get("s")["i"] for _ in range(4)], [1, 1, 1, 1])

    def test_outage_during_concurrent_requests_through_the_middleware(self):
        from tests.test_redis_store import _counter_app, _request, _serve
        store = self.store()
        app = session.SessionMiddleware(_counter_app, secret="fault", store=store)
        errors, port, stop = _serve(app)
        self.addCleanup(stop)
        cookies = [_request(port)[2] for _ in range(4)]
        statuses: list = []
        done = threading.Event()

        def client(cookie):
            while not done.is_set():
                statuses.append(_request(port, cookie)[0])
        threads = [threading.Thread(target=client, args=(c,)) for c in cookies]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        self.server.stop("immediate")
        time.sleep(0.3)
        self.server.start()
        time.sleep(0.3)
        done.set()
        for thread in threads:
            thread.join(10)
        self.assertEqual(set(statuses) - {200, 500}, set())
        self.assertIn(500, statuses)
        self.assertIn(200, statuses[-8:])
        for error in errors:
            self.assertIsInstance(error, psycopg.OperationalError)
        self.assertEqual(_request(port, cookies[0])[0], 200)
        for record in store.all().values():  # every row a whole record
            self.assertIsInstance(record["n"], int)

    def test_four_processes_writing_500_records_each_lose_none(self):
        start_at = str(time.time() + 1.5)
        env = dict(os.environ, PYTHONPATH=ROOT)
        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), self.server.url,
                                   f"p{n}", "500", start_at], cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in range(4)]
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            self.assertEqual(proc.returncode, 0, err)
            self.assertEqual(len(out.split()), 500)
        store = self.store()
        self.assertEqual(store.length(), 2000)
        self.assertEqual(set(store.ids()), {f"p{n}-{i}" for n in range(4) for i in range(500)})
        self.assertEqual(store.get("p3-8")["pad"], "x" * 100_000)

    def test_writes_confirmed_before_an_immediate_shutdown_survive_it(self):
        store = self.store()
        confirmed, failed, stop = [], [], threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                try:
                    store.set(f"w{i}", make_record(i=i))
                    confirmed.append(f"w{i}")
                except psycopg.OperationalError:
                    failed.append(i)
                    time.sleep(0.01)
                i += 1
        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.3)
        self.server.stop("immediate")
        time.sleep(0.2)
        self.server.start()
        time.sleep(0.3)
        stop.set()
        thread.join(10)
        self.assertTrue(failed, "no write met the outage")
        self.assertTrue(set(confirmed) <= set(store.ids()),
                        sorted(set(confirmed) - set(store.ids()))[:5])


# ---------------------------------------------------------------- the demo

@needs_postgres
class TestDemoOnPostgres(unittest.TestCase):
    """``python http_demo.py --store postgresql://...``."""

    def test_demo_keeps_users_logged_in_across_a_restart_and_names_a_down_server(self):
        import tempfile
        from tests.demo_process import DemoProcess, clean_env
        from tests.test_demo_http import Client
        with PostgresServer(timezone=ZONE) as server, tempfile.TemporaryDirectory() as cwd:
            env = clean_env(SESSION_SECRET="demo secret")
            with DemoProcess("--store", server.url, env=env, cwd=cwd) as demo:
                self.assertIn("Store:  PostgresStore, postgresql://postgres@127.0.0.1:", demo.stdout())
                ada = Client(demo.url)
                self.assertEqual(ada.login("ada")[0], 303)
            with DemoProcess("--store", server.url, env=env, cwd=cwd) as demo:
                self.assertIn("(1 live session)", demo.stdout())
                ada.base_url = demo.url
                self.assertEqual(ada.get("/members")[0], 200)
            server.stop()
            result = subprocess.run(demo.command(), capture_output=True, text=True, timeout=60, cwd=cwd)
            self.assertEqual(result.returncode, 1, "a store that is down is an error at startup")
            first = result.stderr.splitlines()[0]
            self.assertIn(f'port {server.port} failed: Connection refused (PostgresStore', first)

    def test_demo_without_the_driver_names_the_package(self):
        import tempfile
        from tests.demo_process import DemoProcess, clean_env
        demo = DemoProcess("--store", "postgresql://127.0.0.1:1/demo", env=clean_env(),
                           python_prelude="import sys; sys.modules['psycopg'] = None")
        with tempfile.TemporaryDirectory() as cwd:
            result = subprocess.run(demo.command(), capture_output=True, text=True, timeout=30, cwd=cwd)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn('pip install "psycopg[binary]"', result.stderr)


# ---------------------------------------------------------------- records as text, merge

@needs_postgres
class TestTextAndMerge(PostgresCase):
    """get_text and merge (compare-and-set on the stored text), as STORE_API describes."""

    def test_get_text_returns_the_stored_text_verbatim(self):
        store = self.store()
        spaced = '{"cookie": {"expires": null, "originalMaxAge": null},  "z": 1, "a": "é"}'
        self.sql("INSERT INTO session VALUES ('s', %s, now() + interval '1 hour')", spaced)
        self.assertEqual(store.get_text("s"), spaced)
        self.assertIsNone(store.get_text("missing"))

    def test_get_text_of_an_expired_row_is_none(self):
        store = self.store()
        self.sql("INSERT INTO session VALUES ('s', '{}', now() - interval '1 minute')")
        self.assertIsNone(store.get_text("s"))

    def test_get_text_returns_bad_content_without_raising(self):
        store = self.store()
        self.sql("INSERT INTO session VALUES ('s', '[\"not a session\"]', now() + interval '1 hour')")
        self.assertEqual(store.get_text("s"), '["not a session"]')

    def test_merge_of_a_new_session_creates_it(self):
        store = self.store()
        record = make_record(600, user="ada")
        self.assertTrue(store.merge("s", change(None, record)))
        self.assertEqual(store.get_text("s"), session.encode_record(record))
        self.assertAlmostEqual(self.expire_epoch("s"), time.time() + 600, delta=2)

    def test_merge_of_a_new_session_never_overwrites_a_live_record(self):
        store = self.store()
        store.set("s", make_record(user="ada"))
        before = store.get_text("s")
        self.assertFalse(store.merge("s", change(None, make_record(user="eve"))))
        self.assertEqual(store.get_text("s"), before)

    def test_merge_of_a_new_session_takes_over_an_expired_row(self):
        store = self.store()
        self.sql("INSERT INTO session VALUES ('s', '{}', now() - interval '1 minute')")
        record = make_record(user="ada")
        self.assertTrue(store.merge("s", change(None, record)))
        self.assertEqual(store.get_text("s"), session.encode_record(record))

    def test_merge_of_a_new_session_already_expired_writes_no_row(self):
        store = self.store()
        self.sql("INSERT INTO session VALUES ('s', '{}', now() - interval '1 minute')")
        self.assertTrue(store.merge("s", change(None, make_record(-5, user="ada"))))
        self.assertTrue(store.merge("t", change(None, make_record(-5, user="ada"))))
        self.assertEqual(self.sql("SELECT count(*) FROM session"), [(0,)])

    def test_a_create_is_refused_even_over_a_record_identical_to_its_own(self):
        # Two visitors given one ID by a genid that repeats may write the same first record:
        # taking it as one's own would give the second the first's session.
        for kind in ("sync", "async"):
            with self.subTest(kind):
                store = self.store()
                create = change(None, make_record(user="ada"))
                self.assertTrue(store.merge(kind, create))
                self.assertFalse(merged(store, kind, kind, create))

    def test_a_create_resent_after_its_reply_was_lost_counts_as_written(self):
        # The insert lands, its reply is lost with the connection: the store sends it again
        # on a new one, knowing it is a resend, and the row it finds is its own.
        kinds = ("sync", "async", "pool") if HAVE_POOL else ("sync", "async")
        for kind in kinds:
            sid = f"lost-reply-{kind}"
            with self.subTest(kind), LostReply(_server.port, sid.encode()) as proxy:
                url = _server.url.replace(f":{_server.port}/", f":{proxy.port}/")
                if kind == "pool":
                    from psycopg_pool import ConnectionPool
                    pool = ConnectionPool(url, min_size=1, max_size=1, open=True,
                                          kwargs={"autocommit": True})
                    self.addCleanup(pool.close)
                    store = self.store(pool=pool)
                    # Not its warning that it discards the lost connection, in the run's output.
                    quiet = mock.patch.object(logging.getLogger("psycopg.pool"), "disabled", True)
                    quiet.start()
                    self.addCleanup(quiet.stop)
                else:
                    store = self.store(conninfo=url)
                record = make_record(user="ada")
                self.assertTrue(merged(store, kind, sid, change(None, record)))
                self.assertTrue(proxy.lost, "the reply was lost")
                self.assertEqual(store.get_text(sid), session.encode_record(record))

    def test_merge_over_an_unchanged_record_writes_the_new_text_without_apply(self):
        store = self.store()
        store.set("s", make_record(user="ada"))
        base = store.get_text("s")
        mine = make_record(900, user="ada", views=1)
        write = change(base, mine)
        self.assertTrue(store.merge("s", write))
        self.assertEqual(store.get_text("s"), session.encode_record(mine))
        self.assertEqual(write.applied, [])

    def test_merge_over_a_record_changed_meanwhile_applies_only_this_requests_keys(self):
        store = self.store()
        store.set("s", make_record(user="ada", a=1))
        base = store.get_text("s")
        store.set("s", {**json.loads(base), "b": 2})  # another request, meanwhile
        stored = store.get_text("s")
        mine = {**json.loads(base), "c": 3}
        mine.pop("a")
        write = change(base, mine)
        self.assertTrue(store.merge("s", write))
        self.assertEqual(write.applied, [stored])
        self.assertEqual(user_data(store.get("s")), {"user": "ada", "b": 2, "c": 3})

    def test_merge_never_resurrects_a_destroyed_or_expired_record(self):
        store = self.store()
        loaded = make_record(user="ada")
        store.set("gone", loaded)
        base = store.get_text("gone")
        store.destroy("gone")
        self.assertFalse(store.merge("gone", change(base, {**loaded, "x": 1})))
        self.assertIsNone(self.sql("SELECT sess FROM session WHERE sid = 'gone'") or None)
        self.sql("INSERT INTO session VALUES ('old', %s, now() - interval '1 minute')", base)
        self.assertFalse(store.merge("old", change(base, {**loaded, "x": 1})))
        self.assertLess(self.expire_epoch("old"), time.time())

    def test_merge_keeps_a_later_stored_expiry_unless_told_not_to(self):
        store = self.store()
        store.set("s", make_record(5000))
        self.assertTrue(store.merge("s", change(store.get_text("s"), make_record(100))))
        self.assertAlmostEqual(self.expire_epoch("s"), time.time() + 5000, delta=3)
        self.assertTrue(store.merge("s", change(store.get_text("s"), make_record(100), keep_later=False)))
        self.assertAlmostEqual(self.expire_epoch("s"), time.time() + 100, delta=3)

    def test_merge_of_a_record_already_expired_deletes_the_row_unless_a_later_expiry_is_kept(self):
        store = self.store()
        store.set("kept", make_record(user="ada"))
        store.set("deleted", make_record(user="ada"))
        expired = make_record(-5, user="ada")
        self.assertTrue(store.merge("kept", change(store.get_text("kept"), expired)))
        self.assertTrue(store.merge("deleted", change(store.get_text("deleted"), expired,
                                                      keep_later=False)))
        self.assertEqual(self.sql("SELECT sid FROM session"), [("kept",)])

    def test_merge_without_expires_uses_the_ttl_from_now(self):
        store = self.store(ttl=777)
        store.set("s", make_record(None))
        self.sql("UPDATE session SET expire = now() + interval '10 s'")
        base = store.get_text("s")
        self.assertTrue(store.merge("s", change(base, make_record(None, views=1))))
        self.assertAlmostEqual(self.expire_epoch("s"), time.time() + 777, delta=3)

    def test_concurrent_merges_into_one_session_lose_no_key(self):
        store = self.store()
        store.set("s", make_record(user="ada"))
        threads, rounds, errors = 6, 40, []

        def worker(t):
            key = f"k{t}"
            try:
                for n in range(1, rounds + 1):
                    base = store.get_text("s")
                    record = json.loads(base)
                    record[key] = n
                    if not store.merge("s", change(base, record)):
                        errors.append(f"{key}: merge returned False")
            except Exception as exc:  # collected: every thread's failure is reported
                errors.append(f"{key}: {type(exc).__name__}: {exc}")
        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(user_data(store.get("s")),
                         {"user": "ada", **{f"k{t}": rounds for t in range(threads)}})


if __name__ == "__main__":
    unittest.main()
