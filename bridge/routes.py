"""A route of the bridge, described once: the router, the token check and the OpenAPI document
(chatllm.bridge.openapi) all read the same `Route`, as FastAPI's and vLLM's routers do.

A handler returns its reply model (a pydantic model, or `JsonReply` for another status or extra
headers); the route layer checks it is the model the route documents for that status and writes
it. Streams, files and WebSockets are written by their handlers (a `web.StreamResponse`): their
chunks are per token, so they stay plain JSON text, and each stream's event model is described
here once (`EventStream`, `NulStream`, `WebSocketFrames`) for the document and the tests that
check what is sent against it. A route with a `JsonBody` gets its parsed body as the handler's
second argument (a 400 naming the field before the handler runs).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from chatllm.bridge.errors import GENERATION_ERRORS, Error, bad_request
from chatllm.bridge.state import CONFIG
from chatllm.bridge.validation import FieldProblem, json_object, parse

Schema = dict[str, Any]
JSON = "application/json"
SSE = "text/event-stream"
NUL_DELIMITED = "text/plain"


class Auth(Enum):
    """Who may call a route when the bridge checks tokens (--token / --token-file)."""

    TOKEN = "token"  # a token the bridge accepts (or the page's cookie on a same-origin WebSocket)
    SIGNED = "signed"  # as TOKEN, or a request signed by the EAS SDK with one
    PUBLIC = "public"
    METRICS = "metrics"  # public unless --protect-metrics
    PAGE = "page"  # public, except a WebSocket handshake on it, which needs the token


class Surface(Enum):
    """Which switch turns a route off (it then answers 404)."""

    ALWAYS = "always"
    API = "api"  # the legacy and OpenAI-compatible APIs: off with --no-api
    PAGE = "page"  # the web page: off with --api-only


SURFACE_OFF = {
    Surface.API: ("no_api", "the API is disabled on this server (--no-api)"),
    Surface.PAGE: ("api_only", "the web page is disabled on this server (--api-only)"),
}


@dataclass(frozen=True)
class Json:
    """A JSON body: one object of `model`."""

    model: type[BaseModel]


@dataclass(frozen=True)
class EventStream:
    """Server-sent events, each `data:` one JSON `event`; `failure`: what a failure mid-stream sends (None:
    `event` has its own error event); `done`: the stream ends with `data: [DONE]`."""

    event: type[BaseModel]
    failure: type[BaseModel] | None = Error
    done: bool = False


@dataclass(frozen=True)
class NulStream:
    """JSON objects (`item`, or an Error when the answer fails mid-stream), each followed by one NUL byte."""

    item: type[BaseModel]


@dataclass(frozen=True)
class Raw:
    """A body that is not one of the bridge's models (a page, a file, Prometheus' text, a form)."""

    schema: Schema


@dataclass(frozen=True)
class WebSocketFrames:
    """What a WebSocket sends: text frames that are these JSON objects (or plain text, see the route's
    description), and the frame `<EOS>` after each answer."""

    frames: tuple[type[BaseModel], ...]


Content = Json | EventStream | NulStream | Raw


@dataclass(frozen=True)
class Reply:
    """One documented status: what it means and its body per content type."""

    description: str
    content: Mapping[str, Content] = field(default_factory=dict)
    websocket: WebSocketFrames | None = None


@dataclass(frozen=True)
class RequestBody:
    """The request body per content type; `parsed`: the route layer parses the JSON model and hands it
    to the handler (otherwise the handler reads the body itself, e.g. multipart or plain text)."""

    content: Mapping[str, Content]
    description: str = ""
    parsed: bool = False

    @property
    def model(self) -> type[BaseModel]:
        json = self.content.get(JSON)
        assert isinstance(json, Json), "a parsed body is JSON"
        return json.model


def json_body(model: type[BaseModel]) -> RequestBody:
    """A JSON body of `model`, parsed before the handler runs (400 naming the field otherwise)."""
    return RequestBody({JSON: Json(model)}, parsed=True)


@dataclass(frozen=True)
class JsonReply:
    """A handler's reply model with a status other than 200, or extra headers."""

    body: BaseModel
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


HandlerResult = BaseModel | JsonReply | web.StreamResponse
Handler = Callable[..., Awaitable[HandlerResult]]


