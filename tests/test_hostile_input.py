"""What an attacker can send or plant, and what the middleware does with it.

Each test is named after the rule it proves.  The header-parsing test compares the
cost of two sizes of one hostile header (a ratio, never an absolute time).
"""
from __future__ import annotations

import statistics
import time
import unittest
from datetime import datetime, timedelta, timezone

import session
from test_session import NAME, SECRET, call_wsgi, cookie_value, make_environ, make_record

ATTRIBUTE_INJECTIONS = {
    "domain": ["example.com; Path=/evil", "example.com\r\nX-Injected: yes", "ex\u017fample.com",
               "exa mple.com", "example.com\x85", "-example.com", "a..b"],
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


if __name__ == "__main__":
    unittest.main()
