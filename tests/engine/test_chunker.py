"""The speakable-chunk cutter, fed token by token as a real LLM streams (spaces *before* words)."""

from __future__ import annotations

import numpy as np

from voicecall.engine.chunker import SpeechChunker, chunk_end, clean_for_speech, trim_edges


def feed(tokens: list[str], **kw: int) -> list[str]:
    c = SpeechChunker(**kw)
    out: list[str] = []
    for t in tokens:
        out += c.push(t)
    return out + c.flush()


def test_first_chunk_is_cut_after_three_complete_words_with_leading_space_tokens() -> None:
    c = SpeechChunker()
    got: list[str] = []
    for t in ["The", " capital", " of"]:
        got += c.push(t)
    assert got == []  # "of" might still grow ("often"): not complete yet
    assert c.push(" France") == ["The capital of"]
    assert c.push(" is") == []
    assert c.push(" Paris") == []
    assert c.push(".") == []
    assert c.flush() == ["France is Paris."]


def test_first_words_is_configurable() -> None:
    assert feed(["The", " capital", " of", " France", " is", " Paris", "."], first_words=4)[0] == "The capital of France"


def test_a_word_split_over_tokens_is_never_cut_in_half() -> None:
    chunks = feed(["It", " is", " nine", " in", " Tok", "yo", " now", " and", " sunny", "."], first_words=4)
    assert chunks[0] == "It is nine in"
    assert " ".join(chunks) == "It is nine in Tokyo now and sunny."


def test_trailing_space_tokens_cut_too() -> None:
    assert feed(["It ", "is ", "nine ", "in ", "Tokyo ", "now."])[0] == "It is nine"


def test_text_in_bulk_still_gives_a_short_first_chunk() -> None:
    """A primed answer's restated start arrives as one piece; its first audio waits for the whole first chunk."""
    c = SpeechChunker(first_words=4)
    assert c.push("The time the museum opens on Sunday is") == ["The time the museum"]
    assert c.push(" nine.") == []  # "nine." may go on ("nine.30"): a sentence ends at the whitespace after it
    assert c.flush() == ["opens on Sunday is nine."]
    assert feed(["The capital of France is", " Paris", "."], first_words=3) == ["The capital of", "France is Paris."]


def test_sentences_and_clauses_come_first() -> None:
    assert feed(["Hi", "!", " How", " are", " you", "?"]) == ["Hi!", "How are you?"]
    assert feed(["Of", " course", ",", " I", " think", " so", " too", "."])[0] == "Of course,"
    assert feed(["Well", ",", " I", " think", " so", " too", "."])[0] == "Well,"  # a first clause may be one word
    assert feed(["Yes", ",", " I", " can", " recommend", " one", ",", " and", " more", " of", " those", "."]) == [
        "Yes,", "I can recommend one, and more of those."]  # a later one needs two, and comes only in a long chunk


def test_later_chunks_are_sentences_not_four_words() -> None:
    chunks = feed(["Yes", ".", " The", " ocean", " covers", " most", " of", " the", " planet", " today", "."])
    assert chunks == ["Yes.", "The ocean covers most of the planet today."]


def test_long_runs_without_punctuation_are_cut_at_a_word_boundary() -> None:
    words = [f" w{i}" for i in range(70)]
    chunks = feed(["Start."] + words, max_words=30)
    assert chunks[0] == "Start."
    assert all(len(c.split()) <= 31 for c in chunks[1:])
    assert " ".join(chunks[1:]).split() == [w.strip() for w in words]


def test_abbreviations_do_not_end_a_sentence_and_markdown_is_not_read() -> None:
    assert feed(["Ask", " Dr", ".", " Smith", " today", " please", "."])[0] == "Ask Dr. Smith"
    assert clean_for_speech("**Bold** and `code` [link](http://x)") == "Bold and code link"


def test_initials_do_not_end_a_sentence() -> None:
    chunks = feed(["Read", " it", ".", " J", ".R", ".R", ".", " Tolkien", " wrote", " it", " well", "."])
    assert chunks == ["Read it.", "J.R.R. Tolkien wrote it well."]


def _tone(ms: int, rate: int = 24000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def _quiet(ms: int, rate: int = 24000) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 3, rate * ms // 1000).astype(np.int16)  # -80 dBFS


def test_chunk_edges_fit_how_the_chunk_ends() -> None:
    """The TTS pads every chunk with quiet as if it were a sentence: a cut between two words runs on."""
    pcm = np.concatenate([_quiet(50), _tone(500), _quiet(180)])
    assert chunk_end("The capital of") == "word" and chunk_end("Yes,") == "clause" and chunk_end("Paris.") == "sentence"
    ms = {end: len(trim_edges(pcm, 24000, text)) / 24 for end, text in
          [("word", "The capital of"), ("clause", "Yes,"), ("sentence", "It is Paris.")]}
    assert ms["word"] == 10 + 500 + 30
    assert ms["clause"] == 10 + 500 + 120
    assert ms["sentence"] == 10 + 500 + 180  # a sentence keeps the TTS's own pause
    assert len(trim_edges(_quiet(300), 24000, "Hm")) == len(_quiet(300))  # nothing to hear: left as is


def test_piper_chunks_of_one_clause_join_without_a_gap() -> None:
    """Real Piper audio: the quiet between "The capital of" and "France is Paris." goes from ~250 ms to ~40."""
    import pytest

    piper = pytest.importorskip("voicecall.speech.tts_piper")
    from voicecall.audio import frame_dbfs, resample

    tts = piper.PiperTTS()

    def audio(text: str) -> np.ndarray:
        return trim_edges(resample(np.concatenate(list(tts.synthesize(text))), tts.sample_rate, 24000), 24000, text)

    joined = np.concatenate([audio("The capital of"), audio("France is Paris.")])
    loud = frame_dbfs(joined, 240) > -45
    first_sound = int(np.argmax(loud))
    runs, run = [], 0
    for v in loud[first_sound:]:
        run = 0 if v else run + 1
        runs.append(run)
    assert first_sound <= 1  # Piper's 40-60 ms of leading quiet are gone
    assert max(runs[: len(runs) - 25]) * 10 <= 120  # no gap inside the clause (the sentence's own end excepted)
