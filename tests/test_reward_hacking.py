"""Reward hacking: no degenerate rationale outscores a good one on the default weighted reward.

RL maximises whatever the registry scores, so a cheap degenerate output (empty, the question
restated, one context sentence copied, the answer alone) must not beat the supporting-fact
chain or its paraphrase. The reward is ``conf/reward/default.yaml`` as a run composes it: all 8
aspects + task, MiniLM for the embedding aspects, the random tiny reader for perplexity, and a
scripted reader for the task aspect that trusts the rationale (it answers the rationale's stated
conclusion, else its last named entity), as a reader that reads the rationale would.
"""

import re

import pytest
from hydra.utils import instantiate

from lmcot.data.synthetic import make_example
from lmcot.lm.base import LM
from lmcot.rewards.corrupt import gold_rationale, with_conclusion
from lmcot.rewards.paraphrase import paraphrase_facts
from lmcot.rewards.text import claimed_answer, split_sentences

_NAME = re.compile(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*")


class RationaleReader(LM):
    """Answers from the rationale alone: its conclusion, else the last name it mentions."""

    cache_id = "scripted-rationale-reader"

    def _generate(self, prompts, params, n):
        answers = []
        for prompt in prompts:
            rationale = prompt.rsplit("Rationale:", 1)[1].rsplit("\nAnswer:", 1)[0].strip()
            sentences = split_sentences(rationale)
            names = _NAME.findall(sentences[-1]) if sentences else []
            answers.append([" " + (claimed_answer(rationale) or (names[-1] if names else ""))])
        return answers


def degenerate(example) -> dict[str, str]:
    facts = example.supporting_sentences()
    with_answer = next((f for f in facts if example.answer in f), facts[-1])
    return {
        "empty": "",
        "question": example.question,
        "copied_sentence": with_answer.strip(),  # the gold sentence that holds the answer
        "answer_alone": f"{example.answer}.",
        "answer_conclusion": f"So the answer is {example.answer}.",
    }


@pytest.mark.slow  # MiniLM + a tiny LM over 8 questions x 7 rationales: 20-170 s on 2 busy cores
def test_no_degenerate_rationale_outscores_a_good_one(cfg_factory):
    cfg = cfg_factory("reader=tiny", config_name="validate")
    assert list(cfg.reward.aspects) == [
        "factuality", "relevance", "logicality", "consistency", "coherence", "fluency",
        "naturalness", "readability", "task",
    ]  # fmt: skip
    registry = instantiate(cfg.reward, lm=instantiate(cfg.reader))
    registry.scorers["task"].lm = RationaleReader()
    examples = [make_example(i) for i in range(8)]
    rows, texts = [], []
    for ex in examples:
        good = {
            "gold": gold_rationale(ex),
            "paraphrase": with_conclusion(ex, paraphrase_facts(ex)[0]),
        }
        candidates = {**good, **degenerate(ex)}
        rows += [(ex, name) for name in candidates]
        texts += candidates.values()
    scores = registry([""] * len(texts), texts, examples=[ex for ex, _ in rows])
    by_row = {(ex.id, name): s for (ex, name), s in zip(rows, scores.aggregate)}
    task = dict(zip([(ex.id, n) for ex, n in rows], scores.aspects["task"]))
    assert all(task[(ex.id, "gold")] == 1.0 for ex in examples)  # the scripted reader reads it
    for ex in examples:
        good = min(by_row[(ex.id, "gold")], by_row[(ex.id, "paraphrase")])
        for name in degenerate(ex):
            bad = by_row[(ex.id, name)]
            # None (nothing applies: the empty rationale) is what RL treats as 0
            assert (bad or 0.0) < good, (ex.question, name, bad, good)
