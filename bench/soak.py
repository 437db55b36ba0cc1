"""Soak test: does anything grow without bound when a real server runs the middleware for
minutes with many distinct users?  Prints a table of samples taken every --every seconds.

    python bench/soak.py --server waitress --store memory --duration 150
    python bench/soak.py --server gunicorn --store sqlite            # -k gthread, 2 workers
    python bench/soak.py --server uvicorn --store redis              # RedisStore's asyncio path
    python bench/soak.py --server uvicorn --store postgres           # PostgresStore's coroutines

Servers: waitress (8 threads), gunicorn -k gthread -w 2 --threads 4, uvicorn (bare ASGI app
with websockets).  Stores: memory, sqlite, redis, postgres (private redis-server/PostgreSQL
from tests/ on free 127.0.0.1 ports).  Sessions live --ttl seconds (cookie max_age and store
ttl), short on purpose: after the load, the harness waits --ttl + 15 s, sends one request
(MemoryStore expires on a write, SQLiteStore prunes after one) and samples again.

Traffic (one Python client, 4 threads, keep-alive): new visitors (get a cookie), returning
ones reading or incrementing, logins (regenerate()), logouts (destroy()), tampered cookies,
never-seen cookie headers, and websockets under uvicorn.  Columns: requests sent, distinct
users so far, server RSS (MB, summed over workers), fds, threads, connections the server
holds to redis/PostgreSQL, SQLite db and WAL size (KB), and from /_stats (one worker):
allocated blocks, the middleware's caches, the store's own memos and pools, asyncio tasks.
"""
from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
SECRET = "soak secret"

# ================================================================ the app (server side)

_STATE: dict = {}


def _make_store():
    import session
    kind, ttl = os.environ["SOAK_STORE"], float(os.environ["SOAK_TTL"])
    if kind == "memory":
        return session.MemoryStore(ttl=ttl)
    if kind == "sqlite":
        from stores.sqlite_store import SQLiteStore
        store = SQLiteStore(os.environ["SOAK_SQLITE"], ttl=ttl)
        store.prune_interval = 10.0
        return store
    if kind == "redis":
        from stores.redis_store import RedisStore
        return RedisStore(url=os.environ["SOAK_REDIS"], ttl=int(ttl))
    from stores.postgres_store import PostgresStore
    return PostgresStore(conninfo=os.environ["SOAK_POSTGRES"], ttl=ttl,
                         create_table_if_missing=True, prune_interval=10)


def _lens(obj, names):
    out = {}
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            try:
                out[name] = len(value)
            except TypeError:
                pass
    return out


def _stats() -> dict:
    import session
    mw, store = _STATE["mw"], _STATE["store"]
    out = {"pid": os.getpid(), "blocks": sys.getallocatedblocks(), "threads": threading.active_count(),
           "gc_objects": len(gc.get_objects())}
    out.update({"mw." + k: v for k, v in _lens(mw, ["_verified", "_verified_headers", "_records",
                                                   "_ending", "_warned_options"]).items()})
    out["_DEFAULT_MERGES"] = len(session._DEFAULT_MERGES)
    out.update({"store." + k: v for k, v in _lens(store, [
        "_data", "_heap", "_seen", "_idle", "_all", "_loops", "_writes", "_async_clients",
        "_closing"]).items()})
    pool = getattr(getattr(store, "_sync", None), "connection_pool", None)
    if pool is not None:
        out["redis.sync_pool"] = len(pool._available_connections) + len(pool._in_use_connections)
    for i, client in enumerate(getattr(store, "_async_clients", {}).values()):
        p = client.connection_pool
        out[f"redis.async_pool{i}"] = len(p._available_connections) + len(p._in_use_connections)
    for i, conns in enumerate(getattr(store, "_loops", {}).values()):
        out[f"pg.loop{i}.idle"] = len(conns.idle)
    try:
        import asyncio
        out["tasks"] = len(asyncio.all_tasks())
    except RuntimeError:
        pass
    return out


