"""Reward registry, aggregation, judge math, corruptions: literal inputs, hand-computed outputs."""

import logging
import math
import re

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from lmcot.data.example import Example
from lmcot.data.synthetic import make_example
from lmcot.lm.base import LM, UnsupportedByBackend
from lmcot.rewards import ASPECTS, RewardRegistry, make_scorer, select_best
from lmcot.rewards.consistency import AnswerConsistency
from lmcot.rewards.corrupt import ASPECT_CORRUPTIONS, CORRUPTIONS, corrupt, gold_rationale
from lmcot.rewards.llm_judge import LLMJudge
from lmcot.rewards.paraphrase import paraphrase, paraphrase_facts
from lmcot.rewards.readability import Readability
from lmcot.rewards.registry import RunningNormalizer
from lmcot.rewards.validate import build_pairs, score_pairs

RUBRIC = {
    "instruction": "Check.",
    "template": "{evidence}Q: {question}\nR: {rationale}\n{criterion}\nA:",
    "aspects": {"factuality": {"criterion": "True?", "evidence": True, "exemplars": []}},
}
EX = Example(
    "ex1",
    "Where was the founder of Korvath Mills born?",
    [
        ("Korvath Mills", ["Korvath Mills was founded by Delia Marsh.", " It makes paper."]),
        ("Delia Marsh", ["Delia Marsh was born in Estford."]),
        ("Bryn Hollow", ["Bryn Hollow is a village on the river Tamm."]),
    ],
    "Estford",
    supporting_facts=[("Korvath Mills", 0), ("Delia Marsh", 0)],
)


class FakeLM(LM):
    """Known log-probabilities: log P(" yes") = yes_logp(prompt), log P(" no") = log 0.25."""

    cache_id = "fake"

    def __init__(self, yes=-0.6931471805599453, logprobs=True, samples=None, **kw):  # log 0.5
        super().__init__(**kw)
        self.yes, self.has_logprobs, self.samples = yes, logprobs, samples or [""]

    def _generate(self, prompts, params, n):
        return [(self.samples * n)[:n] for _ in prompts]

    def _logprobs(self, prompts, continuations):
        self.seen = list(prompts)
        if not self.has_logprobs:
            raise UnsupportedByBackend("chat-only")
        return [self.yes if c == " yes" else math.log(0.25) for c in continuations]


class Constant:
    """A scorer of known output: returns ``values`` whatever it is given."""

    uses_gold = False

    def __init__(self, values):
        self.values = values

    def __call__(self, prompts, completions, **columns):
        return list(self.values)


def call(registry, n):
    return registry([""] * n, ["r"] * n, examples=[EX] * n)


