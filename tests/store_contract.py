"""The store conformance suite: every rule a session store must keep, run over every store.

Adding a store is one small class (Django's session-backend tests work the same way)::

    class TestSQLiteStore(StoreContract, unittest.TestCase):
        def make_store(self):
            return SQLiteStore(":memory:")

Hooks a subclass provides (only ``make_store`` is required; a missing hook
skips the tests that need it, with the reason):

``make_store(self) -> Store``
    A new, empty store.  The suite closes it after the test.
``ttl_store(self, ttl: int) -> Store``
    A new, empty store whose ``ttl`` is ``ttl`` seconds (a whole number: 2).
``reopen(self, store) -> Store``
    A new store over the same backing data as ``store`` (same file, server,
    prefix...).  The suite has closed ``store`` before calling it.
``other_process(self, store) -> Store``
    A second store over the same backing data as ``store``, open beside it, as
    another process's store would be (its own connections, its own memory of
    the expiries it read).  The suite closes it after the test.
``raw_bytes(self, store, sid) -> bytes``
    The bytes the backend holds for ``sid``'s record, read with the backend's
    own client (sqlite3, dbm, redis-py, pymongo), not through the store.  It may
    close ``store`` first (dbm cannot be opened twice); the suite does not use
    ``store`` afterwards.

``plant_text(self, store, sid, text: str) -> None``
    Put ``text`` in the backend as the record of ``sid`` (live for a minute) with the
    backend's own client, as a corrupted record, or one planted by anyone who can write
    to the backend, would be.  Call ``self.skipTest`` for texts the backend cannot hold.

Class attributes:

``expiry_slack: float = 0``
    Seconds a backend may keep a record beyond its ``cookie.expires`` (Redis
    rounds EX up to whole seconds: 1).  Expiry tests wait this much longer.
``prune_counts: bool = True``
    False when the backend deletes expired records by itself, so ``prune()``
    may return 0; the suite then checks only what is left.
``text_verbatim: bool = True``
    False when the backend keeps records as something other than their JSON text
    (MongoStore with ``stringify=False``), so ``get_text`` returns a planted text
    re-encoded: the suite then checks it is the same JSON, not the same bytes.

The expiry tests sleep about 10 s per store in total (plus ``expiry_slack``
each); everything else runs in a few seconds at most.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import datetime, timezone

import session

__all__ = ["StoreContract", "make_record", "iso_in"]

SHORT = 0.6  # seconds: the lifetime of records that the expiry tests watch expire


def iso_in(seconds: float) -> str:
    """express's ``cookie.expires`` for ``seconds`` from now: ISO-8601 UTC, milliseconds, Z."""
    moment = datetime.fromtimestamp(time.time() + seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def make_record(expires_in: float | None = 3600, **data) -> dict:
    """A record as express-session writes it; ``expires_in=None`` is a browser-session cookie."""
    if expires_in is None:
        cookie = {"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"}
    else:
        cookie = {"originalMaxAge": int(expires_in * 1000), "expires": iso_in(expires_in),
                  "httpOnly": True, "path": "/"}
    return {"cookie": cookie, **data}


def user_data(record: dict | None) -> dict | None:
    """The record without its cookie: what touch must never change."""
    return None if record is None else {k: v for k, v in record.items() if k != "cookie"}


class StoreContract:
    """Mixin of store conformance tests; see the module docstring for the hooks."""

    expiry_slack: float = 0.0
    prune_counts: bool = True
    text_verbatim: bool = True

    # -- hooks -------------------------------------------------------------
    def make_store(self) -> session.Store:
        raise NotImplementedError("a StoreContract subclass must define make_store()")

    def ttl_store(self, ttl: int) -> session.Store:
        self.skipTest("this store's test class has no ttl_store(ttl) hook")

    def reopen(self, store: session.Store) -> session.Store:
        self.skipTest("this store's test class has no reopen(store) hook")

    def other_process(self, store: session.Store) -> session.Store:
        self.skipTest("this store's test class has no other_process(store) hook")

    def raw_bytes(self, store: session.Store, sid: str) -> bytes:
        self.skipTest("this store's test class has no raw_bytes(store, sid) hook")

    def plant_text(self, store: session.Store, sid: str, text: str) -> None:
        self.skipTest("this store's test class has no plant_text(store, sid, text) hook")

    # -- plumbing ----------------------------------------------------------
    def setUp(self) -> None:
        super().setUp()
        self.store = self._closing(self.make_store())

    def _closing(self, store: session.Store) -> session.Store:
        self.addCleanup(store.close)
        return store

    def _store_with_ttl(self, ttl: int) -> session.Store:
        return self._closing(self.ttl_store(ttl))

    def _wait_past(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds + self.expiry_slack + 0.1))

    # -- one record --------------------------------------------------------
    def test_get_of_unknown_id_returns_none(self):
        self.assertIsNone(self.store.get("no-such-id"))

    def test_set_then_get_returns_the_record(self):
        record = make_record(user="ada", views=3)
        self.store.set("s1", record)
        self.assertEqual(self.store.get("s1"), record)

    def test_record_round_trips_as_the_same_json_with_key_order(self):
        record = make_record(zebra=1, apple={"y": 1, "x": [1, 2, {"b": None, "a": True}]})
        self.store.set("s1", record)
        got = self.store.get("s1")
        self.assertEqual(session.encode_record(got), session.encode_record(record))
        self.assertEqual(list(got), ["cookie", "zebra", "apple"])

    def test_json_values_of_every_kind_round_trip(self):
        record = make_record(n=None, t=True, f=False, i=-(2 ** 53), x=0.1, big=10 ** 30,
                             s="", l=[], d={}, nested=[[{"k": [1.5e300]}]])
        self.store.set("s1", record)
        self.assertEqual(self.store.get("s1"), record)

    def test_get_returns_a_fresh_copy_each_time(self):
        self.store.set("s1", make_record(cart=["apple"]))
        first = self.store.get("s1")
        first["cart"].append("pear")
        first["cookie"]["path"] = "/changed"
        self.assertEqual(self.store.get("s1")["cart"], ["apple"])
        self.assertEqual(self.store.get("s1")["cookie"]["path"], "/")

    def test_set_replaces_the_whole_record(self):
        self.store.set("s1", make_record(a=1, b=2))
        self.store.set("s1", make_record(c=3))
        self.assertEqual(user_data(self.store.get("s1")), {"c": 3})

    def test_destroy_removes_the_record(self):
        self.store.set("s1", make_record(a=1))
        self.store.set("s2", make_record(a=2))
        self.store.destroy("s1")
        self.assertIsNone(self.store.get("s1"))
        self.assertEqual(user_data(self.store.get("s2")), {"a": 2})

    def test_destroy_of_unknown_id_is_not_an_error(self):
        self.store.destroy("no-such-id")
        self.assertEqual(self.store.length(), 0)

    # -- the whole store ---------------------------------------------------
    def test_all_returns_every_live_record_by_id(self):
        records = {f"s{i}": make_record(i=i) for i in range(5)}
        for sid, record in records.items():
            self.store.set(sid, record)
        self.assertEqual(self.store.all(), records)

    def test_ids_lists_every_live_id(self):
        for i in range(5):
            self.store.set(f"s{i}", make_record(i=i))
        self.assertEqual(sorted(self.store.ids()), [f"s{i}" for i in range(5)])

    def test_length_counts_records(self):
        self.assertEqual(self.store.length(), 0)
        for i in range(3):
            self.store.set(f"s{i}", make_record(i=i))
        self.store.set("s0", make_record(i=9))
        self.assertEqual(self.store.length(), 3)

    def test_clear_deletes_every_record(self):
        for i in range(5):
            self.store.set(f"s{i}", make_record(i=i))
        self.store.clear()
        self.assertEqual(self.store.length(), 0)
        self.assertEqual(self.store.all(), {})
        self.assertIsNone(self.store.get("s0"))
        self.store.set("s0", make_record(i=0))
        self.assertEqual(self.store.length(), 1)

    def test_close_can_be_called_twice(self):
        self.store.set("s1", make_record())
        self.store.close()
        self.store.close()

    def test_records_survive_close_and_reopen(self):
        self.store.set("s1", make_record(user="ada"))
        self.store.close()
        reopened = self._closing(self.reopen(self.store))
        self.assertEqual(user_data(reopened.get("s1")), {"user": "ada"})

    # -- expiry ------------------------------------------------------------
    def test_record_whose_cookie_has_expired_is_never_returned(self):
        self.store.set("live", make_record(user="ada"))
        self.store.set("old", make_record(-5, user="bob"))
        self.assertIsNone(self.store.get("old"))
        self.assertEqual(list(self.store.all()), ["live"])
        self.assertEqual(self.store.ids(), ["live"])
        self.assertEqual(self.store.length(), 1)

    def test_set_with_an_expiry_in_the_past_deletes_the_record(self):
        self.store.set("s1", make_record(user="ada"))
        self.store.set("s1", make_record(-1, user="ada"))
        self.assertIsNone(self.store.get("s1"))
        self.assertEqual(self.store.length(), 0)

    def test_record_expires_at_its_cookie_expires(self):
        self.store.set("soon", make_record(SHORT, user="ada"))
        self.store.set("later", make_record(3600, user="bob"))
        self.assertEqual(user_data(self.store.get("soon")), {"user": "ada"})
        self._wait_past(SHORT)
        self.assertIsNone(self.store.get("soon"))
        self.assertEqual(list(self.store.all()), ["later"])
        self.assertEqual(self.store.length(), 1)

    def test_record_without_expires_lives_ttl_seconds_from_its_last_write(self):
        store = self._store_with_ttl(2)
        store.set("s1", make_record(None, user="ada"))
        self.assertEqual(user_data(store.get("s1")), {"user": "ada"})
        time.sleep(1.0)
        rewritten = time.time()
        store.set("s1", make_record(None, user="ada", again=True))  # restarts the ttl
        time.sleep(1.3)  # past the first write's ttl, 0.7 s before the second's ends
        self.assertEqual(user_data(store.get("s1")), {"user": "ada", "again": True})
        self._wait_past(rewritten + 2 - time.time())
        self.assertIsNone(store.get("s1"))
        self.assertEqual(store.length(), 0)

    def test_touch_extends_expiry(self):
        self.store.set("s1", make_record(SHORT, user="ada"))
        self.store.touch("s1", make_record(3600, user="ada"))
        self._wait_past(SHORT)
        self.assertEqual(user_data(self.store.get("s1")), {"user": "ada"})
        self.assertEqual(self.store.length(), 1)

    def test_touch_extends_expiry_given_the_record_as_the_middleware_hands_it(self):
        self.store.set("s1", make_record(SHORT, user="ada"))
        self.store.touch("s1", self._touch_record(make_record(3600, user="ada")))
        self._wait_past(SHORT)
        self.assertEqual(user_data(self.store.get("s1")), {"user": "ada"})

    def test_touch_never_rewrites_data(self):
        self.store.set("s1", make_record(user="ada", views=1))
        self.store.touch("s1", make_record(7200, user="mallory", views=99))
        self.assertEqual(user_data(self.store.get("s1")), {"user": "ada", "views": 1})

    def test_touch_of_a_vanished_record_is_a_no_op(self):
        self.store.touch("never-set", make_record(user="ada"))
        self.store.set("s1", make_record(user="ada"))
        self.store.destroy("s1")
        self.store.touch("s1", make_record(user="ada"))
        self.assertIsNone(self.store.get("never-set"))
        self.assertIsNone(self.store.get("s1"))
        self.assertEqual(self.store.length(), 0)

    def test_touch_does_not_revive_an_expired_record(self):
        self.store.set("s1", make_record(SHORT, user="ada"))
        self._wait_past(SHORT)
        self.store.touch("s1", make_record(3600, user="ada"))
        self.assertIsNone(self.store.get("s1"))

    def test_prune_deletes_expired_records_and_returns_how_many(self):
        for i in range(3):
            self.store.set(f"old{i}", make_record(SHORT, i=i))
        self.store.set("live", make_record(3600, user="ada"))
        self.store.set("live-ttl", make_record(None, user="bob"))
        self._wait_past(SHORT)
        removed = self.store.prune()
        if self.prune_counts:
            self.assertEqual(removed, 3)
        else:
            self.assertIn(removed, (0, 3))
        self.assertEqual(sorted(self.store.all()), ["live", "live-ttl"])
        self.assertEqual(self.store.length(), 2)
        self.assertEqual(self.store.prune(), 0)

    def test_prune_with_nothing_expired_returns_zero_and_keeps_everything(self):
        self.store.set("s1", make_record(user="ada"))
        self.assertEqual(self.store.prune(), 0)
        self.assertEqual(self.store.length(), 1)

    # -- data --------------------------------------------------------------
    def test_unicode_keys_and_values_round_trip(self):
        record = make_record(**{"名前": "Ада Лавлейс", "emoji": "😀👩‍💻", "rtl": "שלום",
                                "escapes": "quote\" backslash\\ nul\u0000 tab\t nl\n",
                                "é": ["ü", {"ß": "\u2028\u2029"}]})
        self.store.set("s1", record)
        self.assertEqual(self.store.get("s1"), record)

    def test_unicode_session_id_round_trips(self):
        sid = "sé-日本-😀"
        self.store.set(sid, make_record(user="ada"))
        self.assertEqual(user_data(self.store.get(sid)), {"user": "ada"})
        self.assertEqual(list(self.store.all()), [sid])

    def test_one_megabyte_record_round_trips(self):
        big = ("0123456789abcdefghijklmnopqrstuvwxyz é😀 \"quoted\" \\ \n" * 21000)[: 1 << 20]
        record = make_record(blob=big)
        self.store.set("big", record)
        self.assertEqual(self.store.get("big"), record)
        self.store.set("big", make_record(blob="small"))
        self.assertEqual(self.store.get("big")["blob"], "small")

    def test_ten_thousand_records(self):
        n = 10_000
        record = make_record(user="ada", views=1)
        for i in range(n):
            self.store.set(f"sid-{i:05d}", record)
        self.assertEqual(self.store.length(), n)
        self.assertEqual(sorted(self.store.ids()), [f"sid-{i:05d}" for i in range(n)])
        everything = self.store.all()
        self.assertEqual(len(everything), n)
        self.assertEqual(everything["sid-04321"], record)
        for i in range(0, n, 997):
            self.assertEqual(self.store.get(f"sid-{i:05d}"), record)
        self.store.clear()
        self.assertEqual(self.store.length(), 0)

    def test_bytes_at_rest_are_json_not_pickle(self):
        record = make_record(user="Ада", cart=["apple"], n=1)
        self.store.set("s1", record)
        raw = self.raw_bytes(self.store, "s1")
        self.assertIsInstance(raw, bytes)
        self.assertFalse(raw.startswith(b"\x80"), "looks like a pickle (PROTO opcode)")
        json.loads(raw.decode("utf-8"))  # the whole value is JSON
        self.assertIn(session.encode_record(record).encode("utf-8"), raw)

    # -- records that are not sessions (through the middleware) -------------
    HOSTILE_COOKIE_FIELDS = [
        {"priority": "high\r\nX-Injected: 1"}, {"priority": "low; Domain=evil.example"},
        {"priority": 7}, {"sameSite": ["lax"]}, {"sameSite": "lax; Secure"}, {"secure": {}},
        {"partitioned": []}, {"httpOnly": [False]},  # (a string flag counts for its truth, as in express)
        {"domain": "evil.example; Path=/"}, {"path": "/\r\nX-Injected: 1"}, {"path": 5},
        {"expires": 5}, {"expires": "soon"}, {"expires": ["2026-01-01T00:00:00.000Z"]},
        {"originalMaxAge": "3600000"}, {"originalMaxAge": True}, {"originalMaxAge": 1e300},
    ]
    _COOKIE = '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}'
    HOSTILE_TEXTS = [
        _COOKIE.replace("null", "NaN", 1) + "}", _COOKIE.replace("null", "Infinity", 1) + "}",
        _COOKIE.replace("null", "1e400", 1) + "}", _COOKIE + ',"n":NaN}',
        _COOKIE + ',"n":-Infinity}', _COOKIE + ',"n":' + "[" * 100_000 + "]" * 100_000 + "}",
        _COOKIE + ',"n":1}x', '["cookie"]', '{"cookie":"yes"}', "{}", "", "\ud800",
    ]

    def _request_with_cookie_for(self, sid: str) -> tuple:
        from tests.harness import SECRET, call_wsgi, cookie_value, make_environ
        seen: list = []

        def app(environ, start_response):
            sess = environ["session"]
            seen.append((sess.id, dict(sess)))
            sess["fresh"] = True
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        mw = session.SessionMiddleware(app, secret=SECRET, store=self.store, rolling=True,
                                       cookie={"max_age": 60})
        with self.assertLogs(level=logging.WARNING) as logs:
            resp = call_wsgi(mw, make_environ(cookie=f"connect.sid={cookie_value(sid)}"))
        return resp, seen, logs

    def _assert_missing(self, sid: str) -> None:
        resp, seen, logs = self._request_with_cookie_for(sid)
        self.assertEqual(resp.status, "200 OK")
        self.assertEqual(len(seen), 1)
        self.assertNotEqual(seen[0][0], sid, "a fresh session has a new ID")
        self.assertEqual(seen[0][1], {})
        self.assertEqual(len(logs.records), 1, [r.getMessage() for r in logs.records])
        for header in resp.values("Set-Cookie"):
            self.assertNotIn("evil", header)
            self.assertNotIn("Injected", header)

    def test_a_record_with_a_cookie_field_express_would_not_write_is_missing(self):
        for i, bad in enumerate(self.HOSTILE_COOKIE_FIELDS):
            with self.subTest(field=bad):
                cookie = {"originalMaxAge": 60000, "expires": None, "httpOnly": True, "path": "/"}
                cookie.update(bad)
                self.plant_text(self.store, f"hostile-cookie-{i}",
                                json.dumps({"cookie": cookie, "n": 1}))
                self._assert_missing(f"hostile-cookie-{i}")

    def test_a_record_json_parse_would_refuse_is_missing(self):
        for i, text in enumerate(self.HOSTILE_TEXTS):
            with self.subTest(text=text[:60]):
                self.plant_text(self.store, f"hostile-text-{i}", text)
                self._assert_missing(f"hostile-text-{i}")

    def test_what_the_app_can_save_the_next_request_can_load(self):
        from tests.harness import SECRET, Client, call_wsgi, cookie_value, make_environ
        saved, loaded = [], []

        def app(environ, start_response):
            sess = environ["session"]
            if "deep" in sess:
                loaded.append(_depth_of(sess["deep"]))
                sess["n"] = 2
            else:
                for depth in range(1000, 0, -5):  # the deepest list the encoder takes here
                    sess["deep"] = _nested(depth)
                    try:
                        sess.save()
                    except TypeError:
                        continue
                    saved.append(depth)
                    break
            start_response("200 OK", [])
            return [b"ok"]
        mw = session.SessionMiddleware(app, secret=SECRET, store=self.store)
        Client(mw).request()
        [sid] = self.store.ids()
        # The next request arrives on a deeper stack than the one that saved.
        resp = _on_a_deeper_stack(80, lambda: call_wsgi(
            mw, make_environ(cookie=f"connect.sid={cookie_value(sid)}")))
        self.assertEqual(resp.status, "200 OK")
        self.assertGreater(saved[0], 800)
        self.assertEqual(loaded, saved)
        self.assertEqual(self.store.get(sid)["n"], 2)

    # -- records as text ---------------------------------------------------
    def test_get_text_returns_the_stored_records_json(self):
        record = make_record(user="ada", cart=["apple"], n=1)
        self.store.set("s1", record)
        self.assertEqual(self.store.get_text("s1"), session.encode_record(record))
        self.assertIsNone(self.store.get_text("no-such-id"))

    def test_get_text_hands_over_a_text_written_elsewhere_as_it_is_and_it_loads(self):
        # Other key order and spacing than this library writes (connect-pg-simple keeps
        # whatever JSON it was given; a hand-edited or older record may look like this).
        text = ('{"views": 3, "cookie": {"path": "/", "httpOnly": true, "expires": "%s", '
                '"originalMaxAge": 3600000},  "user": "ada"}' % iso_in(3600))
        self.plant_text(self.store, "elsewhere", text)
        got = self.store.get_text("elsewhere")
        if self.text_verbatim:
            self.assertEqual(got, text)
        else:
            self.assertEqual(json.loads(got), json.loads(text))
        from tests.harness import SECRET, call_wsgi, cookie_value, make_environ
        seen: list = []

        def app(environ, start_response):
            sess = environ["session"]
            seen.append((sess.id, dict(sess)))
            start_response("200 OK", [])
            return [b"ok"]
        mw = session.SessionMiddleware(app, secret=SECRET, store=self.store)
        resp = call_wsgi(mw, make_environ(cookie=f"connect.sid={cookie_value('elsewhere')}"))
        self.assertEqual(resp.status, "200 OK")
        self.assertEqual(seen, [("elsewhere", {"views": 3, "user": "ada"})])

    # -- merge: concurrent requests on one session -------------------------
    @staticmethod
    def _change(base: str | None, record: dict, keep_later: bool = True) -> session.Change:
        """A request's write of ``record``, having loaded ``base`` (None: a new session)."""
        return session.Change(base, session.encode_record(record), session.expires_at(record),
                              keep_later)

    def _touch_record(self, record: dict, keep_later: bool = True) -> session._Record:
        """``record`` as the middleware hands it to this store's touch(): whole, or with no
        fields at all when the store says its touch reads only the expiry."""
        expires = session.expires_at(record)
        if session._touch_reads_expiry_only(self.store):
            return session._Record.of_expiry(None if expires is None else round(expires * 1000),
                                             keep_later)
        touched = session._Record.of(session.encode_record(record), expires)
        touched.text, touched.keep_later = None, keep_later
        return touched

    def test_merge_of_a_new_session_writes_its_record(self):
        record = make_record(user="ada")
        self.assertTrue(self.store.merge("s1", self._change(None, record)))
        self.assertEqual(self.store.get("s1"), record)

    def test_merge_with_nothing_written_since_the_load_writes_the_requests_record(self):
        loaded = make_record(user="ada", views=1)
        self.store.set("s1", loaded)
        base = self.store.get_text("s1")
        mine = {k: v for k, v in loaded.items() if k != "user"}
        mine.update(views=2, cart=["apple"])
        self.assertTrue(self.store.merge("s1", self._change(base, mine)))
        self.assertEqual(self.store.get("s1"), mine)
        self.assertEqual(list(self.store.get("s1")), ["cookie", "views", "cart"])

    def test_merge_keeps_what_others_wrote_to_keys_this_request_did_not_touch(self):
        loaded = make_record(user="ada", views=1)
        self.store.set("s1", loaded)
        base = self.store.get_text("s1")
        self.store.set("s1", {**loaded, "views": 5, "theme": "dark"})  # another request, meanwhile
        self.assertTrue(self.store.merge("s1", self._change(base, {**loaded, "cart": ["apple"]})))
        self.assertEqual(user_data(self.store.get("s1")),
                         {"user": "ada", "views": 5, "theme": "dark", "cart": ["apple"]})

    def test_merge_deletes_the_keys_this_request_deleted(self):
        loaded = make_record(user="ada", csrf="t1", views=1)
        self.store.set("s1", loaded)
        base = self.store.get_text("s1")
        self.store.set("s1", {**loaded, "views": 2})  # another request, meanwhile
        logged_out = {k: v for k, v in loaded.items() if k not in ("user", "csrf")}
        self.assertTrue(self.store.merge("s1", self._change(base, logged_out)))
        self.assertEqual(user_data(self.store.get("s1")), {"views": 2})

    def test_merge_combines_in_place_changes_of_different_nested_keys(self):
        self.store.set("s1", make_record(prefs={"theme": "light", "lang": "en"},
                                         cart={"items": ["apple"]}))
        base = self.store.get_text("s1")
        theirs = json.loads(base)
        theirs["cart"]["items"].append("pear")  # another request mutated the cart in place
        self.store.set("s1", theirs)
        mine = json.loads(base)
        mine["prefs"]["theme"] = "dark"  # this one, the preferences
        self.assertTrue(self.store.merge("s1", self._change(base, mine)))
        self.assertEqual(user_data(self.store.get("s1")),
                         {"prefs": {"theme": "dark", "lang": "en"}, "cart": {"items": ["apple", "pear"]}})

    def test_merge_keeps_the_cookie_attributes_each_request_changed(self):
        # Two requests loaded one record: one stored sameSite (with a later or an earlier
        # expiry), the other sets a domain; each attribute stays, as data keys do.
        for stored_later in (True, False):
            with self.subTest(stored_later=stored_later):
                sid = f"s-{stored_later}"
                loaded = make_record(3000, user="ada")
                self.store.set(sid, loaded)
                base = self.store.get_text(sid)
                theirs = make_record(3600 if stored_later else 3100, user="ada", views=1)
                theirs["cookie"]["sameSite"] = "strict"
                self.assertTrue(self.store.merge(sid, self._change(base, theirs)))
                mine = make_record(3500, user="ada", cart=["apple"])
                mine["cookie"]["domain"] = "example.com"
                self.assertTrue(self.store.merge(sid, self._change(base, mine)))
                stored = self.store.get(sid)
                self.assertEqual(user_data(stored), {"user": "ada", "views": 1, "cart": ["apple"]})
                later = theirs if stored_later else mine
                self.assertEqual(stored["cookie"], {**later["cookie"], "domain": "example.com",
                                                    "sameSite": "strict"})
                self.assertEqual(list(stored["cookie"]), ["originalMaxAge", "expires", "httpOnly",
                                                          "domain", "path", "sameSite"])

    def test_merge_of_the_same_key_lets_the_later_save_win(self):
        loaded = make_record(color="green", counter=1)
        self.store.set("s1", loaded)
        base = self.store.get_text("s1")
        # Two requests that loaded the same record; each sets the color and counts itself.
        self.assertTrue(self.store.merge("s1", self._change(base, {**loaded, "color": "red", "counter": 2})))
        self.assertTrue(self.store.merge("s1", self._change(base, {**loaded, "color": "blue", "counter": 2})))
        # The later save wins, whole values at the top level: one of the two counts is lost
        # (a counter needs an app-level lock or an atomic operation of its own).
        self.assertEqual(user_data(self.store.get("s1")), {"color": "blue", "counter": 2})

    def test_merge_of_a_new_session_never_overwrites_a_live_record(self):
        self.store.set("s1", make_record(user="ada"))
        before = self.store.get_text("s1")
        self.assertFalse(self.store.merge("s1", self._change(None, make_record(user="eve"))))
        self.assertEqual(self.store.get_text("s1"), before)

    def test_merge_of_a_new_session_takes_over_an_expired_record(self):
        self.store.set("s1", make_record(SHORT, user="old"))
        self._wait_past(SHORT)
        record = make_record(user="new")
        self.assertTrue(self.store.merge("s1", self._change(None, record)))
        self.assertEqual(self.store.get("s1"), record)

    def test_merge_never_resurrects_a_destroyed_record(self):
        loaded = make_record(user="ada")
        self.store.set("s1", loaded)
        base = self.store.get_text("s1")
        self.store.destroy("s1")  # logged out while this request ran
        self.assertFalse(self.store.merge("s1", self._change(base, {**loaded, "views": 1})))
        self.assertIsNone(self.store.get("s1"))
        self.assertIsNone(self.store.get_text("s1"))

    def test_merge_never_resurrects_an_expired_record(self):
        loaded = make_record(SHORT, user="ada")
        self.store.set("s1", loaded)
        base = self.store.get_text("s1")
        self._wait_past(SHORT)
        self.assertIsNone(self.store.get_text("s1"))
        self.assertFalse(self.store.merge("s1", self._change(base, make_record(3600, user="ada", views=1))))
        self.assertIsNone(self.store.get("s1"))
        self.assertEqual(self.store.length(), 0)

    def test_merge_of_a_record_already_expired_deletes_it_unless_a_later_expiry_is_kept(self):
        for sid in ("kept", "deleted"):
            self.store.set(sid, make_record(user="ada"))
        expired = make_record(-5, user="ada", views=1)
        self.assertTrue(self.store.merge("kept", self._change(self.store.get_text("kept"), expired)))
        self.assertTrue(self.store.merge("deleted", self._change(
            self.store.get_text("deleted"), expired, keep_later=False)))
        self.assertEqual(user_data(self.store.get("kept")), {"user": "ada", "views": 1})
        self.assertIsNone(self.store.get("deleted"))

    def test_keep_later_means_neither_touch_nor_merge_moves_an_expiry_earlier(self):
        for sid in ("touched", "merged"):
            self.store.set(sid, make_record(3600, user="ada"))
        base = self.store.get_text("merged")
        sooner = make_record(SHORT, user="ada")
        self.store.touch("touched", self._touch_record(sooner, keep_later=True))
        self.assertTrue(self.store.merge("merged", self._change(base, {**sooner, "views": 1})))
        self._wait_past(SHORT)
        self.assertEqual(user_data(self.store.get("touched")), {"user": "ada"})
        self.assertEqual(user_data(self.store.get("merged")), {"user": "ada", "views": 1})

    def test_keep_later_false_lets_touch_and_merge_move_an_expiry_earlier(self):
        for sid in ("touched", "merged"):
            self.store.set(sid, make_record(3600, user="ada"))
        base = self.store.get_text("merged")
        sooner = make_record(SHORT, user="ada")  # the request set the cookie's lifetime itself
        self.store.touch("touched", self._touch_record(sooner, keep_later=False))
        self.assertTrue(self.store.merge("merged", self._change(base, {**sooner, "views": 1},
                                                                keep_later=False)))
        self.assertEqual(user_data(self.store.get("merged")), {"user": "ada", "views": 1})
        self._wait_past(SHORT)
        self.assertIsNone(self.store.get("touched"))
        self.assertIsNone(self.store.get("merged"))

    def _save_after_another_request_shortened_it(self, other: session.Store) -> None:
        """Request A loads a session with an hour left through this store; request B, through
        ``other``, sets its cookie's lifetime to SHORT (a touch; a merge with data too); then
        A saves a change whose expiry moves a few seconds past the hour A loaded."""
        for sid in ("touched", "merged"):
            self.store.set(sid, make_record(3600, user="ada"))
            base = self.store.get_text(sid)
            sooner = make_record(SHORT, user="ada")
            if sid == "touched":
                other.get_text(sid)
                other.touch(sid, self._touch_record(sooner, keep_later=False))
            else:
                self.assertTrue(other.merge(sid, self._change(
                    other.get_text(sid), {**sooner, "theme": "dark"}, keep_later=False)))
            self.assertTrue(self.store.merge(sid, self._change(
                base, make_record(3605, user="ada", views=1))))
        self._wait_past(SHORT)
        self.assertEqual(user_data(self.store.get("touched")), {"user": "ada", "views": 1})
        self.assertEqual(user_data(self.store.get("merged")),
                         {"user": "ada", "theme": "dark", "views": 1})

    def test_a_save_keeps_its_later_expiry_over_one_another_request_shortened(self):
        self._save_after_another_request_shortened_it(self.store)

    def test_a_save_keeps_its_later_expiry_over_one_another_process_shortened(self):
        self._save_after_another_request_shortened_it(self._closing(self.other_process(self.store)))

    def test_threads_merging_their_own_keys_into_one_record_lose_none(self):
        threads, merges = 8, 50
        self.store.set("s1", make_record(user="ada"))
        errors: list = []
        start = threading.Barrier(threads)

        def worker(t: int) -> None:
            try:
                start.wait()
                for n in range(merges):
                    base = self.store.get_text("s1")
                    record = json.loads(base)
                    record[f"t{t}-{n}"] = n
                    if not self.store.merge("s1", self._change(base, record)):
                        errors.append(f"thread {t}: merge {n} returned False")
            except Exception as exc:  # collected, so the test reports every thread's failure
                errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(120)
        self.assertFalse(any(thread.is_alive() for thread in pool), "a thread hung")
        self.assertEqual(errors, [])
        got = user_data(self.store.get("s1"))
        missing = sorted(f"t{t}-{n}" for t in range(threads) for n in range(merges)
                         if got.get(f"t{t}-{n}") != n)
        self.assertEqual(missing, [])
        self.assertEqual(len(got), 1 + threads * merges)

    # -- threads -----------------------------------------------------------
    def test_threads_share_the_store_without_lost_writes(self):
        threads, ops, own_ids, shared_ids = 8, 500, 8, 4
        errors: list = []
        start = threading.Barrier(threads)

        def worker(t: int) -> None:
            rng = random.Random(t)
            last: dict = {}
            try:
                start.wait()
                for i in range(ops):
                    roll = rng.random()
                    mine = f"t{t}-{rng.randrange(own_ids)}"
                    shared = f"shared-{rng.randrange(shared_ids)}"
                    if roll < 0.30:
                        self.store.set(mine, make_record(owner=t, n=i))
                        last[mine] = i
                    elif roll < 0.55:
                        got = self.store.get(mine)
                        want = last.get(mine)
                        if (None if got is None else got["n"]) != want:
                            errors.append(f"thread {t}: {mine} read {got!r}, wrote n={want}")
                    elif roll < 0.70:
                        self.store.set(shared, make_record(owner=t, n=i))
                    elif roll < 0.82:
                        got = self.store.get(shared)
                        if got is not None and set(user_data(got)) != {"owner", "n"}:
                            errors.append(f"thread {t}: {shared} read a torn record {got!r}")
                    elif roll < 0.90:
                        self.store.touch(rng.choice((mine, shared)), make_record(7200, owner=t, n=-1))
                    elif roll < 0.97:
                        self.store.destroy(shared)
                    else:
                        rng.choice((self.store.length, self.store.all, self.store.prune))()
                for sid, n in last.items():
                    got = self.store.get(sid)
                    if got is None or got["n"] != n:
                        errors.append(f"thread {t}: lost write to {sid}: read {got!r}, wrote n={n}")
            except Exception as exc:  # collected, so the test reports every thread's failure
                errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(120)
        self.assertFalse(any(thread.is_alive() for thread in pool), "a thread hung")
        self.assertEqual(errors, [])
        self.assertEqual(self.store.length(), len(self.store.all()))


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _depth_of(value: list) -> int:
    depth = 0
    while value:
        value, depth = value[0], depth + 1
    return depth


def _on_a_deeper_stack(frames: int, call):
    return call() if frames == 0 else _on_a_deeper_stack(frames - 1, call)
