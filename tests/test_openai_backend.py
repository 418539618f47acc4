"""OpenAICompatibleLM against a real HTTP server speaking a scripted subset of the OpenAI API."""

import json
import math
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot.lm.base import GenerationParams, UnsupportedByBackend
from lmcot.lm.messages import FewShotText
from lmcot.lm.openai import (
    ContextTooLong,
    OpenAIBackendError,
    OpenAICompatibleLM,
    RequestRejected,
    ServerUnavailable,
)

CONF = Path(__file__).parents[1] / "conf"


class FakeOpenAI:
    """State of the fake server; tests script it and read what it received.

    ``script`` holds actions for the next requests, one each: ``(status, headers)`` answers
    with an OpenAI-style error, ``("sleep", s)`` stalls before answering normally. With the
    script empty every request succeeds; a ``"forever"`` entry is never used up.
    """

    def __init__(self):
        self.requests = []  # (path, headers, body) in arrival order
        self.script = []
        self.expected_key = None  # when set, other keys get a 401 that echoes them
        self.n_supported = True  # False: ignore n like Ollama does
        self.top = [("Yes", -0.1), (" yes", -0.05), ("No", -2.5)]  # None: no logprobs
        self.echo = True  # False: ignore echo, like servers without prompt log-probs
        self.delay = 0.0  # seconds per successful answer, to shuffle completion order
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def reply(self, prompt, index, body):
        return f"A:{prompt}#{index}/{body.get('seed')}"

    def answer(self, path, body):
        prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        if body.get("echo") and self.echo:
            return {"object": "text_completion", "choices": [echoed(prompt)]}
        n = body.get("n", 1) if self.n_supported else 1
        texts = [self.reply(prompt, i, body) for i in range(n)]
        # a real server cuts at the stops it was sent (vLLM, OpenAI), and excludes them
        for stop in body.get("stop") or []:
            texts = [t.split(stop)[0] for t in texts]
        chat = path.endswith("/chat/completions")
        choices = []
        for i, t in enumerate(texts):
            c = {"index": i, "finish_reason": "stop"}
            c |= {"message": {"role": "assistant", "content": t}} if chat else {"text": t}
            if body.get("logprobs") and self.top is not None:
                tok, lp = self.top[0]
                if chat:
                    alts = [{"token": k, "logprob": v} for k, v in self.top]
                    content = [{"token": tok, "logprob": lp, "top_logprobs": alts}]
                    c["logprobs"] = {"content": content}
                else:
                    c["logprobs"] = {
                        "tokens": [tok],
                        "token_logprobs": [lp],
                        "top_logprobs": [dict(self.top)],
                    }
            else:
                c["logprobs"] = None
            choices.append(c)
        return {"object": "chat.completion" if chat else "text_completion", "choices": choices}


