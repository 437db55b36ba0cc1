"""Store operations per second, each store beside the raw ceiling of its backend, in one run.

    python bench/store_ops.py            # get/set table, 1 and 2 threads (about 40 s)
    python bench/store_ops.py --wall     # the same, one thread timed by the wall clock
    python bench/store_ops.py --only sqlite   # only the rows named so, and their ceilings
    python bench/store_ops.py --only postgres # PostgresStore beside raw psycopg (private cluster)
    python bench/store_ops.py --only redis --contention   # Redis rows, merged saves beside plain
                                         # sets, and both merge designs with 8 threads on one session
    python bench/store_ops.py --scale    # also SQLiteStore at 1,000,000 records and a
                                         # 100,000-record prune (about 1.5 min, ~300 MB of disk)

Every row reads and writes one typical 200-byte record under 1,000 IDs.
One-thread rates are CPU time per operation (robust on a shared machine; no
row waits on I/O: synchronous=NORMAL never fsyncs a commit); two-thread rates
are wall-clock throughput of the pair.  The raw ceilings do the least work the
same backend allows: plain ``sqlite3`` SELECT / UPSERT by primary key with the
store's pragmas (WAL, synchronous=NORMAL, busy timeout, mmap), once without
and once with the JSON encode/decode every store must do; a
``threading.Lock``-ed dict of JSON strings.  In each round every row runs a
cell (say get, 1 thread) before any row runs the next, so a row and its
ceiling are timed moments apart; a cell is the median of the rounds and a
share of the ceiling the median of the round-by-round ratios.  The machine
is shared, so compare rows of one run, not runs.

A returning visitor's save, per store: ``merge`` of a Change whose base is
the stored text (nothing written meanwhile: one compare-and-set) beside a
plain ``set`` of the same record as the middleware hands it over, each save
changing the record (views 42 <-> 43, as a visitor's does; SQLite does not
rewrite a page whose bytes a write leaves as they were, so re-saving identical
bytes would flatter set).  Target: merge at least 80% of set's rate.

    python bench/store_ops.py --only "returning visitor"   # those rows alone (about 30 s)

Adding a row (e.g. RedisStore beside raw redis-py): write a factory
``make(tmpdir) -> Ops(get, set, close)`` where ``get(sid)`` and
``set(sid, record)`` do one operation and are safe to call from two threads,
then append ``Row("RedisStore", make_redis_store, "redis-py GET / SET EX")``
and ``Row("redis-py GET / SET EX", make_raw_redis, None)`` to ROWS (the third
field names the row this one is compared with).  Start servers inside the
factory and stop them in ``close``; skip the rows when the server is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from typing import Callable, NamedTuple, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import session  # noqa: E402
from stores.shelve_store import ShelveStore  # noqa: E402
from stores.sqlite_store import SQLiteStore  # noqa: E402

ONE_THREAD_CLOCK = time.thread_time  # --wall: time.perf_counter
IDS = [f"{i:06d}-{'x' * 25}" for i in range(1000)]  # 32 characters, like express's IDs


class Ops(NamedTuple):
    get: Callable[[str], object]
    set: Callable[[str, dict], object]
    close: Callable[[], object]


class Row(NamedTuple):
    name: str
    make: Callable[[str], Ops]   # make(tmpdir) -> Ops
    ceiling: Optional[str]       # the row this one is compared with, or None


def typical_record() -> dict:
    """A 200-byte record: a login, a counter, a CSRF token, express's cookie."""
    record = {"cookie": {"originalMaxAge": 86400000, "expires": "2099-11-27T13:00:00.000Z",
                         "httpOnly": True, "path": "/", "sameSite": "lax"},
              "user": "ada@example.com", "views": 42, "csrf": ""}
    record["csrf"] = "k" * (200 - len(session.encode_record(record)))
    assert len(session.encode_record(record).encode()) == 200
    return record


def dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------- rows

def store_ops(store: session.Store) -> Ops:
    return Ops(store.get, store.set, store.close)


def make_memory_store(tmp: str) -> Ops:
    return store_ops(session.MemoryStore())


def make_locked_dict(tmp: str) -> Ops:
    data, lock = {}, threading.Lock()

    def get(sid):
        with lock:
            text = data.get(sid)
        return None if text is None else json.loads(text)

    def set_(sid, record):
        text = dumps(record)
        with lock:
            data[sid] = text
    return Ops(get, set_, data.clear)


