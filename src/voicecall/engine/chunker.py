"""Cut a stream of LLM tokens into speakable chunks for TTS.

The first chunk is cut early (at the first clause punctuation, or once ``first_words`` words are complete) so the
first audio comes quickly; later chunks are whole sentences (or clauses once they grow long), which sound more natural.
Markdown decoration that a TTS would read aloud (``*``, ``#``, backticks, list bullets) is removed.
:func:`trim_edges` fits each chunk's synthesized audio to how the chunk ends (a TTS pads every synthesis with quiet,
as if each chunk were a sentence).
"""

from __future__ import annotations

import re

import numpy as np

from voicecall.audio import PCM16, frame_dbfs

_SENTENCE_MARK = r"[.!?…]"
_CLAUSE_MARK = r"[,;:—–]"
_CLOSERS = r"[\"')\]]*"
_SENTENCE_END = re.compile(rf"{_SENTENCE_MARK}+{_CLOSERS}\s")
_CLAUSE_END = re.compile(rf"{_CLAUSE_MARK}\s")
_MARKDOWN = re.compile(r"[*_#`~|>]+|^\s*[-+]\s+|\[(.*?)\]\(.*?\)", re.MULTILINE)
FIRST_CLAUSE_WORDS = 1
"""Words the first chunk needs to be cut at a clause mark: one ("Yes," / "Well," is spoken alone, ~45 ms of Piper
against ~90 for three words); a later chunk cut at a comma needs two."""
_WORD = re.compile(r"\S+")
_ABBREV = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|vs|etc|e\.g|i\.e|No)|(?-i:(?<![\w.])(?:[A-Z]\.)*[A-Z]))\.\s$", re.IGNORECASE)


def clean_for_speech(text: str) -> str:
    text = _MARKDOWN.sub(lambda m: m.group(1) or "", text)
    return re.sub(r"\s+", " ", text)


class SpeechChunker:
    def __init__(self, first_words: int = 3, max_words: int = 30) -> None:
        self._buf = ""
        self._first = True
        self.first_words = first_words
        self.max_words = max_words

    def push(self, text: str) -> list[str]:
        """Add LLM text; return the chunks that are complete now."""
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            chunk, self._buf = self._buf[:cut], self._buf[cut:]
            chunk = clean_for_speech(chunk).strip()
            if chunk:
                out.append(chunk)
                self._first = False
        return out

    def flush(self) -> list[str]:
        chunk = clean_for_speech(self._buf).strip()
        self._buf = ""
        return [chunk] if chunk and re.search(r"\w", chunk) else []

    def _find_cut(self) -> int | None:
        buf = self._buf
        for m in _SENTENCE_END.finditer(buf):
            if _ABBREV.search(buf[: m.end()]):
                continue  # "Dr. Smith": not the end of a sentence
            return m.end()
        words = len(buf.split())
        if self._first or words >= self.max_words // 2:
            clause = _CLAUSE_END.search(buf)
            if clause and len(buf[: clause.end()].split()) >= (FIRST_CLAUSE_WORDS if self._first else 2):
                return clause.end()
        limit = self.first_words if self._first else self.max_words
        if words > limit:
            return self._word_boundary(limit)
        return None

    def _word_boundary(self, words: int) -> int | None:
        """Where the buffer can be cut after exactly ``words`` *complete* words (None if it holds fewer).

        LLM tokenizers mostly put the space before a word (``" capital"``, ``" of"``), so a word is complete only
        once whitespace follows it (the last word of the buffer may still grow: ``" Tok"`` + ``"yo"``). Text that
        arrives in bulk (a primed answer's restated start, "The time the museum opens on Sunday is") is cut after
        ``words`` words too, not at its last complete one: the first chunk's length is what its first audio waits
        for (Piper: ~15 ms + ~50 ms per second of speech)."""
        for m in _WORD.finditer(self._buf):
            words -= 1
            if words == 0:
                return m.end() if m.end() < len(self._buf) else None
        return None


# ------------------------------------------------------------------------------------------ chunk edges
QUIET_DBFS = -45.0
"""Below this a 10 ms frame of synthesized speech is quiet (Piper normalises each sentence's peak to -1 dBFS)."""
LEAD_MS = 10
"""Quiet kept before a chunk's first sound: Piper starts every synthesis with 40-60 ms of it."""
TRAIL_MS = {"sentence": None, "clause": 120, "word": 30}
"""Quiet kept after a chunk's last sound, by how the chunk ended: a sentence keeps the TTS's own pause, a clause
a comma's pause, a cut between two words of a clause (the short first chunk) next to none. Piper ends every
synthesis with 140-200 ms of quiet, so two chunks of one clause were 200-260 ms apart ("The capital of ...
France is Paris.")."""
_ENDS_SENTENCE = re.compile(rf"{_SENTENCE_MARK}{_CLOSERS}$")
_ENDS_CLAUSE = re.compile(rf"{_CLAUSE_MARK}{_CLOSERS}$")


def chunk_end(text: str) -> str:
    """How a spoken chunk ends: ``sentence``, ``clause`` or ``word`` (cut between two words)."""
    text = text.rstrip()
    return "sentence" if _ENDS_SENTENCE.search(text) else "clause" if _ENDS_CLAUSE.search(text) else "word"


def trim_edges(pcm: PCM16, rate: int, text: str) -> PCM16:
    """The chunk's audio with the synthesizer's leading quiet cut to :data:`LEAD_MS` and its trailing quiet to what
    :data:`TRAIL_MS` allows for how ``text`` ends. Returns a view (no copy); all-quiet audio is returned as is."""
    hop = rate // 100
    loud = np.flatnonzero(frame_dbfs(pcm, hop) > QUIET_DBFS)
    if loud.size == 0:
        return pcm
    start = max(0, int(loud[0]) * hop - LEAD_MS * rate // 1000)
    keep = TRAIL_MS[chunk_end(text)]
    end = len(pcm) if keep is None else min(len(pcm), (int(loud[-1]) + 1) * hop + keep * rate // 1000)
    return pcm[start:end]
