"""ASGISessionMiddleware in real frameworks under a real server: Starlette and FastAPI apps (and a
Litestar one) served by uvicorn on 127.0.0.1, driven over real HTTP and websocket connections;
and one store shared by a WSGI app and an ASGI app with one secret.

Needs ``pip install starlette fastapi uvicorn websockets litestar`` (.ci/requirements.txt pins
them); each suite skips locally with the pip command when its packages are missing.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import unittest

import session
from tests.harness import NAME, SECRET, SetCookie, cookie_value
from tests.asgi_support import Browser, HypercornTrioServer, UvicornServer
from tests.support import has_module, requires

HOUR = 3600
HAVE_SERVER = has_module("uvicorn") and has_module("websockets")


def setUpModule():
    logging.getLogger("session").addHandler(_QUIET)


def tearDownModule():
    logging.getLogger("session").removeHandler(_QUIET)


_QUIET = logging.NullHandler()


def data_of(store, sid):
    record = store.get(sid)
    return None if record is None else {k: v for k, v in record.items() if k != "cookie"}


def wait_for(condition, timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds (the server finishes a websocket after the client left)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def ws_connect(port: int, path: str, browser: Browser):
    from websockets.sync.client import connect
    return connect(f"ws://127.0.0.1:{port}{path}", additional_headers=browser.ws_headers(), proxy=None,
                   open_timeout=10, close_timeout=5)


# ---------------------------------------------------------------- the apps

def starlette_routes(store, events: dict):
    """The routes every framework flow uses, as Starlette endpoints (FastAPI reuses them)."""
    from starlette.background import BackgroundTask
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute

    async def incr(request):
        sess = request.session
        sess["views"] = sess.get("views", 0) + 1
        return JSONResponse({"views": sess["views"]})

    async def login(request):
        request.session.regenerate()
        request.session["user"] = request.query_params["user"]
        return JSONResponse({"user": request.session["user"], "id": request.session.id})

    async def whoami(request):
        return JSONResponse({"user": request.session.get("user"), "id": request.session.id})

    async def logout(request):
        request.session.destroy()
        return JSONResponse({"ok": True, "session": request.scope["session"]})

    async def plain(request):
        return PlainTextResponse("no session here")

    async def stream(request):
        sess = request.session

        async def chunks():
            for i in range(3):
                sess.setdefault("chunks", []).append(i)   # changed while the response streams
                yield f"chunk {i}\n".encode()
        return StreamingResponse(chunks(), media_type="text/plain")

    async def boom(request):
        request.session["boom"] = True
        raise RuntimeError("the handler failed")

    async def background(request):
        sess = request.session
        sess["before"] = True

        async def later():
            sess["unsaved"] = True                      # after the last body message: not saved
            events["background ran"] = True

        async def later_saved():
            await later()
            sess["saved"] = True
            await sess.asave()                          # ...unless saved explicitly
        task = later_saved if request.query_params.get("save") else later
        return PlainTextResponse("ok", background=BackgroundTask(task))

    async def lifespan_state(request):
        return JSONResponse({"started": events.get("started", False)})

    async def ws(websocket):
        sess = websocket.session
        await websocket.accept()
        await websocket.send_json({"user": sess.get("user")})
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                sess["said"] = sess.get("said", []) + ["bye"]
                await websocket.close()
                return
            sess["said"] = sess.get("said", []) + [text]
            await websocket.send_text("ok")

    async def ws_chat(websocket):
        """The usual handler: loops until receive_text() raises WebSocketDisconnect."""
        sess = websocket.session
        await websocket.accept()
        while True:
            text = await websocket.receive_text()
            sess["said"] = sess.get("said", []) + [text]
            await websocket.send_text("ok")

    async def ws_login(websocket):
        websocket.session["user"] = "socket"              # a new session, changed before accept
        await websocket.accept()
        await websocket.send_text(websocket.session.id)
        await websocket.close()

    return [Route("/incr", incr), Route("/login", login), Route("/whoami", whoami),
            Route("/logout", logout), Route("/plain", plain), Route("/stream", stream),
            Route("/boom", boom), Route("/background", background), Route("/lifespan", lifespan_state),
            WebSocketRoute("/ws", ws), WebSocketRoute("/ws-chat", ws_chat), WebSocketRoute("/ws-login", ws_login)]


@contextlib.asynccontextmanager
async def _lifespan(events: dict):
    events["started"] = True
    yield
    events["stopped"] = True


def starlette_app(store, events: dict):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    return Starlette(routes=starlette_routes(store, events),
                     middleware=[Middleware(session.ASGISessionMiddleware, secret=SECRET, store=store,
                                            cookie={"max_age": HOUR})],
                     lifespan=lambda app: _lifespan(events))


def fastapi_app(store, events: dict):
    from fastapi import FastAPI
    app = FastAPI(lifespan=lambda app: _lifespan(events))
    app.add_middleware(session.ASGISessionMiddleware, secret=SECRET, store=store, cookie={"max_age": HOUR})
    for route in starlette_routes(store, events):
        app.router.routes.append(route)
    return app


# ---------------------------------------------------------------- the flows, one definition

class FrameworkFlows:
    """Every flow over real HTTP; a subclass names the framework's app factory."""

    make_app = None
    serve = UvicornServer

    @classmethod
    def make_store(cls):
        return session.MemoryStore()

    @classmethod
    def setUpClass(cls):
        cls.store = cls.make_store()
        cls.events: dict = {}
        cls.server = cls.serve(cls.make_app(cls.store, cls.events))
        cls.addClassCleanup(cls.server.stop)

    def browser(self) -> Browser:
        return Browser(self.server.port)

    def test_a_counter_counts_across_requests(self):
        b = self.browser()
        first = b.get("/incr")
        self.assertEqual(first.status, 200)
        self.assertIsNotNone(first.cookie())
        self.assertEqual([json.loads(b.get("/incr").body)["views"] for _ in range(3)], [2, 3, 4])
        self.assertEqual(data_of(self.store, b.sid), {"views": 4})

    def test_login_regenerates_the_id_and_the_old_record_is_gone(self):
        b = self.browser()
        b.get("/incr")
        anonymous = b.sid
        resp = b.get("/login?user=ada")
        body = json.loads(resp.body)
        self.assertNotEqual(body["id"], anonymous)
        self.assertEqual(resp.cookie().sid, body["id"])
        self.assertIsNone(self.store.get(anonymous))
        self.assertEqual(data_of(self.store, body["id"]), {"user": "ada"})
        self.assertEqual(json.loads(b.get("/whoami").body), {"user": "ada", "id": body["id"]})

    def test_logout_destroys_the_record_and_expires_the_cookie(self):
        b = self.browser()
        b.get("/login?user=ada")
        sid = b.sid
        resp = b.get("/logout")
        self.assertEqual(json.loads(resp.body), {"ok": True, "session": None})
        self.assertTrue(resp.cookie().clears, resp.cookie().raw)
        self.assertIsNone(self.store.get(sid))
        self.assertNotIn(NAME, b.jar)
        self.assertIsNone(json.loads(b.get("/whoami").body)["user"])

    def test_a_tampered_cookie_gets_a_new_empty_session(self):
        b = self.browser()
        b.get("/login?user=ada")
        sid = b.sid
        forged = cookie_value(sid, "not the secret")
        resp = b.get("/whoami", cookie=f"{NAME}={forged}", keep=False)
        body = json.loads(resp.body)
        self.assertIsNone(body["user"])
        self.assertNotEqual(body["id"], sid)
        self.assertEqual(data_of(self.store, sid), {"user": "ada"})

    def test_a_new_visitor_whose_session_is_not_touched_gets_no_cookie_and_no_vary(self):
        resp = self.browser().get("/plain")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.values("Set-Cookie"), [])
        self.assertEqual(resp.values("Vary"), [])

    def test_a_response_that_read_the_session_varies_by_cookie(self):
        b = self.browser()
        b.get("/incr")
        resp = b.get("/whoami")
        self.assertIsNone(resp.cookie())
        self.assertIn("cookie", resp.vary)

    def test_changes_made_while_a_response_streams_are_saved(self):
        b = self.browser()
        b.get("/incr")
        resp = b.get("/stream")
        self.assertEqual(resp.body, b"chunk 0\nchunk 1\nchunk 2\n")
        self.assertEqual(data_of(self.store, b.sid), {"views": 1, "chunks": [0, 1, 2]})

    def test_a_new_session_made_by_a_stream_is_saved_and_sent(self):
        b = self.browser()
        resp = b.get("/stream")
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(data_of(self.store, b.sid), {"chunks": [0, 1, 2]})

    def test_a_handler_that_raises_gets_a_500_and_saves_nothing(self):
        b = self.browser()
        b.get("/incr")
        resp = b.get("/boom")
        self.assertEqual(resp.status, 500)
        self.assertIsNone(resp.cookie())
        self.assertEqual(data_of(self.store, b.sid), {"views": 1})

    def test_a_background_task_changes_nothing_unless_it_awaits_asave(self):
        b = self.browser()
        b.get("/incr")
        b.get("/background")   # the client has the response before the task runs: wait for it
        self.assertTrue(wait_for(lambda: self.events.pop("background ran", False)))
        self.assertEqual(data_of(self.store, b.sid), {"views": 1, "before": True})
        b.get("/background?save=1")
        self.assertTrue(wait_for(lambda: "saved" in data_of(self.store, b.sid)))
        self.assertTrue(self.events.pop("background ran"))
        self.assertEqual(data_of(self.store, b.sid), {"views": 1, "before": True, "unsaved": True, "saved": True})

    def test_a_websocket_reads_the_session_and_its_changes_are_saved_at_close(self):
        b = self.browser()
        b.get("/login?user=ada")
        with ws_connect(self.server.port, "/ws", b) as ws:
            self.assertEqual(json.loads(ws.recv(timeout=5)), {"user": "ada"})
            ws.send("hello")
            self.assertEqual(ws.recv(timeout=5), "ok")
            self.assertEqual(data_of(self.store, b.sid), {"user": "ada"})   # not yet: saved at close
            ws.send("bye")
            from websockets.exceptions import ConnectionClosedOK
            with self.assertRaises(ConnectionClosedOK):
                ws.recv(timeout=5)                                           # the server closed it
        self.assertEqual(data_of(self.store, b.sid), {"user": "ada", "said": ["hello", "bye"]})

    def test_a_websocket_closed_by_the_client_saves_what_the_handler_changed(self):
        b = self.browser()
        b.get("/login?user=ada")
        with ws_connect(self.server.port, "/ws-chat", b) as ws:
            for text in ("one", "two"):
                ws.send(text)
                self.assertEqual(ws.recv(timeout=5), "ok")
        # The handler learns of the close from receive_text() raising WebSocketDisconnect.
        self.assertTrue(wait_for(lambda: data_of(self.store, b.sid).get("said") == ["one", "two"]),
                        data_of(self.store, b.sid))

    def test_a_websocket_handshake_can_set_the_cookie(self):
        b = self.browser()
        with ws_connect(self.server.port, "/ws-login", b) as ws:
            sid = ws.recv(timeout=5)
            cookies = ws.response.headers.get_all("Set-Cookie")
        self.assertEqual(len(cookies), 1)
        self.assertEqual(SetCookie(cookies[0]).sid, sid)
        self.assertEqual(data_of(self.store, sid), {"user": "socket"})

    def test_lifespan_passes_through_to_the_app(self):
        self.assertEqual(json.loads(self.browser().get("/lifespan").body), {"started": True})


