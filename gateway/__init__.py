"""The FastAPI gateway: prompts in, WebSocket and SSE streams out, resumable by cursor."""
