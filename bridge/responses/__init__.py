"""OpenAI's Responses API (/v1/responses) with its durable store."""
