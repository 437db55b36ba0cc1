"""The Session in the app: a dict of the stored data, what counts as a change, and its
methods regenerate, destroy, reload, save and touch.
"""
from __future__ import annotations

import asyncio
import collections
import copy
import datetime as dt
import enum
import itertools
import json
import pickle
import unittest
import unittest.mock

import session
from tests.harness import (HOUR, MISSING, NAME, Harness, RecordingStore, captured_warnings,
                           make_record, run_on_loaded_session, sess)
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)


class TestSession(unittest.TestCase):

    def test_session_is_a_dict_of_the_stored_data(self):
        out = {}

        def look(environ):
            s = sess(environ)
            out.update(isinstance=isinstance(s, dict), d=dict(s), json=json.loads(json.dumps(s)),
                       copy=s.copy(), star={**s}, items=sorted(s.items()), has="cookie" in s)
        h = Harness(look)
        h.seed({"a": 1, "b": [1, 2]})
        h.request()
        want = {"a": 1, "b": [1, 2]}
        self.assertTrue(out["isinstance"])
        for key in ("d", "json", "copy", "star"):
            self.assertEqual(out[key], want, key)
        self.assertEqual(out["items"], sorted(want.items()))
        self.assertFalse(out["has"], '"cookie" is not a key of the Session')

    def test_copies_and_pickles_are_plain_dicts_of_the_data(self):
        # The Session belongs to its request (its cookie, its store): a copy is the data alone.
        out = {}

        def look(environ):
            s = sess(environ)
            out.update(shallow=copy.copy(s), deep=copy.deepcopy(s), pickled=pickle.loads(pickle.dumps(s)))
            out["deep"]["b"].append(3)  # a deep copy shares nothing with the session
        h = Harness(look)
        sid = h.seed({"a": 1, "b": [1, 2]})
        h.request()
        for key in ("shallow", "deep", "pickled"):
            self.assertIs(type(out[key]), dict, key)
        self.assertEqual(out["shallow"], {"a": 1, "b": [1, 2]})
        self.assertEqual(out["pickled"], {"a": 1, "b": [1, 2]})
        self.assertEqual(out["deep"], {"a": 1, "b": [1, 2, 3]})
        self.assertEqual(h.store.get(sid)["b"], [1, 2])

    def test_dict_mutators_as_first_operation_are_saved(self):
        cases = {
            "del": (lambda s: s.__delitem__("a"), {"b": [1]}),
            "pop": (lambda s: s.pop("a"), {"b": [1]}),
            "popitem": (lambda s: s.popitem(), {"a": 1}),
            "clear": (lambda s: s.clear(), {}),
            "setdefault-append": (lambda s: s.setdefault("c", []).append(1), {"a": 1, "b": [1], "c": [1]}),
            "nested-append": (lambda s: s["b"].append(2), {"a": 1, "b": [1, 2]}),
            "update": (lambda s: s.update(a=2), {"a": 2, "b": [1]}),
            "ior": (lambda s: s.__ior__({"d": 4}), {"a": 1, "b": [1], "d": 4}),
        }
        for name, (op, want) in cases.items():
            with self.subTest(op=name):
                self.assertEqual(run_on_loaded_session(op)[1], want)

    def test_writes_then_later_changes_are_saved_exactly(self):
        # Plain writes are tracked by key; a later mutable read or dict method must
        # still compare against the data as loaded, not as already written.
        cases = {
            "write-then-append": (lambda s: (s.__setitem__("a", 2), s["b"].append(2)),
                                  {"a": 2, "b": [1, 2]}),
            "write-new-then-del-it": (lambda s: (s.__setitem__("n", 1), s.__delitem__("n")),
                                      None),
            "write-then-items": (lambda s: (s.__setitem__("a", 5), list(s.items())),
                                 {"a": 5, "b": [1]}),
            "write-back-same-value": (lambda s: s.__setitem__("a", 1), None),
            "int-to-float-is-a-change": (lambda s: s.__setitem__("a", 1.0), {"a": 1.0, "b": [1]}),
            "int-to-true-is-a-change": (lambda s: s.__setitem__("a", True), {"a": True, "b": [1]}),
            "same-list-value": (lambda s: s.__setitem__("b", [1]), None),
            "write-twice-back-to-original": (lambda s: (s.__setitem__("a", 7), s.__setitem__("a", 1)),
                                             None),
            "write-then-reload-keeps-store": (lambda s: (s.__setitem__("a", 9), s.reload()), None),
        }
        for name, (op, want) in cases.items():
            with self.subTest(op=name):
                h, data = run_on_loaded_session(op)
                if want is None:
                    self.assertEqual(h.store.count("set"), 0, "unchanged data is not saved")
                    self.assertEqual(data, {"a": 1, "b": [1]})
                else:
                    self.assertEqual(h.store.count("set"), 1)
                    self.assertEqual(data, want)

    def test_reading_plain_values_only_writes_nothing_back(self):
        h = Harness(lambda e: (sess(e)["a"], sess(e).get("missing"), "a" in sess(e), len(sess(e))))
        sid = h.seed({"a": 1, "b": [1]})
        response = h.request()
        self.assertEqual(h.store.count("set"), 0)
        self.assertEqual(h.store.count("touch"), 1)
        self.assertIn("cookie", response.vary)
        self.assertIsNone(response.cookie(), "no Set-Cookie: nothing changed and not rolling")
        self.assertIsNotNone(h.store.get(sid))

    def test_a_value_stored_back_with_the_same_json_is_no_change_whatever_the_record_layout(self):
        # (1, 2) for [1, 2], an enum member for its value, an OrderedDict for a dict: the JSON
        # is the loaded one.  A record whose cookie is not first, or has an attribute the
        # options do not give, is read in full and its written keys compared value by value:
        # that comparison took another type for a change, saved and sent a cookie every time.
        # (Found by a review's differential fuzzing against a plain dict.)
        class Color(str, enum.Enum):
            RED = "red"

        class Level(enum.IntEnum):
            ONE = 1
        layouts = {"usual": lambda data: make_record(data),
                   "cookie with sameSite": lambda data: make_record(data, sameSite="strict"),
                   "cookie last": lambda data: {**data, "cookie": make_record()["cookie"]}}
        values = {"tuple for a list": ([1, 2], (1, 2)),
                  "str enum member for its value": ("red", Color.RED),
                  "int enum member for its value": (1, Level.ONE),
                  "OrderedDict for a dict": ({"x": 1}, collections.OrderedDict(x=1))}
        for layout, record in layouts.items():
            for what, (loaded, same_json) in values.items():
                with self.subTest(layout=layout, value=what):
                    seen = {}

                    def act(environ, same_json=same_json):
                        s = sess(environ)
                        s["v"] = same_json
                        seen["modified"] = s.modified
                    h = Harness(act, cookie={"max_age": HOUR})
                    sid = h.seed(record=record({"v": loaded}))
                    before = h.store.get_text(sid)
                    response = h.request()
                    self.assertFalse(seen["modified"])
                    self.assertEqual(h.store.count("set"), 0)
                    self.assertEqual(h.store.count("touch"), 1)
                    self.assertIsNone(response.cookie(), "unchanged, not rolling: no Set-Cookie")
                    self.assertEqual(json.loads(h.store.get_text(sid))["v"], json.loads(before)["v"])
        for a, b in ((1, 1.0), (1, True), ("1", 1), (None, "null"), ([1], (1.0,))):
            self.assertFalse(session._same(a, b), (a, b))  # JSON tells these apart

    def test_a_session_only_read_is_not_encoded_to_look_for_changes(self):
        # Loaded as JSON text, the session keeps that text to compare with; until the app
        # writes or gets a mutable value, nothing can differ from it, and no encoding is spent.
        encoded = []
        real = session._encode

        def counting(value):
            encoded.append(value)
            return real(value)
        cases = {"plain reads": (lambda s: (s["a"], s.get("b"), "a" in s), False),
                 "a write": (lambda s: s.__setitem__("a", 2), True),
                 "a mutable value": (lambda s: s.get("c"), True)}
        for name, (op, encodes) in cases.items():
            with self.subTest(case=name), unittest.mock.patch.object(session, "_encode", counting):
                del encoded[:]
                h = Harness(lambda e: op(sess(e)))
                h.seed({"a": 1, "b": "x", "c": [1]})
                h.request()
                data = [v for v in encoded if type(v) is dict and "b" in v and "cookie" not in v]
                self.assertEqual(bool(data), encodes, data)

    def test_id_is_the_cookie_id_and_read_only(self):
        out = {}

        def look(environ):
            s = sess(environ)
            out["id"] = s.id
            try:
                s.id = "other"
            except AttributeError:
                out["readonly"] = True
        h = Harness(look)
        sid = h.seed({"a": 1})
        h.request()
        self.assertEqual(out["id"], sid)
        self.assertTrue(out.get("readonly"))

    def test_reserved_key_cookie_gives_a_clear_error(self):
        errors = {}

        def abuse(environ):
            s = sess(environ)
            for name, op in (("setitem", lambda: s.__setitem__("cookie", 1)),
                             ("update", lambda: s.update({"cookie": 1})),
                             ("update_kw", lambda: s.update(cookie=1)),
                             ("setdefault", lambda: s.setdefault("cookie", 1)),
                             ("ior", lambda: s.__ior__({"cookie": 1}))):
                try:
                    op()
                except Exception as exc:  # the type is the implementation's; the message must say why
                    errors[name] = exc
            errors["left"] = "cookie" in s
        h = Harness(abuse)
        h.request()
        for name in ("setitem", "update", "update_kw", "setdefault", "ior"):
            self.assertIn(name, errors, f"{name} accepted the reserved key")
            self.assertIn("cookie", str(errors[name]).lower())
            self.assertIsInstance(errors[name], (KeyError, ValueError, TypeError, session.SessionError))
        self.assertFalse(errors["left"])

    def test_regenerate_replaces_id_in_place_destroys_old_record_and_sends_cookie(self):
        out = {}

        def login(environ):
            s = sess(environ)
            out["old"] = s.id
            s.regenerate()
            out.update(same=environ["session"] is s, new=s.id, empty=len(s) == 0)
            s["user"] = "ada"
        h = Harness(login)
        old = h.seed({"anon": 1})
        sc = h.request().cookie()
        self.assertEqual(out["old"], old)
        self.assertTrue(out["same"])
        self.assertTrue(out["empty"])
        self.assertNotEqual(out["new"], old)
        self.assertIsNone(h.store.get(old))
        self.assertEqual(sc.sid, out["new"])
        self.assertEqual(h.store.get(out["new"]), {**h.store.get(out["new"]), "user": "ada"})
        self.assertNotIn("anon", h.store.get(out["new"]))

    def test_regenerated_session_is_saved_and_sent_even_when_empty(self):
        h = Harness(lambda e: sess(e).regenerate())
        old = h.seed({"anon": 1})
        sc = h.request().cookie()
        self.assertIsNotNone(sc)
        self.assertNotEqual(sc.sid, old)
        self.assertIsNotNone(h.store.get(sc.sid))

    def test_destroy_deletes_record_sets_environ_none_and_expires_cookie(self):
        out = {}

        def logout(environ):
            sess(environ).destroy()
            out["value"] = environ.get("session", MISSING)
        h = Harness(lambda e: sess(e).__setitem__("user", "ada"),
                    cookie={"domain": "example.com", "path": "/", "max_age": HOUR})
        sid = h.request().cookie().sid
        h.store.reset()
        h.action = logout
        resp = h.request()
        self.assertIsNone(out["value"])
        self.assertIsNone(h.store.get(sid))
        self.assertEqual(h.store.count("set"), 0)
        sc = resp.cookie()
        self.assertIsNotNone(sc, "destroy() clears the cookie in the response")
        self.assertTrue(sc.clears, sc.raw)
        self.assertEqual(sc.attrs.get("domain"), "example.com")
        self.assertEqual(sc.attrs.get("path"), "/")
        self.assertNotIn(NAME, h.client.jar)

    def test_one_set_cookie_per_response_with_rolling_destroy_or_regenerate(self):
        for name, op in (("destroy", lambda s: s.destroy()), ("regenerate", lambda s: s.regenerate())):
            with self.subTest(op=name):
                h = Harness(lambda e, op=op: op(sess(e)), rolling=True, save_uninitialized=True,
                            cookie={"max_age": HOUR})
                sid = h.seed({"u": 1})
                resp = h.request()
                self.assertEqual(len(resp.cookies()), 1, resp.values("Set-Cookie"))
                self.assertIsNone(h.store.get(sid))
                if name == "destroy":
                    self.assertTrue(resp.cookie().clears)
                else:
                    self.assertNotEqual(resp.cookie().sid, sid)

    def test_accessed_says_whether_the_app_read_or_changed_the_session(self):
        actions = {"nothing": lambda s: None, "get": lambda s: s.get("views"),
                   "in": lambda s: "views" in s, "len": len, "set": lambda s: s.update(views=2),
                   "id": lambda s: s.id, "is_new": lambda s: s.is_new}
        for name, act in actions.items():
            with self.subTest(name):
                out = {}

                def app(environ):
                    s = sess(environ)
                    out["before"] = s.accessed
                    act(s)
                    out["after"] = s.accessed
                h = Harness(app)
                h.seed({"views": 1})
                resp = h.request()
                read = name != "nothing"  # what the ID or is_new says depends on the Cookie header too
                self.assertEqual(out, {"before": False, "after": read})
                self.assertEqual("cookie" in resp.vary, read)

    def test_reload_restores_stored_data_in_place(self):
        out = {}

        def act(environ):
            s = sess(environ)
            s["views"] = 50
            s.reload()
            out.update(views=s["views"], same=environ["session"] is s)
        h = Harness(act)
        sid = h.seed({"views": 1})
        h.request()
        self.assertEqual(out, {"views": 1, "same": True})
        self.assertEqual(h.store.get(sid)["views"], 1)

    def test_reload_sees_another_requests_write(self):
        out = {}
        h = Harness(None)
        sid = h.seed({"views": 1})

        def act(environ):
            h.store.set(sid, make_record({"views": 7}))
            sess(environ).reload()
            out["views"] = sess(environ)["views"]
        h.action = act
        h.request()
        self.assertEqual(out["views"], 7)

    def test_reload_raises_session_error_when_record_is_gone(self):
        out = {}
        h = Harness(None)
        sid = h.seed({"views": 1})

        def act(environ):
            h.store.destroy(sid)
            try:
                sess(environ).reload()
            except session.SessionError as exc:
                out["error"] = exc
        h.action = act
        h.request()
        self.assertIsInstance(out.get("error"), session.SessionError)

    def test_reload_of_a_record_that_is_not_a_session_warns_and_raises_keeping_the_data(self):
        out = {}
        h = Harness(None)
        sid = h.seed({"views": 1})

        def act(environ):
            h.store.set(sid, {"views": 7, "cookie": "not an object"})  # another app's write
            with captured_warnings() as logged:
                try:
                    sess(environ).reload()
                except session.SessionError as exc:
                    out["error"] = exc
            out.update(logged=[r.getMessage() for r in logged], views=sess(environ)["views"])
        h.action = act
        h.request()
        self.assertIsInstance(out.get("error"), session.SessionError)
        self.assertEqual(out["views"], 1)
        self.assertTrue(any("not a valid session" in m for m in out["logged"]), out["logged"])

    def test_asave_and_areload_under_wsgi_do_what_save_and_reload_do(self):
        out = {}
        h = Harness(None)
        sid = h.seed({"views": 1})

        def act(environ):
            s = sess(environ)
            s["views"] = 2
            asyncio.run(s.asave())
            out["saved"] = h.store.get(sid)["views"]
            h.store.set(sid, make_record({"views": 9}))
            asyncio.run(s.areload())
            out["reloaded"] = s["views"]
        h.action = act
        h.request()
        self.assertEqual(out, {"saved": 2, "reloaded": 9})

    def test_save_writes_now_and_not_again_when_unchanged(self):
        out = {}
        h = Harness(None)

        def act(environ):
            s = sess(environ)
            s["a"] = 1
            s.save()
            out["stored"] = h.store.get(s.id)
        h.action = act
        h.request()
        self.assertEqual(out["stored"]["a"], 1)
        self.assertEqual(h.store.count("set"), 1)
        self.assertEqual(h.store.count("touch"), 0)  # a new session is never touched, as in express

    def test_save_through_a_store_without_merge_is_not_written_again_when_unchanged(self):
        class SetOnly:  # a third-party store: get, set, touch and destroy, not a session.Store
            def __init__(self):
                self.inner = RecordingStore()

            def get(self, sid):
                return self.inner.get(sid)

            def set(self, sid, record):
                self.inner.set(sid, record)

            def touch(self, sid, record):
                self.inner.touch(sid, record)

            def destroy(self, sid):
                self.inner.destroy(sid)

        def act(environ):
            s = sess(environ)
            s["a"] = 1
            s.save()
        store = SetOnly()
        sc = Harness(act, store=store).request().cookie()
        self.assertEqual(store.inner.get(sc.sid)["a"], 1)
        self.assertEqual(store.inner.count("set"), 1)

    def test_a_session_save_found_gone_from_the_store_is_not_written_again_at_the_end(self):
        def act(environ):
            s = sess(environ)
            s["n"] = 2
            h.store.destroy(s.id)  # another request's logout, meanwhile
            s.save()
        h = Harness(act, cookie={"max_age": HOUR})
        h.seed({"n": 1})
        with self.assertLogs("session", "INFO"):
            resp = h.request()
        self.assertEqual(h.store.count("set"), 1)
        self.assertEqual(h.store.all(), {})
        self.assertIsNone(resp.cookie())

    def test_change_after_save_is_saved_at_the_end(self):
        h = Harness(None)

        def act(environ):
            s = sess(environ)
            s["a"] = 1
            s.save()
            s["b"] = 2
        h.action = act
        sc = h.request().cookie()
        self.assertEqual(h.store.count("set"), 2)
        self.assertEqual(h.store.get(sc.sid)["b"], 2)

    def test_a_saved_session_reloaded_still_counts_as_modified_since_the_request_began(self):
        # As express's isModified, against the data the request loaded: a new session saved
        # then reloaded still gets its cookie; a loaded one with an expiry, its refreshed cookie.
        def act(environ):
            s = sess(environ)
            s["a"] = s.get("a", 0) + 1
            s.save()
            s.reload()
            out.append(s.modified)
        for loaded in (False, True):
            with self.subTest(loaded=loaded):
                out = []
                h = Harness(act, cookie={"max_age": HOUR})
                if loaded:
                    h.seed({"a": 1})
                sc = h.request().cookie()
                self.assertEqual(out, [True])
                self.assertIsNotNone(sc)
                self.assertEqual(h.store.get(sc.sid)["a"], 2 if loaded else 1)

    def test_save_after_destroy_raises_session_error_and_writes_nothing(self):
        out = {}

        def act(environ):
            s = sess(environ)
            s.destroy()
            try:
                s.save()
            except session.SessionError as exc:
                out["error"] = exc
        h = Harness(act)
        sid = h.seed({"user": "ada"})
        h.request()
        self.assertIsInstance(out.get("error"), session.SessionError)
        self.assertIsNone(h.store.get(sid))
        self.assertEqual(h.store.count("set"), 0)

    def test_regenerate_after_destroy_gives_a_live_session_that_is_saved(self):
        def act(environ):
            s = sess(environ)
            s.destroy()
            s.regenerate()
            s["flash"] = "logged out"
            out.append(environ["session"] is s)
        out = []
        h = Harness(act)
        sid = h.seed({"user": "ada"})
        sc = h.request().cookie()
        self.assertEqual(out, [True])
        self.assertIsNone(h.store.get(sid))
        self.assertNotEqual(sc.sid, sid)
        self.assertEqual(h.store.get(sc.sid)["flash"], "logged out")

    def test_a_cookie_lifetime_changed_after_save_reaches_the_record(self):
        # Login, save(), then "remember me": the record must not expire before the cookie.
        def act(environ):
            s = sess(environ)
            s.regenerate()
            s["user"] = "ada"
            s.save()
            s.cookie.max_age = 30 * 86400
        h = Harness(act, cookie={"max_age": HOUR})
        h.seed({"user": None})
        sc = h.request().cookie()
        record = h.store.get(sc.sid)
        stored = dt.datetime.fromisoformat(record["cookie"]["expires"].replace("Z", "+00:00"))
        self.assertAlmostEqual(stored.timestamp(), sc.expires, delta=2)
        self.assertEqual(record["cookie"]["originalMaxAge"], 30 * 86400 * 1000)

    def test_touch_resets_max_age_to_original_max_age(self):
        out = {}

        def act(environ):
            c = sess(environ).cookie
            out["before"] = c.max_age
            sess(environ).touch()
            out["after"] = c.max_age
            out["original"] = c.original_max_age
        h = Harness(act, cookie={"max_age": HOUR})
        h.seed({"a": 1}, expires_in=100)
        h.request()
        self.assertAlmostEqual(out["before"], 100, delta=3)
        self.assertAlmostEqual(out["after"], HOUR, delta=3)
        self.assertEqual(out["original"], HOUR)

    def test_nested_cookie_key_is_ordinary_data(self):
        h = Harness(lambda e: sess(e).__setitem__("user", {"cookie": 1, "name": "bob"}))
        sc = h.request().cookie()
        self.assertEqual(h.store.get(sc.sid)["user"], {"cookie": 1, "name": "bob"})

    def test_non_json_value_raises_type_error_naming_key_and_record_unchanged(self):
        # cookie last: no data JSON is kept at load, the values written are compared instead
        for where, cookie_last in itertools.product(("end", "save"), (False, True)):
            with self.subTest(where=where, cookie_last=cookie_last):
                def act(environ, where=where):
                    s = sess(environ)
                    s["when"] = dt.datetime.now()
                    if where == "save":
                        s.save()
                h = Harness(act)
                record = make_record({"views": 1})
                if cookie_last:
                    record["cookie"] = record.pop("cookie")
                sid = h.seed(record=record)
                before = h.store.get(sid)
                with self.assertRaises(TypeError) as ctx:
                    h.request()
                self.assertIn("when", str(ctx.exception))
                self.assertEqual(h.store.get(sid), before)

    def test_non_json_value_error_says_what_to_store_instead(self):
        # "Object of type datetime is not JSON serializable" named the problem, not the fix.
        for value, hint in ((dt.datetime.now(), "isoformat()"), ({1, 2}, "list"),
                            (b"x", "str"), (object(), "dict")):
            with self.subTest(value=value):
                h = Harness(lambda e, value=value: sess(e).__setitem__("v", value))
                with self.assertRaises(TypeError) as ctx:
                    h.request()
                self.assertIn("session['v']", str(ctx.exception))
                self.assertIn(hint, str(ctx.exception))

    def test_nested_non_json_value_names_the_top_level_key(self):
        h = Harness(lambda e: sess(e).__setitem__("profile", {"ok": 1, "tags": {1, 2}}))
        with self.assertRaises(TypeError) as ctx:
            h.request()
        self.assertIn("profile", str(ctx.exception))
        self.assertEqual(h.store.length(), 0)
