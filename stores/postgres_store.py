"""PostgresStore: sessions in PostgreSQL, readable and writable by Express's connect-pg-simple 10.

Needs psycopg 3 (``pip install "psycopg[binary]"``)::

    from stores.postgres_store import PostgresStore
    store = PostgresStore(conninfo="postgresql://app@db.internal/app", create_table_if_missing=True)

    # or on the app's own psycopg_pool.ConnectionPool, which the store never closes:
    store = PostgresStore(pool)

With neither ``pool`` nor ``conninfo`` the store connects to ``DATABASE_URL``
(as connect-pg-simple does), else to libpq's defaults (``PGHOST``, ``PGDATABASE``...).

Schema: connect-pg-simple's ``table.sql``, byte for byte, created only when
``create_table_if_missing=True`` (its ``createTableIfMissing``)::

    CREATE TABLE "session" (
      "sid" varchar NOT NULL COLLATE "default",
      "sess" json NOT NULL,            -- the record's JSON, kept verbatim by the json type
      "expire" timestamp(6) NOT NULL   -- without time zone: local time in the session's TimeZone
    ) WITH (OIDS=FALSE);
    ALTER TABLE "session" ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE;
    CREATE INDEX "IDX_session_expire" ON "session" ("expire");

Why it is built this way:

- The statements are connect-pg-simple's: ``expire`` is ``cookie.expires``
  rounded up to the second, else now + ``ttl``, always written as
  ``to_timestamp(epoch)``, and a row is live while ``expire >=
  to_timestamp(ceil(now))``.  ``to_timestamp`` returns an instant; stored in
  a ``timestamp`` column it becomes wall-clock time in the session's TimeZone,
  and compared with one it is read back in the same zone, so both apps agree
  whatever the server's TimeZone is, as long as both connect with the server's
  default (neither sets ``PGTZ`` or ``options=-c timezone=...``).
- The record is sent and read as text (``%s::json``, ``sess::text``): the
  ``json`` type stores its input verbatim, so what Express wrote comes back
  with its key order and spacing, ``get_text`` costs no JSON work, and
  ``merge`` can compare the stored text exactly.
- Every operation is one statement on an autocommit connection: one round
  trip, and the row-level lock it takes lasts only that statement.  ``set`` is
  one upsert (``INSERT ... ON CONFLICT (sid) DO UPDATE``), atomic per row: two
  requests writing one session never leave a torn record, the later one wins.
  ``merge`` instead writes one request's changes into whatever is stored now:
  a compare-and-set on the stored text (``UPDATE ... WHERE sid = %s AND
  sess::text = <the text the request loaded> AND <live>``), one statement
  when nobody wrote since the request loaded; else re-read, the request's
  changes applied to what is stored, and retried while another writer got in
  first (each retry means another write succeeded, so writers always make
  progress), with no lock held between statements.  Its ``expire`` is
  ``GREATEST(expire, <new>)`` unless the request set the cookie's lifetime
  itself, so a concurrent request's later expiry stays (``touch`` likewise).
  A new session's merge is an upsert that only takes over an expired row.
- Under ASGI the coroutines (``aget_text``, ``amerge``...) run the same
  statements on psycopg's ``AsyncConnection``: each operation's statements are
  written once, as a generator that yields them (``_get_steps``...), and a sync
  and an async runner execute them.  With ``conninfo`` the store keeps its own
  async connections per event loop, as it keeps the sync ones (at most
  ``max_connections`` in use, idle ones popped without a lock, a lost one
  replaced and the operation tried again); those of a loop that has ended are
  closed when the next loop starts, and ``close()`` closes the rest.  Through
  the loop's thread pool a call costs about twice the CPU: ``python
  bench/asgi_overhead.py --postgres``, a returning visitor who increments, 353
  µs over bare Starlette against 535, one who only reads (a touch it skips is
  never sent) 164 against 389.  Under uvicorn with 200 users (``python
  bench/http_load.py --server uvicorn --stores postgres --users 200 --no-pin
  [--reads 0.9]``) that is 0.31 of bare's throughput against 0.15, and 0.38
  against 0.18; level (0.34 and 0.33, 0.37 and 0.37) with the server on one CPU.  On an app's ``pool`` (a sync psycopg_pool) the
  coroutines run the methods in the thread pool.  Writes run shielded: a
  request cancelled because its client went away does not cut the
  middleware's last write short, and ``aclose()`` at the app's shutdown waits
  for them.  An AsyncConnectionPool given as ``pool`` is refused: the
  coroutines make their own connections.
- Connections (with ``conninfo``): a small pool of its own, at most
  ``max_connections``, so the store needs only psycopg.  An idle connection
  is popped from a list without a lock (a semaphore around it cost 1.1 µs of
  a 30 µs get); only opening a connection, or waiting for one when all are
  busy, takes a lock.  A request waits ``connect_wait`` seconds at most, then
  fails, rather than exhaust the server's ``max_connections``.  psycopg prepares a statement after its fifth use on a
  connection, so the usual operations skip parsing and planning.
- A lost connection (server restarted, failover, idle timeout) fails the
  operation that meets it with psycopg's OperationalError naming the server;
  the store then drops every idle connection, which died the same way, and
  tries the operation once more on a new one.  So the first request after a
  restart works, a request while the server is down fails at once with a
  clear error, and the next request after it is back works.  Every operation
  is safe to repeat (an upsert, a delete, a compare-and-set; a create counts a
  live record holding exactly its text as its own only when the store resends
  it, since on a first attempt that record may be another visitor's, given the
  same ID by a ``genid`` that repeats).
- After ``fork()`` (gunicorn ``--preload``, multiprocessing) the child opens
  its own connections: parent and child sharing one socket would interleave
  their messages.  The inherited ones are kept, unused and unclosed (closing
  one would end the parent's session on the server).
- Touches that barely move the expiry are not sent: a touch, or the expiry of
  a save, that would move ``expire`` less than ``touch_slack`` (60 s) and less than 1% of
  the session's lifetime past what this process last read (the get returns it)
  or wrote is skipped, and such a save writes ``sess`` alone (unless another
  process has since moved ``expire`` earlier than that: then it keeps the later
  of the two, as every save does).  Without this, a site whose requests mostly
  only read sends two statements for each (2.01 per request against 1.1 for one
  that does not touch, measured with bench/deployed.py), and a save that moves
  the indexed ``expire`` can never be a HOT update.  A session may so end up to that much earlier than
  connect-pg-simple would end it (a minute in a day).
- Pruning: a ``prune()`` deletes expired rows ``prune_batch`` at a time, one
  short statement each, skipping rows a request holds locked (``FOR UPDATE
  SKIP LOCKED``), so it never waits for a request nor makes one wait long,
  however big the table.  Automatically, every ``prune_interval`` seconds
  (randomised to 50-150% as connect-pg-simple does, so processes spread out),
  the first store operation after it is due starts a prune in a background
  thread; ``prune_interval=False`` turns that off (prune from cron instead).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
import threading
import time
from typing import Any, Callable, Generator, Optional, Union

import session

__all__ = ["PostgresStore", "TABLE_SQL"]

log = logging.getLogger(__name__)

# connect-pg-simple 10's table.sql, verbatim; "session" is replaced by the quoted table as it does.
TABLE_SQL = '''CREATE TABLE "session" (
  "sid" varchar NOT NULL COLLATE "default",
  "sess" json NOT NULL,
  "expire" timestamp(6) NOT NULL
)
WITH (OIDS=FALSE);

ALTER TABLE "session" ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE;

CREATE INDEX "IDX_session_expire" ON "session" ("expire");
'''

# An operation's statements: see PostgresStore._get_steps.
Steps = Generator[tuple[str, tuple[Any, ...]], tuple[int, Any], Any]


class PostgresStore(session.Store):
    """A connect-pg-simple compatible store: table ``session(sid, sess json, expire timestamp)``.

    ``pool``: a psycopg_pool ``ConnectionPool`` (anything whose ``connection()``
    is a context manager yielding a psycopg connection), never closed by the
    store; ``conninfo``: a libpq URL or ``key=value`` string, for connections the
    store opens and ``close()`` closes.  ``table_name`` and ``schema_name`` are
    quoted as identifiers.  ``ttl`` (seconds) applies to records without
    ``cookie.expires``.  ``disable_touch`` makes ``touch`` a no-op.
    ``create_table_if_missing`` creates the table at construction.
    ``prune_interval``: seconds between automatic prunes, or False for none.
    The coroutine methods (ASGI) use async connections of the store's own, per
    event loop, with ``conninfo``, and run the methods in a thread with a ``pool``.
    """

    max_connections = 10   # connections the store opens itself, at most, and as many per event loop
    connect_wait = 30.0    # seconds a request waits for one of them when all are busy
    prune_batch = 1000     # expired rows deleted per statement
    touch_slack = 60.0     # seconds: a touch moving the expiry less than this is not sent
    touch_needs_record = False  # touch reads only the record's expiry (see session.Store)

    def __init__(self, pool: Any = None, *, conninfo: Optional[str] = None,
                 table_name: str = "session", schema_name: Optional[str] = None,
                 ttl: float = 86400, disable_touch: bool = False,
                 create_table_if_missing: bool = False,
                 prune_interval: Union[float, bool] = 900) -> None:
        psycopg = _import_psycopg()
        if pool is not None and conninfo is not None:
            raise ValueError("PostgresStore takes a pool or a conninfo, not both")
        if pool is not None and not callable(getattr(pool, "connection", None)):
            raise TypeError("pool must be a psycopg_pool.ConnectionPool (with a connection() "
                            f"context manager), not {type(pool).__name__}")
        if pool is not None and inspect.iscoroutinefunction(getattr(pool, "getconn", None)):
            raise TypeError("pool must be a sync psycopg_pool.ConnectionPool, not an "
                            f"{type(pool).__name__}: the store's coroutines open async "
                            "connections of their own (give it conninfo)")
        if conninfo is not None and not isinstance(conninfo, str):
            raise TypeError(f"conninfo must be a str, not {type(conninfo).__name__}")
        if not isinstance(table_name, str) or not table_name:
            raise ValueError(f"table_name must be a non-empty str, not {table_name!r}")
        if schema_name is not None and (not isinstance(schema_name, str) or not schema_name):
            raise ValueError(f"schema_name must be None or a non-empty str, not {schema_name!r}")
        session._check_ttl(ttl, positive=True)
        if prune_interval is not False and (isinstance(prune_interval, bool)
                                            or not isinstance(prune_interval, (int, float))
                                            or not prune_interval > 0):
            raise ValueError(f"prune_interval must be seconds > 0 or False, not {prune_interval!r}")
        if pool is None and conninfo is None:
            conninfo = os.environ.get("DATABASE_URL", "")
        if conninfo is not None:
            psycopg.conninfo.conninfo_to_dict(conninfo)  # a malformed string fails here, not later
        self._psycopg = psycopg
        self.pool: Any = pool
        self.conninfo = conninfo
        self.table_name, self.schema_name = table_name, schema_name
        self.ttl = ttl
        self.disable_touch = bool(disable_touch)
        self.prune_interval = prune_interval
        self.table = _quote(table_name) if schema_name is None else \
            f"{_quote(schema_name)}.{_quote(table_name)}"
        self._where = _describe(psycopg, conninfo if pool is None else getattr(pool, "conninfo", None))
        self._described = False        # _where not yet taken from a live connection
        self._idle_status = psycopg.pq.TransactionStatus.IDLE

        self._closed = False
        self._idle: list[Any] = []     # cursors of open, unused connections (pop/append are atomic)
        self._all: set[Any] = set()    # every connection this store opened and has not closed
        self._opening = threading.Condition()  # guards the two counts below
        self._open_count = 0           # connections open (idle or in use) or being opened
        self._waiting = 0              # threads waiting for a connection to come back
        # event loop -> its _LoopConnections (the coroutines')
        self._loops: dict[asyncio.AbstractEventLoop, _LoopConnections] = {}
        self._writes = session._Writes()  # coroutine writes in flight (see aclose)
        self._seen = session._SeenExpiries()  # what this process last read or wrote (see touch)
        self._prune_lock = threading.Lock()
        self._prune_thread: Optional[threading.Thread] = None
        self._prune_due = math.inf
        self._schedule_prune()

        t = self.table
        live = "expire >= to_timestamp(%s)"
        self._sql_get = f"SELECT sess::text FROM {t} WHERE sid = %s AND {live}"
        # The same, with the row's expiry in epoch seconds, which touch compares against.
        self._sql_get_expire = (f"SELECT sess::text, extract(epoch FROM expire::timestamptz) "
                                f"FROM {t} WHERE sid = %s AND {live}")
        self._sql_set = (f"INSERT INTO {t} (sess, expire, sid) SELECT %s::json, to_timestamp(%s), %s "
                         "ON CONFLICT (sid) DO UPDATE SET sess = excluded.sess, expire = excluded.expire")
        self._sql_destroy = f"DELETE FROM {t} WHERE sid = %s"
        self._sql_touch = f"UPDATE {t} SET expire = to_timestamp(%s) WHERE sid = %s AND {live}"
        self._sql_touch_later = (f"UPDATE {t} SET expire = to_timestamp(%s) WHERE sid = %s AND {live} "
                                 "AND expire < to_timestamp(%s)::timestamp")
        self._sql_all = f"SELECT sid, sess::text FROM {t} WHERE {live}"
        self._sql_ids = f"SELECT sid FROM {t} WHERE {live}"
        self._sql_length = f"SELECT count(*) FROM {t} WHERE {live}"
        self._sql_clear = f"DELETE FROM {t}"
        # The LIMITed, SKIP LOCKED subquery bounds each statement and never waits on a request.
        self._sql_prune = (f"DELETE FROM {t} WHERE sid IN (SELECT sid FROM {t} "
                           "WHERE expire < to_timestamp(%s) LIMIT %s FOR UPDATE SKIP LOCKED)")
        self._sql_cas = (f"UPDATE {t} SET sess = %s::json, expire = to_timestamp(%s) "
                         f"WHERE sid = %s AND sess::text = %s AND {live}")
        self._sql_cas_later = (f"UPDATE {t} SET sess = %s::json, "
                               "expire = GREATEST(expire, to_timestamp(%s)::timestamp) "
                               f"WHERE sid = %s AND sess::text = %s AND {live}")
        self._sql_cas_delete = f"DELETE FROM {t} WHERE sid = %s AND sess::text = %s AND {live}"
        # The data alone, expire (indexed) left as it is: a HOT update, no index entry moved;
        # only while expire is still at least the one this process last saw (another process
        # may have moved it earlier).
        self._sql_cas_data = (f"UPDATE {t} SET sess = %s::json WHERE sid = %s AND sess::text = %s "
                              f"AND {live} AND expire >= to_timestamp(%s)::timestamp")
        self._sql_delete_dead = f"DELETE FROM {t} WHERE sid = %s AND expire < to_timestamp(%s)"
        # A dead row may be taken over, never a live one: not even one holding exactly this
        # text, which may be another visitor's given the same ID.  Only a resend of this same
        # create, after its connection was lost before the reply, counts that row as its own.
        self._sql_create = (f"INSERT INTO {t} AS s (sess, expire, sid) SELECT %s::json, "
                            "to_timestamp(%s), %s ON CONFLICT (sid) DO UPDATE "
                            "SET sess = excluded.sess, expire = excluded.expire "
                            "WHERE s.expire < to_timestamp(%s)")
        self._sql_create_again = self._sql_create + " OR s.sess::text = excluded.sess::text"
        if create_table_if_missing:
            try:
                self._call(self._create_table)
            except BaseException:
                self.close()  # nobody else can: the caller never gets this store
                raise

    def __repr__(self) -> str:
        return f"<PostgresStore table {self.table} in {self._where} ttl={self.ttl}>"

    # -- one session -------------------------------------------------------
    def get(self, sid: str) -> Optional[dict[str, Any]]:
        return self._record(sid, self._run(self._get_steps, sid))

    def get_text(self, sid: str) -> Optional[str]:
        """The live record's JSON exactly as stored (``sess::text``), or None; never parsed."""
        return self._run(self._get_steps, sid)  # type: ignore[no-any-return]

    def set(self, sid: str, record: dict[str, Any]) -> None:
        """One upsert, as connect-pg-simple's; a record already expired is deleted instead."""
        self._run(self._set_steps, sid, record)

    def destroy(self, sid: str) -> None:
        self._run(self._destroy_steps, sid)

    def touch(self, sid: str, record: dict[str, Any]) -> None:
        """Move only ``expire``, and only of a live row; never earlier than it is unless
        ``record.keep_later`` is False (the request itself set the cookie's lifetime).  A
        touch that would move it less than ``touch_slack`` seconds and less than 1% of the session's
        lifetime, past what this process last read or wrote is not sent (see the module
        docstring)."""
        if not self._skips_touch(sid, record, time.time()):
            self._run(self._touch_steps, sid, record)

    def merge(self, sid: str, change: session.Change) -> bool:
        """Write one request's changes into the record as stored now; False if nothing was
        written (a new session whose ID is taken, or a loaded one that is gone)."""
        return self._run(self._merge_steps, sid, change)  # type: ignore[no-any-return]

    # -- the same, awaitable ------------------------------------------------
    async def aget(self, sid: str) -> Optional[dict[str, Any]]:
        return self._record(sid, await self._arun(self._get_steps, sid))

    async def aget_text(self, sid: str) -> Optional[str]:
        return await self._arun(self._get_steps, sid)  # type: ignore[no-any-return]

    async def aset(self, sid: str, record: dict[str, Any]) -> None:
        await self._awrite(self._set_steps, sid, record)

    async def adestroy(self, sid: str) -> None:
        await self._awrite(self._destroy_steps, sid)

    async def atouch(self, sid: str, record: dict[str, Any]) -> None:
        """``touch``; one it would skip is skipped without a connection."""
        if not self._skips_touch(sid, record, time.time()):
            await self._awrite(self._touch_steps, sid, record)

    async def amerge(self, sid: str, change: session.Change) -> bool:
        return await self._awrite(self._merge_steps, sid, change)  # type: ignore[no-any-return]

    # -- the statements of each operation ------------------------------------
    # Each is a generator: it yields (sql, params) and is sent back (rowcount, first row or
    # None), so the same steps run on a psycopg connection (_run) or an async one (_arun).
    # ``resend`` is True when the runner runs them again after a lost connection: only a
    # create tells the two apart.
    def _get_steps(self, sid: str, resend: bool = False) -> Steps:
        """The live row's text, its expiry remembered for touch; None if there is none."""
        _, row = yield self._sql_get_expire, (sid, _ceil(time.time()))
        if row is None:
            return None
        if row[1] is not None:
            self._seen.remember(sid, float(row[1]))
        return row[0]

    def _set_steps(self, sid: str, record: dict[str, Any], resend: bool = False) -> Steps:
        now = time.time()
        expire = self._expire_for(session.expires_at(record), now)
        if expire < _ceil(now):
            yield self._sql_destroy, (sid,)
        else:
            yield self._sql_set, (session.encode_record(record), expire, sid)

    def _destroy_steps(self, sid: str, resend: bool = False) -> Steps:
        yield self._sql_destroy, (sid,)

    def _touch_steps(self, sid: str, record: dict[str, Any], resend: bool = False) -> Steps:
        now = time.time()
        expire = self._expire_for(session.expires_at(record), now)
        if getattr(record, "keep_later", True):
            yield self._sql_touch_later, (expire, sid, _ceil(now), expire)
        else:
            yield self._sql_touch, (expire, sid, _ceil(now))
        self._seen.remember(sid, expire)

    def _merge_steps(self, sid: str, change: session.Change, resend: bool = False) -> Steps:
        if change.base is None:
            return (yield from self._create_steps(sid, change, resend))
        base, text, expires, keep_later = change.base, change.text, change.expires, change.keep_later
        while True:
            now = time.time()
            live = _ceil(now)
            expire = self._expire_for(expires, now)
            if keep_later:
                # The expiry barely moves (see touch): the data alone is written, unless
                # another process moved expire earlier than this one saw (0 rows).
                seen, written = self._seen.get(sid), 0
                if self._seen.barely_moves(sid, expire, now, self.touch_slack):
                    written, _ = yield self._sql_cas_data, (text, sid, base, live, seen)
                if not written:  # GREATEST(stored, new): live, whatever the new expiry
                    written, _ = yield self._sql_cas_later, (text, expire, sid, base, live)
                    if written:
                        self._seen.remember(sid, expire)
            elif expire >= live:
                written, _ = yield self._sql_cas, (text, expire, sid, base, live)
                if written:
                    self._seen.remember(sid, expire)
            else:  # written already expired: deleted, as set() does
                written, _ = yield self._sql_cas_delete, (sid, base, live)
            if written:
                return True
            # Someone wrote (or deleted) meanwhile: apply this request's changes to what is
            # there now, and compare-and-set against that.
            _, row = yield self._sql_get, (sid, live)
            if row is None or row[0] is None:  # (NULL: no session, in a table that allows it)
                return False  # destroyed, regenerated away or expired: never resurrect
            base = row[0]
            text, expires = change.apply(base)

    def _create_steps(self, sid: str, change: session.Change, resend: bool) -> Steps:
        """Insert a brand-new session's record unless a live record has this ID (on a resend,
        one holding exactly this text is this create's own, written before the reply was lost)."""
        now = time.time()
        live, expire = _ceil(now), self._expire_for(change.expires, now)
        if expire < live:  # nothing to write; the ID must still be free
            yield self._sql_delete_dead, (sid, live)
            _, row = yield self._sql_get, (sid, live)
            return row is None
        sql = self._sql_create_again if resend else self._sql_create
        created, _ = yield sql, (change.text, expire, sid, live)
        return created == 1

    def _skips_touch(self, sid: str, record: dict[str, Any], now: float) -> bool:
        """Whether ``touch`` sends nothing: touches are off, or it may not move the expiry
        earlier and would move it less than ``touch_slack`` past what this process last saw."""
        return self.disable_touch or getattr(record, "keep_later", True) and self._seen.barely_moves(
            sid, self._expire_for(session.expires_at(record), now), now, self.touch_slack)

    def _record(self, sid: str, text: Optional[str]) -> Optional[dict[str, Any]]:
        if text is None:
            return None
        try:
            return session.decode_record(text)
        except ValueError as exc:
            log.warning("PostgresStore %s: session %.6s... is not a valid record, treated as missing: %s",
                        self.table, sid, exc)
            return None

    # -- the whole store ---------------------------------------------------
    def all(self) -> dict[str, dict[str, Any]]:
        rows = self._call(lambda cur: cur.execute(self._sql_all, (_ceil(time.time()),)).fetchall())
        records = {}
        for sid, text in rows:
            try:
                if text is None:  # in a table another app made without NOT NULL
                    raise ValueError("sess is NULL")
                records[sid] = session.decode_record(text)
            except ValueError as exc:
                log.warning("PostgresStore %s: session %.6s... is not a valid record, skipped: %s",
                            self.table, sid, exc)
        return records

    def ids(self) -> list[str]:
        rows = self._call(lambda cur: cur.execute(self._sql_ids, (_ceil(time.time()),)).fetchall())
        return [sid for (sid,) in rows]

    def length(self) -> int:
        count: int = self._call(
            lambda cur: cur.execute(self._sql_length, (_ceil(time.time()),)).fetchone()[0])
        return count

    def clear(self) -> None:
        self._call(lambda cur: cur.execute(self._sql_clear))

    def prune(self) -> int:
        """Delete every expired row, ``prune_batch`` per statement; return how many."""
        removed = 0
        while True:
            count: int = self._call(self._prune_batch)
            removed += count
            if count < self.prune_batch or self._closed:
                return removed

    def close(self) -> None:
        """Stop automatic pruning and close the connections this store opened (never a pool's)."""
        self._closed = True
        thread = self._prune_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)  # at most one batch is left to run
        self._drop_idle()
        with self._opening:
            loops, self._loops = self._loops, {}
        for conns in loops.values():
            conns.drop_idle()  # connections in use close when they are given back

    async def aclose(self) -> None:
        """At an ASGI app's shutdown (its lifespan): wait for the writes in flight on the
        running event loop, which the loop would cancel as it ends, then close its
        connections.  The store stays usable; ``close()`` closes everything."""
        await self._writes.wait()
        await super().aclose()  # and its calls in threads
        if session._running_trio() is not None:
            return  # under trio the store is called in threads: no connections of this loop's
        with self._opening:
            conns = self._loops.pop(asyncio.get_running_loop(), None)
        if conns is not None:
            conns.drop_idle()

    def _after_fork_in_child(self) -> None:
        """Forget the parent's connections (closing them would end the parent's) and locks."""
        _INHERITED.extend(self._all)
        self._all, self._idle, self._loops = set(), [], {}
        self._opening = threading.Condition()
        self._open_count = self._waiting = 0
        self._prune_lock = threading.Lock()
        self._prune_thread = None
        self._schedule_prune()

    # -- private: expiry and pruning -------------------------------------
    def _expire_for(self, expires: Optional[float], now: float) -> float:
        """connect-pg-simple's ``expire``: ``cookie.expires`` rounded up to the second, else
        now + ttl rounded up; a float, so every statement keeps one parameter type."""
        return _ceil(now + self.ttl if expires is None else expires)

    def _prune_batch(self, cur: Any) -> int:
        count: int = cur.execute(self._sql_prune, (_ceil(time.time()), self.prune_batch)).rowcount
        return count

    def _schedule_prune(self) -> None:
        """Set when the next automatic prune is due: 50-150% of ``prune_interval`` from now."""
        if self.prune_interval is False or self._closed:
            self._prune_due = math.inf
        else:
            delay = self.prune_interval * (0.5 + random.random())
            self._prune_due = time.monotonic() + delay

    def _start_prune(self) -> None:
        """Prune in a background thread, unless one is running already."""
        if not self._prune_lock.acquire(blocking=False):
            return
        self._prune_due = math.inf  # until this prune ends and schedules the next

        def run() -> None:
            try:
                removed = self.prune()
                log.debug("PostgresStore %s: pruned %d expired sessions", self.table, removed)
            except self._psycopg.Error as exc:
                if not self._closed:
                    log.warning("PostgresStore %s: automatic prune failed (tried again in about "
                                "%s s): %s", self.table, self.prune_interval, exc)
            finally:
                self._schedule_prune()
                self._prune_lock.release()
        self._prune_thread = threading.Thread(target=run, name="PostgresStore-prune", daemon=True)
        self._prune_thread.start()

    # -- private: connections --------------------------------------------
    def _run(self, steps: Callable[..., Steps], *args: Any) -> Any:
        """The statements of ``steps(*args)`` on one connection (see _call); _call runs
        ``work`` a second time only to resend after a lost connection, and the steps are told."""
        calls = 0

        def work(cur: Any) -> Any:
            nonlocal calls
            calls += 1
            run = steps(*args, resend=calls > 1)
            try:
                statement = next(run)
                while True:
                    cur.execute(*statement)
                    # rownumber is None unless rows came back (description is 4 µs dearer)
                    statement = run.send((cur.rowcount, None if cur.rownumber is None else cur.fetchone()))
            except StopIteration as done:
                return done.value
        return self._call(work)

    async def _arun(self, steps: Callable[..., Steps], *args: Any) -> Any:
        """``_run`` on the event loop, over this loop's own async connections (an app's pool
        is a sync one: then in the loop's thread pool)."""
        if self.pool is not None:
            return await session._in_thread(self._run, steps, *args)
        if self._prune_due <= time.monotonic():
            self._start_prune()
        conns = self._loop_connections()
        for attempt in (0, 1):
            cur = await conns.take()
            try:
                run = steps(*args, resend=attempt == 1)
                try:
                    statement = next(run)
                    while True:
                        await cur.execute(*statement)
                        row = None if cur.rownumber is None else await cur.fetchone()
                        statement = run.send((cur.rowcount, row))
                except StopIteration as done:
                    result = done.value
            except BaseException as exc:
                self._after_error(exc, cur, attempt, conns.give, conns.discard, conns.drop_idle)
                continue  # the connection was lost: once more, on a new one
            conns.give(cur)
            return result

    async def _awrite(self, steps: Callable[..., Steps], *args: Any) -> Any:
        """``_arun`` for a write, which a cancelled request (a client that went away) must not
        cut short: it runs on, shielded, to its end (see aclose)."""
        return await self._writes.run(self._arun(steps, *args))

    def _loop_connections(self) -> "_LoopConnections":
        loop = asyncio.get_running_loop()
        conns = self._loops.get(loop)
        if conns is None:
            with self._opening:
                for ended in [old for old in self._loops if old.is_closed()]:
                    self._loops.pop(ended).drop_idle()  # asyncio.run returned: nobody can use them
                conns = self._loops.setdefault(loop, _LoopConnections(self))
        return conns

    async def _aopen(self) -> Any:
        """A new async connection's cursor (see _open; _LoopConnections counts them)."""
        if self._closed:
            raise self._psycopg.OperationalError(f"{self!r} is closed")
        try:
            conn = await self._psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except self._psycopg.Error as exc:
            raise self._error(exc) from None
        self._all.add(conn)
        self._describe(conn)
        return conn.cursor()

    def _call(self, work: Callable[[Any], Any]) -> Any:
        """``work(cursor)`` on a connection, tried once more on a new one if the
        connection turned out to be lost; errors name the table and the server."""
        if self._prune_due <= time.monotonic():
            self._start_prune()
        if self.pool is not None:
            return self._call_pool(work)
        for attempt in (0, 1):
            cur = self._take()
            try:
                result = work(cur)
            except BaseException as exc:
                self._after_error(exc, cur, attempt, self._give, self._discard, self._drop_idle)
                continue  # the connection was lost: once more, on a new one
            self._give(cur)
            return result

    def _after_error(self, exc: BaseException, cur: Any, attempt: int, give: Callable[[Any], None],
                     discard: Callable[[Any], None], drop_idle: Callable[[], None]) -> None:
        """After ``exc`` on ``cur``'s connection (from the sync pool or a loop's, whose
        give/discard/drop_idle these are): keep the connection if it is sound and idle, and
        raise, the database's errors naming the table and server; return only when the
        connection was lost on the first attempt, for the caller to try once more."""
        psycopg = self._psycopg
        if isinstance(exc, psycopg.Error) and not cur.connection.closed:
            give(cur)  # the server refused the statement: the connection is fine
            raise self._error(exc) from None
        # Lost, or not the database's error (a cancellation, change.apply raising): keep the
        # connection only if it is idle, with no statement half done.
        if cur.connection.closed or cur.connection.info.transaction_status != self._idle_status:
            discard(cur)
        else:
            give(cur)
        if not isinstance(exc, psycopg.Error):
            raise exc
        drop_idle()  # they were connected to the same, lost, server
        if attempt == 1 or not isinstance(exc, psycopg.OperationalError):
            raise self._error(exc) from None

    def _call_pool(self, work: Callable[[Any], Any]) -> Any:
        """The same over the app's pool; its ``connection()`` commits (unless autocommit)
        and replaces a broken connection."""
        for attempt in (0, 1):
            conn = None
            try:
                with self.pool.connection() as conn:
                    with conn.cursor() as cur:
                        return work(cur)
            except self._psycopg.OperationalError as exc:
                if attempt == 0 and conn is not None and conn.closed:
                    continue
                raise self._error(exc) from None
            except self._psycopg.Error as exc:
                raise self._error(exc) from None

    def _take(self) -> Any:
        """A connection's cursor, for this thread alone until ``_give`` or ``_discard``."""
        try:
            return self._idle.pop()  # the usual case, first, and without a lock
        except IndexError:
            return self._open()

    def _open(self) -> Any:
        """A new connection while fewer than ``max_connections`` are open; else wait for
        one to come back, ``connect_wait`` seconds at most."""
        deadline = time.monotonic() + self.connect_wait
        with self._opening:
            while True:
                if self._closed:
                    raise self._psycopg.OperationalError(f"{self!r} is closed")
                try:
                    return self._idle.pop()
                except IndexError:
                    pass
                if self._open_count < self.max_connections:
                    self._open_count += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._psycopg.OperationalError(
                        f"PostgresStore: all {self.max_connections} connections to {self._where} "
                        f"stayed busy for {self.connect_wait} s")
                # _give notifies without the lock's help only when it sees a waiter; the
                # short wait covers the moment between this check and the wait.
                self._waiting += 1
                self._opening.wait(min(left, 0.05))
                self._waiting -= 1
        try:
            conn = self._psycopg.connect(self.conninfo, autocommit=True)
        except BaseException as exc:
            self._closed_one()
            if isinstance(exc, self._psycopg.Error):
                raise self._error(exc) from None
            raise
        self._all.add(conn)
        self._describe(conn)
        return conn.cursor()

    def _describe(self, conn: Any) -> None:
        """Name the server in error messages as the first connection found it."""
        if not self._described:
            info = conn.info
            self._where, self._described = f"database {info.dbname!r} at {info.host}:{info.port}", True

    def _give(self, cur: Any) -> None:
        if self._closed:
            self._discard(cur)
            return
        self._idle.append(cur)
        if self._closed:  # close() emptied the idle list just before the append
            self._drop_idle()
        if self._waiting:
            with self._opening:
                self._opening.notify()

    def _discard(self, cur: Any) -> None:
        """Close a connection that is lost or no longer wanted."""
        conn = cur.connection
        self._all.discard(conn)
        try:
            conn.close()
        finally:
            self._closed_one()

    def _closed_one(self) -> None:
        with self._opening:
            self._open_count -= 1
            self._opening.notify()

    def _drop_idle(self) -> None:
        while True:
            try:
                cur = self._idle.pop()
            except IndexError:
                return
            self._discard(cur)

    def _create_table(self, cur: Any) -> None:
        """Run connect-pg-simple's table.sql unless the table exists; an advisory lock
        keeps two processes starting at once from both creating it."""
        conn = cur.connection
        with conn.transaction():
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            exists = cur.execute("SELECT to_regclass(%s::text)", (self.table,)).fetchone()[0]
            if exists is None:
                cur.execute(TABLE_SQL.replace('"session"', self.table))

    def _error(self, exc: BaseException) -> BaseException:
        """The same exception, its message naming the table and the server (once)."""
        text = str(exc.args[0]) if exc.args else str(exc)
        if "PostgresStore" in text:
            return exc
        hint = ""
        if isinstance(exc, self._psycopg.errors.UndefinedTable):
            hint = "; create it with create_table_if_missing=True or connect-pg-simple's table.sql"
        elif isinstance(exc, self._psycopg.errors.DuplicateTable):
            hint = ("; connect-pg-simple's table.sql names the key session_pkey and the index "
                    "IDX_session_expire whatever the table: give a second table its own schema_name")
        first, newline, rest = text.partition("\n")  # psycopg's LINE/caret lines stay below
        exc.args = (f"{first} (PostgresStore: table {self.table} in {self._where}{hint})"
                    f"{newline}{rest}", *exc.args[1:])
        return exc


