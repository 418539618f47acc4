"""Answer extraction never drops an answer the reader states (issue 12's real outputs)."""

import pytest

from lmcot.prompts import extract_answer, split_rationale
from lmcot.rewards.text import claimed_answer


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        (" Lee Hazlewood\n", "Lee Hazlewood"),  # the slot
        ("Answer: **Columbia University**.", "Columbia University"),  # markdown bold
        ("The answer is 10.", "10"),  # completions CoT without an Answer: line
        ("Kansas is in the US. The answer is: Columbia University", "Columbia University"),
        ("It is 'Orrin Vale'. Therefore, 'Orrin Vale'.", "Orrin Vale"),
        ("Both formed in 1990. So the answer is \u201cyes\u201d!", "yes"),
        ("Arlo was born in Lyon. So Lyon", "Lyon"),
    ],
)
def test_stated_answers_are_extracted(output, answer):
    assert extract_answer(output) == answer


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("Delia founded it.\nAnswer: Estford", "Estford"),
        (
            "The University of Kansas is public. The answer is: Columbia University",
            "Columbia University",
        ),
        ("Orrin Vale formed in 1987. Therefore, Orrin Vale.", "Orrin Vale"),
        ("Orrin Vale formed in 1987.", ""),  # nothing stated: empty, not a guess
    ],
)
def test_cot_answer_without_an_answer_line(output, answer):
    rationale, extracted = split_rationale(output)
    assert extracted == answer and rationale.startswith(output.split("\n")[0])


def test_rationale_claims_use_the_same_rules():
    assert claimed_answer("B was born in C. So the answer is **Estford**.") == "Estford"
    assert claimed_answer("B was born in C. So C.") is None  # a connective is no explicit claim
