"""express-session's decisions: its four predicates as truth tables, a session's life, Vary.

The truth tables and the lifecycle tests run twice: over a store that offers the
get_text and merge capabilities (MemoryStore's) and over one that does not (a
subclass overriding get and set only), so the decisions are proved on both ways a
store is used.  Each class names the harness of the adapter it drives (``adapter``,
SessionMiddleware's here); tests/test_decisions_both_adapters.py runs the same
classes through ASGISessionMiddleware.
"""
from __future__ import annotations

import dataclasses
import enum
import itertools
import time
import unittest
from typing import Callable, NamedTuple

import session
from tests.harness import (HOUR, NAME, SECRET, CapableMemoryStore, Client, Harness, PlainMemoryStore,
                           cookie_value, make_record, parse_iso, sess)
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)


# ================================================================ express-session's predicates

class Case(NamedTuple):
    """One request: the cookie it brings, whether the app changes the session, the options."""
    state: str  # "no-cookie", "unknown-id" (validly signed, not in the store) or "existing"
    modified: bool
    save_uninitialized: bool
    resave: bool
    rolling: bool
    with_expires: bool  # cookie max_age of an hour, else a browser-session cookie


STATES = ("no-cookie", "unknown-id", "existing")
CASES = [Case(state, *flags) for state in STATES for flags in itertools.product((False, True), repeat=5)]


def expected(case: Case) -> dict:
    """What express-session does: shouldSetCookie, shouldSave and shouldTouch for ``case``."""
    if case.state != "existing":
        return {"set_cookie": case.save_uninitialized or case.modified,
                "save": case.save_uninitialized or case.modified, "touch": False}
    save = case.modified or case.resave
    return {"set_cookie": case.rolling or (case.with_expires and case.modified), "save": save,
            "touch": not save}


def run_case(case: Case, store_factory: Callable[[], session.Store], adapter: type = Harness) -> dict:
    """What the middleware ``adapter`` drives does for ``case`` over a new ``store_factory()``:
    Set-Cookie sent, a save, a touch.  The store must be a RecordingStore (it counts the calls)."""
    max_age = HOUR if case.with_expires else None

    def action(environ):
        if case.modified:
            sess(environ)["n"] = 2
    h = adapter(action, store=store_factory(), save_uninitialized=case.save_uninitialized,
                resave=case.resave, rolling=case.rolling, cookie={"max_age": max_age})
    if case.state == "existing":
        h.seed({"n": 1}, max_age=max_age)
    elif case.state == "unknown-id":
        h.client.jar[NAME] = cookie_value("no-such-id-in-the-store")
    resp = h.request()
    return {"set_cookie": resp.cookie() is not None, "save": h.store.count("set") > 0,
            "touch": h.store.count("touch") > 0}


class DestroyCase(NamedTuple):
    """A request that changes its session and then, if ``dropped``, sets it to None."""
    state: str  # "no-cookie" or "existing"
    unset: str  # the option: "keep" or "destroy"
    dropped: bool


DESTROY_CASES = [DestroyCase(state, unset, dropped) for state in ("no-cookie", "existing")
                 for unset in ("keep", "destroy") for dropped in (False, True)]


def expected_destroy(case: DestroyCase) -> dict:
    """shouldDestroy: the record is deleted only for an existing session the app set to None
    under unset="destroy"; a dropped session is never saved, and under "keep" its record stays."""
    if case.state != "existing":
        return {"gone": None, "saves": 0 if case.dropped else 1, "n": None}
    gone = case.unset == "destroy" and case.dropped
    return {"gone": gone, "saves": 0 if case.dropped else 1,
            "n": None if gone else (1 if case.dropped else 5)}


def run_destroy_case(case: DestroyCase, store_factory: Callable[[], session.Store],
                     adapter: type = Harness) -> dict:
    """What the middleware does for ``case``: the record gone, how many saves, the stored n."""
    def action(environ):
        sess(environ)["n"] = 5
        if case.dropped:
            environ["session"] = None
    h = adapter(action, store=store_factory(), unset=case.unset)
    if case.state != "existing":
        h.request()
        return {"gone": None, "saves": h.store.count("set"), "n": None}
    sid = h.seed({"n": 1})
    h.request()
    record = h.store.get(sid)
    return {"gone": record is None, "saves": h.store.count("set"),
            "n": None if record is None else record["n"]}


