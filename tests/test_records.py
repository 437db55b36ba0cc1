"""Records as express-session writes and reads them: key order, camelCase, compact JSON,
expiry; and what a store holds that is not a session.
"""
from __future__ import annotations

import datetime as dt
import json
import time
import unittest
from unittest import mock

import session
from tests.harness import (HOUR, ISO_MS, NAME, SECRET, UTC, Client, Harness, PlainMemoryStore,
                           cookie_value, iso_ms, make_record, parse_iso, sess)
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)


def counting(seen: list, note):
    """An app action that appends ``note(session)`` to ``seen``, then counts the visit in "n"."""
    def act(environ):
        s = sess(environ)
        seen.append(note(s))
        s["n"] = s.get("n", 0) + 1
    return act


class TestRecordFormat(unittest.TestCase):

    def express_text(self, first_key_views=False):
        expires = iso_ms(time.time() + 3599.999)
        cookie = ('{"originalMaxAge":3599999,"expires":"%s","secure":false,"httpOnly":true,'
                  '"path":"/","sameSite":"lax"}' % expires)
        if first_key_views:
            return '{"views":3,"cookie":%s,"zeta":1}' % cookie
        return '{"cookie":%s,"views":3,"user":{"name":"Ada","tags":["a","ü"]}}' % cookie

    def test_reads_a_record_written_by_express(self):
        out = {}

        def look(environ):
            s = sess(environ)
            c = s.cookie
            out.update(views=s["views"], user=s["user"], original=c.original_max_age, same_site=c.same_site,
                       secure=c.secure, http_only=c.http_only, path=c.path, keys=sorted(s))
        h = Harness(look)
        text = self.express_text()
        h.seed(record=json.loads(text))
        h.request()
        self.assertEqual(out, {"views": 3, "user": {"name": "Ada", "tags": ["a", "ü"]}, "original": 3599.999,
                               "same_site": "lax", "secure": False, "http_only": True, "path": "/",
                               "keys": ["user", "views"]})

    def test_written_record_keeps_loaded_key_order_and_original_max_age_as_stored(self):
        h = Harness(lambda e: sess(e).__setitem__("views", 4))
        sid = h.seed(record=json.loads(self.express_text()))
        h.request()
        text = h.store.texts[sid]
        record = json.loads(text)
        self.assertEqual(list(record), ["cookie", "views", "user"])
        self.assertEqual(list(record["cookie"]), ["originalMaxAge", "expires", "secure", "httpOnly", "path", "sameSite"])
        self.assertEqual(record["cookie"]["originalMaxAge"], 3599999)
        self.assertRegex(record["cookie"]["expires"], ISO_MS)
        self.assertAlmostEqual(parse_iso(record["cookie"]["expires"]), time.time() + 3600, delta=5)
        self.assertIn('"tags":["a","ü"]', text)
        self.assertEqual(record["views"], 4)

    def test_loaded_record_with_cookie_not_first_keeps_its_order(self):
        h = Harness(lambda e: sess(e).update(views=4, alpha=1))
        sid = h.seed(record=json.loads(self.express_text(first_key_views=True)))
        h.request()
        self.assertEqual(list(json.loads(h.store.texts[sid])), ["views", "cookie", "zeta", "alpha"])

    def test_a_loaded_record_with_cookie_not_first_saves_exactly_what_the_app_changed(self):
        cases = {
            "new key, then an in-place change": (lambda s: (s.__setitem__("new", 1), s["cart"].append(2)),
                                                 {"a": 1, "cart": [1, 2], "new": 1}),
            "a write, then a mutable value read": (lambda s: (s.__setitem__("a", 2), len(s["cart"])),
                                                   {"a": 2, "cart": [1]}),
        }
        for name, (op, want) in cases.items():
            with self.subTest(case=name):
                h = Harness(lambda e, op=op: op(sess(e)))
                record = make_record({"a": 1, "cart": [1]}, max_age=None)
                record["cookie"] = record.pop("cookie")
                sid = h.seed(record=record)
                h.request()
                self.assertEqual({k: v for k, v in h.store.get(sid).items() if k != "cookie"}, want)

    def test_new_record_is_compact_cookie_first_camel_case(self):
        def act(environ):
            s = sess(environ)
            s["user"] = "Ada Lovelace ü"
            s["views"] = 3
        h = Harness(act, cookie={"max_age": HOUR, "same_site": "lax"})
        sc = h.request().cookie()
        text = h.store.texts[sc.sid]
        expires = json.loads(text)["cookie"]["expires"]
        self.assertRegex(expires, ISO_MS)
        self.assertAlmostEqual(parse_iso(expires), time.time() + HOUR, delta=3)
        self.assertEqual(text, '{"cookie":{"originalMaxAge":3600000,"expires":"%s","httpOnly":true,"path":"/",'
                               '"sameSite":"lax"},"user":"Ada Lovelace ü","views":3}' % expires)

    def test_fractional_max_age_is_written_as_whole_milliseconds(self):
        h = Harness(lambda e: sess(e).__setitem__("a", 1), cookie={"max_age": 90.5})
        sc = h.request().cookie()
        self.assertIn('"originalMaxAge":90500,', h.store.texts[sc.sid])

    def test_browser_session_cookie_record_keeps_nulls(self):
        h = Harness(lambda e: sess(e).__setitem__("a", 1))
        sc = h.request().cookie()
        self.assertEqual(h.store.texts[sc.sid],
                         '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"a":1}')

    def test_cookie_keys_follow_express_order_with_every_option(self):
        h = Harness(lambda e: sess(e).__setitem__("a", 1), cookie={
            "max_age": 60, "partitioned": True, "priority": "high", "secure": True, "http_only": False,
            "domain": "example.com", "path": "/", "same_site": "strict"})
        sc = h.request(https=True).cookie()
        cookie = json.loads(h.store.texts[sc.sid])["cookie"]
        self.assertEqual(list(cookie), ["originalMaxAge", "partitioned", "priority", "expires", "secure",
                                        "httpOnly", "domain", "path", "sameSite"])
        self.assertNotIn("maxAge", cookie)
        self.assertEqual({k: cookie[k] for k in cookie if k != "expires"},
                         {"originalMaxAge": 60000, "partitioned": True, "priority": "high", "secure": True,
                          "httpOnly": False, "domain": "example.com", "path": "/", "sameSite": "strict"})

    def test_path_none_is_written_as_null_and_read_back_as_none_on_every_path(self):
        # express writes "path":null for path: null, and reads a missing path as "/".
        seen = []
        act = counting(seen, lambda s: s.cookie.path)
        h = Harness(act, cookie={"max_age": HOUR, "path": None})
        sc = h.request().cookie()
        self.assertEqual(json.loads(h.store.texts[sc.sid])["cookie"]["path"], None)
        self.assertNotIn("path", sc.attrs)
        other = Harness(act, store=h.store, cookie={"max_age": HOUR, "domain": "example.com"})
        other.client.jar.update(h.client.jar)  # options whose layout the record does not have
        self.assertNotIn("path", other.request().cookie().attrs)
        self.assertNotIn("path", h.request().cookie().attrs)
        self.assertEqual(seen, [None, None, None])

    def test_a_record_written_with_path_none_before_it_was_written_null_reads_as_none(self):
        # Records saved before "path":null was written have no "path" at all.
        seen = []

        def act(environ):
            seen.append(sess(environ).cookie.path)
            sess(environ)["n"] = 2
        h = Harness(act, cookie={"max_age": HOUR, "path": None})
        h.store._data["old"] = (time.time() + HOUR, '{"cookie":{"originalMaxAge":3600000,"expires":"%s",'
                                '"httpOnly":true},"n":1}' % iso_ms(time.time() + HOUR))
        sc = h.request(cookie=f"{NAME}={cookie_value('old')}").cookie()
        self.assertEqual(seen, [None])
        self.assertNotIn("path", sc.attrs)
        self.assertEqual(json.loads(h.store.texts["old"])["cookie"]["path"], None)

    def test_a_record_express_wrote_with_an_empty_domain_same_site_or_priority_is_a_session(self):
        # express keeps "" from a record, and its cookie serializer leaves such an attribute out.
        for field in ("domain", "sameSite", "priority"):
            with self.subTest(field):
                seen = []
                h = Harness(lambda e: (seen.append(sess(e).is_new), sess(e).__setitem__("n", 2)),
                            cookie={"max_age": HOUR})
                sid = h.seed({"n": 1}, **{field: ""})
                sc = h.request().cookie()
                self.assertEqual(seen, [False])
                self.assertEqual([a for a in ("domain", "samesite", "priority") if a in sc.attrs], [])
                record = json.loads(h.store.texts[sid])
                self.assertEqual((record["cookie"][field], record["n"]), ("", 2))

    def test_encode_record_is_compact_raw_utf8_and_rejects_nan(self):
        record = {"cookie": {"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"}, "n": "ü"}
        self.assertEqual(session.encode_record(record),
                         '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"n":"ü"}')
        with self.assertRaises(ValueError):
            session.encode_record({"cookie": {}, "n": float("nan")})

    def test_a_store_returning_expires_as_a_datetime_is_read_and_saved(self):
        # A document database's driver hands dates back as datetimes; Store's default merge
        # encodes the stored record to compare it, which raised TypeError on every save.
        class DateStore(PlainMemoryStore):
            def get(self, sid):
                record = super().get(sid)
                if record is not None and record["cookie"].get("expires"):
                    record["cookie"]["expires"] = dt.datetime.fromtimestamp(
                        session.expires_at(record), UTC)
                return record
        store = DateStore()
        h = Harness(lambda e: sess(e).__setitem__("n", sess(e).get("n", 0) + 1), store=store,
                    cookie={"max_age": HOUR})
        for n in (1, 2, 3):
            h.request()
            self.assertEqual(session.MemoryStore.get(store, store.ids("set")[0])["n"], n)
        record = store.get(store.ids("set")[0])
        self.assertRegex(json.loads(session.encode_record(record))["cookie"]["expires"], ISO_MS)

    def test_small_floats_are_written_as_express_writes_them_and_others_keep_their_type(self):
        # JSON.stringify: 0.00001 and 1e-7 (Python: 1e-05, 1e-07).  2.0 and 1e+16 stay as
        # Python writes them (Express: 2, 10000000000000000), so they are read back as floats.
        data = {"small": [0.00001, 1.5e-6, 1e-7, -2.5e-8], "kept": [2.0, 1e16, 0.5], "s": "e-1"}
        text = session.encode_record({"cookie": {"path": "/"}, **data})
        self.assertIn('"small":[0.00001,0.0000015,1e-7,-2.5e-8]', text)
        self.assertIn('"kept":[2.0,1e+16,0.5]', text)
        self.assertEqual(session.decode_record(text), {"cookie": {"path": "/"}, **data})

    def test_a_float_subclass_is_written_as_a_number_whatever_its_repr(self):
        # numpy's float64 reprs as np.float64(0.25): a record must hold the number.
        class Ratio(float):
            def __repr__(self):
                return f"Ratio({float(self)})"
        text = session.encode_record({"cookie": {"path": "/"}, "r": Ratio(0.25), "s": Ratio(1e-5),
                                      "plan": "one-e-1"})
        self.assertEqual(session.decode_record(text)["r"], 0.25)
        self.assertIn('"r":0.25,"s":0.00001', text)

    def test_a_lone_surrogate_is_written_escaped_as_json_stringify_writes_it(self):
        # Express writes half an emoji (a cut string) as "\\ud83d", which Python reads as a
        # lone surrogate: written back raw, it is no UTF-8, and a store cannot keep it.
        text = session.encode_record({"cookie": {"path": "/"}, "cut": "ab\ud83d", "ok": "é😀"})
        self.assertIn('"cut":"ab\\ud83d","ok":"é😀"', text)
        text.encode("utf-8")
        self.assertEqual(session.decode_record(text)["cut"], "ab\ud83d")

    def test_a_record_express_wrote_with_small_floats_is_not_rewritten_by_reading_it(self):
        text = ('{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},'
                '"views":3,"rate":[0.00001,1e-7]}')  # read as text: its data's JSON is kept
        h = Harness(lambda environ: sess(environ)["rate"][0])   # a mutable value handed out
        store = h.store
        store._data["s-1"] = (time.time() + 3600, text)  # planted as Express wrote it (MemoryStore's internals)
        h.request(cookie=f"{NAME}={cookie_value('s-1')}")
        self.assertEqual(store.count("set"), 0)
        self.assertEqual(store.count("touch"), 1)

    def test_store_expiry_time_is_cookie_expires_or_ttl_from_now(self):
        store = session.MemoryStore(ttl=100)
        self.assertEqual(store.expiry_time(make_record(max_age=None), now=1000.0), 1100.0)
        ts = time.time() + 50
        self.assertAlmostEqual(store.expiry_time({"cookie": {"expires": iso_ms(ts)}}, now=1000.0), ts, places=2)

    def test_expires_at_reads_iso_and_aware_datetime(self):
        ts = 1795872488.123
        self.assertAlmostEqual(session.expires_at({"cookie": {"expires": iso_ms(ts)}}), ts, places=3)
        aware = dt.datetime.fromtimestamp(ts, UTC)
        self.assertAlmostEqual(session.expires_at({"cookie": {"expires": aware}}), ts, places=3)
        self.assertIsNone(session.expires_at({"cookie": {"expires": None}}))
        self.assertIsNone(session.expires_at({"cookie": {}}))


