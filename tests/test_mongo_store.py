"""MongoStore in three layers, since no MongoDB server can be installed here:

1. the conformance suite and store rules over mongomock (an in-process fake),
2. the exact commands pymongo sends, checked on mockupdb (MongoDB's wire-protocol
   test server): collection, filter, upsert, TTL index spec, document shape,
3. the same against a real server when ``MONGODB_URL`` is set (skipped otherwise).

Needs ``pip install pymongo mongomock mockupdb``.
"""
from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import unittest
import uuid
from datetime import datetime, timedelta, timezone
from unittest import mock

import session
from tests.store_contract import StoreContract, make_record
from tests.support import exit_code_of_a_child, has_module, requires

HAVE_PYMONGO = has_module("pymongo")
HAVE_MONGOMOCK = HAVE_PYMONGO and has_module("mongomock")
HAVE_MOCKUPDB = HAVE_PYMONGO and has_module("mockupdb")
MONGODB_URL = os.environ.get("MONGODB_URL")

if HAVE_PYMONGO:
    import pymongo
    from stores.mongo_store import MongoStore
if HAVE_MONGOMOCK:
    import mongomock
if HAVE_MOCKUPDB:
    from mockupdb import MockupDB, go


def utc(value: datetime) -> datetime:
    """A BSON date read back (naive UTC from pymongo and mongomock) as an aware datetime."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def at(iso: str) -> datetime:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def change(base: str | None, record: dict, keep_later: bool = True) -> session.Change:
    """A request's write of ``record`` having loaded ``base`` (None: a new session)."""
    return session.Change(base, session.encode_record(record), session.expires_at(record), keep_later)


def touch_record(record: dict, keep_later: bool) -> session._Record:
    """``record`` as the middleware hands it to touch()."""
    touched = session._Record.of(session.encode_record(record), session.expires_at(record))
    touched.text, touched.keep_later = None, keep_later
    return touched


# ---------------------------------------------------------------- 1. mongomock

class _Serialized:
    """A mongomock collection behind one lock.  mongomock is not thread-safe (its documents
    are a plain dict, so concurrent writes raise KeyError inside it); a MongoDB server is.
    The lock lets the contract's thread test check the store, not the fake."""

    def __init__(self, collection, lock):
        self._collection, self._lock = collection, lock

    def __getattr__(self, name):
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr

        def locked(*args, **kwargs):
            with self._lock:
                result = attr(*args, **kwargs)
                return list(result) if name == "find" else result
        return locked


class _MongomockStores:
    store_options: dict = {"auto_remove": "disabled"}
    bulk = 500

    def _serialize(self, store):
        store.collection = _Serialized(store.collection, self.lock)
        return store

    def test_ten_thousand_records(self):
        """Scaled down: mongomock scans every document on each write, so 10,000 records
        take minutes here; the real-server suite runs the full size."""
        record = make_record(user="ada", views=1)
        for i in range(self.bulk):
            self.store.set(f"sid-{i:05d}", record)
        self.assertEqual(self.store.length(), self.bulk)
        self.assertEqual(sorted(self.store.ids()), [f"sid-{i:05d}" for i in range(self.bulk)])
        everything = self.store.all()
        self.assertEqual(len(everything), self.bulk)
        self.assertEqual(everything["sid-00321"], record)
        self.store.clear()
        self.assertEqual(self.store.length(), 0)

    def make_store(self):
        return self.ttl_store(1209600)

    def ttl_store(self, ttl):
        self.client = mongomock.MongoClient()
        self.lock = threading.Lock()
        return self._serialize(MongoStore(self.client, ttl=ttl, **self.store_options))

    def reopen(self, store):
        return self._serialize(MongoStore(store.client, ttl=store.ttl, **self.store_options))

    def raw_bytes(self, store, sid):
        return self.client.test.sessions.find_one({"_id": sid})["session"].encode("utf-8")

    def plant_text(self, store, sid, text):
        value = text
        if not store.stringify:  # the record is a sub-document: plant what the text parses to
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                self.skipTest("not a document: cannot be planted unstringified")
        expires = datetime.now(timezone.utc) + timedelta(seconds=60)
        try:
            self.client.test.sessions.replace_one(
                {"_id": sid}, {"_id": sid, "session": value, "expires": expires}, upsert=True)
        except Exception as exc:  # noqa: BLE001 - BSON's own limits (depth, surrogates)
            self.skipTest(f"BSON cannot hold it: {type(exc).__name__}")


@requires(HAVE_MONGOMOCK, "needs pymongo and mongomock: pip install pymongo mongomock")
class TestMongoStoreContract(_MongomockStores, StoreContract, unittest.TestCase):
    """The conformance suite over the store's own expiry filter (no TTL index)."""


@requires(HAVE_MONGOMOCK, "needs pymongo and mongomock: pip install pymongo mongomock")
class TestMongoStoreContractUnstringified(_MongomockStores, StoreContract, unittest.TestCase):
    """The conformance suite with the record stored as a sub-document."""

    store_options = {"auto_remove": "disabled", "stringify": False}
    text_verbatim = False  # get_text encodes the sub-document

    def test_what_the_app_can_save_the_next_request_can_load(self):
        self.skipTest("unstringified, the record is a BSON document: MongoDB refuses to save "
                      "one nested over 100 levels, so nothing deeper can need loading")

    def test_bytes_at_rest_are_json_not_pickle(self):
        """stringify=False keeps the record as a BSON sub-document of its own fields:
        no pickle, no opaque blob; only cookie.expires changes type, to a BSON date."""
        record = make_record(user="Ада", cart=["apple"], n=1)
        self.store.set("s1", record)
        stored = self.client.test.sessions.find_one({"_id": "s1"})["session"]
        self.assertEqual(list(stored), ["cookie", "user", "cart", "n"])
        self.assertEqual({k: stored[k] for k in ("user", "cart", "n")},
                         {"user": "Ада", "cart": ["apple"], "n": 1})
        cookie = dict(stored["cookie"], expires=record["cookie"]["expires"])
        self.assertEqual(cookie, record["cookie"])
        self.assertEqual(utc(stored["cookie"]["expires"]), at(record["cookie"]["expires"]))

    def test_json_values_of_every_kind_round_trip(self):
        """BSON integers are 64-bit: a bigger one is refused with a clear error; the rest
        (what a JavaScript app can hold) round-trips."""
        record = make_record(n=None, t=True, f=False, i=-(2 ** 53), x=0.1, big=2 ** 63 - 1,
                             s="", l=[], d={}, nested=[[{"k": [1.5e300]}]])
        self.store.set("s1", record)
        self.assertEqual(self.store.get("s1"), record)
        with self.assertRaisesRegex(ValueError, "stringify=True"):
            self.store.set("s2", make_record(big=10 ** 30))
        self.assertIsNone(self.store.get("s2"))


