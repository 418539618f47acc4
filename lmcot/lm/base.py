"""The one interface every language model in lmcot has: text in, text (and log-probs) out.

The large LM is a black box, so the interface is the smallest a remote API also offers:
``generate`` (n samples per prompt) and ``logprobs`` (log-probability of a given continuation).
Every call goes through an optional on-disk cache, so a re-run costs no model calls and, since
backends load lazily, does not even load the model.
"""

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace

from lmcot.lm.cache import ResponseCache
from lmcot.progress import progress


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters; all of them are part of the cache key.

    Args:
        max_new_tokens: generation budget per sample.
        temperature: 0 means greedy decoding; above 0, sampling.
        top_p: nucleus sampling mass (ignored when greedy).
        stop: generation ends at the first of these strings, which is cut from the output.
        seed: seeds sampling; with the sample index it makes sampled outputs reproducible.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0

    def __post_init__(self):
        # configs hand lists (ListConfig); keep the dataclass hashable and JSON-stable
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def cache_fields(self) -> dict:
        """The fields that change the output: greedy decoding ignores seed and top_p."""
        fields = asdict(self)
        if self.greedy:
            del fields["seed"], fields["top_p"]
        return fields


class UnsupportedByBackend(RuntimeError):
    """The backend cannot do what was asked (e.g. log-probabilities through a chat-only API)."""


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Cut ``text`` at the earliest stop string.

    >>> cut_at_stop("Paris\\nQuestion: next", ("\\n", "Question:"))
    'Paris'
    """
    ends = [i for s in stop if (i := text.find(s)) >= 0]
    return text[: min(ends)] if ends else text


SAMPLE_STRIDE = 1_000_003  # sample i of a prompt draws with seed + SAMPLE_STRIDE * i


def sample_seed(params: GenerationParams, index: int) -> int:
    """The seed sample ``index`` of a prompt draws with: local backends seed each sample from
    it (:mod:`lmcot.lm.sampling`), so a sample is a function of its cache key.

    >>> sample_seed(GenerationParams(temperature=1.0, seed=3), 2)
    2000009
    """
    return params.seed + SAMPLE_STRIDE * index


def resumed(params: GenerationParams, first: int) -> GenerationParams:
    """``params`` for drawing samples ``first, first + 1, ...`` of a prompt whose earlier samples
    are cached: the seed of sample ``first`` (the same for ``first=0``), or a seeded backend
    would draw the cached samples again; sample ``first + j`` of the call then has
    ``sample_seed(params, first + j)``. (The cache keys keep ``params``: sample ``first`` is
    filed under its index and the run's seed.)

    >>> resumed(GenerationParams(temperature=1.0, seed=3), first=2).seed
    2000009
    """
    return replace(params, seed=sample_seed(params, first))


class LM(ABC):
    """A text generator behind a cache. Subclasses implement ``_generate`` (and ``_logprobs``).

    Args:
        cache: path of the SQLite cache file; ``None`` disables caching.
        write_every: cache misses go to the model this many prompts at a time, and each chunk is
            written to the cache as soon as it returns, so a crash loses at most one chunk.
            It also bounds what one backend call sees (batch size, HTTP concurrency).
    """

    def __init__(self, cache: str | None = None, write_every: int = 16):
        self.cache = ResponseCache(cache) if cache else None
        self.write_every = write_every
        self.backend_calls = 0  # calls that reached the model: tests and logs count them
        self.saved_calls = 0  # responses not asked for: a duplicate in the same call had it

    @property
    @abstractmethod
    def cache_id(self) -> str:
        """Names backend and model in the cache key, e.g. ``hf:HuggingFaceTB/SmolLM2-135M``."""

    @abstractmethod
    def _generate(self, prompts: list[str], params: GenerationParams, n: int) -> list[list[str]]:
        """n samples for every prompt, stop strings already cut."""

    def cache_prompt(self, prompt: str) -> str:
        """The prompt as its cache key holds it: exactly what the model is sent. Plain text
        here; chat backends override it with their canonical messages."""
        return str(prompt)

    def _logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        raise UnsupportedByBackend(f"{type(self).__name__} cannot score continuations")

    def generate(
        self, prompts: list[str], params: GenerationParams | None = None, n: int = 1
    ) -> list[list[str]]:
        """Return ``n`` completions for each prompt, from the cache where it has them."""
        params = params or GenerationParams()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if n > 1 and params.greedy:
            raise ValueError("n > 1 samples need temperature > 0 (greedy samples are identical)")
        unique = list(dict.fromkeys(prompts))
        if len(unique) < len(prompts):
            # same prompt, same sample indices: the same cache keys, so one answer serves all
            self.saved_calls += (len(prompts) - len(unique)) * n
            answers = dict(zip(unique, self.generate(unique, params, n)))
            return [list(answers[p]) for p in prompts]
        if self.cache is None:
            return self._count(self._generate, list(prompts), params, n)
        decoding = params.cache_fields()
        keys = [
            [
                self.cache.key(self.cache_id, "generate", self.cache_prompt(p), decoding, i)
                for i in range(n)
            ]
            for p in prompts
        ]
        found = self.cache.get_many([k for ks in keys for k in ks])
        # a prompt with some samples cached (adaptive SC's later rounds) draws only the others
        lacking: dict[tuple[int, ...], list[int]] = {}  # missing sample indices -> prompts
        for i, ks in enumerate(keys):
            if gaps := tuple(j for j, k in enumerate(ks) if k not in found):
                lacking.setdefault(gaps, []).append(i)
        for gaps, missing in lacking.items():
            draw = resumed(params, gaps[0])  # the run's own seed for samples from 0
            for chunk in self._chunks(missing, "generate"):
                fresh = self._count(self._generate, [prompts[i] for i in chunk], draw, len(gaps))
                if len(fresh) != len(chunk) or any(len(outs) != len(gaps) for outs in fresh):
                    raise RuntimeError(
                        f"{type(self).__name__} returned {[len(o) for o in fresh]} samples for "
                        f"{len(chunk)} prompts, expected {len(gaps)} each"
                    )
                new = {
                    keys[i][j]: out
                    for i, outs in zip(chunk, fresh)
                    for j, out in zip(gaps, outs, strict=True)
                }
                self.cache.put_many(new)
                found |= new
        return [[found[k] for k in ks] for ks in keys]

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        """Return ``log P(continuation | prompt)`` summed over its tokens, one per pair.

        ``-inf`` is a valid answer (a continuation the backend rules out); it survives the cache.
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        pairs = list(zip(prompts, continuations))
        unique = list(dict.fromkeys(pairs))
        if len(unique) < len(pairs):
            self.saved_calls += len(pairs) - len(unique)
            scores = dict(zip(unique, self.logprobs(*map(list, zip(*unique)))))
            return [scores[pair] for pair in pairs]
        if self.cache is None:
            return self._count(self._logprobs, list(prompts), list(continuations))
        keys = [
            self.cache.key(self.cache_id, "logprobs", self.cache_prompt(p), {"continuation": c}, 0)
            for p, c in zip(prompts, continuations, strict=True)
        ]
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        for chunk in self._chunks(missing, "logprobs"):
            fresh = self._count(
                self._logprobs, [prompts[i] for i in chunk], [continuations[i] for i in chunk]
            )
            new = {keys[i]: v for i, v in zip(chunk, fresh, strict=True)}
            self.cache.put_many(new)
            found |= new
        return [found[k] for k in keys]

    def _chunks(self, indices: list[int], kind: str):
        """Yield ``write_every``-sized chunks of ``indices`` under a :func:`progress` bar."""
        with progress(len(indices), f"{type(self).__name__} {kind}", "prompt") as bar:
            for i in range(0, len(indices), self.write_every):
                yield indices[i : i + self.write_every]
                bar.update(len(indices[i : i + self.write_every]))

    def _count(self, fn, *args):
        self.backend_calls += 1
        return fn(*args)
