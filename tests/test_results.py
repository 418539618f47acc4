"""results.json carries intervals, empty answers and the paired difference to standard (and,
for rationale quality, to KD)."""

import io

import pytest
from rich.console import Console

from lmcot.methods import Prediction
from lmcot.results import print_quality_table, print_table, quality_intervals, summarize


def rows(method, ems, predictions=None):
    predictions = predictions or ["x"] * len(ems)
    return [
        Prediction(f"q{i}", method, None, pred, ["x"], em, em)
        for i, (em, pred) in enumerate(zip(ems, predictions))
    ]


def test_each_method_has_its_interval_empty_count_and_difference_to_standard():
    standard = rows("standard", [1, 0, 0, 0, 1, 0, 0, 0], ["x", "", " . ", "y", "x", "y", "", "y"])
    guided = rows("lm_guided_kd", [1, 1, 1, 0, 1, 1, 0, 0])
    summary = summarize(standard + guided, seed=0, num_resamples=500)
    assert list(summary) == ["standard", "lm_guided_kd"]
    s, g = summary["standard"], summary["lm_guided_kd"]
    assert (s["em"], s["f1"], s["n"]) == (0.25, 0.25, 8)  # the stable keys are unchanged
    assert s["empty"] == 3 and g["empty"] == 0  # "" and " . " normalise to nothing
    assert s["em_ci"][0] <= 0.25 <= s["em_ci"][1] and 0 < s["em_ci"][1] - s["em_ci"][0] < 1
    assert "vs_standard" not in s
    assert g["vs_standard"]["diff"] == pytest.approx(0.375)  # 5/8 - 2/8
    lo, hi = g["vs_standard"]["ci"]
    assert lo <= 0.375 <= hi


def test_methods_after_kd_carry_their_paired_difference_to_kd():
    standard = rows("standard", [0, 0, 0, 0])
    kd = rows("lm_guided_kd", [1, 0, 1, 0])
    rl = rows("lm_guided_rl", [1, 1, 1, 0])
    summary = summarize(standard + kd + rl, seed=0, num_resamples=200)
    assert "vs_kd" not in summary["standard"] and "vs_kd" not in summary["lm_guided_kd"]
    assert summary["lm_guided_rl"]["vs_kd"]["diff"] == pytest.approx(0.25)
    assert summary["lm_guided_rl"]["vs_standard"]["diff"] == pytest.approx(0.75)
    results = {"data": "synthetic", "n": 4, "reader": "tiny", "methods": summary}
    out = io.StringIO()
    print_table(results, Console(file=out, width=250))
    assert "EM − lm_guided_kd" in out.getvalue() and "+0.250 [" in out.getvalue()


def test_no_difference_column_without_standard():
    summary = summarize(rows("cot", [1, 0]), num_resamples=100)
    assert "vs_standard" not in summary["cot"]


def test_printed_table_shows_intervals_and_empty_answers():
    summary = summarize(rows("standard", [1, 0, 0, 0]) + rows("cot", [1, 1, 0, 0]), seed=1)
    results = {"data": "synthetic", "n": 4, "reader": "tiny", "methods": summary}
    out = io.StringIO()
    print_table(results, Console(file=out, width=200))
    text = out.getvalue()
    lo, hi = summary["cot"]["vs_standard"]["ci"]
    assert f"+0.250 [{lo:+.3f}, {hi:+.3f}]" in text
    assert "0.250 [" in text and "empty" in text


def scored(method, aggregates):
    return [{"id": f"q{i}", "method": method, "readability": 0.5, "aggregate": a}
            for i, a in enumerate(aggregates)]  # fmt: skip


def test_quality_carries_its_interval_and_paired_difference_to_kd():
    kd = scored("lm_guided_kd", [4.0, 5.0, 3.0, 6.0, None])
    rl = scored("lm_guided_rl", [4.5, 5.5, 2.0, 6.5, 9.0])  # q4: KD scored nothing there
    cot = scored("cot", [None, None, None, None, None])  # no aspect applied anywhere
    intervals = quality_intervals(kd + rl + cot, seed=0, num_resamples=500)
    assert set(intervals) == {"lm_guided_kd", "lm_guided_rl"}
    assert intervals["lm_guided_kd"]["aggregate"] == pytest.approx(4.5)
    assert "vs_kd" not in intervals["lm_guided_kd"]
    lo, hi = intervals["lm_guided_kd"]["aggregate_ci"]
    assert 3.0 <= lo <= 4.5 <= hi <= 6.0
    vs = intervals["lm_guided_rl"]["vs_kd"]  # paired over q0-q3 only: +.5 +.5 -1 +.5
    assert (vs["diff"], vs["n"]) == (pytest.approx(0.125), 4)
    assert vs["ci"][0] < 0.125 < vs["ci"][1] and vs["ci"][0] >= -1 and vs["ci"][1] <= 0.5
    out = io.StringIO()
    print_quality_table(intervals, Console(file=out, width=200))
    assert "− lm_guided_kd [95% CI]" in out.getvalue()
    assert f"+0.125 [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]" in out.getvalue()


