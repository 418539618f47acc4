"""results.json says which teacher made the student (``notes.teacher``)."""

import json

from lmcot.evaluate import evaluate


def test_default_train_config_names_the_supporting_facts_teacher(cfg_factory):
    cfg = cfg_factory(config_name="train")
    assert cfg.teacher._target_ == "lmcot.teacher.SupportingFactsTeacher"
    assert cfg.notes.teacher.startswith("supporting_facts: ")
    assert "gold supporting sentences" in cfg.notes.teacher
    assert "reader" in cfg.notes  # the reader's note is kept beside it
    llm = cfg_factory("teacher=llm", "teacher.num_samples=2", config_name="train")
    assert llm.teacher.num_samples == 2 and llm.notes.teacher.startswith("llm")


def test_results_json_carries_the_teacher_note(cfg_factory):
    cfg = cfg_factory("debug=smoke", "data.limit=1", "teacher=supporting_facts",
                      "methods=baselines", config_name="train")  # fmt: skip
    evaluate(cfg)
    results = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    assert results["notes"]["teacher"] == cfg.notes.teacher
