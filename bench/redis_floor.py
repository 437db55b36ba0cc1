"""Where RedisStore's cost over the hand-written floor goes: its two Lua scripts.

In process (no HTTP server), over one private redis-server, with ``deployed.py``'s apps and its
1,000 users: the floor (GET, and SET ... EX when the data changed), the same floor sending
RedisStore's two scripts instead (the read that also fetches the key's TTL, and the merge's
compare-and-set), and SessionMiddleware + RedisStore.  A request that only reads (``/read``)
and one that increments (``/incr``); the rows alternate, and each figure is the median over
rounds (every other round in reverse order) of the CPU time per request of this process,
of redis-server, and of both; and of redis-server's time inside the commands themselves (INFO
commandstats), which the machine's noise barely moves: the rest of its time is the network's.

    python bench/redis_floor.py            # about a minute
    python bench/redis_floor.py --rounds 3 --requests 1000

Needs: apt-get install -y redis-server; pip install redis.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import deployed  # noqa: E402  (this directory: run as a script)
import overhead  # noqa: E402
from stores import redis_store  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

USERS = 1000


class ScriptedFloorRedis(deployed._FloorRedis):
    """The floor's driver, reading and writing with RedisStore's scripts instead of GET and SET."""

    def __init__(self) -> None:
        super().__init__()
        self.read_sha = self.client.script_load(redis_store._GET_WITH_TTL.text)
        self.merge_sha = self.client.script_load(redis_store._MERGE.text)
        self.loaded: dict = {}  # sid -> the text last read: the compare-and-set's base

    def get(self, sid: str):
        reply = self.client.execute_command("EVALSHA", self.read_sha, 1, "floor:" + sid)
        text = None if reply is None else reply[reply.index(b":") + 1:].decode()
        self.loaded[sid] = text
        return text

    def set(self, sid: str, text: str) -> None:
        base = self.loaded.get(sid)
        self.client.execute_command("EVALSHA", self.merge_sha, 1, "floor:" + sid,
                                    "new" if base is None else "cas", base or "", text,
                                    deployed.TTL, "1")


def app_for(kind: str):
    if kind != "floor + RedisStore's scripts":
        return deployed.APPS[kind]("redis")
    drivers = deployed._FLOOR_DRIVERS
    drivers["redis"], plain = ScriptedFloorRedis, drivers["redis"]
    try:
        return deployed.APPS["floor"]("redis")
    finally:
        drivers["redis"] = plain


def requests_for(app, path: str) -> list:
    """One environ per user, each with the cookie its first visit (an increment) set."""
    template = dict(overhead.TEMPLATE, PATH_INFO="/incr")
    cookies = [overhead.set_cookies(overhead.request(app, template)[1]) for _ in range(USERS)]
    return [dict(template, PATH_INFO=path, HTTP_COOKIE=c[0].split(";")[0]) for c in cookies]


def cpu_of(pid: int) -> float:
    """Seconds the process's main thread, where redis-server runs commands, has been on a CPU
    (counted in ns: finer than /proc/pid/stat's 10 ms ticks)."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


def in_commands(client) -> float:
    """Microseconds redis-server has spent running commands since its stats were last reset."""
    stats = client.execute_command("INFO", "commandstats")
    return sum(entry["usec"] for name, entry in stats.items() if not name.startswith("cmdstat_config"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=4000, help="per row and round")
    args = parser.parse_args()
    with RedisServer() as server:
        os.environ["BENCH_REDIS"] = server.url
        stats = deployed._FloorRedis().client
        kinds = ("floor", "floor + RedisStore's scripts", "ours")
        rows = {}
        for kind in kinds:
            for path in ("/read", "/incr"):
                app = app_for(kind)
                rows[(kind, path)] = (app, requests_for(app, path))
        times: dict = {key: [] for key in rows}
        for round_ in range(args.rounds):
            order = list(rows.items())
            for key, (app, environs) in order if round_ % 2 == 0 else order[::-1]:
                stats.config_resetstat()
                mine, theirs = time.process_time(), cpu_of(server._proc.pid)
                for i in range(args.requests):
                    overhead.request(app, environs[i % USERS])
                n = args.requests
                times[key].append(((time.process_time() - mine) / n * 1e6,
                                   (cpu_of(server._proc.pid) - theirs) / n * 1e6,
                                   in_commands(stats) / n))
    print(f"CPU µs per request, medians of {args.rounds} rounds of {args.requests} "
          f"({USERS} users, one private redis-server)\n")
    print("| row | request | this process | redis-server | both | / floor's | in its commands |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in ("/read", "/incr"):
        floor = statistics.median(a + b for a, b, _ in times[("floor", path)])
        for kind in kinds:
            got = times[(kind, path)]
            both = statistics.median(a + b for a, b, _ in got)
            print(f"| {kind} | {path} | {statistics.median(a for a, _, _ in got):.0f} | "
                  f"{statistics.median(b for _, b, _ in got):.0f} | {both:.0f} | {floor / both:.2f} | "
                  f"{statistics.median(c for _, _, c in got):.1f} |")


if __name__ == "__main__":
    main()
