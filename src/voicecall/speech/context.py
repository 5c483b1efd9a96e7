"""Fitting a long conversation into an LLM's context window: the session's ``truncation`` setting.

The engine renders every conversation item as its own chat message (never merged), so the oldest turns can always be
dropped. :func:`fit_messages` keeps the system messages and the newest messages that fit:

* ``"disabled"``: nothing is dropped; a conversation that does not fit raises :class:`ContextOverflowError` (the
  response fails with ``context_length_exceeded``; the session goes on, and deleting items makes it fit again).
* ``{"type": "retention_ratio", "retention_ratio": r, "token_limits": {"post_instructions": N}}``: when the
  conversation after the instructions exceeds its limit (``N``, or what the model's context leaves), messages are
  dropped from the oldest until about ``r`` of the limit is used.
* ``"auto"``: the same with ``r`` = :data:`AUTO_RETENTION`.

The cut points are *sticky*: they are chosen among checkpoints laid every ``(1 - r) x limit`` tokens from the start
of the conversation, which do not move as the conversation grows. So between two cuts the kept history only grows,
and a local model's KV prefix cache stays valid (a cut that moved every turn would re-evaluate the whole prompt every
turn: seconds on a CPU). A function call and its outputs are dropped together.

Counting uses the model's own tokenizer through the optional :class:`~voicecall.speech.base.CountsTokens` capability;
an LLM without it (a remote server) fits its own context.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from .base import ChatMessage, CountsTokens, FunctionTool, LLMError, ToolChoice

AUTO_RETENTION = 0.75
"""``truncation: "auto"`` keeps about this share of the limit after a cut."""


class ContextOverflowError(LLMError):
    """The conversation does not fit the model's context (``truncation: disabled``, or one message is too long)."""

    code = "context_length_exceeded"


@dataclass(frozen=True, slots=True)
class Truncation:
    mode: str = "auto"  # "auto" | "disabled" | "retention_ratio"
    retention: float = AUTO_RETENTION
    post_instructions: int | None = None

    @classmethod
    def from_session(cls, value: str | dict[str, Any] | None) -> Truncation:
        """From the GA session field (already validated by ``parse_truncation``)."""
        if value == "disabled":
            return cls("disabled")
        if isinstance(value, dict):
            limits = value.get("token_limits") or {}
            return cls("retention_ratio", float(value.get("retention_ratio", AUTO_RETENTION)),
                       limits.get("post_instructions"))
        return cls()


@dataclass(slots=True)
class Fitted:
    messages: list[ChatMessage]
    dropped: int  # messages left out
    tokens: int  # tokens of the kept non-system messages
    limit: int  # what they were allowed


def _unit_starts(conv: list[ChatMessage]) -> list[int]:
    """Indices where the oldest messages may be cut: never just before a tool output (it goes with its call)."""
    return [i for i, m in enumerate(conv) if m.role != "tool"] or [0]


def fit_messages(
    messages: list[ChatMessage],
    llm: CountsTokens,
    policy: Truncation,
    *,
    tools: list[FunctionTool] | None = None,
    tool_choice: ToolChoice = "auto",
    max_tokens: int | None = None,
) -> Fitted:
    """Keep the system messages and the newest messages that fit; see the module docstring."""
    system = [m for m in messages if m.role == "system"]
    conv = [m for m in messages if m.role != "system"]
    budget = llm.context_budget(tools, tool_choice, max_tokens) - sum(llm.message_tokens(m) for m in system)
    limit = budget if policy.post_instructions is None else min(budget, policy.post_instructions)
    if limit <= 0:
        raise ContextOverflowError(
            f"the instructions and tools alone fill the model's context (nothing is left for the conversation; "
            f"{budget} tokens left after them)")
    # Exact counts for the newest messages, up to twice what may be kept; older ones only need to be known to be
    # too many (cheap estimates, or counts known from earlier turns: a bulk of items added at once costs nothing).
    counts = [0] * len(conv)
    acc = 0
    exact_until = len(conv)
    for i in range(len(conv) - 1, -1, -1):
        counts[i] = llm.message_tokens(conv[i])
        acc += counts[i]
        exact_until = i
        if acc > 2 * limit:
            break
    for i in range(exact_until):
        counts[i] = llm.message_tokens(conv[i], exact=False)
    total = sum(counts)
    if total <= limit:
        return Fitted(messages, 0, total, limit)
    if policy.mode == "disabled":
        raise ContextOverflowError(
            f"the conversation ({total} tokens) exceeds the {limit} tokens the model's context leaves after the "
            "instructions, and session.truncation is 'disabled': delete old items (conversation.item.delete) or "
            "set truncation to 'auto'")
    # suffix[i] = tokens of conv[i:]
    suffix = [0] * (len(conv) + 1)
    for i in range(len(conv) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + counts[i]
    starts = _unit_starts(conv)
    step = max(1.0, (1.0 - min(max(policy.retention, 0.0), 1.0)) * limit)
    checkpoints = [starts[0]]
    for u in starts[1:]:
        if suffix[checkpoints[-1]] - suffix[u] >= step:
            checkpoints.append(u)
    # suffix is non-increasing, so the first checkpoint (and unit start) that fits is found by bisection.
    cut = _first_fitting(checkpoints, suffix, limit)
    if cut is None:
        cut = _first_fitting(starts, suffix, limit)
    if cut is None:
        raise ContextOverflowError(
            f"the newest message alone ({suffix[starts[-1]]} tokens) exceeds the {limit} tokens the model's context "
            "leaves after the instructions")
    kept = conv[cut:]
    return Fitted(system + kept, len(conv) - len(kept), suffix[cut], limit)


def _first_fitting(candidates: list[int], suffix: list[int], limit: int) -> int | None:
    keys = [-suffix[c] for c in candidates]  # increasing
    i = bisect.bisect_left(keys, -limit)
    return candidates[i] if i < len(candidates) else None
