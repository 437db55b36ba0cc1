"""The middleware's options: checked at construction, genid, name and environ_key, proxy and
secure, cookie options per request, and the cookie path that scopes the session.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import unittest
from unittest import mock

import session
from tests.harness import MISSING, NAME, SECRET, Harness, captured_warnings, norm, sess
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)


# ================================================================ checked at construction

class _ReadOnly:
    """Not a Store: reads, and nothing else."""

    def get(self, sid):
        return None


class TestConstruction(unittest.TestCase):
    """Bad options fail when the middleware is made, never at the first request."""

    def test_bad_options_raise_at_construction_naming_the_option(self):
        app = lambda e, s: []  # noqa: E731
        naive = dt.datetime.now() + dt.timedelta(days=1)
        cases = [
            ("secret", {"secret": ""}), ("secret", {"secret": b""}), ("secret", {"secret": []}),
            ("secret", {"secret": None}), ("secret", {"secret": 42}),
            ("maxAge", {"cookie": {"maxAge": 10}}), ("colour", {"cookie": {"colour": "red"}}),
            ("unset", {"unset": "maybe"}),
            ("same_site", {"cookie": {"same_site": "sometimes"}}),
            ("genid", {"genid": "abc"}),
            ("max_age", {"cookie": {"max_age": -1}}), ("max_age", {"cookie": {"max_age": True}}),
            ("max_age", {"cookie": {"max_age": "3600"}}),
            ("priority", {"cookie": {"priority": "urgent"}}),
            ("secure", {"cookie": {"secure": "sometimes"}}),
            ("expires", {"cookie": {"expires": naive}}), ("expires", {"cookie": {"expires": "tomorrow"}}),
            ("cookie", {"cookie": "max_age=3"}),
            ("proxy", {"proxy": 1}), ("proxy", {"proxy": "yes"}),
            ("store", {"store": session.MemoryStore}),   # the class, not a store
            ("set()", {"store": _ReadOnly()}),           # a store without a method the middleware calls
            ("secret entries", {"secret": [SECRET, 42]}),
            ("name", {"name": ""}), ("name", {"name": "a;b"}),
        ]
        for adapter, key in ((session.SessionMiddleware, "environ_key"),
                             (session.ASGISessionMiddleware, "scope_key")):
            for option, kw in cases + [(key, {key: ""}), (key, {key: 3})]:
                kw = dict(kw)
                kw.setdefault("secret", SECRET)
                with self.subTest(adapter=adapter.__name__, option=option, kw=repr(kw)):
                    with self.assertRaises((ValueError, TypeError)) as ctx:
                        adapter(app, **kw)
                    self.assertIn(norm(option), norm(str(ctx.exception)), str(ctx.exception))

    def test_an_app_that_cannot_be_called_raises_naming_the_kind_of_app(self):
        for adapter, kind in ((session.SessionMiddleware, "WSGI"), (session.ASGISessionMiddleware, "ASGI")):
            with self.subTest(adapter=adapter.__name__):
                with self.assertRaisesRegex(TypeError, f"app must be an? {kind}"):
                    adapter(None, secret=SECRET)

    def test_resave_save_uninitialized_and_rolling_take_only_true_or_false(self):
        # rolling="no" would otherwise be truthy, and roll.
        for option in ("resave", "save_uninitialized", "rolling"):
            for value in ("no", 1, None):
                with self.subTest(option=option, value=value):
                    with self.assertRaisesRegex(TypeError, option):
                        session.SessionMiddleware(lambda e, s: [], secret=SECRET, **{option: value})

    def test_missing_secret_raises_naming_it(self):
        with self.assertRaises((TypeError, ValueError)) as ctx:
            session.SessionMiddleware(lambda e, s: [])
        self.assertIn("secret", str(ctx.exception))


# ================================================================ genid, name, environ_key

class TestGenid(unittest.TestCase):
    def test_genid_receives_environ_and_its_value_is_the_id(self):
        calls = []

        def genid(environ):
            calls.append(environ)
            return "id-%d" % len(calls)
        h = Harness(lambda e: sess(e).__setitem__("u", 1), genid=genid)
        sc = h.request().cookie()
        self.assertEqual(sc.sid, "id-1")
        self.assertIn("PATH_INFO", calls[0])

    def test_default_id_is_32_url_safe_characters(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        ids = {h.request(cookie="").cookie().sid for _ in range(5)}
        self.assertEqual(len(ids), 5)
        for sid in ids:
            self.assertRegex(sid, r"^[A-Za-z0-9_-]{32}$")

    def test_genid_values_are_encoded_as_express_sends_them(self):
        # Values from express-session's own test suite (secret "keyboard cat").
        for sid, sent in (("apple", "s%3Aapple.D8Y%2BpkTAmeR0PobOhY4G97PRW%2Bj7bUnP%2F5m6%2FOn1MCU"),
                          ("%", "s%3A%25.kzQ6x52kKVdF35Qh62AWk4ZekS28K5XYCXKa%2FOTZ01g"),
                          ("/foo", "s%3A%2Ffoo.paEKBtAHbV5s1IB8B2zPnzAgYmmnRPIqObW4VRYj%2FMQ")):
            with self.subTest(genid=sid):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), genid=lambda environ, sid=sid: sid)
                self.assertEqual(h.request().cookie().value, sent)


    def test_a_genid_returning_an_empty_string_raises_type_error_naming_genid(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), genid=lambda environ: "")
        with self.assertRaisesRegex(TypeError, "genid"):
            h.request()
        self.assertEqual(h.store.length(), 0)

    def test_a_genid_returning_an_id_too_long_for_a_cookie_raises_value_error_naming_genid(self):
        # Its cookie would be over the 4,096 characters the middleware reads back: every
        # request would start a new session, and store it.
        for sid, fits in (("a" * 4000, True), ("a" * 4100, False), ("😀" * 340, False)):
            with self.subTest(len(sid)):
                h = Harness(lambda e: sess(e).__setitem__("n", sess(e).get("n", 0) + 1),
                            store=session.MemoryStore(), genid=lambda environ, sid=sid: sid)
                if fits:
                    h.request()
                    h.request()
                    self.assertEqual(h.seen[-1]["n"], 2)
                else:
                    with self.assertRaisesRegex(ValueError, "genid returned an ID of"):
                        h.request()
                    self.assertEqual(h.store.length(), 0)

    def test_a_genid_repeating_an_id_in_use_raises_session_error_and_keeps_the_first_record(self):
        h = Harness(lambda e: sess(e).__setitem__("user", e["PATH_INFO"]), genid=lambda environ: "dup")
        h.request(path="/ada")
        h.client.jar.clear()
        with self.assertRaises(session.SessionError):
            h.request(path="/bob")
        self.assertEqual(h.store.get("dup")["user"], "/ada")

class TestNameAndEnvironKey(unittest.TestCase):
    def test_custom_name_and_environ_key(self):
        keys = []
        h = Harness(lambda e: keys.append("session" in e) or e["sess"].__setitem__("u", 1),
                    name="sid", environ_key="sess")
        resp = h.request()
        self.assertIsNone(resp.cookie(NAME))
        sc = resp.cookie("sid")
        self.assertEqual(h.store.get(sc.sid)["u"], 1)
        self.assertEqual(keys, [False])


# ================================================================ proxy and secure

class TestProxyAndSecure(unittest.TestCase):
    """Secure cookies go only on secure requests; what counts as secure; the warnings."""

    def test_secure_cookie_withheld_on_insecure_request_but_session_saved(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": True})
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.count("set"), 1)

    def test_secure_cookie_sent_on_https_request(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": True})
        sc = h.request(https=True).cookie()
        self.assertIs(sc.attrs.get("secure"), True)

    def test_proxy_true_trusts_first_x_forwarded_proto(self):
        cases = [("https", True), ("https, http", True), (" HTTPS ", True), ("http, https", False),
                 ("http", False), ("", False)]
        for header, sent in cases:
            with self.subTest(x_forwarded_proto=header):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), proxy=True, cookie={"secure": True})
                resp = h.request(headers={"X-Forwarded-Proto": header})
                self.assertEqual(resp.cookie() is not None, sent)

    def test_x_forwarded_proto_ignored_without_proxy(self):
        for proxy in (None, False):
            with self.subTest(proxy=proxy):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), proxy=proxy, cookie={"secure": True})
                self.assertIsNone(h.request(headers={"X-Forwarded-Proto": "https"}).cookie())

    def test_https_url_scheme_is_secure_whatever_proxy_says(self):
        for proxy in (None, False, True):
            with self.subTest(proxy=proxy):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), proxy=proxy, cookie={"secure": True})
                self.assertIsNotNone(h.request(https=True, headers={"X-Forwarded-Proto": "http"}).cookie())

    def test_secure_auto_follows_the_request_and_is_stored_as_bool(self):
        for https, secure in ((True, True), (False, False)):
            with self.subTest(https=https):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": "auto"})
                sc = h.request(https=https).cookie()
                self.assertIsNotNone(sc)
                self.assertEqual("secure" in sc.attrs, secure)
                self.assertIs(h.store.get(sc.sid)["cookie"]["secure"], secure)

    def test_secure_auto_with_proxy_reads_x_forwarded_proto(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), proxy=True, cookie={"secure": "auto"})
        sc = h.request(headers={"X-Forwarded-Proto": "https"}).cookie()
        self.assertIn("secure", sc.attrs)
        self.assertIs(h.store.get(sc.sid)["cookie"]["secure"], True)

    def test_same_site_auto_is_none_on_secure_and_lax_otherwise(self):
        for https, attr, stored in ((True, "None", "none"), (False, "Lax", "lax")):
            with self.subTest(https=https):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": "auto", "secure": "auto"})
                sc = h.request(https=https).cookie()
                self.assertEqual(sc.attrs.get("samesite"), attr)
                self.assertEqual(h.store.get(sc.sid)["cookie"]["sameSite"], stored)

    def test_same_site_auto_is_none_only_for_a_secure_cookie(self):
        # Browsers reject SameSite=None without Secure: over HTTPS, a cookie that is not
        # Secure gets Lax, and the session keeps working.
        for secure, attr in ((None, "Lax"), (False, "Lax"), (True, "None"), ("auto", "None")):
            with self.subTest(secure=secure):
                h = Harness(lambda e: sess(e).__setitem__("u", 1),
                            cookie={"same_site": "auto", "secure": secure})
                sc = h.request(https=True).cookie()
                self.assertEqual(sc.attrs.get("samesite"), attr)
                self.assertEqual("secure" in sc.attrs, attr == "None")

    def test_the_withheld_cookie_warning_says_what_to_check_with_proxy_true(self):
        for proxy, advice in ((None, "pass proxy=True"), (True, "did not say https")):
            with self.subTest(proxy=proxy):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": True}, proxy=proxy)
                with self.assertLogs("session", "WARNING") as logs:
                    h.request()
                self.assertIn(advice, logs.output[0])

    def test_warns_once_when_secure_cookie_is_withheld_pointing_at_proxy(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"secure": True})
        with self.assertLogs(level="WARNING") as logs:
            h.request()
        self.assertTrue(any("proxy=True" in m or "proxy" in m for m in logs.output), logs.output)
        with captured_warnings() as records:
            h.client.jar.clear()
            h.request()
        self.assertEqual([r.getMessage() for r in records if "proxy" in r.getMessage()], [])

    def test_warns_when_same_site_none_without_secure(self):
        with self.assertLogs(level="WARNING") as logs:
            h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": "none"})
            h.request()
        text = " ".join(logs.output).lower()
        self.assertIn("secure", text)
        self.assertTrue("samesite" in norm(text), logs.output)

    def test_warns_when_callable_cookie_options_give_same_site_none_without_secure(self):
        with self.assertLogs(level="WARNING") as logs:
            h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie=lambda environ: {"same_site": "none"})
            h.request()
        self.assertTrue("samesite" in norm(" ".join(logs.output)), logs.output)

    def test_enum_options_are_stored_as_given_and_sent_in_the_headers_form(self):
        # express-session keeps its options as given in the record ("Strict", false); the
        # npm package cookie writes the header's form.  Records made with the real packages.
        for options, stored, attribute in (
                ({"same_site": "Strict"}, '"path":"/","sameSite":"Strict"}', "; SameSite=Strict"),
                ({"same_site": "NONE", "secure": True}, '"sameSite":"NONE"}', "; SameSite=None"),
                ({"priority": "High"}, '{"originalMaxAge":null,"priority":"High","expires":null,',
                 "; Priority=High"),
                ({"same_site": False}, '"path":"/","sameSite":false}', None)):
            with self.subTest(options):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie=options)
                resp = h.request(https=True)
                self.assertIn(stored, h.store.texts[resp.cookie().sid])
                header = resp.values("Set-Cookie")[0]
                if attribute is None:
                    self.assertNotIn("SameSite", header)
                else:
                    self.assertIn(attribute, header)

    def test_same_site_none_in_any_case_without_secure_warns(self):
        with self.assertLogs(level="WARNING") as logs:
            Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": "None"}).request()
        self.assertTrue("samesite" in norm(" ".join(logs.output)), logs.output)

    def test_same_site_none_with_secure_does_not_warn(self):
        with captured_warnings() as records:
            h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie={"same_site": "none", "secure": True})
            h.request(https=True)
        self.assertEqual([r.getMessage() for r in records], [])


# ================================================================ cookie options per request

class TestCallableCookieOptions(unittest.TestCase):
    def test_cookie_options_callable_is_resolved_per_request(self):
        seen = []

        def options(environ):
            seen.append(environ)
            return {"domain": environ["HTTP_HOST"], "max_age": 60}
        h = Harness(lambda e: sess(e).__setitem__("u", 1), cookie=options)
        for host in ("a.example", "b.example"):
            h.client.jar.clear()
            sc = h.request(headers={"Host": host}).cookie()
            self.assertEqual(sc.attrs.get("domain"), host)
            self.assertAlmostEqual(sc.expires, time.time() + 60, delta=3)
        self.assertTrue(all(isinstance(e, dict) and "PATH_INFO" in e for e in seen))


    def test_a_cookie_callable_with_a_domain_per_host_compiles_no_pattern_per_host(self):
        # Each compile cost 0.2 ms; a cache of 256 sets of attributes turned over on most
        # requests of a site with more hosts than that, and a client's Host header is its own.
        def options(environ):
            return {"domain": environ["HTTP_HOST"], "max_age": 60}
        h = Harness(lambda e: sess(e).__setitem__("n", sess(e).get("n", 0) + 1),
                    store=session.MemoryStore(), cookie=options)
        cookies = {}
        with mock.patch("re.compile", wraps=re.compile) as compile_:
            for visit in (1, 2):
                for i in range(300):
                    host = f"tenant{i}.example"
                    h.client.jar.clear()
                    if host in cookies:
                        h.client.jar[NAME] = cookies[host]
                    cookies[host] = h.request(headers={"Host": host}).cookie().value
                    self.assertEqual(h.seen[-1]["n"], visit)
        self.assertLessEqual(compile_.call_count, 1)  # one for all the hosts, if not made before


# ================================================================ the cookie path scopes the session

class TestPathScoping(unittest.TestCase):
    def test_outside_cookie_path_the_app_runs_without_a_session(self):
        h = Harness(lambda e: "session" in e and sess(e).__setitem__("u", 1), cookie={"path": "/app"})
        resp = h.request(path="/other")
        self.assertIs(h.seen[-1], MISSING)
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.length(), 0)
        resp = h.request(path="/app/page")
        self.assertIsNot(h.seen[-1], MISSING)
        self.assertEqual(resp.cookie().attrs.get("path"), "/app")

    def test_cookie_path_from_callable_options_scopes_the_session(self):
        h = Harness(None, cookie=lambda environ: {"path": "/app"})
        h.request(path="/other")
        self.assertIs(h.seen[-1], MISSING)
        h.request(path="/app/x")
        self.assertIsNot(h.seen[-1], MISSING)

    def test_cookie_path_is_matched_against_script_name_plus_path_info(self):
        h = Harness(None, cookie={"path": "/app"})
        h.request(path="/page", script_name="/app")
        self.assertIsNot(h.seen[-1], MISSING)
        h.request(path="/app", script_name="/mount")
        self.assertIs(h.seen[-1], MISSING)

    def test_cookie_path_is_matched_against_the_path_as_the_browser_sent_it(self):
        # The server decoded PATH_INFO; express and browsers compare the percent-encoded path:
        # "/my%20app" covers /my%20app/page, and "/my app" covers nothing a browser sends.
        for cookie_path, path_info, has_session in (("/my%20app", "/my app/page", True),
                                                    ("/my app", "/my app/page", False),
                                                    ("/caf%C3%A9", "/caf\xc3\xa9/x", True),
                                                    ("/100%25", "/100%/x", True)):
            with self.subTest(cookie_path):
                h = Harness(None, cookie={"path": cookie_path})
                h.request(path=path_info)
                self.assertEqual(h.seen[-1] is not MISSING, has_session)

    def test_only_as_much_of_the_path_as_the_cookie_path_is_encoded(self):
        # Encoding costs a Python call per byte: a 64 KB path of spaces took 2.6 ms a request.
        long_path = "/my app/" + " " * 65536
        for adapter in ("wsgi", "asgi"):
            with self.subTest(adapter), mock.patch("session.quote", wraps=session.quote) as quote:
                if adapter == "wsgi":
                    h = Harness(None, cookie={"path": "/my%20app"})
                    h.request(path=long_path)
                    self.assertIsNot(h.seen[-1], MISSING)
                else:
                    seen = []

                    async def app(scope, receive, send):
                        seen.append("session" in scope)
                    mw = session.ASGISessionMiddleware(app, secret=SECRET, cookie={"path": "/my%20app"})
                    scope = {"type": "http", "path": long_path, "root_path": "", "headers": []}
                    asyncio.run(mw(scope, None, None))
                    self.assertEqual(seen, [True])
                self.assertLessEqual(max(len(call.args[0]) for call in quote.call_args_list),
                                     len("/my%20app"))

    def test_a_cookie_path_no_request_can_match_is_warned_about_at_construction(self):
        # "app" or "/my app" silently gave no request a session: the app's environ["session"]
        # was a KeyError, and nothing said why.
        for cookie_path in ("app", "/my app", 'my"app'):
            with self.subTest(cookie_path), self.assertLogs("session", "WARNING") as logs:
                session.SessionMiddleware(lambda e, s: [], secret=SECRET, cookie={"path": cookie_path})
            self.assertIn("matches no request path", logs.output[0])
            self.assertIn(repr(cookie_path), logs.output[0])
        for cookie_path in ("/", "/app", "/my%20app", "/100%25", "/a,b=c/[x]|~"):
            with self.subTest(cookie_path), captured_warnings() as records:
                session.SessionMiddleware(lambda e, s: [], secret=SECRET, cookie={"path": cookie_path})
            self.assertEqual(records, [])

    def test_a_callable_cookie_path_no_request_can_match_is_warned_about_once(self):
        h = Harness(None, cookie=lambda environ: {"path": "app"})
        with self.assertLogs("session", "WARNING") as logs:
            h.request(path="/app")
            h.request(path="/app")
        self.assertEqual(len(logs.output), 1)
        self.assertIs(h.seen[-1], MISSING)

    def test_empty_path_means_root(self):
        h = Harness(None)
        h.request(path="")
        self.assertIsNot(h.seen[-1], MISSING)
