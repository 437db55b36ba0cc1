"""ShelveStore: sessions in a dbm file, for one process (development, small single-process sites).

Needs nothing but Python::

    from stores.shelve_store import ShelveStore
    store = ShelveStore("/var/lib/myapp/sessions")

It is a shelf in spirit, but it uses ``dbm`` directly instead of ``shelve``:
``shelve`` pickles every value, and unpickling a file that anyone else can
write runs their code.  Each value is JSON::

    {"expires":<epoch milliseconds>,"session":<the record's JSON, as express writes it>}

Choices, and what they cost:

- One process only.  The store holds an exclusive lock (``flock``) on
  ``<path>.lock`` while it is open; a second ShelveStore on the same path, in
  another process or in this one, is refused at construction with
  ``RuntimeError``.  dbm files keep their index in memory and are not safe to
  write from two processes; use SQLiteStore for several worker processes.
  A child forked from the owner cannot use the store (RuntimeError).
- Thread-safe: every operation holds one ``threading.Lock``.  ``merge``
  (concurrent requests on one session) compares the stored bytes with the
  ones the request loaded, and writes, under that lock: nothing can come
  between.  Only when they differ does it apply the request's changes to the
  stored record (JSON decoded and encoded with the lock held, about 15 µs for
  a 200-byte record); the common case costs what ``set`` does.
- Backend: ``dbm.gnu`` when Python has it, else ``dbm.dumb`` (always there).
  An existing file keeps the format it was created with.  ``dbm.dumb`` keeps
  its index in a ``.dir`` file that it rewrites on every delete and saves on
  ``close()`` (about 20 ms per ``destroy()`` with 10,000 sessions; expired
  records are dropped in bulk instead), and opens its data file for every
  read: the store reads values itself, where dbm.dumb's in-memory index says
  they are, through one descriptor kept open (0.9 µs a read instead of 11;
  a ``merge`` reads before it writes, and so costs about a ``set``).  Fine
  for the thousands of sessions this store is meant for, not for a busy site.
  ``dbm.dumb`` never reuses the space of old values: when a sweep ends or
  ``prune()`` runs and the data file is over 4 times its live values plus
  1 MiB, the store copies them into a new file and swaps it in, so that a crash
  at any step leaves the old pair of files or the new one (1,000 new sessions a
  second, each living 2 s: 15.4 MB after 30 s, 1.0 MB after ``prune()``; with
  sweeps every 5 s, between 3.5 and 7.7 MB throughout).  Neither format is
  crash-safe; SQLiteStore is.  Python 3.13's ``dbm.sqlite3`` is not used: its
  connection refuses every thread but the one that opened it.
- Expiry: ``get`` ignores expired records.  ``prune()``, ``all()``, ``ids()``
  and ``length()`` are full scans of the file.  Expired records are also
  deleted in the background of writes: each ``set()`` or ``merge()`` checks a few
  keys of a sweep that starts every ``sweep_interval`` seconds, so none pays for a scan.
"""
from __future__ import annotations

import dbm
import functools
import importlib
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Optional, TypeVar, Union

import session

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

__all__ = ["ShelveStore"]

log = logging.getLogger(__name__)

_HEAD = b'{"expires":'
_SESSION = b',"session":'
_FAR = 253402300799.0  # 9999-12-31: the latest expiry written (a ttl may be infinite)
_BLOCK, _MIB = 512, 1 << 20  # dbm.dumb starts every value on a block of _BLOCK bytes
# Suffixes of the compacted copy and of the swap's marker: names no other store would have.
_COPY, _SWAPPING = ".shelve-compact", ".shelve-swapping"


_F = TypeVar("_F", bound=Callable[..., Any])


