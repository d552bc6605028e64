"""Generated gRPC stubs of chatllm.v1 (regenerate with `python proto/generate.py`)."""

from chatllm.proto.chatllm.v1 import chatllm_pb2 as pb
from chatllm.proto.chatllm.v1 import chatllm_pb2_grpc as pb_grpc

SERVICE_NAME = "chatllm.v1.ChatLLM"

__all__ = ["SERVICE_NAME", "pb", "pb_grpc"]
