"""The middlewares inside more frameworks, under a real server and over real HTTP: Quart,
Falcon (WSGI and ASGI), Django (WSGI and ASGI), Sanic and BlackSheep (ASGI), Pyramid (WSGI),
and a Starlette sub-app mounted under a path prefix (``Mount``, uvicorn's ``root_path``).

Each app reaches our session where its framework keeps the raw request (``request.environ``,
``request.scope``, ``req.env``...), never through the framework's own session API. Every
framework runs the same flows: a counter, a login with ``regenerate()``, a logout with
``destroy()`` (which must leave None in the framework's scope or environ: it is the
middleware's, not a copy), a streamed response that changes the session, and a websocket
where the framework has one. ASGI apps run under uvicorn, WSGI apps under wsgiref; Django
is configured once per process, with no installed app and no middleware of its own. Each class skips with the pip command
of its framework when it is missing (.ci/requirements.txt pins them).
"""
from __future__ import annotations

import itertools
import json
import logging
import types
import unittest

import session
from tests.asgi_support import Browser, UvicornServer
from tests.harness import NAME, SECRET
from tests.support import free_port, has_module, requires
from tests.test_asgi_frameworks import data_of, wait_for, ws_connect

HOUR = 3600
OPTIONS = {"secret": SECRET, "cookie": {"max_age": HOUR}}
HAVE_UVICORN = has_module("uvicorn") and has_module("websockets")
_QUIET = logging.NullHandler()
_SANIC_NAMES = itertools.count()


def setUpModule():
    logging.getLogger("session").addHandler(_QUIET)


def tearDownModule():
    logging.getLogger("session").removeHandler(_QUIET)


# ---------------------------------------------------------------- what each app does with the session

def incr(sess) -> dict:
    sess["views"] = sess.get("views", 0) + 1
    return {"views": sess["views"]}


def login(sess, user: str) -> dict:
    sess.regenerate()
    sess["user"] = user
    return {"user": user, "id": sess.id}


def whoami(sess) -> dict:
    return {"user": sess.get("user"), "id": sess.id}


def logout(sess, where: dict) -> dict:
    """``where`` is the framework's environ or scope: destroy() sets the session to None in the
    middleware's, so this tells whether the app sees the middleware's dict or a copy."""
    sess.destroy()
    return {"ok": True, "gone": where["session"] is None}


def chunks(sess):
    """A streamed body that changes the session between its chunks."""
    for i in range(3):
        sess.setdefault("chunks", []).append(i)
        yield f"chunk {i}\n".encode()


async def achunks(sess):
    for chunk in chunks(sess):
        yield chunk


class WSGIServer:
    """A WSGI app served by wsgiref on 127.0.0.1:<free port> in a thread; ``stop()`` ends it."""

    def __init__(self, app) -> None:
        from tests.interop.wsgi_app import ServedApp
        self._served = ServedApp(app, free_port())
        self.port = self._served.port

    def stop(self) -> None:
        self._served.stop()


# ---------------------------------------------------------------- the flows, one definition

