"""ASGISessionMiddleware against the ASGI protocol itself, with no framework (standard library only).

Each test drives the middleware with hand-written ASGI apps through tests/asgi_support's strict
caller, which plays the server: it checks every message and records the order in which messages
and store writes happen.  The frameworks and a real server are in test_asgi_frameworks.py.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import itertools
import logging
import os
import tempfile
import threading
import unittest
from unittest import mock

import session
from tests.support import has_module, requires
from tests.harness import HOUR, NAME, SECRET, RecordingStore, SetCookie, cookie_value, make_record
from stores.sqlite_store import SQLiteStore
from tests.asgi_support import (ASGIClient, ASGIHarness, acall_asgi, call_asgi, make_scope,
                                 run_with_counted_threads, simple_app)


def setUpModule():
    logging.getLogger("session").addHandler(_QUIET)   # expected warnings stay off the output


def tearDownModule():
    logging.getLogger("session").removeHandler(_QUIET)


_QUIET = logging.NullHandler()


def seeded(data=None, *, store=None, **record_kw):
    """(store, sid, Cookie header) for a stored session, as an earlier request left it."""
    store = store if store is not None else RecordingStore()
    sid = "seed-" + session._secrets.token_urlsafe(9)
    if isinstance(store, AsyncFirstStore):
        asyncio.run(store.aset(sid, make_record(data or {}, **record_kw)))
        del store.calls[:]
    else:
        store.set(sid, make_record(data or {}, **record_kw))
    if isinstance(store, RecordingStore):
        store.reset()
        del store.events[:]
    return store, sid, f"{NAME}={cookie_value(sid)}"


def middleware(app, store=None, **options):
    options.setdefault("secret", SECRET)
    return session.ASGISessionMiddleware(app, store=store if store is not None else RecordingStore(), **options)


def data_of(store, sid):
    record = store.get(sid)
    return None if record is None else {k: v for k, v in record.items() if k != "cookie"}


class AnyLoopAsyncFirstStore(session.Store):
    """A store with coroutines only (its plain methods are Store's stubs), which await nothing,
    so they run on asyncio and on trio alike."""

    def __init__(self):
        self.records = {}

    async def aget(self, sid):
        text = self.records.get(sid)
        return None if text is None else session.decode_record(text)

    async def aset(self, sid, record):
        self.records[sid] = session.encode_record(record)

    async def atouch(self, sid, record):
        pass

    async def adestroy(self, sid):
        self.records.pop(sid, None)


class SlowAsyncStore(session.MemoryStore):
    """A MemoryStore whose coroutine writes take a while, as a networked async store's do, and
    shield themselves from cancellation, as such a store's must."""

    delay = 0.05
    writes = 0

    async def amerge(self, sid, change):
        return await asyncio.shield(self._slowly(self.merge, sid, change))

    async def aset(self, sid, record):
        await asyncio.shield(self._slowly(self.set, sid, record))

    async def adestroy(self, sid):
        await asyncio.shield(self._slowly(self.destroy, sid))

    async def _slowly(self, method, *args):
        await asyncio.sleep(self.delay)
        self.writes += 1
        return method(*args)


class SyncOnlyStore(session.Store):
    """A store with only the synchronous methods (as a third-party store may be), recording the
    thread each call ran on."""

    def __init__(self):
        self.inner = session.MemoryStore()
        self.threads = []

    def _note(self):
        self.threads.append(threading.get_ident())

    def get(self, sid):
        self._note()
        return self.inner.get(sid)

    def set(self, sid, record):
        self._note()
        self.inner.set(sid, record)

    def destroy(self, sid):
        self._note()
        self.inner.destroy(sid)

    def touch(self, sid, record):
        self._note()
        self.inner.touch(sid, record)

    def all(self):
        return self.inner.all()

    def clear(self):
        self.inner.clear()


class AsyncFirstStore(session.Store):
    """A store offering aget, aset, adestroy and atouch (the contract's coroutines), whose sync
    methods cannot be used (as with an async-only driver); each coroutine waits a moment, as
    I/O does, and records its call."""

    def __init__(self):
        self.records, self.calls = {}, []

    def _sync(self, *args):
        raise AssertionError("a sync method was called")
    get = set = destroy = touch = _sync

    async def aget(self, sid):
        self.calls.append("aget")
        await asyncio.sleep(0.001)
        text = self.records.get(sid)
        return None if text is None else session.decode_record(text)

    async def aset(self, sid, record):
        self.calls.append("aset")
        await asyncio.sleep(0.001)
        self.records[sid] = session.encode_record(record)

    async def adestroy(self, sid):
        self.calls.append("adestroy")
        await asyncio.sleep(0.001)
        self.records.pop(sid, None)

    async def atouch(self, sid, record):
        self.calls.append("atouch")

    def all(self):
        return {sid: session.decode_record(text) for sid, text in self.records.items()}

    def clear(self):
        self.records.clear()


# ================================================================ request headers

class TestRequestHeaders(unittest.TestCase):

    def test_header_names_are_matched_whatever_their_case(self):
        for name in (b"Cookie", b"COOKIE", b"cookie"):
            with self.subTest(name=name):
                store, sid, cookie = seeded({"user": "ada"})
                seen = {}
                mw = middleware(simple_app(lambda s: seen.update(user=s["session"].get("user"))), store)
                call_asgi(mw, make_scope(headers=[(name, cookie.encode())]))
                self.assertEqual(seen["user"], "ada")

    def test_several_cookie_headers_are_joined_with_semicolons(self):
        store, sid, cookie = seeded({"user": "ada"})
        seen = {}
        mw = middleware(simple_app(lambda s: seen.update(user=s["session"].get("user"))), store)
        call_asgi(mw, make_scope(headers=[(b"cookie", b"a=1"), (b"Cookie", cookie.encode()),
                                          (b"cookie", b"b=2")]))
        self.assertEqual(seen["user"], "ada")

    def test_a_cookie_split_across_two_headers_is_not_glued_into_ours(self):
        # "connect.sid=s%3A" in one header and the rest in the next must not make a valid cookie.
        store, sid, cookie = seeded({"user": "ada"})
        value = cookie.split("=", 1)[1]
        seen = {}
        mw = middleware(simple_app(lambda s: seen.update(user=s["session"].get("user"))), store)
        call_asgi(mw, make_scope(headers=[(b"cookie", f"{NAME}={value[:10]}".encode()),
                                          (b"cookie", value[10:].encode())]))
        self.assertIsNone(seen["user"])

    def test_a_tampered_cookie_is_ignored_and_never_reaches_the_store(self):
        store, sid, cookie = seeded({"user": "ada"})
        seen = {}
        mw = middleware(simple_app(lambda s: seen.update(user=s["session"].get("user"))), store)
        call_asgi(mw, make_scope(cookie=cookie[:-3] + "AAA"))
        self.assertIsNone(seen["user"])
        self.assertEqual(store.calls, [])


# ================================================================ the response head

class TestResponseHead(unittest.TestCase):

    def login_app(self, headers, status=200):
        async def app(scope, receive, send):
            scope["session"]["user"] = "ada"
            start = {"type": "http.response.start", "status": status}
            if headers is not None:
                start["headers"] = headers
            await send(start)
            await send({"type": "http.response.body", "body": b"ok"})
        return app

    def test_set_cookie_is_its_own_lowercase_header_never_comma_joined(self):
        app_cookie = (b"Set-Cookie", b"theme=dark; Path=/")
        resp = call_asgi(middleware(self.login_app([app_cookie])), make_scope())
        set_cookies = [(k, v) for k, v in resp.raw_headers if k.lower() == b"set-cookie"]
        self.assertEqual(set_cookies[0], app_cookie)
        self.assertEqual(len(set_cookies), 2)
        name, value = set_cookies[1]
        self.assertEqual(name, b"set-cookie")
        self.assertTrue(value.startswith(NAME.encode() + b"=s%3A"), value)
        self.assertNotIn(b"theme", value)
        self.assertIsNotNone(resp.cookie())

    def test_the_apps_headers_may_be_a_list_a_tuple_or_missing(self):
        for label, headers in (("list", [(b"content-type", b"text/plain")]),
                               ("tuple", ((b"content-type", b"text/plain"),)),
                               ("list of lists", [[b"content-type", b"text/plain"]]),
                               ("missing", None), ("empty", [])):
            with self.subTest(headers=label):
                resp = call_asgi(middleware(self.login_app(headers)), make_scope())
                self.assertIsNotNone(resp.cookie())
                self.assertEqual(resp.vary, ["cookie"])
                if headers:
                    self.assertEqual(resp.values("content-type"), ["text/plain"])

    def test_the_apps_start_message_is_not_changed(self):
        headers = [(b"content-type", b"text/plain")]
        app = self.login_app(headers)
        sent = []

        async def keep(scope, receive, send):
            async def spy(message):
                sent.append(message)
                await send(message)
            await app(scope, receive, spy)
        call_asgi(middleware(keep), make_scope())
        self.assertEqual(sent[0]["headers"], [(b"content-type", b"text/plain")])

    def test_vary_is_merged_with_the_apps_vary(self):
        cases = {
            "list": ([(b"Vary", b"Accept-Encoding")], [b"Accept-Encoding, Cookie"]),
            "tuple": (((b"vary", b"Accept"),), [b"Accept, Cookie"]),
            "already cookie": ([(b"vary", b"accept, COOKIE")], [b"accept, COOKIE"]),
            "star": ([(b"vary", b"*")], [b"*"]),
            "empty": ([(b"vary", b"")], [b"Cookie"]),
            "missing": (None, [b"Cookie"]),
        }
        for label, (headers, expected) in cases.items():
            with self.subTest(vary=label):
                resp = call_asgi(middleware(self.login_app(headers)), make_scope())
                self.assertEqual([v for k, v in resp.raw_headers if k.lower() == b"vary"], expected)

    def test_no_vary_and_no_cookie_for_a_new_visitor_whose_session_is_not_touched(self):
        store = RecordingStore()
        resp = call_asgi(middleware(simple_app(), store), make_scope())
        self.assertEqual(resp.values("vary"), [])
        self.assertEqual(resp.values("set-cookie"), [])
        self.assertEqual(store.calls, [])

    def test_vary_cookie_when_a_returning_session_is_only_read(self):
        store, sid, cookie = seeded({"views": 1})
        resp = call_asgi(middleware(simple_app(lambda s: s["session"].get("views")), store),
                         make_scope(cookie=cookie))
        self.assertEqual(resp.vary, ["cookie"])
        self.assertIsNone(resp.cookie())

    def test_the_cookie_is_decided_when_the_head_goes_out_with_the_first_body_message(self):
        # Changes after http.response.start but before the first body still count, as
        # express decides at writeHead, which the first write triggers.
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            scope["session"]["user"] = "ada"
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await send({"type": "http.response.body", "body": b"b"})
        store = RecordingStore()
        resp = call_asgi(middleware(app, store), make_scope())
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(data_of(store, resp.cookie().sid), {"user": "ada"})

    def test_early_hints_pass_before_the_held_head(self):
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
            scope["session"]["user"] = "ada"
            await send({"type": "http.response.body", "body": b"ok"})
        resp = call_asgi(middleware(app), make_scope())
        kinds = [m["type"] for m in resp.messages]
        self.assertEqual(kinds, ["http.response.early_hint", "http.response.start", "http.response.body"])
        self.assertIsNotNone(resp.cookie())


    def test_the_head_goes_out_with_the_first_body_message_and_an_empty_one_sends_it_at_once(self):
        # As Node sends its head with the first write: a stream that must open at once (server-
        # sent events) sends an empty chunk first, and its head is not held until the first event.
        async def run():
            passed_on, event = [], asyncio.Event()

            async def app(scope, receive, send):
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await asyncio.sleep(0.01)
                self.assertEqual(passed_on, [])          # held: the cookie is not decided yet
                await send({"type": "http.response.body", "body": b"", "more_body": True})
                self.assertEqual(passed_on, ["http.response.start", "http.response.body"])
                await event.wait()
                await send({"type": "http.response.body", "body": b"data: 1\n\n"})

            async def send(message):
                passed_on.append(message["type"])
            request = asyncio.ensure_future(middleware(app)(make_scope(), _never_receive, send))
            await asyncio.sleep(0.05)
            event.set()
            await request
            self.assertEqual(len(passed_on), 3)
        asyncio.run(run())


# ================================================================ the end of the response

class TestEndOfResponse(unittest.TestCase):

    def test_the_store_write_completes_before_the_final_body_message_is_passed_on(self):
        events = []
        store, sid, cookie = seeded({"n": 1}, store=RecordingStore(events=events))

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            scope["session"]["n"] = 2
            await send({"type": "http.response.body", "body": b"b", "more_body": False})
        call_asgi(middleware(app, store), make_scope(cookie=cookie), events=events)
        self.assertEqual(events, [("start",), ("chunk", b"a", True), ("set-done", sid), ("chunk", b"b", False)])
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_a_later_lifetime_stored_meanwhile_goes_out_in_the_cookie(self):
        # "Remember me" (30 days) saved by another request while this one, loaded with the
        # one-hour cookie, changed its cart: the merge keeps the later times, and so does
        # the cookie sent, which the browser keeps over the other response's.
        store, sid, cookie = seeded({"user": "ada"})
        remembered = make_record({"user": "ada", "remember": True}, max_age=30 * 86400)

        async def app(scope, receive, send, store=store):
            scope["session"]["cart"] = ["pen"]
            store.set(sid, remembered)  # the other request's save, meanwhile
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        resp = call_asgi(middleware(app, store, cookie={"max_age": 3600}), make_scope(cookie=cookie))
        record = store.get(sid)
        self.assertEqual(record["cookie"], remembered["cookie"])
        self.assertEqual(data_of(store, sid), {"user": "ada", "remember": True, "cart": ["pen"]})
        self.assertAlmostEqual(resp.cookie().expires, session.expires_at(record), delta=1)

    def test_changes_made_while_the_response_streams_are_saved(self):
        store, sid, cookie = seeded({"n": 1})

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(3):
                scope["session"]["n"] += 1
                scope["session"].setdefault("chunks", []).append(i)
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        call_asgi(middleware(app, store), make_scope(cookie=cookie))
        self.assertEqual(data_of(store, sid), {"n": 4, "chunks": [0, 1, 2]})

    def test_regenerate_after_the_head_went_out_raises_and_keeps_the_session(self):
        # The new ID's cookie could only have gone with the head: a login there would log out.
        store, sid, cookie = seeded({"user": "eve"})

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            scope["session"].regenerate()
        with self.assertRaisesRegex(session.SessionError, "head is out") as ctx:
            call_asgi(middleware(app, store), make_scope(cookie=cookie))
        self.assertIn("call regenerate() before", str(ctx.exception))  # says what to do
        self.assertEqual(data_of(store, sid), {"user": "eve"})

    def test_pathsend_is_the_last_message_and_waits_for_the_store(self):
        events = []
        store, sid, cookie = seeded({"n": 1}, store=RecordingStore(events=events))

        async def app(scope, receive, send):
            scope["session"]["n"] = 2
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.pathsend", "path": "/etc/hostname"})
        resp = call_asgi(middleware(app, store), make_scope(cookie=cookie,
                                                            extra={"extensions": {"http.response.pathsend": {}}}),
                         events=events)
        # The head is held until the body goes out, so a response complete at once gets both
        # after the store write (a session found gone meanwhile is sent no cookie).
        self.assertEqual(events, [("set-done", sid), ("start",), ("pathsend", False)])
        self.assertEqual(resp.vary, ["cookie"])
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_zerocopysend_without_more_body_is_the_last_message(self):
        events = []
        store, sid, cookie = seeded({"n": 1}, store=RecordingStore(events=events))

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.zerocopysend", "file": 0, "more_body": True})
            scope["session"]["n"] = 2
            await send({"type": "http.response.zerocopysend", "file": 0})
        call_asgi(middleware(app, store), make_scope(cookie=cookie), events=events)
        self.assertEqual(events, [("start",), ("zerocopysend", True), ("set-done", sid), ("zerocopysend", False)])

    def test_an_app_raising_before_the_head_saves_nothing_and_the_error_propagates(self):
        store, sid, cookie = seeded({"n": 1})

        async def app(scope, receive, send):
            scope["session"]["n"] = 2
            raise RuntimeError("boom")
        with self.assertRaisesRegex(RuntimeError, "boom"):
            call_asgi(middleware(app, store), make_scope(cookie=cookie))
        self.assertEqual(store.count("set") + store.count("touch"), 0)
        self.assertEqual(data_of(store, sid), {"n": 1})

    def test_an_app_raising_after_the_head_saves_nothing_and_the_error_propagates(self):
        store, sid, cookie = seeded({"n": 1})
        sent = []

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            scope["session"]["n"] = 2
            raise RuntimeError("boom")

        async def server_send(message):
            sent.append(message["type"])

        async def run():
            await middleware(app, store)(make_scope(cookie=cookie), _never_receive, server_send)
        with self.assertRaisesRegex(RuntimeError, "boom"):
            asyncio.run(run())
        self.assertEqual(sent, ["http.response.start", "http.response.body"])
        self.assertEqual(store.count("set") + store.count("touch"), 0)
        self.assertEqual(data_of(store, sid), {"n": 1})

    def test_a_record_destroyed_before_the_app_raised_is_deleted_as_under_wsgi(self):
        # Under WSGI destroy() deletes at once; under ASGI the deletion waits for the end of
        # the response, and an error does not undo it.
        store, sid, cookie = seeded({"user": "ada"})

        async def app(scope, receive, send):
            scope["session"].destroy()
            raise RuntimeError("boom")
        with self.assertRaises(RuntimeError):
            call_asgi(middleware(app, store), make_scope(cookie=cookie))
        self.assertIsNone(store.get(sid))

    def test_a_client_that_goes_away_mid_stream_still_gets_the_store_action(self):
        store, sid, cookie = seeded({"n": 1})
        sent = []

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            scope["session"]["n"] = 2
            message = await receive()          # the client is gone: the app stops streaming
            assert message["type"] == "http.disconnect", message

        async def receive():
            return {"type": "http.disconnect"}

        async def server_send(message):
            sent.append(message["type"])

        asyncio.run(middleware(app, store)(make_scope(cookie=cookie), receive, server_send))
        self.assertEqual(sent, ["http.response.start", "http.response.body"])
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_a_head_held_for_a_client_that_left_is_not_sent_after_the_app_returns(self):
        # A long poll sends its head, waits for the client to leave, and returns.  The head was
        # held for the body; an ASGI 2.4 server's send raises OSError once the client is gone,
        # so sending it now would end in an error the app never raised.
        store, sid, cookie = seeded({"n": 1})
        incoming = [{"type": "http.request", "body": b"", "more_body": False},
                    {"type": "http.disconnect"}]
        sent, gone = [], []

        async def app(scope, receive, send):
            scope["session"]["n"] = 2
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while (await receive())["type"] != "http.disconnect":
                pass

        async def receive():
            message = incoming.pop(0)
            gone.append(message["type"] == "http.disconnect")
            return message

        async def server_send(message):
            sent.append(message["type"])  # attempted
            if any(gone):
                raise ConnectionResetError("the client is gone")
        asyncio.run(middleware(app, store)(make_scope(cookie=cookie), receive, server_send))
        self.assertEqual(sent, [])
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_a_second_response_start_raises_as_a_server_would(self):
        # Held, the second would silently replace the first; a server refuses it (uvicorn:
        # "Unexpected ASGI message"), and so does the WSGI adapter a second start_response.
        store, sid, cookie = seeded({"n": 1})

        async def app(scope, receive, send):
            scope["session"]["n"] = 2
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"x"})
        with self.assertRaisesRegex(RuntimeError, "sent twice"):
            call_asgi(middleware(app, store), make_scope(cookie=cookie))
        self.assertEqual(data_of(store, sid), {"n": 1})

    def test_an_app_raising_after_it_was_told_the_client_left_still_gets_the_store_action(self):
        # Starlette's request.body() raises ClientDisconnect once it receives http.disconnect.
        store, sid, cookie = seeded({"n": 1})

        async def app(scope, receive, send):
            scope["session"]["n"] = 2
            if (await receive())["type"] == "http.disconnect":
                raise ConnectionResetError("the client went away")

        async def receive():
            return {"type": "http.disconnect"}
        with self.assertRaises(ConnectionResetError):
            asyncio.run(middleware(app, store)(make_scope(cookie=cookie), receive, _ignore))
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_an_app_raising_because_the_servers_send_failed_still_gets_the_store_action(self):
        # An ASGI 2.4 server's send raises OSError once the client is gone; Starlette turns it
        # into ClientDisconnect, which the app raises.
        store, sid, cookie = seeded({"n": 1})

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            scope["session"]["n"] = 2
            try:
                await send({"type": "http.response.body", "body": b"a", "more_body": True})
            except OSError:
                raise RuntimeError("ClientDisconnect") from None

        async def server_send(message):
            raise OSError("connection closed")
        with self.assertRaisesRegex(RuntimeError, "ClientDisconnect"):
            asyncio.run(middleware(app, store)(make_scope(cookie=cookie), _never_receive, server_send))
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_an_app_that_returns_before_any_body_still_gets_its_head_and_store_action(self):
        # If the client left without the app being told, the server's send of that head raises
        # OSError: the app finished normally, and the head was ours to send, so that is no error.
        for gone in (False, True):
            with self.subTest(client_gone=gone):
                store, sid, cookie = seeded({"n": 1})
                sent = []

                async def app(scope, receive, send):
                    scope["session"]["n"] = 2
                    await send({"type": "http.response.start", "status": 204, "headers": []})

                async def server_send(message, gone=gone):
                    sent.append(message)
                    if gone:
                        raise BrokenPipeError("the client is gone")
                asyncio.run(middleware(app, store)(make_scope(cookie=cookie), _never_receive, server_send))
                self.assertEqual([m["type"] for m in sent], ["http.response.start"])
                self.assertEqual(data_of(store, sid), {"n": 2})

    def test_a_finished_or_failed_request_leaves_nothing_for_the_cycle_collector(self):
        # The scope holds the session, which holds the scope: a request must break that cycle
        # however it ends, or the collector has to free every request.  With MemoryStore the
        # middleware never suspends, so each request is driven here without an event loop.
        class FailingStore(session.MemoryStore):
            def merge(self, sid, change):
                raise RuntimeError("the store is down")

        def app_for(path):
            async def app(scope, receive, send):
                scope["session"]["views"] = scope["session"].get("views", 0) + 1
                if path == "/raise":
                    raise RuntimeError("the app failed")
                await send({"type": "http.response.start", "status": 200, "headers": []})
                if path == "/raise-later":
                    raise RuntimeError("the app failed")
                await send({"type": "http.response.body", "body": b"ok"})
            return app

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            pass

        def serve(store, path):
            coroutine = middleware(app_for(path), store=store)(make_scope(path), receive, send)
            try:
                coroutine.send(None)
            except StopIteration:
                return "200"
            except RuntimeError:  # as a server: logged and answered with a 500, not kept
                return "500"
            raise AssertionError("the middleware suspended")
        cases = [(session.MemoryStore, "/ok", "200"), (session.MemoryStore, "/raise", "500"),
                 (session.MemoryStore, "/raise-later", "500"), (FailingStore, "/ok", "500")]
        gc.collect()
        gc.disable()
        try:
            for store_class, path, status in cases:
                with self.subTest(path=path, store=store_class.__name__):
                    self.assertEqual(serve(store_class(), path), status)
                    self.assertEqual(gc.collect(), 0)
        finally:
            gc.enable()

    def test_a_cancelled_final_send_neither_repeats_nor_undoes_the_store_write(self):
        # Starlette's StreamingResponse (ASGI spec < 2.4) cancels the stream when the client
        # disconnects: a cancel may land while the final write is in flight.  A store whose
        # coroutines do I/O shields its writes; the middleware must not write again after.
        store, sid, cookie = seeded({"n": 1}, store=SlowAsyncStore())
        sent = []

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            scope["session"]["n"] = 2
            task = asyncio.ensure_future(send({"type": "http.response.body", "body": b"done"}))
            await asyncio.sleep(SlowAsyncStore.delay / 5)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            scope["session"]["n"] = 3   # too late: the store action began with the final message

        async def server_send(message):
            sent.append(message["type"])

        async def run():
            await middleware(app, store)(make_scope(cookie=cookie), _never_receive, server_send)
            await asyncio.sleep(SlowAsyncStore.delay * 3)
        asyncio.run(run())
        self.assertEqual(data_of(store, sid), {"n": 2})
        self.assertEqual(store.writes, 1)
        self.assertEqual(sent, [])   # the client is gone: the head and body were never passed on

    def test_a_server_that_cancels_the_app_on_disconnect_still_gets_the_store_action(self):
        # Some servers cancel the application task when the client goes away mid-response.
        store, sid, cookie = seeded({"n": 1})

        async def run():
            streaming = asyncio.Event()

            async def app(scope, receive, send):
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"a", "more_body": True})
                scope["session"]["n"] = 2
                streaming.set()
                await asyncio.sleep(3600)
            task = asyncio.ensure_future(middleware(app, store)(make_scope(cookie=cookie), _never_receive, _ignore))
            await streaming.wait()
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
        asyncio.run(run())
        self.assertEqual(data_of(store, sid), {"n": 2})


    def test_a_cancel_repeated_at_every_await_still_deletes_then_saves(self):
        # An anyio cancel scope (Starlette's streaming under ASGI spec < 2.4, timeout wrappers)
        # cancels the request again at every await, once its first chunk (and cookie) is out.
        # A change must be saved all the same; so must a login, after regenerate()'s deletion.
        tmp = tempfile.mkdtemp(prefix="asgi-cancel-")
        stores = [("sync only", SyncOnlyStore), ("coroutines", SlowAsyncStore),
                  ("async first", AsyncFirstStore),
                  ("SQLiteStore", lambda: SQLiteStore(os.path.join(tmp, "s.db")))]
        for (label, make), login in itertools.product(stores, (False, True)):
            with self.subTest(store=label, login=login):
                store, sid, cookie = seeded({"n": 1}, store=make())
                if isinstance(store, SQLiteStore):
                    self.addCleanup(store.close)
                saved = []

                async def run():
                    streaming = asyncio.Event()

                    async def app(scope, receive, send):
                        if login:
                            scope["session"].regenerate()
                            scope["session"]["user"] = "ada"
                        else:
                            scope["session"]["n"] = 2
                        saved.append(scope["session"].id)
                        await send({"type": "http.response.start", "status": 200, "headers": []})
                        await send({"type": "http.response.body", "body": b"a", "more_body": True})
                        streaming.set()
                        await asyncio.sleep(3600)
                    mw = middleware(app, store)
                    task = asyncio.ensure_future(mw(make_scope(cookie=cookie), _never_receive, _ignore))
                    await streaming.wait()
                    await _cancel_at_every_await(task)
                    await asyncio.sleep(SlowAsyncStore.delay * 4)   # the store work runs on
                asyncio.run(run())
                records = store.all()   # (the async-first store has no sync get)
                self.assertEqual({k: v for k, v in records[saved[0]].items() if k != "cookie"},
                                 {"user": "ada"} if login else {"n": 2})
                if login:
                    self.assertNotIn(sid, records)

    def test_the_stores_aclose_waits_for_the_end_of_a_cancelled_request(self):
        # A store that keeps its writes for aclose() (RedisStore, PostgresStore) keeps the
        # middleware's end-of-response work too: the save after regenerate()'s deletion, which
        # a cancelled request leaves running, is waited for at the app's shutdown.
        class KeptWrites(SlowAsyncStore):
            def __init__(self):
                super().__init__()
                self._writes = session._Writes()

            async def adestroy(self, sid):
                await self._writes.run(self._slowly(self.destroy, sid))

            async def amerge(self, sid, change):
                return await self._writes.run(self._slowly(self.merge, sid, change))

            async def aclose(self):
                await self._writes.wait()
        store, sid, cookie = seeded({"n": 1}, store=KeptWrites())
        saved = []

        async def run():
            async def app(scope, receive, send):
                scope["session"].regenerate()
                scope["session"]["user"] = "ada"
                saved.append(scope["session"].id)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"done"})
            task = asyncio.ensure_future(middleware(app, store)(make_scope(cookie=cookie),
                                                                _never_receive, _ignore))
            while store.get(sid) is not None:      # the deletion has started, and ended
                await asyncio.sleep(0.001)
            await _cancel_at_every_await(task)
            await store.aclose()                     # the app's lifespan shutdown
            self.assertEqual(data_of(store, saved[0]), {"user": "ada"})
        asyncio.run(run())

    def test_a_save_that_cannot_encode_still_leaves_deleted_what_was_deleted(self):
        # Logged out or in, then a value JSON cannot encode: nothing is saved and the request
        # fails, but the old record is gone, as under WSGI, where it went at once.
        for (what, make) in itertools.product(("destroy", "regenerate"),
                                              (session.MemoryStore, SyncOnlyStore)):
            with self.subTest(what=what, store=make.__name__):
                store, sid, cookie = seeded({"user": "ada"}, store=make())

                async def action(scope, what=what):
                    sess = scope["session"]
                    getattr(sess, what)()
                    sess["seen"] = object()
                with self.assertRaises(TypeError):
                    call_asgi(middleware(simple_app(action), store), make_scope(cookie=cookie))
                self.assertIsNone(store.get(sid))

    def test_a_save_queued_for_a_busy_thread_pool_is_not_dropped_by_a_cancel(self):
        # A call waiting in the pool's queue would be dropped if its future were cancelled.
        store, sid, cookie = seeded({"n": 1}, store=SyncOnlyStore())
        release, queued = threading.Event(), []

        class Pool(concurrent.futures.ThreadPoolExecutor):
            def submit(self, fn, *args, **kwargs):
                queued.append(fn)
                return super().submit(fn, *args, **kwargs)

        async def run():
            loop = asyncio.get_running_loop()
            pool = Pool(1)
            loop.set_default_executor(pool)

            def action(scope):
                scope["session"]["n"] = 2
                loop.run_in_executor(None, release.wait)   # the pool's one thread is now busy
            request = asyncio.ensure_future(acall_asgi(middleware(simple_app(action), store),
                                                       make_scope(cookie=cookie)))
            while len(queued) < 3:          # the read, the busy thread, then the save
                await asyncio.sleep(0.001)
            request.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await request
            release.set()
            pool.shutdown(wait=True)
        asyncio.run(run())
        self.assertEqual(data_of(store, sid), {"n": 2})


