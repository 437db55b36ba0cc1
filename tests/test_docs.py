"""The user documentation, run: README.md, docs/stores.md and docs/express.md stay true.

- Every ```python block in them compiles. The README's Options listing shows signatures with
  ``...``, not code: it is checked against the real signatures instead.
- The README's quickstarts run as a user runs them, each in a temporary directory, over real
  HTTP on 127.0.0.1 (wsgiref for the WSGI ones, uvicorn for FastAPI): the counters count, and
  the logins regenerate the session while the logouts end it.
- The store examples run on real stores: SQLiteStore in a temporary directory, RedisStore and
  PostgresStore on private servers (tests/redis_server.py, tests/postgres_server.py), MongoStore
  built only (it connects lazily); the store of "Writing a store" passes the conformance suite
  as that section runs it.

The blocks are read from the documents when the tests run and found by the heading above
them, so the tests follow the documents; a traceback in an example names the document's line.
Flask, Bottle, FastAPI and uvicorn, redis-server, PostgreSQL and the store drivers are needed
by their tests (.ci/requirements.txt pins the packages): without one, its tests skip saying what
to install, or fail with SESSION_TESTS_STRICT=1.
"""
from __future__ import annotations

import ast
import contextlib
import http.client
import inspect
import json
import os
import pathlib
import re
import sqlite3
import sys
import tempfile
import threading
import time
import types
import unittest
import urllib.parse
import warnings
import wsgiref.simple_server
from typing import NamedTuple, Optional
from unittest import mock
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import session
import stores
from tests.asgi_support import UvicornServer
from tests.harness import NAME, Response, cookie_value, make_record
from tests.harness import setUpModule, tearDownModule  # noqa: F401  (quiet the session logger)
from tests.postgres_server import postgres_server_available, PostgresServer
from tests.redis_server import RedisServer, redis_server_available
from tests.support import has_module, requires

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/stores.md", "docs/express.md")

# Blocks that show signatures, not code (``...`` for the options a line does not repeat), by
# document and heading. Instead of compiling them, every parameter they show is checked against
# the real signature: its name, whether it is keyword-only, and its default.
SIGNATURE_LISTINGS = {("README.md", "Options")}


# ---------------------------------------------------------------- the documents' blocks

class Block(NamedTuple):
    path: str      # the document, relative to the repository
    line: int      # the document's line of the block's first line of code
    lang: str      # the fence's info string: python, sh, sql...
    heading: str   # the nearest heading above the block, without its #s
    code: str

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line}"


FENCE = re.compile(r"^ {0,3}```\s*([\w+-]*)\s*$")
HEADING = re.compile(r"^#{1,6} +(.*?)\s*$")


