"""Settings: config/default.toml, an optional file, then WXB_* environment.

Every key in ``config/default.toml`` can be overridden by the environment
variable ``WXB_<SECTION>_<KEY>``; the type of the default decides how the
value is parsed. Errors are raised as :class:`ConfigError` carrying one line
that names the setting, so the CLI can print it instead of a traceback::

    settings = load_settings(environ={"WXB_HTTP_PORT": "8080"})
    settings.http.port  # 8080
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "config" / "default.toml"
DEV_SECRETS_FILE = "dev-secrets.toml"

# Settings that production mode (external MongoDB) refuses to start without.
REQUIRED_IN_PRODUCTION = (("security", "secret_key"), ("security", "field_key"))

# What an embedded Redis password may hold: RFC 3986's unreserved characters, so it
# goes into a redis:// URL and redis.conf as it is (arq's from_dsn does not unquote).
URL_SAFE_PASSWORD = re.compile(r"[A-Za-z0-9._~-]+")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing or malformed; str() is one line naming it."""


def env_name(section: str, key: str) -> str:
    return f"WXB_{section}_{key}".upper()


def _parse(section: str, key: str, default: Any, raw: Any) -> Any:
    name = env_name(section, key)
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if not isinstance(raw, str):
        raise ConfigError(f"{name}: expected a string, got {raw!r}")
    return raw


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


@functools.lru_cache(maxsize=16)
def parse_networks(value: str, name: str) -> tuple[Network, ...]:
    """A comma-separated list of networks or addresses (an address is a network of one).

    ``parse_networks("127.0.0.0/8, ::1", "WXB_HTTP_METRICS_NETWORKS")`` gives
    ``(IPv4Network('127.0.0.0/8'), IPv6Network('::1/128'))``. Host bits ("10.0.0.1/8")
    are refused rather than masked: such an entry is a typo or a misunderstanding.
    Cached, so a handler may call it on each request.
    """
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return tuple(networks)


