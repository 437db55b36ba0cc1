"""The response: the store write done before the last chunk reaches the server, write(),
exc_info, close(), wsgiref.validate; and a session over real sockets with wsgiref.
"""
from __future__ import annotations

import gc
import http.client
import sys
import threading
import time
import unittest
import warnings
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.validate import validator

import session
from tests import support
from tests.harness import (HOUR, HTTP_DATE, NAME, SECRET, Client, RecordingStore, SetCookie,
                           cookie_value, make_record)
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)


class TestStreaming(unittest.TestCase):

    def run_ordering(self, make_body, lazy):
        events = []
        store = RecordingStore(events=events)

        def app(environ, start_response):
            if lazy:
                def gen():
                    environ["session"]["views"] = 1
                    start_response("200 OK", [("Content-Type", "text/plain")])
                    yield from make_body()
                return gen()
            environ["session"]["views"] = 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            return make_body()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        resp = Client(mw).request(events=events)
        return resp, events, store

    def test_store_write_completes_before_the_last_chunk_reaches_the_server(self):
        bodies = {"three-chunk generator": lambda: (c for c in (b"a", b"b", b"c")),
                  "one-chunk list": lambda: [b"abc"],
                  "empty list": lambda: [],
                  "chunks with empty tail": lambda: [b"a", b""]}
        for lazy in (False, True):
            for label, make_body in bodies.items():
                with self.subTest(body=label, lazy_start_response=lazy):
                    resp, events, store = self.run_ordering(make_body, lazy)
                    kinds = [e[0] for e in events]
                    self.assertIn("set-done", kinds)
                    data_chunks = [i for i, e in enumerate(events) if e[0] == "chunk"]
                    cut = data_chunks[-1] if data_chunks else kinds.index("end")
                    self.assertLess(kinds.index("set-done"), cut, events)
                    self.assertEqual(resp.body, b"".join(make_body()))
                    self.assertIsNotNone(resp.cookie(), "lazy start_response still gets Set-Cookie")
                    self.assertEqual(store.get(resp.cookie().sid)["views"], 1)

    def test_touch_also_completes_before_the_last_chunk(self):
        events = []
        store = RecordingStore(events=events)
        mw = session.SessionMiddleware(lambda e, s: (s("200 OK", []), iter([b"a", b"b"]))[1],
                                       secret=SECRET, store=store)
        store.set("sid-1", make_record({"n": 1}))
        Client(mw).request(cookie=f"{NAME}={cookie_value('sid-1')}", events=events)
        kinds = [e[0] for e in events]
        last_chunk = max(i for i, k in enumerate(kinds) if k == "chunk")
        self.assertLess(kinds.index("touch-done"), last_chunk, events)

    def test_a_rolling_cookie_sent_before_the_body_ends_carries_the_refreshed_expiry(self):
        # The headers go out with the second chunk, before the store action at the end.
        def app(environ, start_response):
            environ["session"]["n"]
            start_response("200 OK", [])
            yield b"a"
            yield b"b"
        store = RecordingStore()
        store.set("sid-1", make_record({"n": 1}, expires_in=100))
        mw = session.SessionMiddleware(app, secret=SECRET, store=store, rolling=True, cookie={"max_age": HOUR})
        resp = Client(mw).request(cookie=f"{NAME}={cookie_value('sid-1')}")
        self.assertAlmostEqual(resp.cookie().expires, time.time() + HOUR, delta=5)

    def test_the_clock_restarted_for_the_cookie_is_not_restarted_again_for_the_store(self):
        # As express's one touch per request: the record expires when the cookie sent does,
        # however long the body takes after the head.
        def app(environ, start_response):
            environ["session"]["n"]
            start_response("200 OK", [])
            yield b"a"
            yield b"b"  # the head goes out
            time.sleep(1.1)
            yield b"c"
        store = RecordingStore()
        store.set("sid-1", make_record({"n": 1}, expires_in=100))
        mw = session.SessionMiddleware(app, secret=SECRET, store=store, rolling=True, cookie={"max_age": HOUR})
        sent = Client(mw).request(cookie=f"{NAME}={cookie_value('sid-1')}").cookie().expires
        stored = session.expires_at(store.get("sid-1"))
        self.assertGreaterEqual(stored - sent, 0)
        self.assertLess(stored - sent, 1)  # Expires is cut to the second

    def test_a_session_unset_under_unset_destroy_gets_its_cookie_expired_before_the_body_ends(self):
        # The headers go out with the second chunk, before the store action deletes the record.
        def app(environ, start_response):
            environ["session"] = None
            start_response("200 OK", [])
            yield b"a"
            yield b"b"
        store = RecordingStore()
        store.set("sid-1", make_record({"n": 1}))
        mw = session.SessionMiddleware(app, secret=SECRET, store=store, unset="destroy")
        resp = Client(mw).request(cookie=f"{NAME}={cookie_value('sid-1')}")
        self.assertTrue(resp.cookie() and resp.cookie().clears, resp.headers)
        self.assertIsNone(store.get("sid-1"))

    def test_the_last_bytes_given_to_write_wait_for_the_store_write(self):
        # DESIGN's lifecycle, step 5, for an app that writes its body through write().
        events = []

        def app(environ, start_response):
            environ["session"]["u"] = 1
            write = start_response("200 OK", [])
            write(b"hello, ")
            write(b"world")
            return []
        store = RecordingStore(events=events)
        resp = Client(session.SessionMiddleware(app, secret=SECRET, store=store)).request(events=events)
        self.assertEqual(resp.body, b"hello, world")
        kinds = [e[0] if e[0] != "chunk" else e[1] for e in events]
        self.assertEqual(kinds, ["start_response", b"hello, ", "set-done", b"world", "end"])

    def test_legacy_write_callable_works(self):
        store = RecordingStore()

        def app(environ, start_response):
            environ["session"]["u"] = 1
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"hello, ")
            return [b"world"]
        resp = Client(session.SessionMiddleware(app, secret=SECRET, store=store)).request()
        self.assertEqual(resp.body, b"hello, world")
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(store.get(resp.cookie().sid)["u"], 1)

    def test_write_called_while_the_body_is_iterated_keeps_the_bodys_order(self):
        # PEP 3333 allows both: the chunk held back for the store write goes out before it.
        def app(environ, start_response):
            environ["session"]["u"] = 1
            write = start_response("200 OK", [("Content-Type", "text/plain")])

            def body():
                yield b"1-"
                write(b"2-")
                yield b"3-"
                yield b"4"
            return body()
        resp = Client(session.SessionMiddleware(app, secret=SECRET)).request()
        self.assertEqual(resp.body, b"1-2-3-4")
        self.assertIsNotNone(resp.cookie())

    def test_start_response_with_exc_info_passes_through(self):
        def app(environ, start_response):
            environ["session"]["u"] = 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise ValueError("late failure")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"error page"]
        resp = Client(session.SessionMiddleware(app, secret=SECRET)).request()
        self.assertEqual(resp.status, "500 Internal Server Error")
        self.assertEqual(resp.body, b"error page")

    def test_start_response_with_exc_info_after_the_headers_went_out_re_raises_to_the_server(self):
        # PEP 3333: the server re-raises, and the app's error page never follows the bytes sent,
        # also when the one write() or chunk so far is still held back for the store write.
        for writes in ([b"partial, "], [b"partial, ", b"more"], [b""], "yielded"):
            with self.subTest(writes=writes):
                def app(environ, start_response):
                    environ["session"]["u"] = 1
                    write = start_response("200 OK", [])
                    if writes == "yielded":
                        return yielded(start_response)
                    for data in writes:
                        write(data)
                    try:
                        raise ValueError("late failure")
                    except ValueError:
                        start_response("500 Internal Server Error", [], sys.exc_info())
                    return [b"error page"]

                def yielded(start_response):
                    yield b"partial, "
                    try:
                        raise ValueError("late failure")
                    except ValueError:
                        start_response("500 Internal Server Error", [], sys.exc_info())
                    yield b"error page"
                store = RecordingStore()
                with self.assertRaisesRegex(ValueError, "late failure"):
                    Client(session.SessionMiddleware(app, secret=SECRET, store=store)).request()
                self.assertEqual(store.count("set"), 0)

    def test_close_of_the_apps_iterable_is_called(self):
        closed = []

        class Body:
            def __iter__(self):
                yield b"x"

            def close(self):
                closed.append(True)

        def app(environ, start_response):
            start_response("200 OK", [])
            return Body()
        Client(session.SessionMiddleware(app, secret=SECRET)).request()
        self.assertEqual(closed, [True])

    def test_the_servers_file_wrapper_is_returned_as_it_is(self):
        # The server can then send the file by itself (sendfile), and the store write is done.
        class FileWrapper:
            def __init__(self, data):
                self.data, self.closed = data, False

            def __iter__(self):
                yield self.data

            def close(self):
                self.closed = True
        store = RecordingStore()

        def app(environ, start_response):
            environ["session"]["views"] = 1
            start_response("200 OK", [("Content-Length", "4")])
            return environ["wsgi.file_wrapper"](b"file")
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http",
               "wsgi.file_wrapper": FileWrapper}
        sent = []
        body = mw(env, lambda status, headers, exc_info=None: sent.append(headers))
        self.assertIs(type(body), FileWrapper)
        self.assertEqual(store.count("set"), 1)
        self.assertIn("Set-Cookie", [name for name, _ in sent[0]])

    def test_a_file_wrapper_that_is_a_function_is_returned_as_it_is(self):
        # uWSGI's wsgi.file_wrapper is a function returning the file itself, which it sends
        # with sendfile only when the app's result is that very object.
        class File:
            def __iter__(self):
                yield b"iterated"
        store = RecordingStore()

        def app(environ, start_response):
            environ["session"]["views"] = 1
            start_response("200 OK", [])
            return environ["wsgi.file_wrapper"](made, 8192)
        made = File()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http",
               "wsgi.file_wrapper": lambda filelike, block_size=8192: filelike}
        sent = []
        self.assertIs(mw(env, lambda status, headers, exc_info=None: sent.append(headers)), made)
        self.assertEqual(store.count("set"), 1)
        self.assertIn("Set-Cookie", [name for name, _ in sent[0]])

    def test_a_list_body_is_returned_as_it_is(self):
        # The server can then count its length (wsgiref sends Content-Length for one chunk).
        body = [b"hello"]
        store = RecordingStore()

        def app(environ, start_response):
            environ["session"]["views"] = 1
            start_response("200 OK", [])
            return body
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
        sent = []
        self.assertIs(mw(env, lambda status, headers, exc_info=None: sent.append(headers)), body)
        self.assertEqual(store.count("set"), 1)
        self.assertIn("Set-Cookie", [name for name, _ in sent[0]])

    def test_a_body_whose_iter_raises_saves_nothing(self):
        class Body:
            def __iter__(self):
                raise RuntimeError("the app failed")
        store = RecordingStore()

        def app(environ, start_response):
            environ["session"]["views"] = 1
            start_response("200 OK", [])
            return Body()
        with self.assertRaisesRegex(RuntimeError, "the app failed"):
            Client(session.SessionMiddleware(app, secret=SECRET, store=store)).request()
        self.assertEqual(store.count("set"), 0)

    def test_start_response_called_again_without_exc_info_raises(self):
        def app(environ, start_response):
            start_response("200 OK", [])
            start_response("404 Not Found", [])
            return [b""]
        with self.assertRaisesRegex(AssertionError, "exc_info"):
            Client(session.SessionMiddleware(app, secret=SECRET)).request()

    def test_regenerate_or_destroy_after_the_response_ended_raises(self):
        # As under ASGI: Werkzeug's call_on_close runs after the store action, too late.
        for late in ("regenerate", "destroy"):
            with self.subTest(late=late):
                seen = []

                class Body:
                    def __init__(self, sess):
                        self.sess = sess

                    def __iter__(self):
                        yield b"x"

                    def close(self):
                        try:
                            getattr(self.sess, late)()
                        except session.SessionError as exc:
                            seen.append(exc)

                def app(environ, start_response):
                    environ["session"]["user"] = "ada"
                    start_response("200 OK", [])
                    return Body(environ["session"])
                store = RecordingStore()
                resp = Client(session.SessionMiddleware(app, secret=SECRET, store=store)).request()
                self.assertEqual(len(seen), 1)
                self.assertEqual(store.get(resp.cookie().sid)["user"], "ada")

    def test_an_error_status_before_the_head_went_out_reaches_the_server_as_its_first(self):
        # The server has been given no head yet, so there is no error of its to replace:
        # uWSGI raises SystemError on any start_response with exc_info.
        def app(environ, start_response):
            start_response("200 OK", [])
            try:
                raise ValueError("the view failed")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            return [b"sorry"]
        calls = []

        def start_response(status, headers, exc_info=None):
            calls.append((status, exc_info))
            return lambda data: None
        body = session.SessionMiddleware(app, secret=SECRET)(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}, start_response)
        self.assertEqual(b"".join(body), b"sorry")
        self.assertEqual(calls, [("500 Internal Server Error", None)])

    def test_a_bytearray_given_to_write_reaches_the_server_as_bytes(self):
        # Held for the store write, it goes out in the body iterable, where a server (cheroot)
        # takes bytes alone, though its write() takes a bytearray.
        for body in ([], iter([b"!"])):
            with self.subTest(body=type(body).__name__):
                def app(environ, start_response, body=body):
                    environ["session"]["u"] = 1
                    start_response("200 OK", [])(bytearray(b"hello"))
                    return body
                sent = []

                def start_response(status, headers, exc_info=None):
                    return lambda data: sent.append(data)
                result = session.SessionMiddleware(app, secret=SECRET)(
                    {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}, start_response)
                sent.extend(result)
                getattr(result, "close", lambda: None)()
                self.assertEqual(b"".join(sent), b"hello" + (b"!" if body != [] else b""))
                self.assertEqual({type(chunk) for chunk in sent}, {bytes})

    def test_write_refuses_what_is_not_bytes_inside_the_app_so_nothing_is_saved(self):
        store = RecordingStore()

        def app(environ, start_response):
            environ["session"]["paid"] = True
            start_response("200 OK", [])("not bytes")
            return []
        with self.assertRaisesRegex(TypeError, "bytes"):
            Client(session.SessionMiddleware(app, secret=SECRET, store=store)).request()
        self.assertEqual(store.count("set"), 0)

    def test_regenerate_after_the_head_went_out_raises_and_keeps_the_session(self):
        # The new ID's cookie could only have gone with the head: a login there would log out.
        store = RecordingStore()
        store.set("sid-1", make_record({"user": "eve"}))

        def app(environ, start_response):
            start_response("200 OK", [])

            def body():
                yield b"a"
                yield b"b"  # the head goes out with "a", when this one comes
                environ["session"].regenerate()
            return body()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        with self.assertRaisesRegex(session.SessionError, "head is out"):
            Client(mw).request(cookie=f"{NAME}={cookie_value('sid-1')}")
        self.assertEqual(store.get("sid-1")["user"], "eve")

    def test_data_put_in_place_of_a_session_destroyed_once_the_head_is_out_is_not_saved(self):
        # A new session there could never get its cookie: the logout holds, the body goes out
        # whole, and no record is left under an ID no browser holds.
        store = RecordingStore()
        store.set("sid-1", make_record({"user": "eve"}))

        def app(environ, start_response):
            start_response("200 OK", [])

            def body():
                environ["session"].destroy()
                yield b"a"
                yield b"b"  # the head goes out with "a", when this one comes
                environ["session"] = {"user": "bob"}
                yield b"c"
            return body()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        with self.assertLogs("session", "WARNING"):
            resp = Client(mw).request(cookie=f"{NAME}={cookie_value('sid-1')}")
        self.assertEqual(resp.body, b"abc")
        self.assertEqual(store.all(), {})

    def test_a_detached_session_the_caller_put_in_the_environ_passes_through(self):
        # Session() is a detached session, for tests: DESIGN's step 0 passes it through.
        def app(environ, start_response):
            start_response("200 OK", [])
            return [environ["session"]["user"].encode()]
        mw = session.SessionMiddleware(app, secret=SECRET)
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http",
               "session": session.Session(user="ada")}
        self.assertEqual(mw(env, lambda status, headers, exc_info=None: None), [b"ada"])

    def test_the_same_environ_given_to_the_app_again_gets_a_session_of_its_own(self):
        # An error-document wrapper or an internal forward calls the app again with the
        # environ of a finished request: that request's session is not passed through.
        store = RecordingStore()

        def counter(environ, start_response):
            s = environ["session"]
            s["n"] = s.get("n", 0) + 1
            start_response("200 OK", [])
            return [str(s["n"]).encode()]
        mw = session.SessionMiddleware(counter, secret=SECRET, store=store)
        first = Client(mw).request()
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http",
               "HTTP_COOKIE": f"{NAME}={first.cookie().value}"}
        for _ in range(2):
            body = mw(env, lambda status, headers, exc_info=None: None)
            self.assertIsInstance(body, list)
        self.assertEqual(body, [b"3"])
        self.assertEqual(store.get(first.cookie().sid)["n"], 3)

    def test_a_client_that_leaves_mid_body_still_gets_the_store_action(self):
        # The server stops iterating and calls close(): the app did not fail, the client left.
        store = RecordingStore()

        def app(environ, start_response):
            environ["session"]["views"] = 1
            start_response("200 OK", [("Content-Type", "text/plain")])

            def body():
                yield b"first"
                environ["session"]["more"] = True
                yield b"second"
                yield b"third"
            return body()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store)
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
        body = mw(env, lambda status, headers, exc_info=None: None)
        chunks = iter(body)
        next(chunks)
        next(chunks)   # the client goes away here
        body.close()
        self.assertEqual(store.count("set"), 1)
        [record] = store.all().values()
        self.assertEqual((record["views"], record["more"]), (1, True))
        body.close()   # a second close does nothing more
        self.assertEqual(store.count("set"), 1)

    def test_a_finished_or_failed_request_leaves_nothing_for_the_cycle_collector(self):
        # waitress's start_response is a closure over its task, which holds the environ: a
        # session in the environ that still held the server's callables would tie the whole
        # request into a cycle, freed only by the collector (21 objects a request there).
        class Task:
            def __init__(self, environ):
                self.environ = environ

            def run(self, app, leave_early=False):
                def start_response(status, headers, exc_info=None):
                    self.status, self.headers = status, headers
                    return self.write
                try:
                    body = app(self.environ, start_response)
                    chunks = [next(iter(body))] if leave_early else list(body)
                    getattr(body, "close", lambda: None)()
                except RuntimeError:  # as waitress: logged and answered with a 500, not kept
                    return "500"
                return chunks

            def write(self, data):
                pass

        def app(environ, start_response):
            environ["session"]["views"] = environ["session"].get("views", 0) + 1
            path = environ["PATH_INFO"]
            if path == "/raise":
                raise RuntimeError("the app failed")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"a", b"b"] if path == "/list" else iter([b"a", b"b"]) if path == "/iterator" \
                else failing_body()

        def failing_body():
            yield b"a"
            raise RuntimeError("the body failed")
        class FailingStore(session.MemoryStore):
            def merge(self, sid, change):
                raise RuntimeError("the store is down")
        mw = session.SessionMiddleware(app, secret=SECRET, cookie={"max_age": HOUR})
        down = session.SessionMiddleware(app, secret=SECRET, store=FailingStore())
        cases = [(mw, "/list", False, [b"a", b"b"]), (mw, "/iterator", False, [b"a", b"b"]),
                 (mw, "/iterator", True, [b"a"]), (mw, "/raise", False, "500"),
                 (mw, "/raise-later", False, "500"), (down, "/list", False, "500"),
                 (down, "/iterator", False, "500")]
        gc.collect()
        gc.disable()
        try:
            for app_, path, leave_early, sent in cases:
                with self.subTest(path=path, leave_early=leave_early, store_down=app_ is down):
                    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.url_scheme": "http"}
                    self.assertEqual(Task(environ).run(app_, leave_early), sent)
                    self.assertEqual(environ["session"]["views"], 1)
                    del environ
                    self.assertEqual(gc.collect(), 0)
        finally:
            gc.enable()

    def test_middleware_is_wsgi_compliant(self):
        # wsgiref's validator wants dotless environ keys to be strings (CGI variables), so the
        # session goes under a dotted, server-style key here.
        def app(environ, start_response):
            s = environ["app.session"]
            s["n"] = s.get("n", 0) + 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"n=%d" % s["n"]]
        client = Client(validator(session.SessionMiddleware(validator(app), secret=SECRET,
                                                            environ_key="app.session")))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            self.assertEqual(client.request().body, b"n=1")
            self.assertEqual(client.request().body, b"n=2")


