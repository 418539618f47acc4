"""`python -m lmcot.report` on a multirun directory written by hand: cells, intervals, plots."""

import csv
import json
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest
import yaml
from conftest import REPO

from lmcot import results
from lmcot.methods import Prediction
from lmcot.report import build, student_size
from lmcot.stats import cluster_bootstrap_mean

N = 50  # questions per job


def em_pattern(method: str, seed: int, kd: int | None = None) -> list[float]:
    """Per-question EM, chosen so that the expected cells are easy to compute; ``kd``: how many
    questions KD answers right instead."""
    standard = [float(i % 2 == 0) for i in range(N)]  # .5
    if method == "standard":
        return standard
    if method == "cot":  # standard with two answers swapped: difference 0, but not a constant
        return [1 - v if i < 2 else v for i, v in enumerate(standard)]
    right = {"lm_guided_kd": kd or (40 if seed == 0 else 30), "lm_guided_kd_sc": 35,
             "lm_guided_rl": 42}  # fmt: skip
    return [float(i < right[method]) for i in range(N)]  # kd: .8 (seed 0) and .6 (seed 1)


# reader prompt tokens per question at seed 0, and student generated tokens per question
READER_TOKENS = {"standard": 100, "cot": 300, "lm_guided_kd": 400, "lm_guided_kd_sc": 2000,
                 "lm_guided_rl": 400}  # fmt: skip
STUDENT_TOKENS = {"lm_guided_kd": 40, "lm_guided_kd_sc": 200, "lm_guided_rl": 40}


def method_cost(method: str, seed: int) -> dict:
    """``cost.<method>`` of a run of N questions: 100 more prompt tokens per question per seed
    and 10 generated, so that seeds 0 and 1 average to READER_TOKENS + 60 per question."""
    return {"reader_prompt_tokens": N * (READER_TOKENS[method] + 100 * seed),
            "reader_new_tokens": N * 10, "student_new_tokens": N * STUDENT_TOKENS.get(method, 0),
            "reader_calls_made": 0, "seconds": 1.0}  # fmt: skip


def write_job(root: Path, num: int, overrides: list[str], seed: int, student: str,
              finished: bool = True, methods=("standard", "cot", "lm_guided_kd",
                                              "lm_guided_kd_sc", "lm_guided_rl"),
              kd: int | None = None, cost: bool = False, aspects=("factuality", "task"),
              quality_rows: list[dict] = (), split: str | None = None):  # fmt: skip
    """A job dir as a run leaves it; ``cost``: results.json has ``cost`` and ``precision`` (runs
    before them did not); ``aspects``: its RL reward; ``quality_rows``: its quality.jsonl;
    ``split``: results.json's ``split`` (runs before it had none)."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "student": {"name_or_path": student},
        "reward": {"aspects": list(aspects)},
        "decoding": {"greedy": {}, "sc": {"num_samples": 5}},
    }
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"runtime": {"choices": {"teacher": "supporting_facts"}}}}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if not finished:
        return
    dataset = next(o.split("=")[1] for o in overrides if o.startswith("data="))
    predictions = [
        Prediction(f"q{i}", m, None if m == "standard" else "r", "a", ["a"], em, em)
        for m in methods
        for i, em in enumerate(em_pattern(m, seed, kd))
    ]
    quality = {"lm_guided_kd": {"factuality": 0.4, "task": 0.5},
               "lm_guided_rl": {"factuality": 0.6, "task": 0.7}}  # fmt: skip
    if quality_rows:  # results.json quality.<method>: the means of quality.jsonl
        quality = {m: {a: mean(r[a] for r in quality_rows if r["method"] == m and r[a] is not None)
                       for a in quality_rows[0] if a not in ("id", "method")}
                   for m in {r["method"] for r in quality_rows}}  # fmt: skip
    summary = {"n": N, "data": dataset, "reader": "tiny", "quality": quality,
               "methods": results.summarize(predictions, num_resamples=100)}  # fmt: skip
    if split is not None:
        summary["split"] = split
    if cost:
        summary["cost"] = {m: method_cost(m, seed) for m in methods}
        summary["precision"] = {"reader": "bfloat16", "student": "bfloat16",
                                "training": "bf16-mixed"}  # fmt: skip
    results.write(job, summary, predictions, quality_rows)


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """Two hotpotqa seeds, one 2wiki job and one missing, one hotpotqa job with another student;
    the 2wiki job predates ``cost``."""
    root = tmp_path_factory.mktemp("multirun") / "2025-01-01" / "12-00-00"
    write_job(root, 0, ["data=hotpotqa", "seed=0"], 0, "google/flan-t5-small", cost=True)
    write_job(root, 1, ["data=hotpotqa", "seed=1"], 1, "google/flan-t5-small", cost=True)
    write_job(root, 2, ["data=twowiki", "seed=0"], 0, "google/flan-t5-small")
    write_job(root, 3, ["data=twowiki", "seed=1"], 1, "google/flan-t5-small", finished=False)
    write_job(root, 4, ["data=hotpotqa", "seed=0", "student=flan_t5_base"], 0,
              "google/flan-t5-base", cost=True)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def report(multirun, tmp_path_factory):
    """The report written once for the module's tests: (output dir, report.md text)."""
    out = tmp_path_factory.mktemp("report")
    return out, build([multirun], out, samples=1000).read_text()


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_main_table_averages_seeds_and_keeps_other_settings_apart(report):
    out, text = report
    main = {(r["method"], r["setting"], r["dataset"]): r for r in read_csv(out / "main.csv")}
    kd = main[("lm_guided_kd", "", "hotpotqa")]  # seeds 0 and 1 (.8, .6); not the base student
    assert float(kd["em"]) == pytest.approx(0.7) and float(kd["em_std"]) == pytest.approx(
        0.1414, abs=1e-4
    )
    assert (kd["n"], kd["seeds"], kd["paper_em"]) == ("50", "2", "0.507")
    assert main[("lm_guided_kd", "student=flan_t5_base", "hotpotqa")]["seeds"] == "1"
    assert main[("lm_guided_kd", "", "twowiki")]["paper_em"] == "0.506"
    assert main[("lm_guided_kd", "", "twowiki")]["em_std"] == ""  # one seed: no std
    assert "0.700 ± 0.141" in text and "| 50×2 |" in text


