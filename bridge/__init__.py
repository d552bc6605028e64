"""The HTTP/WebSocket bridge: a gRPC client of the server that speaks the legacy
PAI-EAS protocols (JSON / plain-text POST, NUL-delimited stream, SSE, `<EOS>`
WebSocket), an OpenAI-compatible API, `/metrics`, `/healthz` and `/readyz`.
It holds no model and no conversation logic except per-WebSocket history."""
