"""Real redis-server processes for the tests in tests/redis.

`redis_servers` starts ``SERVERS`` servers once per session, each on a free port of
127.0.0.1 in its own temporary directory, without persistence, and stops them at the
end (also when a test fails). It never uses a server it did not start, such as a
system service on 6379. `redis_urls` hands a test their URLs after emptying them.
Without ``redis-server`` on PATH, or without redis-py, the tests skip with the reason
(under CI, where ``make test`` installs the server, a missing one fails instead).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

SERVERS = 3
START_TIMEOUT = 10.0
_HOW = "install it with `make test` (as root, with apt-get) or: apt-get install redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _send(port: int, command: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        s.sendall(command)
        s.recv(64)


def _start(binary: str, workdir) -> tuple[subprocess.Popen, int]:
    """One server on a free port; a few tries in case another process takes the port."""
    last = ""
    for _ in range(5):
        port = _free_port()
        log = workdir / f"redis-{port}.log"
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir),
             "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _ping(port):
                return proc, port
            time.sleep(0.02)
        _stop(proc)
        last = log.read_text(errors="replace")[-400:] if log.exists() else ""
    raise RuntimeError(f"redis-server did not answer PING; last log: {last!r}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory):
    """Ports of ``SERVERS`` redis-server processes started for this session."""
    pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):  # CI's make test installs it: its absence is a failure
            pytest.fail(f"redis-server is not on PATH under CI; {_HOW}")
        pytest.skip(f"redis-server is not on PATH; {_HOW}")
    workdir = tmp_path_factory.mktemp("redis")
    procs: list[subprocess.Popen] = []
    ports: list[int] = []
    try:
        for _ in range(SERVERS):
            proc, port = _start(binary, workdir)
            procs.append(proc)
            ports.append(port)
        yield ports
    finally:
        for proc in procs:
            _stop(proc)


@pytest.fixture
def redis_urls(redis_servers):
    """URLs of the session's servers, emptied (FLUSHALL) before the test."""
    for port in redis_servers:
        _send(port, b"FLUSHALL\r\n")
    return [f"redis://127.0.0.1:{port}/0" for port in redis_servers]
