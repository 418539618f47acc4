"""`python evaluate.py` end to end: through Hydra's compose API and as a subprocess."""

import json
import os
import subprocess
import sys

import pytest
from conftest import HOTPOT_SAMPLE, REPO, TWOWIKI_SAMPLE
from hydra.utils import instantiate

from lmcot.data import synthetic
from lmcot.evaluate import evaluate, rationale_quality
from lmcot.lm.hf import HFModel
from lmcot.methods import Prediction


def read_results(cfg):
    out = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    rows = [json.loads(line) for line in open(f"{cfg.paths.output_dir}/predictions.jsonl")]
    return out, rows


def test_smoke_run_writes_results_and_predictions(cfg_factory):
    cfg = cfg_factory("debug=smoke", "data.limit=3")
    metrics = evaluate(cfg)
    results, rows = read_results(cfg)
    assert results["n"] == 3
    assert set(results["methods"]) == {"standard", "cot"}
    for name, m in results["methods"].items():
        assert 0 <= m["em"] <= m["f1"] <= 1 and m["n"] == 3
        assert metrics[f"test/{name}/em"] == m["em"]
    assert len(rows) == 6 and {r["method"] for r in rows} == {"standard", "cot"}
    assert set(rows[0]) == {"id", "method", "rationale", "prediction", "gold", "em", "f1"}
    by_method = {m: [r for r in rows if r["method"] == m] for m in ("standard", "cot")}
    assert all(r["rationale"] is None for r in by_method["standard"])
    assert all(isinstance(r["rationale"], str) for r in by_method["cot"])
    # both methods answered the same examples
    assert [r["id"] for r in by_method["standard"]] == [r["id"] for r in by_method["cot"]]
    # the mean of the rows is the reported number
    em = sum(r["em"] for r in by_method["cot"]) / 3
    assert results["methods"]["cot"]["em"] == pytest.approx(em)


def test_rerun_is_served_from_the_cache_without_loading_the_model(cfg_factory, monkeypatch):
    cfg = cfg_factory("debug=smoke", "data.limit=3")
    evaluate(cfg)
    first, first_rows = read_results(cfg)
    assert first["reader_calls"] > 0

    def no_loading(self):
        raise AssertionError("a fully cached run loaded the model")

    monkeypatch.setattr(HFModel, "_load", no_loading)
    evaluate(cfg)
    second, second_rows = read_results(cfg)
    assert second["reader_calls"] == 0
    assert second["methods"] == first["methods"] and second_rows == first_rows


@pytest.mark.parametrize(
    "data, path, n",
    [("hotpotqa", HOTPOT_SAMPLE, 2), ("2wikimultihopqa", TWOWIKI_SAMPLE, 2)],
)
def test_original_format_files(cfg_factory, data, path, n):
    cfg = cfg_factory("debug=smoke", f"data={data}", f"data.path={path}", "data.limit=2")
    evaluate(cfg)
    results, rows = read_results(cfg)
    assert results["n"] == n and results["data"] == data.replace("2wikimultihopqa", "twowiki")
    gold = json.loads(path.read_text())[0]["answer"]
    assert rows[0]["gold"][0] == gold


def test_wandb_logs_offline_and_a_broken_logger_never_kills_the_run(cfg_factory, tmp_path):
    cfg = cfg_factory("debug=smoke", "data.limit=2", "logger=wandb")
    evaluate(cfg)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))

    broken = cfg_factory(
        "debug=smoke", "data.limit=2", "logger=wandb", "+logger.wandb.no_such_argument=1"
    )
    evaluate(broken)  # the logger fails to start; results are still written
    assert (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_cli_default_reader_subprocess(tmp_path):
    """The real command with the offline SmolLM2 reader on three synthetic questions."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [
        sys.executable, "evaluate.py", "data.limit=3", "logger=csv",
        f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n"] == 3 and set(results["methods"]) == {"standard", "cot"}
    assert "stand-in" in results["notes"]["reader"]
    assert "standard" in proc.stdout and "EM" in proc.stdout  # the rich table
    assert (tmp_path / ".hydra" / "config.yaml").exists()


def test_a_repeated_question_is_answered_once_and_counted(cfg_factory, tmp_path):
    """Two rows with the same question and context under other ids: one reader answer serves
    both in every method, and results.json counts the answers saved."""
    row = json.loads(HOTPOT_SAMPLE.read_text())[0]
    path = tmp_path / "twice.json"
    path.write_text(json.dumps([row, {**row, "_id": row["_id"] + "-again"}]))
    cfg = cfg_factory("debug=smoke", "data=hotpotqa", f"data.path={path}")
    evaluate(cfg)
    results, rows = read_results(cfg)
    # standard's and CoT's second prompt, and CoT's second answer turn if the rows needed it
    assert results["saved_calls"] == 2 + results["second_turn"].get("cot", 0) // 2
    for method in ("standard", "cot"):
        a, b = (r["prediction"] for r in rows if r["method"] == method)
        assert a == b


@pytest.mark.parametrize("normalization", ["quality.normalize=true",
                                           "quality.aggregation=normalize_then_sum"])  # fmt: skip
def test_rationale_quality_of_a_method_does_not_depend_on_method_order(cfg_factory,
                                                                       normalization):  # fmt: skip
    """Normalised quality: every method is z-scored against the same pooled statistics, so
    listing the methods in another order gives every method the same numbers."""
    cfg = cfg_factory("debug=smoke", "quality.aspects=[readability,logicality,factuality]",
                      "reward/scorer@quality.scorers.factuality=lexical",
                      normalization)  # fmt: skip
    assert instantiate(cfg.quality, lm=None).normalizes
    examples = synthetic.load(num_examples=6)
    rationales = {  # three methods whose rationales differ in length, wording and support
        "lm_guided_kd": lambda ex: " ".join(s for _, sents in ex.context for s in sents[:1]),
        "lm_guided_rl": lambda ex: f"The answer is {ex.answer}.",
        "cot": lambda ex: f"{ex.question} Consider every paragraph carefully and at length.",
    }
    predictions = [Prediction(ex.id, m, write(ex), "a", ex.golds, 0.0, 0.0)
                   for m, write in rationales.items() for ex in examples]  # fmt: skip
    runs = []
    for order in (list(rationales), list(reversed(rationales))):
        ordered = [p for m in order for p in predictions if p.method == m]
        means, rows = rationale_quality(cfg, None, examples, ordered)
        runs.append((means, sorted(rows, key=lambda r: (r["method"], r["id"]))))
    (first_means, first_rows), (second_means, second_rows) = runs
    assert first_means == second_means and first_rows == second_rows
    aggregates = {m: first_means[m]["aggregate"] for m in rationales}
    assert len(set(aggregates.values())) == 3  # the methods differ: the test can see an order
    # pooled z-scores: over all 18 rationales each aspect has mean 0, so the aggregates do too
    assert sum(aggregates.values()) == pytest.approx(0.0, abs=1e-6)
