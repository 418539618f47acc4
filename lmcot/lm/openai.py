"""The large LM behind any OpenAI-compatible HTTP server: OpenAI, vLLM, TGI, Ollama.

Requests run concurrently (bounded), transient failures (429, 5xx, timeouts, refused
connections) are retried with exponential backoff, and everything else fails at once with the
URL, the model and the server's own message. The API key is read from the environment at call
time and never stored, logged or put into an error message. Caching is the base class's job.
"""

import email.utils
import math
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from lmcot.lm.base import LM, GenerationParams, UnsupportedByBackend, cut_at_stop
from lmcot.lm.cache import ResponseCache
from lmcot.lm.messages import canonical, chat_messages

MAX_STOP = 4  # OpenAI rejects more stop strings; the rest are cut client-side


class OpenAIBackendError(RuntimeError):
    """A request to an OpenAI-compatible server failed for good.

    Attributes:
        status: the HTTP status of the last response, ``None`` if there was none.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RequestRejected(OpenAIBackendError):
    """The server refused the request (bad key, unknown model, bad parameters): not retried."""


class ContextTooLong(RequestRejected):
    """The prompt does not fit the model's context window (the server said so): not retried.

    The rule: reader prompts are sent whole (only the student's are fitted to a token budget,
    :func:`lmcot.prompts.fit_prompt`), so a prompt over the window fails the run at once,
    naming its question, its length and the server's message, rather than answering that
    question from a silently shortened context.
    """


class ServerUnavailable(OpenAIBackendError):
    """The server kept failing transiently (rate limits, 5xx, timeouts) until retries ran out."""


class _Transient(Exception):
    """A failure worth retrying; ``retry_after`` is the server's requested wait in seconds."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class OpenAICompatibleLM(LM):
    """A frozen large LM served over the OpenAI API (chat or legacy completions).

    Args:
        model: model name as the server knows it, e.g. ``meta-llama/Llama-3.1-70B-Instruct``.
        base_url: API root including the version, e.g. ``http://localhost:8000/v1``.
        api_key_env: NAME of the environment variable holding the key; unset or empty means
            no ``Authorization`` header, which local vLLM/Ollama servers accept.
        chat: ``True`` sends the prompt to ``/chat/completions`` as messages (few-shot
            prompts as a multi-turn conversation, ``lmcot.lm.messages.chat_messages``);
            ``False`` sends it verbatim to the legacy ``/completions``.
        system_role: in chat mode, the instruction as a system message; ``False`` for servers
            and chat templates that reject a system role (it then opens the first user turn).
        fewshot_as_multiturn: in chat mode, exemplars as user/assistant turns; ``False`` sends
            the whole flat prompt as one user message.
        max_concurrency: requests in flight at once. The base class hands ``_generate`` at
            most ``write_every`` prompts when caching, which bounds concurrency too.
        timeout_s: per-request timeout (connect, read, write and pool, each).
        max_retries: retries after the first attempt on 429, 408, 5xx, timeouts and network
            errors; 0 fails at the first transient error.
        backoff_s: first backoff wait; doubled per retry, jittered, capped at ``max_backoff_s``.
        max_backoff_s: cap on any wait, including one asked for by a ``Retry-After`` header.
        top_logprobs: alternatives requested per token when scoring (OpenAI allows 20 on chat,
            5 on legacy completions; vLLM up to its ``--max-logprobs``).
        cache: SQLite cache path (see ``LM``); ``None`` disables caching.
        write_every: prompts per cache write (see ``LM``).
    """

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        chat: bool = True,
        system_role: bool = True,
        fewshot_as_multiturn: bool = True,
        max_concurrency: int = 8,
        timeout_s: float = 60,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        top_logprobs: int = 20,
        cache: str | None = None,
        write_every: int = 16,
    ):
        super().__init__(cache=cache, write_every=write_every)
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(
                f"need max_concurrency >= 1, max_retries >= 0, timeout_s > 0; got "
                f"{max_concurrency}, {max_retries}, {timeout_s}"
            )
        self.model = model
        self.base_url = base_url.rstrip("/")  # ".../v1/" and ".../v1" share one cache
        self.api_key_env = api_key_env
        self.chat = chat
        self.system_role = system_role
        self.fewshot_as_multiturn = fewshot_as_multiturn
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.top_logprobs = top_logprobs
        self._client: httpx.Client | None = None  # created on first request: building is free
        self._lock = threading.Lock()
        self._rng = random.Random()  # jitter must not consume the seeded global RNG

    @property
    def cache_id(self) -> str:
        # chat wraps the prompt in the model's chat template, so its answers differ from the
        # legacy endpoint's and must not share cache entries with them
        suffix = "" if self.chat else ":completions"
        return f"openai:{self.base_url}:{self.model}{suffix}"

    def messages(self, prompt: str) -> list[dict]:
        """The chat messages sent for ``prompt`` in chat mode."""
        return chat_messages(prompt, self.system_role, self.fewshot_as_multiturn)

    def cache_prompt(self, prompt: str) -> str:
        return canonical(self.messages(prompt)) if self.chat else str(prompt)

    @property
    def url(self) -> str:
        return self._url(self.chat)

    def _url(self, chat: bool) -> str:
        return f"{self.base_url}/{'chat/completions' if chat else 'completions'}"

    def close(self) -> None:
        """Close the HTTP connections (a later call opens new ones)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ---- the LM interface -------------------------------------------------------------------

    def _generate(self, prompts: list[str], params: GenerationParams, n: int) -> list[list[str]]:
        return self._map(lambda prompt: self._samples(prompt, params, n), prompts)

    def _logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        """Log-prob of each continuation; one word and longer text are scored differently.

        One word (the judge's `` yes``/`` no``, an option letter: no inner whitespace, no
        newline) is scored as the reader's first answer token, in this backend's own mode
        (chat template included): the server is asked for one token and its ``top_logprobs``
        alternatives, and the best entry equal to the word up to case and surrounding
        whitespace is returned; ``-inf`` if none is among them.

        Longer text (a rationale whose perplexity is wanted) is scored token by token through
        ``/completions`` with ``echo`` + ``logprobs`` on the raw text prompt + continuation,
        in either mode (vLLM and llama.cpp support it; see
        :meth:`supports_continuation_logprobs`). The server tokenizes the whole text, so a token
        that straddles the prompt/continuation boundary counts as the continuation's.
        """
        pairs = list(zip(prompts, continuations, strict=True))
        return self._map(
            lambda pc: self._score(*pc) if _ONE_WORD.fullmatch(pc[1]) else self._echo(*pc), pairs
        )

    def supports_continuation_logprobs(self) -> bool:
        """Whether the server returns log-probs of multi-token text (``echo`` + ``logprobs`` on
        ``/completions``). Asked once with a short probe; the answer is kept in the cache, so
        a cached re-run does not need the server."""
        cache = self.cache
        key = ResponseCache.key(self.cache_id, "probe", "echo+logprobs", {}, 0)
        if cache is not None and (found := cache.get_many([key])):
            return found[key]
        try:
            self._echo("The sky is", " blue and the grass is green.")
            supported = True
        except (UnsupportedByBackend, RequestRejected):
            supported = False
        if cache is not None:
            cache.put_many({key: supported})
        return supported

    # ---- one prompt -------------------------------------------------------------------------

    def _samples(self, prompt: str, params: GenerationParams, n: int) -> list[str]:
        sampling = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.stop:
            sampling["stop"] = list(params.stop[:MAX_STOP])
        texts = self._texts(self._post(prompt, **sampling, seed=params.seed, n=n))
        # some servers (Ollama, TGI) ignore n and return one choice: ask for the rest one by
        # one, each with its own seed, or a seeded server would repeat the same sample
        while len(texts) < n:
            texts += self._texts(self._post(prompt, **sampling, seed=params.seed + len(texts)))
        # the server cut at the first 4 stops (if it honours them at all): cut at all of them
        return [cut_at_stop(t, params.stop) for t in texts[:n]]

    def _score(self, prompt: str, continuation: str) -> float:
        if not continuation.strip():
            return 0.0  # the empty continuation is certain
        if self.chat:
            extra = {"logprobs": True, "top_logprobs": self.top_logprobs}
        else:
            extra = {"logprobs": self.top_logprobs}
        body = self._post(prompt, max_tokens=1, temperature=0, **extra)
        try:
            lp = body["choices"][0].get("logprobs")
            if self.chat:
                first = lp["content"][0]
                candidates = [(first["token"], first["logprob"])]
                candidates += [(t["token"], t["logprob"]) for t in first.get("top_logprobs") or []]
            else:
                candidates = [(lp["tokens"][0], lp["token_logprobs"][0])]
                candidates += list((lp.get("top_logprobs") or [{}])[0].items())
        except (KeyError, IndexError, TypeError) as e:
            raise UnsupportedByBackend(
                f"{self.url} returned no log-probabilities for model {self.model!r} "
                f"(the server may not support logprobs on this endpoint; try chat={not self.chat})"
            ) from e
        return best_match(candidates, continuation)

    def _echo(self, prompt: str, continuation: str) -> float:
        if not continuation:
            return 0.0
        if not prompt:
            raise ValueError("echo log-probs need a non-empty prompt (the first token has none)")
        text = str(prompt) + continuation
        body = self._post(text, chat=False, max_tokens=1, temperature=0, echo=True, logprobs=1)
        choice = body["choices"][0]
        try:
            lp = choice["logprobs"]
            if not (choice.get("text") or "").startswith(text):
                raise ValueError("the prompt was not echoed")
            spans = zip(lp["text_offset"], lp["tokens"], lp["token_logprobs"], strict=True)
            # tokens overlapping the continuation; the one generated token (max_tokens=0 is
            # not accepted everywhere) starts at or after the end of the text
            picked = [
                p
                for start, tok, p in spans
                if len(prompt) < start + len(tok) and start < len(text)
            ]
            if not picked or any(p is None for p in picked):
                raise ValueError("no log-probs for the continuation's tokens")
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise UnsupportedByBackend(
                f"{self._url(False)} did not return echoed log-probabilities for model "
                f"{self.model!r} ({e}): multi-token continuations need a server that supports "
                f"echo + logprobs on /completions (vLLM, llama.cpp)"
            ) from e
        return float(sum(picked))

    def _post(self, prompt: str, n: int = 1, chat: bool | None = None, **fields) -> dict:
        """POST one prompt (to this backend's endpoint unless ``chat`` says which), retrying
        transient failures; return the decoded JSON body."""
        chat = self.chat if chat is None else chat
        url = self._url(chat)
        body = {"model": self.model, **fields}
        if n > 1:
            body["n"] = n
        if chat:
            body["messages"] = self.messages(prompt)
        else:
            body["prompt"] = str(prompt)
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
        )
        try:
            return retrying(self._post_once, url, body)
        except RetryError as e:
            last = e.last_attempt.exception()
            raise ServerUnavailable(
                f"{url} failed for model {self.model!r} after {self.max_retries + 1} "
                f"attempts; last error: {last}. Is the server up? (raise max_retries or "
                f"timeout_s if it is just slow)",
                status=getattr(last, "status", None),
            ) from last

    def _post_once(self, url: str, body: dict) -> dict:
        key = os.environ.get(self.api_key_env) or None  # read per call: never kept on self
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            response = self._http().post(url, json=body, headers=headers)
        except httpx.TimeoutException as e:
            raise _Transient(f"timed out after {self.timeout_s} s ({type(e).__name__})") from e
        except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
            raise _Transient(f"{type(e).__name__}: {e}") from e
        status = response.status_code
        if status == 200:
            try:
                out = response.json()
                if not out["choices"]:
                    raise ValueError("no choices")
                return out
            except (ValueError, KeyError, TypeError) as e:
                raise OpenAIBackendError(
                    f"{url} sent an unreadable response for model {self.model!r} ({e}): "
                    f"{response.text[:300]!r}",
                    status=status,
                ) from e
        message = _error_message(response)
        if key:
            message = message.replace(key, "***")  # some servers echo the key back
        if status in (408, 429) or status >= 500:
            raise _Transient(f"HTTP {status}: {message}", status, _retry_after(response.headers))
        if status in (400, 413) and _CONTEXT_LENGTH.search(message):
            text = body.get("prompt") or "\n".join(m["content"] for m in body["messages"])
            question = _QUESTION.findall(text)
            asked = f" for the question {question[-1].strip()[:200]!r}" if question else ""
            raise ContextTooLong(
                f"{url}: the prompt{asked} ({len(text)} characters) does not fit the context "
                f"window of model {self.model!r}: HTTP {status}: {message}; reader prompts are "
                "sent whole: use a reader with a longer context, or fewer context paragraphs",
                status=status,
            )
        hint = {
            401: f"; check the key in ${self.api_key_env}",
            404: "; is this model served at this URL?",
        }.get(status, "")
        raise RequestRejected(
            f"{url} rejected the request for model {self.model!r}: HTTP {status}: {message}{hint}",
            status=status,
        )

    # ---- plumbing ---------------------------------------------------------------------------

    def _texts(self, body: dict) -> list[str]:
        choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
        if self.chat:
            # content is null when a model answers with a tool call or refuses
            return [(c.get("message") or {}).get("content") or "" for c in choices]
        return [c.get("text") or "" for c in choices]

    def _wait(self, state) -> float:
        """Seconds before the next attempt: the server's Retry-After, else jittered backoff."""
        err = state.outcome.exception()
        if getattr(err, "retry_after", None) is not None:
            return min(err.retry_after, self.max_backoff_s)
        backoff = min(self.backoff_s * 2 ** (state.attempt_number - 1), self.max_backoff_s)
        # jitter: threads throttled by the same 429 should not come back in lockstep
        return backoff * self._rng.uniform(0.5, 1.0)

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=self.max_concurrency)
                self._client = httpx.Client(timeout=self.timeout_s, limits=limits)
            return self._client

    def _map(self, fn, items: list) -> list:
        """``[fn(x) for x in items]`` with up to ``max_concurrency`` calls at once, in order."""
        if len(items) <= 1 or self.max_concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(self.max_concurrency, len(items))) as pool:
            futures = [pool.submit(fn, x) for x in items]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:  # fail fast: do not start requests nobody will read
                    f.cancel()
                raise


