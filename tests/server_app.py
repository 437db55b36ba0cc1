"""A bare ASGI app (no framework) wrapped by ASGISessionMiddleware, for tests/test_asgi_servers.py.

It uses the protocol's corners directly: HEAD, 204 and 304, a stream that changes the session
between chunks, ``http.response.pathsend``, early hints, trailers, websocket denial responses.
``make_app(store)`` serves it in-process; a server run as a command (granian, daphne) loads
``tests.server_app:app``, on the SQLiteStore file named by SESSION_TEST_DB.  Its lifespan
shutdown awaits ``store.aclose()``, as an app's should.
"""
from __future__ import annotations

import asyncio
import json
import os
from typing import Callable
from urllib.parse import parse_qs

import session

SECRET = "keyboard cat"
HOUR = 3600
STREAM_PAUSE = 0.05   # between a stream's chunks: long enough for a client to leave mid-stream


async def _respond(send: Callable, status: int, body: bytes = b"", headers=(), *, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + list(headers)})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _json(value) -> bytes:
    return json.dumps(value).encode()


async def _drain(receive: Callable) -> None:
    message = await receive()
    while message["type"] == "http.request" and message.get("more_body"):
        message = await receive()


async def http_app(scope: dict, receive: Callable, send: Callable) -> None:
    sess = scope["session"]
    path, query = scope["path"], parse_qs(scope["query_string"].decode())
    head = scope["method"] == "HEAD"
    extensions = scope.get("extensions") or {}
    await _drain(receive)
    if path == "/incr":
        sess["views"] = sess.get("views", 0) + 1
        await _respond(send, 200, _json({"views": sess["views"]}), head=head)
    elif path == "/login":
        sess.regenerate()
        sess["user"] = query["user"][0]
        await _respond(send, 200, _json({"user": sess["user"], "id": sess.id}))
    elif path == "/logout":
        sess.destroy()
        await _respond(send, 200, _json({"ok": True}))
    elif path == "/whoami":
        await _respond(send, 200, _json({"user": sess.get("user"), "id": sess.id,
                                         "cookie": [v.decode("latin-1") for k, v in scope["headers"]
                                                    if k.lower() == b"cookie"]}))
    elif path == "/status":   # 204 or 304: a head and no body
        sess["hits"] = sess.get("hits", 0) + 1
        await send({"type": "http.response.start", "status": int(query["code"][0]),
                    "headers": [(b"vary", b"Accept-Encoding")]})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":   # the session changes between chunks, after the head went out
        count = int(query.get("count", ["3"])[0])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(count):
            sess["chunks"] = sess.get("chunks", []) + [i]
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
            await asyncio.sleep(STREAM_PAUSE if count > 3 else 0)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/events":   # server-sent events: until the client leaves (http.disconnect)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        gone = asyncio.ensure_future(receive())
        try:
            for i in range(200):
                sess["events"] = sess.get("events", 0) + 1
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
                await asyncio.wait([gone], timeout=STREAM_PAUSE)
                if gone.done():
                    return            # the last body message never goes: the middleware ends it
        finally:
            gone.cancel()
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow":     # the client may leave before the head goes out
        await asyncio.sleep(float(query["wait"][0]))
        sess["slow"] = True
        await _respond(send, 200, b"{}")
    elif path == "/file":     # pathsend where the server offers it, else the bytes
        sess["files"] = sess.get("files", 0) + 1
        name = os.path.abspath(__file__)
        pathsend = "http.response.pathsend" in extensions
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/x-python"),
                                (b"content-length", str(os.path.getsize(name)).encode()),
                                (b"x-sent-with", b"pathsend" if pathsend else b"body")]})
        if pathsend:   # the body's last (and only) message
            await send({"type": "http.response.pathsend", "path": name})
        else:
            with open(name, "rb") as f:
                await send({"type": "http.response.body", "body": f.read()})
    elif path == "/early":    # early hints, where the server offers them
        sess["early"] = True
        if "http.response.early_hint" in extensions:
            await send({"type": "http.response.early_hint",
                        "links": [b"</style.css>; rel=preload; as=style"]})
        await _respond(send, 200, _json({"early": "http.response.early_hint" in extensions}))
    elif path == "/trailers":  # trailers, where the server offers them
        sess["trailers"] = True
        offered = "http.response.trailers" in extensions
        announce = [(b"trailer", b"x-checksum")] if offered else []
        await send({"type": "http.response.start", "status": 200, "trailers": offered,
                    "headers": [(b"content-type", b"text/plain")] + announce})
        await send({"type": "http.response.body", "body": b"body"})
        if offered:
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
    else:
        await _respond(send, 404, b"{}")


async def websocket_app(scope: dict, receive: Callable, send: Callable) -> None:
    sess = scope["session"]
    path = scope["path"]
    message = await receive()
    assert message["type"] == "websocket.connect", message
    if path == "/ws":         # reads the session, changes it per message; closes on "bye"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps({"user": sess.get("user")})})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            sess["said"] = sess.get("said", []) + [text]
            if text == "bye":
                await send({"type": "websocket.close", "code": 1000})
                return
            await send({"type": "websocket.send", "text": "ok"})
    elif path == "/ws-login":  # a new session, changed before the accept: its cookie goes with it
        sess["user"] = "socket"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": sess.id})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif path == "/ws-ticks":  # sends and never receives: learns the client left when a send fails
        await send({"type": "websocket.accept"})    # (ASGI 2.4: uvicorn's raise OSError; the others
        for i in range(20):                          # drop them, and the app runs its course)
            sess["ticks"] = sess.get("ticks", 0) + 1
            await send({"type": "websocket.send", "text": str(i)})
            await asyncio.sleep(STREAM_PAUSE)
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/ws-deny":   # an HTTP response instead of the socket
        sess["denied"] = sess.get("denied", 0) + 1
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "websocket.http.response.body", "body": b"denied"})
        else:
            await send({"type": "websocket.close", "code": 1008})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def lifespan(receive: Callable, send: Callable, store=None) -> None:
    """Startup, then shutdown, which waits for the store's work in flight (store.aclose())."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.shutdown" and store is not None:
            await store.aclose()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


async def bare_app(scope: dict, receive: Callable, send: Callable) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http":
        await http_app(scope, receive, send)
    else:
        await websocket_app(scope, receive, send)


def make_app(store: session.Store) -> Callable:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, store)
        else:
            await bare_app(scope, receive, send)
    return session.ASGISessionMiddleware(app, secret=SECRET, store=store, cookie={"max_age": HOUR})


def _from_environment() -> Callable:
    from stores.sqlite_store import SQLiteStore
    return make_app(SQLiteStore(os.environ["SESSION_TEST_DB"]))


app = _from_environment() if os.environ.get("SESSION_TEST_DB") else None