class Flows:
    """A subclass gives ``make_app(store)`` (the app, middleware included) and ``serve``;
    ``websocket`` when its framework has websockets under the app's /ws."""

    serve = UvicornServer
    websocket = False

    @classmethod
    def setUpClass(cls):
        cls.store = session.MemoryStore()
        cls.server = cls.serve(cls.make_app(cls.store))
        cls.addClassCleanup(cls.server.stop)

    def browser(self) -> Browser:
        return Browser(self.server.port)

    def test_a_counter_counts(self):
        b = self.browser()
        self.assertEqual([json.loads(b.get("/incr").body)["views"] for _ in range(3)], [1, 2, 3])
        self.assertEqual(data_of(self.store, b.sid), {"views": 3})

    def test_login_regenerates_and_logout_destroys(self):
        b = self.browser()
        b.get("/incr")
        anonymous = b.sid
        body = json.loads(b.get("/login?user=ada").body)
        self.assertEqual(b.sid, body["id"])
        self.assertNotEqual(body["id"], anonymous)
        self.assertIsNone(self.store.get(anonymous))
        self.assertEqual(json.loads(b.get("/whoami").body), {"user": "ada", "id": body["id"]})
        resp = b.get("/logout")
        self.assertEqual(json.loads(resp.body), {"ok": True, "gone": True})
        self.assertTrue(resp.cookie().clears, resp.cookie().raw)
        self.assertIsNone(self.store.get(body["id"]))
        self.assertIsNone(json.loads(b.get("/whoami").body)["user"])

    def test_a_stream_changes_the_session(self):
        b = self.browser()
        b.get("/incr")
        resp = b.get("/stream")
        self.assertEqual(resp.body, b"chunk 0\nchunk 1\nchunk 2\n")
        self.assertEqual(data_of(self.store, b.sid), {"views": 1, "chunks": [0, 1, 2]})

    def test_a_websocket_reads_the_session_and_saves_at_close(self):
        if not self.websocket:
            self.skipTest("no websocket in this framework's test app")
        b = self.browser()
        b.get("/login?user=ada")
        with ws_connect(self.server.port, "/ws", b) as ws:
            self.assertEqual(json.loads(ws.recv(timeout=5)), {"user": "ada"})
            ws.send("hello")
            self.assertEqual(ws.recv(timeout=5), "ok")
        self.assertTrue(wait_for(lambda: data_of(self.store, b.sid).get("said") == ["hello"]),
                        data_of(self.store, b.sid))


# ---------------------------------------------------------------- Quart

def quart_app(store):
    from quart import Quart, request, websocket
    app = Quart(__name__)

    def ours():
        return request.scope["session"]   # Quart's own `session` is its signed-cookie session

    @app.get("/incr")
    async def _incr():
        return incr(ours())

    @app.get("/login")
    async def _login():
        return login(ours(), request.args["user"])

    @app.get("/whoami")
    async def _whoami():
        return whoami(ours())

    @app.get("/logout")
    async def _logout():
        return logout(ours(), request.scope)

    @app.get("/stream")
    async def _stream():
        return achunks(ours()), 200, {"Content-Type": "text/plain"}

    @app.websocket("/ws")
    async def _ws():
        sess = websocket.scope["session"]
        await websocket.accept()
        await websocket.send(json.dumps({"user": sess.get("user")}))
        while True:
            text = await websocket.receive()
            sess["said"] = sess.get("said", []) + [text]
            await websocket.send("ok")

    app.asgi_app = session.ASGISessionMiddleware(app.asgi_app, store=store, **OPTIONS)
    return app


@requires(HAVE_UVICORN and has_module("quart"), "pip install quart uvicorn websockets")
class TestQuart(Flows, unittest.TestCase):
    make_app = staticmethod(quart_app)
    websocket = True


# ---------------------------------------------------------------- Falcon

def falcon_app(store, asgi: bool):
    import falcon
    import falcon.asgi

    def ours(req):
        return req.scope["session"] if asgi else req.env["session"]

    def call(fn):
        if asgi:
            async def on_get(self, req, resp):
                fn(req, resp)
        else:
            def on_get(self, req, resp):
                fn(req, resp)
        return type("Resource", (), {"on_get": on_get})()

    def json_of(fn):
        def respond(req, resp):
            resp.media = fn(req)
        return respond

    def stream(req, resp):
        resp.content_type = "text/plain"
        resp.stream = achunks(ours(req)) if asgi else chunks(ours(req))

    app = falcon.asgi.App() if asgi else falcon.App()
    app.add_route("/incr", call(json_of(lambda req: incr(ours(req)))))
    app.add_route("/login", call(json_of(lambda req: login(ours(req), req.get_param("user")))))
    app.add_route("/whoami", call(json_of(lambda req: whoami(ours(req)))))
    app.add_route("/logout", call(json_of(lambda req: logout(ours(req), req.scope if asgi else req.env))))
    app.add_route("/stream", call(stream))
    if asgi:
        class Socket:
            async def on_websocket(self, req, ws):
                sess = req.scope["session"]   # Falcon's WebSocket has no scope of its own
                await ws.accept()
                await ws.send_text(json.dumps({"user": sess.get("user")}))
                while True:
                    text = await ws.receive_text()
                    sess["said"] = sess.get("said", []) + [text]
                    await ws.send_text("ok")
        app.add_route("/ws", Socket())
        return session.ASGISessionMiddleware(app, store=store, **OPTIONS)
    return session.SessionMiddleware(app, store=store, **OPTIONS)


