"""Rank zero under DDP: a real 2-process CPU run (gloo) of teacher, distill and evaluate exports
one student and writes one results file, with no row twice.

Lightning's launcher starts rank 1 as a second `python train.py` in the same run directory
once rank 0's Trainer starts fitting, so rank 1 runs every stage too: it must read the
teacher's file without writing it, train inside the artifact lock rank 0 holds (taking it
itself would deadlock both), and leave evaluation and all writing to rank 0.
"""

import json
import subprocess

import pytest
from harness import TIMEOUT_S, env, jsonl, train_cmd

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_two_process_ddp_writes_once(tmp_path):
    ddp = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    stages = ["stages=[teacher,distill,evaluate]", "methods=guided"]
    cmd = train_cmd(tmp_path, *ddp, *stages)
    done = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "MEMBER: 1/2" in log  # rank 0 of a real 2-process group
    rank1 = (tmp_path / "run" / "train_ddp_process_1.log").read_text()
    assert "rank 1 leaves evaluation to rank zero" in rank1

    exports = list(tmp_path.glob("cache/distill/*/student*"))
    assert [p.name for p in exports] == ["student"] and (exports[0] / "lmcot_done.json").exists()
    assert log.count("distilled student exported") == 1
    [results] = tmp_path.rglob("results.json")
    assert json.loads(results.read_text())["methods"]["lm_guided"]["n"] == 4
    rows = jsonl(results.parent / "predictions.jsonl")
    keys = [(r["id"], r["method"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 4  # standard, cot, lm_guided, lm_guided_sc
    [teacher] = tmp_path.glob("cache/teacher/*/rationales.jsonl")
    ids = [r["id"] for r in jsonl(teacher)]
    assert len(ids) == len(set(ids)) == 12
