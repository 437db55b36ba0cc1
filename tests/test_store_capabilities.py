"""Store capabilities: a store that offers get_text and merge is used through them, and
every request comes out the same with and without them.

As Django's CacheDBSessionTests runs the backend suite over its cache and adds
``test_exists_searches_cache_first``, this runs the same requests over a store with the
capabilities and one without, and proves the shortcut is taken when it is offered.
"""
from __future__ import annotations

import re
import time
import unittest

import session
from tests.harness import (NAME, CapableMemoryStore, Harness, PlainMemoryStore, cookie_value, iso_ms,
                           make_record, parse_iso, sess)
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)


def _counting_ids():
    counter = iter(range(1, 10 ** 6))
    return lambda environ: f"id{next(counter)}"


def _incr(s):
    s["n"] = s.get("n", 0) + 1


def _set_max_age(s):
    s.cookie.max_age = 60
    _incr(s)


def _reload(s):
    s["n"] = 99
    s.reload()


def _save_then_change(s):
    _incr(s)
    s.save()
    s["after"] = True


def _regenerate(s):
    s.regenerate()
    s["fresh"] = 1


# Each: the middleware's options, then one action per request (None: the app does not
# touch the session).  Cookies here have no expiry until an action gives them one.
TEXT_SCENARIOS = {
    "default": ({}, [_incr, _incr, lambda s: s.get("n"), None, lambda s: s.setdefault("l", []).append(1),
                     lambda s: s["l"].append(2), lambda s: s.cookie.path, lambda s: s.clear(),
                     lambda s: len(s), _incr, _save_then_change, _reload, lambda s: s.touch(), _incr,
                     _regenerate, _incr, _set_max_age, _incr, lambda s: s.destroy(), _incr, _incr]),
    "rolling": ({"rolling": True}, [_incr, _incr, None, lambda s: s.get("n"), _incr]),
    "resave": ({"resave": True}, [_incr, None, lambda s: s.get("n"), _incr]),
    "save_uninitialized": ({"save_uninitialized": True}, [None, None, _incr, lambda s: s.clear(), None]),
    "unset destroy": ({"unset": "destroy"}, [_incr, _incr, lambda s: s.pop("n"), _incr]),
    "cookie options": ({"cookie": {"domain": "example.com", "same_site": "lax", "priority": "High",
                                   "partitioned": True, "secure": False, "http_only": False}},
                       [_incr, _incr, None, lambda s: s.cookie.domain, _incr]),
}


