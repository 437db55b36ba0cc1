"""What a client can send or a store can fail with, and what the middleware does with it.

Cookie headers of every malformed shape, IDs the client chose, errors from the store and
the app; then what an attacker can send or plant (hostile headers, cookie attributes,
out-of-range values).  The header-parsing tests compare the cost of two sizes of one
hostile header (a ratio, never an absolute time).
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
import unittest
from datetime import datetime, timedelta, timezone

import session
from tests.harness import (NAME, SECRET, Client, Harness, RecordingStore, call_wsgi, cookie_value,
                           js_encode, make_environ, make_record, ref_sign, sess)
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)


# ================================================================ malformed cookies

class TestBadCookies(unittest.TestCase):
    """Malformed Cookie headers never cost a user the session, nor us an exception."""

    def setUp(self):
        self.out = []
        self.h = Harness(lambda e: self.out.append((sess(e).id, sess(e).get("user"))))
        self.sid = self.h.seed({"user": "ada"})
        self.ours = f"{NAME}={cookie_value(self.sid)}"

    def assert_logged_in(self, header):
        del self.out[:]
        self.h.request(cookie=header)
        self.assertEqual(self.out, [(self.sid, "ada")], repr(header[:200]))

    def assert_fresh(self, header):
        del self.out[:]
        self.h.request(cookie=header)
        ((sid, user),) = self.out
        self.assertIsNone(user, repr(header[:200]))
        self.assertNotEqual(sid, self.sid)

    def test_other_malformed_cookies_never_cost_us_ours(self):
        ours = self.ours
        headers = [
            f"garbage\x01\x02\x7f; {ours}",
            f'a="unbalanced; {ours}',
            f'{ours}; b="unbalanced',
            f"=; {ours}",
            f"=; =; ;;; {ours}; ;",
            f"nokey; {ours}",
            f"a=%E0%A4%A; {ours}",
            f"a=%zz; {ours}; b=%",
            f"x=\xff\xfe\xc3; {ours}",
            f"$Version=1; {ours}",
            f"a=b=c=d; {ours}",
            f"a=[]{{}}(),/:?@; {ours}",
            f"{ours};other=1",
            f"  {ours}  ",
            f"{NAME.upper()}=junk; {ours}",
        ]
        for header in headers:
            with self.subTest(header=header):
                self.assert_logged_in(header)

    def test_hundred_kilobyte_cookie_header(self):
        self.assert_logged_in("big=" + "a" * 100_000 + "; " + self.ours)
        self.assert_fresh("big=" + "a" * 100_000)

    def test_thousand_cookies_in_header(self):
        many = "; ".join(f"c{i}=v{i}" for i in range(1000))
        self.assert_logged_in(f"{many}; {self.ours}")
        self.assert_logged_in(f"{self.ours}; {many}")

    def test_first_cookie_of_our_name_wins(self):
        other = self.h.seed({"user": "bob"})
        self.assert_logged_in(f"{self.ours}; {NAME}={cookie_value(other)}")

    def test_first_cookie_of_our_name_wins_even_when_invalid(self):
        self.assert_fresh(f"{NAME}=s%3Agarbage.sig; {self.ours}")

    def test_quoted_cookie_value_is_unquoted(self):
        self.assert_logged_in(f'{NAME}="{cookie_value(self.sid)}"')

    def test_a_value_quoted_on_one_side_only_is_not_unquoted(self):
        value = cookie_value(self.sid)
        for header in (f'{NAME}=X{value}"', f'{NAME}="{value}X'):
            with self.subTest(header=header):
                self.assert_fresh(header)

    def test_a_bare_token_of_our_name_before_our_cookie_is_skipped(self):
        # A pair without "=": the npm package cookie skips it and reads on.
        self.assert_logged_in(f"{NAME}; {self.ours}")

    def test_unencoded_value_is_used_raw(self):
        self.assert_logged_in(f"{NAME}=s:{ref_sign(self.sid, SECRET)}")

    def test_value_is_decoded_only_when_it_holds_a_percent_and_kept_raw_when_decoding_fails(self):
        for sid in ("a+b", "%", "50%off", "x%zz"):
            with self.subTest(sid=sid):
                self.h.store.set(sid, make_record({"user": "raw"}))
                del self.out[:]
                self.h.request(cookie=f"{NAME}=s:{ref_sign(sid, SECRET)}")
                self.assertEqual(self.out, [(sid, "raw")])

    def test_a_value_whose_decoding_fails_is_kept_raw_so_its_encoded_prefix_is_not_read(self):
        # decodeURIComponent throws on "%zz": express keeps "s%3A...", which lacks the "s:" prefix.
        sid = "x%zz"
        self.h.store.set(sid, make_record({"user": "raw"}))
        del self.out[:]
        self.h.request(cookie=f"{NAME}=s%3A{ref_sign(sid, SECRET)}")
        ((seen, user),) = self.out
        self.assertNotEqual(seen, sid)
        self.assertIsNone(user)

    def test_whitespace_around_name_and_value_is_trimmed(self):
        self.assert_logged_in(f"{NAME} = {cookie_value(self.sid)} ")
        self.assert_logged_in(f"a=1;{NAME}={cookie_value(self.sid)};b=2")

    def test_invalid_percent_escapes_in_our_cookie_give_fresh_session(self):
        for value in ("%zz", "s%3A%zz.abc", "s%3A%FF%FE.abc", "%", "s%3A" + cookie_value(self.sid)[4:] + "%"):
            with self.subTest(value=value):
                self.assert_fresh(f"{NAME}={value}")

    def test_value_without_s_prefix_is_ignored(self):
        self.assert_fresh(f"{NAME}={js_encode(ref_sign(self.sid, SECRET))}")
        # A valid signature after any other two characters (cookie-parser's JSON "j:") too.
        self.assert_fresh(f"{NAME}={js_encode('j:' + ref_sign(self.sid, SECRET))}")

    def test_bad_signatures_and_ids_of_any_shape_give_fresh_session(self):
        good = cookie_value(self.sid)
        values = ["", "s%3A", "s:", "s%3A.", "s%3Aabc", good[:-2], good + "A", good.replace("s%3A", "s%3Ax"),
                  "s%3A" + "a." * 2000, "s%3A" + "ü" * 50, "s%3A\xc3\xbc.\xc3\xbc", "s:abc.\xc3\xbc\xc3\xbc",
                  "s%3Aabc.%C3%BC%C3%BC", "s%3A" + "%00" * 10, "\x00\x01\x02", "s%3A" + "x" * 10000 + ".sig",
                  cookie_value(self.sid, "wrong secret")]
        for value in values:
            with self.subTest(value=value[:60]):
                self.assert_fresh(f"{NAME}={value}")

    def test_validly_signed_ids_of_any_shape_give_fresh_session(self):
        for sid in ("", "../../etc/passwd", "a" * 5000, "ü-日本", "a b;c=d", "sess:x", "\x00", "null", "{}"):
            with self.subTest(sid=sid[:40]):
                self.assert_fresh(f"{NAME}={cookie_value(sid)}")
                self.assertIsNone(self.h.store.get(sid) if sid else None)


class TestClientChosenIds(unittest.TestCase):
    """The server chooses every new ID; a client's is never adopted."""

    def test_bad_input_never_costs_an_exception_nor_a_client_chosen_id(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        for header in ("\x00", "=", ";", '"', "connect.sid", "connect.sid=", 'connect.sid="', "connect.sid=%",
                       f"connect.sid={cookie_value('chosen')}"):
            with self.subTest(header=header):
                h.store.reset()
                sc = h.request(cookie=header).cookie()
                self.assertNotEqual(sc.sid, "chosen")
                self.assertEqual(h.store.ids("set"), [sc.sid])

    def test_valid_signature_for_unknown_id_gets_new_server_chosen_id(self):
        for save_uninitialized in (False, True):
            with self.subTest(save_uninitialized=save_uninitialized):
                h = Harness(lambda e: sess(e).__setitem__("user", "ada"), save_uninitialized=save_uninitialized)
                h.client.jar[NAME] = cookie_value("attacker-chosen-id")
                sc = h.request().cookie()
                self.assertNotEqual(sc.sid, "attacker-chosen-id")
                self.assertEqual(list(h.store.all()), [sc.sid])
                self.assertNotIn("attacker-chosen-id", h.store.ids("set"))


# ================================================================ errors from the store and the app

class TestStoreAndAppErrors(unittest.TestCase):
    """A failing store or app propagates its error, and nothing half-done is saved."""

    def test_store_get_error_propagates_and_nothing_is_written(self):
        class Down(RecordingStore):
            def get(self, sid):
                super().get(sid)
                raise ConnectionError("store down")
        h = Harness(lambda e: sess(e).__setitem__("u", 1), store=Down())
        h.seed({"u": 0})
        with self.assertRaises(ConnectionError):
            h.request()
        self.assertEqual([n for n, _ in h.store.calls if n != "get"], [])

    def test_store_set_error_propagates_and_record_stays_as_it_was(self):
        class Full(RecordingStore):
            def set(self, sid, record):
                if self._depth == 0 and getattr(self, "armed", False):
                    raise OSError("disk full")
                return super().set(sid, record)
        store = Full()
        h = Harness(lambda e: sess(e).__setitem__("u", 2), store=store)
        sid = h.seed({"u": 1})
        store.armed = True
        with self.assertRaises(OSError):
            h.request()
        store.armed = False
        self.assertEqual(store.get(sid)["u"], 1)

    def test_store_touch_and_destroy_errors_propagate(self):
        class Flaky(RecordingStore):
            def touch(self, sid, record):
                raise ConnectionError("touch failed")

            def destroy(self, sid):
                raise ConnectionError("destroy failed")
        for label, action, kw in (("touch", None, {}),
                                  ("destroy", lambda e: e.__setitem__("session", None), {"unset": "destroy"})):
            with self.subTest(label):
                h = Harness(action, store=Flaky(), **kw)
                h.seed({"u": 1})
                with self.assertRaises(ConnectionError):
                    h.request()

    def test_app_raising_saves_nothing(self):
        def boom(environ):
            sess(environ)["u"] = 2
            raise RuntimeError("app failed")
        h = Harness(boom)
        sid = h.seed({"u": 1})
        with self.assertRaises(RuntimeError):
            h.request()
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.get(sid)["u"], 1)

    def test_app_raising_mid_body_saves_nothing(self):
        store = RecordingStore()

        def app(environ, start_response):
            def body():
                environ["session"]["u"] = 2
                start_response("200 OK", [("Content-Type", "text/plain")])
                yield b"first"
                yield b"second"
                raise RuntimeError("app failed mid-body")
            return body()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        with self.assertRaises(RuntimeError):
            Client(mw).request()
        self.assertEqual(store.count("set"), 0)
        self.assertEqual(store.length(), 0)


