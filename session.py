"""express-session for Python: server-side sessions for WSGI and ASGI apps, standard library only.

Wrap an application and every request gets a session: a dict that is saved to
a store and found again through a signed cookie.  Options, semantics, cookies
and store records follow Node's express-session 1.19, so an Express app given
the same secret and the same store shares logged-in users::

    from session import SessionMiddleware

    def app(environ, start_response):
        session = environ["session"]
        session["views"] = session.get("views", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{session['views']} views".encode()]

    app = SessionMiddleware(app, secret="keyboard cat", cookie={"max_age": 3600})

An ASGI app (Starlette, FastAPI, Quart, Litestar) is wrapped the same way by
``ASGISessionMiddleware``, and finds its session at ``scope["session"]``
(Starlette's ``request.session``).

The file is self-contained: copy it into a project to vendor it.  It reads top
down: signing; the core (options, express's decisions, and the store calls they come to);
Session; Cookie; records; stores; the WSGI adapter; the ASGI adapter; private
helpers.
"""
from __future__ import annotations

import binascii
import enum
import functools
import hashlib
import heapq
import hmac
import json
import logging
import math
import os
import re
import secrets as _secrets
import sys
import threading
import time
import weakref
from datetime import datetime, timedelta, timezone
from collections import abc as _abc
from typing import (Any, Awaitable, Callable, Generic, Iterable, Iterator, Mapping, MutableMapping,
                    Optional, Sequence, TYPE_CHECKING, TypeVar, Union, overload)
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "SessionMiddleware", "ASGISessionMiddleware", "Session", "Cookie", "Store", "MemoryStore",
    "Change", "SessionError", "sign", "unsign", "encode_record", "decode_record", "expires_at",
]
__version__ = "0.2.0"

log = logging.getLogger("session")

Secret = Union[str, bytes]
_Scope = MutableMapping[str, Any]  # an ASGI scope, as Starlette types it
_Message = MutableMapping[str, Any]  # an ASGI event
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_Environ = dict[str, Any]  # a WSGI environ
_StartResponse = Callable[..., Callable[[bytes], Any]]  # the server's, returning write()
_Headers = list[tuple[str, str]]  # a WSGI response's
# A record read (see _read_text): its data, Cookie, the position of "cookie" among its keys,
# its text and the data's JSON (either may be None).
_Loaded = tuple[dict[str, Any], "Cookie", int, Optional[str], Optional[str]]
# A store action (see _Core._store_action): its kind, the session ID, and what the kind takes.
_Action = tuple[Any, ...]
# A set of cookie attributes' templates (see _templates).
_Templates = tuple[tuple[str, str, str], tuple[str, ...], dict[str, Any], str, tuple[Any, Any], str]
_T = TypeVar("_T")
_R = TypeVar("_R")
_S = TypeVar("_S", bound="Store")
_NOTHING: Any = object()  # "not given", where None is a meaningful value


# ---------------------------------------------------------------- errors

class SessionError(Exception):
    """Misuse of a session: the reserved key ``"cookie"``, reloading a record that is gone,
    saving a destroyed session, ``save()``/``reload()`` under ASGI (use ``asave``/``areload``),
    ``regenerate()`` once the response head is out or ``regenerate()``/``destroy()`` once the
    response has ended, a new session whose ID is taken, a session not attached to a request."""


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


def _verify(signed: str, keys: Sequence[bytes]) -> tuple[Optional[str], int]:
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
    if not secret:  # an HMAC with an empty key is one anybody can make
        raise ValueError("secret must not be empty")
    if isinstance(secret, str):
        try:
            return secret.encode("utf-8")
        except UnicodeEncodeError:  # Node would take each as U+FFFD: secrets that differ would match
            raise ValueError("secret has lone surrogates (a non-UTF-8 environment variable?): "
                             "pass it as bytes (os.environb)") from None
    return secret


def _mac(value: str, key: bytes) -> str:
    """base64 HMAC-SHA256 of ``value`` without padding, from the key's precomputed pads."""
    inner, outer = _pads(key)
    inner, outer = inner.copy(), outer.copy()
    inner.update(_js_utf8(value))
    outer.update(inner.digest())
    return binascii.b2a_base64(outer.digest(), newline=False).decode("ascii").rstrip("=")


def _js_utf8(text: str) -> bytes:
    """``text`` as UTF-8 the way Node encodes a JavaScript string: a lone surrogate as U+FFFD,
    the two halves of a pair as their character."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode("utf-8")


@functools.lru_cache(maxsize=64)
def _pads(key: bytes) -> tuple[Any, Any]:
    # HMAC (RFC 2104) with the keyed inner and outer hashes computed once per
    # secret: signing then costs two hash copies instead of a full key setup.
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD)))


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))



# ---------------------------------------------------------------- the core: options and decisions

_COOKIE_OPTIONS = ("max_age", "expires", "http_only", "secure", "same_site", "domain", "path",
                   "partitioned", "priority")


class _Core:
    """What the WSGI and the ASGI middleware share: the options, checked once, every
    per-request decision, and the store call each comes to (``_carry_out``; the ASGI
    adapter awaits its own).

    An adapter reads the cookie and the store, calls the app, and asks the core two
    questions at the end: which Set-Cookie to send (``_set_cookie``) and what the store
    must do (``_store_action``).  Both answers come from express-session's four
    predicates below, with a few rules of ours around them: a session gone from the
    store is not written back, a destroyed one's cookie is expired, a Secure cookie is
    not sent over http, and a websocket's accept may skip a touch (``_accepting``).

    (Each adapter has 29 instance attributes.  A 30th takes CPython 3.11's instances off
    their shared key table, which made every attribute read, and so a request's
    instructions, 1.5% costlier: add one only in place of another.)
    """

    _store: "Store"
    _merge: Callable[[str, "Change"], bool]  # the store's merge (None without: see _merges)

    def __init__(self, *, secret: Any, store: Any, name: Any, cookie: Any, genid: Any,
                 proxy: Any, resave: Any, save_uninitialized: Any, rolling: Any,
                 unset: Any) -> None:
        self._warned_insecure = False
        self._warned_options: set[str] = set()  # the option warnings already logged (once each)
        self.secrets = _check_secrets(secret)
        self._signing_key = _key(self.secrets[0])
        self._verify_keys = [_key(s) for s in self.secrets]
        # cookie value -> (ID, value to re-send) that passed _verify; the same, by the whole
        # Cookie header it came in
        self._verified: dict[str, tuple[str, Optional[str]]] = {}
        self._verified_headers: dict[str, tuple[str, Optional[str]]] = {}
        # Record text -> how _read_text reads it: cookie attributes, originalMaxAge, expires as
        # stored, where the data begins (the same session's next read is then a lookup).
        self._records: dict[str, tuple[Any, ...]] = {}
        self.store = MemoryStore() if store is None else store
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"name must be a cookie name (letters, digits, !#$%&'*+-.^_`|~): {name!r}")
        self.name = name
        if cookie is None or isinstance(cookie, Mapping):
            self._cookie_fn = None
            self._options: Optional[_CookieOptions] = _CookieOptions(cookie or {})
            self._warn_options(self._options)
        elif callable(cookie):
            self._cookie_fn, self._options = cookie, None
        else:
            raise TypeError("cookie must be a dict of cookie options or a callable returning one")
        if genid is not None and not callable(genid):
            raise TypeError("genid must be a callable returning a session ID")
        self.genid = genid
        if proxy is not None and proxy is not True and proxy is not False:  # not 1 or 0
            raise TypeError(f"proxy must be None, True or False, not {proxy!r}")
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

    @property
    def store(self) -> "Store":
        """The store; what it offers beyond get/set/touch/destroy is found when it is set."""
        return self._store

    @store.setter
    def store(self, store: Any) -> None:
        if isinstance(store, type):
            raise TypeError(f"store must be a store, not the class {store.__name__}: "
                            f"pass {store.__name__}(...)")
        for method in ("get", "set", "destroy", "touch"):
            if not callable(getattr(store, method, None)):
                raise TypeError(f"store must be a session.Store (it has no {method}() method)")
        self._store = store
        # As express tests `typeof store.touch === 'function'` once: see "Writing a store".
        # (Store's own get_text only encodes what get() decoded: reading through get is cheaper.)
        self._reads_text = _offers(store, "get_text", "get") and _owner(store, "get_text") is not Store
        self._read_store = store.get_text if self._reads_text else store.get
        if _offers(store, "merge", "get", "set"):
            self._merge = store.merge
        elif isinstance(store, Store):  # a subclass that overrides get or set but not merge
            self._merge = functools.partial(Store.merge, store)
        else:
            self._merge = None  # type: ignore[assignment]  # (and _merges is False)
        self._merges = self._merge is not None
        self._async_calls = {method: getattr(store, "a" + method)
                             for method, over in _STORE_CALLS.items()
                             if _offers(store, "a" + method, *over)}
        # A subclass's own aget is read through under ASGI, as its get is under WSGI.
        self._areads_text = self._reads_text and not _newer(store, "aget", "aget_text")
        # A store that says it never blocks is called from the event loop as it is (unless it
        # is async-first: its plain methods are Store's stubs); one whose touch reads only the
        # expiry is given a record without fields (see Store).
        self._inline = _says_false(store, "blocking", [p + name for name in _STORE_CALLS
                                                        for p in ("", "a")]) and _has_sync_methods(store)
        self._touch_expiry_only = _touch_reads_expiry_only(store)
        # The deletions regenerate() and destroy() left and the save after them, run as one
        # task (see _work): among the store's own writes when it keeps them (RedisStore,
        # PostgresStore), else among _IN_FLIGHT, so that its aclose() waits for them too.
        writes = getattr(store, "_writes", None)
        self._ending = writes if isinstance(writes, _Writes) else _IN_FLIGHT
        if self._merge is None:
            log.warning("%s has no merge(): each save writes the whole record with set(), so "
                        "concurrent requests on one session can lose each other's changes",
                        type(store).__name__)
        elif _owner(store, "merge") is Store or type(self._merge) is functools.partial:
            log.warning("%s has no merge() of its own: Store's default reads, merges and writes "
                        "without a lock, so concurrent requests on one session can still lose "
                        "changes", type(store).__name__)

    # -- a request

    def _request_options(self, context: Any) -> "_CookieOptions":
        options = self._cookie_fn(context)  # type: ignore[misc]  # (set when _options is not)
        if not isinstance(options, Mapping):
            raise TypeError("the cookie callable must return a dict of cookie options")
        options = _CookieOptions(options)
        self._warn_options(options)
        return options

    def _read_cookie(self, header: Optional[str]) -> tuple[Optional[str], Optional[str]]:
        """(session ID, the cookie value to send back for it) from our cookie in ``header``,
        or (None, None); never raises.  The value to send back is None when an older
        secret signed the cookie: it is then re-signed with the first."""
        # Returning visitors send the same header, or at least the same cookie,
        # again and again.  Only what passed the full check below is remembered,
        # keyed by all of it as sent (parsing and decoding are deterministic), so
        # a forged one can never hit; the bound keeps memory flat.
        if not header:
            return None, None
        verified = self._verified_headers.get(header)
        if verified is not None:
            return verified
        raw = _raw_cookie(header, self.name)
        if raw is None or len(raw) > _COOKIE_VALUE_MAX:
            return None, None
        verified = self._verified.get(raw)
        if verified is None:
            value = _decode_uri_component(raw)
            if not value.startswith("s:"):
                return None, None
            sid, key = _verify(value[2:], self._verify_keys)
            if not sid:
                return None, None
            verified = sid, (self._cookie_value(sid, value[value.rfind(".") + 1:])
                             if key == 0 else None)
            _remember(self._verified, raw, verified, _VERIFIED_CACHE_SIZE, _VERIFIED_KEY_MAX)
        _remember(self._verified_headers, header, verified, _VERIFIED_CACHE_SIZE, _VERIFIED_KEY_MAX)
        return verified

    def _session(self, request: "_Request", stored: Any) -> "Session":
        """The request's session: loaded from what the store returned for the cookie's ID (a
        record's JSON text or the record), or new when there was none or it is not a session."""
        if stored is not None:
            sid = request.cookie_id
            try:
                if type(stored) is str:
                    return Session._loaded(request, *self._read_text(request, stored))
                return Session._loaded(request, *_read_record(stored))
            except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
                log.warning("session record %.6s... is not a valid session (%s); starting a new "
                            "one", sid, exc)
        return Session._new(request)

    def _read_text(self, request: "_Request", text: str) -> "_Loaded":
        """A stored record's text as (data, Cookie, position of "cookie", the text, the data's
        JSON or None); ValueError or TypeError if it is not a valid session.

        A record whose cookie has the attributes the options give, first (as every record
        this middleware writes), is matched against its layout (see _templates): only its
        two times are read from the cookie and only the data is decoded.  The times of a text
        read before, or written here, are looked up instead (see ``_records``).  Any
        other record goes through ``decode_record`` and is checked in full.
        """
        options = request.options
        if options.auto:
            attrs = options.attrs(request)
            templates = _templates(attrs)
        else:
            attrs, templates = options.fixed_attrs, options.templates
        no_expiry = templates[5]
        if text.startswith(no_expiry):  # a browser-session cookie: the usual layout, first
            rest = text[len(no_expiry):len(no_expiry) + 1]
            data = "{" + text[len(no_expiry) + 1:] if rest == "," else "{}" if rest == "}" else None
            if data is not None and (rest == "," or len(text) == len(no_expiry) + 1):
                decoded = _decode(data)
                if "cookie" not in decoded:
                    return decoded, Cookie._make(attrs, None, None), 0, text, data
        known = self._records.get(text)
        if known is not None and known[0] == attrs:
            at = known[3]
            data = "{" + text[at:] if at < len(text) else "{}"
            return _decode(data), Cookie._make(attrs, known[1], known[2]), 0, text, data
        found = _read_layout(text, templates[4])
        if found is not None:
            original, expires, at = found
            sep = text[at - 1]
            data = "{" + text[at:] if sep == "," else "{}" if at == len(text) else None
            if data is not None:
                decoded = _decode(data)
                if "cookie" not in decoded:
                    cookie = Cookie._make(attrs, original, expires)
                    _remember(self._records, text, (attrs, cookie._original, expires, at),
                              _RECORD_CACHE_SIZE, _RECORD_KEY_MAX)
                    return decoded, cookie, 0, text, data  # expires: parsed when needed
        return _read_record(decode_record(text), text)

    # -- express-session's four decisions (index.js: shouldSetCookie, shouldSave,
    #    shouldTouch, shouldDestroy), over what the Session knows of itself: _is_new (is_new),
    #    _modified (isModified), _is_saved (isSaved), _gone, _destroyed

    def _should_set_cookie(self, sess: "Session", current: Optional[str]) -> bool:
        """A new session's cookie with save_uninitialized, or once its data changed (save()
        alone does not send it, as in express); an existing one's on every
        response with rolling, else when it changed and the cookie has an expiry."""
        if sess._gone:
            return False
        if sess._is_new:
            return self.save_uninitialized or sess._modified(current)
        return self.rolling or (sess._cookie._expires is not None  # has_expiry
                                and sess._modified(current))

    def _should_save(self, sess: "Session", current: Optional[str]) -> bool:
        """A new session once it changed (or always, with save_uninitialized); any other
        unless the store holds it as it is (with resave, a loaded session never does until
        save() writes it)."""
        if not self.save_uninitialized and sess._saved is None and sess._is_new:
            return sess._modified(current)
        return not sess._is_saved(current)

    def _should_touch(self, sess: "Session", saving: bool) -> bool:
        """An existing session that is not being saved (``saving``: _should_save's answer)
        gets its expiry moved instead; so does one whose cookie's lifetime the app changed
        after save() wrote it (the cookie sent must not outlive the record)."""
        return not saving and (not sess._is_new or (
            sess._saved_lifetime is not _MISSING and sess._saved_lifetime != sess._cookie._original))

    def _should_destroy(self, sess: "Session") -> bool:
        """The app set the session to None under unset="destroy"."""
        return self.unset_destroy and sess._id is not None and not sess._destroyed

    # -- what they come to

    def _set_cookie(self, sess: "Session", attached: bool, current: Optional[str]) -> Optional[str]:
        """The Set-Cookie value to send for this session, or None; asked once, as the response's
        head (or a websocket's accept) goes out, after which no new ID can reach the browser."""
        sess._req.cookie_decided = True
        if not attached:
            if (sess._destroyed or self.unset_destroy) and sess._cookie_id:
                return self._expired_cookie(sess)
            return None
        if not self._should_set_cookie(sess, current):
            return None
        cookie = sess._cookie or sess._ensure_cookie()
        if cookie._attrs[2] and not sess._req.is_secure():  # secure (see _ATTRIBUTES)
            self._warn_insecure()
            return None
        if not sess._touched:
            sess._touch_once()
        sid = sess._id or sess._ensure_id()
        # The cookie the browser sent is re-sent as it is when the first secret made it.
        value = sess._req.resend if sid == sess._cookie_id else None
        return cookie._header(self.name, value or self._cookie_value(sid))

    def _store_action(self, sess: "Session", attached: bool,
                      current: Optional[str]) -> Optional["_Action"]:
        """What the store must do as the response ends: ("merge", sid, Change, data's JSON),
        ("set", sid, record, data's JSON), ("touch", sid, record), ("destroy", sid), or None."""
        if not attached:
            return ("destroy", sess._id) if self._should_destroy(sess) else None
        if sess._gone:
            return None  # it left the store while this request ran: nothing to write back
        if not sess._touched:
            sess._touch_once()  # express restarts the cookie's clock before saving or touching
        saving = self._should_save(sess, current)
        if saving:
            # The data's JSON: as it is now, else as loaded (unchanged, already encoded).
            return sess._write_action(current or sess._snapshot or sess._dump())
        if self._should_touch(sess, saving):
            record = sess._expiry_record() if self._touch_expiry_only else sess._record()
            return "touch", sess._id, record
        return None

    def _carry_out(self, sess: "Session", action: "_Action") -> None:
        """Do a store action (see _store_action) and note on the session what came of it."""
        store: Any  # any object with the store methods, not only a Store (see the store setter)
        kind, sid, store = action[0], action[1], self._store
        if kind == "merge":
            result = self._merge(sid, action[2])
        elif kind == "touch":
            result = store.touch(sid, action[2])
        elif kind == "set":
            result = store.set(sid, action[2])
        else:
            result = store.destroy(sid)
        sess._carried_out(action, result)

    # -- helpers for the above

    def _generate_id(self, context: Any) -> str:
        if self.genid is None:
            return _secrets.token_urlsafe(24)
        sid = self.genid(context)
        if not isinstance(sid, str) or not sid:
            raise TypeError(f"genid must return a non-empty str, not {sid!r}")
        if not sid.isascii():
            try:
                sid.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"genid must return a str that is valid Unicode (no lone "
                                 f"surrogates), not {sid!r}") from None
        # (The cookie is 12 characters at most per one of the ID, %F0%9F%98%80, plus 134.)
        if len(sid) * 12 + 134 > _COOKIE_VALUE_MAX and len(self._cookie_value(sid)) > _COOKIE_VALUE_MAX:
            raise ValueError(f"genid returned an ID of {len(sid)} characters: its cookie would be "
                             f"longer than the {_COOKIE_VALUE_MAX} a browser keeps, and is not read back")
        return sid

    def _cookie_value(self, sid: str, signature: Optional[str] = None) -> str:
        """``s:<id>.<signature>``, percent-encoded as express sends it, whatever the ID."""
        signature = signature or _mac(sid, self._signing_key)
        if _URL_SAFE_ID.fullmatch(sid):  # token_urlsafe's alphabet needs no escaping; base64 has + and /
            return f"s%3A{sid}.{signature.replace('+', '%2B').replace('/', '%2F')}"
        return _encode_uri_component(f"s:{sid}.{signature}")

    def _expired_cookie(self, sess: "Session") -> str:
        cookie = sess._cookie or sess._req.options.new_cookie(sess._req)
        return Cookie._make(cookie._attrs, None, 0)._header(self.name, "")

    def _is_secure(self, context: Any, /) -> bool:
        raise NotImplementedError  # each adapter reads its own request

    def _warn_insecure(self) -> None:
        if not self._warned_insecure:
            self._warned_insecure = True
            if self.proxy:
                advice = ("X-Forwarded-Proto did not say https: check that the proxy sends it "
                          "and the server passes it on (waitress drops it unless its "
                          "trusted_proxy and trusted_proxy_headers name it)")
            else:
                advice = "behind a TLS-terminating proxy, pass proxy=True to trust X-Forwarded-Proto"
            log.warning("session cookie is secure but the request is not HTTPS, so no cookie was "
                        "sent; %s", advice)

    def _warn_options(self, options: "_CookieOptions") -> None:
        """Log, once each, cookie options that are valid but cannot work as meant."""
        if (isinstance(options.same_site, str) and options.same_site.lower() == "none"
                and not options.secure and "same_site" not in self._warned_options):
            self._warned_options.add("same_site")
            log.warning('cookie same_site="none" without secure: browsers reject such cookies; '
                        'set secure=True (or "auto")')
        if (options.scoped and not _PATH_MATCHABLE.fullmatch(options.path)
                and "path" not in self._warned_options):
            self._warned_options.add("path")
            log.warning("cookie path %r matches no request path, so no request gets a session: "
                        "it must start with '/' and be percent-encoded as browsers send it "
                        "(\"/my%%20app\")", options.path)


