"""The changelog codec of the session tables: the state dataclasses as JSON (orjson).

A value is one JSON object: ``"kind"`` (``session``, ``live`` or ``piece``) followed by the
dataclass's fields (``state.to_dict``'s form; a piece of text is ``texts.Piece``). orjson writes
the frozen dataclasses itself, in C: walking them in Python (``to_dict``) was a tenth of the
session app's CPU at 10,000 tokens/s, most of it on a live answer's ``chunk_ends``, which grows
by one number per token."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

from pipeline.sessions.state import LiveAnswer, Session, live_from_dict, session_from_dict
from pipeline.sessions.texts import Piece

STATE_CODEC = "tokenlog.session-state"
_SESSION = b'{"kind":"session",'
_LIVE = b'{"kind":"live",'
_PIECE = b'{"kind":"piece",'


class StateCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        # The fields are never empty, so the object opens with '{' and a field: "kind" goes first.
        kind = _SESSION if isinstance(obj, Session) else _PIECE if isinstance(obj, Piece) else _LIVE
        return kind + orjson.dumps(obj)[1:]

    def _loads(self, s: bytes) -> Any:
        data = orjson.loads(s)
        kind = data.pop("kind")
        if kind == "piece":
            return Piece(data["text"], tuple(data["ends"]))
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


__all__ = ["STATE_CODEC", "LiveAnswer", "Piece", "Session", "StateValue"]
