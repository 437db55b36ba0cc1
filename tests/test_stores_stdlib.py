"""The stores that need nothing but Python: MemoryStore, SQLiteStore, ShelveStore.

Each runs the whole conformance suite (tests/store_contract.py).  MemoryStore's class
adds its own rules (its expiry heap, express's touch, threads through the middleware);
below them are the rules only a file-backed store has: several processes, a SIGKILLed
writer, records written by something else, read-only, full or locked files.
"""
from __future__ import annotations

import asyncio
import dbm
import dbm.dumb
import errno
import gc
import json
import re
import logging
import math
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
import unittest
from unittest import mock

import session
from stores import ShelveStore, SQLiteStore, shelve_store, sqlite_store
from tests import support
from tests.asgi_support import cancel_a_write_then_aclose, run_with_counted_threads
from tests.harness import SECRET, Client, Harness
from tests.store_contract import StoreContract, iso_in, make_record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """Start ``python -c code args`` with the repository importable."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def make_read_only(test: unittest.TestCase, path: str) -> None:
    """Make ``path`` (a file or a directory) read-only until the test ends; root, whom chmod
    does not stop, uses chattr +i."""
    if os.geteuid() != 0:
        folder = os.path.isdir(path)
        os.chmod(path, 0o555 if folder else 0o444)
        test.addCleanup(os.chmod, path, 0o755 if folder else 0o644)
        return
    if shutil.which("chattr") is None:
        test.skipTest("root cannot make a file read-only without chattr (apt-get install e2fsprogs)")
    done = subprocess.run(["chattr", "+i", path], capture_output=True, text=True)
    if done.returncode != 0:
        test.skipTest(f"root cannot make a file read-only here (chattr +i: {done.stderr.strip()})")
    test.addCleanup(subprocess.run, ["chattr", "-i", path], check=True)


class TempDir:
    """setUp makes ``self.dir``, a fresh directory removed after the test."""

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory(prefix="stores-")
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        super().setUp()


class FileStoreCase(TempDir):
    """``self.path`` in a fresh directory; ``self.store()`` opens ``store_class`` there,
    closed after the test."""

    store_class: type
    file_name: str

    def setUp(self) -> None:
        super().setUp()
        self.path = os.path.join(self.dir, self.file_name)

    def store(self, cls=None, **kwargs):
        store = (cls or self.store_class)(self.path, **kwargs)
        self.addCleanup(store.close)
        return store

    def check_a_write_stands_when_its_cleanup_fails(self, store, logger: str) -> None:
        """``store``'s cleanup after a write (SQLite's prune batch, Shelve's sweep) raises
        "disk I/O error": the write stands, the failure is logged once and put off."""
        with self.assertLogs(logger, "WARNING") as logs:
            store.set("a", make_record(user="ada"))
            self.assertEqual(store.get("a")["user"], "ada")
            store.set("b", make_record(user="bob"))  # put off: no warning now
        self.assertIn("disk I/O error", logs.output[0])
        self.assertEqual(len(logs.output), 1, logs.output)


# ---------------------------------------------------------------- the stores package

class TestStoresPackage(unittest.TestCase):
    def test_importing_stores_imports_no_driver_and_no_store(self):
        code = """
            import sys, stores
            print(sorted(m for m in ("redis", "pymongo", "psycopg", "stores.sqlite_store",
                                     "stores.shelve_store", "stores.redis_store", "stores.mongo_store",
                                     "stores.postgres_store") if m in sys.modules))
            stores.SQLiteStore
            print(sorted(m for m in ("redis", "pymongo", "stores.sqlite_store") if m in sys.modules))
        """
        out, err = run_python(code).communicate(timeout=60)
        self.assertEqual(out.split("\n")[:2], ["[]", "['stores.sqlite_store']"], err)

    def test_store_names_resolve_to_their_modules(self):
        import stores
        from stores import shelve_store, sqlite_store
        self.assertIs(stores.SQLiteStore, sqlite_store.SQLiteStore)
        self.assertIs(stores.ShelveStore, shelve_store.ShelveStore)
        self.assertEqual(stores.__all__, ["SQLiteStore", "ShelveStore", "RedisStore", "MongoStore",
                                         "PostgresStore"])
        self.assertTrue(set(stores.__all__) <= set(dir(stores)))
        with self.assertRaises(AttributeError):
            stores.NoSuchStore


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ---------------------------------------------------------------- the contract, per store

class _Dropping(logging.Filter):
    """Drops the log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class JSONDictStore(session.Store):
    """A store with only the required methods, over a dict of JSON texts and expiries: every
    optional method (get_text, merge, the coroutines) is Store's default."""

    def __init__(self, ttl: float = 86400) -> None:
        self.ttl, self.data, self.lock = ttl, {}, threading.Lock()

    def get(self, sid):
        entry = self.data.get(sid)
        if entry is None or entry[0] <= time.time():
            return None
        try:
            return session.decode_record(entry[1])
        except ValueError:  # not a session (the contract plants such texts): missing
            logging.getLogger("tests").warning("not a session record: %.40r", entry[1])
            return None

    def set(self, sid, record):
        now = time.time()
        expiry = self.expiry_time(record, now)
        with self.lock:
            if expiry <= now:
                self.data.pop(sid, None)
            else:
                self.data[sid] = (expiry, session.encode_record(record))

    def destroy(self, sid):
        with self.lock:
            self.data.pop(sid, None)

    def touch(self, sid, record):
        with self.lock:
            entry = self.data.get(sid)
            expiry = self.expiry_time(record)
            if entry is not None and entry[0] > time.time() and (
                    not getattr(record, "keep_later", True) or expiry > entry[0]):
                self.data[sid] = (expiry, entry[1])

    def all(self):
        return {sid: self.get(sid) for sid in list(self.data) if self.get(sid) is not None}

    def clear(self):
        self.data.clear()


class TestStoreDefaults(StoreContract, unittest.TestCase):
    """The contract over a store built on the required methods alone: Store's own get_text
    and merge must keep every rule a store's own do, but atomicity."""

    def make_store(self):
        return JSONDictStore()

    def ttl_store(self, ttl):
        return JSONDictStore(ttl)

    def plant_text(self, store, sid, text):
        store.data[sid] = (time.time() + 60, text)

    prune_counts = False  # Store's prune() is a no-op: this store drops nothing by itself

    def setUp(self):
        super().setUp()
        # Every middleware made over this store warns that its merge is not atomic (checked
        # below): expected here, so kept out of the test run's output.
        quiet = _Dropping("has no merge() of its own")
        logging.getLogger("session").addFilter(quiet)
        self.addCleanup(logging.getLogger("session").removeFilter, quiet)

    def test_a_middleware_warns_that_the_default_merge_is_not_atomic(self):
        logger = logging.getLogger("session")
        for make in (session.SessionMiddleware, session.ASGISessionMiddleware):
            with self.subTest(make.__name__), self.assertLogs("session", "WARNING") as logs:
                for quiet in list(logger.filters):
                    logger.removeFilter(quiet)
                    self.addCleanup(logger.addFilter, quiet)
                make(lambda *args: None, secret="s", store=self.store)
            self.assertEqual(len(logs.records), 1)
            self.assertIn("JSONDictStore has no merge() of its own", logs.output[0])
            self.assertIn("can still lose changes", logs.output[0])

    def test_threads_merging_their_own_keys_into_one_record_lose_none(self):
        self.skipTest("Store's default merge reads, merges and writes without a lock (documented); "
                      "a store's own merge is atomic")

    def test_get_text_hands_over_a_text_written_elsewhere_as_it_is_and_it_loads(self):
        self.skipTest("Store's default get_text encodes get()'s record again (documented): only "
                      "a store that keeps text hands it over as it is")

    def test_keep_later_means_neither_touch_nor_merge_moves_an_expiry_earlier(self):
        self.skipTest("Store's default merge sees records, not the store's expiry: it cannot "
                      "keep a later expiry a touch wrote (documented)")

    def test_merge_of_a_record_already_expired_deletes_it_unless_a_later_expiry_is_kept(self):
        self.skipTest("Store's default merge sees records, not the store's expiry (documented)")