def make_sqlite_store(tmp: str) -> Ops:
    return store_ops(SQLiteStore(os.path.join(tmp, "store.db")))


def middleware_record() -> dict:
    """A record as SessionMiddleware hands it to a store: with the JSON and the expiry it
    has already computed for itself, so a store need not redo either."""
    record = typical_record()
    prepared = session._Record(record)
    prepared.text = session.encode_record(record)
    prepared.expires_ms = round(session.expires_at(record) * 1000)
    return prepared


def make_sqlite_store_from_middleware(tmp: str) -> Ops:
    store = SQLiteStore(os.path.join(tmp, "mw.db"))
    prepared = middleware_record()
    return Ops(store.get, lambda sid, _: store.set(sid, prepared), store.close)


def raw_sqlite(tmp: str, with_json: bool) -> Ops:
    """A connection per thread, the store's schema and pragmas, nothing else."""
    path = os.path.join(tmp, f"raw{int(with_json)}.db")
    local, conns = threading.local(), []
    expires = time.time() + 86400

    def conn() -> sqlite3.Connection:
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = sqlite3.connect(path, timeout=SQLiteStore.busy_timeout,
                                             isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode = WAL")
            c.execute(f"PRAGMA synchronous = {SQLiteStore.synchronous}")
            c.execute(f"PRAGMA mmap_size = {SQLiteStore.mmap_size}")
            conns.append(c)
        return c

    conn().execute("CREATE TABLE IF NOT EXISTS sessions (sid TEXT PRIMARY KEY NOT NULL, "
                   "expires REAL NOT NULL, data TEXT NOT NULL)")
    conn().execute("CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires)")
    select = "SELECT data FROM sessions WHERE sid = ? AND expires > ?"
    upsert = ("INSERT INTO sessions (sid, expires, data) VALUES (?, ?, ?) ON CONFLICT (sid) "
              "DO UPDATE SET expires = excluded.expires, data = excluded.data")
    text = dumps(typical_record())

    if with_json:
        def get(sid):
            row = conn().execute(select, (sid, time.time())).fetchone()
            return None if row is None else json.loads(row[0])

        def set_(sid, record):
            conn().execute(upsert, (sid, expires, dumps(record)))
    else:
        def get(sid):
            return conn().execute(select, (sid, time.time())).fetchone()

        def set_(sid, record):
            conn().execute(upsert, (sid, expires, text))

    return Ops(get, set_, lambda: [c.close() for c in conns])


def make_shelve_store(tmp: str) -> Ops:
    return store_ops(ShelveStore(os.path.join(tmp, "shelf")))


# -- Redis rows (owned with stores/redis_store.py): both on one private redis-server ----------

_redis_server: dict = {"server": None, "users": 0}


def redis_url() -> str:
    """Start the shared, private redis-server on first use (stopped when its last row closes)."""
    from tests.redis_server import RedisServer
    if _redis_server["server"] is None:
        _redis_server["server"] = RedisServer().start()
    _redis_server["users"] += 1
    return _redis_server["server"].url


def release_redis() -> None:
    _redis_server["users"] -= 1
    if _redis_server["users"] == 0:
        _redis_server["server"].close()
        _redis_server["server"] = None


def make_redis_store(tmp: str) -> Ops:
    from stores.redis_store import RedisStore
    store = RedisStore(url=redis_url())
    return Ops(store.get, store.set, lambda: (store.close(), release_redis()))


def make_redis_store_from_middleware(tmp: str) -> Ops:
    """RedisStore.set as SessionMiddleware calls it: the record arrives with its JSON and
    expiry already computed (the middleware needs both itself), so the store redoes neither."""
    from stores.redis_store import RedisStore
    store = RedisStore(url=redis_url(), prefix="mw:")
    prepared = middleware_record()
    return Ops(store.get, lambda sid, _: store.set(sid, prepared),
               lambda: (store.close(), release_redis()))


def make_redis_store_merge(tmp: str) -> Ops:
    """RedisStore as the middleware calls it for a returning visitor whose session nobody
    else wrote meanwhile: get_text, and merge of a change whose base is the stored JSON
    (one EVALSHA: GET, compare, PTTL, SET)."""
    from stores.redis_store import RedisStore
    store = RedisStore(url=redis_url(), prefix="merge:")
    prepared = middleware_record()
    change = session.Change(prepared.text, prepared.text, prepared.expires_ms / 1000)
    for sid in IDS:
        store.set(sid, prepared)

    def set_(sid, _):
        if not store.merge(sid, change):
            raise AssertionError("the merge found no session")
    return Ops(store.get_text, set_, lambda: (store.close(), release_redis()))


def watch_merge(client, key: str, change: session.Change, ttl: int, retries: list) -> bool:
    """The design RedisStore did not take: WATCH, GET, compare, MULTI/SET/EXEC, again while
    another client's write (or touch) breaks the WATCH.  (Without the PTTL that keeping a
    later expiry would add: a round trip fewer than a full equivalent.)"""
    import redis
    base = change.base.encode("utf-8")
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                stored = pipe.get(key)
                if stored is None:
                    pipe.unwatch()
                    return False
                text = change.text if stored == base else change.apply(stored.decode())[0]
                pipe.multi()
                pipe.set(key, text, ex=ttl)
                pipe.execute()
                return True
            except redis.WatchError:
                retries.append(1)


def make_redis_watch_merge(tmp: str) -> Ops:
    """watch_merge() with nothing written meanwhile, beside RedisStore's script."""
    import redis
    client = redis.Redis.from_url(redis_url())
    text = dumps(typical_record())
    change = session.Change(text, text, None)
    for sid in IDS:
        client.set("watch:" + sid, text, ex=86400)

    def set_(sid, _):
        if not watch_merge(client, "watch:" + sid, change, 86400, []):
            raise AssertionError("the merge found no session")
    return Ops(lambda sid: client.get("watch:" + sid), set_,
               lambda: (client.close(), release_redis()))


def redis_contention(saves: int = 100) -> None:
    """Both merge designs with 2 and 8 threads each saving its own key into ONE session at
    once (the worst case: every save races the others), plus a touch (EXPIRE) every fourth
    save, as reads of the same session would do."""
    import redis
    from stores.redis_store import RedisStore
    print(f"\n## Redis merge designs under contention: threads x {saves} saves into one session\n")
    print("| design | threads | saves/s | retries per save | keys kept |")
    print("|---|---|---|---|---|")
    url = redis_url()
    store = RedisStore(url=url, prefix="contention:")
    client = redis.Redis.from_url(url)
    base_text = dumps(typical_record())
    try:
        for threads, design in [(t, d) for t in (2, 8) for d in ("RedisStore.merge (Lua script)",
                                                              "WATCH / MULTI / EXEC")]:
            client.set("contention:one", base_text, ex=86400)
            retries: list = []
            real_apply = session.Change.apply

            def counted(change, stored, _apply=real_apply):
                retries.append(1)
                return _apply(change, stored)

            def work(t: int) -> None:
                for i in range(saves):
                    base = client.get("contention:one").decode()
                    record = json.loads(base)
                    record[f"t{t}-{i}"] = i
                    change = session.Change(base, dumps(record), None)
                    if design.startswith("RedisStore"):
                        store.merge("one", change)
                    else:
                        watch_merge(client, "contention:one", change, 86400, retries)
                    if i % 4 == 0:
                        store.touch("one", typical_record())
            session.Change.apply = counted
            try:
                pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
                started = time.perf_counter()
                for thread in pool:
                    thread.start()
                for thread in pool:
                    thread.join()
                took = time.perf_counter() - started
            finally:
                session.Change.apply = real_apply
            kept = len(json.loads(client.get("contention:one"))) - len(typical_record())
            print(f"| {design} | {threads} | {threads * saves / took:,.0f} | "
                  f"{len(retries) / (threads * saves):.2f} | {kept} of {threads * saves} |")
    finally:
        store.close()
        client.close()
        release_redis()
    print("\nRetries: for the script, stored JSON that was no longer the request's base (merged "
          "and sent again); for WATCH, those plus the transactions another write or touch broke.")


def raw_redis(tmp: str, with_json: bool) -> Ops:
    """redis-py GET and SET EX of the same JSON, under another prefix: the least work Redis allows."""
    import redis
    client = redis.Redis.from_url(redis_url())
    text = dumps(typical_record())

    if with_json:
        def get(sid):
            raw = client.get("raw:" + sid)
            return None if raw is None else json.loads(raw)

        def set_(sid, record):
            client.set("raw:" + sid, dumps(record), ex=86400)
    else:
        def get(sid):
            return client.get("raw:" + sid)

        def set_(sid, record):
            client.set("raw:" + sid, text, ex=86400)
    return Ops(get, set_, lambda: (client.close(), release_redis()))


def redis_rows() -> list:
    """The Redis rows, or none (with a note) when redis-server or redis-py is missing."""
    import importlib.util
    import shutil
    if shutil.which("redis-server") is None or importlib.util.find_spec("redis") is None:
        print("(Redis rows skipped: apt-get install -y redis-server && pip install redis)\n")
        return []
    return [Row("redis-py GET / SET EX", lambda tmp: raw_redis(tmp, False), None),
            Row("redis-py + json", lambda tmp: raw_redis(tmp, True), "redis-py GET / SET EX"),
            Row("RedisStore", make_redis_store, "redis-py GET / SET EX"),
            Row("RedisStore, record from the middleware", make_redis_store_from_middleware,
                "redis-py GET / SET EX"),
            Row("RedisStore merged save (get_text / merge)", make_redis_store_merge,
                "RedisStore, record from the middleware"),
            Row("WATCH / MULTI / EXEC merge (not taken)", make_redis_watch_merge,
                "RedisStore, record from the middleware")]


# -- PostgreSQL rows (owned with stores/postgres_store.py): both on one private cluster -----------

_pg_server: dict = {"server": None, "users": 0}


def pg_url() -> str:
    """Start the shared, private PostgreSQL cluster on first use (stopped when its last row
    closes); clients connect through its Unix socket, as an app beside its database would."""
    from tests.postgres_server import PostgresServer
    if _pg_server["server"] is None:
        _pg_server["server"] = PostgresServer().start()
    _pg_server["users"] += 1
    return _pg_server["server"].socket_url


def release_pg() -> None:
    _pg_server["users"] -= 1
    if _pg_server["users"] == 0:
        _pg_server["server"].close()
        _pg_server["server"] = None


def make_postgres_store(tmp: str) -> Ops:
    from stores.postgres_store import PostgresStore
    store = PostgresStore(conninfo=pg_url(), create_table_if_missing=True)
    return Ops(store.get, store.set, lambda: (store.close(), release_pg()))


def make_postgres_store_from_middleware(tmp: str) -> Ops:
    """PostgresStore as SessionMiddleware calls it: get_text (the stored JSON, which the
    middleware decodes itself), and set with the JSON and expiry it has already computed."""
    import psycopg
    from stores.postgres_store import PostgresStore
    url = pg_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS mw")
    store = PostgresStore(conninfo=url, schema_name="mw", create_table_if_missing=True)
    prepared = middleware_record()
    return Ops(store.get_text, lambda sid, _: store.set(sid, prepared),
               lambda: (store.close(), release_pg()))


def raw_psycopg(tmp: str, with_json: bool) -> Ops:
    """psycopg 3, one autocommit connection per thread, PostgresStore's SELECT and upsert on a
    table of its own (connect-pg-simple's, in schema raw): the least work the same rows allow."""
    import math
    import psycopg
    from stores.postgres_store import TABLE_SQL
    url, local, conns = pg_url(), threading.local(), []
    schema = f"raw{int(with_json)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(TABLE_SQL.replace('"session"', f'{schema}."session"'))
    select = f"SELECT sess::text FROM {schema}.session WHERE sid = %s AND expire >= to_timestamp(%s)"
    upsert = (f"INSERT INTO {schema}.session (sess, expire, sid) SELECT %s::json, to_timestamp(%s), %s "
              "ON CONFLICT (sid) DO UPDATE SET sess = excluded.sess, expire = excluded.expire")
    text = dumps(typical_record())
    expire = float(math.ceil(time.time() + 86400))

    def cur():
        c = getattr(local, "cur", None)
        if c is None:
            conn = psycopg.connect(url, autocommit=True)
            conns.append(conn)
            c = local.cur = conn.cursor()
        return c

    if with_json:
        def get(sid):
            row = cur().execute(select, (sid, float(math.ceil(time.time())))).fetchone()
            return None if row is None else json.loads(row[0])

        def set_(sid, record):
            cur().execute(upsert, (dumps(record), expire, sid))
    else:
        def get(sid):
            return cur().execute(select, (sid, float(math.ceil(time.time())))).fetchone()

        def set_(sid, record):
            cur().execute(upsert, (text, expire, sid))
    return Ops(get, set_, lambda: ([c.close() for c in conns], release_pg()))


def postgres_rows() -> list:
    """The PostgreSQL rows, or none (with a note) when the server or psycopg is missing."""
    import importlib.util
    from tests.postgres_server import postgres_server_available
    if not postgres_server_available() or importlib.util.find_spec("psycopg") is None:
        print('(PostgreSQL rows skipped: apt-get install -y postgresql && pip install "psycopg[binary]")\n')
        return []
    return [Row("psycopg SELECT / upsert", lambda tmp: raw_psycopg(tmp, False), None),
            Row("psycopg + json", lambda tmp: raw_psycopg(tmp, True), "psycopg SELECT / upsert"),
            Row("PostgresStore", make_postgres_store, "psycopg SELECT / upsert"),
            Row("PostgresStore, as the middleware calls it", make_postgres_store_from_middleware,
                "psycopg SELECT / upsert")]


# -- a returning visitor's save: merge beside set, per store (see the module docstring) -----------

def visitor_texts() -> tuple:
    """The typical record's JSON as a returning visitor's two saves leave it (views 42, 43)."""
    record = typical_record()
    return session.encode_record(record), session.encode_record({**record, "views": 43})


def returning_set(store: session.Store, release: Callable[[], object] = lambda: None) -> Ops:
    """``set`` as the middleware calls it (the record's JSON and expiry already made), each
    save of an ID changing its record."""
    a, b = visitor_texts()
    expires = session.expires_at(typical_record())
    following = {a: session._Record.of(b, expires), b: session._Record.of(a, expires)}
    held = dict.fromkeys(IDS, b)  # measure() fills every ID first: with a

    def set_(sid, _):
        record = following[held[sid]]
        store.set(sid, record)
        held[sid] = record.text
    return Ops(store.get_text, set_, lambda: (store.close(), release()))


def returning_merge(store: session.Store, release: Callable[[], object] = lambda: None) -> Ops:
    """``merge`` as the middleware calls it for the same saves: base is what the store holds."""
    a, b = visitor_texts()
    expires = session.expires_at(typical_record())
    following = {a: session.Change(a, b, expires), b: session.Change(b, a, expires)}
    for sid in IDS:
        store.set(sid, session._Record.of(a, expires))
    held = dict.fromkeys(IDS, a)

    def merge(sid, _):
        # Two threads meeting on one ID make a conflict (merged: the stored text stays a or b).
        change = following[held[sid]]
        store.merge(sid, change)
        held[sid] = change.text
    return Ops(store.get_text, merge, lambda: (store.close(), release()))


def visitor_rows(name: str, make_store: Callable[[str, str], session.Store],
                 release: Callable[[], object] = lambda: None) -> list:
    """The two rows of one store; ``make_store(tmp, tag)`` opens a new, empty store."""
    plain = f"{name}, returning visitor: set"
    return [Row(plain, lambda tmp: returning_set(make_store(tmp, "set"), release), None),
            Row(f"{name}, returning visitor: merge",
                lambda tmp: returning_merge(make_store(tmp, "merge"), release), plain)]


def postgres_visitor_store(tmp: str, tag: str) -> session.Store:
    import psycopg
    from stores.postgres_store import PostgresStore
    url = pg_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS visit_{tag}")
    return PostgresStore(conninfo=url, schema_name=f"visit_{tag}", create_table_if_missing=True)


def redis_visitor_store(tmp: str, tag: str) -> session.Store:
    from stores.redis_store import RedisStore
    return RedisStore(url=redis_url(), prefix=f"visit-{tag}:")


def mongo_visitor_store(tmp: str, tag: str) -> session.Store:
    from stores.mongo_store import MongoStore
    store = MongoStore(url=os.environ["MONGODB_URL"], db_name="store_ops_bench",
                       collection=f"visit_{tag}")
    store.clear()
    return store


def returning_visitor_rows() -> list:
    """Merge beside set for every store this machine can run."""
    import importlib.util
    import shutil
    rows = [*visitor_rows("MemoryStore", lambda tmp, tag: session.MemoryStore()),
            *visitor_rows("SQLiteStore", lambda tmp, tag: SQLiteStore(os.path.join(tmp, "visit.db"))),
            *visitor_rows("ShelveStore", lambda tmp, tag: ShelveStore(os.path.join(tmp, "visit")))]
    if shutil.which("redis-server") and importlib.util.find_spec("redis"):
        from stores.redis_store import RedisStore
        if "merge" in vars(RedisStore):
            rows += visitor_rows("RedisStore", redis_visitor_store, release_redis)
        else:
            print("(RedisStore returning-visitor rows skipped: it has no merge of its own here)\n")
    from tests.postgres_server import postgres_server_available
    if postgres_server_available() and importlib.util.find_spec("psycopg"):
        rows += visitor_rows("PostgresStore", postgres_visitor_store, release_pg)
    if os.environ.get("MONGODB_URL") and importlib.util.find_spec("pymongo"):
        rows += visitor_rows("MongoStore", mongo_visitor_store)
    else:
        print("(MongoStore returning-visitor rows skipped: set MONGODB_URL to a server)\n")
    return rows


def shelve_backend() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        store = ShelveStore(os.path.join(tmp, "probe"))
        store.close()
        return store._backend.__name__


ROWS = [
    Row("dict of JSON strings + lock", make_locked_dict, None),
    Row("MemoryStore", make_memory_store, "dict of JSON strings + lock"),
    Row("sqlite3 SELECT / UPSERT", lambda tmp: raw_sqlite(tmp, False), None),
    Row("sqlite3 + json", lambda tmp: raw_sqlite(tmp, True), "sqlite3 SELECT / UPSERT"),
    Row("SQLiteStore", make_sqlite_store, "sqlite3 SELECT / UPSERT"),
    Row("SQLiteStore, record from the middleware", make_sqlite_store_from_middleware,
        "sqlite3 SELECT / UPSERT"),
    Row("ShelveStore", make_shelve_store, None),
]

# ---------------------------------------------------------------- measuring


def calibrate(op: Callable, arg_sets: list, seconds: float) -> int:
    """How many calls of ``op`` take about ``seconds``."""
    calls = 50
    while True:
        started = time.perf_counter()
        for i in range(calls):
            op(*arg_sets[i % len(arg_sets)])
        took = time.perf_counter() - started
        if took > 0.02:
            return max(50, int(calls * seconds / took))
        calls *= 4


def run(op: Callable, arg_sets: list, threads: int, calls: int) -> float:
    """Operations per second of ``calls`` calls of ``op`` in each of ``threads`` threads.

    One thread is timed by its CPU time (user + system), which a busy neighbour
    on a shared machine barely disturbs; two threads by the wall clock, since
    their throughput is the point."""
    if threads == 1:
        started = ONE_THREAD_CLOCK()
        for i in range(calls):
            op(*arg_sets[i % len(arg_sets)])
        return calls / (ONE_THREAD_CLOCK() - started)
    barrier = threading.Barrier(threads + 1)

    def work(offset: int) -> None:
        barrier.wait()
        for i in range(offset, offset + calls):
            op(*arg_sets[i % len(arg_sets)])
        barrier.wait()

    pool = [threading.Thread(target=work, args=(t * 500,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    barrier.wait()
    elapsed = time.perf_counter() - started
    for thread in pool:
        thread.join()
    return threads * calls / elapsed


def rate(op: Callable, arg_sets: list, threads: int, seconds: float, repeats: int) -> float:
    """Median operations per second over ``repeats`` runs of about ``seconds`` each."""
    calls = max(50, calibrate(op, arg_sets, seconds) // threads)
    return statistics.median(run(op, arg_sets, threads, calls) for _ in range(repeats))


def measure(rows: list, seconds: float, repeats: int) -> tuple:
    """Per (row, op, threads): the median rate, and each round's rate in a list.

    Within a round every row runs one cell after the other before the next
    cell starts, so a row and its ceiling are timed moments apart and a noisy
    neighbour slows both alike; ratios are then taken round by round."""
    record = typical_record()
    sets = [(sid, record) for sid in IDS]
    gets = [(sid,) for sid in IDS]
    cells = [(kind, threads) for kind in ("get", "set") for threads in (1, 2)]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        opened = {}
        try:
            for row in rows:
                folder = os.path.join(tmp, str(len(opened)))
                os.mkdir(folder)
                ops = opened[row.name] = row.make(folder)
                for args in sets:
                    ops.set(*args)
                assert ops.get(IDS[0]) is not None, row.name
            calls = {(name, cell): calibrate(ops.get if cell[0] == "get" else ops.set,
                                             gets if cell[0] == "get" else sets, seconds) // cell[1]
                     for name, ops in opened.items() for cell in cells}
            samples: dict = {key: [] for key in calls}
            for round_ in range(repeats):
                for kind, threads in cells:
                    names = list(opened) if round_ % 2 == 0 else list(opened)[::-1]
                    for name in names:
                        ops = opened[name]
                        op, args = (ops.get, gets) if kind == "get" else (ops.set, sets)
                        samples[name, (kind, threads)].append(
                            run(op, args, threads, calls[name, (kind, threads)]))
                print(f"  round {round_ + 1}/{repeats} done", file=sys.stderr)
        finally:
            for ops in opened.values():
                ops.close()
    medians = {name: {cell: statistics.median(samples[name, cell]) for cell in cells}
               for name in opened}
    return medians, {name: {cell: samples[name, cell] for cell in cells} for name in opened}


def paired(row: list, ceiling: list) -> tuple:
    """Median and range of the round-by-round ratios row / ceiling."""
    ratios = [r / c for r, c in zip(row, ceiling)]
    return statistics.median(ratios), min(ratios), max(ratios)


def print_table(rows: list, results: tuple) -> None:
    medians, samples = results
    cols = [("get", 1), ("get", 2), ("set", 1), ("set", 2)]
    head = "| store | " + " | ".join(f"{k} {t}T ops/s (µs)" for k, t in cols) + " | vs |"
    print(head)
    print("|---" * (len(cols) + 2) + "|")
    for row in rows:
        r = medians[row.name]
        cells = []
        for col in cols:
            cell = f"{r[col]:,.0f} ({1e6 / r[col]:.1f})"
            if row.ceiling:
                mid, low, high = paired(samples[row.name][col], samples[row.ceiling][col])
                cell += f" **{mid:.0%}** ({low:.0%}–{high:.0%})"
            cells.append(cell)
        print(f"| {row.name} | " + " | ".join(cells) + f" | {row.ceiling or 'ceiling'} |")
    print()
    one = "wall clock" if ONE_THREAD_CLOCK is time.perf_counter else "CPU time"
    print(f"µs = 1e6 / rate: {one} per operation for 1 thread; wall clock per operation of the "
          "pair for 2 threads.")
    print("Bold: the row's rate as a share of the row named in 'vs', the median of the round-by-round "
          "ratios (range in brackets).")
    if "PostgresStore" in medians and "psycopg + json" in medians:
        print("PostgresStore vs psycopg + json (the same work a store must do): " + ", ".join(
            f"{k} {t}T {paired(samples['PostgresStore'][(k, t)], samples['psycopg + json'][(k, t)])[0]:.0%}"
            for k, t in cols))
    merged = [row for row in rows if row.name.endswith("returning visitor: merge")]
    if merged:
        print("Returning visitor, merge as a share of set (target: 80% or more): " + "; ".join(
            row.name.split(",")[0] + " " + ", ".join(
                f"{t}T {paired(samples[row.name][('set', t)], samples[row.ceiling][('set', t)])[0]:.0%}"
                for t in (1, 2)) for row in merged))
    if "SQLiteStore" in medians and "sqlite3 + json" in medians:
        print("SQLiteStore vs sqlite3 + json (the same work a store must do): " + ", ".join(
            f"{k} {t}T {paired(samples['SQLiteStore'][(k, t)], samples['sqlite3 + json'][(k, t)])[0]:.0%}"
            for k, t in cols))


# ---------------------------------------------------------------- scale

def fill(path: str, count: int, expires: float, prefix: str = "") -> None:
    """Insert ``count`` typical records straight into the store's table, in one transaction."""
    text = dumps(typical_record())
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO sessions VALUES (?, ?, ?)",
                         ((f"{prefix}{i:09d}-{'x' * 22}", expires, text) for i in range(count)))


def scale(tmp: str, repeats: int) -> None:
    print("\n## Scale: SQLiteStore\n")
    stores, ids = {}, {}
    rng = random.Random(7)
    for count in (1_000, 1_000_000):
        path = os.path.join(tmp, f"scale{count}.db")
        SQLiteStore(path).close()
        started = time.perf_counter()
        fill(path, count, time.time() + 86400)
        print(f"- filled {count:,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        stores[count] = SQLiteStore(path)
        ids[count] = [(f"{rng.randrange(count):09d}-{'x' * 22}",) for _ in range(20_000)]
        assert stores[count].get(ids[count][0][0]) is not None
    calls = calibrate(stores[1_000].get, ids[1_000], 0.2)
    samples: dict = {count: [] for count in stores}
    for _ in range(repeats):  # alternate, so both sizes see the same noise
        for count, store in stores.items():
            samples[count].append(run(store.get, ids[count], 1, calls))
    rates = {count: statistics.median(s) for count, s in samples.items()}
    for count, store in stores.items():
        store.close()
        print(f"- get, random IDs among {count:>9,} records: {rates[count]:,.0f} ops/s "
              f"({1e6 / rates[count]:.1f} µs)")
    print(f"- slowdown from 1,000 to 1,000,000 records: {rates[1_000] / rates[1_000_000]:.2f}x "
          "(target: within 1.5x)")

    held: list = []

    class Timed(SQLiteStore):
        def _prune_batch(self, conn, now):
            started = time.perf_counter()
            try:
                return super()._prune_batch(conn, now)
            finally:
                held.append(time.perf_counter() - started)

    def expired_store(name: str) -> SQLiteStore:
        path = os.path.join(tmp, name)
        SQLiteStore(path).close()
        fill(path, 100_000, time.time() - 60, prefix="old")
        fill(path, 10_000, time.time() + 86400, prefix="live")
        return Timed(path)

    # 1. prune() alone: each batch's time is how long it held the write lock (an upper
    #    bound: it includes any WAL checkpoint that the batch's commit ran).
    store = expired_store("prune-alone.db")
    started = time.perf_counter()
    removed = store.prune()
    total = time.perf_counter() - started
    assert removed == 100_000 and store.length() == 10_000, (removed, store.length())
    store.close()
    print(f"- prune() of 100,000 expired among 110,000 rows: {total:.2f} s, "
          f"{len(held)} batches of at most {SQLiteStore.prune_batch}")
    print(f"- write lock held per batch: max {max(held) * 1e3:.1f} ms, "
          f"median {statistics.median(held) * 1e3:.2f} ms (target: none over 50 ms)")

    # 2. The same while another thread keeps calling set() (whose automatic batches help):
    #    how long does a request wait?
    store = expired_store("prune-busy.db")
    waits, stop = [], threading.Event()

    def writer() -> None:
        record, i = typical_record(), 0
        while not stop.is_set():
            started = time.perf_counter()
            store.set(f"w{i % 1000}", record)
            waits.append(time.perf_counter() - started)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.perf_counter()
    store.prune()
    total = time.perf_counter() - started
    stop.set()
    thread.join()
    assert store.length() == 10_000 + min(len(waits), 1000), store.length()
    store.close()
    print(f"- the same with a thread calling set() meanwhile: {total:.2f} s; its {len(waits):,} "
          f"set()s took {statistics.median(waits) * 1e3:.2f} ms median, "
          f"{max(waits) * 1e3:.1f} ms at most")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", action="store_true",
                        help="also run the 1,000,000-record and 100,000-record prune checks")
    parser.add_argument("--wall", action="store_true",
                        help="time one thread by the wall clock instead of its CPU time")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one timed run")
    parser.add_argument("--only", help="only the rows whose name contains this (and their ceilings)")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per cell (median)")
    parser.add_argument("--contention", action="store_true",
                        help="also the Redis merge designs, 8 threads saving into one session")
    args = parser.parse_args()
    global ONE_THREAD_CLOCK
    if args.wall:
        ONE_THREAD_CLOCK = time.perf_counter
    print(f"# Store operations: 200-byte record, 1,000 IDs, median of {args.repeats} runs\n")
    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"ShelveStore on {shelve_backend()}\n")
    rows = ROWS + redis_rows() + postgres_rows() + returning_visitor_rows()
    if args.only:
        chosen = [row for row in rows if args.only.lower() in row.name.lower()]
        wanted = {row.name for row in chosen}
        ceilings = {row.name: row.ceiling for row in rows}
        while not {ceilings[name] for name in wanted if ceilings[name]} <= wanted:
            wanted |= {ceilings[name] for name in wanted if ceilings[name]}  # theirs too
        wanted |= {row.name for row in rows if row.ceiling in wanted}  # e.g. "+ json" beside them
        rows = [row for row in rows if row.name in wanted]
    results = measure(rows, args.seconds, args.repeats)
    print_table(rows, results)
    if args.contention and redis_rows():
        redis_contention()
    if args.scale:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            scale(tmp, args.repeats)


if __name__ == "__main__":
    main()