def test_quality_without_kd_has_intervals_but_no_difference():
    intervals = quality_intervals(scored("cot", [1.0, 2.0]), num_resamples=100)
    assert intervals["cot"]["aggregate"] == 1.5 and "vs_kd" not in intervals["cot"]


def test_tables_written_to_a_log_keep_each_row_on_one_line(capsys):
    """Off a terminal (pytest captures stdout, as a log file would) every row of the EM table,
    the quality table and the diagnostics stays on one line, intervals unbroken."""
    from lmcot.diagnostics import diagnose
    from lmcot.diagnostics import print_table as print_diagnostics

    methods = ["standard", "cot", "lm_guided_kd", "lm_guided_kd_sc", "lm_guided_rl_sc"]
    predictions = [p for m in methods for p in rows(m, [1, 0, 1, 0, 0, 1, 1, 0])]
    summary = summarize(predictions, num_resamples=100)
    print_table({"data": "synthetic", "n": 8, "reader": "hf:gguf:SmolLM2:bfloat16",
                 "methods": summary})  # fmt: skip
    print_quality_table(quality_intervals(scored("lm_guided_kd", [1.0, 2.0]) +
                                          scored("lm_guided_rl_sc", [2.0, 2.5]),
                                          num_resamples=100))  # fmt: skip
    print_diagnostics(diagnose(predictions))
    lines = capsys.readouterr().out.splitlines()
    for name in methods:
        row = next(line for line in lines if line.startswith(f"│ {name} "))
        em = summary[name]
        assert f"{em['em']:.3f} [{em['em_ci'][0]:.3f}, {em['em_ci'][1]:.3f}]" in row, row
        if "vs_kd" in em:
            assert f"{em['vs_kd']['diff']:+.3f} [" in row and "]" in row.split("[")[-1], row


@pytest.mark.parametrize("case", ["dev", "path"])
def test_results_json_says_which_split_and_seed_its_questions_came_from(cfg_factory, case):
    """Beside ``data`` and ``n``: the split evaluated (or the file given as data.path) and the
    seed; the stable core is unchanged."""
    import json

    from conftest import HOTPOT_SAMPLE

    from lmcot.evaluate import evaluate

    overrides = {
        "dev": ["data.split=dev", "seed=3"],
        "path": ["data=hotpotqa", f"data.path={HOTPOT_SAMPLE}"],
    }[case]
    cfg = cfg_factory("debug=smoke", "data.limit=2", "~methods.cot", *overrides)
    evaluate(cfg)
    results = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    ids = [json.loads(line)["id"] for line in open(f"{cfg.paths.output_dir}/predictions.jsonl")]
    if case == "dev":
        assert (results["data"], results["split"], results["seed"]) == ("synthetic", "dev", 3)
        assert all(i.startswith("syn-dev-") for i in ids)  # the split recorded is the one asked
    else:
        assert (results["data"], results["split"], results["seed"]) == (
            "hotpotqa", str(HOTPOT_SAMPLE), 0
        )  # fmt: skip
        assert ids == [row["_id"] for row in json.loads(HOTPOT_SAMPLE.read_text())[:2]]
    assert results["n"] == 2 and list(results["methods"]) == ["standard"]
    assert {"em", "f1", "n"} <= set(results["methods"]["standard"])


def test_the_split_of_each_data_config():
    from omegaconf import OmegaConf

    from lmcot.evaluate import eval_split

    def split(**data):
        return eval_split(OmegaConf.create({"_target_": "x.y.load", **data}))

    assert split(split="validation", num_examples=4) == "validation"  # synthetic, the default
    assert split(path=None, split="test") == "test"  # a hub split
    assert split(path="dev.json", split="validation") == "dev.json"  # a file: the split is moot
    assert split(n=6) is None  # a loader with neither


def test_the_table_title_names_split_and_seed(capsys):
    summary = summarize(rows("standard", [1, 0]), num_resamples=50)
    print_table({"data": "synthetic", "split": "dev", "seed": 3, "n": 2, "reader": "tiny",
                 "methods": summary})  # fmt: skip
    print_table({"data": "synthetic", "n": 2, "reader": "tiny", "methods": summary})  # older
    out = capsys.readouterr().out
    assert "synthetic (dev) · n=2 · seed 3 · reader tiny" in out
    assert "synthetic · n=2 · reader tiny" in out
