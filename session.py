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
    epoch, as JavaScript does, so records round-trip exactly.  Every attribute
    is checked when it is given (constructor, assignment, stored record), so
    nothing that could break the Set-Cookie header ever reaches it.
    """

    # The seven attributes live in one tuple, ``_attrs`` (see _ATTRIBUTES): the
    # record and header templates are cached by it, and each property below
    # checks a new value before building the next tuple.
    __slots__ = ("_expires", "_original", "_attrs")

    def __init__(self, *, max_age: Union[float, timedelta, None] = None,
                 expires: Optional[datetime] = None, http_only: bool = True,
                 secure: Optional[bool] = None, path: Optional[str] = "/",
                 domain: Optional[str] = None, same_site: Union[str, bool, None] = None,
                 partitioned: Optional[bool] = None, priority: Optional[str] = None) -> None:
        given = {"partitioned": partitioned, "priority": priority, "secure": secure,
                 "http_only": http_only, "domain": domain, "path": path, "same_site": same_site}
        self._attrs = tuple(_check_cookie_attribute(name, given[name]) for name in _ATTRIBUTES)
        self._expires: Optional[int] = None
        self._original: Optional[float] = None
        if max_age is not None:
            self.max_age = max_age
        elif expires is not None:
            self.expires = expires

    @property
    def expires(self) -> Optional[datetime]:
        """When the cookie expires (aware UTC), or None for a browser-session cookie."""
        ms = self._expires
        return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)

    @expires.setter
    def expires(self, value: Optional[datetime]) -> None:
        if value is None:
            self._expires = self._original = None
            return
        ms = _expires_option_ms(value, "cookie expires")
        self._expires = ms
        self._original = ms - _now_ms()

    @property
    def max_age(self) -> Optional[float]:
        """Seconds until expiry (negative once expired), or None."""
        ms = self._expires
        return None if ms is None else (ms - _now_ms()) / 1000

    @max_age.setter
    def max_age(self, seconds: Union[float, timedelta, None]) -> None:
        ms = _max_age_ms(seconds, "cookie max_age", allow_negative=True)
        if ms is None:
            self._expires = self._original = None
        else:
            self._expires = _now_ms() + int(ms)
            self._original = ms

    @property
    def original_max_age(self) -> Optional[float]:
        """The max_age the cookie was given, in seconds (express keeps it in ms)."""
        return None if self._original is None else self._original / 1000

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
        ms = self._expires
        expires = None if ms is None else _iso_ms(ms)
        original = self._original
        (before, between, after), _, fields = _templates(self._attrs)
        fields = fields.copy()
        fields["originalMaxAge"] = original
        fields["expires"] = expires
        return fields, "".join((
            before, "null" if original is None else
            str(original) if type(original) is int else _encode(original),
            between, "null" if expires is None else f'"{expires}"', after)), ms

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "Cookie":
        """Rebuild a Cookie from a stored record's ``cookie`` (what Express wrote reads the same).

        Raises TypeError or ValueError, naming the field, when any field is not what
        express-session writes: such a record is not a session.
        """
        if not isinstance(rec, Mapping):
            raise TypeError("the record's cookie is not an object")
        get = rec.get
        c = cls.__new__(cls)
        try:
            c._attrs = _record_attributes((
                get("partitioned"), get("priority"), get("secure"), get("httpOnly", True),
                get("domain"), get("path", "/"), get("sameSite")))
        except TypeError as exc:
            if "unhashable" in str(exc):
                raise TypeError("a cookie field of the stored record is not a plain value") from None
            raise
        original = get("originalMaxAge")
        if original is not None and not (_is_number(original) and math.isfinite(original)
                                         and abs(original) <= _MAX_AGE * 1000):
            raise ValueError("the stored cookie's originalMaxAge must be a number of ms within "
                             f"{_MAX_AGE * 1000} either way, or null, not {original!r}")
        c._original = original
        expires = get("expires")
        c._expires = None if expires is None else _expires_ms(expires)
        return c

    def serialize(self, name: str, value: str) -> str:
        """The Set-Cookie header value, attributes in the order the npm package cookie writes them.

        ``value`` is sent as given (encode it first); a name or value that is not a cookie
        token or cookie-value raises ValueError, as the npm package cookie does.
        """
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"cookie name must be a token (letters, digits, !#$%&'*+-.^_`|~): {name!r}")
        if not _COOKIE_VALUE.fullmatch(value):
            raise ValueError(f"cookie value has characters a cookie cannot carry: {value!r}")
        before, after = _templates(self._attrs)[1]
        ms = self._expires
        return "".join((name, "=", value, before,
                        "" if ms is None else "; Expires=" + _http_date(ms // 1000), after))

    def _fields(self, original: Any, expires: Any) -> dict:
        partitioned, priority, secure, http_only, domain, path, same_site = self._attrs
        rec: dict = {"originalMaxAge": original}
        if partitioned is not None:
            rec["partitioned"] = partitioned
        if priority is not None:
            rec["priority"] = priority
        rec["expires"] = expires
        if secure is not None:
            rec["secure"] = secure
        rec["httpOnly"] = http_only
        if domain is not None:
            rec["domain"] = domain
        if path is not None:
            rec["path"] = path
        if same_site is not None:
            rec["sameSite"] = same_site
        return rec

    def _attributes(self, expires: Optional[str]) -> str:
        partitioned, priority, secure, http_only, domain, path, same_site = self._attrs
        parts = []
        if domain:
            parts += ("; Domain=", domain)
        if path:
            parts += ("; Path=", path)
        if expires is not None:
            parts += ("; Expires=", expires)
        if http_only:
            parts.append("; HttpOnly")
        if secure:
            parts.append("; Secure")
        if partitioned:
            parts.append("; Partitioned")
        if priority:
            parts += ("; Priority=", priority.capitalize())
        if same_site:
            parts += ("; SameSite=", _SAME_SITE_ATTR[same_site if same_site is True
                                                     else same_site.lower()])
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Cookie({self.to_record()!r})"


# Cookie's attributes, in the order of its ``_attrs`` tuple.
_ATTRIBUTES = ("partitioned", "priority", "secure", "http_only", "domain", "path", "same_site")


def _attribute_property(index: int, name: str) -> property:
    def get_attribute(self: Cookie) -> Any:
        return self._attrs[index]

    def set_attribute(self: Cookie, value: Any) -> None:
        attrs = list(self._attrs)
        attrs[index] = _check_cookie_attribute(name, value)
        self._attrs = tuple(attrs)
    return property(get_attribute, set_attribute,
                    doc=f"The cookie's {name} attribute (checked when set).")


for _index, _name in enumerate(_ATTRIBUTES):
    setattr(Cookie, _name, _attribute_property(_index, _name))
del _index, _name

_SAME_SITE_ATTR = {True: "Strict", "strict": "Strict", "lax": "Lax", "none": "None"}


@functools.lru_cache(maxsize=64, typed=True)
def _templates(attrs: tuple) -> tuple:
    """For cookies with these attributes: the record's JSON cut around its two times,
    the Set-Cookie attributes cut where Expires goes, and the record's fields (times None).
    Only the times vary per request."""
    cookie = Cookie.__new__(Cookie)
    cookie._attrs = attrs
    text = _encode(cookie._fields("\0original", "\0expires"))
    before, rest = text.split('"\\u0000original"')
    between, after = rest.split('"\\u0000expires"')
    return ((before, between, after), tuple(cookie._attributes("\0").split("; Expires=\0")),
            cookie._fields(None, None))


@functools.lru_cache(maxsize=256, typed=True)
def _record_attributes(raw: tuple) -> tuple:
    """A stored cookie's attributes (record field values, in _ATTRIBUTES order), checked."""
    return tuple(_check_cookie_attribute(name, value, _RECORD_FIELDS[name])
                 for name, value in zip(_ATTRIBUTES, raw))