async def _cancel_at_every_await(task):
    """Cancel ``task`` again at each turn of the loop until it ends, as an anyio cancel scope
    does (level-triggered cancellation); raise nothing."""
    while not task.done():
        task.cancel()
        await asyncio.sleep(0)
    if not task.cancelled():
        task.exception()


async def _never_receive():
    await asyncio.sleep(3600)


async def _ignore(message):
    pass


# ================================================================ after the response

class TestAfterTheResponse(unittest.TestCase):
    """Background tasks run after the last body message (Starlette's BackgroundTask does): the
    response, and the store action it waited for, are done by then."""

    def run_with_background(self, store, cookie, task, change=True):
        """Send a whole response (``session["n"] = 2`` first, with ``change``), then run
        ``task(session)`` as a background task would; returns what the task raised, or None."""
        raised = []

        async def app(scope, receive, send):
            sess = scope["session"]
            if change:
                sess["n"] = 2
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            try:
                result = task(sess)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:
                raised.append(exc)
        resp = call_asgi(middleware(app, store), make_scope(cookie=cookie))
        return resp, raised[0] if raised else None

    def test_changes_after_the_last_body_message_are_not_saved(self):
        store, sid, cookie = seeded({"n": 1})
        resp, error = self.run_with_background(store, cookie, lambda s: s.__setitem__("late", True))
        self.assertIsNone(error)
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_await_asave_after_the_last_body_message_saves_them(self):
        store, sid, cookie = seeded({"n": 1})

        async def task(sess):
            sess["late"] = True
            sess["n"] += 1
            await sess.asave()
        resp, error = self.run_with_background(store, cookie, task)
        self.assertIsNone(error)
        self.assertEqual(data_of(store, sid), {"n": 3, "late": True})

    def test_asave_after_the_response_keeps_another_requests_write_to_other_keys(self):
        store, sid, cookie = seeded({"n": 1})

        async def task(sess):
            store.inner_write = session.MemoryStore.get(store, sid)
            record = store.get(sid)
            record["other"] = "kept"
            session.MemoryStore.set(store, sid, record)   # another request, meanwhile
            sess["late"] = True
            await sess.asave()
        self.run_with_background(store, cookie, task)
        self.assertEqual(data_of(store, sid), {"n": 2, "other": "kept", "late": True})

    def test_areload_after_the_response_reads_the_store(self):
        store, sid, cookie = seeded({"n": 1})
        seen = {}

        async def task(sess):
            record = store.get(sid)
            record["n"] = 10
            store.set(sid, record)
            await sess.areload()
            seen["n"] = sess["n"]
        resp, error = self.run_with_background(store, cookie, task)
        self.assertIsNone(error)
        self.assertEqual(seen["n"], 10)

    def test_regenerate_and_destroy_after_the_response_raise_session_error(self):
        for label, seed, change in (("returning", True, True), ("returning, unchanged", True, False),
                                    ("new", False, True), ("new, untouched", False, False)):
            for name in ("regenerate", "destroy"):
                with self.subTest(session=label, call=name):
                    store, sid, cookie = seeded({"n": 1})
                    resp, error = self.run_with_background(store, cookie if seed else None,
                                                           lambda s, name=name: getattr(s, name)(), change)
                    self.assertIsInstance(error, session.SessionError)
                    self.assertIn("a background task cannot", str(error))
                    if seed:
                        self.assertEqual(data_of(store, sid), {"n": 2 if change else 1})


