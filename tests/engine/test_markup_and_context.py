"""Unit tests: the tool-markup filter on streamed answers, and fitting long conversations into a context window."""

from __future__ import annotations

import itertools

import pytest

from voicecall.engine.markup import ToolMarkupFilter
from voicecall.speech.base import ChatMessage, CountsTokens, FunctionTool, ToolChoice
from voicecall.speech.context import ContextOverflowError, Truncation, fit_messages


def filtered(text: str, step: int) -> str:
    """Stream ``text`` through a new filter in pieces of ``step`` characters."""
    f = ToolMarkupFilter()
    out = "".join(f.feed(text[i:i + step]) for i in range(0, len(text), step))
    return out + f.flush()


CASES = [
    # (model output, what may be shown and spoken)
    ('<tool_response>{"name": "get_weather", "content": {"temperature_c": 21}}</tool_response>', ""),
    ('It is sunny. <tool_response>{"name": "get_weather"}</tool_response> Enjoy!', "It is sunny.  Enjoy!"),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', ""),
    ('{"name": "set_timer", "arguments": {"minutes": 10}}', ""),
    ('Sure {"a": "}{ \\" "} done', "Sure  done"),
    ("Paris is the capital.<|im_end|>", "Paris is the capital."),
    ("Checking.</tool_call> Done.", "Checking. Done."),
    ("<function=get_weather>{\"city\": \"Paris\"}</function> ok", " ok"),
    ("Three < five and seven > two.", "Three < five and seven > two."),
    ("I am <b>sure</b>.", "I am sure."),
    ("Unfinished <tool_call>{\"name\": \"x\", \"argu", "Unfinished "),
    ("Plain answer without markup.", "Plain answer without markup."),
    ("x <", "x <"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_markup_filter_any_split(text: str, expected: str) -> None:
    for step in range(1, len(text) + 1):  # every way the stream could be cut into equal pieces
        assert filtered(text, step) == expected, (text, step)


def test_markup_filter_releases_plain_text_at_once() -> None:
    f = ToolMarkupFilter()
    assert f.feed("The weather ") == "The weather "
    assert f.feed("is <") == "is "  # held: could be a tag
    assert f.feed("to") == ""
    assert f.feed("ol_call>{") == ""
    assert f.feed('"a": 1}</tool_call> fine') == " fine"
    assert f.removed > 0


# ------------------------------------------------------------------------------------------ context
class WordCounter:
    """A CountsTokens stand-in: one token per word plus 2 per message; the window is ``window`` tokens."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.calls = 0
        self.known: set[str] = set()

    def context_budget(self, tools: list[FunctionTool] | None, tool_choice: ToolChoice, max_tokens: int | None) -> int:
        return self.window - (max_tokens or 0)

    def message_tokens(self, message: ChatMessage, exact: bool = True) -> int:
        """Like the llama.cpp adapter: estimates (a token more) only for messages never counted exactly."""
        text = message.content or ""
        if not exact and text not in self.known:
            return len(text.split()) + 3
        self.calls += 1
        self.known.add(text)
        return len(text.split()) + 2


def conversation(n: int) -> list[ChatMessage]:
    return [ChatMessage("system", "be brief")] + [ChatMessage("user", f"item number {i}") for i in range(n)]


def test_fits_untouched_when_small() -> None:
    msgs = conversation(3)
    assert isinstance(WordCounter(100), CountsTokens)
    fitted = fit_messages(msgs, WordCounter(100), Truncation())
    assert fitted.messages == msgs and fitted.dropped == 0


def test_auto_drops_oldest_user_items_one_by_one_and_keeps_system() -> None:
    msgs = conversation(10_000)  # 5 tokens each
    counter = WordCounter(1000)
    fitted = fit_messages(msgs, counter, Truncation())
    assert fitted.messages[0].role == "system" and fitted.messages[-1].content == "item number 9999"
    assert fitted.tokens <= fitted.limit == 1000 - 4
    assert fitted.tokens >= 0.75 * fitted.limit - 5  # about retention_ratio of the limit is kept
    assert counter.calls < 500  # exact counts only near the end


def test_cut_is_sticky_as_the_conversation_grows() -> None:
    """Between two cuts the kept history only grows (the KV prefix cache stays valid)."""
    counter = WordCounter(200)
    firsts = []
    for n in range(60, 120):
        fitted = fit_messages(conversation(n), counter, Truncation("retention_ratio", 0.5))
        firsts.append(fitted.messages[1].content)
    changes = sum(1 for a, b in itertools.pairwise(firsts) if a != b)
    assert 0 < changes <= 60 // 15  # a cut every ~half window (~19 items), not every turn
    every_turn = [fit_messages(conversation(n), counter, Truncation("retention_ratio", 1.0)).messages[1].content
                  for n in range(60, 70)]
    assert len(set(every_turn)) == 10  # ratio 1: drop just enough, so the cut moves each turn


def test_post_instructions_limit_and_disabled() -> None:
    msgs = conversation(50)
    fitted = fit_messages(msgs, WordCounter(10_000), Truncation("retention_ratio", 0.8, post_instructions=50))
    assert fitted.tokens <= 50 and fitted.dropped > 0
    assert fit_messages(msgs, WordCounter(10_000), Truncation("disabled")).dropped == 0
    with pytest.raises(ContextOverflowError, match="truncation is 'disabled'"):
        fit_messages(msgs, WordCounter(100), Truncation("disabled"))


def test_tool_output_goes_with_its_call() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    msgs = [ChatMessage("user", "a " * 30), ChatMessage("assistant", None, tool_calls=[call]),
            ChatMessage("tool", "r " * 5, tool_call_id="c1"), ChatMessage("user", "last question")]
    fitted = fit_messages(msgs, WordCounter(20), Truncation("retention_ratio", 1.0))
    assert [m.role for m in fitted.messages] in (["assistant", "tool", "user"], ["user"])
    assert fitted.messages[0].role != "tool"


def test_newest_message_alone_too_long() -> None:
    with pytest.raises(ContextOverflowError, match="newest message alone"):
        fit_messages([ChatMessage("user", "w " * 500)], WordCounter(100), Truncation())
