"""SQLiteStore's writes while a reader holds an old snapshot of the WAL (a backup, Litestream).

    python bench/pinned_wal.py                   # a reader starting over every 1 s; 5 rounds
    python bench/pinned_wal.py --hold 0.2 --rounds 3

Such a reader keeps the checkpoint from copying the pages written after its snapshot.  One
process writes through the store, under ASGI (``amerge`` on an event loop) and from threads'
code (``merge``), over 100 sessions of about 600 bytes, beside a reader (another connection,
in a thread) that holds a transaction open for --hold seconds, then starts another at once.
Rows, one round of each in turn: SQLiteStore as it is, and with ``pin_patience`` out of reach
(every write retrying the checkpoint while pages are left uncopied, as it did before).
Columns (medians): checkpoints and, under ASGI, writes sent to the event loop's thread pool,
per 1,000 writes; µs per write; the WAL's largest size.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import session  # noqa: E402
from stores.sqlite_store import SQLiteStore  # noqa: E402

COOKIE = {"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"}
SESSIONS = 100


class Counted(SQLiteStore):
    checkpoints = 0

    def _checkpoint(self, cur):
        self.checkpoints += 1
        super()._checkpoint(cur)


class Impatient(Counted):
    pin_patience = float("inf")


ROWS = {"SQLiteStore": Counted, "pin_patience out of reach (before)": Impatient}
trips = [0]


async def _counted_in_thread(function, *args):
    trips[0] += 1
    return await _in_thread(function, *args)

_in_thread, session._in_thread = session._in_thread, _counted_in_thread


def reader(path: str, hold: float, stop: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    while not stop.is_set():
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sessions").fetchall()
        stop.wait(hold)
        conn.execute("COMMIT")
    conn.close()


def changes(n: int):
    """The n-th write's merge arguments, each session's record replacing its last."""
    sid = f"s{n % SESSIONS}"
    old = session.encode_record({"cookie": COOKIE, "n": n - SESSIONS, "pad": "x" * 500})
    new = session.encode_record({"cookie": COOKIE, "n": n, "pad": "x" * 500})
    return sid, session.Change(old, new, None, True)


def one_round(kind: str, mode: str, folder: str, args) -> tuple[float, float, float, float]:
    path = os.path.join(folder, "sessions.db")
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.remove(name)
    store = ROWS[kind](path)
    for n in range(SESSIONS):
        sid, change = changes(n - SESSIONS)
        store.set(sid, session.decode_record(change.text))
    stop = threading.Event()
    holder = threading.Thread(target=reader, args=(path, args.hold, stop))
    holder.start()
    time.sleep(0.05)
    largest, trips[0], store.checkpoints = 0, 0, 0
    work = [changes(n) for n in range(args.writes)]

    async def write_all() -> None:
        nonlocal largest
        for n, (sid, change) in enumerate(work):
            if not (await store.amerge(sid, change) if mode == "asgi" else store.merge(sid, change)):
                raise SystemExit(f"a merge found its record changed ({kind})")
            if n % 500 == 0:
                largest = max(largest, os.path.getsize(path + "-wal"))
    started = time.perf_counter()
    asyncio.run(write_all())
    elapsed = time.perf_counter() - started
    stop.set()
    holder.join()
    store.close()
    per = 1000 / args.writes
    return store.checkpoints * per, trips[0] * per, elapsed / args.writes * 1e6, largest / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each read transaction stays open")
    parser.add_argument("--writes", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = {(mode, kind): [] for mode in ("asgi", "sync") for kind in ROWS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for mode, kind in results:
                results[mode, kind].append(one_round(kind, mode, folder, args))
    print(f"{args.writes:,} writes, a reader holding each snapshot {args.hold:g} s, "
          f"{args.rounds} rounds (medians; µs range in brackets)\n")
    width = max(map(len, ROWS))
    print(f"| writes | {'row':{width}} | checkpoints /1,000 | to a thread /1,000 | µs per write "
          "| largest WAL MB |")
    print(f"|---|{'-' * (width + 2)}|---:|---:|---:|---:|")
    for (mode, kind), runs in results.items():
        checkpoints, sent, us, wal = (statistics.median(column) for column in zip(*runs))
        low, high = min(r[2] for r in runs), max(r[2] for r in runs)
        print(f"| {'amerge' if mode == 'asgi' else 'merge'} | {kind:{width}} | {checkpoints:.0f} | "
              f"{sent:.0f} | {us:.1f} ({low:.1f}-{high:.1f}) | {wal:.1f} |")


if __name__ == "__main__":
    main()