# A store's coroutine methods, and the methods each must be no older than to be used.
_STORE_CALLS = {"get": ("get",), "get_text": ("get_text", "get"), "set": ("set",),
                "merge": ("merge", "get", "set"), "touch": ("touch",), "destroy": ("destroy",)}


def _read_record(record: Any, text: Optional[str] = None) -> "_Loaded":
    """A stored record (a dict) as (data, Cookie, position of "cookie", its text or None, the
    data's JSON); TypeError, KeyError or ValueError if it is not a valid session."""
    if not isinstance(record, dict):
        raise TypeError("the record is not an object")
    cookie = Cookie.from_record(record["cookie"])
    data = dict(record)
    position = 0 if next(iter(data)) == "cookie" else list(data).index("cookie")
    del data["cookie"]
    if text is not None:
        return data, cookie, position, text, None  # the data's JSON is taken when needed
    # The data must be what JSON.parse reads (no NaN, no nesting the encoder refuses): what
    # could not be saved again is not loaded.  Its JSON is what a change is found against.
    try:
        data_json = _encode(data)
    except RecursionError:
        data_json = _on_a_new_stack(_encode, data)
    return data, cookie, position, None, data_json


def _owner(store: Any, method: str) -> Optional[type]:
    """The class in the store's MRO that defines ``method`` (None: not defined there)."""
    for cls in type(store).__mro__:
        if method in vars(cls):
            return cls
    return None


def _says_false(store: Any, attribute: str, methods: list[str]) -> bool:
    """Whether the store's class sets ``attribute`` to False no higher in its classes than any
    of ``methods`` it defines: a subclass that overrode one of them since is not taken at its
    parent's word."""
    said = _owner(store, attribute)
    return getattr(store, attribute, True) is False and said is not None and all(
        owner is None or issubclass(said, owner) for owner in (_owner(store, m) for m in methods))


def _has_sync_methods(store: Any) -> bool:
    """Whether the store's plain methods are its own, not Store's stubs (an async-first store's)."""
    return all(_owner(store, name) is not Store for name in ("get", "set", "destroy", "touch"))


def _touch_reads_expiry_only(store: Any) -> bool:
    """Whether the store's touch is handed a record with no fields (``Store.touch_needs_record``)."""
    return _says_false(store, "touch_needs_record", ["touch", "atouch"])


def _newer(store: Any, method: str, than: str) -> bool:
    """Whether the store's own ``method`` (not Store's default) is defined lower in its
    classes than ``than``: an ``aset`` added by a subclass is newer than the ``merge`` it got."""
    mine, theirs = _owner(store, method), _owner(store, than)
    return mine is not None and mine is not Store and (
        theirs is None or (mine is not theirs and issubclass(mine, theirs)))


def _offers(store: Any, method: str, *over: str) -> bool:
    """Whether the store's ``method`` can stand in for its ``over`` methods: it has one, and
    it is either Store's default (built on them) or defined no higher in the store's
    classes than they are (a subclass that overrides ``get`` alone is read through it)."""
    if not callable(getattr(store, method, None)):
        return False
    mine = _owner(store, method)
    if mine is None or mine is Store:
        return True
    return all(theirs is None or issubclass(mine, theirs)
               for theirs in (_owner(store, name) for name in over))


class _Request:
    """What a session needs from the request it belongs to: the middleware (its core), the
    WSGI environ or ASGI scope, the cookie options and cookie, and, under ASGI, the store
    work that regenerate() and destroy() leave for the middleware to do."""

    __slots__ = ("core", "context", "key", "options", "cookie_id", "resend", "pending", "ended",
                 "_secure", "cookie_decided")

    def __init__(self, core: _Core, context: Any, key: str, options: "_CookieOptions",
                 cookie_id: Optional[str], resend: Optional[str],
                 pending: Optional[list[tuple[str, str]]]) -> None:
        self.core, self.context, self.key, self.options = core, context, key, options
        self.cookie_id, self.resend, self.pending = cookie_id, resend, pending
        self.ended = False
        self._secure: Optional[bool] = None
        self.cookie_decided = False  # the head went out: no other cookie can be sent now

    def _generate_id(self) -> str:
        return self.core._generate_id(self.context)

    def is_secure(self) -> bool:
        if self._secure is None:
            self._secure = self.core._is_secure(self.context)
        return self._secure

    def attached(self, sess: "Session") -> bool:
        """Whether ``sess`` is still the request's session: not if the app set it to None or
        to a sentinel, a class or an enum member (Litestar's ``clear_session()`` leaves its
        ``Empty``); a mapping put in its place (Litestar's ``set_session({...})``) becomes its
        data.  Any other value is a TypeError: it cannot be saved, and taking it for None
        could log a user out."""
        value = None if self.context is None else self.context.get(self.key)
        if value is sess:
            return True
        if value is None or isinstance(value, (type, enum.Enum)):
            return False
        if not isinstance(value, _abc.Mapping):
            raise TypeError(f"the app put a {type(value).__name__} in the session's place: put "
                            "a mapping (the session's new data), or None to unset it")
        if sess._destroyed:  # logged out, then given data: a new session, never the old ID
            if self.cookie_decided:  # whose cookie could not be sent: it stays logged out
                log.warning("data put in place of a destroyed session is not saved: %s",
                            _COOKIE_DECIDED)
                return False
            sess._renew(self)
        sess._adopt(value)
        return True

    def destroy(self, sid: Optional[str]) -> None:
        """Delete a record (None: there is none) now (WSGI) or before the response ends (ASGI)."""
        if self.ended:
            raise SessionError("the response has ended: regenerate() and destroy() must be "
                               "called before it does (a background task cannot)")
        if sid is None:
            return
        if self.pending is None:
            self.core.store.destroy(sid)
        else:
            self.pending.append(("destroy", sid))


class _CookieOptions:
    """Cookie options checked once: what every new session's cookie starts from."""

    __slots__ = ("max_age_ms", "expires_ms", "secure", "same_site", "path", "fixed_attrs",
                 "auto", "scoped", "templates")
    templates: _Templates  # _templates(fixed_attrs), read only when not auto (else None)

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(_COOKIE_OPTIONS))
        if unknown:
            raise TypeError(f"unknown cookie option(s): {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(_COOKIE_OPTIONS)})")
        get = options.get
        self.max_age_ms = _max_age_ms(get("max_age"), "cookie max_age", allow_negative=False)
        expires = get("expires")
        self.expires_ms = None if expires is None else _expires_option_ms(expires, "cookie expires")
        if self.max_age_ms is not None and self.expires_ms is not None:  # as express: the last
            keys = list(options)                                         # one given wins
            if keys.index("expires") > keys.index("max_age"):
                self.max_age_ms = None
            else:
                self.expires_ms = None
        # "auto" is resolved per request; the rest is checked as any cookie attribute is.
        secure, same_site = get("secure"), get("same_site")
        if secure != "auto":
            _check_cookie_attribute("secure", secure)
        if isinstance(same_site, str) and same_site.lower() == "auto":
            same_site = "auto"
        else:  # kept as given, as express stores it ("Strict", false); the header has its form
            same_site = _check_cookie_attribute("same_site", same_site)
        priority = _check_cookie_attribute("priority", get("priority"))
        self.secure, self.same_site = secure, same_site
        self.path = _check_cookie_attribute("path", get("path", "/"))
        self.fixed_attrs = (_check_cookie_attribute("partitioned", get("partitioned")),
                            priority,
                            None if secure == "auto" else secure,
                            _check_cookie_attribute("http_only", get("http_only", True)),
                            _check_cookie_attribute("domain", get("domain")),
                            self.path,
                            None if same_site == "auto" else same_site)
        self.auto = secure == "auto" or same_site == "auto"
        self.scoped = bool(self.path) and self.path != "/"  # else every path has the session
        self.templates = (None if self.auto  # type: ignore[assignment]
                          else _templates(self.fixed_attrs))

    def covers(self, path: str) -> bool:
        """Whether a request for ``path`` is in the cookie's path (else it gets no session)."""
        return not self.scoped or path.startswith(self.path)

    def attrs(self, request: "_Request") -> tuple[Any, ...]:
        """A new cookie's attributes for this request ("auto" resolved)."""
        attrs = self.fixed_attrs
        if self.auto:
            https = request.is_secure()
            secure = https if self.secure == "auto" else attrs[2]
            none = secure and https  # SameSite=None only with Secure: browsers reject it without
            attrs = (attrs[0], attrs[1], secure, attrs[3], attrs[4], attrs[5],
                     ("none" if none else "lax") if self.same_site == "auto" else attrs[6])
        return attrs

    def new_cookie(self, request: "_Request") -> Cookie:
        original: Optional[float]
        expires: Optional[int]
        if self.max_age_ms is not None:
            original = self.max_age_ms
            expires = _now_ms() + int(original)
        elif self.expires_ms is not None:
            expires = self.expires_ms
            original = expires - _now_ms()
        else:
            original = expires = None
        return Cookie._make(self.attrs(request), original, expires)


# ---------------------------------------------------------------- Session

def _reads(method: str) -> Callable[..., Any]:
    """Wrap a dict method so calling it marks the session as read (for Vary and change tracking)."""
    base = getattr(dict, method)

    def wrapper(self: "Session", *args: Any, **kwargs: Any) -> Any:
        self._use()
        return base(self, *args, **kwargs)
    wrapper.__name__ = method
    wrapper.__doc__ = base.__doc__
    return wrapper