class TestMemoryStore(StoreContract, unittest.TestCase):
    def make_store(self):
        return session.MemoryStore()

    def ttl_store(self, ttl):
        return session.MemoryStore(ttl=ttl)

    def reopen(self, store):
        self.skipTest("MemoryStore keeps nothing after close(), by design")

    def raw_bytes(self, store, sid):
        # MemoryStore documents that it keeps records as JSON strings: look at them.
        entry = getattr(store, "_data", {}).get(sid)
        if entry is None or not isinstance(entry[1], str):
            self.skipTest("MemoryStore's internal layout changed; nothing to read")
        return entry[1].encode("utf-8")

    def plant_text(self, store, sid, text):
        # A new session's merge() writes the change's text as it is: MemoryStore's way in
        # for a text its own encoder did not write.
        store.destroy(sid)
        if not store.merge(sid, session.Change(None, text, time.time() + 60)):
            self.fail(f"could not plant {sid!r}")

    # -- MemoryStore's own rules, beyond the contract

    def test_records_are_kept_as_json_not_references(self):
        record = make_record(cart=[1])
        self.store.set("a", record)
        record["cart"].append(2)
        record["cookie"]["path"] = "/mutated"
        got = self.store.get("a")
        self.assertEqual(got["cart"], [1])
        got["cart"].append(3)
        self.store.all()["a"]["cart"].append(4)
        self.assertEqual(self.store.get("a")["cart"], [1])
        self.assertEqual(self.store.get("a")["cookie"]["path"], "/")

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_a_forked_child_writes_though_a_parent_thread_held_the_lock_at_the_fork(self):
        # multiprocessing's fork from a threaded server: the child keeps a copy of the
        # records, and would wait for ever for a lock no thread of its own will release.
        code = """
            import os, signal
            import session
            store = session.MemoryStore()
            store.set("s", {"cookie": {"originalMaxAge": None}, "n": 1})
            store._lock.acquire()  # a parent's thread, writing at the fork
            child = os.fork()
            if child == 0:
                signal.alarm(5)
                store.set("s", {"cookie": {"originalMaxAge": None}, "n": 2})
                os._exit(0 if store.get("s")["n"] == 2 else 3)
            store._lock.release()
            print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), store.get("s")["n"])
        """
        out, err = run_python(code).communicate(timeout=60)
        self.assertEqual(out.strip(), "0 1", err)

    def test_ttl_may_be_zero_but_not_negative(self):
        self.assertEqual(session.MemoryStore(ttl=0).ttl, 0)
        with self.assertRaisesRegex(ValueError, "ttl"):
            session.MemoryStore(ttl=-1)

    def test_all_leaves_out_a_record_that_expired_without_being_read(self):
        self.store.set("a", make_record(0.2, n=1))
        time.sleep(0.3)
        self.assertEqual(self.store.all(), {})

    def test_touch_moves_the_expiry_and_keeps_the_touched_cookie_but_not_its_data(self):
        # As express's MemoryStore, which stores the session it is given with its data
        # as stored: the cookie is the touched one.
        self.store.set("a", make_record(0.3, n=1))
        fresh = make_record(60, n=99)
        self.store.touch("a", fresh)
        time.sleep(0.4)
        got = self.store.get("a")
        self.assertIsNotNone(got, "touch must extend the expiry")
        self.assertEqual(got["n"], 1, "touch must not write data")
        self.assertEqual(got["cookie"]["expires"], fresh["cookie"]["expires"])

    def test_a_touch_that_barely_moves_the_expiry_and_changes_nothing_else_is_skipped(self):
        # As the other stores skip it (touch_slack): a site whose requests mostly only read
        # would otherwise rewrite every user's record on every request.
        store = self.store
        record = make_record(3600, n=1)

        def touched(seconds, **cookie):  # the record as a request that read it touches it
            return {**record, "cookie": {**record["cookie"], "expires": iso_in(seconds), **cookie}}

        def touch(touch_record):  # the stored cookie after the touch
            store.touch("a", touch_record)
            return store.get("a")["cookie"]
        store.set("a", record)
        self.assertEqual(touch(touched(3610)), record["cookie"])  # 10 s: under a minute, under 1%
        changed = touched(3610, httpOnly=False)  # the cookie changed: written
        self.assertEqual(touch(changed), changed["cookie"])
        store.set("a", record)
        later = touched(3700)  # 100 s: over a minute, written
        self.assertEqual(touch(later), later["cookie"])

        class SetItsLifetime(dict):
            keep_later = False  # the request set the cookie's lifetime itself: written
        store.set("a", record)
        own = SetItsLifetime(touched(3610))
        self.assertEqual(touch(own), own["cookie"])

    def test_a_touch_whose_cookie_differs_anywhere_but_in_its_expiry_is_written(self):
        store = self.store
        record = make_record(3600, n=1)
        base = {"meta": {"expires": "old"}, **record["cookie"]}  # before the cookie's own
        for label, stored, cookie in (
                ("originalMaxAge", record["cookie"],
                 {**record["cookie"], "originalMaxAge": 3_601_000, "expires": iso_in(3601)}),
                ("a field after expires", record["cookie"], {**record["cookie"], "priority": "high"}),
                ("a nested expires", base, {**base, "meta": {"expires": "new"}}),
                ('a key holding "expires"', {'x"expires': "old", **record["cookie"]},
                 {'x"expires': "new", **record["cookie"]})):
            with self.subTest(label):
                store.set("a", {**record, "cookie": stored})
                store.touch("a", {**record, "cookie": cookie})
                self.assertEqual(store.get("a")["cookie"], cookie)

    def test_a_touch_is_skipped_only_below_a_minute_and_below_one_percent_of_the_lifetime(self):
        store = self.store
        for lifetime, later, written in ((86400, 30, False), (86400, 120, True),  # 1%: 864 s
                                         (600, 2, False), (600, 10, True)):  # 1% of 10 min: 6 s
            with self.subTest(lifetime=lifetime, later=later):
                record = make_record(lifetime, n=1)
                store.set("a", record)
                cookie = {**record["cookie"], "expires": iso_in(lifetime + later)}
                store.touch("a", {**record, "cookie": cookie})
                self.assertEqual(store.get("a")["cookie"], cookie if written else record["cookie"])

    def test_a_record_whose_first_field_is_not_its_cookie_is_touched_in_full(self):
        store = self.store
        cookie = make_record(None)["cookie"]
        touched = {**cookie, "domain": "example.com"}
        # "sweets" is as long as "cookie": its value sits where a record's cookie would.
        text = session.encode_record({"sweets": touched, "cookie": cookie})
        self.assertTrue(store.merge("a", session.Change(None, text, None)))  # lives the store's ttl
        store.touch("a", {"cookie": touched})  # the same ttl: an expiry that barely moves
        self.assertEqual(store.get("a")["cookie"], touched)

    def test_a_browser_session_record_touched_again_soon_is_not_rewritten(self):
        store = self.store
        record = make_record(None, n=1)
        store.set("a", record)
        entry = store._data["a"]  # (expiry, JSON): a record without expires shows none
        store.touch("a", make_record(None, n=1))
        self.assertIs(store._data["a"], entry)
        store.touch("a", {**record, "cookie": {**record["cookie"], "domain": "example.com"}})
        self.assertEqual(store.get("a")["cookie"]["domain"], "example.com")

    def test_expired_records_are_reclaimed_under_normal_traffic(self):
        store = self.store
        blob = "x" * 20_000
        tracemalloc.start()
        try:
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            deadline = time.time() + 0.5
            for i in range(200):
                store.set(f"old-{i}", make_record(deadline - time.time(), blob=blob))
            self.assertEqual(store.length(), 200, "inserting took longer than the records live")
            grown = tracemalloc.get_traced_memory()[0] - base
            time.sleep(max(0.0, deadline - time.time()) + 0.1)
            # Only what a server does (get/set/touch), never all()/length()/prune().
            for i in range(300):
                store.set(f"new-{i}", make_record(n=i))
                store.get(f"new-{i}")
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        self.assertGreater(grown, 200 * 20_000)
        self.assertLess(left, grown * 0.35, f"expired records still held: {left} of {grown} bytes")
        self.assertEqual(store.length(), 300)

    def test_many_expired_records_disappear_from_length_as_time_passes(self):
        for i in range(3000):
            self.store.set(f"s{i}", make_record(2.0 if i % 3 else 60, n=i))
        self.assertEqual(self.store.length(), 3000, "inserting took longer than the records live")
        time.sleep(2.1)
        self.assertEqual(self.store.length(), 1000)
        self.assertEqual(len(self.store.all()), 1000)

    def test_a_record_whose_expiry_moved_later_expires_at_the_new_time(self):
        store = self.store
        store.set("slide", make_record(0.3, n=1))
        store.touch("slide", make_record(0.8, n=1))
        store.set("moved", make_record(0.3, n=2))
        store.set("moved", make_record(0.8, n=3))
        store.set("earlier", make_record(60, n=4))
        store.set("earlier", make_record(0.3, n=5))
        time.sleep(0.5)
        self.assertEqual(store.prune(), 1, "only the record moved earlier has expired")
        self.assertEqual(sorted(store.all()), ["moved", "slide"])
        self.assertEqual(store.get("moved")["n"], 3)
        time.sleep(0.45)
        self.assertEqual(store.length(), 0, "the later expiries are honoured, without a get")

    def test_a_session_saved_by_the_middleware_without_expires_lives_ttl(self):
        # The middleware hands the store its record with the JSON and expiry already
        # worked out; a browser-session cookie has none, so the store's ttl applies.
        for ttl, kept in ((0.3, False), (60, True)):
            with self.subTest(ttl=ttl):
                out = []
                h = Harness(lambda e: out.append(e["session"].setdefault("n", len(out))),
                            store=session.MemoryStore(ttl=ttl))
                h.request()
                time.sleep(0.4)
                h.request()
                self.assertEqual(out, [0, 0] if kept else [0, 1])

    def test_memory_store_through_the_middleware_under_threads(self):
        store = self.store

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


class TestSQLiteStore(TempDir, StoreContract, unittest.TestCase):
    def make_store(self):
        return SQLiteStore(os.path.join(self.dir, "sessions.db"))

    def ttl_store(self, ttl):
        return SQLiteStore(os.path.join(self.dir, f"ttl{ttl}.db"), ttl=ttl)

    def reopen(self, store):
        return SQLiteStore(store.path, table=store.table)

    def other_process(self, store):
        return SQLiteStore(store.path, table=store.table)

    def raw_bytes(self, store, sid):
        with sqlite3.connect(store.path) as conn:
            return conn.execute(f'SELECT CAST(data AS BLOB) FROM "{store.table}" WHERE sid = ?',
                                (sid,)).fetchone()[0]

    def plant_text(self, store, sid, text):
        if not _utf8(text):
            self.skipTest("sqlite3 cannot write a str that is not valid UTF-8")
        with sqlite3.connect(store.path) as conn:
            conn.execute(f'INSERT OR REPLACE INTO "{store.table}" (sid, expires, data) '
                         "VALUES (?, ?, ?)", (sid, time.time() + 60, text))
        conn.close()


class TestSQLiteStoreInMemory(StoreContract, unittest.TestCase):
    def make_store(self):
        return SQLiteStore(":memory:")

    def ttl_store(self, ttl):
        return SQLiteStore(":memory:", ttl=ttl)

    def reopen(self, store):
        self.skipTest("an in-memory database ends with its store, by design")

    def raw_bytes(self, store, sid):
        conn = store._take()  # the one connection to this private in-memory database
        try:
            return conn.execute("SELECT CAST(data AS BLOB) FROM sessions WHERE sid = ?",
                                (sid,)).fetchone()[0]
        finally:
            store._give(conn)

    def plant_text(self, store, sid, text):
        if not _utf8(text):
            self.skipTest("sqlite3 cannot write a str that is not valid UTF-8")
        conn = store._take()
        try:
            conn.execute("INSERT OR REPLACE INTO sessions (sid, expires, data) VALUES (?, ?, ?)",
                         (sid, time.time() + 60, text))
        finally:
            store._give(conn)

    def test_under_asgi_its_one_connection_is_used_on_the_event_loop_when_free(self):
        store = self.make_store()
        self.addCleanup(store.close)
        store.set("s1", make_record(user="ada"))
        text, calls = run_with_counted_threads(lambda: store.aget_text("s1"))
        self.assertEqual((json.loads(text)["user"], calls), ("ada", []))
        cur = store._take()  # another thread is using the connection: the read waits in a thread
        threading.Timer(0.05, store._give, (cur,)).start()
        text, calls = run_with_counted_threads(lambda: store.aget_text("s1"))
        self.assertEqual((json.loads(text)["user"], calls), ("ada", ["get_text"]))


