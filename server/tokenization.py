"""Tokenize and Detokenize: the model's tokenizer, with the chat template exactly as Generate uses it."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from chatllm.kernel.config import LimitsConfig
from chatllm.proto import pb
from chatllm.server.chat import Chat, ChatInput
from chatllm.server.errors import InvalidArgument
from chatllm.server.generation import template_message
from chatllm.server.models import ServedModels
from chatllm.server.tools import tool_dicts
from chatllm.server.validation import RESERVED_TEMPLATE_KWARGS

MAX_DETOKENIZE = 1_000_000


class TokenizationService:
    def __init__(self, chat: Chat, models: ServedModels, limits: LimitsConfig) -> None:
        self.chat = chat
        self.models = models
        self.limits = limits

    def tokenize(self, request: pb.TokenizeRequest) -> pb.TokenizeResponse:
        self.models.adapter_for(request.model)  # adapters share the base model's tokenizer
        if request.messages and request.prompt:
            raise InvalidArgument("messages", "give either prompt or messages")
        if not request.messages:
            if len(request.prompt) > self.limits.max_prompt_chars * 5:
                raise InvalidArgument("prompt", f"longer than {self.limits.max_prompt_chars * 5} characters")
            add_special = request.add_special_tokens if request.HasField("add_special_tokens") else True
            ids = self.chat.tokenize(request.prompt, add_special)
        else:
            for key in request.chat_template_kwargs.fields:
                if key in RESERVED_TEMPLATE_KWARGS:
                    raise InvalidArgument(f"chat_template_kwargs.{key}", "set by the server; not a request's to pass")
            conversation = ChatInput(
                messages=[template_message(m) for m in request.messages],
                tools=tool_dicts(request.tools),
                template_kwargs=MessageToDict(request.chat_template_kwargs),
            )
            generation_prompt = request.add_generation_prompt if request.HasField("add_generation_prompt") else True
            text, add_special, _ = self.chat.render(conversation, add_generation_prompt=generation_prompt)
            if request.HasField("add_special_tokens"):
                add_special = request.add_special_tokens
            ids = self.chat.tokenize(text, add_special)
        strs = self.chat.tokenizer.convert_ids_to_tokens(ids) if request.return_token_strs else []
        return pb.TokenizeResponse(
            count=len(ids), max_model_len=self.chat.context_length, tokens=ids, token_strs=[str(s) for s in strs]
        )

    def detokenize(self, request: pb.DetokenizeRequest) -> pb.DetokenizeResponse:
        self.models.adapter_for(request.model)
        if len(request.tokens) > MAX_DETOKENIZE:
            raise InvalidArgument("tokens", f"at most {MAX_DETOKENIZE}")
        vocabulary = len(self.chat.tokenizer)
        for i, token in enumerate(request.tokens):
            if token >= vocabulary:
                raise InvalidArgument(f"tokens[{i}]", f"{token} is not a token id (the vocabulary has {vocabulary})")
        return pb.DetokenizeResponse(prompt=self.chat.tokenizer.decode(list(request.tokens)))