class TestRememberedRecords(unittest.TestCase):
    """A record's text read before, or written by this middleware, is read again by a lookup
    (see _Core._records): what the lookup gives must be what reading the text gives."""

    def app(self, seen):
        def act(environ):
            s = sess(environ)
            c = s.cookie
            seen.append((dict(s), c.original_max_age, c.expires, c.same_site))
            s["views"] = s.get("views", 0) + 1
            s["user"] = {"name": "Ada", "tags": ["ü", 2]}
        return act

    def test_a_record_written_here_reads_as_a_middleware_that_never_saw_it_reads_it(self):
        seen, fresh_seen = [], []
        h = Harness(self.app(seen), cookie={"max_age": HOUR})
        for _ in range(3):
            h.request()
        [(sid, text)] = h.store.texts.items()
        self.assertIn(text, h.mw._records)  # written: its next read is a lookup
        fresh = Harness(self.app(fresh_seen), cookie={"max_age": HOUR})
        fresh.seed(sid=sid, record=json.loads(text))
        self.assertEqual(session.MemoryStore.get_text(fresh.store, sid), text)
        h.request()      # reads the text by lookup
        fresh.request()  # reads it from the text
        data = {"views": 3, "user": {"name": "Ada", "tags": ["ü", 2]}}
        self.assertEqual(seen[3], fresh_seen[0])
        self.assertEqual(seen[3][:2], (data, HOUR))
        self.assertEqual(seen[3][2], dt.datetime.fromtimestamp(
            parse_iso(json.loads(text)["cookie"]["expires"]), UTC))
        self.assertEqual(h.store.texts[sid], fresh.store.texts[sid].replace(
            json.loads(fresh.store.texts[sid])["cookie"]["expires"],
            json.loads(h.store.texts[sid])["cookie"]["expires"]))

    def test_a_record_read_once_is_remembered_and_read_the_same_again(self):
        seen = []
        h = Harness(lambda e: seen.append((dict(sess(e)), sess(e).cookie.expires)),
                    cookie={"max_age": HOUR})
        # Stored to expire later than a touch would move it: the touch leaves the text as it is.
        sid = h.seed({"a": [1, {"b": None}], "z": "ü"}, expires_in=2 * HOUR)
        text = session.MemoryStore.get_text(h.store, sid)
        h.request()
        self.assertIn(text, h.mw._records)
        h.request()
        self.assertEqual(session.MemoryStore.get_text(h.store, sid), text)
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[1][0], {"a": [1, {"b": None}], "z": "ü"})

    def test_a_cookie_the_app_changed_is_read_from_the_record_not_from_the_options(self):
        seen = []

        def note(s):  # the first request changes the cookie it has just noted
            same_site = s.cookie.same_site
            if not seen:
                s.cookie.same_site = "strict"
            return same_site
        h = Harness(counting(seen, note), cookie={"max_age": HOUR})
        for _ in range(3):
            h.request()
        self.assertEqual(seen, [None, "strict", "strict"])

    def test_a_written_record_the_layout_does_not_match_is_not_remembered(self):
        # originalMaxAge not \\d{1,13}: read by decode_record, which reads a cookie without
        # "path" as "/", where a lookup would give the options' path=None.
        for max_age in (dt.timedelta(hours=1, microseconds=500), session._MAX_AGE):
            seen, fresh_seen = [], []

            def note(s):
                return s.cookie.path, s.cookie.original_max_age, dict(s)
            h = Harness(counting(seen, note), cookie={"max_age": max_age, "path": None})
            h.request()
            self.assertEqual(h.mw._records, {})
            [(sid, text)] = h.store.texts.items()
            fresh = Harness(counting(fresh_seen, note), cookie={"max_age": max_age, "path": None})
            fresh.seed(sid=sid, record=json.loads(text))
            h.request()
            fresh.request()
            self.assertEqual(seen[1], fresh_seen[0])

    def test_a_remembered_record_is_read_by_its_lookup(self):
        h = Harness(lambda e: sess(e).__setitem__("n", sess(e).get("n", 0) + 1),
                    cookie={"max_age": HOUR})
        h.request()
        hits = []

        class Counting(dict):
            def get(self, key, default=None):
                found = dict.get(self, key, default)
                hits.append(found is not None)
                return found
        h.mw._records = Counting(h.mw._records)
        h.request()
        h.request()
        self.assertEqual(hits, [True, True])

    def test_remembered_records_stay_bounded_and_long_ones_are_not_kept(self):
        seen = []
        h = Harness(lambda e: seen.append(sess(e).get("user")), cookie={"max_age": HOUR})
        with mock.patch.object(session, "_RECORD_CACHE_SIZE", 8):
            for i in range(20):
                h.seed({"user": f"u{i}"})
                h.request()
        self.assertEqual(seen, [f"u{i}" for i in range(20)])
        self.assertLessEqual(len(h.mw._records), 8)
        sid = h.seed({"user": "long", "pad": "x" * session._RECORD_KEY_MAX})
        h.request()
        h.request()
        self.assertEqual(seen[-2:], ["long", "long"])
        self.assertNotIn(session.MemoryStore.get_text(h.store, sid), h.mw._records)


