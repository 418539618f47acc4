"""The API key never reaches a file: real `evaluate.py` and `train.py` runs against a local
OpenAI-compatible server, W&B logging offline, then every byte they wrote is searched."""

import secrets
import subprocess
import sys

import pytest
from harness import REPO, env
from test_openai_backend import server as openai_server  # noqa: F401  (the fake server fixture)

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def run(script: str, tmp_path, name: str, key: str, *overrides: str, cache: str = "cache"):
    cmd = [sys.executable, str(REPO / script), "debug=smoke", "data.limit=2", "logger=wandb",
           f"hydra.run.dir={tmp_path / name}", f"paths.cache_dir={tmp_path / cache}",
           *overrides]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp_path, env=env() | {"OPENAI_API_KEY": key},
                          capture_output=True, timeout=600)  # fmt: skip


def test_the_key_is_written_nowhere(openai_server, tmp_path):  # noqa: F811 (the fixture)
    key = f"sk-lmcot-secret-canary-{secrets.token_hex(12)}"
    openai_server.expected_key = key
    reader = ["reader=openai", "reader.model=fake-model", f"reader.base_url={openai_server.url}"]
    evaluated = run("evaluate.py", tmp_path, "evaluate", key, *reader)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    trained = run("train.py", tmp_path, "train", key, *reader, "teacher=llm", "methods=baselines",
                  "stages=[teacher,evaluate]")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    # a server that echoes a rejected key into its error (some do): the error is kept, the key not
    openai_server.expected_key = "sk-the-right-one"
    rejected = run("evaluate.py", tmp_path, "rejected", key, *reader, cache="cache-rejected")
    said = rejected.stdout + rejected.stderr
    assert rejected.returncode != 0 and b"Incorrect API key provided: Bearer ***" in said

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"results.json", "predictions.jsonl", "config.yaml", "reader.sqlite"} <= {
        p.name for p in written
    }
    assert any("wandb" in p.parts for p in written), "W&B wrote nothing offline"
    leaks = [p for p in written if key.encode() in p.read_bytes()]
    assert not leaks, f"the key is in {leaks}"
    for done in (evaluated, trained, rejected):
        assert key.encode() not in done.stdout + done.stderr
