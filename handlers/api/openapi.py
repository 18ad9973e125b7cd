"""``GET /api/v1/openapi.json``, generated from the endpoint declarations.

Request, query and response schemas come from the msgspec structs the
handlers validate and encode with, so the document and the code agree by
construction; a test checks that every API route is in it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from handlers.api.base import ApiHandler, ApiRoute, EndpointSpec, api_route, endpoint
from handlers.api.schemas import ErrorBody
from wxbackend import __version__

METHODS = ("get", "post", "put", "patch", "delete")
STATUS_TEXT = {400: "请求参数有误", 401: "未登录或登录已失效", 403: "没有权限", 404: "对象不存在",
               409: "冲突（如重复的请求编号）", 413: "请求内容过大", 422: "不符合业务规则",
               429: "请求过于频繁", 503: "服务暂时不可用"}
ALWAYS = (400, 413, 429, 503)


def api_routes(entries: list[tuple]) -> list[ApiRoute]:
    """The API routes among route entries ``(pattern, handler[, kwargs])``."""
    found = []
    for entry in entries:
        options = entry[2] if len(entry) > 2 else {}
        if isinstance(options, dict) and isinstance(options.get("route"), ApiRoute):
            found.append(options["route"])
    return found


def endpoints(route: ApiRoute) -> dict[str, EndpointSpec]:
    specs = {}
    for method in METHODS:
        spec = getattr(getattr(route.handler, method, None), "__api__", None)
        if spec is not None:
            specs[method] = spec
    return specs


def build_document(routes: list[ApiRoute]) -> dict[str, Any]:
    types: list[type] = [ErrorBody]
    for route in routes:
        for spec in endpoints(route).values():
            types.extend(t for t in (spec.request, spec.response, spec.query) if t is not None)
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, Any] = {}
    for route in routes:
        for method, spec in endpoints(route).items():
            paths.setdefault(route.template, {})[method] = _operation(route, spec, refs, components)
    return {
        "openapi": "3.0.3",
        "info": {"title": "党建e家 小程序接口", "version": __version__,
                 "description": "Mini-program JSON API. Errors: {\"error\": {\"code\", \"message\"}}. Former members (state not active): tokens revoked on the change; signing in again reaches only GET /api/v1/me (masked) and /api/v1/me/timeline, elsewhere 403 member_inactive."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(route: ApiRoute, spec: EndpointSpec, refs: dict, components: dict) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": spec.summary, "operationId": _operation_id(route, spec),
                          "tags": list(spec.tags) or [route.template.split("/")[3]]}
    if spec.description:
        op["description"] = spec.description
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", **({"pattern": f"^{p}$"} if (p := route.params.get(name)) else {})}}
              for name in _path_names(route.template)]
    if spec.query is not None:
        props = components[spec.query.__name__]["properties"]
        required = set(components[spec.query.__name__].get("required", []))
        params += [{"name": n, "in": "query", "required": n in required, "schema": s} for n, s in props.items()]
    if spec.idempotent:
        params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                       "description": "同一编号的重复请求在24小时内返回第一次的结果（服务端加密保存，不重复执行）",
                       "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}})
    if params:
        op["parameters"] = params
    if spec.request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": refs[spec.request]}}}
    if spec.raw_response:
        ok = {"content": {spec.raw_response: {"schema": {"type": "string", "format": "binary"}}}}
    elif spec.response is not None:
        ok = {"content": {"application/json": {"schema": refs[spec.response]}}}
    else:
        ok = {"content": {"application/json": {"schema": {"type": "object"}}}}
    responses = {str(spec.status): {"description": "成功", **ok}}
    error_ref = {"content": {"application/json": {"schema": refs[ErrorBody]}}}
    statuses = set(ALWAYS) | set(spec.errors) | ({401} if spec.auth else set()) | ({403} if spec.bound else set())
    if spec.idempotent:
        statuses.add(409)
    for status in sorted(statuses):
        responses[str(status)] = {"description": STATUS_TEXT[status], **error_ref}
    op["responses"] = responses
    if spec.auth:
        op["security"] = [{"bearer": []}]
    return op


def _path_names(template: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", template)


def _operation_id(route: ApiRoute, spec: EndpointSpec) -> str:
    parts = [p.strip("{}") for p in route.template.split("/")[3:] if p]
    return "_".join(parts) + "_" + next(m for m in METHODS
                                         if getattr(getattr(route.handler, m, None), "__api__", None) is spec)


class OpenApiHandler(ApiHandler):
    @endpoint("OpenAPI 文档", auth=False, tags=("meta",))
    async def get(self) -> dict[str, Any]:
        app = self.application
        document = getattr(app, "openapi_document", None)
        if document is None:
            document = app.openapi_document = build_document(api_routes(app.declared_routes))  # type: ignore[attr-defined]
        return document


ROUTES = [api_route("/api/v1/openapi.json", OpenApiHandler)]