def test_main_table_has_the_tokens_per_question_and_the_em_interval(report, multirun):
    out, text = report
    main = {(r["method"], r["setting"], r["dataset"]): r for r in read_csv(out / "main.csv")}
    kd = main[("lm_guided_kd", "", "hotpotqa")]  # seeds 0, 1: 400 + 10 and 500 + 10 per question
    assert float(kd["reader_tokens_per_q"]) == pytest.approx(460)
    assert float(kd["reader_tokens_per_q_std"]) == pytest.approx(70.71, abs=0.01)
    assert float(kd["student_tokens_per_q"]) == 40 and float(kd["student_tokens_per_q_std"]) == 0
    assert float(main[("lm_guided_kd_sc", "", "hotpotqa")]["student_tokens_per_q"]) == 200
    assert main[("standard", "", "hotpotqa")]["student_tokens_per_q"] == "0.0"
    base = main[("lm_guided_kd", "student=flan_t5_base", "hotpotqa")]  # one seed: no std
    assert (base["reader_tokens_per_q"], base["reader_tokens_per_q_std"]) == ("410.0", "")
    old = main[("lm_guided_kd", "", "twowiki")]  # results.json without cost: empty cells
    assert old["reader_tokens_per_q"] == old["student_tokens_per_q"] == ""
    assert "| 460 ± 71 | 40 ± 0 |" in text
    assert "Precision: reader bfloat16; student bfloat16; training bf16-mixed" in text
    # one job: its own em_ci; two seeds (KD .8, .6 on the same 50 questions): the question-
    # cluster bootstrap of their mean EM, .7
    ci = json.loads((multirun / "2" / "results.json").read_text())["methods"]["lm_guided_kd"]
    assert [float(old["em_ci_low"]), float(old["em_ci_high"])] == ci["em_ci"]
    lo, hi = float(kd["em_ci_low"]), float(kd["em_ci_high"])
    assert (lo, hi) == cluster_bootstrap_mean(
        [{f"q{i}": float(i < right) for i in range(N)} for right in (40, 30)], 1000, 0
    )[1]
    assert lo < 0.7 < hi and 0.5 < lo


def differences_of(out: Path) -> dict[tuple, dict]:
    return {(r["method"], r["setting"], r["dataset"], r["baseline"]): r
            for r in read_csv(out / "differences.csv")}  # fmt: skip


