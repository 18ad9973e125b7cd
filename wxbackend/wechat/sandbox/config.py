"""What the sandbox emulates: two apps, their credentials, and WeChat's limits.

::

    config = SandboxConfig.from_settings(settings, callback_url="http://127.0.0.1:8000/wechat/oa")
    config = SandboxConfig(oa_appid="wx1", oa_secret="s1", oa_token="t", oa_aes_key=key43,
                           mp_appid="wx2", mp_secret="s2", token_ttl=2,
                           daily_quota={"/cgi-bin/message/custom/send": 3})
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from wxbackend.settings import Settings

# WeChat's documented limits, per appid. Tests shrink them.
DEFAULT_DAILY_QUOTA = {
    "/cgi-bin/token": 2000,
    "/cgi-bin/stable_token": 500_000,
    "/cgi-bin/stable_token#force_refresh": 20,
}
DEFAULT_MINUTE_LIMIT = {
    "/cgi-bin/stable_token": 10_000,
    "/wxa/getwxacodeunlimit": 5000,
}


@dataclass
class SandboxConfig:
    oa_appid: str
    oa_secret: str
    oa_token: str
    oa_aes_key: str  # EncodingAESKey, 43 characters; unused in plain mode
    mp_appid: str
    mp_secret: str
    # Our server's callback (/wechat/oa) that the simulated users talk to.
    callback_url: str = ""
    mode: str = "safe"  # "safe" (encrypted) or "plain"
    oa_original_id: str = ""  # gh_...; derived from the appid when empty
    token_ttl: int = 7200
    # stable_token hands out a new token only in the last N seconds of the old one.
    stable_renew_seconds: int = 300
    # After /cgi-bin/token issues a new token the previous one works this long.
    token_grace_seconds: int = 300
    daily_quota: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_DAILY_QUOTA))
    minute_limit: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MINUTE_LIMIT))
    # Customer-service messages only within this time after the user's last action.
    custom_window_seconds: int = 48 * 3600
    # Lifetime of login, OAuth and phone codes.
    code_ttl: int = 300
    # WeChat waits 5 s for a callback answer, then retries (3 retries in all).
    callback_timeout_seconds: float = 5.0
    callback_retries: int = 3

    def __post_init__(self) -> None:
        if self.mode not in ("safe", "plain"):
            raise ValueError("mode must be 'safe' or 'plain'")
        if self.mode == "safe" and len(self.oa_aes_key) != 43:
            raise ValueError("safe mode needs a 43-character EncodingAESKey")
        if not self.oa_original_id:
            self.oa_original_id = "gh_" + hashlib.sha256(self.oa_appid.encode()).hexdigest()[:12]

    @property
    def renew_seconds(self) -> int:
        # A short test TTL must not leave every token inside the renewal window.
        return min(self.stable_renew_seconds, self.token_ttl // 2)

    @classmethod
    def from_settings(cls, settings: Settings, *, callback_url: str = "",
                      mode: str | None = None, **overrides: object) -> SandboxConfig:
        """The apps of ``settings.wechat``; safe mode when an EncodingAESKey is set."""
        wechat = settings.wechat
        mode = mode or ("safe" if wechat.oa_aes_key else "plain")
        # The ToUserName our callback checks when [wechat] oa_original_id is set.
        overrides.setdefault("oa_original_id", wechat.oa_original_id)
        return cls(oa_appid=wechat.oa_appid, oa_secret=wechat.oa_secret,
                   oa_token=wechat.oa_token, oa_aes_key=wechat.oa_aes_key,
                   mp_appid=wechat.mp_appid, mp_secret=wechat.mp_secret,
                   callback_url=callback_url, mode=mode, **overrides)