# how vLLM, OpenAI, llama.cpp and TGI word a prompt over the context window
_CONTEXT_LENGTH = re.compile(
    r"context[ _]length|context window|maximum context|too many tokens|exceeds? the (context|max)",
    re.I,
)
_QUESTION = re.compile(r"^Question:(.*)$", re.M)  # the last one is the question asked
_ONE_WORD = re.compile(r"\s*\S+[ \t]*")  # " yes", "B": scored as the first answer token


def best_match(candidates: list[tuple[str, float | None]], continuation: str) -> float:
    """Best log-prob among tokens equal to ``continuation`` up to case and whitespace.

    >>> best_match([("Yes", -0.1), (" yes", -0.05), ("No", -2.0)], "yes")
    -0.05
    >>> best_match([("No", -2.0)], "maybe")
    -inf
    """
    target = continuation.strip().lower()
    matches = [lp for tok, lp in candidates if lp is not None and tok.strip().lower() == target]
    return max(matches, default=-math.inf)


def _error_message(response: httpx.Response) -> str:
    """The server's own error text: OpenAI/Ollama ``{"error": {"message"}}``, vLLM, TGI."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
    return str(body)[:300]


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, ``Retry-After``), if any.

    >>> _retry_after(httpx.Headers({"Retry-After": "2"}))
    2.0
    >>> _retry_after(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    0.0
    """
    try:
        if "retry-after-ms" in headers:  # OpenAI's finer-grained variant
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            return max(0.0, float(headers["retry-after"]))
    except ValueError:
        pass
    try:  # the other form the HTTP spec allows: a date
        when = email.utils.parsedate_to_datetime(headers["retry-after"])
        return max(0.0, when.timestamp() - time.time())
    except (KeyError, TypeError, ValueError):
        return None