class TestRecordsExpressAccepts(unittest.TestCase):
    """Cookie fields express-session keeps and reads for their truth, as an Express app sharing
    the store writes them: each a session here too, not a logout on both sides."""

    def test_cookie_fields_are_read_as_express_reads_them(self):
        # cookie.expires = false (express's idiom for a browser-session cookie), options from
        # environment variables ("true"), and falsy values express simply does not send.
        cases = [
            ('"originalMaxAge":false,"expires":false,"httpOnly":true,"path":"/"', None, "HttpOnly"),
            ('"originalMaxAge":null,"expires":null,"secure":"true","httpOnly":null,"path":"/"',
             None, "Secure"),
            ('"originalMaxAge":null,"expires":null,"httpOnly":1,"priority":false,"partitioned":0,'
             '"domain":false,"sameSite":false,"path":"/"', None, "HttpOnly"),
            ('"originalMaxAge":12000000000000,"expires":"2400-01-01T00:00:00.000Z","httpOnly":true,'
             '"path":"/"', 12_000_000_000, "HttpOnly"),
        ]
        for fields, original, flags in cases:
            with self.subTest(fields):
                seen = []

                def action(environ):
                    seen.append((dict(sess(environ)), sess(environ).cookie.original_max_age))
                    sess(environ).cookie.touch()  # a Set-Cookie goes out under rolling
                h = Harness(action, rolling=True)
                h.store._data["s-1"] = (time.time() + 3600, f'{{"cookie":{{{fields}}},"user":"ada"}}')
                resp = h.request(cookie=f"{NAME}={cookie_value('s-1')}", https=True)
                self.assertEqual(seen, [({"user": "ada"}, original)])
                sent = resp.cookie()
                self.assertEqual([a for a in sent.attr_names if sent.attrs[a.lower()] is True],
                                 flags.split())
                self.assertEqual(h.store.get("s-1")["user"], "ada")
        # A flag written back as stored: a save does not count it as a change of the cookie.
        h = Harness(lambda e: sess(e).__setitem__("n", 1))
        text = '{"cookie":{"originalMaxAge":null,"expires":null,"secure":"true","httpOnly":true,"path":"/"}}'
        h.store._data["s-2"] = (time.time() + 3600, text)
        h.request(cookie=f"{NAME}={cookie_value('s-2')}", https=True)
        self.assertIn('"secure":"true"', h.store._data["s-2"][1])
        # A store computing its expiry from such a record falls back to its ttl, as
        # connect-redis and connect-pg-simple do.
        record = {"cookie": {"originalMaxAge": False, "expires": False}}
        self.assertIsNone(session.expires_at(record))
        self.assertAlmostEqual(session.MemoryStore(ttl=60).expiry_time(record), time.time() + 60, delta=5)


