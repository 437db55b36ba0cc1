"""Signing as cookie-signature does it: the npm package's own vectors, hmac.compare_digest,
the verified-cookie cache, and secrets (rotation, bytes) through the middleware.
"""
from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import unittest
import urllib.parse
from pathlib import Path
from unittest import mock

import session
from tests.harness import HOUR, NAME, SECRET, Harness, cookie_value, make_record, ref_sign, sess
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)

# Made with the npm packages cookie-signature 1.0.7 and cookie 0.7.2 (copied from shared/vectors).
VECTORS = Path(__file__).resolve().parent / "vectors" / "cookie-signature.json"


def load_vectors():
    if not VECTORS.exists():
        return None
    return json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]


VECTOR_LIST = load_vectors()
needs_vectors = unittest.skipIf(VECTOR_LIST is None, f"shared vectors not found at {VECTORS} "
                                                     "(clone the repo with shared/ beside it)")


class TestSigning(unittest.TestCase):

    @needs_vectors
    def test_sign_matches_cookie_signature_vectors(self):
        for v in VECTOR_LIST:
            with self.subTest(value=v["value"], secret=v["secret"]):
                self.assertEqual(session.sign(v["value"], v["secret"]), v["signed"])
                self.assertEqual(session.sign(v["value"], v["secret"].encode()), v["signed"])

    @needs_vectors
    def test_unsign_verifies_vectors_and_rejects_other_secrets(self):
        for v in VECTOR_LIST:
            with self.subTest(value=v["value"], secret=v["secret"]):
                self.assertEqual(session.unsign(v["signed"], v["secret"]), v["value"])
                self.assertEqual(session.unsign(v["signed"], ["wrong", v["secret"]]), v["value"])
                self.assertIsNone(session.unsign(v["signed"], "wrong"))
                self.assertIsNone(session.unsign(v["signed"], ["wrong", "also wrong"]))

    @needs_vectors
    def test_middleware_sends_vector_cookie_header_value(self):
        for v in VECTOR_LIST:
            if not v["value"]:
                continue
            with self.subTest(value=v["value"], secret=v["secret"]):
                h = Harness(lambda e: sess(e).__setitem__("u", 1), secret=v["secret"],
                            genid=lambda environ, value=v["value"]: value)
                self.assertEqual(h.request().cookie().value, v["cookie_header_value"])

    @needs_vectors
    def test_middleware_reads_vector_cookie_header_value(self):
        for v in VECTOR_LIST:
            if not v["value"]:
                continue
            with self.subTest(value=v["value"], secret=v["secret"]):
                out = {}
                h = Harness(lambda e: out.update(id=sess(e).id, n=sess(e).get("n")), secret=v["secret"])
                h.store.set(v["value"], make_record({"n": 42}))
                h.request(cookie=f"{NAME}={v['cookie_header_value']}")
                self.assertEqual(out, {"id": v["value"], "n": 42})

    @needs_vectors
    def test_vectors_cookie_header_value_is_s_prefix_plus_signed(self):
        for v in VECTOR_LIST:
            self.assertEqual(urllib.parse.unquote(v["cookie_header_value"]), "s:" + v["signed"])
            self.assertEqual(cookie_value(v["value"], v["secret"]), v["cookie_header_value"])

    def test_signed_empty_value_verifies_as_empty_string(self):
        self.assertEqual(session.unsign(ref_sign("", SECRET), SECRET), "")

    def test_unsign_splits_at_the_last_dot(self):
        self.assertEqual(session.unsign(ref_sign("a.b.c", SECRET), SECRET), "a.b.c")

    def test_unsign_rejects_malformed_input_without_raising(self):
        good = ref_sign("abc", SECRET)
        bad = ["", ".", "abc", "abc.", good + "x", good[:-1], "x" + good, good.replace("abc", "abd"),
               "abc.ü", "ü.ü", "abc." + "é" * 43, "abc.\x00", "abc." + good.split(".")[1] + "=",
               "\udcff.abc", good + "\n"]
        for signed in bad:
            with self.subTest(signed=signed):
                self.assertIsNone(session.unsign(signed, SECRET))
                self.assertIsNone(session.unsign(signed, [SECRET + "x", SECRET + "y"]))

    def test_unsign_of_what_is_not_a_str_is_a_type_error(self):
        for signed in (None, ref_sign("abc", SECRET).encode(), 1):
            with self.subTest(signed=signed):
                with self.assertRaisesRegex(TypeError, "must be a str"):
                    session.unsign(signed, SECRET)

    @contextlib.contextmanager
    def patched_compare_digest(self, replacement):
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(hmac, "compare_digest", replacement))
            stack.enter_context(mock.patch.object(secrets, "compare_digest", replacement))
            for attr in ("compare_digest", "_compare_digest"):
                if hasattr(session, attr):
                    stack.enter_context(mock.patch.object(session, attr, replacement))
            yield

    def test_unsign_decides_with_hmac_compare_digest(self):
        real = hmac.compare_digest
        calls = []

        def spy(a, b):
            calls.append((a, b))
            return real(a, b)
        good = ref_sign("abc", SECRET)
        with self.patched_compare_digest(spy):
            self.assertEqual(session.unsign(good, SECRET), "abc")
            self.assertTrue(calls, "unsign did not call hmac.compare_digest")
            del calls[:]
            self.assertIsNone(session.unsign(good[:-1] + ("A" if good[-1] != "A" else "B"), SECRET))
            self.assertTrue(calls, "a near-miss signature was rejected without compare_digest")
        # The verdict is compare_digest's: forcing it False rejects a correct signature.
        with self.patched_compare_digest(lambda a, b: False):
            self.assertIsNone(session.unsign(good, SECRET))
            self.assertIsNone(session.unsign(good, [SECRET, "other"]))

    def test_middleware_verifies_cookies_with_hmac_compare_digest(self):
        # Every cookie value the middleware has not verified before goes through
        # compare_digest; only values that passed it are remembered.
        out = []
        h = Harness(lambda e: out.append(sess(e).get("user")))
        h.seed({"user": "ada"})
        with self.patched_compare_digest(lambda a, b: False):
            h.request()
        h.request()
        self.assertEqual(out, [None, "ada"], "the middleware's signature check bypasses compare_digest")

    def test_a_forged_cookie_is_never_taken_from_the_verified_cache(self):
        out = []
        h = Harness(lambda e: out.append(sess(e).get("user")))
        h.seed({"user": "ada"})
        good = h.client.jar[NAME]
        h.request()
        for forged in (good[:-1] + ("A" if good[-1] != "A" else "B"), good + "x", good[:-3]):
            h.client.jar[NAME] = forged
            h.request()
        self.assertEqual(out, ["ada", None, None, None])

    def test_a_remembered_header_or_value_never_vouches_for_a_different_header(self):
        out = []
        h = Harness(lambda e: out.append(sess(e).get("user")))
        h.seed({"user": "ada"})
        good = h.client.jar[NAME]
        ours = f"{NAME}={good}"
        forged = good[:-1] + ("A" if good[-1] != "A" else "B")
        headers = [ours, f"a=1; {ours}",            # verified: remembered by value and by header
                   good, f"x{ours}", f"{NAME}x={good}",  # the value, but not as our cookie
                   f"{NAME}={forged}; {ours}",       # the first of two wins, as in express
                   f"a=1; {ours}", ours]             # remembered ones still read right
        for header in headers:
            h.request(cookie=header)
        self.assertEqual(out, ["ada", "ada", None, None, None, None, "ada", "ada"])

    def test_remembered_cookies_stay_bounded_and_long_headers_are_not_kept(self):
        out = []
        h = Harness(lambda e: out.append(sess(e).get("user")))
        with mock.patch.object(session, "_VERIFIED_CACHE_SIZE", 8):
            for i in range(20):
                h.seed({"user": f"u{i}"})
                h.request(cookie=f"{NAME}={h.client.jar[NAME]}; pad={'x' * i}")
        self.assertEqual(out, [f"u{i}" for i in range(20)])
        self.assertLessEqual(len(h.mw._verified), 8)
        self.assertLessEqual(len(h.mw._verified_headers), 8)
        long_header = f"{NAME}={h.client.jar[NAME]}; pad={'x' * 2000}"
        h.request(cookie=long_header)
        h.request(cookie=long_header)
        self.assertEqual(out[-2:], ["u19", "u19"])
        self.assertNotIn(long_header, h.mw._verified_headers)

    def test_an_empty_secret_is_refused_as_the_middleware_refuses_it(self):
        # An HMAC with an empty key is one anybody can make: os.environ.get("SECRET", "") with
        # the variable unset, or a stray "" in a rotation list, must not verify forgeries.
        forged = ref_sign("admin", "")
        for secrets in ("", b"", ["new", ""]):
            with self.subTest(secrets=secrets):
                with self.assertRaisesRegex(ValueError, "empty"):
                    session.unsign(forged, secrets)
        with self.assertRaisesRegex(ValueError, "empty"):
            session.sign("admin", "")

    def test_unsign_accepts_one_secret_or_a_list(self):
        signed = ref_sign("abc", "second")
        self.assertEqual(session.unsign(signed, "second"), "abc")
        self.assertEqual(session.unsign(signed, b"second"), "abc")
        self.assertEqual(session.unsign(signed, ["first", "second"]), "abc")
        self.assertEqual(session.unsign(signed, ("first", b"second")), "abc")
        self.assertIsNone(session.unsign(signed, ["first"]))


    def test_secrets_around_hmacs_64_byte_block_sign_as_cookie_signature_does(self):
        # HMAC pads a key of up to 64 bytes and hashes a longer one first.
        for size in (63, 64, 65, 100):
            with self.subTest(secret_bytes=size):
                secret = "k" * size
                signed = session.sign("abc", secret)
                self.assertEqual(signed, ref_sign("abc", secret))
                self.assertEqual(session.unsign(signed, secret), "abc")

