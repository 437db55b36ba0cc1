"""RedisStore: sessions in Redis, readable and writable by Express's connect-redis 9.

Each session is one string key, ``prefix + sid``, holding the record's JSON,
written with ``SET key value EX seconds``.  Redis deletes the key when it
expires, so this store never has to prune.  Needs redis-py (``pip install redis``)::

    from stores.redis_store import RedisStore
    store = RedisStore(url="redis://127.0.0.1:6379/0")
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Optional

import session

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

_SCAN_COUNT = 100  # keys per SCAN step, as connect-redis's scanCount
_BATCH = 500       # keys per MGET / DEL when reading or clearing the whole store


class RedisStore(session.Store):
    """A connect-redis compatible store: key ``prefix + sid``, JSON value, Redis-side expiry.

    ``client`` is a redis-py ``Redis`` (or ``RedisCluster``: every per-session
    operation touches one key) and is never closed by the store; with ``url``
    the store makes its own client and ``close()`` closes it.  ``ttl`` (seconds)
    applies to records without ``cookie.expires``.  ``disable_touch`` makes
    ``touch`` a no-op (the key then expires ``ttl`` after its last write);
    ``disable_ttl`` writes keys without expiry and also disables touch.
    """

    def __init__(self, client: Any = None, *, url: Optional[str] = None, prefix: str = "sess:",
                 ttl: int = 86400, disable_touch: bool = False, disable_ttl: bool = False) -> None:
        redis = _import_redis()
        if client is not None and url is not None:
            raise ValueError("RedisStore takes a client or a url, not both")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValueError(f"ttl must be a positive whole number of seconds, not {ttl!r}")
        self._owns_client = client is None
        if client is None:
            client = redis.Redis.from_url(url) if url is not None else redis.Redis()
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.disable_touch = bool(disable_touch)
        self.disable_ttl = bool(disable_ttl)
        # RedisCluster's MGET must stay within one slot; its mget_nonatomic splits by slot.
        self._mget = getattr(client, "mget_nonatomic", None) or client.mget

    # -- one session -------------------------------------------------------
    def get(self, sid: str) -> Optional[dict]:
        """The record, or None. Redis's own expiry decides; a stale ``cookie.expires``
        inside a live key is kept, because connect-redis's touch moves only the key's TTL."""
        return self._decode(sid, self.client.get(self.prefix + sid))

    def set(self, sid: str, record: dict) -> None:
        """``SET key json EX ttl``; a record that has already expired is deleted instead."""
        key = self.prefix + sid
        ttl = self._ttl_for(record)
        if ttl <= 0:
            self.client.delete(key)
        elif self.disable_ttl:
            self.client.set(key, session.encode_record(record))
        else:
            self.client.set(key, session.encode_record(record), ex=ttl)

    def touch(self, sid: str, record: dict) -> None:
        """``EXPIRE key ttl``: the stored JSON (and its ``cookie.expires``) is not rewritten."""
        if self.disable_touch or self.disable_ttl:
            return
        self.client.expire(self.prefix + sid, self._ttl_for(record))

    def destroy(self, sid: str) -> None:
        self.client.delete(self.prefix + sid)

    # -- the whole store (SCAN, never KEYS, so Redis is never blocked) -------
    def ids(self) -> list:
        cut = len(self.prefix)
        return [key[cut:] for key in self._keys()]

    def all(self) -> dict:
        records: dict = {}
        cut = len(self.prefix)
        keys = list(self._keys())
        for start in range(0, len(keys), _BATCH):
            batch = keys[start:start + _BATCH]
            for key, raw in zip(batch, self._mget(batch)):
                record = self._decode(key[cut:], raw)
                if record is not None:
                    records[key[cut:]] = record
        return records

    def length(self) -> int:
        return sum(1 for _ in self._keys())

    def clear(self) -> None:
        keys = list(self._keys())
        for start in range(0, len(keys), _BATCH):
            self.client.delete(*keys[start:start + _BATCH])

    def prune(self) -> int:
        """Redis deletes expired keys itself: nothing to do."""
        return 0

    def close(self) -> None:
        """Close the client only if this store created it."""
        if self._owns_client:
            self.client.close()

    # -- helpers -----------------------------------------------------------
    def _ttl_for(self, record: dict) -> int:
        """connect-redis's rule: whole seconds to ``cookie.expires``, rounded up; else ``ttl``."""
        expires = session.expires_at(record)
        if expires is None:
            return self.ttl
        ms_left = round(expires * 1000) - int(time.time() * 1000)  # as JS: Date - Date.now()
        return -(-ms_left // 1000)

    def _keys(self) -> Iterator[str]:
        # SCAN may return a key twice (while Redis rehashes): dedupe, keep order.
        seen = dict.fromkeys(self.client.scan_iter(match=_glob_escape(self.prefix) + "*",
                                                   count=_SCAN_COUNT))
        for key in seen:
            yield key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key

    def _decode(self, sid: str, raw: Any) -> Optional[dict]:
        if raw is None:
            return None
        try:
            return session.decode_record(raw)
        except ValueError as exc:
            log.warning("ignoring unreadable session record %s%.6s...: %s", self.prefix, sid, exc)
            return None

    def __repr__(self) -> str:
        return f"<RedisStore prefix={self.prefix!r} ttl={self.ttl} client={self.client!r}>"


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH metacharacters so a prefix like ``app[1]:`` matches literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _import_redis():
    try:
        import redis
    except ImportError as exc:
        raise ImportError("RedisStore needs the redis package: pip install redis "
                          "(or pip install 'express-session-py[redis]')") from exc
    return redis
