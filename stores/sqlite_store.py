"""SQLiteStore: sessions in one SQLite file, shared by the threads and processes of one machine.

Needs nothing but Python (the stdlib ``sqlite3``, SQLite 3.24 or newer)::

    from stores.sqlite_store import SQLiteStore
    store = SQLiteStore("/var/lib/myapp/sessions.db")   # or ":memory:" for tests

Schema (created when missing; ``sessions`` is the ``table`` argument)::

    CREATE TABLE sessions (
        sid     TEXT PRIMARY KEY NOT NULL,  -- the session ID
        expires REAL NOT NULL,              -- epoch seconds: cookie.expires, else last write + ttl
        data    TEXT NOT NULL               -- the record's JSON, byte for byte as express writes it
    ) WITHOUT ROWID;
    CREATE INDEX sessions_expires ON sessions (expires);

Why it is built this way:

- ``WITHOUT ROWID``: rows live in the primary key's b-tree, so a get is one
  b-tree search, not a search of the key's index and then of the table (a get
  costs about 7% less).  Every statement goes by ``sid``, so a table made
  without it (by an older version) works the same.
- ``journal_mode=WAL``: readers never wait for the writer nor block it, and a
  commit is one append to the ``-wal`` file.  SQLite still allows one writer
  at a time across all processes.
- ``synchronous=NORMAL``: under WAL a commit has been handed to the operating
  system (``write()``) before ``set()`` returns, so a crashed or SIGKILLed
  process loses nothing and the file is never corrupted; only a power loss or
  kernel crash can roll back the last few commits (logging those users out).
  FULL would add an ``fsync`` to every ``set()``: about 180 µs instead of 28 µs
  on the machine this was measured on.  For sessions that trade is right.
  Subclass and set ``synchronous = "FULL"`` if it is not for you.
- Waiting for the file's lock: threads of one process write one at a time,
  queued on the store's own ``threading.Lock`` (made at first use, so that it
  is green under gevent or eventlet whenever they patched); between processes, a statement
  that finds the file locked is retried after sleeps of 0.1 ms doubling to
  2 ms, for at most ``busy_timeout`` (5 s), then ``sqlite3.OperationalError``
  ("database is locked", naming the file) reaches the caller and the request
  fails with 500.  SQLite's own busy handler (off: the connections have
  ``timeout=0``) sleeps 1, 2, 5, 10 ... 100 ms whenever two writers meet: with
  4 waitress threads and 200 users saving on every request it slept once per
  request (``strace -f -c``: 1.0 ``clock_nanosleep`` per request, 27 ``futex``;
  with the lock: 0 sleeps, 29 ``futex``), and the lock hands the file over as
  soon as it is free.  (An earlier version measured the lock as halving the rate
  of two writing threads; that was before a save became one statement.)  Without
  the lock, threads would meet the file's lock and wait it out with the short
  sleeps: measured (``bench/deployed.py --stores sqlite --peers none``, two runs
  each, interleaved), that gains on two CPUs shared with the load generator
  (every request writing: 0.86-0.94 of the hand-written floor against 0.79-0.83)
  but loses on one (waitress: 0.84-0.86 against 0.99-1.01; gunicorn 0.82-0.92
  against 0.91), and threads saving as fast as they can lose a quarter of
  their rate (8 threads: 20,000 merges/s against 27,000).  The lock stays.
- ``mmap_size`` (1 GiB of address space, not memory): reads map the file
  instead of copying pages through ``read()`` into each connection's cache, so
  a get among 1,000,000 records costs about 1.2x one among 1,000, not 1.6x,
  and processes share one copy in the OS page cache.  The price: a failing
  disk then crashes the process (SIGBUS) instead of raising.  Writes do not
  use the map.  Set ``mmap_size = 0`` in a subclass to turn it off.
- Connections: a pool with one connection per thread that is using the store
  at that moment, each with one cursor kept for it (a fresh cursor per
  statement is 0.3 µs of a 5 µs get).  A per-thread connection (``threading.local``) would leak
  one connection per request under servers that start a thread per request
  (``socketserver.ThreadingMixIn``); a pooled connection is only ever used by
  one thread at a time, which is what ``check_same_thread=False`` requires.  At
  most ``max_idle`` (32, asyncio's largest default thread pool) stay open between
  uses: a burst of such threads would otherwise keep its file descriptors for good.
- Touches that barely move the expiry are not written: a touch, or the
  ``expires`` of a save, that would move it less than ``touch_slack`` (60 s) and
  less than 1% of the session's lifetime past what this process last read or wrote is
  skipped (a save then writes its data alone, unless another process has since
  moved the stored expiry earlier than that: then it keeps the later of the
  two, as every save does).  Every write of ``expires`` also moves its index
  entry, which costs half as much again as the rest of the UPDATE (22 µs
  against 15 µs), and without this a site whose requests mostly read would
  write on every request (1,001 writes per 1,000 requests of which 90% only
  read, against 103 now).  The price: a session may end up to that much
  earlier than express-session would end it (a minute in a day).
- ``merge`` (concurrent requests on one session) is an optimistic
  compare-and-set: ``UPDATE ... SET data = ?, expires = ? WHERE sid = ? AND
  data = <the text the request loaded> AND expires > <now>``; on 0 rows it
  reads the row again, applies the request's changes to what is stored and
  tries again (each miss means another write landed, so writers always make
  progress); no row: the session is gone and is not written back.  Nobody
  having written since the request loaded, that is one statement, as ``set``
  is: 99% of set's rate (17.3 µs against 17.1), where ``BEGIN IMMEDIATE``;
  SELECT; UPDATE; COMMIT reaches 86%.  Under contention
  (``bench/sqlite_merge.py``: writers each setting their own key 300 times in
  one record, 1 ms between load and save, nearly every merge meeting a
  conflict) both keep every key at the same rate, within 6% (two runs; 8
  threads: 5,550 and 3,890 merges/s against 5,550 and 4,150; 4 processes:
  2,880 and 2,910 against 2,980 and 2,770), but the compare-and-set holds the
  write lock for one statement, so its slowest merge took 9-15 ms against
  19-104 (8 threads) and 5-6 against 7-9 (4 processes): a writer waiting for
  a transaction sleeps in the busy handler (1, 2, 5, 10... ms) while it runs
  four statements and the Python between them.  The compare-and-set first
  with the transaction on a conflict gained nothing (as fast, 34-79 ms at
  worst with 8 threads).
  A new session is ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires <=
  <now>``: written over an expired row, never over a live one.
- Pruning: every ``set()`` or ``merge()`` may delete one batch of at most ``prune_batch``
  expired rows, found through the ``expires`` index, in its own short
  transaction; then not again for ``prune_interval`` seconds unless the batch
  was full.  No request pays for a big delete and expired rows do not pile up.
  A batch that fails, or would wait for another process's lock, is put off: the
  write before it stands and is not reported as failed.
  ``prune()`` deletes everything expired, batch after batch, pausing between
  batches so other writers get their turn.
- Under ASGI (the coroutines ``aget``, ``aget_text``, ``aset``, ``amerge``, ``atouch``,
  ``adestroy``): each call runs on the event loop itself unless it would wait.  A
  trip to the loop's thread pool costs more than the call: about 100 µs of the
  loop thread's CPU (200 µs of the process's) on the machine this was measured on,
  where a WAL read costs a few µs and a write about 20.  A lock that is taken (another
  thread's write, or another process's lock on the file, which SQLite reports at
  once, before anything is written) is waited for on the loop without blocking it:
  tried again after sleeps of 0.1 ms doubling to 2 ms, as _run waits in a thread,
  for up to ``busy_timeout``; past it, another process's lock fails the call, as in
  a thread, and this process's own is waited for in a thread.  A call goes to the
  thread pool when no pooled connection is free (the loop would open one) and when a
  write is due to run a checkpoint or a prune batch, which sync or scan the file.
  For that, SQLite's automatic checkpoint is off (``wal_autocheckpoint = 0``: it
  runs in whichever connection commits, the loop's too): the store checkpoints after about
  ``checkpoint_pages`` pages written (1,000, SQLite's default), in the write that
  gets there if it can wait, else in the next one, sent to a thread; and again at the
  next while the WAL is still that long (it starts over only at a write that finds it
  all copied and no reader in it), as SQLite's own tries at every commit: a write or
  two in about 300 (a reader on an old snapshot changes that: see below).  Each
  process counts its own pages, so with several the WAL grows longer between
  checkpoints (10 MB with ``uvicorn --workers 2`` and waitress writing one file,
  against 6-8 MB with SQLite's).  Measured (7 December 2026), with / writes in
  threads (``loop_writes = False``, what this store did before) / every call in
  a thread: in-process, a returning visitor who increments a counter costs 66 /
  267 / 417 µs over bare Starlette (``python bench/asgi_overhead.py``; the loop's
  own thread: 73 / 192 / 249 µs with ``--loop-thread``).  Under uvicorn, 200 users,
  with / bare (``python bench/http_load.py --server uvicorn --stores sqlite --users
  200 --rounds 5 [--reads 0.9] [--no-pin]``): every request writing, 0.45 / 0.26 /
  0.21 on two CPUs and 0.46 / 0.38 / 0.42 with the server on one; 90% only
  reading, 0.65 / 0.47 / 0.26 and 0.61 / 0.56 / 0.49.  Subclass and set
  ``loop_writes = False`` or ``loop_reads = False`` to send writes or reads to
  the pool all the same.
- The WAL is kept short.  Processes that read and write without a pause can keep it
  from ever starting over (a reader is nearly always in it, or another process wrote
  since the last checkpoint), and it then grew by every page written.  Past
  ``restart_pages`` (4,000) the checkpoint makes sure the next write starts it over
  (a RESTART checkpoint, which does not wait for readers and is tried again while it
  fails): three processes writing 24,000 records of 2 KB left it at about 16 MB,
  against 80-190 MB, at much the same rate (-2% to +13% writes/s; ``python
  bench/wal_growth.py``).  The rows deleted by prune batches (automatic or
  ``prune()``) and by ``clear()`` count toward the checkpoint too, about 2 pages a row
  (``prune()`` of 10,000 expired sessions left a WAL of 62 MB, now 4.5 MB), and a WAL
  file that grew longer all the same (one big transaction, a reader on an old
  snapshot) is cut back to ``journal_size_limit`` (32 MB) as it starts over, instead
  of keeping its largest size for good.  A shorter one is reused, not cut: cutting it
  at every start over cost 2-8% of writes per second.
- A reader on an old snapshot (a backup, Litestream's standing read) keeps the
  checkpoint from copying what was written after it.  Each write that can wait
  retried the checkpoint while it did, as SQLite's own does at every commit: under
  ASGI, a trip to a thread for nearly every write.  Once a reader has held the WAL
  at one page for ``pin_patience`` (0.1 s), the checkpoint is tried every
  ``pin_patience`` seconds or ``checkpoint_pages`` pages instead.  Readers that come
  and go (each checkpoint copies further) keep each write retrying: those retries
  are what keep the WAL short under several processes.  Beside a reader starting
  over every second, 28 writes in 1,000 went to a thread, against 955, and an
  ``amerge`` took 23 µs against 187 (``python bench/pinned_wal.py``).
- ``":memory:"`` is one connection behind a lock: every connection to
  ``:memory:`` would be a separate, empty database.
- After ``fork()`` (gunicorn ``--preload``, multiprocessing) the child opens
  its own connections: SQLite forbids using a connection across a fork.  It
  gets its own locks too: one a parent's thread held at the fork would never
  be released in the child.  The fork waits for a write under way (see
  _before_fork).
"""
from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
import threading
import time
from typing import Any, Callable, Optional, TypeVar, Union