def test_paired_differences_pool_the_seeds_of_a_row_and_cover_the_true_difference(report):
    out, text = report
    rows = differences_of(out)
    kd = rows[("lm_guided_kd", "", "hotpotqa", "standard")]
    assert float(kd["diff"]) == pytest.approx(0.2)  # (.8 + .6) / 2 - .5: both seeds' 100 pairs
    assert float(kd["ci_low"]) < 0.2 < float(kd["ci_high"]) and float(kd["ci_low"]) > 0
    # 50 questions (the seeds answered the same ones) resampled as clusters, 2 jobs
    assert (kd["questions"], kd["jobs"], kd["interval_excludes_zero"]) == ("50", "2", "True")
    cot = rows[("cot", "", "hotpotqa", "standard")]
    assert float(cot["diff"]) == 0 and float(cot["ci_low"]) < 0 < float(cot["ci_high"])
    assert cot["interval_excludes_zero"] == "False"
    rl = rows[("lm_guided_rl", "", "twowiki", "lm_guided_kd")]  # .84 - .8
    assert float(rl["diff"]) == pytest.approx(0.04)
    assert ("lm_guided_kd", "", "hotpotqa", "lm_guided_kd") not in rows  # itself
    assert ("standard", "", "hotpotqa", "lm_guided_kd") not in rows  # minus the KD row
    assert "+0.200 [+0." in text


def test_seeds_that_repeat_one_job_give_its_interval_not_a_narrower_one(tmp_path):
    one, copies = tmp_path / "one", tmp_path / "copies"
    write_job(one, 0, ["data=hotpotqa", "seed=0"], 0, "google/flan-t5-small", kd=40)
    for seed in (0, 1, 2):  # the same answers under three seeds: no new information
        write_job(copies, seed, ["data=hotpotqa", f"seed={seed}"], seed, "google/flan-t5-small",
                  kd=40)  # fmt: skip
    build([one], tmp_path / "r1", samples=1000), build([copies], tmp_path / "r3", samples=1000)
    alone = differences_of(tmp_path / "r1")[("lm_guided_kd", "", "hotpotqa", "standard")]
    three = differences_of(tmp_path / "r3")[("lm_guided_kd", "", "hotpotqa", "standard")]
    assert three["jobs"] == "3" and three["questions"] == alone["questions"] == "50"
    assert (three["diff"], three["ci_low"], three["ci_high"]) == (
        alone["diff"], alone["ci_low"], alone["ci_high"])  # fmt: skip


def test_two_multiruns_with_the_same_job_names_keep_every_job(tmp_path):
    """Two multiruns of one command (jobs ``0`` and ``1`` in each): no job's rows replace
    another's; the repeated seeds are named in the notes."""
    first, second = tmp_path / "2025-01-01" / "12-00-00", tmp_path / "2025-01-02" / "09-00-00"
    for root, kd in ((first, (40, 30)), (second, (45, 35))):  # KD .8, .6 then .9, .7
        for seed in (0, 1):
            write_job(root, seed, ["data=hotpotqa", f"seed={seed}"], seed,
                      "google/flan-t5-small", kd=kd[seed])  # fmt: skip
    text = build([first, second], tmp_path / "report", samples=500).read_text()
    kd = differences_of(tmp_path / "report")[("lm_guided_kd", "", "hotpotqa", "standard")]
    # all four jobs: (.8 + .6 + .9 + .7) / 4 - .5; either multirun alone gives .2 or .3
    assert float(kd["diff"]) == pytest.approx(0.25) and kd["jobs"] == "4"
    assert kd["questions"] == "50"
    main = {(r["method"], r["dataset"]): r for r in read_csv(tmp_path / "report" / "main.csv")}
    assert float(main[("lm_guided_kd", "hotpotqa")]["em"]) == pytest.approx(0.75)
    assert "2 jobs ran hotpotqa seed=0: means count them as one seed" in text
    assert f"{first / '0'}, {second / '0'}" in text


