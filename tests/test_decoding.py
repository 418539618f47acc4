"""Greedy and self-consistency decoding of the student's rationales, with a scripted reader."""

import pytest

from lmcot.decoding import Greedy, SelfConsistency, TopQuality, majority_vote
from lmcot.lm.base import LM


class ScriptedStudent(LM):
    """Writes rationale ``<prompt>/<sample>`` and records each generate call's n and params."""

    cache_id = "scripted"

    def __init__(self):
        super().__init__()
        self.calls = []

    def _generate(self, prompts, params, n):
        self.calls.append((len(prompts), n, params))
        return [[f"{p}/{i}" for i in range(n)] for p in prompts]


def test_majority_vote_counts_normalised_answers():
    assert majority_vote(["The Beatles", "Beatles.", "Stones"]) == 0  # 2 votes for 'beatles'
    assert majority_vote(["Stones", "The Beatles", "beatles"]) == 1  # first of the winner's votes


def test_majority_vote_ties_go_to_the_earliest_sample():
    assert majority_vote(["x", "y"]) == 0
    assert majority_vote(["y", "x", "x", "y"]) == 0
    assert majority_vote(["z", "y", "x", "x", "y"]) == 1  # y and x tie at 2; y was sampled first


def test_majority_vote_ignores_empty_answers_unless_all_are_empty():
    assert majority_vote(["", "", "x"]) == 2
    assert majority_vote(["", ""]) == 0


def test_greedy_reads_one_rationale_per_question():
    student, seen = ScriptedStudent(), []

    def read(rationales):
        seen.append(rationales)
        return [[r[0].upper()] for r in rationales]

    out = Greedy(max_new_tokens=7)([], ["q1", "q2"], student, ("\n",), read)
    assert out == [("q1/0", "Q1/0"), ("q2/0", "Q2/0")]
    [(n_prompts, n, params)] = student.calls
    assert (n_prompts, n, params.greedy, params.max_new_tokens, params.stop) == (
        2,
        1,
        True,
        7,
        ("\n",),
    )


def test_self_consistency_samples_k_in_one_call_and_votes():
    student = ScriptedStudent()
    answers = {"q1": ["x", "y", "y"], "q2": ["z", "w", "v"]}

    def read(rationales):
        # every question's k rationales arrive together, in sample order
        assert [len(r) for r in rationales] == [3, 3]
        return [answers[r[0].split("/")[0]] for r in rationales]

    out = SelfConsistency(num_samples=3, temperature=0.8)([], ["q1", "q2"], student, (), read)
    assert out == [("q1/1", "y"), ("q2/0", "z")]  # q1: y wins 2-1; q2: 3-way tie -> first
    [(n_prompts, n, params)] = student.calls
    assert (n_prompts, n, params.temperature) == (2, 3, 0.8)


def test_self_consistency_with_one_sample_is_a_single_sampled_rationale():
    student = ScriptedStudent()
    out = SelfConsistency(num_samples=1, temperature=0.7)(
        [], ["q"], student, (), lambda rs: [["ans"] for _ in rs]
    )
    assert out == [("q/0", "ans")]
    [(_, n, params)] = student.calls
    assert n == 1 and not params.greedy  # sampled, unlike Greedy: documented in the class


class KnownQuality:
    """A registry stand-in whose aggregate is a fixed score per rationale text."""

    uses_gold: list = []

    def __init__(self, scores):
        self.scores, self.seen = scores, []

    def __call__(self, prompts, completions, **columns):
        self.seen.append((completions, columns["examples"]))
        return type("Scores", (), {"aggregate": [self.scores[c] for c in completions]})


def test_top_quality_reads_only_the_argmax_of_the_aggregate():
    student = ScriptedStudent()
    registry = KnownQuality({"q1/0": 0.2, "q1/1": 0.9, "q1/2": 0.5, "q2/0": None, "q2/1": 0.1,
                             "q2/2": 0.1})  # fmt: skip
    read_calls = []

    def read(rationales):
        read_calls.append(rationales)
        return [[f"answer to {r[0]}"] for r in rationales]

    decoding = TopQuality(registry, num_samples=3, temperature=0.7)
    out = decoding(["ex1", "ex2"], ["q1", "q2"], student, (), read)
    # q1: 0.9 is best; q2: None ranks last, 0.1 ties 0.1 -> the lower index
    assert out == [("q1/1", "answer to q1/1"), ("q2/1", "answer to q2/1")]
    assert read_calls == [[["q1/1"], ["q2/1"]]]  # the reader never saw the other rationales
    [(completions, examples)] = registry.seen
    assert examples == ["ex1"] * 3 + ["ex2"] * 3 and len(completions) == 6


