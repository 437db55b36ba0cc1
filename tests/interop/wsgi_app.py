"""The Python side of the interoperability suite: app.js's routes as a WSGI app on SessionMiddleware.

    /login?user=NAME  regenerate, then store the user     /whoami   {"user", "id"}, read only
    /incr             views += 1                           /put?data=JSON  merge keys into the session
    /raw              the session as loaded, cookie in express's record shape, plus each value's type
    /logout           destroy the session
"""
from __future__ import annotations

import json
import threading
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

import session


def _type_name(value: Any) -> str:
    """The JSON type of a value, named as app.js names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def answer(sess: session.Session, path: str, query: dict) -> Any:
    """What a route does to the session and returns as JSON (app.js's); None: no such route."""
    if path == "/login":
        sess.regenerate()
        sess["user"] = query.get("user", "")
        return {"user": sess["user"], "id": sess.id}
    if path == "/whoami":
        return {"user": sess.get("user"), "id": sess.id}
    if path == "/incr":
        sess["views"] = sess.get("views", 0) + 1
        return {"views": sess["views"]}
    if path == "/put":
        sess.update(json.loads(query["data"]))
        return {"id": sess.id}
    if path == "/raw":
        data = dict(sess)
        return {"id": sess.id, "session": {"cookie": sess.cookie.to_record(), **data},
                "types": {k: _type_name(v) for k, v in data.items()}}
    if path == "/logout":
        sess.destroy()
        return {"ok": True}
    return None


def routes(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """The routes; ``environ["session"]`` is the Session the middleware put there."""
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    body = answer(environ["session"], environ.get("PATH_INFO", "/"), query)
    if body is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json; charset=utf-8"),
                              ("Content-Length", str(len(payload)))])
    return [payload]


def make_app(secrets: Sequence[str], store: session.Store, *, max_age: float | None = None,
             rolling: bool = False) -> Callable:
    """``routes`` behind SessionMiddleware, configured like app.js with the same options."""
    cookie = {} if max_age is None else {"max_age": max_age}
    return session.SessionMiddleware(routes, secret=list(secrets), store=store, cookie=cookie,
                                     rolling=rolling)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ServedApp:
    """A WSGI app served by wsgiref on 127.0.0.1:<port> in a background thread (one request at a time)."""

    def __init__(self, app: Callable, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server = make_server("127.0.0.1", port, app, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