def test_a_job_is_labelled_with_its_split_and_splits_are_never_averaged(tmp_path):
    """A dev number never reads as an evaluation-split number: the dataset is shown with the
    split results.json names (a file by its name), jobs on other splits get their own rows, the
    paper's EM still follows the dataset, and results without a split keep the bare name."""
    root = tmp_path / "multirun"
    for num, (data, split, kd) in enumerate([
        ("synthetic", "dev", 40), ("synthetic", "test", 30),
        ("hotpotqa", "/data/hotpotqa/hotpot_dev_distractor_v1.json", 40),
        ("hotpotqa", None, 30),  # older results.json: no split
    ]):  # fmt: skip
        write_job(root, num, [f"data={data}", "seed=0"], 0, "google/flan-t5-small",
                  methods=("standard", "lm_guided_kd"), kd=kd, split=split)  # fmt: skip
    out = tmp_path / "report"
    text = build([root], out, samples=100).read_text()
    main = {(r["method"], r["dataset"]): r for r in read_csv(out / "main.csv")}
    assert {d for _, d in main} == {
        "synthetic/dev", "synthetic/test", "hotpotqa/hotpot_dev_distractor_v1.json", "hotpotqa"
    }  # fmt: skip
    assert float(main[("lm_guided_kd", "synthetic/dev")]["em"]) == 0.8  # not (.8 + .6) / 2
    assert float(main[("lm_guided_kd", "synthetic/test")]["em"]) == 0.6
    assert main[("lm_guided_kd", "synthetic/dev")]["setting"] == ""  # data= labels no row
    assert main[("lm_guided_kd", "hotpotqa/hotpot_dev_distractor_v1.json")]["paper_em"] == "0.507"
    assert main[("lm_guided_kd", "hotpotqa")]["paper_em"] == "0.507"
    assert "| synthetic/dev EM |" in text and "| hotpotqa EM |" in text
    diffs = differences_of(out)
    assert ("lm_guided_kd", "", "synthetic/dev", "standard") in diffs
    assert ("lm_guided_kd", "", "hotpotqa", "standard") in diffs
    assert "jobs ran" not in text  # other splits are not repeats of one setting and seed


def rewrite_job(job: Path, overrides: list[str], config: dict, choices: dict) -> None:
    """Give a written job the overrides, extra config and config-group choices of a real run."""
    hydra_dir = job / ".hydra"
    merged = {**yaml.safe_load((hydra_dir / "config.yaml").read_text()), **config}
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(merged))
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"runtime": {"choices": {"teacher": "supporting_facts", **choices}}}}
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(hydra))


def test_rows_follow_what_the_jobs_ran_not_how_their_overrides_spelt_it(tmp_path):
    """A lone run of a sweep's cell shares its row though it spelt its setting otherwise (the
    reward left at its default, a default of 0.0 given as ``kl=0``, no ``sweeps=``), and a
    default that changed between two code versions splits rows no override tells apart."""
    trained = ["factuality", "task"]
    swept = {"refine": {"kl": 0.0, "lr": 1e-4}, "sweep": "aspects"}
    runs = {  # dir: (trained, seed, overrides beyond data and seed, config, choices)
        "sweep/0": (["factuality"], 0, ["reward.aspects=[factuality]", "sweeps=aspects"],
                    swept, {"sweeps": "aspects"}),
        "sweep/1": (trained, 0, ["reward.aspects=[factuality,task]", "sweeps=aspects"],
                    swept, {"sweeps": "aspects"}),
        "lone/0": (trained, 1, ["refine.kl=0"], {"refine": {"kl": 0, "lr": 1e-4}, "sweep": None},
                   {"sweeps": None}),
        "older/0": (trained, 2, [], {"refine": {"kl": 0.0, "lr": 3e-4}}, {}),
    }  # fmt: skip
    for name, (aspects, seed, extra, config, choices) in runs.items():
        root, num = tmp_path / name.split("/")[0], int(name.split("/")[1])
        write_aspect_job(root, num, aspects, seed=seed)
        rewrite_job(root / str(num), ["data=hotpotqa", f"seed={seed}", *extra], config, choices)
    out = tmp_path / "report"
    build([tmp_path / d for d in ("sweep", "lone", "older")], out, samples=100)
    rl = {r["setting"]: r for r in read_csv(out / "main.csv") if r["method"] == "lm_guided_rl"}
    assert {s: r["seeds"] for s, r in rl.items()} == {
        "reward.aspects=[factuality] refine.lr=0.0001": "1",
        "reward.aspects=[factuality,task] refine.lr=0.0001": "2",  # sweep/1 and lone/0
        "reward.aspects=[factuality,task] refine.lr=0.0003": "1",  # older: another default
    }


def test_the_paper_line_of_a_plot_follows_the_dataset_whatever_its_split():
    from matplotlib import pyplot as plt

    from lmcot.report.plots import _paper_line

    fig, ax = plt.subplots()
    _paper_line(ax, "hotpotqa/validation", "lm_guided_kd")
    _paper_line(ax, "synthetic/dev", "lm_guided_kd")  # no paper number
    plt.close(fig)
    assert ax.get_legend_handles_labels()[1] == ["paper: hotpotqa/validation lm_guided_kd 0.507"]


