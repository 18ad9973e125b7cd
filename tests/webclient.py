"""An HTTP client for the management web in tests.

httpx's cookie jar will not send ``Secure`` cookies over plain http (our
session and XSRF cookies are Secure), so this client keeps cookies itself,
as a browser does for http://127.0.0.1.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import httpx


class WebClient:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=30)
        self.cookies: dict[str, str] = {}

    async def close(self) -> None:
        await self.http.aclose()

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.http.request(method, url, headers=headers, **kwargs)
        self._remember(response)
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def xsrf(self) -> str:
        if "_xsrf" not in self.cookies:
            await self.get("/admin/login")
        return self.cookies["_xsrf"]

    async def post_form(self, url: str, data: dict[str, Any] | None = None, *,
                        xsrf: bool = True, **kwargs: Any) -> httpx.Response:
        data = dict(data or {})
        if xsrf:
            data["_xsrf"] = await self.xsrf()
        return await self.request("POST", url, data=data, **kwargs)

    async def login(self, username: str, password: str) -> httpx.Response:
        response = await self.post_form("/admin/login", {"username": username, "password": password})
        assert response.status_code == 302, response.text
        return response