@dataclass(frozen=True)
class Route:
    """One route. `method` "*" is any method (documented as GET and POST); `path` is aiohttp's pattern;
    `name` labels its metrics; `also_at` are further paths the document lists for it (a catch-all's `/`)."""

    method: str
    path: str
    name: str
    handler: Handler
    operation_id: str
    tag: str
    summary: str
    replies: Mapping[int, Reply]
    errors: tuple[int, ...] = ()
    error_model: type[BaseModel] = Error
    auth: Auth = Auth.TOKEN
    surface: Surface = Surface.ALWAYS
    body: RequestBody | None = None
    description: str = ""
    request_id: bool = False  # takes and echoes X-Request-Id
    query: Mapping[str, Schema] = field(default_factory=dict)  # query parameter -> {description, schema}
    parameters: Mapping[str, Schema] = field(default_factory=dict)  # path parameters beyond the shared ones
    also_at: tuple[str, ...] = ()

    def json_model(self, status: int) -> type[BaseModel] | None:
        """The JSON model documented for `status` (errors: the route's error model)."""
        if status in self.errors:
            return self.error_model
        reply = self.replies.get(status)
        json = reply.content.get(JSON) if reply is not None else None
        return json.model if isinstance(json, Json) else None

    def streams(self) -> Iterator[tuple[str, EventStream | NulStream]]:
        for reply in self.replies.values():
            for media, content in reply.content.items():
                if isinstance(content, EventStream | NulStream):
                    yield media, content

    def models(self) -> Iterator[type[BaseModel]]:
        """Every model the route names (bodies, replies, stream events, WebSocket frames, errors)."""
        contents = [*self.body.content.values()] if self.body is not None else []
        for reply in self.replies.values():
            contents += reply.content.values()
            yield from reply.websocket.frames if reply.websocket is not None else ()
        for content in contents:
            if isinstance(content, Json):
                yield content.model
            elif isinstance(content, NulStream):
                yield content.item
            elif isinstance(content, EventStream):
                yield content.event
                if content.failure is not None:
                    yield content.failure
        yield self.error_model

    def aiohttp_handler(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            switch = SURFACE_OFF.get(self.surface)
            if switch is not None and getattr(request.app[CONFIG].bridge, switch[0]):
                raise web.HTTPNotFound(text=switch[1])
            try:
                if self.body is not None and self.body.parsed:
                    result = await self.handler(request, parse(self.body.model, json_object(await request.read())))
                else:
                    result = await self.handler(request)
            except FieldProblem as problem:  # a body's rule checked while converting it, after parsing
                raise bad_request(problem.field, problem.reason) from None
            if isinstance(result, web.StreamResponse):
                return result
            return self.written(result if isinstance(result, JsonReply) else JsonReply(result))

        return handle

    def written(self, reply: JsonReply) -> web.Response:
        """The reply as JSON: only what the handler set (an unset optional field stays absent)."""
        documented = self.json_model(reply.status)
        if documented is None or type(reply.body) is not documented:
            raise TypeError(f"{self.name}: a {type(reply.body).__name__} with status {reply.status} is not documented")
        body = reply.body.model_dump_json(exclude_unset=True)
        return web.Response(text=body, status=reply.status, content_type=JSON, headers=reply.headers)


def generation_route(
    path: str,
    name: str,
    handler: Handler,
    operation_id: str,
    tag: str,
    summary: str,
    body: type[BaseModel],
    reply: Reply,
    *,
    description: str = "",
    error_model: type[BaseModel] = Error,
) -> Route:
    """A route that generates, as every API that answers with the model does: a POST of a JSON `body`,
    `reply` for 200 (the answer whole, or its stream), the generation errors, X-Request-Id taken and
    echoed, off with --no-api."""
    return Route(
        "POST",
        path,
        name,
        handler,
        operation_id,
        tag,
        summary,
        {200: reply},
        GENERATION_ERRORS,
        error_model=error_model,
        surface=Surface.API,
        body=json_body(body),
        description=description,
        request_id=True,
    )


def openapi_path(path: str) -> str:
    """aiohttp's pattern in OpenAPI templating: `{tail:.*}` -> `{tail}`."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


ROUTES_BY_NAME = web.AppKey("routes_by_name", dict[str, Route])


def add_routes(app: web.Application, routes: tuple[Route, ...]) -> None:
    """Register `routes` in their order (a catch-all shadows what follows it)."""
    by_name = {route.name: route for route in routes}
    assert len(by_name) == len(routes), "route names label metrics: each is unique"
    app[ROUTES_BY_NAME] = by_name
    for route in routes:
        app.router.add_route(route.method, route.path, route.aiohttp_handler(), name=route.name)


def route_of(request: web.Request) -> Route | None:
    """The table's entry of the route `request` matched (None: no route, e.g. a method no route takes)."""
    matched = request.match_info.route
    name = matched.name if matched is not None else None
    return request.app[ROUTES_BY_NAME].get(name) if name is not None else None
