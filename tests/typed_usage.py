"""The public API as an annotated app uses it: tests/test_types.py has mypy --strict and pyright
check this file, so a hint of ours that rejects correct code shows up as an error here.

It is type-checked, not run (nothing calls these functions, and the stores are never made).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional, Union

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from session import (ASGISessionMiddleware, Change, Cookie, MemoryStore, Session, SessionError,
                     SessionMiddleware, Store, decode_record, encode_record, expires_at, sign,
                     unsign)
from stores import MongoStore, PostgresStore, RedisStore, ShelveStore, SQLiteStore


# ---------------------------------------------------------------- WSGI

def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    sess: Session = environ["session"]
    sess["views"] = int(sess.get("views", 0)) + 1
    if "user" in sess and sess.is_new:
        sess.regenerate()
    sess.cookie.max_age = 60
    sess.cookie.max_age = timedelta(minutes=5)
    sess.cookie.expires = datetime.now(timezone.utc) + timedelta(days=1)
    sess.cookie.secure = True
    sess.cookie.http_only = True
    sess.cookie.same_site = "lax"
    sess.cookie.same_site = True
    sess.cookie.domain = None
    sess.cookie.path = "/"
    sess.cookie.partitioned = None
    sess.cookie.priority = "high"
    left: Optional[float] = sess.cookie.max_age
    given: Optional[float] = sess.cookie.original_max_age
    ends: Optional[datetime] = sess.cookie.expires
    lasting: bool = sess.cookie.has_expiry
    sid: str = sess.id
    changed: bool = sess.modified
    record: dict[str, Any] = sess.cookie.to_record()
    header: str = Cookie.from_record(record).serialize("connect.sid", sign(sid, "secret"))
    sess.touch()
    sess.save()
    sess.reload()
    sess.destroy()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{left} {given} {ends} {lasting} {changed} {sess.cookie.to_json()} {header}".encode()]


def cookie_for(environ: dict[str, Any]) -> dict[str, Any]:
    return {"max_age": 3600, "secure": environ.get("wsgi.url_scheme") == "https"}


class DictStore(Store):
    """A store written as docs/stores.md's "Writing a store" says."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def get(self, sid: str) -> Optional[dict[str, Any]]:
        return self.records.get(sid)

    def set(self, sid: str, record: dict[str, Any]) -> None:
        self.records[sid] = record

    def destroy(self, sid: str) -> None:
        self.records.pop(sid, None)

    def touch(self, sid: str, record: dict[str, Any]) -> None:
        self.records[sid] = record

    def merge(self, sid: str, change: Change) -> bool:
        return super().merge(sid, change)


def wsgi_apps() -> list[Any]:
    return [
        SessionMiddleware(wsgi_app, secret="a long random string", cookie={"max_age": 3600}),
        SessionMiddleware(wsgi_app, secret=["new secret", b"old secret"], store=MemoryStore(ttl=60),
                          name="sid", cookie=cookie_for, genid=lambda environ: "an id",
                          proxy=True, resave=False, save_uninitialized=False, rolling=True,
                          unset="destroy", environ_key="session"),
        SessionMiddleware(wsgi_app, secret="s", store=SQLiteStore("sessions.sqlite3")),
        SessionMiddleware(wsgi_app, secret="s", store=ShelveStore("sessions.shelve")),
        SessionMiddleware(wsgi_app, secret="s", store=RedisStore(url="redis://localhost:6379/0")),
        SessionMiddleware(wsgi_app, secret="s", store=PostgresStore(conninfo="postgresql://")),
        SessionMiddleware(wsgi_app, secret="s", store=MongoStore(url="mongodb://localhost")),
        SessionMiddleware(wsgi_app, secret="s", store=DictStore()),
    ]


def signing() -> Union[str, None]:
    signed: str = sign("value", "secret")
    text: str = encode_record({"cookie": {"originalMaxAge": None, "path": "/"}})
    expiry: Optional[float] = expires_at(decode_record(text))
    try:
        return unsign(signed, ["secret", b"older"]) if expiry is None else None
    except SessionError:
        return None


# ---------------------------------------------------------------- ASGI (Starlette, FastAPI)

async def home(request: Request) -> JSONResponse:
    sess: Session = request.scope["session"]
    sess["views"] = int(sess.get("views", 0)) + 1
    await sess.asave()
    await sess.areload()
    return JSONResponse({"views": sess["views"]})


def asgi_apps() -> list[ASGIApp]:
    app = Starlette(routes=[Route("/", home)], middleware=[
        Middleware(ASGISessionMiddleware, secret="s", store=RedisStore(), cookie={"max_age": 60}),
    ])
    other = Starlette(routes=[Route("/", home)])
    other.add_middleware(ASGISessionMiddleware, secret="s", cookie=lambda scope: {"path": "/"})
    wrapped: ASGIApp = ASGISessionMiddleware(other, secret="s", scope_key="session")
    return [app, wrapped]
