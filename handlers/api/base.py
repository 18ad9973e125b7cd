"""The one API convention of ``/api/v1``, written once.

An endpoint is a handler method wrapped by :func:`endpoint`, which declares
its schemas and rules; the wrapper authenticates, validates, enforces the
idempotency key and encodes the response, and the OpenAPI generator reads
the same declaration::

    class MeHandler(ApiHandler):
        @endpoint(summary="我的信息", response=MemberView, bound=True)
        async def get(self) -> MemberView:
            return ...

    ROUTES = [api_route("/api/v1/me", MeHandler)]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import tornado.web

from handlers.api.schemas import FieldError
from handlers.base import JSON_TYPE, JsonHandler, json_bytes
from wxbackend import idempotency
from wxbackend.errors import DomainError, InvalidInput, TooManyRequests, Unauthorized
from wxbackend.services.accounts import mpsessions
from wxbackend.services.accounts.mpsessions import MemberSession
from wxbackend.services.orgs import mpauth

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class EndpointSpec:
    summary: str
    request: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    auth: bool = True
    bound: bool = False
    former_members: bool = False  # with bound: also members who left (their own profile, history)
    idempotent: bool = False
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""
    raw_response: str | None = None  # media type of a non-JSON response (e.g. image/png)


def endpoint(summary: str, **options: Any) -> Callable:
    """Declare an API method: schemas, auth, idempotency; see EndpointSpec."""
    spec = EndpointSpec(summary, **options)

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable:
        @functools.wraps(method)
        async def run(self: ApiHandler, *args: Any, **kwargs: Any) -> None:
            await self.enter(spec)
            if spec.query is not None:
                kwargs["query"] = self.parse_query(spec.query)
            if spec.request is not None:
                kwargs["body"] = self.parse_body(spec.request)
            if spec.idempotent:
                await self.run_idempotent(spec, method, args, kwargs)
            else:
                self.send(spec, await method(self, *args, **kwargs))

        run.__api__ = spec  # type: ignore[attr-defined]
        return run

    return wrap


@dataclass
class ApiRoute:
    template: str                    # OpenAPI path, e.g. /api/v1/meetings/{meeting_id}
    handler: type[tornado.web.RequestHandler]
    params: dict[str, str] = field(default_factory=dict)

    @property
    def pattern(self) -> str:
        def group(match: re.Match) -> str:
            name = match.group(1)
            return f"(?P<{name}>{self.params.get(name, '[^/]+')})"
        return re.sub(r"\{(\w+)\}", group, self.template)


def api_route(template: str, handler: type[tornado.web.RequestHandler], **params: str) -> tuple:
    """A route entry whose OpenAPI template is kept beside the Tornado pattern."""
    route = ApiRoute(template, handler, params)
    return (route.pattern, handler, {"route": route})


class ApiHandler(JsonHandler):
    session: MemberSession | None = None

    def initialize(self, ctx: Any, route: ApiRoute | None = None) -> None:
        super().initialize(ctx)
        self.route = route

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", JSON_TYPE)
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:  # RFC 9110: say which methods the resource has
            self.set_header("Allow", ", ".join(m.upper() for m in ("get", "post", "put", "patch", "delete")
                                               if hasattr(getattr(self, m, None), "__api__")))
        super().write_error(status_code, **kwargs)

    async def enter(self, spec: EndpointSpec) -> None:
        """Size limit, authentication and rate limits, before any work."""
        api = self.ctx.settings.api
        if len(self.request.body) > api.max_body_bytes:
            raise DomainError("payload_too_large", "请求内容过大", status=413)
        token = self._bearer_token()
        admission = await mpsessions.admit(self.ctx, self.client_ip, token)
        if admission.ip_count > api.rate_per_ip_per_minute or (
                admission.user_count > api.rate_per_user_per_minute):
            raise TooManyRequests("rate_limited", "请求过于频繁，请稍后再试",
                                  retry_after=admission.retry_after)
        if token is not None and admission.session is None:
            raise Unauthorized("token_invalid", "登录已失效，请重新登录")
        self.session = admission.session
        if spec.auth and self.session is None:
            raise Unauthorized("token_invalid", "登录已失效，请重新登录")
        if spec.bound and (self.session is None or self.session.member_id is None):
            raise DomainError("not_bound", "请先绑定党员身份", status=403)
        if spec.bound and self.session.former and not spec.former_members:
            # A first gate from the session; mpauth.current_member checks the member itself.
            raise mpauth.inactive_error(self.session.member_state)

    def _bearer_token(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or len(token) > 200:
            raise Unauthorized("token_invalid", "登录已失效，请重新登录")
        return token.strip()

    def parse_body(self, schema: type) -> Any:
        body = self.request.body
        if not body:
            raise InvalidInput("invalid_json", "请求内容应为 JSON")
        try:
            return msgspec.json.decode(body, type=schema)
        except msgspec.ValidationError as exc:
            raise _validation_error(exc) from None
        except msgspec.DecodeError:
            raise InvalidInput("invalid_json", "请求内容不是有效的 JSON") from None
        except UnicodeDecodeError:  # what msgspec raises for bytes that are not UTF-8 inside a string
            raise InvalidInput("invalid_json", "请求内容应为 UTF-8 编码的 JSON") from None

    def parse_query(self, schema: type) -> Any:
        repeated = [k for k, v in self.request.query_arguments.items() if len(v) > 1]
        if repeated:
            raise InvalidInput("invalid_request", f"请求参数有误：{repeated[0]} 重复",
                               details=[{"field": repeated[0], "message": "参数重复"}])
        args = {k: v[0].decode("utf-8", "replace") for k, v in self.request.query_arguments.items()}
        try:
            return msgspec.convert(args, schema, strict=False)
        except msgspec.ValidationError as exc:
            raise _validation_error(exc) from None

    def send(self, spec: EndpointSpec, result: Any) -> None:
        if self._finished:
            return
        self.set_status(spec.status)
        if spec.raw_response:
            self.set_header("Content-Type", spec.raw_response)
            self.finish(result)
            return
        self.finish(json_bytes(result) if result is not None else b"{}")

    async def run_idempotent(self, spec: EndpointSpec, method: Callable, args: tuple, kwargs: dict) -> None:
        key = self.request.headers.get("Idempotency-Key")
        if key is None:
            self.send(spec, await method(self, *args, **kwargs))
            return
        if not IDEMPOTENCY_KEY.match(key):
            raise InvalidInput("bad_idempotency_key", "Idempotency-Key 应为1-64位字母、数字、下划线或连字符")
        who = self.session.openid if self.session else self.client_ip
        scope = f"{who}\n{self.request.method}\n{self.request.path}"
        claim = await idempotency.claim_key(self.ctx.redis, self.ctx.cipher, scope, key, self.request.body,
                                            self.ctx.settings.api.idempotency_ttl_seconds)
        if claim.replay is not None:
            status, body = claim.replay
            self.set_status(status)
            self.set_header("Idempotent-Replayed", "true")
            self.finish(body)
            return
        try:
            result = await method(self, *args, **kwargs)
        except DomainError as exc:
            if exc.status >= 500 or exc.status == 429:
                await claim.release()
            else:
                await claim.store(exc.status, json_bytes(exc.as_json()))
            raise
        except BaseException:
            await claim.release()
            raise
        body = json_bytes(result) if result is not None else b"{}"
        await claim.store(spec.status, body)
        self.set_status(spec.status)
        self.finish(body)


_PATH = re.compile(r"at `\$\.?([^`]*)`")
_MESSAGES = [
    (re.compile(r"Object missing required field `(\w+)`"), "必填字段", True),
    (re.compile(r"Object contains unknown field `(\w+)`"), "不允许的字段", True),
    (re.compile(r"Expected `(\w+)`, got `(\w+)`"), "类型错误", False),
    (re.compile(r"Expected `str` of length"), "长度不符合要求", False),
    (re.compile(r"Expected `(int|float)` [<>]="), "数值超出范围", False),
    (re.compile(r"Expected `str` matching regex"), "格式不正确", False),
    (re.compile(r"Invalid enum value"), "取值无效", False),
]


def _validation_error(exc: msgspec.ValidationError) -> InvalidInput:
    text = str(exc)
    path = _PATH.search(text)
    field_name = path.group(1) if path else ""
    message = "取值无效"
    for pattern, label, names_field in _MESSAGES:
        found = pattern.search(text)
        if found:
            message = label
            if names_field:
                field_name = ".".join(p for p in (field_name, found.group(1)) if p)
            break
    detail = FieldError(field=field_name or "(body)", message=message)
    return InvalidInput("invalid_request", f"请求参数有误：{detail.field} {message}",
                        details=[msgspec.structs.asdict(detail)])
