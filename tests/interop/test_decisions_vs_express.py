"""Our per-request decisions are express-session's: a fixed set of random scenarios (seeded), run
through the real express-session 1.19 in node (on Express 4, then on Express 5) and through
SessionMiddleware in-process (decisions_node.js, decisions_py.py), must give the same outcome,
request by request: cookie set or not (and its lifetime, its attributes), store get / set /
touch / destroy and the record written, what the handler saw.  The generator leaves out the
differences accepted on purpose (see decisions_diff.gen_scenario), so any difference fails,
shown on its smallest scenario.
The same scenarios through ASGISessionMiddleware (decisions_asgi.py) must give what
SessionMiddleware gives: that needs no node.

Needs node with ``cd tests/interop && npm ci``.  To look further by hand:
``python tests/interop/decisions_diff.py --n 20000 --seed 7``.
"""
from __future__ import annotations

import itertools
import unittest

from tests.harness import setUpModule, tearDownModule  # noqa: F401  (quiet session warnings)
from tests.interop import decisions_asgi, decisions_diff
from tests.interop.test_interop import NODE_MODULES
from tests.support import has_program, requires

SEED = 20250601
COUNT = 1000  # about 3,000 requests a side, 3 s

# The differences gen_scenario leaves out, each on a scenario that shows it (options: OPTIONS).
ACCEPTED = {
    "float over an equal int": [{"cookie": "none", "actions": [["write", "a", 1]]},
                                {"cookie": "jar", "actions": [["write", "a", 1.0]]}],
    "-0.0 over 0": [{"cookie": "none", "actions": [["write", "a", 0]]},
                    {"cookie": "jar", "actions": [["write", "a", -0.0]]}],
    "a key put back behind an integer-like one": [
        {"cookie": "none", "actions": [["write", "b", 1], ["write", "1", 2]]},
        {"cookie": "jar", "actions": [["move", "b"]]}],
    "lifetime changed after save()": [{"cookie": "none", "actions": [["save"], ["expiresIn", 7200000]]}],
    "a change after save() after maxAge = 0": [
        {"cookie": "none", "actions": [["maxAge", 0], ["save"], ["write", "a", 1]]}],
    "sameSite changed after regenerate() and save()": [
        {"cookie": "none", "actions": [["regenerate"], ["save"], ["sameSite", "strict"]]}],
}
OPTIONS = {"resave": False, "saveUninitialized": True, "rolling": False, "unset": "keep", "maxAge": 3600000,
           "httpOnly": True, "sameSite": None, "name": "connect.sid"}


def coverage_gaps(scenarios: list) -> list:
    """What the scenarios never use: an action, a key, an option's value, a way of sending the cookie."""
    actions = [a for sc in scenarios for r in sc["requests"] for a in r["actions"]]
    gaps = [f"action {v}" for v in decisions_diff.VERBS if v not in {a[0] for a in actions}]
    keys = {a[1] for a in actions if a[0] in ("write", "delete", "move")}
    gaps += [f"key {k}" for k in sorted(set(itertools.chain(*decisions_diff.KEYS)) - keys)]
    for name, values in decisions_diff.OPTIONS.items():
        seen = {(type(sc["options"][name]), sc["options"][name]) for sc in scenarios}
        gaps += [f"option {name}={v!r}" for v in values if (type(v), v) not in seen]
    modes = {r["cookie"] for sc in scenarios for r in sc["requests"]}
    gaps += [f"cookie {m}" for m in decisions_diff.COOKIES if m not in modes]
    return gaps


@requires(has_program("node"), "install Node.js 18+: apt-get install -y nodejs npm")
@requires(NODE_MODULES, "install the Express app: run: cd tests/interop && npm ci")
class TestDecisionsMatchExpress(unittest.TestCase):
    """COUNT seeded random scenarios: express-session's outcome on Express 4 and ours are the same."""

    EXPRESS = "4"

    def test_every_scenario_has_the_same_outcome_on_both(self):
        scenarios = decisions_diff.gen_scenarios(COUNT, SEED)
        found = decisions_diff.differing(scenarios, self.EXPRESS)
        if found:
            smallest = decisions_diff.shrink(*min(found, key=lambda t: decisions_diff.size(t[0])), self.EXPRESS)
            self.fail(f"express-session on Express {self.EXPRESS} and SessionMiddleware differ in {len(found)} "
                      f"of {COUNT} scenarios (seed {SEED}); the smallest, shrunk:\n"
                      f"{decisions_diff.describe(*smallest)}\nAll of them: python tests/interop/decisions_diff.py "
                      f"--n {COUNT} --seed {SEED} --express {self.EXPRESS}")

    def test_the_scenarios_use_every_action_key_option_and_cookie(self):
        self.assertEqual(coverage_gaps(decisions_diff.gen_scenarios(COUNT, SEED)), [])

    def test_the_differences_left_out_are_seen(self):
        """The comparison sees a difference: each one the generator leaves out is one.  Where
        session.py comes to agree with express on one, this fails: drop its rule (_agrees)."""
        scenarios = [{"options": OPTIONS, "requests": requests} for requests in ACCEPTED.values()]
        for name, sc, (a, b) in zip(ACCEPTED, scenarios, decisions_diff.run_both(scenarios, self.EXPRESS)):
            with self.subTest(name):
                self.assertNotEqual(a, b, decisions_diff.describe(sc, a, b))


class TestDecisionsMatchExpress5(TestDecisionsMatchExpress):
    """The same scenarios on Express 5: express-session's outcome there and ours are the same."""

    EXPRESS = "5"
    # The scenarios alone, generated as above: no Express runs.
    test_the_scenarios_use_every_action_key_option_and_cookie = None


class TestAdaptersAgree(unittest.TestCase):
    """The same scenarios through ASGISessionMiddleware (asyncio, in-process, the store called
    inline) and SessionMiddleware: the same outcome, once each request's deletions are compared
    last (under ASGI, regenerate() and destroy() delete before the response ends, not at once).
    Needs nothing but Python: with the test above, ASGI's decisions are express's too."""

    def test_every_scenario_has_the_same_outcome_under_asgi_and_wsgi(self):
        scenarios = decisions_diff.gen_scenarios(COUNT, SEED)
        found = decisions_asgi.differing(scenarios, "asgi-vs-wsgi", node=False)
        if found:
            sc, a, b = min(found, key=lambda t: decisions_diff.size(t[0]))
            smallest = decisions_asgi.shrink(sc, a, b, "asgi-vs-wsgi", node=False)
            shown = decisions_diff.describe(*smallest).replace(" express:", " wsgi:").replace(" ours:   ", " asgi:")
            self.fail(f"ASGISessionMiddleware and SessionMiddleware differ in {len(found)} of {COUNT} "
                      f"scenarios (seed {SEED}); the smallest, shrunk:\n{shown}\n"
                      f"All of them: python tests/interop/decisions_asgi.py --n {COUNT} --seed {SEED} --no-node")


if __name__ == "__main__":
    unittest.main()
