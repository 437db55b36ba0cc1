"""Shared helpers for the test suites: prerequisites that skip locally and fail in CI.

A suite that needs Redis, Node.js, a browser or a driver package decorates its
TestCase with ``@requires(ok, "install X: apt-get install -y x")``.  Locally a
missing prerequisite skips the suite with that one-line reason; when CI sets
``SESSION_TESTS_STRICT=1`` the same suite fails instead, so a broken install
step can never hide behind a skip.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import unittest

STRICT = os.environ.get("SESSION_TESTS_STRICT") == "1"


def has_module(name: str) -> bool:
    """True when ``import name`` would find the module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def has_program(name: str) -> bool:
    """True when an executable of that name is on PATH."""
    return shutil.which(name) is not None


def requires(ok: bool, reason: str):
    """Class or test decorator: run when ``ok``; else skip (locally) or fail (in CI)."""
    if ok:
        return lambda obj: obj
    if not STRICT:
        return unittest.skip(reason)

    def fail_instead(obj):
        if isinstance(obj, type):
            def setUpClass(cls):
                raise AssertionError(f"prerequisite missing (SESSION_TESTS_STRICT=1): {reason}")
            obj.setUpClass = classmethod(setUpClass)
            return obj

        def failing(*args, **kwargs):
            raise AssertionError(f"prerequisite missing (SESSION_TESTS_STRICT=1): {reason}")
        failing.__name__ = obj.__name__
        return failing
    return fail_instead


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
