"""One rule fits the student's prompt to its token budget, at training and at inference."""

import logging

import pytest
from conftest import HOTPOT_SAMPLE, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot.data import hotpotqa, synthetic
from lmcot.decoding import Greedy
from lmcot.distill import training_pairs
from lmcot.methods import LMGuided
from lmcot.prompts import (
    PromptTooLong,
    approximate_tokens,
    fit_prompt,
    fit_prompts,
    token_counter,
)

PROMPTS = OmegaConf.load("conf/prompts/v1.yaml")
INSTRUCTION = PROMPTS.rationale.instruction


def words(text: str) -> int:
    return len(text.split())


def titles_in(prompt: str) -> list[str]:
    context = prompt.split("Context:\n", 1)[1].split("\nQuestion:", 1)[0]
    return [line.split(": ", 1)[0] for line in context.splitlines()]


@pytest.fixture(scope="module")
def hotpot():
    return hotpotqa.load(HOTPOT_SAMPLE)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A tiny random Llama with SmolLM2's tokenizer, as ``student=tiny_llama`` builds it."""
    return instantiate(compose_cfg(tmp_path_factory.mktemp("s"), "student=tiny_llama").student)


@pytest.fixture(scope="module")
def smollm2_tokens(student):
    return token_counter(student)


def test_training_keeps_gold_instruction_and_question_where_left_cut_lost_them(
    hotpot, student, smollm2_tokens
):
    ex = hotpot[0]  # 1,249 tokens; its gold paragraphs are the 2nd and the 5th of 10
    prompt = instantiate(PROMPTS.rationale)
    assert prompt.max_prompt_tokens == 384
    full = prompt.render(ex)
    gold = {title for title, _ in ex.supporting_facts}
    # what the collator used to train on: the last 384 tokens
    tok = student.tokenizer
    left_cut = tok.decode(tok(full)["input_ids"][-384:])
    assert INSTRUCTION not in left_cut and not any(f"\n{t}: " in left_cut for t in gold)

    [(source, _)], counts = training_pairs(
        [{"id": ex.id, "rationale": "r."}], {ex.id: ex}, prompt, smollm2_tokens
    )
    assert smollm2_tokens(source) <= 384 and counts == {"sources_cut": 1, "rows_skipped": 0}
    assert source.startswith(INSTRUCTION) and source.endswith(f"{ex.question}\nRationale:")
    assert gold <= set(titles_in(source))
    assert titles_in(source) == [t for t, _ in ex.context if t in titles_in(source)]  # in order


def test_inference_uses_the_same_rule_within_budget(hotpot, smollm2_tokens, caplog):
    prompt = instantiate(PROMPTS.rationale)
    with caplog.at_level(logging.INFO, logger="lmcot.prompts"):
        prompts, cut = fit_prompts(prompt, hotpot, smollm2_tokens)
    assert cut == 9  # every row, even the 2-paragraph one (397 tokens in full): one goes ...
    assert "dropped context paragraphs from 9 of 9 prompts" in caplog.text
    for ex, text in zip(hotpot, prompts, strict=True):
        assert smollm2_tokens(text) <= 384
        assert text.startswith(INSTRUCTION) and text.endswith(f"{ex.question}\nRationale:")
        assert text == fit_prompt(prompt, ex, smollm2_tokens)[0]  # the training rule, no gold
    # ... but at training both are gold and never drop: that row is skipped, and counted
    short = hotpot[8]
    assert len(short.context) == 2
    pairs, counts = training_pairs(
        [{"id": short.id, "rationale": "r."}, {"id": hotpot[0].id, "rationale": "r."}],
        {ex.id: ex for ex in hotpot}, prompt, smollm2_tokens,
    )  # fmt: skip
    assert len(pairs) == 1 and counts == {"sources_cut": 1, "rows_skipped": 1}
    with pytest.raises(ValueError, match="all 1 teacher rows exceed"):
        training_pairs([{"id": short.id, "rationale": "r."}], {short.id: short}, prompt,
                       smollm2_tokens)  # fmt: skip


def test_test_time_order_drops_unrelated_paragraphs_first():
    prompt = instantiate(PROMPTS.rationale, max_prompt_tokens=50)
    ex = synthetic.load(1, seed=3, num_distractors=8)[0]
    text, dropped = fit_prompt(prompt, ex, words)
    assert dropped > 0 and words(text) <= 50
    assert {title for title, _ in ex.supporting_facts} & set(titles_in(text))


def test_a_budget_below_the_fixed_part_is_a_clear_error():
    prompt = instantiate(PROMPTS.rationale, max_prompt_tokens=10)
    ex = synthetic.load(1)[0]
    with pytest.raises(PromptTooLong, match=f"example {ex.id}: .* max_prompt_tokens=10"):
        fit_prompt(prompt, ex, words)


def test_no_budget_renders_in_full():
    prompt = instantiate(PROMPTS.rationale, max_prompt_tokens=None)
    ex = synthetic.load(1)[0]
    assert fit_prompt(prompt, ex, words) == (prompt.render(ex), 0)


def test_two_tasks_keep_their_own_prefix_and_slot_after_fitting():
    examples = synthetic.load(4, seed=1, num_distractors=8)
    rows = [{"id": ex.id, "rationale": " ".join(ex.supporting_sentences())} for ex in examples]
    rationale_prompt = instantiate(PROMPTS.rationale, max_prompt_tokens=80)
    answer_prompt = instantiate(PROMPTS.answer_task, max_prompt_tokens=80)
    pairs, counts = training_pairs(
        rows, {ex.id: ex for ex in examples}, rationale_prompt, words,
        "rationale_and_answer", answer_prompt,
    )  # fmt: skip
    assert counts["sources_cut"] == 8
    for (rationale_source, _), (answer_source, _) in zip(pairs[::2], pairs[1::2]):
        assert rationale_source != answer_source
        assert rationale_source.startswith(rationale_prompt.instruction)
        assert rationale_source.endswith("Rationale:")
        assert answer_source.startswith(answer_prompt.instruction)
        assert answer_source.endswith("Answer:")
        assert words(rationale_source) <= 80 and words(answer_source) <= 80
    assert rationale_prompt.instruction != answer_prompt.instruction


class ApiStudent:
    """A student without a tokenizer (an API model): prompts are counted approximately."""

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, params, n=1):
        self.prompts += prompts
        return [["r."] for _ in prompts]


class Reader:
    def generate(self, prompts, params, n=1):
        return [["yes"] for _ in prompts]


def test_lm_guided_gives_the_student_fitted_prompts(hotpot):
    student = ApiStudent()
    method = LMGuided(
        Greedy(), instantiate(PROMPTS.rationale), instantiate(PROMPTS.guided), student=student
    )
    method("lm_guided_kd", hotpot[:2], Reader())
    assert len(student.prompts) == 2
    for ex, text in zip(hotpot, student.prompts):
        assert approximate_tokens(text) <= 384 and text.endswith(f"{ex.question}\nRationale:")


def test_one_budget_key_for_training_and_inference(cfg_factory):
    cfg = cfg_factory("prompts.rationale.max_prompt_tokens=200", config_name="train")
    assert cfg.distill.prompt.max_prompt_tokens == 200
    assert cfg.distill.answer_prompt.max_prompt_tokens == 200
    assert cfg.methods.lm_guided_kd.rationale_prompt.max_prompt_tokens == 200
