"""ChatLLM Serve: the gRPC server (config, engines, chat, servicer, metrics)."""