class ExpressPredicates:
    """shouldSetCookie / shouldSave / shouldTouch / shouldDestroy walked as truth tables over
    ``store_factory()`` stores."""

    store_factory: Callable[[], session.Store]
    capable: bool  # whether the store offers get_text and merge
    adapter: type = Harness  # the harness of the middleware under test

    def walk(self, predicate):
        for case in CASES:
            with self.subTest(**case._asdict()):
                self.assertEqual(run_case(case, self.store_factory, self.adapter)[predicate],
                                 expected(case)[predicate])

    def test_should_set_cookie_truth_table(self):
        self.walk("set_cookie")

    def test_should_save_truth_table(self):
        self.walk("save")

    def test_should_touch_truth_table(self):
        self.walk("touch")

    def test_should_destroy_truth_table(self):
        for case in DESTROY_CASES:
            with self.subTest(**case._asdict()):
                self.assertEqual(run_destroy_case(case, self.store_factory, self.adapter),
                                 expected_destroy(case))

    def test_the_store_is_read_and_written_as_the_class_name_says(self):
        # Without this, a change in how capabilities are found could make both classes walk
        # the same path.
        h = self.adapter(lambda e: sess(e).__setitem__("n", sess(e).get("n", 0) + 1),
                         store=self.store_factory())
        h.request()
        h.request()
        if self.capable:
            self.assertEqual(h.store.methods, ["merge", "get_text", "merge"])
        else:
            self.assertEqual(sorted(set(h.store.methods)), ["get", "set"])


class TestExpressPredicatesWithCapabilities(ExpressPredicates, unittest.TestCase):
    """Over a MemoryStore subclass that offers get_text and merge."""
    store_factory, capable = CapableMemoryStore, True


class TestExpressPredicatesWithoutCapabilities(ExpressPredicates, unittest.TestCase):
    """Over a MemoryStore subclass that overrides get and set only."""
    store_factory, capable = PlainMemoryStore, False


# ================================================================ a session's life

