"""Settings: defaults, WXB_* overrides, one-line errors, dev keys, CLI."""

import base64
import subprocess
import sys
import tomllib

import pytest

from wxbackend.settings import DEFAULT_FILE, URL_SAFE_PASSWORD, ConfigError, env_name, load_settings


def prod_env(tmp_path, **extra):
    env = {"WXB_DATA_DIR": str(tmp_path), "WXB_MONGODB_URI": "mongodb://db.example:27017",
           "WXB_REDIS_URL": "redis://cache.example:6379/0",
           "WXB_SECURITY_SECRET_KEY": "s" * 40,
           "WXB_SECURITY_FIELD_KEY": base64.b64encode(b"k" * 32).decode()}
    env.update(extra)
    return env


def test_every_default_setting_is_commented():
    section, undocumented, previous = None, [], ""
    for line in DEFAULT_FILE.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and not previous.startswith("#"):
            undocumented.append(f"{section}.{line.split('=')[0].strip()}")
        previous = line
    assert undocumented == []


def test_environment_overrides_by_type(tmp_path):
    settings = load_settings(environ=prod_env(tmp_path, WXB_HTTP_PORT="8081", WXB_LOG_LEVEL="DEBUG",
                                              WXB_HTTP_XHEADERS="true"))
    assert settings.http.port == 8081
    assert settings.http.xheaders is True
    assert settings.log.level == "DEBUG"


def test_architecture_setting_names_exist():
    names = ["WXB_HTTP_HOST", "WXB_HTTP_PORT", "WXB_DATA_DIR", "WXB_MONGODB_URI", "WXB_REDIS_URL", "WXB_WECHAT_OA_APPID", "WXB_WECHAT_OA_SECRET", "WXB_WECHAT_OA_TOKEN", "WXB_WECHAT_OA_AES_KEY", "WXB_WECHAT_MP_APPID", "WXB_WECHAT_MP_SECRET", "WXB_WECHAT_API_BASE", "WXB_WECHATPAY_MCHID", "WXB_WECHATPAY_APIV3_KEY", "WXB_WECHATPAY_PRIVATE_KEY_FILE", "WXB_WECHATPAY_CERT_SERIAL", "WXB_WECHATPAY_PUBLIC_KEY_FILE", "WXB_WECHATPAY_API_BASE", "WXB_SECURITY_SECRET_KEY", "WXB_SECURITY_FIELD_KEY"]
    defaults = tomllib.loads(DEFAULT_FILE.read_text())
    known = {env_name(s, k) for s, keys in defaults.items() for k in keys}
    assert set(names) <= known


@pytest.mark.parametrize("env, message", [
    ({"WXB_HTTP_PORT": "eighty"}, "WXB_HTTP_PORT: expected an integer"),
    ({"WXB_HTTP_PORT": "70000"}, "WXB_HTTP_PORT: must be 1-65535"),
    ({"WXB_HTTP_XHEADERS": "maybe"}, "WXB_HTTP_XHEADERS: expected true or false"),
    ({"WXB_SECURITY_FIELD_KEY": ""}, "WXB_SECURITY_FIELD_KEY: required"),
    ({"WXB_SECURITY_FIELD_KEY": "not base64!"}, "WXB_SECURITY_FIELD_KEY: must be base64"),
    ({"WXB_SECURITY_FIELD_KEY": base64.b64encode(b"short").decode()}, "must decode to 32 bytes"),
    ({"WXB_SECURITY_SECRET_KEY": ""}, "WXB_SECURITY_SECRET_KEY: required"),
    ({"WXB_LOG_FORMAT": "xml"}, "WXB_LOG_FORMAT"),
    ({"WXB_HTTP_METRICS_NETWORKS": "10.0.0.0/33"}, "WXB_HTTP_METRICS_NETWORKS: '10.0.0.0/33' does not appear"),
    ({"WXB_HTTP_METRICS_NETWORKS": "127.0.0.0/8,localhost"}, "WXB_HTTP_METRICS_NETWORKS: 'localhost'"),
    ({"WXB_HTTP_METRICS_NETWORKS": "10.0.0.1/8"}, "WXB_HTTP_METRICS_NETWORKS: 10.0.0.1/8 has host bits set"),
    ({"WXB_REDIS_EMBEDDED_PASSWORD": "p@ss:word"}, "WXB_REDIS_EMBEDDED_PASSWORD: only letters"),
])
def test_bad_settings_name_the_setting(tmp_path, env, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=prod_env(tmp_path, **env))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_file_unknown_setting_is_refused(tmp_path):
    path = tmp_path / "extra.toml"
    path.write_text("[http]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting http\.prot"):
        load_settings(path, environ=prod_env(tmp_path))
    path.write_text("[http\n")
    with pytest.raises(ConfigError, match=r"extra\.toml"):
        load_settings(path, environ=prod_env(tmp_path))