@requires(HAVE_MONGOMOCK, "needs pymongo and mongomock: pip install pymongo mongomock")
class TestMongoStoreContractNative(_MongomockStores, StoreContract, unittest.TestCase):
    """The conformance suite with the TTL index (mongomock applies it on every read)."""

    store_options = {"auto_remove": "native", "touch_after": 0}
    prune_counts = False  # the TTL index may have removed them first


@requires(HAVE_MONGOMOCK, "needs pymongo and mongomock: pip install pymongo mongomock")
class TestMongoStoreRules(unittest.TestCase):
    def setUp(self):
        self.client = mongomock.MongoClient()

    def store(self, **kwargs):
        kwargs.setdefault("auto_remove", "disabled")
        store = MongoStore(self.client, **kwargs)
        self.addCleanup(store.close)
        return store

    def doc(self, store, sid):
        return store.collection.find_one({"_id": sid})

    # -- document shape ----------------------------------------------------
    def test_document_is_id_json_session_and_date_expires(self):
        store = self.store()
        record = make_record(3600, user="Zoë")
        store.set("s1", record)
        doc = self.doc(store, "s1")
        self.assertEqual(list(doc), ["_id", "session", "expires"])
        self.assertEqual(doc["session"], session.encode_record(record))
        self.assertEqual(utc(doc["expires"]), at(record["cookie"]["expires"]))

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_a_child_forked_while_the_index_is_being_made_makes_it_itself(self):
        # A parent's thread making the TTL index at the fork (the first request) holds a lock
        # that no thread of the child would ever release.
        store = self.store(auto_remove="native")
        store._index_lock.acquire()

        def child():
            store.set("child", make_record(user="bob"))
            return 0 if store.get("child")["user"] == "bob" else 2
        try:  # a child that waits for ever is killed: the test fails
            code = exit_code_of_a_child(child)
        finally:
            store._index_lock.release()
        self.assertEqual(code, 0)

    def test_collection_and_database_names(self):
        store = self.store(db_name="app", collection="web_sessions")
        store.set("s1", make_record())
        self.assertEqual(self.client["app"]["web_sessions"].count_documents({}), 1)
        self.assertEqual(self.store().collection.full_name, "test.sessions")

    def test_record_without_expires_expires_ttl_seconds_from_now(self):
        store = self.store(ttl=1000)
        store.set("s1", make_record(None))
        left = (utc(self.doc(store, "s1")["expires"]) - datetime.now(timezone.utc)).total_seconds()
        self.assertAlmostEqual(left, 1000, delta=2)

    def test_default_ttl_is_fourteen_days(self):
        self.assertEqual(self.store().ttl, 14 * 24 * 3600)

    def test_stringify_false_stores_the_record_with_a_date_expires(self):
        store = self.store(stringify=False)
        record = make_record(3600, cart=["apple"])
        store.set("s1", record)
        stored = self.doc(store, "s1")["session"]
        self.assertEqual(list(stored), ["cookie", "cart"])
        self.assertIsInstance(stored["cookie"]["expires"], datetime)
        self.assertEqual(utc(stored["cookie"]["expires"]), at(record["cookie"]["expires"]))
        self.assertEqual(store.get("s1"), record)
        self.assertEqual(session.encode_record(store.get("s1")), session.encode_record(record))

    def test_reads_a_document_connect_mongo_wrote_unstringified(self):
        expires = datetime(2099, 1, 2, 3, 4, 5, 678000)
        self.client.test.sessions.insert_one({
            "_id": "node", "expires": expires,
            "session": {"cookie": {"originalMaxAge": 3599999, "expires": expires,
                                   "secure": False, "httpOnly": True, "path": "/"},
                        "passport": {"user": "7"}, "seen": datetime(2026, 1, 1)}})
        got = self.store(stringify=False).get("node")
        self.assertEqual(got, {"cookie": {"originalMaxAge": 3599999,
                                          "expires": "2099-01-02T03:04:05.678Z",
                                          "secure": False, "httpOnly": True, "path": "/"},
                               "passport": {"user": "7"}, "seen": "2026-01-01T00:00:00.000Z"})

    def test_a_merge_keeps_an_attribute_another_request_set_on_a_document_node_wrote(self):
        # The Node driver writes express's unset cookie fields as null: not a change.
        expires = datetime.now(timezone.utc) + timedelta(seconds=3000)
        cookie = {"originalMaxAge": 3600000, "partitioned": None, "priority": None,
                  "expires": expires, "secure": None, "httpOnly": True, "domain": None,
                  "path": "/", "sameSite": None}
        self.client.test.sessions.insert_one({"_id": "node", "expires": expires,
                                              "session": {"cookie": cookie, "n": 1}})
        store = self.store(stringify=False)
        base = store.get_text("node")
        theirs = json.loads(base)
        theirs["cookie"]["sameSite"] = "strict"  # another request, meanwhile
        self.assertTrue(store.merge("node", change(base, theirs)))
        mine = make_record(3600, n=2)  # this one changed the data only
        self.assertTrue(store.merge("node", change(base, mine)))
        got = store.get("node")
        self.assertEqual((got["n"], got["cookie"]["sameSite"]), (2, "strict"))

    def test_a_merge_over_a_cookie_that_is_no_object_falls_back_to_compare_and_set(self):
        store = self.store(stringify=False)
        store.set("s1", make_record(3000, n=1))
        base = store.get_text("s1")
        for value in ([{"a": 1}], "x"):
            with self.subTest(cookie=value):
                self.client.test.sessions.update_one({"_id": "s1"}, {"$set": {"session.cookie": value}})
                self.assertTrue(store.merge("s1", change(base, make_record(3600, n=2))))
                got = store.get("s1")
                self.assertEqual(got["n"], 2)
                self.assertEqual(list(got["cookie"]), ["originalMaxAge", "expires", "httpOnly", "path"])

    def test_a_lone_surrogate_in_a_planted_string_session_is_written_as_node_writes_it(self):
        # connect-mongo's default (stringify) keeps JSON text, which may escape a lone
        # surrogate; BSON cannot hold one, so a stringify=False store's write raised
        # UnicodeEncodeError. js-bson writes U+FFFD in its place, and so does the store now.
        store = self.store(stringify=False)
        planted = ('{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},'
                   '"x":"\\ud800","\\udc00k":["a\\udbff"]}')
        for how in ("merge", "set", "merge of a key set from it"):
            with self.subTest(how):
                self.client.test.sessions.delete_many({})
                self.client.test.sessions.insert_one(
                    {"_id": "p", "session": planted, "expires": datetime(2099, 1, 1)})
                loaded = store.get("p")
                self.assertEqual(loaded["x"], "\ud800")
                if how == "set":
                    store.set("p", {**loaded, "n": 1})
                else:
                    mine = {**loaded, "n": 1}
                    if how != "merge":
                        mine["y"] = loaded["x"]
                        store.set("p", loaded)  # a document, so the change is $set in place
                        planted_now = store.get_text("p")
                    base = planted if how == "merge" else planted_now
                    self.assertTrue(store.merge("p", session.Change(
                        base, session.encode_record(mine), None)))
                got = self.doc(store, "p")["session"]
                self.assertEqual((got["x"], got["\ufffdk"], got["n"]), ("\ufffd", ["a\ufffd"], 1))
                if how != "merge" and how != "set":
                    self.assertEqual(got["y"], "\ufffd")

    def test_bson_types_express_wrote_are_read_as_json_stringify_sees_them(self):
        # connect-mongo with stringify:false keeps a mongoose user._id as an ObjectId.
        import bson
        oid = bson.ObjectId("65a1f0c2e4b0a1b2c3d4e5f6")
        self.client.test.sessions.insert_one({
            "_id": "node", "expires": datetime(2099, 1, 1),
            "session": {"cookie": {"originalMaxAge": None, "expires": None, "httpOnly": True,
                                   "path": "/"},
                        "passport": {"user": oid}, "price": bson.Decimal128("9.99")}})
        got = self.store(stringify=False).get("node")
        self.assertEqual(got["passport"], {"user": "65a1f0c2e4b0a1b2c3d4e5f6"})
        self.assertEqual(got["price"], {"$numberDecimal": "9.99"})

    def test_a_new_session_takes_over_a_document_whose_expires_is_no_date(self):
        # Neither live nor expired by a date comparison: before, the create looped forever.
        for expires in (None, "2020-01-01", 0):
            with self.subTest(expires=expires):
                self.client.test.sessions.delete_many({})
                self.client.test.sessions.insert_one({"_id": "s1", "expires": expires, "session": "{}"})
                store = self.store()
                self.assertTrue(store.merge("s1", change(None, make_record(user="ada"))))
                self.assertEqual(store.get("s1")["user"], "ada")

    def test_either_session_form_is_read_whatever_stringify_says(self):
        store = self.store(stringify=True)
        self.client.test.sessions.insert_one({"_id": "obj", "expires": datetime(2099, 1, 1),
                                              "session": {"cookie": {"path": "/"}, "a": 1}})
        self.assertEqual(store.get("obj"), {"cookie": {"path": "/"}, "a": 1})

    def test_unreadable_session_is_missing_with_a_warning(self):
        store = self.store()
        docs = [{"_id": "bad", "session": "not json"}, {"_id": "nocookie", "session": '{"a":1}'},
                {"_id": "number", "session": 5}]
        self.client.test.sessions.insert_many(docs)
        with self.assertLogs("stores.mongo_store", logging.WARNING):
            for doc in docs:
                self.assertIsNone(store.get(doc["_id"]))
        with self.assertLogs("stores.mongo_store", logging.WARNING):
            self.assertEqual(store.all(), {})

    # -- expiry --------------------------------------------------------------
    def test_expired_document_is_hidden_before_anything_removes_it(self):
        store = self.store()
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        self.client.test.sessions.insert_one({"_id": "old", "session": session.encode_record(
            make_record(-1)), "expires": past})
        self.assertIsNone(store.get("old"))
        self.assertEqual((store.all(), store.ids(), store.length()), ({}, [], 0))
        self.assertEqual(self.client.test.sessions.count_documents({}), 1)
        self.assertEqual(store.prune(), 1)
        self.assertEqual(self.client.test.sessions.count_documents({}), 0)

    def test_document_without_expires_is_live_as_in_connect_mongo(self):
        self.client.test.sessions.insert_one({"_id": "forever",
                                              "session": session.encode_record(make_record())})
        self.assertIsNotNone(self.store().get("forever"))

    def test_a_new_session_never_replaces_a_document_without_expires(self):
        # It is live (connect-mongo's filter, as get() reads it): another visitor's session.
        theirs = session.encode_record(make_record(user="ada"))
        self.client.test.sessions.insert_one({"_id": "forever", "session": theirs})
        store = self.store()
        mine = session.encode_record(make_record(user="eve"))
        self.assertFalse(store.merge("forever", session.Change(None, mine, None)))
        self.assertEqual(self.doc(store, "forever")["session"], theirs)

    def test_set_of_an_expired_record_deletes_the_document(self):
        store = self.store()
        store.set("s1", make_record())
        store.set("s1", make_record(-1))
        self.assertIsNone(self.doc(store, "s1"))

    def test_touch_moves_expires_and_only_expires(self):
        store = self.store()
        first = make_record(60, v=1)
        store.set("s1", first)
        later = make_record(7200, v=2)
        store.touch("s1", later)
        doc = self.doc(store, "s1")
        self.assertEqual(doc["session"], session.encode_record(first))
        self.assertEqual(utc(doc["expires"]), at(later["cookie"]["expires"]))
        self.assertNotIn("lastModified", doc)

    # -- merge: concurrent requests on one session ---------------------------
    def counting(self, store):
        """Count the collection's commands a merge sends, by method name."""
        calls: dict = {}
        for name in ("find_one", "update_one", "insert_one", "replace_one", "delete_one"):
            real = getattr(store.collection, name)

            def counted(*args, _name=name, _real=real, **kwargs):
                calls[_name] = calls.get(_name, 0) + 1
                return _real(*args, **kwargs)
            patcher = mock.patch.object(store.collection, name, counted)
            patcher.start()
            self.addCleanup(patcher.stop)
        return calls

    def test_merge_with_nothing_written_meanwhile_is_one_update(self):
        for stringify in (True, False):
            with self.subTest(stringify=stringify):
                store = self.store(stringify=stringify)
                loaded = make_record(user="ada", views=1)
                store.set("s1", loaded)
                base = store.get_text("s1")
                calls = self.counting(store)
                self.assertTrue(store.merge("s1", change(base, {**loaded, "views": 2})))
                self.assertEqual(calls, {"update_one": 1})
                self.assertEqual(store.get("s1")["views"], 2)
                store.collection.delete_many({})

    def test_merge_unstringified_sets_and_unsets_only_the_fields_this_request_changed(self):
        store = self.store(stringify=False)
        loaded = make_record(user="ada", views=1, csrf="t1")
        store.set("s1", loaded)
        base = store.get_text("s1")
        # Another request added a field meanwhile, straight in the sub-document.
        self.client.test.sessions.update_one({"_id": "s1"}, {"$set": {"session.theme": "dark"}})
        mine = {k: v for k, v in loaded.items() if k != "csrf"}
        mine["views"] = 2
        self.assertTrue(store.merge("s1", change(base, mine)))
        stored = self.doc(store, "s1")["session"]
        self.assertEqual(list(stored), ["cookie", "user", "views", "theme"])
        self.assertEqual((stored["views"], stored["theme"]), (2, "dark"))
        self.assertIsInstance(stored["cookie"]["expires"], datetime)

    def test_merge_unstringified_keeps_a_later_stored_expiry_and_its_cookie(self):
        store = self.store(stringify=False)
        store.set("s1", make_record(3000, user="ada"))
        base = store.get_text("s1")
        # Another request set a longer lifetime meanwhile.  (With nothing written since the
        # load, the request's record is written, its cookie too, as rule 3 has every store do.)
        store.merge("s1", change(base, make_record(7200, user="ada"), keep_later=False))
        before = self.doc(store, "s1")
        self.assertTrue(store.merge("s1", change(base, make_record(60, user="ada", views=1))))
        after = self.doc(store, "s1")
        self.assertEqual(after["expires"], before["expires"])
        self.assertEqual(after["session"]["cookie"], before["session"]["cookie"])
        self.assertEqual(after["session"]["views"], 1)
        self.assertTrue(store.merge("s1", change(base, make_record(60, user="ada", views=2),
                                                 keep_later=False)))
        after = self.doc(store, "s1")
        self.assertAlmostEqual(utc(after["expires"]).timestamp(), time.time() + 60, delta=2)
        self.assertEqual(after["session"]["views"], 2)

    def test_merge_unstringified_keeps_a_remember_me_shorter_than_the_ttl_over_a_session_cookie(self):
        # Found by tests/test_merge_fuzz.py.  This request loaded a browser-session cookie;
        # another set "remember me" for 7 days meanwhile.  The later stored cookie is kept, as
        # Change.apply and every other store keep it, although the ttl (14 days) is later.
        store = self.store(stringify=False)
        store.set("s1", make_record(None, user="ada"))
        base = store.get_text("s1")
        remembered = make_record(7 * 86400, user="ada")
        self.assertTrue(store.merge("s1", change(base, remembered, keep_later=False)))
        mine = change(base, make_record(None, user="ada", cart=["apple"]))
        self.assertTrue(store.merge("s1", mine))
        self.assertEqual(store.get("s1"), {**remembered, "cart": ["apple"]})
        cookie = remembered["cookie"]
        self.assertEqual(mine.kept_times, (cookie["originalMaxAge"], cookie["expires"]))
        self.assertAlmostEqual(utc(self.doc(store, "s1")["expires"]).timestamp(),
                               time.time() + 7 * 86400, delta=2)

    def test_merge_unstringified_writes_its_times_over_a_session_cookie_stored_meanwhile(self):
        # Found by tests/test_merge_fuzz.py.  Another request made the cookie a browser-session
        # one (its document expires at the ttl, later); this request's times go in the record
        # as they go out in its response (kept_times None), and the later expires stays.
        store = self.store(stringify=False, ttl=86400)
        store.set("s1", make_record(3000, user="ada"))
        base = store.get_text("s1")
        self.assertTrue(store.merge("s1", change(base, make_record(None, user="ada"), keep_later=False)))
        rolled = make_record(3600, user="ada", views=1)
        mine = change(base, rolled)
        self.assertTrue(store.merge("s1", mine))
        self.assertIsNone(mine.kept_times)
        self.assertEqual(store.get("s1"), rolled)
        self.assertAlmostEqual(utc(self.doc(store, "s1")["expires"]).timestamp(),
                               time.time() + 86400, delta=2)

    def test_merge_unstringified_writes_a_key_moved_last_where_the_request_put_it(self):
        # Found by tests/test_merge_fuzz.py.  Nothing written since the load: the request's
        # record is written as it is (rule 3), keys in its order, as every other store does.
        store = self.store(stringify=False)
        store.set("s1", make_record(user="ada", cart=[1]))
        base = store.get_text("s1")
        mine = session.decode_record(base)
        mine["user"] = mine.pop("user")  # deleted and set again: last, as in express
        mine["cart"].append(2)
        self.assertTrue(store.merge("s1", change(base, mine)))
        self.assertEqual(store.get_text("s1"), session.encode_record(mine))

    def test_merge_unstringified_keeps_keys_mongodb_cannot_address_as_keys(self):
        store = self.store(stringify=False)
        loaded = make_record(**{"a.b": 1, "user": "ada"})
        store.set("s1", loaded)
        base = store.get_text("s1")
        store.set("s1", {**loaded, "views": 9})  # another request, meanwhile
        self.assertTrue(store.merge("s1", change(base, {**loaded, "a.b": 2, "c.d": 3})))
        stored = self.doc(store, "s1")["session"]
        self.assertEqual({k: stored[k] for k in ("a.b", "c.d", "views", "user")},
                         {"a.b": 2, "c.d": 3, "views": 9, "user": "ada"})
        self.assertNotIn("a", stored)

    def test_merge_unstringified_into_a_string_session_compares_and_sets(self):
        text = session.encode_record(make_record(user="ada"))
        self.client.test.sessions.insert_one({"_id": "s1", "session": text,
                                              "expires": datetime.now(timezone.utc) + timedelta(hours=1)})
        store = self.store(stringify=False)
        base = store.get_text("s1")
        self.assertEqual(base, text)
        self.assertTrue(store.merge("s1", change(base, make_record(user="ada", views=1))))
        self.assertEqual(self.doc(store, "s1")["session"]["views"], 1)

    def test_merge_of_a_new_session_takes_over_only_an_expired_document(self):
        for stringify in (True, False):
            with self.subTest(stringify=stringify):
                store = self.store(stringify=stringify)
                now = datetime.now(timezone.utc)
                self.client.test.sessions.insert_many([
                    {"_id": "old", "session": "{}", "expires": now - timedelta(seconds=5)},
                    {"_id": "live", "session": "{}", "expires": now + timedelta(hours=1)}])
                record = make_record(user="ada")
                self.assertTrue(store.merge("old", change(None, record)))
                self.assertEqual(store.get("old"), record)
                self.assertFalse(store.merge("live", change(None, record)))
                self.assertEqual(self.doc(store, "live")["session"], "{}")
                store.collection.delete_many({})

    def test_touch_keeps_a_later_expiry_unless_the_request_set_the_lifetime(self):
        store = self.store()
        store.set("s1", make_record(7200))
        before = self.doc(store, "s1")["expires"]
        store.touch("s1", make_record(60))
        self.assertEqual(self.doc(store, "s1")["expires"], before)
        store.touch("s1", touch_record(make_record(60), keep_later=False))
        self.assertAlmostEqual(utc(self.doc(store, "s1")["expires"]).timestamp(), time.time() + 60,
                               delta=2)

    def test_racing_first_writes_of_one_session_both_land(self):
        store = self.store()
        real = store.collection.update_one
        calls = []

        def update_one(*args, **kwargs):
            calls.append(args)
            if len(calls) == 1:  # another request inserted the same new session meanwhile
                raise pymongo.errors.DuplicateKeyError("E11000 duplicate key error", 11000)
            return real(*args, **kwargs)
        with mock.patch.object(store.collection, "update_one", update_one):
            store.set("s1", make_record(user="ada"))
        self.assertEqual(len(calls), 2)
        self.assertEqual(store.get("s1")["user"], "ada")

    def test_touch_of_a_document_the_ttl_monitor_removed_is_a_no_op(self):
        for touch_after in (0, 60):
            store = self.store(touch_after=touch_after)
            store.set("s1", make_record())
            self.client.test.sessions.delete_one({"_id": "s1"})  # as the TTL monitor does
            store.touch("s1", make_record(7200))
            self.assertIsNone(self.doc(store, "s1"))

    # -- touch_after: connect-mongo's lazy touch -----------------------------
    def test_touch_after_writes_last_modified(self):
        store = self.store(touch_after=3600)
        store.set("s1", make_record())
        doc = self.doc(store, "s1")
        self.assertEqual(list(doc), ["_id", "session", "expires", "lastModified"])
        self.assertAlmostEqual(utc(doc["lastModified"]).timestamp(), time.time(), delta=2)
        self.assertNotIn("lastModified", store.get("s1"), "lastModified never reaches the app")

    def test_touch_within_touch_after_is_skipped(self):
        store = self.store(touch_after=3600)
        store.set("s1", make_record(60))
        before = self.doc(store, "s1")
        store.touch("s1", make_record(7200))
        self.assertEqual(self.doc(store, "s1"), before)

    def test_a_touch_that_changes_the_cookies_lifetime_is_never_skipped(self):
        # save(), then "remember me": the lifetime changed after the write must reach it.
        store = self.store(touch_after=3600)
        store.set("s1", make_record(60))
        longer = make_record(30 * 86400)
        store.touch("s1", touch_record(longer, keep_later=False))
        self.assertEqual(utc(self.doc(store, "s1")["expires"]), at(longer["cookie"]["expires"]))

    def test_touch_after_touch_after_has_passed_moves_expires(self):
        store = self.store(touch_after=10)
        store.set("s1", make_record(60))
        old = datetime.now(timezone.utc) - timedelta(seconds=11)
        self.client.test.sessions.update_one({"_id": "s1"}, {"$set": {"lastModified": old}})
        later = make_record(7200)
        store.touch("s1", later)
        doc = self.doc(store, "s1")
        self.assertEqual(utc(doc["expires"]), at(later["cookie"]["expires"]))
        self.assertGreater(utc(doc["lastModified"]), old + timedelta(seconds=10))

    def test_touch_after_touches_a_document_without_last_modified(self):
        self.store().set("s1", make_record(60))          # written without touch_after
        later = make_record(7200)
        self.store(touch_after=60).touch("s1", later)
        self.assertEqual(utc(self.doc(self.store(), "s1")["expires"]), at(later["cookie"]["expires"]))

    # -- auto_remove ---------------------------------------------------------
    def test_native_creates_the_ttl_index_on_first_use(self):
        store = self.store(auto_remove="native")
        self.assertNotIn("expires_1", store.collection.index_information())
        store.get("anything")
        index = store.collection.index_information()["expires_1"]
        self.assertEqual((index["key"], index["expireAfterSeconds"]), ([("expires", 1)], 0))

    def test_disabled_and_interval_create_no_index(self):
        for mode in ("disabled", "interval"):
            store = self.store(auto_remove=mode)
            store.set("s1", make_record())
            self.assertEqual(list(store.collection.index_information()), ["_id_"], mode)

    def test_clear_keeps_the_ttl_index(self):
        store = self.store(auto_remove="native")
        store.set("s1", make_record())
        store.clear()
        self.assertEqual(store.length(), 0)
        self.assertIn("expires_1", store.collection.index_information())

    def test_interval_removes_expired_documents_until_closed(self):
        class QuickStore(MongoStore):
            auto_remove_interval = 0.05
        store = QuickStore(self.client, auto_remove="interval")
        self.addCleanup(store.close)
        coll = self.client.test.sessions
        coll.insert_one({"_id": "old", "session": "{}", "expires": datetime(2000, 1, 1)})
        store.set("live", make_record())
        deadline = time.monotonic() + 5
        while coll.find_one({"_id": "old"}) is not None:
            self.assertLess(time.monotonic(), deadline, "the interval remover never ran")
            time.sleep(0.02)
        self.assertIsNotNone(coll.find_one({"_id": "live"}))
        thread = store._remover
        store.close()
        self.assertFalse(thread.is_alive())

    # -- construction ------------------------------------------------------
    def test_bad_options_are_rejected_at_construction_with_the_option_named(self):
        bad = [({"ttl": 0}, ValueError, "ttl"), ({"ttl": -1}, ValueError, "ttl"),
               ({"ttl": True}, ValueError, "ttl"), ({"ttl": "60"}, ValueError, "ttl"),
               ({"ttl": float("inf")}, ValueError, "ttl"), ({"ttl": float("nan")}, ValueError, "ttl"),
               ({"ttl": 10 ** 400}, ValueError, "ttl"),
               ({"touch_after": -1}, ValueError, "touch_after"),
               ({"touch_after": None}, ValueError, "touch_after"),
               ({"auto_remove": "sometimes"}, ValueError, "auto_remove"),
               ({"auto_remove": True}, ValueError, "auto_remove"),
               ({"stringify": "yes"}, TypeError, "stringify"),
               ({"collection": ""}, ValueError, "collection"),
               ({"collection": "a$b"}, ValueError, "collection"),
               ({"db_name": ""}, ValueError, "db_name"),
               ({"url": "mongodb://127.0.0.1:1"}, ValueError, "client or a url")]
        for kwargs, error, words in bad:
            with self.assertRaisesRegex(error, words, msg=repr(kwargs)):
                MongoStore(self.client, **kwargs)
        for client in ("mongodb://127.0.0.1:1", 5):  # a URL given as the client
            with self.assertRaisesRegex(TypeError, "client.*url=", msg=repr(client)):
                MongoStore(client)

    def test_a_client_passed_in_is_never_closed(self):
        store = MongoStore(self.client, auto_remove="disabled")
        with mock.patch.object(self.client, "close") as close:
            store.close()
            store.close()
        close.assert_not_called()

    def test_missing_driver_names_the_package_to_install(self):
        with mock.patch.dict(sys.modules, {"pymongo": None, "pymongo.errors": None}):
            with self.assertRaisesRegex(ImportError, "pip install pymongo"):
                MongoStore(url="mongodb://127.0.0.1:1")

    def test_importing_the_module_does_not_import_the_driver(self):
        code = "import sys, stores.mongo_store; print('pymongo' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        self.assertEqual(out, "False")