@requires(has_module("falcon"), "pip install falcon")
class TestFalconWSGI(Flows, unittest.TestCase):
    serve = WSGIServer
    make_app = staticmethod(lambda store: falcon_app(store, asgi=False))


@requires(HAVE_UVICORN and has_module("falcon"), "pip install falcon uvicorn websockets")
class TestFalconASGI(Flows, unittest.TestCase):
    make_app = staticmethod(lambda store: falcon_app(store, asgi=True))
    websocket = True


# ---------------------------------------------------------------- Django

def django_setup():
    """Django configured once per process, settings in code: no app, no middleware of its own."""
    import django
    from django.conf import settings
    from django.http import JsonResponse, StreamingHttpResponse
    from django.urls import path
    if settings.configured:
        return

    def ours(request):
        return request.scope["session"] if hasattr(request, "scope") else request.environ["session"]

    def view(fn):
        return lambda request: JsonResponse(fn(request))

    def stream(request):   # under ASGI an async iterator, which Django streams as it goes
        body = achunks(ours(request)) if hasattr(request, "scope") else chunks(ours(request))
        return StreamingHttpResponse(body, content_type="text/plain")

    def save_now(request):
        """A sync view saving before its response: under ASGI it runs in a thread, where
        save() raises SessionError; asgiref's async_to_sync runs asave() on the loop."""
        sess = ours(request)
        sess["saved"] = True
        if hasattr(request, "scope"):
            from asgiref.sync import async_to_sync
            async_to_sync(sess.asave)()
        else:
            sess.save()
        return JsonResponse({"in store": store_of[0].get(sess.id)["saved"]})

    urls = types.ModuleType("session_test_urls")   # ROOT_URLCONF may be a module object
    urls.urlpatterns = [
        path("incr", view(lambda r: incr(ours(r)))),
        path("login", view(lambda r: login(ours(r), r.GET["user"]))),
        path("whoami", view(lambda r: whoami(ours(r)))),
        path("logout", view(lambda r: logout(ours(r), r.scope if hasattr(r, "scope") else r.environ))),
        path("stream", stream),
        path("save", save_now),
    ]
    settings.configure(DEBUG=False, SECRET_KEY="test", ALLOWED_HOSTS=["127.0.0.1"],
                       ROOT_URLCONF=urls, MIDDLEWARE=[], INSTALLED_APPS=[], LOGGING_CONFIG=None)
    django.setup()


store_of: list = [None]   # the store of the Django app being served (settings are per process)


def django_app(store, asgi: bool):
    django_setup()
    store_of[0] = store
    if asgi:
        from django.core.asgi import get_asgi_application
        return session.ASGISessionMiddleware(get_asgi_application(), store=store, **OPTIONS)
    from django.core.wsgi import get_wsgi_application
    return session.SessionMiddleware(get_wsgi_application(), store=store, **OPTIONS)


@requires(has_module("django"), "pip install django")
class TestDjangoWSGI(Flows, unittest.TestCase):
    serve = WSGIServer
    make_app = staticmethod(lambda store: django_app(store, asgi=False))

    def test_a_view_saves_before_its_response(self):
        b = self.browser()
        b.get("/incr")
        self.assertEqual(json.loads(b.get("/save").body), {"in store": True})
        self.assertEqual(data_of(self.store, b.sid), {"views": 1, "saved": True})


@requires(HAVE_UVICORN and has_module("django"), "pip install django uvicorn websockets")
class TestDjangoASGI(TestDjangoWSGI):
    serve = UvicornServer
    make_app = staticmethod(lambda store: django_app(store, asgi=True))