_RECORD_FIELDS = {"partitioned": "partitioned", "priority": "priority", "secure": "secure",
                  "http_only": "httpOnly", "domain": "domain", "path": "path",
                  "same_site": "sameSite"}


def _check_cookie_attribute(name: str, value: Any, field: Optional[str] = None) -> Any:
    """``value`` if it is valid for the cookie attribute ``name``, else TypeError or ValueError.

    The one check every attribute passes, wherever it comes from (options, the
    Cookie constructor, assignment, a stored record), with the rules of the npm
    package cookie 0.7 that express-session uses: booleans as booleans, enums
    (case-insensitive, kept as given), and domain and path against its allow-lists,
    so no value can add attributes or headers to Set-Cookie.  ``field`` names the
    value in the error (default: ``cookie <name>``).
    """
    what = field and f"the stored cookie's {field}" or f"cookie {name}"
    if name in ("http_only", "secure", "partitioned"):
        if type(value) is bool or (value is None and name != "http_only"):
            return value
        raise TypeError(f"{what} must be True or False{'' if name == 'http_only' else ' or None'}, "
                        f"not {value!r}")
    if value is None:
        return None
    if name in ("priority", "same_site"):
        allowed = _PRIORITIES if name == "priority" else _SAME_SITES
        if name == "same_site" and type(value) is bool:
            return value
        if not isinstance(value, str):
            raise TypeError(f"{what} must be one of {allowed} or None, not {value!r}")
        if value.lower() not in allowed or not value.isascii():
            raise ValueError(f"{what} must be one of {allowed} or None, not {value!r}")
        return value
    if name in ("domain", "path"):
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str or None, not {type(value).__name__}")
        if not (_DOMAIN if name == "domain" else _PATH).fullmatch(value):
            raise ValueError(f"{what} is not a valid cookie {name} (" +
                             ("letters, digits, '-' and '.' labels" if name == "domain" else
                              "printable ASCII without ';' or '<'") + f"): {value!r}")
        return value
    raise KeyError(f"no cookie attribute {name!r}")


