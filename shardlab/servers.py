"""Real ``redis-server`` processes on free ports of 127.0.0.1, started and stopped here.

Used by ``shardlab replay --redis-servers N`` and by the tests in ``tests/redis``.
Each server runs in a temporary directory without persistence (``--save ""``,
``--appendonly no``), listens on 127.0.0.1 only, and counts as started once it answers
PING. Each runs in a session of its own, so a signal to the caller's process group
(Ctrl-C in a terminal, ``kill -INT -PGID``) does not stop it before the caller has
stopped what uses it. `RedisServers` is a context manager: the servers are stopped
when its block ends, also on Ctrl-C (KeyboardInterrupt), SIGTERM (inside
`signals_recorded`) or an error, and at interpreter exit as a last resort.
`RedisServers.kill` and `RedisServers.restart` crash one server (SIGKILL) and bring it
back, empty, on the same port: the shard crash of ``shardlab replay``. A server this
module did not start (a system service on 6379) is never used or touched.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServers", "RedisServerError", "find_redis_server", "free_port", "ping",
           "send_command", "start_server", "stop_server", "HOW_TO_INSTALL", "Terminated",
           "signals_recorded"]

START_TIMEOUT = 10.0
HOW_TO_INSTALL = ("install it with `make test` (as root, with apt-get) or: "
                  "apt-get install redis-server")


class RedisServerError(RuntimeError):
    """A redis-server could not be found or started; the message is one line."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM inside `signals_recorded`: a KeyboardInterrupt,
    so every ``finally`` and context manager that handles Ctrl-C stops servers too."""


@contextlib.contextmanager
def signals_recorded(received: list[str]):
    """Within the block, SIGINT raises KeyboardInterrupt and SIGTERM `Terminated`, so the
    cleanup that runs for Ctrl-C runs for ``kill PID`` as well; the first signal is
    recorded in ``received`` ("SIGINT" or "SIGTERM"), and from then on both are
    ignored, so a second Ctrl-C cannot cut the cleanup short. Only in the main thread;
    elsewhere a no-op."""
    def handler(signum, frame):
        received.append("SIGINT" if signum == signal.SIGINT else "SIGTERM")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated("SIGTERM")
    try:
        previous = {sig: signal.signal(sig, handler)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def find_redis_server() -> str | None:
    """The path of ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def send_command(port: int, command: bytes) -> bytes:
    """Send one inline command (``b"FLUSHALL\\r\\n"``) and return the first reply bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        s.sendall(command)
        return s.recv(64)


def _die_with_parent():
    """A ``preexec_fn`` that makes the server get SIGTERM when this process dies
    (``PR_SET_PDEATHSIG``, Linux), or None where that is not available."""
    try:
        import ctypes
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    return preexec


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_server(binary: str, workdir: Path,
                 port: int | None = None) -> tuple[subprocess.Popen, int]:
    """One server on a free port (or on ``port``); a few tries in case another process
    takes the port."""
    workdir = Path(workdir)
    last = ""
    fixed = port
    for _ in range(5):
        port = fixed if fixed is not None else free_port()
        log = workdir / f"redis-{port}.log"
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir),
             "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # its own session: a Ctrl-C or SIGTERM to our process group does not reach
            # it, so it runs until we stop it (after our children), never first; and
            # it still ends with us if we are killed outright
            start_new_session=True, preexec_fn=_die_with_parent())
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and proc.poll() is None:
                if ping(port):
                    return proc, port
                time.sleep(0.02)
        except BaseException:  # Ctrl-C while it starts: not in any list yet, stop it here
            stop_server(proc)
            raise
        stop_server(proc)
        last = log.read_text(errors="replace")[-400:] if log.exists() else ""
    raise RedisServerError(f"redis-server did not answer PING; last log: {last!r}")


class RedisServers:
    """``count`` redis-server processes, started on entering and stopped on leaving.

    ``ports`` and ``urls`` are set once started. ``workdir`` (default: a temporary
    directory removed at the end) holds their logs.
    """

    def __init__(self, count: int, workdir: str | Path | None = None,
                 binary: str | None = None):
        if count < 1:
            raise RedisServerError(f"server count {count!r} is not allowed; allowed: >= 1")
        self.count = count
        self.binary = binary
        self._workdir = Path(workdir) if workdir is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self._binary: str | None = None
        self._dir: Path | None = None

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{p}/0" for p in self.ports]

    def start(self) -> "RedisServers":
        binary = self.binary or find_redis_server()
        if binary is None:
            raise RedisServerError(f"redis-server is not on PATH; {HOW_TO_INSTALL}")
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="shardlab-redis-")
            workdir = Path(self._tmp.name)
        else:
            workdir = self._workdir
        self._binary, self._dir = binary, workdir
        atexit.register(self.stop)
        try:
            for _ in range(self.count):
                proc, port = start_server(binary, workdir)
                self.procs.append(proc)
                self.ports.append(port)
        except BaseException:  # Ctrl-C or a failed start: leave nothing running
            self.stop()
            raise
        return self

    def kill(self, index: int) -> None:
        """Crash server ``index`` with SIGKILL (no shutdown, nothing saved)."""
        proc = self.procs[index]
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self, index: int) -> None:
        """Start server ``index`` again on its port, empty (no persistence)."""
        if self.procs[index].poll() is None:
            raise RedisServerError(f"server {index} on port {self.ports[index]} is running; "
                                   "kill it first")
        proc, _ = start_server(self._binary, self._dir, port=self.ports[index])
        self.procs[index] = proc

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def flushall(self) -> None:
        for port in self.ports:
            send_command(port, b"FLUSHALL\r\n")

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            stop_server(proc)
        self.ports = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        atexit.unregister(self.stop)

    def __enter__(self) -> "RedisServers":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