# ---------------------------------------------------------------- Sanic (ASGI mode)

def sanic_app(store):
    from sanic import Sanic
    from sanic.response import json as json_response
    app = Sanic(f"sessions{next(_SANIC_NAMES)}", configure_logging=False)   # a name per app, unique

    def ours(request):
        return request.scope["session"]

    @app.get("/incr")
    async def _incr(request):
        return json_response(incr(ours(request)))

    @app.get("/login")
    async def _login(request):
        return json_response(login(ours(request), request.args.get("user")))

    @app.get("/whoami")
    async def _whoami(request):
        return json_response(whoami(ours(request)))

    @app.get("/logout")
    async def _logout(request):
        return json_response(logout(ours(request), request.scope))

    @app.get("/stream")
    async def _stream(request):
        response = await request.respond(content_type="text/plain")
        for chunk in chunks(ours(request)):
            await response.send(chunk)
        await response.eof()

    @app.websocket("/ws")
    async def _ws(request, ws):
        sess = ours(request)
        await ws.send(json.dumps({"user": sess.get("user")}))
        while True:
            text = await ws.recv()
            if text is None:   # the client closed the socket
                return
            sess["said"] = sess.get("said", []) + [text]
            await ws.send("ok")

    return session.ASGISessionMiddleware(app, store=store, **OPTIONS)


@requires(HAVE_UVICORN and has_module("sanic"), "pip install sanic uvicorn websockets")
class TestSanicASGI(Flows, unittest.TestCase):
    make_app = staticmethod(sanic_app)
    websocket = True


# ---------------------------------------------------------------- BlackSheep

def blacksheep_app(store):
    from blacksheep import Application, Response, StreamedContent, WebSocket, json as json_response
    from blacksheep.server.websocket import WebSocketDisconnectError
    app = Application()

    def ours(request):
        return request.scope["session"]

    @app.router.get("/incr")
    async def _incr(request):
        return json_response(incr(ours(request)))

    @app.router.get("/login")
    async def _login(request):
        return json_response(login(ours(request), request.query["user"][0]))

    @app.router.get("/whoami")
    async def _whoami(request):
        return json_response(whoami(ours(request)))

    @app.router.get("/logout")
    async def _logout(request):
        return json_response(logout(ours(request), request.scope))

    @app.router.get("/stream")
    async def _stream(request):
        sess = ours(request)

        async def provider():   # BlackSheep wants an async generator function
            async for chunk in achunks(sess):
                yield chunk
        return Response(200, None, StreamedContent(b"text/plain", provider))

    @app.router.ws("/ws")
    async def _ws(websocket):
        sess = websocket.scope["session"]
        await websocket.accept()
        await websocket.send_text(json.dumps({"user": sess.get("user")}))
        while True:
            try:
                text = await websocket.receive_text()
            except WebSocketDisconnectError:
                return
            sess["said"] = sess.get("said", []) + [text]
            await websocket.send_text("ok")
    _ws.__annotations__["websocket"] = WebSocket   # a class, not the string this module's annotations are

    return session.ASGISessionMiddleware(app, store=store, **OPTIONS)


@requires(HAVE_UVICORN and has_module("blacksheep"), "pip install blacksheep uvicorn websockets")
class TestBlackSheep(Flows, unittest.TestCase):
    make_app = staticmethod(blacksheep_app)
    websocket = True


# ---------------------------------------------------------------- Pyramid

def pyramid_app(store):
    from pyramid.config import Configurator
    from pyramid.response import Response

    def ours(request):
        return request.environ["session"]   # request.session is Pyramid's, with a session factory

    def stream(request):
        return Response(app_iter=chunks(ours(request)), content_type="text/plain")

    with Configurator() as config:
        for name, fn in (("incr", lambda r: incr(ours(r))), ("login", lambda r: login(ours(r), r.params["user"])),
                         ("whoami", lambda r: whoami(ours(r))), ("logout", lambda r: logout(ours(r), r.environ))):
            config.add_route(name, f"/{name}")
            config.add_view(fn, route_name=name, renderer="json")
        config.add_route("stream", "/stream")
        config.add_view(stream, route_name="stream")
        app = config.make_wsgi_app()
    return session.SessionMiddleware(app, store=store, **OPTIONS)


