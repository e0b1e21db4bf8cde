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


class StateValue:
    """The ``value_type`` of the session tables: Faust takes a table's codec from
    ``value_type._options.serializer`` (when the table is created, for its changelog topic and
    store) and passes decoded values through ``from_data``. Our codec already returns the state
    dataclasses, so ``from_data`` hands them on unchanged."""

    class _options:
        serializer = STATE_CODEC

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
        return data


__all__ = ["STATE_CODEC", "LiveAnswer", "Session", "StateValue"]
