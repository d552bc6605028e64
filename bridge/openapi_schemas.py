"""JSON schemas of the bridge's bodies, for its OpenAPI document (see chatllm.bridge.openapi).

Each schema says what the handlers really read and write (bridge/legacy_request.py,
openai_request.py, legacy.py, openai_api.py, kb_api.py, web.py, health.py) and the
ranges the server enforces (server/sampling.py, server/generation.py).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1
KB_NAME_PATTERN = "^[A-Za-z0-9_-]{1,64}$"  # server/generation.py KB_NAME


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: tuple[str, ...] = (), description: str = "", /, **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def string(description: str = "", **extra: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def integer(minimum: int = 0, maximum: int | None = None, description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum, **extra}
    if maximum is not None:
        schema["maximum"] = maximum
    if description:
        schema["description"] = description
    return schema


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


# A boolean, or the strings legacy clients send ("True", "false", "1", ...): bridge/fields.py boolean().
LEGACY_BOOLEAN: Schema = {
    "anyOf": [
        {"type": "boolean"},
        {"type": "string", "enum": ["true", "false", "True", "False", "TRUE", "FALSE", "1", "0", "yes", "no"]},
    ],
    "nullable": True,
}
STOP: Schema = {
    "anyOf": [string(maxLength=256, minLength=1), array(string(maxLength=256, minLength=1), maxItems=16)],
    "nullable": True,
    "description": "stop string(s): at most 16, each 1-256 characters; not part of the answer",
}
SAMPLING: dict[str, Schema] = {
    "temperature": nullable({"type": "number", "minimum": 0, "maximum": 2, "description": "0 = greedy"}),
    "top_p": nullable({"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1}),
    "top_k": nullable(integer(0, INT32_MAX, "0 disables top-k")),
    "seed": nullable(integer(0, UINT64_MAX)),
    "repetition_penalty": nullable({"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 10}),
    "ignore_eos": nullable({"type": "boolean", "description": "keep generating past the end-of-sequence token"}),
    "stop": STOP,
}


def error_schemas() -> dict[str, Schema]:
    error = obj(
        ("message", "type", "param", "code", "status"),
        message=string("what went wrong; for a bad field it starts with `field: `"),
        type=string("error class, e.g. invalid_request_error, authentication_error, rate_limit_error"),
        param=nullable(string("the request field at fault")),
        code=nullable(string("machine-readable code, e.g. invalid_field, unauthorized, RESOURCE_EXHAUSTED")),
        status=integer(400, 599, "the HTTP status"),
    )
    return {
        "Error": obj(
            ("error",),
            "Every error of the bridge, HTTP and WebSocket alike (the OpenAI error shape)",
            error=error,
        ),
        "UploadError": {
            "allOf": [
                ref("Error"),
                obj(documents=array(ref("IngestedDocument"), description="files stored before the failing one")),
            ]
        },
    }


def legacy_schemas() -> dict[str, Schema]:
    pair = array(nullable(string()), minItems=2, maxItems=2, description="[question, answer]")
    request = obj(
        ("prompt",),
        "The PAI-EAS ChatLLM request. Unknown fields are ignored; a wrong type is a 400 naming the field.",
        prompt=string("the question (must not be empty)"),
        system_prompt=nullable(string()),
        history=nullable(array(pair, description="earlier rounds; only the last max_round reach the model")),
        max_new_tokens=nullable(integer(1, UINT32_MAX)),
        use_stream_chat={**LEGACY_BOOLEAN, "description": "stream the answer (NUL-delimited, or SSE)"},
        do_sample=LEGACY_BOOLEAN,
        use_cache={**LEGACY_BOOLEAN, "description": "accepted and ignored (the KV cache is always used)"},
        langchain={**LEGACY_BOOLEAN, "description": "answer from the knowledge base `kb`, with sources"},
        kb=nullable(string("knowledge base for langchain=true (default: default)", pattern=KB_NAME_PATTERN)),
        stream_format=nullable(string("WebSocket only: events = JSON frames", enum=["text", "events"])),
        **SAMPLING,
    )
    usage = obj(
        ("prompt_tokens", "completion_tokens", "total_tokens"),
        prompt_tokens=integer(description="0 until the final object of a stream"),
        completion_tokens=integer(),
        total_tokens=integer(),
    )
    source = obj(
        ("file", "chunk", "score", "text"), file=string(), chunk=integer(), score={"type": "number"}, text=string()
    )
    reply = obj(
        ("response", "history", "usage"),
        "Non-stream reply, and each object of a stream (`response` is the whole answer so far)",
        response=string(),
        history=array(array(string(), minItems=2, maxItems=2), description="history including this round"),
        usage=ref("Usage"),
        sources=array(ref("Source"), description="with langchain=true: the chunks the answer was given"),
    )
    return {"LegacyRequest": request, "LegacyReply": reply, "Usage": usage, "Source": source}


def openai_schemas() -> dict[str, Schema]:
    part = obj(("type", "text"), type=string(enum=["text"]), text=string())
    message = obj(
        ("role",),
        role=string(enum=["system", "developer", "user", "assistant"]),
        content={"anyOf": [string(), array(part)], "nullable": True},
    )
    common: dict[str, Schema] = {
        "model": nullable(string("accepted whatever it says; replies name the served model")),
        "max_tokens": nullable(integer(1, UINT32_MAX)),
        "max_completion_tokens": nullable(integer(1, UINT32_MAX)),
        "n": nullable(integer(1, 1, "only 1")),
        "presence_penalty": nullable({"type": "number", "enum": [0], "description": "only 0"}),
        "frequency_penalty": nullable({"type": "number", "enum": [0], "description": "only 0"}),
        "stream": nullable({"type": "boolean", "description": "SSE chunks ending with `data: [DONE]`"}),
        "stream_options": nullable(obj(include_usage=nullable({"type": "boolean"}))),
        **SAMPLING,
    }
    chat_request = obj(
        ("messages",), messages=array(message, minItems=1, description="the last one from the user"), **common
    )
    completion_request = obj(
        ("prompt",),
        prompt={"anyOf": [string(), array(string(), minItems=1, maxItems=1)], "description": "one raw prompt"},
        echo=nullable({"type": "boolean"}),
        best_of=nullable(integer(1, 1, "only 1")),
        **common,
    )
    finish = nullable(string(enum=["stop", "length"]))
    envelope: dict[str, Schema] = {"id": string(), "created": integer(), "model": string()}
    chat_choice = obj(
        ("index", "message", "finish_reason"),
        index=integer(),
        message=obj(("role", "content"), role=string(enum=["assistant"]), content=string()),
        logprobs=nullable(obj()),
        finish_reason=finish,
    )
    completion_choice = obj(
        ("index", "text", "finish_reason"),
        index=integer(),
        text=string(),
        logprobs=nullable(obj()),
        finish_reason=finish,
    )
    model = obj(
        ("id", "object", "created", "owned_by"),
        id=string(),
        object=string(enum=["model"]),
        created=integer(),
        owned_by=string(),
    )
    return {
        "ChatMessage": message,
        "ChatCompletionRequest": chat_request,
        "CompletionRequest": completion_request,
        "ChatCompletion": obj(
            ("id", "object", "created", "model", "choices", "usage"),
            object=string(enum=["chat.completion"]),
            choices=array(chat_choice),
            usage=ref("Usage"),
            **envelope,
        ),
        "Completion": obj(
            ("id", "object", "created", "model", "choices", "usage"),
            object=string(enum=["text_completion"]),
            choices=array(completion_choice),
            usage=ref("Usage"),
            **envelope,
        ),
        "Model": model,
        "ModelList": obj(("object", "data"), object=string(enum=["list"]), data=array(ref("Model"))),
    }


def knowledge_base_schemas() -> dict[str, Schema]:
    document = obj(
        ("id", "filename", "chunks", "size_bytes", "created_unix"),
        id=string("64-character hex content hash"),
        filename=string(),
        chunks=integer(),
        size_bytes=integer(),
        created_unix=integer(),
    )
    ingested = obj(
        ("filename", "document_id", "chunks", "unchanged", "replaced_document_ids", "characters"),
        filename=string(),
        document_id=string(),
        chunks=integer(),
        unchanged={"type": "boolean", "description": "the same bytes were already stored"},
        replaced_document_ids=array(string()),
        characters=integer(),
    )
    return {
        "KnowledgeBaseList": obj(
            ("knowledge_bases",),
            knowledge_bases=array(
                obj(("name", "documents", "chunks"), name=string(), documents=integer(), chunks=integer())
            ),
        ),
        "Document": document,
        "DocumentList": obj(("knowledge_base", "documents"), knowledge_base=string(), documents=array(ref("Document"))),
        "IngestedDocument": ingested,
        "UploadResult": obj(
            ("knowledge_base", "documents"), knowledge_base=string(), documents=array(ref("IngestedDocument"))
        ),
        "UploadForm": obj(
            ("file",),
            file=array(string(format="binary"), minItems=1, description="one or more files: .txt .md .docx .pdf"),
        ),
        "DeletedDocument": obj(
            ("knowledge_base", "deleted", "chunks_deleted"),
            knowledge_base=string(),
            deleted=string(),
            chunks_deleted=integer(),
        ),
        "DeletedKnowledgeBase": obj(
            ("knowledge_base", "documents_deleted"), knowledge_base=string(), documents_deleted=integer()
        ),
    }


def server_schemas() -> dict[str, Schema]:
    model_info = obj(
        ("id", "backend", "device", "dtype", "context_length"),
        id=string(),
        model_path=string(),
        backend=string(),
        device=string(),
        dtype=string(),
        context_length=integer(),
        chat_template=string(),
        tensor_parallel_size=integer(),
        pipeline_parallel_size=integer(),
    )
    server_info = obj(
        ("active_requests", "waiting_requests", "uptime_seconds", "version", "draining"),
        active_requests=integer(),
        waiting_requests=integer(),
        uptime_seconds={"type": "number"},
        version=string(),
        model=ref("ModelInfo"),
        draining={"type": "boolean"},
        kv_cache_usage={"type": "number"},
        max_concurrent=integer(description="0 = unlimited"),
        max_queue=integer(),
        knowledge_base_enabled={"type": "boolean"},
        auth_required={"type": "boolean"},
    )
    catalog_model = obj(
        ("name", "model_path"),
        name=string(),
        model_path=string(),
        model_type=string(),
        recommended_hardware=string(),
        seed_accelerated={"type": "boolean"},
    )
    return {
        "ModelInfo": model_info,
        "ServerInfo": server_info,
        "CatalogModel": catalog_model,
        "Info": obj(
            ("model", "models", "server", "catalog"),
            model={"allOf": [ref("ModelInfo")], "nullable": True},
            models=array(ref("ModelInfo"), description="every served model (base models and adapters)"),
            server=ref("ServerInfo"),
            catalog=array(ref("CatalogModel")),
        ),
        "Alive": obj(("status",), status=string(enum=["alive"])),
        "Readiness": obj(("status", "detail"), status=string(enum=["ready", "not ready", "draining"]), detail=string()),
    }


def all_schemas() -> dict[str, Schema]:
    return {
        **error_schemas(),
        **legacy_schemas(),
        **openai_schemas(),
        **knowledge_base_schemas(),
        **server_schemas(),
    }