class TestAggregation:
    def test_weighted_sum_skips_none(self):
        registry = RewardRegistry(
            {"factuality": Constant([0.5, None]), "fluency": Constant([1.0, 0.25])},
            weights={"factuality": 2.0},
        )
        scores = call(registry, 2)
        # row 0: 2*0.5 + 1*1.0 = 2.0; row 1: factuality is None -> 1*0.25
        assert scores.aggregate == [2.0, 0.25]
        assert scores.aspects["factuality"] == [0.5, None]

    def test_mean_divides_by_present_weights(self):
        registry = RewardRegistry(
            {"factuality": Constant([0.5, None]), "fluency": Constant([1.0, 0.25])},
            weights={"factuality": 3.0},
            aggregation="mean",
        )
        # row 0: (3*0.5 + 1*1.0) / 4 = 0.625; row 1: 0.25 / 1
        assert call(registry, 2).aggregate == [0.625, 0.25]

    def test_product_is_weighted_geometric(self):
        registry = RewardRegistry(
            {"factuality": Constant([0.5]), "fluency": Constant([0.5])},
            weights={"fluency": 2.0},
            aggregation="product",
        )
        assert call(registry, 1).aggregate == [0.125]  # 0.5 * 0.5**2

    def test_all_none_gives_none(self):
        registry = RewardRegistry({"coherence": Constant([None])}, aggregation="mean")
        assert call(registry, 1).aggregate == [None]

    def test_normalize_then_sum_uses_running_zscores(self):
        registry = RewardRegistry(
            {"factuality": Constant([1.0, 3.0]), "fluency": Constant([10.0, 10.0])},
            aggregation="normalize_then_sum",
        )
        scores = call(registry, 2)
        # factuality: mean 2, std 1 -> z = -1, 1; fluency: std 0 -> z = 0
        assert scores.aggregate == pytest.approx([-1.0, 1.0], abs=1e-5)
        assert scores.aspects["fluency"] == [10.0, 10.0]  # raw scores are kept beside

    def test_running_window_forgets(self):
        norm = RunningNormalizer(window=2)
        norm([0.0, 0.0])
        # history [4, 6]: mean 5, std 1 -> z = -1, 1 (the zeros left the window)
        assert norm([4.0, 6.0]) == pytest.approx([-1.0, 1.0], abs=1e-5)

    def test_product_with_normalize_is_rejected(self):
        with pytest.raises(ValueError, match="non-negative"):
            RewardRegistry({"fluency": Constant([1.0])}, aggregation="product", normalize=True)

    def test_unknown_aggregation_is_rejected(self):
        with pytest.raises(ValueError, match="weighted_sum"):
            RewardRegistry({"fluency": Constant([1.0])}, aggregation="max")

    def test_nan_and_inf_are_logged_with_the_id_and_never_aggregated(self, caplog):
        registry = RewardRegistry(
            {"factuality": Constant([math.nan, math.inf, 0.5]), "fluency": Constant([1.0] * 3)}
        )
        with caplog.at_level(logging.WARNING):
            scores = call(registry, 3)
        assert scores.aspects["factuality"] == [None, None, 0.5]
        assert scores.aggregate == [1.0, 1.0, 1.5]
        assert "factuality" in caplog.text and "example ex1" in caplog.text

    def test_wrong_length_is_an_error(self):
        with pytest.raises(ValueError, match="2 scores for 3"):
            call(RewardRegistry({"fluency": Constant([1.0, 1.0])}), 3)

    def test_means_and_rows(self):
        registry = RewardRegistry(
            {"factuality": Constant([0.5, None]), "fluency": Constant([1.0, 0.0])}
        )
        scores = call(registry, 2)
        assert scores.means() == {"factuality": 0.5, "fluency": 0.5, "aggregate": 0.75}
        assert scores.rows()[1] == {"factuality": None, "fluency": 0.0, "aggregate": 0.0}


class TestSelectBest:
    def test_argmax_per_question_ties_to_lowest_index(self):
        # question 0: 0.9 twice -> index 1; question 1: None ranks last -> index 2
        assert select_best([0.2, 0.9, 0.9, None, 0.1, 0.3], k=3) == [1, 2]

    def test_nan_and_all_none(self):
        assert select_best([math.nan, -5.0, None, None], k=2) == [1, 0]

    def test_groups_must_divide(self):
        with pytest.raises(ValueError, match="k=2"):
            select_best([0.1, 0.2, 0.3], k=2)

    def test_picks_the_registry_argmax(self):
        # k = 3 rationales for each of 2 questions; a scorer of known output
        registry = RewardRegistry(
            {"factuality": Constant([0.1, 0.7, 0.3, 0.4, 0.4, 0.2]), "fluency": Constant([0] * 6)}
        )
        assert select_best(call(registry, 6).aggregate, k=3) == [1, 0]


