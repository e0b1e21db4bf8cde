"""Hypothesis strategies for every record type of the contract."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from schemas.records import (
    CancelRequested,
    GenerationParameters,
    PromptSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    Usage,
)

ids = st.text(min_size=1, max_size=40)
texts = st.text(max_size=300)  # unicode of every plane, empty included
millis = st.integers(min_value=0, max_value=2**62)
seqs = st.integers(min_value=-1, max_value=2**62)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
attempts = st.integers(min_value=0, max_value=2**31 - 1)
floats = st.floats(allow_nan=False)

parameters = st.builds(
    GenerationParameters,
    max_tokens=st.none() | int32,
    temperature=st.none() | floats,
    top_p=st.none() | floats,
    seed=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
usage = st.builds(Usage, prompt_tokens=int32, completion_tokens=int32, total_tokens=int32)

prompt_records: st.SearchStrategy[Any] = st.one_of(
    st.builds(
        PromptSubmitted,
        conversation_id=ids,
        prompt_id=ids,
        user_id=ids,
        text=texts,
        submitted_at=millis,
        device_id=texts,
        model=texts,
        parameters=parameters,
    ),
    st.builds(
        CancelRequested,
        conversation_id=ids,
        request_id=ids,
        user_id=ids,
        requested_at=millis,
        response_id=st.none() | ids,
        prompt_id=st.none() | ids,
        device_id=texts,
    ),
)

token_events: st.SearchStrategy[Any] = st.one_of(
    st.builds(
        ResponseStarted,
        conversation_id=ids,
        response_id=ids,
        prompt_id=ids,
        user_id=ids,
        prompt_text=texts,
        model=ids,
        started_at=millis,
        device_id=texts,
        parameters=parameters,
        attempt=attempts,
    ),
    st.builds(
        TokenDelta,
        conversation_id=ids,
        response_id=ids,
        seq=seqs,
        text=texts,
        produced_at=millis,
        attempt=attempts,
    ),
    st.builds(
        ResponseCompleted,
        conversation_id=ids,
        response_id=ids,
        final_seq=seqs,
        completed_at=millis,
        finish_reason=texts,
        usage=usage,
        attempt=attempts,
    ),
    st.builds(
        ResponseFailed,
        conversation_id=ids,
        response_id=ids,
        last_seq=seqs,
        error_class=ids,
        failed_at=millis,
        error_message=texts,
        retriable=st.booleans(),
        attempt=attempts,
    ),
    st.builds(
        ResponseCancelled,
        conversation_id=ids,
        response_id=ids,
        last_seq=seqs,
        cancelled_at=millis,
        cancel_request_id=texts,
        cancelled_by_user_id=texts,
        cancelled_by_device_id=texts,
        attempt=attempts,
    ),
    st.builds(
        ResponseResumed,
        conversation_id=ids,
        response_id=ids,
        attempt=attempts,
        resumed_after_seq=seqs,
        mode=st.sampled_from(ResumeMode),
        resumed_at=millis,
        reason=texts,
    ),
)
