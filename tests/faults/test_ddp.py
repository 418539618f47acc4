"""Rank zero under DDP: real 2-process CPU runs (gloo) of the default stages (teacher, distill,
refine, evaluate), with PPO and then GRPO sharing one cache: one export per stage, one results
file per run, no row twice.

Lightning's launcher starts rank 1 as a second `python train.py` in the same run directory
once rank 0's Trainer starts fitting, so rank 1 runs every stage too: it must read the
teacher's file without writing it, train inside the artifact lock rank 0 holds (taking it
itself would deadlock both), wait after each training stage until rank 0's export is complete
(the next stage loads it), and leave evaluation and all writing to rank 0. The PPO run starts
rank 1 in the distill stage; the GRPO run reuses teacher and KD student, so there rank 1 starts
in the refine stage.
"""

import json
import subprocess

import pytest
from harness import TIMEOUT_S, env, jsonl, train_cmd

pytestmark = [pytest.mark.faults, pytest.mark.slow]
DDP = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
METHODS = ["standard", "cot", "lm_guided_kd", "lm_guided_kd_sc", "lm_guided_rl", "lm_guided_rl_sc"]


def run_ddp(root, algorithm: str) -> str:
    """One 2-process run of the default stages in ``root/<algorithm>``; its console output."""
    cmd = train_cmd(root, *DDP, f"refine={algorithm}", run=algorithm)
    # a rank's Python or native crash (faulthandler) in full, for the failure message
    loud = env() | {"HYDRA_FULL_ERROR": "1", "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(cmd, cwd=root, env=loud, capture_output=True, text=True,
                          timeout=TIMEOUT_S)  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, failure(root / algorithm, log)
    assert "MEMBER: 1/2" in log  # rank 0 of a real 2-process group
    rank1 = (root / algorithm / "train_ddp_process_1.log").read_text()
    assert "rank 1 leaves evaluation to rank zero" in rank1  # rank 1 got past refine

    [results] = (root / algorithm).rglob("results.json")
    assert set(json.loads(results.read_text())["methods"]) == set(METHODS)
    assert json.loads(results.read_text())["n"] == 4
    keys = [(r["id"], r["method"]) for r in jsonl(results.parent / "predictions.jsonl")]
    assert len(keys) == len(set(keys)) == 4 * len(METHODS)
    return log


def failure(run_dir, log: str) -> str:
    """What a failed run leaves to read: the first traceback of either rank (a crash of rank 1
    shows in rank 0 only as a closed connection, at the end of the output) and rank 1's log."""
    rank1 = run_dir / "train_ddp_process_1.log"
    first = min(
        (i for i in (log.find("Traceback"), log.find("Fatal Python error")) if i >= 0), default=0
    )
    return (
        f"output from the first traceback:\n{log[first : first + 4000]}\n...\n{log[-1500:]}"
        f"\nrank 1's log ends:\n{rank1.read_text()[-1500:] if rank1.exists() else '(none)'}"
    )


def exports(root, stage: str) -> list:
    """Every exported (or half-exported) student of ``stage``, each checked for its marker."""
    found = sorted(root.glob(f"cache/{stage}/*/student*"))
    assert all(p.name == "student" and (p / "lmcot_done.json").exists() for p in found), found
    return found


def test_two_process_ddp_runs_every_stage_and_writes_once(tmp_path):
    log = run_ddp(tmp_path, "ppo")
    assert len(exports(tmp_path, "distill")) == 1
    assert log.count("distilled student exported") == 1
    [ppo] = exports(tmp_path, "refine")
    assert log.count("refined student exported") == 1
    [teacher] = tmp_path.glob("cache/teacher/*/rationales.jsonl")
    ids = [r["id"] for r in jsonl(teacher)]
    assert len(ids) == len(set(ids)) == 12

    log = run_ddp(tmp_path, "grpo")  # same teacher and KD student, another refine key
    assert "distilled student exists, reusing" in log
    assert "distilled student exported" not in log and len(exports(tmp_path, "distill")) == 1
    assert log.count("refined student exported") == 1
    [grpo] = [p for p in exports(tmp_path, "refine") if p != ppo]
    manifest = json.loads((grpo.parent / "manifest.json").read_text())
    assert manifest["inputs"]["refine"]["algorithm"]["_target_"] == "lmcot.algorithms.GRPO"
    assert len(list(tmp_path.rglob("results.json"))) == 2
