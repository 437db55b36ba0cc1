"""Type checkers: the hints users' mypy and pyright (VS Code's Pylance) read are right.

- tests/typed_usage.py, an annotated app using the whole public API (WSGI; Starlette, Litestar
  and Quart, each with its own ASGI types; every store; Store subclasses), passes
  ``mypy --strict`` and pyright's strict mode: a hint of ours that rejects correct code would
  fail here.
- Code that misuses the API (a str for a boolean cookie attribute, an int secret...) is
  reported, line by line: the hints are not so loose that they accept anything.
- session.py and stores/ pass both checkers with their default settings, as a project that
  vendors them runs the checkers over them, and ``mypy --strict`` too, as a strict project
  that vendors them (session.py alone, or with stores) runs it.
- A wheel built from the checkout and installed (``pip install .``) is typed for mypy: stores/
  through its ``py.typed``, session.py through the one setting the README gives.

mypy and pyright (the PyPI package, which bundles pyright and runs it on Node.js) are needed,
and Starlette, Litestar and Quart for typed_usage.py; .ci/requirements.txt pins them.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

from tests.support import has_module, requires

ROOT = pathlib.Path(__file__).resolve().parent.parent
USAGE = ROOT / "tests" / "typed_usage.py"
SOURCES = ["session.py", "stores"]

# Each line marked "# error" must be reported, and no other.
MISUSE = '''
from session import ASGISessionMiddleware, Cookie, MemoryStore, Session, SessionMiddleware

def app(environ: dict, start_response: object) -> list:
    return []

sess = Session()
sess.cookie.secure = "yes"  # error
sess.cookie.http_only = None  # error
sess.cookie.same_site = 1.5  # error
sess.cookie.path = 7  # error
sess.cookie.max_age = "60"  # error
sid: int = sess.id  # error
sess.regenerate(True)  # error
SessionMiddleware(app, secret=42)  # error
SessionMiddleware(app, secret="s", store=MemoryStore(ttl="1d"))  # error
SessionMiddleware(app, secret="s", resave="no")  # error
ASGISessionMiddleware(app, secret="s", scope_key=None)  # error
Cookie(max_age=60, secure=True, same_site="lax", domain="example.com")
'''


def _run(command: list, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)


class Checker:
    """One type checker, run over files of the repository (or of a temporary directory that
    sees the repository's modules): ``errors`` gives (file name, line, message) for each."""

    def errors(self, paths: list, strict: bool = False, cwd: pathlib.Path = ROOT) -> list:
        raise NotImplementedError


class Mypy(Checker):
    def errors(self, paths: list, strict: bool = False, cwd: pathlib.Path = ROOT) -> list:
        with tempfile.TemporaryDirectory() as cache:
            # A strict user's settings apply to their own files: what mypy finds through an
            # import (session.py, seen from typed_usage.py) is checked as the default run does.
            command = [sys.executable, "-m", "mypy", "--cache-dir", cache, "--no-error-summary",
                       "--show-error-codes", "--no-color-output"]
            if strict:
                command += ["--strict", "--follow-imports=silent"]
            out = _run(command + [str(p) for p in paths], cwd)
        found = []
        for line in out.stdout.splitlines():
            match = re.match(r"(.+?):(\d+): error: (.*)", line)
            if match:
                found.append((pathlib.Path(match[1]).name, int(match[2]), match[3]))
        if out.returncode not in (0, 1) or (out.returncode == 1 and not found):
            raise AssertionError(f"mypy did not run:\n{out.stdout}\n{out.stderr}")
        return found


class Pyright(Checker):
    def errors(self, paths: list, strict: bool = False, cwd: pathlib.Path = ROOT) -> list:
        with tempfile.TemporaryDirectory() as config_dir:
            config = pathlib.Path(config_dir, "pyrightconfig.json")
            config.write_text(json.dumps({
                "typeCheckingMode": "standard",
                "pythonVersion": "3.9",  # the oldest the project supports (mypy goes to 3.10)
                "strict": [str(cwd / p) for p in paths] if strict else [],
                "extraPaths": [str(ROOT)],
            }))
            out = _run([shutil.which("pyright") or "pyright", "--outputjson", "--pythonpath",
                        sys.executable, "--project", str(config),
                        *[str(cwd / p) for p in paths]], cwd)
        try:
            report = json.loads(out.stdout)
        except ValueError:
            raise AssertionError(f"pyright did not run:\n{out.stdout}\n{out.stderr}") from None
        return [(pathlib.Path(d["file"]).name, d["range"]["start"]["line"] + 1, d["message"])
                for d in report["generalDiagnostics"] if d["severity"] == "error"]


class TypesCases:
    """What each checker must say; a subclass names the checker."""

    checker: Checker

    def test_an_annotated_app_passes_strict(self):
        self.assertEqual(self.checker.errors([USAGE.relative_to(ROOT)], strict=True), [])

    def test_misuse_is_reported_line_by_line(self):
        expected = {n for n, line in enumerate(MISUSE.splitlines(), 1) if line.endswith("# error")}
        with tempfile.TemporaryDirectory() as tmp:
            pathlib.Path(tmp, "misuse.py").write_text(MISUSE)
            for name in ("session.py", "stores"):  # the modules, beside the code as a user has them
                os.symlink(ROOT / name, pathlib.Path(tmp, name))
            errors = self.checker.errors([pathlib.Path("misuse.py")], cwd=pathlib.Path(tmp))
        reported = {line for name, line, _ in errors if name == "misuse.py"}
        self.assertEqual(sorted(reported), sorted(expected), "\n".join(map(str, errors)))

    def test_session_py_and_the_stores_pass_the_default_check(self):
        self.assertEqual(self.checker.errors([pathlib.Path(p) for p in SOURCES]), [])


@requires(has_module("mypy") and all(map(has_module, ("starlette", "litestar", "quart"))),
          "install mypy and the frameworks: pip install mypy starlette litestar quart")
class MypyTest(TypesCases, unittest.TestCase):
    checker = Mypy()

    def test_the_sources_pass_strict(self):
        self.assertEqual(self.checker.errors([pathlib.Path(p) for p in SOURCES], strict=True), [])


INSTALLED_USE = '''
from session import Session
from stores import SQLiteStore
Session().cookie.secure = "yes"  # error
SQLiteStore(7)  # error
'''
# The README's advice for a pip-installed copy: a single-file module has no py.typed.
INSTALLED_CONFIG = '''
[[tool.mypy.overrides]]
module = ["session"]
follow_untyped_imports = true
'''


@requires(has_module("mypy") and has_module("setuptools"),
          "install mypy and setuptools: pip install mypy setuptools")
class InstalledTest(unittest.TestCase):
    """``pip install .`` as a user's mypy sees it: stores/ typed through its py.typed, session
    through the README's one setting."""

    def test_an_installed_copy_is_typed(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = pathlib.Path(tmp)
            source = tmp_path / "source"  # a copy: no build/ left in the checkout, none reused
            source.mkdir()
            for name in ("pyproject.toml", "README.md", "LICENSE", "session.py"):
                shutil.copy(ROOT / name, source)
            shutil.copytree(ROOT / "stores", source / "stores",
                            ignore=shutil.ignore_patterns("__pycache__"))
            built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--quiet", "-w", str(tmp_path / "dist"), str(source)], tmp_path)
            self.assertEqual(built.returncode, 0, built.stderr)
            wheel, = (tmp_path / "dist").glob("*.whl")
            _run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], tmp_path)
            python = tmp_path / "venv" / "bin" / "python"
            site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        tmp_path).stdout.strip()
            with zipfile.ZipFile(wheel) as archive:  # what pip would put in site-packages
                archive.extractall(site)
            self.assertTrue((pathlib.Path(site) / "stores" / "py.typed").exists())
            (tmp_path / "app").mkdir()
            (tmp_path / "app" / "use.py").write_text(INSTALLED_USE)
            (tmp_path / "app" / "pyproject.toml").write_text(INSTALLED_CONFIG)
            out = _run([sys.executable, "-m", "mypy", "--python-executable", str(python),
                        "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", "use.py"],
                       tmp_path / "app")
        expected = [n for n, line in enumerate(INSTALLED_USE.splitlines(), 1)
                    if line.endswith("# error")]
        reported = sorted({int(m[1]) for m in re.finditer(r"^use\.py:(\d+): error", out.stdout, re.M)})
        self.assertEqual(reported, expected, out.stdout + out.stderr)


@requires(shutil.which("pyright") is not None
          and all(map(has_module, ("starlette", "litestar", "quart"))),
          "install pyright and the frameworks: pip install pyright starlette litestar quart")
class PyrightTest(TypesCases, unittest.TestCase):
    checker = Pyright()


if __name__ == "__main__":
    unittest.main()
