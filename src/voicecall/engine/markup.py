"""Keep tool markup out of what the assistant says: a streaming filter between the LLM and everything the client
sees or hears (``response.output_text.*``, ``response.output_audio_transcript.*``, the TTS).

Small models imitate the tool syntax they were shown (``<tool_call>…</tool_call>``, ``<tool_response>…``), and a
model served without tool parsing writes its calls as text. None of that is speech. The filter removes, as the text
streams:

* tool blocks with their content: ``<tool_call>``, ``<tool_response>``, ``<tools>``, ``<function…>``,
  ``<|python_tag|>``… (to the closing tag, or to the end of the answer when it never closes);
* any other tag-like token: ``</tool_call>``, ``<|im_end|>``, ``<br/>``;
* JSON objects: a balanced ``{…}`` (strings and escapes respected) — raw function calls and results.

Ordinary text is released at once, except the few characters that might still start a tag (at most
:data:`MAX_TAG` of them) or an object that is still open.
"""

from __future__ import annotations

import re

MAX_TAG = 40
"""A ``<`` not closed by ``>`` within this many characters is ordinary text (``a < b``)."""
MAX_OBJECT = 20_000
"""A ``{`` block longer than this is dropped without waiting for its end."""

BLOCK_TAGS = ("tool_call", "tool_response", "tools", "function", "function_call", "tool", "python_tag",
              "functions", "tool_calls", "tool_result", "think")
_TAG = re.compile(r"<(/?)\|?([A-Za-z_][\w.:=\-]*)[^<>\n]{0,%d}?/?>" % MAX_TAG)  # noqa: UP031
_TAG_START = re.compile(r"<[/|]?[A-Za-z_|]")


class ToolMarkupFilter:
    """``feed(text)`` returns what may be spoken now; ``flush()`` at the end of the answer returns the rest."""

    def __init__(self) -> None:
        self._buf = ""
        self._skip_until: str | None = None  # inside a block tag: the closing tag that ends it
        self._depth = 0  # inside a {...} object
        self._in_str = False
        self._esc = False
        self._obj_len = 0
        self.removed = 0  # characters dropped (for logs and tests)

    def feed(self, text: str) -> str:
        self._buf += text
        out: list[str] = []
        while self._buf:
            if self._depth:
                if not self._scan_object():
                    break
                continue
            if self._skip_until is not None:
                if not self._skip_block():
                    break
                continue
            i = _first_special(self._buf)
            if i < 0:
                out.append(self._buf)
                self._buf = ""
                break
            out.append(self._buf[:i])
            self._buf = self._buf[i:]
            if self._buf[0] == "{":
                self._depth, self._in_str, self._esc, self._obj_len = 0, False, False, 0
                self._scan_object(start=True)
                continue
            # "<": a tag, the start of one, or ordinary text
            m = _TAG.match(self._buf)
            if m:
                self.removed += m.end()
                name = (m.group(2) or "").lower().split("=")[0]
                closing = m.group(1) == "/"
                self._buf = self._buf[m.end():]
                if not closing and name in BLOCK_TAGS and not m.group(0).endswith("/>"):
                    self._skip_until = f"</{name}"
                continue
            if _could_be_tag(self._buf):
                break  # wait for more text
            out.append("<")
            self._buf = self._buf[1:]
        return "".join(out)

    def flush(self) -> str:
        """End of the answer: an open block or object is dropped; a lone ``<…`` that never closed is text."""
        out = ""
        if self._skip_until is None and not self._depth and self._buf and not _TAG_START.match(self._buf):
            out = self._buf
        elif self._buf:
            self.removed += len(self._buf)
        self._buf = ""
        self._skip_until = None
        self._depth = 0
        return out

    # ------------------------------------------------------------------------------ internals
    def _skip_block(self) -> bool:
        """Drop text up to and including the closing tag; False when more text is needed."""
        assert self._skip_until is not None
        low = self._buf.lower()
        pos = low.find(self._skip_until)
        if pos < 0:
            keep = _partial_suffix(low, self._skip_until)
            self.removed += len(self._buf) - keep
            self._buf = self._buf[len(self._buf) - keep:]
            return False
        end = self._buf.find(">", pos)
        if end < 0:
            self.removed += pos
            self._buf = self._buf[pos:]
            return False
        self.removed += end + 1
        self._buf = self._buf[end + 1:]
        self._skip_until = None
        return True

    def _scan_object(self, start: bool = False) -> bool:
        """Consume a ``{…}`` object from the buffer; False when it is still open (more text needed)."""
        for i, ch in enumerate(self._buf):
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif ch == "\\":
                    self._esc = True
                elif ch == '"':
                    self._in_str = False
            elif ch == '"':
                self._in_str = True
            elif ch == "{":
                self._depth += 1
            elif ch == "}":
                self._depth -= 1
                if self._depth == 0:
                    self.removed += i + 1
                    self._buf = self._buf[i + 1:]
                    return True
        self._obj_len += len(self._buf)
        self.removed += len(self._buf)
        self._buf = ""
        if self._obj_len > MAX_OBJECT:
            self._depth = 0
            self._skip_until = None
        return False


def _first_special(text: str) -> int:
    a, b = text.find("<"), text.find("{")
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)


def _could_be_tag(buf: str) -> bool:
    """``buf`` starts with ``<`` and might still grow into a tag."""
    if len(buf) == 1:
        return True
    if not _TAG_START.match(buf[:3]) and not (len(buf) == 2 and buf[1] in "/|"):
        return False
    return ">" not in buf and "\n" not in buf and len(buf) <= MAX_TAG + 2


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
