"""Teacher stage: rationale text, the correctness filter, resumable JSONL, config-keyed paths."""

import json
import logging
from pathlib import Path

import pytest
from conftest import HOTPOT_SAMPLE, REPO
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot.data import hotpotqa
from lmcot.data.example import Example
from lmcot.lm.base import LM
from lmcot.teacher import (
    LLMTeacher,
    RationaleStore,
    StoreError,
    SupportingFactsTeacher,
    fill,
    run_teacher,
    teacher_path,
)

CALLS: list[dict] = []  # every _generate call of every ScriptedLM, also those built by instantiate
BUILT: list["ScriptedLM"] = []  # every ScriptedLM constructed
ROW_KEYS = {"id", "sample", "rationale", "answer", "gold", "correct", "kept", "teacher", "model",
            "prompt_version"}  # fmt: skip


def tiny_data(n: int = 6, split: str = "validation") -> list[Example]:
    """Question i asks for A{i}; only a training split, to prove that run_teacher asks for it."""
    assert split == "train", f"the teacher must read the training split, got {split!r}"
    return [
        Example(f"t{i}", f"Who is {i}?", [(f"P{i}", [f"P{i} is A{i}."])], f"A{i}",
                supporting_facts=[(f"P{i}", 0)])
        for i in range(n)
    ]  # fmt: skip


class ScriptedLM(LM):
    """Sample j for question i, by i % 3: 0) all wrong; 1) wrong, right, right with the same
    rationale as before; 2) right, right with another rationale, wrong.

    Args:
        fail_on_call: raise KeyboardInterrupt on this (1-based) call, as Ctrl-C would.
    """

    def __init__(self, fail_on_call: int | None = None, cache: str | None = None):
        super().__init__(cache=cache)
        self.fail_on_call = fail_on_call
        BUILT.append(self)

    @property
    def cache_id(self) -> str:
        return "fake:scripted"

    def _generate(self, prompts, params, n):
        CALLS.append({"questions": [p.rsplit("Question: ", 1)[1].split("\n")[0] for p in prompts],
                      "n": n, "params": params})  # fmt: skip
        if len(CALLS) == self.fail_on_call:
            raise KeyboardInterrupt
        return [[self.output(int(q.split()[-1][:-1]), j) for j in range(n)]
                for q in CALLS[-1]["questions"]]  # fmt: skip

    @staticmethod
    def output(i: int, j: int) -> str:
        right = {1: (False, True, True), 2: (True, True, False)}.get(i % 3, (False,) * 3)[j]
        answer = f"A{i}" if right else f"B{i}"
        variant = " Indeed." if (i % 3, j) == (2, 1) else ""
        return f" P{i} is {answer}.{variant}\nAnswer: {answer}"


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()
    BUILT.clear()


@pytest.fixture(scope="module")
def cot_prompt():
    prompts = OmegaConf.load(REPO / "conf" / "prompts" / "v1.yaml")
    return instantiate(prompts.cot)


def keys(rows):
    return [(r["id"], r["sample"]) for r in rows]


def test_supporting_facts_rationale_on_a_hotpotqa_row():
    (ex,) = hotpotqa.load(path=str(HOTPOT_SAMPLE), limit=1)
    bare = (
        "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and "
        "producer. Edward Davis Wood Jr. (October 10, 1924 – December 10, 1978) was an American "
        "filmmaker, actor, writer, producer, and director."
    )
    (row,) = SupportingFactsTeacher()([ex], reader=None)
    assert set(row) == ROW_KEYS
    assert row["rationale"] == bare + " So the answer is yes."
    assert (row["id"], row["sample"], row["answer"], row["gold"]) == (ex.id, 0, "yes", ["yes"])
    assert row["correct"] and row["kept"] and row["model"] is None
    assert row["teacher"] == "SupportingFactsTeacher" and row["prompt_version"] is None
    assert SupportingFactsTeacher(conclusion=None).rationale(ex) == bare


