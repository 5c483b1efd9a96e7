"""Transcription deltas add up to the completed transcript (engine.session.continuation)."""

from __future__ import annotations

from voicecall.engine.session import continuation


def test_deltas_continue_what_was_sent() -> None:
    assert continuation("", "What is") == "What is"
    assert continuation("What is", "What is the capital") == " the capital"
    # the last word's punctuation was held back: the final transcript adds it
    assert continuation("What is the capital of France", "What is the capital of France?") == "?"
    assert continuation("What is the capital of France", "What is the capital of France, and") == ", and"


def test_no_delta_when_the_text_changed_under_what_was_sent() -> None:
    assert continuation("What is the capital of France", "What is the capital of Frances") == ""  # mid-word
    assert continuation("What is the capital", "What was the capital of France?") == ""
    assert continuation("What is the capital", "What is the capital") == ""
    assert continuation("What is the capital", "What is") == ""