class Session(dict[str, Any]):
    """The user's session data (a dict of JSON values) plus its ID, cookie and store actions.

    Changes are found by comparing the data's JSON with what was loaded, so
    ``session["cart"].append(x)`` is saved with no flag to set.  The key
    ``"cookie"`` is reserved: the cookie is the ``.cookie`` attribute.
    """

    __slots__ = ("_req", "_id", "_cookie_id", "_cookie", "_cookie_pos", "_base", "_snapshot",
                 "_originals", "_may_differ", "_saved", "_lifetime", "_read", "_regenerated",
                 "_destroyed", "_touched", "_gone", "_is_new", "_saved_lifetime")
    # Two are typed as what every use finds: the request is None only in a detached
    # Session() (whose store actions raise, see _request), and the cookie is made before
    # it is read (see _ensure_cookie).
    _req: _Request
    _cookie: Cookie
    _id: Optional[str]
    _cookie_id: Optional[str]
    _cookie_pos: int  # where the cookie is among the record's keys (0: first)
    _base: Optional[str]  # the record's text as loaded or last written: what a merge compares
    _snapshot: Optional[str]  # the data's JSON a change is found against (None: not taken yet)
    _originals: Optional[dict[str, Any]]
    # (ID, data's JSON; None: as loaded) the store holds: see _is_saved
    _saved: Optional[tuple[Optional[str], Optional[str]]]
    _lifetime: Optional[float]
    _may_differ: bool
    _read: bool
    _regenerated: bool
    _destroyed: bool
    _touched: bool
    _gone: bool
    _is_new: bool
    _saved_lifetime: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """A detached session (for tests): data only; store actions need the middleware."""
        dict.__init__(self)
        self._start(None, None)
        self.update(*args, **kwargs)

    def _start(self, request: Optional[_Request], sid: Optional[str]) -> None:
        """Every field as a new, empty session's."""
        self._req = request  # type: ignore[assignment]  # None: detached (see _req above)
        self._cookie_id = None if request is None else request.cookie_id
        self._id = sid
        self._cookie = None  # type: ignore[assignment]  # made when first needed
        self._base = self._originals = self._saved = self._lifetime = None
        self._cookie_pos = 0
        self._snapshot = "{}"
        self._may_differ = False  # set by a write, or a mutable value handed out (see _current)
        self._read = self._regenerated = self._destroyed = self._touched = self._gone = False
        self._is_new = True  # see is_new
        self._saved_lifetime = _MISSING  # the cookie's lifetime when save() wrote it

    @classmethod
    def _new(cls, request: _Request) -> "Session":
        """A new session: its ID and cookie are made when first needed."""
        self = dict.__new__(cls)
        self._start(request, None)
        return self

    @classmethod
    def _loaded(cls, request: _Request, data: dict[str, Any], cookie: "Cookie", position: int,
                text: Optional[str], data_json: Optional[str]) -> "Session":
        """A session loaded from the store (see _Core._read_text and _read_record)."""
        self = dict.__new__(cls)
        self._req = request
        self._id = self._cookie_id = request.cookie_id
        self._fill(data, cookie, position, text, data_json)
        self._saved = None if request.core.resave else (self._id, None)
        self._read = self._regenerated = self._destroyed = self._is_new = False
        self._saved_lifetime = _MISSING
        return self

    def _fill(self, data: dict[str, Any], cookie: "Cookie", position: int, text: Optional[str],
              data_json: Optional[str]) -> None:
        """The data and cookie of a record read from the store, as the store holds them."""
        dict.update(self, data)
        self._cookie, self._cookie_pos, self._lifetime = cookie, position, cookie._original
        # The JSON a change is found against: given, or taken before the app can change a
        # mutable value (see _use); the record's text is what the store's merge compares.
        self._snapshot = data_json
        self._originals = None
        self._may_differ = False
        if text is None:  # then the data's JSON is given (see _read_record)
            text = self._record_text(data_json)  # type: ignore[arg-type]
        self._base = text
        # no clock to restart, nor an expiry for the touch to unset (see _touch_once)
        self._touched = cookie._original is None and cookie._expires is None
        self._gone = False

    # -- identity and cookie

    @property
    def id(self) -> str:
        """The session ID (read-only; ``regenerate()`` replaces it)."""
        self._read = True
        return self._ensure_id()

    @property
    def cookie(self) -> "Cookie":
        """The session cookie: its expiry and attributes, settable per session."""
        self._read = True
        return self._ensure_cookie()

    @property
    def is_new(self) -> bool:
        """True for a session this request made: none was loaded, or regenerate() replaced it
        (express: the cookie's ID is not the session's).  A page that depends on it depends
        on the Cookie header: it counts as a read (Vary: Cookie)."""
        self._read = True
        return self._is_new

    @property
    def modified(self) -> bool:
        """Whether the data (or the ID) changed during this request (express's isModified);
        a read, as ``is_new``."""
        self._read = True
        return self._modified(self._current())

    @property
    def accessed(self) -> bool:
        """Whether the app read or changed the session during this request (then the
        response varies by Cookie)."""
        return self._read

    def _ensure_id(self) -> str:
        if self._id is None:
            self._id = self._request()._generate_id()
        return self._id

    def _ensure_cookie(self) -> "Cookie":
        if self._cookie is None:
            request = self._request()
            self._cookie = request.options.new_cookie(request)
        return self._cookie

    def _request(self) -> _Request:
        if self._req is None:
            raise SessionError("this session is not attached to a request's middleware")
        return self._req

    # -- store actions

    def regenerate(self) -> None:
        """Destroy the stored record and continue, in place, as a new empty session with a new ID.

        Call it at login: an ID an attacker planted before login is worth nothing after.
        Under ASGI the old record is deleted before the response ends.
        """
        request = self._request()
        if request.cookie_decided and not request.ended:  # the new ID could not be sent
            raise SessionError(f"regenerate() comes too late: {_COOKIE_DECIDED}; call regenerate() "
                               "before the first body chunk (a websocket: before accept(), or "
                               "log in over HTTP)")
        self._use()
        request.destroy(self._id)
        self._renew(request)
        context = request.context
        if context is not None and context.get(request.key) is None:  # after destroy()
            context[request.key] = self

    def _renew(self, request: _Request) -> None:
        """Continue, in place, as a new empty session with a new ID."""
        dict.clear(self)
        self._start(request, None)
        self._id = request._generate_id()
        self._read = self._regenerated = True

    def destroy(self) -> None:
        """Delete the stored record; the session becomes None where the app found it and the
        response expires the cookie.  Under ASGI the record is deleted before the response ends."""
        request = self._request()
        self._read = True
        request.destroy(self._id)
        self._destroyed = True
        context = request.context
        if context is not None and context.get(request.key) is self:
            context[request.key] = None

    def reload(self) -> None:
        """Replace the data with what the store holds now; SessionError if the record is gone."""
        request = self._sync_request("reload", "areload")
        self._use()
        self._reload_from(request.core._read_store(self._ensure_id()))

    async def areload(self) -> None:
        """``reload()``, awaitable: under ASGI the store is read without blocking the loop."""
        request = self._request()
        if request.pending is None:
            return self.reload()
        self._use()
        sid = self._ensure_id()
        if ("destroy", sid) in request.pending:  # destroyed, as under WSGI, where it is at once
            self._reload_from(None)
        asgi: Any = request.core  # an ASGISessionMiddleware: only its requests have pending
        self._reload_from(await asgi._aread_store(sid))

    def save(self) -> None:
        """Write the session to the store now; if unchanged after, it is not written again at the end."""
        request = self._sync_request("save", "asave")
        request.core._carry_out(self, self._save_action())

    async def asave(self) -> None:
        """``save()``, awaitable: under ASGI the store is written without blocking the loop."""
        request = self._request()
        if request.pending is None:
            return self.save()
        asgi: Any = request.core  # an ASGISessionMiddleware: only its requests have pending
        await asgi._acarry_out(self, self._save_action())

    def touch(self) -> None:
        """Reset ``cookie.max_age`` to ``cookie.original_max_age``."""
        self._ensure_cookie().touch()

    def _sync_request(self, method: str, awaitable: str) -> _Request:
        request = self._request()
        if request.pending is not None:
            raise SessionError(f"under ASGI, use await session.{awaitable}() instead of "
                               f"session.{method}() (from a worker thread, run it on the event "
                               f"loop: anyio.from_thread.run(session.{awaitable}))")
        return request

    def _save_action(self) -> "_Action":
        if self._destroyed:
            raise SessionError("this session was destroyed: there is nothing to save")
        self._use()
        action = self._write_action(self._dump())
        self._saved_lifetime = self._cookie._original
        return action

    def _write_action(self, data: str) -> "_Action":
        """The store write of this session with ``data`` (its JSON): ("merge", sid, Change,
        data) where the store merges, else ("set", sid, record, data)."""
        sid = self._id or self._ensure_id()
        if self._req.core._merges:
            return "merge", sid, self._change(data), data
        return "set", sid, self._record(data), data

    def _reload_from(self, stored: Any) -> None:
        if stored is not None:
            request = self._req
            try:
                loaded = (request.core._read_text(request, stored) if type(stored) is str
                          else _read_record(stored))
            except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
                log.warning("session record %.6s... is not a valid session (%s)", self._id, exc)
            else:
                baseline = self._snapshot  # the data as the request loaded it (taken by _use)
                dict.clear(self)
                self._fill(*loaded)
                held = self._snapshot if self._snapshot is not None else self._dump()
                if baseline is not None:  # modified means since the request began, as in express
                    self._snapshot, self._may_differ = baseline, True
                else:
                    self._snapshot = held
                if not request.core.resave:
                    self._saved = (self._id, held)  # the store holds what was just read
                return
        raise SessionError(f"session {str(self._id)[:6]}... is no longer in the store")

    def _carried_out(self, action: "_Action", result: Any) -> None:
        """Take note of what a store action (see _Core._store_action) came to."""
        if action[1] != self._id:  # an asave() of the ID regenerate() replaced while it ran
            return
        kind = action[0]
        if kind == "merge":
            self._merged(action[1], action[2], action[3], result)
        elif kind == "set":
            self._saved = (action[1], action[3])
        elif kind == "destroy":
            self._destroyed = True  # a websocket's later data cannot bring the ID back

    def _merged(self, sid: str, change: "Change", data: str, written: bool) -> None:
        """Take note of what the store's merge did with this session's change."""
        if written:
            self._base = change.text
            self._saved = (sid, data)
            if change.kept_times is not None:
                self._keep_times(*change.kept_times)
        elif change.base is None:
            raise SessionError(f"session ID {sid[:6]}... is already in use: a new session never "
                               "replaces a record (genid must return unique IDs)")
        else:
            self._gone = True
            log.info("session %.6s... left the store while this request ran (destroyed, "
                     "regenerated or expired): it is not written back", sid)

    def _keep_times(self, original: Any, expires: Any) -> None:
        """Take the later cookie times another request stored meanwhile, which the merge kept
        ("remember me" saved while this request ran): the browser keeps the last cookie it
        gets, which must not end before the record does."""
        cookie = self._cookie
        try:
            kept = Cookie.from_record({**cookie.to_record(), "originalMaxAge": original,
                                       "expires": expires})
        except (TypeError, ValueError):
            return  # times this middleware cannot read: the cookie keeps its own
        cookie._original, cookie._expires = kept._original, kept._expires
        self._lifetime = kept._original  # the lifetime as stored now: not one this request set
        if self._saved_lifetime is not _MISSING:
            self._saved_lifetime = kept._original

    def _touch_once(self) -> None:
        """Restart the cookie's clock once per request, as express does when it is sent or saved."""
        if not self._touched:
            cookie = self._cookie  # if None, it is made when needed, and starts its clock then
            if cookie is not None:
                cookie.touch()
            self._touched = True

    # -- change tracking

    def _adopt(self, data: Mapping[str, Any]) -> None:
        """Take the data of a mapping the app put in this session's place (see _Request.attached)."""
        data = dict(data)
        if "cookie" in data:
            del data["cookie"]
            log.warning('the mapping put in the session\'s place has a "cookie" key: it is '
                        "reserved for the session's cookie, and left out")
        self._use()
        dict.clear(self)
        dict.update(self, data)

    def _use(self) -> None:
        """Mark the session read and, before the app can change it, keep its JSON to compare with."""
        self._read = self._may_differ = True
        if self._snapshot is None:
            originals, self._originals = self._originals, None
            self._snapshot = self._dump() if not originals else _encode(self._as_loaded(originals))

    def _as_loaded(self, originals: dict[str, Any]) -> dict[str, Any]:
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
        # A plain copy, through dict's own items: encoding the Session itself (or dict.copy)
        # would call its items() or keys(), which count as the app using it.
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
                    raise TypeError(f"session[{key!r}] cannot be stored as JSON: {exc}; "
                                    f"{_JSON_HINT}") from None
            raise TypeError(f"session cannot be stored as JSON: {exc}; {_JSON_HINT}") from None

    def _current(self) -> Optional[str]:
        """JSON of the data now, or None when it cannot have changed.

        Until the app gets hold of a mutable value, changes can only come
        through ``session[key] = value``: with no snapshot taken, comparing the
        keys written with their loaded values is enough and saves encoding the
        data twice; with one (the loaded JSON), a session only read is unchanged.
        """
        if not self._read:
            return None
        if self._snapshot is not None:
            if not self._may_differ:
                return None
        else:
            originals = self._originals
            if not originals:
                return None
            for key, value in originals.items():
                now = dict.get(self, key, _MISSING)
                if now is not value and not _same(now, value):
                    break
            else:
                return None
        try:
            return _encode(dict(dict.items(self)))  # _dump, without its call in the usual case
        except (TypeError, ValueError, RecursionError):
            return self._dump()

    def _modified(self, current: Optional[str]) -> bool:
        """express's isModified: a new ID, or data whose JSON is not the loaded one."""
        return self._regenerated or (current is not None and current != self._snapshot)

    def _is_saved(self, current: Optional[str]) -> bool:
        """express's isSaved: the store holds this ID with this data."""
        if self._saved is None:
            return False
        saved_id, saved_data = self._saved
        if saved_id != self._id:
            return False
        if saved_data is None:  # loaded and not yet changed: the store holds the snapshot
            return current is None or current == self._snapshot
        return (current or self._snapshot) == saved_data

    # -- what the store is given

    def _change(self, data: str) -> "Change":
        """This session's write for the store's merge(): the record as loaded, the record now."""
        cookie = self._cookie or self._ensure_cookie()
        cookie_json, ms, expires = cookie._json()
        if self._cookie_pos == 0:  # as _join_record
            head = '{"cookie":' + cookie_json
            text = head + "}" if data == "{}" else head + "," + data[1:]
            original = cookie._original
            # Its next read is then a lookup (see _read_text), for a text the layout's pattern
            # reads (originalMaxAge null or up to 13 digits) only: any other is read by decode_record,
            # which may read it otherwise (no "path" reads as "/").
            if expires is not None and (original is None or type(original) is int
                                        and 0 <= original < 10_000_000_000_000):
                _remember(self._req.core._records, text,
                          (cookie._attrs, original, expires, len(head) + 1),
                          _RECORD_CACHE_SIZE, _RECORD_KEY_MAX)
        else:
            text = _encode(self._record())
        # Another request's later expiry is kept unless this one set the cookie's lifetime.
        return Change(self._base, text, None if ms is None else ms / 1000,
                      cookie._original == self._lifetime)  # keep_later

    def _record(self, data: Optional[str] = None) -> "_Record":
        """The store record: the cookie at its stored position, then the data.

        Given the data's JSON, the record's JSON is built from it, so the
        store does not encode the same data a second time.
        """
        cookie = self._cookie or self._ensure_cookie()
        fields, cookie_json, ms = cookie._stored()
        rec = _Record()
        rec.expires_ms = ms
        rec.keep_later = cookie._original == self._lifetime
        rec.text, rec.cookie_text = None, cookie_json
        if self._cookie_pos == 0:
            rec["cookie"] = fields
            rec.update(dict.items(self))
            if data is not None:
                rec.text = _join_record('{"cookie":' + cookie_json, data)
            return rec
        for i, (key, value) in enumerate(dict.items(self)):
            if i == self._cookie_pos:
                rec["cookie"] = fields
            rec[key] = value
        rec.setdefault("cookie", fields)
        return rec

    def _expiry_record(self) -> "_Record":
        """A record with no fields, carrying only the expiry and keep_later: all a store whose
        touch needs nothing more (``Store.touch_needs_record``) is given."""
        cookie = self._cookie or self._ensure_cookie()
        return _Record.of_expiry(cookie._ms(), cookie._original == self._lifetime)

    def _record_text(self, data: str) -> str:
        """The record's JSON with this data, for a record read as a dict."""
        if self._cookie_pos == 0:
            return _join_record('{"cookie":' + self._cookie.to_json(), data)
        return _encode(self._record())

    def __repr__(self) -> str:
        self._read = True  # rendered ({{ session }} in a template): the response varies by cookie
        return f"Session({dict.__repr__(self)})"

    # -- reserved key and reads that count as using the session

    def __getitem__(self, key: str) -> Any:
        self._read = True
        value = dict.__getitem__(self, key)
        if type(value) not in _IMMUTABLE and not self._may_differ:
            self._use()  # the app may change what it gets: keep what it was
        return value

    def get(self, key: str, default: Any = None) -> Any:
        self._read = True
        value = dict.get(self, key, default)
        if type(value) not in _IMMUTABLE and not self._may_differ:
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
        if self._snapshot is not None:
            self._may_differ = True
        else:  # remember the loaded value instead of taking a snapshot
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

    def __ior__(self, other: Any) -> "Session":  # type: ignore[misc, override]  # (unlike __or__)
        self.update(other)
        return self

    def copy(self) -> dict[str, Any]:
        self._use()
        return dict(dict.items(self))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """copy.copy(), copy.deepcopy() and pickle give the data as a plain dict: the session
        itself belongs to its request."""
        return dict, (self.copy(),)


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
        if type(a) in _IMMUTABLE and type(b) in _IMMUTABLE:
            return False  # 1 and 1.0, 1 and True, "1" and 1: JSON tells them apart
        # else maybe the same JSON: (1, 2) and [1, 2], an enum member and its value
    elif type(a) in _IMMUTABLE:  # 0.0 == -0.0, but JSON tells them apart
        return a == b and (type(a) is not float or math.copysign(1, a) == math.copysign(1, b))
    try:
        return _encode(a) == _encode(b)
    except RecursionError:  # deeper than this stack leaves room for (see _decode): a merge must
        try:                # not take a value it never touched for one it changed
            return _on_a_new_stack(lambda pair: _encode(pair[0]) == _encode(pair[1]), (a, b))
        except (TypeError, ValueError, RecursionError):
            return False
    except (TypeError, ValueError):
        return False  # the encode at save time names the key