def test_ablation_decoding_and_size_tables(report):
    out, text = report
    aspects = {(r["dataset"], r["method"]): r for r in read_csv(out / "aspects.csv")}
    rl = aspects[("hotpotqa", "lm_guided_rl")]
    assert rl["reward_aspects"] == "factuality,task" and float(rl["factuality"]) == 0.6
    assert aspects[("hotpotqa", "lm_guided_kd")]["reward_aspects"] == "(KD, no RL)"
    decoding = [(r["dataset"], r["method"], r["decoding"], r["em"])
                for r in read_csv(out / "decoding.csv") if r["setting"] == ""]  # fmt: skip
    assert decoding[:3] == [("hotpotqa", "lm_guided_kd", "greedy", "0.7"),
                            ("hotpotqa", "lm_guided_kd", "sc k=5", "0.7"),
                            ("hotpotqa", "lm_guided_rl", "greedy", "0.84")]  # fmt: skip
    sizes = [r["student"] for r in read_csv(out / "model_sizes.csv")
             if (r["dataset"], r["method"]) == ("hotpotqa", "lm_guided_kd")]  # fmt: skip
    assert sizes == ["google/flan-t5-small", "google/flan-t5-base"]  # ordered by size


def test_missing_jobs_are_listed_with_their_overrides_and_plots_are_written(report):
    out, text = report
    (missing,) = read_csv(out / "missing.csv")
    assert missing["overrides"] == "data=twowiki seed=1" and missing["reason"] == "no results.json"
    assert "Jobs: 5, finished 4, missing or failed 1" in text
    for png in (
        "em_vs_student_size.png",
        "em_vs_sc_samples.png",
        "quality_kd_vs_rl.png",
        "em_vs_cost.png",
    ):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{png}]({png})" in text


def test_plots_only_when_the_runs_hold_their_data(tmp_path):
    root = tmp_path / "multirun"
    write_job(root, 0, ["data=hotpotqa"], 0, "google/flan-t5-small",
              methods=("standard", "lm_guided_kd"))  # fmt: skip
    out = tmp_path / "report"
    text = build([root], out, samples=100).read_text()
    assert not list(out.glob("*.png")) and "no runs hold the data for a plot" in text
    assert {r["reader_tokens_per_q"] for r in read_csv(out / "main.csv")} == {""}  # no cost


MEASURED = ("factuality", "relevance", "task")  # the aspects quality.jsonl scores, in order
SHIFT = 0.05  # RL − KD on each aspect a job trained on; 0 on the others


def aspect_rows(trained: list[str]) -> list[dict]:
    """quality.jsonl of a job that trained on ``trained``: per question RL − KD is SHIFT ± .02
    on a trained aspect and 0 ± .02 on any other (+.02 on even questions, −.02 on odd ones);
    KD has no relevance score for q0 (the aspect did not apply)."""
    rows = []
    for i in range(N):
        kd = {a: 0.3 + 0.01 * (i % 7) for a in MEASURED}
        kd["relevance"] = None if i == 0 else kd["relevance"]
        noise = 0.02 if i % 2 == 0 else -0.02
        rl = {a: 0.3 + 0.01 * (i % 7) + noise + SHIFT * (a in trained) for a in MEASURED}
        for method, scores in (("lm_guided_kd", kd), ("lm_guided_rl", rl)):
            scored = [v for v in scores.values() if v is not None]
            rows.append({"id": f"q{i}", "method": method, **scores,
                         "aggregate": sum(scored) / len(scored)})  # fmt: skip
    return rows


def write_aspect_job(root: Path, num: int, trained: list[str], seed: int = 0) -> None:
    overrides = ["data=hotpotqa", f"reward.aspects=[{','.join(trained)}]", f"seed={seed}"]
    write_job(root, num, overrides, seed, "google/flan-t5-small",
              methods=("standard", "lm_guided_kd", "lm_guided_rl"), aspects=trained,
              quality_rows=aspect_rows(trained))  # fmt: skip


def matrix_of(out: Path) -> dict[tuple, dict]:
    return {(r["trained"], r["aspect"]): r for r in read_csv(out / "aspect_matrix.csv")}