def _naming_the_file(method: _F) -> _F:
    """Raise what a file operation of ``method`` raised again naming the store, as
    SQLiteStore names its database: the OSError of a full disk names no file."""
    @functools.wraps(method)
    def wrapper(self: "ShelveStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except dbm.error as exc:  # (OSError among them)
            raise self._error(exc) from exc
    return wrapper  # type: ignore[return-value]  # with method's signature


class ShelveStore(session.Store):
    """Sessions in a dbm file owned by one process: thread-safe, JSON values, no pickle.

    ``path`` names the dbm file (its directory must exist; dbm may add a
    suffix such as ``.dat``); ``ttl`` is the lifetime in seconds of records
    without ``cookie.expires``, counted from their last write.
    """

    sweep_interval = 300.0  # seconds between background sweeps for expired records
    sweep_step = 20         # keys a write checks while a sweep is running

    def __init__(self, path: Union[str, os.PathLike[str]], *, ttl: float = 86400) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise ValueError(f"path must be a file name, not {path!r}")
        session._check_ttl(ttl)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"ShelveStore: directory {folder!r} does not exist")
        if os.path.isdir(path):
            raise IsADirectoryError(f"ShelveStore: {path!r} is a directory, not a dbm file")
        self.path, self.ttl = path, ttl
        self._lock = threading.Lock()
        self._lockfile = _lock_exclusive(path + ".lock", path)
        try:
            _recover(path)
            self._backend = _backend_for(path)
            self._db: Any = self._backend.open(path, "c")
        except BaseException:
            os.close(self._lockfile)
            raise
        self._reader = self._reader_for(self._db)
        self._sweep: list[bytes] = []
        self._next_sweep = time.time() + self.sweep_interval
        self._forked = False
        self._reopen = False  # the file was swapped: _open() opens it (again, if that failed)

    def __repr__(self) -> str:
        return f"ShelveStore({self.path!r}, ttl={self.ttl!r})"

    # -- one session -------------------------------------------------------
    @_naming_the_file
    def get(self, sid: str) -> Optional[dict[str, Any]]:
        with self._lock:
            raw = self._read(self._open(), sid.encode())
        if raw is None:
            return None
        expires, data = self._unpack(sid, raw)
        if data is None or expires <= time.time():
            return None
        try:
            return session.decode_record(data)
        except ValueError as exc:
            log.warning("ShelveStore %s: session %.6s... is not a valid record, treated as "
                        "missing: %s", self.path, sid, exc)
            return None

    @_naming_the_file
    def set(self, sid: str, record: dict[str, Any]) -> None:
        data = session.encode_record(record).encode()
        now = time.time()
        expires = self.expiry_time(record, now)
        if expires <= now:
            self.destroy(sid)
            return
        with self._lock:
            self._open()[sid.encode()] = _pack(expires, data)
            self._sweep_after_write(now)

    @_naming_the_file
    def destroy(self, sid: str) -> None:
        with self._lock:
            db = self._open()
            key = sid.encode()
            if key in db:
                del db[key]

    @_naming_the_file
    def get_text(self, sid: str) -> Optional[str]:
        """The live record's JSON as stored, not decoded (the middleware checks it); None,
        logged, if the bytes are not UTF-8."""
        with self._lock:
            raw = self._read(self._open(), sid.encode())
        if raw is None:
            return None
        expires, data = self._unpack(sid, raw)
        if data is None or expires <= time.time():
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            log.warning("ShelveStore %s: session %.6s... is not a valid record, treated as "
                        "missing: %s", self.path, sid, exc)
            return None

    @_naming_the_file
    def merge(self, sid: str, change: session.Change) -> bool:
        """Write one request's change into the record as stored now, under the lock: its text
        if the record is still the one the request loaded, else the change applied to it.
        False, with nothing written, for a new session whose ID is live or a loaded one that
        is gone."""
        key, mine = sid.encode(), change.text.encode()
        base = None if change.base is None else change.base.encode()
        with self._lock:
            db = self._open()
            now = time.time()
            raw = self._read(db, key)
            stored_expires, stored = (0, None) if raw is None else self._unpack(sid, raw)
            live = stored is not None and stored_expires > now
            if live != (base is not None):
                return False  # a new session whose ID is taken, or one that is gone
            text, expires = mine, change.expires
            if live and stored != base:
                try:
                    theirs = stored.decode("utf-8")  # type: ignore[union-attr]  # live: not None
                except UnicodeDecodeError:
                    pass  # not a session: this change replaces it
                else:
                    merged, expires = change.apply(theirs)
                    text = merged.encode()
            expiry = now + self.ttl if expires is None else expires
            if live and change.keep_later and stored_expires > expiry:
                expiry = stored_expires
            if expiry > now:
                db[key] = _pack(expiry, text)
                self._sweep_after_write(now)
            elif raw is not None:  # written already expired: deleted, as set() does
                del db[key]
            return True

    @_naming_the_file
    def touch(self, sid: str, record: dict[str, Any]) -> None:
        """Rewrite only the expiry in the value, never earlier unless ``record.keep_later``
        is False; the record's bytes are kept as stored."""
        now = time.time()
        expires = self.expiry_time(record, now)
        keep_later = getattr(record, "keep_later", True)
        key = sid.encode()
        with self._lock:
            db = self._open()
            raw = self._read(db, key)
            if raw is None:
                return
            old, data = self._unpack(sid, raw)
            if data is not None and old > now and not (keep_later and old > expires):
                db[key] = _pack(expires, data)

    # -- the whole store (full scans) --------------------------------------
    def all(self) -> dict[str, dict[str, Any]]:
        records = {}
        for sid, data in self._live():
            try:
                records[sid] = session.decode_record(data)
            except ValueError as exc:
                log.warning("ShelveStore %s: session %.6s... is not a valid record, skipped: %s",
                            self.path, sid, exc)
        return records

    def ids(self) -> list[str]:
        return [sid for sid, _ in self._live()]

    def length(self) -> int:
        return len(self._live())

    @_naming_the_file
    def clear(self) -> None:
        """Start a new, empty file (which also gives back the space dbm.dumb never reuses)."""
        with self._lock:
            self._open().close()
            self._close_reader()
            self._db = self._backend.open(self.path, "n")
            self._reader = self._reader_for(self._db)
            self._sweep = []

    @_naming_the_file
    def prune(self) -> int:
        """Delete expired records (a full scan of the file, holding the lock throughout), then
        compact a ``dbm.dumb`` file that is mostly the space of old values."""
        now = time.time()
        with self._lock:
            db = self._open()
            expired = []
            for key in db.keys():  # (lock held: _read finds each)
                expires, data = self._unpack(key.decode(errors="replace"), self._read(db, key))  # type: ignore[arg-type]
                if data is not None and expires <= now:
                    expired.append(key)
            self._delete_expired(expired, save=True)
            self._sweep = []
            self._compact_if_sparse()
        return len(expired)

    @_naming_the_file
    def close(self) -> None:
        """Save and close the file and release the process lock; closing twice is fine."""
        with self._lock:
            if (self._db is None and not self._reopen) or self._forked:
                return
            try:
                if self._db is not None:
                    self._db.close()
            finally:
                self._db, self._reopen = None, False
                self._close_reader()
                os.close(self._lockfile)

    def _after_fork_in_child(self) -> None:
        """The parent owns the file: a child that wrote to it, or closed it, would corrupt it."""
        if self._db is not None or self._reopen:
            if self._db is not None and hasattr(self._db, "_index"):
                self._db._index = None  # dbm.dumb: its close() and __del__ then write nothing
            _INHERITED.append(self._db)
            self._db, self._forked, self._reopen = None, True, False
            self._close_reader()
            self._lock = threading.Lock()
            os.close(self._lockfile)  # the parent's descriptor keeps the lock

    # -- private -----------------------------------------------------------
    def _open(self) -> Any:
        if self._db is None and self._reopen:  # after a swap (see _compact)
            _recover(self.path)
            self._db = self._backend.open(self.path, "c")
            self._reader, self._reopen = self._reader_for(self._db), False
        if self._db is None:
            if self._forked:
                raise RuntimeError(f"{self!r} belongs to the process this one was forked from; "
                                   "open the store after forking, or use SQLiteStore")
            raise ValueError(f"{self!r} is closed")
        return self._db

    def _is_dumb(self, db: Any) -> bool:
        """Whether ``db`` is a ``dbm.dumb`` file with the index and data file name we use."""
        return (self._backend.__name__ == "dbm.dumb"
                and isinstance(getattr(db, "_index", None), dict)
                and isinstance(getattr(db, "_datfile", None), (str, bytes)))

    def _reader_for(self, db: Any) -> Optional[int]:
        """A descriptor to read ``dbm.dumb``'s data file with (None: read through the dbm)."""
        if not self._is_dumb(db) or not hasattr(os, "pread"):
            return None
        return os.open(db._datfile, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def _close_reader(self) -> None:
        if self._reader is not None:
            os.close(self._reader)
            self._reader = None

    def _read(self, db: Any, key: bytes) -> Optional[bytes]:
        """``db.get(key)`` (lock held).  ``dbm.dumb`` opens its data file for every read (11 µs);
        its index gives where the value is, and one descriptor kept open reads it (0.9 µs)."""
        if self._reader is None:
            return db.get(key)  # type: ignore[no-any-return]
        at = db._index.get(key)
        return None if at is None else os.pread(self._reader, at[1], at[0])

    @_naming_the_file
    def _live(self) -> list[tuple[str, bytes]]:
        """(sid, record bytes) of every unexpired record."""
        now, live = time.time(), []
        with self._lock:
            db = self._open()
            for key in db.keys():  # (lock held: _read finds each)
                sid = key.decode(errors="replace")
                expires, data = self._unpack(sid, self._read(db, key))  # type: ignore[arg-type]
                if data is not None and expires > now:
                    live.append((sid, data))
        return live

    def _sweep_after_write(self, now: float) -> None:
        """``_sweep_some`` after a write: a failure is logged and the sweep put off, never
        raised, since the write stands (a 500 would have the client repeat it)."""
        try:
            self._sweep_some(now)
        except dbm.error as exc:  # (OSError among them)
            self._sweep, self._next_sweep = [], now + self.sweep_interval
            log.warning("ShelveStore %s: sweeping expired sessions failed, retried in %g s: %s",
                        self.path, self.sweep_interval, exc)

    def _sweep_some(self, now: float) -> None:
        """Delete expired records among the next few keys of the running sweep (lock held); at
        its end, compact a ``dbm.dumb`` file that is mostly the space of old values."""
        if not self._sweep:
            if now < self._next_sweep:
                return
            self._sweep = self._db.keys()
            self._next_sweep = now + self.sweep_interval
        db, expired = self._db, []
        for _ in range(min(self.sweep_step, len(self._sweep))):
            key = self._sweep.pop()
            raw = self._read(db, key)
            if raw is not None:
                expires, data = self._unpack(key.decode(errors="replace"), raw)
                if data is not None and expires <= now:
                    expired.append(key)
        self._delete_expired(expired, save=False)
        if not self._sweep:
            self._compact_if_sparse()

    def _delete_expired(self, keys: list[bytes], save: bool) -> None:
        """Delete records that have expired (lock held).

        ``dbm.dumb`` rewrites its whole index file on every delete, which makes
        deleting many records quadratic (56 s for 5,000 of 10,000).  Records that
        have expired may as well be dropped from its in-memory index and the index
        written once (``save``) or at the next write of it: a crash before that
        brings back only records that are expired anyway."""
        db = self._db
        index = getattr(db, "_index", None)
        if self._backend.__name__ == "dbm.dumb" and isinstance(index, dict):
            if keys:
                for key in keys:
                    index.pop(key, None)
                db._modified = True
                if save:
                    db.sync()
        else:
            for key in keys:
                if key in db:
                    del db[key]

    def _compact_if_sparse(self) -> None:
        """Compact a ``dbm.dumb`` file that is mostly the space of old values (lock held).

        dbm.dumb never reuses that space.  Past 4 times the live values (in its 512-byte
        blocks) plus 1 MiB: the file then stays within about 4 times what it holds, a
        copy writes at most a quarter of the file it replaces, and a small store, which
        costs no one anything, is never copied."""
        db = self._db
        if not self._is_dumb(db):
            return
        size = os.stat(db._datfile).st_size
        if size > _MIB:
            live = sum(-(-n // _BLOCK) * _BLOCK for _, n in db._index.values())
            if size > 4 * live + _MIB:
                self._compact()

    def _compact(self) -> None:
        """Copy the records, byte for byte, into a new ``dbm.dumb`` file and swap it in (lock
        held).  If the copy fails, the old file stays in use and a warning is logged."""
        db, copy = self._db, self.path + _COPY
        try:
            old = os.stat(db._datfile)
            new = self._backend.open(copy, "n", old.st_mode & 0o777)
            try:
                for key in db.keys():
                    new[key] = self._read(db, key)
            finally:
                new.close()
            _unlink(copy + ".bak")
            for suffix in (".dat", ".dir"):
                _keep_owner_and_mode(copy + suffix, old)
                _fsync(copy + suffix)
            os.close(os.open(self.path + _SWAPPING, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            _remove_copy(self.path)
            log.warning("ShelveStore %s: compacting %s failed, it stays in use as it is: %s",
                        self.path, os.fsdecode(db._datfile), exc)
            return
        # The copy is complete and marked: from here on, a crash is finished by the next open.
        db._index = None  # its close() must never write the old index over the new one
        self._close_reader()
        self._db, self._reopen = None, True
        try:
            _swap_in(self.path)
        finally:
            # Opened now; if that fails, by the next call (a failed swap is finished first:
            # a half-swapped pair is never opened).
            self._open()

    def _unpack(self, sid: str, raw: bytes) -> tuple[float, Optional[bytes]]:
        """(expiry in epoch seconds, record bytes), or (0, None) for a value we did not write."""
        if raw.startswith(_HEAD) and raw.endswith(b"}"):
            comma = raw.find(_SESSION, len(_HEAD))
            if comma > 0:
                try:
                    return int(raw[len(_HEAD):comma]) / 1000, raw[comma + len(_SESSION):-1]
                except (ValueError, OverflowError):  # not digits, or too many for a float
                    pass
        log.warning("ShelveStore %s: session %.6s... is not a value this store wrote, treated "
                    "as missing", self.path, sid)
        return 0, None

    def _error(self, exc: Exception) -> Exception:
        """The same kind of error, naming the store's file (see _naming_the_file)."""
        if self.path in str(exc):
            return exc
        where = f"(ShelveStore {self.path!r})"
        try:
            if getattr(exc, "errno", None) is None:  # dbm.error, or an OSError without one
                return type(exc)(f"{exc} {where}")
            # (an OSError: it has an errno)
            return type(exc)(exc.errno, f"{exc.strerror} {where}", exc.filename)  # type: ignore[attr-defined]
        except TypeError:  # a subclass made otherwise
            return exc


def _pack(expires: float, data: bytes) -> bytes:
    return b"%s%d%s%s}" % (_HEAD, int(min(expires, _FAR) * 1000), _SESSION, data)


def _backend_for(path: str) -> Any:
    """The dbm module of an existing file, else dbm.gnu if this Python has it, else dbm.dumb."""
    kind = dbm.whichdb(path)
    if kind == "dbm.sqlite3":  # Python 3.13's default: its connection refuses other threads
        raise ValueError(f"ShelveStore: {path!r} is a dbm.sqlite3 file, which only the thread "
                         "that opened it can use; use SQLiteStore, or a new file")
    if kind:  # None: unreadable; "": exists but unknown format
        return importlib.import_module(kind)
    if kind == "":
        raise ValueError(f"ShelveStore: {path!r} exists but is not a dbm file")
    try:
        return importlib.import_module("dbm.gnu")
    except ImportError:
        return importlib.import_module("dbm.dumb")


def _recover(path: str) -> None:
    """Finish a swap of a compacted copy that a crash interrupted, else remove a copy left
    unfinished (its swap never began)."""
    if os.path.exists(path + _SWAPPING):
        _swap_in(path)
    else:
        _remove_copy(path)


def _swap_in(path: str) -> None:
    """Put the compacted copy (complete: the marker is written after it) in place of
    ``path``'s files.

    ``os.replace`` is atomic for one file only, so the marker stays until both are in
    place: while it is there, a copy's file still at its own name is yet to be moved and
    the next open moves it (each step can be done again).  An index and a data file of
    different pairs are never opened together.  The old index's backup goes first: it
    would point into the old data file."""
    _fsync_dir(path)  # the marker is on disk before anything is replaced
    _unlink(path + ".bak")
    for suffix in (".dat", ".dir"):
        if os.path.exists(path + _COPY + suffix):
            os.replace(path + _COPY + suffix, path + suffix)
    _fsync_dir(path)
    os.unlink(path + _SWAPPING)


def _remove_copy(path: str) -> None:
    for suffix in (".dat", ".dir", ".bak"):
        _unlink(path + _COPY + suffix)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    """Make the renames in ``path``'s directory durable where the system lets us (as PostgreSQL
    does, at best: some file systems refuse it, as does a directory we may not read)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _keep_owner_and_mode(path: str, old: os.stat_result) -> None:
    """Give the copy the old data file's permissions and, where allowed, its owner and group."""
    os.chmod(path, old.st_mode & 0o7777)
    if hasattr(os, "chown"):
        try:
            os.chown(path, old.st_uid, old.st_gid)
        except OSError:
            pass  # not root: the file stays ours, with the old mode


def _lock_exclusive(lock_path: str, path: str) -> int:
    """Open and lock ``lock_path`` for this store's lifetime; refuse if someone holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform == "win32":
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RuntimeError(
            f"ShelveStore: {path!r} is already open (lock {lock_path!r} held by process {holder}); "
            "a dbm file can have one ShelveStore at a time: use SQLiteStore for several processes"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


# A forked child's copies of the parent's dbm objects: never used, never closed.
_INHERITED: list[Any] = []