# ---------------------------------------------------------------- Cookie

# Cookie's attributes, in the order of its ``_attrs`` tuple.
_ATTRIBUTES = ("partitioned", "priority", "secure", "http_only", "domain", "path", "same_site")

_V = TypeVar("_V")


class _Attribute(Generic[_V]):
    """One of Cookie's seven attributes: read from its ``_attrs`` tuple, checked when set.
    (A stored record's value is kept as stored: express reads a flag such as "true" for its
    truth.)"""

    def __init__(self, name: str) -> None:
        self.index, self.name = _ATTRIBUTES.index(name), name
        self.__doc__ = f"The cookie's {name} attribute (checked when set)."

    @overload
    def __get__(self, cookie: None, owner: type) -> "_Attribute[_V]": ...
    @overload
    def __get__(self, cookie: "Cookie", owner: type) -> _V: ...

    def __get__(self, cookie: Optional["Cookie"], owner: type) -> Any:
        return self if cookie is None else cookie._attrs[self.index]

    def __set__(self, cookie: "Cookie", value: _V) -> None:
        attrs = list(cookie._attrs)
        attrs[self.index] = _check_cookie_attribute(self.name, value)
        cookie._attrs = tuple(attrs)


class Cookie:
    """The session cookie's settings and expiry, as express-session's Cookie (max_age in seconds).

    ``max_age`` is the time left; setting it sets ``expires`` and
    ``original_max_age`` too.  Times are milliseconds, as JavaScript keeps them, so
    records round-trip exactly: the expiry since the epoch (read from a record, its
    stored date until needed: see _ms), originalMaxAge as given.  Every attribute
    is checked when it is given (constructor, assignment, stored record), so
    nothing that could break the Set-Cookie header ever reaches it.
    """

    # The seven attributes live in one tuple, ``_attrs`` (see _ATTRIBUTES): the
    # record and header templates are cached by it, and each one's descriptor
    # checks a new value before building the next tuple.
    __slots__ = ("_expires", "_original", "_attrs")
    _expires: Union[int, str, None]  # epoch ms, or a record's ISO date until read (see _ms)
    _original: Optional[float]
    _attrs: tuple[Any, ...]
    partitioned: _Attribute[Optional[bool]] = _Attribute("partitioned")
    priority: _Attribute[Optional[str]] = _Attribute("priority")
    secure: _Attribute[Optional[bool]] = _Attribute("secure")
    http_only: _Attribute[bool] = _Attribute("http_only")
    domain: _Attribute[Optional[str]] = _Attribute("domain")
    path: _Attribute[Optional[str]] = _Attribute("path")
    same_site: _Attribute[Union[str, bool, None]] = _Attribute("same_site")

    def __init__(self, *, max_age: Union[float, timedelta, None] = None,
                 expires: Optional[datetime] = None, http_only: bool = True,
                 secure: Optional[bool] = None, path: Optional[str] = "/",
                 domain: Optional[str] = None, same_site: Union[str, bool, None] = None,
                 partitioned: Optional[bool] = None, priority: Optional[str] = None) -> None:
        given = {"partitioned": partitioned, "priority": priority, "secure": secure,
                 "http_only": http_only, "domain": domain, "path": path, "same_site": same_site}
        self._attrs = tuple(_check_cookie_attribute(name, given[name]) for name in _ATTRIBUTES)
        self._expires = None
        self._original = None
        if max_age is not None:
            self.max_age = max_age
        elif expires is not None:
            self.expires = expires

    @classmethod
    def _make(cls, attrs: tuple[Any, ...], original: Optional[float],
              expires: Union[int, str, None]) -> "Cookie":
        """A cookie from checked attributes and its two times (ms; the expiry may also be a
        stored ISO date checked for form, see _ms), as a record or the options give them:
        the one way a Cookie is made other than through its checks."""
        cookie = cls.__new__(cls)
        cookie._attrs, cookie._original, cookie._expires = attrs, original, expires
        return cookie

    @property
    def has_expiry(self) -> bool:
        """Whether the cookie has an expiry (else the browser drops it when it closes)."""
        return self._expires is not None

    def _ms(self) -> Optional[int]:
        """The expiry in epoch ms.  A cookie read from a record's text keeps its stored date,
        checked for form, until it is needed (most requests restart the clock instead)."""
        ms = self._expires
        if isinstance(ms, str):
            try:
                ms = _expires_ms(ms)
            except ValueError as exc:  # a well-formed date that does not exist: 2026-02-31
                log.warning("stored cookie expires %.60r is not a date (%s): treating it as unset",
                            ms, exc)
                ms = None
            self._expires = ms
        return ms

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
        ms = _expires_option_ms(value, "cookie expires")
        self._expires = ms
        self._original = ms - _now_ms()

    @property
    def max_age(self) -> Optional[float]:
        """Seconds until expiry (negative once expired), or None."""
        ms = self._ms()
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
            self._expires = time.time_ns() // 1_000_000 + int(self._original)
        else:  # (a record's expires with no originalMaxAge: express's touch unsets it too)
            self._expires = None

    def to_record(self) -> dict[str, Any]:
        """The cookie as express stores it: camelCase, express's key order, unset keys omitted
        (but ``path`` None is written null, as express writes it)."""
        return self._stored()[0]

    def to_json(self) -> str:
        """``to_record()`` as JSON."""
        return self._stored()[1]

    def _stored(self) -> tuple[dict[str, Any], str, Optional[int]]:
        """(``to_record()``, its JSON, expiry in epoch ms): both made from one template per set
        of attributes, in which only the two times vary."""
        templates = _TEMPLATES.get(self._attrs) or _templates(self._attrs)
        ms, original = self._expires, self._original
        expires: Optional[str]
        if isinstance(ms, str):
            expires, ms = ms, self._ms()
        else:
            expires = None if ms is None else _iso_ms(ms)
        fields = templates[2].copy()
        fields["originalMaxAge"] = original
        fields["expires"] = expires
        return fields, _cookie_json(templates, original, expires), ms

    def _json(self) -> tuple[str, Optional[int], Optional[str]]:
        """(``to_json()``, expiry in epoch ms, the expiry as the JSON has it)."""
        ms, original = self._expires, self._original
        templates = _TEMPLATES.get(self._attrs) or _templates(self._attrs)
        if ms is None and original is None:
            return templates[3], None, None
        if isinstance(ms, str):
            return _cookie_json(templates, original, ms), self._ms(), ms
        expires = None if ms is None else _iso_ms(ms)
        return _cookie_json(templates, original, expires), ms, expires

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "Cookie":
        """Rebuild a Cookie from a stored record's ``cookie`` (what Express wrote reads the same).

        Raises TypeError or ValueError, naming the field, when any field is not what
        express-session writes: such a record is not a session.
        """
        if not isinstance(rec, Mapping):
            raise TypeError("the record's cookie is not an object")
        get = rec.get
        try:
            attrs = _record_attributes((
                get("partitioned"), get("priority"), get("secure"), get("httpOnly", True),
                get("domain"), get("path", "/"), get("sameSite")))
        except TypeError as exc:
            if "unhashable" in str(exc):
                raise TypeError("a cookie field of the stored record is not a plain value") from None
            raise
        original = get("originalMaxAge")
        if original is False:  # express's cookie.expires = false: no expiry, as null
            original = None
        if original is not None and not (_is_number(original)
                                         and -_MAX_AGE * 1000 <= original <= _MAX_STORED_AGE_MS
                                         and math.isfinite(original)):
            raise ValueError("the stored cookie's originalMaxAge must be a number of ms from "
                             f"-{_MAX_AGE * 1000} to {_MAX_STORED_AGE_MS}, or null, not {original!r:.40}")
        expires = get("expires")
        return cls._make(attrs, original, None if expires is None or expires is False
                         else _expires_ms(expires))

    def serialize(self, name: str, value: str) -> str:
        """The Set-Cookie header value, attributes in the order the npm package cookie writes them.

        ``value`` is sent as given (encode it first); a name or value that is not a cookie
        token or cookie-value raises ValueError, as the npm package cookie does.
        """
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"cookie name must be a token (letters, digits, !#$%&'*+-.^_`|~): {name!r}")
        if not _COOKIE_VALUE.fullmatch(value):
            raise ValueError(f"cookie value has characters a cookie cannot carry: {value!r}")
        return self._header(name, value)

    def _header(self, name: str, value: str) -> str:
        """``serialize`` for a name and value already known to be valid (the middleware's)."""
        before, after = (_TEMPLATES.get(self._attrs) or _templates(self._attrs))[1]
        ms = self._ms() if isinstance(self._expires, str) else self._expires
        if ms is None:
            return f"{name}={value}{before}{after}"
        return f"{name}={value}{before}; Expires={_http_date(ms // 1000)}{after}"

    def _fields(self, original: Any, expires: Any) -> dict[str, Any]:
        partitioned, priority, secure, http_only, domain, path, same_site = self._attrs
        rec: dict[str, Any] = {"originalMaxAge": original}
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
        rec["path"] = path  # null when None, as express writes it (a missing path reads as "/")
        if same_site is not None:
            rec["sameSite"] = same_site
        return rec

    def _attributes(self, expires: Optional[str]) -> str:
        partitioned, priority, secure, http_only, domain, path, same_site = self._attrs
        parts: list[str] = []
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


_SAME_SITE_ATTR = {True: "Strict", "strict": "Strict", "lax": "Lax", "none": "None"}


def _templates(attrs: tuple[Any, ...]) -> _Templates:
    """For cookies with these (checked) attributes: the cookie's JSON cut around its two
    times, the Set-Cookie attributes cut where Expires goes, the record's fields (times
    None), the JSON with both times null, and how a record with this cookie first reads
    (see _read_layout, and the start of one whose times are null: _Core._read_text).  Only
    the times vary per request, so this is made once."""
    found = _TEMPLATES.get(attrs)
    if found is None:
        cookie = Cookie._make(attrs, None, None)
        text = _encode(cookie._fields("\0original", "\0expires"))
        before, rest = text.split('"\\u0000original"')
        between, after = rest.split('"\\u0000expires"')
        # A record with this cookie first (see _read_layout); a null path was left out before
        # 2026-12-06, and such records read the same.
        tails = (after, after.replace(',"path":null', "", 1)) if attrs[5] is None else (after,)
        null = f"{before}null{between}null{after}"
        found = ((before, between, after), tuple(cookie._attributes("\0").split("; Expires=\0")),
                 cookie._fields(None, None), null, (_head_pattern('{"cookie":' + before, between), tails),
                 '{"cookie":' + null)
        if len(_TEMPLATES) >= _TEMPLATES_SIZE:
            _TEMPLATES.clear()
        _TEMPLATES[attrs] = found
    return found


_TEMPLATES: dict[tuple[Any, ...], _Templates] = {}
_TEMPLATES_SIZE = 4096  # sets of cookie attributes (a cookie callable may give one per host)


def _read_layout(text: str, layout: tuple[Any, ...]) -> Optional[tuple[Any, ...]]:
    """(originalMaxAge, expires as stored, where the data begins) of a record whose cookie
    comes first with the attributes of ``layout`` (see _templates), else None."""
    times, tails = layout
    found = times.match(text)
    if found is not None:
        at = found.end()
        for tail in tails:
            end = at + len(tail)
            if text.startswith(tail, at) and text[end:end + 1] in _RECORD_GOES_ON:
                original, expires = found.groups()
                return (None if original == "null" else int(original)), expires, end + 1
    return None


_RECORD_GOES_ON = (",", "}")  # what follows the cookie in a record: its data, or its end


@functools.lru_cache(maxsize=64)
def _head_pattern(start: str, between: str) -> "re.Pattern[str]":
    """The pattern of a record's start up to its cookie's two times and past them, cached by
    the attributes before "expires" (partitioned, priority), the only ones in it: cached by
    all of them, a cookie callable that gives each of many hosts its own domain compiled
    one (0.2 ms) on most requests."""
    return re.compile(re.escape(start) + r"(null|0|[1-9]\d{0,12})" + re.escape(between)
                      + r'(?:null|"(' + _ISO_MS.pattern + ')")')


def _cookie_json(templates: _Templates, original: Optional[float],
                 expires: Optional[str]) -> str:
    """A cookie's JSON from its attributes' templates (see _templates) and its two times."""
    if original is None and expires is None:
        return templates[3]
    before, between, after = templates[0]
    number = (original if type(original) is int else "null" if original is None
              else _encode(original))
    if expires is None:
        return f"{before}{number}{between}null{after}"
    return f'{before}{number}{between}"{expires}"{after}'


