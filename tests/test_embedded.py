"""The embedded Redis requires a password, and each of its clients gets the URL carrying it.

The session's ``servers`` (tests/conftest.py) are EmbeddedServers like any
others, so every test of the suite already talks to a Redis that refuses
clients without the password; these tests say so explicitly, and follow the
password from dev-secrets.toml through the runtime to a worker subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis
import redis.exceptions

from wxbackend.capability import Registry
from wxbackend.embedded import EmbeddedServers
from wxbackend.runtime import open_runtime
from wxbackend.settings import load_settings


def test_the_session_redis_refuses_clients_without_the_password(servers):
    port = servers.redis.port
    assert servers.redis_url == f"redis://:{servers.redis_password}@127.0.0.1:{port}/0"
    with pytest.raises(redis.exceptions.AuthenticationError, match="required"):  # NOAUTH
        redis.Redis(port=port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError, match="invalid"):  # WRONGPASS
        redis.Redis(port=port, password="not-the-password").ping()
    assert redis.Redis.from_url(servers.redis_url).ping() is True


def test_the_password_stays_off_the_command_line_and_survives_a_restart(tmp_path):
    servers = EmbeddedServers(tmp_path, mongo=False, redis_password="Given-password_1.~")
    # A command line is readable by every local user (ps): the password goes in a file.
    assert not any("Given-password" in part for part in servers.redis.command_for(servers.redis.port))
    assert (tmp_path / "redis" / "auth.conf").stat().st_mode & 0o077 == 0
    with servers:
        assert redis.Redis.from_url(servers.redis_url).ping() is True
        servers.redis.stop()
        servers.redis.start()  # as the outage tests restart it
        with pytest.raises(redis.exceptions.AuthenticationError, match="required"):
            redis.Redis(port=servers.redis.port).ping()
        assert redis.Redis.from_url(servers.redis_url).ping() is True


def test_a_password_that_a_url_would_mangle_is_refused(tmp_path):
    with pytest.raises(ValueError, match="only letters, digits"):
        EmbeddedServers(tmp_path, mongo=False, redis_password="p@ss:word")


@pytest.mark.slow  # a worker subprocess: ~6 s
async def test_serve_worker_and_commands_share_the_kept_password(tmp_path):
    settings = load_settings(environ={"WXB_DATA_DIR": str(tmp_path)})
    password = settings.redis.embedded_password  # generated into dev-secrets.toml
    async with open_runtime(settings, Registry((), settings), owner=True) as rt:  # as serve does
        assert rt.redis_url.startswith(f"redis://:{password}@127.0.0.1:")
        assert await rt.ctx.redis.ping()
        with pytest.raises(redis.exceptions.AuthenticationError, match="required"):
            redis.Redis(port=rt.servers.redis.port).ping()
        state = tmp_path / "embedded.json"
        assert state.stat().st_mode & 0o077 == 0  # it holds the password
        assert json.loads(state.read_text())["redis_url"] == rt.redis_url
        # A worker (serve --demo starts one so) finds the URL there and authenticates.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WXB_DATA_DIR": str(tmp_path),
               "WXB_LOG_FORMAT": "text"}
        worker = subprocess.run([sys.executable, "-m", "wxbackend", "worker", "--burst"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stderr
        assert "worker stopped" in worker.stderr
        assert password not in worker.stderr + worker.stdout
