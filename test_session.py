"""The core's test suite: session.py against its documentation (README.md, docs/) and express-session 1.19.

    python -m unittest test_session -v

runs the core suites, split by concern under tests/ (the harness they share is
tests/harness.py), and MemoryStore's store conformance class.  Every test drives the
real SessionMiddleware with real stores, in-process through a strict WSGI caller with
a cookie jar, and once over real sockets with wsgiref.  Test names state the rule each
one proves, so the list of names reads as the specification.  Standard library only.

Plain ``python -m unittest`` finds these suites in tests/ by itself; this module then
adds nothing, so no test runs twice.
"""
from __future__ import annotations

import sys
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CORE_SUITES = (
    "tests.test_decisions",           # express's four predicates as truth tables, lifecycle, Vary
    "tests.test_options",             # construction, genid, name, environ_key, proxy/secure, path
    "tests.test_cookie",              # Cookie attributes, the Set-Cookie header, to_json
    "tests.test_signing",             # cookie-signature vectors, compare_digest, secrets
    "tests.test_records",             # the record format; records that are not sessions
    "tests.test_session_api",         # Session as a dict; regenerate, destroy, reload, save, touch
    "tests.test_streaming",           # store writes before the last chunk; over real sockets
    "tests.test_bad_input",           # malformed cookies, failing stores, hostile input
    "tests.test_store_capabilities",  # get_text and merge: same results, shortcut taken
    "tests.test_decisions_both_adapters",  # the decisions' tables and lifecycle through ASGI
    "tests.test_asgi",                # ASGISessionMiddleware against the ASGI protocol, no framework
    "tests.test_stores_stdlib.TestMemoryStore",  # the store contract over MemoryStore, and its own rules
)


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite, pattern) -> unittest.TestSuite:
    """The core suites when this module is named (pattern is None); nothing under discovery,
    which finds them in tests/ itself."""
    if pattern is not None:
        return unittest.TestSuite()
    return loader.loadTestsFromNames(CORE_SUITES)


if __name__ == "__main__":
    unittest.main()
