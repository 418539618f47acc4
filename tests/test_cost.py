"""cost.<method>: the tokens a method asks for (cached or not), the calls that reached a model."""

import json

from lmcot.cost import Meter, Metered, MethodCost
from lmcot.evaluate import evaluate
from lmcot.lm.base import LM, GenerationParams


class ScriptedLM(LM):
    """Answers every prompt with "abcdefgh" (2 tokens at 4 characters a token: no tokenizer)."""

    cache_id = "scripted"

    def _generate(self, prompts, params, n):
        return [["abcdefgh"] * n for _ in prompts]

    def _logprobs(self, prompts, continuations):
        return [-1.0 for _ in prompts]


def spend(lm: ScriptedLM) -> dict:
    meter = Meter()
    reader = Metered(lm, meter, "reader")
    with MethodCost(meter, lm) as spent:
        reader.generate(["abcdabcdabcd", "abcd"], GenerationParams(temperature=1.0), n=2)
        reader.logprobs(["abcd"], ["abcd"])  # 8 characters scored: 2 tokens of prompt
    return spent.cost


def test_tokens_asked_are_counted_and_a_cached_rerun_makes_no_calls(tmp_path):
    first = spend(ScriptedLM(cache=tmp_path / "lm.sqlite"))
    # prompts: 2 samples x (3 + 1) tokens, + 2 scored; answers: 4 x 2 tokens
    expected = {"reader_prompt_tokens": 10, "reader_new_tokens": 8, "student_new_tokens": 0}
    assert {k: first[k] for k in expected} == expected and first["reader_calls_made"] == 2
    again = spend(ScriptedLM(cache=tmp_path / "lm.sqlite"))
    assert {k: again[k] for k in expected} == expected and again["reader_calls_made"] == 0
    assert again["seconds"] >= 0


def test_every_method_reports_its_cost_and_a_rerun_the_same_work(cfg_factory):
    cfg = cfg_factory("debug=smoke", "data.limit=3")
    evaluate(cfg)
    first = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    assert set(first["cost"]) == set(first["methods"]) == {"standard", "cot"}
    for cost in first["cost"].values():
        assert cost["reader_prompt_tokens"] > 0 and cost["reader_calls_made"] > 0
    # CoT's prompts carry the exemplars' rationales too
    assert (
        first["cost"]["cot"]["reader_prompt_tokens"]
        > first["cost"]["standard"]["reader_prompt_tokens"]
    )
    assert first["precision"] == {"reader": "float32"}
    evaluate(cfg)
    second = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    for name, cost in second["cost"].items():
        assert cost["reader_calls_made"] == 0
        assert {k: v for k, v in cost.items() if k.endswith("tokens")} == {
            k: v for k, v in first["cost"][name].items() if k.endswith("tokens")
        }
