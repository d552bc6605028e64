"""OpenAI request bodies as pydantic models, each with `to_generate_request()`.

Every field of OpenAI's chat and completions bodies is either implemented or answered 400
naming it (`extra="forbid"` for names nobody defined; `Refused` for OpenAI fields this server
cannot honour). vLLM's extensions are implemented too: top_k, min_p, repetition_penalty,
min_tokens, stop_token_ids, include_stop_str_in_output, skip_special_tokens, ignore_eos,
structured_outputs, the older guided_json / guided_regex / guided_choice / guided_grammar,
and chat_template_kwargs. `messages` reach the chat template exactly as sent.
"""

from __future__ import annotations

from typing import Any, Literal

from google.protobuf import struct_pb2
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from chatllm.bridge.field_types import (
    Boolean,
    Choices,
    Count,
    String,
    StringList,
    TemplateKwargs,
    TopLogprobs,
    UInt32,
)
from chatllm.bridge.openai.request_parts import (
    ChatMessage,
    FunctionTool,
    NamedToolChoice,
    ResponseFormat,
    StreamOptions,
    Strict,
    StructuredOutputs,
    ToolChoiceMode,
    structured_output,
    tool_choice_pb,
)
from chatllm.bridge.priority import SERVICE_TIERS, PriorityClass, priority_pb
from chatllm.bridge.sampling import client_field as sampling_client_field
from chatllm.bridge.sampling import sampling_body, sampling_pb
from chatllm.bridge.validation import FieldProblem
from chatllm.proto import pb

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's (and vLLM's) default for /v1/completions
# OpenAI fields this server cannot honour: only null (or absent) passes; anything else is a 400.
CHAT_REFUSED = {
    "audio": "audio output: this server generates text",
    "functions": "the deprecated `functions`: use `tools`",
    "function_call": "the deprecated `function_call`: use `tool_choice`",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
    "verbosity": "verbosity",
    "moderation": "moderation",
    "prompt_cache_key": "prompt cache keys (prefix caching is automatic)",
    "prompt_cache_options": "prompt cache options (prefix caching is automatic)",
    "prompt_cache_retention": "prompt cache retention (prefix caching is automatic)",
}
COMPLETION_REFUSED = {
    "suffix": "suffix (insertion): the models here complete left to right",
}


REFUSED_FIELD = "not supported: null or absent only (anything else is a 400 saying why)"