def read_blocks(path: str) -> list:
    """Every fenced block of the document, in order, with the heading it is under."""
    lines = (ROOT / path).read_text(encoding="utf-8").split("\n")
    blocks, heading, i = [], "", 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            title = HEADING.match(lines[i])
            heading = title.group(1) if title else heading
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not re.match(r"^ {0,3}```\s*$", lines[end]):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path}:{i + 1}: a ``` block that is never closed")
        blocks.append(Block(path, i + 2, fence.group(1), heading, "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return blocks


def examples(path: str, heading: str, count: int = 1) -> list:
    """The ```python blocks under ``heading`` in the document; there must be ``count`` of them."""
    found = [b for b in read_blocks(path) if b.lang == "python" and b.heading == heading]
    if len(found) != count:
        raise AssertionError(f"{path}: {len(found)} ```python blocks under the heading {heading!r}, "
                             f"where this test expects {count}: update tests/test_docs.py")
    return found


def the_example(path: str, heading: str) -> Block:
    return examples(path, heading)[0]


def compiled(block: Block, code: Optional[str] = None) -> types.CodeType:
    """The block compiled as the document's own lines: a traceback shows the document's line."""
    source = "\n" * (block.line - 1) + (block.code if code is None else code)
    return compile(source, str(ROOT / block.path), "exec")


def standing_in(block: Block, placeholder: str, value: str) -> str:
    """The block's code with ``placeholder`` (an address on the reader's machine) replaced."""
    if placeholder not in block.code:
        raise AssertionError(f"{block.name}: the example no longer says {placeholder!r}; "
                             f"update its stand-in in tests/test_docs.py")
    return block.code.replace(placeholder, value)


def run_example(block: Block, code: Optional[str] = None, *, module: str = "__main__",
                namespace: Optional[dict] = None) -> dict:
    """Run the block as the module ``module`` would run it; its names, once it has run. A
    warning it causes (a deprecated call a reader would copy) is an error."""
    namespace = {} if namespace is None else namespace
    namespace.setdefault("__name__", module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compiled(block, code), namespace)
    return namespace


def check_signature_listing(test: unittest.TestCase, block: Block) -> None:
    """Each ``Name(params)`` of the listing names a callable of session.py whose parameters
    it shows as they are; a listing without ``...`` shows all of them."""
    calls = re.findall(r"^(\w+)\(([^()]*)\)", block.code, re.M)
    test.assertTrue(calls, f"{block.name}: no signature in the listing")
    for name, params in calls:
        test.assertTrue(hasattr(session, name), f"{block.name}: session.py has no {name}")
        real = inspect.signature(getattr(session, name)).parameters
        shown_params = re.sub(r"\.\.\.\s*,", "", params)
        args = ast.parse(f"def _({shown_params}): pass").body[0].args
        defaults = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults)
        shown = [(a.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, d) for a, d in zip(args.args, defaults)]
        shown += [(a.arg, inspect.Parameter.KEYWORD_ONLY, d) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
        for param, kind, default in shown:
            where = f"{block.name}: {name}({param})"
            test.assertIn(param, real, f"{where}: no such parameter")
            test.assertEqual(real[param].kind, kind, f"{where}: keyword-only or not")
            if default is None and real[param].default is None:  # required all the same?
                with test.assertRaisesRegex((TypeError, ValueError), param, msg=f"{where}: required"):
                    getattr(session, name)(counter)
            elif default is None:
                test.assertIs(real[param].default, inspect.Parameter.empty, f"{where}: required")
            else:
                test.assertEqual(real[param].default, ast.literal_eval(default), f"{where}: default")
        if "..." not in params:
            test.assertEqual([param for param, _, _ in shown], list(real),
                             f"{block.name}: {name}() shows other parameters than it has")


# ---------------------------------------------------------------- servers and requests

_make_server = wsgiref.simple_server.make_server  # the real one, while a test replaces it


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # no access log on the test output
        pass


class ServerInThread(WSGIServer):
    """wsgiref's server, whose serve_forever() serves in a thread and returns, so that a
    quickstart's last line starts it and the test goes on; ``stop()`` ends it."""

    thread = None

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        self.thread = threading.Thread(target=super().serve_forever, args=(poll_interval,),
                                       name=f"wsgiref:{self.server_port}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.shutdown()
            self.thread.join(10)
        self.server_close()


def wsgi_server(test: unittest.TestCase, app) -> ServerInThread:
    """A server for ``app`` on 127.0.0.1, on a port the system picks (so free), not yet
    serving; the test's cleanup stops it."""
    server = _make_server("127.0.0.1", 0, app, server_class=ServerInThread, handler_class=QuietHandler)
    test.addCleanup(server.stop)
    return server


def serve(test: unittest.TestCase, app) -> int:
    """Serve the WSGI ``app`` until the test ends; its port."""
    server = wsgi_server(test, app)
    server.serve_forever()
    return server.server_port


def fetch(port: int, method: str = "GET", path: str = "/", *, cookie=None,
          form: Optional[dict] = None) -> Response:
    """One request over a new connection, redirects not followed. ``cookie``: a SetCookie
    received earlier, sent back as a browser would, or a ``name=value`` string."""
    headers = {}
    if cookie is not None:
        headers["Cookie"] = cookie if isinstance(cookie, str) else f"{cookie.name}={cookie.value}"
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        raw = conn.getresponse()
        return Response(raw.status, raw.getheaders(), raw.read(), [])
    finally:
        conn.close()


def count_in(response: Response) -> int:
    """The number a counter page shows (its only number)."""
    numbers = re.findall(rb"\d+", response.body)
    if response.status != 200 or len(numbers) != 1:
        raise AssertionError(f"not a counter page: {response.status} {response.body[:200]!r}")
    return int(numbers[0])


def in_temp_dir(test: unittest.TestCase) -> str:
    """Go on in a new temporary directory (a quickstart writes its files where it is run);
    the cleanup comes back and removes it."""
    tmp = tempfile.TemporaryDirectory(prefix="test-docs-")
    test.addCleanup(tmp.cleanup)
    test.addCleanup(os.chdir, os.getcwd())
    os.chdir(tmp.name)
    return tmp.name


def counter(environ, start_response):
    """The ``app`` the store examples wrap (they say ``app = SessionMiddleware(app, ...)``)."""
    sess = environ["session"]
    sess["views"] = sess.get("views", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % sess["views"]]


def assert_counts(test: unittest.TestCase, app) -> str:
    """Serve ``app`` (``counter`` behind a middleware) and count to 2 on one session; its ID."""
    port = serve(test, app)
    first = fetch(port)
    test.assertEqual(count_in(first), 1)
    cookie = first.cookie()
    test.assertIsNotNone(cookie, "the first response sets the session cookie")
    test.assertEqual(count_in(fetch(port, cookie=cookie)), 2)
    return cookie.sid


def data_of(record: Optional[dict]) -> Optional[dict]:
    return None if record is None else {k: v for k, v in record.items() if k != "cookie"}


# ---------------------------------------------------------------- every block compiles

class TestEveryPythonBlockCompiles(unittest.TestCase):
    def test_every_python_block_compiles(self):
        listings = set()
        for path in DOCUMENTS:
            blocks = [b for b in read_blocks(path) if b.lang == "python"]
            self.assertTrue(blocks, f"no ```python block found in {path}")
            for block in blocks:
                with self.subTest(block.name):
                    if (path, block.heading) in SIGNATURE_LISTINGS:
                        listings.add((path, block.heading))
                        check_signature_listing(self, block)
                    else:
                        compiled(block)
        self.assertEqual(listings, SIGNATURE_LISTINGS, "a signature listing named here is gone")


# ---------------------------------------------------------------- the README's quickstarts

class TestQuickstartPlainWSGI(unittest.TestCase):
    def test_the_counter_counts_over_http(self):
        block = the_example("README.md", "Quickstart: plain WSGI")
        in_temp_dir(self)
        servers = []

        def make_server(host, port, app, **kwargs):  # binds a free port; serve_forever() returns
            server = wsgi_server(self, app)
            servers.append((host, server))
            return server
        with mock.patch.object(wsgiref.simple_server, "make_server", make_server):
            run_example(block)
        self.assertEqual([host for host, _ in servers], ["127.0.0.1"], "one server, on loopback")
        port = servers[0][1].server_port

        first = fetch(port)
        self.assertEqual(count_in(first), 1)
        cookie = first.cookie()
        self.assertIsNotNone(cookie, "the first response sets the connect.sid cookie")
        self.assertAlmostEqual(cookie.expires, time.time() + 3600, delta=5)  # max_age 3600
        self.assertEqual(count_in(fetch(port, cookie=cookie)), 2)
        self.assertEqual(count_in(fetch(port)), 1, "a visitor without the cookie starts at 1")


@requires(has_module("flask"), "the Flask quickstart needs Flask: pip install flask")
class TestQuickstartFlask(unittest.TestCase):
    def test_login_regenerates_the_session_and_logout_ends_it(self):
        block = the_example("README.md", "Quickstart: Flask")
        tmp = in_temp_dir(self)
        app = run_example(block, module="readme_flask")["app"]  # imported: app.run() is not called
        store = app.wsgi_app.store
        self.addCleanup(store.close)
        port = serve(self, app)

        self.assertEqual(json.loads(fetch(port).body), {"user": None})

        login = fetch(port, "POST", "/login", form={"user": "ada"})
        self.assertEqual(login.status, 303)
        self.assertEqual([urllib.parse.urlsplit(url).path for url in login.values("Location")], ["/"])
        ada = login.cookie()
        self.assertIsNotNone(ada, "the login sets the connect.sid cookie")
        self.assertEqual(json.loads(fetch(port, cookie=ada).body), {"user": "ada"})
        self.assertTrue(os.path.isfile(os.path.join(tmp, "sessions.sqlite3")))

        # A session that exists before a login (here an earlier login, or one an attacker
        # planted) gets a new ID at login, and its old cookie finds nothing any more.
        again = fetch(port, "POST", "/login", cookie=ada, form={"user": "grace"})
        self.assertEqual(again.status, 303)
        grace = again.cookie()
        self.assertIsNotNone(grace, "the login sets the cookie of the new ID")
        self.assertNotEqual(grace.sid, ada.sid, "the login regenerates the session ID")
        self.assertEqual(json.loads(fetch(port, cookie=grace).body), {"user": "grace"})
        self.assertEqual(json.loads(fetch(port, cookie=ada).body), {"user": None})
        self.assertIsNone(store.get(ada.sid))

        logout = fetch(port, "POST", "/logout", cookie=grace)
        self.assertEqual(logout.status, 303)
        self.assertTrue(logout.cookie() is not None and logout.cookie().clears,
                        "the logout expires the cookie")
        self.assertIsNone(store.get(grace.sid))
        self.assertEqual(json.loads(fetch(port, cookie=grace).body), {"user": None})


@requires(has_module("bottle"), "the Bottle quickstart needs Bottle: pip install bottle")
class TestQuickstartBottle(unittest.TestCase):
    def test_the_counter_counts_over_http(self):
        import bottle
        block = the_example("README.md", "Quickstart: Bottle")
        in_temp_dir(self)
        bottle.default_app.push()  # the quickstart's routes go on an app of this test's own
        self.addCleanup(bottle.default_app.pop)
        servers = []

        def run(app, *, host, port, **options):  # serves on a free port, and returns
            server = wsgi_server(self, app)
            server.serve_forever()
            servers.append((host, server))
        with mock.patch.object(bottle, "run", run):
            run_example(block)
        self.assertEqual([host for host, _ in servers], ["127.0.0.1"], "one server, on loopback")
        port = servers[0][1].server_port

        first = fetch(port)
        self.assertEqual(count_in(first), 1)
        self.assertIsNotNone(first.cookie(), "the first response sets the connect.sid cookie")
        self.assertEqual(count_in(fetch(port, cookie=first.cookie())), 2)


def asgi_session_store(app) -> session.Store:
    """The store of the ASGISessionMiddleware in a Starlette app's middleware stack (built at
    its first request)."""
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, session.ASGISessionMiddleware):
        layer = getattr(layer, "app", None)
    if layer is None:
        raise AssertionError("no ASGISessionMiddleware in the app's middleware stack")
    return layer.store