class TestJudge:
    def test_probability_from_logprobs(self):
        judge = LLMJudge(FakeLM(yes=math.log(0.75)), "factuality", RUBRIC)
        # P(yes) / (P(yes) + P(no)) = 0.75 / (0.75 + 0.25)
        assert judge([""], ["Delia Marsh was born in Estford."], examples=[EX]) == [
            pytest.approx(0.75)
        ]

    def test_empty_rationale_is_not_scored(self):
        judge = LLMJudge(FakeLM(), "factuality", RUBRIC)
        # 0.5 / (0.5 + 0.25) = 2/3
        assert judge(["", ""], ["", "x"], examples=[EX, EX]) == [None, pytest.approx(2 / 3)]

    def test_fallback_samples_yes_frequency(self):
        lm = FakeLM(logprobs=False, samples=[" yes", " No.", " yes", " maybe"])
        judge = LLMJudge(lm, "factuality", RUBRIC, fallback_samples=4)
        assert judge([""], ["r."], examples=[EX]) == [pytest.approx(2 / 3)]  # 2 yes, 1 no

    def test_prompt_is_short_and_holds_retrieved_evidence(self):
        prompt = LLMJudge(FakeLM(), "factuality", RUBRIC).prompt(EX, "Delia Marsh was born.")
        assert "Delia Marsh was born in Estford." in prompt
        assert "river Tamm" not in prompt  # shares no word with question or rationale

    def test_calls_are_cached(self, tmp_path):
        lm = FakeLM(cache=str(tmp_path / "c.sqlite"))
        judge = LLMJudge(lm, "factuality", RUBRIC)
        judge([""], ["r."], examples=[EX])
        calls = lm.backend_calls
        judge([""], ["r."], examples=[EX])
        assert lm.backend_calls == calls

    def test_unknown_aspect(self):
        with pytest.raises(ValueError, match="no criterion for 'fluency'"):
            LLMJudge(FakeLM(), "fluency", RUBRIC)


class TestLMScorers:
    def test_perplexity_is_the_geometric_mean_probability(self):
        scorer = make_scorer("perplexity", "fluency", lm=FakeLM())
        # log P(" Ann sat.\n") = log 0.25 over 2 (whitespace) tokens -> 0.25 ** (1/2)
        assert scorer(["", ""], ["Ann sat.", "  "]) == [pytest.approx(0.5), None]

    def test_perplexity_reads_a_repeated_sentence_once(self):
        """A copy is the likeliest text an LM can read: RL learnt to repeat a sentence for the
        fluency it bought (docs/refine.md). It is scored without the repeat; other text as is."""

        class Reading(FakeLM):
            def _logprobs(self, prompts, continuations):
                self.read = list(continuations)
                return [-float(len(c)) for c in continuations]  # any text-dependent score

        lm = Reading()
        texts = ["Ann sat. Ann  sat. So yes.", "Ann sat. So yes.", "Ann sat.\nSo yes."]
        repeated, single, _ = make_scorer("perplexity", "fluency", lm=lm)([""] * 3, texts)
        assert lm.read == [" Ann sat. So yes.\n", " Ann sat.\nSo yes.\n"]  # one call per text
        assert repeated == single
        make_scorer("perplexity", "fluency", lm=lm, drop_repeats=False)([""], texts[:1])
        assert lm.read == [" Ann sat. Ann  sat. So yes.\n"]

    def test_naturalness_reads_the_question(self):
        lm = FakeLM()
        make_scorer("perplexity", "naturalness", lm=lm)([""], ["Ann sat."], examples=[EX])
        assert lm.seen == [f"Question: {EX.question}\nExplanation:"]

    @pytest.mark.parametrize("metric, answer, expected", [
        ("em", " Estford", 1.0),
        ("em", " Estford town", 0.0),
        ("f1", " Estford town", 2 / 3),  # precision 1/2, recall 1: 2 * 0.5 / 1.5
    ])  # fmt: skip
    def test_task_reward(self, metric, answer, expected):
        from lmcot.prompts import FewShotPrompt

        prompt = FewShotPrompt("v0", "Answer.", "{context}\n{question}\n{rationale}\nA:", "")
        scorer = make_scorer("reader", "task", lm=FakeLM(samples=[answer]), prompt=prompt,
                             metric=metric)  # fmt: skip
        assert scorer([""], ["r."], examples=[EX]) == [pytest.approx(expected)]
        assert scorer.answers([""], ["r."], examples=[EX]) == [answer.strip()]

    def test_dense_task_reward_is_the_readers_probability_of_the_gold_answer(self):
        from lmcot.prompts import FewShotPrompt

        class Reader(FakeLM):
            def _logprobs(self, prompts, continuations):
                self.seen = list(zip(prompts, continuations))
                return [math.log(0.6 if "good" in p else 0.1) for p in prompts]

        prompt = FewShotPrompt("v0", "Answer.", "{context}\n{question}\n{rationale}\nA:", "")
        lm = Reader()
        scorer = make_scorer("reader_likelihood", "task", lm=lm, prompt=prompt)
        assert scorer(["", ""], ["a good one.", "a bad one."], examples=[EX, EX]) == [
            pytest.approx(0.6), pytest.approx(0.1)]  # fmt: skip
        assert [c for _, c in lm.seen] == [" Estford", " Estford"]
        assert lm.seen[0][0].endswith("a good one.\nA:")


