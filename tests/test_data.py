"""Data loaders on the vendored real rows and broken copies of them, hub rows, the generator."""

import collections
import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import HOTPOT_SAMPLE as HOTPOT
from conftest import REPO
from conftest import TWOWIKI_SAMPLE as TWOWIKI
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot.data import DataError, Example, hotpotqa, synthetic, twowiki

TWOWIKI_IDS = ["83bf3b5a0bd911eba7f7acde48001122", "a80d84e7096d11ebbdb0ac1f6bf848b6"]


def hotpot_rows() -> list[dict]:
    return json.loads(HOTPOT.read_text(encoding="utf-8"))


def write_rows(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


# --- HotpotQA on the real sample -------------------------------------------------------------


def test_hotpotqa_sample_loads_every_row_in_file_order():
    examples = hotpotqa.load(str(HOTPOT))
    assert len(examples) == 9
    assert [ex.id for ex in examples] == [row["_id"] for row in hotpot_rows()]
    first = examples[0]
    assert first.id == "5a8b57f25542995d1e6f1371"
    assert first.question == "Were Scott Derrickson and Ed Wood of the same nationality?"
    assert (first.answer, first.type, first.aliases) == ("yes", "comparison", [])
    assert examples[1].answer == "Chief of Protocol"
    assert collections.Counter(ex.type for ex in examples) == {"bridge": 4, "comparison": 5}
    assert len(examples[8].context) == 2  # 5abd259d...: only its gold paragraphs, as in source


def test_hotpotqa_sample_sentences_keep_original_text_and_facts_resolve():
    examples = hotpotqa.load(str(HOTPOT))
    assert examples[0].context[1] == ("Scott Derrickson", hotpot_rows()[0]["context"][1][1])
    assert examples[0].context[1][1][1].startswith(" He lives in")  # leading space kept
    assert examples[0].supporting_sentences()[0] == (
        "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and producer."
    )
    for ex in examples:
        assert len(ex.supporting_facts) >= 2
        assert all(ex.supporting_sentences())


def test_limit_keeps_the_first_examples():
    assert [ex.id for ex in hotpotqa.load(str(HOTPOT), limit=5)] == [
        row["_id"] for row in hotpot_rows()[:5]
    ]
    assert hotpotqa.load(str(HOTPOT), limit=0) == []
    assert len(twowiki.load(str(TWOWIKI), limit=1)) == 1


@pytest.mark.parametrize(
    "options", [{"on_error": "ignore"}, {"limit": -1}, {"limit": "5"}, {"limit": True}]
)
def test_bad_options_are_rejected_before_reading(options):
    with pytest.raises(ValueError, match="on_error|limit"):
        hotpotqa.load("/nonexistent.json", **options)


# --- broken copies ---------------------------------------------------------------------------


def _drop(key):
    return lambda row: row.pop(key)


BROKEN_ROWS = {
    # name: (mutation of row 3, strings the message must contain besides file, row and id)
    "missing answer": (_drop("answer"), ["field 'answer'", "key missing"]),
    "answer wrong type": (
        lambda row: row.update(answer=5),
        ["field 'answer' must be a non-empty string, got int"],
    ),
    "empty question": (lambda row: row.update(question=""), ["field 'question'", "got ''"]),
    "context not a list": (lambda row: row.update(context={}), ["field 'context'", "dict"]),
    "paragraph not a pair": (
        lambda row: row["context"].__setitem__(2, "oops"),
        ["field 'context[2]'", "[title, [sentence, ...]] pair"],
    ),
    "sentence not a string": (
        lambda row: row["context"][0][1].__setitem__(1, None),
        ["field 'context[0][1][1]'", "None"],
    ),
    "fact title not in context": (
        lambda row: row["supporting_facts"][0].__setitem__(0, "No Such Title"),
        ["field 'supporting_facts[0]'", "'No Such Title'"],
    ),
    "fact sentence out of range": (
        lambda row: row["supporting_facts"][1].__setitem__(1, 99),
        ["field 'supporting_facts[1]'", "sentence index in [0,", "got 99"],
    ),
    "fact index not an int": (
        lambda row: row["supporting_facts"][0].__setitem__(1, "0"),
        ["field 'supporting_facts[0]'", "sent_id str"],
    ),
    "duplicate id": (
        lambda row: row.update(_id="5a8c7595554299585d9e36b6"),  # the id of row 1
        ["field '_id' must be unique", "row 1"],
    ),
}


@pytest.mark.parametrize("name", BROKEN_ROWS)
def test_broken_row_raises_data_error_naming_file_row_id_and_field(tmp_path, name):
    mutate, expected = BROKEN_ROWS[name]
    rows = hotpot_rows()
    mutate(rows[3])
    path = write_rows(tmp_path / "hotpot.json", rows)
    with pytest.raises(DataError) as info:
        hotpotqa.load(str(path))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"hotpot.json row 3 (id {rows[3]['_id']})" in message
    for part in expected:
        assert part in message


def test_row_without_id_or_not_an_object_is_named_by_index(tmp_path):
    rows = hotpot_rows()
    del rows[3]["_id"]
    with pytest.raises(DataError, match=r"hotpot\.json row 3: field '_id' must be a non-empty"):
        hotpotqa.load(str(write_rows(tmp_path / "hotpot.json", rows)))
    rows = hotpot_rows()
    rows[5] = ["not", "an", "object"]
    with pytest.raises(DataError, match=r"hotpot\.json row 5: must be a JSON object, got list"):
        hotpotqa.load(str(write_rows(tmp_path / "hotpot.json", rows)))


def test_truncated_json_names_file_and_position(tmp_path):
    text = HOTPOT.read_text(encoding="utf-8")[:5000]
    path = tmp_path / "cut.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(DataError) as info:
        hotpotqa.load(str(path))
    e = expected.value
    assert "cut.json" in str(info.value)
    assert f"line {e.lineno} column {e.colno} (char {e.pos})" in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"_id": "x"}', "top level must be a JSON list of examples, got dict"),
        ("", "invalid JSON"),
    ],
)
def test_file_that_is_not_a_json_list_is_an_error(tmp_path, content, match):
    path = tmp_path / "odd.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        twowiki.load(str(path))
    assert "odd.json" in str(info.value)