@requires(HAVE_SERVER and has_module("starlette"), "pip install starlette uvicorn websockets")
class TestStarletteUnderUvicorn(FrameworkFlows, unittest.TestCase):
    make_app = staticmethod(starlette_app)


@requires(HAVE_SERVER and has_module("fastapi"), "pip install fastapi uvicorn websockets")
class TestFastAPIUnderUvicorn(FrameworkFlows, unittest.TestCase):
    make_app = staticmethod(fastapi_app)


@requires(HAVE_SERVER and has_module("starlette"), "pip install starlette uvicorn websockets")
class TestStarletteOnSQLiteUnderUvicorn(FrameworkFlows, unittest.TestCase):
    """The same flows on SQLiteStore, whose reads run on the event loop and writes in threads."""

    make_app = staticmethod(starlette_app)

    @classmethod
    def make_store(cls):
        from stores.sqlite_store import SQLiteStore
        tmp = tempfile.mkdtemp(prefix="asgi-sqlite-")
        cls.addClassCleanup(shutil.rmtree, tmp, True)
        store = SQLiteStore(os.path.join(tmp, "sessions.db"))
        cls.addClassCleanup(store.close)
        return store


@requires(has_module("hypercorn") and has_module("trio") and has_module("starlette"),
          "pip install starlette hypercorn trio")