class Lifecycle:
    """When a session is saved, touched, sent and destroyed, request by request, over
    ``store_factory()`` stores."""

    store_factory: Callable[[], session.Store]
    adapter: type = Harness  # the harness of the middleware under test

    def harness(self, action=None, **options) -> Harness:
        return self.adapter(action, store=self.store_factory(), **options)

    def test_unmodified_session_is_not_saved(self):
        h = self.harness(lambda e: sess(e).get("n"))
        h.seed({"n": 1})
        h.request()
        self.assertEqual(h.store.count("set"), 0)

    def test_unmodified_existing_session_is_touched_and_its_record_left_as_it_was(self):
        h = self.harness(lambda e: sess(e).get("n"))
        sid = h.seed({"n": 1, "z": [1, 2]}, expires_in=100)
        h.request()
        self.assertEqual(h.store.ids("touch"), [sid])
        record = h.store.get(sid)
        self.assertEqual((record["n"], record["z"]), (1, [1, 2]))
        # touch ran with the cookie reset to originalMaxAge: the stored expiry moved forward.
        self.assertAlmostEqual(parse_iso(record["cookie"]["expires"]), time.time() + HOUR, delta=5)

    def test_new_unmodified_session_is_neither_saved_nor_sent_by_default(self):
        h = self.harness(lambda e: sess(e).get("n"))
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.length(), 0)

    def test_modified_session_is_saved_and_cookie_sent(self):
        h = self.harness(lambda e: sess(e).__setitem__("user", "ada"))
        resp = h.request()
        sc = resp.cookie()
        self.assertIsNotNone(sc)
        self.assertEqual(h.store.get(sc.sid)["user"], "ada")

    def test_nested_mutation_is_saved_without_a_flag(self):
        h = self.harness(lambda e: sess(e)["cart"].append(3))
        sid = h.seed({"cart": [1, 2]})
        h.request()
        self.assertEqual(h.store.get(sid)["cart"], [1, 2, 3])
        h.action = lambda e: sess(e)["cart"].clear() or sess(e)["cart"].append({"deep": [1]})
        h.request()
        h.action = lambda e: sess(e)["cart"][0]["deep"].append(2)
        h.request()
        self.assertEqual(h.store.get(sid)["cart"], [{"deep": [1, 2]}])

    def test_assigning_an_equal_value_is_not_a_modification(self):
        h = self.harness(lambda e: sess(e).__setitem__("n", sess(e)["n"]))
        h.seed({"n": 1})
        h.request()
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.count("touch"), 1)

    def test_assigning_equal_values_that_are_other_objects_is_not_a_modification(self):
        def reassign(environ):
            s = sess(environ)
            s["n"] = int("1000")
            s["name"] = "".join(["a", "da"])
        for cookie_first in (True, False):  # cookie last: the record's layout is not the data's JSON
            with self.subTest(cookie_first=cookie_first):
                h = self.harness(reassign, cookie={"max_age": HOUR})
                record = make_record({"n": 1000, "name": "ada"})
                if not cookie_first:
                    record["cookie"] = record.pop("cookie")
                h.seed(record=record)
                resp = h.request()
                self.assertIsNone(resp.cookie())
                self.assertEqual(h.store.count("set"), 0)

    def test_a_record_with_its_cookie_last_only_read_is_touched_and_not_saved(self):
        h = self.harness(lambda e: sess(e)["n"])
        record = make_record({"n": 1})
        record["cookie"] = record.pop("cookie")  # not the layout this middleware writes
        sid = h.seed(record=record)
        h.request()
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.ids("touch"), [sid])

    def test_returning_visitor_cookie_is_resent_when_modified_and_expires_set(self):
        h = self.harness(lambda e: sess(e).__setitem__("n", 2), cookie={"max_age": HOUR})
        sid = h.seed({"n": 1})
        sc = h.request().cookie()
        self.assertIsNotNone(sc)
        self.assertEqual(sc.sid, sid)
        self.assertAlmostEqual(sc.expires, time.time() + HOUR, delta=5)

    def test_rolling_resends_cookie_on_every_response_with_fresh_expiry(self):
        h = self.harness(None, rolling=True, cookie={"max_age": HOUR})
        sid = h.seed({"n": 1}, expires_in=100)
        sc = h.request().cookie()
        self.assertEqual(sc.sid, sid)
        self.assertAlmostEqual(sc.expires, time.time() + HOUR, delta=5)
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.count("touch"), 1)

    def test_resave_writes_unmodified_session_back(self):
        h = self.harness(None, resave=True)
        sid = h.seed({"n": 1})
        self.assertIsNone(h.request().cookie())
        self.assertEqual(h.store.ids("set"), [sid])

    def test_save_uninitialized_saves_and_sends_untouched_new_session(self):
        h = self.harness(None, save_uninitialized=True)
        sc = h.request().cookie()
        self.assertIsNotNone(sc)
        self.assertEqual(list(h.store.all()), [sc.sid])
        self.assertEqual(list(h.store.get(sc.sid)), ["cookie"])

    def test_session_survives_across_requests(self):
        def count(environ):
            s = sess(environ)
            s["views"] = s.get("views", 0) + 1
        h = self.harness(count)
        for _ in range(3):
            h.request()
        (record,) = h.store.all().values()
        self.assertEqual(record["views"], 3)

    def test_untouched_new_visitor_costs_no_id_and_no_store_call(self):
        made = []
        h = self.harness(None, genid=lambda environ: made.append(1) or "id-%d" % len(made))
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(made, [], "no ID is generated for a session nobody used")
        self.assertEqual(h.store.calls, [])

    def test_unset_destroy_on_new_session_sends_no_cookie(self):
        def drop(environ):
            sess(environ)["n"] = 1
            environ["session"] = None
        h = self.harness(drop, unset="destroy")
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.length(), 0)

    def test_unset_destroy_of_a_session_never_saved_calls_no_store_destroy(self):
        h = self.harness(lambda e: e.__setitem__("session", None), unset="destroy")
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(h.store.ids("destroy"), [])

    def test_session_expired_in_store_gets_new_id(self):
        def count(environ):
            s = sess(environ)
            s["n"] = s.get("n", 0) + 1
        h = self.harness(count, cookie={"max_age": 0.2})
        first = h.request().cookie().sid
        time.sleep(0.3)
        second = h.request().cookie()
        self.assertNotEqual(second.sid, first)
        self.assertEqual(h.store.get(second.sid)["n"], 1)

    def test_expires_is_computed_when_the_response_is_sent(self):
        def slow(environ):
            sess(environ)["u"] = 1
            time.sleep(0.3)
        h = self.harness(slow, cookie={"max_age": HOUR})
        sc = h.request().cookie()
        done = time.time()
        expires = parse_iso(h.store.get(sc.sid)["cookie"]["expires"])
        self.assertGreater(expires, done + HOUR - 0.1)
        self.assertLessEqual(expires, done + HOUR + 0.001)

    def test_unset_keep_leaves_record_untouched(self):
        def drop(environ):
            sess(environ)["n"] = 9
            environ["session"] = None
        h = self.harness(drop, unset="keep")
        sid = h.seed({"n": 1})
        resp = h.request()
        self.assertEqual(h.store.get(sid)["n"], 1)
        self.assertEqual([n for n, _ in h.store.calls if n != "get"], [])
        self.assertIsNone(resp.cookie())

    def test_unset_destroy_deletes_record(self):
        def drop(environ):
            sess(environ).get("n")
            environ["session"] = None
        h = self.harness(drop, unset="destroy")
        sid = h.seed({"n": 1})
        h.request()
        self.assertIn(sid, h.store.ids("destroy"))
        self.assertIsNone(h.store.get(sid))
        self.assertEqual(h.store.count("set"), 0)

    def test_a_sentinel_put_in_the_sessions_place_unsets_it_as_none_does(self):
        # Litestar's clear_session() leaves its Empty (an enum member), not None.
        class Marker:
            pass

        class Sentinel(enum.Enum):
            EMPTY = 0

        for value in (Marker, Sentinel.EMPTY):
            with self.subTest(value=value):
                def drop(environ, value=value):
                    sess(environ).get("n")
                    environ["session"] = value
                h = self.harness(drop, unset="destroy")
                sid = h.seed({"n": 1})
                h.request()
                self.assertIsNone(h.store.get(sid))

    def test_any_other_value_put_in_the_sessions_place_is_a_type_error_that_loses_nothing(self):
        # Litestar's set_session() also takes a dataclass or a model: not JSON, so not saved,
        # and not taken for None either (unset="destroy" would log the user out).
        @dataclasses.dataclass
        class Login:
            user: str

        for value in (Login("ada"), False, "x"):
            with self.subTest(value=value):
                def replace(environ, value=value):
                    sess(environ)["n"] = 2
                    environ["session"] = value
                h = self.harness(replace, unset="destroy")
                sid = h.seed({"n": 1})
                with self.assertRaisesRegex(TypeError, "put a mapping"):
                    h.request()
                self.assertEqual(h.store.get(sid)["n"], 1)

    def test_a_mapping_put_in_place_of_a_destroyed_session_is_a_new_session(self):
        # Logged out, then given data (Litestar's set_session after a logout): a new ID, and
        # never the destroyed record back under the old one.
        def logout(environ):
            sess(environ).destroy()
            environ["session"] = {"flash": "bye"}
        h = self.harness(logout)
        sid = h.seed({"user": "ada"})
        sc = h.request().cookie()
        self.assertIsNone(h.store.get(sid))
        self.assertNotEqual(sc.sid, sid)
        self.assertEqual(h.store.get(sc.sid)["flash"], "bye")

    def test_a_mapping_put_in_the_sessions_place_becomes_its_data(self):
        # Litestar's set_session({...}) replaces the session with a dict.
        def replace(environ):
            logged_in = "user" in sess(environ)
            environ["session"] = {**sess(environ), "seen": True} if logged_in else {"user": "ada"}
        h = self.harness(replace)
        sid = h.request().cookie().sid
        h.request()
        record = h.store.get(sid)
        self.assertEqual({k: v for k, v in record.items() if k != "cookie"}, {"user": "ada", "seen": True})

    def test_a_cookie_key_in_a_mapping_put_in_the_sessions_place_never_reaches_the_record(self):
        h = self.harness(lambda e: e.__setitem__("session", {"user": "bob", "cookie": "x"}))
        sid = h.request().cookie().sid
        record = h.store.get(sid)
        self.assertEqual({k: v for k, v in record.items() if k != "cookie"}, {"user": "bob"})
        self.assertIsInstance(record["cookie"], dict)

    def test_second_middleware_passes_the_request_through(self):
        inner_store, outer_store = self.store_factory(), self.store_factory()

        def app(environ, start_response):
            environ["session"]["u"] = 1
            start_response("200 OK", [])
            return [b"ok"]
        inner = session.SessionMiddleware(app, secret="inner", store=inner_store)
        outer = session.SessionMiddleware(inner, secret=SECRET, store=outer_store)
        resp = Client(outer).request()
        self.assertEqual(len(resp.cookies()), 1)
        self.assertEqual(outer_store.length(), 1)
        self.assertEqual(inner_store.calls, [])