def test_embedded_mode_generates_dev_keys_once(tmp_path):
    first = load_settings(environ={"WXB_DATA_DIR": str(tmp_path)})
    second = load_settings(environ={"WXB_DATA_DIR": str(tmp_path)})
    assert len(first.security.secret_key) >= 32
    assert first.security.field_key == second.security.field_key
    assert first.wechat.oa_aes_key == second.wechat.oa_aes_key
    assert len(first.wechat.oa_aes_key) == 43
    assert (tmp_path / "dev-secrets.toml").stat().st_mode & 0o077 == 0
    # The embedded Redis's password: kept with the keys, usable in a URL as it is.
    assert first.redis.embedded_password == second.redis.embedded_password
    assert len(first.redis.embedded_password) >= 32
    assert URL_SAFE_PASSWORD.fullmatch(first.redis.embedded_password)
    stored = tomllib.loads((tmp_path / "dev-secrets.toml").read_text())
    assert stored["redis"]["embedded_password"] == first.redis.embedded_password


def test_redis_password_is_kept_only_for_an_embedded_redis(tmp_path):
    external = load_settings(environ={"WXB_DATA_DIR": str(tmp_path), "WXB_REDIS_URL": "redis://cache:6379/0"})
    assert external.redis.embedded_password == ""
    assert "redis" not in tomllib.loads((tmp_path / "dev-secrets.toml").read_text())
    given = load_settings(environ={"WXB_DATA_DIR": str(tmp_path), "WXB_REDIS_EMBEDDED_PASSWORD": "chosen-pw"})
    assert given.redis.embedded_password == "chosen-pw"
    assert "redis" not in tomllib.loads((tmp_path / "dev-secrets.toml").read_text())  # given, not stored


def test_production_mode_does_not_invent_secrets(tmp_path):
    env = prod_env(tmp_path)
    del env["WXB_SECURITY_SECRET_KEY"]
    with pytest.raises(ConfigError, match="WXB_SECURITY_SECRET_KEY: required when WXB_MONGODB_URI is set"):
        load_settings(environ=env)
    assert not (tmp_path / "dev-secrets.toml").exists()
    # Nor an embedded Redis's password: EmbeddedServers makes one per start, unstored.
    env["WXB_SECURITY_SECRET_KEY"] = "s" * 40
    del env["WXB_REDIS_URL"]
    assert load_settings(environ=env).redis.embedded_password == ""
    assert not (tmp_path / "dev-secrets.toml").exists()


def run_cli(tmp_path, *args, **env):
    full_env = {"PATH": "/usr/bin:/bin", "WXB_DATA_DIR": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-m", "wxbackend", *args], capture_output=True, text=True,
                          env=full_env, timeout=60)


def test_cli_reports_a_bad_setting_in_one_line(tmp_path):
    result = run_cli(tmp_path, "check-config", WXB_HTTP_PORT="abc")
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: WXB_HTTP_PORT: expected an integer, got 'abc'"


def test_cli_check_config_hides_secrets(tmp_path):
    result = run_cli(tmp_path, "check-config")
    assert result.returncode == 0, result.stderr
    assert "mode: embedded" in result.stdout
    assert "field_key = (set)" in result.stdout
    secrets = tomllib.loads((tmp_path / "dev-secrets.toml").read_text())
    assert secrets["security"]["field_key"] not in result.stdout


def test_cli_check_config_hides_the_password_of_a_database_url(tmp_path):
    result = run_cli(tmp_path, "check-config", **prod_env(
        tmp_path, WXB_REDIS_URL="redis://:redis-pw-123@10.1.1.1:6379/0",
        WXB_MONGODB_URI="mongodb://app:mongo-pw-456@10.1.1.2:27017/?replicaSet=rs0"))
    assert result.returncode == 0, result.stderr
    assert "redis-pw-123" not in result.stdout and "mongo-pw-456" not in result.stdout
    assert "redis://:***@10.1.1.1:6379/0" in result.stdout and "mongodb://app:***@10.1.1.2" in result.stdout


@pytest.mark.parametrize("command", ["serve", "seed", "import-members", "create-admin", "check-config"])
def test_cli_commands_have_help(tmp_path, command):
    result = run_cli(tmp_path, command, "--help")
    assert result.returncode == 0
    assert "usage: python -m wxbackend " + command in result.stdout
