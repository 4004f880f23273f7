"""Real redis-server processes for the tests in tests/redis.

`redis_servers` starts ``SERVERS`` servers once per session through
`shardlab.servers.RedisServers` (each on a free port of 127.0.0.1, in a temporary
directory, without persistence) and stops them at the end (also when a test fails).
It never uses a server it did not start, such as a system service on 6379.
`redis_urls` hands a test their URLs after emptying them. Without ``redis-server`` on
PATH, or without redis-py, the tests skip with the reason (under CI, where
``make test`` installs the server, a missing one fails instead).
"""

from __future__ import annotations

import os

import pytest

from shardlab.servers import HOW_TO_INSTALL, RedisServers, find_redis_server, send_command

SERVERS = 3


@pytest.fixture(scope="session")
def redis_binary():
    """The redis-server binary (skips, or fails under CI, when there is none)."""
    pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")
    binary = find_redis_server()
    if binary is None:
        if os.environ.get("CI"):  # CI's make test installs it: its absence is a failure
            pytest.fail(f"redis-server is not on PATH under CI; {HOW_TO_INSTALL}")
        pytest.skip(f"redis-server is not on PATH; {HOW_TO_INSTALL}")
    return binary


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory, redis_binary):
    """Ports of ``SERVERS`` redis-server processes started for this session."""
    servers = RedisServers(SERVERS, workdir=tmp_path_factory.mktemp("redis"),
                           binary=redis_binary)
    with servers:
        yield list(servers.ports)


@pytest.fixture
def redis_urls(redis_servers):
    """URLs of the session's servers, emptied (FLUSHALL) before the test."""
    for port in redis_servers:
        send_command(port, b"FLUSHALL\r\n")
    return [f"redis://127.0.0.1:{port}/0" for port in redis_servers]


@pytest.fixture
def small(tmp_path):
    """The path of `redis_checks.SMALL` written to a file."""
    from redis_checks import SMALL
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return str(path)