class TestLifecycleWithCapabilities(Lifecycle, unittest.TestCase):
    """Over a MemoryStore subclass that offers get_text and merge."""
    store_factory = CapableMemoryStore


class TestLifecycleWithoutCapabilities(Lifecycle, unittest.TestCase):
    """Over a MemoryStore subclass that overrides get and set only."""
    store_factory = PlainMemoryStore


# ================================================================ Vary: Cookie

class TestVary(unittest.TestCase):

    READS = {
        "in": lambda s: "user" in s,
        "len": lambda s: len(s),
        "get": lambda s: s.get("user"),
        "getitem": lambda s: s["views"],
        "iter": lambda s: list(s),
        "items": lambda s: list(s.items()),
        "bool": lambda s: bool(s),
        "keys": lambda s: list(s.keys()),
        "values": lambda s: list(s.values()),
        "copy": lambda s: s.copy(),
        "repr": lambda s: repr(s),
        "str": lambda s: f"{s}",    # a template rendering {{ session }}
        "eq": lambda s: s == {},
        "is_new": lambda s: s.is_new,      # "welcome back" depends on the cookie too
        "modified": lambda s: s.modified,
    }

    def test_vary_cookie_when_returning_session_is_read(self):
        for name, read in self.READS.items():
            with self.subTest(read=name):
                h = Harness(lambda e, read=read: read(sess(e)))
                h.seed({"views": 1})
                resp = h.request()
                self.assertIsNone(resp.cookie())
                self.assertEqual(resp.vary, ["cookie"])

    def test_vary_cookie_when_new_visitor_session_is_read(self):
        for name in ("in", "len", "get"):
            with self.subTest(read=name):
                h = Harness(lambda e, read=self.READS[name]: read(sess(e)))
                resp = h.request()
                self.assertIsNone(resp.cookie())
                self.assertEqual(resp.vary, ["cookie"])

    def test_vary_cookie_when_session_changed(self):
        h = Harness(lambda e: sess(e).__setitem__("u", 1))
        self.assertEqual(h.request().vary, ["cookie"])

    def test_vary_cookie_when_our_set_cookie_is_sent(self):
        h = Harness(None, save_uninitialized=True)
        resp = h.request()
        self.assertIsNotNone(resp.cookie())
        self.assertEqual(resp.vary, ["cookie"])

    def test_no_vary_when_session_untouched_and_no_cookie_sent(self):
        h = Harness(None)
        self.assertEqual(h.request().values("Vary"), [])
        h.seed({"views": 1})
        resp = h.request()
        self.assertIsNone(resp.cookie())
        self.assertEqual(resp.values("Vary"), [])

    def test_no_vary_outside_cookie_path(self):
        h = Harness(None, cookie={"path": "/app"}, save_uninitialized=True)
        self.assertEqual(h.request(path="/x").values("Vary"), [])

    def test_vary_merged_with_apps_vary(self):
        h = Harness(lambda e: sess(e).get("u"), app_headers=[("Vary", "Accept-Encoding")])
        resp = h.request()
        self.assertEqual(len(resp.values("Vary")), 1, resp.values("Vary"))
        self.assertEqual(sorted(resp.vary), ["accept-encoding", "cookie"])

    def test_vary_merged_into_the_apps_first_vary_given_as_a_list(self):
        h = Harness(lambda e: sess(e).get("u"),
                    app_headers=[["Vary", "Accept-Encoding"], ("Vary", "Accept")])
        resp = h.request()
        self.assertEqual(resp.values("Vary"), ["Accept-Encoding, Cookie", "Accept"])

    def test_an_empty_vary_from_the_app_becomes_vary_cookie(self):
        h = Harness(lambda e: sess(e).get("u"), app_headers=[("Vary", "")])
        self.assertEqual(h.request().values("Vary"), ["Cookie"])

    def test_vary_star_from_the_app_is_left_alone(self):
        # "*" varies on everything already, the cookie included.
        h = Harness(lambda e: sess(e).get("u"), app_headers=[("Vary", "*")])
        self.assertEqual(h.request().values("Vary"), ["*"])

    def test_vary_cookie_not_duplicated_when_app_already_varies_on_it(self):
        h = Harness(lambda e: sess(e).get("u"), app_headers=[("Vary", "Accept, cookie")])
        resp = h.request()
        self.assertEqual(sorted(resp.vary), ["accept", "cookie"])

    def test_vary_cookie_when_session_destroyed(self):
        h = Harness(lambda e: sess(e).destroy())
        h.seed({"u": 1})
        self.assertIn("cookie", h.request().vary)