# ================================================================ over real sockets

class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class TestOverSockets(unittest.TestCase):

    def test_session_round_trip_over_wsgiref(self):
        def app(environ, start_response):
            s = environ["session"]
            s["views"] = s.get("views", 0) + 1
            start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "Accept-Encoding")])
            return [b"views=", b"%d" % s["views"]]
        store = session.MemoryStore()
        mw = session.SessionMiddleware(app, secret=SECRET, store=store, cookie={"max_age": HOUR})
        server = make_server("127.0.0.1", support.free_port(), mw, handler_class=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            cookie = None
            for n in (1, 2, 3):
                conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
                conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
                resp = conn.getresponse()
                body = resp.read()
                self.assertEqual(resp.status, 200)
                self.assertEqual(body, b"views=%d" % n)
                set_cookie = resp.getheader("Set-Cookie")
                self.assertIsNotNone(set_cookie)
                sc = SetCookie(set_cookie)
                self.assertRegex(sc.attrs["expires"], HTTP_DATE)
                self.assertEqual(sorted(t.strip().lower() for t in resp.getheader("Vary").split(",")),
                                 ["accept-encoding", "cookie"])
                cookie = f"{sc.name}={sc.value}"
                conn.close()
                # The write finished before the body ended, so the store already holds it.
                self.assertEqual(store.get(sc.sid)["views"], n)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
