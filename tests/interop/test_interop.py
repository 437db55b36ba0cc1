"""One login across Express and Python: the real express-session + connect-redis app (app.js) and
the same routes on SessionMiddleware + RedisStore (wsgi_app.py) share one private redis-server.

Needs node with ``cd tests/interop && npm ci``, ``redis-server`` and ``pip install redis``.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import random
import select
import subprocess
import threading
import time
import unittest
from urllib.parse import quote, unquote

import session
from tests.redis_server import RedisServer, redis_server_available
from tests.support import free_port, has_module, has_program, requires

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = all(os.path.isdir(os.path.join(HERE, "node_modules", package))
                   for package in ("express-session", "express5"))
NAME = "connect.sid"
OLD, NEW = "old secret: keyboard cat", "new secret: ключ 🔑"
HOUR_MS = 3_600_000
# Every JSON type, nesting, unicode (astral too), escapes, and keys in a non-sorted order.
DATA = {"z_last_first": 1, "user_name": "Zoë 🐍", "count": 7, "ratio": 1.5, "tiny": 0.1,
        "neg": -3, "big": 2**53 - 1, "flag": True, "off": False, "nothing": None,
        "list": [1, "two", 3.25, None, [True]], "nested": {"b": 1, "a": {"c": ["ü"]}},
        "escapes": "quote\" backslash\\ slash/ tab\t nl\n ctrl\x01 \u2028 del\x7f",
        "empty": {}, "empty_list": []}


def _quiet_stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class NodeApp:
    """app.js in a node process on a free port, configured through its environment, on Express
    ``express`` (its major: "4" or "5")."""

    def __init__(self, redis_url: str | None, secrets: list, max_age_ms: int | None, rolling: bool,
                 *, store_env: dict | None = None, express: str = "4") -> None:
        self.port = free_port()
        env = dict(os.environ, PORT=str(self.port), REDIS_URL=redis_url or "", SESSION_STORE="redis",
                   SECRETS=json.dumps(secrets), MAX_AGE="" if max_age_ms is None else str(max_age_ms),
                   ROLLING="1" if rolling else "0", EXPRESS=express)
        env.update(store_env or {})  # e.g. SESSION_STORE=pg and DATABASE_URL
        env.pop("NODE_ENV", None)
        self.proc = subprocess.Popen(["node", "app.js"], cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(b"listening") or not line:
                    break
        if not line.startswith(b"listening"):
            _quiet_stop(self.proc)
            raise RuntimeError(f"node app.js did not start: {line!r} {self.proc.stdout.read()!r}")
        self.express_version = line.split()[-1].decode()   # "listening <port> express <version>"
        if self.express_version.split(".")[0] != express:
            _quiet_stop(self.proc)
            raise RuntimeError(f"node app.js runs Express {self.express_version}, not Express {express}")
        # Keep reading what node prints, so a full pipe can never stall it.
        self.output: list = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self) -> None:
        _quiet_stop(self.proc)
        self._drainer.join(5)   # ends at EOF, once node has exited
        self.proc.stdout.close()


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = json.loads(body) if body else None
        ours = [h for h in headers.get_all("Set-Cookie") or [] if h.startswith(NAME + "=")]
        self.set_cookie = ours[-1] if ours else None

    @property
    def cookie_value(self) -> str | None:
        """The value our Set-Cookie carries (percent-encoded, as on the wire), or None."""
        return self.set_cookie.split(";", 1)[0].split("=", 1)[1] if self.set_cookie else None


def fetch(port: int, path: str, cookie: str | None = None, header: str | None = None) -> Response:
    """GET with our cookie set to ``cookie``, or with ``header`` as the whole Cookie header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if cookie:
        header = f"{NAME}={cookie}"
    try:
        conn.request("GET", path, headers={"Cookie": header} if header is not None else {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


class Browser:
    """Keeps the session cookie the way a browser does, across both apps (same host, path /)."""

    def __init__(self) -> None:
        self.cookie: str | None = None

    def get(self, port: int, path: str) -> Response:
        resp = fetch(port, path, self.cookie)
        assert resp.status == 200, (resp.status, path, resp.body)
        if resp.set_cookie:
            expired = "Expires=Thu, 01 Jan 1970" in resp.set_cookie
            self.cookie = None if expired else resp.cookie_value
        return resp

    @property
    def sid(self) -> str:
        return unquote(self.cookie)[2:].rsplit(".", 1)[0]


def _ordered(text: bytes | str):
    """The record as nested lists of (key, value) pairs, so comparisons see key order."""
    return json.loads(text, object_pairs_hook=list)


@requires(has_program("node"), "install Node.js 18+: apt-get install -y nodejs npm")
@requires(NODE_MODULES, "install the Express app: run: cd tests/interop && npm ci")
@requires(redis_server_available(), "install Redis: apt-get install -y redis-server")
@requires(has_module("redis"), "install redis-py: pip install redis")
class TestExpressInterop(unittest.TestCase):
    """Express 4 (express-session 1.19 + connect-redis 9) and SessionMiddleware + RedisStore, one Redis."""

    EXPRESS = "4"

    @classmethod
    def setUpClass(cls) -> None:
        import redis
        from stores.redis_store import RedisStore
        from tests.interop.wsgi_app import ServedApp, make_app

        cls.redis_server = RedisServer().start()
        cls.addClassCleanup(cls.redis_server.close)
        cls.redis = redis.Redis.from_url(cls.redis_server.url)
        cls.addClassCleanup(cls.redis.close)
        cls._apps: dict = {}

        def pair(key, secrets, max_age_ms=HOUR_MS, rolling=False):
            """(node port, python port) for one configuration, started once per class."""
            if key not in cls._apps:
                node = NodeApp(cls.redis_server.url, secrets, max_age_ms, rolling, express=cls.EXPRESS)
                cls.addClassCleanup(node.stop)
                store = RedisStore(url=cls.redis_server.url)
                cls.addClassCleanup(store.close)
                py = ServedApp(make_app(secrets, store, rolling=rolling,
                                        max_age=None if max_age_ms is None else max_age_ms / 1000),
                               free_port())
                cls.addClassCleanup(py.stop)
                cls._apps[key] = (node.port, py.port)
            return cls._apps[key]

        cls.pair = staticmethod(pair)
        cls.node, cls.py = pair("main", [OLD])

    def raw(self, sid: str) -> bytes | None:
        return self.redis.get("sess:" + sid)

    def both_ways(self):
        """(first, second) app ports, each order, as subtests."""
        for label, order in (("express→python", (self.node, self.py)),
                             ("python→express", (self.py, self.node))):
            with self.subTest(label):
                yield order

    # -- shared login ---------------------------------------------------------------------------
    def test_a_login_on_one_app_is_seen_by_the_other(self):
        for first, second in self.both_ways():
            browser = Browser()
            login = browser.get(first, "/login?user=ada")
            self.assertIsNotNone(login.set_cookie)
            who = browser.get(second, "/whoami").body
            self.assertEqual(who, {"user": "ada", "id": browser.sid})
            self.assertEqual(login.body["id"], browser.sid)

    def test_a_counter_incremented_alternately_on_both_counts_1_2_3_4(self):
        for first, second in self.both_ways():
            browser = Browser()
            counts = [browser.get(port, "/incr").body["views"] for port in (first, second, first, second)]
            self.assertEqual(counts, [1, 2, 3, 4])
            self.assertEqual(json.loads(self.raw(browser.sid))["views"], 4)

    def test_logout_on_either_app_ends_the_session_on_both(self):
        for first, second in self.both_ways():
            browser = Browser()
            browser.get(second, "/login?user=grace")
            sid, cookie = browser.sid, browser.cookie
            self.assertIsNotNone(self.raw(sid))
            browser.get(first, "/logout")
            self.assertIsNone(self.raw(sid))
            for port in (first, second):
                who = fetch(port, "/whoami", cookie).body   # even a client that kept the cookie
                self.assertIsNone(who["user"])
                self.assertNotEqual(who["id"], sid)
            self.assertIsNone(self.raw(sid), "a read after logout must not resurrect the record")

    # -- Redis TTL --------------------------------------------------------------------------------
    def test_python_write_sets_the_same_redis_ttl_as_connect_redis(self):
        for key, max_age_ms, expected_s in (("main", HOUR_MS, 3600), ("browser-cookie", None, 86400)):
            node, py = self.pair(key, [OLD], max_age_ms)
            for first, second in ((node, py), (py, node)):   # the session created by each
                with self.subTest(cookie=key, created_by="express" if first == node else "python"):
                    browser = Browser()
                    ttls = []
                    for port in (first, second):
                        browser.get(port, "/incr")
                        ttls.append(self.redis.pttl("sess:" + browser.sid))
                    self.assertLessEqual(abs(ttls[0] - ttls[1]), 1000, ttls)
                    for ttl in ttls:
                        self.assertTrue(expected_s * 1000 - 2000 <= ttl <= expected_s * 1000, ttls)

    def test_a_read_refreshes_the_redis_ttl_on_both_as_connect_redis_touch_does(self):
        for first, second in self.both_ways():
            browser = Browser()
            browser.get(first, "/incr")
            key = "sess:" + browser.sid
            before = self.raw(browser.sid)
            ttls = []
            for port in (first, second):
                self.redis.expire(key, 100)
                browser.get(port, "/whoami")
                ttls.append(self.redis.pttl(key))
            self.assertLessEqual(abs(ttls[0] - ttls[1]), 1000, ttls)
            self.assertGreater(min(ttls), HOUR_MS - 2000, ttls)
            self.assertEqual(self.raw(browser.sid), before, "a read must only touch, not rewrite")

    # -- records --------------------------------------------------------------------------------
    def test_a_python_record_is_read_by_express_as_written(self):
        self._check_record_read_across(writer=self.py, reader=self.node)

    def test_an_express_record_is_read_by_python_as_written(self):
        self._check_record_read_across(writer=self.node, reader=self.py)

    def _check_record_read_across(self, writer: int, reader: int) -> None:
        browser = Browser()
        browser.get(writer, "/login?user=ada")
        browser.get(writer, "/put?data=" + quote(json.dumps(DATA)))
        stored = self.raw(browser.sid)
        seen = browser.get(reader, "/raw").body
        self.assertEqual(seen["id"], browser.sid)
        # Same cookie.expires, originalMaxAge, data and key order as stored.
        self.assertEqual(_ordered(json.dumps(seen["session"])), _ordered(stored))
        record = json.loads(stored)
        self.assertEqual(seen["session"]["cookie"]["expires"], record["cookie"]["expires"])
        self.assertEqual(seen["session"]["cookie"]["originalMaxAge"], record["cookie"]["originalMaxAge"])
        self.assertIn(record["cookie"]["originalMaxAge"], (HOUR_MS, HOUR_MS - 1))   # Node: 3599999 at times
        self.assertEqual(seen["types"], {"user": "string", "z_last_first": "integer", "user_name": "string",
                                         "count": "integer", "ratio": "float", "tiny": "float",
                                         "neg": "integer", "big": "integer", "flag": "boolean",
                                         "off": "boolean", "nothing": "null", "list": "array",
                                         "nested": "object", "escapes": "string", "empty": "object",
                                         "empty_list": "array"})
        self.assertEqual(self.raw(browser.sid), stored, "reading must leave the record as it was")

    def test_cookie_fields_express_accepts_are_a_session_on_python_too(self):
        # cookie.expires = false (express's browser-session cookie), and values express reads
        # for their truth: a record Python refused logged the user out on both apps at its next
        # write, which sends a new cookie.
        for fields in ({"expires": False}, {"priority": False, "partitioned": 0},
                       {"httpOnly": None}, {"maxAge": 12_000_000_000_000}):
            with self.subTest(fields):
                browser = Browser()
                browser.get(self.node, "/incr")
                browser.get(self.node, "/cookie?user=ada&set=" + quote(json.dumps(fields)))
                self.assertEqual(browser.get(self.py, "/whoami").body, {"user": "ada", "id": browser.sid})
                self.assertEqual(browser.get(self.py, "/incr").body, {"views": 2})
                self.assertEqual(browser.get(self.node, "/whoami").body, {"user": "ada", "id": browser.sid})

    def test_both_apps_write_byte_identical_records_but_for_the_expiry_instant(self):
        raws = []
        for port in (self.node, self.py):
            browser = Browser()
            browser.get(port, "/login?user=ada")
            browser.get(port, "/put?data=" + quote(json.dumps(DATA)))
            browser.get(port, "/incr")
            raws.append(self.raw(browser.sid).decode("utf-8"))
        node_raw, py_raw = raws
        (node_exp, node_max), (py_exp, py_max) = ((c["expires"], c["originalMaxAge"])
                                                  for c in (json.loads(r)["cookie"] for r in raws))
        self.assertRegex(py_exp, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(py_max, HOUR_MS)
        self.assertIn(node_max, (HOUR_MS, HOUR_MS - 1))   # Node writes 3599999 when a ms ticks mid-way
        same_instant = py_raw.replace(f'"expires":"{py_exp}"', f'"expires":"{node_exp}"')
        same_instant = same_instant.replace(f'"originalMaxAge":{py_max},', f'"originalMaxAge":{node_max},')
        self.assertEqual(same_instant, node_raw)
        self.assertRegex(node_raw, r'^\{"cookie":\{"originalMaxAge":\d+,"expires":"')

    def test_alternate_writes_keep_the_stored_key_order(self):
        for first, second in self.both_ways():
            browser = Browser()
            browser.get(first, "/put?data=" + quote(json.dumps({"zeta": 1, "alpha": 2})))
            shapes = []
            for port in (first, second, first):
                browser.get(port, "/incr")
                record = _ordered(self.raw(browser.sid))
                shapes.append([k for k, _ in record] + [k for k, _ in dict(record)["cookie"]])
            self.assertEqual(shapes[0], ["cookie", "zeta", "alpha", "views",
                                         "originalMaxAge", "expires", "httpOnly", "path"])
            self.assertEqual(shapes[1], shapes[0])
            self.assertEqual(shapes[2], shapes[0])
            self.assertEqual(json.loads(self.raw(browser.sid))["views"], 3)

    def test_set_cookie_headers_have_the_same_shape(self):
        headers = [Browser().get(port, "/login?user=ada").set_cookie for port in (self.node, self.py)]
        shapes = [[part.split("=")[0] for part in h.split("; ")] for h in headers]
        self.assertEqual(shapes[0], shapes[1], headers)
        for header in headers:
            self.assertRegex(header, r"^connect\.sid=s%3A[A-Za-z0-9_-]{32}\.[A-Za-z0-9%]+; Path=/; "
                                     r"Expires=\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT; HttpOnly$")

    # -- concurrent requests ----------------------------------------------------------------------
    def test_what_express_writes_between_our_load_and_our_save_is_merged_not_lost(self):
        from stores.redis_store import RedisStore
        from tests.interop.wsgi_app import ServedApp
        loaded, release = threading.Event(), threading.Event()

        def slow(environ, start_response):
            sess = environ["session"]
            sess["python_saw_views"] = sess.get("views", 0)   # loaded before the app ran
            loaded.set()
            release.wait(10)   # meanwhile, the Express app writes to the same session
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        store = RedisStore(url=self.redis_server.url)
        self.addCleanup(store.close)
        py = ServedApp(session.SessionMiddleware(slow, secret=[OLD], store=store,
                                                 cookie={"max_age": HOUR_MS / 1000}), free_port())
        self.addCleanup(py.stop)
        browser = Browser()
        browser.get(self.node, "/login?user=ada")
        browser.get(self.node, "/incr")
        answer: dict = {}
        request = threading.Thread(target=lambda: answer.update(
            resp=fetch(py.port, "/slow", browser.cookie)))
        request.start()
        self.assertTrue(loaded.wait(10), "the Python request did not start")
        browser.get(self.node, "/put?data=" + quote(json.dumps({"express_key": "A"})))
        browser.get(self.node, "/incr")
        release.set()
        request.join(10)
        self.assertEqual(answer["resp"].status, 200)
        stored = json.loads(self.raw(browser.sid))
        self.assertEqual({k: v for k, v in stored.items() if k != "cookie"},
                         {"user": "ada", "views": 2, "express_key": "A", "python_saw_views": 1})
        self.assertGreater(self.redis.pttl("sess:" + browser.sid), HOUR_MS - 5000)
        seen = browser.get(self.node, "/raw").body["session"]   # Express reads the merged record
        self.assertEqual(_ordered(json.dumps(seen)), _ordered(self.raw(browser.sid)))
        self.assertEqual(browser.get(self.node, "/incr").body, {"views": 3})

    # -- secrets --------------------------------------------------------------------------------
    def test_rotated_secrets_accept_the_old_cookie_and_reissue_as_express_does(self):
        # (config, max_age_ms, rolling, route) -> does express re-issue the cookie?
        cases = [("rot", HOUR_MS, False, "/whoami", False), ("rot", HOUR_MS, False, "/incr", True),
                 ("rot-browser", None, False, "/whoami", False), ("rot-browser", None, False, "/incr", False),
                 ("rot-rolling", HOUR_MS, True, "/whoami", True), ("rot-rolling", HOUR_MS, True, "/incr", True)]
        for key, max_age_ms, rolling, route, reissued in cases:
            node, py = self.pair(key, [NEW, OLD], max_age_ms, rolling)
            with self.subTest(config=key, route=route):
                login = Browser()   # logged in by an app on OLD alone with the same maxAge
                login.get(self.pair("main" if max_age_ms else "browser-cookie", [OLD], max_age_ms)[0],
                          "/login?user=ada")
                answers = []
                for port in (node, py):
                    resp = fetch(port, route, login.cookie)
                    self.assertEqual(resp.status, 200)
                    answers.append(resp)
                    self.assertEqual(fetch(port, "/whoami", login.cookie).body["user"], "ada")
                node_resp, py_resp = answers
                self.assertEqual(node_resp.set_cookie is not None, reissued, node_resp.set_cookie)
                self.assertEqual(py_resp.set_cookie is not None, reissued, py_resp.set_cookie)
                if reissued:
                    expected = quote("s:" + session.sign(login.sid, NEW), safe="")
                    self.assertEqual(node_resp.cookie_value, expected)
                    self.assertEqual(py_resp.cookie_value, expected)

    def test_sign_and_unsign_agree_with_cookie_signature(self):
        rng = random.Random(6)
        alphabet = ("abcXYZ019-_.~ +/=%:;,\"'\\\t" "éüßçñ" "ключ" "鍵秘密" "🔑🐍𝄞" "\u2028\u00a0\x00\x7f" "\ud800\udfff")

        def text(max_len):
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))

        def secret():
            if rng.random() < 0.15:
                raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
                return raw, {"b64": base64.b64encode(raw).decode()}
            value = text(40).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace") or "k"
            return value, value  # (a lone surrogate in a secret is refused: see test_signing)

        pairs = [(text(48), *secret()) for _ in range(300)]
        signed = [session.sign(value, py_secret) for value, py_secret, _ in pairs]
        checks = []   # (signed string, python secret, node secret)
        for (value, py_secret, js_secret), good in zip(pairs, signed):
            checks.append((good, py_secret, js_secret))
            body, sig = good.rsplit(".", 1)
            i = rng.randrange(len(sig))
            flipped = sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1:]
            for bad in (body + "." + flipped, body + "x." + sig, good[:-1], good + "A", body,
                        "." + sig, good.replace(".", ",", 1) if "." in body else "x" + good):
                checks.append((bad, py_secret, js_secret))
            other, other_js = secret()
            checks.append((good, other, other_js))
        batch = {"sign": [[value, js] for value, _, js in pairs],
                 "unsign": [[s, js] for s, _, js in checks]}
        out = subprocess.run(["node", "signatures.js"], cwd=HERE, input=json.dumps(batch).encode(),
                             capture_output=True, timeout=60, check=True)
        node = json.loads(out.stdout)

        def as_js(text):  # two halves of a pair are one character to JS (and to json.loads)
            return None if text is None else text.encode("utf-16-le", "surrogatepass").decode(
                "utf-16-le", "surrogatepass")
        self.assertEqual([as_js(s) for s in signed], node["sign"])
        py_unsigned = [as_js(session.unsign(s, secret)) for s, secret, _ in checks]
        node_unsigned = [None if v is False else v for v in node["unsign"]]
        self.assertEqual(py_unsigned, node_unsigned)
        accepted = sum(v is not None for v in py_unsigned)
        self.assertGreaterEqual(accepted, 300)       # every good signature, at least
        self.assertGreater(len(checks) - accepted, 2000)   # and the tampered ones refused

    def test_odd_cookie_headers_are_read_alike(self):
        browser = Browser()
        browser.get(self.node, "/login?user=ada")
        good = browser.cookie
        raw = unquote(good)
        bad = quote("s:" + session.sign(browser.sid, NEW), safe="")
        headers = {   # Cookie header -> the user express-session sees
            f"{NAME}={good}; {NAME}={bad}": "ada",            # the first of a name wins
            f"{NAME}={bad}; {NAME}={good}": None,
            f'{NAME}="{good}"': "ada",                          # quotes are stripped
            f"{NAME}={raw}": "ada",                             # not percent-encoded at all
            f"  {NAME} =  {good}  ": "ada",                     # spaces around name and value
            f"a=%E0%A4%A; {NAME}={good}; b": "ada",             # malformed neighbours
            f";;; =x; {NAME}={good};;": "ada",
            f"{NAME}={good}%ZZ": None,                          # undecodable: kept raw, bad signature
            f"{NAME.upper()}={good}": None,                     # names are case-sensitive
        }
        for header, user in headers.items():
            with self.subTest(header):
                seen = [fetch(port, "/whoami", header=header).body["user"] for port in (self.node, self.py)]
                self.assertEqual(seen, [user, user])

    def test_a_tampered_cookie_is_refused_by_both(self):
        browser = Browser()
        browser.get(self.node, "/login?user=ada")
        sid = browser.sid
        signed = session.sign(sid, OLD)
        body, sig = signed.rsplit(".", 1)
        other_sid = sid[:-1] + ("a" if sid[-1] != "a" else "b")
        tampered = {
            "signature changed": "s:" + body + "." + sig[:-1] + ("A" if sig[-1] != "A" else "B"),
            "id changed": "s:" + other_sid + "." + sig,
            "wrong secret": "s:" + session.sign(sid, NEW),
            "no s: prefix": signed,
            "unsigned": "s:" + sid,
            "truncated": "s:" + signed[:-3],
        }
        for label, value in tampered.items():
            for port in (self.node, self.py):
                with self.subTest(label, app="express" if port == self.node else "python"):
                    resp = fetch(port, "/incr", quote(value, safe=""))
                    self.assertEqual(resp.body, {"views": 1})
                    self.assertIsNotNone(resp.cookie_value)
                    new_sid = unquote(resp.cookie_value)[2:].rsplit(".", 1)[0]
                    self.assertNotIn(new_sid, (sid, other_sid))
                    self.assertEqual(fetch(port, "/whoami", resp.cookie_value).body["user"], None)
        self.assertEqual(json.loads(self.raw(sid))["user"], "ada")
        self.assertIsNone(self.raw(other_sid))


class TestExpress5Interop(TestExpressInterop):
    """The same against Express 5: the app's routes, express-session and connect-redis as on 4."""

    EXPRESS = "5"
    # signatures.js runs cookie-signature alone, the same package whichever Express is installed.
    test_sign_and_unsign_agree_with_cookie_signature = None


if __name__ == "__main__":
    unittest.main()
