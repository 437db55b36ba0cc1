"""http_demo.py in a real headless Chromium (Debian's), driven by Playwright, by clicking.

Needs `apt-get install -y chromium` and `pip install playwright`; never
`playwright install`: the browser is the system one. Screenshots of each page
go to tests/output/demo_browser/.
"""
from __future__ import annotations

import os
import tempfile
import unittest
import urllib.parse

from tests.demo_process import DemoProcess, clean_env
from tests.support import has_module, requires

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # What DNS rebinding achieves: another site's name resolving to the demo's address.
                 "--host-resolver-rules=MAP rebound.example 127.0.0.1"]
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output", "demo_browser")
SECRET = "browser-test-secret"


def session_id(cookie_value: str) -> str:
    """The session ID inside a signed cookie value (s%3A<id>.<signature>)."""
    return urllib.parse.unquote(cookie_value)[2:].rsplit(".", 1)[0]


@requires(has_module("playwright") and os.path.exists(CHROMIUM),
          "needs a browser: apt-get install -y chromium && pip install playwright")
class TestDemoInChromium(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        from playwright.sync_api import sync_playwright
        cls.tmp = tempfile.TemporaryDirectory()
        cls.db = os.path.join(cls.tmp.name, "sessions.sqlite3")
        cls.demo = cls.start_demo()
        cls.playwright = sync_playwright().start()
        cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        os.makedirs(OUTPUT, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.playwright.stop()
        cls.demo.stop()
        cls.tmp.cleanup()

    @classmethod
    def start_demo(cls) -> DemoProcess:
        return DemoProcess("--store", f"sqlite:{cls.db}", env=clean_env(SESSION_SECRET=SECRET),
                           cwd=cls.tmp.name).start()

    def setUp(self):
        self.context = self.browser.new_context(viewport={"width": 1000, "height": 640})
        self.addCleanup(self.context.close)
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.console_errors = []
        self.page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))

    # --- helpers --------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        return self.demo.url + path

    def sid_cookie(self, context=None) -> dict | None:
        return next((c for c in (context or self.context).cookies() if c["name"] == "connect.sid"), None)

    def views(self) -> int:
        return int(self.page.inner_text("#views"))

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=os.path.join(OUTPUT, f"{name}.png"), full_page=True)

    def log_in(self, name: str) -> None:
        self.page.click("header >> text=Log in")
        self.page.fill("#user", name)
        self.page.click("main button:has-text('Log in')")
        self.page.wait_for_url("**/members")

    def visit_with_cookie(self, cookie_value: str, path: str):
        """A separate browser profile that presents the given cookie value; returns its page."""
        other = self.browser.new_context()
        self.addCleanup(other.close)
        other.add_cookies([{"name": "connect.sid", "value": cookie_value, "url": self.url()}])
        page = other.new_page()
        page.goto(self.url(path))
        return other, page

    # --- tests ----------------------------------------------------------------------

    def test_counter_survives_reload_and_the_page_is_styled(self):
        self.page.goto(self.url())
        self.assertEqual(self.views(), 1)
        self.assertIn("new, sent with this page", self.page.inner_text("main"))
        self.screenshot("1-home-first-visit")
        self.page.reload()
        self.page.reload()
        self.assertEqual(self.views(), 3)
        self.assertIn("sent by your browser", self.page.inner_text("main"))
        # The stylesheet is allowed by its hash in the Content-Security-Policy; nothing is blocked.
        self.assertEqual(self.page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor"),
                         "rgb(34, 51, 68)")
        self.assertEqual(self.console_errors, [])
        self.screenshot("2-home-after-reloads")

    def test_session_cookie_is_http_only_and_same_site_lax(self):
        self.page.goto(self.url())
        cookie = self.sid_cookie()
        self.assertIsNotNone(cookie)
        self.assertTrue(cookie["httpOnly"])
        self.assertEqual(cookie["sameSite"], "Lax")
        self.assertFalse(cookie["secure"])
        self.assertGreater(cookie["expires"], 0, "a persistent cookie (max_age), not a browser-session one")
        self.assertNotIn("connect.sid", self.page.evaluate("document.cookie"))

    def test_login_changes_the_id_members_logout_by_clicking(self):
        self.page.goto(self.url())
        before = self.sid_cookie()["value"]
        self.page.click("header >> text=Log in")
        self.assertEqual(self.page.inner_text("h1"), "Log in")
        self.screenshot("3-login-form")

        self.page.fill("#user", "Ada <b>Lovelace</b>")
        self.page.click("main button:has-text('Log in')")
        self.page.wait_for_url("**/members")
        after = self.sid_cookie()["value"]
        self.assertNotEqual(session_id(after), session_id(before))
        self.assertEqual(self.page.inner_text("#user"), "Ada <b>Lovelace</b>", "shown as text, not markup")
        self.assertEqual(self.page.inner_text("#id-before"), session_id(before)[:8] + "…")
        self.assertEqual(self.page.inner_text("#id-after"), session_id(after)[:8] + "…")
        self.screenshot("4-members")

        _, old = self.visit_with_cookie(before, "/members")
        self.assertTrue(old.url.endswith("/login"), f"the pre-login ID must be dead, got {old.url}")

        self.page.click("header >> text=Home")
        self.assertEqual(self.views(), 2, "the counter was copied into the new session")

        self.page.click("header button:has-text('Log out')")
        self.page.wait_for_url(self.url("/"))
        self.assertEqual(self.views(), 1, "a new session after logout")
        self.assertNotEqual(session_id(self.sid_cookie()["value"]), session_id(after))
        self.screenshot("5-home-after-logout")
        self.page.click("header >> text=Members")
        self.assertTrue(self.page.url.endswith("/login"))

        _, replay = self.visit_with_cookie(after, "/members")
        self.assertTrue(replay.url.endswith("/login"), "the destroyed record must not come back")

    def test_tampered_cookie_gets_a_fresh_session(self):
        self.page.goto(self.url())
        self.log_in("mallory-target")
        value = self.sid_cookie()["value"]
        tampered = value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB")
        other, page = self.visit_with_cookie(tampered, "/members")
        self.assertTrue(page.url.endswith("/login"))
        page.goto(self.url())
        self.assertEqual(page.inner_text("#views"), "1")
        self.assertNotEqual(session_id(self.sid_cookie(other)["value"]), session_id(value))

    def test_restart_keeps_the_browser_logged_in(self):
        self.page.goto(self.url())
        self.log_in("grace")
        self.assertEqual(type(self).demo.stop(), 0)
        type(self).demo = self.start_demo()  # a new port; cookies are per host, not per port
        self.page.goto(self.url("/members"))
        self.assertEqual(self.page.inner_text("#user"), "grace")

    def test_unknown_page_and_bad_form_are_refused_politely(self):
        response = self.page.goto(self.url("/no/such/page"))
        self.assertEqual(response.status, 404)
        self.assertIn("There is no page at /no/such/page.", self.page.inner_text("main"))
        self.screenshot("6-not-found")
        self.page.goto(self.url("/login"))
        self.page.fill("#user", "   ")
        with self.page.expect_response(self.url("/login")) as refused:
            self.page.click("main button:has-text('Log in')")
        self.assertEqual(refused.value.status, 400)
        self.assertIn("Please enter a name.", self.page.inner_text(".error"))
        self.screenshot("7-login-refused")

    def test_a_name_rebound_to_the_demo_is_refused(self):
        port = urllib.parse.urlsplit(self.url()).port
        response = self.page.goto(f"http://rebound.example:{port}/")
        self.assertEqual(response.status, 421)
        self.assertIn("does not answer to that name", self.page.inner_text("main"))
        self.assertIsNone(self.sid_cookie(), "no session was started for the other name")
        self.screenshot("8-misdirected")

    def test_a_form_on_another_site_cannot_log_the_visitor_out(self):
        self.page.goto(self.url())
        self.log_in("ada")
        forged = (f'<form method="post" action="{self.url("/logout")}"><button>win a prize</button></form>')
        other = self.context.new_page()
        other.goto("data:text/html," + urllib.parse.quote(forged))  # another origin (an opaque one)
        with other.expect_response(self.url("/logout")) as refused:
            other.click("button")
        self.assertEqual(refused.value.status, 403)
        self.page.goto(self.url("/members"))
        self.assertEqual(self.page.inner_text("#user"), "ada", "still logged in")


if __name__ == "__main__":
    unittest.main()