class TestCheapScorers:
    def test_consistency_uses_reader_answers_before_gold(self):
        r = "Delia Marsh was born in Estford. So the answer is Estford."
        scorer = AnswerConsistency()
        assert scorer([""], [r], examples=[EX]) == [1.0]
        # the reader said "Marsh": F1("Estford", "Marsh") = 0
        assert scorer([""], [r], examples=[EX], reader_answers=["Marsh"]) == [0.0]
        assert AnswerConsistency(use_gold=False)([""], [r], examples=[EX]) == [None]

    def test_readability_prefers_short_sentences(self):
        short, long = "The cat sat. The dog ran.", "The cat sat, and the dog ran, and so on."
        easy, hard = Readability()(["", ""], [short, long])
        assert 0 < hard < easy < 1

    def test_make_scorer_names_the_aspect_and_rejects_unknown_pairs(self):
        assert make_scorer("lexical", "logicality").__name__ == "logicality"
        with pytest.raises(ValueError, match="backends for fluency"):
            make_scorer("lexical", "fluency")
        with pytest.raises(ValueError, match="needs an LM"):
            make_scorer("perplexity", "fluency")


class TestCorruptions:
    def test_every_corruption_changes_the_rationale_deterministically(self):
        intact = gold_rationale(EX)
        assert intact == (
            "Korvath Mills was founded by Delia Marsh. Delia Marsh was born in Estford. "
            "So the answer is Estford."
        )
        for name in set(CORRUPTIONS) - {"changed_number"}:  # EX states no number
            bad = corrupt(EX, name, seed=0)
            assert bad and bad != intact, name
            assert bad == corrupt(EX, name, seed=0)

    def test_each_aspect_is_validated_by_known_corruptions(self):
        assert set(ASPECT_CORRUPTIONS) == set(ASPECTS)
        assert all(c in CORRUPTIONS for cs in ASPECT_CORRUPTIONS.values() for c in cs)

    def test_factual_corruptions_change_one_fact_of_a_paraphrase(self):
        facts = ["Lem Stikem founded Bekrom Toys in 1962.", "Bripa is where Lem Stikem was born."]
        number = corrupt(EX, "changed_number", seed=0, facts=facts)
        year = number.split()[6].rstrip(".")
        assert year != "1962" and 1953 <= int(year) <= 1971
        assert number.replace(year, "1962", 1) == " ".join([*facts, "So the answer is Estford."])
        negated = {corrupt(EX, "negated", seed=s, facts=facts) for s in range(8)}
        assert negated == {
            "Lem Stikem never founded Bekrom Toys in 1962. Bripa is where Lem Stikem was born. "
            "So the answer is Estford.",
            "Lem Stikem founded Bekrom Toys in 1962. Bripa is not where Lem Stikem was born. "
            "So the answer is Estford.",
        }

    def test_examples(self):
        wrong = corrupt(EX, "wrong_answer").rsplit("So the answer is ", 1)[1]
        assert wrong in ("Korvath Mills.", "Delia Marsh.", "Bryn Hollow.")
        assert "Estford" not in corrupt(EX, "truncated")
        assert corrupt(EX, "run_on").count(".") == 1