# ================================================================ the session API under ASGI

class TestSessionUnderASGI(unittest.TestCase):

    def test_save_and_reload_raise_session_error_naming_asave_and_areload(self):
        errors = {}

        def action(scope):
            for name in ("save", "reload"):
                try:
                    getattr(scope["session"], name)()
                except session.SessionError as exc:
                    errors[name] = str(exc)
        store, sid, cookie = seeded({"n": 1})
        call_asgi(middleware(simple_app(action), store), make_scope(cookie=cookie))
        self.assertIn("await session.asave()", errors["save"])
        self.assertIn("await session.areload()", errors["reload"])

    def test_asave_writes_now_and_not_again_when_unchanged(self):
        store, sid, cookie = seeded({"n": 1})
        counts = {}

        async def action(scope):
            scope["session"]["n"] = 2
            await scope["session"].asave()
            counts["after asave"] = store.count("set")
            counts["stored"] = data_of(store, sid)
        call_asgi(middleware(simple_app(action), store), make_scope(cookie=cookie))
        self.assertEqual(counts, {"after asave": 1, "stored": {"n": 2}})
        self.assertEqual(store.count("set"), 1)

    def test_a_login_while_an_asave_is_in_flight_is_saved_under_the_new_id(self):
        # The old ID's write, ending after regenerate(), says nothing of the new session (as
        # in express, whose saved hash is the old session's): it is saved and sent all the same.
        store, sid, cookie = seeded({"n": 0}, store=SlowAsyncStore())

        async def action(scope):
            sess = scope["session"]
            sess["n"] = 1
            write = asyncio.ensure_future(sess.asave())
            await asyncio.sleep(SlowAsyncStore.delay / 5)  # the merge is in flight
            sess.regenerate()
            sess["user"] = "ada"
            await write
        resp = call_asgi(middleware(simple_app(action), store), make_scope(cookie=cookie))
        self.assertIsNotNone(resp.cookie())
        self.assertNotEqual(resp.cookie().sid, sid)
        self.assertEqual(data_of(store, resp.cookie().sid), {"user": "ada"})
        self.assertIsNone(store.get(sid))

    def test_areload_sees_another_requests_write(self):
        store, sid, cookie = seeded({"n": 1})
        seen = {}

        async def action(scope):
            record = store.get(sid)
            record["n"] = 7
            store.set(sid, record)
            await scope["session"].areload()
            seen["n"] = scope["session"]["n"]
        call_asgi(middleware(simple_app(action), store), make_scope(cookie=cookie))
        self.assertEqual(seen["n"], 7)

    def test_areload_raises_session_error_when_the_record_is_gone(self):
        store, sid, cookie = seeded({"n": 1})
        errors = []

        async def action(scope):
            store.destroy(sid)
            try:
                await scope["session"].areload()
            except session.SessionError as exc:
                errors.append(exc)
        call_asgi(middleware(simple_app(action), store), make_scope(cookie=cookie))
        self.assertEqual(len(errors), 1)

    def test_a_new_session_saved_then_reloaded_still_gets_its_cookie(self):
        store = session.MemoryStore()

        async def action(scope):
            sess = scope["session"]
            sess["a"] = 1
            await sess.asave()
            await sess.areload()
        resp = call_asgi(middleware(simple_app(action), store), make_scope())
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(data_of(store, resp.cookie().sid), {"a": 1})

    def test_areload_after_destroy_raises_session_error_as_under_wsgi(self):
        # The record's deletion waits for the response's end; it is gone all the same.
        store, sid, cookie = seeded({"n": 1})
        errors = []

        async def action(scope):
            sess = scope["session"]
            sess.destroy()
            try:
                await sess.areload()
            except session.SessionError as exc:
                errors.append(str(exc))
        call_asgi(middleware(simple_app(action), store), make_scope(cookie=cookie))
        self.assertEqual(len(errors), 1)
        self.assertIn("no longer in the store", errors[0])
        self.assertIsNone(store.get(sid))

    def test_regenerate_deletes_the_old_record_before_the_response_ends(self):
        events = []
        store, sid, cookie = seeded({"anon": 1}, store=RecordingStore(events=events))
        seen = {}

        def login(scope):
            scope["session"].regenerate()
            seen["still stored during the request"] = store.get(sid) is not None
            scope["session"]["user"] = "ada"
        resp = call_asgi(middleware(simple_app(login), store), make_scope(cookie=cookie), events=events)
        self.assertTrue(seen["still stored during the request"])
        self.assertIsNone(store.get(sid))
        self.assertLess(events.index(("destroy-done", sid)), events.index(("chunk", b"ok", False)))
        self.assertNotEqual(resp.cookie().sid, sid)
        self.assertEqual(data_of(store, resp.cookie().sid), {"user": "ada"})

    def test_concurrent_requests_on_one_session_keep_each_others_changes(self):
        # Two requests of one visitor interleaved on the event loop: each saves what it changed
        # into the record as stored then (the core's merge), whichever ends first.
        for store in (session.MemoryStore(), SyncOnlyStore()):
            with self.subTest(store=type(store).__name__):
                store, sid, cookie = seeded({"n": 1}, store=store)

                async def run():
                    loaded = []

                    async def action(scope):
                        loaded.append(1)
                        while len(loaded) < 2:              # both have read the record
                            await asyncio.sleep(0.001)
                        key = scope["path"].strip("/")
                        scope["session"][key] = True
                        scope["session"]["n"] += 1
                        if key == "b":
                            await asyncio.sleep(0.01)       # b ends after a
                    mw = middleware(simple_app(action), store)
                    await asyncio.gather(acall_asgi(mw, make_scope("/a", cookie=cookie)),
                                         acall_asgi(mw, make_scope("/b", cookie=cookie)))
                asyncio.run(run())
                self.assertEqual(data_of(store, sid), {"n": 2, "a": True, "b": True})

    def test_a_session_deleted_while_the_request_ran_is_not_written_back_nor_its_cookie_resent(self):
        store, sid, cookie = seeded({"n": 1})

        def action(scope):
            scope["session"]["n"] = 2
            store.destroy(sid)   # another request logged this session out meanwhile
        resp = call_asgi(middleware(simple_app(action), store, rolling=True, cookie={"max_age": HOUR}),
                         make_scope(cookie=cookie))
        self.assertIsNone(store.get(sid))
        self.assertIsNone(resp.cookie())

    def test_a_store_without_coroutines_is_called_off_the_event_loop(self):
        store = SyncOnlyStore()
        loop_threads = []

        def action(scope):
            loop_threads.append(threading.get_ident())
            scope["session"]["n"] = scope["session"].get("n", 0) + 1
        h = ASGIHarness(action, store=store)
        h.request()
        h.request()
        threads = list(store.threads)
        self.assertTrue(threads)
        self.assertNotIn(loop_threads[0], threads)
        self.assertEqual(data_of(store, SetCookie(f"{NAME}={h.client.jar[NAME]}").sid), {"n": 2})

    def test_a_store_in_a_thread_sees_the_requests_context_variables(self):
        # As under WSGI, where its methods run in the request's own thread (tenant routing,
        # tracing): the thread runs them in a copy of the request's context.
        import contextvars
        tenant = contextvars.ContextVar("tenant", default=None)
        seen = []

        class TenantStore(SyncOnlyStore):
            def get(self, sid):
                seen.append(("get", tenant.get()))
                return super().get(sid)

            def set(self, sid, record):
                seen.append(("set", tenant.get()))
                super().set(sid, record)
        store, sid, cookie = seeded({"n": 1}, store=TenantStore())
        del seen[:]

        async def app(scope, receive, send):
            scope["session"]["n"] = 2
            await simple_app()(scope, receive, send)

        async def run():
            tenant.set("acme")
            await acall_asgi(middleware(app, store), make_scope(cookie=cookie))
        asyncio.run(run())
        self.assertEqual(set(seen), {("get", "acme"), ("set", "acme")})
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_an_async_first_store_is_read_and_written_through_its_own_coroutines(self):
        store = AsyncFirstStore()

        def action(scope):
            sess = scope["session"]
            if scope["path"] == "/logout":
                sess.destroy()
            elif scope["path"] == "/incr":
                sess["n"] = sess.get("n", 0) + 1
        h = ASGIHarness(action, store=store)
        h.request(path="/incr")
        h.request(path="/incr")
        h.request(path="/")
        self.assertEqual([{k: v for k, v in record.items() if k != "cookie"}
                          for record in store.all().values()], [{"n": 2}])
        h.request(path="/logout")
        self.assertEqual(store.records, {})
        # A save reads first (a new session: is the ID free?), as Store's default merge does.
        self.assertEqual(store.calls, ["aget", "aset", "aget", "aget", "aset", "aget", "atouch",
                                       "aget", "adestroy"])

    def test_a_subclass_overriding_get_and_set_saves_through_them_not_its_parents_coroutines(self):
        # Its parent has no merge but its own aget and aset; Store's default amerge took the
        # parent's steps, so a subclass that keeps records under its own keys lost every save.
        class KVStore(session.Store):
            def __init__(self):
                self.records = {}

            def get(self, sid):
                text = self.records.get(sid)
                return None if text is None else session.decode_record(text)

            def set(self, sid, record):
                self.records[sid] = session.encode_record(record)

            async def aget(self, sid):
                return KVStore.get(self, sid)

            async def aset(self, sid, record):
                KVStore.set(self, sid, record)
            destroy = touch = all = clear = lambda self, *args: None

        class TenantStore(KVStore):
            def get(self, sid):
                return super().get("acme:" + sid)

            def set(self, sid, record):
                super().set("acme:" + sid, record)
        store = TenantStore()

        def action(scope):
            scope["session"]["n"] = scope["session"].get("n", 0) + 1
        h = ASGIHarness(action, store=store)
        for _ in range(3):
            h.request()
        self.assertEqual([key.split(":")[0] for key in store.records], ["acme"])
        self.assertEqual(data_of(store, next(iter(store.records))[5:]), {"n": 3})

    def test_an_async_first_store_that_never_blocks_is_still_called_through_its_coroutines(self):
        # blocking = False: called on the event loop, but its plain methods are Store's stubs.
        class NeverBlocks(AnyLoopAsyncFirstStore):
            blocking = False
        store = NeverBlocks()

        def action(scope):
            scope["session"]["n"] = scope["session"].get("n", 0) + 1
        h = ASGIHarness(action, store=store)
        for _ in range(2):
            self.assertEqual(h.request().status, 200)
        self.assertEqual([{k: v for k, v in session.decode_record(text).items() if k != "cookie"}
                          for text in store.records.values()], [{"n": 2}])

    def test_a_store_that_never_blocks_is_called_inline_though_it_has_a_coroutine_of_its_own(self):
        # Its plain methods work: one coroutine (amerge) does not send the rest through threads.
        class NeverBlocks(session.Store):
            blocking = False

            def __init__(self):
                self.records = {}

            def get(self, sid):
                return self.records.get(sid)

            def set(self, sid, record):
                self.records[sid] = session.decode_record(session.encode_record(record))

            def destroy(self, sid):
                self.records.pop(sid, None)

            def touch(self, sid, record):
                pass

            async def amerge(self, sid, change):
                return self.merge(sid, change)
        store, sid, cookie = seeded({"n": 1}, store=NeverBlocks())

        def action(scope):
            scope["session"]["n"] += 1
        mw = middleware(simple_app(action), store)
        _, threads = run_with_counted_threads(lambda: acall_asgi(mw, make_scope(cookie=cookie)))
        self.assertEqual(threads, [])
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_a_path_with_a_lone_surrogate_is_matched_not_an_error(self):
        seen = []
        mw = middleware(simple_app(lambda s: seen.append("session" in s)), cookie={"path": "/app"})
        call_asgi(mw, make_scope("/app/x", extra={"path": "/app/\udcff"}))
        self.assertEqual(seen, [True])

    def test_a_subclass_overriding_aget_is_read_through_it_and_one_overriding_aset_keeps_its_merge(self):
        # A subclass's aget is read through, as its get is under WSGI.  Saves go through the
        # store's own merge (atomic), which an aset added for, say, metrics must not replace.
        calls = []

        class OwnAget(session.MemoryStore):
            async def aget(self, sid):
                calls.append("aget")
                return self.get(sid)

        class OwnAset(session.MemoryStore):
            async def aset(self, sid, record):
                calls.append("aset")
                self.set(sid, record)
        for store, expected in ((OwnAget(), ["aget"]), (OwnAset(), [])):
            with self.subTest(store=type(store).__name__):
                del calls[:]
                h = ASGIHarness(lambda s: s["session"].__setitem__("n", s["session"].get("n", 0) + 1),
                                store=store)
                h.request()
                h.request()
                self.assertEqual(calls, expected)
                sid = SetCookie(f"{NAME}={h.client.jar[NAME]}").sid
                self.assertEqual(data_of(store, sid), {"n": 2})

    def test_memory_store_is_called_on_the_event_loop(self):
        calls = []

        class Spy(session.MemoryStore):
            async def aget_text(self, sid):
                calls.append(threading.get_ident())
                return self.get_text(sid)

            async def amerge(self, sid, change):
                calls.append(threading.get_ident())
                return self.merge(sid, change)
        loop_threads = []
        h = ASGIHarness(lambda s: (loop_threads.append(threading.get_ident()),
                                   s["session"].__setitem__("n", s["session"].get("n", 0) + 1)),
                        store=Spy())
        h.request()
        h.request()
        self.assertEqual(len(calls), 3)   # merge, then read and merge
        self.assertEqual(set(calls), {loop_threads[0]})

    def test_sqlite_store_reads_and_writes_on_the_event_loop(self):
        # Nothing goes to the thread pool while the file's lock is free: the read runs on the
        # loop (it waits for no writer), so does deciding to skip a touch, and so do the writes,
        # but for one that has a prune batch or a checkpoint to run (they scan or sync the file).
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        store = SQLiteStore(os.path.join(tmp.name, "sessions.db"))
        self.addCleanup(store.close)

        def count(scope):
            if scope["path"] == "/incr":
                scope["session"]["n"] = scope["session"].get("n", 0) + 1
            return scope["session"].get("n")
        app = middleware(simple_app(count), store=store, cookie={"max_age": 3600})
        client = ASGIClient(app)

        def request(path):
            cookie = "; ".join(f"{k}={v}" for k, v in client.jar.items()) or None
            resp, calls = run_with_counted_threads(lambda: acall_asgi(app, make_scope(path, cookie=cookie)))
            client.keep(resp)
            return calls
        self.assertEqual(request("/incr"), ["merge"])  # a new session, and the first prune batch
        self.assertEqual(request("/read"), [])         # the touch skipped
        self.assertEqual(request("/incr"), [])
        self.assertEqual(data_of(store, SetCookie(f"{NAME}={client.jar[NAME]}").sid), {"n": 2})

    def test_a_store_error_while_loading_propagates_and_nothing_is_sent(self):
        class Broken(session.MemoryStore):
            async def aget_text(self, sid):
                raise ConnectionError("store down")
        store, sid, cookie = seeded({"n": 1}, store=Broken())
        with self.assertRaisesRegex(ConnectionError, "store down"):
            call_asgi(middleware(simple_app(), store), make_scope(cookie=cookie))

    def test_a_store_error_while_saving_propagates_before_the_final_body(self):
        class Broken(session.MemoryStore):
            async def amerge(self, sid, change):
                raise ConnectionError("store down")
        store, sid, cookie = seeded({"n": 1}, store=Broken())
        sent = []

        async def server_send(message):
            sent.append(message["type"])
        with self.assertRaisesRegex(ConnectionError, "store down"):
            asyncio.run(middleware(simple_app(lambda s: s["session"].__setitem__("n", 2)), store)(
                make_scope(cookie=cookie), _never_receive, server_send))
        self.assertEqual(sent, [])


