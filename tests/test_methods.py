"""Original CoT's second turn: a reply that states no answer is asked for it (issue 21); the
LM-guided method and the task aspect ask the reader one prompt for a rationale."""

import json

from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from lmcot.data.synthetic import make_example
from lmcot.decoding import Greedy
from lmcot.evaluate import evaluate
from lmcot.lm.base import LM
from lmcot.methods import LMGuided, OriginalCoT
from lmcot.rewards.task import TaskReward

CALLS: list[list[str]] = []  # prompts of every _generate call of every ScriptedReader


class ScriptedReader(LM):
    """CoT: states the answer for even-numbered questions, only a fact for odd ones; the answer
    turn (its prompt ends in the rationale's ``Answer:`` slot): the answer, as a chat reader
    might write it."""

    @property
    def cache_id(self) -> str:
        return "fake:scripted-cot"

    def _generate(self, prompts, params, n):
        CALLS.append(list(prompts))
        replies = []
        for prompt in prompts:
            question = prompt.rsplit("Question: ", 1)[1].split("\n")[0]
            if prompt.endswith("Rationale:"):  # the first turn
                stated = len(question) % 2 == 0
                replies.append(f" The fact of {question}" + ("\nAnswer: early" if stated else ""))
            else:
                replies.append(' "late".')
        return [[reply] * n for reply in replies]


def cot(prompts="v1"):
    cfg = OmegaConf.load(f"conf/prompts/{prompts}.yaml")
    if prompts == "v2":  # v2 composes v1 (Hydra defaults): merge as Hydra would
        cfg = OmegaConf.merge(OmegaConf.load("conf/prompts/v1.yaml"), cfg)
    cfg.pop("defaults", None)
    return OriginalCoT(instantiate(cfg.cot), instantiate(cfg.cot_answer))


def test_a_reply_without_an_answer_gets_one_batched_cached_answer_turn(tmp_path):
    examples = [make_example(i) for i in range(6)]
    odd = [len(ex.question) % 2 == 1 for ex in examples]
    assert 0 < sum(odd) < len(examples)  # the script exercises both kinds of reply
    CALLS.clear()
    reader, method = ScriptedReader(cache=str(tmp_path / "r.sqlite")), cot()
    predictions = method("cot", examples, reader)
    assert [p.prediction for p in predictions] == ["late" if o else "early" for o in odd]
    assert [p.rationale for p in predictions] == [f"The fact of {ex.question}" for ex in examples]
    assert method.second_turns == sum(odd) and reader.backend_calls == 2  # one call per turn
    [first, second] = CALLS
    assert len(first) == len(examples) and len(second) == sum(odd)
    for prompt, ex in zip(second, [ex for ex, o in zip(examples, odd) if o]):
        # the reader's own rationale in context, then the answer slot
        assert prompt.endswith(f"Question: {ex.question}\nRationale: The fact of {ex.question}"
                               "\nAnswer:")  # fmt: skip
    again = ScriptedReader(cache=str(tmp_path / "r.sqlite"))
    assert method("cot", examples, again) == predictions and again.backend_calls == 0


def test_the_answer_turn_continues_the_cot_prompt_in_both_prompt_versions():
    example = make_example(0)
    for version in ("v1", "v2"):
        method = cot(version)
        first = str(method.prompt.render(example))
        second = str(method.answer_prompt.render(example, rationale="R."))
        assert second == f"{first} R.\nAnswer:", version  # exemplars, instruction: the same


def test_without_an_answer_prompt_an_unanswered_reply_stays_empty():
    unanswered = [ex for ex in map(make_example, range(6)) if len(ex.question) % 2]
    method = OriginalCoT(cot().prompt)
    predictions = method("cot", unanswered, ScriptedReader())
    assert unanswered and all(p.prediction == "" for p in predictions)
    assert method.second_turns == 0


def test_results_count_the_second_turns(cfg_factory):
    cfg = cfg_factory("debug=smoke", "data.limit=4")
    with open_dict(cfg):
        cfg.reader = {"_target_": f"{__name__}.ScriptedReader"}
    evaluate(cfg)
    results = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    unanswered = sum(len(ex.question) % 2 for ex in instantiate(cfg.data))
    assert unanswered and results["second_turn"] == {"cot": unanswered}


class Student(LM):
    """Writes what a decoder's decoded continuation of ``Rationale:`` looks like: a leading
    space, then the rationale."""

    cache_id = "fake:student"

    def _generate(self, prompts, params, n):
        return [[f" The fact of {p.rsplit('Question: ', 1)[1].split(chr(10))[0]}"] * n
                for p in prompts]  # fmt: skip


def test_em_and_the_task_aspect_read_a_rationale_with_one_reader_prompt(tmp_path):
    """The method reads the decoded rationale, the quality scorer the stored (stripped) one:
    one prompt, so the second is the reader's cache and both score the same answer."""
    cfg = OmegaConf.load("conf/prompts/v1.yaml")
    examples = [make_example(i) for i in range(4)]
    reader = ScriptedReader(cache=str(tmp_path / "r.sqlite"))
    method = LMGuided(Greedy(), instantiate(cfg.rationale), instantiate(cfg.guided),
                      student=Student())  # fmt: skip
    CALLS.clear()
    predictions = method("lm_guided_kd", examples, reader)
    assert all(p.rationale.startswith("The fact") for p in predictions)
    scorer = TaskReward(reader, instantiate(cfg.guided))
    scorer([""] * 4, [p.rationale for p in predictions], examples=examples)
    assert reader.backend_calls == 1 and len(CALLS) == 1  # the scorer's prompts: all cached
    assert "Rationale: The fact of" in CALLS[0][0]  # as the exemplars show theirs