def echoed(prompt):
    """A completions choice echoing ``prompt`` plus one generated token, vLLM-style: one token
    per whitespace-led word (and trailing whitespace), each worth -0.5 except the first (no
    context, no log-prob)."""
    tokens = [*re.findall(r"\s*\S+|\s+$", prompt), " X"]
    offsets = [sum(map(len, tokens[:i])) for i in range(len(tokens))]
    logprobs = [None] + [-0.5] * (len(tokens) - 1)
    lp = {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets}
    return {"index": 0, "text": "".join(tokens), "logprobs": lp, "finish_reason": "length"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers: exercises the pool

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        fake: FakeOpenAI = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.requests.append((self.path, dict(self.headers), body))
            action = fake.script[0] if fake.script else None
            if fake.script and fake.script[1:] != ["forever"]:
                fake.script.pop(0)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self.respond(fake, body, action)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before we answered
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def respond(self, fake, body, action):
        auth = self.headers.get("Authorization")
        if fake.expected_key and auth != f"Bearer {fake.expected_key}":
            msg = f"Incorrect API key provided: {auth}"  # echoes the key, as some servers do
            return self.send_json(401, {"error": {"message": msg, "code": "invalid_api_key"}})
        if isinstance(action, tuple) and action[0] == "sleep":
            time.sleep(action[1])
        elif action == "reset":  # headers and half the body, then the connection drops
            data = json.dumps(fake.answer(self.path, body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        elif action == "malformed":  # a 200 whose body is not JSON (a proxy's page, a bug)
            data = b'{"choices": [{"text": "cut'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return self.wfile.write(data)
        elif action == "context":  # vLLM's wording of a prompt over the window
            msg = ("This model's maximum context length is 2048 tokens. However, you requested "
                   "3100 tokens (3000 in the messages, 100 in the completion).")  # fmt: skip
            return self.send_json(400, {"error": {"message": msg, "type": "BadRequestError"}})
        elif isinstance(action, tuple):
            status, headers = action
            err = {"error": {"message": f"scripted {status}", "type": "server_error"}}
            return self.send_json(status, err, headers)
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self.send_json(404, {"error": {"message": f"no route {self.path}"}})
        if body["model"] != "fake-model":
            msg = f"The model `{body['model']}` does not exist."
            return self.send_json(404, {"error": {"message": msg, "code": "model_not_found"}})
        time.sleep(fake.delay)
        self.send_json(200, fake.answer(self.path, body))

    def send_json(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(monkeypatch):
    """A fake OpenAI server on a free local port; ``server.url`` is its base URL."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)  # talk to 127.0.0.1 directly
    monkeypatch.delenv("LMCOT_TEST_KEY", raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.fake = FakeOpenAI()
    httpd.fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd.fake
    httpd.shutdown()
    httpd.server_close()


def make_lm(server, **kw):
    args = dict(
        model="fake-model",
        base_url=server.url,
        api_key_env="LMCOT_TEST_KEY",
        timeout_s=2,
        max_retries=3,
        backoff_s=0.001,  # retries in milliseconds: tests must not sleep
    )
    return OpenAICompatibleLM(**(args | kw))


def test_construction_is_free(server):
    lm = make_lm(server, base_url="http://127.0.0.1:1/v1/")  # nothing listens there
    assert lm._client is None and server.requests == []
    assert lm.cache_id == "openai:http://127.0.0.1:1/v1:fake-model"  # trailing "/" dropped


def test_generate_keeps_order_under_concurrency(server):
    server.delay = 0.01
    lm = make_lm(server, max_concurrency=6)
    prompts = [f"q{i}" for i in range(40)]
    out = lm.generate(prompts, GenerationParams(max_new_tokens=7, seed=3))
    assert out == [[f"A:q{i}#0/3"] for i in range(40)]
    assert 1 < server.max_in_flight <= 6
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]
    assert body["max_tokens"] == 7 and body["temperature"] == 0 and body["seed"] == 3
    assert "n" not in body and "stop" not in body


def test_legacy_completions_endpoint(server):
    lm = make_lm(server, chat=False)
    assert lm.generate(["hi"]) == [["A:hi#0/0"]]
    path, _, body = server.requests[0]
    assert path == "/v1/completions" and body["prompt"] == "hi"
    assert lm.cache_id.endswith(":completions")  # chat and raw prompts answer differently


def test_n_samples_in_one_request(server):
    out = make_lm(server).generate(["p"], GenerationParams(temperature=0.8, top_p=0.9), n=3)
    assert out == [["A:p#0/0", "A:p#1/0", "A:p#2/0"]]
    assert len(server.requests) == 1
    assert server.requests[0][2].items() >= {"n": 3, "temperature": 0.8, "top_p": 0.9}.items()


def test_n_samples_fallback_when_server_ignores_n(server):
    server.n_supported = False
    out = make_lm(server).generate(["p"], GenerationParams(temperature=0.8, seed=10), n=3)
    # one request with n=3 gave one sample; two more, each with its own seed
    assert out == [["A:p#0/10", "A:p#0/11", "A:p#0/12"]]
    assert [b.get("n", 1) for _, _, b in server.requests] == [3, 1, 1]


def test_stop_strings_beyond_four_cut_client_side(server):
    server.reply = lambda prompt, i, body: "keep<5>drop<1>x"
    params = GenerationParams(stop=("<1>", "<2>", "<3>", "<4>", "<5>"))
    assert make_lm(server).generate(["p"], params) == [["keep"]]
    assert server.requests[0][2]["stop"] == ["<1>", "<2>", "<3>", "<4>"]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_error_then_success(server, status):
    server.script = [(status, {}), (status, {})]
    assert make_lm(server, max_retries=3).generate(["p"]) == [["A:p#0/0"]]
    assert len(server.requests) == 3  # two failures, one success


def test_retry_after_is_respected_and_capped(server):
    server.script = [(429, {"Retry-After": "0.3"})]
    start = time.monotonic()
    make_lm(server).generate(["p"])
    assert time.monotonic() - start >= 0.3
    server.script = [(429, {"Retry-After": "100"})]
    start = time.monotonic()
    make_lm(server, max_backoff_s=0.05).generate(["q"])
    assert time.monotonic() - start < 2


def test_retries_run_out(server):
    server.script = [(500, {}), "forever"]
    with pytest.raises(ServerUnavailable) as e:
        make_lm(server, max_retries=2).generate(["p"])
    assert len(server.requests) == 3  # first attempt + 2 retries
    for part in (server.url, "fake-model", "3 attempts", "HTTP 500", "scripted 500"):
        assert part in str(e.value)
    assert e.value.status == 500


def test_timeout_then_success(server):
    server.script = [("sleep", 0.5)]
    assert make_lm(server, timeout_s=0.2).generate(["p"]) == [["A:p#0/0"]]
    assert len(server.requests) == 2


def test_timeout_forever(server):
    server.script = [("sleep", 0.5), "forever"]
    with pytest.raises(ServerUnavailable, match=r"2 attempts.*timed out after 0.2 s"):
        make_lm(server, timeout_s=0.2, max_retries=1).generate(["p"])


def test_connection_refused():
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    lm = OpenAICompatibleLM("m", base_url=url, max_retries=1, backoff_s=0.001)
    with pytest.raises(ServerUnavailable, match="2 attempts.*ConnectError"):
        lm.generate(["p"])


def test_bad_key_fails_at_once_without_leaking_it(server, monkeypatch):
    server.expected_key = "sk-right"
    monkeypatch.setenv("LMCOT_TEST_KEY", "sk-wrong-secret")
    with pytest.raises(RequestRejected) as e:
        make_lm(server).generate(["p"])
    assert len(server.requests) == 1  # a 401 is not retried
    msg = str(e.value)
    assert "401" in msg and server.url in msg and "$LMCOT_TEST_KEY" in msg
    assert "sk-wrong-secret" not in msg and "sk-right" not in msg
    monkeypatch.setenv("LMCOT_TEST_KEY", "sk-right")  # read at call time, not at construction
    lm = make_lm(server)
    assert lm.generate(["p"]) == [["A:p#0/0"]]
    assert server.requests[-1][1]["Authorization"] == "Bearer sk-right"
    assert "sk-right" not in repr(vars(lm))


def test_no_key_sends_no_authorization_header(server):
    make_lm(server).generate(["p"])
    assert "Authorization" not in server.requests[0][1]


def test_unknown_model_fails_at_once(server):
    with pytest.raises(RequestRejected, match=r"'nope'.*HTTP 404.*`nope` does not exist"):
        make_lm(server, model="nope").generate(["p"])
    assert len(server.requests) == 1


@pytest.mark.parametrize("chat", [True, False])
def test_logprobs_from_top_logprobs(server, chat):
    lm = make_lm(server, chat=chat)
    scores = lm.logprobs(["q"] * 3, ["yes", " NO ", "maybe"])
    assert scores == [-0.05, -2.5, -math.inf]  # "yes": best of "Yes" and " yes"
    body = server.requests[0][2]
    assert body["max_tokens"] == 1
    if chat:
        assert body["logprobs"] is True and body["top_logprobs"] == 20
    else:
        assert body["logprobs"] == 20


def test_connection_reset_mid_body_is_retried(server):
    server.script = ["reset"]
    assert make_lm(server).generate(["p"]) == [["A:p#0/0"]]
    assert len(server.requests) == 2


def test_connection_reset_forever_fails_naming_the_server(server):
    server.script = ["reset", "forever"]
    with pytest.raises(ServerUnavailable, match=r"after 4 attempts.*(RemoteProtocolError|Read)"):
        make_lm(server).generate(["p"])


def test_malformed_json_fails_at_once_showing_the_body(server):
    server.script = ["malformed"]
    with pytest.raises(OpenAIBackendError, match=r"unreadable response.*'fake-model'.*cut"):
        make_lm(server).generate(["p"])
    assert len(server.requests) == 1  # not a transient error: retrying would not help


@pytest.mark.parametrize("chat", [True, False])
def test_context_length_error_names_the_question_and_the_server_message(server, chat):
    server.script = ["context"]
    prompt = "Context:\nA long paragraph.\nQuestion: Where was Ada born?\nAnswer:"
    with pytest.raises(ContextTooLong) as err:
        make_lm(server, chat=chat).generate([prompt])
    msg = str(err.value)
    assert "'Where was Ada born?'" in msg and "maximum context length is 2048 tokens" in msg
    assert f"({len(prompt)} characters)" in msg and err.value.status == 400
    assert len(server.requests) == 1


def test_logprobs_unsupported(server):
    server.top = None
    with pytest.raises(UnsupportedByBackend, match="no log-probabilities"):
        make_lm(server).logprobs(["q"], ["yes"])


def test_cache_makes_second_call_free(server, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    params = GenerationParams(temperature=0.7)
    first = make_lm(server, cache=cache).generate(["a", "b"], params, n=2)
    make_lm(server, cache=cache).logprobs(["a"], ["yes"])
    seen = len(server.requests)
    lm = make_lm(server, cache=cache)  # a fresh process would see the same file
    assert lm.generate(["a", "b"], params, n=2) == first
    assert lm.logprobs(["a"], ["yes"]) == [-0.05]
    assert len(server.requests) == seen and lm.backend_calls == 0


def test_hydra_config_builds_the_backend(tmp_path):
    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}})
    cfg.reader = OmegaConf.load(CONF / "reader" / "openai.yaml")
    with pytest.raises(Exception, match="model"):
        instantiate(cfg.reader)  # model: ??? must be set by the user
    cfg.reader.model = "m"
    lm = instantiate(cfg.reader)
    assert isinstance(lm, OpenAICompatibleLM) and lm._client is None
    assert lm.cache.path == tmp_path / "reader.sqlite"


FEW_SHOT = FewShotText(
    "Answer briefly.", [("Q: 2+2?\nA:", " 4"), ("Q: 1+1?\nA:", " 2")], "Q: 3+3?\nA:"
)


def test_chat_sends_few_shot_as_turns_with_the_same_stops(server):
    params = GenerationParams(stop=("\n", "\nQ:"))
    make_lm(server).generate([FEW_SHOT], params)
    body = server.requests[0][2]
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "Answer briefly."),
        ("user", "Q: 2+2?\nA:"),
        ("assistant", "4"),
        ("user", "Q: 1+1?\nA:"),
        ("assistant", "2"),
        ("user", "Q: 3+3?\nA:"),
    ]
    assert body["stop"] == ["\n", "\nQ:"]
    make_lm(server, system_role=False).generate([FEW_SHOT], params)
    assert [m["role"] for m in server.requests[1][2]["messages"]][:2] == ["user", "assistant"]
    make_lm(server, fewshot_as_multiturn=False).generate([FEW_SHOT], params)
    assert server.requests[2][2]["messages"] == [{"role": "user", "content": str(FEW_SHOT)}]
    make_lm(server, chat=False).generate([FEW_SHOT], params)
    assert server.requests[3][2]["prompt"] == str(FEW_SHOT)  # completions: the flat text
    assert server.requests[3][2]["stop"] == ["\n", "\nQ:"]


def test_chat_cache_key_follows_the_messages(server, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    make_lm(server, cache=cache).generate([FEW_SHOT])
    make_lm(server, cache=cache).generate([FEW_SHOT])
    assert len(server.requests) == 1
    make_lm(server, cache=cache, fewshot_as_multiturn=False).generate([FEW_SHOT])
    make_lm(server, cache=cache, system_role=False).generate([FEW_SHOT])
    assert len(server.requests) == 3  # other messages, other keys


@pytest.mark.parametrize("chat", [True, False])
def test_multi_token_logprobs_by_echo(server, chat):
    lm = make_lm(server, chat=chat)
    # "Explanation:" is one token; the continuation's four (" Ada", " was", " born.", "\n")
    # cost -0.5 each
    assert lm.logprobs(["Explanation:"], [" Ada was born.\n"]) == [-2.0]
    path, _, body = server.requests[0]
    assert path == "/v1/completions" and body["prompt"] == "Explanation: Ada was born.\n"
    assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1
    assert lm.logprobs(["q"], [" yes"]) == [-0.05]  # one word: the first-answer-token path


def test_multi_token_logprobs_refused_without_echo(server):
    server.echo = False
    lm = make_lm(server)
    with pytest.raises(UnsupportedByBackend, match="echo \\+ logprobs.*vLLM, llama.cpp"):
        lm.logprobs(["Explanation:"], [" Ada was born."])


@pytest.mark.parametrize("echo", [True, False])
def test_support_probe_is_asked_once_and_cached(server, tmp_path, echo):
    server.echo = echo
    cache = str(tmp_path / "c.sqlite")
    assert make_lm(server, cache=cache).supports_continuation_logprobs() is echo
    assert make_lm(server, cache=cache).supports_continuation_logprobs() is echo
    assert len(server.requests) == 1


def test_perplexity_scorer_over_a_server_with_echo(server):
    from lmcot.rewards import make_scorer

    scorer = make_scorer("perplexity", "fluency", lm=make_lm(server))
    [score, empty] = scorer([], ["Ada was born in Lyon.", " "])
    assert 0 < score < 1 and empty is None  # not the silent exp(-inf) = 0.0


def test_perplexity_scorer_refused_at_start_without_echo(server):
    from lmcot.rewards import make_scorer

    server.echo = False
    with pytest.raises(UnsupportedByBackend) as e:
        make_scorer("perplexity", "naturalness", lm=make_lm(server))
    for part in ("'naturalness'", "vLLM, llama.cpp", "reward.scorers.naturalness.lm", "llm_judge"):
        assert part in str(e.value)
    assert len(server.requests) == 1  # the probe, nothing else


@pytest.mark.parametrize("chat", [True, False])
def test_evaluate_end_to_end_never_drops_a_stated_answer(server, cfg_factory, monkeypatch, chat):
    from lmcot.evaluate import evaluate

    secret = "sk-lmcot-FAKE-KEY-5eb3c1d0"
    server.expected_key = secret
    monkeypatch.setenv("LMCOT_TEST_KEY", secret)
    # a chatty reader: no Answer: line, the answer stated in a sentence, in bold
    server.reply = lambda prompt, i, body: (
        "Both facts are in the context. The answer is: **Estford**."
    )
    cfg = cfg_factory(
        "debug=smoke", "data.limit=3", "reader=openai", "reader.model=fake-model",
        f"reader.base_url={server.url}", "reader.api_key_env=LMCOT_TEST_KEY",
        f"reader.chat={chat}", "logger=csv",
    )  # fmt: skip
    evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    rows = [json.loads(line) for line in open(out / "predictions.jsonl")]
    assert len(rows) == 6 and all(r["prediction"] == "Estford" for r in rows)
    bodies = [b for _, _, b in server.requests]
    if chat:  # few-shot prompts went as turns
        assert all([m["role"] for m in b["messages"]][:3] == ["system", "user", "assistant"]
                   for b in bodies)  # fmt: skip
    written = [p for p in Path(cfg.paths.output_dir).parent.rglob("*") if p.is_file()]
    written += [p for p in Path(cfg.paths.cache_dir).rglob("*") if p.is_file()]
    assert any(p.name == "reader.sqlite" for p in written)
    assert not [p for p in written if secret.encode() in p.read_bytes()]
