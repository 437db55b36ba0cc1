"""A differential fuzz of the stores' merge(): concurrent requests on one session.

Each scenario stores a base record, then 2-4 requests load it (most at the start, some after
another one's write), change data keys and cookie attributes, and end in a merge, a touch
(a request that only read), a destroy (logout, or regenerate away) or a create on the same ID
(a genid that repeats), in a random order.  Every store replays the same steps; after each one its merge's return value,
``kept_times``, the stored record (keys in order) and the stored expiry are compared with a
plain-Python model of docs/stores.md ("`merge`: concurrent requests on one session"),
written from that text rather than from Change.apply, so that the two can disagree.

    python -m unittest tests.test_merge_fuzz -v             # the test: a few seconds
    python -m tests.test_merge_fuzz --scenarios 3000 --seed 1 [--stores memory,redis,...]

Redis and PostgreSQL run on private servers (tests/redis_server.py, tests/postgres_server.py);
MongoStore runs on mongomock, in this process only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import unittest
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

import session
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer
from tests.support import requires
from tests.test_concurrency import (HAVE_MONGOMOCK, HAVE_POSTGRES, HAVE_REDIS, NEEDS_MONGOMOCK,
                                    NEEDS_POSTGRES, NEEDS_REDIS)
from tests.test_stores_stdlib import JSONDictStore

TTL = 86400
SLACK = 2.0  # seconds an expiry may differ by: Redis and PostgreSQL round up to whole seconds,
# and a ttl-based expiry is taken from each store's clock at its own write
# Cookie lifetimes, in seconds from now, far enough apart that no store's touch rule (skip a
# move under 60 s) blurs two of them; -5 is a cookie that has expired already (maxAge 0).
LIFETIMES = (-5, 600, 1200, 1800, 3600, 7200)
KEYS = ("a", "b", "c", "user", "cart", "views", "n", "ключ", "a.b", "$x")
# express's order of a stored cookie's fields
COOKIE_ORDER = ("originalMaxAge", "partitioned", "priority", "expires", "secure", "httpOnly",
                "domain", "path", "sameSite")
ATTRIBUTES = {"httpOnly": (True, False), "path": ("/", "/app"), "secure": (True, False),
              "domain": ("example.com", "a.example.com"), "sameSite": ("lax", "strict", "none", True),
              "priority": ("low", "high"), "partitioned": (True,)}



# ---------------------------------------------------------------- the model

def js(value: Any) -> str:
    """A value's JSON, to tell two values apart as JSON does (1, 1.0, true and -0.0 differ)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def iso(at: float) -> str:
    moment = datetime.fromtimestamp(at, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def cookie_expiry(cookie: dict) -> Optional[float]:
    expires = cookie.get("expires")
    if expires is None:
        return None
    return datetime.strptime(expires, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


class Model:
    """One session ID's record as docs/stores.md says a store holds it: (record, expiry)."""

    def __init__(self) -> None:
        self.record: Optional[dict] = None
        self.expiry: Optional[float] = None

    def text(self) -> Optional[str]:
        return None if self.record is None else session.encode_record(self.record)

    def _write(self, record: dict, expiry: float) -> None:
        if expiry > time.time():
            self.record, self.expiry = record, expiry
        else:  # written already expired: deleted, as set() does
            self.record = self.expiry = None

    def set(self, record: dict) -> None:
        at = cookie_expiry(record["cookie"])
        self._write(record, time.time() + TTL if at is None else at)

    def destroy(self) -> None:
        self.record = self.expiry = None

    def touch(self, record: dict, keep_later: bool, rewrites_cookie: bool = False) -> None:
        """A request that only read: the expiry moves (never earlier when ``keep_later``), the
        data stays; MemoryStore keeps the touched cookie too, as express's MemoryStore does."""
        if self.record is None:
            return
        at = cookie_expiry(record["cookie"])
        expiry = time.time() + TTL if at is None else at
        if keep_later and self.expiry > expiry:
            return
        if rewrites_cookie and keep_later and expiry - self.expiry < min(60, (expiry - time.time()) / 100):
            def others(cookie):
                return {key: value for key, value in cookie.items() if key != "expires"}
            if others(record["cookie"]) == others(self.record["cookie"]):
                return  # MemoryStore skips a touch that barely moves the expiry, and only that
        self._write({**self.record, "cookie": record["cookie"]} if rewrites_cookie else self.record,
                    expiry)

    def merge(self, base: Optional[dict], mine: dict, keep_later: bool,
              rule_4: bool = True) -> tuple:
        """(returned, kept_times) of a merge of a request that loaded ``base`` (None: a new
        session) and would write ``mine``; ``rule_4`` False for Store's default merge, which
        the docs exempt from keeping a later stored expiry."""
        if (self.record is None) != (base is None):
            return False, None  # rule 1: create only; rule 2: never resurrect
        mine_at = cookie_expiry(mine["cookie"])
        kept = None
        if self.record is None or self.text() == session.encode_record(base):
            record, at = json.loads(js(mine)), mine_at
        else:
            record, at, kept = self._apply(base, mine, keep_later)
        expiry = time.time() + TTL if at is None else at
        if rule_4 and keep_later and self.record is not None:
            expiry = max(expiry, self.expiry)  # rule 4
        self._write(record, expiry)
        return True, kept

    def _apply(self, base: dict, mine: dict, keep_later: bool) -> tuple:
        """The request's changes onto the stored record: the keys it set or deleted (keys in
        their stored order, new ones last); the cookie attributes it changed; its two times
        unless keep_later and the stored cookie expires later."""
        record = json.loads(js(self.record))
        for key in base:
            if key != "cookie" and key not in mine:
                record.pop(key, None)
        for key, value in mine.items():
            if key != "cookie" and (key not in base or js(base[key]) != js(value)):
                record[key] = value
        stored, loaded, own = record["cookie"], base["cookie"], mine["cookie"]
        cookie = dict(stored)
        for key in set(loaded) | set(own):
            if key in ("originalMaxAge", "expires"):
                continue
            if key not in own:
                if key in loaded:
                    cookie.pop(key, None)
            elif key not in loaded or js(loaded[key]) != js(own[key]):
                cookie[key] = own[key]
        theirs_at, mine_at = cookie_expiry(stored), cookie_expiry(own)
        # A browser-session cookie (no expiry) counts as expiring before any dated one: the
        # docs leave this open; Change.keeps and its tests say so.
        keep = keep_later and theirs_at is not None and (mine_at is None or theirs_at > mine_at)
        times = stored if keep else own
        cookie["originalMaxAge"], cookie["expires"] = times.get("originalMaxAge"), times.get("expires")
        record["cookie"] = {key: cookie[key] for key in COOKIE_ORDER if key in cookie}
        kept = (cookie["originalMaxAge"], cookie["expires"]) if keep else None
        return record, theirs_at if keep else mine_at, kept


# ---------------------------------------------------------------- scenarios

class Gen:
    """Random records and requests' changes to them, from one seeded Random."""

    def __init__(self, rng: random.Random, odd_keys: bool = True) -> None:
        self.rng, self.keys = rng, KEYS if odd_keys else KEYS[:7]

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randrange(10 if depth < 2 else 6)
        if kind == 0:
            return r.randrange(-3, 1000)
        if kind == 1:
            return r.choice((1.0, -0.0, 0.5, 1e-7, 2.5e20))
        if kind == 2:
            return r.choice(("x", "é", "😀", 'q"t', ""))
        if kind == 3:
            return r.choice((True, False))
        if kind in (4, 5):
            return r.choice((None, 1, "1"))
        if kind in (6, 7):
            return [self.value(depth + 1) for _ in range(r.randrange(3))]
        return {r.choice(("p", "q", "r")): self.value(depth + 1) for _ in range(r.randrange(3))}

    def lifetime(self, live: bool = False) -> Optional[float]:
        choices = LIFETIMES[1:] if live else LIFETIMES
        return None if self.rng.random() < 0.2 else self.rng.choice(choices)

    def cookie(self) -> dict:
        r, off = self.rng, self.lifetime(live=True)
        cookie = {"originalMaxAge": None if off is None else r.choice((600000, 3600000, 86400000)),
                  "expires": None if off is None else iso(time.time() + off),
                  "httpOnly": r.random() < 0.8, "path": "/"}
        for key in ("secure", "domain", "sameSite", "priority", "partitioned"):
            if r.random() < 0.2:
                cookie[key] = r.choice(ATTRIBUTES[key])
        return {key: cookie[key] for key in COOKIE_ORDER if key in cookie}

    def record(self) -> dict:
        record = {"cookie": self.cookie()}
        for _ in range(self.rng.randrange(5)):
            record[self.rng.choice(self.keys)] = self.value()
        return record

    def change(self, loaded: dict) -> tuple:
        """(the record the request would write, keep_later) for a request that loaded ``loaded``."""
        r = self.rng
        mine = json.loads(js(loaded))
        for _ in range(r.randrange(4)):
            step, keys = r.randrange(6), [k for k in mine if k != "cookie"]
            if step == 0 or not keys:
                mine[r.choice(self.keys)] = self.value()       # set (new or overwritten)
            elif step == 1:
                del mine[r.choice(keys)]                        # delete
            elif step == 2:
                key = r.choice(keys)                            # delete and set again: moved last
                mine[key] = mine.pop(key) if r.random() < 0.5 else self.value()
            elif step == 3:
                key = r.choice(keys)                            # changed in place, nested
                if isinstance(mine[key], dict):
                    mine[key][r.choice(("p", "q", "s"))] = self.value(1)
                elif isinstance(mine[key], list):
                    mine[key].append(self.value(1))
                else:
                    mine[key] = {"p": mine[key]}
            else:
                mine[r.choice(keys)] = self.value()             # overwrite
        cookie = mine["cookie"]
        if r.random() < 0.5:  # the cookie's times: rolled, or a new maxAge (None: browser session)
            off = self.lifetime()
            if off is None:
                cookie["originalMaxAge"] = cookie["expires"] = None
            else:
                if cookie["originalMaxAge"] is None or r.random() < 0.5:
                    cookie["originalMaxAge"] = r.choice((600000, 3600000, 86400000, 0))
                cookie["expires"] = iso(time.time() + off)
        for _ in range(r.randrange(3) if r.random() < 0.4 else 0):  # attributes
            key = r.choice(list(ATTRIBUTES))
            if key in ("httpOnly", "path") or r.random() < 0.7:
                cookie[key] = r.choice(ATTRIBUTES[key])
            else:
                cookie.pop(key, None)
        mine["cookie"] = {key: cookie[key] for key in COOKIE_ORDER if key in cookie}
        keep_later = mine["cookie"]["originalMaxAge"] == loaded["cookie"]["originalMaxAge"]
        if r.random() < 0.15:
            keep_later = not keep_later
        return mine, keep_later


def scenario(rng: random.Random, odd_keys: bool = True) -> list:
    """The steps of one scenario: ("set", record), ("load", request), ("merge", request,
    record, keep_later), ("touch", request, record, keep_later), ("destroy",), ("create", record).  A request's load comes before its
    write, most at the start; its record is made from what the model holds when it loads."""
    gen = Gen(rng, odd_keys)
    count = rng.randrange(2, 5)
    kinds = [rng.choices(("merge", "touch", "destroy", "create"), (0.7, 0.1, 0.1, 0.1))[0] for _ in range(count)]
    writes = list(range(count))
    rng.shuffle(writes)
    early = [i for i in writes if rng.random() < 0.75 or i == writes[0]]
    steps: list = [("set", gen.record())] + [("load", i) for i in early]
    for i in writes:
        if i not in early:
            steps.append(("load", i))
        steps.append((kinds[i], i))
    return steps


# ---------------------------------------------------------------- the stores

class Backend:
    """A store under test: how to make it, read its stored expiry, and merge (sync or async)."""

    rule_4 = True  # False: Store's default, exempt from rule 4 (docs/stores.md)

    def __init__(self, name: str, store: Any, expiry: Any, loop: Any = None) -> None:
        self.name, self.store, self.expiry, self.loop = name, store, expiry, loop

    def merge(self, sid: str, change: session.Change) -> bool:
        if self.loop is None:
            return self.store.merge(sid, change)
        return self.loop.run_until_complete(self.store.amerge(sid, change))


STORES = ("memory", "default", "shelve", "sqlite", "mongomock", "mongomock-unstringified",
          "redis", "redis-async", "postgres", "postgres-async")


class Backends:
    """The stores named, over private servers and files it opens, and closes."""

    def __init__(self, names: tuple) -> None:
        self.dir = tempfile.mkdtemp(prefix="merge-fuzz-")
        self.servers: list = []
        self.closing: list = []
        self.loop = asyncio.new_event_loop()
        self.list = [self._make(name) for name in names]

    def _server(self, kind: str) -> Any:
        for server in self.servers:
            if isinstance(server, kind):
                return server
        server = kind(timezone="Asia/Kathmandu") if kind is PostgresServer else kind()
        self.servers.append(server.__enter__())
        return server

    def _make(self, name: str) -> Backend:
        loop = self.loop if name.endswith("-async") else None
        if name == "memory":
            store = session.MemoryStore()
            return Backend(name, store, lambda sid: store._data[sid][0] if sid in store._data else None)
        if name == "default":
            store = JSONDictStore(TTL)
            backend = Backend(name, store, lambda sid: store.data[sid][0] if sid in store.data else None)
            backend.rule_4 = False
            return backend
        if name == "shelve":
            from stores.shelve_store import ShelveStore
            store = ShelveStore(os.path.join(self.dir, "shelve"), ttl=TTL)
            self.closing.append(store.close)

            def expiry(sid):
                with store._lock:
                    raw = store._read(store._open(), sid.encode())
                return None if raw is None else store._unpack(sid, raw)[0]
            return Backend(name, store, expiry)
        if name == "sqlite":
            from stores.sqlite_store import SQLiteStore
            path = os.path.join(self.dir, "sqlite.db")
            store = SQLiteStore(path, ttl=TTL)
            self.closing.append(store.close)
            db = sqlite3.connect(path, check_same_thread=False)
            self.closing.append(db.close)

            def expiry(sid):
                row = db.execute("SELECT expires FROM sessions WHERE sid = ?", (sid,)).fetchone()
                return None if row is None else row[0]
            return Backend(name, store, expiry)
        if name.startswith("mongomock"):
            import mongomock
            from stores.mongo_store import MongoStore
            store = MongoStore(mongomock.MongoClient(), auto_remove="disabled", ttl=TTL,
                               stringify=not name.endswith("unstringified"))

            def expiry(sid):
                doc = store.collection.find_one({"_id": sid})
                if doc is None:
                    return None
                at = doc["expires"]
                return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()
            return Backend(name, store, expiry)
        if name.startswith("redis"):
            import redis
            from stores.redis_store import RedisStore
            url = self._server(RedisServer).url
            prefix = f"{name}:"
            store = RedisStore(url=url, prefix=prefix, ttl=TTL)
            client = redis.Redis.from_url(url)
            self.closing += [client.close, store.close]
            if loop is not None:
                self.closing.insert(0, lambda: loop.run_until_complete(store.aclose()))

            def expiry(sid):
                left = client.pttl(prefix + sid)
                return None if left < 0 else time.time() + left / 1000
            return Backend(name, store, expiry, loop)
        if name.startswith("postgres"):
            import psycopg
            from stores.postgres_store import PostgresStore
            url = self._server(PostgresServer).url
            schema = name.replace("-", "_")  # a table of its own: connect-pg-simple's key names are fixed
            table = f"{schema}.session"
            db = psycopg.connect(url, autocommit=True)
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            store = PostgresStore(conninfo=url, schema_name=schema, ttl=TTL,
                                  create_table_if_missing=True, prune_interval=False)
            self.closing += [db.close, store.close]
            if loop is not None:
                self.closing.insert(0, lambda: loop.run_until_complete(store.aclose()))

            def expiry(sid):
                row = db.execute(f"SELECT extract(epoch FROM expire::timestamptz) FROM {table} "
                                 "WHERE sid = %s", (sid,)).fetchone()
                return None if row is None else float(row[0])
            return Backend(name, store, expiry, loop)
        raise ValueError(f"no store called {name!r}: one of {', '.join(STORES)}")

    def close(self) -> None:
        for close in self.closing:
            close()
        self.loop.close()
        for server in self.servers:
            server.__exit__(None, None, None)


# ---------------------------------------------------------------- running them

def touch_record(store: Any, record: dict, keep_later: bool) -> session._Record:
    """``record`` as the middleware hands it to the store's touch(): whole, or with no fields
    when the store says its touch reads only the expiry (see tests/store_contract.py)."""
    expires = session.expires_at(record)
    if session._touch_reads_expiry_only(store):
        return session._Record.of_expiry(None if expires is None else round(expires * 1000), keep_later)
    touched = session._Record.of(session.encode_record(record), expires)
    touched.text, touched.keep_later = None, keep_later
    return touched


def run(backends: list, seed: int, scenarios: int, odd_keys: bool = True) -> list:
    """The divergences found over ``scenarios`` scenarios from ``seed``: (scenario number,
    store, step, what differed, expected, got), at most the first one per store per scenario."""
    found = []
    for number in range(scenarios):
        rng = random.Random(f"{seed}:{number}")
        found += run_one(backends, rng, number, odd_keys)
    return found


def run_one(backends: list, rng: random.Random, number: int, odd_keys: bool = True) -> list:
    sid = uuid.uuid4().hex
    gen = Gen(rng, odd_keys)
    model = Model()     # run as the plan is made: a request changes what it loaded
    loaded: dict = {}   # request -> the record it loaded (None: it found no session)
    plan = []           # the steps, with what each request wrote
    for step in scenario(rng, odd_keys):
        kind = step[0]
        if kind == "set":
            model.set(step[1])
            plan.append(step)
        elif kind == "load":
            loaded[step[1]] = None if model.record is None else json.loads(model.text())
            plan.append(step)
        elif kind == "destroy":
            model.destroy()
            plan.append(step)
        elif kind == "touch":
            if loaded[step[1]] is not None:  # else it made a new session, left unsaved
                mine, keep_later = gen.change(loaded[step[1]])
                touched = {**loaded[step[1]], "cookie": mine["cookie"]}
                model.touch(touched, keep_later)
                plan.append(("touch", step[1], touched, keep_later))
        else:
            i = step[1]
            base = None if kind == "create" else loaded[i]
            mine, keep_later = (gen.record(), True) if base is None else gen.change(base)
            model.merge(base, mine, keep_later)
            plan.append(("merge" if base is not None else "create", i, mine, keep_later))
    models = {b.name: Model() for b in backends}
    bases: dict = {b.name: {} for b in backends}
    failed: dict = {}
    found = []
    # Replay: the model first, then every store, step by step.
    for n, step in enumerate(plan):
        kind = step[0]
        for backend in backends:
            if backend.name in failed:
                continue
            m, store = models[backend.name], backend.store
            try:
                got = expected = None
                if kind == "set":
                    m.set(step[1])
                    store.set(sid, step[1])
                elif kind == "load":
                    bases[backend.name][step[1]] = store.get_text(sid)
                    got, expected = bases[backend.name][step[1]], m.text()
                elif kind == "destroy":
                    m.destroy()
                    store.destroy(sid)
                elif kind == "touch":
                    m.touch(step[2], step[3], rewrites_cookie=backend.name == "memory")
                    store.touch(sid, touch_record(store, step[2], step[3]))
                else:
                    i, mine, keep_later = step[1], step[2], step[3]
                    base_text = None if kind == "create" else bases[backend.name][i]
                    base = None if base_text is None else json.loads(base_text)
                    expected = m.merge(base, mine, keep_later, backend.rule_4)
                    change = session.Change(base_text, session.encode_record(mine),
                                            cookie_expiry(mine["cookie"]), keep_later)
                    got = (backend.merge(sid, change), change.kept_times)
                if got != expected:
                    raise Divergence(f"{kind} returned", expected, got)
                text = store.get_text(sid)
                if text is not None and m.text() is not None:
                    text = session.encode_record(json.loads(text))  # one form: Mongo's documents
                if text != m.text():
                    raise Divergence("stored record", m.text(), text)
                at = backend.expiry(sid) if m.expiry is not None else None
                if m.expiry is not None and (at is None or abs(at - m.expiry) > SLACK):
                    raise Divergence("stored expiry", _in(m.expiry), _in(at))
            except Divergence as exc:
                failed[backend.name] = True
                found.append((number, backend.name, n, exc.args[0], exc.args[1], exc.args[2], plan))
            except Exception as exc:  # noqa: BLE001 - a store's error is a divergence too
                failed[backend.name] = True
                found.append((number, backend.name, n, "raised", None, repr(exc), plan))
    for backend in backends:
        backend.store.destroy(sid)
    return found


class Divergence(Exception):
    pass


def _in(at: Optional[float]) -> Any:
    """An expiry as seconds from now, for reading."""
    return None if at is None else round(at - time.time(), 3)


def describe(divergence: tuple) -> str:
    number, store, n, what, expected, got, plan = divergence
    lines = [f"scenario {number}, {store}, step {n}: {what}", f"  expected {expected!r}",
             f"  got      {got!r}", "  steps:"]
    for i, step in enumerate(plan):
        mark = ">" if i == n else " "
        if step[0] in ("merge", "create", "touch"):
            lines.append(f"  {mark} {step[0]} request {step[1]} (keep_later={step[3]}): "
                         f"{session.encode_record(step[2])}")
        elif step[0] == "set":
            lines.append(f"  {mark} set {session.encode_record(step[1])}")
        else:
            lines.append(f"  {mark} {step[0]} request {step[1]}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the tests

SEED = 20261206


class MergeFuzz:
    """Every store named in ``stores`` against the model, over ``scenarios`` seeded scenarios."""

    stores: tuple = ()
    scenarios = 300

    @classmethod
    def setUpClass(cls) -> None:
        cls.backends = Backends(cls.stores)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.backends.close()

    def test_every_merge_follows_the_documented_rule(self):
        found = run(self.backends.list, SEED, self.scenarios)
        if found:
            self.fail(f"{len(found)} divergences; the first:\n" + describe(found[0]))


class TestStdlibStores(MergeFuzz, unittest.TestCase):
    stores = ("memory", "default", "shelve", "sqlite")


@requires(HAVE_MONGOMOCK, NEEDS_MONGOMOCK)
class TestMongoStoreOnMongomock(MergeFuzz, unittest.TestCase):
    stores = ("mongomock", "mongomock-unstringified")


@requires(HAVE_REDIS, NEEDS_REDIS)
class TestRedisStore(MergeFuzz, unittest.TestCase):
    stores = ("redis", "redis-async")


@requires(HAVE_POSTGRES, NEEDS_POSTGRES)
class TestPostgresStore(MergeFuzz, unittest.TestCase):
    stores = ("postgres", "postgres-async")


def main() -> None:
    parser = argparse.ArgumentParser(description="The merge fuzz, longer: divergences by store.")
    parser.add_argument("--scenarios", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--stores", default=",".join(STORES), help=f"of {', '.join(STORES)}")
    parser.add_argument("--show", type=int, default=2, help="divergences shown per store and step")
    args = parser.parse_args()
    backends = Backends(tuple(args.stores.split(",")))
    try:
        started = time.time()
        found = run(backends.list, args.seed, args.scenarios)
        took = time.time() - started
    finally:
        backends.close()
    shown: dict = {}
    for divergence in found:
        key = (divergence[1], divergence[3])
        shown[key] = shown.get(key, 0) + 1
        if shown[key] <= args.show:
            print(describe(divergence), end="\n\n")
    print(f"{args.scenarios} scenarios, seed {args.seed}, {took:.1f} s")
    for name in args.stores.split(","):
        count = sum(1 for d in found if d[1] == name)
        print(f"  {name}: {count} scenarios diverged")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