def test_non_utf8_file_is_a_data_error(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"question": "Caf\u00e9?"}]'.encode("latin-1"))
    with pytest.raises(DataError, match="latin1.json: not UTF-8"):
        hotpotqa.load(str(path))


def test_skip_returns_the_good_rows_and_logs_how_many_were_skipped(tmp_path, caplog):
    rows = hotpot_rows()
    del rows[3]["answer"]
    rows[6]["supporting_facts"][0][1] = 99
    path = write_rows(tmp_path / "hotpot.json", rows)
    with caplog.at_level(logging.WARNING, logger="lmcot.data"):
        examples = hotpotqa.load(str(path), on_error="skip")
    good = [row["_id"] for i, row in enumerate(rows) if i not in (3, 6)]
    assert [ex.id for ex in examples] == good
    (record,) = [r for r in caplog.records if r.name == "lmcot.data"]
    assert record.levelno == logging.WARNING
    assert "skipped 2 of 9 rows" in record.getMessage()
    assert "row 3" in record.getMessage() and "field 'answer'" in record.getMessage()


def test_limit_counts_good_rows_and_stops_reading(tmp_path, caplog):
    rows = hotpot_rows()
    rows[3]["answer"] = None
    rows[7]["answer"] = None  # beyond the limit: never read
    path = write_rows(tmp_path / "hotpot.json", rows)
    with caplog.at_level(logging.WARNING, logger="lmcot.data"):
        examples = hotpotqa.load(str(path), limit=5, on_error="skip")
    assert [ex.id for ex in examples] == [rows[i]["_id"] for i in (0, 1, 2, 4, 5)]
    assert "skipped 1 of 6 rows" in caplog.text
    assert len(hotpotqa.load(str(path), limit=3)) == 3  # raise mode: row 3 is not reached


