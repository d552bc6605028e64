"""The legacy PAI-EAS ChatLLM HTTP protocol: the request model (plain text or JSON), the POST handler with
its NUL-delimited and SSE streams, the reply model, and the EAS SDK's request signatures."""
