"""The FastAPI gateway: prompts in, WebSocket and SSE streams out, resumable by cursor.

Pure parts (tested without sockets): ``wire`` (frames, SSE), ``merge`` (resume splice),
``hub`` (windows, index, fan-out), ``connection`` (state machine), ``auth``, ``limits``,
``errors`` (the one table). I/O: ``reader`` (tail), ``catchup`` (seeks), ``snapshots``,
``commands`` (producer), ``service`` (wiring), ``app`` (routes), ``server`` (uvicorn).
"""

__all__ = ["errors", "settings"]
