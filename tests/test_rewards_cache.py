"""Defect 5: a re-run over known rationales loads no model for the reward scores; issue 21:
an embedding is keyed by its model's content, not its path."""

import shutil

import numpy as np
import pytest
import sentence_transformers
from hydra.utils import instantiate

from lmcot.data.synthetic import make_example
from lmcot.rewards import embedding
from lmcot.rewards.corrupt import gold_rationale
from lmcot.rewards.embedding import Embedder, shared_embedder


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


class FakeSentenceTransformer:
    """Embeds every text as the unit vector its model directory's ``weights.txt`` names."""

    loaded = []

    def __init__(self, model_dir, device):
        self.axis = int(open(f"{model_dir}/weights.txt").read())
        FakeSentenceTransformer.loaded.append(model_dir)

    def encode(self, texts, **kwargs):
        vectors = np.zeros((len(texts), 4), dtype=np.float32)
        vectors[:, self.axis] = 1.0
        return vectors


def test_a_custom_model_is_named_by_its_content_not_its_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", FakeSentenceTransformer)
    cache, model = str(tmp_path / "emb.sqlite"), tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("0")
    assert Embedder(str(model), cache=cache).encode(["a text"])[0, 0] == 1.0
    (model / "weights.txt").write_text("1")  # another model saved at the same path
    other = Embedder(str(model), cache=cache)
    assert other.encode(["a text"])[0, 1] == 1.0 and other.loads == 1
    shutil.copytree(model, tmp_path / "b" / "model")  # the same model elsewhere: its vectors
    again = Embedder(str(tmp_path / "b" / "model"), cache=cache)
    assert again.encode(["a text"])[0, 1] == 1.0 and again.loads == 0


def test_the_shipped_model_is_not_loaded_on_a_cached_rerun(tmp_path, monkeypatch):
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", FakeSentenceTransformer)
    (tmp_path / "weights.txt").write_text("2")
    monkeypatch.setattr(embedding, "default_model_dir", lambda: str(tmp_path))
    cache = str(tmp_path / "emb.sqlite")
    first = Embedder(cache=cache).encode(["a text", "another"])
    again = Embedder(cache=cache)
    assert (again.encode(["another", "a text"]) == first[::-1]).all() and again.loads == 0
