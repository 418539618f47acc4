"""Fuzzed HotpotQA / 2WikiMultiHopQA files: a malformed row gives a ``DataError`` naming the file,
the row and the field, never another exception; ``on_error=skip`` drops it and says so.

Rows are real ones (tests/fixtures/) with hypothesis-drawn damage: a key deleted or given a
value of another JSON type, a context paragraph or supporting fact replaced, a sentence index
moved anywhere; and whole files cut or with bytes replaced (invalid JSON, invalid UTF-8).
"""

import copy
import json
import logging

import pytest
from conftest import HOTPOT_SAMPLE, TWOWIKI_SAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmcot.data import hotpotqa, twowiki
from lmcot.data.validate import DataError

pytestmark = pytest.mark.faults
SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
LOADERS = {"hotpotqa": (hotpotqa.load, HOTPOT_SAMPLE), "2wiki": (twowiki.load, TWOWIKI_SAMPLE)}
KEYS = ["_id", "question", "answer", "type", "context", "supporting_facts", "answer_id"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip


@st.composite
def damaged(draw, row: dict) -> dict:
    """``row`` (under a fresh id) with one to three drawn kinds of damage."""
    row = copy.deepcopy(row) | {"_id": "fuzzed-row"}
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "retype", "paragraph", "fact", "sent_id"]))
        key = draw(st.sampled_from(KEYS))
        if kind == "delete":
            row.pop(key, None)
        elif kind == "retype":
            row[key] = draw(json_values)
        elif kind == "paragraph" and isinstance(row.get("context"), list) and row["context"]:
            i = draw(st.integers(0, len(row["context"]) - 1))
            row["context"][i] = draw(json_values)
        elif kind in ("fact", "sent_id") and isinstance(row.get("supporting_facts"), list):
            facts = row["supporting_facts"]
            if facts:
                k = draw(st.integers(0, len(facts) - 1))
                if kind == "fact":
                    facts[k] = draw(json_values)
                elif isinstance(facts[k], list) and len(facts[k]) == 2:
                    facts[k][1] = draw(st.integers(-5, 50) | json_values)
    return row


def write(tmp_path, rows) -> str:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.mark.parametrize("name", list(LOADERS))
def test_damaged_rows_give_data_errors_naming_file_row_and_field(tmp_path, name):
    load, sample = LOADERS[name]
    good = json.loads(sample.read_text())[0]

    @SETTINGS
    @given(row=damaged(good))
    def check(row):
        path = write(tmp_path, [good, row])
        try:
            examples = load(path=path)
        except DataError as e:
            assert f"{path} row 1" in str(e) and "must be" in str(e), e
            return
        assert [ex.id for ex in examples] == [good["_id"], "fuzzed-row"]  # still valid

    check()


@pytest.mark.parametrize("name", list(LOADERS))
def test_skip_drops_damaged_rows_and_counts_them(tmp_path, name, caplog):
    load, sample = LOADERS[name]
    good, other = json.loads(sample.read_text())[:2]

    @SETTINGS
    @given(row=damaged(good))
    def check(row):
        path = write(tmp_path, [good, row, other])
        try:
            load(path=path)
            valid = True
        except DataError:
            valid = False
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lmcot.data"):
            examples = load(path=path, on_error="skip")
        assert len(examples) == (3 if valid else 2)
        if not valid:
            assert f"{path}: skipped 1 of 3 rows read" in caplog.text

    check()


@pytest.mark.parametrize("name", list(LOADERS))
def test_damaged_bytes_give_data_errors(tmp_path, name):
    load, sample = LOADERS[name]
    data = sample.read_bytes()

    @SETTINGS
    @given(cut=st.integers(0, len(data)), at=st.integers(0, len(data) - 1),
           junk=st.binary(min_size=1, max_size=4))  # fmt: skip
    def check(cut, at, junk):
        path = tmp_path / "data.json"
        for broken in (data[:cut], data[:at] + junk + data[at + len(junk) :]):
            path.write_bytes(broken)
            try:
                load(path=str(path))
            except DataError as e:
                assert str(path) in str(e)

    check()


def test_aliases_file_with_bad_bytes_gives_a_data_error(tmp_path):
    (tmp_path / "aliases.json").write_bytes(b'{"Q_id": "Q1", "aliases": ["caf\xe9"]}\n')
    with pytest.raises(DataError, match=r"aliases.json line 1: not UTF-8"):
        twowiki.read_aliases(tmp_path / "aliases.json")
