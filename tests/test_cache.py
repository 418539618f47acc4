"""The response cache: no call is paid twice, nothing written is lost, foreign files refused."""

import io
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lmcot.lm.base import LM, GenerationParams, resumed
from lmcot.lm.cache import SCHEMA_VERSION, CacheError, ResponseCache


class CountingLM(LM):
    """Answers ``<prompt>#<sample>`` and counts every prompt it is asked about."""

    cache_id = "counting"

    def __init__(self, fail_after: int | None = None, **kw):
        super().__init__(**kw)
        self.prompts_seen: list[str] = []
        self.fail_after = fail_after

    def _generate(self, prompts, params, n):
        if self.fail_after is not None and len(self.prompts_seen) >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.prompts_seen += prompts
        return [[f"{p}#{i}@{params.seed}" for i in range(n)] for p in prompts]

    def _logprobs(self, prompts, continuations):
        self.prompts_seen += prompts
        return [-float(len(c)) for c in continuations]


def test_second_run_makes_zero_backend_calls(tmp_path):
    prompts = [f"q{i}" for i in range(10)]
    first = CountingLM(cache=tmp_path / "c.sqlite")
    out = first.generate(prompts)
    assert first.backend_calls > 0 and len(first.prompts_seen) == 10

    second = CountingLM(cache=tmp_path / "c.sqlite")
    assert second.generate(prompts) == out
    assert second.logprobs(["a"], ["xyz"]) == [-3.0]  # a miss: one call
    again = CountingLM(cache=tmp_path / "c.sqlite")
    again.generate(prompts), again.logprobs(["a"], ["xyz"])
    assert again.backend_calls == 0 and again.prompts_seen == []


def test_only_missing_prompts_reach_the_backend(tmp_path):
    lm = CountingLM(cache=tmp_path / "c.sqlite")
    lm.generate(["a", "b"])
    lm.prompts_seen.clear()
    assert lm.generate(["b", "c", "a"]) == [["b#0@0"], ["c#0@0"], ["a#0@0"]]
    assert lm.prompts_seen == ["c"]


def test_samples_are_keyed_by_index_and_seed(tmp_path):
    lm = CountingLM(cache=tmp_path / "c.sqlite")
    sampled = GenerationParams(temperature=1.0, seed=1)
    assert lm.generate(["a"], sampled, n=3) == [["a#0@1", "a#1@1", "a#2@1"]]
    lm.prompts_seen.clear()
    lm.generate(["a"], sampled, n=2)  # a prefix of what is cached: no call
    assert lm.prompts_seen == []
    lm.generate(["a"], GenerationParams(temperature=1.0, seed=2), n=2)  # new seed: new samples
    assert lm.prompts_seen == ["a"]


def test_a_prompt_with_cached_samples_draws_only_the_others_with_another_seed(tmp_path):
    lm = CountingLM(cache=tmp_path / "c.sqlite")
    sampled = GenerationParams(temperature=1.0, seed=1)
    lm.generate(["a", "b"], sampled, n=3)
    lm.backend_calls, lm.prompts_seen = 0, []
    out = lm.generate(["a", "b"], sampled, n=5)
    seed = resumed(sampled, 3).seed  # a seeded backend must not draw samples 0, 1 again
    assert seed != sampled.seed
    assert out[0] == ["a#0@1", "a#1@1", "a#2@1", f"a#0@{seed}", f"a#1@{seed}"]
    assert lm.backend_calls == 1 and lm.prompts_seen == ["a", "b"]  # n=2 for both
    assert CountingLM(cache=tmp_path / "c.sqlite").generate(["a"], sampled, n=5) == out[:1]


def test_greedy_key_ignores_seed(tmp_path):
    lm = CountingLM(cache=tmp_path / "c.sqlite")
    lm.generate(["a"], GenerationParams(seed=1))
    lm.prompts_seen.clear()
    lm.generate(["a"], GenerationParams(seed=2))
    assert lm.prompts_seen == []


def test_crash_mid_run_keeps_what_was_written(tmp_path):
    prompts = [f"q{i}" for i in range(10)]
    crashing = CountingLM(cache=tmp_path / "c.sqlite", write_every=4, fail_after=8)
    with pytest.raises(KeyboardInterrupt):
        crashing.generate(prompts)  # chunks q0-q3 and q4-q7 answered, then the crash

    resumed = CountingLM(cache=tmp_path / "c.sqlite", write_every=4)
    assert resumed.generate(prompts) == [[f"q{i}#0@0"] for i in range(10)]
    assert resumed.prompts_seen == ["q8", "q9"]


def test_infinite_logprob_survives_the_cache(tmp_path):
    class NeverLM(CountingLM):
        def _logprobs(self, prompts, continuations):
            return [float("-inf")] * len(prompts)

    NeverLM(cache=tmp_path / "c.sqlite").logprobs(["p"], [" yes"])
    assert CountingLM(cache=tmp_path / "c.sqlite").logprobs(["p"], [" yes"]) == [float("-inf")]


