"""The answer-quality sets of ``voicecall bench answers`` and its checker (no model needed)."""

from __future__ import annotations

from voicecall.bench.answer_set import ANSWERS, HELDOUT
from voicecall.bench.answers import has_markup, passes
from voicecall.speech.qa_hints import restate


def test_heldout_is_a_different_set_of_the_same_size() -> None:
    assert len(HELDOUT) >= 40 and len(ANSWERS) >= 40
    assert not {q.text for q in ANSWERS} & {q.text for q in HELDOUT}


def test_no_question_or_restatement_already_holds_its_fact() -> None:
    """Priming speaks the restated question: a fact inside the question would pass without being answered."""
    for qn in ANSWERS + HELDOUT:
        for said in (qn.text, restate(qn.text)):
            assert not any(passes(said, (group,)) for group in qn.facts), qn.text


def test_checker_matches_whole_words_and_rejects_markup() -> None:
    facts = (("4", "four"),)
    assert passes("Two plus two is four.", facts) and passes("2 + 2 = 4", facts)
    assert not passes("Two plus two is 14.", facts) and not passes("fourteen", facts)
    assert has_markup('<tool_call>{"name": "x"}</tool_call>') and not has_markup("The capital of Italy is Rome.")