def test_top_quality_refuses_a_registry_that_reads_gold():
    registry = KnownQuality({})
    registry.uses_gold = ["task"]
    with pytest.raises(ValueError, match="gold"):
        TopQuality(registry)


class AnswerScript:
    """A reader whose answer to rationale ``<q>/<i>`` is ``answers[q][i]``; records each read."""

    def __init__(self, answers):
        self.answers, self.reads = answers, []

    def __call__(self, rationales):
        self.reads.append([len(rs) for rs in rationales])
        return [[self.answers[r.split("/")[0]][int(r.split("/")[1])] for r in rs]
                for rs in rationales]  # fmt: skip


def test_adaptive_sc_stops_after_the_first_round_when_samples_agree():
    student, read = ScriptedStudent(), AnswerScript({"q1": ["x"] * 5, "q2": ["y"] * 5})
    decoding = SelfConsistency(num_samples=5, adaptive=True, round_size=3)
    assert decoding([], ["q1", "q2"], student, (), read) == [("q1/0", "x"), ("q2/0", "y")]
    assert decoding.samples_used == [3, 3]
    assert [n for _, n, _ in student.calls] == [3] and read.reads == [[3, 3]]


def test_adaptive_sc_uses_all_k_when_samples_disagree():
    student = ScriptedStudent()
    read = AnswerScript({"q1": ["p", "q", "r", "s", "t"], "q2": ["z"] * 5})
    decoding = SelfConsistency(num_samples=5, adaptive=True, round_size=2)
    assert decoding([], ["q1", "q2"], student, (), read) == [("q1/0", "p"), ("q2/0", "z")]
    # q2 settles when its margin (4) exceeds what is left (1); q1 never does
    assert decoding.samples_used == [5, 4]
    assert [(p, n) for p, n, _ in student.calls] == [(2, 2), (2, 4), (1, 5)]
    assert read.reads == [[2, 2], [2, 2], [1, 0]]  # only new samples of open questions are read


@pytest.mark.parametrize("round_size", [1, 2, 3])
def test_adaptive_sc_without_confidence_answers_as_fixed_k(round_size):
    answers = {"q1": ["x", "y", "y", "x", "x"], "q2": ["", "w", "w", "v", "w"],
               "q3": ["p", "q", "q", "p", "r"], "q4": ["", "", "", "", ""]}  # fmt: skip
    fixed = SelfConsistency(num_samples=5)([], list(answers), ScriptedStudent(),
                                           (), AnswerScript(answers))  # fmt: skip
    adaptive = SelfConsistency(num_samples=5, adaptive=True, round_size=round_size)
    assert adaptive([], list(answers), ScriptedStudent(), (), AnswerScript(answers)) == fixed


def test_adaptive_sc_draws_each_sample_once_from_a_cached_student(tmp_path):
    """Round 2 draws only the new samples of the open question (2, not all 5): the student's
    cache holds round 1's."""

    class CachedStudent(ScriptedStudent):
        def __init__(self):
            LM.__init__(self, cache=str(tmp_path / "student.sqlite"))
            self.calls = []

    answers = {"q1": iter("xxx"), "q2": iter("pqrst")}  # q1 settles after round 1, q2 never

    def read(rationales):
        return [[next(answers[r.split("/")[0]]) for r in rs] for rs in rationales]

    student = CachedStudent()
    decoding = SelfConsistency(num_samples=5, adaptive=True, round_size=3)
    assert [a for _, a in decoding([], ["q1", "q2"], student, (), read)] == ["x", "p"]
    assert decoding.samples_used == [3, 5]
    assert [(p, n) for p, n, _ in student.calls] == [(2, 3), (1, 2)]


def test_adaptive_sc_off_is_todays_sc():
    student, read = ScriptedStudent(), AnswerScript({"q": ["x", "x", "x", "y", "y"]})
    decoding = SelfConsistency(num_samples=5)
    assert decoding([], ["q"], student, (), read) == [("q/0", "x")]
    assert [n for _, n, _ in student.calls] == [5] and read.reads == [[5]]
    assert decoding.samples_used == [5]


def test_adaptive_sc_confidence_stops_on_the_beta_criterion():
    # 2-0 after a round of 2: the vote could still change (3 left), but P(lead wins) = 7/8
    answers = {"q": ["x", "x", "y", "y", "y"]}
    early = SelfConsistency(num_samples=5, adaptive=True, round_size=2, confidence=0.85)
    assert early([], ["q"], ScriptedStudent(), (), AnswerScript(answers)) == [("q/0", "x")]
    assert early.samples_used == [2]
    exact = SelfConsistency(num_samples=5, adaptive=True, round_size=2, confidence=0.9)
    assert exact([], ["q"], ScriptedStudent(), (), AnswerScript(answers)) == [("q/2", "y")]
    assert exact.samples_used == [5]