class TestStarletteOnSQLiteUnderHypercornTrio(TestStarletteOnSQLiteUnderUvicorn):
    """The same flows on trio's event loop (Starlette runs on it through anyio): the store's
    calls go to trio's threads, as they go to asyncio's under uvicorn."""

    serve = HypercornTrioServer


@requires(HAVE_SERVER and has_module("starlette"), "pip install starlette uvicorn websockets")
class TestLifespanShutdown(unittest.TestCase):

    def test_the_apps_shutdown_runs_when_the_server_stops(self):
        events: dict = {}
        server = UvicornServer(starlette_app(session.MemoryStore(), events), lifespan="on")
        self.assertTrue(events.get("started"))
        server.stop()
        self.assertTrue(events.get("stopped"))


# ---------------------------------------------------------------- Litestar

def litestar_app(store, **options):
    from litestar import Litestar, Request, get
    from litestar.middleware import DefineMiddleware

    @get("/incr")
    async def incr(request: Request) -> dict:
        request.session["views"] = request.session.get("views", 0) + 1
        return {"views": request.session["views"]}

    @get("/login")
    async def login(request: Request) -> dict:
        request.session.regenerate()
        request.session["user"] = user = request.query_params["user"]
        return {"user": user, "id": request.session.id}

    @get("/whoami")
    async def whoami(request: Request) -> dict:
        return {"user": request.session.get("user"), "id": request.session.id}

    @get("/signin")   # Litestar's own session API: a dict in the session's place, and Empty
    async def signin(request: Request) -> dict:
        request.set_session({"user": request.query_params["user"]})
        return {}

    @get("/signout")
    async def signout(request: Request) -> dict:
        request.clear_session()
        return {}

    return Litestar(route_handlers=[incr, login, whoami, signin, signout],
                    logging_config=None,   # leave the root logger be
                    middleware=[DefineMiddleware(session.ASGISessionMiddleware, secret=SECRET,
                                                 store=store, **options)])