# ================================================================ scopes

class TestScopes(unittest.TestCase):

    def test_lifespan_and_unknown_scopes_pass_through_untouched(self):
        for kind in ("lifespan", "webtransport"):
            with self.subTest(kind=kind):
                seen = []

                async def app(scope, receive, send):
                    seen.append((dict(scope), await receive()))
                    await send({"type": f"{kind}.startup.complete"})
                store = RecordingStore()
                scope = {"type": kind, "asgi": {"version": "3.0"}}
                sent = []

                async def receive():
                    return {"type": f"{kind}.startup"}

                async def send(message):
                    sent.append(message)
                asyncio.run(middleware(app, store)(scope, receive, send))
                self.assertEqual(seen, [({"type": kind, "asgi": {"version": "3.0"}}, {"type": f"{kind}.startup"})])
                self.assertEqual(sent, [{"type": f"{kind}.startup.complete"}])
                self.assertNotIn("session", scope)
                self.assertEqual(store.calls, [])

    def test_a_scope_that_already_has_a_session_passes_through(self):
        inner_store, outer_store = RecordingStore(), RecordingStore()
        seen = []

        def action(scope):
            seen.append(scope["session"])
            scope["session"]["n"] = 1
        inner = middleware(simple_app(action), inner_store)
        outer = middleware(inner, outer_store)
        resp = call_asgi(outer, make_scope())
        self.assertEqual(len(resp.cookies()), 1)
        self.assertEqual(inner_store.calls, [])
        self.assertEqual(data_of(outer_store, resp.cookie().sid), {"n": 1})

    def test_a_detached_session_the_caller_put_in_the_scope_passes_through(self):
        seen = []
        mw = middleware(simple_app(lambda scope: seen.append(scope["session"]["user"])))
        scope = make_scope()
        scope["session"] = session.Session(user="ada")
        resp = call_asgi(mw, scope)
        self.assertEqual((seen, resp.cookies()), (["ada"], []))

    def test_the_scope_of_a_finished_request_given_again_gets_a_session_of_its_own(self):
        # A wrapper that calls the app again with the same scope (an error page): the first
        # request's session is over, so the second loads the record again and saves its change.
        store, sid, cookie = seeded({"n": 1})

        def count(scope):
            scope["session"]["n"] += 1
        mw = middleware(simple_app(count), store)
        scope = make_scope(cookie=cookie)
        call_asgi(mw, scope)
        call_asgi(mw, scope)
        self.assertEqual(data_of(store, sid), {"n": 3})

    def test_the_session_is_scoped_by_root_path_plus_path(self):
        cases = [
            ("mounted at /app, path under it", "/app", "/x", True),
            ("path already holding root_path", "/app", "/app/x", True),
            ("outside the cookie path", "", "/other", False),
            ("root_path alone", "/app", "", True),
            ("a prefix that is not a path segment", "", "/apple", True),  # as express: a plain prefix
        ]
        for label, root, path, has_session in cases:
            with self.subTest(label):
                seen = []
                mw = middleware(simple_app(lambda s: seen.append("session" in s)), cookie={"path": "/app"},
                                save_uninitialized=True)
                resp = call_asgi(mw, make_scope(path, root_path=root))
                self.assertEqual(seen, [has_session])
                self.assertEqual(resp.cookie() is not None, has_session)

    def test_the_cookie_path_is_matched_against_the_path_as_the_browser_sent_it(self):
        # As under WSGI: scope["path"] is decoded, express compares the percent-encoded path.
        cases = [("/my%20app", "", "/my app/page", True), ("/my app", "", "/my app/page", False),
                 ("/my%20app", "/my app", "/page", True), ("/caf%C3%A9", "", "/café/x", True)]
        for cookie_path, root, path, has_session in cases:
            with self.subTest(cookie_path=cookie_path, root=root):
                seen = []
                mw = middleware(simple_app(lambda s: seen.append("session" in s)),
                                cookie={"path": cookie_path})
                call_asgi(mw, make_scope(path, root_path=root))
                self.assertEqual(seen, [has_session])

    def test_a_path_that_only_begins_with_root_paths_text_is_under_root_path(self):
        # Mounted at /app, "/apple" is /app/apple (Starlette reads it so too), not /apple.
        seen = []
        mw = middleware(simple_app(lambda s: seen.append("session" in s)), cookie={"path": "/app/"},
                        save_uninitialized=True)
        resp = call_asgi(mw, make_scope("/apple", root_path="/app"))
        self.assertEqual(seen, [True])
        self.assertEqual(resp.cookie().attrs["path"], "/app/")

    def test_secure_comes_from_the_scope_scheme(self):
        for https, sent in ((True, True), (False, False)):
            with self.subTest(https=https):
                mw = middleware(simple_app(lambda s: s["session"].__setitem__("n", 1)),
                                cookie={"secure": True})
                resp = call_asgi(mw, make_scope(https=https))
                self.assertEqual(resp.cookie() is not None, sent)

    def test_x_forwarded_proto_counts_only_with_proxy_true(self):
        for proxy in (True, None, False):
            for name in (b"x-forwarded-proto", b"X-Forwarded-Proto"):
                with self.subTest(proxy=proxy, name=name):
                    mw = middleware(simple_app(lambda s: s["session"].__setitem__("n", 1)),
                                    cookie={"secure": "auto", "same_site": "auto"}, proxy=proxy)
                    resp = call_asgi(mw, make_scope(headers=[(name, b"https, http")]))
                    sc = resp.cookie()
                    self.assertEqual("secure" in sc.attrs, proxy is True)
                    self.assertEqual(sc.attrs["samesite"], "None" if proxy is True else "Lax")

    def test_proxy_true_without_x_forwarded_proto_is_the_scheme_alone(self):
        mw = middleware(simple_app(lambda s: s["session"].__setitem__("n", 1)),
                        cookie={"secure": "auto", "same_site": "auto"}, proxy=True)
        for https in (False, True):
            with self.subTest(https=https):
                resp = call_asgi(mw, make_scope(https=https, headers=[(b"x-forwarded-for", b"10.0.0.1")]))
                self.assertEqual("secure" in resp.cookie().attrs, https)

    def test_a_forwarded_http_does_not_make_an_https_scope_insecure(self):
        mw = middleware(simple_app(lambda s: s["session"].__setitem__("n", 1)), cookie={"secure": True},
                        proxy=True)
        resp = call_asgi(mw, make_scope(https=True, headers=[(b"x-forwarded-proto", b"http")]))
        self.assertIsNotNone(resp.cookie())

    def test_the_cookie_callable_and_genid_receive_the_scope(self):
        given = []

        def options(scope):
            given.append(("cookie", scope))
            return {"path": scope["root_path"] or "/", "max_age": HOUR}

        def genid(scope):
            given.append(("genid", scope))
            return "id-for-" + scope["path"].strip("/")
        mw = middleware(simple_app(lambda s: s["session"].__setitem__("n", 1)), cookie=options, genid=genid)
        scope = make_scope("/app/page", root_path="/app")
        resp = call_asgi(mw, scope)
        self.assertEqual([(kind, s is scope) for kind, s in given], [("cookie", True), ("genid", True)])
        self.assertEqual(resp.cookie().attrs["path"], "/app")
        self.assertEqual(resp.cookie().sid, "id-for-app/page")

    def test_custom_scope_key(self):
        seen = []
        mw = middleware(simple_app(lambda s: seen.append(sorted(k for k in s if "sess" in k))),
                        scope_key="express_session")
        call_asgi(mw, make_scope())
        self.assertEqual(seen, [["express_session"]])

    def test_options_are_validated_at_construction_as_under_wsgi(self):
        app = simple_app()
        for kwargs, error in (({}, ValueError), ({"secret": ""}, ValueError),
                              ({"secret": "s", "cookie": {"maxage": 1}}, TypeError),
                              ({"secret": "s", "unset": "drop"}, ValueError),
                              ({"secret": "s", "scope_key": ""}, TypeError),
                              ({"secret": "s", "name": "a;b"}, ValueError)):
            with self.subTest(**{k: repr(v) for k, v in kwargs.items()}):
                with self.assertRaises(error):
                    session.ASGISessionMiddleware(app, **kwargs)
                if "scope_key" not in kwargs:
                    with self.assertRaises(error):
                        session.SessionMiddleware(lambda e, s: [], **kwargs)


