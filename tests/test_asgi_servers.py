"""ASGISessionMiddleware under real ASGI servers over real sockets, with no framework between:
uvicorn (h11 and httptools; websockets, websockets-sansio and wsproto), hypercorn's asyncio
worker (HTTP/1.1 and h2c), granian (``http.response.pathsend``, h2c) and daphne.  The app is
tests/server_app.py: HEAD, 204 and 304, streams, clients that leave, files, early hints,
trailers, websockets and their denial responses; each test checks the wire and the store.

What the servers do with the protocol, as found with a bare app (no middleware): granian and
daphne send no headers with ``websocket.accept`` (so no cookie: README says to log in over HTTP
there); daphne offers no ``websocket.http.response`` (a denial is its own 403, with no headers
of the app's) and no h2c; only hypercorn offers early hints and trailers (over HTTP/2), and it
joins HTTP/2's cookie headers into one itself (granian passes them on one by one, so its tests
are the ones that exercise the middleware's join); only granian offers
``http.response.pathsend``, none ``http.response.zerocopysend``; only uvicorn raises OSError
from a websocket send after the client left (the others drop the message).

Needs ``pip install uvicorn httptools websockets wsproto hypercorn h2 granian daphne``
(.ci/requirements.txt pins them); each suite skips locally with the pip command when its
packages are missing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
import unittest

import session
from tests.asgi_support import Browser, CommandServer, HypercornServer, UvicornServer, h2_request
from tests.harness import NAME, SetCookie
from tests.server_app import make_app
from tests.server_flows import SharedHTTPFlows
from tests.support import has_module, requires
from tests.test_asgi_frameworks import data_of, setUpModule, tearDownModule, wait_for  # noqa: F401 (quiet logs)

HAVE_UVICORN = has_module("uvicorn") and has_module("websockets")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sqlite_store(case) -> tuple:
    """(an SQLiteStore on a fresh file, the file's path), both gone when the class is done."""
    from stores.sqlite_store import SQLiteStore
    tmp = tempfile.mkdtemp(prefix="asgi-servers-")
    case.addClassCleanup(shutil.rmtree, tmp, True)
    path = os.path.join(tmp, "sessions.db")
    store = SQLiteStore(path)
    case.addClassCleanup(store.close)
    return store, path


def raw_request(port: int, path: str, cookie: str) -> socket.socket:
    """A GET sent over a socket the caller reads and closes (a client that leaves early)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {NAME}={cookie}\r\n\r\n".encode())
    return sock


class Served:
    """The app served for a test class; a subclass says how, and what its server offers."""

    pathsend = False        # the server offers http.response.pathsend
    accept_headers = True   # the server sends websocket.accept's headers
    denial = True           # the server offers websocket.http.response

    @classmethod
    def serve(cls, store_path: str):
        raise NotImplementedError

    @classmethod
    def make_store(cls) -> tuple:
        return session.MemoryStore(), None

    @classmethod
    def setUpClass(cls):
        cls.store, path = cls.make_store()
        cls.server = cls.serve(path)
        cls.addClassCleanup(cls.server.stop)

    def browser(self) -> Browser:
        return Browser(self.server.port)

    def ws(self, path: str, browser: Browser):
        from websockets.sync.client import connect
        return connect(f"ws://127.0.0.1:{self.server.port}{path}", additional_headers=browser.ws_headers(),
                       proxy=None, open_timeout=10, close_timeout=5)

    def data(self, browser: Browser):
        return data_of(self.store, browser.sid)

    def _settled(self, b: Browser, key: str) -> bool:
        """Whether ``key`` stays put for a while: the stream has ended and was saved."""
        before = self.data(b).get(key)
        time.sleep(0.2)
        return self.data(b).get(key) == before


class HTTPFlows(SharedHTTPFlows, Served):
    """The HTTP/1.1 flows."""

    def test_a_stream_that_changes_the_session_between_chunks(self):
        b = self.browser()
        resp = b.get("/stream")   # a new session, changed before the head went out: sent
        self.assertEqual(resp.body, b"chunk 0\nchunk 1\nchunk 2\n")
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(self.data(b), {"chunks": [0, 1, 2]})

    def test_a_client_that_leaves_still_has_the_changes_saved(self):
        b = self.browser()
        b.get("/incr")
        with raw_request(self.server.port, "/events", b.jar[NAME]) as sock:
            self.assertTrue(sock.recv(4096).startswith(b"HTTP/1.1 200"))   # mid-stream
        # The app sees http.disconnect and returns without its last body message.
        self.assertTrue(wait_for(lambda: self.data(b).get("events") and self._settled(b, "events")),
                        self.data(b))
        # Before the head, but not before the app has the request: a request whose client
        # is gone before the server hands it over never reaches the app (granian drops
        # about one in three such).
        with raw_request(self.server.port, "/slow?wait=1", b.jar[NAME]):
            time.sleep(0.3)
        self.assertTrue(wait_for(lambda: self.data(b).get("slow")), self.data(b))

    def test_a_file_response(self):
        b = self.browser()
        resp = b.get("/file")
        with open(os.path.join(ROOT, "tests", "server_app.py"), "rb") as f:
            self.assertEqual(resp.body, f.read())
        self.assertEqual(resp.values("x-sent-with"), ["pathsend" if self.pathsend else "body"])
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(self.data(b), {"files": 1})

class WebsocketFlows(Served):
    """The websocket flows."""

    def test_a_websocket_reads_and_changes_the_session(self):
        b = self.browser()
        b.get("/login?user=ada")
        with self.ws("/ws", b) as ws:
            self.assertEqual(json.loads(ws.recv(timeout=5)), {"user": "ada"})
            ws.send("hello")
            self.assertEqual(ws.recv(timeout=5), "ok")
            ws.send("bye")
            from websockets.exceptions import ConnectionClosedOK
            with self.assertRaises(ConnectionClosedOK):
                ws.recv(timeout=5)
        self.assertTrue(wait_for(lambda: self.data(b).get("said") == ["hello", "bye"]), self.data(b))

    def test_websockets_closed_by_the_client(self):
        b = self.browser()
        b.get("/login?user=ada")
        with self.ws("/ws", b) as ws:   # the app receives websocket.disconnect
            ws.recv(timeout=5)
            ws.send("one")
            self.assertEqual(ws.recv(timeout=5), "ok")
        self.assertTrue(wait_for(lambda: self.data(b).get("said") == ["one"]), self.data(b))
        with self.ws("/ws-ticks", b) as ws:   # the app only sends: a send fails, or runs its course
            self.assertEqual([ws.recv(timeout=5) for _ in range(2)], ["0", "1"])
        self.assertTrue(wait_for(lambda: self.data(b).get("ticks") and self._settled(b, "ticks"), 10),
                        self.data(b))

    def test_a_websocket_handshake_sets_the_cookie(self):
        b = self.browser()
        with self.ws("/ws-login", b) as ws:
            sid = ws.recv(timeout=5)
            cookies = ws.response.headers.get_all("Set-Cookie")
        self.assertEqual(data_of(self.store, sid), {"user": "socket"})
        if self.accept_headers:
            self.assertEqual([SetCookie(c).sid for c in cookies], [sid])
        else:   # the server drops the accept's headers (a bare app's too)
            self.assertEqual(cookies, [])

    def test_a_websocket_denied_with_an_http_response(self):
        from websockets.exceptions import InvalidStatus
        b = self.browser()
        b.get("/incr")
        with self.assertRaises(InvalidStatus) as caught:
            with self.ws("/ws-deny", b):
                pass
        resp = caught.exception.response
        self.assertEqual(resp.status_code, 403)
        self.assertEqual(self.data(b), {"views": 1, "denied": 1})
        if self.denial:
            self.assertEqual(bytes(resp.body), b"denied")
            self.assertEqual([SetCookie(c).sid for c in resp.headers.get_all("Set-Cookie")], [b.sid])
            self.assertEqual(resp.headers.get_all("Vary"), ["Cookie"])
        else:   # the app closed instead: the server's 403 has no headers of ours
            self.assertEqual(resp.headers.get_all("Set-Cookie"), [])


class ServerFlows(HTTPFlows, WebsocketFlows):
    pass


class HTTP2Flows(Served):
    """Flows over cleartext HTTP/2 (prior knowledge), where a browser sends each cookie in a
    ``cookie`` header of its own."""

    early_hints = trailers = False   # the server offers them (over HTTP/2)
    cookie_headers = 3               # the cookie headers the app's scope has for the request's 3

    def h2(self, path: str, browser: Browser, method: str = "GET", cancel: bool = False) -> dict:
        crumbs = [(b"cookie", b"theme=dark"), (b"cookie", f"{NAME}={browser.jar[NAME]}".encode()),
                  (b"cookie", b"lang=en"), (b"te", b"trailers")]
        resp = h2_request(self.server.port, path, crumbs, method=method, cancel=cancel)
        resp["set-cookie"] = [SetCookie(v.decode()) for k, v in resp["headers"] if k == b"set-cookie"]
        resp["vary"] = [v for k, v in resp["headers"] if k == b"vary"]
        return resp

    def test_cookies_in_several_headers_are_joined(self):
        b = self.browser()
        b.get("/login?user=ada")
        resp = self.h2("/whoami", b)
        self.assertEqual(resp["status"], 200)
        self.assertEqual(json.loads(resp["body"])["user"], "ada")
        self.assertEqual(len(json.loads(resp["body"])["cookie"]), self.cookie_headers)
        self.assertEqual(resp["vary"], [b"Cookie"])
        resp = self.h2("/incr", b)
        self.assertEqual([c.sid for c in resp["set-cookie"]], [b.sid])
        resp = self.h2("/incr", b, method="HEAD")
        self.assertEqual((resp["status"], resp["body"], len(resp["set-cookie"])), (200, b"", 1))
        self.assertEqual(self.data(b), {"user": "ada", "views": 2})

    def test_a_stream_and_a_file_over_http2(self):
        b = self.browser()
        b.get("/incr")
        self.assertEqual(self.h2("/stream", b)["body"], b"chunk 0\nchunk 1\nchunk 2\n")
        resp = self.h2("/file", b)
        self.assertEqual([c.sid for c in resp["set-cookie"]], [b.sid])
        self.assertEqual(self.data(b), {"views": 1, "chunks": [0, 1, 2], "files": 1})

    def test_a_stream_the_client_cancels_still_has_its_changes_saved(self):
        b = self.browser()
        b.get("/incr")
        self.assertTrue(self.h2("/events", b, cancel=True)["body"].startswith(b"data: 0"))
        # RST_STREAM, not a closed socket: the app sees http.disconnect and returns.
        self.assertTrue(wait_for(lambda: self.data(b).get("events") and self._settled(b, "events")),
                        self.data(b))

    def test_early_hints(self):
        b = self.browser()
        b.get("/incr")
        resp = self.h2("/early", b)
        self.assertEqual(json.loads(resp["body"]), {"early": self.early_hints})
        hints = [dict(h) for h in resp["informational"]]
        if self.early_hints:   # the hint goes out at once; the cookie waits for the response
            self.assertEqual([(h[b":status"], h[b"link"]) for h in hints],
                             [(b"103", b"</style.css>; rel=preload; as=style")])
            self.assertNotIn(b"set-cookie", hints[0])
        self.assertEqual([c.sid for c in resp["set-cookie"]], [b.sid])
        self.assertEqual(self.data(b), {"views": 1, "early": True})

    def test_trailers(self):
        b = self.browser()
        b.get("/incr")
        resp = self.h2("/trailers", b)
        self.assertEqual(resp["body"], b"body")
        self.assertEqual(resp["trailers"], [(b"x-checksum", b"abc")] if self.trailers else [])
        self.assertEqual([c.sid for c in resp["set-cookie"]], [b.sid])
        self.assertEqual(self.data(b), {"views": 1, "trailers": True})


# ---------------------------------------------------------------- the servers

def _version(package: str) -> tuple:
    """An installed package's (major, minor), for the quirks of older releases."""
    from importlib.metadata import version
    return tuple(int(part) for part in re.findall(r"\d+", version(package))[:2])


@requires(HAVE_UVICORN, "pip install uvicorn websockets")
class TestUvicornH11Websockets(ServerFlows, unittest.TestCase):

    @classmethod
    def serve(cls, store_path):
        return UvicornServer(make_app(cls.store), http="h11", ws="websockets-sansio")

    def test_a_websocket_handshake_sets_the_cookie(self):
        if _version("uvicorn") < (0, 42):
            self.skipTest("uvicorn before 0.42 lowercases the values of websocket.accept's headers "
                          "(websockets-sansio; a bare app's too): pip install 'uvicorn>=0.42'")
        super().test_a_websocket_handshake_sets_the_cookie()


@requires(HAVE_UVICORN and has_module("httptools") and has_module("wsproto"),
          "pip install uvicorn httptools wsproto")
class TestUvicornHttptoolsWsprotoOnSQLite(ServerFlows, unittest.TestCase):

    @classmethod
    def make_store(cls):
        return sqlite_store(cls)

    @classmethod
    def serve(cls, store_path):
        return UvicornServer(make_app(cls.store), http="httptools", ws="wsproto")


@requires(has_module("uvicorn"), "pip install uvicorn")
class TestUvicornShutdown(unittest.TestCase):
    """uvicorn as a command, stopped with SIGTERM while a response is still streaming."""

    def test_a_stream_cut_at_the_graceful_shutdown_timeout_is_saved_before_the_process_ends(self):
        # Past --timeout-graceful-shutdown uvicorn cancels the responses still running, runs
        # the lifespan shutdown, and kills its process with the signal again from inside its
        # event loop: the cancelled stream's save, which SQLiteStore writes in a thread, must
        # end within the lifespan's store.aclose().  This process holds the file's write lock
        # meanwhile, so the save waits until the server would otherwise have ended.
        store, path = sqlite_store(self)
        server = CommandServer([sys.executable, "-m", "uvicorn", "--port", "{port}",
                                "--timeout-graceful-shutdown", "1", "--lifespan", "on",
                                "tests.server_app:app"], {"SESSION_TEST_DB": path}, cwd=ROOT)
        self.addCleanup(server.stop)
        b = Browser(server.port)
        b.get("/incr")
        with raw_request(server.port, "/events", b.jar[NAME]) as sock:
            self.assertTrue(sock.recv(4096).startswith(b"HTTP/1.1 200"))
            blocker = sqlite3.connect(path, isolation_level=None)
            self.addCleanup(blocker.close)
            blocker.execute("BEGIN IMMEDIATE")
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(2)  # the stream is cancelled after 1 s; its save waits for the lock
            blocker.execute("ROLLBACK")
            server.proc.wait(10)
        self.assertGreater(data_of(store, b.sid).get("events", 0), 0, server.log.text())


@requires(HAVE_UVICORN, "pip install uvicorn websockets")
class TestUvicornLegacyWebsockets(WebsocketFlows, unittest.TestCase):
    """uvicorn's older websockets implementation (``--ws websockets``), deprecated."""

    @classmethod
    def serve(cls, store_path):
        import warnings
        quiet = warnings.catch_warnings()   # warned in the server's thread, for each socket
        quiet.__enter__()
        cls.addClassCleanup(quiet.__exit__, None, None, None)
        warnings.filterwarnings("ignore", "The `websockets` implementation is deprecated")
        warnings.filterwarnings("ignore", "remove second argument of ws_handler")
        return UvicornServer(make_app(cls.store), ws="websockets")


@requires(has_module("hypercorn") and has_module("h2") and has_module("websockets"),
          "pip install hypercorn h2 websockets")
class TestHypercornAsyncio(HTTP2Flows, ServerFlows, unittest.TestCase):

    early_hints = True
    # hypercorn 0.17.3 sends no trailers, a bare app's neither (the last release Python 3.9 takes)
    trailers = has_module("hypercorn") and _version("hypercorn") >= (0, 18)
    cookie_headers = 1   # hypercorn joins them itself: granian's scope is the one that tests ours

    @classmethod
    def serve(cls, store_path):
        return HypercornServer(make_app(cls.store))


@requires(has_module("granian") and has_module("h2") and has_module("websockets"),
          "pip install granian h2 websockets")
class TestGranian(HTTP2Flows, ServerFlows, unittest.TestCase):
    """A server in another process: the app's SQLiteStore and the test's share one file."""

    pathsend = True
    accept_headers = False

    @classmethod
    def make_store(cls):
        return sqlite_store(cls)

    @classmethod
    def serve(cls, store_path):
        return CommandServer([sys.executable, "-m", "granian", "--interface", "asgi",
                              "--host", "127.0.0.1", "--port", "{port}",
                              "--http", "auto", "--no-log", "tests.server_app:app"],
                             env={"SESSION_TEST_DB": store_path}, cwd=ROOT)


@requires(has_module("daphne") and has_module("websockets"), "pip install daphne websockets")
class TestDaphne(ServerFlows, unittest.TestCase):
    """daphne speaks HTTP/2 only over TLS, which these tests leave out."""

    accept_headers = denial = False

    @classmethod
    def make_store(cls):
        return sqlite_store(cls)

    @classmethod
    def serve(cls, store_path):
        return CommandServer([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "tests.server_app:app"],
                             env={"SESSION_TEST_DB": store_path}, cwd=ROOT)


if __name__ == "__main__":
    unittest.main()
