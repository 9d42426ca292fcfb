"""Shared pytest fixtures: where the build and the sources are, and a dsocr-server launcher."""
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

SOURCE_DIR = pathlib.Path(os.environ.get("DSOCR_SOURCE_DIR", pathlib.Path(__file__).parents[2]))
BUILD_DIR = pathlib.Path(os.environ.get("DSOCR_BUILD_DIR", SOURCE_DIR / "build"))
BIN_DIR = BUILD_DIR / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A dsocr-server child process on a free loopback port, stopped with SIGTERM."""

    def __init__(self, *args: str, env: dict | None = None, port: int | None = None):
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # The log goes to a file: a pipe nobody reads fills up and blocks the server.
        self.log = tempfile.NamedTemporaryFile("w+", prefix="dsocr-server-", suffix=".log")
        self.proc = subprocess.Popen(
            [str(BIN_DIR / "dsocr-server"), "--port", str(self.port), *args],
            stdout=self.log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})})

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("server did not become healthy in time")

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.output()


@pytest.fixture
def demo_server(tmp_path):
    server = ServerProcess("--model", "demo", env={"DSOCR_CACHE_DIR": str(tmp_path / "cache")})
    server.cache_dir = tmp_path / "cache"
    try:
        server.wait_healthy()
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
