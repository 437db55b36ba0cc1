"""http_demo.py run as a real subprocess on a free port, for the demo's HTTP and browser suites."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "http_demo.py")


class DemoProcess:
    """Start http_demo.py with ``--port 0``, read the URL it prints, stop it with SIGTERM.

    stdout is read by a thread (so the pipe never fills); stderr, the access log
    and any traceback, goes to a file. Both are kept for assertions.
    """

    def __init__(self, *args: str, env: dict | None = None, cwd: str | None = None,
                 python_prelude: str | None = None):
        self.args = ["--port", "0", *args]
        self.env = env
        self.cwd = cwd
        # Code run before the demo in the same interpreter (e.g. to hide a driver package).
        self.python_prelude = python_prelude
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.stdout_lines: list[str] = []
        self.returncode: int | None = None

    def command(self) -> list[str]:
        if self.python_prelude is None:
            return [sys.executable, DEMO, *self.args]
        code = (f"{self.python_prelude}\nimport runpy, sys\nsys.argv = {[DEMO, *self.args]!r}\n"
                f"sys.path.insert(0, {os.path.dirname(DEMO)!r})\n"
                f"runpy.run_path({DEMO!r}, run_name='__main__')")
        return [sys.executable, "-c", code]

    def start(self, timeout: float = 20) -> "DemoProcess":
        """Start the demo and wait until it prints the URL it serves."""
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.stdout_lines = []
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                     text=True, encoding="utf-8")
        lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, args=(lines,), daemon=True)
        self._reader.start()
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                self.stop()
                raise AssertionError(f"http_demo.py printed no URL in {timeout}s: {self.output()}")
            if line is None:
                self.proc.wait()
                raise AssertionError(f"http_demo.py exited {self.proc.returncode}: {self.output()}")
            match = re.search(r"http://\S+", line)
            if match:
                self.url = match.group(0).rstrip("/")
                return self

    def _read_stdout(self, lines: queue.Queue) -> None:
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            lines.put(line)
        lines.put(None)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then wait; returns the exit status (kills it if it does not stop)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"http_demo.py did not stop within {timeout}s of SIGTERM")
        finally:
            self._reader.join(5)
            self.proc.stdout.close()
            self.proc = None
            self._stderr_text = self.stderr()
            self._stderr.close()
        return self.returncode

    def stdout(self) -> str:
        return "".join(self.stdout_lines)

    def stderr(self) -> str:
        if self._stderr.closed:
            return self._stderr_text
        self._stderr.seek(0)
        return self._stderr.read()

    def output(self) -> str:
        return f"stdout:\n{self.stdout()}\nstderr:\n{self.stderr()}"

    def __enter__(self) -> "DemoProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def clean_env(**extra: str) -> dict:
    """The environment without SESSION_SECRET (so a test decides where the secret comes from)."""
    env = {k: v for k, v in os.environ.items() if k != "SESSION_SECRET"}
    env.update(extra)
    return env