@requires(HAVE_SERVER and has_module("litestar"), "pip install litestar uvicorn websockets")
class TestLitestarUnderUvicorn(unittest.TestCase):

    def test_counter_and_login_through_litestars_request_session(self):
        store = session.MemoryStore()
        server = UvicornServer(litestar_app(store))
        self.addCleanup(server.stop)
        b = Browser(server.port)
        self.assertEqual([json.loads(b.get("/incr").body)["views"] for _ in range(3)], [1, 2, 3])
        anonymous = b.sid
        login = json.loads(b.get("/login?user=ada").body)
        self.assertNotEqual(login["id"], anonymous)
        self.assertIsNone(store.get(anonymous))
        self.assertEqual(json.loads(b.get("/whoami").body), {"user": "ada", "id": login["id"]})
        self.assertEqual(data_of(store, login["id"]), {"user": "ada"})

    def test_set_session_and_clear_session(self):
        store = session.MemoryStore()
        server = UvicornServer(litestar_app(store, unset="destroy"))
        self.addCleanup(server.stop)
        b = Browser(server.port)
        self.assertEqual(b.get("/signin?user=ada").status, 200)
        sid = b.sid
        self.assertEqual(data_of(store, sid), {"user": "ada"})
        self.assertEqual(json.loads(b.get("/whoami").body), {"user": "ada", "id": sid})
        resp = b.get("/signout")
        self.assertIsNone(store.get(sid))
        self.assertTrue(resp.cookie().clears)


# ---------------------------------------------------------------- one store, a WSGI app and an ASGI app

@requires(HAVE_SERVER, "pip install uvicorn websockets")
class TestWSGIAndASGIShareSessions(unittest.TestCase):
    """The interop suite's routes on SessionMiddleware (wsgiref) and on ASGISessionMiddleware
    (uvicorn), one secret, one store: a session made by either is the other's."""

    def serve_both(self, wsgi_store, asgi_store):
        from tests.interop.asgi_app import make_app as make_asgi
        from tests.interop.wsgi_app import ServedApp, make_app as make_wsgi
        from tests.support import free_port
        wsgi = ServedApp(make_wsgi([SECRET], wsgi_store, max_age=HOUR), free_port())
        self.addCleanup(wsgi.stop)
        asgi = UvicornServer(make_asgi([SECRET], asgi_store, max_age=HOUR))
        self.addCleanup(asgi.stop)
        return wsgi.port, asgi.port

    def check_both_ways(self, wsgi_port, asgi_port, store):
        for label, (first, second) in (("wsgi→asgi", (wsgi_port, asgi_port)),
                                       ("asgi→wsgi", (asgi_port, wsgi_port))):
            with self.subTest(label):
                b = Browser(first)
                login = json.loads(b.get("/login?user=ada").body)
                b.port = second
                self.assertEqual(json.loads(b.get("/whoami").body), {"user": "ada", "id": login["id"]})
                counts = []
                for port in (first, second, first, second):
                    b.port = port
                    counts.append(json.loads(b.get("/incr").body)["views"])
                self.assertEqual(counts, [1, 2, 3, 4])
                self.assertEqual(data_of(store, b.sid), {"user": "ada", "views": 4})
                b.port = second
                b.get("/logout")
                b.port = first
                self.assertIsNone(store.get(login["id"]))
                self.assertIsNone(json.loads(b.get("/whoami", cookie=f"{NAME}={cookie_value(login['id'])}").body)["user"])

    def test_one_memory_store_object_serves_both(self):
        store = session.MemoryStore()
        self.check_both_ways(*self.serve_both(store, store), store)

    def test_one_sqlite_file_serves_both(self):
        from stores.sqlite_store import SQLiteStore
        tmp = tempfile.mkdtemp(prefix="asgi-wsgi-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "sessions.db")
        wsgi_store, asgi_store = SQLiteStore(path), SQLiteStore(path)
        self.addCleanup(wsgi_store.close)
        self.addCleanup(asgi_store.close)
        ports = self.serve_both(wsgi_store, asgi_store)
        self.check_both_ways(*ports, wsgi_store)


if __name__ == "__main__":
    unittest.main()