@requires(has_module("fastapi") and has_module("uvicorn"),
          "the ASGI quickstart needs FastAPI and uvicorn: pip install fastapi uvicorn")
class TestQuickstartASGI(unittest.TestCase):
    def test_the_counter_counts_login_regenerates_the_session_and_logout_ends_it(self):
        block = the_example("README.md", "Quickstart: Starlette and FastAPI (ASGI)")
        in_temp_dir(self)
        app = run_example(block, module="readme_asgi")["app"]
        server = UvicornServer(app)
        self.addCleanup(server.stop)
        port = server.port

        first = fetch(port)
        self.assertEqual(json.loads(first.body), {"views": 1})
        before = first.cookie()
        self.assertIsNotNone(before, "the first response sets the connect.sid cookie")
        self.assertEqual(json.loads(fetch(port, cookie=before).body), {"views": 2})
        store = asgi_session_store(app)

        login = fetch(port, "POST", "/login", cookie=before)
        self.assertEqual((login.status, json.loads(login.body)), (200, {"ok": True}))
        after = login.cookie()
        self.assertIsNotNone(after, "the login sets the cookie of the new ID")
        self.assertNotEqual(after.sid, before.sid, "the login regenerates the session ID")
        self.assertIsNone(store.get(before.sid), "the old record is gone when the response is")
        self.assertEqual(data_of(store.get(after.sid)), {"user": "ada"})
        old = fetch(port, cookie=before)
        self.assertEqual(json.loads(old.body), {"views": 1}, "the old cookie finds nothing")
        self.assertNotEqual(old.cookie().sid, before.sid)
        self.assertEqual(json.loads(fetch(port, cookie=after).body), {"views": 1})

        logout = fetch(port, "POST", "/logout", cookie=after)
        self.assertEqual((logout.status, json.loads(logout.body)), (200, {"ok": True}))
        self.assertTrue(logout.cookie() is not None and logout.cookie().clears,
                        "the logout expires the cookie")
        self.assertIsNone(store.get(after.sid))


