"""wsgi_app.py's routes (app.js's) as a plain ASGI app on ASGISessionMiddleware, no framework.

    /login?user=NAME  regenerate, then store the user     /whoami   {"user", "id"}, read only
    /incr             views += 1                           /put?data=JSON  merge keys into the session
    /raw              the session as loaded, cookie in express's record shape, plus each value's type
    /logout           destroy the session
"""
from __future__ import annotations

import json
from typing import Callable, Sequence
from urllib.parse import parse_qs

import session
from tests.interop.wsgi_app import answer


async def routes(scope: dict, receive: Callable, send: Callable) -> None:
    """The routes; ``scope["session"]`` is the Session the middleware put there."""
    if scope["type"] != "http":
        return
    query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
    body = answer(scope["session"], scope["path"], query)
    if body is None:
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def make_app(secrets: Sequence[str], store: session.Store, *, max_age: float | None = None,
             rolling: bool = False) -> Callable:
    """``routes`` behind ASGISessionMiddleware, configured like app.js with the same options."""
    cookie = {} if max_age is None else {"max_age": max_age}
    with_session = session.ASGISessionMiddleware(routes, secret=list(secrets), store=store,
                                                 cookie=cookie, rolling=rolling)

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "lifespan":
            return await with_session(scope, receive, send)
        while True:  # at shutdown, the store's connections of this loop close (README)
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                aclose = getattr(store, "aclose", None)
                if aclose is not None:
                    await aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    return app
