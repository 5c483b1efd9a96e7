"""Which declared function a user's words ask for: a lexical router for small local models under ``tool_choice: auto``.

SmolLM2-135M almost never decides on its own to call a function it was shown (see docs/speech.md, "Function
calling"). The router compares the content words of the user's latest message (lower-cased, crudely stemmed,
stop words removed) with each tool's words: its name (weight 2), description, parameter names and descriptions
and enum values (weight 1). The best tool with a score of at least 1 that beats the runner-up is called (its
arguments then come from the model under the tool's grammar); otherwise the model answers in words, and may still
write a ``<tool_call>`` itself.

It knows only words: a tool is found by the words its description uses ("rain", "alarm"), and a question that
merely mentions such a word ("Who invented the light bulb?" with a ``set_lights`` tool) calls it. The measured
call and false-call rates are in docs/speech.md; ``toolRouter: false`` leaves the choice to the model (bigger
models choose well).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from .base import FunctionTool

_STOP_TEXT = """
a an the is are was were be been am to of in on at for by with and or not no it its this that these those there here
what which who whom whose when where why how do does did done can could would should will shall may might must i me
my mine you your yours we our us they them their he him his she her please some any all get set give tell about from
into up down out over than then now right just like want need let make know think thing one two three four five six
seven eight nine ten twenty thirty forty fifty hundred current currently today tomorrow much many very really also
so if but as have has had go going okay ok hey hi hello thanks thank yes yeah new use using call function name
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())
_SPLIT = re.compile(r"[A-Za-z]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def stem(word: str) -> str:
    w = word.lower()
    for suffix in ("ing", "ies", "es", "ed", "s", "y"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return w


def terms(text: str) -> set[str]:
    words = _SPLIT.findall(_CAMEL.sub(" ", text).replace("_", " "))
    return {stem(w) for w in words if w.lower() not in STOP_WORDS and len(w) > 1}


def _schema_words(schema: Any) -> list[str]:
    out: list[str] = []
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            out.append(str(name))
            out.extend(_schema_words(sub))
        if isinstance(schema.get("description"), str):
            out.append(schema["description"])
        for value in schema.get("enum") or []:
            out.append(str(value))
        if "items" in schema:
            out.extend(_schema_words(schema["items"]))
    return out


@lru_cache(maxsize=256)
def _tool_terms(name: str, description: str, schema_words: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(terms(name)), frozenset(terms(description + " " + " ".join(schema_words)))


def route(text: str, tools: list[FunctionTool]) -> FunctionTool | None:
    """The tool ``text`` asks for, or ``None``."""
    said = terms(text)
    if not said:
        return None
    scored: list[tuple[int, int, FunctionTool]] = []
    for i, tool in enumerate(tools):
        name_terms, other_terms = _tool_terms(tool.name, tool.description or "", tuple(_schema_words(tool.parameters)))
        score = 2 * len(said & name_terms) + len(said & (other_terms - name_terms))
        scored.append((score, -i, tool))
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    best = scored[0]
    if best[0] < 1 or (len(scored) > 1 and scored[1][0] == best[0]):
        return None
    return best[2]