@requires(HAVE_MONGOMOCK, "needs pymongo and mongomock: pip install pymongo mongomock")
class TestMiddlewareOverMongoStore(unittest.TestCase):
    def call(self, mw, cookie=None):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
                   "wsgi.url_scheme": "http"}
        if cookie:
            environ["HTTP_COOKIE"] = cookie
        headers = {}
        body = b"".join(mw(environ, lambda status, h, exc=None: headers.update(h)))
        return body, headers.get("Set-Cookie", "").split(";")[0] or None

    def test_login_then_lazy_touch_through_the_middleware(self):
        client = mongomock.MongoClient()
        store = MongoStore(client, auto_remove="disabled", touch_after=3600)

        def app(environ, start_response):
            sess = environ["session"]
            if "user" not in sess:
                sess["user"] = "ada"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [sess["user"].encode()]
        mw = session.SessionMiddleware(app, secret="m", store=store, rolling=True,
                                       cookie={"max_age": 600})
        body, cookie = self.call(mw)
        self.assertEqual(body, b"ada")
        [doc] = client.test.sessions.find()
        self.assertEqual(session.decode_record(doc["session"])["user"], "ada")
        time.sleep(0.01)  # so a touch would write a different expires
        body, again = self.call(mw, cookie)   # unchanged: only touch, skipped as too recent
        self.assertEqual(body, b"ada")
        self.assertEqual(client.test.sessions.find_one(), doc)

    def test_a_documents_later_expiry_sends_the_cookie_times_that_are_later(self):
        # stringify=False writes fields; a touch moves the document's expires alone, so its
        # cookie's own times may be older than this request's: the response keeps the later.
        client = mongomock.MongoClient()
        store = MongoStore(client, stringify=False)
        store.set("s1", make_record(n=1))
        sessions = client.test.sessions

        def stale_cookie_touched_later():
            sessions.update_one({"_id": "s1"}, {"$set": {
                "session.cookie.expires": datetime.now(timezone.utc) - timedelta(seconds=600),
                "expires": datetime.now(timezone.utc) + timedelta(seconds=3605)}})

        def remembered_meanwhile():  # "remember me" (30 days), saved by another request
            at = datetime.now(timezone.utc) + timedelta(days=30)
            sessions.update_one({"_id": "s1"}, {"$set": {
                "session.cookie.originalMaxAge": 30 * 86400 * 1000, "session.cookie.expires": at,
                "expires": at}})
        for meanwhile, expected in ((stale_cookie_touched_later, 3600),
                                    (remembered_meanwhile, 30 * 86400)):
            with self.subTest(meanwhile.__name__):
                def app(environ, start_response, meanwhile=meanwhile):
                    environ["session"]["n"] += 1
                    meanwhile()  # after this request loaded the session, before it saves
                    start_response("200 OK", [("Content-Type", "text/plain")])
                    return [b"ok"]
                mw = session.SessionMiddleware(app, secret="m", store=store, cookie={"max_age": 3600})
                headers = {}
                b"".join(mw({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
                             "wsgi.url_scheme": "http", "HTTP_COOKIE": f"connect.sid={_signed('s1', 'm')}"},
                            lambda status, h, exc=None: headers.update(h)))
                sent = email.utils.parsedate_to_datetime(
                    re.search(r"Expires=([^;]+)", headers["Set-Cookie"]).group(1)).timestamp()
                self.assertAlmostEqual(sent - time.time(), expected, delta=5)