import session

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# WAL pages a deleted row adds, about (measured: 1.0 to 2.5, records of 100 bytes to 3 KB,
# with no or 30,000 live rows beside them): counted toward the next checkpoint, as a write's
# pages are (see _wrote).
_PAGES_PER_DELETE = 2


class SQLiteStore(session.Store):
    """Sessions in a SQLite table: durable, shared by threads and processes, JSON at rest.

    ``path`` is the database file (its directory must exist) or ``":memory:"``;
    ``table`` an SQL identifier; ``ttl`` the lifetime in seconds of records
    without ``cookie.expires``, counted from their last write.
    """

    synchronous = "NORMAL"  # see the module docstring
    busy_timeout = 5.0      # seconds a statement waits for another process's lock
    touch_slack = 60.0      # seconds: a touch moving the expiry less than this is skipped (below)
    touch_needs_record = False  # touch reads only the record's expiry (see session.Store)
    mmap_size = 1 << 30     # bytes of the file read through mmap; see the module docstring
    journal_size_limit = 32 << 20  # bytes: a longer WAL is cut back as it restarts (-1: never)
    prune_batch = 200       # expired rows deleted per transaction
    prune_interval = 60.0   # seconds between automatic prune batches once none are left
    prune_pause = 0.002     # seconds prune() leaves the write lock free between batches
    max_idle = 32           # connections kept open for reuse; more, opened at a peak, close when done
    loop_reads = True       # under ASGI, read on the event loop when that need not wait (module docstring)
    loop_writes = True      # the same for writes
    checkpoint_pages = 1000  # WAL pages (about) written between checkpoints (module docstring)
    restart_pages = 4000    # a WAL this long is made to start over (see _checkpoint)
    pin_patience = 0.1      # seconds a reader may hold the WAL at one page before tries slow down

    def __init__(self, path: Union[str, os.PathLike[str]], *, table: str = "sessions",
                 ttl: float = 86400) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise ValueError(f"path must be a file name or ':memory:', not {path!r}")
        if not isinstance(table, str) or not _IDENTIFIER.match(table):
            raise ValueError(f"table must be an SQL identifier (letters, digits, _), not {table!r}")
        session._check_ttl(ttl)
        memory = path == ":memory:"
        if not memory:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"SQLiteStore: directory {folder!r} does not exist")
            if os.path.isdir(path):
                raise IsADirectoryError(f"SQLiteStore: {path!r} is a directory, not a database file")
        # Absolute: connections open lazily, in any thread, after a chdir or a fork too.
        self.path, self.table, self.ttl = path if memory else os.path.abspath(path), table, ttl
        self._closed = False
        self._idle: list[sqlite3.Cursor] = []      # cursors of pooled connections not in use (pop/append are atomic)
        self._all: list[sqlite3.Connection] = []  # every connection opened, to close them all
        self._memory_lock = threading.Lock() if memory else None
        self._memory_cursor: Optional[sqlite3.Cursor] = None  # ":memory:": its one connection's
        self._pooling = not memory    # cursors go straight back to _idle (until close())
        self._next_prune = 0.0
        self._unchecked = 0  # pages written to the WAL since the last checkpoint (see _wrote)
        self._pinned: Optional[tuple[float, int, float]] = None  # see _held_back
        self._next_try = math.inf  # when a checkpoint held back is tried (see _held_back)
        # Threads of this process write one at a time, queued here rather than on SQLite's
        # lock: see the module docstring.
        self._write_lock = _LockAtFirstUse()
        self._seen = session._SeenExpiries()  # what this process last read or wrote (see touch)
        t = f'"{table}"'
        self._sql_get = f"SELECT data, expires FROM {t} WHERE sid = ? AND expires > ?"
        self._sql_get_bytes = f"SELECT CAST(data AS BLOB) FROM {t} WHERE sid = ? AND expires > ?"
        self._sql_set = (f"INSERT INTO {t} (sid, expires, data) VALUES (?, ?, ?) "
                         "ON CONFLICT (sid) DO UPDATE SET expires = excluded.expires, data = excluded.data")
        self._sql_touch = f"UPDATE {t} SET expires = ? WHERE sid = ? AND expires > ?"
        self._sql_touch_later = f"UPDATE {t} SET expires = ? WHERE sid = ? AND expires > ? AND expires < ?"
        # merge's compare-and-set: the stored bytes must be the ones the change was computed
        # from (compared as bytes, so a value stored as a BLOB or not UTF-8 compares too).
        same = "sid = ? AND CAST(data AS BLOB) = CAST(? AS BLOB) AND expires > ?"
        self._sql_cas = f"UPDATE {t} SET data = ?, expires = ? WHERE {same}"
        self._sql_cas_later = f"UPDATE {t} SET data = ?, expires = max(expires, ?) WHERE {same}"
        # The data alone, the indexed expires left as it is: only while that is still at
        # least the expiry this process last saw (another process may have moved it earlier).
        self._sql_cas_data = f"UPDATE {t} SET data = ? WHERE {same} AND expires >= ?"
        self._sql_cas_delete = f"DELETE FROM {t} WHERE {same}"
        # A new session's record: inserted, or taking over an expired row, never a live one.
        self._sql_create = (f"INSERT INTO {t} (sid, expires, data) VALUES (?, ?, ?) "
                            "ON CONFLICT (sid) DO UPDATE SET expires = excluded.expires, "
                            f"data = excluded.data WHERE {t}.expires <= ?")
        self._sql_delete_dead = f"DELETE FROM {t} WHERE sid = ? AND expires <= ?"
        self._sql_destroy = f"DELETE FROM {t} WHERE sid = ?"
        self._sql_all = f"SELECT sid, CAST(data AS BLOB) FROM {t} WHERE expires > ?"
        self._sql_ids = f"SELECT sid FROM {t} WHERE expires > ?"
        self._sql_length = f"SELECT count(*) FROM {t} WHERE expires > ?"
        self._sql_clear = f"DELETE FROM {t}"
        # A LIMITed subquery bounds the transaction without needing SQLite's
        # optional DELETE ... LIMIT.
        self._sql_prune = (f"DELETE FROM {t} WHERE sid IN "
                           f"(SELECT sid FROM {t} WHERE expires <= ? LIMIT ?)")
        self._held_at_fork: Any = None  # the write lock _before_fork took
        cur = self._take()
        try:
            self._create_schema(cur)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._give(cur)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, table={self.table!r}, ttl={self.ttl!r})"

    # -- one session -------------------------------------------------------
    # Each takes ``wait``: False when it runs on an event loop, which must not wait (see
    # _on_loop).  Then it raises _WouldWait before it has written anything, rather than wait.
    def get(self, sid: str) -> Optional[dict[str, Any]]:
        return self._get(sid)

    def _get(self, sid: str, wait: bool = True) -> Optional[dict[str, Any]]:
        return self._record(sid, self._fetch(sid, wait))

    def get_text(self, sid: str) -> Optional[str]:
        """The live record's JSON as stored, not decoded (the middleware checks it); None,
        logged, if the column holds bytes that are not UTF-8."""
        return self._get_text(sid)

    def _get_text(self, sid: str, wait: bool = True) -> Optional[str]:
        return self._text(sid, self._fetch(sid, wait))

    def set(self, sid: str, record: dict[str, Any]) -> None:
        self._set(sid, record)

    def _set(self, sid: str, record: dict[str, Any], wait: bool = True) -> None:
        data = session.encode_record(record)
        now = time.time()
        expires = self.expiry_time(record, now)
        if expires <= now:
            self._destroy(sid, wait)
            return
        cur = self._writer(wait)
        try:
            self._run(cur, self._sql_set, (sid, expires, data), wait)
            self._wrote(cur, now, data, wait)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._release_writer(cur)
        self._seen.remember(sid, expires)

    def destroy(self, sid: str) -> None:
        self._destroy(sid)

    def _destroy(self, sid: str, wait: bool = True) -> None:
        self._write(self._sql_destroy, (sid,), wait)
        self._seen.pop(sid, None)

    def touch(self, sid: str, record: dict[str, Any]) -> None:
        """Move only the ``expires`` column, never earlier unless ``record.keep_later`` is
        False (the request set the cookie's lifetime itself); an expired or vanished row
        stays gone.  A touch that would move it less than ``touch_slack`` seconds and less than 1% of
        the session's lifetime, past what this process last read or wrote is not written."""
        self._touch(sid, record)

    def _touch(self, sid: str, record: dict[str, Any], wait: bool = True) -> None:
        now = time.time()
        if self._skips_touch(sid, record, now):
            return
        expires = self.expiry_time(record, now)
        if getattr(record, "keep_later", True):
            self._write(self._sql_touch_later, (expires, sid, now, expires), wait)
        else:
            self._write(self._sql_touch, (expires, sid, now), wait)
        self._seen.remember(sid, expires)

    def merge(self, sid: str, change: session.Change) -> bool:
        """Write one request's change into the row as stored now: one compare-and-set
        statement when nobody wrote since the request loaded; else the change applied to
        what is stored, compared and set again (see the module docstring).  False, with
        nothing written, for a new session whose ID is live or a loaded one that is gone."""
        return self._merge(sid, change)

    def _merge(self, sid: str, change: session.Change, wait: bool = True) -> bool:
        if change.base is None:
            return self._create(sid, change, wait)
        base, text, expires, keep_later = change.base, change.text, change.expires, change.keep_later
        run = self._run
        cur = self._writer(wait)
        try:
            while True:
                now = time.time()
                expiry: float = now + self.ttl if expires is None else expires
                if keep_later:
                    # The expiry barely moves (see touch): the data alone is written, so
                    # the expires index is left as it is (a third of an UPDATE's cost),
                    # unless another process moved it earlier than this one saw (0 rows).
                    seen, done = self._seen.get(sid), 0
                    if self._seen.barely_moves(sid, expiry, now, self.touch_slack):
                        done = run(cur, self._sql_cas_data, (text, sid, base, now, seen), wait).rowcount
                    if done:
                        expiry = seen  # type: ignore[assignment]  # done: expires >= seen held, not None
                    else:  # max(stored, new): live, whatever the new expiry
                        done = run(cur, self._sql_cas_later, (text, expiry, sid, base, now),
                                   wait).rowcount
                elif expiry > now:
                    done = run(cur, self._sql_cas, (text, expiry, sid, base, now), wait).rowcount
                else:  # written already expired: deleted, as set() does
                    done = run(cur, self._sql_cas_delete, (sid, base, now), wait).rowcount
                if done:
                    break
                # Another write came first (or the row is gone): merge into what is there.
                row = run(cur, self._sql_get_bytes, (sid, now), wait).fetchone()
                if row is None:
                    return False  # destroyed, regenerated away or expired: never resurrected
                base = row[0]
                try:
                    stored = base.decode("utf-8")
                except UnicodeDecodeError:  # not a session: this change replaces it
                    text, expires = change.text, change.expires
                else:
                    text, expires = change.apply(stored)
            self._wrote(cur, now, text, wait)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._release_writer(cur)
        self._seen.remember(sid, expiry)
        return True

    # -- the same, from an event loop (ASGI) --------------------------------
    # Each runs on the event loop itself unless it would wait (see the module docstring).
    async def aget(self, sid: str) -> Optional[dict[str, Any]]:
        return await self._on_loop(self.loop_reads, self._get, self.get, sid)

    async def aget_text(self, sid: str) -> Optional[str]:
        return await self._on_loop(self.loop_reads, self._get_text, self.get_text, sid)

    async def aset(self, sid: str, record: dict[str, Any]) -> None:
        await self._on_loop(self.loop_writes, self._set, self.set, sid, record)

    async def amerge(self, sid: str, change: session.Change) -> bool:
        return await self._on_loop(self.loop_writes, self._merge, self.merge, sid, change)

    async def atouch(self, sid: str, record: dict[str, Any]) -> None:
        """``touch``: one it would skip is skipped on the event loop, whatever ``loop_writes``."""
        if self.loop_writes or not self._skips_touch(sid, record, time.time()):
            await self._on_loop(self.loop_writes, self._touch, self.touch, sid, record)

    async def adestroy(self, sid: str) -> None:
        await self._on_loop(self.loop_writes, self._destroy, self.destroy, sid)

    async def _on_loop(self, allowed: bool, at_once: Callable[..., _T], in_thread: Callable[..., _T],
                       *args: Any) -> _T:
        """``at_once(*args, wait=False)`` on the event loop if ``allowed``; ``in_thread(*args)``
        in the loop's thread pool if it would wait.  A lock that is taken (this process's write
        lock, or the file's) is waited for on the loop without blocking it (see _when_free)."""
        if allowed:
            try:
                return at_once(*args, wait=False)
            except _Locked:
                if session._running_trio() is None:
                    # Run to its end even if the request is cancelled, and waited for by
                    # aclose(), as a call in a thread is.
                    return await session._IN_FLIGHT.run(self._when_free(at_once, in_thread, *args))
            except _WouldWait:
                pass
        return await session._in_thread(in_thread, *args)

    async def _when_free(self, at_once: Callable[..., _T], in_thread: Callable[..., _T],
                         *args: Any) -> _T:
        """``at_once(*args, wait=False)`` tried again after sleeps of 0.1 ms doubling to 2 ms, as
        _run waits in a thread, while a lock is taken.  Past ``busy_timeout``, another
        process's lock on the file fails the call, as it does in a thread (waiting there
        would double the wait); this process's own lock, or anything else it would wait for,
        sends it to a thread: ``in_thread(*args)``."""
        import asyncio
        deadline, pause = time.monotonic() + self.busy_timeout, 0.0001
        refused: Optional[BaseException] = None  # SQLite's error, when the file's lock refused
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.002)
            try:
                return at_once(*args, wait=False)
            except _Locked as exc:
                refused = exc.__cause__  # (None for this process's lock: see _writer)
            except _WouldWait:
                break
        else:
            if isinstance(refused, sqlite3.Error):
                raise self._error(refused) from refused
        return await session._in_thread(in_thread, *args)

    # -- the whole store ---------------------------------------------------
    def all(self) -> dict[str, dict[str, Any]]:
        rows = self._read(self._sql_all, (time.time(),))
        records = {}
        for sid, data in rows:
            try:
                records[sid] = session.decode_record(data)
            except ValueError as exc:  # UnicodeDecodeError is a ValueError
                self._bad_record(sid, exc)
        return records

    def ids(self) -> list[str]:
        return [sid for (sid,) in self._read(self._sql_ids, (time.time(),))]

    def length(self) -> int:
        count: int = self._read(self._sql_length, (time.time(),))[0][0]
        return count

    def clear(self) -> None:
        self._write(self._sql_clear, (), deleting=True)

    def prune(self) -> int:
        """Delete every expired row, ``prune_batch`` rows per transaction; return how many."""
        removed = 0
        while True:
            cur = self._take()
            try:
                with self._write_lock:
                    count = self._prune_batch(cur, time.time())
                    if self._checkpoint_due():
                        self._checkpoint(cur)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            finally:
                self._give(cur)
            removed += count
            if count < self.prune_batch:
                return removed
            # Writers of other processes wait for the file's lock with short sleeps (_run):
            # an unbroken loop of batches would keep it from them.
            time.sleep(self.prune_pause)

    def close(self) -> None:
        """Close every connection; connections in use close when their operation ends."""
        self._closed = True
        self._pooling = False
        while self._idle:
            try:
                self._idle.pop().connection.close()
            except IndexError:
                break
        if self._memory_lock is not None:
            with self._memory_lock:
                for conn in self._all:
                    conn.close()

    def _before_fork(self) -> None:
        """Let a write under way end first (waiting ``busy_timeout`` at most): SQLite keeps the
        locks its connections hold in the process's memory, and a child forked while a
        parent's connection held the file's write lock would find it held for good."""
        lock = self._write_lock._lock
        if lock is not None and lock.acquire(timeout=self.busy_timeout):
            self._held_at_fork = lock

    def _after_fork_in_parent(self) -> None:
        lock, self._held_at_fork = self._held_at_fork, None
        if lock is not None:
            lock.release()

    def _after_fork_in_child(self) -> None:
        """Drop inherited connections (closing them could disturb the parent's) and locks."""
        self._held_at_fork = None
        self._write_lock = _LockAtFirstUse()
        if self._memory_lock is not None:
            self._memory_lock = threading.Lock()  # the child keeps its copy of the database
        else:
            _INHERITED.extend(self._all)
            self._all, self._idle = [], []

    # -- private -----------------------------------------------------------
    def _create(self, sid: str, change: session.Change, wait: bool = True) -> bool:
        """A new session's row: inserted, or over an expired one; False if a live row has the ID."""
        now = time.time()
        expiry = now + self.ttl if change.expires is None else change.expires
        cur = self._writer(wait)
        try:
            if expiry <= now:  # nothing to write; the ID must still be free
                self._run(cur, self._sql_delete_dead, (sid, now), wait)
                return self._run(cur, self._sql_get_bytes, (sid, now), wait).fetchone() is None
            if not self._run(cur, self._sql_create, (sid, expiry, change.text, now), wait).rowcount:
                return False
            self._wrote(cur, now, change.text, wait)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._release_writer(cur)
        self._seen.remember(sid, expiry)
        return True

    def _fetch(self, sid: str, wait: bool = True) -> Union[str, bytes, None]:
        """The live row's ``data`` as stored: str, or bytes if it is not UTF-8 text."""
        cur = self._take() if wait else self._take_free()
        if cur is None:
            raise _WouldWait
        try:
            try:
                row = self._run(cur, self._sql_get, (sid, time.time()), wait).fetchone()
            except sqlite3.OperationalError as exc:
                if not str(exc).startswith("Could not decode to UTF-8"):
                    raise
                # The failed fetch left its statement open, and a read lock with it:
                # reading the row again as bytes closes both, and decoding them reports
                # the record as bad, as any other invalid record.
                rows = self._run(cur, self._sql_get_bytes, (sid, time.time()), wait).fetchall()
                row = rows[0] + (None,) if rows else None
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._give(cur)
        if row is None:
            return None
        if type(row[1]) is float or type(row[1]) is int:  # (not text another app wrote there)
            self._seen.remember(sid, row[1])
        return row[0]  # type: ignore[no-any-return]  # data: str, or bytes when not UTF-8

    def _run(self, cur: Union[sqlite3.Cursor, sqlite3.Connection], sql: str,
             params: tuple[Any, ...], wait: bool = True) -> sqlite3.Cursor:
        """``cur.execute(sql, params)``; another process's lock on the file is waited out
        here, with sleeps from 0.1 ms doubling to 2 ms, for at most ``busy_timeout`` (unless
        ``wait`` is False: then _WouldWait)."""
        try:
            return cur.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            if not wait:
                raise _Locked from exc
        deadline, pause = time.monotonic() + self.busy_timeout, 0.0001
        while True:
            time.sleep(pause)
            try:
                return cur.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
            pause = min(pause * 2, 0.002)

    def _connect(self) -> sqlite3.Cursor:
        """A new connection with the store's pragmas, as the cursor the pool keeps for it."""
        memory = self._memory_lock is not None
        # timeout=0: SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms; _run waits less.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                               check_same_thread=False)
        try:
            self._run(conn, f"PRAGMA synchronous = {self.synchronous}", ())
            self._run(conn, f"PRAGMA mmap_size = {int(self.mmap_size)}", ())
            if not memory:
                self._use_wal(conn)
                # Checkpoints are the store's (see _wrote): SQLite's would run in whichever
                # connection commits, an event loop's too, and sync the file there.
                self._run(conn, "PRAGMA wal_autocheckpoint = 0", ())
                self._run(conn, f"PRAGMA journal_size_limit = {int(self.journal_size_limit)}", ())
        except BaseException:
            conn.close()
            raise
        self._all.append(conn)
        return conn.cursor()

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (a no-op once any connection has: the mode is persistent)."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                # Processes opening a new file together: changing the journal mode does
                # not wait through the busy handler, so wait here, as long as it would.
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL journal mode (got {mode!r})")

    def _create_schema(self, cur: sqlite3.Cursor) -> None:
        t = self.table
        self._run(cur, f'CREATE TABLE IF NOT EXISTS "{t}" (sid TEXT PRIMARY KEY NOT NULL, '
                  "expires REAL NOT NULL, data TEXT NOT NULL) WITHOUT ROWID", ())
        self._run(cur, f'CREATE INDEX IF NOT EXISTS "{t}_expires" ON "{t}" (expires)', ())

    def _take(self) -> sqlite3.Cursor:
        """A pooled connection's cursor, for this thread alone until ``_give``."""
        try:
            return self._idle.pop()  # the usual case, first: a get is a few µs
        except IndexError:
            pass
        if self._closed:
            raise sqlite3.ProgrammingError(f"{self!r} is closed")
        if self._memory_lock is not None:
            self._memory_lock.acquire()
            if self._memory_cursor is not None:
                return self._memory_cursor
            try:
                self._memory_cursor = self._connect()
                return self._memory_cursor
            except BaseException:
                self._memory_lock.release()
                raise
        try:
            return self._connect()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _take_free(self) -> Optional[sqlite3.Cursor]:
        """``_take`` if a connection is free at once; None rather than open one or wait."""
        if self._closed:
            return None
        if self._memory_lock is None:
            try:
                return self._idle.pop()
            except IndexError:
                return None
        if self._memory_cursor is not None and self._memory_lock.acquire(blocking=False):
            return self._memory_cursor
        return None

    def _give(self, cur: sqlite3.Cursor) -> None:
        if self._pooling and len(self._idle) < self.max_idle:
            self._idle.append(cur)
        elif self._memory_lock is not None:
            self._memory_lock.release()
        else:  # closed meanwhile, or the pool is full: a burst's connections do not stay open
            try:
                self._all.remove(cur.connection)
            except ValueError:  # the list was replaced by a fork since
                pass
            cur.connection.close()

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        cur = self._take()
        try:
            return self._run(cur, sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._give(cur)

    def _write(self, sql: str, params: tuple[Any, ...], wait: bool = True,
               deleting: bool = False) -> None:
        """One statement as a write; ``deleting``: count the pages of the rows it deleted."""
        cur = self._writer(wait)
        try:
            count = self._run(cur, sql, params, wait).rowcount
            if deleting:
                self._unchecked += _PAGES_PER_DELETE * count
            self._wrote(cur, time.time(), "", wait)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._release_writer(cur)

    def _writer(self, wait: bool = True) -> sqlite3.Cursor:
        """A pooled connection's cursor, with this process's write lock held until
        ``_release_writer``.  Unless ``wait``: _WouldWait rather than open a connection, wait
        for the lock, or take on a checkpoint or prune batch that is due (see _wrote)."""
        cur = self._take() if wait else self._take_free()
        if cur is None:
            raise _WouldWait
        if not self._write_lock.acquire(wait):
            self._give(cur)
            raise _Locked
        if not wait and (self._checkpoint_due() or time.time() >= self._next_prune):
            self._release_writer(cur)
            raise _WouldWait
        return cur

    def _release_writer(self, cur: sqlite3.Cursor) -> None:
        self._write_lock.release()
        self._give(cur)

    def _wrote(self, cur: sqlite3.Cursor, now: float, text: str, wait: bool) -> None:
        """A write of ``text`` committed: once ``checkpoint_pages`` pages have gone to the WAL,
        the checkpoint, and the prune batch when it is due.  Unless ``wait`` (on an event
        loop): not now, they sync the file or scan it; the next write that can wait runs them
        (_writer sends the next write from the loop to a thread for it)."""
        # About the pages a write adds: its row's and the expires index's, and overflow past 1 KB
        # or so (measured: 3 WAL frames a write of a small record, 6 of a 1 to 3 KB one).
        self._unchecked += 3 + len(text) // 1024
        if wait:
            if self._checkpoint_due():
                self._checkpoint(cur)
            if now >= self._next_prune:
                self._prune_after_write(cur, now)

    def _checkpoint_due(self) -> bool:
        """After ``checkpoint_pages`` pages, or at the time a checkpoint held back is due."""
        return self._unchecked >= self.checkpoint_pages or time.monotonic() >= self._next_try

    def _checkpoint(self, cur: sqlite3.Cursor) -> None:
        """Copy the WAL's pages into the database file (SQLite's automatic checkpoint is off:
        see _connect); never waits, never raises, as the automatic one.  A WAL
        ``restart_pages`` long is made to start over (see the module docstring) by a RESTART
        checkpoint, tried only once this one copied all of it: it holds every process's write
        lock while it copies, which a reader on an old snapshot would have every write pay
        (two writing processes ran at a third of their rate)."""
        self._unchecked, self._next_try = 0, math.inf
        if self._memory_lock is None:
            restarting = False
            try:
                busy, frames, copied = self._run(cur, "PRAGMA wal_checkpoint(PASSIVE)", (),
                                                 wait=False).fetchone()
                # busy: another connection is checkpointing (frames and copied are then -1)
                held_back = not busy and self._held_back(copied, frames)
                if not busy and frames >= self.restart_pages and copied == frames:
                    restarting = True
                    busy, frames, _ = self._run(cur, "PRAGMA wal_checkpoint(RESTART)", (),
                                                wait=False).fetchone()
            except _WouldWait:  # refused at once (the file is locked): tried again later
                return
            except sqlite3.Error as exc:
                log.warning("SQLiteStore %s: checkpoint failed, retried later: %s", self.path, exc)
                return
            # ``frames``: the WAL's length, every process's writes since it last started over.
            # It starts over only at a write that finds it all copied and no reader in it:
            # while it is still ``checkpoint_pages`` long, the next write that can wait
            # checkpoints again, as SQLite's automatic checkpoint does at every commit then
            # (else, with other processes writing, it grew by that much before each try).
            # Not after a RESTART that did its work, nor while another connection checkpoints;
            # while a reader holds the WAL back, only every pin_patience (see _held_back).
            if frames >= self.checkpoint_pages and (busy if restarting else not busy):
                if held_back:
                    self._next_try = time.monotonic() + self.pin_patience
                else:
                    self._unchecked = frames
            elif busy and self._pinned is not None:  # nothing known of the reader: as above
                self._next_try = time.monotonic() + self.pin_patience
                self._pinned = (*self._pinned[:2], self._next_try)  # the look now due

    def _held_back(self, copied: int, frames: int) -> bool:
        """Whether a reader on an old snapshot (a backup, Litestream) has kept the WAL from
        being copied past the same page for ``pin_patience`` seconds: the checkpoint is then
        tried every ``pin_patience`` seconds (or ``checkpoint_pages`` pages), not at every
        write, which under ASGI would send nearly every write to a thread to try it.  Short
        readers, which keep a checkpoint from copying all only now and then, leave the tries
        as they are."""
        if copied >= frames:
            self._pinned = None
            return False
        now, pinned = time.monotonic(), self._pinned
        # (since, page, when this look was due).  A look much later than it was due may find
        # another reader at the same page (the WAL may have started over meanwhile, counting
        # from 0 again): a new one.  Where the guess is wrong, a try comes pin_patience late.
        if pinned is None or pinned[1] != copied or now > pinned[2] + self.pin_patience:
            self._pinned = (now, copied, now)
            return False
        held = now - pinned[0] >= self.pin_patience
        self._pinned = (pinned[0], copied, now + self.pin_patience if held else now)
        return held

    def _prune_batch(self, cur: sqlite3.Cursor, now: float, wait: bool = True) -> int:
        """Delete up to ``prune_batch`` expired rows; schedule the next batch."""
        count = self._run(cur, self._sql_prune, (now, self.prune_batch), wait).rowcount
        self._unchecked += _PAGES_PER_DELETE * count
        self._next_prune = now if count >= self.prune_batch else now + self.prune_interval
        return count

    def _prune_after_write(self, cur: sqlite3.Cursor, now: float) -> None:
        """The automatic prune batch a write runs once its own statement is committed: put
        off, never raised, when it fails or would wait for another process's lock, since
        the caller's write stands (a 500 would have the client repeat it)."""
        try:
            self._prune_batch(cur, now, wait=False)
        except _WouldWait:  # another process's lock: put off
            self._next_prune = now + self.prune_interval
        except sqlite3.Error as exc:
            self._next_prune = now + self.prune_interval
            log.warning("SQLiteStore %s: pruning expired sessions failed, retried in %g s: %s",
                        self.path, self.prune_interval, exc)

    def _record(self, sid: str, value: Union[str, bytes, None]) -> Optional[dict[str, Any]]:
        """A fetched ``data`` decoded; None if missing, or (logged) not a session."""
        if value is None:
            return None
        try:
            return session.decode_record(value)
        except ValueError as exc:
            self._bad_record(sid, exc)
            return None

    def _text(self, sid: str, value: Union[str, bytes, None]) -> Optional[str]:
        """A fetched ``data`` as text; None if missing, or (logged) not UTF-8."""
        if value is None or type(value) is str:
            return value
        try:
            return value.decode("utf-8")  # type: ignore[union-attr]  # bytes: str is returned above
        except UnicodeDecodeError as exc:
            self._bad_record(sid, exc)
            return None

    def _skips_touch(self, sid: str, record: dict[str, Any], now: float) -> bool:
        """Whether ``touch`` leaves this one unwritten: it may not move the expiry earlier,
        and it would move it less than ``touch_slack`` past what this process last saw."""
        return getattr(record, "keep_later", True) and self._seen.barely_moves(
            sid, self.expiry_time(record, now), now, self.touch_slack)

    def _bad_record(self, sid: str, exc: Exception) -> None:
        """Log a stored record that is not a session (invalid JSON or UTF-8); it counts as missing."""
        log.warning("SQLiteStore %s: session %.6s... is not a valid record, treated as missing: %s",
                    self.path, sid, exc)

    def _error(self, exc: sqlite3.Error) -> sqlite3.Error:
        """The same kind of error, naming the database, so a 500's log says which file failed."""
        if self.path in str(exc):
            return exc
        code = getattr(exc, "sqlite_errorcode", None)  # None before Python 3.11
        if code is not None:
            unwritable = (code & 0xFF) in (8, 14)  # SQLITE_READONLY, SQLITE_CANTOPEN
        else:
            unwritable = "readonly" in str(exc) or "unable to open" in str(exc)
        hint = (": check that the file and its directory are writable by this process "
                "(SQLite writes -wal and -shm files beside it)") if unwritable else ""
        error = type(exc)(f"{exc} (SQLiteStore {self.path!r}, table {self.table!r}){hint}")
        for attr in ("sqlite_errorcode", "sqlite_errorname"):
            if hasattr(exc, attr):
                setattr(error, attr, getattr(exc, attr))
        return error


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the lock it needs."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (sqlite3 names them from 3.11)
    return "locked" in str(exc) or "busy" in str(exc)


class _WouldWait(Exception):
    """A call made with ``wait=False`` (on an event loop) would have to wait: nothing is
    written, and a thread should make it (see SQLiteStore._on_loop)."""


class _Locked(_WouldWait):
    """_WouldWait for a lock another thread or process holds: worth trying again shortly."""


class _LockAtFirstUse:
    """A ``threading.Lock`` made when first taken, so that it is a green one under gevent or
    eventlet: with gunicorn ``--preload`` the store is built, and forked, before the worker
    patches ``threading``, and a real lock held across the patched sleep of a wait for
    another process (see _run) stopped every green thread of the worker."""

    __slots__ = ("_lock", "_making")

    def __init__(self) -> None:
        self._lock: Any = None
        # Held for an assignment, when no green thread can switch; made anew with the lock at
        # a fork (see SQLiteStore._after_fork_in_child), so a child never inherits it held.
        self._making = threading.Lock()

    def acquire(self, wait: bool = True) -> bool:
        lock = self._lock
        if lock is None:
            with self._making:
                if self._lock is None:
                    self._lock = threading.Lock()
                lock = self._lock
        return lock.acquire(wait)  # type: ignore[no-any-return]

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

# A forked child's copies of its parent's connections: never used, never closed.
_INHERITED: list[sqlite3.Connection] = []
