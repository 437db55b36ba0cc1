"""express-session for Python: server-side sessions for any WSGI app, standard library only.

Wrap a WSGI application and every request gets ``environ["session"]``, a dict
that is saved to a store and found again through a signed cookie.  Options,
semantics, cookies and store records follow Node's express-session 1.19, so an
Express app given the same secret and the same store shares logged-in users::

    from session import SessionMiddleware

    def app(environ, start_response):
        session = environ["session"]
        session["views"] = session.get("views", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{session['views']} views".encode()]

    app = SessionMiddleware(app, secret="keyboard cat", cookie={"max_age": 3600})

The file is self-contained: copy it into a project to vendor it.  Sections, in
order: errors, signing, Cookie, Session, Store and MemoryStore,
SessionMiddleware, private helpers.
"""
from __future__ import annotations

import binascii
import functools
import hashlib
import heapq
import hmac
import json
import logging
import math
import re
import secrets as _secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union
from urllib.parse import quote, unquote

__all__ = [
    "SessionMiddleware", "Session", "Cookie", "Store", "MemoryStore", "SessionError",
    "sign", "unsign", "encode_record", "decode_record", "expires_at",
]
__version__ = "0.1.0"

log = logging.getLogger("session")

Secret = Union[str, bytes]
_NOTHING: Any = object()  # "not given", where None is a meaningful value


# ---------------------------------------------------------------- errors

class SessionError(Exception):
    """Misuse of a session: a reserved key, reloading a record that is gone."""


# ---------------------------------------------------------------- signing

def sign(value: str, secret: Secret) -> str:
    """Sign ``value`` as the npm package cookie-signature does: ``value.base64(HMAC-SHA256)``."""
    return f"{value}.{_mac(value, _key(secret))}"


def unsign(signed: str, secrets: Union[Secret, Sequence[Secret]]) -> Optional[str]:
    """Return the value inside ``signed`` if any of ``secrets`` signed it, else None.

    Accepts one secret or a list: when rotating, list the new secret first and
    keep the old ones so that cookies they signed still verify.  Signatures are
    compared in constant time.
    """
    if not isinstance(signed, str):
        raise TypeError("signed value must be a str")
    listed = [secrets] if isinstance(secrets, (str, bytes)) else secrets
    return _verify(signed, [_key(s) for s in listed])[0]


def _verify(signed: str, keys: Sequence[bytes]) -> tuple:
    """(value, index of the key that signed it), or (None, -1).

    Every key is tried, with no early exit, so the time taken does not tell
    which secret matched or how much of a forged signature was right.
    """
    dot = signed.rfind(".")
    if dot < 0:
        return None, -1
    value, given = signed[:dot], signed[dot + 1:].encode("utf-8", "surrogatepass")
    match = -1
    for i, key in enumerate(keys):
        if hmac.compare_digest(_mac(value, key).encode(), given) and match < 0:
            match = i
    return (value, match) if match >= 0 else (None, -1)


def _key(secret: Secret) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _mac(value: str, key: bytes) -> str:
    """base64 HMAC-SHA256 of ``value`` without padding, from the key's precomputed pads."""
    inner, outer = _pads(key)
    inner, outer = inner.copy(), outer.copy()
    inner.update(value.encode("utf-8", "surrogatepass"))
    outer.update(inner.digest())
    return binascii.b2a_base64(outer.digest(), newline=False).decode("ascii").rstrip("=")


@functools.lru_cache(maxsize=64)
def _pads(key: bytes) -> tuple:
    # HMAC (RFC 2104) with the keyed inner and outer hashes computed once per
    # secret: signing then costs two hash copies instead of a full key setup.
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD)))


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


# ---------------------------------------------------------------- Cookie