# ================================================================ websocket

class TestWebSocket(unittest.TestCase):

    def run_ws(self, app, mw_options=None, store=None, cookie=None, https=False, client_closes=False,
               headers=None, events=None, on_send=None):
        """Run a websocket connection; returns (messages the server got, store).  Each message's
        type is appended to ``events`` too, if given, and ``on_send(message)`` called as the
        server receives it."""
        store = store if store is not None else RecordingStore()
        sent = []
        incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hello"}]
        if client_closes:
            incoming.append({"type": "websocket.disconnect", "code": 1001})

        async def receive():
            if incoming:
                return incoming.pop(0)
            await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)
            if events is not None:
                events.append(message["type"])
            if on_send is not None:
                on_send(message)
        scope = make_scope("/ws", kind="websocket", cookie=cookie, https=https, headers=headers)
        asyncio.run(middleware(app, store, **(mw_options or {}))(scope, receive, send))
        return sent, store

    def test_the_session_is_loaded_from_the_handshake_and_changes_are_saved_at_close(self):
        events = []
        store, sid, cookie = seeded({"user": "ada"}, store=RecordingStore(events=events))
        seen = {}

        async def app(scope, receive, send):
            assert (await receive())["type"] == "websocket.connect"
            seen["user"] = scope["session"]["user"]
            await send({"type": "websocket.accept"})
            message = await receive()
            scope["session"]["last"] = message["text"]
            events.append("closing")
            await send({"type": "websocket.close", "code": 1000})
        sent, _ = self.run_ws(app, store=store, cookie=cookie)
        self.assertEqual(seen["user"], "ada")
        self.assertEqual(data_of(store, sid), {"user": "ada", "last": "hello"})
        self.assertEqual(events, ["closing", ("set-done", sid)])
        self.assertEqual([m["type"] for m in sent], ["websocket.accept", "websocket.close"])
        self.assertNotIn("headers", sent[0])

    def test_a_forwarded_wss_is_secure_with_proxy_true(self):
        # Proxies (Traefik) forward a TLS websocket handshake as "wss", as a wss scope is secure.
        for proto, secure in ((b"wss", True), (b"https", True), (b"ws", False), (b"http", False)):
            with self.subTest(proto=proto):
                async def app(scope, receive, send):
                    await receive()
                    scope["session"]["user"] = "ada"
                    await send({"type": "websocket.accept"})
                    await send({"type": "websocket.close", "code": 1000})
                sent, _ = self.run_ws(app, {"cookie": {"secure": True}, "proxy": True},
                                      headers=[(b"x-forwarded-proto", proto)])
                headers = dict(sent[0].get("headers", ()))
                self.assertEqual(b"set-cookie" in headers, secure)
                if secure:
                    self.assertIn(b"; Secure", headers[b"set-cookie"])

    def test_a_denial_response_is_an_http_response_for_the_session(self):
        # The websocket.http.response extension refuses the handshake with an HTTP response: its
        # head carries the cookie and Vary, and the store work ends before its last body message.
        for what in ("destroy", "login"):
            with self.subTest(what):
                events = []
                store, sid, cookie = seeded({"user": "ada"}, store=RecordingStore(events=events))

                async def app(scope, receive, send, what=what):
                    await receive()
                    if what == "destroy":
                        scope["session"].destroy()
                    else:
                        scope["session"].regenerate()
                        scope["session"]["user"] = "bob"
                    await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
                    await send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})
                    await send({"type": "websocket.http.response.body", "body": b"!"})
                sent, _ = self.run_ws(app, store=store, cookie=cookie, events=events)
                self.assertIsNone(store.get(sid))
                head = dict(sent[0]["headers"])
                self.assertEqual(head[b"vary"], b"Cookie")
                set_cookie = SetCookie(head[b"set-cookie"].decode())
                if what == "destroy":
                    self.assertTrue(set_cookie.clears)
                else:
                    self.assertEqual(data_of(store, set_cookie.sid), {"user": "bob"})
                self.assertTrue(any(isinstance(event, tuple) for event in events))  # store writes
                self.assertEqual(events[-1], "websocket.http.response.body")       # all before it

    def test_a_second_denial_start_raises_as_a_server_would(self):
        store, sid, cookie = seeded({"n": 1})

        async def app(scope, receive, send):
            await receive()
            scope["session"]["n"] = 2
            await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
            await send({"type": "websocket.http.response.start", "status": 500, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"no"})
        with self.assertRaisesRegex(RuntimeError, "sent twice"):
            self.run_ws(app, store=store, cookie=cookie)
        self.assertEqual(data_of(store, sid), {"n": 1})

    def test_changes_are_saved_when_the_client_closes(self):
        store, sid, cookie = seeded({"n": 1})

        async def app(scope, receive, send):
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                scope["session"]["n"] += 1
        self.run_ws(app, store=store, cookie=cookie, client_closes=True)
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_set_cookie_goes_out_only_in_the_accept_headers(self):
        for headers in (None, [(b"x-app", b"1")], ((b"x-app", b"1"),)):
            with self.subTest(app_headers=headers):
                async def app(scope, receive, send, headers=headers):
                    await receive()
                    scope["session"]["user"] = "ada"
                    accept = {"type": "websocket.accept"}
                    if headers is not None:
                        accept["headers"] = headers
                    await send(accept)
                    await send({"type": "websocket.send", "text": "hi"})
                    scope["session"]["more"] = 1
                    await send({"type": "websocket.close"})
                sent, store = self.run_ws(app)
                accept_headers = list(sent[0].get("headers", []))
                cookies = [v for k, v in accept_headers if k == b"set-cookie"]
                self.assertEqual(len(cookies), 1)
                if headers:
                    self.assertIn((b"x-app", b"1"), accept_headers)
                self.assertEqual(sent[1], {"type": "websocket.send", "text": "hi"})
                self.assertEqual(sent[2], {"type": "websocket.close"})
                sid = SetCookie(cookies[0].decode()).sid
                self.assertEqual(data_of(store, sid), {"user": "ada", "more": 1})

    def test_a_secure_cookie_goes_out_on_wss(self):
        for https in (True, False):
            with self.subTest(wss=https):
                async def app(scope, receive, send):
                    await receive()
                    scope["session"]["user"] = "ada"
                    await send({"type": "websocket.accept"})
                    await send({"type": "websocket.close"})
                sent, _ = self.run_ws(app, mw_options={"cookie": {"secure": True}}, https=https)
                self.assertEqual(any(k == b"set-cookie" for k, v in sent[0].get("headers", [])), https)

    def test_the_session_a_cookie_names_is_stored_before_the_accept_that_sends_it(self):
        # The accept is the handshake's HTTP response: the browser may use its cookie on other
        # requests while the socket is open, so the store holds that session first, and the
        # deletions regenerate() and destroy() left are done, as before an HTTP response ends.
        for what in ("login", "login, same session", "regenerate", "destroy", "unset"):
            with self.subTest(what):
                # A browser-session cookie: a changed session sends none unless it is new.
                store, sid, cookie = seeded({"user": "eve"}, max_age=None)
                seen = {}

                async def app(scope, receive, send, what=what):
                    await receive()
                    if what.startswith("login"):
                        scope["session"]["user"] = "ada"
                    elif what == "regenerate":
                        scope["session"].regenerate()
                        scope["session"]["user"] = "ada"
                    elif what == "destroy":
                        scope["session"].destroy()
                    else:
                        scope["session"] = None
                    await send({"type": "websocket.accept"})
                    if what != "destroy" and what != "unset":
                        scope["session"]["more"] = 1
                    await send({"type": "websocket.close"})
                def at_the_server(message, store=store, seen=seen):
                    if message["type"] == "websocket.accept":
                        seen["at accept"] = {key: data_of(store, key) for key in store.all()}
                options = {"unset": "destroy"} if what == "unset" else {}
                sent, _ = self.run_ws(app, options, store=store, on_send=at_the_server,
                                      cookie=None if what == "login" else cookie)
                if what == "login, same session":  # no cookie to send: the one it has names it
                    self.assertNotIn("headers", sent[0])
                    self.assertEqual(seen["at accept"], {sid: {"user": "ada"}})
                    self.assertEqual(data_of(store, sid), {"user": "ada", "more": 1})
                    continue
                set_cookie = SetCookie(dict(sent[0]["headers"])[b"set-cookie"].decode())
                if what in ("login", "regenerate"):
                    new = set_cookie.sid
                    self.assertNotEqual(new, sid)
                    self.assertEqual(seen["at accept"], {new: {"user": "ada"}} if what == "regenerate"
                                     else {sid: {"user": "eve"}, new: {"user": "ada"}})
                    self.assertEqual(data_of(store, new), {"user": "ada", "more": 1})
                else:
                    self.assertTrue(set_cookie.clears)
                    self.assertEqual(seen["at accept"], {})
                    self.assertEqual(store.all(), {})

    def test_a_session_unset_before_the_accept_is_deleted_once_and_stays_deleted(self):
        # unset="destroy": the accept deletes the record and expires the cookie.  Data put in
        # the session's place afterwards cannot get a cookie, so it must not bring the deleted
        # ID back into the store at the close (nor delete it a second time).
        inline = type("InlineRecordingStore", (RecordingStore,), {"blocking": False})
        for later, kind in itertools.product((None, {"user": "mallory"}), (inline, RecordingStore)):
            with self.subTest(later=later, store=kind.__name__):  # called inline; in a thread
                events = []
                store, sid, cookie = seeded({"user": "eve"}, store=kind(events=events))
                self.assertEqual(middleware(lambda *args: None, store)._inline, kind is inline)

                async def app(scope, receive, send, later=later):
                    await receive()
                    scope["session"] = None
                    await send({"type": "websocket.accept"})
                    if later is not None:
                        scope["session"] = later
                    await send({"type": "websocket.close"})
                with self.assertLogs("session", "WARNING") if later else contextlib.nullcontext():
                    sent, _ = self.run_ws(app, {"unset": "destroy"}, store=store, cookie=cookie)
                self.assertTrue(SetCookie(dict(sent[0]["headers"])[b"set-cookie"].decode()).clears)
                self.assertEqual(store.all(), {})
                self.assertEqual([e for e in events if e[0] == "destroy-done"], [("destroy-done", sid)])

    def test_the_accept_sends_no_cookie_for_a_session_another_request_ended(self):
        # As an HTTP response's head: decided after the store's answer (a logout elsewhere while
        # the handshake ran): the record is not written back, and its cookie not sent again.
        for options in ({"rolling": True}, {"cookie": {"max_age": 3600}}):
            with self.subTest(options):
                store, sid, cookie = seeded({"n": 1})

                async def app(scope, receive, send, store=store, sid=sid):
                    await receive()
                    scope["session"]["n"] = 2
                    store.destroy(sid)  # another request's logout, meanwhile
                    await send({"type": "websocket.accept"})
                    await send({"type": "websocket.close"})
                sent, _ = self.run_ws(app, options, store=store, cookie=cookie)
                self.assertNotIn("headers", sent[0])
                self.assertIsNone(store.get(sid))

    def test_regenerate_while_the_accept_waits_for_the_store_raises(self):
        # The accept's cookie is decided once its store work begins: a login in a task beside
        # the handshake would otherwise get a cookie for a session never saved.
        store, sid, cookie = seeded({"n": 1}, store=SlowAsyncStore())
        errors = []

        async def app(scope, receive, send):
            await receive()
            scope["session"]["n"] = 2

            async def login_meanwhile():
                await asyncio.sleep(SlowAsyncStore.delay / 5)  # the accept's merge is in flight
                try:
                    scope["session"].regenerate()
                except session.SessionError as exc:
                    errors.append(exc)
            task = asyncio.ensure_future(login_meanwhile())
            await send({"type": "websocket.accept"})
            await task
            await send({"type": "websocket.close"})
        sent, _ = self.run_ws(app, store=store, cookie=cookie)
        self.assertEqual(len(errors), 1)
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_a_rolling_session_is_touched_before_the_accept_that_sends_its_cookie(self):
        # The cookie restarts its lifetime: the record must outlive it from the accept on.
        events = []
        store, sid, cookie = seeded({"n": 1}, store=RecordingStore(events=events))

        async def app(scope, receive, send):
            await receive()
            scope["session"].get("n")
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close"})
        sent, _ = self.run_ws(app, {"rolling": True}, store=store, cookie=cookie, events=events)
        self.assertIn(b"set-cookie", dict(sent[0]["headers"]))
        self.assertLess(events.index(("touch-done", sid)), events.index("websocket.accept"))

    def test_a_session_changed_after_accept_is_saved_but_its_new_cookie_cannot_be_sent(self):
        async def app(scope, receive, send):
            await receive()
            await send({"type": "websocket.accept"})
            scope["session"]["user"] = "ada"
            await send({"type": "websocket.close"})
        sent, store = self.run_ws(app)
        self.assertNotIn("headers", sent[0])
        self.assertEqual(len(store.all()), 1)

    def test_regenerate_after_accept_raises_and_keeps_the_session(self):
        # Its new cookie could only go out with the accept: a login there would log out.
        store, sid, cookie = seeded({"user": "eve"})
        errors = []

        async def app(scope, receive, send):
            await receive()
            await send({"type": "websocket.accept"})
            try:
                scope["session"].regenerate()
            except session.SessionError as exc:
                errors.append(exc)
            await send({"type": "websocket.close"})
        self.run_ws(app, store=store, cookie=cookie)
        self.assertRegex(str(errors[0]), "accepted")
        self.assertEqual(data_of(store, sid), {"user": "eve"})

    def test_data_put_in_place_of_a_session_destroyed_after_accept_is_not_saved(self):
        # It would be a new session, whose cookie could only have gone with the accept: the
        # logout holds, and no record is left under an ID no browser holds.
        store, sid, cookie = seeded({"user": "eve"})

        async def app(scope, receive, send):
            await receive()
            await send({"type": "websocket.accept"})
            scope["session"].destroy()
            scope["session"] = {"user": "bob"}
            await send({"type": "websocket.close"})
        with self.assertLogs("session", "WARNING") as logs:
            self.run_ws(app, store=store, cookie=cookie)
        self.assertIn("not saved", logs.output[0])
        self.assertEqual(store.all(), {})

    def test_an_app_raising_because_the_client_closed_the_socket_still_saves(self):
        # The usual handler loops on receive_text(), which raises WebSocketDisconnect when the
        # client closes: the socket is over, and what the handler changed is saved.
        store, sid, cookie = seeded({"n": 1})

        class WebSocketDisconnect(Exception):
            pass

        async def app(scope, receive, send):
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message["code"])
                scope["session"]["n"] += 1
        with self.assertRaises(WebSocketDisconnect):
            self.run_ws(app, store=store, cookie=cookie, client_closes=True)
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_an_app_raising_on_a_websocket_saves_nothing(self):
        store, sid, cookie = seeded({"n": 1})

        async def app(scope, receive, send):
            await receive()
            await send({"type": "websocket.accept"})
            scope["session"]["n"] = 2
            raise RuntimeError("boom")
        with self.assertRaises(RuntimeError):
            self.run_ws(app, store=store, cookie=cookie)
        self.assertEqual(data_of(store, sid), {"n": 1})