@pytest.mark.parametrize(
    "keep, kept",
    [  # i % 3 == 1: sample 2 repeats sample 1's rationale, so "all" keeps it only once
        ("first", {("t1", 1), ("t2", 0), ("t4", 1), ("t5", 0)}),
        ("all", {("t1", 1), ("t2", 0), ("t2", 1), ("t4", 1), ("t5", 0), ("t5", 1)}),
    ],
)
def test_llm_teacher_keeps_only_right_answers(cot_prompt, keep, kept):
    teacher = LLMTeacher(cot_prompt, num_samples=3, temperature=0.7, keep=keep, chunk_size=4)
    rows = list(teacher(tiny_data(6, "train"), ScriptedLM()))
    # 3 samples each in one call per chunk of 4 questions, not one call per sample
    assert [(len(c["questions"]), c["n"]) for c in CALLS] == [(4, 3), (2, 3)]
    assert CALLS[0]["params"].temperature == 0.7 and CALLS[0]["params"].top_p == 0.95
    assert keys(rows) == [(f"t{i}", j) for i in range(6) for j in range(3)]
    right = {(r["id"], r["sample"]) for r in rows if r["answer"] == r["gold"][0]}
    assert {(r["id"], r["sample"]) for r in rows if r["correct"]} == right and len(right) == 8
    assert {(r["id"], r["sample"]) for r in rows if r["kept"]} == kept
    assert all(r["answer"].startswith("A") for r in rows if r["kept"])
    assert rows[3]["rationale"] == "P1 is B1." and rows[3]["answer"] == "B1"
    assert {(r["model"], r["prompt_version"], r["teacher"]) for r in rows} == {
        ("fake:scripted", "v1", "LLMTeacher")
    }


def test_one_sample_is_greedy(cot_prompt):
    teacher = LLMTeacher(cot_prompt, num_samples=1, temperature=0.9)
    rows = list(teacher(tiny_data(6, "train"), ScriptedLM()))
    assert len(CALLS) == 1 and CALLS[0]["n"] == 1 and CALLS[0]["params"].greedy
    assert [r["id"] for r in rows if r["kept"]] == ["t2", "t5"]


def test_inconsistent_settings_are_refused(cot_prompt):
    with pytest.raises(ValueError, match="temperature > 0"):
        LLMTeacher(cot_prompt, num_samples=2, temperature=0)
    with pytest.raises(ValueError, match="'first' or 'all'"):
        LLMTeacher(cot_prompt, keep="best")


def test_killed_run_resumes_without_loss_or_duplicates(cot_prompt, tmp_path):
    path, examples = tmp_path / "t.jsonl", tiny_data(6, "train")
    teacher = LLMTeacher(cot_prompt, num_samples=3, chunk_size=2)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the second chunk
        fill(RationaleStore(path, 3), teacher, examples, ScriptedLM(fail_on_call=2))
    assert keys(RationaleStore(path, 3).rows()) == [
        (f"t{i}", j) for i in range(2) for j in range(3)
    ]

    CALLS.clear()
    store = RationaleStore(path, 3)
    assert fill(store, teacher, examples, ScriptedLM()) == 12
    assert [q for c in CALLS for q in c["questions"]] == [f"Who is {i}?" for i in range(2, 6)]
    assert keys(store.rows()) == [(f"t{i}", j) for i in range(6) for j in range(3)]
    assert store.summary()["rows"] == 18 and store.done_ids() == {f"t{i}" for i in range(6)}

    CALLS.clear()
    assert fill(RationaleStore(path, 3), teacher, examples, ScriptedLM()) == 0 and CALLS == []


def test_kill_9_mid_write_is_repaired_on_open(cot_prompt, tmp_path, caplog):
    path, examples = tmp_path / "t.jsonl", tiny_data(6, "train")
    teacher = LLMTeacher(cot_prompt, num_samples=3, chunk_size=2)
    full = list(teacher(examples, ScriptedLM()))
    lines = [json.dumps(r) for r in full]
    # t0 complete, t1 cut after 2 of its 3 rows, then a half-written line
    path.write_text("\n".join(lines[:5]) + "\n" + lines[5][:17])
    with caplog.at_level(logging.WARNING):
        store = RationaleStore(path, samples_per_id=3)
    assert "partially written" in caplog.text and "fewer than 3 rows" in caplog.text
    assert store.done_ids() == {"t0"} and keys(store.rows()) == keys(full[:3])

    CALLS.clear()
    fill(store, teacher, examples, ScriptedLM())
    assert [q for c in CALLS for q in c["questions"]] == [f"Who is {i}?" for i in range(1, 6)]
    assert store.rows() == full  # the same rows a run without a kill writes, in the same order
    assert store.kept() == [r for r in full if r["kept"]]


def test_a_cut_last_line_never_corrupts_the_next_append(tmp_path):
    path, examples = tmp_path / "t.jsonl", tiny_data(4, "train")
    full = list(SupportingFactsTeacher()(examples))
    path.write_text("".join(json.dumps(r) + "\n" for r in full[:2]) + json.dumps(full[2])[:-3])
    fill(RationaleStore(path), SupportingFactsTeacher(chunk_size=1), examples)
    assert RationaleStore(path).rows() == full