# --- 2WikiMultiHopQA -------------------------------------------------------------------------


def test_twowiki_sample_loads_with_hotpot_row_checks():
    examples = twowiki.load(str(TWOWIKI))
    assert [ex.id for ex in examples] == TWOWIKI_IDS
    assert [ex.type for ex in examples] == ["compositional", "comparison"]
    assert [ex.answer for ex in examples] == ["20 March 851", "Phoolwari"]
    assert [ex.aliases for ex in examples] == [[], []]  # no id_aliases.json beside the sample
    assert examples[0].supporting_sentences() == [
        "He was the second son of Emperor Lothair I and Ermengarde of Tours.",
        "Ermengarde of Tours (d. 20 March 851) was the daughter of Hugh of Tours, a member of the "
        "Etichonen family.",
    ]


def _aliases_file(path: Path) -> Path:
    lines = [
        {"Q_id": "Q1", "aliases": ["unrelated"], "demonyms": []},
        {
            "Q_id": "Q7188342",
            "aliases": ["Phoolwari (film)", "Phoolwari"],
            "demonyms": ["Phulwari"],
        },
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    return path


def test_twowiki_aliases_next_to_the_file_are_attached(tmp_path):
    data = Path(shutil.copy(TWOWIKI, tmp_path / "dev.json"))
    _aliases_file(tmp_path / "id_aliases.json")
    first, second = twowiki.load(str(data))
    assert first.aliases == []  # its answer_id is null (a date)
    # aliases + demonyms, in file order, without the answer itself
    assert second.aliases == ["Phoolwari (film)", "Phulwari"]
    assert second.golds == ["Phoolwari", "Phoolwari (film)", "Phulwari"]


def test_twowiki_explicit_aliases_path(tmp_path):
    aliases = _aliases_file(tmp_path / "elsewhere.jsonl")
    assert (
        twowiki.load(str(TWOWIKI), aliases_path=str(aliases))[1].aliases[0] == "Phoolwari (film)"
    )
    with pytest.raises(ValueError, match="hub copy"):
        twowiki.load(aliases_path=str(aliases))


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", "line 2: invalid JSON"),
        ('["Q1"]', "line 2: must be a JSON object, got list"),
        ('{"aliases": []}', "line 2: field 'Q_id' must be a string, got None"),
        ('{"Q_id": "Q2", "aliases": [3]}', "line 2: field 'aliases' must be a list of strings"),
    ],
)
def test_malformed_aliases_file_names_file_line_and_field(tmp_path, line, match):
    path = tmp_path / "id_aliases.json"
    path.write_text('{"Q_id": "Q1", "aliases": [], "demonyms": []}\n' + line + "\n")
    with pytest.raises(DataError, match=match) as info:
        twowiki.load(str(TWOWIKI), aliases_path=str(path))
    assert "id_aliases.json" in str(info.value)


def test_twowiki_broken_rows(tmp_path):
    rows = json.loads(TWOWIKI.read_text(encoding="utf-8"))
    rows[1]["answer_id"] = 7188342
    path = write_rows(tmp_path / "dev.json", rows)
    with pytest.raises(
        DataError, match=rf"dev\.json row 1 \(id {TWOWIKI_IDS[1]}\): field 'answer_id'"
    ):
        twowiki.load(str(path))
    del rows[1]["question"]
    path = write_rows(tmp_path / "dev.json", rows)
    with pytest.raises(DataError, match=rf"row 1 \(id {TWOWIKI_IDS[1]}\): field 'question'"):
        twowiki.load(str(path))
    assert [ex.id for ex in twowiki.load(str(path), on_error="skip")] == TWOWIKI_IDS[:1]


# --- hub rows (no network: the rows are made by hand in the hub's schema) --------------------

