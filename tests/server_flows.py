"""The HTTP/1.1 flows both real-server suites run alike (tests/test_asgi_servers.py and
tests/test_wsgi_servers.py): the same requests to the same routes of each suite's app, checked
on the wire and in the store.  A suite's class supplies ``browser()``, ``data()`` and ``store``."""
from __future__ import annotations

import json

from tests.harness import NAME, cookie_value


class SharedHTTPFlows:
    """Counter, login and logout, HEAD, 204/304 and a large Cookie header."""

    def test_a_returning_visitor_counts(self):
        b = self.browser()
        for views in (1, 2, 3):
            resp = b.get("/incr")
            self.assertEqual(json.loads(resp.body), {"views": views})
            self.assertEqual(len(resp.cookies()), 1, resp.headers)   # one header, never comma-joined
            self.assertEqual(resp.values("Vary"), ["Cookie"])
        self.assertEqual(self.data(b), {"views": 3})

    def test_login_regenerates_and_logout_destroys(self):
        b = self.browser()
        b.get("/incr")
        anonymous = b.sid
        login = json.loads(b.get("/login?user=ada").body)
        self.assertEqual(b.sid, login["id"])
        self.assertNotEqual(login["id"], anonymous)
        self.assertIsNone(self.store.get(anonymous))
        self.assertEqual(self.data(b), {"user": "ada"})
        resp = b.get("/logout")
        self.assertTrue(resp.cookie().clears, resp.cookie().raw)
        self.assertIsNone(self.store.get(login["id"]))
        old_cookie = f"{NAME}={cookie_value(login['id'])}"
        self.assertIsNone(json.loads(b.get("/whoami", cookie=old_cookie).body)["user"])

    def test_head_sends_the_cookie_and_saves(self):
        b = self.browser()
        b.get("/incr")
        resp = b.request("/incr", method="HEAD")
        self.assertEqual((resp.status, resp.body), (200, b""))
        self.assertEqual(resp.cookie().sid, b.sid)
        self.assertEqual(self.data(b), {"views": 2})

    def test_204_and_304_carry_the_cookie_and_a_merged_vary(self):
        b = self.browser()
        for code, hits in ((204, 1), (304, 2)):
            resp = b.get(f"/status?code={code}")
            self.assertEqual((resp.status, resp.body), (code, b""))
            self.assertEqual(len(resp.cookies()), 1, resp.headers)
            self.assertEqual(resp.values("Vary"), ["Accept-Encoding, Cookie"])
            self.assertEqual(self.data(b), {"hits": hits})

    def test_a_very_large_cookie_header(self):
        b = self.browser()
        b.get("/login?user=ada")
        others = [f"pref{i}={'x' * 120}" for i in range(60)]   # about 8 KB in all
        header = "; ".join(others[:30] + [f"{NAME}={b.jar[NAME]}"] + others[30:])
        resp = b.get("/incr", cookie=header)
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.data(b), {"user": "ada", "views": 1})
