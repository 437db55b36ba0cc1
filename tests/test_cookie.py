"""The session's Cookie: its attributes in the app, the Set-Cookie header byte for byte as
express sends it, and its record as JSON.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import time
import unittest

import session
from tests.harness import (HOUR, HTTP_DATE, ISO_MS, NAME, SECRET, UTC, Harness, cookie_value, http_date,
                           iso_ms, make_record, parse_iso, sess)
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)


class TestCookie(unittest.TestCase):

    def grab(self, act, **options):
        out = {}
        options.setdefault("save_uninitialized", True)
        h = Harness(lambda e: act(sess(e).cookie, out), **options)
        resp = h.request()
        return out, resp, h

    def test_max_age_is_seconds_left_and_original_max_age_the_configured_value(self):
        def act(c, out):
            out.update(max_age=c.max_age, original=c.original_max_age, expires=c.expires)
        out, resp, h = self.grab(act, cookie={"max_age": HOUR})
        self.assertAlmostEqual(out["max_age"], HOUR, delta=2)
        self.assertEqual(out["original"], HOUR)
        self.assertIsNotNone(out["expires"].tzinfo)
        self.assertEqual(out["expires"].utcoffset(), dt.timedelta(0))
        self.assertAlmostEqual(out["expires"].timestamp(), time.time() + HOUR, delta=2)

    def test_max_age_accepts_timedelta(self):
        out, resp, h = self.grab(lambda c, out: out.update(original=c.original_max_age),
                                 cookie={"max_age": dt.timedelta(minutes=90)})
        self.assertEqual(out["original"], 5400)
        self.assertEqual(h.store.get(resp.cookie().sid)["cookie"]["originalMaxAge"], 5400000)

    def test_a_fractional_max_age_is_stored_as_its_milliseconds_without_float_noise(self):
        # 1.001 * 1000 is 1000.9999999999999 in floats; express, given maxAge 1001, writes 1001.
        for given, stored in ((1.001, 1001), (dt.timedelta(milliseconds=1001), 1001),
                              (60.0005, 60000.5), (1.0005, 1000.5)):
            with self.subTest(given=given):
                out, resp, h = self.grab(lambda c, out: None, cookie={"max_age": given})
                self.assertEqual(repr(h.store.get(resp.cookie().sid)["cookie"]["originalMaxAge"]),
                                 repr(stored))

    def test_setting_max_age_sets_expires_and_original_max_age(self):
        def act(c, out):
            c.max_age = 60
            out.update(max_age=c.max_age, original=c.original_max_age, expires=c.expires.timestamp())
        out, resp, h = self.grab(act, cookie={"max_age": HOUR})
        self.assertAlmostEqual(out["max_age"], 60, delta=1)
        self.assertAlmostEqual(out["original"], 60, delta=1)
        self.assertAlmostEqual(out["expires"], time.time() + 60, delta=2)
        record = h.store.get(resp.cookie().sid)["cookie"]
        self.assertAlmostEqual(record["originalMaxAge"], 60000, delta=1000)
        self.assertAlmostEqual(parse_iso(record["expires"]), time.time() + 60, delta=2)
        self.assertAlmostEqual(resp.cookie().expires, time.time() + 60, delta=2)

    def test_max_age_is_fractional_seconds_and_may_be_set_negative_as_express_allows(self):
        c = session.Cookie()
        c.max_age = 90.5
        self.assertAlmostEqual(c.max_age, 90.5, delta=0.1)
        c.max_age = -10  # expired: the browser drops it
        self.assertAlmostEqual(c.max_age, -10, delta=1)
        self.assertLess(c.expires.timestamp(), time.time())

    def test_setting_expires_sets_max_age_and_original_max_age_as_express(self):
        def act(c, out):
            c.expires = dt.datetime.now(UTC) + dt.timedelta(seconds=120)
            out.update(max_age=c.max_age, original=c.original_max_age)
        out, resp, h = self.grab(act, cookie={"max_age": HOUR})
        self.assertAlmostEqual(out["max_age"], 120, delta=1)
        self.assertAlmostEqual(out["original"], 120, delta=1)

    def test_max_age_or_expires_none_is_a_browser_session_cookie(self):
        for attribute in ("max_age", "expires"):
            def act(c, out):
                out["before"] = c.has_expiry
                setattr(c, attribute, None)
                out.update(max_age=c.max_age, original=c.original_max_age, expires=c.expires,
                           has_expiry=c.has_expiry)
            with self.subTest(attribute=attribute):
                out, resp, h = self.grab(act, cookie={"max_age": HOUR})
                self.assertEqual(out, {"before": True, "max_age": None, "original": None,
                                       "expires": None, "has_expiry": False})
                sc = resp.cookie()
                self.assertNotIn("expires", sc.attrs)
                cookie = h.store.get(sc.sid)["cookie"]
                self.assertIsNone(cookie["originalMaxAge"])
                self.assertIsNone(cookie["expires"])

    def test_expires_option_is_an_absolute_date(self):
        when = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(microsecond=0)
        out, resp, h = self.grab(lambda c, out: out.update(expires=c.expires), cookie={"expires": when})
        self.assertEqual(out["expires"], when)
        self.assertEqual(resp.cookie().attrs["expires"], http_date(when.timestamp()))

    def test_expires_option_gives_original_max_age_of_the_time_left_as_express(self):
        when = dt.datetime.now(UTC) + dt.timedelta(days=2)
        out, resp, h = self.grab(lambda c, out: out.update(original=c.original_max_age),
                                 cookie={"expires": when})
        self.assertIsNotNone(out["original"])
        self.assertAlmostEqual(out["original"], 2 * 86400, delta=5)
        stored = h.store.get(resp.cookie().sid)["cookie"]["originalMaxAge"]
        self.assertAlmostEqual(stored, 2 * 86400 * 1000, delta=5000)

    def test_given_max_age_and_expires_the_later_key_wins_as_in_express(self):
        when = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(microsecond=0)
        for options, lifetime in (({"max_age": 60, "expires": when}, 2 * 86400),
                                  ({"expires": when, "max_age": 60}, 60)):
            with self.subTest(first=next(iter(options))):
                out, resp, _ = self.grab(lambda c, out: out.update(age=c.max_age), cookie=options)
                self.assertAlmostEqual(out["age"], lifetime, delta=2)
                self.assertAlmostEqual(resp.cookie().expires, time.time() + lifetime, delta=2)

    def test_cookie_attributes_are_readable(self):
        def act(c, out):
            out.update(http_only=c.http_only, secure=c.secure, path=c.path, domain=c.domain,
                       same_site=c.same_site, partitioned=c.partitioned, priority=c.priority)
        out, _, _ = self.grab(act, cookie={"domain": "example.com", "path": "/", "secure": True,
                                           "same_site": "strict", "partitioned": True, "priority": "high"})
        self.assertEqual(out, {"http_only": True, "secure": True, "path": "/", "domain": "example.com",
                               "same_site": "strict", "partitioned": True, "priority": "high"})

    def test_default_set_cookie_is_path_root_http_only_browser_session(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        sc = h.request().cookie()
        self.assertEqual(sc.raw, f"{NAME}={cookie_value(sc.sid)}; Path=/; HttpOnly")

    def test_set_cookie_expires_is_record_expires_cut_to_the_second_and_no_max_age(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"max_age": HOUR})
        sc = h.request().cookie()
        expires = h.store.get(sc.sid)["cookie"]["expires"]
        self.assertRegex(expires, ISO_MS)
        self.assertRegex(sc.attrs["expires"], HTTP_DATE)
        self.assertEqual(sc.attrs["expires"], http_date(parse_iso(expires)))
        self.assertNotIn("max-age", sc.attrs)

    def test_an_empty_path_sends_no_path_attribute_as_the_npm_package_cookie_does(self):
        self.assertEqual(session.Cookie(path="").serialize("a", "b"), "a=b; HttpOnly")

    def test_a_stored_expiry_with_no_original_max_age_is_unset_by_the_touch_as_express_does(self):
        # express's touch sets maxAge to originalMaxAge, null: a browser-session cookie.
        h = Harness(None, rolling=True)
        sid = h.seed(record=make_record(max_age=None, expires=iso_ms(time.time() + HOUR)))
        sc = h.request().cookie()
        self.assertNotIn("expires", sc.attrs)
        self.assertIsNone(h.store.get(sid)["cookie"]["expires"])

    def test_set_cookie_attributes_follow_options(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={
            "max_age": HOUR, "domain": "example.com", "path": "/", "secure": True, "http_only": True,
            "same_site": "lax", "partitioned": True, "priority": "medium"})
        sc = h.request(https=True).cookie()
        self.assertEqual(sc.attrs["domain"], "example.com")
        self.assertEqual(sc.attrs["path"], "/")
        self.assertIs(sc.attrs["httponly"], True)
        self.assertIs(sc.attrs["secure"], True)
        self.assertIs(sc.attrs["partitioned"], True)
        self.assertEqual(sc.attrs["priority"], "Medium")
        self.assertEqual(sc.attrs["samesite"], "Lax")
        self.assertEqual(set(sc.attr_names),
                         {"Domain", "Path", "Expires", "HttpOnly", "Secure", "Partitioned", "Priority", "SameSite"})

    def test_set_cookie_matches_express_byte_for_byte(self):
        # cookie 0.7.2 order: Domain, Path, Expires, HttpOnly, Secure, Partitioned, Priority, SameSite
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={
            "max_age": HOUR, "domain": "example.com", "path": "/", "secure": True,
            "same_site": "strict", "partitioned": True, "priority": "high"})
        sc = h.request(https=True).cookie()
        expires = http_date(parse_iso(h.store.get(sc.sid)["cookie"]["expires"]))
        self.assertEqual(sc.raw, f"{NAME}={cookie_value(sc.sid)}; Domain=example.com; Path=/; Expires={expires}; "
                                 "HttpOnly; Secure; Partitioned; Priority=High; SameSite=Strict")

    def test_same_site_values_map_to_express_spelling(self):
        for option, attr in ((True, "Strict"), ("strict", "Strict"), ("lax", "Lax"), ("none", "None")):
            with self.subTest(same_site=option):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": option, "secure": True})
                self.assertEqual(h.request(https=True).cookie().attrs["samesite"], attr)

    def test_priority_values_map_to_express_spelling(self):
        for option, attr in (("low", "Low"), ("medium", "Medium"), ("high", "High")):
            with self.subTest(priority=option):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"priority": option})
                self.assertEqual(h.request().cookie().attrs["priority"], attr)

    def test_http_only_false_omits_attribute(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"http_only": False})
        sc = h.request().cookie()
        self.assertNotIn("httponly", sc.attrs)
        self.assertIs(h.store.get(sc.sid)["cookie"]["httpOnly"], False)

    def test_cookie_attributes_set_in_the_app_are_sent(self):
        def act(environ):
            c = sess(environ).cookie
            c.http_only = False
            c.secure = True
            sess(environ)["u"] = 1
        h = Harness(act, proxy=True, cookie={"priority": "low"})
        sc = h.request(headers={"X-Forwarded-Proto": "https"}).cookie()
        self.assertNotIn("httponly", sc.attrs)
        self.assertIs(sc.attrs.get("secure"), True)
        self.assertEqual(sc.attrs.get("priority"), "Low")
        cookie = h.store.get(sc.sid)["cookie"]
        self.assertEqual((cookie["httpOnly"], cookie["secure"]), (False, True))

    def test_header_injection_in_options_or_name_raises_value_error(self):
        cases = [
            {"cookie": {"domain": "example.com; Secure"}},
            {"cookie": {"domain": "example.com\r\nX-Evil: 1"}},
            {"cookie": {"domain": "ex\x00ample.com"}},
            {"cookie": {"domain": "ex\x7fample.com"}},
            {"cookie": {"path": "/\n"}},
            {"cookie": {"path": "/a;b"}},
            {"cookie": {"path": "/\x1f"}},
            {"name": "sid; Domain=evil"},
            {"name": "sid\r\nX-Evil: 1"},
            {"name": "si\x01d"},
        ]
        for kw in cases:
            with self.subTest(**{k: repr(v) for k, v in kw.items()}):
                with self.assertRaises(ValueError):
                    session.SessionMiddleware(lambda e, s: [], secret=SECRET, **kw)

    def test_header_injection_from_callable_options_raises_at_request(self):
        for bad in ({"domain": "a.example; Secure"}, {"path": "/\r\nX-Evil: 1"}):
            with self.subTest(bad=repr(bad)):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie=lambda environ, bad=bad: bad)
                with self.assertRaises(ValueError):
                    h.request()

    def test_cookie_value_is_percent_encoded_like_encode_uri_component(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), genid=lambda environ: "a+b/c:d é")
        sc = h.request().cookie()
        self.assertEqual(sc.value, cookie_value("a+b/c:d é"))
        self.assertTrue(sc.value.startswith("s%3Aa%2Bb%2Fc%3Ad%20%C3%A9."), sc.value)

    def test_apps_own_set_cookie_headers_are_kept(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1),
                    app_headers=[("Set-Cookie", "theme=dark; Path=/"), ("Set-Cookie", "lang=en")])
        resp = h.request()
        self.assertIn("theme=dark; Path=/", resp.values("Set-Cookie"))
        self.assertIn("lang=en", resp.values("Set-Cookie"))
        self.assertIsNotNone(resp.cookie())


class TestCookieJson(unittest.TestCase):

    def test_to_json_is_the_encoded_record_for_every_attribute_combination(self):
        combos = itertools.product((None, True, False), (None, "high"), (None, True, False),
                                   (True, False), (None, "example.com"), ("/", "/app", None),
                                   (None, True, "lax", "none"))
        for partitioned, priority, secure, http_only, domain, path, same_site in combos:
            c = session.Cookie(max_age=90.5, secure=secure, http_only=http_only, domain=domain,
                               same_site=same_site, partitioned=partitioned, priority=priority)
            c.path = path
            self.assertEqual(c.to_json(), json.dumps(c.to_record(), separators=(",", ":")))
        for original in (None, 0, 3600000, 3599999, 1500.5):
            c = session.Cookie()
            c._original = original
            self.assertEqual(json.loads(c.to_json()), c.to_record())

    def test_a_tiny_original_max_age_is_written_as_json_stringify_writes_it(self):
        c = session.Cookie(max_age=1e-8)  # 0.00001 ms: Python's repr would write 1e-05
        self.assertIn('"originalMaxAge":0.00001,', c.to_json())

    def test_to_record_is_a_fresh_dict_each_time(self):
        # Records share a cached template per set of attributes: changing one must not leak.
        first = session.Cookie(domain="example.com").to_record()
        first["domain"] = "evil.example"
        first["extra"] = 1
        again = session.Cookie(domain="example.com")
        self.assertEqual(again.to_record(), {"originalMaxAge": None, "expires": None, "httpOnly": True,
                                             "domain": "example.com", "path": "/"})
        self.assertEqual(json.loads(again.to_json()), again.to_record())
