"""RedisStore: sessions in Redis, readable and writable by Express's connect-redis 9.

Each session is one string key, ``prefix + sid``, holding the record's JSON,
written with ``SET key value EX seconds``.  Redis deletes the key when it
expires, so this store never has to prune.  One store serves a WSGI app and an
ASGI app at once: its coroutine methods run on ``redis.asyncio``.  Needs
redis-py (``pip install redis``)::

    from stores.redis_store import RedisStore
    store = RedisStore(url="redis://127.0.0.1:6379/0")
"""
from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import inspect
import logging
import re
import socket
import threading
import time
from typing import Any, Awaitable, Callable, Iterator, Optional, TypeVar

import session

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

_SCAN_COUNT = 100  # keys per SCAN step, as connect-redis's scanCount
_BATCH = 500       # keys per MGET / DEL when reading or clearing the whole store


class _Script:
    """A Lua script and its SHA1, for EVALSHA (EVAL when the server does not know it yet)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()


# The merge, as one compare-and-set on one key (so it runs on Redis Cluster too).
# KEYS[1] the session's key; ARGV: mode ("new": create only; "again": the same create sent
# again by the store after its reply was lost, which counts a key holding exactly its text
# as written; "cas": write if the key holds ARGV[2]), the base, the text to write, the TTL in
# seconds ("" = no expiry, <= 0 = delete), keep_later ("1": never move the key's expiry
# earlier).  Returns 1 written, 0 refused (the ID is taken, or the session is gone), or the
# stored text when it is not the base.  The text is written as it is given: no cjson, so
# the JSON stays byte for byte express's.
_MERGE = _Script("""
local stored = redis.pcall('GET', KEYS[1])
if type(stored) == 'table' then return 0 end  -- another app's hash, list...: not a session
if ARGV[1] == 'new' then
  if stored then return 0 end
elseif ARGV[1] == 'again' then
  if stored then return stored == ARGV[3] and 1 or 0 end
elseif not stored then
  return 0
elseif stored ~= ARGV[2] then
  return stored
end
local ttl = tonumber(ARGV[4])
if stored and ttl and ARGV[5] == '1' then
  local left = redis.call('PTTL', KEYS[1])
  if left == -1 then  -- the key never expires: that is the latest expiry there is
    ttl = nil
  elseif left > ttl * 1000 then
    redis.call('SET', KEYS[1], ARGV[3], 'PX', left)
    return 1
  end
end
if not ttl then
  redis.call('SET', KEYS[1], ARGV[3])