class TestSecrets(unittest.TestCase):
    """The first secret signs, every secret verifies; a cookie that fails never reaches the store."""

    def test_first_secret_signs_and_every_secret_verifies(self):
        h = Harness(lambda e: sess(e).__setitem__("n", sess(e).get("n", 0) + 1),
                    secret=["new secret", "old secret"], cookie={"max_age": HOUR})
        sid = h.seed({"n": 1})
        h.client.jar[NAME] = cookie_value(sid, "old secret")
        sc = h.request().cookie()
        self.assertEqual(sc.sid, sid, "a cookie signed with a retired secret still logs in")
        self.assertEqual(h.store.get(sid)["n"], 2)
        self.assertEqual(sc.value, cookie_value(sid, "new secret"))
        h.client.jar[NAME] = cookie_value(sid, "unknown secret")
        sc = h.request().cookie()
        self.assertNotEqual(sc.sid, sid)

    def test_bytes_secret_signs_like_its_utf8_string(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1), secret="sécret".encode())
        sc = h.request().cookie()
        self.assertEqual(sc.value, cookie_value(sc.sid, "sécret"))

    def test_surrogates_are_signed_as_node_encodes_a_javascript_string(self):
        # A lone surrogate (a secret from a non-UTF-8 environment variable) is U+FFFD to Node's
        # crypto; two halves of a pair are their character.  Made with cookie-signature 1.0.7.
        for value, secret, signed in (
                ("\ud800", "k", "\ud800.kdOXc3OKDcBHcSZws8VtRCD0NKw0PGrLT1eW0euelDA"),
                ("user:\udfff", "k", "user:\udfff.MDeJ2LxYyBc8WXLFCRYV5m8ehi+4sAVSR+4ckM9MB+I"),
                ("\ud83d\ude00", "k", "\ud83d\ude00.pXdisECugIoklvpXwEvhNPw5jcMSoby5fDiZVtQv72Q"),
                ("\ude00\ud83d", "k", "\ude00\ud83d.e7iZhOOUFvUvVBGY9JE/6Ft5P62/YGX3Vjc3kbev2UM")):
            with self.subTest(value=value, secret=secret):
                self.assertEqual(session.sign(value, secret), signed)
                self.assertEqual(session.unsign(signed, [secret]), value)

    def test_a_secret_with_lone_surrogates_is_refused(self):
        # What os.environ gives for bytes that are not UTF-8.  Node would sign with U+FFFD
        # for each, so secrets that differ there would verify each other's cookies.
        for use in (lambda: session.sign("abc", "k\udcff"), lambda: session.unsign("abc.x", "k\udcff"),
                    lambda: session.SessionMiddleware(lambda e, s: [], secret=["ok", "k\udcff"])):
            with self.assertRaisesRegex(ValueError, "surrogates.*bytes"):
                use()

    def test_badly_signed_cookie_never_reaches_the_store(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        sid = h.seed({"u": 0})
        h.request(cookie=f"{NAME}={cookie_value(sid, 'not our secret')}")
        self.assertNotIn(sid, h.store.ids("get"))
        self.assertEqual(h.store.get(sid)["u"], 0)