@functools.lru_cache(maxsize=256, typed=True)
def _record_attributes(raw: tuple[Any, ...]) -> tuple[Any, ...]:
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
    value in the error (default: ``cookie <name>``) and marks a stored record's, read as
    express reads it and kept as stored: a flag for its truth, "" or false as "unset".
    """
    what = field and f"the stored cookie's {field}" or f"cookie {name}"
    if field and name in ("domain", "priority", "same_site") and (value == "" or value is False):
        return value  # as express keeps it from a record: not sent, written back as it was
    if name in ("http_only", "secure", "partitioned"):
        if type(value) is bool or (value is None and name != "http_only"):
            return value
        if field and (value is None or type(value) is str):
            return value  # as express keeps a record's: sent for its truth ("true" from an env var)
        if field and type(value) in (int, float):
            return value != 0  # (kept as stored, 1 would share the caches of True: see _TEMPLATES)
        raise TypeError(f"{what} must be True or False{'' if name == 'http_only' else ' or None'}, "
                        f"not {value!r:.60}")
    if value is None:
        return None
    if name in ("priority", "same_site"):
        allowed = _PRIORITIES if name == "priority" else _SAME_SITES
        if name == "same_site" and type(value) is bool:
            return value
        if not isinstance(value, str):
            raise TypeError(f"{what} must be one of {allowed} or None, not {value!r:.60}")
        if value.lower() not in allowed or not value.isascii():
            raise ValueError(f"{what} must be one of {allowed} or None, not {value!r:.60}")
        return value
    if name in ("domain", "path"):
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str or None, not {type(value).__name__}")
        if not (_DOMAIN if name == "domain" else _PATH).fullmatch(value):
            raise ValueError(f"{what} is not a valid cookie {name} (" +
                             ("letters, digits, '-' and '.' labels" if name == "domain" else
                              "printable ASCII without ';' or '<'") + f"): {value!r:.60}")
        return value
    raise KeyError(f"no cookie attribute {name!r}")


_PRIORITIES = ("low", "medium", "high")
_SAME_SITES = ("lax", "strict", "none")  # and True (Strict) or False (none sent)
# The npm package cookie 0.7's allow-lists (ASCII only, spelled out: Python's re.I would let
# Unicode letters such as 'ſ' or the Kelvin sign match [a-z]).
_DOMAIN = re.compile(r"\.?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_PATH = re.compile(r"[\x20-\x3a\x3d-\x7e]*")



# ---------------------------------------------------------------- records

def encode_record(record: Mapping[str, Any]) -> str:
    """The record's JSON exactly as express writes it: compact, UTF-8, no NaN; a
    ``cookie.expires`` given as a datetime (as a document database returns it) is written
    as JSON.stringify writes a Date."""
    text = record.text if type(record) is _Record else None
    if text is not None:
        return text
    cookie = record.get("cookie") if isinstance(record, dict) else None  # (a hostile record: a list)
    if isinstance(cookie, dict) and isinstance(cookie.get("expires"), datetime):
        record = {**record, "cookie": {**cookie, "expires": _iso_ms(_expires_ms(cookie["expires"]))}}
    try:
        return _encode(record)
    except RecursionError:  # deeper than this thread's stack leaves room for: see _decode
        return _on_a_new_stack(_encode, record)


def decode_record(text: Union[str, bytes]) -> dict[str, Any]:
    """Parse a stored record; ValueError unless it is a JSON object with a ``cookie`` object,
    in JSON that ``JSON.parse`` reads (no NaN or Infinity) and not nested beyond what the
    encoder accepts."""
    record = _decode(text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else text)
    if type(record) is not dict or type(record.get("cookie")) is not dict:
        raise ValueError("not a session record: a JSON object with a 'cookie' object")
    return record


def expires_at(record: Mapping[str, Any]) -> Optional[float]:
    """Epoch seconds of ``record["cookie"]["expires"]`` (ISO string or datetime), or None."""
    if type(record) is _Record:
        ms = record.expires_ms
        return None if ms is None else ms / 1000
    cookie = record.get("cookie")
    expires = cookie.get("expires") if isinstance(cookie, dict) else None
    return None if expires is None or expires is False else _expires_ms(expires) / 1000


class _Record(dict[str, Any]):
    """A record from the middleware, carrying what stores would otherwise compute again:
    its JSON (or None), its expiry in epoch ms, and whether a touch may move an expiry
    that another request just moved later (``keep_later``: see Change)."""

    __slots__ = ("text", "cookie_text", "expires_ms", "keep_later")
    text: Optional[str]
    cookie_text: Optional[str]
    expires_ms: Optional[int]
    keep_later: bool

    @classmethod
    def of(cls, text: str, expires: Optional[float]) -> "_Record":
        """The record whose JSON is ``text``, for a store that writes dicts (see Store.merge)."""
        record = cls(decode_record(text))
        record.text, record.cookie_text = text, None
        record.expires_ms = None if expires is None else round(expires * 1000)
        record.keep_later = True
        return record

    @classmethod
    def of_expiry(cls, expires_ms: Optional[int], keep_later: bool) -> "_Record":
        """A record with no fields, only an expiry and ``keep_later``: what a store whose touch
        reads nothing more (``Store.touch_needs_record``) is handed."""
        record = cls()
        record.text = record.cookie_text = None
        record.expires_ms, record.keep_later = expires_ms, keep_later
        return record


class Change:
    """One request's write to a session record, as ``Store.merge`` receives it.

    ``base`` is the record's JSON as the request loaded it (or last wrote it), None for
    a new session; ``text`` the record's JSON as the request would write it; ``expires``
    its expiry in epoch seconds, or None when the cookie has none (the store's ttl then
    applies).  When the stored record is no longer ``base``, ``apply`` merges: the keys
    this request set, changed in place or deleted, applied to the record as stored.  A
    store keeps the later of its stored expiry and ``expires`` when ``keep_later``
    (False only when the request itself changed the cookie's lifetime).  ``kept_times``
    tells the middleware when ``apply`` kept the stored cookie's later times, which the
    response's cookie then carries too.
    """

    __slots__ = ("base", "text", "expires", "keep_later", "kept_times")

    def __init__(self, base: Optional[str], text: str, expires: Optional[float],
                 keep_later: bool = True) -> None:
        self.base, self.text, self.expires, self.keep_later = base, text, expires, keep_later
        # (originalMaxAge, expires) apply() last kept
        self.kept_times: Optional[tuple[Any, Any]] = None

    def changes(self) -> tuple[dict[str, Any], list[str]]:
        """(keys set, with their values; keys deleted): what this request changed at the top
        level of the data, against ``base`` (the cookie is not among them)."""
        mine = _decode(self.text)
        base = _decode(self.base) if self.base is not None else {}
        sets = {key: value for key, value in mine.items()
                if key != "cookie" and (key not in base or not _same(base[key], value))}
        deleted = [key for key in base if key != "cookie" and key not in mine]
        return sets, deleted

    def cookie(self) -> dict[str, Any]:
        """The cookie of the record this request would write."""
        cookie: dict[str, Any] = _decode(self.text)["cookie"]
        return cookie

    def _changes_cookie_attributes(self) -> bool:
        """Whether this request changed its cookie's attributes (anything but its two times)
        against ``base``: a store that writes the times alone must then merge the cookie
        (``apply`` does)."""
        base = self._base_cookie()
        return base is None or bool(_changed_attributes(base, self.cookie()))

    def _base_cookie(self) -> Optional[dict[str, Any]]:
        base = _decode(self.base).get("cookie") if self.base is not None else None
        return base if type(base) is dict else None

    def apply(self, stored: str) -> tuple[str, Optional[float]]:
        """(JSON, expiry in epoch seconds or None) of the record ``stored`` with this
        request's changes applied: keys keep their stored order, new ones come last; in the
        cookie, the attributes this request changed are set, and its times replace the stored
        ones unless ``keep_later`` and the stored cookie expires later (see _cookie_over)."""
        self.kept_times = None
        try:
            record = decode_record(stored)
        except ValueError:
            return self.text, self.expires  # what is stored is not a session: this one replaces it
        sets, deleted = self.changes()
        for key in deleted:
            record.pop(key, None)
        record.update(sets)
        expires = self.expires
        theirs = _record_expiry(record)
        keep_theirs = self.keeps(theirs)
        if keep_theirs:
            expires = theirs
        cookie = record["cookie"] = self._cookie_over(record["cookie"], keep_theirs)
        if keep_theirs:
            self.kept_times = (cookie.get("originalMaxAge"), cookie.get("expires"))
        return encode_record(record), expires

    def keeps(self, theirs: Optional[float]) -> bool:
        """Whether a stored expiry (epoch s, None: none) is kept over this change's own."""
        return self.keep_later and theirs is not None and (self.expires is None or theirs > self.expires)

    def _cookie_over(self, stored: dict[str, Any], keep_times: bool) -> dict[str, Any]:
        """The stored cookie with the attributes this request changed (against ``base``'s)
        set as this request has them, and this request's two times unless ``keep_times``;
        in express's key order, without fields express does not write."""
        mine, base = self.cookie(), self._base_cookie()
        if base is None:  # nothing to tell this request's changes by: all of its cookie
            merged = dict(mine)
        else:
            merged = dict(stored)
            for key in _changed_attributes(base, mine):
                if key in mine:
                    merged[key] = mine[key]
                else:
                    merged.pop(key, None)
        times = stored if keep_times else mine
        for key in _COOKIE_TIMES:
            merged[key] = times.get(key)
        return {key: merged[key] for key in _COOKIE_FIELDS if key in merged}

    def __repr__(self) -> str:
        return f"Change(base={self.base!r:.40}, text={self.text!r:.60}, expires={self.expires!r})"


def _changed_attributes(base: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """The fields of two stored cookies, other than their two times, that differ."""
    base, mine = _meaningful(base), _meaningful(mine)
    return [key for key in {**base, **mine} if key not in _COOKIE_TIMES and (
        key not in mine or key not in base or not _same(mine[key], base[key]))]


# Fields whose null reads as their absence (express: falsy, not sent); connect-mongo with
# stringify false stores express's unset ones as null (the Node driver's ignoreUndefined=false).
_NULL_IS_UNSET = ("partitioned", "priority", "secure", "domain", "sameSite")


def _meaningful(cookie: dict[str, Any]) -> dict[str, Any]:
    """A stored cookie without the null fields that mean unset (see _NULL_IS_UNSET)."""
    return {k: v for k, v in cookie.items() if v is not None or k not in _NULL_IS_UNSET}


_COOKIE_TIMES = ("originalMaxAge", "expires")
# The fields of a stored cookie, in the order express writes them.
_COOKIE_FIELDS = ("originalMaxAge", "partitioned", "priority", "expires", "secure", "httpOnly",
                  "domain", "path", "sameSite")


def _merged_record(record: Optional[dict[str, Any]], change: Change) -> Optional["_Record"]:
    """What Store's default merge writes over ``record`` (the stored one, or None) for
    ``change``; None when it writes nothing (see Store.merge)."""
    if (record is None) != (change.base is None):
        return None
    stored = None if record is None else encode_record(record)
    if stored is None or stored == change.base:
        return _Record.of(change.text, change.expires)
    return _Record.of(*change.apply(stored))


def _record_expiry(record: dict[str, Any]) -> Optional[float]:
    """A decoded record's ``cookie.expires`` in epoch seconds, or None (unset or unreadable)."""
    try:
        return expires_at(record)
    except ValueError:
        return None


def _join_record(head: str, data: str) -> str:
    """A record's JSON from its cookie's part, ``{"cookie":{...}``, and the data's JSON."""
    return head + ("}" if data == "{}" else "," + data[1:])



def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON as express writes it (UTF-8 kept, no NaN), made once.

    ``json.dumps`` builds a new encoder on every call; for the few hundred
    bytes of a session that setup costs more than the encoding itself.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # The pure-Python encoder, for small floats (see _float_json); markers=None skips the
    # cycle check: a cyclic value ends in RecursionError.
    exact = json.encoder._make_iterencode(  # type: ignore[attr-defined]  # (private, no stub)
        None, encoder.default, json.encoder.encode_basestring, None, _float_json, ":", ",",
        False, False, True)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return lambda value: _escape_surrogates("".join(exact(value, 0)))
    chunks = make(None, encoder.default, json.encoder.encode_basestring, None, ":", ",",
                  False, False, False)
    small_float = re.compile(r"e-\d+(?:[,\]}]|$)").search  # the end of 1e-05 (or a string's)

    def encode(value: Any) -> str:
        text = "".join(chunks(value, 0))
        if "e-" in text and small_float(text) is not None:
            text = "".join(exact(value, 0))
        if not text.isascii() and _SURROGATE(text) is not None:
            text = _escape_surrogates(text)
        return text
    return encode


# A lone surrogate (JSON.parse reads "\ud83d" as one) cannot be UTF-8: JSON.stringify escapes it.
_SURROGATE = re.compile("[\ud800-\udfff]").search


def _escape_surrogates(text: str) -> str:
    return re.sub("[\ud800-\udfff]", lambda found: f"\\u{ord(found.group()):04x}", text)


def _float_json(value: float) -> str:
    """A float as JSON: its repr, but a small one as JavaScript writes it (0.00001 and 1e-7,
    not 1e-05 and 1e-07), so a record Express wrote is written back as it was.  Others stay
    as Python writes them (2.0, 1e+16; Express: 2, 10000000000000000): read back, they are
    floats again."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not JSON (JSON.parse rejects it)")
    text = float.__repr__(value)  # a subclass's repr (numpy's: np.float64(0.25)) is no JSON
    mantissa, e, exponent = text.partition("e-")
    if not e:
        return text
    sign, digits = ("-", mantissa[1:]) if mantissa[0] == "-" else ("", mantissa)
    places = int(exponent)  # value = <digits, the point after the first> x 10**-places
    if places >= 7:
        return f"{mantissa}e-{places}"
    return f"{sign}0.{'0' * (places - 1)}{digits.replace('.', '')}"


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
_scan_json = _DECODER.scan_once  # type: ignore[attr-defined]  # (set by JSONDecoder.__init__)


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


def _on_a_new_stack(function: Callable[[_T], _R], arg: _T) -> _R:
    """``function(arg)`` in a thread of its own, for JSON nested deeper than this thread's
    stack leaves room for (the C encoder and decoder recurse once per level)."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, function(arg)))
        except Exception as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome.append((False, exc))
    thread = threading.Thread(target=run, name="session-json")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: _R = value
    return result



# ---------------------------------------------------------------- stores

class Store:
    """Where sessions live between requests: the base every store implements.

    Records are dicts in express-session's format (see ``encode_record``).  A
    record expires at its ``cookie.expires``, or ``ttl`` seconds after its last
    write when it has none; an expired record is never returned.  Every store
    must be safe to share between the threads of one process.

    A store must implement get, set, destroy, touch, all and clear.  It may also
    offer ``get_text`` (records as JSON text, so the middleware decodes only what
    it needs), ``merge`` (a concurrent-safe write of one request's changes) and
    coroutine forms ``a<method>`` (for ASGI); each has a default here built on the
    required methods (merge's is not safe under concurrency: see merge),
    and the middleware uses a store's own only when it is defined no higher in
    the store's classes than the method it stands for (a subclass overriding
    ``get`` alone keeps being read through ``get``).  See "Writing a store" in
    docs/stores.md.
    """

    ttl: float = 86400
    # Whether the methods wait on I/O (a disk, a server).  Under ASGI a blocking store is
    # called through its coroutine methods, or in a thread; one that never blocks (False)
    # is called directly from the event loop, the cheapest way (an async-first one, whose
    # plain methods are these stubs, through its coroutines, on the loop).
    blocking: bool = True
    # Whether touch() reads the record beyond its expiry (expires_at, expiry_time) and
    # keep_later.  A store whose touch moves an expiry and nothing else says False: it is then
    # given a record with no fields, and a request that only reads builds no record.
    touch_needs_record: bool = True

    def get(self, sid: str) -> Optional[dict[str, Any]]:
        """The live record for ``sid``, or None if it is missing or expired."""
        raise NotImplementedError

    def set(self, sid: str, record: dict[str, Any]) -> None:
        """Create or replace the record, with its expiry."""
        raise NotImplementedError

    def destroy(self, sid: str) -> None:
        """Delete the record; deleting a missing one is not an error."""
        raise NotImplementedError

    def touch(self, sid: str, record: dict[str, Any]) -> None:
        """Move the expiry to the one ``record`` gives, without rewriting data; no-op if gone.
        Never move it earlier than the stored one when ``getattr(record, "keep_later", True)``."""
        raise NotImplementedError

    def all(self) -> dict[str, dict[str, Any]]:
        """Every live record, by ID."""
        raise NotImplementedError

    def ids(self) -> list[str]:
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

    def __new__(cls: type[_S], *args: Any, **kwargs: Any) -> _S:
        store = object.__new__(cls)
        _LIVE_STORES[id(store)] = store  # for the fork handlers (see _after_fork_in_child)
        return store

    def close(self) -> None:
        """Release connections and files the store opened (never a client it was given)."""

    async def aclose(self) -> None:
        """At an ASGI app's shutdown (its lifespan): wait for the store work the running event
        loop has in flight, in threads too, which a server that ends the process as soon as
        its loop is done (uvicorn after a signal) would cut short.  The store stays usable."""
        await _IN_FLIGHT.wait()

    # Around fork() (gunicorn --preload, multiprocessing), called for every live store.
    def _before_fork(self) -> None:
        """In the parent, before the fork: let what the child must not inherit half done end."""

    def _after_fork_in_parent(self) -> None:
        """In the parent, after the fork: undo ``_before_fork``."""

    def _after_fork_in_child(self) -> None:
        """In the child: forget the parent's connections (never close them: they are the
        parent's), and take new locks (one a parent's thread held would stay held here)."""

    def expiry_time(self, record: Mapping[str, Any], now: Optional[float] = None) -> float:
        """Epoch seconds when ``record`` expires: its cookie's expiry, else ``ttl`` from now."""
        at = expires_at(record)
        if at is not None:
            return at
        return (time.time() if now is None else now) + self.ttl

    # -- optional: override to be faster, or (merge) safe under concurrency

    def get_text(self, sid: str) -> Optional[str]:
        """The live record's JSON as stored, or None.  A store that keeps JSON returns it
        without decoding: the middleware reads (and checks) only what it needs."""
        record = self.get(sid)
        return None if record is None else encode_record(record)

    def merge(self, sid: str, change: Change) -> bool:
        """Write one request's change into the record as it is stored now; True if written.

        Nothing is written, and False returned, when ``change.base`` is None (a new
        session) and a live record has this ID, or when it is not None and no live
        record has.  Otherwise the store writes ``change.text`` if it still holds
        ``change.base``, else ``change.apply(stored)``, as one atomic step (a
        compare-and-set, retried).  This default reads, merges and writes without a
        lock: right when requests on one session do not overlap, not when they do; and
        it sees records, not the store's expiry, so it cannot keep a later one a touch
        wrote.
        """
        record = _merged_record(self.get(sid), change)
        if record is None:
            return False
        self.set(sid, record)
        return True

    async def aget(self, sid: str) -> Optional[dict[str, Any]]:
        """``get``, awaitable; this default runs it in a thread."""
        return await _in_thread(self.get, sid)

    async def aget_text(self, sid: str) -> Optional[str]:
        """``get_text``, awaitable; this default runs it in a thread."""
        return await _in_thread(self.get_text, sid)

    async def aset(self, sid: str, record: dict[str, Any]) -> None:
        """``set``, awaitable; this default runs it in a thread."""
        await _in_thread(self.set, sid, record)

    async def amerge(self, sid: str, change: Change) -> bool:
        """``merge``, awaitable; this default runs it in a thread, or, in a store with no
        ``merge`` of its own but its own ``aset`` (an async-first store), takes ``merge``'s
        default steps through ``aget`` and ``aset``, shielded as one write (see _Writes);
        not when a subclass overrode ``get`` or ``set`` since (its own are then used)."""
        if (_owner(self, "merge") is not Store or _owner(self, "aset") is Store
                or not _offers(self, "aset", "set") or not _offers(self, "aget", "get")):
            return await _in_thread(self.merge, sid, change)
        return await _IN_FLIGHT.run(self._amerge_default(sid, change))

    async def _amerge_default(self, sid: str, change: Change) -> bool:
        record = _merged_record(await self.aget(sid), change)
        if record is None:
            return False
        await self.aset(sid, record)
        return True

    async def atouch(self, sid: str, record: dict[str, Any]) -> None:
        """``touch``, awaitable; this default runs it in a thread."""
        await _in_thread(self.touch, sid, record)

    async def adestroy(self, sid: str) -> None:
        """``destroy``, awaitable; this default runs it in a thread."""
        await _in_thread(self.destroy, sid)


# Every store made, by id (a store need not be hashable), for the fork handlers.
_LIVE_STORES: "weakref.WeakValueDictionary[int, Store]" = weakref.WeakValueDictionary()


def _each_store(hook: str) -> Callable[[], None]:
    def run() -> None:
        for store in list(_LIVE_STORES.values()):
            getattr(store, hook)()
    return run


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_each_store("_before_fork"),
                        after_in_parent=_each_store("_after_fork_in_parent"),
                        after_in_child=_each_store("_after_fork_in_child"))


async def _in_thread(function: Callable[..., _R], *args: Any) -> _R:
    """``function(*args)`` in the event loop's threads (asyncio's default pool, or trio's), so
    it cannot block the loop; in a copy of the caller's context (as ``asyncio.to_thread``), so
    a store sees the request's context variables as it does under WSGI; run to its end even if
    the caller is cancelled."""
    import asyncio  # here, not at the top: a WSGI app never pays for importing it
    import contextvars
    call = functools.partial(contextvars.copy_context().run, function, *args)
    trio = _running_trio()
    if trio is not None:
        with trio.CancelScope(shield=True):  # cancelled meanwhile: told once the call is done
            result: _R = await trio.to_thread.run_sync(call, limiter=_trio_store_threads(trio))
            return result
    # A cancelled caller leaves the call running: a write is never dropped from the pool's queue.
    return await _to_its_end(_IN_FLIGHT.keep(asyncio.get_running_loop().run_in_executor(None, call)))


def _trio_store_threads(trio: Any) -> Any:
    """The thread tokens of store calls in this trio run: 32, as asyncio's largest default
    pool, apart from trio's default 40, which anyio gives a ``def`` endpoint's thread too.  A
    thread that waits in ``from_thread.run(session.asave)`` holds one of those: 40 of them
    waiting for a 41st token for the store call stopped the server."""
    global _TRIO_STORE_THREADS
    if _TRIO_STORE_THREADS is None:
        _TRIO_STORE_THREADS = trio.lowlevel.RunVar("session store threads")
    limiter = _TRIO_STORE_THREADS.get(None)
    if limiter is None:
        limiter = trio.CapacityLimiter(32)
        _TRIO_STORE_THREADS.set(limiter)
    return limiter


_TRIO_STORE_THREADS: Any = None  # a trio.lowlevel.RunVar, made when trio first runs a store call


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is the event loop cancelling the request (asyncio's CancelledError,
    trio's Cancelled), alone or in an exception group (as a trio nursery raises it)."""
    import asyncio
    trio = sys.modules.get("trio")
    kinds = asyncio.CancelledError if trio is None else (asyncio.CancelledError, trio.Cancelled)
    if isinstance(exc, kinds):
        return True
    split = getattr(exc, "split", None)  # BaseExceptionGroup (or its backport), 3.11+
    if not callable(split) or not hasattr(exc, "exceptions"):
        return False
    matched_and_rest: Any = split(kinds)
    return matched_and_rest[1] is None


def _running_trio() -> Any:
    """The trio module when trio's event loop runs this thread (hypercorn -k trio; anyio's trio
    backend, which Starlette, FastAPI and Litestar run on), else None.  The middleware then
    calls stores in trio's threads, as it does in asyncio's; trio is never imported here."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
            return trio
        except RuntimeError:
            pass
    return None


async def _to_its_end(done: "asyncio.Future[_R]") -> _R:
    """``await done`` (a future or task), which a cancellation of this await leaves running;
    a failure nobody awaits then is logged."""
    import asyncio
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        done.add_done_callback(_report_orphaned_write)
        raise


class _Writes(set[Any]):
    """Writes in flight (a store's coroutine writes, the ASGI middleware's end-of-response
    store work), each shielded from the cancellation of the request that started it (a client
    that went away must not cut the last write short) and kept until it ends, so that a
    store's ``aclose()`` at an app's shutdown can wait for them: an event loop that ends
    cancels whatever still runs on it."""

    __slots__ = ()

    async def run(self, write: Awaitable[_R]) -> _R:
        """``await write`` (a coroutine), run on to its end even if this await is cancelled."""
        import asyncio
        trio = _running_trio()
        if trio is not None:  # no task outlives its request under trio: the request waits
            with trio.CancelScope(shield=True):
                return await write
        return await _to_its_end(self.keep(asyncio.ensure_future(write)))

    def keep(self, write: "asyncio.Future[_R]") -> "asyncio.Future[_R]":
        """``write`` (a task, or a call's future), kept until it ends."""
        self.add(write)
        write.add_done_callback(self.discard)
        return write

    async def wait(self) -> None:
        """Until every write started on the running event loop has ended."""
        import asyncio
        if _running_trio() is not None:
            return  # none outlives its request under trio (see run)
        loop = asyncio.get_running_loop()
        mine = [task for task in list(self) if task.get_loop() is loop]
        if mine:
            await asyncio.wait(mine)


# Store work in flight that no store keeps: calls in threads, Store.amerge's default, and the
# ASGI middleware's end-of-response work on stores without writes of their own (see aclose).
_IN_FLIGHT = _Writes()


def _report_orphaned_write(task: Any) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a session store call whose request was cancelled failed: %s", task.exception())


class MemoryStore(Store):
    """Sessions in this process's memory: for development, tests and single-process apps.

    Records are kept as JSON strings, so the app can never change stored state
    through a reference, and ``get_text`` hands them over as they are.  Writes
    are computed outside the lock and made under it only if the record is still
    the one they were computed from (else computed again: see _put_if), so
    ``merge`` is a compare-and-set and the lock is held for a few assignments.  Expired records
    are found through a heap ordered by expiry, so removing them never scans the
    whole store (express's MemoryStore only drops an expired record when it is
    asked for it again).  The coroutine methods run inline: nothing here blocks.

    A touch that would change nothing of the cookie but its expiry, and move that less
    than ``touch_slack`` (60 s) and less than 1% of the time left, is skipped, as
    SQLiteStore, RedisStore and PostgresStore skip it: a site whose requests mostly only
    read then rewrites a record about once a minute per user, not on every request
    (``bench/deployed.py``, reads mix: 1,001 writes per 1,000 requests before).  A session
    may so end up to that much earlier than express's MemoryStore would end it.  (A record
    whose cookie is not its first field, which neither express nor the middleware writes,
    is rewritten on every touch.)
    """

    blocking = False  # nothing here waits on I/O: an event loop may call it directly
    touch_slack = 60.0  # seconds: a touch moving the expiry less than this, and nothing else, is skipped

    def __init__(self, *, ttl: float = 86400) -> None:
        _check_ttl(ttl)
        self.ttl = ttl
        self._lock = threading.Lock()  # held by writers; a read takes it only to drop an expired entry
        # sid -> (expiry, record JSON).  Entries are tuples, replaced whole, so a reader
        # always sees a consistent one.
        self._data: dict[str, tuple[float, str]] = {}
        self._heap: list[tuple[float, str]] = []  # (expiry, sid): stale ones skipped when popped

    def get(self, sid: str) -> Optional[dict[str, Any]]:
        text = self.get_text(sid)
        return None if text is None else _decode(text)

    def get_text(self, sid: str) -> Optional[str]:
        entry = self._data.get(sid)  # one atomic dict read: no lock needed
        if entry is None:
            return None
        if entry[0] <= time.time():
            with self._lock:
                if self._data.get(sid) is entry:  # not replaced meanwhile
                    del self._data[sid]
            return None
        return entry[1]

    def set(self, sid: str, record: dict[str, Any]) -> None:
        text = encode_record(record)
        expiry = self.expiry_time(record)
        while True:
            seen, now = self._data.get(sid), time.time()
            if self._put_if(sid, seen, (expiry, text) if expiry > now else None, now):
                return

    def merge(self, sid: str, change: Change) -> bool:
        data, base = self._data, change.base
        while True:
            seen, now = data.get(sid), time.time()
            live = seen if seen is not None and seen[0] > now else None
            if (live is None) != (base is None):
                return False  # a new session whose ID is taken, or one that is gone
            if live is None or live[1] is base or live[1] == base:
                text, expires = change.text, change.expires
            else:
                text, expires = change.apply(live[1])
            expiry = now + self.ttl if expires is None else expires
            if live is not None and change.keep_later and live[0] > expiry:
                expiry = live[0]
            if self._put_if(sid, seen, (expiry, text) if expiry > now else None, now):
                return True

    def destroy(self, sid: str) -> None:
        with self._lock:
            self._data.pop(sid, None)

    def touch(self, sid: str, record: dict[str, Any]) -> None:
        """Move the expiry and keep the record's cookie as touched, as express's MemoryStore;
        skipped when it would move the expiry less than ``touch_slack`` seconds and less than
        1% of the time left, and change nothing else of the cookie (see the class docstring)."""
        cookie = getattr(record, "cookie_text", None) or _encode(record["cookie"])
        expiry = self.expiry_time(record)
        keep_later = getattr(record, "keep_later", True)
        while True:
            seen, now = self._data.get(sid), time.time()
            if seen is None or seen[0] <= now or (keep_later and seen[0] > expiry):
                return
            if (keep_later and _barely_moves(seen[0], expiry, now, self.touch_slack)
                    and _same_cookie_but_expires(seen[1], cookie)):
                return
            new = (expiry, _with_cookie(seen[1], cookie)) if expiry > now else None
            if self._put_if(sid, seen, new, now):
                return

    def all(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        entries = list(self._data.items())
        return {sid: _decode(entry[1]) for sid, entry in entries if entry[0] > now}

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

    def _after_fork_in_child(self) -> None:
        """The child keeps its copy of the records, with a lock of its own."""
        self._lock = threading.Lock()

    async def aget(self, sid: str) -> Optional[dict[str, Any]]:
        return self.get(sid)

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

    # -- private

    def _put_if(self, sid: str, seen: Optional[tuple[Any, ...]], new: Optional[tuple[Any, ...]],
                now: float) -> bool:
        """Replace the entry of ``sid`` by ``new`` (None: delete it) if it is still ``seen``,
        the entry it was computed from (a write computed outside the lock); False if not."""
        data = self._data
        with self._lock:
            # No call while the lock is held, in the common case: the interpreter switches
            # threads at calls, and a thread switched out holding the lock stalls every other
            # writer (measured: two threads' sets at 0.35 of a plain locked dict, 0.87 without).
            if (data[sid] if sid in data else None) is not seen:
                return False
            if self._heap and self._heap[0][0] <= now:
                self._expire(now)
            if new is None:
                if sid in data:
                    del data[sid]
            else:
                data[sid] = new
                # An expired entry's heap pair may be gone already: file the new one.
                if seen is None or new[0] < seen[0] or seen[0] <= now:
                    self._schedule(new[0], sid)
            return True

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


def _same_cookie_but_expires(text: str, cookie: str) -> bool:
    """Whether the record ``text`` holds the cookie ``cookie`` (JSON) but for the value of
    its "expires"; False whenever that cannot be told from the text (another layout)."""
    if text.startswith(cookie, 10):  # the same cookie, expiry and all
        return text.startswith('{"cookie":')
    at = cookie.find('"expires":"')
    if at < 0 or "{" in cookie[1:at] or "\\" in cookie[:at] or not text.startswith('{"cookie":'):
        return False  # no date to differ, or one not plainly the cookie's own "expires"
    at += 11  # the first character of its value, which is a date that never holds a quote
    end = cookie.find('"', at)
    stored_end = text.find('"', 10 + at)
    return (text.startswith(cookie[:at], 10) and stored_end > 0
            and text.startswith(cookie[end:], stored_end))


def _with_cookie(text: str, cookie: str) -> str:
    """A record's JSON with its cookie replaced by ``cookie`` (JSON), kept in its place."""
    if text.startswith(cookie, 10) and text.startswith('{"cookie":'):
        return text  # the same cookie (one with no expiry): nothing to replace
    if text.startswith('{"cookie":{'):
        end = _scan_json(text, 10)[1]  # just past the cookie object: the data is not decoded
        return '{"cookie":' + cookie + text[end:]
    record = _decode(text)
    record["cookie"] = _decode(cookie)
    return encode_record(record)


class _SeenExpiries(dict[str, float]):
    """sid -> the expiry (epoch s) this process last read (SQLiteStore and PostgresStore: or
    wrote), kept by the stores that skip a touch which would barely move it (SQLiteStore,
    RedisStore, PostgresStore): each such touch would be a write, on most requests of a site
    that mostly reads."""

    __slots__ = ()
    LIMIT = 65536  # sessions remembered; past that it starts over (a skipped skip costs a write)

    def remember(self, sid: str, expiry: float) -> None:
        if len(self) >= self.LIMIT:
            self.clear()
        self[sid] = expiry

    def barely_moves(self, sid: str, expiry: float, now: float, slack: float) -> bool:
        """Whether moving the expiry to ``expiry`` barely moves it past the one remembered
        (see _barely_moves; False when none is)."""
        seen = self.get(sid)
        return seen is not None and _barely_moves(seen, expiry, now, slack)


def _barely_moves(old: float, new: float, now: float, slack: float) -> bool:
    """The stores' touch rule: whether moving an expiry from ``old`` to ``new`` moves it
    less than ``slack`` seconds and less than 1% of the time left; such a touch is skipped."""
    return new - old < min(slack, (new - now) / 100)


# ---------------------------------------------------------------- the WSGI adapter

class SessionMiddleware(_Core):
    """WSGI middleware that gives each request a session, as express-session does for Express.

    ``secret`` signs the cookie: a str/bytes, or a list whose first entry signs
    and every entry verifies, so secrets rotate without logging anyone out.
    Options are validated here, at construction; see the README for each.
    """

    app: Callable[..., Iterable[bytes]]

    def __init__(self, app: Callable[..., Iterable[bytes]], *,
                 secret: Union[Secret, Sequence[Secret], None] = None,
                 store: Optional[Store] = None, name: str = "connect.sid",
                 cookie: Union[Mapping[str, Any], Callable[[dict[str, Any]], Mapping[str, Any]],
                               None] = None,
                 genid: Optional[Callable[[dict[str, Any]], str]] = None,
                 proxy: Optional[bool] = None, resave: bool = False,
                 save_uninitialized: bool = False, rolling: bool = False,
                 unset: str = "keep", environ_key: str = "session") -> None:
        if not callable(app):
            raise TypeError("app must be a WSGI callable")
        super().__init__(secret=secret, store=store, name=name, cookie=cookie, genid=genid,
                         proxy=proxy, resave=resave, save_uninitialized=save_uninitialized,
                         rolling=rolling, unset=unset)
        if not isinstance(environ_key, str) or not environ_key:
            raise TypeError("environ_key must be a non-empty str")
        self.app = app
        self.environ_key = environ_key

    def __call__(self, environ: _Environ, start_response: _StartResponse) -> Iterable[bytes]:
        key = self.environ_key
        found = environ.get(key)
        if found is not None and _in_use(found):  # an outer middleware's session, say
            return self.app(environ, start_response)
        options = self._options or self._request_options(environ)
        if options.scoped and not options.covers(_request_path(environ, len(options.path))):
            return self.app(environ, start_response)
        header = environ.get("HTTP_COOKIE")
        cookie_id, resend = self._read_cookie(header)
        exchange = _Exchange(self, environ, key, options, cookie_id, resend, start_response)
        sess = exchange.sess = self._session(exchange, self._read_store(cookie_id) if cookie_id else None)
        environ[key] = sess
        wrapper = environ.get("wsgi.file_wrapper")  # a class, as most servers' (see _record_files)
        files = None if wrapper is None or isinstance(wrapper, type) else _record_files(environ, wrapper)
        try:
            result = self.app(environ, exchange.start_response)
        except BaseException:
            exchange.release()  # the app raised: nothing is saved
            raise
        if type(result) is list or type(result) is tuple or (
                _is_file_wrapper(result, environ, files) and exchange._held is _NOTHING):
            # The body is complete, or a file the server may send by itself: no app code
            # runs after this, so the store action is now.
            try:
                exchange.end()
            except BaseException:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                raise
            held = exchange._held  # the last bytes the app gave write(), held for the store
            return result if held is _NOTHING else [held, *result]
        exchange.body = result
        return exchange

    def _is_secure(self, environ: _Environ) -> bool:
        if environ.get("wsgi.url_scheme") == "https":
            return True
        if not self.proxy:
            return False
        proto: str = environ.get("HTTP_X_FORWARDED_PROTO", "")
        return proto.split(",", 1)[0].strip().lower() == "https"

    def _response_headers(self, sess: Session, headers: _Headers, current: Any = _NOTHING,
                          attached: Any = _NOTHING) -> _Headers:
        """The app's headers plus our Set-Cookie (see _Core._set_cookie) and Vary: Cookie."""
        if current is _NOTHING:
            attached = sess._req.attached(sess)
            current = sess._current()
        set_cookie = self._set_cookie(sess, attached, current)
        if set_cookie is None and not sess._read:
            return headers
        headers = list(headers)
        if set_cookie is not None:
            headers.append(("Set-Cookie", set_cookie))
        _add_vary_cookie(headers)
        return headers


class _Exchange(_Request):
    """One WSGI request, and its response: holds the app's headers and its last body bytes back.

    Like express, which decides Set-Cookie when the response head is written,
    the headers are decided when the first body chunk is about to go out (or
    the app calls write()), so session changes made after start_response
    still count.  The last bytes, yielded or written, wait until the store
    write has finished; a body complete by then gets its headers after the
    store write, so a session found gone from the store is not sent a cookie.
    """

    __slots__ = ("sess", "_start_response", "_status", "_headers", "_write",
                 "_sent", "body", "_held")
    core: SessionMiddleware
    sess: Session  # (None once the request has ended: see release)
    _start_response: _StartResponse
    _status: Optional[str]
    _headers: _Headers
    _write: Callable[[bytes], Any]  # (the server's, once the head is sent)
    _sent: bool
    body: Iterable[bytes]  # the app's
    _held: Any

    def __init__(self, mw: SessionMiddleware, environ: _Environ, key: str,
                 options: "_CookieOptions", cookie_id: Optional[str], resend: Optional[str],
                 start_response: _StartResponse) -> None:
        # One object per request: the session's _Request (store calls made at once), and the
        # response (see _Request.__init__ for the first fields).
        self.core, self.context, self.key, self.options = mw, environ, key, options
        self.cookie_id, self.resend, self.pending, self.ended, self._secure = \
            cookie_id, resend, None, False, None
        self.cookie_decided = False
        self._start_response = start_response
        self._status = None
        self._sent = False
        self._held = _NOTHING  # the body's last bytes (a chunk, or what write() was given)

    def start_response(self, status: str, headers: _Headers,
                       exc_info: Any = None) -> Callable[[bytes], Any]:
        if exc_info is not None:
            held = self._held  # bytes the app gave are out, for the server as for the app
            if held is not _NOTHING and (held or self._sent):  # (write(b"") sends the head)
                self._held = _NOTHING
                self.send_headers()
                self._write(held)
            if self._sent:
                return self._start_response(status, headers, exc_info)  # the server re-raises
        elif self._status is not None:
            raise AssertionError("start_response was already called: PEP 3333 allows another "
                                 "call only with exc_info, to replace the status of an error")
        # The server is given the head once, as its first: no error of its to replace (uWSGI
        # raises on any exc_info), so the app's exc_info goes no further.
        self._status, self._headers = status, headers
        return self.write

    def send_headers(self, current: Any = _NOTHING, attached: Any = _NOTHING) -> None:
        if not self._sent and self._status is not None:
            self._sent = True
            headers = self.core._response_headers(self.sess, self._headers, current, attached)
            self._write = self._start_response(self._status, headers)

    def write(self, data: bytes) -> None:
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray)):  # refused now, inside the app: not saved
                raise TypeError(f"write() takes bytes, not {type(data).__name__}")
            data = bytes(data)  # held, it may go out in the body, where servers take bytes alone
        self.send_headers()
        held, self._held = self._held, data  # these may be the last: held for the store write
        if held is not _NOTHING:
            self._write(held)

    def end(self, respond: bool = True) -> None:
        """The app is done: the store action, then (unless ``respond`` is False: the server
        gave up on the response) the headers if they are not sent yet."""
        mw, sess = self.core, self.sess
        self.sess = None  # type: ignore[assignment]  # ended, whatever happens below (close()
        #                                                must not end it again)
        self.ended = True  # from here on, regenerate() and destroy() come too late
        try:
            attached = self.attached(sess)  # once for both steps, as is the data's JSON
            current = sess._current()
            action = mw._store_action(sess, attached, current)
            if action is not None:
                mw._carry_out(sess, action)
            if respond and not self._sent and self._status is not None:
                self._sent = True
                headers = mw._response_headers(sess, self._headers, current, attached)
                self._write = self._start_response(self._status, headers)
        finally:
            self.release()

    def release(self) -> None:
        """The request is over (or failed, and nothing is saved): drop the session, the environ
        <-> session cycle, and the server's callables, which hold its request, whose environ
        holds the session, which holds this; else the cycle collector has to free them all."""
        self.sess = self.context = None  # type: ignore[assignment]
        self._start_response = self._write = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[bytes]:
        try:
            chunks = iter(self.body)
        except BaseException:
            self.release()  # the app raised: nothing is saved
            raise
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except BaseException:
                self.release()  # the app raised: nothing is saved
                raise
            held, self._held = self._held, chunk
            if held is not _NOTHING:
                self.send_headers()
                yield held
        self.end()
        held, self._held = self._held, _NOTHING
        if held is not _NOTHING:
            yield held

    def close(self) -> None:
        """The server is done with the body: if it stopped before the end (the client went
        away), the store action still runs, as it does under ASGI."""
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            if self.sess is not None:
                self.end(respond=False)



# ---------------------------------------------------------------- the ASGI adapter

class ASGISessionMiddleware(_Core):
    """ASGI middleware with the same options and decisions as SessionMiddleware.

    The session is at ``scope[scope_key]`` for ``http`` and ``websocket`` scopes
    (Starlette's ``request.session`` and ``websocket.session``); other scopes pass
    through.  The store is called without blocking the event loop: through its
    coroutine methods (``aget_text``, ``amerge``...) where it has them, else in a
    thread.  ``regenerate()`` and ``destroy()`` stay plain calls, their store work
    done before the response ends; ``await session.asave()`` and
    ``await session.areload()`` reach the store at once.
    """

    app: Callable[..., Awaitable[None]]

    def __init__(self, app: Callable[..., Awaitable[None]], *,
                 secret: Union[Secret, Sequence[Secret], None] = None,
                 store: Optional[Store] = None, name: str = "connect.sid",
                 cookie: Union[Mapping[str, Any], Callable[[Any], Mapping[str, Any]], None] = None,
                 genid: Optional[Callable[[Any], str]] = None, proxy: Optional[bool] = None,
                 resave: bool = False, save_uninitialized: bool = False, rolling: bool = False,
                 unset: str = "keep", scope_key: str = "session") -> None:
        if not callable(app):
            raise TypeError("app must be an ASGI application")
        super().__init__(secret=secret, store=store, name=name, cookie=cookie, genid=genid,
                         proxy=proxy, resave=resave, save_uninitialized=save_uninitialized,
                         rolling=rolling, unset=unset)
        if not isinstance(scope_key, str) or not scope_key:
            raise TypeError("scope_key must be a non-empty str")
        self.app = app
        self.scope_key = scope_key

    # Any: every framework types the three its own way (Starlette's mappings, the TypedDicts
    # of Litestar, Quart and asgiref), and each must take this middleware as its ASGI app.
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        key = self.scope_key
        found = scope.get(key)
        if (kind != "http" and kind != "websocket") or (found is not None and _in_use(found)):
            return await self.app(scope, receive, send)
        options = self._options or self._request_options(scope)
        if options.scoped and not options.covers(_scope_path(scope, len(options.path))):
            return await self.app(scope, receive, send)
        header = _cookie_header(scope)
        cookie_id, resend = self._read_cookie(header)
        request = _Request(self, scope, key, options, cookie_id, resend, [])
        stored = None
        if cookie_id:
            stored = self._read_store(cookie_id) if self._inline else \
                await self._aread_store(cookie_id)
        sess = self._session(request, stored)
        scope[key] = sess
        if kind == "http":
            await self._http(scope, receive, send, sess)
        else:
            await self._websocket(scope, receive, send, sess)

    async def _http(self, scope: _Scope, receive: _Receive, send: _Send, sess: Session) -> None:
        start: Optional[_Message] = None  # http.response.start, held until the body goes out
        started = ended = gone = False

        async def receive_with_session() -> _Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def send_with_session(message: _Message) -> None:
            nonlocal start, started, ended, gone
            kind = message["type"]
            if kind == "http.response.start":
                if started:  # a server refuses it too; held, the second would replace the first
                    raise RuntimeError("http.response.start sent twice")
                start, started = message, True
                return
            if not ended and (kind == "http.response.pathsend" or (
                    kind in _LAST_BODY_TYPES and not message.get("more_body"))):
                ended = True  # the last body message: the store first, then the head
                current = await self._end(sess)
            else:
                current = _NOTHING
            try:
                if start is not None and kind != "http.response.early_hint":
                    held, start = start, None
                    await send(self._start_message(sess, held, current))
                await send(message)
            except OSError:  # what a server's send raises once the client is gone (ASGI 2.4)
                gone = True
                raise

        try:
            try:
                await self.app(scope, receive_with_session, send_with_session)
            except BaseException as exc:
                await self._failed(sess, exc, gone)
                raise
            if not ended:  # the app stopped before its last body message (the client went away)
                current = await self._end(sess)
                if start is not None and not gone:
                    try:
                        await send(self._start_message(sess, start, current))
                    except OSError:  # gone meanwhile: the head the app sent early has no one to reach
                        pass
        finally:
            sess._req.context = None  # the request is over: drop the scope <-> session cycle

    async def _websocket(self, scope: _Scope, receive: _Receive, send: _Send,
                         sess: Session) -> None:
        ended = gone = denied = False
        denial: Optional[_Message] = None  # websocket.http.response.start: an HTTP response instead

        async def receive_with_session() -> _Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "websocket.disconnect":
                gone = True
            return message

        async def send_with_session(message: _Message) -> None:
            nonlocal ended, gone, denial, denied
            kind = message["type"]
            if kind == "websocket.accept":  # the one message of a socket a Set-Cookie can go in
                set_cookie = await self._accepting(sess)
                if set_cookie is not None:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()),
                                          (b"set-cookie", set_cookie.encode("latin-1"))]
            elif kind == "websocket.close" and not ended:
                ended = True
                await self._end(sess)
            elif kind == "websocket.http.response.start":  # a denial: held, as an HTTP head is
                if denied:
                    raise RuntimeError("websocket.http.response.start sent twice")
                denial, denied = message, True
                return
            elif kind == "websocket.http.response.body":
                current = _NOTHING
                if not ended and not message.get("more_body"):
                    ended = True
                    current = await self._end(sess)
                if denial is not None:
                    held, denial = denial, None
                    await send(self._start_message(sess, held, current))
            try:
                await send(message)
            except OSError:
                gone = True
                raise

        try:
            try:
                await self.app(scope, receive_with_session, send_with_session)
            except BaseException as exc:
                await self._failed(sess, exc, gone)
                raise
            if not ended:  # the socket closed from the client's side, or never opened
                current = await self._end(sess)
                if denial is not None:
                    await send(self._start_message(sess, denial, current))
        finally:
            sess._req.context = None

    async def _accepting(self, sess: Session) -> Optional[str]:
        """The Set-Cookie for a websocket's accept, or None.  The accept ends the handshake's
        HTTP response, so the store work that response owes comes first, as it does before an
        HTTP response's last body message: the deletions regenerate() and destroy() left, the
        save of what the handshake changed, and, when a cookie goes out, the touch that keeps
        its session for it.  The socket stays open: what the app changes later is saved (or
        the expiry moved) when it closes."""
        request = sess._req
        attached = request.attached(sess)
        request.cookie_decided = True  # from here on, a regenerate() elsewhere comes too late
        current = sess._current()
        action = self._store_action(sess, attached, current)
        if action is not None and action[0] == "touch" and not self._should_set_cookie(sess, current):
            action = None  # no cookie to keep alive, nothing new: the expiry moves at the close
        if action is not None or request.pending:
            work = self._store_work(sess, action)
            if work is not None:
                await work
        return self._set_cookie(sess, attached, current)  # after the write: not for a gone session

    async def _failed(self, sess: Session, exc: BaseException, gone: bool) -> None:
        """The app raised: nothing is saved (as under WSGI), but the records regenerate() and
        destroy() meant to delete are deleted; the caller re-raises.

        A client that went away ends the request, it does not fail it: the store action runs
        when the server cancels the app, and when the app raises after it was told (``gone``:
        it received the disconnect, or the server's send raised OSError), as Starlette's
        ``receive_text()`` raises WebSocketDisconnect when the client closes a websocket."""
        request = sess._req
        if request.ended:
            return
        if gone or _is_cancellation(exc):
            await self._end(sess)
        else:
            request.ended = True
            await self._do_pending(request)

    async def _end(self, sess: Session) -> Optional[str]:
        """The response is ending: the store work left by regenerate() and destroy(), then
        the store action; returns the data's JSON the decisions were made on (None: unchanged).

        A client that goes away cancels the request (Starlette cancels a streaming response;
        an anyio cancel scope cancels every await after it again), but not this work: all is
        decided before the first await, a store call once started runs on (a thread's: see
        _in_thread; a store's coroutine write shields itself: see _Writes), and the deletions
        and the save after them run as one task, so that the save still starts.
        """
        request = sess._req
        request.ended = True  # from here on, regenerate() and destroy() come too late
        action = None
        try:
            attached = request.attached(sess)
            current = sess._current()
            action = self._store_action(sess, attached, current)
        finally:  # a decision that raised (a value JSON cannot encode) saves nothing, but what
            work = self._store_work(sess, action)  # regenerate() and destroy() meant to delete
            if work is not None:                   # is deleted all the same
                await work
        return current

    def _store_work(self, sess: Session, action: Optional[_Action]) -> Optional[Awaitable[None]]:
        """The deletions regenerate() and destroy() left, then ``action`` (or None): done at
        once on a store that never waits, else the awaitable that does it."""
        if self._inline:
            self._work_inline(sess, action)
            return None
        return self._work(sess, action)

    def _work_inline(self, sess: Session, action: Optional[_Action]) -> None:
        """_end's store work on a store that never waits: nothing can cut it short."""
        pending = sess._req.pending
        while pending:
            kind, sid = pending.pop(0)
            getattr(self._store, kind)(sid)
        if action is not None:
            self._carry_out(sess, action)

    async def _work(self, sess: Session, action: Optional[_Action]) -> None:
        """_end's store work: an action alone is one store call, which runs on by itself once
        started; deletions and the action after them run as one task."""
        if sess._req.pending:
            await self._ending.run(self._deletions_then(sess, action))
        elif action is not None:
            await self._acarry_out(sess, action)

    async def _deletions_then(self, sess: Session, action: Optional[_Action]) -> None:
        await self._do_pending(sess._req)
        if action is not None:
            await self._acarry_out(sess, action)

    async def _do_pending(self, request: _Request) -> None:
        pending = request.pending
        while pending:
            kind, sid = pending.pop(0)
            await self._async_call(kind, sid)

    def _start_message(self, sess: Session, start: _Message, current: Any = _NOTHING) -> _Message:
        """http.response.start with our Set-Cookie and Vary: Cookie (a new message: the
        app's is not changed)."""
        attached = sess._req.attached(sess)
        if current is _NOTHING:
            current = sess._current()
        set_cookie = self._set_cookie(sess, attached, current)
        if set_cookie is None and not sess._read:
            return start
        headers: list[tuple[bytes, bytes]] = list(start.get("headers") or ())
        if set_cookie is not None:
            headers.append((b"set-cookie", set_cookie.encode("latin-1")))
        _add_vary_cookie_bytes(headers)
        return {**start, "headers": headers}

    def _is_secure(self, scope: _Scope) -> bool:
        if scope.get("scheme") in ("https", "wss"):
            return True
        if not self.proxy:
            return False
        for name, value in scope.get("headers") or ():
            if name.lower() == b"x-forwarded-proto":
                return value.split(b",", 1)[0].strip().lower() in (b"https", b"wss")
        return False

    def _aread_store(self, sid: str) -> Any:
        """``_read_store``, without blocking the event loop."""
        return self._async_call("get_text" if self._areads_text else "get", sid)

    async def _acarry_out(self, sess: Session, action: _Action) -> None:
        """``_carry_out``, without blocking the event loop."""
        sess._carried_out(action, await self._async_call(action[0], *action[1:3]))

    def _async_call(self, method: str, *args: Any) -> Any:
        """The store's ``method(*args)``, to be awaited: its coroutine, else a call in a thread
        (under trio, for a store that waits and has sync methods: its coroutines use asyncio's
        drivers)."""
        call = self._async_calls.get(method)
        if call is not None and (method != "merge" or self._merge == self._store.merge) and (
                self._inline or _running_trio() is None or not _has_sync_methods(self._store)):
            return call(*args)
        return _in_thread(self._merge if method == "merge" else getattr(self._store, method), *args)



