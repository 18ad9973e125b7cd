"""Access tokens as WeChat issues them.

- ``GET /cgi-bin/token``: a new token on every call; the previous one keeps
  working for ``token_grace_seconds`` (WeChat: 5 minutes), then 40001.
- ``POST /cgi-bin/stable_token`` (JSON body only; separate from the above):
  the same token while it has more than ``renew_seconds`` left, then a new
  one (the old one works until it expires). ``force_refresh`` revokes the
  current token at once, at most 20 a day (45009; ``daily_quota`` key
  ``/cgi-bin/stable_token#force_refresh``);
  a second force within 30 s returns the current token unchanged.

::

    curl -X POST localhost:9100/cgi-bin/stable_token \\
         -d '{"grant_type":"client_credential","appid":"wx..","secret":".."}'
"""

from __future__ import annotations

from wxbackend.wechat.sandbox.base import ApiHandler
from wxbackend.wechat.sandbox.world import ApiError, App, Token, World

FORCE_MIN_INTERVAL_SECONDS = 30
# Pseudo-API under which forced refreshes are counted (daily quota, /sandbox/stats).
FORCE_REFRESH = "/cgi-bin/stable_token#force_refresh"


def _answer(world: World, token: Token) -> dict[str, object]:
    return {"access_token": token.value,
            "expires_in": max(1, int(token.expires_at - world.clock()))}


class TokenHandler(ApiHandler):
    def get(self) -> None:
        if self.get_query_argument("grant_type", "") != "client_credential":
            raise ApiError(40002, "invalid grant_type")
        app = self.world.credentials(self.get_query_argument("appid", ""),
                                     self.get_query_argument("secret", ""))
        self.world.count_usage(app.appid, self.request.path)
        previous = self.world.tokens_by_kind.get(("token", app.appid))
        if previous is not None and previous.revoked_at is None:
            previous.revoked_at = self.world.clock() + self.world.config.token_grace_seconds
        token = self.world.issue_token(app.appid)
        self.world.tokens_by_kind[("token", app.appid)] = token
        self.write_json(_answer(self.world, token))


class StableTokenHandler(ApiHandler):
    def post(self) -> None:
        body = self.json_body()
        if body.get("grant_type") != "client_credential":
            raise ApiError(40002, "invalid grant_type")
        app = self.world.credentials(str(body.get("appid", "")), str(body.get("secret", "")))
        self.world.count_usage(app.appid, self.request.path)
        token = self._forced(app) if body.get("force_refresh") is True else self._current(app)
        self.write_json(_answer(self.world, token))

    def _current(self, app: App) -> Token:
        now = self.world.clock()
        current = self.world.tokens_by_kind.get(("stable", app.appid))
        if (current is not None and current.revoked_at is None
                and current.expires_at - now > self.world.config.renew_seconds):
            return current
        return self._replace(app)

    def _forced(self, app: App) -> Token:
        now = self.world.clock()
        current = self.world.tokens_by_kind.get(("stable", app.appid))
        last = self.world.last_force.get(app.appid)
        if current is not None and last is not None and now - last < FORCE_MIN_INTERVAL_SECONDS:
            return current
        self.world.count_usage(app.appid, FORCE_REFRESH)
        self.world.calls[FORCE_REFRESH] += 1
        self.world.last_force[app.appid] = now
        if current is not None:
            current.revoked_at = now
        return self._replace(app)

    def _replace(self, app: App) -> Token:
        token = self.world.issue_token(app.appid)
        self.world.tokens_by_kind[("stable", app.appid)] = token
        return token
