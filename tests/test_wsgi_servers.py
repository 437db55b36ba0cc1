"""SessionMiddleware under real WSGI servers over real sockets, with no framework between:
wsgiref, waitress and cheroot (threads, in this process, on MemoryStore); gunicorn's sync,
gthread and gevent workers and uWSGI (worker processes, on one SQLiteStore file).
The app is tests/wsgi_server_app.py; each test checks the wire and the store.

What the servers do by themselves, each seen with a bare app (no middleware) too: uWSGI
closes the connection with no response when the app raises before the head (no 500), resets
one whose headers pass its --buffer-size (4 KB by default: the ~8 KB Cookie test sets 32 KB),
and its wsgi.file_wrapper is a function returning the file itself, sent with sendfile only
when the app's result is that object; waitress and cheroot cut a chunked response short when
the body's close() raises (wsgiref finishes it, then its error handler fails on a TypeError);
waitress drops X-Forwarded-* unless told the proxy is trusted (the tests set
clear_untrusted_proxy_headers=False); cheroot offers no wsgi.file_wrapper, and closes the
connection with no response when a generator raises before its first chunk (under the
middleware, a body's last chunk is held for the store write, so one chunk then an error is
that case); gunicorn 27.0.1 has no eventlet worker left to test.  Keep-alive is tested where the server
keeps connections (waitress, cheroot, gunicorn's gthread and gevent workers).

Needs ``pip install waitress gunicorn gevent uwsgi cheroot`` (.ci/requirements.txt
pins them); each class skips locally with the pip command when its package is missing.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest

import session
from tests.asgi_support import Browser, CommandServer, _wait_listening
from tests.harness import NAME, SetCookie
from tests.server_flows import SharedHTTPFlows
from tests.support import has_module, has_program, requires
from tests.test_asgi_frameworks import data_of, setUpModule, tearDownModule, wait_for  # noqa: F401 (quiet logs)
from tests.wsgi_server_app import FILE, make_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_response(f, head: bool = False) -> tuple:
    """(status, headers, body) of one HTTP/1.x response read from the file ``f``."""
    status = int(f.readline().split()[1])
    while status == 100:   # an interim response: its blank line, then the real one
        f.readline()
        status = int(f.readline().split()[1])
    headers = []
    while True:
        line = f.readline().decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    fields = {k.lower(): v for k, v in headers}
    if head or status in (204, 304):
        body = b""
    elif "content-length" in fields:
        body = f.read(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if not size:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += f.read(size)
            f.readline()
    else:
        body = f.read()
    return status, headers, body


def cookies_of(headers: list) -> list:
    return [SetCookie(v) for k, v in headers if k.lower() == "set-cookie"]


class Served:
    """The app served for a test class; a subclass says how, and what its server offers."""

    keep_alive = True       # the server answers a second request on the same connection
    file_wrapper = True     # the server offers wsgi.file_wrapper
    one_process = True      # MemoryStore: the app runs in this process
    error_page = True       # the server answers 500 when the app raises before the head
    close_error_cuts = False   # a close() that raises cuts the response short (bare app too)

    @classmethod
    def serve(cls, app_env: dict):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.marks = tempfile.mkdtemp(prefix="wsgi-servers-")
        cls.addClassCleanup(shutil.rmtree, cls.marks, True)
        if cls.one_process:
            cls.store = session.MemoryStore()
            cls.app = make_app(cls.store, cls.marks)
            env = {}
        else:
            from stores.sqlite_store import SQLiteStore
            path = os.path.join(cls.marks, "sessions.db")
            cls.store = SQLiteStore(path)
            cls.addClassCleanup(cls.store.close)
            env = {"SESSION_TEST_DB": path, "SESSION_TEST_MARKS": cls.marks}
        cls.server = cls.serve(env)
        cls.addClassCleanup(cls.server.stop)

    def browser(self) -> Browser:
        return Browser(self.server.port)

    def data(self, browser: Browser):
        return data_of(self.store, browser.sid)

    def marked(self, tag: str) -> bool:
        return os.path.exists(os.path.join(self.marks, tag))

    def raw(self, request: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        sock.sendall(request)
        return sock

    def _settled(self, b: Browser, key: str) -> bool:
        before = self.data(b).get(key)
        time.sleep(0.2)
        return self.data(b).get(key) == before


class Flows(SharedHTTPFlows, Served):

    def test_a_stream_that_changes_the_session_between_chunks(self):
        b = self.browser()
        resp = b.get("/stream")
        self.assertEqual(resp.body, b"chunk 0\nchunk 1\nchunk 2\n")
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(self.data(b), {"chunks": [0, 1, 2]})

    def test_a_client_that_leaves_mid_stream(self):
        b = self.browser()
        b.get("/incr")
        tag = f"events-{time.monotonic_ns()}"
        with self.raw(f"GET /events?tag={tag} HTTP/1.1\r\nHost: x\r\nCookie: {NAME}={b.jar[NAME]}\r\n\r\n"
                      .encode()) as sock:
            self.assertTrue(sock.recv(4096).startswith(b"HTTP/1."))
        # The server learns it on a later write, stops iterating and calls close().
        self.assertTrue(wait_for(lambda: self.marked(tag), 10), "close() was not called")
        self.assertTrue(wait_for(lambda: self.data(b).get("events") and self._settled(b, "events")),
                        self.data(b))

    def test_a_file_response(self):
        b = self.browser()
        resp = b.get("/file")
        with open(FILE, "rb") as f:
            self.assertEqual(resp.body, f.read())
        self.assertEqual(resp.values("X-Sent-With"), ["file_wrapper" if self.file_wrapper else "body"])
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(self.data(b), {"files": 1})

    def test_an_app_that_raises_saves_nothing(self):
        b = self.browser()
        b.get("/incr")
        for path in ("/raise-before", "/raise-after"):
            if not self.error_page:   # the connection is closed with no response (bare app too)
                self.assertRaises(http.client.RemoteDisconnected, b.get, path)
                continue
            resp = b.get(path)
            self.assertEqual(resp.status, 500, path)
            self.assertEqual(resp.cookies(), [], path)
        try:   # "{" is held for the store write, so the head is not out yet: a 500
            resp = b.get("/raise-in-body")
        except OSError:   # or the server cut the response short
            pass
        else:
            self.assertEqual((resp.status, resp.cookies()), (500, []))
        self.assertEqual(self.data(b), {"views": 1})
        fresh = self.browser()
        if self.error_page:
            self.assertEqual(fresh.get("/raise-before").cookies(), [])

    def test_start_response_with_exc_info_replaces_the_head(self):
        b = self.browser()
        b.get("/incr")
        resp = b.get("/exc-info")
        self.assertEqual((resp.status, resp.body), (500, b"error page"))
        self.assertEqual(resp.values("Content-Type"), ["text/plain"])
        self.assertEqual([c.sid for c in resp.cookies()], [b.sid])
        self.assertEqual(self.data(b), {"views": 1, "errors": 1})

    def test_a_body_whose_close_raises(self):
        b = self.browser()
        b.get("/incr")
        tag = f"close-{time.monotonic_ns()}"
        if self.close_error_cuts:   # the server ends the connection before the last chunk
            self.assertRaises(http.client.IncompleteRead, b.get, f"/close-raises?tag={tag}")
        else:
            resp = b.get(f"/close-raises?tag={tag}")
            self.assertEqual((resp.status, resp.body), (200, b'{"a":1}'))
            self.assertEqual([c.sid for c in resp.cookies()], [b.sid])
        self.assertTrue(wait_for(lambda: self.marked(tag)))
        self.assertEqual(self.data(b), {"views": 1, "closing": True})   # saved before the last chunk
        self.assertEqual(json.loads(b.get("/incr").body), {"views": 2})   # the server still serves

    def test_expect_100_continue_with_a_post_body(self):
        b = self.browser()
        b.get("/login?user=ada")
        body = b"x" * 5000
        with self.raw(f"POST /echo HTTP/1.1\r\nHost: x\r\nCookie: {NAME}={b.jar[NAME]}\r\n"
                      f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n"
                      f"Connection: close\r\n\r\n".encode()) as sock:
            sock.settimeout(2)
            try:
                interim = sock.recv(4096)
            except socket.timeout:   # a server that sends no 100 Continue: the client sends anyway
                interim = b""
            sock.settimeout(10)
            sock.sendall(body)
            f = sock.makefile("rb")
            status, headers, got = read_response(f) if not interim.startswith(b"HTTP/1.1 100") else \
                read_response(_Prefixed(interim, f))
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(got), {"user": "ada", "body": body.decode()})
        self.assertEqual(self.data(b), {"user": "ada", "posted": body.decode()})

    def test_http_1_0(self):
        b = self.browser()
        b.get("/incr")
        with self.raw(f"GET /incr HTTP/1.0\r\nCookie: {NAME}={b.jar[NAME]}\r\n\r\n".encode()) as sock:
            status, headers, body = read_response(sock.makefile("rb"))
        self.assertEqual((status, json.loads(body)), (200, {"views": 2}))
        self.assertEqual([c.sid for c in cookies_of(headers)], [b.sid])
        self.assertEqual(self.data(b), {"views": 2})

    def test_two_pipelined_requests_get_their_own_sessions(self):
        b = self.browser()
        b.get("/incr")
        with self.raw(f"GET /incr HTTP/1.1\r\nHost: x\r\nCookie: {NAME}={b.jar[NAME]}\r\n\r\n"
                      f"GET /incr HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()) as sock:
            f = sock.makefile("rb")
            first = read_response(f)
            second = read_response(f) if self.keep_alive else None
        self.assertEqual((first[0], json.loads(first[2])), (200, {"views": 2}))
        self.assertEqual([c.sid for c in cookies_of(first[1])], [b.sid])
        self.assertEqual(self.data(b), {"views": 2})
        if second is not None:
            self.assertEqual((second[0], json.loads(second[2])), (200, {"views": 1}))
            (new,) = cookies_of(second[1])
            self.assertNotEqual(new.sid, b.sid)
            self.assertEqual(data_of(self.store, new.sid), {"views": 1})

    def test_proxy_reads_x_forwarded_proto(self):
        b = self.browser()
        resp = b.get("/proxied/incr", headers={"X-Forwarded-Proto": "https"})
        self.assertIn("secure", resp.cookie().attrs, resp.cookie().raw)
        self.assertEqual(self.data(b), {"views": 1})
        self.assertEqual(self.browser().get("/proxied/incr").cookies(), [])   # plain http: not sent


class _Prefixed:
    """A file whose first bytes were already read from the socket."""

    def __init__(self, prefix: bytes, f) -> None:
        import io
        self.head, self.f = io.BytesIO(prefix), f

    def readline(self) -> bytes:
        line = self.head.readline()
        return line + self.f.readline() if not line.endswith(b"\n") else line

    def read(self, n: int = -1) -> bytes:
        data = self.head.read(n)
        return data + (self.f.read(n - len(data)) if n >= 0 else self.f.read())


# ---------------------------------------------------------------- the servers

class ThreadServer:
    """A server object run in a thread of this process."""

    def __init__(self, run, stop, port: int) -> None:
        self.port, self._stop = port, stop
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert _wait_listening(port, self.thread.is_alive), "the server did not start"

    def stop(self) -> None:
        self._stop()
        self.thread.join(10)


class TestWsgiref(Flows, unittest.TestCase):
    """The standard library's server, one request per connection."""

    keep_alive = False

    @classmethod
    def serve(cls, env):
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

            def get_stderr(self):
                return io.StringIO()

        server = make_server("127.0.0.1", 0, cls.app, server_class=Server, handler_class=Quiet)

        def stop():
            server.shutdown()
            server.server_close()
        return ThreadServer(server.serve_forever, stop, server.server_port)