_LAST_BODY_TYPES = ("http.response.body", "http.response.zerocopysend")  # unless more_body
_COOKIE_DECIDED = ("the response's head is out (or the websocket accepted), and the cookie "
                   "went with it")


# ---------------------------------------------------------------- private helpers

_VERIFIED_CACHE_SIZE = 4096  # cookie values (and headers) remembered as verified, per middleware
_VERIFIED_KEY_MAX = 1024     # longer ones are checked every time rather than kept
_COOKIE_VALUE_MAX = 4096     # a longer value came from no browser: it is not read (nor decoded, nor MACed)
_RECORD_CACHE_SIZE = 1024    # record texts whose reading is remembered, per middleware
_RECORD_KEY_MAX = 2048       # longer ones are read every time
# The longest cookie lifetime accepted, either way, in seconds.  Beyond a few thousand years
# an expiry has no ISO-8601 or HTTP date; this bound keeps every one of them far inside.
_MAX_AGE = 10_000_000_000
# A stored originalMaxAge may be longer (Express checks none): up to ten times that, whose
# dates still end before the year 10000 (backwards, the options' bound stands).
_MAX_STORED_AGE_MS = 10 * _MAX_AGE * 1000
_JSON_HINT = ("store str, int, float, bool, None, and lists and dicts of them (a datetime as "
              "its .isoformat(), a set as a list, bytes as a str, an object as a dict)")