def test_aspect_matrix_recovers_the_diagonal_and_clusters_the_seeds(tmp_path):
    """sweeps=aspects: each single aspect (factuality twice, by two seeds with the same
    answers), both rationale aspects, both + task; relevance ran first."""
    root = tmp_path / "multirun"
    sets = [["relevance"], ["factuality"], ["factuality"], ["task"],
            ["factuality", "relevance"], ["factuality", "relevance", "task"]]  # fmt: skip
    for num, trained in enumerate(sets):
        write_aspect_job(root, num, trained, seed=1 if num == 2 else 0)
    text = build([root], tmp_path / "report", samples=1000).read_text()
    rows = read_csv(tmp_path / "report" / "aspect_matrix.csv")
    # single aspects in the columns' order, so the diagonal is the diagonal; then the sets
    order = list(dict.fromkeys(r["trained"] for r in rows))
    assert order == ["factuality", "relevance", "task", "all 2", "all 2 + task"]
    assert list(dict.fromkeys(r["aspect"] for r in rows)) == [*MEASURED, "aggregate"]
    cells = matrix_of(tmp_path / "report")
    for trained in MEASURED:
        for aspect in MEASURED:
            cell = cells[(trained, aspect)]
            lo, hi = float(cell["ci_low"]), float(cell["ci_high"])
            # relevance: 49 questions both scored, 24 even and 25 odd ones: noise −.02 / 49
            expected = SHIFT * (aspect == trained) - (0.02 / 49) * (aspect == "relevance")
            assert float(cell["diff"]) == pytest.approx(expected, abs=1e-9), (trained, aspect)
            assert cell["interval_excludes_zero"] == str(aspect == trained), (trained, aspect)
            assert lo < expected < hi
            assert cell["questions"] == ("49" if aspect == "relevance" else "50")
            assert cell["jobs"] == ("2" if trained == "factuality" else "1")
    assert cells[("all 2 + task", "task")]["interval_excludes_zero"] == "True"
    assert cells[("all 2", "task")]["interval_excludes_zero"] == "False"
    line = next(x for x in text.splitlines() if x.startswith("| hotpotqa |  | factuality |"))
    assert line.split(" | ")[3] == "50 (2)" and line.split(" | ")[4].startswith("**+.050 [+.0")
    assert "n=49" in line.split(" | ")[5] and "**" not in line.split(" | ")[5]
    assert (tmp_path / "report" / "aspect_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![aspect_matrix.png](aspect_matrix.png)" in text
    # the two factuality seeds repeat one job's answers: exactly that job's interval
    write_aspect_job(tmp_path / "alone", 0, ["factuality"])
    build([tmp_path / "alone"], tmp_path / "r1", samples=1000)
    alone = matrix_of(tmp_path / "r1")
    for aspect in MEASURED:
        one, two = alone[("factuality", aspect)], cells[("factuality", aspect)]
        assert (one["jobs"], two["jobs"]) == ("1", "2")
        for k in ("diff", "ci_low", "ci_high"):
            assert float(one[k]) == pytest.approx(float(two[k]), rel=1e-9, abs=1e-12)


def test_no_aspect_matrix_without_quality_rows_and_a_bad_row_is_named(report, tmp_path):
    out, text = report  # its jobs have no quality.jsonl
    assert read_csv(out / "aspect_matrix.csv") == [] and not (out / "aspect_matrix.png").exists()
    write_aspect_job(tmp_path / "bad", 0, ["factuality"])
    (tmp_path / "bad" / "0" / "quality.jsonl").write_text('{"id": "q0", "factuality": 0.5}\n')
    with pytest.raises(ValueError, match=r"quality.jsonl row 1: expected keys id and method"):
        build([tmp_path / "bad"], tmp_path / "out", samples=100)


def test_student_sizes_from_names():
    assert student_size("HuggingFaceTB/SmolLM2-135M-Instruct") == 135e6
    assert student_size("Qwen/Qwen2.5-0.5B") == 0.5e9
    assert student_size("google/flan-t5-large") == 783e6
    assert student_size("tiny-llama-student") == float("inf")


def test_cli_loads_no_model(multirun):
    code = (
        "import runpy, sys; sys.argv = ['report', sys.argv[1], '--bootstrap-samples', '100'];"
        "runpy.run_module('lmcot.report', run_name='__main__');"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code, str(multirun)], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Jobs: 5, finished 4" in (multirun / "report" / "report.md").read_text()