# ================================================================ trio

class AsyncioCoroutinesStore(session.MemoryStore):
    """A MemoryStore whose coroutines only run on asyncio (as redis.asyncio's and psycopg's
    do), its sync methods sent to threads (``blocking``)."""

    blocking = True

    async def aget_text(self, sid):
        await asyncio.sleep(0)
        return self.get_text(sid)

    async def amerge(self, sid, change):
        await asyncio.sleep(0)
        return self.merge(sid, change)

    async def adestroy(self, sid):
        await asyncio.sleep(0)
        self.destroy(sid)


@requires(has_module("trio"), "pip install trio")
class TestUnderTrio(unittest.TestCase):
    """On trio's event loop (hypercorn -k trio; Starlette and FastAPI through anyio's trio
    backend) the store is called in trio's threads, and a cancelled request saves as under
    asyncio.  tests/test_asgi_frameworks.py runs the framework flows there too."""

    def run_trio(self, app, store, cookie=None, cancel_after=None, **options):
        """One HTTP request on trio; ``cancel_after`` seconds: the server cancels it (the
        client went away).  Returns the messages the server got."""
        import trio
        sent = []

        async def receive():
            await trio.sleep_forever()

        async def send(message):
            sent.append(message)

        async def main():
            with trio.move_on_after(cancel_after if cancel_after is not None else 10):
                await middleware(app, store, **options)(make_scope(cookie=cookie), receive, send)
        trio.run(main)
        return sent

    async def respond(self, send, body=b"ok"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    def test_a_store_whose_coroutines_need_asyncio_is_called_in_threads(self):
        store, sid, cookie = seeded({"user": "eve"}, store=AsyncioCoroutinesStore())
        self.assertFalse(middleware(lambda *args: None, store)._inline)

        async def login(scope, receive, send):
            scope["session"].regenerate()  # a deletion, then a new session's save
            scope["session"]["user"] = "ada"
            await self.respond(send)
        sent = self.run_trio(login, store, cookie)
        new = SetCookie(dict(sent[0]["headers"])[b"set-cookie"].decode()).sid
        self.assertEqual(store.all(), {new: store.get(new)})
        self.assertEqual(data_of(store, new), {"user": "ada"})

    def test_a_request_the_server_cancels_still_saves(self):
        # The client went away: trio cancels the app where it waits, as asyncio does.
        for kind in (RecordingStore, AsyncioCoroutinesStore):
            with self.subTest(kind.__name__):
                store, sid, cookie = seeded({"n": 1}, store=kind())

                async def app(scope, receive, send):
                    scope["session"]["n"] = 2
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                    await send({"type": "http.response.body", "body": b"a", "more_body": True})
                    await receive()  # the rest waits for what never comes
                self.run_trio(app, store, cookie, cancel_after=0.05)
                self.assertEqual(data_of(store, sid), {"n": 2})

    def test_a_request_cancelled_inside_a_nursery_still_saves(self):
        # trio raises the Cancelled of a nursery's body wrapped in an exception group.
        import trio
        store, sid, cookie = seeded({"n": 1}, store=RecordingStore())

        async def app(scope, receive, send):
            scope["session"]["n"] = 2
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep_forever()
        self.run_trio(app, store, cookie, cancel_after=0.05)
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_an_async_first_store_is_called_through_its_coroutines(self):
        # Its sync methods are Store's stubs: there is nothing to send to a thread.
        store = AnyLoopAsyncFirstStore()
        sid = "seed"
        asyncio.run(store.aset(sid, make_record({"n": 1})))

        async def app(scope, receive, send):
            scope["session"]["n"] += 1
            await self.respond(send)
        self.run_trio(app, store, f"{NAME}={cookie_value(sid)}")
        self.assertEqual(session.decode_record(store.records[sid])["n"], 2)

    def test_forty_threads_saving_through_from_thread_do_not_stop_the_loop(self):
        # anyio runs a def endpoint in a thread with a token of trio's default limiter (40):
        # 40 of them waiting in from_thread.run(session.asave) left none for the store call.
        import trio
        for kind in (RecordingStore, session.MemoryStore):  # in a thread; inline
            with self.subTest(kind.__name__):
                store, sid, cookie = seeded({"n": 0}, store=kind())
                together = threading.Barrier(40)

                async def app(scope, receive, send):
                    sess = scope["session"]

                    def save_from_a_thread(i):
                        if i < 40:
                            together.wait(5)
                        trio.from_thread.run(sess.asave)
                    async with trio.open_nursery() as nursery:
                        for i in range(41):
                            nursery.start_soon(trio.to_thread.run_sync, save_from_a_thread, i)
                    await self.respond(send)
                runner = threading.Thread(target=self.run_trio, args=(app, store, cookie), daemon=True)
                runner.start()
                runner.join(20)
                self.assertFalse(runner.is_alive(), "the event loop stopped")

    def test_a_store_that_never_waits_is_called_without_a_thread(self):
        store, sid, cookie = seeded({"n": 1}, store=session.MemoryStore())

        async def app(scope, receive, send):
            await scope["session"].areload()
            scope["session"]["n"] = 2
            await scope["session"].asave()
            await self.respond(send)
        with mock.patch.object(session, "_in_thread", side_effect=AssertionError("a thread")) as hop:
            self.run_trio(app, store, cookie)
        self.assertEqual(hop.call_count, 0)
        self.assertEqual(data_of(store, sid), {"n": 2})

    def test_an_app_that_raises_saves_nothing(self):
        store, sid, cookie = seeded({"n": 1}, store=RecordingStore())

        async def app(scope, receive, send):
            scope["session"]["n"] = 2
            raise RuntimeError("boom")
        with self.assertRaises(RuntimeError):
            self.run_trio(app, store, cookie)
        self.assertEqual(data_of(store, sid), {"n": 1})


if __name__ == "__main__":
    unittest.main()