def test_append_skips_stored_rows_and_a_corrupt_middle_line_is_an_error(tmp_path):
    store = RationaleStore(tmp_path / "t.jsonl")
    rows = list(SupportingFactsTeacher()(tiny_data(3, "train")))
    assert store.append(rows[:2]) == 2 and store.append(rows) == 1 and store.append(rows) == 0
    assert keys(RationaleStore(store.path).rows()) == keys(rows)
    text = store.path.read_text().splitlines()
    store.path.write_text("\n".join([text[0], "{not json", text[2]]) + "\n")
    with pytest.raises(StoreError, match="line 2"):
        RationaleStore(store.path)


def make_cfg(tmp_path, teacher: str = "llm", **data):
    """The config train.py would hand over, built by hand from the shipped prompt/teacher files."""
    conf = REPO / "conf"
    return OmegaConf.create({
        "seed": 0,
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "data": {"_target_": f"{__name__}.tiny_data", "n": 6, **data},
        "prompts": OmegaConf.load(conf / "prompts" / "v1.yaml"),
        "teacher": OmegaConf.load(conf / "teacher" / f"{teacher}.yaml").teacher,  # _global_ pkg
        "reader": {"_target_": f"{__name__}.ScriptedLM", "cache": str(tmp_path / "r.sqlite")},
    })  # fmt: skip


def test_run_teacher_writes_once_then_reuses(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.teacher.num_samples = 3
    metrics = run_teacher(cfg)
    assert metrics["teacher/rows"] == 18 and metrics["teacher/kept"] == 4
    assert metrics["teacher/kept_fraction"] == pytest.approx(4 / 6)  # t1, t2, t4, t5
    path = teacher_path(cfg)
    assert path.parent.parent == tmp_path / "cache" / "teacher"
    assert path.parent.name.startswith(f"{__name__}-llm-")
    rows = RationaleStore(path, 3).rows()
    assert len(rows) == 18 and len(set(keys(rows))) == 18

    CALLS.clear(), BUILT.clear()
    assert run_teacher(cfg) == metrics and CALLS == [] and BUILT == []  # complete: no reader
    assert RationaleStore(path, 3).rows() == rows


def test_supporting_facts_run_never_builds_a_reader(tmp_path):
    cfg = make_cfg(tmp_path, teacher="supporting_facts")
    cfg.reader = {"_target_": "no.such.Reader"}  # instantiating it would fail
    metrics = run_teacher(cfg)
    assert metrics["teacher/rows"] == 6 and metrics["teacher/kept_fraction"] == 1.0
    (row, *_) = RationaleStore(teacher_path(cfg)).kept()
    assert row["rationale"] == "P0 is A0. So the answer is A0."


def test_run_teacher_reads_the_synthetic_training_split(tmp_path):
    cfg = make_cfg(tmp_path, teacher="supporting_facts")
    cfg.data = {"_target_": "lmcot.data.synthetic.load", "num_examples": 6, "seed": 0,
                "num_train": 5}  # fmt: skip
    assert run_teacher(cfg)["teacher/rows"] == 5
    ids = [r["id"] for r in RationaleStore(teacher_path(cfg)).rows()]
    assert ids == [f"syn-train-{i:06d}" for i in range(5)]


def test_teacher_path_follows_the_config_that_matters(tmp_path):
    cfg = make_cfg(tmp_path)
    path = teacher_path(cfg)
    assert teacher_path(make_cfg(tmp_path)) == path  # same config, same file in any run
    changes = ["teacher.num_samples=3", "teacher.keep=all", "seed=1", "data.n=7",
               "reader.name_or_path=other-model", "prompts.version=v2",
               "prompts.cot.instruction=Think."]  # fmt: skip
    for change in changes:
        changed = OmegaConf.merge(make_cfg(tmp_path), OmegaConf.from_dotlist([change]))
        assert teacher_path(changed) != path, change
    moved = make_cfg(tmp_path)  # where caches lie is no part of what the rationales are
    moved.reader.cache = "other.sqlite"
    assert teacher_path(moved) == path

    facts = teacher_path(make_cfg(tmp_path, teacher="supporting_facts"))
    other_reader = make_cfg(tmp_path, teacher="supporting_facts")
    other_reader.reader.cache = "other.sqlite"  # unused by this teacher: same file
    assert teacher_path(other_reader) == facts != path


def test_shipped_teacher_configs_compose(cfg_factory):
    cfg = cfg_factory("debug=smoke", "+teacher=llm")
    teacher = instantiate(cfg.teacher)
    assert isinstance(teacher, LLMTeacher) and teacher.prompt.version == cfg.prompts.version
    assert teacher.params.greedy and teacher.num_samples == 1 and teacher.keep == "first"
    cfg = cfg_factory("debug=smoke", "+teacher=supporting_facts", "data.num_train=4")
    assert run_teacher(cfg)["teacher/kept_fraction"] == 1.0
    assert Path(teacher_path(cfg)).exists()