# ---------------------------------------------------------------- docs/stores.md, docs/express.md

class TestStdlibStoreExamples(unittest.TestCase):
    def test_the_sqlitestore_example_keeps_sessions_in_its_file(self):
        block = the_example("docs/stores.md", "SQLiteStore")
        path = os.path.join(in_temp_dir(self), "sessions.db")
        code = standing_in(block, "/var/lib/myapp/sessions.db", path)
        example = run_example(block, code, namespace={"app": counter})
        self.addCleanup(example["store"].close)
        sid = assert_counts(self, example["app"])
        with contextlib.closing(sqlite3.connect(path)) as db:
            (data,), = db.execute("SELECT data FROM sessions WHERE sid = ?", (sid,)).fetchall()
        self.assertEqual(json.loads(data)["views"], 2)

    def test_the_store_of_writing_a_store_passes_the_conformance_suite(self):
        store_block = the_example("docs/stores.md", "A whole store")
        suite_block = the_example("docs/stores.md", "The conformance suite")
        module = types.ModuleType("dict_store")  # the suite imports it: `from dict_store import`
        run_example(store_block, namespace=module.__dict__)
        self.assertNotIn("dict_store", sys.modules)
        sys.modules["dict_store"] = module
        self.addCleanup(sys.modules.pop, "dict_store", None)
        test_class = run_example(suite_block, module="test_dict_store")["TestDictStore"]

        result = run_conformance_suite(test_class)
        if result.failures or result.errors:
            self.fail("the conformance suite fails over the example's store:\n\n" + "\n".join(
                f"{test.id()}\n{trace}" for test, trace in result.failures + result.errors))
        self.assertGreater(result.testsRun, 40)
        for test, reason in result.skipped:  # only the hooks the example leaves out
            self.assertRegex(reason, r"this store's test class has no \w+\(.*\) hook", test.id())