class Cookie:
    """The session cookie's settings and expiry, as express-session's Cookie (max_age in seconds).

    ``max_age`` is the time left; setting it sets ``expires`` and
    ``original_max_age`` too.  Times are kept as integer milliseconds since the
    epoch, as JavaScript does, so records round-trip exactly.
    """

    __slots__ = ("_expires", "_stored_expires", "_original", "http_only", "secure", "path",
                 "domain", "same_site", "partitioned", "priority")

    def __init__(self, *, max_age: Union[float, timedelta, None] = None,
                 expires: Optional[datetime] = None, http_only: bool = True,
                 secure: Optional[bool] = None, path: str = "/", domain: Optional[str] = None,
                 same_site: Union[str, bool, None] = None, partitioned: Optional[bool] = None,
                 priority: Optional[str] = None) -> None:
        self._expires: Optional[int] = None
        self._stored_expires = None
        self._original: Optional[float] = None
        self.http_only = http_only
        self.secure = secure
        self.path = path
        self.domain = domain
        self.same_site = same_site
        self.partitioned = partitioned
        self.priority = priority
        if max_age is not None:
            self.max_age = max_age
        elif expires is not None:
            self.expires = expires

    @property
    def expires(self) -> Optional[datetime]:
        """When the cookie expires (aware UTC), or None for a browser-session cookie."""
        ms = self._ms()
        return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)

    @expires.setter
    def expires(self, value: Optional[datetime]) -> None:
        if value is None:
            self._expires = self._original = None
            return
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("cookie expires must be an aware datetime or None")
        self._expires = _datetime_ms(value)
        self._original = self._expires - _now_ms()

    @property
    def max_age(self) -> Optional[float]:
        """Seconds until expiry (negative once expired), or None."""
        ms = self._ms()
        return None if ms is None else (ms - _now_ms()) / 1000

    @max_age.setter
    def max_age(self, seconds: Union[float, timedelta, None]) -> None:
        ms = _max_age_ms(seconds, "max_age", allow_negative=True)
        if ms is None:
            self._expires = self._original = None
        else:
            self._expires = _now_ms() + int(ms)
            self._original = ms

    @property
    def original_max_age(self) -> Optional[float]:
        """The max_age the cookie was given, in seconds (express keeps it in ms)."""
        return None if self._original is None else self._original / 1000

    def _ms(self) -> Optional[int]:
        """Expiry in epoch ms; a loaded cookie's stored date is parsed the first time it is needed
        (most requests only restart the clock, which never reads it)."""
        if self._expires is _UNPARSED:
            try:
                self._expires = _expires_ms(self._stored_expires)
            except ValueError:
                log.warning("stored cookie expires %r is not a date; treating it as unset",
                            self._stored_expires)
                self._expires = None
        return self._expires

    def touch(self) -> None:
        """Restart the clock: max_age = original_max_age, as express's resetMaxAge."""
        if self._original is not None:
            self._expires = _now_ms() + int(self._original)

    def to_record(self) -> dict:
        """The cookie as express stores it: camelCase, express's key order, unset keys omitted."""
        return self._stored()[0]

    def to_json(self) -> str:
        """``to_record()`` as JSON."""
        return self._stored()[1]

    def _stored(self) -> tuple:
        """(``to_record()``, its JSON, expiry in epoch ms): both made from one template per set
        of attributes, in which only the two times vary."""
        ms = self._ms()
        expires = None if ms is None else _iso_ms(ms)
        original = self._original
        (before, between, after), _, fields = _templates(*self._settings())
        fields = fields.copy()
        fields["originalMaxAge"] = original
        fields["expires"] = expires
        return fields, "".join((
            before, "null" if original is None else
            str(original) if type(original) is int else _encode(original),
            between, "null" if expires is None else f'"{expires}"', after)), ms

    def _fields(self, original: Any, expires: Any) -> dict:
        rec: dict = {"originalMaxAge": original}
        if self.partitioned is not None:
            rec["partitioned"] = self.partitioned
        if self.priority is not None:
            rec["priority"] = self.priority
        rec["expires"] = expires
        if self.secure is not None:
            rec["secure"] = self.secure
        rec["httpOnly"] = self.http_only
        if self.domain is not None:
            rec["domain"] = self.domain
        if self.path is not None:
            rec["path"] = self.path
        if self.same_site is not None:
            rec["sameSite"] = self.same_site
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "Cookie":
        """Rebuild a Cookie from a stored record's ``cookie`` (what Express wrote reads the same)."""
        c = cls.__new__(cls)
        get = rec.get
        expires = get("expires")
        c._expires = None if expires is None else _UNPARSED
        c._stored_expires = expires
        original = get("originalMaxAge")
        if original is not None and (isinstance(original, bool)
                                     or not isinstance(original, (int, float))):
            raise ValueError("originalMaxAge is not a number")
        c._original = original
        c.http_only = get("httpOnly", True) is not False
        c.secure = get("secure")
        c.path = path = get("path", "/")
        c.domain = domain = get("domain")
        c.same_site = get("sameSite")
        c.partitioned = get("partitioned")
        c.priority = get("priority")
        if path != "/" and path is not None:
            _check_attr(path, "cookie path in the stored record")
        if domain is not None:
            _check_attr(domain, "cookie domain in the stored record")
        return c

    def serialize(self, name: str, value: str) -> str:
        """The Set-Cookie header value, attributes in the order the npm package cookie writes them."""
        before, after = _templates(*self._settings())[1]
        ms = self._ms()
        return "".join((name, "=", value, before,
                        "" if ms is None else "; Expires=" + _http_date(ms // 1000), after))

    def _settings(self) -> tuple:
        """Everything but the times: what the JSON and Set-Cookie templates depend on."""
        return (self.partitioned, self.priority, self.secure, self.http_only, self.domain,
                self.path, self.same_site)

    def _attributes(self, expires: Optional[str]) -> str:
        parts = []
        if self.domain:
            parts += ("; Domain=", self.domain)
        if self.path:
            parts += ("; Path=", self.path)
        if expires is not None:
            parts += ("; Expires=", expires)
        if self.http_only:
            parts.append("; HttpOnly")
        if self.secure:
            parts.append("; Secure")
        if self.partitioned:
            parts.append("; Partitioned")
        if self.priority:
            parts += ("; Priority=", self.priority.capitalize())
        same_site = self.same_site
        if same_site is not None and same_site is not False:
            same_site = _SAME_SITE_ATTR.get(same_site if same_site is True else str(same_site).lower())
        if same_site:
            parts += ("; SameSite=", same_site)
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Cookie({self.to_record()!r})"


_SAME_SITE_ATTR = {True: "Strict", "strict": "Strict", "lax": "Lax", "none": "None"}


@functools.lru_cache(maxsize=64, typed=True)
def _templates(*settings: Any) -> tuple:
    """For cookies with these ``_settings()``: the record's JSON cut around its two times,
    the Set-Cookie attributes cut where Expires goes, and the record's fields (times None).
    Only the times vary per request."""
    cookie = Cookie.__new__(Cookie)
    (cookie.partitioned, cookie.priority, cookie.secure, cookie.http_only, cookie.domain,
     cookie.path, cookie.same_site) = settings
    text = _encode(cookie._fields("\0original", "\0expires"))
    before, rest = text.split('"\\u0000original"')
    between, after = rest.split('"\\u0000expires"')
    return ((before, between, after), tuple(cookie._attributes("\0").split("; Expires=\0")),
            cookie._fields(None, None))


_UNPARSED: Any = object()  # Cookie._expires of a loaded cookie whose date is not parsed yet


# ---------------------------------------------------------------- Session

def _reads(method):
    """Wrap a dict method so calling it marks the session as read (for Vary and change tracking)."""
    base = getattr(dict, method)

    def wrapper(self, *args, **kwargs):
        self._use()
        return base(self, *args, **kwargs)
    wrapper.__name__ = method
    wrapper.__doc__ = base.__doc__
    return wrapper


class Session(dict):
    """The user's session data (a dict of JSON values) plus its ID, cookie and store actions.

    Changes are found by comparing the data's JSON with what was loaded, so
    ``session["cart"].append(x)`` is saved with no flag to set.  The key
    ``"cookie"`` is reserved: the cookie is the ``.cookie`` attribute.
    """

    __slots__ = ("_mw", "_environ", "_opts", "_sid", "_cookie", "_loaded", "_regenerated", "_read",
                 "_snapshot", "_originals", "_loaded_json", "_saved", "_cookie_pos", "_cookie_id",
                 "_resend", "_touched", "_destroyed")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """A detached session (for tests): data only; store actions need the middleware."""
        dict.__init__(self)
        self._mw = self._environ = self._opts = self._sid = self._cookie = None
        self._cookie_id = self._resend = None
        self._loaded = self._regenerated = self._read = self._touched = self._destroyed = False
        self._snapshot, self._originals, self._saved, self._cookie_pos = "{}", None, None, 0
        self._loaded_json = None
        self.update(*args, **kwargs)

    @classmethod
    def _create(cls, mw: "SessionMiddleware", environ: dict, options: "_CookieOptions",
                cookie_id: Optional[str], resend: Optional[str],
                loaded: Optional[tuple]) -> "Session":
        """A session for one request: loaded (a record and its Cookie), or new (its ID made
        when first needed)."""
        self = dict.__new__(cls)
        self._mw = mw
        self._environ = environ
        self._opts = options
        self._cookie_id = cookie_id
        self._resend = resend
        self._read = False
        self._regenerated = False
        self._touched = False
        self._destroyed = False
        self._originals = None
        if loaded is None:
            self._sid = None
            self._cookie = None
            self._loaded_json = None
            self._loaded = False
            self._snapshot = "{}"
            self._saved = None
            self._cookie_pos = 0
        else:
            self._sid = cookie_id
            self._loaded = True
            self._snapshot = None  # taken on first use: untouched data needs no JSON work
            self._fill(loaded)
            self._saved = None if mw.resave else (cookie_id, None)
        return self

    def _fill(self, loaded: tuple) -> None:
        """Take the data, cookie and data's JSON of a record that ``SessionMiddleware._load``
        checked (into an empty session)."""
        record, self._cookie, self._loaded_json = loaded
        dict.update(self, record)
        if self._cookie is None:  # the data alone; the cookie is the options' own (see _load)
            self._cookie_pos = 0
            return
        # express keeps a loaded record's key order: remember where "cookie" was.
        self._cookie_pos = 0 if next(iter(record)) == "cookie" else list(record).index("cookie")
        dict.__delitem__(self, "cookie")

    # -- identity and cookie

    @property
    def id(self) -> str:
        """The session ID (read-only; ``regenerate()`` replaces it)."""
        self._read = True
        return self._ensure_id()

    @property
    def cookie(self) -> Cookie:
        """The session cookie: its expiry and attributes, settable per session."""
        self._read = True
        return self._ensure_cookie()

    def _ensure_id(self) -> str:
        if self._sid is None:
            self._sid = self._middleware()._generate_id(self._environ)
        return self._sid

    def _ensure_cookie(self) -> Cookie:
        if self._cookie is None:
            self._cookie = self._middleware()._new_cookie(self._environ, self._opts)
        return self._cookie

    def _middleware(self) -> "SessionMiddleware":
        if self._mw is None:
            raise SessionError("this session is not attached to a request's SessionMiddleware")
        return self._mw

    # -- store actions

    def regenerate(self) -> None:
        """Destroy the stored record and continue, in place, as a new empty session with a new ID.

        Call it at login: an ID an attacker planted before login is worth nothing after.
        """
        self._use()
        if self._sid is not None:
            self._middleware().store.destroy(self._sid)
        dict.clear(self)
        self._sid = self._middleware()._generate_id(self._environ)
        self._cookie = self._loaded_json = None
        self._loaded = False
        self._regenerated = True
        self._cookie_pos = 0

    def destroy(self) -> None:
        """Delete the stored record; ``environ[key]`` becomes None and the response expires the cookie."""
        mw = self._middleware()
        self._read = True
        if self._sid is not None:
            mw.store.destroy(self._sid)
        self._destroyed = True
        if self._environ is not None and self._environ.get(mw.environ_key) is self:
            self._environ[mw.environ_key] = None

    def reload(self) -> None:
        """Replace the data with what the store holds now; SessionError if the record is gone."""
        self._use()
        loaded = self._middleware()._load(self._ensure_id())
        if loaded is None:
            raise SessionError(f"session {self._sid[:6]}... is no longer in the store")
        dict.clear(self)
        self._fill(loaded)

    def save(self) -> None:
        """Write the session to the store now; if unchanged after, it is not written again at the end."""
        self._use()
        data = self._dump()
        self._middleware().store.set(self._ensure_id(), self._record(data))
        self._saved = (self._sid, data)

    def touch(self) -> None:
        """Reset ``cookie.max_age`` to ``cookie.original_max_age``."""
        self._ensure_cookie().touch()

    # -- change tracking

    def _use(self) -> None:
        """Mark the session read and, before the app can change it, keep its JSON to compare with."""
        self._read = True
        if self._snapshot is None:
            if self._loaded_json is not None:  # read as text: the JSON as loaded is known
                self._snapshot = self._loaded_json
            else:
                originals, self._originals = self._originals, None
                self._snapshot = self._dump() if not originals else _encode(self._as_loaded(originals))

    def _as_loaded(self, originals: dict) -> dict:
        """The data as loaded: the current data with the keys written so far put back."""
        data = {}
        for key, value in dict.items(self):
            original = originals.get(key, _NOTHING)
            if original is _NOTHING:
                data[key] = value
            elif original is not _MISSING:
                data[key] = original
        return data

    def _dump(self) -> str:
        """The data as JSON (without the cookie); TypeError names the key JSON cannot encode."""
        try:
            # A plain copy: encoding the Session itself would call its items(),
            # which counts as the app using it.
            return _encode(dict(dict.items(self)))
        except (TypeError, ValueError, RecursionError) as exc:
            for key, value in dict.items(self):
                try:
                    _encode({key: value})
                except (TypeError, ValueError, RecursionError):
                    raise TypeError(f"session[{key!r}] cannot be stored as JSON: {exc}") from None
            raise TypeError(f"session cannot be stored as JSON: {exc}") from None

    def _current(self) -> Optional[str]:
        """JSON of the data now, or None when it cannot have changed.

        Until the app gets hold of a mutable value, changes can only come
        through ``session[key] = value``, so comparing the keys written with
        their loaded values is enough and saves encoding the data twice.  (A
        session read as text has its JSON as loaded already: see _load.)
        """
        if not self._read:
            return None
        if self._snapshot is None:
            originals = self._originals
            if not originals:
                return None
            for key, value in originals.items():
                now = dict.get(self, key, _MISSING)
                if now is not value and not _same(now, value):
                    break
            else:
                return None
        return self._dump()

    def _record(self, data: Optional[str] = None) -> "_Record":
        """The store record: the cookie at its stored position, then the data.

        Given the data's JSON, the record's JSON is built from it, so the
        store does not encode the same data a second time.
        """
        cookie, cookie_json, ms = self._ensure_cookie()._stored()
        rec = _Record()
        rec.expires_ms = ms
        if self._cookie_pos == 0:
            rec["cookie"] = cookie
            rec.update(dict.items(self))
            if data is not None:
                rec.text = _join_record('{"cookie":' + cookie_json, data)
            return rec
        for i, (key, value) in enumerate(dict.items(self)):
            if i == self._cookie_pos:
                rec["cookie"] = cookie
            rec[key] = value
        rec.setdefault("cookie", cookie)
        return rec

    def __repr__(self) -> str:
        return f"Session({dict.__repr__(self)})"

    # -- reserved key and reads that count as using the session

    def __getitem__(self, key: str) -> Any:
        self._read = True
        value = dict.__getitem__(self, key)
        if self._snapshot is None and type(value) not in _IMMUTABLE:
            self._use()  # the app may change what it gets: keep what it was
        return value

    def get(self, key: str, default: Any = None) -> Any:
        self._read = True
        value = dict.get(self, key, default)
        if self._snapshot is None and type(value) not in _IMMUTABLE:
            self._use()
        return value

    def __contains__(self, key: object) -> bool:
        self._read = True
        return dict.__contains__(self, key)

    def __len__(self) -> int:
        self._read = True
        return dict.__len__(self)

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "cookie":
            raise SessionError('"cookie" is reserved: use session.cookie for the cookie settings')
        self._read = True
        if self._snapshot is None and self._loaded_json is not None:
            self._snapshot = self._loaded_json  # read as text: the JSON as loaded is known
        elif self._snapshot is None:   # remember the loaded value instead of taking a snapshot
            originals = self._originals
            if originals is None:
                originals = self._originals = {}
            if key not in originals:
                originals[key] = dict.get(self, key, _MISSING)
        dict.__setitem__(self, key, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key == "cookie":
            raise SessionError('"cookie" is reserved: use session.cookie for the cookie settings')
        self._use()
        return dict.setdefault(self, key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        other = dict(*args, **kwargs)
        if "cookie" in other:
            raise SessionError('"cookie" is reserved: use session.cookie for the cookie settings')
        self._use()
        dict.update(self, other)

    def __ior__(self, other: Any) -> "Session":
        self.update(other)
        return self

    def copy(self) -> dict:
        self._use()
        return dict(dict.items(self))


for _name in ("__iter__", "keys", "values",
              "items", "pop", "popitem", "__delitem__", "clear", "__eq__", "__ne__",
              "__reversed__", "__or__", "__ror__"):
    setattr(Session, _name, _reads(_name))
del _name


_IMMUTABLE = frozenset((str, int, float, bool, type(None)))
_MISSING: Any = object()  # "no such key" among a session's loaded values


def _same(a: Any, b: Any) -> bool:
    """Whether two values have the same JSON (as express's hash would see them)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) in _IMMUTABLE:
        return a == b
    try:
        return _encode(a) == _encode(b)
    except (TypeError, ValueError, RecursionError):
        return False  # the encode at save time names the key


def _join_record(head: str, data: str) -> str:
    """A record's JSON from its cookie's part, ``{"cookie":{...}``, and the data's JSON."""
    return head + ("}" if data == "{}" else "," + data[1:])


class _Record(dict):
    """A record from the middleware, carrying what stores would otherwise compute again:
    its JSON (when the data was just encoded) and its expiry in epoch ms."""

    __slots__ = ("text", "expires_ms")


# ---------------------------------------------------------------- stores

def encode_record(record: Mapping[str, Any]) -> str:
    """The record's JSON exactly as express writes it: compact, UTF-8, no NaN."""
    text = getattr(record, "text", None) if type(record) is _Record else None
    return _encode(record) if text is None else text


def decode_record(text: Union[str, bytes]) -> dict:
    """Parse a stored record; ValueError unless it is a JSON object with a ``cookie`` object."""
    record = _decode(text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else text)
    if type(record) is not dict or type(record.get("cookie")) is not dict:
        raise ValueError("not a session record: a JSON object with a 'cookie' object")
    return record


def expires_at(record: Mapping[str, Any]) -> Optional[float]:
    """Epoch seconds of ``record["cookie"]["expires"]`` (ISO string or datetime), or None."""
    ms = getattr(record, "expires_ms", _NOTHING) if type(record) is _Record else _NOTHING
    if ms is not _NOTHING:
        return None if ms is None else ms / 1000
    cookie = record.get("cookie")
    expires = cookie.get("expires") if isinstance(cookie, dict) else None
    return None if expires is None else _expires_ms(expires) / 1000


class Store:
    """Where sessions live between requests: the base every store implements.

    Records are dicts in express-session's format (see ``encode_record``).  A
    record expires at its ``cookie.expires``, or ``ttl`` seconds after its last
    write when it has none; an expired record is never returned.  Every store
    must be safe to share between the threads of one process.
    """

    ttl: float = 86400

    def get(self, sid: str) -> Optional[dict]:
        """The live record for ``sid``, or None if it is missing or expired."""
        raise NotImplementedError

    def set(self, sid: str, record: dict) -> None:
        """Create or replace the record, with its expiry."""
        raise NotImplementedError

    def destroy(self, sid: str) -> None:
        """Delete the record; deleting a missing one is not an error."""
        raise NotImplementedError

    def touch(self, sid: str, record: dict) -> None:
        """Move the expiry to the one ``record`` gives, without rewriting data; no-op if gone."""
        raise NotImplementedError

    def all(self) -> dict:
        """Every live record, by ID."""
        raise NotImplementedError

    def ids(self) -> list:
        """The IDs of the live records."""
        return list(self.all())

    def length(self) -> int:
        """How many live records there are."""
        return len(self.all())

    def clear(self) -> None:
        """Delete every record."""
        raise NotImplementedError

    def prune(self) -> int:
        """Delete expired records now and return how many; stores whose backend expires
        records by itself return 0."""
        return 0

    def close(self) -> None:
        """Release connections and files the store opened (never a client it was given)."""

    def expiry_time(self, record: Mapping[str, Any], now: Optional[float] = None) -> float:
        """Epoch seconds when ``record`` expires: its cookie's expiry, else ``ttl`` from now."""
        at = expires_at(record)
        if at is not None:
            return at
        return (time.time() if now is None else now) + self.ttl


class MemoryStore(Store):
    """Sessions in this process's memory: for development, tests and single-process apps.

    Records are kept as JSON strings, so the app can never change stored state
    through a reference.  Expired records are found through a heap ordered by
    expiry, so removing them never scans the whole store (express's
    MemoryStore only drops an expired record when it is asked for it again).
    """

    def __init__(self, *, ttl: float = 86400) -> None:
        _check_ttl(ttl)
        self.ttl = ttl
        self._lock = threading.Lock()  # held by writers; readers need none (see get)
        # sid -> (expiry, record JSON, cookie as last touched or None).  Entries
        # are tuples, replaced whole, so a reader always sees a consistent one.
        self._data: dict = {}
        self._heap: list = []  # (expiry, sid); stale pairs are skipped when popped

    def get(self, sid: str) -> Optional[dict]:
        entry = self._data.get(sid)  # one atomic dict read: no lock needed
        if entry is None:
            return None
        if entry[0] <= time.time():
            with self._lock:
                if self._data.get(sid) is entry:  # not replaced meanwhile by a set()
                    del self._data[sid]
            return None
        record = _scan_json(entry[1], 0)[0]  # our own compact JSON: one scan reads all of it
        if entry[2] is not None:
            record["cookie"] = dict(entry[2])
        return record

    def set(self, sid: str, record: dict) -> None:
        text = encode_record(record)
        now = time.time()
        self._set_text(sid, text, self.expiry_time(record, now), now)

    def _set_text(self, sid: str, text: str, expiry: Optional[float] = None,
                  now: Optional[float] = None) -> None:
        """Store a record's JSON until ``expiry`` (by default ``ttl`` from now; removed at once
        if it has passed).  The middleware gives it the JSON of records whose cookie has no
        expiry (see the shortcut below)."""
        if now is None:
            now = time.time()
        if expiry is None:
            expiry = now + self.ttl
        with self._lock:
            if self._heap and self._heap[0][0] <= now:
                self._expire(now)
            if expiry <= now:
                self._data.pop(sid, None)
                return
            # No call while the lock is held, in the common case: the interpreter switches
            # threads at calls, and a thread switched out holding the lock stalls every other
            # set() (measured: two threads' sets at 0.35 of a plain locked dict, 0.87 without).
            data = self._data
            previous = data[sid] if sid in data else None
            data[sid] = (expiry, text, None)
            if previous is None or expiry < previous[0]:
                self._schedule(expiry, sid)

    def destroy(self, sid: str) -> None:
        with self._lock:
            self._data.pop(sid, None)

    def touch(self, sid: str, record: dict) -> None:
        cookie = dict(record["cookie"])
        now = time.time()
        self._retime(sid, self.expiry_time(record, now), now, cookie)

    def _retime(self, sid: str, expiry: float, now: float, cookie: Optional[dict],
                head: Optional[str] = None) -> None:
        """Give a live record a new expiry and its cookie as touched (None: the one in its
        text); with ``head``, only if its text starts so and no cookie is kept apart."""
        with self._lock:
            data = self._data
            entry = data[sid] if sid in data else None  # no call under the lock: see _set_text
            if entry is None or entry[0] <= now:
                return
            if head is not None and (entry[2] is not None or not entry[1].startswith(head)):
                return
            data[sid] = (expiry, entry[1], cookie)
            if expiry < entry[0]:
                self._schedule(expiry, sid)

    def all(self) -> dict:
        now = time.time()
        with self._lock:
            live = [sid for sid, e in self._data.items() if e[0] > now]
        return {sid: record for sid in live if (record := self.get(sid)) is not None}

    def length(self) -> int:
        with self._lock:
            self._expire(time.time())
            return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._heap.clear()

    def prune(self) -> int:
        with self._lock:
            return self._expire(time.time())

    def close(self) -> None:
        self.clear()

    # -- the middleware's shortcut for records whose cookie is its options' own, with no
    #    expiry: it reads and writes their JSON as text.  Used on MemoryStore itself
    #    only, never on a subclass, which may override get() and set().

    def _text(self, sid: str) -> Optional[str]:
        """The live record's JSON as stored, or None: missing, expired, or touched (a touched
        record's cookie is kept apart from its text)."""
        entry = self._data.get(sid)
        if entry is None or entry[2] is not None or entry[0] <= time.time():
            return None
        return entry[1]

    def _extend(self, sid: str, head: str) -> None:
        """touch() for a record whose text starts with ``head``, its cookie with no expiry: only
        the expiry moves, to ``ttl`` from now.  A record replaced or touched meanwhile is left
        alone, as if that write had come after this touch."""
        now = time.time()
        self._retime(sid, now + self.ttl, now, None, head)

    def _schedule(self, expiry: float, sid: str) -> None:
        """File a new expiry in the heap.  Callers skip this when the record's expiry only
        moved later: its old heap entry comes due first and _expire() then re-files it."""
        heap = self._heap
        heapq.heappush(heap, (expiry, sid))
        if len(heap) > 2 * len(self._data) + 64:
            # Touches leave stale heap entries behind; rebuilding from the live
            # entries now and then keeps the heap proportional to the store.
            self._heap = [(e[0], s) for s, e in self._data.items()]
            heapq.heapify(self._heap)

    def _expire(self, now: float) -> int:
        heap, data, removed = self._heap, self._data, 0
        while heap and heap[0][0] <= now:
            _, sid = heapq.heappop(heap)
            entry = data.get(sid)
            if entry is None:
                continue
            if entry[0] <= now:
                del data[sid]
                removed += 1
            else:  # its expiry moved later since it was filed: file it again
                heapq.heappush(heap, (entry[0], sid))
        return removed


# ---------------------------------------------------------------- middleware

_COOKIE_OPTIONS = ("max_age", "expires", "http_only", "secure", "same_site", "domain", "path",
                   "partitioned", "priority")


class SessionMiddleware:
    """WSGI middleware that gives each request a session, as express-session does for Express.

    ``secret`` signs the cookie: a str/bytes, or a list whose first entry signs
    and every entry verifies, so secrets rotate without logging anyone out.
    Options are validated here, at construction; see the README for each.
    """

    def __init__(self, app: Callable, *, secret: Union[Secret, Sequence[Secret], None] = None,
                 store: Optional[Store] = None, name: str = "connect.sid",
                 cookie: Union[Mapping[str, Any], Callable[[dict], Mapping[str, Any]], None] = None,
                 genid: Optional[Callable[[dict], str]] = None, proxy: Optional[bool] = None,
                 resave: bool = False, save_uninitialized: bool = False, rolling: bool = False,
                 unset: str = "keep", environ_key: str = "session") -> None:
        if not callable(app):
            raise TypeError("app must be a WSGI callable")
        self.app = app
        self._warned_insecure = self._warned_same_site = False
        self.secrets = _check_secrets(secret)
        self._signing_key = _key(self.secrets[0])
        self._verify_keys = [_key(s) for s in self.secrets]
        self._verified: dict = {}  # cookie value -> (ID, value to re-send) that passed _verify
        self._verified_headers: dict = {}  # the same, by the whole Cookie header it came in
        if store is None:
            store = MemoryStore()
        for method in ("get", "set", "destroy", "touch"):
            if not callable(getattr(store, method, None)):
                raise TypeError(f"store must be a session.Store (it has no {method}() method)")
        self.store = store
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"name must be a cookie name (letters, digits, !#$%&'*+-.^_`|~): {name!r}")
        self.name = name
        if cookie is None or isinstance(cookie, Mapping):
            self._cookie_fn = None
            self._options = _CookieOptions(cookie or {})
            self._check_same_site_secure(self._options)
            self._record_head = _record_head(self._options)
        elif callable(cookie):
            self._cookie_fn = cookie
            self._options = None
            self._record_head = None
        else:
            raise TypeError("cookie must be a dict of cookie options or a callable(environ) returning one")
        if genid is not None and not callable(genid):
            raise TypeError("genid must be a callable(environ) returning a session ID")
        self.genid = genid
        if proxy not in (None, True, False):
            raise TypeError("proxy must be None, True or False")
        self.proxy = bool(proxy)
        for option, value in (("resave", resave), ("save_uninitialized", save_uninitialized),
                              ("rolling", rolling)):
            if not isinstance(value, bool):
                raise TypeError(f"{option} must be True or False, not {value!r}")
        self.resave = resave
        self.save_uninitialized = save_uninitialized
        self.rolling = rolling
        if unset not in ("keep", "destroy"):
            raise ValueError(f'unset must be "keep" or "destroy", not {unset!r}')
        self.unset_destroy = unset == "destroy"
        if not isinstance(environ_key, str) or not environ_key:
            raise TypeError("environ_key must be a non-empty str")
        self.environ_key = environ_key

    # -- the request

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        key = self.environ_key
        if environ.get(key) is not None:
            return self.app(environ, start_response)
        options = self._options or self._request_options(environ)
        if options.path != "/" and not _request_path(environ).startswith(options.path or "/"):
            return self.app(environ, start_response)

        header = environ.get("HTTP_COOKIE")
        # A returning visitor's header, verified before, is found whole (see _read_cookie).
        cookie_id, resend = self._verified_headers.get(header) or self._read_cookie(header)
        loaded = self._load(cookie_id) if cookie_id else None
        sess = Session._create(self, environ, options, cookie_id, resend, loaded)
        environ[key] = sess
        exchange = _Exchange(self, sess, start_response)
        result = self.app(environ, exchange.start_response)
        if type(result) is list or type(result) is tuple:
            # The body is complete: no app code runs between the two steps, so
            # the data is encoded once for both.
            current = sess._current()
            if not self._end_as_text(sess, exchange, current):
                exchange.send_headers(current)
                self._finish(sess, current)
            return result
        exchange.body = result
        return exchange

    def _load(self, sid: str) -> Optional[tuple]:
        """(stored record, its Cookie, None), or None when it is missing or not a session.

        From MemoryStore, a record whose cookie is the one the options make, with no
        expiry, is read as (its data alone, None, the data's JSON): its cookie is made
        only if asked for, and the JSON is what a change is found against, with no
        encoding (the record's text is our own encoder's, so encoding the data again
        would give the same string).
        """
        head = self._record_head
        if head is not None and type(self.store) is MemoryStore:
            text = self.store._text(sid)
            if text is not None and text.startswith(head):
                end = len(head)
                data = "{" + text[end + 1:] if text[end] == "," else "{}"
                return _scan_json(data, 0)[0], None, data
        record = self.store.get(sid)
        if record is None:
            return None
        try:
            return record, Cookie.from_record(record["cookie"]), None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("session record %.6s... is not a valid session (%s); starting a new one",
                        sid, exc)
            return None

    def _response_headers(self, sess: Session, headers: list, current: Any = _NOTHING) -> list:
        """The app's headers plus our Set-Cookie (per shouldSetCookie) and Vary: Cookie."""
        set_cookie = None
        if sess._environ.get(self.environ_key) is None:
            if (sess._destroyed or self.unset_destroy) and sess._cookie_id:
                set_cookie = self._expired_cookie(sess)
        elif self._should_set_cookie(sess, sess._current() if current is _NOTHING else current):
            cookie = sess._ensure_cookie()
            if cookie.secure and not self._is_secure(sess._environ):
                self._warn_insecure()
            else:
                self._touch_once(sess)
                sid = sess._ensure_id()
                # The cookie the browser sent is re-sent as it is when the first secret made it.
                value = sess._resend if sid == sess._cookie_id else None
                set_cookie = cookie.serialize(self.name, value or self._cookie_value(sid))
        if set_cookie is None and not sess._read:
            return headers
        headers = list(headers)
        if set_cookie is not None:
            headers.append(("Set-Cookie", set_cookie))
        _add_vary_cookie(headers)
        return headers

    def _finish(self, sess: Session, current: Any = _NOTHING) -> None:
        """Save, touch or destroy the stored record, as express does when the response ends."""
        if sess._environ.get(self.environ_key) is None:
            if self.unset_destroy and sess._sid is not None and not sess._destroyed:
                self.store.destroy(sess._sid)
        else:
            if current is _NOTHING:
                current = sess._current()
            # The cookie is still the options' own, with no expiry: MemoryStore takes the
            # record as text, its cookie's part already made (see _load).
            as_text = (sess._cookie is None and self._record_head is not None
                       and type(self.store) is MemoryStore)
            # (As text, there is no Cookie object to touch: the store moves the expiry.)
            if self._should_save(sess, current):
                # The data's JSON: as it is now, else as loaded (unchanged, already encoded).
                data = current or sess._snapshot or sess._dump()
                if as_text:
                    self._write_as_text(sess._ensure_id(), data)
                else:
                    self._touch_once(sess)
                    self.store.set(sess._ensure_id(), sess._record(data))
            elif self._should_touch(sess, current):
                if as_text:
                    self._write_as_text(sess._sid, None)
                else:
                    self._touch_once(sess)
                    self.store.touch(sess._sid, sess._record())
        sess._environ = None  # the request is over: drop the environ <-> session cycle

    def _end_as_text(self, sess: Session, exchange: "_Exchange", current: Optional[str]) -> bool:
        """Headers and store write at once for the usual request, or False (doing nothing).

        The usual request: a session read from MemoryStore as text (see _load), still
        attached, neither regenerated, destroyed nor saved by the app, without rolling or
        resave, its headers not sent yet.  express's four decisions then come down to: no
        Set-Cookie (the cookie has no expiry); Vary when the session was read; save when the
        data changed, else touch.  Any other request goes through _response_headers and
        _finish, which decide in full (TestMemoryStoreAsText checks the two ways agree).
        """
        saved = sess._saved
        if (sess._cookie is not None or sess._loaded_json is None or saved is None or saved[1] is not None
                or sess._destroyed or self.rolling or exchange._sent or exchange._status is None
                or type(self.store) is not MemoryStore or sess._environ.get(self.environ_key) is None):
            return False
        headers = exchange._headers
        if sess._read:
            headers = list(headers)
            _add_vary_cookie(headers)
        exchange._sent = True
        exchange._write = exchange._start_response(exchange._status, headers, exchange._exc_info)
        changed = current is not None and current != sess._snapshot
        self._write_as_text(sess._sid, current if changed else None)
        sess._environ = None  # as _finish does
        return True

    def _write_as_text(self, sid: str, data: Optional[str]) -> None:
        """Save MemoryStore's record as text, its cookie the options' own (see _load), with
        ``data`` as the data's JSON; with None, only touch it (its expiry moves)."""
        if data is None:
            self.store._extend(sid, self._record_head)
        else:
            self.store._set_text(sid, _join_record(self._record_head, data))

    @staticmethod
    def _touch_once(sess: Session) -> None:
        if not sess._touched:
            if sess._cookie is not None:  # else it is made when needed, and starts its clock then
                sess._cookie.touch()
            sess._touched = True

    # -- express-session's four decisions

    def _should_set_cookie(self, sess: Session, current: Optional[str]) -> bool:
        if not sess._loaded:
            return self.save_uninitialized or self._is_modified(sess, current)
        cookie = sess._cookie  # None: the options' own, with no expiry (see _load)
        return self.rolling or (cookie is not None and cookie._expires is not None
                                and self._is_modified(sess, current))

    def _should_save(self, sess: Session, current: Optional[str]) -> bool:
        if not self.save_uninitialized and sess._saved is None and not sess._loaded:
            return self._is_modified(sess, current)
        return not self._is_saved(sess, current)

    def _should_touch(self, sess: Session, current: Optional[str]) -> bool:
        return sess._loaded and not self._should_save(sess, current)

    @staticmethod
    def _is_modified(sess: Session, current: Optional[str]) -> bool:
        return sess._regenerated or (current is not None and current != sess._snapshot)

    @staticmethod
    def _is_saved(sess: Session, current: Optional[str]) -> bool:
        if sess._saved is None:
            return False
        saved_id, saved_data = sess._saved
        if saved_id != sess._sid:
            return False
        if saved_data is None:  # loaded and not yet changed: the store holds the snapshot
            return current is None or current == sess._snapshot
        return (current or sess._snapshot) == saved_data

    # -- helpers for the above

    def _generate_id(self, environ: dict) -> str:
        if self.genid is None:
            return _secrets.token_urlsafe(24)
        sid = self.genid(environ)
        if not isinstance(sid, str) or not sid:
            raise TypeError(f"genid must return a non-empty str, not {sid!r}")
        return sid

    def _new_cookie(self, environ: dict, options: "_CookieOptions") -> Cookie:
        return options.new_cookie(lambda: self._is_secure(environ))

    def _request_options(self, environ: dict) -> "_CookieOptions":
        options = self._cookie_fn(environ)
        if not isinstance(options, Mapping):
            raise TypeError("the cookie callable must return a dict of cookie options")
        options = _CookieOptions(options)
        self._check_same_site_secure(options)
        return options

    def _cookie_value(self, sid: str, signature: Optional[str] = None) -> str:
        """``s:<id>.<signature>``, percent-encoded as express sends it."""
        signature = signature or _mac(sid, self._signing_key)
        if self.genid is None:  # token_urlsafe IDs need no escaping; base64 has + and /
            return f"s%3A{sid}.{signature.replace('+', '%2B').replace('/', '%2F')}"
        return _encode_uri_component(f"s:{sid}.{signature}")

    def _read_cookie(self, header: str) -> tuple:
        """(session ID, the cookie value to send back for it) from our cookie in ``header``,
        or (None, None); never raises.  The value to send back is None when an older
        secret signed the cookie: it is then re-signed with the first."""
        # Returning visitors send the same header, or at least the same cookie,
        # again and again.  Only what passed the full check below is remembered,
        # keyed by all of it as sent (parsing and decoding are deterministic), so
        # a forged one can never hit; the bound keeps memory flat.  __call__
        # looks the whole header up before calling this.
        if not header:
            return None, None
        raw = _raw_cookie(header, self.name)
        if raw is None:
            return None, None
        verified = self._verified.get(raw)
        if verified is not None:
            self._remember(self._verified_headers, header, verified)
            return verified
        value = _decode_uri_component(raw)
        if not value.startswith("s:"):
            return None, None
        sid, key = _verify(value[2:], self._verify_keys)
        if not sid:
            return None, None
        verified = sid, (self._cookie_value(sid, value[value.rfind(".") + 1:]) if key == 0 else None)
        self._remember(self._verified, raw, verified)
        self._remember(self._verified_headers, header, verified)
        return verified

    @staticmethod
    def _remember(verified: dict, key: str, result: tuple) -> None:
        if len(key) <= _VERIFIED_KEY_MAX:
            if len(verified) >= _VERIFIED_CACHE_SIZE:
                verified.clear()
            verified[key] = result

    def _is_secure(self, environ: dict) -> bool:
        if environ.get("wsgi.url_scheme") == "https":
            return True
        if not self.proxy:
            return False
        proto = environ.get("HTTP_X_FORWARDED_PROTO", "")
        return proto.split(",", 1)[0].strip().lower() == "https"

    def _expired_cookie(self, sess: Session) -> str:
        cookie = sess._cookie or self._new_cookie(sess._environ, sess._opts)
        gone = Cookie.__new__(Cookie)
        for attr in Cookie.__slots__:
            setattr(gone, attr, getattr(cookie, attr, None))
        gone._expires = 0
        return gone.serialize(self.name, "")

    def _warn_insecure(self) -> None:
        if not self._warned_insecure:
            self._warned_insecure = True
            log.warning("session cookie is secure but the request is not HTTPS, so no cookie was "
                        "sent; behind a TLS-terminating proxy, pass proxy=True to trust "
                        "X-Forwarded-Proto")

    def _check_same_site_secure(self, options: "_CookieOptions") -> None:
        if (options.same_site == "none" and not options.secure
                and not self._warned_same_site):
            self._warned_same_site = True
            log.warning('cookie same_site="none" without secure: browsers reject such cookies; '
                        'set secure=True (or "auto")')


# ---------------------------------------------------------------- private helpers

_VERIFIED_CACHE_SIZE = 4096  # cookie values (and headers) remembered as verified, per middleware
_VERIFIED_KEY_MAX = 1024     # longer ones are checked every time rather than kept
_URI_SAFE = "-_.!~*'()"   # what encodeURIComponent leaves alone, besides letters and digits
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_ATTR = re.compile(r"[;\x00-\x1f\x7f]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON as express writes it (UTF-8 kept, no NaN), made once.

    ``json.dumps`` builds a new encoder on every call; for the few hundred
    bytes of a session that setup costs more than the encoding itself.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    chunks = make(None, encoder.default, json.encoder.encode_basestring, None, ":", ",",
                  False, False, False)
    # markers=None skips the cycle check: a cyclic value ends in RecursionError.
    return lambda value: "".join(chunks(value, 0))


_encode = _json_encoder()
_scan_json = json.JSONDecoder().scan_once


def _decode(text: str) -> Any:
    """json.loads without its per-call checks: the scanner straight away, and json.loads
    only to raise its usual error (or to allow surrounding whitespace)."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _CookieOptions:
    """Cookie options checked once: what every new session's cookie starts from."""

    __slots__ = _COOKIE_OPTIONS + ("max_age_ms",)

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(_COOKIE_OPTIONS))
        if unknown:
            raise TypeError(f"unknown cookie option(s): {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(_COOKIE_OPTIONS)})")
        get = options.get
        self.max_age_ms = _max_age_ms(get("max_age"), "cookie max_age", allow_negative=False)
        self.max_age = get("max_age")
        expires = get("expires")
        if expires is not None and (not isinstance(expires, datetime) or expires.tzinfo is None):
            raise ValueError("cookie expires must be an aware datetime or None")
        self.expires = expires
        self.http_only = get("http_only", True)
        if not isinstance(self.http_only, bool):
            raise TypeError("cookie http_only must be True or False")
        self.secure = get("secure")
        if self.secure not in (None, True, False, "auto"):
            raise ValueError(f'cookie secure must be True, False or "auto", not {self.secure!r}')
        same_site = get("same_site")
        if isinstance(same_site, str):
            same_site = same_site.lower()
        if same_site is False:
            same_site = None
        if same_site not in (None, True, "lax", "strict", "none", "auto"):
            raise ValueError('cookie same_site must be None, True, "lax", "strict", "none" or '
                             f'"auto", not {get("same_site")!r}')
        self.same_site = same_site
        self.domain = get("domain")
        if self.domain is not None:
            _check_attr(self.domain, "cookie domain")
        self.path = get("path", "/")
        _check_attr(self.path, "cookie path")
        self.partitioned = get("partitioned")
        if self.partitioned not in (None, True, False):
            raise TypeError("cookie partitioned must be True or False")
        priority = get("priority")
        if priority is not None:
            if not isinstance(priority, str) or priority.lower() not in ("low", "medium", "high"):
                raise ValueError(f'cookie priority must be "low", "medium" or "high", not {priority!r}')
            priority = priority.lower()
        self.priority = priority

    def new_cookie(self, is_secure: Callable[[], bool]) -> Cookie:
        c = Cookie.__new__(Cookie)
        if self.max_age_ms is not None:
            c._original = self.max_age_ms
            c._expires = _now_ms() + int(self.max_age_ms)
        elif self.expires is not None:
            c._expires = _datetime_ms(self.expires)
            c._original = c._expires - _now_ms()
        else:
            c._expires = c._original = None
        c.http_only = self.http_only
        c.secure = is_secure() if self.secure == "auto" else self.secure
        c.path = self.path
        c.domain = self.domain
        if self.same_site == "auto":
            c.same_site = "none" if is_secure() else "lax"
        else:
            c.same_site = self.same_site
        c.partitioned = self.partitioned
        c.priority = self.priority
        return c


def _record_head(options: _CookieOptions) -> Optional[str]:
    """How a stored record begins when its cookie is the one ``options`` make and has no
    expiry: ``{"cookie":{...}``; None when that cookie has an expiry or depends on the request."""
    if (options.max_age_ms is not None or options.expires is not None
            or options.secure == "auto" or options.same_site == "auto"):
        return None
    return '{"cookie":' + options.new_cookie(lambda: False).to_json()


class _Exchange:
    """One request's response: holds the app's headers and its last body chunk back.

    Like express, which decides Set-Cookie when the response head is written,
    the headers are decided when the first body chunk is about to go out (or
    the app calls write()), so session changes made after start_response
    still count.  The last chunk waits until the store write has finished.
    """

    __slots__ = ("_mw", "_sess", "_start_response", "_status", "_headers", "_exc_info",
                 "_write", "_sent", "body")

    def __init__(self, mw: SessionMiddleware, sess: Session, start_response: Callable) -> None:
        self._mw, self._sess, self._start_response = mw, sess, start_response
        self._status = None
        self._sent = False

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Callable:
        if exc_info is not None and self._sent:
            return self._start_response(status, headers, exc_info)  # the server re-raises
        self._status, self._headers, self._exc_info = status, headers, exc_info
        return self.write

    def send_headers(self, current: Any = _NOTHING) -> None:
        if not self._sent and self._status is not None:
            self._sent = True
            headers = self._mw._response_headers(self._sess, self._headers, current)
            self._write = self._start_response(self._status, headers, self._exc_info)

    def write(self, data: bytes) -> None:
        self.send_headers()
        self._write(data)

    def __iter__(self) -> Iterator[bytes]:
        held = _NOTHING
        for chunk in self.body:
            if held is not _NOTHING:
                self.send_headers()
                yield held
            held = chunk
        current = self._sess._current()  # once for both steps, as on the list path
        if not self._mw._end_as_text(self._sess, self, current):
            self.send_headers(current)
            self._mw._finish(self._sess, current)
        if held is not _NOTHING:
            yield held

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def _find_cookie(header: str, name: str) -> Optional[str]:
    """The first value of cookie ``name`` in a Cookie header, parsed as the npm package cookie does."""
    value = _raw_cookie(header, name)
    return None if value is None else _decode_uri_component(value)


def _raw_cookie(header: str, name: str) -> Optional[str]:
    """``_find_cookie`` before percent-decoding: the value as sent, surrounding quotes removed."""
    at = header.find(name)
    while at >= 0:
        # The pair around this occurrence runs between the semicolons either side;
        # it is ours if its key, trimmed, is the name (an earlier pair with our
        # key would have been an earlier occurrence).
        end = header.find(";", at)
        key, eq, value = header[header.rfind(";", 0, at) + 1:end if end >= 0 else None].partition("=")
        if eq and key.strip(" \t") == name:
            value = value.strip(" \t")
            if value[:1] == '"' and value[-1:] == '"':
                value = value[1:-1]
            return value
        at = header.find(name, at + 1)
    return None


def _encode_uri_component(value: str) -> str:
    """JavaScript's encodeURIComponent (what express's cookie serializer applies to the value)."""
    if value.isascii():
        return value.translate(_URI_ESCAPES)
    return quote(value, safe=_URI_SAFE)


# Every ASCII code has an entry (most map to themselves): str.translate raises
# and swallows a KeyError for each code a table lacks.
_URI_ESCAPES = {c: chr(c) if chr(c).isalnum() or chr(c) in _URI_SAFE else f"%{c:02X}"
                for c in range(128)}


def _decode_uri_component(value: str) -> str:
    """JavaScript's decodeURIComponent, keeping the raw value where it would throw (as express does)."""
    fast = value.replace("%3A", ":").replace("%2B", "+").replace("%2F", "/")
    if "%" not in fast:   # the escapes our own cookies carry; none can form a new one
        return fast
    if _BAD_PERCENT.search(value):
        return value
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        return value


def _request_path(environ: dict) -> str:
    return (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"


def _add_vary_cookie(headers: list) -> None:
    for name, value in headers:
        if len(name) == 4 and name.lower() == "vary":
            break
    else:
        headers.append(("Vary", "Cookie"))
        return
    fields = [f.strip().lower() for f in value.split(",")]
    if "cookie" not in fields and "*" not in fields:
        i = next(i for i, header in enumerate(headers) if header[0] is name)
        headers[i] = (name, f"{value}, Cookie" if value.strip() else "Cookie")


def _check_secrets(secret: Any) -> list:
    if secret is None:
        raise ValueError("secret is required: a str or bytes, or a list of them (the first signs)")
    listed = [secret] if isinstance(secret, (str, bytes)) else secret
    if not isinstance(listed, (list, tuple)):
        raise TypeError("secret must be a str or bytes, or a list of them")
    if not listed:
        raise ValueError("secret must not be an empty list")
    for s in listed:
        if not isinstance(s, (str, bytes)):
            raise TypeError(f"secret entries must be str or bytes, not {type(s).__name__}")
        if not s:
            raise ValueError("secret must not be empty")
    return list(listed)


def _check_attr(value: Any, what: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if _BAD_ATTR.search(value):
        raise ValueError(f"{what} contains ';' or a control character: {value!r}")


def _check_ttl(ttl: Any) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl >= 0:
        raise ValueError(f"ttl must be a number of seconds >= 0, not {ttl!r}")


def _max_age_ms(seconds: Any, what: str, allow_negative: bool) -> Optional[float]:
    if seconds is None:
        return None
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    elif isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, a timedelta or None, not {seconds!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"{what} must be finite")
    if seconds < 0 and not allow_negative:
        raise ValueError(f"{what} must not be negative: {seconds!r}")
    ms = seconds * 1000
    return int(ms) if ms == int(ms) else ms


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _datetime_ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _expires_ms(value: Any) -> int:
    """Milliseconds since the epoch of a stored ``expires``: an ISO-8601 string or a datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:  # BSON dates come back naive, in UTC
            value = value.replace(tzinfo=timezone.utc)
        return _datetime_ms(value)
    if not isinstance(value, str):
        raise ValueError(f"cookie expires is not a date: {value!r}")
    if len(value) == 24 and value[4] == "-" and value[10] == "T" and value[23] == "Z":
        try:
            seconds = _timegm(int(value[0:4]), int(value[5:7]), int(value[8:10]),
                              int(value[11:13]), int(value[14:16]), int(value[17:19]))
            return seconds * 1000 + int(value[20:23])
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cookie expires is not an ISO-8601 date: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return _datetime_ms(parsed)


@functools.lru_cache(maxsize=1024)
def _epoch_day(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=timezone.utc).timestamp())


def _timegm(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    if not (0 <= hour < 24 and 0 <= minute < 60 and 0 <= second < 60):
        raise ValueError("time out of range")
    return _epoch_day(year, month, day) + hour * 3600 + minute * 60 + second


@functools.lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.")


def _iso_ms(ms: int) -> str:
    seconds, millis = divmod(int(ms), 1000)
    return f"{_iso_second(seconds)}{millis:03d}Z"


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