elseif ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
return 1
""")

# GET and PTTL of one key in one round trip (one key: fine on a cluster), as one string
# "<pttl>:<value>" (a client parses one bulk string faster than a two-item array); nil if missing.
_GET_WITH_TTL = _Script("""
local value = redis.call('GET', KEYS[1])
if not value then return false end
return redis.call('PTTL', KEYS[1]) .. ':' .. value
""")

_F = TypeVar("_F", bound=Callable[..., Any])


def _shielded(write: _F) -> _F:
    """``write`` (a coroutine method) run on to its end even if its request is cancelled: a
    client that goes away cancels the response, and with it the middleware's last write,
    which must still reach Redis whole (see session._Writes and aclose)."""
    @functools.wraps(write)
    async def shielded(self: "RedisStore", *args: Any, **kwargs: Any) -> Any:
        return await self._writes.run(write(self, *args, **kwargs))
    return shielded  # type: ignore[return-value]  # with write's signature


# EXPIRE key ttl GT, for servers older than Redis 7 (a key without expiry is never shortened).
_EXPIRE_LATER = _Script("""
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left >= tonumber(ARGV[1]) * 1000 then return 0 end
return redis.call('EXPIRE', KEYS[1], ARGV[1])
""")


class RedisStore(session.Store):
    """A connect-redis compatible store: key ``prefix + sid``, JSON value, Redis-side expiry.

    ``client`` is a redis-py ``Redis`` or ``RedisCluster`` (every per-session
    operation touches one key), or their ``redis.asyncio`` counterparts, and is
    never closed by the store; with ``url`` the store makes its own clients and
    ``close()`` closes them.  ``ttl`` (seconds) applies to records without
    ``cookie.expires``.  ``disable_touch`` makes ``touch`` a no-op (the key then
    expires when its last write set it to: ``cookie.expires``, else ``ttl`` after it); ``disable_ttl`` writes keys without
    expiry and also disables touch.

    Sync and async: the methods have coroutine forms (``aget``, ``aget_text``,
    ``aset``, ``amerge``, ``atouch``, ``adestroy``) on ``redis.asyncio``, built
    from the same commands.  Their client is made lazily, one per event loop, from
    ``url`` or from the connection options of the sync ``client`` (address,
    database, credentials, TLS, timeouts, decoding); given a ``redis.asyncio``
    client, the sync methods use a sync client made the same way.  A client of a
    kind that cannot be mirrored (Sentinel, a fake) keeps working: the coroutines
    then run the sync methods in the loop's thread pool.  ``await aclose()`` at an
    ASGI app's shutdown closes the loop's connections gracefully.

    ``merge`` is one Lua script on the session's key (so it runs on Redis Cluster): it
    compares the stored JSON with the request's base and writes in the same step, or
    hands the stored JSON back for the request to merge into and send again.  WATCH /
    GET / MULTI-SET-EXEC with retry was measured beside it (``python bench/store_ops.py
    --only redis --contention``: 200-byte record, one private redis-server, 2 shared
    CPUs).  With nothing written meanwhile, the script's save runs at 96% of a plain
    ``SET EX``'s rate by CPU time and 94% by the wall clock (one round trip; the
    transaction: 39% and 61%, three round trips).  With 2 threads saving into one
    session at once: 2,368 saves/s and 0.52 retries per save, against 1,400 and 1.67
    (a touch or any write breaks a WATCH); with 8 threads: 441 against 410, 3.8
    retries against 7.7.  The script's own server time is a GET, a string compare and
    a PTTL.  (A Redis ACL user for the store needs EVALSHA and EVAL.)

    A new session's script refuses any live key, even one holding exactly its JSON:
    another visitor, given the same ID by a ``genid`` that repeats, may have written the
    same first record.  So redis-py must not resend it (after a lost reply it would find
    the key it wrote, and the request would answer 500): it is sent once, on a cluster to
    the key's node named (``target_nodes``: redis-py then sends once), else on a connection
    of the client's pool, as ``execute_command`` sends a command but without the retries
    those connections apply to every command.  If that fails, the store sends it again
    through the client, as redis-py would have: as a resend, the only case in which a key
    holding exactly its JSON counts as written, when the first attempt may have reached
    Redis; as a first attempt when it cannot have (no connection to be had, or a cluster
    that answered that the key's slot has no node).

    A read is one small script too, GET and PTTL of the key, so that ``touch`` can skip
    an EXPIRE that would move the key's expiry less than ``touch_slack`` (60 s) and less than 1% of
    the session's lifetime past what this process last read of the key: a site whose
    requests mostly only read then sends one command for most of them, not two (with 1,000
    users and 90% of requests reading, ``bench/deployed.py``: 900 EXPIREs per 1,000
    requests before).  A session may so end up to that much earlier than connect-redis
    would end it (a minute in a day).  Only such a read tells the key's expiry: a plain
    ``get`` (which a subclass that overrides it is read through) forgets it, and nothing this
    process writes is taken for it, so that an EXPIRE another client sent is never missed.
    """

    touch_slack = 60.0  # seconds: a touch moving the key's expiry less than this is not sent
    touch_needs_record = False  # touch reads only the record's expiry (see session.Store)

    def __init__(self, client: Any = None, *, url: Optional[str] = None, prefix: str = "sess:",
                 ttl: int = 86400, disable_touch: bool = False, disable_ttl: bool = False) -> None:
        redis = _import_redis()
        if client is not None and url is not None:
            raise ValueError("RedisStore takes a client or a url, not both")
        if client is not None and not callable(getattr(client, "execute_command", None)):
            raise TypeError(f"client must be a redis-py client (Redis, RedisCluster or their "
                            f"redis.asyncio twins), not a {type(client).__name__}; a URL goes "
                            f"in url=")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= session._MAX_AGE:
            raise ValueError(f"ttl must be a whole number of seconds from 1 to {session._MAX_AGE}, "
                             f"not {ttl!r:.40}")
        self._redis = redis
        self._owns_client = client is None
        self._url = url
        given_async = client is not None and _is_async(redis, client)
        if client is None:
            options = _own_client_options(redis, redis.retry.Retry)
            client = redis.Redis.from_url(url, **options) if url is not None else redis.Redis(**options)
        self.client = client
        # The sync client every sync method uses, and the async client the app gave (if any).
        self._async_given = client if given_async else None
        self._sync: Any = None if given_async else client
        self._owns_sync = not given_async and self._owns_client
        # event loop -> the async client the store made for it
        self._async_clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._lock = threading.Lock()
        # aclose() tasks scheduled by close(), kept alive
        self._closing: set[asyncio.Task[None]] = set()
        self._writes = session._Writes()  # coroutine writes in flight (see aclose)
        self.prefix = prefix
        self.ttl = ttl
        self.disable_touch = bool(disable_touch)
        self.disable_ttl = bool(disable_ttl)
        self._expire_gt = True  # EXPIRE ... GT works (Redis 7); set False on an older server
        self._seen = session._SeenExpiries()  # the keys' expiries as this process last read them
        if given_async:
            self._sync = _mirror(redis, client, to_async=False)
            self._owns_sync = self._sync is not None

    # -- one session -------------------------------------------------------
    def get(self, sid: str) -> Optional[dict[str, Any]]:
        """The record, or None. Redis's own expiry decides; a stale ``cookie.expires``
        inside a live key is kept, because connect-redis's touch moves only the key's TTL."""
        self._seen.pop(sid, None)  # a read that does not tell the expiry: touch sends EXPIRE
        try:
            raw = self._call(self._sync_client(), ("GET", self.prefix + sid))
        except self._redis.ResponseError as exc:
            self._wrong_type(sid, exc)
            return None
        return self._decode(sid, raw)

    def get_text(self, sid: str) -> Optional[str]:
        """The stored JSON as it is, or None (a value that is not UTF-8 is None, with a
        warning, as ``get`` treats it; the middleware checks everything else)."""
        try:
            reply = self._script(self._sync_client(), _GET_WITH_TTL, self.prefix + sid, ())
        except self._redis.ResponseError as exc:
            self._wrong_type(sid, exc)
            return None
        return self._text_and_ttl(sid, reply)

    def set(self, sid: str, record: dict[str, Any]) -> None:
        """``SET key json EX ttl``; a record that has already expired is deleted instead."""
        self._call(self._sync_client(), self._set_command(sid, record))

    def merge(self, sid: str, change: session.Change) -> bool:
        """Write one request's change as one compare-and-set on the key (see the class
        docstring); False, writing nothing, for a new session whose ID is taken or a
        session that is no longer in Redis."""
        client, key = self._sync_client(), self.prefix + sid
        args = self._merge_args(change, change.base, change.text, change.expires)
        if change.base is None:
            return self._create(client, key, args)
        while True:
            reply = self._script(client, _MERGE, key, args)
            if type(reply) is not bytes:
                return reply == 1  # 1 written, 0 refused
            args = self._merge_again(change, reply)

    def touch(self, sid: str, record: dict[str, Any]) -> None:
        """``EXPIRE key ttl`` (``GT`` unless the request set the cookie's lifetime itself, so
        another request's later expiry is kept): the stored JSON is not rewritten.  Not sent
        when it would move the key's expiry less than ``touch_slack`` seconds and less than 1% of the
        session's lifetime, past what this process last read of the key."""
        if self.disable_touch or self.disable_ttl:
            return
        client, key, ttl = self._sync_client(), self.prefix + sid, self._ttl_for(record)
        if not getattr(record, "keep_later", True):
            self._call(client, ("EXPIRE", key, ttl))
            return
        if self._barely(sid, ttl):
            return
        if self._expire_gt:
            try:
                self._call(client, ("EXPIRE", key, ttl, "GT"))
                return
            except self._redis.ResponseError as exc:
                self._without_expire_gt(exc)
        self._script(client, _EXPIRE_LATER, key, (ttl,))

    def destroy(self, sid: str) -> None:
        self._call(self._sync_client(), ("DEL", self.prefix + sid))

    # -- the same, awaitable (redis.asyncio) --------------------------------
    async def aget(self, sid: str) -> Optional[dict[str, Any]]:
        client = self._async_client()
        if client is None:
            return await session._in_thread(self.get, sid)
        self._seen.pop(sid, None)
        try:
            raw = await self._acall(client, ("GET", self.prefix + sid))
        except self._redis.ResponseError as exc:
            self._wrong_type(sid, exc)
            return None
        return self._decode(sid, raw)

    async def aget_text(self, sid: str) -> Optional[str]:
        client = self._async_client()
        if client is None:
            return await session._in_thread(self.get_text, sid)
        try:
            reply = await self._ascript(client, _GET_WITH_TTL, self.prefix + sid, ())
        except self._redis.ResponseError as exc:
            self._wrong_type(sid, exc)
            return None
        return self._text_and_ttl(sid, reply)

    @_shielded
    async def aset(self, sid: str, record: dict[str, Any]) -> None:
        client = self._async_client()
        if client is None:
            return await session._in_thread(self.set, sid, record)
        await self._acall(client, self._set_command(sid, record))

    @_shielded
    async def amerge(self, sid: str, change: session.Change) -> bool:
        client = self._async_client()
        if client is None:
            return await session._in_thread(self.merge, sid, change)
        key = self.prefix + sid
        args = self._merge_args(change, change.base, change.text, change.expires)
        if change.base is None:
            return await self._acreate(client, key, args)
        while True:
            reply = await self._ascript(client, _MERGE, key, args)
            if type(reply) is not bytes:
                return reply == 1  # 1 written, 0 refused
            args = self._merge_again(change, reply)

    @_shielded
    async def atouch(self, sid: str, record: dict[str, Any]) -> None:
        client = self._async_client()
        if client is None:
            return await session._in_thread(self.touch, sid, record)
        if self.disable_touch or self.disable_ttl:
            return
        key, ttl = self.prefix + sid, self._ttl_for(record)
        if not getattr(record, "keep_later", True):
            await self._acall(client, ("EXPIRE", key, ttl))
            return
        if self._barely(sid, ttl):
            return
        if self._expire_gt:
            try:
                await self._acall(client, ("EXPIRE", key, ttl, "GT"))
                return
            except self._redis.ResponseError as exc:
                self._without_expire_gt(exc)
        await self._ascript(client, _EXPIRE_LATER, key, (ttl,))

    @_shielded
    async def adestroy(self, sid: str) -> None:
        client = self._async_client()
        if client is None:
            return await session._in_thread(self.destroy, sid)
        await self._acall(client, ("DEL", self.prefix + sid))

    # -- the whole store (SCAN, never KEYS, so Redis is never blocked) -------
    def ids(self) -> list[str]:
        cut = len(self.prefix)
        return [key[cut:] for key in self._keys()]

    def all(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        cut = len(self.prefix)
        keys = list(self._keys())
        client = self._sync_client()
        # RedisCluster's MGET must stay within one slot; its mget_nonatomic splits by slot.
        mget = getattr(client, "mget_nonatomic", None) or client.mget
        for start in range(0, len(keys), _BATCH):
            batch = keys[start:start + _BATCH]
            for key, raw in zip(batch, mget(batch)):
                record = self._decode(key[cut:], raw)
                if record is not None:
                    records[key[cut:]] = record
        return records

    def length(self) -> int:
        return sum(1 for _ in self._keys())

    def clear(self) -> None:
        keys = list(self._keys())
        for start in range(0, len(keys), _BATCH):
            self._sync_client().delete(*keys[start:start + _BATCH])

    def prune(self) -> int:
        """Redis deletes expired keys itself: nothing to do."""
        return 0

    def close(self) -> None:
        """Close the clients this store made (never the one it was given).  An async client
        is closed on its own event loop once the store's writes in flight there have ended
        (they run on to their end; see aclose): at once if that loop is idle, else as soon
        as the loop gets to it; one whose loop has been closed has its sockets closed.  The
        store's next call connects again, as redis-py's clients do."""
        with self._lock:
            clients, self._async_clients = self._async_clients, {}
        for loop, client in clients.items():
            _close_on(loop, client, self._writes, self._closing)
        if self._owns_sync and self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        """Wait for the writes in flight on the running event loop (which the loop would cancel
        as it ends), then close the connections the store opened for it, gracefully: at an
        ASGI app's shutdown, or before ``asyncio.run`` returns.  Other loops' clients and the
        sync client are left to ``close()``; the store stays usable either way."""
        await self._writes.wait()
        await super().aclose()  # and its calls in threads
        if session._running_trio() is not None:
            return  # under trio the store is called in threads: no client of this loop's
        with self._lock:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _after_fork_in_child(self) -> None:
        """Forget the async clients of the parent's event loops: a child that closed one would
        run its copy of the parent's loop, whose epoll it shares with the parent, and take the
        parent's sockets out of it.  (redis-py's pools see the fork themselves.)"""
        _INHERITED.extend(self._async_clients.values())
        self._async_clients, self._closing = {}, set()
        self._lock = threading.Lock()

    # -- the commands, shared by the sync and async methods ------------------
    def _set_command(self, sid: str, record: dict[str, Any]) -> tuple[Any, ...]:
        key = self.prefix + sid
        ttl = self._ttl_for(record)
        if ttl <= 0:
            return ("DEL", key)
        if self.disable_ttl:
            return ("SET", key, session.encode_record(record))
        return ("SET", key, session.encode_record(record), "EX", ttl)

    def _merge_args(self, change: session.Change, base: Any, text: str,
                    expires: Optional[float]) -> tuple[Any, ...]:
        """The merge script's arguments (see _MERGE) to write ``text`` over ``base``."""
        ttl = self._ttl_of(expires)
        return ("new" if base is None else "cas", b"" if base is None else base, text,
                "" if self.disable_ttl and ttl > 0 else ttl, "1" if change.keep_later else "0")

    def _merge_again(self, change: session.Change, stored: bytes) -> tuple[Any, ...]:
        """Someone else wrote since this request loaded: its change merged into what is
        stored now, to compare-and-set against exactly those bytes.  (A value that is not
        UTF-8 is no session: this request's record replaces it, as apply() does for bad JSON.)"""
        text = _utf8(stored)
        if text is None:
            return self._merge_args(change, stored, change.text, change.expires)
        return self._merge_args(change, stored, *change.apply(text))

    def _without_expire_gt(self, exc: Exception) -> None:
        """Redis refused ``EXPIRE ... GT``: if as a server older than 7 does, use the script."""
        if not _unsupported(exc):
            raise exc
        self._expire_gt = False
        log.info("this Redis has no EXPIRE ... GT (Redis < 7): touch uses a script instead")

    def _ttl_for(self, record: dict[str, Any]) -> int:
        """connect-redis's rule: whole seconds to ``cookie.expires``, rounded up; else ``ttl``."""
        return self._ttl_of(session.expires_at(record))

    def _ttl_of(self, expires: Optional[float]) -> int:
        """The same rule from an expiry in epoch seconds (None: the store's ``ttl``)."""
        if expires is None:
            return self.ttl  # type: ignore[return-value]  # an int (__init__ checks); Store's is float
        ms_left = round(expires * 1000) - int(time.time() * 1000)  # as JS: Date - Date.now()
        return -(-ms_left // 1000)

    # -- sending them -------------------------------------------------------
    def _call(self, client: Any, command: tuple[Any, ...]) -> Any:
        # Replies come as bytes whatever the client's decode_responses: the store decodes.
        return client.execute_command(*command, **{_NEVER_DECODE: []})

    async def _acall(self, client: Any, command: tuple[Any, ...]) -> Any:
        return await client.execute_command(*command, **{_NEVER_DECODE: []})

    def _script(self, client: Any, script: _Script, key: str, args: tuple[Any, ...],
                send: Optional[Callable[..., Any]] = None) -> object:
        """EVALSHA, or EVAL when the server does not have the script yet (it keeps it); each
        sent by ``send`` (the client's way, ``_call``, unless told)."""
        send = send or self._call
        try:
            return send(client, ("EVALSHA", script.sha, 1, key) + args)
        except self._redis.exceptions.NoScriptError:
            return send(client, ("EVAL", script.text, 1, key) + args)

    async def _ascript(self, client: Any, script: _Script, key: str, args: tuple[Any, ...],
                       send: Optional[Callable[..., Awaitable[Any]]] = None) -> object:
        send = send or self._acall
        try:
            return await send(client, ("EVALSHA", script.sha, 1, key) + args)
        except self._redis.exceptions.NoScriptError:
            return await send(client, ("EVAL", script.text, 1, key) + args)

    # A new session's script, sent once; if that fails, sent again through the client as
    # redis-py would have, as "again" when it may have written (see the class docstring).
    def _create(self, client: Any, key: str, args: tuple[Any, ...]) -> bool:
        try:
            reply = self._script(client, _MERGE, key, args, self._send_once)
        except _Unsent:
            reply = self._script(client, _MERGE, key, args)
        except self._resent_after(client):  # its reply may be lost after it wrote
            reply = self._script(client, _MERGE, key, ("again", *args[1:]))
        return reply == 1

    async def _acreate(self, client: Any, key: str, args: tuple[Any, ...]) -> bool:
        try:
            reply = await self._ascript(client, _MERGE, key, args, self._asend_once)
        except _Unsent:
            reply = await self._ascript(client, _MERGE, key, args)
        except self._resent_after(client):
            reply = await self._ascript(client, _MERGE, key, ("again", *args[1:]))
        return reply == 1

    def _send_once(self, client: Any, command: tuple[Any, ...]) -> Any:
        """``command`` sent once: a cluster client sends it once when told its node
        (``target_nodes``); a Redis client's retries belong to its pool's connections, for
        every command, so it goes on one of them as execute_command sends it, bar the retry.
        _Unsent when it certainly did not reach Redis."""
        if isinstance(client, self._redis.cluster.RedisCluster):
            try:
                return client.execute_command(
                    *command, target_nodes=client.get_node_from_key(command[3]), **{_NEVER_DECODE: []})
            except self._unsent_on_a_cluster as exc:
                raise _Unsent from exc
        pool = getattr(client, "connection_pool", None)
        if pool is None:  # not redis-py's client: its own way
            return self._call(client, command)
        try:
            conn = _take(pool, command[0])
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            raise _Unsent from exc  # no connection, or none could be made: nothing was sent
        try:
            conn.send_command(*command)
            return client.parse_response(conn, command[0], **{_NEVER_DECODE: []})
        except self._redis.ResponseError:
            raise  # Redis answered: the connection is sound
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    async def _asend_once(self, client: Any, command: tuple[Any, ...]) -> Any:
        """``_send_once`` on redis.asyncio."""
        if isinstance(client, self._redis.asyncio.RedisCluster):
            try:
                await client.initialize()  # it learns which node has which key on first use
                return await client.execute_command(
                    *command, target_nodes=client.get_node_from_key(command[3]), **{_NEVER_DECODE: []})
            except self._unsent_on_a_cluster as exc:
                raise _Unsent from exc
        pool = getattr(client, "connection_pool", None)
        if pool is None:
            return await self._acall(client, command)
        try:
            conn = await _take(pool, command[0])
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            raise _Unsent from exc
        try:
            await conn.send_command(*command)
            return await client.parse_response(conn, command[0], **{_NEVER_DECODE: []})
        except self._redis.ResponseError:
            raise
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

    @property
    def _unsent_on_a_cluster(self) -> tuple[type[Exception], ...]:
        """A cluster's errors that say the command ran nowhere: the slot has no node (the
        cluster is down or resharding), or no connection to its node could be had."""
        exceptions = self._redis.exceptions
        return (exceptions.ClusterDownError, exceptions.SlotNotCoveredError,
                exceptions.MaxConnectionsError)

    def _resent_after(self, client: Any) -> tuple[type[Exception], ...]:
        """The errors after which redis-py would have resent a command to ``client``: after
        one that may have reached Redis, the store resends a create as "again"."""
        redis = self._redis
        return getattr(client, "ERRORS_ALLOW_RETRY", (redis.ConnectionError, redis.TimeoutError))

    def _sync_client(self) -> Any:
        client = self._sync
        if client is None:
            raise TypeError(f"RedisStore cannot make a sync client from {self.client!r}: give "
                            "it a redis.Redis (or RedisCluster) for sync use")
        return client

    def _async_client(self) -> Any:
        """The async client for the running event loop: the app's, else the store's own for
        this loop, made on first use; None when there is no way to make one."""
        if self._async_given is not None:
            return self._async_given
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is not None:
            return client
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                redis = self._redis
                options = _own_client_options(redis, redis.asyncio.retry.Retry)
                if self._url is not None:
                    client = redis.asyncio.Redis.from_url(self._url, **options)
                elif self._owns_client:
                    client = redis.asyncio.Redis(**options)
                else:
                    client = _mirror(redis, self.client, to_async=True)
                    if client is None:
                        return None
                # Loops that have ended (asyncio.run returned) take their clients with them;
                # their sockets are closed here, as those loops no longer can.
                for old in [old for old in self._async_clients if old.is_closed()]:
                    _close_sockets(self._async_clients.pop(old))
                self._async_clients[loop] = client
        return client

    # -- helpers -----------------------------------------------------------
    def _keys(self) -> Iterator[str]:
        # SCAN may return a key twice (while Redis rehashes): dedupe, keep order.
        seen = dict.fromkeys(self._sync_client().scan_iter(match=_glob_escape(self.prefix) + "*",
                                                          count=_SCAN_COUNT))
        for key in seen:
            yield key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key

    def _text_and_ttl(self, sid: str, reply: Any) -> Optional[str]:
        """_GET_WITH_TTL's reply: the key's text, its expiry remembered for touch."""
        if reply is None:
            return None
        at = reply.index(b":" if type(reply) is bytes else ":")
        left = int(float(reply[:at]))  # Lua writes a PTTL of 1e14 ms or more as 4.6e+18
        if left > 0:
            self._seen.remember(sid, time.time() + left / 1000)
        return self._text(sid, reply[at + 1:])

    def _barely(self, sid: str, ttl: int) -> bool:
        """Whether a touch to ``ttl`` seconds from now would move the key's expiry too little
        to be worth a command (see the class docstring)."""
        now = time.time()
        return self._seen.barely_moves(sid, now + ttl, now, self.touch_slack)

    def _wrong_type(self, sid: str, exc: Exception) -> None:
        """Log a warning when Redis refused to read the key because another app keeps a
        hash, a list... under it (WRONGTYPE): the session counts as missing; any other
        error is raised again."""
        if "WRONGTYPE" not in str(exc):
            raise exc
        log.warning("ignoring session record %s%.6s...: the key is not a string", self.prefix, sid)

    def _text(self, sid: str, raw: Any) -> Optional[str]:
        if raw is None:
            return None
        text = _utf8(raw)
        if text is None:
            log.warning("ignoring unreadable session record %s%.6s...: not UTF-8", self.prefix, sid)
        return text

    def _decode(self, sid: str, raw: Any) -> Optional[dict[str, Any]]:
        if raw is None:
            return None
        try:
            return session.decode_record(raw)
        except ValueError as exc:
            log.warning("ignoring unreadable session record %s%.6s...: %s", self.prefix, sid, exc)
            return None

    def __repr__(self) -> str:
        return f"<RedisStore prefix={self.prefix!r} ttl={self.ttl} client={self.client!r}>"


_NEVER_DECODE = "NEVER_DECODE"  # redis-py's per-command option (redis.client.NEVER_DECODE)


class _Unsent(Exception):
    """A create's first attempt failed before it reached Redis (see RedisStore._send_once)."""


def _own_client_options(redis: Any, retry_class: type) -> dict[str, Any]:
    """The retry policy of the clients the store makes: a command that meets a connection
    the server closed (a restart) is sent once more, on a new one.  Every command the store
    sends may be sent twice (a create is sent apart: see _send_once); without this, each
    connection pooled before a restart failed its next request under redis.asyncio."""
    error = redis.exceptions.ConnectionError
    return {"retry": retry_class(redis.backoff.NoBackoff(), 1, (error,)), "retry_on_error": [error]}


def _take(pool: Any, command_name: str) -> Any:
    """A connection from a redis-py pool (a coroutine's, from an async pool)."""
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3 takes the command's name
        return pool.get_connection(command_name)


def _utf8(raw: Any) -> Optional[str]:
    """A reply as text; None when it is not UTF-8."""
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _unsupported(exc: Exception) -> bool:
    """Whether Redis refused a command's options as an older server does."""
    message = str(exc).lower()
    return any(words in message for words in ("wrong number of arguments", "syntax error",
                                               "unsupported option"))


def _close_on(loop: asyncio.AbstractEventLoop, client: Any, writes: session._Writes,
              closing: set[asyncio.Task[None]]) -> None:
    """Close an async client on its own event loop, after the ``writes`` in flight there,
    from any thread, without blocking."""
    if loop.is_closed():
        _close_sockets(client)
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task = loop.create_task(_close_after(writes, client))
        closing.add(task)
        task.add_done_callback(closing.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(_close_after(writes, client), loop)
    elif running is None:
        loop.run_until_complete(_close_after(writes, client))


def _close_sockets(client: Any) -> None:
    """Close the sockets of an async client whose event loop has been closed: its transports
    need that loop to close them, so they would stay open until the garbage collector
    collects them.  Each socket object is closed, not its file descriptor, so the transport
    that keeps it cannot close a reused descriptor later.  What is not found where
    redis-py and asyncio keep it (another version, uvloop) is left to the garbage collector."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        connections = [*getattr(pool, "_available_connections", ()),
                       *getattr(pool, "_in_use_connections", ())]
    else:  # a RedisCluster: its nodes' own, and its startup nodes' (where its aclose() looks)
        manager = getattr(client, "nodes_manager", None)
        nodes: dict[int, Any] = {}
        for known in (getattr(manager, "nodes_cache", None),
                      getattr(manager, "startup_nodes", None)):
            if isinstance(known, dict):
                nodes.update((id(node), node) for node in known.values())
        connections = [conn for node in nodes.values()
                       for conn in getattr(node, "_connections", ())]
    for conn in connections:
        transport = getattr(getattr(conn, "_writer", None), "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        sock = getattr(sock, "_sock", sock)  # asyncio hands out a TransportSocket wrapper
        if isinstance(sock, socket.socket):
            sock.close()


async def _close_after(writes: session._Writes, client: Any) -> None:
    """``client.aclose()`` once the writes in flight on this loop have ended: it disconnects
    the connections in use too, and those writes must reach Redis whole."""
    await writes.wait()
    await client.aclose()


# -- a client of the other kind, sync <-> redis.asyncio, with the same connection options -------

# Connection options that are plain values, meaning the same to both kinds of client.
_OPTIONS = ("host", "port", "path", "db", "username", "password", "socket_timeout",
            "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
            "socket_type", "retry_on_timeout", "retry_on_error", "encoding", "encoding_errors",
            "decode_responses", "socket_read_size", "health_check_interval", "client_name",
            "lib_name", "lib_version", "driver_info", "credential_provider", "protocol",
            "legacy_responses")


def _is_async(redis: Any, client: Any) -> bool:
    return isinstance(client, (redis.asyncio.Redis, redis.asyncio.RedisCluster))


def _mirror(redis: Any, client: Any, *, to_async: bool) -> Any:
    """A new client of the other kind on the same server(s), with its own pool and the
    given client's connection options; None for a client that cannot be mirrored."""
    if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.RedisCluster)):
        return _mirror_cluster(redis, client, to_async)
    pool: Any = getattr(client, "connection_pool", None)
    sync_pools = (redis.ConnectionPool, redis.BlockingConnectionPool)
    async_pools = (redis.asyncio.ConnectionPool, redis.asyncio.BlockingConnectionPool)
    if type(pool) not in (sync_pools if to_async else async_pools):
        return None
    sync_conns = (redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection)
    async_conns = (redis.asyncio.Connection, redis.asyncio.SSLConnection,
                   redis.asyncio.UnixDomainSocketConnection)
    mine, theirs = (sync_conns, async_conns) if to_async else (async_conns, sync_conns)
    if pool.connection_class not in mine:
        return None
    connection_class = theirs[mine.index(pool.connection_class)]
    options = _options(redis, pool.connection_kwargs, _parameters(connection_class), to_async)
    blocking = type(pool) in (redis.BlockingConnectionPool, redis.asyncio.BlockingConnectionPool)
    pool_class = (async_pools if to_async else sync_pools)[blocking]
    if blocking:
        options["timeout"] = pool.timeout
    new_pool = pool_class(connection_class=connection_class, max_connections=pool.max_connections,
                          **options)
    return (redis.asyncio.Redis if to_async else redis.Redis).from_pool(new_pool)


def _mirror_cluster(redis: Any, client: Any, to_async: bool) -> Any:
    if to_async:
        kwargs, node_class, cluster_class = (client.nodes_manager.connection_kwargs,
                                             redis.asyncio.cluster.ClusterNode,
                                             redis.asyncio.RedisCluster)
    else:
        kwargs, node_class, cluster_class = (client.connection_kwargs, redis.cluster.ClusterNode,
                                             redis.cluster.RedisCluster)
    nodes = client.nodes_manager.startup_nodes
    nodes = nodes.values() if isinstance(nodes, dict) else nodes
    accepted = _parameters(redis.asyncio.SSLConnection if to_async else redis.SSLConnection)
    accepted = {name for name in accepted if name not in ("host", "port", "path", "socket_type")}
    options = _options(redis, kwargs, accepted, to_async)
    if kwargs.get("connection_class") in (redis.SSLConnection, redis.asyncio.SSLConnection):
        options["ssl"] = True
    return cluster_class(startup_nodes=[node_class(node.host, node.port) for node in nodes],
                         **options)


def _options(redis: Any, kwargs: dict[str, Any], accepted: set[str],
             to_async: bool) -> dict[str, Any]:
    """The plain options in ``kwargs`` that the other kind accepts, and the retry policy
    rebuilt for it (the two kinds' Retry classes differ)."""
    options = {name: value for name, value in kwargs.items()
               if (name in _OPTIONS or name.startswith("ssl_")) and name in accepted}
    retry = kwargs.get("retry")
    if retry is not None:
        retry_class = redis.asyncio.retry.Retry if to_async else redis.retry.Retry
        try:
            options["retry"] = retry_class(copy.copy(retry._backoff), retry._retries,
                                           retry._supported_errors)
        except AttributeError:
            pass  # an unknown Retry: redis-py's default policy applies
    return options


def _parameters(cls: type) -> set[str]:
    """The keyword arguments a connection class accepts, through its ``**kwargs`` chain."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names - {"self", "args", "kwargs"}


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH metacharacters so a prefix like ``app[1]:`` matches literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.cluster
        import redis.backoff
        import redis.retry
        import redis.asyncio.retry
        import redis.asyncio.cluster
    except ImportError as exc:
        raise ImportError("RedisStore needs the redis package: pip install redis "
                          "(or pip install 'express-session-py[redis]')") from exc
    # 5.0.1: the asyncio clients' aclose(); before 4.5.4, a cancelled command could leave
    # its reply on the connection, for the next command to take (another user's session).
    found = tuple(int(part) for part in re.findall(r"\d+", redis.__version__)[:3])
    if found < (5, 0, 1):
        raise ImportError(f"RedisStore needs redis-py 5.0.1 or newer, not {redis.__version__}: "
                          "pip install -U redis")
    return redis


# A forked child's copies of its parent's async clients: never used, never closed.
_INHERITED: list[Any] = []
