"""SQLiteStore.merge: an optimistic compare-and-set against a ``BEGIN IMMEDIATE`` transaction.

    python bench/sqlite_merge.py             # about 1 min
    python bench/sqlite_merge.py --quick     # fewer rounds and merges, about 20 s

The figures in stores/sqlite_store.py's docstring come from this script.  Three ways
to write one request's change into a row, each a SQLiteStore subclass so everything
else (pool, pragmas, statements) is the same:

- ``cas`` (the store's own): ``UPDATE ... WHERE sid = ? AND data = <base> AND
  expires > ?``; on 0 rows, read the row again, apply the change to it and try again.
  The write lock is held for that one statement.
- ``immediate``: ``BEGIN IMMEDIATE``; SELECT; compare (apply on a difference);
  UPDATE; COMMIT.  Never retries, but holds the write lock across four statements
  and the Python between them, and every other writer waits in SQLite's busy
  handler, which sleeps 1, 2, 5, 10... ms between tries.
- ``cas, then immediate``: the compare-and-set first; on a conflict, the transaction.

Three cases:

1. The common one, nobody wrote since the request loaded: one thread, 1,000
   records, CPU time per merge beside a plain ``set`` of the same record as the
   middleware hands it (its JSON already made).
2. Threads of one process hammering one record: each loop loads the text, sets
   its own key, merges (``--work`` ms of "request" between load and save).
   Throughput, conflicts (calls of ``Change.apply``) per merge, the slowest
   merge, and keys lost (must be 0).
3. The same from several processes.

Rows of a case run interleaved, round by round; cells are medians of the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import session  # noqa: E402
from stores.sqlite_store import SQLiteStore  # noqa: E402


class Immediate(SQLiteStore):
    """merge as one write transaction: read, compare or apply, write, commit."""

    def merge(self, sid: str, change: session.Change) -> bool:
        if change.base is None:
            return self._create(sid, change)
        cur = self._take()
        try:
            return self._locked_merge(cur, sid, change)
        finally:
            self._give(cur)

    def _locked_merge(self, cur, sid: str, change: session.Change) -> bool:
        t = f'"{self.table}"'
        self._run(cur, "BEGIN IMMEDIATE", ())  # waits out another writer as the store does
        try:
            now = time.time()
            row = cur.execute(self._sql_get, (sid, now)).fetchone()
            if row is None:
                cur.execute("ROLLBACK")
                return False
            if row[0] == change.base:
                text, expires = change.text, change.expires
            else:
                text, expires = change.apply(row[0])
            expiry = now + self.ttl if expires is None else expires
            later = "max(expires, ?)" if change.keep_later else "?"
            cur.execute(f"UPDATE {t} SET data = ?, expires = {later} WHERE sid = ?", (text, expiry, sid))
            self._run(cur, "COMMIT", ())
            return True
        except BaseException:
            if cur.connection.in_transaction:
                cur.execute("ROLLBACK")
            raise


class CasThenImmediate(Immediate):
    """The compare-and-set once; on a conflict, the write transaction."""

    def merge(self, sid: str, change: session.Change) -> bool:
        if change.base is None:
            return self._create(sid, change)
        cur = self._take()
        try:
            now = time.time()
            expiry = now + self.ttl if change.expires is None else change.expires
            sql = self._sql_cas_later if change.keep_later else self._sql_cas
            if self._run(cur, sql, (change.text, expiry, sid, change.base, now)).rowcount:
                return True
            return self._locked_merge(cur, sid, change)
        finally:
            self._give(cur)


STRATEGIES = {"cas": SQLiteStore, "immediate": Immediate, "cas, then immediate": CasThenImmediate}


class Counting(session.Change):
    """A Change that counts its apply() calls: one per conflict met."""

    __slots__ = ("applied",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.applied = 0

    def apply(self, stored: str) -> tuple:
        self.applied += 1
        return super().apply(stored)


def record_json(views: int) -> str:
    return session.encode_record({
        "cookie": {"originalMaxAge": 86400000, "expires": "2099-11-27T13:00:00.000Z",
                   "httpOnly": True, "path": "/", "sameSite": "lax"},
        "user": "ada@example.com", "views": views, "csrf": "k" * 40})


EXPIRES = session.expires_at(json.loads(record_json(0)))  # epoch seconds of 2099-11-27


# ---------------------------------------------------------------- 1. the common case

def common_case(tmp: str, rounds: int, calls: int) -> None:
    ids = [f"{i:06d}-{'x' * 25}" for i in range(1000)]
    a, b = record_json(1), record_json(2)
    records = {a: session._Record.of(b, EXPIRES), b: session._Record.of(a, EXPIRES)}  # the next one
    stores = {name: cls(os.path.join(tmp, f"common-{n}.db")) for n, (name, cls) in
              enumerate(STRATEGIES.items())}
    plain = SQLiteStore(os.path.join(tmp, "common-set.db"))
    for store in [plain, *stores.values()]:
        for sid in ids:
            store.set(sid, records[b])
    # Each write changes the record (views 1 <-> 2), as a returning visitor's does: SQLite
    # skips writing a page whose bytes a write leaves as they were, so rewriting the same
    # record would be a cheaper set than any real one.
    state = {name: dict.fromkeys(ids, a) for name in [*stores, "set"]}

    def sets(sid: str) -> None:
        held = state["set"]
        record = records[held[sid]]
        plain.set(sid, record)
        held[sid] = record.text

    def merges(name: str, store: SQLiteStore):
        held = state[name]
        changes = {a: session.Change(a, b, EXPIRES), b: session.Change(b, a, EXPIRES)}

        def one(sid: str) -> None:
            change = changes[held[sid]]
            assert store.merge(sid, change)
            held[sid] = change.text
        return one

    ops = {"set (record from the middleware)": sets,
           **{name: merges(name, store) for name, store in stores.items()}}
    samples = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            started = time.thread_time()
            for i in range(calls):
                op(ids[i % 1000])
            samples[name].append(calls / (time.thread_time() - started))
    base = samples["set (record from the middleware)"]
    print("| 1 thread, 1,000 records, nothing written meanwhile | ops/s (µs, CPU) | vs set |")
    print("|---|---|---|")
    for name, rates in samples.items():
        median = statistics.median(rates)
        ratio = statistics.median(r / s for r, s in zip(rates, base))
        print(f"| {name} | {median:,.0f} ({1e6 / median:.1f}) | {ratio:.0%} |")
    for store in [plain, *stores.values()]:
        store.close()
    print()


# ---------------------------------------------------------------- 2, 3. one record, many writers

def hammer(store: SQLiteStore, key: str, count: int, work: float) -> tuple:
    """``count`` merges setting ``key`` to 1..count: (seconds of each merge, conflicts, Falses)."""
    took, conflicts, refused = [], 0, 0
    for n in range(1, count + 1):
        base = store.get_text("one")
        record = json.loads(base)
        record[key] = n
        if work:
            time.sleep(work)
        change = Counting(base, session.encode_record(record), EXPIRES)
        started = time.perf_counter()
        if not store.merge("one", change):
            refused += 1
        took.append(time.perf_counter() - started)
        conflicts += change.applied
    return took, conflicts, refused


def seed(store: SQLiteStore) -> None:
    store.clear()
    store.set("one", session._Record.of(record_json(0), EXPIRES))


def lost_keys(store: SQLiteStore, keys: list, count: int) -> int:
    record = store.get("one")
    return sum(1 for key in keys if record.get(key) != count)


def threads_case(path: str, cls: type, threads: int, count: int, work: float) -> dict:
    store = cls(path)
    seed(store)
    results: list = []
    barrier = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        barrier.wait()
        results.append(hammer(store, f"t{t}", count, work))

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    lost = lost_keys(store, [f"t{t}" for t in range(threads)], count)
    store.close()
    return summary(results, elapsed, threads * count, lost)


WORKER = "worker"


def processes_case(path: str, name: str, procs: int, count: int, work: float) -> dict:
    store = STRATEGIES[name](path)
    seed(store)
    start_at = time.time() + 1.0
    children = [subprocess.Popen([sys.executable, __file__, WORKER, path, name, f"p{p}", str(count),
                                  str(work), str(start_at)], stdout=subprocess.PIPE, text=True)
                for p in range(procs)]
    results, ends = [], []
    for child in children:
        out, _ = child.communicate(timeout=600)
        took, conflicts, refused, ended = json.loads(out)
        results.append((took, conflicts, refused))
        ends.append(ended)
    elapsed = max(ends) - start_at
    lost = lost_keys(store, [f"p{p}" for p in range(procs)], count)
    store.close()
    return summary(results, elapsed, procs * count, lost)


def worker_main(path: str, name: str, key: str, count: str, work: str, start_at: str) -> None:
    store = STRATEGIES[name](path)
    store.get_text("one")  # connect before the start
    time.sleep(max(0.0, float(start_at) - time.time()))
    took, conflicts, refused = hammer(store, key, int(count), float(work))
    ended = time.time()
    store.close()
    print(json.dumps([took, conflicts, refused, ended]))


def summary(results: list, elapsed: float, merges: int, lost: int) -> dict:
    took = sorted(t for r in results for t in r[0])
    return {"rate": merges / elapsed, "conflicts": sum(r[1] for r in results) / merges,
            "p99": took[int(len(took) * 0.99)], "max": took[-1],
            "refused": sum(r[2] for r in results), "lost": lost}


def contended(tmp: str, rounds: int, count: int, work: float) -> None:
    cases = [("threads", 2), ("threads", 8), ("processes", 2), ("processes", 4)]
    print(f"| one record, each writer sets its own key, {count} merges each, {work * 1e3:g} ms "
          "between load and save | merges/s | conflicts per merge | p99 / max merge (ms) | "
          "keys lost |")
    print("|---|---|---|---|---|")
    for kind, writers in cases:
        samples: dict = {name: [] for name in STRATEGIES}
        for round_ in range(rounds):
            for n, name in enumerate(STRATEGIES):
                path = os.path.join(tmp, f"{kind}{writers}-{n}-{round_}.db")
                if kind == "threads":
                    samples[name].append(threads_case(path, STRATEGIES[name], writers, count, work))
                else:
                    samples[name].append(processes_case(path, name, writers, count, work))
        for name, runs in samples.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"| {writers} {kind}, {name} | {med['rate']:,.0f} | {med['conflicts']:.2f} | "
                  f"{med['p99'] * 1e3:.1f} / {med['max'] * 1e3:.1f} | "
                  f"{sum(r['lost'] for r in runs)}{' (refused: %d)' % med['refused'] if med['refused'] else ''} |")
    print()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        worker_main(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and merges")
    parser.add_argument("--work", type=float, default=0.0,
                        help="milliseconds each writer spends between load and merge")
    args = parser.parse_args()
    rounds, calls, count = (3, 3000, 100) if args.quick else (7, 10000, 300)
    print(f"# SQLiteStore.merge strategies (Python {sys.version.split()[0]}, SQLite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; medians of {rounds} rounds)\n")
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        common_case(tmp, rounds, calls)
        contended(tmp, rounds, count, args.work / 1000)


if __name__ == "__main__":
    main()