@requires(has_module("pyramid"), "pip install pyramid")
class TestPyramid(Flows, unittest.TestCase):
    serve = WSGIServer
    make_app = staticmethod(pyramid_app)


# ---------------------------------------------------------------- Starlette under a path prefix

def mounted_app(store, cookie_path: str):
    """tests.test_asgi_frameworks's Starlette routes as a sub-app under /app, the middleware
    wrapping the sub-app with the cookie's path given; /outside is the parent app's."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route
    from tests.test_asgi_frameworks import starlette_routes

    async def outside(request):
        return JSONResponse({"session": "session" in request.scope})

    sub = session.ASGISessionMiddleware(Starlette(routes=starlette_routes(store, {})), store=store,
                                        secret=SECRET, cookie={"max_age": HOUR, "path": cookie_path})
    return Starlette(routes=[Route("/outside", outside), Mount("/app", app=sub)])


@requires(HAVE_UVICORN and has_module("starlette"), "pip install starlette uvicorn websockets")
class TestStarletteMountedUnderAPrefix(unittest.TestCase):
    """A session scoped to a sub-app by the cookie's path: the middleware matches the path
    against root_path + path, whether the prefix is Starlette's Mount, the server's
    --root-path (a proxy that strips the prefix), or both."""

    def serve(self, cookie_path: str, **config):
        store = session.MemoryStore()
        server = UvicornServer(mounted_app(store, cookie_path), **config)
        self.addCleanup(server.stop)
        return store, Browser(server.port)

    def check(self, store, b, prefix: str, cookie_path: str):
        first = b.get(f"{prefix}/incr")
        self.assertEqual(json.loads(first.body), {"views": 1})
        self.assertEqual(first.cookie().attrs.get("path"), cookie_path, first.cookie().raw)
        self.assertEqual(json.loads(b.get(f"{prefix}/incr").body), {"views": 2})
        anonymous = b.sid
        login = json.loads(b.get(f"{prefix}/login?user=ada").body)
        self.assertNotEqual(login["id"], anonymous)
        self.assertIsNone(store.get(anonymous))
        self.assertEqual(json.loads(b.get(f"{prefix}/whoami").body), login)
        self.assertEqual(b.get(f"{prefix}/stream").body, b"chunk 0\nchunk 1\nchunk 2\n")
        self.assertEqual(data_of(store, b.sid), {"user": "ada", "chunks": [0, 1, 2]})
        with ws_connect(b.port, f"{prefix}/ws-chat", b) as ws:
            ws.send("hi")
            self.assertEqual(ws.recv(timeout=5), "ok")
        self.assertTrue(wait_for(lambda: data_of(store, b.sid).get("said") == ["hi"]))
        self.assertEqual(json.loads(b.get(f"{prefix}/logout").body), {"ok": True, "session": None})
        self.assertIsNone(store.get(login["id"]))
        self.assertNotIn(NAME, b.jar)

    def test_a_mounted_sub_app(self):
        store, b = self.serve("/app")
        self.check(store, b, "/app", "/app")
        self.assertEqual(json.loads(b.get("/outside").body), {"session": False})

    def test_a_mounted_sub_app_whose_cookie_path_is_not_the_mount_gets_no_session(self):
        store, b = self.serve("/other")
        resp = b.get("/app/whoami")
        self.assertEqual(resp.status, 500)   # request.session: no session in the scope
        self.assertIsNone(resp.cookie())

    def test_behind_a_proxy_that_strips_the_prefix(self):
        store, b = self.serve("/prefix/app", root_path="/prefix")
        self.check(store, b, "/app", "/prefix/app")   # the proxy took /prefix off


if __name__ == "__main__":
    unittest.main()