# ================================================================ hostile input

ATTRIBUTE_INJECTIONS = {
    "domain": ["example.com; Path=/evil", "example.com\r\nX-Injected: yes", "ex\u017fample.com",
               "exa mple.com", "example.com\x85", "-example.com", "a..b",
               "a" * 64 + ".com"],  # a label longer than 63 characters
    "path": ["/; Domain=evil.example; SameSite=None", "/\r\nX-Injected: yes", "/\nSet-Cookie: x=1",
             "/<script>", "/caf\u00e9", "/\x85", "/\x00"],
    "priority": ["high; SameSite=None; Domain=evil.example", "high\r\nX-Injected: 1", "urgent", ""],
    "same_site": ["lax; Domain=evil.example", "strict\r\n", "sometimes"],
}
WRONG_TYPES = {
    "domain": [5, b"example.com", ["example.com"]],
    "path": [5, b"/", ["/"]],
    "priority": [1, ["high"], True],
    "same_site": [["lax"], 1, {"lax": 1}],
    "http_only": [1, "yes", None],
    "secure": [1, "true", []],
    "partitioned": [1, "yes", {}],
}


def app_doing(action):
    """A WSGI app that runs ``action(session)`` and answers 200 (or 500 if it raised)."""
    def app(environ, start_response):
        try:
            action(environ["session"])
        except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
            app.errors.append(exc)
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"error"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    app.errors = []
    return app


