"""One declaration per route: method, path, scope, query/body/response models and error statuses.

An `Endpoint` is the single source every other concern reads: `as_route()` authorizes, parses the query
and body into their models, calls the handler and serialises what it returns through the response model;
`synchook.openapi` builds `/openapi.json` from the same declarations. Nothing about a route is written twice.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from synchook.auth.models import Principal, Scope
from synchook.context import AppContext
from synchook.http.bodies import read_model, validation_failed
from synchook.http.guard import app_context, authorize

# The caller of an endpoint declared with `scope=None` (health, metrics, pages): no workspace, no key, no scope.
ANONYMOUS = Principal(workspace_id="", key_id="", scopes=frozenset())

QueryT = TypeVar("QueryT", bound=BaseModel | None)
BodyT = TypeVar("BodyT", bound=BaseModel | None)


@dataclass(frozen=True, slots=True)
class Call(Generic[QueryT, BodyT]):
    """What a handler gets: the request, already authorized and parsed."""

    request: Request
    principal: Principal
    path: Mapping[str, str]
    query: QueryT
    body: BodyT

    @property
    def ctx(self) -> AppContext:
        # Read when used: the pages and health endpoints answer even before the app's context exists.
        return app_context(self.request)

    @property
    def workspace_id(self) -> str:
        return self.principal.workspace_id


@dataclass(frozen=True, slots=True)
class Page:
    """A list answer: `{"data": [...], "next_cursor": ...}`."""

    items: Sequence[BaseModel]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer whose status or headers are decided at run time (202 vs 200, idempotent replays…)."""

    data: BaseModel
    status: int | None = None
    headers: Mapping[str, str] | None = None


Handler = Callable[[Call[Any, Any]], Awaitable[BaseModel | Page | Reply | Response | None]]


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A route and everything the API promises about it.

    `response` is the model of `data` (of each item when `many`); None means no body (204) unless the
    handler answers with its own `Response` (`media_type` then documents what it sends).
    """

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    scope: Scope | None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    response: type[BaseModel] | None = None
    many: bool = False
    status: int = 200
    errors: tuple[int, ...] = ()
    description: str = ""
    media_type: str = "application/json"
    paginated: bool = False
    idempotent_key_header: bool = False
    extra_response_headers: tuple[str, ...] = field(default=())
    # Other successful answers, as (status, model): a dry run's 200 beside the 202 of the real thing.
    alternatives: tuple[tuple[int, type[BaseModel]], ...] = ()
    # Other successful answers the handler builds as its own `Response`, as (status, media type): Graph's
    # validation handshake echoes its token as 200 text/plain beside the endpoint's 202 JSON.
    text_alternatives: tuple[tuple[int, str], ...] = ()
    # False: `response` is the whole body, not `data` (the change feed's `{data, next_after, has_more}`).
    envelope: bool = True

    def as_route(self, *, mount: str = "") -> Route:
        """The starlette route; `mount` is the prefix of the `Mount` it will sit in (the path names it too)."""
        if not self.path.startswith(mount + "/"):
            raise ValueError(f"{self.path} is not below {mount}")
        return Route(self.path.removeprefix(mount), self._serve, methods=[self.method])

    async def _serve(self, request: Request) -> Response:
        principal = await authorize(request, self.scope) if self.scope is not None else ANONYMOUS
        query = parse_query(self.query, request) if self.query is not None else None
        body = None
        if self.body is not None:
            max_bytes = app_context(request).settings.max_body_bytes
            body = await read_model(request, self.body, max_bytes=max_bytes, allow_empty=not self.body_required)
        call = Call(request, principal, request.path_params, query, body)
        return self._answer(await self.handler(call))

    def _answer(self, result: BaseModel | Page | Reply | Response | None) -> Response:
        if isinstance(result, Response):
            return result
        if result is None:
            return Response(status_code=self.status if self.status != 200 else 204)
        # The body is written by pydantic's serializer straight to JSON (what model_dump(mode="json") and then
        # json.dumps gave, the same values, without the dict in between: ~5 % of a one-row GET's CPU).
        if isinstance(result, Page):
            items = b",".join(self._json(item) for item in result.items)
            cursor = json.dumps(result.next_cursor, ensure_ascii=False).encode()
            return _json_response(b'{"data":[%s],"next_cursor":%s}' % (items, cursor), self.status, None)
        reply = result if isinstance(result, Reply) else Reply(result)
        status = reply.status or self.status
        headers = dict(reply.headers) if reply.headers else None
        data = self._json(reply.data)
        return _json_response(b'{"data":%s}' % data if self.envelope else data, status, headers)

    def _json(self, value: BaseModel) -> bytes:
        # A handler answering with another model than declared would document one shape and send another.
        declared = tuple(model for _, model in self.alternatives) + ((self.response,) if self.response else ())
        if declared and not isinstance(value, declared):
            raise TypeError(f"{self.method} {self.path} answered {type(value).__name__}, which it does not declare")
        return value.__pydantic_serializer__.to_json(value, by_alias=True)


def _json_response(body: bytes, status: int, headers: Mapping[str, str] | None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def parse_query(model: type[BaseModel], request: Request) -> BaseModel:
    """The query string as `model`: list fields take every repeat of their name, others the first."""
    params = request.query_params
    raw: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in params:
            continue
        raw[name] = params.getlist(key) if _is_list(info.annotation) else params[key]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) in (list, tuple, set):
        return True
    return any(_is_list(arg) for arg in get_args(annotation) if arg is not type(None))


def routes(endpoints: Sequence[Endpoint], *, mount: str = "") -> list[BaseRoute]:
    return [endpoint.as_route(mount=mount) for endpoint in endpoints]
