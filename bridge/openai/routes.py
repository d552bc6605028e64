"""The OpenAI-compatible routes (and vLLM's /tokenize, /detokenize), as route table entries."""

from __future__ import annotations

from chatllm.bridge.errors import UPSTREAM_ERRORS
from chatllm.bridge.openai import handlers
from chatllm.bridge.openai import request as bodies
from chatllm.bridge.openai.replies import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    DetokenizeResult,
    EmbeddingList,
    Model,
    ModelList,
    TokenizeResult,
)
from chatllm.bridge.routes import JSON, SSE, EventStream, Json, Reply, Route, Surface, generation_route, json_body

TAG = "openai"
COMPLETION_REPLY = "the completion, or SSE chunks ending with `data: [DONE]` when stream is true"
ROUTES = (
    generation_route(
        "/v1/chat/completions",
        "openai_chat",
        handlers.chat_completions,
        "createChatCompletion",
        TAG,
        "OpenAI-compatible chat completion",
        bodies.ChatCompletionRequest,
        Reply(COMPLETION_REPLY, {JSON: Json(ChatCompletion), SSE: EventStream(ChatCompletionChunk, done=True)}),
    ),
    generation_route(
        "/v1/completions",
        "openai_completions",
        handlers.completions,
        "createCompletion",
        TAG,
        "OpenAI-compatible completion of a raw prompt",
        bodies.CompletionRequest,
        Reply(COMPLETION_REPLY, {JSON: Json(Completion), SSE: EventStream(CompletionChunk, done=True)}),
    ),
    Route(
        "POST",
        "/v1/embeddings",
        "openai_embeddings",
        handlers.embeddings,
        "createEmbedding",
        TAG,
        "Embeddings of texts (the knowledge base's embedder)",
        {200: Reply("the embeddings", {JSON: Json(EmbeddingList)})},
        (400, 404, *UPSTREAM_ERRORS),
        surface=Surface.API,
        body=json_body(bodies.EmbeddingRequest),
    ),
    Route(
        "GET",
        "/v1/models",
        "openai_models",
        handlers.list_models,
        "listModels",
        TAG,
        "The served models (the base model and its adapters)",
        {200: Reply("models", {JSON: Json(ModelList)})},
        (404, *UPSTREAM_ERRORS),
        surface=Surface.API,
    ),
    Route(
        "GET",
        "/v1/models/{model}",
        "openai_model",
        handlers.get_model,
        "getModel",
        TAG,
        "One served model",
        {200: Reply("the model", {JSON: Json(Model)})},
        (404, *UPSTREAM_ERRORS),
        surface=Surface.API,
    ),
    Route(
        "POST",
        "/tokenize",
        "tokenize",
        handlers.tokenize,
        "tokenize",
        TAG,
        "Token ids of a prompt, or of messages rendered with the chat template (vLLM's shape)",
        {200: Reply("the tokens", {JSON: Json(TokenizeResult)})},
        (400, 404, *UPSTREAM_ERRORS),
        surface=Surface.API,
        body=json_body(bodies.TokenizeRequest),
    ),
    Route(
        "POST",
        "/detokenize",
        "detokenize",
        handlers.detokenize,
        "detokenize",
        TAG,
        "Text of token ids (vLLM's shape)",
        {200: Reply("the text", {JSON: Json(DetokenizeResult)})},
        (400, 404, *UPSTREAM_ERRORS),
        surface=Surface.API,
        body=json_body(bodies.DetokenizeRequest),
    ),
)
# After every other /v1/ route in the table (it takes any path under /v1/).
UNKNOWN_V1_ROUTE = Route(
    "*",
    "/v1/{tail:.*}",
    "openai_unknown",
    handlers.unknown_v1_route,
    "openaiUnknownRoute",
    TAG,
    "Any other /v1/ route and method: a 404 error object",
    {},
    (401, 404),
)