async def asgi_ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def asgi_receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def asgi_discard(message):
    pass


def hostile_header_cost(header: str, middleware) -> float:
    """Median CPU seconds the middleware spends on one request carrying ``header``."""
    times = []
    for _ in range(5):
        env = make_environ(cookie=header)
        start = time.process_time()
        call_wsgi(middleware, env)
        times.append(time.process_time() - start)
    return statistics.median(times)


class TestCookieHeaderParsing(unittest.TestCase):

    def setUp(self):
        self.mw = session.SessionMiddleware(app_doing(lambda s: None), secret=SECRET)

    def assert_linear(self, make_header):
        small, large = make_header(64 * 1024), make_header(512 * 1024)
        hostile_header_cost(small, self.mw)  # warm up
        ratio = hostile_header_cost(large, self.mw) / max(hostile_header_cost(small, self.mw), 1e-6)
        # Linear: 8 times the bytes, about 8 times the time; quadratic would be 64.
        self.assertLess(ratio, 24, f"512 KiB costs {ratio:.1f}x what 64 KiB costs")

    def test_parsing_is_linear_when_the_name_repeats_without_separators(self):
        self.assert_linear(lambda size: NAME * (size // len(NAME)))

    def test_parsing_is_linear_for_many_cookie_lines_joined_with_commas(self):
        line = NAME + "=" + "x" * 8000
        self.assert_linear(lambda size: ",".join([line] * (size // len(line))))

    def test_parsing_is_linear_for_many_pairs_whose_keys_contain_the_name(self):
        pair = "x" + NAME + "=1; "
        self.assert_linear(lambda size: pair * (size // len(pair)))

    def test_many_cookie_header_lines_under_asgi_are_joined_in_linear_time(self):
        # HTTP/2 sends a header line per cookie; joining them one by one was quadratic.
        mw = session.ASGISessionMiddleware(asgi_ok, secret=SECRET)

        def cost(lines: int) -> float:
            scope = {"type": "http", "path": "/", "headers": [(b"cookie", b"a=" + b"x" * 8)] * lines}
            times = []
            for _ in range(5):
                start = time.process_time()
                asyncio.run(mw(dict(scope), asgi_receive, asgi_discard))
                times.append(time.process_time() - start)
            return statistics.median(times)
        cost(8_000)  # warm up
        ratio = cost(64_000) / max(cost(8_000), 1e-6)
        self.assertLess(ratio, 24, f"64,000 lines cost {ratio:.1f}x what 8,000 cost")

    def test_a_cookie_value_longer_than_a_browser_keeps_is_not_read(self):
        # A browser keeps 4,096 bytes of a cookie: a longer value is forged or broken, and
        # reading it (percent-decoding, then a MAC over all of it) cost 1 µs per 10 bytes.
        for length, read in ((4096, True), (4097, False)):
            with self.subTest(length):
                # An ID whose signature needs no escapes (43 characters): the value is `length` long.
                sid = next(sid for sid in (c * (length - len("s%3A.") - 43) for c in "abcdefgh")
                           if len(cookie_value(sid)) == length)
                store = session.MemoryStore()
                store.set(sid, make_record({"n": 1}))
                seen = []
                mw = session.SessionMiddleware(app_doing(lambda s: seen.append(dict(s))),
                                               secret=SECRET, store=store)
                value = cookie_value(sid)
                self.assertEqual(len(value), length)
                call_wsgi(mw, make_environ(cookie=NAME + "=" + value))
                self.assertEqual(seen, [{"n": 1}] if read else [{}])

    def test_our_cookie_after_a_hostile_prefix_is_still_found(self):
        sid = "a" * 32
        store = session.MemoryStore()
        store.set(sid, make_record({"n": 1}))
        seen = []
        mw = session.SessionMiddleware(app_doing(lambda s: seen.append(dict(s))), secret=SECRET,
                                       store=store)
        header = NAME * 5000 + "; x" + NAME + "=1; " + NAME + "=" + cookie_value(sid)
        call_wsgi(mw, make_environ(cookie=header))
        self.assertEqual(seen, [{"n": 1}])


class TestCookieAttributesAreValidatedWherever(unittest.TestCase):
    """Every cookie attribute passes one check: constructor, assignment, options, stored record."""

    def test_injection_through_runtime_assignment_raises_naming_the_attribute(self):
        for attr, values in ATTRIBUTE_INJECTIONS.items():
            for value in values:
                with self.subTest(attr=attr, value=value):
                    cookie = session.Cookie()
                    before = cookie.serialize(NAME, "v")
                    with self.assertRaisesRegex(ValueError, attr):
                        setattr(cookie, attr, value)
                    self.assertEqual(cookie.serialize(NAME, "v"), before)

    def test_wrong_types_raise_type_error_naming_the_attribute(self):
        for attr, values in WRONG_TYPES.items():
            for value in values:
                with self.subTest(attr=attr, value=value):
                    with self.assertRaisesRegex(TypeError, attr):
                        setattr(session.Cookie(), attr, value)
                    with self.assertRaisesRegex(TypeError, attr):
                        session.Cookie(**{attr: value})
                    with self.assertRaisesRegex(TypeError, attr):
                        session.SessionMiddleware(lambda e, s: [], secret=SECRET,
                                                  cookie={attr: value})

    def test_the_public_constructor_checks_every_attribute(self):
        for attr, values in ATTRIBUTE_INJECTIONS.items():
            for value in values:
                with self.subTest(attr=attr, value=value):
                    with self.assertRaisesRegex(ValueError, attr):
                        session.Cookie(**{attr: value})
                    with self.assertRaisesRegex(ValueError, attr):
                        session.SessionMiddleware(lambda e, s: [], secret=SECRET,
                                                  cookie={attr: value})

    def test_valid_values_are_accepted_as_express_accepts_them(self):
        cookie = session.Cookie(domain=".Example.COM", path="/a b/c:d=e", priority="High",
                                same_site="Lax", secure=True, partitioned=False)
        cookie.same_site = True
        cookie.same_site = False
        cookie.domain = "a" * 63 + ".example.com"
        cookie.domain = "sub-1.example.com"
        self.assertEqual(
            cookie.serialize(NAME, "v"),
            f"{NAME}=v; Domain=sub-1.example.com; Path=/a b/c:d=e; HttpOnly; Secure; "
            "Priority=High")

    def test_a_tampered_attribute_in_the_app_never_reaches_a_header(self):
        for attr, values in ATTRIBUTE_INJECTIONS.items():
            for value in values:
                with self.subTest(attr=attr, value=value):
                    def action(s, attr=attr, value=value):
                        s["n"] = 1
                        setattr(s.cookie, attr, value)
                    app = app_doing(action)
                    resp = call_wsgi(session.SessionMiddleware(app, secret=SECRET,
                                                               cookie={"max_age": 60}),
                                     make_environ())
                    self.assertIsInstance(app.errors[0], ValueError)
                    for header in resp.values("Set-Cookie"):
                        self.assertNotIn("evil", header)
                        self.assertNotIn("Injected", header)

    def test_destroy_expires_the_cookie_with_checked_attributes_only(self):
        def action(s):
            try:
                s.cookie.domain = "example.com; Domain=evil.example"
            except ValueError:
                pass
            s.destroy()
        store = session.MemoryStore()
        store.set("a" * 32, make_record({"n": 1}))
        mw = session.SessionMiddleware(app_doing(action), secret=SECRET, store=store)
        resp = call_wsgi(mw, make_environ(cookie=f"{NAME}={cookie_value('a' * 32)}"))
        [header] = resp.values("Set-Cookie")
        self.assertNotIn("evil", header)
        self.assertIn("Expires=Thu, 01 Jan 1970 00:00:00 GMT", header)


class TestSerializeRefusesWhatACookieCannotCarry(unittest.TestCase):

    def test_serialize_checks_name_and_value_as_the_npm_package_cookie_does(self):
        cookie = session.Cookie()
        for name, value in (("a;b", "v"), ("a b", "v"), ("a\r\nX: 1", "v"), ("", "v"),
                            ("a", "v; Domain=evil.example"), ("a", "v\r\nX-Injected: 1"),
                            ("a", "caf\u00e9"), ("a", 'v"')):
            with self.subTest(name=name, value=value):
                with self.assertRaises(ValueError):
                    cookie.serialize(name, value)
        self.assertEqual(cookie.serialize("a", '"v"'), 'a="v"; Path=/; HttpOnly')


class TestVerifiedIdIsAlwaysEncoded(unittest.TestCase):
    """An ID signed by another holder of the secret is re-sent as encodeURIComponent sends it."""

    def test_an_id_with_separators_is_percent_encoded_when_re_sent(self):
        sid = "x; Domain=evil.example; SameSite=None"
        store = session.MemoryStore()
        store.set(sid, make_record({"n": 1}))
        mw = session.SessionMiddleware(app_doing(lambda s: s.get("n")), secret=SECRET,
                                       store=store, rolling=True, cookie={"max_age": 60})
        resp = call_wsgi(mw, make_environ(cookie=f"{NAME}={cookie_value(sid)}"))
        [header] = resp.values("Set-Cookie")
        value = header.split(";")[0]
        self.assertEqual(value, f"{NAME}={cookie_value(sid)}")
        self.assertNotIn("Domain=evil", header)
        self.assertEqual(header.count(";"), header.split("=", 1)[1].count(";"))


class TestOutOfRangeValuesAreRefusedWhereGiven(unittest.TestCase):

    def test_max_age_beyond_the_limit_is_refused_at_construction_naming_the_limit(self):
        for value in (10 ** 17, 1e300, 10 ** 11, timedelta(days=10 ** 8)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(ValueError, r"max_age.*10000000000 seconds"):
                    session.SessionMiddleware(lambda e, s: [], secret=SECRET,
                                              cookie={"max_age": value})

    def test_max_age_beyond_the_limit_is_refused_on_assignment(self):
        cookie = session.Cookie(max_age=60)
        for value in (10 ** 20, -10 ** 20, float("inf"), float("nan")):
            with self.subTest(value=value):
                with self.assertRaisesRegex(ValueError, "max_age"):
                    cookie.max_age = value
        self.assertAlmostEqual(cookie.original_max_age, 60)

    def test_expires_beyond_the_limit_is_refused(self):
        far = datetime(9999, 1, 1, tzinfo=timezone.utc)
        with self.assertRaisesRegex(ValueError, "expires"):
            session.Cookie().expires = far
        with self.assertRaisesRegex(ValueError, "expires"):
            session.SessionMiddleware(lambda e, s: [], secret=SECRET, cookie={"expires": far})

    def test_a_number_too_large_for_a_float_is_refused_naming_the_option(self):
        huge = 10 ** 400
        with self.assertRaisesRegex(ValueError, "max_age"):
            session.SessionMiddleware(lambda e, s: [], secret=SECRET, cookie={"max_age": huge})
        with self.assertRaisesRegex(ValueError, "max_age"):
            session.Cookie(max_age=huge)
        with self.assertRaisesRegex(ValueError, "ttl"):
            session.MemoryStore(ttl=huge)

    def test_the_longest_max_age_allowed_still_makes_valid_headers_and_records(self):
        mw = session.SessionMiddleware(app_doing(lambda s: s.__setitem__("n", 1)), secret=SECRET,
                                       cookie={"max_age": 10_000_000_000})
        resp = call_wsgi(mw, make_environ())
        self.assertEqual(resp.status, "200 OK")
        self.assertRegex(resp.values("Set-Cookie")[0], r"Expires=\w{3}, \d\d \w{3} \d{4} ")

    def test_a_genid_returning_a_lone_surrogate_is_refused_naming_genid(self):
        mw = session.SessionMiddleware(app_doing(lambda s: s.__setitem__("n", 1)), secret=SECRET,
                                       genid=lambda environ: "id\ud800")
        with self.assertRaisesRegex(ValueError, "genid"):
            call_wsgi(mw, make_environ())


class TestPlantedExpiryOutsideDatetimesRange(unittest.TestCase):
    """A stored expires that datetime cannot hold (an offset past year 9999, or before 1)."""

    DATES = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
             datetime.max, datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23)))]

    def test_reading_the_cookies_expiry_never_raises(self):
        for date in self.DATES:
            for as_text in (True, False):
                with self.subTest(date=date, as_text=as_text):
                    self.check(date, as_text)

    def check(self, date, as_text):
        record = {"cookie": {"originalMaxAge": 3600000, "expires": date, "httpOnly": True,
                             "path": "/"}, "user": "ada"}
        text = json.dumps(record, default=str, separators=(",", ":"))

        class Planted(session.Store):
            def get(self, sid):
                return (json.loads(text) if as_text else record) if sid == "planted" else None
            set = touch = destroy = lambda self, *args: None

        if as_text:
            Planted.get_text = lambda self, sid: text if sid == "planted" else None
        app = app_doing(lambda s: s.cookie.expires)
        mw = session.SessionMiddleware(app, secret=SECRET, store=Planted())
        resp = call_wsgi(mw, make_environ(cookie=f"{NAME}={cookie_value('planted')}"))
        self.assertEqual((resp.status, app.errors), ("200 OK", []))