class TestShelveStore(TempDir, StoreContract, unittest.TestCase):
    def make_store(self):
        return ShelveStore(os.path.join(self.dir, "sessions"))

    def ttl_store(self, ttl):
        return ShelveStore(os.path.join(self.dir, f"ttl{ttl}"), ttl=ttl)

    def reopen(self, store):
        return ShelveStore(store.path)

    def raw_bytes(self, store, sid):
        store.close()  # a dbm file is opened by one reader/writer at a time
        with dbm.open(store.path, "r") as db:
            return db[sid.encode()]

    def plant_text(self, store, sid, text):
        # The file is locked to its store, so the bytes go in through the store's own handle,
        # in its value format, as a corrupted or planted value would be.
        with store._lock:
            store._open()[sid.encode()] = shelve_store._pack(
                time.time() + 60, text.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------- SQLiteStore only

WRITER = """
    import sys, time
    from stores.sqlite_store import SQLiteStore
    from tests.store_contract import make_record
    path, name, count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    time.sleep(max(0.0, start_at - time.time()))
    store = SQLiteStore(path)
    pad = "x" * 100_000
    i = 0
    while count < 0 or i < count:
        store.set(f"{name}-{i}", make_record(i=i, pad=pad if i % 4 == 0 else ""))
        print(i, flush=True)
        i += 1
    store.close()
"""


MERGER = """
    import json, sys, time
    import session
    from stores.sqlite_store import SQLiteStore
    path, key, count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    store = SQLiteStore(path)
    store.get_text("one")  # connected before the start
    time.sleep(max(0.0, start_at - time.time()))
    refused = 0
    for n in range(count):  # a request: load, set its own key, save
        base = store.get_text("one")
        record = json.loads(base)
        record[f"{key}-{n}"] = n
        change = session.Change(base, session.encode_record(record), session.expires_at(record))
        refused += not store.merge("one", change)
    store.close()
    print(refused)
"""


class TestSQLiteStoreFile(FileStoreCase, unittest.TestCase):
    store_class, file_name = SQLiteStore, "sessions.db"

    def raw(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(conn.close)
        return conn

    def test_schema_is_one_table_with_an_expiry_index_in_wal_mode(self):
        self.store()
        conn = self.raw()
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        columns = [(r[1], r[2], r[3], r[5]) for r in conn.execute("PRAGMA table_info(sessions)")]
        self.assertEqual(columns, [("sid", "TEXT", 1, 1), ("expires", "REAL", 1, 0),
                                   ("data", "TEXT", 1, 0)])
        indexed = [r[2] for r in conn.execute("PRAGMA index_info(sessions_expires)")]
        self.assertEqual(indexed, ["expires"])
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sessions'").fetchone()[0]
        self.assertTrue(sql.endswith("WITHOUT ROWID"), sql)  # one b-tree search per get

    def test_aclose_at_shutdown_waits_for_a_write_in_a_thread_whose_request_was_cancelled(self):
        # uvicorn ends its process from inside its event loop once the lifespan shutdown is
        # done: a write still in the thread pool then would be lost.
        store = self.store()
        store.set("s", make_record(user="ada"))
        change = session.Change(store.get_text("s"), session.encode_record(make_record(user="ada", n=1)),
                                None)
        blocker = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.addCleanup(blocker.close)
        blocker.execute("BEGIN IMMEDIATE")  # the write waits
        threading.Timer(0.3, blocker.execute, ("ROLLBACK",)).start()
        stored = cancel_a_write_then_aclose(store, "s", change, after=0.1)
        self.assertEqual(session.decode_record(stored).get("n"), 1)

    def test_a_write_waiting_on_the_loop_for_this_process_lock_survives_its_cancellation(self):
        # Another of this process's threads is writing: the write waits for the store's lock
        # on the event loop; its request cancelled meanwhile, it still lands, and aclose()
        # waits for it, as it would for a write sent to a thread.
        store = self.store()
        store.set("s", make_record(user="ada"))
        change = session.Change(store.get_text("s"), session.encode_record(make_record(user="ada", n=1)),
                                None)
        store._write_lock.acquire()
        timer = threading.Timer(0.3, store._write_lock.release)
        timer.start()
        self.addCleanup(timer.join)
        stored = cancel_a_write_then_aclose(store, "s", change, after=0.1)
        self.assertEqual(session.decode_record(stored).get("n"), 1)

    def test_a_table_with_rowids_made_by_an_older_version_works_the_same(self):
        conn = self.raw()
        conn.execute("CREATE TABLE sessions (sid TEXT PRIMARY KEY NOT NULL, "
                     "expires REAL NOT NULL, data TEXT NOT NULL)")
        store = self.store()
        store.set("s1", make_record(user="ada"))
        conn.executemany("INSERT INTO sessions VALUES (?, ?, '{}')",
                         [(f"old{i}", time.time() - 10) for i in range(5)])
        store.touch("s1", make_record(7200, user="ada"))
        self.assertEqual(store.get("s1")["user"], "ada")
        self.assertEqual(store.prune(), 5)
        self.assertEqual(store.ids(), ["s1"])
        store.destroy("s1")
        self.assertIsNone(store.get("s1"))
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sessions'").fetchone()[0]
        self.assertNotIn("WITHOUT ROWID", sql)  # left as it was

    def test_connections_use_synchronous_normal_and_mmap_and_not_sqlites_sleeping_busy_handler(self):
        store = self.store()
        conn = store._take()
        try:
            self.assertEqual(conn.execute("PRAGMA synchronous").fetchone()[0], 1)  # NORMAL
            self.assertEqual(conn.execute("PRAGMA busy_timeout").fetchone()[0], 0)  # the store waits
            self.assertEqual(conn.execute("PRAGMA mmap_size").fetchone()[0], 1 << 30)
        finally:
            store._give(conn)

    def test_a_write_waits_out_another_process_lock_with_sleeps_of_two_ms_at_most(self):
        store = self.store()
        other = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the file's lock
        releaser = threading.Timer(0.15, other.execute, ("COMMIT",))
        sleeps = []
        real_sleep = time.sleep
        with mock.patch("stores.sqlite_store.time.sleep",
                        lambda s: (sleeps.append(s), real_sleep(s))):
            releaser.start()
            store.set("s1", make_record(user="ada"))
        releaser.join()
        self.assertEqual(store.get("s1")["user"], "ada")
        self.assertGreater(len(sleeps), 3)
        self.assertLessEqual(max(sleeps), 0.002)

    def test_threads_of_one_process_never_meet_the_files_lock(self):
        store = self.store()
        busy = []
        real_busy = sqlite_store._busy
        start = threading.Barrier(8)

        def writer(t):
            start.wait()
            for i in range(100):
                store.set(f"t{t}-{i % 5}", make_record(n=i))
                store.touch(f"t{t}-{i % 5}", make_record(7200, n=i))
        with mock.patch("stores.sqlite_store._busy", lambda exc: busy.append(exc) or real_busy(exc)):
            threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        self.assertEqual(busy, [])  # queued on the store's write lock, not on SQLite's
        self.assertEqual(store.length(), 40)

    def test_a_touch_that_would_barely_move_the_expiry_is_not_written(self):
        store = self.store()
        store.set("s1", make_record(3600, user="ada"))
        conn = self.raw()
        before = conn.execute("SELECT expires FROM sessions WHERE sid = 's1'").fetchone()[0]
        store.get("s1")
        store.touch("s1", make_record(3610, user="ada"))  # 10 s later: under 1% of an hour
        self.assertEqual(conn.execute("SELECT expires FROM sessions").fetchone()[0], before)
        store.touch("s1", make_record(3700, user="ada"))  # 100 s: written
        self.assertAlmostEqual(conn.execute("SELECT expires FROM sessions").fetchone()[0],
                               time.time() + 3700, delta=2)
        short = make_record(1, user="ada")
        store.set("s2", short)
        store.touch("s2", make_record(1.2, user="ada"))  # 1% of a second is 10 ms: written
        self.assertAlmostEqual(conn.execute("SELECT expires FROM sessions WHERE sid = 's2'")
                               .fetchone()[0], time.time() + 1.2, delta=0.1)

    def test_a_touch_is_skipped_only_below_a_minute_and_below_one_percent_of_the_lifetime(self):
        store = self.store()
        conn = self.raw()

        def expires(sid):
            return conn.execute("SELECT expires FROM sessions WHERE sid = ?", (sid,)).fetchone()[0]
        day = 86400
        store.set("day", make_record(day, user="ada"))
        before = expires("day")
        store.get("day")
        store.touch("day", make_record(day + 30, user="ada"))  # 30 s: under a minute, skipped
        self.assertEqual(expires("day"), before)
        store.touch("day", make_record(day + 100, user="ada"))  # 100 s: under 1% of a day, written
        self.assertAlmostEqual(expires("day"), time.time() + day + 100, delta=2)
        store.set("hour", make_record(3600, user="ada"))
        store.get("hour")
        store.touch("hour", make_record(3650, user="ada"))  # 50 s: over 1% of an hour, written
        self.assertAlmostEqual(expires("hour"), time.time() + 3650, delta=2)

    def test_a_save_that_barely_moves_the_expiry_writes_the_data_alone_in_one_statement(self):
        store = self.store()
        store.set("s1", make_record(3600, views=1))
        base = store.get_text("s1")
        before = self.raw().execute("SELECT expires FROM sessions").fetchone()[0]
        statements = []
        real_run = store._run
        store._run = lambda cur, sql, *args: statements.append(sql) or real_run(cur, sql, *args)
        mine = make_record(3610, views=2)  # 10 s later: under 1% of an hour
        self.assertTrue(store.merge("s1", session.Change(
            base, session.encode_record(mine), session.expires_at(mine))))
        self.assertEqual(statements, [store._sql_cas_data])
        self.assertEqual(self.raw().execute("SELECT expires FROM sessions").fetchone()[0], before)
        self.assertEqual(store.get("s1"), mine)

    def test_under_asgi_reads_and_writes_run_on_the_event_loop(self):
        # A trip to the thread pool costs more than the read or write itself (see the module
        # docstring): a WAL read waits for no writer, and a write whose locks are free runs at once.
        store, stored = self.store(), make_record(3600, user="ada")
        store.set("s1", stored)  # (the first write runs the first prune batch, here)
        conn = self.raw()

        def expires(sid):
            return conn.execute("SELECT expires FROM sessions WHERE sid = ?", (sid,)).fetchone()[0]
        mine = make_record(3600, user="ada", views=1)

        async def work():
            text = await store.aget_text("s1")
            record = await store.aget("s1")
            missing = await store.aget_text("nobody"), await store.aget("nobody")
            await store.atouch("s1", make_record(3610, user="ada"))  # barely moves: skipped
            skipped = expires("s1")
            await store.atouch("s1", make_record(7200, user="ada"))
            touched = expires("s1")
            merged = await store.amerge("s1", session.Change(
                text, session.encode_record(mine), session.expires_at(mine), keep_later=False))
            created = await store.amerge("s2", session.Change(
                None, session.encode_record(mine), session.expires_at(mine)))
            taken = await store.amerge("s2", session.Change(  # a new session's ID is taken
                None, session.encode_record(stored), session.expires_at(stored)))
            await store.aset("s3", stored)
            await store.adestroy("s2")
            return text, record, missing, skipped, touched, merged, created, taken
        (text, record, missing, skipped, touched, *written), calls = run_with_counted_threads(work)
        self.assertEqual(calls, [])
        self.assertEqual(text, session.encode_record(stored))
        self.assertEqual(record, stored)
        self.assertEqual(missing, (None, None))
        self.assertAlmostEqual(skipped, time.time() + 3600, delta=5)
        self.assertAlmostEqual(touched, time.time() + 7200, delta=5)
        self.assertEqual(written, [True, True, False])
        self.assertEqual(store.get("s1"), mine)
        self.assertAlmostEqual(expires("s1"), time.time() + 3600, delta=5)
        self.assertEqual((store.get("s2"), store.get("s3")), (None, stored))

    def test_under_asgi_loop_writes_false_sends_every_write_to_a_thread(self):
        class Threaded(SQLiteStore):
            loop_writes = False
        store = self.store(Threaded)
        store.set("s1", make_record(user="ada"))
        mine = make_record(7200, user="bob")

        async def work():
            text = await store.aget_text("s1")  # reads stay on the loop
            await store.amerge("s1", session.Change(text, session.encode_record(mine),
                                                    session.expires_at(mine)))
            await store.atouch("s1", make_record(3610, user="bob"))  # skipped, on the loop
            await store.atouch("s1", make_record(9000, user="bob"))
            await store.aset("s2", mine)
            await store.adestroy("s2")
        _, calls = run_with_counted_threads(work)
        self.assertEqual(calls, ["merge", "touch", "set", "destroy"])
        self.assertEqual(store.get("s1"), mine)

    def test_under_asgi_a_write_waits_for_a_lock_without_blocking_the_loop(self):
        store = self.store()
        store.set("s1", make_record(user="ada", views=0))
        views = [0]

        def merge_views(meanwhile=lambda: None):
            """(the merge's result, the ticks another task counted meanwhile), the calls
            sent to the thread pool."""
            base = store.get_text("s1")
            meanwhile()
            views[0] += 1
            mine = make_record(user="ada", views=views[0])

            async def work():
                ticks = [0]

                async def tick():
                    while True:
                        await asyncio.sleep(0.01)
                        ticks[0] += 1
                ticker = asyncio.ensure_future(tick())
                merged = await store.amerge("s1", session.Change(
                    base, session.encode_record(mine), session.expires_at(mine)))
                ticker.cancel()
                return merged, ticks[0]
            return run_with_counted_threads(work)

        def release_later(release):
            timer = threading.Timer(0.2, release)
            timer.start()
            self.addCleanup(timer.join)
        # Another of this process's threads is writing: the loop waits for the store's lock,
        # and runs other tasks meanwhile (about 20 ticks of 10 ms).
        store._write_lock.acquire()
        release_later(store._write_lock.release)
        (merged, ticks), calls = merge_views()
        self.assertEqual((merged, calls), (True, []))
        self.assertGreater(ticks, 5)
        # Another process (here a connection of its own) holds the file's write lock.
        other = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        release_later(lambda: other.execute("COMMIT"))
        (merged, ticks), calls = merge_views()
        self.assertEqual((merged, calls), (True, []))
        self.assertGreater(ticks, 5)
        # Past busy_timeout the write goes to a thread, which waits as a plain call does.
        store.busy_timeout = 0.05
        store._write_lock.acquire()
        release_later(store._write_lock.release)
        (merged, ticks), calls = merge_views()
        self.assertEqual((merged, calls), (True, ["merge"]))
        self.assertGreater(ticks, 5)
        # Every pooled connection is in use: the loop would have to open one.
        held = []

        def take_them_all():
            while store._idle:
                held.append(store._take())
        (merged, _), calls = merge_views(take_them_all)
        self.assertEqual((merged, calls), (True, ["merge"]))
        for cur in held:
            store._give(cur)
        self.assertEqual(store.get("s1")["views"], 4)

    def test_under_asgi_another_process_lock_past_busy_timeout_fails_the_write(self):
        # As in a thread, where _run waits busy_timeout for it and raises: the loop waited as
        # long, then sent the write to a thread, which waited as long again.
        store = self.store()
        store.set("s1", make_record(user="ada", views=0))
        base, mine = store.get_text("s1"), make_record(user="ada", views=1)
        store.busy_timeout = 0.05
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")

        async def work():
            try:
                await store.amerge("s1", session.Change(
                    base, session.encode_record(mine), session.expires_at(mine)))
            except sqlite3.OperationalError as exc:
                return exc
        error, calls = run_with_counted_threads(work)
        self.assertRegex(str(error), "locked.*SQLiteStore")
        self.assertEqual(calls, [])
        other.execute("COMMIT")
        self.assertEqual(store.get("s1")["views"], 0)

    def test_a_checkpoint_never_runs_on_the_event_loop(self):
        # SQLite's automatic checkpoint would run in whichever connection commits, and sync
        # the file there: the store counts the pages written and checkpoints in a thread.
        ran_in = []

        class Often(SQLiteStore):
            checkpoint_pages = 30

            def _checkpoint(self, cur):
                ran_in.append(threading.current_thread())
                super()._checkpoint(cur)
        store = self.store(Often)
        store.set("s1", make_record(user="ada", n=0))
        cur = store._take()
        self.assertEqual(cur.execute("PRAGMA wal_autocheckpoint").fetchone()[0], 0)
        store._give(cur)

        async def work():
            for n in range(1, 41):
                base = await store.aget_text("s1")
                mine = make_record(user="ada", n=n)
                await store.amerge("s1", session.Change(base, session.encode_record(mine),
                                                        session.expires_at(mine)))
        _, calls = run_with_counted_threads(work)
        self.assertEqual(store.get("s1")["n"], 40)
        self.assertGreaterEqual(len(ran_in), 3)  # about 3 pages a write
        self.assertNotIn(threading.main_thread(), ran_in)  # the loop's
        self.assertEqual(calls, ["merge"] * len(ran_in))

    def test_the_wal_is_checkpointed_though_sqlites_automatic_checkpoint_is_off(self):
        store = self.store()
        for n in range(3000):
            store.set(f"s{n % 100}", make_record(user="ada", n=n))
        # About 3 pages of 4 KB a write: 36 MB without a checkpoint, 4 MB between them.
        self.assertLess(os.path.getsize(self.path + "-wal"), 8 << 20)

    def test_a_checkpoint_that_leaves_the_wal_long_is_tried_again_at_the_next_write(self):
        # The WAL starts over only at a write that finds it all copied and no reader in it.
        # Another process's reader (here a connection of its own) is in it as the checkpoint
        # runs: the write after it cannot start the WAL over.  SQLite's automatic checkpoint
        # then tried again at every commit while the WAL was still that long; the store must
        # too, not let it grow by checkpoint_pages more before its next try (with other
        # processes writing, their tries kept meeting a reader or another's write, and the WAL
        # grew 5 to 7 times longer: uvicorn --workers 2 and waitress on one file).
        reader = self.raw()
        reading = []

        class Often(SQLiteStore):
            checkpoint_pages = 30

            def _checkpoint(self, cur):
                if not reading:
                    reader.execute("BEGIN")
                    reader.execute("SELECT count(*) FROM sessions").fetchall()
                    reading.append(True)
                super()._checkpoint(cur)
        store = self.store(Often)
        # Another process wrote a record of 200 KB: the WAL is longer than checkpoint_pages.
        reader.execute("INSERT INTO sessions VALUES ('other', ?, ?)", (time.time() + 3600, "x" * 200_000))
        n = 0
        while not reading:
            n += 1
            store.set("s1", make_record(user="ada", n=n))
        store.set("s1", make_record(user="ada", n=n + 1))  # the reader is in the WAL: no restart
        reader.execute("COMMIT")
        for n in range(n + 2, n + 5):
            store.set("s1", make_record(user="ada", n=n))
        frames = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        self.assertLess(frames, 30)  # started over: about 3 frames a write since

    def test_processes_writing_without_a_pause_let_the_wal_start_over(self):
        # A write starts the WAL over only if it finds all of it copied and no reader in it;
        # with processes reading and writing without a pause, one nearly always is, or
        # another process wrote since the last checkpoint, and the WAL grew by every page
        # written: 38-48 MB here (3 processes, 2,000 writes of 2 KB each).
        self.store()  # the schema
        keep = self.raw()  # open throughout: the last connection to close would empty the WAL
        keep.execute("SELECT count(*) FROM sessions").fetchall()
        writers = [run_python(f"""
            import sys
            from stores.sqlite_store import SQLiteStore
            class Often(SQLiteStore):
                checkpoint_pages, restart_pages = 100, 400
            store, me = Often({self.path!r}), sys.argv[1]
            cookie = {{"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"}}
            for n in range(2000):
                store.get(f"{{me}}-{{n % 20}}")
                store.set(f"{{me}}-{{n % 20}}", {{"cookie": cookie, "n": n, "pad": "x" * 2000}})
            """, str(me)) for me in range(3)]
        for writer in writers:
            _, err = writer.communicate(timeout=120)
            self.assertEqual(writer.returncode, 0, err)
        # About 1.6 MB (400 pages of 4 KB) with the store's RESTART checkpoints: 2-7 MB measured.
        self.assertLess(os.path.getsize(self.path + "-wal"), 16 << 20)
        self.assertEqual(self.raw().execute("SELECT count(*) FROM sessions").fetchone()[0], 60)
        self.assertEqual(self.raw().execute("PRAGMA integrity_check").fetchone()[0], "ok")

    def test_a_reader_on_an_old_snapshot_keeps_writes_from_trying_to_restart_the_wal(self):
        # A RESTART checkpoint holds every process's write lock while it copies; with a
        # reader on an old snapshot it cannot finish, and tried at every write it only kept
        # other processes' writes waiting (two writers: a third of their rate, 3-10x their
        # slowest write).  Until all is copied, the checkpoint stays PASSIVE.
        ran = []

        class Often(SQLiteStore):
            checkpoint_pages, restart_pages = 30, 120
            pin_patience = 3600.0  # every write retries the PASSIVE one (see the next tests)

            def _run(self, cur, sql, params, wait=True):
                ran.append(sql)
                return super()._run(cur, sql, params, wait)
        store = self.store(Often)
        reader = self.raw()
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sessions").fetchall()
        for n in range(100):  # about 3 frames a write
            store.set("s1", make_record(user="ada", n=n))
        self.assertGreater(ran.count("PRAGMA wal_checkpoint(PASSIVE)"), 10)
        self.assertEqual(ran.count("PRAGMA wal_checkpoint(RESTART)"), 0)
        reader.execute("COMMIT")
        store.set("s1", make_record(user="ada", n=100))
        self.assertEqual(ran.count("PRAGMA wal_checkpoint(RESTART)"), 1)
        store.set("s1", make_record(user="ada", n=101))  # starts the WAL over
        self.assertLess(reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1], 10)
        self.assertEqual(ran.count("PRAGMA wal_checkpoint(RESTART)"), 1)  # not again once done
        self.assertEqual(store.get("s1")["n"], 101)

    def pinned(self):
        """A store that checkpoints every 10 writes or so, whose clock (for _held_back) moves
        ``clock.step`` seconds a write, and the answers of _held_back it gives."""
        looks = []
        clock = mock.Mock(wraps=time, step=0.001, now=1000.0)
        clock.monotonic = lambda: clock.now
        clock.sleep = lambda seconds: setattr(clock, "now", clock.now + seconds)  # (a lock's wait)

        class Often(SQLiteStore):
            checkpoint_pages, restart_pages = 30, 10_000  # about 3 frames a write

            def set(self, sid, record):
                clock.now += clock.step
                super().set(sid, record)

            def _held_back(self, copied, frames):
                looks.append(super()._held_back(copied, frames))
                return looks[-1]
        patch = mock.patch("stores.sqlite_store.time", clock)
        patch.start()
        self.addCleanup(patch.stop)
        return self.store(Often), clock, looks

    def reader(self, fully_copied=False):
        """A connection reading in a transaction it keeps open: its snapshot holds the WAL."""
        reader = self.raw()
        if fully_copied:  # it then reads the database file alone, which no page can be copied to
            reader.execute("PRAGMA wal_checkpoint(PASSIVE)")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sessions").fetchall()
        return reader

    def hold(self, store, clock, looks, fully_copied=False):
        """A reader holding the WAL, and writes 0.02 s apart until the store holds back."""
        reader = self.reader(fully_copied)
        clock.step = 0.02
        for n in range(40):  # every write tries, from the first held one until 0.1 s later
            store.set("s1", make_record(n=n))
            if looks[-1:] == [True]:
                return reader
        self.fail(f"the checkpoint was never held back: {looks}")

    def test_a_reader_holding_the_wal_uncopied_has_checkpoints_come_after_more_pages(self):
        # While a reader keeps pages uncopied, every write retried the checkpoint, as SQLite's
        # own does at every commit; under ASGI each try took the write to a thread.  Once it
        # has held the same page for pin_patience, the next try comes after checkpoint_pages.
        store, clock, looks = self.pinned()
        reader = self.hold(store, clock, looks)
        self.assertIn(looks.count(False), range(5, 8))  # a try at each write for 0.1 s
        clock.step, looks[:] = 0.001, []
        for n in range(100):
            store.set("s1", make_record(n=n))
        self.assertLessEqual(len(looks), 11)  # 100 when each write retried
        self.assertTrue(all(looks))
        reader.execute("COMMIT")
        for n in range(100, 111):  # the next try copies all, and the reader is forgotten
            store.set("s1", make_record(n=n))
        busy, frames, copied = self.raw().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.assertLess(frames - copied, 50)
        self.assertIsNone(store._pinned)
        self.assertEqual(store.get("s1")["n"], 110)

    def test_a_checkpoint_held_back_is_tried_again_after_pin_patience(self):
        # However few pages were written since: a process writing little would otherwise
        # let the WAL grow through every moment the reader left it free.
        store, clock, looks = self.pinned()
        reader = self.hold(store, clock, looks)
        looks[:] = []
        clock.now += 0.15
        with self.assertRaises(sqlite_store._WouldWait):  # on an event loop: to a thread
            store._writer(wait=False)
        store.set("s1", make_record(n=1))
        self.assertEqual(looks, [True])  # the same reader, tried again
        reader.execute("COMMIT")
        clock.now += 0.15
        store.set("s1", make_record(n=2))
        self.assertEqual(looks, [True, False])
        self.assertIsNone(store._pinned)
        self.assertEqual(store._next_try, math.inf)  # the writes that follow stay on the loop
        busy, frames, copied = self.raw().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.assertLess(frames - copied, 10)

    def test_a_try_that_meets_another_checkpoint_keeps_the_reader_in_mind(self):
        # A PASSIVE checkpoint that meets another connection's returns (1, -1, -1): nothing
        # is known of the reader then, and the tries stay as they were, every pin_patience.
        store, clock, looks = self.pinned()
        reader = self.hold(store, clock, looks)
        pinned, run = store._pinned, store._run

        def busy(cur, sql, params, wait=True):
            if sql == "PRAGMA wal_checkpoint(PASSIVE)":
                return self.raw().execute("SELECT 1, -1, -1")
            return run(cur, sql, params, wait)
        clock.now += 0.15
        with mock.patch.object(store, "_run", busy):
            store.set("s1", make_record(n=1))  # the try due meets another checkpoint
        self.assertEqual(store._pinned[:2], pinned[:2])  # since when, which page
        self.assertEqual(store._next_try, clock.now + store.pin_patience)
        looks[:] = []
        clock.now += 0.15
        store.set("s1", make_record(n=2))
        self.assertEqual(looks, [True])  # the same reader, tried again
        reader.execute("COMMIT")

    def test_readers_that_move_on_keep_every_write_retrying_the_checkpoint(self):
        # Readers that start over, each on a later snapshot, let each checkpoint copy further:
        # none holds the WAL at one page, so each write retries however long it lasts.
        store, clock, looks = self.pinned()
        clock.step = 0.02
        for n in range(100):
            reader = self.reader()
            store.set("s1", make_record(n=n))
            reader.execute("COMMIT")
        self.assertGreater(len(looks), 50)
        self.assertFalse(any(looks))

    def test_the_same_page_seen_after_a_gap_may_be_another_readers(self):
        # Two readers that begin on a WAL copied to its end both hold it at page 0: a write
        # between them can start the WAL over.  Seen again only after a gap longer than
        # pin_patience, the page is taken for a new reader's, and retried.
        store, clock, looks = self.pinned()
        clock.step = 0.02
        for n in range(12):
            store.set("s1", make_record(n=n))
        first = self.hold(store, clock, looks, fully_copied=True)
        clock.step = 0.001
        first.execute("COMMIT")
        second = self.reader(fully_copied=True)
        clock.now += 0.2  # the gap
        looks[:] = []
        for n in range(20):  # to the next checkpoint
            store.set("s1", make_record(n=n))
            if looks:
                break
        self.assertEqual(looks, [False])
        second.execute("COMMIT")

    def test_a_checkpoint_that_fails_leaves_the_write_standing(self):
        # As SQLite's automatic checkpoint: never raised.  Another connection's checkpoint
        # under way (busy) is not worth a warning; any other failure is logged.
        class Often(SQLiteStore):
            checkpoint_pages = 1
        store = self.store(Often)
        for error, logged in (("database is locked", False), ("disk I/O error", True)):

            class FailingCheckpoint(sqlite3.Cursor):
                def execute(self, sql, *args):
                    if "wal_checkpoint" in sql:
                        raise sqlite3.OperationalError(error)
                    return super().execute(sql, *args)
            with self.subTest(error):
                store._give(FailingCheckpoint(store._take().connection))
                with self.assertLogs("stores.sqlite_store", "DEBUG") as logs:
                    logging.getLogger("stores.sqlite_store").debug("(at least one record)")
                    store.set("s1", make_record(user=error))
                self.assertEqual(store.get("s1")["user"], error)
                warnings = [r for r in logs.records if r.levelno == logging.WARNING]
                self.assertEqual(len(warnings), int(logged))
                if logged:
                    self.assertIn("checkpoint failed", warnings[0].getMessage())

    def test_under_asgi_a_write_with_a_prune_batch_due_runs_in_a_thread(self):
        store = self.store()
        self.raw().executemany("INSERT INTO sessions VALUES (?, ?, '{}')",
                               [(f"old{n}", time.time() - 10) for n in range(5)])
        store._next_prune = 0.0  # due
        _, calls = run_with_counted_threads(lambda: store.aset("s1", make_record(user="ada")))
        self.assertEqual(calls, ["set"])
        self.assertEqual(self.raw().execute("SELECT sid FROM sessions").fetchall(), [("s1",)])
        _, calls = run_with_counted_threads(lambda: store.aset("s2", make_record(user="bob")))
        self.assertEqual(calls, [])  # the next batch is a minute away

    def test_under_asgi_loop_reads_false_sends_every_read_to_a_thread(self):
        class Threaded(SQLiteStore):
            loop_reads = False
        store = self.store(Threaded)
        store.set("s1", make_record(user="ada"))
        text, calls = run_with_counted_threads(lambda: store.aget_text("s1"))
        self.assertEqual((json.loads(text)["user"], calls), ("ada", ["get_text"]))

    def test_under_asgi_a_read_that_would_wait_runs_in_a_thread_or_tries_again(self):
        store = self.store()
        store.set("s1", make_record(user="ada"))
        held = []
        while store._idle:  # every pooled connection busy: the read would have to open one
            held.append(store._take())
        text, calls = run_with_counted_threads(lambda: store.aget_text("s1"))
        self.assertEqual(json.loads(text)["user"], "ada")
        self.assertEqual(calls, ["get_text"])
        for cur in held:
            store._give(cur)
        # Another process's lock on the file (which a WAL read meets only in rare moments,
        # such as recovery after a crash, and which cannot be staged here): the read is
        # refused at once, and tried again on the loop after a short sleep (as a write is).
        refused = []

        class LockedOnce(sqlite3.Cursor):
            def execute(self, *args):
                if not refused:
                    refused.append(args[0])
                    raise sqlite3.OperationalError("database is locked")
                return super().execute(*args)
        store._give(LockedOnce(store._take().connection))
        record, calls = run_with_counted_threads(lambda: store.aget("s1"))
        self.assertEqual(record["user"], "ada")
        self.assertEqual(len(refused), 1)
        self.assertEqual(calls, [])

    def test_four_processes_setting_500_ids_each_lose_none(self):
        start_at = str(time.time() + 1.0)  # all four construct and write at the same moment
        procs = [run_python(WRITER, self.path, f"p{n}", "500", start_at) for n in range(4)]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err)
            self.assertNotIn("locked", err)
            self.assertEqual(len(out.split()), 500)
        store = self.store()
        self.assertEqual(store.length(), 2000)
        self.assertEqual(set(store.ids()), {f"p{n}-{i}" for n in range(4) for i in range(500)})

    def test_four_processes_merging_their_own_keys_into_one_record_lose_none(self):
        store = self.store()
        store.set("one", make_record(user="ada"))
        start_at = str(time.time() + 1.0)  # all four merge from the same moment
        procs = [run_python(MERGER, self.path, f"p{n}", "100", start_at) for n in range(4)]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err)
            self.assertEqual(out.strip(), "0", "a merge returned False")
        record = store.get("one")
        missing = [f"p{n}-{i}" for n in range(4) for i in range(100) if record.get(f"p{n}-{i}") != i]
        self.assertEqual(missing, [])
        self.assertEqual(record["user"], "ada")

    def test_writer_killed_with_sigkill_keeps_every_returned_set_and_an_intact_file(self):
        confirmed = set()
        for round_, kill_after in enumerate((150, 400)):
            proc = run_python(WRITER, self.path, f"r{round_}", "-1", "0")
            for line in proc.stdout:
                confirmed.add(f"r{round_}-{line.strip()}")
                if len(confirmed) >= kill_after:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            rest, err = proc.communicate(timeout=30)
            confirmed.update(f"r{round_}-{i}" for i in rest.split())
            self.assertEqual(proc.returncode, -signal.SIGKILL, err)
        with sqlite3.connect(self.path) as conn:
            self.assertEqual(conn.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        store = self.store()
        missing = sorted(sid for sid in confirmed if store.get(sid) is None)
        self.assertEqual(missing, [])

    def test_record_that_is_not_valid_json_is_missing_and_logged(self):
        store = self.store()
        store.set("good", make_record(user="ada"))
        later = time.time() + 3600
        bad = {"truncated": '{"cookie":{"expires":nu', "not-json": "<html>",
               "no-cookie": '{"user":"ada"}', "array": "[1,2]"}
        conn = self.raw()
        for sid, data in bad.items():
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?)", (sid, later, data))
        conn.execute("INSERT INTO sessions VALUES (?, ?, CAST(? AS TEXT))",
                     ("bad-utf8", later, b'{"cookie":{},"x":"\xff\xfe"}'))
        for sid in [*bad, "bad-utf8"]:
            with self.assertLogs("stores.sqlite_store", "WARNING") as logs:
                self.assertIsNone(store.get(sid))
            self.assertIn(f"session {sid[:6]}...", logs.output[0])  # never the whole ID
            self.assertNotIn(sid, logs.output[0].replace(sid[:6] + "...", ""))
        # Reading the bad rows (invalid UTF-8 last) left no statement open on the pooled
        # connection: a checkpoint that must wait for every reader is not kept waiting.
        self.assertEqual(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0], 0)
        with self.assertLogs("stores.sqlite_store", "WARNING"):
            self.assertEqual(list(store.all()), ["good"])

    def test_a_planted_expires_that_is_not_a_number_costs_no_exception(self):
        # Another app sharing the file writes text or a blob where the expiry goes (SQLite keeps
        # it as such in a REAL column, and it compares greater than any number: always live).
        store = self.store()
        conn = self.raw()
        record = make_record(user="ada")
        for sid, expires in (("text", "later"), ("blob", b"\x00")):
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?)",
                         (sid, expires, session.encode_record(record)))
            self.assertEqual(store.get(sid), record)
            store.touch(sid, make_record(user="ada"))
            self.assertEqual(store.get(sid), record)

    def test_get_text_and_merge_of_a_row_that_is_not_utf8_text(self):
        store = self.store()
        record = make_record(user="ada")
        store.set("bytes", record)
        store.set("blob", record)
        base = store.get_text("bytes")
        conn = self.raw()
        conn.execute("UPDATE sessions SET data = CAST(? AS TEXT) WHERE sid = 'bytes'",
                     (b'{"cookie":{},"x":"\xff"}',))
        conn.execute("UPDATE sessions SET data = ? WHERE sid = 'blob'", (base.encode(),))  # a BLOB
        with self.assertLogs("stores.sqlite_store", "WARNING") as logs:
            self.assertIsNone(store.get_text("bytes"))
        self.assertIn("session bytes...", logs.output[0])
        self.assertEqual(store.get_text("blob"), base)
        # A merge compares the stored bytes: a BLOB holding the loaded text is the same record,
        # and bytes that are not a session are replaced by this request's record.
        mine = make_record(user="ada", views=1)
        change = session.Change(base, session.encode_record(mine), session.expires_at(mine))
        self.assertTrue(store.merge("blob", change))
        self.assertTrue(store.merge("bytes", change))
        self.assertEqual(store.get("blob"), mine)
        self.assertEqual(store.get("bytes"), mine)

    def test_constructor_rejects_a_directory_that_does_not_exist(self):
        with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
            SQLiteStore(os.path.join(self.dir, "nope", "sessions.db"))

    def test_a_directory_it_cannot_create_the_file_in_says_what_to_check(self):
        make_read_only(self, self.dir)
        with self.assertRaisesRegex(sqlite3.OperationalError, "unable to open.*new.db") as ctx:
            SQLiteStore(os.path.join(self.dir, "new.db"))
        self.assertIn("writable by this process", str(ctx.exception))

    def test_constructor_rejects_a_table_name_that_is_not_an_identifier(self):
        for table in ("", "1st", "my-table", 'x"; DROP TABLE y; --', "a b", None):
            with self.subTest(table=table), self.assertRaisesRegex(ValueError, "identifier"):
                SQLiteStore(self.path, table=table)

    def test_constructor_rejects_a_ttl_that_is_not_a_number_of_seconds(self):
        for ttl in (-1, -0.5, float("nan"), "60", True, None, 10 ** 400):
            with self.subTest(ttl=ttl), self.assertRaisesRegex(ValueError, "ttl"):
                SQLiteStore(self.path, ttl=ttl)

    def test_constructor_rejects_a_path_that_is_a_directory_or_not_a_database(self):
        with self.assertRaises(IsADirectoryError):
            SQLiteStore(self.dir)
        with open(self.path, "wb") as f:
            f.write(b"this is not a database" * 500)
        with self.assertRaisesRegex(sqlite3.DatabaseError, "not a database.*sessions.db"):
            SQLiteStore(self.path)

    def test_locked_database_past_the_timeout_raises_and_keeps_records(self):
        class Impatient(SQLiteStore):
            busy_timeout = 0.2

        store = self.store(Impatient)
        store.set("s1", make_record(user="ada"))
        other = self.raw()
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        with self.assertRaisesRegex(sqlite3.OperationalError, "database is locked.*sessions.db"):
            store.set("s2", make_record(user="bob"))
        self.assertEqual(store.get("s1")["user"], "ada")  # WAL: reads go on meanwhile
        other.execute("ROLLBACK")
        store.set("s2", make_record(user="bob"))
        self.assertEqual(sorted(store.ids()), ["s1", "s2"])

    def test_full_disk_raises_and_keeps_records(self):
        store = self.store()
        store.set("s1", make_record(user="ada"))
        conn = store._take()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk is "full" 2 pages on
        store._give(conn)
        with self.assertRaisesRegex(sqlite3.OperationalError, "full.*sessions.db"):
            store.set("big", make_record(blob="x" * 100_000))
        store.close()
        self.assertEqual(SQLiteStore(self.path).get("s1")["user"], "ada")

    def test_read_only_database_raises_a_clear_error_and_keeps_records(self):
        store = self.store()
        store.set("s1", make_record(user="ada"))
        store.close()
        make_read_only(self, self.path)
        with self.assertRaisesRegex(sqlite3.OperationalError, "readonly database.*sessions.db") as ctx:
            SQLiteStore(self.path).set("s2", make_record(user="bob"))
        self.assertIn("writable by this process", str(ctx.exception))  # what to do about it
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as conn:
            self.assertEqual(conn.execute("SELECT sid FROM sessions").fetchall(), [("s1",)])

    def test_expired_rows_are_pruned_automatically_in_small_batches(self):
        class SmallBatches(SQLiteStore):
            prune_batch = 10

        store = self.store(SmallBatches)
        conn = self.raw()
        past = time.time() - 10
        conn.executemany("INSERT INTO sessions VALUES (?, ?, '{}')", [(f"old{i}", past) for i in range(35)])
        expired = lambda: conn.execute("SELECT count(*) FROM sessions WHERE expires <= ?",
                                       (time.time(),)).fetchone()[0]
        for left in (25, 15, 5, 0):
            store.set("live", make_record(user="ada"))
            self.assertEqual(expired(), left)
        conn.executemany("INSERT INTO sessions VALUES (?, ?, '{}')", [(f"new{i}", past) for i in range(3)])
        store.set("live", make_record(user="ada"))  # the last batch was not full: wait prune_interval
        self.assertEqual(expired(), 3)
        self.assertEqual(store.prune(), 3)
        self.assertEqual(store.length(), 1)

    def test_prune_deletes_everything_expired_batch_by_batch(self):
        class SmallBatches(SQLiteStore):
            prune_batch = 10

        store = self.store(SmallBatches)
        conn = self.raw()
        conn.executemany("INSERT INTO sessions VALUES (?, ?, '{}')",
                         [(f"old{i}", time.time() - 10) for i in range(95)])
        store.set("live", make_record(user="ada"))
        self.assertEqual(store.prune(), 85)
        self.assertEqual(store.ids(), ["live"])

    def plant(self, count: int, expires: float) -> None:
        """``count`` rows of about 600 bytes under random IDs, each with its own expiry near
        ``expires``, as sessions lie in the table (deleting them in the order of their
        expiries touches a page of the table per row); written by another connection, after
        which the WAL starts empty."""
        conn = self.raw()
        data = json.dumps(make_record(note="x" * 500))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO sessions VALUES (?, ?, ?)",
                         [(secrets.token_urlsafe(24), expires - i / 1000, data)
                          for i in range(count)])
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def test_prune_of_many_expired_rows_keeps_the_wal_short(self):
        # SQLite's automatic checkpoint is off (see _connect): the rows prune() deletes must
        # count toward the store's own, as a write's pages do, or the WAL holds all of them.
        store = self.store()
        self.plant(10_000, time.time() - 10)
        self.assertEqual(store.prune(), 10_000)
        # About 2 pages of 4 KB a row deleted: 60 MB without a checkpoint, under 5 MB with them.
        self.assertLess(os.path.getsize(self.path + "-wal"), 8 << 20)

    def test_a_wal_that_grew_long_is_cut_back_as_it_starts_over(self):
        # All of one transaction's pages go to the WAL (a clear() of a big table), as does all
        # that is written while a reader on an old snapshot holds it: a clear() counts its rows
        # toward the next checkpoint, and the file is cut back to journal_size_limit once the
        # WAL starts over.
        class Limited(SQLiteStore):
            journal_size_limit = 1 << 20

        store = self.store(Limited)
        self.plant(5_000, time.time() + 3600)
        store.clear()
        self.assertGreater(os.path.getsize(self.path + "-wal"), 2 << 20)  # the clear's pages
        for n in range(3):
            store.set("s1", make_record(user="ada", n=n))
        self.assertLessEqual(os.path.getsize(self.path + "-wal"), 1 << 20)
        self.assertEqual(store.get("s1")["n"], 2)
        self.assertEqual(store.ids(), ["s1"])

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_forked_child_uses_its_own_connections(self):
        store = self.store()
        store.set("parent", make_record(user="ada"))

        def child():  # SQLite forbids using the parent's connections
            code = 2 if store._idle or store._all else 0
            store.set("child", make_record(user="bob"))
            return code or (0 if store.get("parent")["user"] == "ada" else 3)
        self.assertEqual(support.exit_code_of_a_child(child), 0)
        self.assertEqual(store.get("child")["user"], "bob")
        store.set("after", make_record(user="eve"))
        self.assertEqual(self.raw().execute("PRAGMA integrity_check").fetchall(), [("ok",)])

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_a_relative_path_names_the_same_file_after_a_chdir(self):
        # Connections open lazily, in a forked worker too: one that changed directory first
        # (a daemon; gunicorn --preload --chdir) must still reach the store's file.
        here = os.getcwd()
        os.chdir(self.dir)
        self.addCleanup(os.chdir, here)
        store = self.store_class(self.file_name)
        self.addCleanup(store.close)
        store.set("a", make_record(user="ada"))
        os.chdir(here)
        self.assertEqual(support.exit_code_of_a_child(
            lambda: 0 if store.get("a")["user"] == "ada" else 2), 0)
        self.assertEqual(store.path, self.path)

    def test_connections_past_max_idle_are_closed_when_given_back(self):
        # A burst of threads (a thread-per-request server) opens as many connections; only
        # max_idle stay open, so file descriptors do not run out.
        store = self.store()
        taken = [store._take() for _ in range(store.max_idle + 5)]
        for cur in taken:
            store._give(cur)
        self.assertEqual(len(store._idle), store.max_idle)
        self.assertEqual(len(store._all), store.max_idle)
        with self.assertRaises(sqlite3.ProgrammingError):  # closed
            taken[-1].execute("SELECT 1")
        store.set("a", make_record(user="ada"))
        self.assertEqual(store.get("a")["user"], "ada")

    def test_the_prune_after_a_write_does_not_wait_for_another_process(self):
        # Another connection (another process) takes the write lock between a save's own
        # statement and its prune batch: the save returns at once, its prune put off.
        store = self.store()
        store.busy_timeout = 30.0
        other = self.raw()
        real_prune = store._prune_batch

        def prune_while_locked(cur, now, wait=True):
            other.execute("BEGIN IMMEDIATE")
            try:
                return real_prune(cur, now, wait)
            finally:
                other.execute("ROLLBACK")
        store._prune_batch = prune_while_locked
        started = time.monotonic()
        store.set("a", make_record(user="ada"))
        self.assertLess(time.monotonic() - started, 10, "waited for the lock (busy_timeout is 30 s)")
        self.assertEqual(store.get("a")["user"], "ada")

    @support.requires(support.has_module("gevent"), "pip install gevent")
    def test_a_store_built_before_gevent_patches_does_not_stop_its_green_threads(self):
        # gunicorn -k gevent --preload: the app (and its store) is built in the master, the
        # worker forks and then patches.  Two green threads save while another process holds
        # the file's write lock: the one waiting for it must not stop the other.
        store = self.store()
        code = """
            import os, sys, sqlite3, subprocess, time
            from stores.sqlite_store import SQLiteStore
            store = SQLiteStore(sys.argv[1])
            store.set("warm", {"cookie": {"originalMaxAge": None, "expires": None}})
            child = os.fork()
            if child == 0:
                from gevent import monkey
                monkey.patch_all()
                import gevent
                holder = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
                holder.execute("BEGIN IMMEDIATE")  # as another worker process's write
                gevent.spawn_later(0.3, holder.execute, "COMMIT")
                record = {"cookie": {"originalMaxAge": None, "expires": None}, "n": 1}
                jobs = [gevent.spawn(store.set, f"s{i}", dict(record)) for i in range(2)]
                gevent.joinall(jobs, timeout=5)
                os._exit(0 if all(job.successful() for job in jobs) else 3)
            pid, status = 0, None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not pid:
                pid, status = os.waitpid(child, os.WNOHANG)
                time.sleep(0.05)
            if not pid:
                os.kill(child, 9)
                os.waitpid(child, 0)
            print("stopped" if not pid else f"exit {os.waitstatus_to_exitcode(status)}")
        """
        proc = run_python(code, self.path)
        out, err = proc.communicate(timeout=60)
        self.assertEqual(out.strip(), "exit 0", err)
        self.assertEqual({sid: store.get(sid)["n"] for sid in ("s0", "s1")}, {"s0": 1, "s1": 1})

    def test_a_fork_while_a_thread_makes_the_write_lock_leaves_the_child_able_to_write(self):
        # The lock is made at its first use (see the test above), under a lock of its own: a
        # parent's thread may hold that one at the fork, and no thread of the child would
        # ever release it.
        code = """
            import os, signal, sys
            from stores.sqlite_store import SQLiteStore
            store = SQLiteStore(sys.argv[1])
            store._write_lock._making.acquire()  # a parent's thread, making the lock at the fork
            child = os.fork()
            if child == 0:
                signal.alarm(5)
                store.set("s", {"cookie": {"originalMaxAge": None, "expires": None}, "n": 1})
                os._exit(0)
            print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
        """
        out, err = run_python(code, self.path).communicate(timeout=60)
        self.assertEqual(out.strip(), "0", err)
        self.assertEqual(self.store().get("s")["n"], 1)

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_a_child_forked_while_a_parent_thread_held_sqlites_write_lock_can_write(self):
        # SQLite keeps the locks its connections hold in the process's memory: a child forked
        # in the middle of a parent's write took the file's write lock as held for good, and
        # each of its writes failed, "database is locked", after busy_timeout.
        store = self.store()
        store.busy_timeout = 0.5
        held = threading.Event()

        def writer():  # a statement under way, as a set() of a parent's thread
            cur = store._take()
            with store._write_lock:
                cur.execute("BEGIN IMMEDIATE")
                held.set()
                time.sleep(0.3)
                cur.execute("ROLLBACK")
            store._give(cur)
        thread = threading.Thread(target=writer)
        thread.start()
        self.addCleanup(thread.join)
        self.assertTrue(held.wait(10))

        def child():
            store.set("child", make_record(user="bob"))
            return 0
        self.assertEqual(support.exit_code_of_a_child(child), 0)
        self.assertEqual(store.get("child")["user"], "bob")

    def test_a_prune_that_fails_after_a_write_does_not_fail_the_write(self):
        # The write is committed before the prune batch runs: raising would answer 500 for a
        # saved change, which the client would then repeat.
        class FailingPrune(SQLiteStore):
            def _prune_batch(self, cur, now, wait=True):
                raise sqlite3.OperationalError("disk I/O error")
        self.check_a_write_stands_when_its_cleanup_fails(self.store(FailingPrune), "stores.sqlite_store")

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_forked_child_writes_though_a_parent_thread_was_writing_at_the_fork(self):
        store = self.store()
        store.busy_timeout = 0.2  # how long the fork waits for the write to end, here in vain
        held, done = threading.Event(), threading.Event()

        def writer():  # inside a write, as while waiting out another process's lock on the file
            with store._write_lock:
                held.set()
                done.wait(10)
        thread = threading.Thread(target=writer)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(done.set)
        self.assertTrue(held.wait(10))

        def child():
            store.set("child", make_record(user="bob"))
            return 0
        code = support.exit_code_of_a_child(child)
        done.set()
        self.assertIsNotNone(code, "the child's write still waits for the lock its parent's thread held")
        self.assertEqual(code, 0)
        self.assertEqual(store.get("child")["user"], "bob")

    def test_tables_in_one_file_are_independent(self):
        a, b = self.store(table="a"), self.store(table="b")
        a.set("s1", make_record(user="ada"))
        self.assertIsNone(b.get("s1"))
        b.clear()
        self.assertEqual(a.length(), 1)

    def test_each_memory_store_is_its_own_database(self):
        a, b = SQLiteStore(":memory:"), SQLiteStore(":memory:")
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        a.set("s1", make_record(user="ada"))
        self.assertIsNone(b.get("s1"))

    def test_a_closed_store_refuses_to_work(self):
        store = self.store()
        store.close()
        with self.assertRaisesRegex(sqlite3.ProgrammingError, "closed"):
            store.get("s1")


