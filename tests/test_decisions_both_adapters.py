"""express-session's decisions through ASGISessionMiddleware, from the definitions that prove them
for SessionMiddleware.

The truth tables of shouldSetCookie, shouldSave, shouldTouch and shouldDestroy, and the
lifecycle scenarios, are written once in tests/test_decisions.py against a harness
(``action(context)`` runs in the app, the session at ``context["session"]``, setting it to None
detaches it).  The classes here run those same tests with tests/asgi_support's ASGIHarness, over
the same two stores, so a decision one adapter gets differently from the other fails here.
"""
from __future__ import annotations

import unittest

from tests.asgi_support import ASGIHarness, call_asgi, make_scope, simple_app
from tests.harness import SECRET, CapableMemoryStore, PlainMemoryStore
from tests.harness import setUpModule, tearDownModule  # noqa: F401 (quiet expected warnings)
from tests.test_decisions import ExpressPredicates, Lifecycle

import session


class TestExpressPredicatesASGIWithCapabilities(ExpressPredicates, unittest.TestCase):
    """The truth tables through ASGISessionMiddleware, over a store that offers get_text and merge."""
    store_factory, capable, adapter = CapableMemoryStore, True, ASGIHarness


class TestExpressPredicatesASGIWithoutCapabilities(ExpressPredicates, unittest.TestCase):
    """The truth tables through ASGISessionMiddleware, over a store with get and set only."""
    store_factory, capable, adapter = PlainMemoryStore, False, ASGIHarness


class ASGILifecycle(Lifecycle):
    adapter = ASGIHarness

    def test_second_middleware_passes_the_request_through(self):
        inner_store, outer_store = self.store_factory(), self.store_factory()
        inner = session.ASGISessionMiddleware(simple_app(lambda s: s["session"].__setitem__("u", 1)),
                                              secret="inner", store=inner_store)
        outer = session.ASGISessionMiddleware(inner, secret=SECRET, store=outer_store)
        resp = call_asgi(outer, make_scope())
        self.assertEqual(len(resp.cookies()), 1)
        self.assertEqual(outer_store.length(), 1)
        self.assertEqual(inner_store.calls, [])


class TestLifecycleASGIWithCapabilities(ASGILifecycle, unittest.TestCase):
    store_factory = CapableMemoryStore


class TestLifecycleASGIWithoutCapabilities(ASGILifecycle, unittest.TestCase):
    store_factory = PlainMemoryStore


if __name__ == "__main__":
    unittest.main()