def run_conformance_suite(test_class) -> unittest.TestResult:
    """Run a StoreContract class. Its expiry tests spend about 10 s asleep in all: they run
    first, side by side in threads; then the others run one at a time."""
    tests = list(unittest.defaultTestLoader.loadTestsFromTestCase(test_class))

    def sleeps(test) -> bool:
        source = inspect.getsource(getattr(test, test._testMethodName))
        return "_wait_past(" in source or "sleep(" in source
    results = [unittest.TestResult() for _ in tests]
    threads = [threading.Thread(target=test.run, args=(result,), daemon=True)
               for test, result in zip(tests, results) if sleeps(test)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for test, result in zip(tests, results):
        if not sleeps(test):
            test.run(result)
    total = unittest.TestResult()
    for result in results:
        total.failures += result.failures
        total.errors += result.errors
        total.skipped += result.skipped
        total.testsRun += result.testsRun
    return total


@requires(redis_server_available() and has_module("redis"),
          "the RedisStore examples need redis-server and redis-py: "
          "apt-get install -y redis-server && pip install redis")
class TestRedisExamples(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = RedisServer()
        cls.addClassCleanup(cls.server.close)
        cls.server.start()

    def test_the_redisstore_example_keeps_sessions_in_redis(self):
        block = the_example("docs/stores.md", "RedisStore")
        code = standing_in(block, "redis://127.0.0.1:6379/0", self.server.url)
        example = run_example(block, code, namespace={"app": counter})
        self.addCleanup(example["store"].close)
        sid = assert_counts(self, example["app"])
        self.assertEqual(data_of(example["store"].get(sid)), {"views": 2})

    def test_the_python_side_shares_express_sessions_as_the_transcript_shows(self):
        """express.md: an Express login (a record as connect-redis writes it, under a cookie
        signed with the Express side's first secret) is seen by the Python app, and the
        Python app's write is seen by Express: the lines of the curl transcript."""
        import redis
        blocks = [b for b in read_blocks("docs/express.md") if b.heading == "On Redis: connect-redis 9"]
        express = next(b for b in blocks if b.lang == "js")
        transcript = next(b for b in blocks if b.lang == "console").code.split("\n")
        python = the_example("docs/express.md", "On Redis: connect-redis 9")
        code = standing_in(python, "redis://127.0.0.1:6379/0", self.server.url)
        application = run_example(python, code, module="express_example")["application"]
        self.addCleanup(application.store.close)
        port = serve(self, application)

        first_secret = re.search(r"secret: \[\s*'([^']*)'", express.code).group(1)
        sid = "logged-in-on-express"
        record = make_record({"user": "ada"}, max_age=3600)
        client = redis.Redis.from_url(self.server.url)
        self.addCleanup(client.close)
        client.set("sess:" + sid, json.dumps(record, separators=(",", ":")), ex=3600)

        python_says = next(transcript[i + 1] for i, line in enumerate(transcript)
                           if line.startswith("$ curl") and "127.0.0.1:8000/" in line)
        reply = fetch(port, cookie=f"{NAME}={cookie_value(sid, first_secret)}")
        self.assertEqual(reply.body.decode(), python_says)
        express_says = next(transcript[i + 1] for i, line in enumerate(transcript)
                            if line.startswith("$ curl") and "/whoami" in line)
        stored = json.loads(client.get("sess:" + sid))
        self.assertEqual({"user": stored["user"], "views": stored["views"]}, json.loads(express_says))


HAVE_POSTGRES = postgres_server_available() and has_module("psycopg") and has_module("psycopg_pool")


@requires(HAVE_POSTGRES, "the PostgresStore examples need PostgreSQL, psycopg and psycopg_pool: "
                         'apt-get install -y postgresql && pip install "psycopg[binary]" psycopg-pool')
class TestPostgresExamples(unittest.TestCase):
    PLACEHOLDER = "postgresql://app@db.internal/app"

    @classmethod
    def setUpClass(cls):
        cls.server = PostgresServer()
        cls.addClassCleanup(cls.server.close)
        cls.server.start()
        stores.PostgresStore(conninfo=cls.server.url, create_table_if_missing=True).close()

    def test_the_postgresstore_examples_keep_sessions_in_the_table(self):
        own, pooled = examples("docs/stores.md", "PostgresStore", count=2)
        example = run_example(own, standing_in(own, self.PLACEHOLDER, self.server.url),
                              namespace={"app": counter})
        self.addCleanup(example["store"].close)
        sid = assert_counts(self, example["app"])
        # the second block goes on from the first, on the app's own connection pool
        run_example(pooled, standing_in(pooled, self.PLACEHOLDER, self.server.url), namespace=example)
        self.addCleanup(example["pool"].close)
        self.addCleanup(example["store"].close)
        with warnings.catch_warnings():  # psycopg_pool warns at a pool's first use, if at all
            warnings.simplefilter("error")
            self.assertEqual(data_of(example["store"].get(sid)), {"views": 2})
        assert_counts(self, session.SessionMiddleware(counter, secret="x", store=example["store"]))

    def test_the_python_side_uses_connect_pg_simples_table(self):
        import psycopg
        block = the_example("docs/express.md", "On PostgreSQL: connect-pg-simple 10")
        with mock.patch.dict(os.environ, {"DATABASE_URL": self.server.url}):
            application = run_example(block, namespace={"app": counter})["application"]
        self.addCleanup(application.store.close)
        sid = assert_counts(self, application)
        with psycopg.connect(self.server.url) as conn:
            (sess,), = conn.execute('SELECT sess FROM "session" WHERE sid = %s', (sid,)).fetchall()
        self.assertEqual(sess["views"], 2)


@requires(has_module("pymongo"), "the MongoStore example needs pymongo: pip install pymongo")
class TestMongoExample(unittest.TestCase):
    def test_the_mongostore_example_builds_its_store_and_middleware(self):
        """Built only: MongoStore connects at its first command, and there is no mongod here."""
        block = the_example("docs/stores.md", "MongoStore")
        example = run_example(block, namespace={"app": counter})
        self.addCleanup(example["store"].close)
        self.assertIsInstance(example["store"], stores.MongoStore)
        self.assertIs(example["app"].store, example["store"])


if __name__ == "__main__":
    unittest.main()
