"""OpenAI's Responses API routes, as route table entries."""

from __future__ import annotations

from pydantic import BaseModel

from chatllm.bridge.responses import handlers
from chatllm.bridge.responses.replies import InputItemList, ResponseDeleted, ResponseObject, ResponseStreamEvent
from chatllm.bridge.responses.request import ResponseCreateRequest
from chatllm.bridge.routes import JSON, SSE, EventStream, Handler, Json, Reply, Route, Surface, generation_route

TAG = "openai"
STORE_ERRORS = (400, 401, 404, 503)
RESPONSE_ID = {"response_id": {"description": "a stored response's id (resp_...)"}}
STREAM = """With `stream: true`, OpenAI's events as SSE (`event: <type>` and `data: <event>`): response.created,
response.in_progress, then per output item response.output_item.added, response.content_part.added,
response.output_text.delta... / response.function_call_arguments.delta..., their .done events and
response.output_item.done; finally response.completed (response.incomplete when max_output_tokens cut it), or
`error` and response.failed. With `background: true` the reply is the queued response: poll it with GET."""
PAGE = {
    "limit": {
        "description": "items per page, 1-100 (default 20)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
    },
    "order": {
        "description": "desc (default: newest first) or asc",
        "schema": {"type": "string", "enum": ["asc", "desc"]},
    },
    "after": {"description": "list the items after this item id", "schema": {"type": "string"}},
}


def _stored(
    method: str, path: str, name: str, handler: Handler, operation_id: str, summary: str, reply: type[BaseModel]
) -> Route:
    """A route that reads or changes one stored response."""
    return Route(
        method,
        path,
        name,
        handler,
        operation_id,
        TAG,
        summary,
        {200: Reply("the result", {JSON: Json(reply)})},
        STORE_ERRORS,
        surface=Surface.API,
        parameters=RESPONSE_ID,
    )


ROUTES = (
    generation_route(
        "/v1/responses",
        "responses_create",
        handlers.create,
        "createResponse",
        TAG,
        "OpenAI's Responses API: answer, store (unless store is false) and chain with previous_response_id",
        ResponseCreateRequest,
        Reply(
            "the Response, or its events as SSE when stream is true",
            {JSON: Json(ResponseObject), SSE: EventStream(ResponseStreamEvent, failure=None)},
        ),
        description=STREAM,
    ),
    _stored(
        "GET",
        "/v1/responses/{response_id}",
        "responses_get",
        handlers.retrieve,
        "getResponse",
        "A stored response (poll background ones)",
        ResponseObject,
    ),
    _stored(
        "DELETE",
        "/v1/responses/{response_id}",
        "responses_delete",
        handlers.delete,
        "deleteResponse",
        "Delete a stored response",
        ResponseDeleted,
    ),
    _stored(
        "POST",
        "/v1/responses/{response_id}/cancel",
        "responses_cancel",
        handlers.cancel,
        "cancelResponse",
        "Cancel a background response (it stops generating)",
        ResponseObject,
    ),
    Route(
        "GET",
        "/v1/responses/{response_id}/input_items",
        "responses_input_items",
        handlers.input_items,
        "listResponseInputItems",
        TAG,
        "The input items a stored response was made from",
        {200: Reply("the result", {JSON: Json(InputItemList)})},
        STORE_ERRORS,
        surface=Surface.API,
        parameters=RESPONSE_ID,
        query=PAGE,
    ),
)
