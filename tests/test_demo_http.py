"""http_demo.py over real HTTP: a subprocess on a free port, driven by urllib with a cookie jar."""
from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import http_demo
import stores
from tests.demo_process import DemoProcess, clean_env
from tests.redis_server import RedisServer, redis_server_available
from tests.support import has_module, requires

SECRET = "demo-test-secret"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # hand the 303 itself to the test


class Client:
    """A cookie-keeping HTTP client that shows redirects and error statuses instead of following or raising."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None):
        """As a browser does, with Origin on every method but GET and HEAD (a None header is left out)."""
        headers = {**({} if method in ("GET", "HEAD") else {"Origin": self.base_url}), **(headers or {})}
        headers = {name: value for name, value in headers.items() if value is not None}
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            resp = self.opener.open(req, timeout=10)
        except urllib.error.HTTPError as err:
            resp = err
        with resp:
            return resp.status, resp.headers, resp.read().decode("utf-8")

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, fields: dict | None = None):
        return self.request("POST", path, urllib.parse.urlencode(fields or {}).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def login(self, user: str):
        return self.post("/login", {"user": user})

    @property
    def sid_cookie(self) -> str | None:
        """The raw connect.sid cookie value, or None."""
        return next((c.value for c in self.jar if c.name == "connect.sid"), None)

    def set_sid_cookie(self, value: str) -> None:
        self.jar.clear()
        host = urllib.parse.urlsplit(self.base_url).hostname
        self.jar.set_cookie(http.cookiejar.Cookie(
            version=0, name="connect.sid", value=value, port=None, port_specified=False,
            domain=host, domain_specified=False, domain_initial_dot=False, path="/", path_specified=True,
            secure=False, expires=None, discard=True, comment=None, comment_url=None, rest={}))


def session_id(cookie_value: str) -> str:
    """The session ID inside a signed cookie value (s%3A<id>.<signature>)."""
    return urllib.parse.unquote(cookie_value)[2:].rsplit(".", 1)[0]


def views(body: str) -> int:
    return int(re.search(r'id="views">(\d+)<', body).group(1))


def raw_request(url: str, lines: list[str], body: bytes = b"", *, half_close: bool = False,
                timeout: float = 8) -> tuple[int, str, bytes]:
    """Send a request byte for byte (a Host or Content-Length no client library would send);
    returns (status, head, body) of the whole answer. ``half_close`` ends the sending side."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), body


