"""The UI message stream mapping, without sockets."""

from __future__ import annotations

import orjson

from gateway.aisdk import DONE, AnswerStream, last_user_prompt


def parts(chunks: list[bytes]) -> list[object]:
    return [c if c == DONE else orjson.loads(c.removeprefix(b"data: ")) for c in chunks]


def test_an_answer_from_snapshot_then_live_is_start_text_deltas_end_finish_done() -> None:
    stream = AnswerStream("r-1")
    out = list(stream.from_turn({"answer": "Hello", "last_seq": 1, "status": "streaming", "attempt": 0}))
    out += list(stream.from_frame({"type": "token", "response_id": "r-1", "seq": 1, "text": "dup"}))
    out += list(stream.from_frame({"type": "token", "response_id": "r-9", "seq": 2, "text": "other"}))
    out += list(stream.from_frame({"type": "token", "response_id": "r-1", "seq": 2, "text": " world"}))
    out += list(stream.from_frame({"type": "response.completed", "response_id": "r-1"}))
    assert parts(out) == [
        {"type": "start", "messageId": "r-1"},
        {"type": "text-start", "id": "r-1"},
        {"type": "text-delta", "id": "r-1", "delta": "Hello"},
        {"type": "text-delta", "id": "r-1", "delta": " world"},
        {"type": "text-end", "id": "r-1"},
        {"type": "finish"},
        DONE,
    ]
    assert stream.done()


def test_cancelled_and_failed_answers_end_with_abort_and_error() -> None:
    cancelled = AnswerStream("r-1")
    assert parts(list(cancelled.from_turn({"answer": "", "status": "cancelled"})))[-2] == {"type": "abort"}
    failed = AnswerStream("r-2")
    out = parts(
        list(failed.from_frame({"type": "response.failed", "response_id": "r-2", "error_message": "x"}))
    )
    assert out[-2] == {"type": "error", "errorText": "x"}


def test_the_prompt_is_the_last_user_messages_text() -> None:
    messages = [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "first"}]},
        {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "answer"}]},
        {
            "id": "u2",
            "role": "user",
            "parts": [{"type": "text", "text": "sec"}, {"type": "text", "text": "ond"}],
        },
    ]
    assert last_user_prompt(messages) == ("u2", "second")
    assert last_user_prompt([]) is None
    assert last_user_prompt("nope") is None