_PRIORITIES = ("low", "medium", "high")
_SAME_SITES = ("lax", "strict", "none")  # and True (Strict) or False (none sent)
# The npm package cookie 0.7's allow-lists (ASCII only, spelled out: Python's re.I would let
# Unicode letters such as 'ſ' or the Kelvin sign match [a-z]).
_DOMAIN = re.compile(r"\.?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_PATH = re.compile(r"[\x20-\x3a\x3d-\x7e]*")


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
        # A plain copy: encoding the Session itself would call its items(),
        # which counts as the app using it.
        data = dict(dict.items(self))
        try:
            try:
                return _encode(data)
            except RecursionError:
                return _on_a_new_stack(_encode, data)
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
        record = _decode(entry[1])
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
                try:
                    return _decode(data), None, data
                except ValueError as exc:
                    log.warning("session record %.6s... is not a valid session (%s); starting a "
                                "new one", sid, exc)
                    return None
        record = self.store.get(sid)
        if record is None:
            return None
        try:
            if type(record) is not dict and not isinstance(record, dict):
                raise TypeError("the record is not an object")
            cookie = Cookie.from_record(record["cookie"])
            # The data must be JSON as JSON.parse reads it (no NaN, no depth the encoder refuses):
            # what cannot be saved again must not be loaded.
            data = {k: v for k, v in record.items() if k != "cookie"}
            try:
                data = _encode(data)
            except RecursionError:
                data = _on_a_new_stack(_encode, data)
            return record, cookie, data
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
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
        if not sid.isascii():
            try:
                sid.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"genid must return a str that is valid Unicode (no lone "
                                 f"surrogates), not {sid!r}") from None
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
        if _URL_SAFE_ID.fullmatch(sid):  # token_urlsafe's alphabet needs no escaping; base64 has + and /
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
        gone._attrs, gone._original, gone._expires = cookie._attrs, None, 0
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
# The longest cookie lifetime accepted, either way, in seconds.  Beyond a few thousand years
# an expiry has no ISO-8601 or HTTP date; this bound keeps every one of them far inside.
_MAX_AGE = 10_000_000_000
_URI_SAFE = "-_.!~*'()"   # what encodeURIComponent leaves alone, besides letters and digits
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_URL_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_COOKIE_VALUE = re.compile(r'("?)[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*\1')  # RFC 6265 cookie-value
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON.parse rejects it)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


# What JSON.parse accepts and no more: no NaN or Infinity, no number that overflows to one.
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)
_scan_json = _DECODER.scan_once


def _decode(text: str) -> Any:
    """json.loads as JSON.parse reads (see _DECODER), without its per-call checks.

    JSON nested deeper than this thread's stack allows is read again in a thread of its own:
    whatever the encoder accepted, at whatever depth the app saved it, can be loaded.
    """
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return _DECODER.decode(text)  # raises json's usual error, or allows leading whitespace
    except RecursionError:
        try:
            return _on_a_new_stack(_DECODER.decode, text)
        except RecursionError:
            raise ValueError("JSON nested too deeply to be a session") from None
    return value if end == len(text) else _DECODER.decode(text)


