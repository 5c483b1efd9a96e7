"""The qa prompt's rule-based help: restating a question as the start of its answer, spoken arithmetic."""

from __future__ import annotations

import pytest

from voicecall.speech.qa_hints import arithmetic, restate


@pytest.mark.parametrize(("question", "start"), [
    ("What is the capital of Italy?", "The capital of Italy is"),
    ("What's the capital of Peru?", "The capital of Peru is"),
    ("Who was the first king of Norway?", "The first king of Norway was"),
    ("What is frozen water called?", "Frozen water is called"),
    ("What do you call a baby goat?", "A baby goat is called"),
    ("How many legs does a horse have?", "A horse has"),
    ("How many weeks are in a year?", "There are"),
    ("Which city is the capital of Chile?", "The city that is the capital of Chile is"),
    ("Which bird lays the largest eggs?", "The bird that lays the largest eggs is"),
    ("What sport do people play at Wimbledon?", "The sport people play at Wimbledon is"),
    ("In which country is Machu Picchu?", "Machu Picchu is in"),
    ("What colour is my blood?", "Your blood is"),
    # shapes it must leave alone: the model starts freely
    ("What time is it?", ""),
    ("Who are you?", ""),
    ("What is it?", ""),
    ("Is tea or coffee better?", ""),
    ("Tell me about the moon.", ""),
    ("What is the weather, and the time?", ""),
])
def test_restate(question: str, start: str) -> None:
    assert restate(question) == start


@pytest.mark.parametrize(("said", "fact"), [
    ("What is ten minus three?", "10 - 3 = 7"),
    ("What's 12 times 12?", "12 * 12 = 144"),
    ("What is one hundred and five plus twenty-two?", "105 + 22 = 127"),
    ("What is seven divided by two?", "7 / 2 = 3.5"),
    ("How much is 15 percent of 80?", "15 percent of 80 = 12"),
    ("What is half of twenty?", "half of 20 = 10"),
    ("What is five divided by zero?", None),
    ("What is the capital of France?", None),
    ("What is two plus the moon?", None),
])
def test_arithmetic(said: str, fact: str | None) -> None:
    assert arithmetic(said) == fact
