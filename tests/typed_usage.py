"""The public API as an annotated app uses it: tests/test_types.py has mypy --strict and pyright
check this file, so a hint of ours that rejects correct code shows up as an error here.

It is type-checked, not run (nothing calls these functions, and the stores are never made).
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional, Union

from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from quart import Quart
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


class TextStore(Store):
    """docs/stores.md's "A whole store", annotated, with coroutines and both class flags."""

    blocking = False
    touch_needs_record = False

    def __init__(self, *, ttl: float = 86400) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._data: dict[str, tuple[float, str]] = {}

    def get(self, sid: str) -> Optional[dict[str, Any]]:
        text = self.get_text(sid)
        return None if text is None else decode_record(text)

    def get_text(self, sid: str) -> Optional[str]:
        entry = self._data.get(sid)
        return entry[1] if entry and entry[0] > time.time() else None

    def set(self, sid: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._data[sid] = (self.expiry_time(record), encode_record(record))

    def merge(self, sid: str, change: Change) -> bool:
        with self._lock:
            now = time.time()
            entry = self._data.get(sid)
            live = entry if entry and entry[0] > now else None
            if (live is None) != (change.base is None):
                return False
            text: str = change.text
            expires: Optional[float] = change.expires
            if live is not None and live[1] != change.base:
                text, expires = change.apply(live[1])
            expiry = now + self.ttl if expires is None else expires
            if live and change.keep_later and change.keeps(live[0]):
                expiry = live[0]
            self._data[sid] = (expiry, text)
            return True

    def touch(self, sid: str, record: dict[str, Any]) -> None:
        expiry: Optional[float] = expires_at(record)
        with self._lock:
            entry = self._data.get(sid)
            if entry and expiry is not None:
                self._data[sid] = (expiry, entry[1])

    def destroy(self, sid: str) -> None:
        with self._lock:
            self._data.pop(sid, None)

    def all(self) -> dict[str, dict[str, Any]]:
        return {sid: decode_record(text) for sid, (_, text) in list(self._data.items())}

    def clear(self) -> None:
        self._data.clear()

    def prune(self) -> int:
        return 0

    def describe(self, change: Change) -> str:
        """What a store that writes fields, not text, reads of a change."""
        sets, deleted = change.changes()
        kept: Optional[tuple[Any, Any]] = change.kept_times
        cookie: dict[str, Any] = change.cookie()
        return f"set {sorted(sets)}, deleted {deleted}, cookie {cookie}, kept {kept}"

    async def aget_text(self, sid: str) -> Optional[str]:
        return self.get_text(sid)

    async def aset(self, sid: str, record: dict[str, Any]) -> None:
        self.set(sid, record)

    async def amerge(self, sid: str, change: Change) -> bool:
        return self.merge(sid, change)

    async def atouch(self, sid: str, record: dict[str, Any]) -> None:
        self.touch(sid, record)

    async def adestroy(self, sid: str) -> None:
        self.destroy(sid)


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
        SessionMiddleware(wsgi_app, secret="s", store=TextStore(ttl=60)),
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


# ---------------------------------------------------------------- ASGI (Litestar, Quart)
# Their scopes, receive and send are TypedDicts, not Starlette's mappings.

@get("/")
async def litestar_home() -> dict[str, str]:
    return {}


def litestar_app() -> Litestar:
    store = MemoryStore()
    return Litestar(route_handlers=[litestar_home], middleware=[
        DefineMiddleware(ASGISessionMiddleware, secret="s", store=store,
                         cookie=lambda scope: {"max_age": 60}),
    ])


def quart_app() -> Quart:
    app = Quart(__name__)
    app.asgi_app = ASGISessionMiddleware(app.asgi_app, secret="s")  # type: ignore[method-assign]
    return app