def _on_a_new_stack(function: Callable[[Any], Any], arg: Any) -> Any:
    """``function(arg)`` in a thread of its own, for JSON nested deeper than this thread's
    stack leaves room for (the C encoder and decoder recurse once per level)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, function(arg)))
        except Exception as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome.append((False, exc))
    thread = threading.Thread(target=run, name="session-json")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return value
    raise value


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _CookieOptions:
    """Cookie options checked once: what every new session's cookie starts from."""

    __slots__ = ("max_age_ms", "expires_ms", "secure", "same_site", "path", "_attrs")

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(_COOKIE_OPTIONS))
        if unknown:
            raise TypeError(f"unknown cookie option(s): {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(_COOKIE_OPTIONS)})")
        get = options.get
        self.max_age_ms = _max_age_ms(get("max_age"), "cookie max_age", allow_negative=False)
        expires = get("expires")
        self.expires_ms = None if expires is None else _expires_option_ms(expires, "cookie expires")
        # "auto" is resolved per request; the rest is checked as any cookie attribute is.
        secure, same_site = get("secure"), get("same_site")
        if secure != "auto":
            _check_cookie_attribute("secure", secure)
        if isinstance(same_site, str) and same_site.lower() == "auto":
            same_site = "auto"
        else:
            same_site = _check_cookie_attribute("same_site", same_site)
            if isinstance(same_site, str):
                same_site = same_site.lower()
            elif same_site is False:
                same_site = None
        priority = _check_cookie_attribute("priority", get("priority"))
        self.secure, self.same_site = secure, same_site
        self.path = _check_cookie_attribute("path", get("path", "/"))
        self._attrs = (_check_cookie_attribute("partitioned", get("partitioned")),
                       priority and priority.lower(),
                       None if secure == "auto" else secure,
                       _check_cookie_attribute("http_only", get("http_only", True)),
                       _check_cookie_attribute("domain", get("domain")),
                       self.path,
                       None if same_site == "auto" else same_site)

    def new_cookie(self, is_secure: Callable[[], bool]) -> Cookie:
        c = Cookie.__new__(Cookie)
        if self.max_age_ms is not None:
            c._original = self.max_age_ms
            c._expires = _now_ms() + int(self.max_age_ms)
        elif self.expires_ms is not None:
            c._expires = self.expires_ms
            c._original = c._expires - _now_ms()
        else:
            c._expires = c._original = None
        attrs = self._attrs
        if self.secure == "auto" or self.same_site == "auto":
            secure = is_secure()
            attrs = (attrs[0], attrs[1], secure if self.secure == "auto" else attrs[2], attrs[3],
                     attrs[4], attrs[5],
                     ("none" if secure else "lax") if self.same_site == "auto" else attrs[6])
        c._attrs = attrs
        return c


def _record_head(options: _CookieOptions) -> Optional[str]:
    """How a stored record begins when its cookie is the one ``options`` make and has no
    expiry: ``{"cookie":{...}``; None when that cookie has an expiry or depends on the request."""
    if (options.max_age_ms is not None or options.expires_ms is not None
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
    """``_find_cookie`` before percent-decoding: the value as sent, surrounding quotes removed.

    Linear in the header's length: each ``;``-separated pair is looked at once at most,
    however many times the name occurs in it.
    """
    at = header.find(name)
    while at >= 0:
        # The pair around this occurrence runs between the semicolons either side;
        # it is ours if its key, trimmed, is the name (an earlier pair with our
        # key would have been an earlier occurrence).
        start = header.rfind(";", 0, at) + 1
        end = header.find(";", at)
        if end < 0:
            end = len(header)
        key, eq, value = header[start:end].partition("=")
        if eq and key.strip(" \t") == name:
            value = value.strip(" \t")
            if value[:1] == '"' and value[-1:] == '"':
                value = value[1:-1]
            return value
        at = header.find(name, end + 1)  # the next pair: this one is not ours
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


def _check_ttl(ttl: Any) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl >= 0:
        raise ValueError(f"ttl must be a number of seconds >= 0, not {ttl!r}")


def _max_age_ms(seconds: Any, what: str, allow_negative: bool) -> Optional[float]:
    """``seconds`` (a number or timedelta) in milliseconds, checked: finite, within _MAX_AGE."""
    if seconds is None:
        return None
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    elif not _is_number(seconds):
        raise TypeError(f"{what} must be a number of seconds, a timedelta or None, not {seconds!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"{what} must be finite, not {seconds!r}")
    if seconds < 0 and not allow_negative:
        raise ValueError(f"{what} must not be negative: {seconds!r}")
    if abs(seconds) > _MAX_AGE:
        raise ValueError(f"{what} must be at most {_MAX_AGE} seconds (about 317 years) either "
                         f"way, not {seconds!r}")
    ms = seconds * 1000
    return int(ms) if ms == int(ms) else ms


def _is_number(value: Any) -> bool:
    return (type(value) is int or type(value) is float
            or (isinstance(value, (int, float)) and not isinstance(value, bool)))


def _expires_option_ms(value: Any, what: str) -> int:
    """An aware datetime given as an expiry, in epoch ms; the same bounds as max_age."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime or None, not {value!r}")
    ms = _datetime_ms(value)
    if abs(ms - _now_ms()) > _MAX_AGE * 1000:
        raise ValueError(f"{what} must be within {_MAX_AGE} seconds (about 317 years) of now, "
                         f"not {value!r}")
    return ms


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
