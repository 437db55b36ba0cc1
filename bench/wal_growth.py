"""How long SQLiteStore's WAL grows when several processes read and write one file without a pause.

    python bench/wal_growth.py                        # 3 processes, 8,000 reads and writes each
    python bench/wal_growth.py --processes 2 --writes 20000 --pause 400 --rounds 5

Each process opens its own SQLiteStore on one file and, over 50 sessions of its own, reads a
record and writes it back (about 2 KB of JSON), --pause µs of busy CPU after each write (the rest
of a request).  While they run, the harness samples the WAL file's size every 10 ms.  Rows, one
round of each in turn: SQLiteStore as it is, and with ``restart_pages`` out of reach (never
making the WAL start over, what it did before 7 December 2026).  Columns: the WAL's largest
size, its size at the end, and writes per second of all processes together (medians).

A write starts the WAL over only if it finds all of it copied and no reader in it; with
processes that never pause one nearly always is, or another process wrote since the last
checkpoint, and the WAL then grows by every page written.  Its file keeps its largest size
up to SQLiteStore's ``journal_size_limit`` (32 MB), and is cut back to that as it starts over.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stores.sqlite_store import SQLiteStore  # noqa: E402


class NeverRestarting(SQLiteStore):
    restart_pages = 1 << 62


ROWS = {"SQLiteStore": SQLiteStore, "restart_pages out of reach (before)": NeverRestarting}


def record(n: int) -> dict:
    return {"cookie": {"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"},
            "n": n, "pad": "x" * 2000}


def work(kind: str, path: str, me: int, writes: int, pause: float) -> None:
    store = ROWS[kind](path)
    for n in range(writes):
        sid = f"p{me}s{n % 50}"
        store.get(sid)
        store.set(sid, record(n))
        until = time.perf_counter() + pause
        while time.perf_counter() < until:
            pass
    store.close()


def one_round(kind: str, folder: str, args) -> tuple[float, float, float]:
    path = os.path.join(folder, "sessions.db")
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.remove(name)
    SQLiteStore(path).close()  # the schema, made once
    # Open while the writers run and after: the last connection to close would empty the WAL.
    keep = sqlite3.connect(path)
    keep.execute("SELECT count(*) FROM sessions").fetchall()
    started = time.perf_counter()
    workers = [multiprocessing.Process(target=work, args=(kind, path, me, args.writes, args.pause / 1e6))
               for me in range(args.processes)]
    for w in workers:
        w.start()
    largest = 0
    while any(w.is_alive() for w in workers):
        try:
            largest = max(largest, os.path.getsize(path + "-wal"))
        except OSError:
            pass
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    end = os.path.getsize(path + "-wal")
    keep.close()
    if any(w.exitcode for w in workers):
        raise SystemExit(f"a writer failed ({kind})")
    return largest / 2**20, end / 2**20, args.processes * args.writes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--writes", type=int, default=8000, help="reads and writes per process")
    parser.add_argument("--pause", type=float, default=0.0, help="µs of busy CPU after each write")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list] = {kind: [] for kind in ROWS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for kind in ROWS:
                results[kind].append(one_round(kind, folder, args))
    print(f"{args.processes} processes, {args.writes:,} reads and writes each, {args.pause:g} µs pause, "
          f"{args.rounds} rounds (medians; largest WAL's range in brackets)\n")
    width = max(map(len, ROWS))
    print(f"| {'row':{width}} | largest WAL MB | WAL MB at the end | writes/s |")
    print(f"|{'-' * (width + 2)}|---:|---:|---:|")
    for kind, runs in results.items():
        largest, end, rate = (statistics.median(column) for column in zip(*runs))
        low, high = min(r[0] for r in runs), max(r[0] for r in runs)
        print(f"| {kind:{width}} | {largest:.1f} ({low:.1f}-{high:.1f}) | {end:.1f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