class TestBadRecords(unittest.TestCase):
    """What a store holds that is not a session is never loaded as one."""

    def test_a_record_with_a_malformed_cookie_is_a_fresh_session_not_an_error(self):
        bad_cookies = [{"originalMaxAge": "soon"}, {"path": "/\r\nX: y"}, {"domain": 5},
                       {"originalMaxAge": True}, {"originalMaxAge": 10 ** 400},
                       {"originalMaxAge": -10 ** 13 - 1},  # backwards, the options' bound
                       "not an object", None]
        for bad in bad_cookies:
            with self.subTest(cookie=bad):
                out = []
                h = Harness(lambda e: out.append((sess(e).id, dict(sess(e)))))
                sid = h.seed(record={"cookie": bad, "user": "ada"})
                with self.assertLogs("session", "WARNING"):
                    response = h.request()
                self.assertEqual(response.status.split()[0], "200")
                self.assertNotEqual(out[0][0], sid)
                self.assertEqual(out[0][1], {})

    def test_a_huge_bad_field_is_not_logged_whole(self):
        # A less trusted writer to a shared store could make every request log megabytes.
        for field in ("domain", "path", "sameSite", "priority", "expires"):
            with self.subTest(field=field):
                h = Harness(lambda e: None)
                cookie = {"path": "/", field: "x;" * 100_000}
                h.store._data["s-1"] = (time.time() + 3600, json.dumps({"cookie": cookie}))  # planted
                with self.assertLogs("session", "WARNING") as logs:
                    h.request(cookie=f"{NAME}={cookie_value('s-1')}")
                self.assertIn("s-1", logs.output[0])
                self.assertLess(len(logs.output[0]), 500)

    def test_a_record_with_two_cookie_keys_is_read_as_json_parse_reads_it(self):
        # JSON.parse (Express) and decode_record keep the last "cookie": the data never holds one.
        first = '{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}'
        last = '{"originalMaxAge":null,"expires":null,"httpOnly":false,"path":"/admin"}'
        timed = ('{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z","httpOnly":true,'
                 '"path":"/"}')
        for cookie in (first, timed):
            with self.subTest(cookie=cookie):
                seen = []
                h = Harness(lambda e: seen.append((dict(sess(e)), sess(e).cookie.path)),
                            cookie={"max_age": 3600} if cookie == timed else None)
                text = f'{{"cookie":{cookie},"n":1,"cookie":{last}}}'
                h.store._data["s-1"] = (time.time() + 3600, text)  # planted (MemoryStore's internals)
                h.request(cookie=f"{NAME}={cookie_value('s-1')}")
                self.assertEqual(seen, [({"n": 1}, "/admin")])

    def planted_is_new(self, text):
        """Whether a request whose cookie names a record stored as ``text`` gets a new session."""
        out = []
        h = Harness(lambda e: out.append(sess(e).is_new))
        h.store._data["s-1"] = (time.time() + 3600, text)  # planted (MemoryStore's internals)
        with self.assertLogs("session", "WARNING"):
            h.request(cookie=f"{NAME}={cookie_value('s-1')}")
        return out == [True]

    def test_a_record_with_anything_after_its_end_is_not_a_session(self):
        # Both layouts read without a full parse: a browser-session cookie, and one with times.
        cookies = ('{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}',
                   '{"originalMaxAge":3600000,"expires":"%s","httpOnly":true,"path":"/"}'
                   % iso_ms(time.time() + 3600))
        for cookie in cookies:
            for after in ("}", " x"):
                with self.subTest(cookie=cookie[:30], after=after):
                    self.assertTrue(self.planted_is_new('{"cookie":%s}%s' % (cookie, after)))

    def test_a_record_whose_original_max_age_has_a_leading_zero_is_not_a_session(self):
        # Not JSON: JSON.parse refuses it, so express cannot read it either.
        self.assertTrue(self.planted_is_new(
            '{"cookie":{"originalMaxAge":0123,"expires":"%s","httpOnly":true,"path":"/"},"n":1}'
            % iso_ms(time.time() + 3600)))

    def test_a_record_holding_a_number_beyond_a_floats_range_is_not_a_session(self):
        # Python reads 1e999 as inf, which no record can hold (encode_record refuses it).
        self.assertTrue(self.planted_is_new(
            '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"x":1e999}'))

    def test_a_record_whose_expires_has_hour_24_is_not_a_session(self):
        # JavaScript's Date reads T24:00:00.000 as the next midnight; toISOString never writes it.
        self.assertTrue(self.planted_is_new(
            '{"cookie":{"originalMaxAge":3600000,"expires":"2099-01-01T24:00:00.000Z","httpOnly":true,'
            '"path":"/"},"n":1}'))

    def test_store_record_without_cookie_is_not_a_session(self):
        class Broken(session.Store):
            def get(self, sid):
                return {"user": "mallory"}

            def set(self, sid, record):
                pass

            def touch(self, sid, record):
                pass

            def destroy(self, sid):
                pass
        out = {}
        mw = session.SessionMiddleware(Harness(lambda e: out.update(id=sess(e).id, user=sess(e).get("user"))).app,
                                       secret=SECRET, store=Broken())
        try:
            Client(mw).request(cookie=f"{NAME}={cookie_value('known')}")
        except Exception:
            return  # express answers 500; an error is acceptable
        self.assertIsNone(out.get("user"))
        self.assertNotEqual(out.get("id"), "known")

    def test_decode_record_rejects_invalid_records(self):
        for text in ("not json", "[1]", '"x"', "{}", '{"user": 1}', '{"cookie": 3}', b"\xff\xfe"):
            with self.subTest(text=text):
                with self.assertRaises(ValueError):
                    session.decode_record(text)
        self.assertEqual(session.decode_record(b'{"cookie":{},"a":"\xc3\xbc"}'), {"cookie": {}, "a": "ü"})