HUB_HOTPOT_ROW = {
    "id": "5a8b57f25542995d1e6f1371",
    "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
    "answer": "yes",
    "type": "comparison",
    "level": "hard",
    "supporting_facts": {"title": ["Scott Derrickson", "Ed Wood"], "sent_id": [0, 0]},
    "context": {
        "title": ["Ed Wood", "Scott Derrickson"],
        "sentences": [
            ["Edward Davis Wood Jr. was an American filmmaker."],
            ["Scott Derrickson is an American director.", " He lives in Los Angeles."],
        ],
    },
}


def test_hub_row_converts_like_the_original_format():
    ex = hotpotqa.parse_hub_row(HUB_HOTPOT_ROW, "hub", 0)
    assert ex == Example(
        id="5a8b57f25542995d1e6f1371",
        question="Were Scott Derrickson and Ed Wood of the same nationality?",
        context=[
            ("Ed Wood", ["Edward Davis Wood Jr. was an American filmmaker."]),
            (
                "Scott Derrickson",
                ["Scott Derrickson is an American director.", " He lives in Los Angeles."],
            ),
        ],
        answer="yes",
        supporting_facts=[("Scott Derrickson", 0), ("Ed Wood", 0)],
        type="comparison",
    )


def test_twowiki_hub_row_with_its_column_names():
    row = {
        "_id": "a80d84e7096d11ebbdb0ac1f6bf848b6",
        "type": "comparison",
        "question": "Which film was released first, Aas Ka Panchhi or Phoolwari?",
        "context": {
            "title": ["Phoolwari", "Aas Ka Panchhi"],
            "content": [["P 1946."], ["A 1961."]],
        },
        "supporting_facts": {"title": ["Aas Ka Panchhi", "Phoolwari"], "sent_id": [0, 0]},
        "evidences": {"fact": ["Phoolwari"], "relation": ["publication date"], "entity": ["1946"]},
        "answer": "Phoolwari",
    }
    ex = hotpotqa.parse_hub_row(row, "hub", 0)
    assert ex.supporting_sentences() == ["A 1961.", "P 1946."]
    assert (ex.id, ex.answer, ex.type) == (row["_id"], "Phoolwari", "comparison")


def test_hub_row_with_columns_of_different_lengths_is_an_error():
    row = json.loads(json.dumps(HUB_HOTPOT_ROW))
    row["supporting_facts"]["sent_id"].append(1)
    with pytest.raises(
        DataError, match=r"hub row 4 \(id 5a8b.*\): field 'supporting_facts'.*\[2, 3\]"
    ):
        hotpotqa.parse_hub_row(row, "hub", 4)


def test_hub_path_of_both_loaders(monkeypatch):
    calls = []

    def fake_hub_rows(name, config, split):
        calls.append((name, config, split))
        bad = {**HUB_HOTPOT_ROW, "id": "bad", "answer": ""}
        return [HUB_HOTPOT_ROW, bad]

    monkeypatch.setattr(hotpotqa, "hub_rows", fake_hub_rows)
    monkeypatch.setattr(twowiki, "hub_rows", fake_hub_rows)
    assert [ex.id for ex in hotpotqa.load(split="train", train_limit=1)] == [HUB_HOTPOT_ROW["id"]]
    with pytest.raises(
        DataError, match=r"hotpotqa/hotpot_qa \(distractor\) split validation row 1"
    ):
        hotpotqa.load()
    assert len(twowiki.load(on_error="skip")) == 1
    assert calls == [
        ("hotpotqa/hotpot_qa", "distractor", "train"),
        ("hotpotqa/hotpot_qa", "distractor", "validation"),
        ("ohjoonhee/2WikiMultihopQA", None, "validation"),
    ]


# --- configs ---------------------------------------------------------------------------------


def data_cfg(name: str, **root):
    """The ``data`` node as the root config would hold it (``seed`` lives at the root)."""
    cfg = OmegaConf.create({"seed": 0, **root, "data": OmegaConf.load(REPO / "conf/data" / name)})
    return cfg.data