def _wsgi_inner(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/_stats":
        body = json.dumps(_stats()).encode()
    else:
        body = json.dumps(_visit(environ["session"], path)).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _visit(sess, path):
    if sess is None:
        return {}
    if path == "/new":
        sess["views"] = 1
    elif path == "/incr":
        sess["views"] = sess.get("views", 0) + 1
    elif path == "/login":
        sess.regenerate()
        sess["user"] = secrets.token_hex(4)
    elif path == "/logout":
        sess.destroy()
        return {}
    return {"views": sess.get("views", 0)}


def _wrapped(middleware, inner):
    """``inner`` behind ``middleware`` on this process's store, both kept for /_stats."""
    store = _make_store()
    mw = middleware(inner, secret=SECRET, store=store,
                    cookie={"max_age": float(os.environ["SOAK_TTL"])})
    _STATE.update(mw=mw, store=store)
    return mw


def wsgi_app():
    import session
    return _wrapped(session.SessionMiddleware, _wsgi_inner)


async def _asgi_inner(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                store = _STATE["store"]
                if hasattr(store, "aclose"):
                    await store.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # connect
        sess = scope["session"]
        sess["views"] = sess.get("views", 0) + 1
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": json.dumps({"views": sess.get("views")})})
    path = scope["path"]
    body = json.dumps(_stats() if path == "/_stats" else _visit(scope["session"], path)).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def asgi_app():
    import session
    return _wrapped(session.ASGISessionMiddleware, _asgi_inner)


# ================================================================ the load (client side)

def _proc(pids: list) -> dict:
    rss = fds = threads = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return {"rss_mb": round(rss / 1024, 1), "fds": fds, "threads": threads}


class Load:
    def __init__(self, port: int, websockets: bool, pool_size: int = 3000) -> None:
        self.port, self.websockets = port, websockets
        self.users: list = []          # cookie values of users who may come back
        self.pool_size = pool_size
        self.lock = threading.Lock()
        self.requests = self.distinct = self.errors = self.ws = 0
        self.stop = False

    def _request(self, conn, path, cookie=None):
        headers = {"Cookie": cookie} if cookie else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status}")
        set_cookie = resp.getheader("Set-Cookie")
        return set_cookie.split(";", 1)[0] if set_cookie else None

    def _websocket(self, cookie):
        from websockets.sync.client import connect
        with connect(f"ws://127.0.0.1:{self.port}/ws", additional_headers={"Cookie": cookie},
                     open_timeout=10) as ws:
            ws.send("hi")
            ws.recv(timeout=10)

    def worker(self, seed: int) -> None:
        rnd = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop:
            r = rnd.random()
            with self.lock:
                cookie = rnd.choice(self.users) if self.users else None
            try:
                if r < 0.15 or cookie is None:
                    new = self._request(conn, "/new")
                    with self.lock:
                        self.distinct += 1
                        if len(self.users) >= self.pool_size:
                            self.users[rnd.randrange(len(self.users))] = new  # one never returns
                        else:
                            self.users.append(new)
                elif r < 0.55:
                    self._request(conn, "/read", cookie)
                elif r < 0.80:
                    self._request(conn, "/incr", cookie)
                elif r < 0.84:
                    new = self._request(conn, "/login", cookie)
                    with self.lock:
                        if cookie in self.users and new:
                            self.users[self.users.index(cookie)] = new
                elif r < 0.87:
                    self._request(conn, "/logout", cookie)
                    with self.lock:
                        if cookie in self.users:
                            self.users.remove(cookie)
                elif r < 0.92:  # tampered signature
                    self._request(conn, "/read", cookie[:-3] + "xyz")
                elif r < 0.96:  # a header never seen before, with our valid cookie in it
                    self._request(conn, "/read", f"{cookie}; other={secrets.token_hex(8)}")
                elif self.websockets and r < 0.98:
                    self._websocket(cookie)
                    with self.lock:
                        self.ws += 1
                else:
                    self._request(conn, "/read", cookie)
            except Exception as exc:  # count and carry on with a new connection
                with self.lock:
                    self.errors += 1
                    if self.errors <= 5:
                        print("client error:", repr(exc), file=sys.stderr)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            with self.lock:
                self.requests += 1
        conn.close()


def _app_stats(port: int) -> dict:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/_stats")
        out = json.loads(conn.getresponse().read())
        conn.close()
        return out
    except Exception as exc:
        return {"stats_error": repr(exc)}


def main() -> None:
    from deployed import _free_port, _tree, _wait_port  # bench/ is sys.path[0] when this file runs
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", choices=["waitress", "gunicorn", "uvicorn"], default="waitress")
    p.add_argument("--store", choices=["memory", "sqlite", "redis", "postgres"], default="memory")
    p.add_argument("--duration", type=float, default=150)
    p.add_argument("--every", type=float, default=15)
    p.add_argument("--ttl", type=float, default=60)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--json", help="write the samples here too")
    args = p.parse_args()

    port, tmp = _free_port(), tempfile.mkdtemp(prefix="soak-")
    env = dict(os.environ, SOAK_STORE=args.store, SOAK_TTL=str(args.ttl),
               SOAK_SQLITE=os.path.join(tmp, "sessions.db"), PYTHONPATH=ROOT + os.pathsep + HERE)
    backend = None
    redis_client = pg_url = None
    if args.store == "redis":
        from tests.redis_server import RedisServer
        import redis
        backend = RedisServer().start()
        env["SOAK_REDIS"] = backend.url
        redis_client = redis.Redis.from_url(backend.url)
    elif args.store == "postgres":
        from tests.postgres_server import PostgresServer
        backend = PostgresServer().start()
        env["SOAK_POSTGRES"] = pg_url = backend.url
    if args.server == "waitress":
        cmd = [sys.executable, "-c", "import waitress, soak; waitress.serve(soak.wsgi_app(), "
               f"host='127.0.0.1', port={port}, threads=8, _quiet=True)"]
    elif args.server == "gunicorn":
        cmd = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "4",
               "-b", f"127.0.0.1:{port}", "--log-level", "warning", "soak:wsgi_app()"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "soak:asgi_app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--ws", "websockets"]
    log = open(os.path.join(tmp, "server.log"), "w+b")
    server = subprocess.Popen(cmd, env=env, cwd=HERE, start_new_session=True, stdout=log,
                              stderr=subprocess.STDOUT)
    samples: list = []
    try:
        _wait_port(port, server, log, timeout=30)
        time.sleep(1)
        pg = None
        if pg_url:
            import psycopg
            pg = psycopg.connect(pg_url, autocommit=True)

        def sample(phase, load):
            row = {"phase": phase, "t": round(time.time() - t0), "requests": load.requests,
                   "users": load.distinct, "errors": load.errors, "ws": load.ws}
            row.update(_proc(_tree(server.pid)))
            if redis_client is not None:
                row["redis_clients"] = len(redis_client.client_list()) - 1
                row["redis_keys"] = redis_client.dbsize()
            if pg is not None:
                row["pg_conns"] = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                             "backend_type = 'client backend' AND pid <> "
                                             "pg_backend_pid()").fetchone()[0]
                try:
                    row["pg_rows"] = pg.execute('SELECT count(*) FROM "session"').fetchone()[0]
                except Exception:
                    row["pg_rows"] = None
            if args.store == "sqlite":
                db = env["SOAK_SQLITE"]
                row["db_kb"] = os.path.getsize(db) // 1024 if os.path.exists(db) else 0
                row["wal_kb"] = os.path.getsize(db + "-wal") // 1024 if os.path.exists(db + "-wal") else 0
                import sqlite3
                c = sqlite3.connect(db, timeout=30)
                try:
                    row["db_rows"] = c.execute("SELECT count(*) FROM sessions").fetchone()[0]
                except sqlite3.Error:
                    row["db_rows"] = None
                c.close()
            row.update(_app_stats(port))
            samples.append(row)
            print(json.dumps(row), flush=True)

        load = Load(port, websockets=args.server == "uvicorn")
        t0 = time.time()
        sample("start", load)
        workers = [threading.Thread(target=load.worker, args=(i,), daemon=True)
                   for i in range(args.threads)]
        for w in workers:
            w.start()
        while time.time() - t0 < args.duration:
            time.sleep(min(args.every, args.duration - (time.time() - t0)))
            sample("load", load)
        load.stop = True
        for w in workers:
            w.join()
        sample("stopped", load)
        time.sleep(args.ttl + 15)
        sample("expired", load)
        # one write: MemoryStore drops expired records on a write, SQLiteStore prunes after one
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/new")
        conn.getresponse().read()
        conn.close()
        time.sleep(3)
        sample("poked", load)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if backend is not None:
            backend.close()
        log.close()
    if os.path.getsize(log.name):
        print(f"the server wrote to {log.name}")
    keys = []
    for row in samples:
        keys += [k for k in row if k not in keys]
    print("\n" + " ".join(keys))
    for row in samples:
        print(" ".join(str(row.get(k, "-")) for k in keys))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(samples, f, indent=1)


if __name__ == "__main__":
    main()
