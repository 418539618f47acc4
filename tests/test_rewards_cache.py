"""Defect 5: a re-run over known rationales loads no model for the reward scores."""

import pytest
import sentence_transformers
from hydra.utils import instantiate

from lmcot.data.synthetic import make_example
from lmcot.rewards.corrupt import gold_rationale
from lmcot.rewards.embedding import shared_embedder


@pytest.mark.slow  # MiniLM and a tiny random reader, once each: 10-40 s on 2 busy cores
def test_second_run_with_the_same_inputs_loads_no_model(cfg_factory, monkeypatch):
    cfg = cfg_factory("reader=tiny", config_name="validate")  # the default reward, all 9 aspects
    examples = [make_example(i) for i in range(3)]
    rationales = [gold_rationale(ex) for ex in examples] + ["", "Lem Stikem was born."]
    examples += examples[:2]

    def run():
        shared_embedder.cache_clear()  # a new process: nothing in memory
        reader = instantiate(cfg.reader)
        scores = instantiate(cfg.reward, lm=reader)([""] * 5, rationales, examples=examples)
        return reader, scores

    first_reader, first = run()
    assert first_reader._model is not None  # the first run computed the scores
    assert shared_embedder(None, 64, cfg.reward.scorers.factuality.cache).loads == 1

    def refuse(*args, **kwargs):
        raise AssertionError("a cached re-run loaded MiniLM")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse)
    reader, again = run()
    assert reader._model is None and reader._tokenizer is None and reader.backend_calls == 0
    assert again.aspects == first.aspects