class TestParaphrase:
    @pytest.mark.parametrize(
        "fact, reworded",
        [
            ("Drever Press, a publishing house, was started by Trus Kopes in 1974.",
             "Trus Kopes started Drever Press, a publishing house, in 1974."),
            ("Tralor Films was founded in 1987 by Ann Lee.",
             "Ann Lee founded Tralor Films in 1987."),
            ("Born in Vaban in 1939, Trus Kopes became a composer.",
             "Trus Kopes, born in Vaban in 1939, went on to become a composer."),
            ("Drinan is the founder of Ludris Brewing.", "Ludris Brewing was founded by Drinan."),
            ("In 1990, Gidek founded Stako Toys.", "Gidek founded Stako Toys in 1990."),
            # a pronoun cannot become an object; two agents are left alone
            ("It was written by Robert Sherman and sung by Jim Cummings.",
             "It was written by Robert Sherman and sung by Jim Cummings."),
        ],
    )  # fmt: skip
    def test_rules(self, fact, reworded):
        assert paraphrase(fact) == reworded

    def test_synthetic_facts_keep_every_name_and_number(self):
        changed = 0
        for i in range(32):
            example = make_example(i)
            facts, any_changed = paraphrase_facts(example)
            changed += any_changed
            for fact, new in zip(example.supporting_sentences(), facts):
                words = re.findall(r"\b[A-Z][a-z]+\b|\d+", fact)
                names = [w for w in words if w not in ("Born", "In", "It", "Its", "The")]
                assert all(n in new for n in names), (fact, new)
        assert changed >= 28  # nearly every synthetic row is reworded

    def test_validation_pairs_are_built_on_the_paraphrase(self):
        examples = [make_example(i) for i in range(8)]
        pairs = build_pairs(examples, ["changed_number"], source="paraphrased")
        for example, _, intact, _ in pairs:
            assert intact.startswith(" ".join(paraphrase_facts(example)[0]))
        with pytest.raises(ValueError, match="unknown source 'copied'"):
            build_pairs(examples, ["negated"], source="copied")

    @pytest.mark.slow  # MiniLM on 16 rows: 10-50 s on a busy 2-core machine
    def test_lexical_factuality_misses_negation_embedding_sees_it(self):
        # the measurement behind reward.scorers.factuality=embedding (docs/rewards.md)
        examples = [make_example(i) for i in range(16)]
        pairs = build_pairs(examples, ASPECT_CORRUPTIONS["factuality"], source="paraphrased")
        lexical = score_pairs(make_scorer("lexical", "factuality"), pairs)
        embedding = score_pairs(make_scorer("embedding", "factuality"), pairs)
        assert lexical["pairs"] >= 40
        assert lexical["by_corruption"]["negated"] < 0.7
        assert embedding["accuracy"] >= 0.9, embedding


def test_the_dense_task_reward_is_chosen_from_the_command_line(cfg_factory):
    cfg = cfg_factory("reader=tiny", "reward/scorer@reward.scorers.task=reader_likelihood",
                      "reward.aspects=[task]", config_name="validate")  # fmt: skip
    registry = instantiate(cfg.reward, lm=FakeLM())
    assert registry([""], ["r."], examples=[EX]).aggregate == [pytest.approx(0.25)]


