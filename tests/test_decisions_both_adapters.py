"""express-session's decisions as truth tables, defined once and run through both adapters.

shouldSetCookie, shouldSave, shouldTouch and shouldDestroy live in the core that
SessionMiddleware (WSGI) and ASGISessionMiddleware share; each scenario below is
written once against a harness (``action(context)`` runs in the app, the session at
``context["session"]``, setting it to None detaches it) and runs over both adapters, so
a decision that one adapter gets differently from the other fails here.
"""
from __future__ import annotations

import logging
import unittest

from test_session import HOUR, NAME, Harness, cookie_value
from tests.asgi_support import ASGIHarness


def sess(context):
    return context["session"]


class ExpressDecisions:
    """The scenarios; a subclass names the adapter's harness."""

    harness: type
    STATES = ("no-cookie", "unknown-id", "existing")
    FLAGS = ("modified", "save_uninitialized", "resave", "rolling", "with_expires")

    def setUp(self):
        logging.getLogger("session").setLevel(logging.ERROR)  # the expected warnings are not news here
        self.addCleanup(logging.getLogger("session").setLevel, logging.NOTSET)

    @staticmethod
    def expected(state, modified, save_uninitialized, resave, rolling, with_expires):
        if state != "existing":
            return {"set_cookie": save_uninitialized or modified,
                    "save": save_uninitialized or modified, "touch": False}
        save = modified or resave
        return {"set_cookie": rolling or (with_expires and modified), "save": save, "touch": not save}

    def run_case(self, state, modified, save_uninitialized, resave, rolling, with_expires):
        max_age = HOUR if with_expires else None

        def action(context):
            if modified:
                sess(context)["n"] = 2
        h = self.harness(action, save_uninitialized=save_uninitialized, resave=resave, rolling=rolling,
                         cookie={"max_age": max_age})
        if state == "existing":
            h.seed({"n": 1}, max_age=max_age)
        elif state == "unknown-id":
            h.client.jar[NAME] = cookie_value("no-such-id-in-the-store")
        resp = h.request()
        return {"set_cookie": resp.cookie() is not None, "save": h.store.count("set") > 0,
                "touch": h.store.count("touch") > 0}

    def walk(self, predicate):
        for state in self.STATES:
            for flags in [(m, su, rs, ro, ex) for m in (False, True) for su in (False, True)
                          for rs in (False, True) for ro in (False, True) for ex in (False, True)]:
                with self.subTest(state=state, **dict(zip(self.FLAGS, flags))):
                    got = self.run_case(state, *flags)
                    self.assertEqual(got[predicate], self.expected(state, *flags)[predicate])

    def test_should_set_cookie_truth_table(self):
        self.walk("set_cookie")

    def test_should_save_truth_table(self):
        self.walk("save")

    def test_should_touch_truth_table(self):
        self.walk("touch")

    def test_should_destroy_truth_table(self):
        for state in ("no-cookie", "existing"):
            for unset in ("keep", "destroy"):
                for dropped in (False, True):
                    with self.subTest(state=state, unset=unset, dropped=dropped):
                        def action(context, dropped=dropped):
                            sess(context)["n"] = 5
                            if dropped:
                                context["session"] = None
                        h = self.harness(action, unset=unset)
                        sid = h.seed({"n": 1}) if state == "existing" else None
                        resp = h.request()
                        if state == "existing":
                            gone = h.store.get(sid) is None
                            self.assertEqual(gone, unset == "destroy" and dropped)
                            self.assertEqual(resp.cookie() is not None and resp.cookie().clears,
                                             unset == "destroy" and dropped)
                            if dropped:
                                self.assertEqual(h.store.count("set"), 0)
                                if unset == "keep":
                                    self.assertEqual(h.store.get(sid)["n"], 1)
                        else:
                            self.assertEqual(h.store.count("set"), 0 if dropped else 1)

    def test_regenerate_destroys_the_old_record_and_saves_and_sends_the_new_one(self):
        h = self.harness(lambda c: (sess(c).regenerate(), sess(c).__setitem__("user", "ada")))
        old = h.seed({"anon": 1})
        sc = h.request().cookie()
        self.assertIsNotNone(sc)
        self.assertNotEqual(sc.sid, old)
        self.assertIsNone(h.store.get(old))
        self.assertEqual(h.store.get(sc.sid)["user"], "ada")
        self.assertNotIn("anon", h.store.get(sc.sid))

    def test_destroy_deletes_the_record_detaches_the_session_and_expires_the_cookie(self):
        seen = {}

        def logout(context):
            sess(context).destroy()
            seen["after"] = context["session"]
        h = self.harness(logout, cookie={"max_age": HOUR, "domain": "example.com"})
        sid = h.seed({"user": "ada"}, domain="example.com")
        resp = h.request()
        self.assertIsNone(seen["after"])
        self.assertIsNone(h.store.get(sid))
        self.assertEqual(h.store.count("set"), 0)
        self.assertTrue(resp.cookie().clears, resp.cookie().raw)
        self.assertEqual(resp.cookie().attrs.get("domain"), "example.com")

    def test_a_session_deleted_while_the_request_ran_is_not_written_back_nor_its_cookie_resent(self):
        def action(context):
            s = sess(context)
            s["n"] = 2
            h.store.destroy(s.id)   # another request logged this session out meanwhile
        h = self.harness(action, rolling=True, cookie={"max_age": HOUR})
        sid = h.seed({"n": 1})
        resp = h.request()
        self.assertIsNone(h.store.get(sid))
        self.assertIsNone(resp.cookie())


class TestExpressDecisionsWSGI(ExpressDecisions, unittest.TestCase):
    harness = Harness


class TestExpressDecisionsASGI(ExpressDecisions, unittest.TestCase):
    harness = ASGIHarness


if __name__ == "__main__":
    unittest.main()
