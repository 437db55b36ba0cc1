"""A bare WSGI app (no framework) wrapped by SessionMiddleware, for tests/test_wsgi_servers.py.

It uses the protocol's corners directly: HEAD, 204 and 304, a generator that changes the
session between chunks, a stream the client leaves, ``wsgi.file_wrapper``, errors before and
after start_response, exc_info, a close() that raises, a POST body.  ``make_app(store, marks)``
serves it in-process; a server run as a command (gunicorn, uWSGI) loads
``tests.wsgi_server_app:app``, on the SQLiteStore file named by SESSION_TEST_DB.  A body's
close() leaves a file named after the request's ``tag`` in the ``marks`` directory.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Callable
from urllib.parse import parse_qs

import session

SECRET = "keyboard cat"
HOUR = 3600
STREAM_PAUSE = 0.05   # between a stream's chunks: long enough for a client to leave mid-stream
FILE = os.path.abspath(__file__)


def _json(value) -> bytes:
    return json.dumps(value).encode()


class Marked(io.FileIO):
    """A file that shows it was iterated: uWSGI's wsgi.file_wrapper returns the file itself,
    sent with sendfile when the app returns it unchanged, else iterated."""

    def __iter__(self):
        return iter([b"iterated, not sent\n"])


class Body:
    """A body iterable with a close() that leaves a mark (and raises, if asked)."""

    def __init__(self, chunks, marks: str, tag: str, fail: bool = False) -> None:
        self.chunks, self.marks, self.tag, self.fail = chunks, marks, tag, fail

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()
        if self.tag:
            open(os.path.join(self.marks, self.tag), "w").close()
        if self.fail:
            raise RuntimeError("close() failed")


def make_inner(marks: str) -> Callable:
    def app(environ: dict, start_response: Callable):
        sess = environ["session"]
        path = environ["PATH_INFO"]
        query = parse_qs(environ.get("QUERY_STRING", ""))
        tag = query.get("tag", [""])[0]
        json_head = [("Content-Type", "application/json")]
        if path == "/incr":
            sess["views"] = sess.get("views", 0) + 1
            start_response("200 OK", json_head)
            return [_json({"views": sess["views"]})]
        if path == "/login":
            sess.regenerate()
            sess["user"] = query["user"][0]
            start_response("200 OK", json_head)
            return [_json({"user": sess["user"], "id": sess.id})]
        if path == "/logout":
            sess.destroy()
            start_response("200 OK", json_head)
            return [_json({"ok": True})]
        if path == "/whoami":
            start_response("200 OK", json_head)
            return [_json({"user": sess.get("user"), "id": sess.id,
                           "cookie": len(environ.get("HTTP_COOKIE", ""))})]
        if path == "/status":   # 204 or 304: a head and no body
            sess["hits"] = sess.get("hits", 0) + 1
            code = query["code"][0]
            start_response(f"{code} {'No Content' if code == '204' else 'Not Modified'}",
                           [("Vary", "Accept-Encoding")])
            return []
        if path == "/stream":   # the session changes between chunks, after the head went out
            def chunks():
                start_response("200 OK", [("Content-Type", "text/plain")])
                for i in range(3):
                    sess["chunks"] = sess.get("chunks", []) + [i]
                    yield b"chunk %d\n" % i
            return chunks()
        if path == "/events":   # until the client leaves (the server stops iterating)
            def events():
                for i in range(200):
                    sess["events"] = sess.get("events", 0) + 1
                    yield b"data: %d\n\n" % i
                    time.sleep(STREAM_PAUSE)
            start_response("200 OK", [("Content-Type", "text/event-stream")])
            return Body(events(), marks, tag)
        if path == "/file":
            sess["files"] = sess.get("files", 0) + 1
            wrapper = environ.get("wsgi.file_wrapper")
            start_response("200 OK", [("Content-Type", "text/x-python"),
                                      ("Content-Length", str(os.path.getsize(FILE))),
                                      ("X-Sent-With", "file_wrapper" if wrapper else "body")])
            if wrapper is not None:
                return wrapper(Marked(FILE), 8192)
            with open(FILE, "rb") as f:
                return [f.read()]
        if path == "/raise-before":
            sess["raised"] = True
            raise RuntimeError("before start_response")
        if path == "/raise-after":
            sess["raised"] = True
            start_response("200 OK", json_head)
            raise RuntimeError("after start_response")
        if path == "/raise-in-body":
            def failing():
                sess["raised"] = True
                yield b"{"
                raise RuntimeError("in the body")
            start_response("200 OK", json_head)
            return failing()
        if path == "/exc-info":   # the app's own error page, replacing the head it had given
            sess["errors"] = sess.get("errors", 0) + 1
            start_response("200 OK", json_head)
            try:
                raise ValueError("oops")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            return [b"error page"]
        if path == "/close-raises":
            sess["closing"] = True
            start_response("200 OK", json_head)
            return Body([b'{"a":', b"1}"], marks, tag, fail=True)
        if path == "/echo":     # a POST body (sent after 100 Continue), and the session
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length).decode()
            sess["posted"] = body
            start_response("200 OK", json_head)
            return [_json({"user": sess.get("user"), "body": body})]
        if path == "/proxied/incr":
            sess["views"] = sess.get("views", 0) + 1
            start_response("200 OK", json_head)
            return [_json({"views": sess["views"], "scheme": environ["wsgi.url_scheme"]})]
        start_response("404 Not Found", json_head)
        return [b"{}"]
    return app


def make_app(store: session.Store, marks: str) -> Callable:
    """The app under SessionMiddleware; under /proxied/, one that trusts X-Forwarded-Proto."""
    inner = make_inner(marks)
    plain = session.SessionMiddleware(inner, secret=SECRET, store=store, cookie={"max_age": HOUR})
    proxied = session.SessionMiddleware(inner, secret=SECRET, store=store, proxy=True,
                                        cookie={"max_age": HOUR, "secure": True})

    def app(environ: dict, start_response: Callable):
        chosen = proxied if environ["PATH_INFO"].startswith("/proxied/") else plain
        return chosen(environ, start_response)
    return app


def bare_app(environ: dict, start_response: Callable):
    """No middleware: what a server does by itself (tests show its quirks with this)."""
    environ["session"] = {}
    return make_inner(os.environ.get("SESSION_TEST_MARKS", "/tmp"))(environ, start_response)


def _from_environment() -> Callable:
    from stores.sqlite_store import SQLiteStore
    return make_app(SQLiteStore(os.environ["SESSION_TEST_DB"]), os.environ["SESSION_TEST_MARKS"])


app = _from_environment() if os.environ.get("SESSION_TEST_DB") else None
