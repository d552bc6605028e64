"""Python clients of ChatLLM Serve (gRPC) and the `chatllm` command line."""

from chatllm.clients.blocking import ChatClient
from chatllm.clients.core import ChatLLMCore
from chatllm.clients.grpc_client import AsyncChatClient
from chatllm.clients.wire import ChatResult, ErrorDetails, build_request, error_details

__all__ = [
    "AsyncChatClient",
    "ChatClient",
    "ChatLLMCore",
    "ChatResult",
    "ErrorDetails",
    "build_request",
    "error_details",
]