def _signed(sid: str, secret: str) -> str:
    from urllib.parse import quote
    return quote("s:" + session.sign(sid, secret), safe="")


# ---------------------------------------------------------------- 2. mockupdb: the wire

@requires(HAVE_MOCKUPDB, "needs pymongo and mockupdb: pip install pymongo mockupdb")
class TestMongoStoreWire(unittest.TestCase):
    """The commands pymongo sends for each store operation, as a MongoDB server sees them."""

    @classmethod
    def setUpClass(cls):
        cls.server = MockupDB(auto_ismaster={"maxWireVersion": 21})
        cls.server.run()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def setUp(self):
        self.client = self.connect("/appdb")

    def connect(self, path=""):
        client = pymongo.MongoClient(self.server.uri + path, serverSelectionTimeoutMS=5000)
        self.addCleanup(client.close)
        return client

    def store(self, client=None, **kwargs):
        kwargs.setdefault("auto_remove", "disabled")
        store = MongoStore(client or self.client, **kwargs)
        self.addCleanup(store.close)
        return store

    def exchange(self, fn, *args, replies):
        """Run fn(*args), answer each command it sends with the next reply; return the commands."""
        future = go(fn, *args)
        commands = []
        for reply in replies:
            request = self.server.receives(timeout=10)
            commands.append(request.doc)
            request.reply(reply)
        self.result = future(timeout=10)
        return commands

    @staticmethod
    def cursor(*docs, ns="appdb.sessions"):
        return {"cursor": {"id": 0, "ns": ns, "firstBatch": list(docs)}, "ok": 1}

    def assert_live_filter(self, query):
        self.assertEqual(list(query["$or"][0]), ["expires"])
        self.assertEqual(query["$or"][0]["expires"], {"$exists": False})
        gt = utc(query["$or"][1]["expires"]["$gt"])
        self.assertAlmostEqual(gt.timestamp(), time.time(), delta=2)

    def test_get_is_find_one_by_id_among_unexpired(self):
        record = make_record(user="ada")
        [find] = self.exchange(self.store().get, "s1", replies=[self.cursor(
            {"_id": "s1", "session": session.encode_record(record)})])
        self.assertEqual(find["find"], "sessions")
        self.assertEqual(find["$db"], "appdb")
        self.assertEqual(list(find["filter"]), ["_id", "$or"])
        self.assertEqual(find["filter"]["_id"], "s1")
        self.assert_live_filter(find["filter"])
        self.assertEqual(find["projection"], {"session": 1})
        self.assertEqual(find["limit"], 1)
        self.assertEqual(self.result, record)

    def test_set_is_an_upsert_of_session_and_expires(self):
        record = make_record(3600, user="ada")
        [update] = self.exchange(self.store().set, "s1", record, replies=[
            {"n": 1, "nModified": 0, "upserted": [{"index": 0, "_id": "s1"}], "ok": 1}])
        self.assertEqual(update["update"], "sessions")
        [op] = update["updates"]
        self.assertEqual(op["q"], {"_id": "s1"})
        self.assertTrue(op["upsert"])
        self.assertFalse(op.get("multi", False))
        fields = op["u"]["$set"]
        self.assertEqual(list(fields), ["session", "expires"])
        self.assertEqual(fields["session"], session.encode_record(record))
        self.assertEqual(utc(fields["expires"]), at(record["cookie"]["expires"]))

    def test_set_with_touch_after_and_unstringified_record(self):
        record = make_record(3600, user="ada")
        store = self.store(touch_after=300, stringify=False)
        [update] = self.exchange(store.set, "s1", record, replies=[{"n": 1, "ok": 1}])
        fields = update["updates"][0]["u"]["$set"]
        self.assertEqual(list(fields), ["session", "expires", "lastModified"])
        self.assertEqual(fields["session"]["user"], "ada")
        self.assertEqual(utc(fields["session"]["cookie"]["expires"]), at(record["cookie"]["expires"]))
        self.assertAlmostEqual(utc(fields["lastModified"]).timestamp(), time.time(), delta=2)

    def test_touch_sets_only_expires_and_never_upserts(self):
        record = make_record(7200)
        [update] = self.exchange(self.store().touch, "s1", record,
                                 replies=[{"n": 0, "nModified": 0, "ok": 1}])
        [op] = update["updates"]
        self.assertEqual(op["q"]["_id"], "s1")
        self.assert_live_filter(op["q"])
        self.assertFalse(op.get("upsert", False))
        self.assertEqual(list(op["u"]), ["$set"])
        self.assertEqual(list(op["u"]["$set"]), ["expires"])
        self.assertEqual(utc(op["u"]["$set"]["expires"]), at(record["cookie"]["expires"]))
        self.assertEqual(utc(op["q"]["expires"]["$lt"]), at(record["cookie"]["expires"]))  # keep_later
        self.assertIsNone(self.result, "no match (document gone) is not an error")

    def test_merge_is_a_compare_and_set_on_the_stored_string(self):
        loaded = make_record(3600, user="ada")
        base = session.encode_record(loaded)
        mine = {**loaded, "views": 1}
        [update] = self.exchange(self.store().merge, "s1", change(base, mine),
                                 replies=[{"n": 1, "nModified": 1, "ok": 1}])
        [op] = update["updates"]
        self.assertEqual(list(op["q"]), ["_id", "session", "$or"])
        self.assertEqual((op["q"]["_id"], op["q"]["session"]), ("s1", base))
        self.assert_live_filter(op["q"])
        self.assertFalse(op.get("upsert", False))
        self.assertEqual(op["u"]["$set"], {"session": session.encode_record(mine)})
        self.assertEqual(utc(op["u"]["$max"]["expires"]), at(loaded["cookie"]["expires"]))
        self.assertIs(self.result, True)

    def test_unstringified_merge_is_one_update_of_the_changed_fields(self):
        loaded = make_record(3600, user="ada", views=1, csrf="t")
        mine = {k: v for k, v in loaded.items() if k != "csrf"}
        mine["views"] = 2
        store = self.store(stringify=False)
        [update] = self.exchange(store.merge, "s1", change(session.encode_record(loaded), mine),
                                 replies=[{"n": 1, "nModified": 1, "ok": 1}])
        [op] = update["updates"]
        self.assertEqual(op["q"]["_id"], "s1")
        self.assertEqual(op["q"]["session.cookie"], {"$type": "object", "$not": {"$type": "array"}})
        self.assertEqual(op["q"]["session.cookie.expires"], {"$exists": True})
        self.assert_live_filter(op["q"])
        # Over a stored cookie that expires no later than this one (a later one is kept).
        [[none, lte]] = [clause["$or"] for clause in op["q"]["$and"]]
        self.assertEqual(none, {"session.cookie.expires": None})
        self.assertEqual(utc(lte["session.cookie.expires"]["$lte"]), at(loaded["cookie"]["expires"]))
        self.assertEqual(utc(op["u"]["$max"]["expires"]), at(loaded["cookie"]["expires"]))
        # The cookie's two times only: its attributes keep what another request stored.
        self.assertEqual(list(op["u"]["$set"]), ["session.views", "session.cookie.originalMaxAge",
                                                 "session.cookie.expires"])
        self.assertEqual(op["u"]["$set"]["session.views"], 2)
        self.assertEqual(op["u"]["$set"]["session.cookie.originalMaxAge"],
                         loaded["cookie"]["originalMaxAge"])
        self.assertEqual(utc(op["u"]["$set"]["session.cookie.expires"]), at(loaded["cookie"]["expires"]))
        self.assertEqual(op["u"]["$unset"], {"session.csrf": ""})
        self.assertIs(self.result, True)

    def test_unstringified_merge_adding_two_keys_compares_and_sets(self):
        # MongoDB 5.0 and later $set several new fields in lexicographic order, not the
        # record's: a request that adds more than one key is written whole, keys in its order.
        loaded = make_record(3600, user="ada")
        base = session.encode_record(loaded)
        store = self.store(stringify=False)
        [first] = self.exchange(store.merge, "s1", change(base, {**loaded, "zeta": 1, "alpha": 2}),
                                replies=[self.cursor()])  # the document read first: gone
        self.assertEqual(first["find"], "sessions")
        self.assertIs(self.result, False)

    def test_merge_of_a_new_session_is_an_insert(self):
        record = make_record(3600, user="ada")
        [insert] = self.exchange(self.store().merge, "s1", change(None, record),
                                 replies=[{"n": 1, "ok": 1}])
        [doc] = insert["documents"]
        self.assertEqual(list(doc), ["_id", "session", "expires"])
        self.assertEqual(doc["session"], session.encode_record(record))
        self.assertIs(self.result, True)

    def test_lazy_touch_filters_on_last_modified(self):
        store = self.store(touch_after=300)
        [update] = self.exchange(store.touch, "s1", make_record(), replies=[{"n": 1, "ok": 1}])
        op = update["updates"][0]
        live, lazy = op["q"]["$and"]
        self.assert_live_filter(live)
        self.assertEqual(lazy["$or"][0], {"lastModified": {"$exists": False}})
        cutoff = utc(lazy["$or"][1]["lastModified"]["$lte"])
        self.assertAlmostEqual(cutoff.timestamp(), time.time() - 300, delta=2)
        self.assertEqual(list(op["u"]["$set"]), ["expires", "lastModified"])

    def test_destroy_is_delete_one_by_id(self):
        [delete] = self.exchange(self.store().destroy, "s1", replies=[{"n": 1, "ok": 1}])
        self.assertEqual(delete["delete"], "sessions")
        self.assertEqual(delete["deletes"], [{"q": {"_id": "s1"}, "limit": 1}])

    def test_native_creates_the_ttl_index_once_before_the_first_command(self):
        store = self.store(auto_remove="native")
        create, find = self.exchange(store.get, "s1", replies=[{"ok": 1}, self.cursor()])
        self.assertEqual(create["createIndexes"], "sessions")
        self.assertEqual(create["$db"], "appdb")
        [index] = create["indexes"]
        self.assertEqual(index["key"], {"expires": 1})
        self.assertEqual(index["expireAfterSeconds"], 0)
        self.assertEqual(index["name"], "expires_1")
        self.assertIn("find", find)
        [find] = self.exchange(store.get, "s2", replies=[self.cursor()])
        self.assertIn("find", find)

    def test_an_existing_conflicting_index_is_kept_with_a_warning(self):
        store = self.store(auto_remove="native")
        conflict = {"ok": 0, "code": 85, "codeName": "IndexOptionsConflict",
                    "errmsg": "An equivalent index already exists with a different name"}
        with self.assertLogs("stores.mongo_store", logging.WARNING):
            self.exchange(store.get, "s1", replies=[conflict, self.cursor()])
        self.assertIsNone(self.result)

    def test_database_comes_from_the_url_else_test_unless_db_name(self):
        for client, db_name, expected in [(self.client, None, "appdb"),
                                          (self.connect(), None, "test"),
                                          (self.client, "other", "other")]:
            store = self.store(client, db_name=db_name)
            [find] = self.exchange(store.get, "s1", replies=[self.cursor(ns=expected + ".sessions")])
            self.assertEqual(find["$db"], expected)

    def test_length_counts_only_unexpired_documents(self):
        [agg] = self.exchange(self.store().length, replies=[self.cursor({"_id": 1, "n": 4})])
        self.assertEqual(agg["aggregate"], "sessions")
        self.assert_live_filter(agg["pipeline"][0]["$match"])
        self.assertEqual(self.result, 4)

    def test_clear_deletes_documents_and_keeps_the_collection(self):
        [delete] = self.exchange(self.store().clear, replies=[{"n": 3, "ok": 1}])
        self.assertEqual(delete["deletes"], [{"q": {}, "limit": 0}])

    def test_prune_deletes_every_expired_document(self):
        [delete] = self.exchange(self.store().prune, replies=[{"n": 2, "ok": 1}])
        [op] = delete["deletes"]
        self.assertEqual(op["limit"], 0)
        self.assertAlmostEqual(utc(op["q"]["expires"]["$lte"]).timestamp(), time.time(), delta=2)
        self.assertEqual(self.result, 2)

    def test_store_made_from_a_url_closes_its_client(self):
        store = MongoStore(url=self.server.uri + "/appdb", auto_remove="disabled")
        with mock.patch.object(store.client, "close", wraps=store.client.close) as close:
            store.close()
        close.assert_called_once()


