"""The changelog codec of the session tables: the state dataclasses as JSON (orjson)."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

from pipeline.sessions.state import LiveAnswer, Session, live_from_dict, session_from_dict, to_dict

STATE_CODEC = "tokenlog.session-state"


class StateCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        kind = "session" if isinstance(obj, Session) else "live"
        return orjson.dumps({"kind": kind, **to_dict(obj)})

    def _loads(self, s: bytes) -> Any:
        data = orjson.loads(s)
        kind = data.pop("kind")
        return session_from_dict(data) if kind == "session" else live_from_dict(data)


codecs.register(STATE_CODEC, StateCodec())
__all__ = ["STATE_CODEC", "LiveAnswer", "Session"]