# ---------------------------------------------------------------- ShelveStore only

class TestShelveStoreFile(FileStoreCase, unittest.TestCase):
    store_class, file_name = ShelveStore, "sessions"

    def test_a_sweep_that_fails_after_a_write_does_not_fail_the_write(self):
        # As SQLiteStore's prune: the record is written first, and stands.
        class FailingSweep(ShelveStore):
            def _sweep_some(self, now):
                if self._sweep or now >= self._next_sweep:  # a sweep is due, as in ShelveStore's
                    raise OSError("disk I/O error")
        store = self.store(FailingSweep)
        store._next_sweep = 0  # due at the first write
        self.check_a_write_stands_when_its_cleanup_fails(store, "stores.shelve_store")

    def test_a_full_disk_raises_an_error_naming_the_file_and_keeps_records(self):
        # As SQLiteStore's: the OSError a full disk gives names no file.  A real one, in a
        # child whose files may not grow past their size (RLIMIT_FSIZE: EFBIG).
        store = self.store()
        store.set("s1", make_record(user="ada"))
        store.close()
        code = """
            import resource, signal, sys
            from stores.shelve_store import ShelveStore
            from tests.store_contract import make_record
            store = ShelveStore(sys.argv[1])
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead
            size = int(sys.argv[2])
            resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1024, size + 1024))
            try:
                store.set("big", make_record(blob="x" * 100_000))
            except OSError as exc:
                print(type(exc).__name__, exc.errno, exc)
            print(store.get("s1")["user"], store.get("big"))
        """
        size = os.path.getsize(self.path + ".dat")
        out, err = run_python(code, self.path, str(size)).communicate(timeout=60)
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out + err)
        self.assertRegex(lines[0], rf"^OSError {errno.EFBIG} .*too large.*ShelveStore {re.escape(repr(self.path))}")
        self.assertEqual(lines[1], "ada None")
        self.assertEqual(self.store().get("s1")["user"], "ada")

    def test_methods_take_their_arguments_by_keyword_too(self):
        store = self.store()
        store.set(sid="s1", record=make_record(user="ada"))
        self.assertEqual(store.get(sid="s1")["user"], "ada")
        store.destroy(sid="s1")
        self.assertIsNone(store.get_text(sid="s1"))

    def test_a_failing_read_raises_an_error_naming_the_file(self):
        store = self.store()
        store.set("s1", make_record(user="ada"))
        os.close(store._reader)  # the descriptor store reads values through is gone: EBADF
        self.addCleanup(setattr, store, "_reader", None)
        for name, read in (("get", lambda: store.get("s1")), ("get_text", lambda: store.get_text("s1")),
                           ("all", store.all)):
            with self.subTest(name), self.assertRaises(OSError) as caught:
                read()
            self.assertEqual(caught.exception.errno, errno.EBADF)
            self.assertIn(f"ShelveStore {self.path!r}", str(caught.exception))

    def test_a_second_process_is_refused_with_a_clear_error(self):
        store = self.store()
        store.set("s1", make_record(user="ada"))
        code = """
            import sys
            from stores.shelve_store import ShelveStore
            try:
                print(ShelveStore(sys.argv[1]).get("s1")["user"])
            except RuntimeError as exc:
                print("refused:", exc)
        """
        out, err = run_python(code, self.path).communicate(timeout=60)
        self.assertRegex(out, rf"refused: .*already open .*process {os.getpid()}.*SQLiteStore", err)
        store.close()
        out, err = run_python(code, self.path).communicate(timeout=60)
        self.assertEqual(out.strip(), "ada", err)

    def test_a_second_store_in_the_same_process_is_refused(self):
        self.store()
        with self.assertRaisesRegex(RuntimeError, "already open"):
            ShelveStore(self.path)

    def test_values_are_an_expiry_and_the_record_json(self):
        store = self.store()
        record = make_record(user="ada")
        store.set("s1", record)
        store.close()
        with dbm.open(self.path, "r") as db:
            value = json.loads(db[b"s1"])
        self.assertEqual(list(value), ["expires", "session"])
        self.assertEqual(value["session"], record)
        self.assertAlmostEqual(value["expires"] / 1000, session.expires_at(record), delta=0.001)

    def test_value_not_written_by_the_store_is_missing_and_logged(self):
        self.store().close()
        with dbm.open(self.path, "w") as db:
            db[b"pickled"] = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94."
            db[b"truncated"] = b'{"expires":99999999999999,"session":{"cookie":{'
            db[b"no-cookie"] = b'{"expires":99999999999999,"session":{"user":"ada"}}'
        store = self.store()
        for sid in ("pickled", "truncated", "no-cookie"):
            with self.assertLogs("stores.shelve_store", "WARNING") as logs:
                self.assertIsNone(store.get(sid))
            self.assertIn(f"session {sid[:6]}...", logs.output[0])  # never the whole ID
            self.assertNotIn(sid, logs.output[0].replace(sid[:6] + "...", ""))

    def test_an_expiry_too_large_for_a_float_is_a_value_not_written_by_the_store(self):
        self.store().close()
        with dbm.open(self.path, "w") as db:
            db[b"huge"] = b'{"expires":' + b"9" * 400 + b',"session":{"cookie":{}}}'
        store = self.store()
        with self.assertLogs("stores.shelve_store", "WARNING"):
            self.assertIsNone(store.get("huge"))
        with self.assertLogs("stores.shelve_store", "WARNING"):
            self.assertEqual(store.all(), {})
        with self.assertLogs("stores.shelve_store", "WARNING"):
            store.prune()

    def test_get_text_and_merge_of_a_value_that_is_not_utf8(self):
        store = self.store()
        record = make_record(user="ada")
        store.set("s1", record)
        base = store.get_text("s1")
        with store._lock:  # the file is locked to its store: in through its own handle
            store._open()[b"s1"] = shelve_store._pack(time.time() + 60, b'{"cookie":{},"x":"\xff"}')
        with self.assertLogs("stores.shelve_store", "WARNING") as logs:
            self.assertIsNone(store.get_text("s1"))
        self.assertIn("session s1...", logs.output[0])
        mine = make_record(user="ada", views=1)
        change = session.Change(base, session.encode_record(mine), session.expires_at(mine))
        self.assertTrue(store.merge("s1", change))  # not a session: this request's record replaces it
        self.assertEqual(store.get("s1"), mine)

    def test_expired_records_are_swept_a_few_keys_per_write(self):
        class EagerSweep(ShelveStore):
            sweep_interval = 0
            sweep_step = 10

        self.store().close()
        with dbm.open(self.path, "w") as db:
            for i in range(25):
                db[f"old{i}".encode()] = b'{"expires":1000,"session":{"cookie":{}}}'
        store = self.store(EagerSweep)
        keys = []
        for _ in range(3):
            store.set("live", make_record(user="ada"))
            keys.append(len(store._db.keys()))
        self.assertEqual(keys, [17, 7, 1])  # 26 keys, 10 checked per set; "live" is checked first
        self.assertEqual(store.prune(), 0)
        store.close()
        with dbm.open(self.path, "r") as db:
            self.assertEqual(db.keys(), [b"live"])  # the deletions were saved

    def test_prune_deletes_expired_records_and_saves_the_file(self):
        store = self.store()
        for i in range(300):
            store.set(f"s{i}", make_record(3600 if i % 3 == 0 else None, i=i))
        store.close()
        with dbm.open(self.path, "w") as db:  # two thirds expire: rewrite their expiry to 1970
            for key in db.keys():
                value = json.loads(db[key])
                if value["session"]["cookie"]["expires"] is None:
                    db[key] = b'{"expires":1000,"session":' + json.dumps(value["session"]).encode() + b"}"
        store = self.store()
        self.assertEqual(store.prune(), 200)
        self.assertEqual(store.length(), 100)
        if store._backend.__name__ == "dbm.dumb":  # gdbm locks the file: no second reader
            with dbm.open(self.path, "r") as db:  # before close(): prune() saved its deletions
                self.assertEqual(len(db.keys()), 100)

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_forked_child_cannot_use_or_clobber_the_parents_file(self):
        code = """
            import os, sys, time
            from stores.shelve_store import ShelveStore
            from tests.store_contract import make_record
            store = ShelveStore(sys.argv[1])
            store.set("a", make_record(user="ada"))  # the child inherits unsaved changes
            pid = os.fork()
            if pid == 0:
                try:
                    store.get("a")
                except RuntimeError as exc:
                    print("child refused:", exc, flush=True)
                time.sleep(0.3)
                sys.exit(0)  # a normal exit: finalizers run in the child
            store.destroy("a")
            store.set("b", make_record(user="bob"))
            os.waitpid(pid, 0)
            os._exit(0)  # the parent dies without close(): only what dbm already wrote counts
        """
        out, err = run_python(code, self.path).communicate(timeout=60)
        self.assertRegex(out, "child refused: .*forked from", err)
        store = self.store()
        self.assertIsNone(store.get("a"))
        self.assertEqual(store.get("b")["user"], "bob")

    def test_constructor_rejects_a_directory_that_does_not_exist(self):
        with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
            ShelveStore(os.path.join(self.dir, "nope", "sessions"))

    def test_constructor_rejects_a_ttl_that_is_not_a_number_of_seconds(self):
        for ttl in (-1, float("nan"), "60", True, None, 10 ** 400):
            with self.subTest(ttl=ttl), self.assertRaisesRegex(ValueError, "ttl"):
                ShelveStore(self.path, ttl=ttl)

    def test_constructor_rejects_a_path_that_is_a_directory(self):
        with self.assertRaises(IsADirectoryError):
            ShelveStore(self.dir)

    def test_a_closed_store_refuses_to_work(self):
        store = self.store()
        store.close()
        with self.assertRaisesRegex(ValueError, "closed"):
            store.get("s1")

    def test_read_only_file_raises_a_clear_error_and_keeps_records(self):
        store = self.store()
        store.set("s1", make_record(user="ada"))
        store.close()
        for name in os.listdir(self.dir):
            if not name.endswith(".lock"):
                make_read_only(self, os.path.join(self.dir, name))

        def write_once() -> None:
            store = ShelveStore(self.path)
            try:
                store.set("s2", make_record(user="bob"))
            finally:
                store.close()

        with self.assertRaises((OSError, *dbm.error)) as caught:
            write_once()
        self.assertIn(os.path.basename(self.path), str(caught.exception))
        with dbm.open(self.path, "r") as db:
            self.assertEqual(db.keys(), [b"s1"])

    def test_a_file_that_is_not_dbm_is_refused(self):
        with open(self.path, "wb") as f:
            f.write(b"not a dbm file" * 100)
        with self.assertRaisesRegex(ValueError, "not a dbm file"):
            ShelveStore(self.path)

    @unittest.skipUnless(support.has_module("dbm.sqlite3"), "dbm.sqlite3 is new in Python 3.13")
    def test_a_dbm_sqlite3_file_is_refused_because_it_is_bound_to_one_thread(self):
        import dbm.sqlite3
        with dbm.sqlite3.open(self.path, "c") as db:
            db[b"x"] = b"1"
        with self.assertRaisesRegex(ValueError, "dbm.sqlite3 .*SQLiteStore"):
            ShelveStore(self.path)