_URI_SAFE = "-_.!~*'()"   # what encodeURIComponent leaves alone, besides letters and digits
_PATH_SAFE = "/!$&'()*+,;=:@[\\]^|"  # what browsers leave alone in a path, besides quote()'s own
# A cookie path some request path, percent-encoded as _request_path encodes it, can start with.
_PATH_MATCHABLE = re.compile(r"/[-A-Za-z0-9_.~%/!$&'()*+,;=:@\[\\\]^|]*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_URL_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_ISO_MS = re.compile(r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z")
_COOKIE_VALUE = re.compile(r'("?)[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*\1')  # RFC 6265 cookie-value
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _record_files(environ: _Environ, wrapper: Any) -> Optional[list[Any]]:
    """What the server's wsgi.file_wrapper will return, when it is a function rather than a
    class (uWSGI's returns the file itself, and sends it with sendfile only if the app's
    result is that very object): the environ's wrapper is replaced by one that records.
    (A wrapper class, as most servers have, tells its bodies by their type.)"""
    if not callable(wrapper):
        return None
    made: list[Any] = []

    def file_wrapper(filelike: Any, *args: Any, **kwargs: Any) -> Any:
        body = wrapper(filelike, *args, **kwargs)
        made.append(body)
        return body
    environ["wsgi.file_wrapper"] = file_wrapper
    return made