def test_short_backend_answer_is_a_clear_error(tmp_path):
    class ShortLM(CountingLM):
        def _generate(self, prompts, params, n):
            return [["only one"] for _ in prompts]

    with pytest.raises(RuntimeError, match="expected 2 each"):
        ShortLM(cache=tmp_path / "c.sqlite").generate(["a"], GenerationParams(temperature=1), n=2)


def test_a_cache_another_process_is_creating_opens_once_it_is_made(tmp_path):
    """DDP ranks open the same fresh score cache at the same moment: the one that finds the file
    empty while the other creates it waits for that, instead of failing on existing tables."""
    path = tmp_path / "c.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN IMMEDIATE")
    for table in ("meta", "responses"):
        other.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, value TEXT)")
    other.execute("INSERT INTO meta VALUES ('lmcot_cache', ?)", (SCHEMA_VERSION,))
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(ResponseCache, path)
        time.sleep(1.0)  # it has read the still empty schema and waits for the write lock
        other.execute("COMMIT")
        assert len(opening.result()) == 0


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match="not a readable SQLite file"):
        ResponseCache(path)


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(CacheError, match="not an lmcot cache"):
        ResponseCache(path)


def test_other_schema_version_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    ResponseCache(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='0' WHERE key='lmcot_cache'")
    with pytest.raises(CacheError, match="schema '0'"):
        ResponseCache(path)


def test_invalid_generation_params_are_rejected():
    with pytest.raises(ValueError, match="temperature"):
        GenerationParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        GenerationParams(top_p=0)
    with pytest.raises(ValueError, match="need temperature > 0"):
        CountingLM().generate(["a"], GenerationParams(), n=2)


@pytest.mark.parametrize("cache", [True, False])
def test_identical_prompts_in_one_call_reach_the_backend_once(tmp_path, cache):
    lm = CountingLM(cache=tmp_path / "c.sqlite" if cache else None)
    assert lm.generate(["a", "b", "a", "a"]) == [["a#0@0"], ["b#0@0"], ["a#0@0"], ["a#0@0"]]
    assert lm.prompts_seen == ["a", "b"] and lm.saved_calls == 2
    sampled = GenerationParams(temperature=1.0, seed=3)
    assert lm.generate(["c", "c"], sampled, n=2) == [["c#0@3", "c#1@3"]] * 2
    assert lm.prompts_seen[2:] == ["c"] and lm.saved_calls == 2 + 2
    assert lm.logprobs(["p", "p", "p"], [" x", " x", " yz"]) == [-2.0, -2.0, -3.0]
    assert lm.prompts_seen[3:] == ["p", "p"] and lm.saved_calls == 4 + 1


def test_identical_sc_rationales_reach_the_reader_once():
    """k identical rationales (common after KD) give k identical reader prompts: one call."""
    from lmcot.decoding import SelfConsistency
    from lmcot.methods import LMGuided
    from lmcot.prompts import FewShotPrompt

    class SameRationale(LM):
        cache_id = "same"

        def _generate(self, prompts, params, n):
            return [["It is Paris."] * n for _ in prompts]

    class Reader(CountingLM):
        def _generate(self, prompts, params, n):
            self.prompts_seen += prompts
            return [[" Paris"] for _ in prompts]

    from lmcot.data.example import Example

    examples = [Example(str(i), f"q{i}?", [("T", ["s."])], "Paris") for i in range(2)]
    prompt = FewShotPrompt("v", "Answer.", "{question} {rationale}", "")
    method = LMGuided(SelfConsistency(num_samples=4), prompt, prompt, SameRationale())
    reader = Reader()
    predictions = method("kd_sc", examples, reader)
    assert [p.prediction for p in predictions] == ["Paris", "Paris"]
    assert [p.rationale for p in predictions] == ["It is Paris."] * 2
    assert len(reader.prompts_seen) == 2 and reader.saved_calls == 2 * 3


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_cache_misses_show_a_progress_bar_on_a_terminal(monkeypatch, tmp_path):
    lm = CountingLM(cache=tmp_path / "c.sqlite", write_every=2)
    monkeypatch.setattr(sys, "stderr", Terminal())
    lm.generate(["a", "b", "c"])
    assert "CountingLM generate: 0%| | 0/3" in " ".join(sys.stderr.getvalue().split())
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setenv("TQDM_DISABLE", "1")
    lm.logprobs(["d"], [" e"])
    assert sys.stderr.getvalue() == ""


def test_no_progress_bar_off_a_terminal(capsys, tmp_path):
    CountingLM(cache=tmp_path / "c.sqlite").generate(["a"])
    assert "CountingLM" not in capsys.readouterr().err
