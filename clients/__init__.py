"""Python clients of ChatLLM Serve (gRPC) and the `chatllm` command line."""

from chatllm.clients.grpc_client import AsyncChatClient, ChatClient
from chatllm.clients.wire import ChatResult, ErrorDetails, build_request, error_details

__all__ = ["AsyncChatClient", "ChatClient", "ChatResult", "ErrorDetails", "build_request", "error_details"]