def decode_key(value: str, name: str, length: int = 32) -> bytes:
    """Decode a base64 key of exactly ``length`` bytes or raise ConfigError."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name}: must be base64") from None
    if len(raw) != length:
        raise ConfigError(f"{name}: must decode to {length} bytes, got {len(raw)}")
    return raw


class Settings(SimpleNamespace):
    """Sections as attributes: ``settings.http.port``."""

    @property
    def embedded_mongo(self) -> bool:
        return not self.mongodb.uri

    @property
    def embedded_redis(self) -> bool:
        return not self.redis.url

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir).resolve()

    @property
    def public_url(self) -> str:
        return self.http.public_url.rstrip("/") or f"http://{self.http.host}:{self.http.port}"

    def field_key_bytes(self) -> bytes:
        return decode_key(self.security.field_key, env_name("security", "field_key"))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dict(vars(section)) for name, section in vars(self).items()}


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    create_dev_secrets: bool = True,
) -> Settings:
    """Read defaults, an optional file and the environment, then validate."""
    environ = os.environ if environ is None else environ
    defaults = _read_toml(DEFAULT_FILE)
    values = {section: dict(keys) for section, keys in defaults.items()}
    config_file = config_file or environ.get("WXB_CONFIG")
    if config_file:
        _merge(values, defaults, _read_toml(Path(config_file)), str(config_file))
    for section, keys in defaults.items():
        for key, default in keys.items():
            name = env_name(section, key)
            if name in environ:
                values[section][key] = _parse(section, key, default, environ[name])
    settings = Settings(**{s: SimpleNamespace(**kv) for s, kv in values.items()})
    if settings.embedded_mongo and create_dev_secrets:
        _fill_dev_secrets(settings)
    _validate(settings)
    return settings


def _merge(values: dict, defaults: dict, overrides: dict, origin: str) -> None:
    for section, keys in overrides.items():
        if section not in defaults or not isinstance(keys, dict):
            raise ConfigError(f"{origin}: unknown section [{section}]")
        for key, raw in keys.items():
            if key not in defaults[section]:
                raise ConfigError(f"{origin}: unknown setting {section}.{key}")
            values[section][key] = _parse(section, key, defaults[section][key], raw)


def _fill_dev_secrets(settings: Settings) -> None:
    """Embedded mode: generate development keys once and keep them in the data dir."""
    path = settings.data_dir / DEV_SECRETS_FILE
    stored: dict[str, dict[str, str]] = {}
    if path.exists():
        stored = _read_toml(path)
    generated = {
        ("security", "secret_key"): lambda: secrets.token_urlsafe(48),
        ("security", "field_key"): lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
        ("wechat", "oa_appid"): lambda: "wxdemo" + secrets.token_hex(6),
        ("wechat", "oa_secret"): lambda: secrets.token_hex(16),
        ("wechat", "oa_token"): lambda: secrets.token_hex(8),
        ("wechat", "oa_aes_key"): lambda: base64.b64encode(secrets.token_bytes(32)).decode()[:43],
        ("wechat", "mp_appid"): lambda: "wxmini" + secrets.token_hex(6),
        ("wechat", "mp_secret"): lambda: secrets.token_hex(16),
    }
    if settings.embedded_redis:
        # Kept, not made anew at each start, so redis-cli -a works across restarts.
        generated[("redis", "embedded_password")] = lambda: secrets.token_urlsafe(32)
    changed = False
    for (section, key), make in generated.items():
        current = getattr(getattr(settings, section), key)
        if current:
            continue
        value = stored.get(section, {}).get(key)
        if not value:
            value = make()
            stored.setdefault(section, {})[key] = value
            changed = True
        setattr(getattr(settings, section), key, value)
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# Development keys generated for embedded mode. Never use in production.\n"]
        for section, keys in stored.items():
            lines.append(f"\n[{section}]\n")
            lines.extend(f'{key} = "{value}"\n' for key, value in keys.items())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(lines)


def _validate(settings: Settings) -> None:
    if not 0 < settings.http.port < 65536:
        raise ConfigError(f"WXB_HTTP_PORT: must be 1-65535, got {settings.http.port}")
    if not settings.embedded_mongo:
        for section, key in REQUIRED_IN_PRODUCTION:
            if not getattr(getattr(settings, section), key):
                raise ConfigError(f"{env_name(section, key)}: required when WXB_MONGODB_URI is set")
    parse_networks(settings.http.metrics_networks, env_name("http", "metrics_networks"))
    _validate_mongodb(settings.mongodb)
    password = settings.redis.embedded_password
    if password and not URL_SAFE_PASSWORD.fullmatch(password):
        raise ConfigError("WXB_REDIS_EMBEDDED_PASSWORD: only letters, digits and -._~ allowed")
    if len(settings.security.secret_key) < 32:
        raise ConfigError("WXB_SECURITY_SECRET_KEY: must be at least 32 characters")
    settings.field_key_bytes()
    if settings.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"WXB_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR, got {settings.log.level!r}")
    if settings.log.format not in ("json", "text"):
        raise ConfigError(f"WXB_LOG_FORMAT: must be json or text, got {settings.log.format!r}")
    aes = settings.wechat.oa_aes_key
    if aes and len(aes) != 43:
        raise ConfigError("WXB_WECHAT_OA_AES_KEY: EncodingAESKey must be 43 characters")


# pymongo's floor for heartbeatFrequencyMS.
MIN_HEARTBEAT_MS = 500
MONITORING_MODES = ("auto", "stream", "poll")


def _validate_mongodb(mongodb: SimpleNamespace) -> None:
    """The driver's timeouts: a typo must not start a server that drops its pool at every stall."""
    for prefix in ("", "embedded_"):
        for key, low in (("connect_timeout_ms", 1), ("heartbeat_frequency_ms", MIN_HEARTBEAT_MS),
                         ("socket_timeout_ms", 0), ("max_idle_time_ms", 0)):
            value = getattr(mongodb, prefix + key)
            if value < low:
                raise ConfigError(f"{env_name('mongodb', prefix + key)}: must be at least {low}, got {value}")
    if mongodb.server_selection_timeout_ms < 1:
        raise ConfigError("WXB_MONGODB_SERVER_SELECTION_TIMEOUT_MS: must be at least 1")
    if mongodb.server_monitoring_mode not in MONITORING_MODES:
        raise ConfigError("WXB_MONGODB_SERVER_MONITORING_MODE: must be auto, stream or poll, "
                          f"got {mongodb.server_monitoring_mode!r}")