class _LoopConnections:
    """A store's own async connections on one event loop: idle cursors popped from a list
    without a lock, as the sync ones are, and at most ``max_connections`` in use at once
    (a request waits ``connect_wait`` seconds for one, then fails)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.idle: list[Any] = []
        self.slots = asyncio.Semaphore(store.max_connections)

    async def take(self) -> Any:
        store = self.store
        if not self.slots.locked():
            await self.slots.acquire()
        else:
            try:
                if _timeout is not None:
                    async with _timeout(store.connect_wait):
                        await self.slots.acquire()
                else:  # before Python 3.11 (whose wait_for may lose a cancellation)
                    await asyncio.wait_for(self.slots.acquire(), store.connect_wait)
            except asyncio.TimeoutError:
                raise store._psycopg.OperationalError(
                    f"PostgresStore: all {store.max_connections} connections to {store._where} "
                    f"on this event loop stayed busy for {store.connect_wait} s") from None
        try:
            if store._closed:
                raise store._psycopg.OperationalError(f"{store!r} is closed")
            try:
                return self.idle.pop()
            except IndexError:
                return await store._aopen()
        except BaseException:
            self.slots.release()
            raise

    def give(self, cur: Any) -> None:
        if self.store._closed:
            self.discard(cur)
            return
        self.idle.append(cur)
        self.slots.release()
        if self.store._closed:  # close() emptied the idle list just before the append
            self.drop_idle()

    def discard(self, cur: Any) -> None:
        """Close a connection that is lost or no longer wanted, and free its slot."""
        try:
            self.store._all.discard(cur.connection)
            _close_async(cur.connection)
        finally:
            self.slots.release()

    def drop_idle(self) -> None:
        while True:
            try:
                conn = self.idle.pop().connection
            except IndexError:
                return
            self.store._all.discard(conn)
            _close_async(conn)


_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


def _close_async(conn: Any) -> None:
    """Close a psycopg AsyncConnection from any thread, with or without its event loop:
    its close() never suspends (it hands the socket to libpq's PQfinish)."""
    closing = conn.close()
    try:
        closing.send(None)
    except StopIteration:
        return
    closing.close()
    conn.pgconn.finish()


def _ceil(seconds: float) -> float:
    """Rounded up to the second, as a float: every to_timestamp() parameter keeps one type,
    so psycopg's prepared statements are reused."""
    return float(math.ceil(seconds))


def _quote(name: str) -> str:
    """An SQL identifier, quoted as connect-pg-simple quotes it."""
    return '"' + name.replace('"', '""') + '"'


def _describe(psycopg: Any, conninfo: Optional[str]) -> str:
    """Which database a conninfo names, for error messages (never the password)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo or "")
    except psycopg.Error:
        params = {}
    env = os.environ
    dbname = params.get("dbname") or env.get("PGDATABASE") or params.get("user") or env.get("PGUSER")
    host = params.get("host") or env.get("PGHOST") or "localhost"
    port = params.get("port") or env.get("PGPORT") or "5432"
    return f"database {dbname or '(libpq default)'!r} at {host}:{port}"


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg.conninfo
    except ImportError as exc:
        raise ImportError('PostgresStore needs psycopg 3: pip install "psycopg[binary]" '
                          "(or pip install 'express-session-py[postgres]')") from exc
    return psycopg


# A forked child's copies of its parent's connections: never used, never closed.
_INHERITED: list[Any] = []