def test_configs_instantiate_to_lists_of_examples():
    examples = instantiate(data_cfg("synthetic.yaml", seed=7), num_examples=16)
    assert examples == synthetic.load(16, seed=7)
    hotpot = instantiate(data_cfg("hotpotqa.yaml"), path=str(HOTPOT), limit=3)
    assert [ex.id for ex in hotpot] == [row["_id"] for row in hotpot_rows()[:3]]
    assert [ex.id for ex in instantiate(data_cfg("2wikimultihopqa.yaml"), path=str(TWOWIKI))] == (
        TWOWIKI_IDS
    )


def test_config_keys_match_the_contract():
    keys = {"_target_", "path", "split", "limit", "on_error", "train_path", "train_limit"}
    assert set(data_cfg("hotpotqa.yaml")) == keys
    assert set(data_cfg("2wikimultihopqa.yaml")) == keys | {"aliases_path"}
    synthetic_cfg = data_cfg("synthetic.yaml", seed=5)
    assert set(synthetic_cfg) == {
        "_target_", "split", "num_examples", "seed", "limit", "num_distractors", "num_train"
    }  # fmt: skip
    assert (synthetic_cfg.seed, synthetic_cfg.num_examples, synthetic_cfg.limit) == (5, 40, None)


def test_training_split_reads_its_own_file(tmp_path):
    train = tmp_path / "train.json"
    train.write_text(json.dumps(json.loads(HOTPOT.read_text())[5:8]))
    evaluation = hotpotqa.load(path=HOTPOT, limit=2)
    training = hotpotqa.load(path=HOTPOT, limit=2, split="train", train_path=train)
    assert len(evaluation) == 2 and len(training) == 3
    assert not {ex.id for ex in evaluation} & {ex.id for ex in training}
    with pytest.raises(ValueError, match="data.train_path"):
        hotpotqa.load(path=HOTPOT, split="train")  # never silently train on the evaluation file


def test_synthetic_generation_terminates_for_thousands_of_indices():
    # index 1_000_069 (train split, seed 0) once looped forever: last name "Res" vs "Press"
    assert len(synthetic.load(split="train", num_train=3000)) == 3000
    assert len(synthetic.load(num_examples=3000, seed=1)) == 3000


def test_synthetic_training_split_is_disjoint_from_evaluation():
    train = synthetic.load(num_examples=50, split="train", num_train=50)
    evaluation = synthetic.load(num_examples=50)
    assert len(train) == 50 and train[0].id == "syn-train-000000"
    assert not {ex.question for ex in train} & {ex.question for ex in evaluation}


def test_synthetic_dev_split_is_disjoint_from_training_and_evaluation():
    """Settings are chosen on dev: it must share no question with either split."""
    dev = synthetic.load(num_examples=50, split="dev")
    train = synthetic.load(split="train", num_train=3000)
    evaluation = synthetic.load(num_examples=3000)
    assert len(dev) == 50 and dev[0].id == "syn-dev-000000"
    assert dev == synthetic.load(num_examples=50, split="dev")
    questions = {ex.question for ex in dev}
    assert not questions & {ex.question for ex in train + evaluation}
    assert {ex.type for ex in dev} == {ex.type for ex in evaluation[:50]}  # same distribution
    with pytest.raises(ValueError, match="validation|train|dev"):
        synthetic.load(split="test")


# --- synthetic generator ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated() -> list[Example]:
    return synthetic.load(num_examples=200, seed=0)


def test_synthetic_is_deterministic_and_seed_sensitive(generated):
    assert synthetic.load(num_examples=200, seed=0) == generated
    other = synthetic.load(num_examples=200, seed=1)
    assert sum(a.question != b.question for a, b in zip(generated, other, strict=True)) > 190
    # example i depends only on (seed, i): fewer examples or a limit only cut the list
    assert synthetic.load(10, seed=0) == synthetic.load(50, seed=0, limit=10) == generated[:10]
    assert [ex.id for ex in generated[:3]] == ["syn-000000", "syn-000001", "syn-000002"]
    assert len({ex.id for ex in generated}) == 200


