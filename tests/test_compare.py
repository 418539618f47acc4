"""`python -m lmcot.compare A B`: paired differences between two runs on the same questions."""

import pytest

from lmcot import compare, results
from lmcot.methods import Prediction

N = 50


def write_run(path, right: dict[str, int], ids=range(N), quality: dict[str, float] = (),
              **recorded):  # fmt: skip
    """A run dir: method -> how many of the first questions it answers right; ``quality``:
    method -> an aggregate quality for every rationale (quality.jsonl); ``recorded``: what
    results.json says was evaluated (``data``, ``split``, ``seed``; older runs had none)."""
    predictions = [Prediction(f"q{i}", m, "r", "yes" if i < k else "no", ["yes"], float(i < k),
                              float(i < k))
                   for m, k in right.items() for i in ids]  # fmt: skip
    rows = [{"id": f"q{i}", "method": m, "aggregate": q, "task": 1.0}
            for m, q in dict(quality).items() for i in ids]  # fmt: skip
    results.write(path, {"n": len(ids), **recorded,
                         "methods": results.summarize(predictions, num_resamples=100)},
                  predictions, rows)  # fmt: skip
    return path


def test_identical_runs_differ_by_zero_with_a_zero_interval(tmp_path):
    a = write_run(tmp_path / "a", {"standard": 20, "lm_guided_kd": 30})
    b = write_run(tmp_path / "b", {"standard": 20, "lm_guided_kd": 30})
    rows = compare.compare(compare.load(a), compare.load(b), samples=500)
    assert [r["method"] for r in rows] == ["standard", "lm_guided_kd"]
    for r in rows:
        assert r["em_diff"] == 0 and r["em_ci"] == [0, 0] and r["changed"] == 0 and r["n"] == N


def test_a_method_that_gains_ten_answers_shows_it_paired(tmp_path):
    a = write_run(
        tmp_path / "a", {"standard": 20, "lm_guided_kd": 30}, quality={"lm_guided_kd": 0.5}
    )
    b = write_run(
        tmp_path / "b", {"standard": 20, "lm_guided_kd": 40}, quality={"lm_guided_kd": 0.7}
    )
    rows = {r["method"]: r for r in compare.compare(compare.load(a), compare.load(b), 500)}
    kd = rows["lm_guided_kd"]
    assert kd["em_a"] == pytest.approx(0.6) and kd["em_b"] == pytest.approx(0.8)
    assert kd["em_diff"] == pytest.approx(0.2) and kd["em_ci"][0] > 0 and kd["changed"] == 10
    assert kd["quality_diff"] == pytest.approx(0.2) and kd["quality_n"] == N
    assert "quality_diff" not in rows["standard"] and rows["standard"]["em_diff"] == 0


def test_runs_on_other_questions_are_refused_naming_the_method(tmp_path):
    a = write_run(tmp_path / "a", {"lm_guided_kd": 30})
    b = write_run(tmp_path / "b", {"lm_guided_kd": 30}, ids=range(10, N + 10))
    with pytest.raises(SystemExit, match="lm_guided_kd.*same example ids"):
        compare.compare(compare.load(a), compare.load(b))


def test_the_command_prints_one_row_per_shared_method(tmp_path, capsys):
    a = write_run(tmp_path / "a", {"standard": 20, "cot": 10})
    b = write_run(tmp_path / "b", {"standard": 25})
    compare.main([str(a), str(b), "--bootstrap-samples", "200"])
    out = capsys.readouterr().out
    assert "standard" in out and "+0.100" in out and "cot" not in out
    with pytest.raises(SystemExit, match="no results.json"):
        compare.main([str(a), str(tmp_path / "missing")])


@pytest.mark.parametrize(
    ("recorded_a", "recorded_b", "named"),
    [
        ({"data": "hotpotqa", "split": "validation"}, {"data": "twowiki", "split": "validation"},
         "data 'hotpotqa' vs 'twowiki'"),
        ({"data": "synthetic", "split": "validation", "seed": 0},
         {"data": "synthetic", "split": "dev", "seed": 0}, "split 'validation' vs 'dev'"),
        # synthetic ids syn-000000, ... repeat across seeds while the questions differ
        ({"data": "synthetic", "split": "validation", "seed": 0},
         {"data": "synthetic", "split": "validation", "seed": 1}, "seed 0 vs 1"),
    ],
)  # fmt: skip
def test_runs_on_another_dataset_split_or_synthetic_seed_are_refused(
    tmp_path, recorded_a, recorded_b, named
):
    a = write_run(tmp_path / "a", {"standard": 20}, **recorded_a)
    b = write_run(tmp_path / "b", {"standard": 20}, **recorded_b)
    with pytest.raises(SystemExit, match="different questions") as refused:
        compare.main([str(a), str(b), "--bootstrap-samples", "100"])
    assert str(a) in str(refused.value) and str(b) in str(refused.value)
    assert named in str(refused.value)


def test_the_seed_of_real_data_and_fields_older_runs_lack_are_not_compared(tmp_path):
    """Real datasets draw the same questions whatever the seed; a field one side did not
    record (results before ``split`` or ``seed``) refuses nothing."""
    pairs = [
        ({"data": "hotpotqa", "split": "validation", "seed": 0},
         {"data": "hotpotqa", "split": "validation", "seed": 1}),
        ({"data": "synthetic", "split": "validation", "seed": 0}, {"data": "synthetic"}),
        ({"data": "synthetic", "seed": 1}, {}),
    ]  # fmt: skip
    for k, (recorded_a, recorded_b) in enumerate(pairs):
        a = write_run(tmp_path / f"a{k}", {"standard": 20}, **recorded_a)
        b = write_run(tmp_path / f"b{k}", {"standard": 25}, **recorded_b)
        rows = compare.compare(compare.load(a), compare.load(b), samples=100)
        assert rows[0]["em_diff"] == pytest.approx(0.1)
