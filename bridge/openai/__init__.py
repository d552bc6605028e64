"""The OpenAI-compatible API (and vLLM's /tokenize, /detokenize): request models, reply models, the
response shapes (whole and streamed) and the handlers."""
