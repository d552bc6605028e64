"""The knowledge-base HTTP API (upload, list, delete), relayed to the gRPC server, and its reply models."""
