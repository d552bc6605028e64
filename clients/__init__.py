"""Python clients of ChatLLM Serve (gRPC) and the `chatllm` command line."""

from chatllm.clients.grpc_client import AsyncChatClient, ChatClient, ChatResult, build_request

__all__ = ["AsyncChatClient", "ChatClient", "ChatResult", "build_request"]
