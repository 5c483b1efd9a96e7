"""Rule-based help for a tiny model answering a spoken question in a ``qa`` prompt (no knowledge inside).

* :func:`restate` turns the question into the start of its answer ("What is the capital of Italy?" → "The capital
  of Italy is"). The model then completes a statement instead of choosing how to begin, which keeps SmolLM2-135M
  on the question's subject ("Italy is a country in Europe." becomes "The capital of Italy is Rome."). The
  restatement is part of the spoken answer and is streamed before the first token (see docs/speech.md, "Answer
  quality"). Only plain English question shapes are restated; anything else gets ``""`` and the model starts freely.
* :func:`arithmetic` computes a spoken sum ("What is ten minus three?" → ``"10 - 3 = 7"``): a 135M model cannot do
  arithmetic, so the result goes into the prompt as a fact, like a function result.
"""

from __future__ import annotations

import re
from fractions import Fraction

_PRONOUNS = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "am": "are"}
"""The user's first person becomes the answer's second person ("my solar system" → "your solar system" is wrong, so
"we/our/us", which usually mean people in general, are kept)."""
_NOT_A_SUBJECT = re.compile(r"(?i)(you|it|that|this|there|he|she|they|i|up|happening|wrong)\b")
_BE = "(is|are|was|were)"


def _swap(text: str) -> str:
    return " ".join(_PRONOUNS.get(w.lower(), w) for w in text.split())


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _third_person(verb: str) -> str:
    v = verb.lower()
    if v == "have":
        return "has"
    if re.search(r"(s|sh|ch|x|z|o)$", v):
        return v + "es"
    if re.search(r"[^aeiou]y$", v):
        return v[:-1] + "ies"
    return v + "s"


def restate(question: str) -> str:
    """The beginning of a one-sentence answer that restates ``question``, or ``""`` when its shape is not known."""
    q = re.sub(r"(?i)\b(what|who|where|how)'s\b", r"\1 is", " ".join(question.split()))
    if not q.endswith("?") or len(q) > 120:
        return ""
    q = q[:-1].rstrip(" ,")
    if "," in q or re.search(r"(?i)\b(or|and then)\b", q):  # compound or either-or: the model starts freely
        return ""
    if m := re.fullmatch(r"(?i)what do you call (.+)", q):
        return f"{_cap(_swap(m[1]))} is called"
    if m := re.fullmatch(rf"(?i)(?:what|which) colou?r {_BE} (.+)", q):
        return f"{_cap(_swap(m[2]))} {m[1].lower()}"
    if (m := re.fullmatch(rf"(?i)(?:what|who) {_BE} (.+?)( called)?", q)) and not _NOT_A_SUBJECT.match(m[2]):
        return f"{_cap(_swap(m[2]))} {m[1].lower()}{' called' if m[3] else ''}"
    if re.fullmatch(r"(?i)how many \w+(?: \w+)? (?:are|is) (?:there|in) .*|how many \w+(?: \w+)? (?:are|is) there",
                    q):
        return "There are"
    if m := re.fullmatch(r"(?i)how many \w+(?: \w+)? (do|does) (.+) (\w+)", q):
        if _NOT_A_SUBJECT.match(m[2]) and m[2].lower() not in ("i", "you"):
            return ""
        verb = m[3].lower() if m[1].lower() == "do" else _third_person(m[3])
        return f"{_cap(_swap(m[2]))} {verb}"
    if m := re.fullmatch(rf"(?i)which (\w+) {_BE} (.+)", q):
        return f"The {m[1].lower()} that {m[2].lower()} {_swap(m[3])} {m[2].lower()}"
    if (m := re.fullmatch(r"(?i)(?:which|what) (\w+) (has|have|\w+s) (.+)", q)) and m[1].lower() not in (
            "is", "are", "was", "were", "does", "do", "did", "has", "have") and m[2].lower() not in (
            "is", "was", "does") and not _NOT_A_SUBJECT.match(m[3]):
        return f"The {m[1].lower()} that {m[2].lower()} {_swap(m[3])} is"
    if (m := re.fullmatch(r"(?i)what (\w+) (?:do|does|did) (.+)", q)) and not _NOT_A_SUBJECT.match(m[2]) or (
            m and m[2].split()[0].lower() in ("you", "i")):
        return f"The {m[1].lower()} {_swap(m[2])} is"
    if m := re.fullmatch(rf"(?i)in which \w+ {_BE} (.+)", q):
        return f"{_cap(_swap(m[2]))} {m[1].lower()} in"
    return ""


# ------------------------------------------------------------------------------------------- arithmetic
_UNIT_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
               "sixteen seventeen eighteen nineteen")
_UNITS = {w: i for i, w in enumerate(_UNIT_WORDS.split())}
_TEN_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
_TENS = {w: 10 * i for i, w in enumerate(_TEN_WORDS.split(), start=2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_WORD = "|".join([*_UNITS, *_TENS, *_SCALES, "a", "and"])
_NUMBER = rf"(?:\d+(?:[.,]\d+)*|(?:(?:{_NUMBER_WORD})[ -]?)+)"
_OPS = {"plus": "+", "add": "+", "minus": "-", "less": "-", "times": "*", "multiplied by": "*", "x": "*",
        "divided by": "/", "over": "/"}
_OP = "|".join(sorted(map(re.escape, _OPS), key=len, reverse=True))


def _number(text: str) -> Fraction | None:
    text = text.strip().lower().replace(",", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return Fraction(text)
    total = current = 0
    seen = False
    for word in re.split(r"[ -]+", text):
        if word in ("and", ""):
            continue
        if word == "a":
            current = current or 1
        elif word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = (current or 1) * 100
        elif word in _SCALES:
            total += (current or 1) * _SCALES[word]
            current = 0
        else:
            return None
        seen = True
    return Fraction(total + current) if seen else None


def _show(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


def arithmetic(question: str) -> str | None:
    """``"a op b = c"`` for a spoken two-number sum, half, double or percentage, else ``None``."""
    q = " ".join(question.lower().replace("?", " ").replace("'s", " is").split())
    q = re.sub(r"^(?:and |so |okay |ok |hey |please )+", "", q)
    m = re.fullmatch(rf"(?:what is|how much is|what does|calculate|compute|tell me)\s+(?:the result of )?"
                     rf"({_NUMBER}) ({_OP}) ({_NUMBER})(?: equal| make| come to)?(?: please)?\.?", q)
    if m:
        a, b, op = _number(m[1]), _number(m[3]), _OPS[m[2]]
        if a is None or b is None or (op == "/" and b == 0):
            return None
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else a}[op]
        return f"{_show(a)} {op} {_show(b)} = {_show(value)}"
    m = re.fullmatch(rf"(?:what is|how much is) (half|a third|a quarter|double|twice) (?:of )?({_NUMBER})\.?", q)
    if m and (a := _number(m[2])) is not None:
        factor: Fraction = {"half": Fraction(1, 2), "a third": Fraction(1, 3), "a quarter": Fraction(1, 4),
                            "double": Fraction(2), "twice": Fraction(2)}[m[1]]
        return f"{m[1]} of {_show(a)} = {_show(a * factor)}"
    m = re.fullmatch(rf"(?:what is|how much is) ({_NUMBER}) percent of ({_NUMBER})\.?", q)
    if m and (a := _number(m[1])) is not None and (b := _number(m[2])) is not None:
        return f"{_show(a)} percent of {_show(b)} = {_show(a * b / 100)}"
    return None