def test_synthetic_rows_pass_the_hotpotqa_checks(generated):
    # every supporting fact names a context title and an in-range sentence; titles are unique
    for i, ex in enumerate(generated):
        row = {
            "_id": ex.id,
            "question": ex.question,
            "answer": ex.answer,
            "type": ex.type,
            "context": [[title, sentences] for title, sentences in ex.context],
            "supporting_facts": [list(fact) for fact in ex.supporting_facts],
        }
        assert hotpotqa.parse_row(row, "synthetic", i) == ex
        assert len({title for title, _ in ex.context}) == len(ex.context)
        assert len(ex.supporting_facts) == 2 and len({t for t, _ in ex.supporting_facts}) == 2


def test_synthetic_types_and_yes_no_are_balanced(generated):
    assert collections.Counter(ex.type for ex in generated) == {"bridge": 100, "comparison": 100}
    answers = collections.Counter(ex.answer for ex in generated)
    assert answers["yes"] == answers["no"] == 25


def test_synthetic_answers_need_both_gold_paragraphs(generated):
    suffixes = {suffix for _, suffix in synthetic.ORG_KINDS}
    for ex in generated:
        gold_titles = [title for title, _ in ex.supporting_facts]
        hop1, hop2 = (" ".join(dict(ex.context)[title]) for title in gold_titles)
        others = [" ".join(s) for title, s in ex.context if title not in gold_titles]
        if ex.type == "bridge":
            assert gold_titles[0] in ex.question and ex.answer not in ex.question, ex
            # the answer is a span of hop 2 (its supporting sentence), in no other paragraph ...
            assert ex.answer in ex.supporting_sentences()[1], ex
            assert not any(ex.answer in text for text in [hop1, *others]), ex
            # ... and hop 2 never names the question's entity, so hop 1 must be read to find it
            names = [word for word in gold_titles[0].split() if word not in suffixes]
            assert not any(name in hop2 for name in names), ex
        elif ex.answer in ("yes", "no"):
            assert "same" in ex.question
        else:  # the earlier of the two compared entities, both named in the question
            assert ex.answer in gold_titles and all(t in ex.question for t in gold_titles), ex


def test_synthetic_distractors_look_like_the_gold_paragraphs(generated):
    def kind(text: str) -> str:
        return "person" if "born" in text.lower() else "company"

    for ex in generated:
        assert len(ex.context) == 4  # 2 gold + num_distractors=2
        gold_titles = [title for title, _ in ex.supporting_facts]
        paragraphs = dict(ex.context)
        distractors = {kind(" ".join(s)) for title, s in ex.context if title not in gold_titles}
        hop2 = kind(" ".join(paragraphs[gold_titles[1]]))
        if ex.type == "bridge":
            # a parallel chain: a rival of the answer paragraph, and its link
            assert distractors == {kind(" ".join(paragraphs[t])) for t in gold_titles}, ex
        else:
            assert distractors == {hop2}, ex
    # gold paragraphs are shuffled among the distractors
    first_gold = {[t for t, _ in ex.context].index(ex.supporting_facts[0][0]) for ex in generated}
    assert first_gold == {0, 1, 2, 3}


@pytest.mark.parametrize("num_distractors", [0, 1, 5, 8])
def test_synthetic_num_distractors(num_distractors):
    for ex in synthetic.load(16, seed=2, num_distractors=num_distractors):
        assert len(ex.context) == 2 + num_distractors
        assert all(ex.supporting_sentences())


def test_synthetic_contexts_are_short(generated):
    # ~1.6 SmolLM2 tokens per word here: 80 words is about 150 tokens
    words = [len(ex.context_text().split()) for ex in generated]
    assert max(words) <= 80 and sum(words) / len(words) <= 60


@pytest.mark.parametrize(
    "kwargs",
    [{"num_distractors": -1}, {"num_distractors": 9}, {"num_examples": "3"}, {"limit": -2}],
)
def test_synthetic_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic.load(**kwargs)