class DemoTestCase(unittest.TestCase):
    """Each test gets its own folder, SQLite file and demo process."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        self.db = os.path.join(self.dir, "sessions.sqlite3")
        self.demo = self.start_demo()

    def start_demo(self, *args: str, env: dict | None = None) -> DemoProcess:
        args = args or ("--store", f"sqlite:{self.db}", "--secret", SECRET)
        demo = DemoProcess(*args, env=env or clean_env(), cwd=self.dir).start()
        self.addCleanup(demo.stop)
        return demo

    def client(self) -> Client:
        return Client(self.demo.url)

    @property
    def host(self) -> str:
        """The Host header a browser sends for the demo's URL."""
        return urllib.parse.urlsplit(self.demo.url).netloc

    def stored(self, sid: str) -> tuple | None:
        """(expires, data) of the row the demo's SQLite store holds for that ID: a touch moves expires."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
            return db.execute("SELECT expires, data FROM sessions WHERE sid = ?", (sid,)).fetchone()

    def stored_count(self) -> int:
        store = stores.SQLiteStore(self.db)
        try:
            return store.length()
        finally:
            store.close()

    def form_request(self, head: list[str], body: bytes = b"user=ada", **kwargs) -> tuple[int, str, bytes]:
        """A raw POST /login with the demo's own Host and Origin plus ``head``'s lines."""
        lines = ["POST /login HTTP/1.0", f"Host: {self.host}", f"Origin: {self.demo.url}",
                 "Content-Type: application/x-www-form-urlencoded", *head]
        return raw_request(self.demo.url, lines, body, **kwargs)


class TestDemoSessions(DemoTestCase):

    def test_counter_counts_per_session(self):
        ada = self.client()
        status, headers, body = ada.get("/")
        self.assertEqual(status, 200)
        self.assertEqual(views(body), 1)
        self.assertIn("new, sent with this page", body)
        first_id = session_id(ada.sid_cookie)
        self.assertEqual(views(ada.get("/")[2]), 2)
        status, _, body = ada.get("/")
        self.assertEqual(views(body), 3)
        self.assertIn("sent by your browser", body)
        self.assertIn(f"<code>{first_id[:8]}…</code>", body)
        self.assertEqual(session_id(ada.sid_cookie), first_id)
        self.assertEqual(views(self.client().get("/")[2]), 1, "another client has its own session")

    def test_session_cookie_is_signed_http_only_and_same_site_lax(self):
        _, headers, _ = self.client().get("/")
        set_cookie = headers["Set-Cookie"]
        self.assertRegex(set_cookie, r"^connect\.sid=s%3A[A-Za-z0-9_-]{32}\.[A-Za-z0-9%]+;")
        self.assertIn("; HttpOnly", set_cookie)
        self.assertIn("; SameSite=Lax", set_cookie)
        self.assertNotIn("Secure", set_cookie, "secure='auto' on plain HTTP")
        self.assertEqual(headers["Cache-Control"], "no-store")
        self.assertIn("Cookie", headers["Vary"])

    def test_login_form_alone_sends_no_cookie(self):
        status, headers, body = self.client().get("/login")
        self.assertEqual(status, 200)
        self.assertIn('<form method="post" action="/login">', body)
        self.assertIsNone(headers["Set-Cookie"], "save_uninitialized=False")

    def test_login_regenerates_the_id_and_the_old_id_no_longer_works(self):
        ada = self.client()
        ada.get("/")
        old_cookie = ada.sid_cookie
        status, headers, _ = ada.login("ada")
        self.assertEqual(status, 303)
        self.assertEqual(headers["Location"], "/members")
        new_cookie = ada.sid_cookie
        self.assertNotEqual(session_id(new_cookie), session_id(old_cookie))

        status, _, body = ada.get("/members")
        self.assertEqual(status, 200)
        self.assertIn('Welcome, <strong id="user">ada</strong>', body)
        self.assertIn(f'<code id="id-before">{session_id(old_cookie)[:8]}…</code>', body)
        self.assertIn(f'<code id="id-after">{session_id(new_cookie)[:8]}…</code>', body)
        self.assertEqual(views(ada.get("/")[2]), 2, "the counter is copied into the new session")

        attacker = self.client()
        attacker.set_sid_cookie(old_cookie)
        status, headers, _ = attacker.get("/members")
        self.assertEqual((status, headers["Location"]), (303, "/login"))
        status, headers, body = attacker.get("/")
        self.assertEqual(views(body), 1)
        self.assertNotEqual(session_id(attacker.sid_cookie), session_id(old_cookie))

    def test_members_page_redirects_to_login_when_logged_out(self):
        status, headers, _ = self.client().get("/members")
        self.assertEqual((status, headers["Location"]), (303, "/login"))

    def test_logout_destroys_the_record_and_clears_the_cookie(self):
        ada = self.client()
        ada.login("ada")
        cookie = ada.sid_cookie
        status, headers, _ = ada.post("/logout")
        self.assertEqual((status, headers["Location"]), (303, "/"))
        self.assertRegex(headers["Set-Cookie"], r"^connect\.sid=;.*Expires=Thu, 01 Jan 1970")
        self.assertIsNone(ada.sid_cookie)
        self.assertEqual(ada.get("/members")[0], 303)

        replay = self.client()
        replay.set_sid_cookie(cookie)
        status, headers, _ = replay.get("/members")
        self.assertEqual((status, headers["Location"]), (303, "/login"), "the record is gone from the store")

    def test_tampered_cookie_gets_a_fresh_session(self):
        ada = self.client()
        ada.login("ada")
        ada.get("/")
        cookie = ada.sid_cookie
        sid, signature = urllib.parse.unquote(cookie)[2:].rsplit(".", 1)
        forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
        forged_id = ("A" if sid[0] != "A" else "B") + sid[1:]
        for forged in (f"s:{sid}.{forged_signature}", f"s:{forged_id}.{signature}", sid, f"s:{sid}"):
            with self.subTest(forged=forged):
                mallory = self.client()
                mallory.set_sid_cookie(urllib.parse.quote(forged, safe=""))
                self.assertEqual(mallory.get("/members")[0], 303)
                status, _, body = mallory.get("/")
                self.assertEqual((status, views(body)), (200, 1))
                self.assertIn("new, sent with this page", body)
                self.assertNotEqual(session_id(mallory.sid_cookie), sid)
        self.assertEqual(ada.get("/members")[0], 200, "the real cookie still works")

    def test_restart_on_the_same_file_and_secret_keeps_users_logged_in(self):
        ada = self.client()
        ada.login("ada")
        ada.get("/")
        self.assertEqual(self.demo.stop(), 0)
        self.assertIn("Stopped; store closed.", self.demo.stdout())

        self.demo = self.start_demo("--store", f"sqlite:{self.db}", env=clean_env(SESSION_SECRET=SECRET))
        self.assertIn("Secret: from SESSION_SECRET", self.demo.stdout())
        self.assertIn("(1 live session)", self.demo.stdout())
        ada.base_url = self.demo.url
        status, _, body = ada.get("/members")
        self.assertEqual(status, 200)
        self.assertIn('Welcome, <strong id="user">ada</strong>', body)
        self.assertEqual(views(ada.get("/")[2]), 2)

    def test_generated_secret_is_kept_beside_the_store_with_mode_0600(self):
        self.demo.stop()
        self.demo = self.start_demo("--store", f"sqlite:{self.db}")
        secret_file = self.db + ".secret"
        self.assertIn(f"Secret: generated and saved in {secret_file} (mode 0600)", self.demo.stdout())
        self.assertEqual(stat.S_IMODE(os.stat(secret_file).st_mode), 0o600)
        ada = self.client()
        ada.login("ada")
        self.demo.stop()

        self.demo = self.start_demo("--store", f"sqlite:{self.db}")
        self.assertIn(f"Secret: read from {secret_file}", self.demo.stdout())
        ada.base_url = self.demo.url
        self.assertEqual(ada.get("/members")[0], 200)

    def test_default_store_is_a_sqlite_file_in_the_working_directory(self):
        default = DemoProcess(env=clean_env(), cwd=self.dir).start()  # only --port 0
        self.addCleanup(default.stop)
        path = os.path.join(os.path.realpath(self.dir), "http_demo.sqlite3")
        self.assertIn(f"Store:  SQLiteStore, file {path} (0 live sessions)", default.stdout())
        self.assertIn(f"Secret: generated and saved in {path}.secret", default.stdout())
        self.assertEqual(Client(default.url).get("/")[0], 200)
        self.assertTrue(os.path.exists(path))

    def test_sigterm_stops_cleanly_and_closes_the_store(self):
        self.client().get("/")
        idle = socket.create_connection(urllib.parse.urlsplit(self.demo.url)[1].split(":"))
        self.addCleanup(idle.close)  # a browser's spare connection must not hold up the shutdown
        self.assertEqual(self.demo.stop(timeout=5), 0)
        self.assertIn("Stopping…\nStopped; store closed.\n", self.demo.stdout())
        self.assertNotIn("Traceback", self.demo.stderr())


class TestDemoRefusesBadRequests(DemoTestCase):

    def assertRefused(self, response, status: int):
        code, headers, body = response
        self.assertEqual(code, status, body)
        self.assertEqual(headers["Content-Type"], "text/html; charset=utf-8")
        self.assertIsNone(headers["Set-Cookie"])
        self.assertNotIn("Traceback", body)
        return body

    def test_unknown_path_is_404_with_the_path_escaped(self):
        body = self.assertRefused(self.client().get("/%3Cscript%3Ealert(1)%3C/script%3E"), 404)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", body)
        self.assertNotIn("<script>", body)
        self.assertRefused(self.client().get("/members/"), 404)

    def test_wrong_method_is_405_with_allow(self):
        client = self.client()
        self.assertRefused(client.get("/logout"), 405)
        self.assertEqual(client.get("/logout")[1]["Allow"], "POST")
        self.assertEqual(client.request("DELETE", "/")[1]["Allow"], "GET, HEAD")
        self.assertEqual(client.post("/members")[0], 405)
        self.assertEqual(client.request("PUT", "/login", b"user=x")[1]["Allow"], "GET, POST, HEAD")

    def test_head_is_get_without_a_body_and_does_not_change_the_session(self):
        ada = self.client()
        ada.login("ada")
        sid = session_id(ada.sid_cookie)
        self.assertEqual(views(ada.get("/")[2]), 1)
        record = self.stored(sid)
        time.sleep(0.01)  # a touch would move the stored expiry by at least this
        for path in ("/", "/login", "/members"):
            with self.subTest(path):
                status, headers, body = ada.request("HEAD", path)
                self.assertEqual((status, body), (200, ""))
                self.assertIsNone(headers["Set-Cookie"])
        self.assertEqual(self.stored(sid), record, "neither saved nor touched")
        _, head_headers, _ = ada.request("HEAD", "/")
        status, get_headers, body = ada.get("/")
        self.assertEqual(views(body), 2, "three HEADs of / were not visits")
        self.assertEqual(head_headers["Content-Length"], str(len(body.encode())))
        for name in ("Content-Type", "Content-Security-Policy", "Cache-Control", "Vary"):
            self.assertEqual(head_headers[name], get_headers[name], name)

        newcomer = self.client()
        status, headers, _ = newcomer.request("HEAD", "/")
        self.assertEqual(status, 200)
        self.assertIsNone(headers["Set-Cookie"])
        self.assertEqual(self.stored_count(), 1, "a HEAD stores no record for a new visitor")

    def test_refused_requests_do_not_touch_the_session(self):
        ada = self.client()
        ada.login("ada")
        sid = session_id(ada.sid_cookie)
        record = self.stored(sid)
        time.sleep(0.01)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        responses = {
            "404": ada.get("/nope"),
            "405": ada.request("DELETE", "/members"),
            "403": ada.request("POST", "/logout", b"", {**form, "Origin": "http://evil.example"}),
            "421": ada.request("POST", "/logout", b"", {**form, "Host": "evil.example"}),
            "400": ada.request("POST", "/login", b"user=%ff", form),
        }
        for expected, (status, headers, _) in responses.items():
            with self.subTest(expected):
                self.assertEqual(status, int(expected))
                self.assertIsNone(headers["Set-Cookie"])
        self.assertEqual(self.stored(sid), record)
        self.assertEqual(ada.get("/members")[0], 200, "still logged in")
    def test_malformed_login_forms_are_400(self):
        client = self.client()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        cases = {
            "not a form": client.request("POST", "/login", b'{"user": "ada"}', {"Content-Type": "application/json"}),
            "bad percent-encoding": client.request("POST", "/login", b"user=%ff%fe", form),
            "not key=value": client.request("POST", "/login", b"user&&", form),
            "no user field": client.post("/login", {"name": "ada"}),
            "empty name": client.post("/login", {"user": "   "}),
            "name too long": client.post("/login", {"user": "a" * 41}),
            "control character": client.post("/login", {"user": "a\x00b"}),
            "too many fields": client.request("POST", "/login", b"&".join([b"a=1"] * 50), form),
        }
        for case, response in cases.items():
            with self.subTest(case):
                self.assertRefused(response, 400)
        self.assertIsNone(client.sid_cookie)

    def test_post_from_another_site_is_403(self):
        client = self.client()
        port = urllib.parse.urlsplit(self.demo.url).port
        foreign = ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}", f"https://{self.host}",
                   f"http://{self.host}.evil.example", f"{self.demo.url}/")
        for path in ("/login", "/logout"):
            for origin in foreign:
                with self.subTest(path=path, origin=origin):
                    response = client.request("POST", path, b"user=mallory", {
                        "Content-Type": "application/x-www-form-urlencoded", "Origin": origin})
                    self.assertRefused(response, 403)
        self.assertEqual(self.stored_count(), 0)
        same_site = {"Content-Type": "application/x-www-form-urlencoded", "Origin": self.demo.url}
        self.assertEqual(client.request("POST", "/login", b"user=ada", same_site)[0], 303)

    def test_post_without_origin_must_have_a_referer_from_this_site(self):
        client = self.client()
        form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": None}
        foreign = ("http://evil.example/login", f"http://{self.host}.evil.example/", f"http://{self.host}@evil.example/",
                   f"https://{self.host}/login", self.demo.url, "")
        for path in ("/login", "/logout"):
            for referer in foreign:
                with self.subTest(path=path, referer=referer):
                    self.assertRefused(client.request("POST", path, b"user=mallory", {**form, "Referer": referer}), 403)
        self.assertEqual(self.stored_count(), 0)
        own = {**form, "Referer": self.demo.url + "/login"}
        self.assertEqual(client.request("POST", "/login", b"user=ada", own)[0], 303)
        self.assertEqual(client.request("POST", "/logout", b"", own)[0], 303)

    def test_post_with_neither_origin_nor_referer_is_403(self):
        client = self.client()
        for path in ("/login", "/logout"):
            with self.subTest(path):
                response = client.request("POST", path, b"user=ada", {
                    "Content-Type": "application/x-www-form-urlencoded", "Origin": None})
                body = self.assertRefused(response, 403)
                self.assertIn("only accepted from this site", body)
        self.assertEqual(self.stored_count(), 0)

    def test_a_host_the_server_does_not_answer_to_is_421(self):
        port = urllib.parse.urlsplit(self.demo.url).port
        client = self.client()
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}",
                     f"127.0.0.1:0{port}", f"127.0.0.1:{port}:{port}", f"127.0.0.1.:{port}",
                     f"localhost.:{port}", f"127.0.0.1:{port}, evil.example", f"127.0.0.2:{port}"):
            with self.subTest(host=host):
                # The DNS-rebinding shape: Host and Origin agree, both naming the other site.
                rebound = {"Content-Type": "application/x-www-form-urlencoded",
                           "Host": host, "Origin": f"http://{host}"}
                for path in ("/login", "/logout"):
                    body = self.assertRefused(client.request("POST", path, b"user=mallory", rebound), 421)
                    self.assertIn("does not answer to that name", body)
                self.assertRefused(client.request("GET", "/", headers={"Host": host}), 421)
        self.assertEqual(self.stored_count(), 0)

    def test_a_request_without_host_is_400(self):
        status, _, body = raw_request(self.demo.url, ["GET / HTTP/1.0"])
        self.assertEqual(status, 400)
        self.assertIn(b"no Host header", body)
        self.assertEqual(self.stored_count(), 0)

    def test_two_host_headers_are_421(self):
        status, _, _ = raw_request(self.demo.url, ["GET / HTTP/1.0", f"Host: {self.host}", "Host: evil.example"])
        self.assertEqual(status, 421)
    def test_a_failing_store_is_a_500_without_a_traceback_in_the_page(self):
        client = self.client()
        client.get("/")
        for name in os.listdir(self.dir):  # the SQLite file and its -wal/-shm, overwritten with junk
            if name.startswith("sessions.sqlite3"):
                with open(os.path.join(self.dir, name), "wb") as f:
                    f.write(b"not a database" * 512)
        status, _, body = client.get("/")
        self.assertEqual(status, 500)
        self.assertNotIn("Traceback", body)
        self.assertNotIn("sqlite", body.lower())
        self.demo.stop()
        self.assertIn("Traceback", self.demo.stderr(), "the traceback goes to the log instead")

    def test_oversized_form_is_400(self):
        body = self.assertRefused(self.client().post("/login", {"user": "a" * 100_000}), 400)
        self.assertIn("at most 1024 bytes", body)

    def test_a_large_refused_body_still_gets_its_answer(self):
        """The client sends all 32 MB before reading: the server drops the rest instead of a reset."""
        body = self.assertRefused(self.client().post("/login", {"user": "a" * 32_000_000}), 400)
        self.assertIn("at most 1024 bytes", body)

    def test_a_body_shorter_than_its_content_length_is_400_at_once(self):
        status, _, body = self.form_request(["Content-Length: 100"], b"user=ada", half_close=True)
        self.assertEqual(status, 400)
        self.assertIn(b"shorter than its Content-Length", body)
        self.assertEqual(self.stored_count(), 0, "the 8 bytes that came are not a login")

    def test_a_stalled_body_is_400_after_a_short_read_timeout(self):
        """The client sends 8 of 100 bytes and waits: the answer comes after the demo's 2 s read
        timeout; the client gives up at 7 s, well before the 10 s the idle timeout would take."""
        status, _, body = self.form_request(["Content-Length: 100"], b"user=ada", timeout=7)
        self.assertEqual(status, 400)
        self.assertIn(b"shorter than its Content-Length", body)
        self.demo.stop()
        self.assertNotIn("Traceback", self.demo.stderr())

    def test_content_length_must_be_plain_digits(self):
        for length in ("+8", "0_8", "-8", "8.0", "0x8", "\u00b2", "9" * 30, ""):
            with self.subTest(length=length):
                status, _, _ = self.form_request([f"Content-Length: {length}"])
                self.assertEqual(status, 400)
        self.assertEqual(self.form_request([], half_close=True)[0], 400, "no Content-Length")
        chunked = ["Transfer-Encoding: chunked", "Content-Length: 8"]
        self.assertEqual(self.form_request(chunked)[0], 400, "a chunked body is not taken for the form")
        self.assertEqual(self.stored_count(), 0)
        self.assertEqual(self.form_request(["Content-Length: 8"])[0], 303)

    def test_a_field_sent_twice_is_400(self):
        status, _, body = self.form_request(["Content-Length: 17"], b"user=ada&user=bob")
        self.assertEqual(status, 400)
        self.assertIn(b"sent twice", body)

    def test_html_in_a_user_name_is_escaped(self):
        client = self.client()
        name = '<img src=x onerror="alert(1)">&'
        self.assertEqual(client.login(name)[0], 303)
        for path in ("/members", "/", "/login"):
            with self.subTest(path):
                status, _, body = client.get(path)
                self.assertEqual(status, 200)
                self.assertIn("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;", body)
                self.assertNotIn("<img", body)

    def test_no_traceback_reaches_the_log(self):
        client = self.client()
        client.get("/nope")
        client.request("POST", "/login", b"\xff" * 10, {"Content-Type": "application/x-www-form-urlencoded"})
        client.request("POST", "/login", b"", {"Content-Type": "application/x-www-form-urlencoded",
                                               "Content-Length": "-5"})
        self.assertEqual(self.demo.stop(), 0)
        self.assertNotIn("Traceback", self.demo.stderr())


class TestDemoKnownHosts(DemoTestCase):

    def test_loopback_names_and_the_host_given_are_known(self):
        self.demo.stop()
        self.demo = self.start_demo("--host", "localhost", "--store", f"sqlite:{self.db}", "--secret", SECRET)
        port = urllib.parse.urlsplit(self.demo.url).port
        self.assertIn(f"Hosts:  127.0.0.1:{port}, [::1]:{port}, localhost:{port} (", self.demo.stdout())
        client = Client(f"http://127.0.0.1:{port}")
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for name in ("127.0.0.1", "localhost", "LocalHost", "[::1]"):
            with self.subTest(name):
                host = f"{name}:{port}"
                self.assertEqual(client.request("GET", "/", headers={"Host": host})[0], 200)
                own = {**form, "Host": host, "Origin": f"http://{host}"}
                self.assertEqual(client.request("POST", "/login", b"user=ada", own)[0], 303)
        other = {**form, "Host": f"localhost:{port}", "Origin": f"http://127.0.0.1:{port}"}
        self.assertEqual(client.request("POST", "/login", b"user=ada", other)[0], 403,
                         "the Origin must be the request's own, not just another known name")


class TestKnownHosts(unittest.TestCase):
    """The names the demo answers to, for binds no test should make for real."""

    def test_known_hosts_on_the_default_port_and_on_every_interface(self):
        self.assertEqual(http_demo.known_hosts("127.0.0.1", ("127.0.0.1", 80)),
                         {"127.0.0.1:80", "localhost:80", "[::1]:80", "127.0.0.1", "localhost", "[::1]"})
        self.assertEqual(http_demo.known_hosts("192.0.2.7", ("192.0.2.7", 8000)), {"192.0.2.7:8000"})
        self.assertEqual(http_demo.known_hosts("Demo.Example", ("192.0.2.7", 8000)),
                         {"192.0.2.7:8000", "demo.example:8000"})
        everywhere = http_demo.known_hosts("0.0.0.0", ("0.0.0.0", 8000))
        for host in ("0.0.0.0:8000", "127.0.0.1:8000", "localhost:8000", f"{socket.gethostname().lower()}:8000"):
            self.assertIn(host, everywhere)
        self.assertNotIn("evil.example:8000", everywhere)
        self.assertNotIn("localhost", everywhere, "not on port 80: the port is part of the name")
        # The LAN address another device opens it by, which the machine's name may not resolve
        # to: the one a UDP socket toward the outside would leave from.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(("192.0.2.1", 9))
            except OSError:
                return  # no route out: no such address
            self.assertIn(f"{probe.getsockname()[0]}:8000", everywhere)


@requires(has_module("redis") and redis_server_available(),
          "needs Redis: apt-get install -y redis-server && pip install redis")
class TestDemoOnRedis(unittest.TestCase):

    def test_redis_store_keeps_users_logged_in_across_a_restart(self):
        with RedisServer() as redis, tempfile.TemporaryDirectory() as cwd:
            env = clean_env(SESSION_SECRET=SECRET)
            with DemoProcess("--store", redis.url, env=env, cwd=cwd) as demo:
                self.assertIn("Store:  RedisStore, redis://", demo.stdout())
                ada = Client(demo.url)
                self.assertEqual(ada.login("ada")[0], 303)
            with DemoProcess("--store", redis.url, env=env, cwd=cwd) as demo:
                self.assertIn("(1 live session)", demo.stdout())
                ada.base_url = demo.url
                self.assertEqual(ada.get("/members")[0], 200)
            redis.stop()
            result = subprocess.run(demo.command(), capture_output=True, text=True, timeout=60, cwd=cwd)
            self.assertEqual(result.returncode, 1, "a store that is down is a one-line error at startup")
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)


class TestDemoCommandLine(unittest.TestCase):

    def run_demo(self, *args: str, prelude: str | None = None) -> subprocess.CompletedProcess:
        demo = DemoProcess(*args, env=clean_env(), python_prelude=prelude)
        with tempfile.TemporaryDirectory() as cwd:
            return subprocess.run(demo.command(), capture_output=True, text=True, timeout=30, cwd=cwd)

    def test_missing_driver_is_a_one_line_error_with_status_2(self):
        for url, package in (("redis://127.0.0.1:1/0", "redis"), ("mongodb://127.0.0.1:1/demo", "pymongo")):
            with self.subTest(package):
                # sys.modules[name] = None makes the package unimportable, as if it were not installed.
                result = self.run_demo("--store", url, prelude=f"import sys; sys.modules[{package!r}] = None")
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
                self.assertIn(f"pip install {package}", result.stderr)
                self.assertEqual(result.stdout, "")

    def test_sqlite_memory_store_writes_no_file(self):
        # SQLite's own in-memory database, not a file named ":memory:" in the current directory.
        import http_demo
        with tempfile.TemporaryDirectory() as cwd, _chdir(cwd):
            store, label, secret_file = http_demo.open_store("sqlite::memory:")
            store.close()
            self.assertEqual(os.listdir(cwd), [])
        self.assertIsNone(secret_file)
        self.assertIn("in memory", label)

    def test_unknown_store_is_status_2(self):
        result = self.run_demo("--store", "cassandra://localhost/x")
        self.assertEqual(result.returncode, 2)
        self.assertIn("unknown --store", result.stderr)

    def test_port_in_use_is_a_one_line_error(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            result = self.run_demo("--store", "memory", "--port", str(busy.getsockname()[1]))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)



@contextlib.contextmanager
def _chdir(path: str):
    """The current directory set to ``path`` meanwhile (contextlib.chdir is 3.11+)."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


if __name__ == "__main__":
    unittest.main()