def test_registry_from_config_with_cli_overrides(cfg_factory):
    cfg = cfg_factory(
        "reader=tiny",
        "reward/scorer@reward.scorers.factuality=llm_judge",
        "reward.aspects=[factuality,consistency,task]",
        "reward.weights.factuality=2.0",
        "reward.aggregation=mean",
        config_name="validate",
    )
    lm = FakeLM(samples=[" Estford"])  # the reader the run holds: no second model is built
    registry = instantiate(cfg.reward, lm=lm)
    assert list(registry.scorers) == ["factuality", "consistency", "task"]
    assert isinstance(registry.scorers["factuality"], LLMJudge)
    assert registry.scorers["factuality"].lm is lm and registry.scorers["task"].lm is lm
    assert registry.weights == {"factuality": 2.0, "consistency": 1.0, "task": 1.0}
    assert registry.uses_gold == ["consistency", "task"]
    scores = registry([""], ["Delia Marsh was born in Estford. So it is Lyon."], examples=[EX])
    # the reader answers "Estford": task EM 1; consistency: the last sentence does not contain
    # the reader's answer -> 0; judge 0.5 / (0.5 + 0.25) = 2/3
    assert scores.aspects == {"factuality": [pytest.approx(2 / 3)], "consistency": [0.0],
                              "task": [1.0]}  # fmt: skip
    assert scores.aggregate == [pytest.approx((2 * 2 / 3 + 0.0 + 1.0) / 4)]  # mean, weights 2:1:1


def test_gold_free_config_reads_no_gold(cfg_factory):
    cfg = cfg_factory("reader=tiny", "reward=gold_free", config_name="validate")
    registry = instantiate(cfg.reward, lm=FakeLM())
    assert registry.uses_gold == []
    assert "task" not in registry.scorers


def test_unknown_aspect_in_config_is_rejected(cfg_factory):
    cfg = cfg_factory("reader=tiny", "reward.aspects=[factuallity]", config_name="validate")
    with pytest.raises(InstantiationException, match=r"unknown aspects \['factuallity'\]"):
        instantiate(cfg.reward, lm=FakeLM())


def test_coherence_sees_the_answer_stated_before_its_facts():
    # reversed, a three-sentence chain has the same adjacent pairs: the plain cosine ties
    chain = [
        "Korvath Mills was founded by Delia Marsh.",
        "Delia Marsh was born in Estford.",
        "So the answer is Estford.",
    ]
    texts = [" ".join(chain), " ".join(chain[::-1])]
    cosine = make_scorer("embedding", "coherence", answer_weight=0.0)([""] * 2, texts)
    assert cosine[0] == pytest.approx(cosine[1])
    intact, reversed_ = make_scorer("embedding", "coherence")([""] * 2, texts)
    assert intact > reversed_ + 0.25
    assert 0.0 <= reversed_ <= intact <= 1.0
    assert make_scorer("embedding", "coherence")([""], ["So the answer is Estford."]) == [None]
    with pytest.raises(ValueError, match="answer_weight must be in"):
        make_scorer("embedding", "coherence", answer_weight=1.5)


def test_coherence_gives_a_restated_sentence_nothing():
    """A repeated sentence is its neighbour's closest match: the plain cosine paid for it and RL
    learnt to repeat (docs/refine.md). A restatement, adjacent or not, is left out of the cosine
    and adds a pair that counts 0, so repeating never beats the rationale without the repeat;
    a rationale of distinct facts scores as before."""
    a, b = "Vikor Toys is a toy company founded in 1927.", "Its headquarters are in Matramar."
    end = "So the answer is Vikor Toys."
    texts = [" ".join(s) for s in ([a, b, end], [a, b, a, end], [a, end], [a, a, end])]
    distinct, again, once, twice = make_scorer("embedding", "coherence")([""] * 4, texts)
    plain = make_scorer("embedding", "coherence", repeat_threshold=None)([""] * 4, texts)
    assert distinct == pytest.approx(plain[0]) and once == pytest.approx(plain[2])
    assert plain[3] > plain[2]  # what RL found: repeating paid
    # a b a end is a b end with one of its three pairs at 0 (answer_weight 0.3)
    assert again - 0.3 == pytest.approx((distinct - 0.3) * 2 / 3)
    assert twice - 0.3 == pytest.approx((once - 0.3) / 2)