def refuse(reasons: dict[str, str]) -> Any:
    """A before-validator that refuses any non-null value of the fields in `reasons`."""

    def check(cls: type, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        raise PydanticCustomError(
            "unsupported_field", "not supported: {reason}", {"reason": reasons[str(info.field_name)]}
        )

    return classmethod(check)  # type: ignore[arg-type]


# The sampling table's fields as OpenAI bodies spell them (temperature, top_p, n, stop, seed, the penalties,
# logit_bias and vLLM's extensions: top_k, min_p, min_tokens, ...): chatllm.bridge.sampling makes them.
_OpenAISampling: Any = sampling_body("openai", Strict)


class SamplingFields(_OpenAISampling):  # type: ignore[misc]
    """What chat and completions bodies share: the table's sampling fields, and these."""

    model: String | None = Field(None, description="served model or LoRA adapter; default: the base model")
    stream: Boolean | None = None
    stream_options: StreamOptions | None = None
    max_tokens: Count | None = None
    user: String | None = Field(None, description="the end user's id, kept in the history export")
    response_format: ResponseFormat | None = None
    priority: PriorityClass | None = None
    # vLLM's structured-output fields
    structured_outputs: StructuredOutputs | None = None
    guided_json: dict[str, Any] | String | None = None
    guided_regex: String | None = None
    guided_choice: StringList | None = None
    guided_grammar: String | None = None

    @model_validator(mode="after")
    def _one_constraint(self) -> SamplingFields:
        given = [name for name in self._constraint_fields() if getattr(self, name) is not None]
        if self.response_format is not None and self.response_format.type != "text":
            given.append("response_format")
        if len(given) > 1:
            raise FieldProblem(given[-1], f"give one of {', '.join(given)}, not several")
        return self

    @staticmethod
    def _constraint_fields() -> tuple[str, ...]:
        return ("structured_outputs", "guided_json", "guided_regex", "guided_choice", "guided_grammar")

    def structured_output_pb(self) -> pb.StructuredOutput | None:
        if self.structured_outputs is not None:
            return self.structured_outputs.to_pb()
        if any(getattr(self, n) is not None for n in self._constraint_fields()):
            return structured_output(self.guided_json, self.guided_regex, self.guided_choice, self.guided_grammar)
        return self.response_format.to_pb() if self.response_format is not None else None

    def constraint_field(self) -> str:
        """The field the client used for a structured-output constraint (for error messages)."""
        for name in self._constraint_fields():
            if getattr(self, name) is not None:
                return name
        return "response_format"

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and (self.stream_options.include_usage or self.continuous_usage))

    @property
    def continuous_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.continuous_usage_stats)

    def sampling(self, max_tokens: int | None, logprobs: int | None) -> pb.SamplingParams:
        return sampling_pb(self, "openai", max_new_tokens=max_tokens, logprobs=logprobs)

    def client_field(self, server_field: str) -> str:
        """A field named by the server (`sampling.top_p`) as this client wrote it (`top_p`)."""
        if server_field.startswith("structured_output"):
            return self.constraint_field()
        return sampling_client_field(server_field, "openai")


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Count | None = None
    logprobs: Boolean | None = None
    top_logprobs: TopLogprobs | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoiceMode | NamedToolChoice | None = None
    parallel_tool_calls: Boolean | None = None
    chat_template_kwargs: TemplateKwargs | None = Field(None, description="extra variables for the chat template")
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        None, description="passed to the chat template as `reasoning_effort` (templates that know it use it)"
    )
    metadata: dict[str, String] | None = Field(None, description="your tags, kept in the history export")
    safety_identifier: String | None = Field(None, description="as `user`: kept in the history export")
    store: Literal[False] | None = Field(None, description="only false (use the server's --export-history-path)")
    service_tier: Literal["auto", "default", "priority", "flex"] | None = Field(
        None, description="`priority`: the interactive class, `flex`: bulk (see `priority`, which wins over it)"
    )
    modalities: list[Literal["text"]] | None = Field(None, description="text only")
    audio: Any = Field(None, description=REFUSED_FIELD)
    functions: Any = Field(None, description=REFUSED_FIELD)
    function_call: Any = Field(None, description=REFUSED_FIELD)
    prediction: Any = Field(None, description=REFUSED_FIELD)
    web_search_options: Any = Field(None, description=REFUSED_FIELD)
    verbosity: Any = Field(None, description=REFUSED_FIELD)
    moderation: Any = Field(None, description=REFUSED_FIELD)
    prompt_cache_key: Any = Field(None, description=REFUSED_FIELD)
    prompt_cache_options: Any = Field(
        None, description="not supported: prompt cache options (prefix caching is automatic)"
    )
    prompt_cache_retention: Any = Field(
        None, description="not supported: prompt cache retention (prefix caching is automatic)"
    )

    _refuse = field_validator(*CHAT_REFUSED, mode="before")(refuse(CHAT_REFUSED))

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise FieldProblem("top_logprobs", "needs `logprobs: true`")
        return self

    def to_generate_request(self, request_id: str) -> pb.GenerateRequest:
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        kwargs = dict(self.chat_template_kwargs or {})
        if self.reasoning_effort is not None:
            kwargs.setdefault("reasoning_effort", self.reasoning_effort)
        template_kwargs = struct_pb2.Struct()
        template_kwargs.update(kwargs)
        return pb.GenerateRequest(
            messages=[m.to_pb() for m in self.messages],
            sampling=self.sampling(max_tokens, logprobs),
            request_id=request_id,
            channel="openai",
            model=self.model or "",
            tools=[t.to_pb() for t in self.tools or []],
            tool_choice=tool_choice_pb(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
            structured_output=self.structured_output_pb(),
            chat_template_kwargs=template_kwargs if kwargs else None,
            user=self.user or self.safety_identifier or "",
            metadata=self.metadata or {},
            priority=priority_pb(
                self.priority if self.priority is not None else SERVICE_TIERS[self.service_tier or "auto"]
            ),
        )

    def client_field(self, server_field: str) -> str:
        if server_field == "sampling.max_new_tokens":
            return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        if server_field == "sampling.logprobs":
            return "top_logprobs" if self.top_logprobs else "logprobs"
        if server_field in ("prompt", "history", "system_prompt") or server_field.startswith("messages"):
            return server_field if server_field.startswith("messages") else "messages"
        return super().client_field(server_field)


class CompletionRequest(SamplingFields):
    """POST /v1/completions: the prompt goes to the model as is (no chat template)."""

    prompt: String | list[String] = Field(description="one prompt (a string, or a list holding one string)")
    echo: Boolean | None = Field(None, description="prepend the prompt to the text (and to logprobs)")
    logprobs: TopLogprobs | None = Field(None, description="logprobs of this many top tokens")
    best_of: Choices | None = Field(None, description="candidates to pick the n best from (not streamed)")
    suffix: Any = Field(None, description=REFUSED_FIELD)

    _refuse = field_validator(*COMPLETION_REFUSED, mode="before")(refuse(COMPLETION_REFUSED))

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise FieldProblem("prompt", "one prompt per request (a string or a list of one)")
        if self.best_of is not None and self.best_of < (self.n or 1):
            raise FieldProblem("best_of", "must be at least n")
        if self.best_of not in (None, 1) and self.stream:
            raise FieldProblem("best_of", "best_of > 1 cannot be streamed")
        return self

    @property
    def text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt

    def to_generate_request(self, request_id: str) -> pb.GenerateRequest:
        max_tokens = self.max_tokens if self.max_tokens is not None else COMPLETIONS_DEFAULT_MAX_TOKENS
        sampling = self.sampling(max_tokens, self.logprobs)
        if self.best_of is not None:
            sampling.best_of = self.best_of
        if self.echo and self.logprobs is not None:
            sampling.prompt_logprobs = self.logprobs
        return pb.GenerateRequest(
            prompt=self.text,
            sampling=sampling,
            request_id=request_id,
            raw_prompt=True,
            channel="openai",
            model=self.model or "",
            structured_output=self.structured_output_pb(),
            user=self.user or "",
            priority=priority_pb(self.priority),
        )


class EmbeddingRequest(Strict):
    """POST /v1/embeddings: the knowledge base's embedder."""

    input: String | list[String] = Field(description="a text or a list of texts (token arrays are not supported)")
    model: String | None = Field(None, description="the embedding model's name (/api/info shows it; default: it)")
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Count | None = Field(None, description="only the model's own number")
    user: String | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def to_embed_request(self) -> pb.EmbedRequest:
        return pb.EmbedRequest(model=self.model or "", input=self.texts, dimensions=self.dimensions)


class TokenizeRequest(Strict):
    """POST /tokenize (vLLM's shape): a prompt, or messages rendered with the chat template."""

    model: String | None = None
    prompt: String | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: Boolean | None = None
    add_generation_prompt: Boolean | None = None
    return_token_strs: Boolean | None = None
    tools: list[FunctionTool] | None = None
    chat_template_kwargs: TemplateKwargs | None = None

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise FieldProblem("prompt", "give either prompt or messages")
        return self

    def to_pb(self) -> pb.TokenizeRequest:
        kwargs = struct_pb2.Struct()
        kwargs.update(self.chat_template_kwargs or {})
        return pb.TokenizeRequest(
            model=self.model or "",
            prompt=self.prompt or "",
            messages=[m.to_pb() for m in self.messages or []],
            add_special_tokens=self.add_special_tokens,
            add_generation_prompt=self.add_generation_prompt,
            return_token_strs=bool(self.return_token_strs),
            tools=[t.to_pb() for t in self.tools or []],
            chat_template_kwargs=kwargs if self.chat_template_kwargs else None,
        )


class DetokenizeRequest(Strict):
    """POST /detokenize."""

    model: String | None = None
    tokens: list[UInt32]

    def to_pb(self) -> pb.DetokenizeRequest:
        return pb.DetokenizeRequest(model=self.model or "", tokens=self.tokens)