class TestShelveStoreCompaction(FileStoreCase, unittest.TestCase):
    """dbm.dumb never reuses the space of old values: the store copies a file that is mostly
    that space into a new one, and swaps it in so that a crash leaves one pair or the other."""

    store_class, file_name = ShelveStore, "sessions"
    live_ids = [f"live{i}" for i in range(50)]

    def churned_store(self):
        """A dbm.dumb store (even where dbm.gnu exists) after 2,600 sessions have expired
        among 50 live ones; each record holds its own ID, so a record read as another's shows."""
        with dbm.dumb.open(self.path, "c"):
            pass  # an existing file keeps its format
        store = self.store(ttl=0.3)
        for i in range(2600):
            if i % 52 == 0:
                sid = self.live_ids[i // 52]
                store.set(sid, make_record(3600, sid=sid, pad="x" * 100))
            store.set(f"gone{i}", make_record(None, sid=f"gone{i}"))  # the ttl: 0.3 s
        time.sleep(0.35)
        return store

    def dat_size(self) -> int:
        return os.path.getsize(self.path + ".dat")

    def files(self) -> list:
        return sorted(os.listdir(self.dir))

    def assert_live_records_read_as_themselves(self, store, *more: str) -> None:
        sids = self.live_ids + list(more)
        self.assertEqual({sid: (store.get(sid) or {}).get("sid") for sid in sids},
                         {sid: sid for sid in sids})
        self.assertEqual(sorted(store.ids()), sorted(sids))

    def test_prune_gives_back_the_space_of_expired_sessions(self):
        store = self.churned_store()
        mode = os.stat(self.path + ".dat").st_mode
        with store._lock:
            stored = {sid: store._read(store._db, sid.encode()) for sid in self.live_ids}
        before = self.dat_size()
        self.assertEqual(store.prune(), 2600)
        self.assertGreater(before, 1.3e6)
        self.assertLessEqual(self.dat_size(), 50 * 512)  # each record fits a block
        self.assertEqual(os.stat(self.path + ".dat").st_mode, mode)
        with store._lock:
            self.assertEqual({sid: store._read(store._db, sid.encode()) for sid in self.live_ids},
                             stored)  # byte for byte
        self.assert_live_records_read_as_themselves(store)
        store.close()
        self.assertEqual(self.files(), ["sessions.dat", "sessions.dir", "sessions.lock"])
        store = self.store()
        self.assert_live_records_read_as_themselves(store)
        store.set("new", make_record(sid="new"))
        self.assert_live_records_read_as_themselves(store, "new")

    def test_a_sweep_that_ends_compacts_the_file(self):
        store = self.churned_store()
        store.sweep_step, store._next_sweep = 1000, 0  # a sweep starts at the next set
        sizes = []
        for _ in range(3):  # 2,650 keys: the third set ends the sweep
            store.set("live0", make_record(3600, sid="live0", pad="x" * 100))
            sizes.append(self.dat_size())
        self.assertGreater(sizes[1], 1.3e6)
        self.assertLessEqual(sizes[2], 50 * 512)
        self.assert_live_records_read_as_themselves(store)

    def test_threads_using_the_store_during_a_compaction_see_the_new_file(self):
        store = self.churned_store()
        stop, errors = threading.Event(), []

        def worker(sid: str) -> None:
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    store.set(sid, make_record(sid=sid, n=n))
                    self.assertEqual(store.get(sid)["n"], n)
            except Exception as exc:  # reported by the main thread
                errors.append(exc)
        threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            store.prune()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        self.assertEqual(errors, [])
        self.assertLess(self.dat_size(), 100 * 512)
        self.assert_live_records_read_as_themselves(store, "t0", "t1", "t2", "t3")

    @unittest.skipUnless(hasattr(signal, "SIGKILL"), "needs SIGKILL")
    def test_a_compaction_killed_at_any_step_leaves_the_old_or_the_new_file_whole(self):
        # The child is killed right after its Nth call that changes a file name or opens a
        # file, for every N until one run finishes; every record must then read as its own.
        code = """
            import os, signal, sys
            from stores import shelve_store
            path, at = sys.argv[1], int(sys.argv[2])
            calls = 0

            def dying(real):
                def call(*args, **kwargs):
                    global calls
                    try:
                        return real(*args, **kwargs)
                    finally:
                        calls += 1
                        if calls == at:
                            os.kill(os.getpid(), signal.SIGKILL)
                return call

            compact = shelve_store.ShelveStore._compact

            def compact_and_die(self):
                for name in ("open", "replace", "rename", "unlink", "remove"):
                    setattr(os, name, dying(getattr(os, name)))
                compact(self)
            shelve_store.ShelveStore._compact = compact_and_die
            shelve_store.ShelveStore(path).prune()
            print("finished after", calls)
        """
        self.churned_store().close()
        churned = os.path.join(self.dir, "churned")
        os.mkdir(churned)
        for name in os.listdir(self.dir):
            if name.startswith("sessions."):
                os.replace(os.path.join(self.dir, name), os.path.join(churned, name))
        old_size = os.path.getsize(os.path.join(churned, "sessions.dat"))
        sizes = set()
        for at in range(1, 30):
            for name in os.listdir(churned):
                shutil.copy(os.path.join(churned, name), self.dir)
            proc = run_python(code, self.path, str(at))
            out, err = proc.communicate(timeout=60)
            finished = out.startswith("finished")
            self.assertTrue(finished or proc.returncode == -signal.SIGKILL, err)
            with self.subTest(killed_after=at):
                store = ShelveStore(self.path)
                try:
                    self.assert_live_records_read_as_themselves(store)
                finally:
                    store.close()
                sizes.add(self.dat_size())
                self.assertEqual(set(self.files()) - {"sessions.bak"},  # nothing left of a copy
                                 {"churned", "sessions.dat", "sessions.dir", "sessions.lock"})
            if finished:
                break
        self.assertGreaterEqual(at, 10, out)  # as many steps as the swap has
        self.assertEqual(len(sizes), 2, sizes)  # some runs ended with the old file, some the new
        self.assertIn(old_size, sizes)

    def test_a_copy_that_fails_leaves_the_store_working_and_is_removed(self):
        store = self.churned_store()
        store.sweep_step, store._next_sweep = 10_000, 0  # the next set sweeps every key
        size, addval = self.dat_size(), dbm.dumb._Database._addval

        def disk_full(db, value):
            if os.fsencode(db._datfile).endswith(b".shelve-compact.dat") and len(db._index) >= 10:
                raise OSError(errno.ENOSPC, "No space left on device")
            return addval(db, value)
        with mock.patch.object(dbm.dumb._Database, "_addval", disk_full), \
                self.assertLogs("stores.shelve_store", "WARNING") as logs:
            store.set("new", make_record(sid="new"))  # ends a sweep: the compaction fails
        self.assertEqual(len(logs.output), 1, logs.output)
        self.assertIn(f"{self.path}: compacting {self.path}.dat failed", logs.output[0])
        self.assertIn("No space left", logs.output[0])
        self.assertEqual(self.files(), ["sessions.dat", "sessions.dir", "sessions.lock"])
        self.assertGreaterEqual(self.dat_size(), size)
        self.assert_live_records_read_as_themselves(store, "new")
        store.prune()
        self.assertLessEqual(self.dat_size(), 51 * 512)

    def test_a_directory_that_cannot_take_the_copy_leaves_the_store_working(self):
        store = self.churned_store()
        make_read_only(self, self.dir)
        with self.assertLogs("stores.shelve_store", "WARNING") as logs:
            self.assertEqual(store.prune(), 2600)
        self.assertIn(f"{self.path}: compacting {self.path}.dat failed", logs.output[0])
        store.set("new", make_record(sid="new"))
        self.assert_live_records_read_as_themselves(store, "new")

    def test_a_directory_that_refuses_fsync_does_not_stop_the_swap(self):
        # Some file systems refuse fsync on a directory (EINVAL), and a directory we may write
        # but not read cannot be opened for it: the swap goes on (durable where it can be).
        store = self.churned_store()
        fsync = os.fsync

        def no_directory_fsync(fd):
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                raise OSError(errno.EINVAL, "Invalid argument")
            return fsync(fd)
        with mock.patch("os.fsync", no_directory_fsync):
            self.assertEqual(store.prune(), 2600)
        self.assertLessEqual(self.dat_size(), 50 * 512)
        self.assert_live_records_read_as_themselves(store)
        store.close()
        self.assert_live_records_read_as_themselves(self.store())

    def test_a_reopen_that_fails_after_the_swap_is_tried_again_at_the_next_call(self):
        store = self.churned_store()
        dumb_open = dbm.dumb.open
        calls = []

        def out_of_descriptors(file, flag="c", mode=0o666):
            calls.append(file)
            if file == self.path and len(calls) == 2:  # the copy, then the swapped-in file
                raise OSError(errno.EMFILE, "Too many open files")
            return dumb_open(file, flag, mode)
        with mock.patch.object(store._backend, "open", out_of_descriptors):
            with self.assertRaises(OSError):
                store.prune()
        self.assert_live_records_read_as_themselves(store)
        self.assertLessEqual(self.dat_size(), 50 * 512)
        store.close()
        self.assertEqual(self.files(), ["sessions.dat", "sessions.dir", "sessions.lock"])

    def test_the_compacted_file_keeps_the_old_ones_mode_and_group(self):
        store = self.churned_store()
        os.chmod(self.path + ".dat", 0o660)
        if os.geteuid() == 0:
            os.chown(self.path + ".dat", -1, 1234)
        before = os.stat(self.path + ".dat")
        store.prune()
        after = os.stat(self.path + ".dat")
        self.assertLessEqual(after.st_size, 50 * 512)
        self.assertEqual((oct(after.st_mode), after.st_gid), (oct(before.st_mode), before.st_gid))

    def test_a_store_named_like_a_copy_of_this_one_is_left_alone(self):
        # The copy has a name no store would have: a store at "<path>.compact" kept its files.
        other = self.store_class(self.path + ".compact")
        other.set("bob", make_record(sid="bob"))
        other.close()
        store = self.churned_store()
        store.prune()
        store.close()
        self.store().close()
        other = self.store_class(self.path + ".compact")
        self.assertEqual(other.get("bob")["sid"], "bob")
        other.close()


if __name__ == "__main__":
    unittest.main()