@requires(has_module("waitress"), "pip install waitress")
class TestWaitress(Flows, unittest.TestCase):

    close_error_cuts = True

    @classmethod
    def serve(cls, env):
        import logging
        import waitress
        logging.getLogger("waitress").setLevel(logging.CRITICAL)
        # waitress drops X-Forwarded-* from a proxy it was not told to trust (bare app too)
        server = waitress.create_server(cls.app, host="127.0.0.1", port=0, threads=4,
                                        clear_untrusted_proxy_headers=False)
        return ThreadServer(server.run, server.close, server.effective_port)


@requires(has_module("cheroot"), "pip install cheroot")
class TestCheroot(Flows, unittest.TestCase):

    file_wrapper = False
    close_error_cuts = True

    @classmethod
    def serve(cls, env):
        from cheroot import wsgi
        server = wsgi.Server(("127.0.0.1", 0), cls.app, numthreads=4)
        server.error_log = lambda *args, **kwargs: None
        server.prepare()
        return ThreadServer(server.serve, server.stop, server.bind_addr[1])


class Gunicorn(Flows):
    one_process = False
    worker = "sync"
    keep_alive = False

    @classmethod
    def serve(cls, env):
        return CommandServer([sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", "2",
                              "-k", cls.worker, "--threads", "4", "tests.wsgi_server_app:app"], env)


@requires(has_module("gunicorn"), "pip install gunicorn")
class TestGunicornSync(Gunicorn, unittest.TestCase):
    pass


@requires(has_module("gunicorn"), "pip install gunicorn")
class TestGunicornGthread(Gunicorn, unittest.TestCase):
    worker = "gthread"
    keep_alive = True


@requires(has_module("gunicorn") and has_module("gevent"), "pip install gunicorn gevent")
class TestGunicornGevent(Gunicorn, unittest.TestCase):
    worker = "gevent"
    keep_alive = True


@requires(has_program("uwsgi"), "pip install uwsgi")
class TestUWSGI(Flows, unittest.TestCase):
    one_process = False
    keep_alive = error_page = False

    @classmethod
    def serve(cls, env):
        return CommandServer(["uwsgi", "--http-socket", "127.0.0.1:{port}", "--module",
                              "tests.wsgi_server_app:app", "--master", "--processes", "2",
                              "--buffer-size", "32768", "--disable-logging", "--die-on-term",
                              "--need-app"], env)


if __name__ == "__main__":
    unittest.main()