def _is_file_wrapper(body: Any, environ: _Environ, made: Optional[list[Any]] = None) -> bool:
    """Whether the app's body is the server's wsgi.file_wrapper (which it may sendfile)."""
    if made and any(body is m for m in made):
        return True
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(body, wrapper)


def _in_use(found: Any) -> bool:
    """Whether what the session key of an environ or scope holds must be passed through: an
    outer middleware's session, or the app's own value, but not the session of a request that
    has ended (a wrapper that calls the app again with the same environ: an error page, an
    internal forward), which is loaded again."""
    if type(found) is Session and found._req is not None:  # not a detached Session()
        return found._req.context is not None
    return True


def _raw_cookie(header: str, name: str) -> Optional[str]:
    """The named cookie's value as sent (before percent-decoding), surrounding quotes removed.

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


def _request_path(environ: _Environ, length: int) -> str:
    """SCRIPT_NAME + PATH_INFO percent-encoded again, as the browser sent the path: express
    and browsers match a cookie's path against the encoded path ("/my%20app").  Only its
    first ``length`` characters are encoded (each becomes one or more): enough for a prefix
    test, and a long path costs no more than a short one."""
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return quote(path[:length].encode("latin-1", "replace"), _PATH_SAFE) if path else "/"


def _add_vary_cookie(headers: _Headers) -> None:
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


def _scope_path(scope: _Scope, length: int) -> str:
    """The request's path under the ASGI app's mount point (root_path), as WSGI's
    SCRIPT_NAME + PATH_INFO, percent-encoded again as far as ``length`` characters (see
    _request_path): servers that already put root_path in path are read as such."""
    root, path = scope.get("root_path", ""), scope.get("path", "")
    if root and path != root and not path.startswith(root if root.endswith("/") else root + "/"):
        path = root + path
    return quote(path[:length], _PATH_SAFE, errors="replace") if path else "/"


def _cookie_header(scope: _Scope) -> Optional[str]:
    """The request's Cookie header; several (HTTP/2 sends one per cookie) joined with "; "."""
    found = []
    for name, value in scope.get("headers") or ():
        if len(name) == 6 and name.lower() == b"cookie":
            found.append(value)
    if not found:
        return None
    try:
        return b"; ".join(found).decode("latin-1")
    except TypeError:  # a value that is not bytes (out of the ASGI spec): read as no cookie
        return None


def _add_vary_cookie_bytes(headers: list[tuple[bytes, bytes]]) -> None:
    """``_add_vary_cookie`` for ASGI's (bytes, bytes) headers."""
    for i, (name, value) in enumerate(headers):
        if len(name) == 4 and name.lower() == b"vary":
            fields = [f.strip().lower() for f in value.split(b",")]
            if b"cookie" not in fields and b"*" not in fields:
                headers[i] = (name, value + b", Cookie" if value.strip() else b"Cookie")
            return
    headers.append((b"vary", b"Cookie"))


def _remember(cache: dict[str, Any], key: str, value: tuple[Any, ...], size: int,
              key_max: int) -> None:
    """Keep ``value`` under ``key`` in one of the middleware's caches (verified cookies, read
    records): keys longer than ``key_max`` are not kept, and a full cache starts over."""
    if len(key) <= key_max:
        if len(cache) >= size:
            cache.clear()
        cache[key] = value


def _check_secrets(secret: Any) -> list[Secret]:
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
        _key(s)  # an empty one raises
    return list(listed)


def _check_ttl(ttl: Any, positive: bool = False) -> None:
    """A store's ``ttl`` option: seconds, >= 0 (> 0 if ``positive``), infinity meaning never;
    an int too large for a float is refused here rather than by every save."""
    if (not _is_number(ttl) or not (ttl > 0 if positive else ttl >= 0)
            or (not isinstance(ttl, float) and ttl > sys.float_info.max)):
        least = "> 0" if positive else ">= 0"
        raise ValueError(f"ttl must be a number of seconds {least} within a float's range, "
                         f"not {ttl!r:.40}")


def _max_age_ms(seconds: Any, what: str, allow_negative: bool) -> Optional[float]:
    """``seconds`` (a number or timedelta) in milliseconds, checked: finite, within _MAX_AGE."""
    if seconds is None:
        return None
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    elif not _is_number(seconds):
        raise TypeError(f"{what} must be a number of seconds, a timedelta or None, not {seconds!r}")
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError(f"{what} must be finite, not {seconds!r}")
    if seconds < 0 and not allow_negative:
        raise ValueError(f"{what} must not be negative: {seconds!r}")
    if abs(seconds) > _MAX_AGE:
        raise ValueError(f"{what} must be at most {_MAX_AGE} seconds (about 317 years) either "
                         f"way, not {seconds!r:.40}")
    ms = round(seconds * 1000, 6)  # 1.001 s is 1001 ms, not 1000.9999999999999 (a float's noise)
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
        return _in_datetime_range(_datetime_ms(value), value)
    if not isinstance(value, str):
        raise ValueError(f"cookie expires is not a date: {value!r:.60}")
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
        raise ValueError(f"cookie expires is not an ISO-8601 date: {value!r:.60}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return _in_datetime_range(_datetime_ms(parsed), value)


def _in_datetime_range(ms: int, value: Any) -> int:
    """``ms`` if Cookie.expires can give it as a UTC datetime (years 1 to 9999), else ValueError
    (an offset can push a date at either end out: "9999-12-31T23:59:59-23:59")."""
    if not _MIN_DATETIME_MS <= ms <= _MAX_DATETIME_MS:
        raise ValueError(f"cookie expires is outside the years 1 to 9999 (UTC): {value!r:.60}")
    return ms


_MIN_DATETIME_MS, _MAX_DATETIME_MS = -62135596800000, 253402300799999  # 0001-01-01, 9999-12-31 (UTC)


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
    seconds, millis = divmod(ms if type(ms) is int else int(ms), 1000)
    return _iso_second(seconds) + _ISO_MILLIS[millis]


_ISO_MILLIS = tuple(f"{millis:03d}Z" for millis in range(1000))  # an ISO date's last 4 characters


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