class TestStoreCapabilities(unittest.TestCase):
    """A store that offers get_text and merge is read and written through them; one that does
    not (a subclass overriding get and set) through get and set.  Everything a request does
    must come out the same either way, whatever the options."""

    def run_scenario(self, store, options, actions, body="list"):
        seen, views = [], []

        def action(environ):
            s = sess(environ)
            seen.append(s)
            views.append(dict(dict.items(s)))
            if actions[len(seen) - 1] is not None:
                if options.get("unset") == "destroy" and len(seen) == len(actions):
                    environ["session"] = None
                else:
                    actions[len(seen) - 1](s)
        h = Harness(action, store=store, genid=_counting_ids(), **options)
        if body != "list":
            h.app = self.streaming_app(h.app, body)
            h.mw.app = h.app
        results = []
        for _ in actions:
            resp = h.request()
            headers = [(k, re.sub(r"Expires=[^;]*", "Expires=~", v)) for k, v in resp.headers]
            cookie = resp.cookie()
            records = {}
            for sid, record in sorted(session.MemoryStore.all(store).items()):
                expires = record["cookie"].pop("expires")
                records[sid] = (record, expires is not None,
                                expires and abs(parse_iso(expires) - time.time()) // 2,
                                round((store.expiry(sid) - time.time()) / 2))
            results.append((resp.status, headers, resp.body, cookie and cookie.expires is not None,
                            records))
        return results, views

    @staticmethod
    def streaming_app(app, body):
        """The Harness app with its body as a generator of one chunk ("generator") or of two
        ("generator2"), or given to write() with an empty list returned ("write")."""
        def streaming(environ, start_response):
            chunks = []
            write = None

            def capture(status, headers, exc_info=None):
                nonlocal write
                write = start_response(status, headers, exc_info)
                return write
            chunks = app(environ, capture)
            if body == "write":
                for chunk in chunks:
                    write(chunk)
                return []
            if body == "generator":
                return (chunk for chunk in chunks)
            return (chunk[:i] for chunk in chunks for i in (1, len(chunk)))  # "o", "ok"
        return streaming

    def test_with_and_without_capabilities_requests_responses_and_records_are_the_same(self):
        for body in ("list", "generator", "generator2", "write"):
            for name, (options, actions) in TEXT_SCENARIOS.items():
                for max_age in (None, 60):
                    if max_age is not None:
                        options = {**options, "cookie": {**options.get("cookie", {}),
                                                         "max_age": max_age}}
                    with self.subTest(name, body=body, max_age=max_age):
                        capable, plain = CapableMemoryStore(), PlainMemoryStore()
                        as_text, views_text = self.run_scenario(capable, options, actions, body)
                        as_records, views_records = self.run_scenario(plain, options, actions, body)
                        self.assertEqual(views_text, views_records)
                        for i, (a, b) in enumerate(zip(as_text, as_records)):
                            self.assertEqual(a, b, f"request {i + 1}")

    def test_a_store_that_offers_get_text_and_merge_is_used_through_them(self):
        # As Django's test_exists_searches_cache_first: the shortcut is taken when offered.
        for cookie in (None, {"max_age": 60}, {"secure": "auto", "same_site": "auto"},
                       lambda environ: {"max_age": 30}):
            with self.subTest(cookie=cookie):
                calls = []

                class Watched(session.MemoryStore):
                    def get(self, sid):
                        calls.append("get")
                        return super().get(sid)

                    def get_text(self, sid):
                        calls.append("get_text")
                        return super().get_text(sid)

                    def set(self, sid, record):
                        calls.append("set")
                        return super().set(sid, record)

                    def merge(self, sid, change):
                        calls.append("merge")
                        return super().merge(sid, change)
                h = Harness(lambda e: _incr(sess(e)), store=Watched(), cookie=cookie)
                h.request()
                h.request()
                self.assertEqual(calls, ["merge", "get_text", "merge"])

    def test_a_subclass_overriding_get_and_set_alone_is_read_and_written_through_them(self):
        store = PlainMemoryStore()
        h = Harness(lambda e: _incr(sess(e)), store=store)
        h.request()
        h.request()
        self.assertEqual(store.count("set"), 2)
        self.assertGreaterEqual(store.count("get"), 1)
        self.assertEqual(session.MemoryStore.get(store, store.ids("set")[0])["n"], 2)

    def test_a_record_express_wrote_in_its_own_form_is_read_through_the_fast_path_too(self):
        # Another key order and spacing than ours: found not to match, decoded in full.
        store = CapableMemoryStore()
        seen = []
        h = Harness(lambda e: (seen.append(dict(dict.items(sess(e)))), _incr(sess(e))),
                    store=store, cookie={"max_age": 60})
        sid = "express-written"
        text = ('{"n": 1, "cookie": {"path": "/", "httpOnly": true, '
                f'"expires": "{iso_ms(time.time() + 60)}", "originalMaxAge": 60000}}}}')
        # Planted through merge (a new record's text, stored as given), not set (which encodes).
        self.assertTrue(session.MemoryStore.merge(store, sid, session.Change(None, text, time.time() + 60)))
        self.assertEqual(session.MemoryStore.get_text(store, sid), text)
        h.client.jar[NAME] = cookie_value(sid)
        h.request()
        self.assertEqual(seen, [{"n": 1}])
        self.assertEqual(store.get(sid)["n"], 2)
        self.assertEqual(list(store.get(sid)), ["n", "cookie"])

    def writes_meanwhile(self, store, change):
        """A request whose app does ``change(session)`` and then, before the response, another
        writer replaces the record: what the store holds after the request."""
        def action(environ):
            s = sess(environ)
            change(s)
            store.set(sid, make_record({"n": 9}, max_age=None))
        h = Harness(action, store=store)
        sid = h.seed({"n": 1, "l": [1]}, max_age=None)
        h.request()
        return store.get(sid)

    def test_an_unchanged_session_is_touched_and_leaves_a_write_made_meanwhile(self):
        for store in (CapableMemoryStore(), PlainMemoryStore()):
            with self.subTest(type(store).__name__):
                # Reading a list takes a snapshot; the data is unchanged at the end: no save.
                self.assertEqual(self.writes_meanwhile(store, lambda s: s["l"])["n"], 9)

    def test_a_session_the_app_saved_is_not_saved_again_over_a_write_made_meanwhile(self):
        def save(s):
            s["n"] = 5
            s.save()
        for store in (CapableMemoryStore(), PlainMemoryStore()):
            with self.subTest(type(store).__name__):
                self.assertEqual(self.writes_meanwhile(store, save)["n"], 9)

    def test_a_session_read_as_text_is_compared_with_its_stored_json_not_encoded_twice(self):
        # Reading a list hands out something the app may change: the data as loaded must be
        # kept to compare with.  Read as text, that is the stored JSON itself.
        counts = {}
        for store in (CapableMemoryStore(), PlainMemoryStore()):
            h = Harness(lambda e: sess(e)["l"], store=store)
            h.seed({"l": [1]}, max_age=None)
            encode = session._encode
            calls = []
            session._encode = lambda value: calls.append(value) or encode(value)
            try:
                h.request()
            finally:
                session._encode = encode
            counts[type(store).__name__] = len(calls)
        # The current data once at the end; through get(), the loaded data once more before.
        self.assertEqual(counts, {"CapableMemoryStore": 1, "PlainMemoryStore": 2})

    def test_the_session_lets_go_of_the_environ_when_the_request_ends(self):
        for options in ({}, {"rolling": True}):
            for store in (CapableMemoryStore(), PlainMemoryStore()):
                with self.subTest(type(store).__name__, **options):
                    seen = []
                    h = Harness(lambda e: (seen.append(sess(e)), _incr(sess(e))), store=store, **options)
                    h.request()
                    h.request()
                    self.assertEqual([s._req.context for s in seen], [None, None])

    def test_a_record_with_another_cookie_is_read_whole(self):
        store = session.MemoryStore()
        h = Harness(lambda e: (seen.append((sess(e).cookie.domain, sess(e).cookie.http_only)),
                               _incr(sess(e))), store=store)
        seen = []
        sid = h.seed({"n": 1}, max_age=None, domain="example.com", httpOnly=False)
        h.request()
        self.assertEqual(seen, [("example.com", False)])
        record = store.get(sid)
        self.assertEqual((record["n"], record["cookie"]["domain"], record["cookie"]["httpOnly"]),
                         (2, "example.com", False))

    def test_a_touched_record_is_read_with_its_new_cookie(self):
        store = session.MemoryStore()
        seen = []
        h = Harness(lambda e: seen.append((dict(dict.items(sess(e))), sess(e).cookie.http_only)),
                    store=store)
        sid = h.seed({"n": 1}, max_age=None)
        store.touch(sid, make_record({"n": 1}, max_age=None, httpOnly=False))
        h.request()
        self.assertEqual(seen, [({"n": 1}, False)])

    def test_an_unchanged_session_moves_its_expiry(self):
        store = session.MemoryStore(ttl=0.6)
        h = Harness(lambda e: sess(e).get("n"), store=store)
        sid = h.seed({"n": 1}, max_age=None)
        for _ in range(3):
            time.sleep(0.3)
            h.request()  # read only: a touch, which moves the expiry 0.6 s on
        self.assertEqual(store.get(sid)["n"], 1)
        time.sleep(0.7)
        self.assertIsNone(store.get(sid))

    def test_reading_a_session_again_soon_writes_nothing_and_changing_its_cookie_does(self):
        for cookie in ({}, {"max_age": 3600}):
            with self.subTest(**cookie):
                store = session.MemoryStore()
                h = Harness(lambda e: action(sess(e)), store=store, cookie=cookie)
                action = lambda s: s.__setitem__("n", 1)
                h.request()
                sid, = store.all()
                entry = store._data[sid]  # (expiry, JSON), replaced whole by every write
                action = lambda s: s.get("n")
                h.request()
                self.assertIs(store._data[sid], entry)
                action = lambda s: setattr(s.cookie, "same_site", "strict")
                h.request()
                self.assertEqual(store.get(sid)["cookie"]["sameSite"], "strict")

    def test_a_store_whose_touch_reads_only_the_expiry_is_given_a_record_with_no_fields(self):
        class ExpiryOnly(session.MemoryStore):
            touch_needs_record = False

            def touch(self, sid, record):
                touched.append((dict(record), self.expiry_time(record), record.keep_later))

        class OverridesTouch(ExpiryOnly):  # says nothing of its own touch: given the whole record
            touch = ExpiryOnly.touch  # the same method, defined again on this class

        for store_class, fields in ((ExpiryOnly, False), (OverridesTouch, True)):
            for action, keep_later in ((lambda s: s.get("n"), True),
                                       (lambda s: setattr(s.cookie, "max_age", 60), False)):
                with self.subTest(store_class.__name__, keep_later=keep_later):
                    touched = []
                    h = Harness(lambda e: action(sess(e)), store=store_class(),
                                cookie={"max_age": 3600})
                    h.seed({"n": 1}, expires_in=100)
                    h.request()
                    record, expiry, kept = touched[0]
                    self.assertEqual(bool(record), fields)
                    if fields:
                        self.assertEqual(record["n"], 1)
                    lifetime = 3600 if keep_later else 60
                    self.assertAlmostEqual(expiry, time.time() + lifetime, delta=5)
                    self.assertEqual(kept, keep_later)