# ---------------------------------------------------------------- 3. a real server

@unittest.skipUnless(MONGODB_URL, "set MONGODB_URL=mongodb://host:port to test a real MongoDB")
@requires(HAVE_PYMONGO, "needs pymongo: pip install pymongo")
class TestMongoStoreRealServer(StoreContract, unittest.TestCase):
    """The conformance suite against a real server, in a throwaway database."""

    prune_counts = False  # the server's TTL monitor (every 60 s) may remove them first

    @classmethod
    def setUpClass(cls):
        cls.client = pymongo.MongoClient(MONGODB_URL, serverSelectionTimeoutMS=10000)
        cls.db_name = "express_session_py_test_" + uuid.uuid4().hex[:8]

    @classmethod
    def tearDownClass(cls):
        cls.client.drop_database(cls.db_name)
        cls.client.close()

    def make_store(self):
        return self.ttl_store(1209600)

    def ttl_store(self, ttl):
        self.client[self.db_name].sessions.drop()
        return MongoStore(self.client, db_name=self.db_name, ttl=ttl, auto_remove="native")

    def reopen(self, store):
        return MongoStore(self.client, db_name=self.db_name, ttl=store.ttl)

    def raw_bytes(self, store, sid):
        return store.collection.find_one({"_id": sid})["session"].encode("utf-8")

    def test_real_ttl_index_and_document_shape(self):
        record = make_record(3600, user="ada")
        self.store.set("s1", record)
        index = self.store.collection.index_information()["expires_1"]
        self.assertEqual((index["key"], index["expireAfterSeconds"]), ([("expires", 1)], 0))
        doc = self.store.collection.find_one({"_id": "s1"})
        self.assertEqual(list(doc), ["_id", "session", "expires"])
        self.assertEqual(utc(doc["expires"]), at(record["cookie"]["expires"]))

    def test_real_touch_of_a_removed_document_is_a_no_op(self):
        self.store.set("s1", make_record())
        self.store.collection.delete_one({"_id": "s1"})
        self.store.touch("s1", make_record(7200))
        self.assertIsNone(self.store.collection.find_one({"_id": "s1"}))


if __name__ == "__main__":
    unittest.main()
