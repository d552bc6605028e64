"""The /v1/responses routes as OpenAPI path items (bodies: request.py and schemas.py)."""

from __future__ import annotations

from typing import Any

from chatllm.bridge.openapi_paths import (
    GENERATION_ERRORS,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    SSE_EVENT,
    TOKEN,
    errors,
    json_body,
    operation,
    path_parameter,
    ref,
)

RESPONSE_ID = path_parameter("response_id", "a stored response's id (resp_...)")
STORE_ERRORS = (400, 401, 404, 503)
STREAM = """With `stream: true`, OpenAI's events as SSE (`event: <type>` and `data: <event>`): response.created,
response.in_progress, then per output item response.output_item.added, response.content_part.added,
response.output_text.delta... / response.function_call_arguments.delta..., their .done events and
response.output_item.done; finally response.completed (response.incomplete when max_output_tokens cut it), or
`error` and response.failed. With `background: true` the reply is the queued response: poll it with GET."""


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _stored(operation_id: str, summary: str, reply: str, **extra: Any) -> dict[str, Any]:
    ok = {"200": {"description": "the result", "content": json_body(ref(reply))}}
    return operation(operation_id, "openai", summary, {**ok, **errors(*STORE_ERRORS)}, security=TOKEN, **extra)


def responses_paths() -> dict[str, Any]:
    create = operation(
        "createResponse",
        "openai",
        "OpenAI's Responses API: answer, store (unless store is false) and chain with previous_response_id",
        {
            "200": {
                "description": "the Response, or its events as SSE when stream is true",
                "headers": REQUEST_ID_HEADER,
                "content": {**json_body(ref("ResponseObject")), "text/event-stream": {"schema": SSE_EVENT}},
            },
            **errors(*GENERATION_ERRORS),
        },
        description=STREAM,
        security=TOKEN,
        parameters=[REQUEST_ID],
        requestBody={"required": True, "content": json_body(ref("ResponseCreateRequest"))},
    )
    page = [
        _query("limit", "items per page, 1-100 (default 20)", {"type": "integer", "minimum": 1, "maximum": 100}),
        _query("order", "desc (default: newest first) or asc", {"type": "string", "enum": ["asc", "desc"]}),
        _query("after", "list the items after this item id", {"type": "string"}),
    ]
    one = [RESPONSE_ID]
    return {
        "/v1/responses": {"post": create},
        "/v1/responses/{response_id}": {
            "get": _stored("getResponse", "A stored response (poll background ones)", "ResponseObject", parameters=one),
            "delete": _stored("deleteResponse", "Delete a stored response", "ResponseDeleted", parameters=one),
        },
        "/v1/responses/{response_id}/cancel": {
            "post": _stored(
                "cancelResponse", "Cancel a background response (it stops generating)", "ResponseObject", parameters=one
            )
        },
        "/v1/responses/{response_id}/input_items": {
            "get": _stored(
                "listResponseInputItems",
                "The input items a stored response was made from",
                "InputItemList",
                parameters=[*one, *page],
            )
        },
    }
