"""Ranks other than zero write nothing: in-process, with Lightning's rank set as a launcher sets
it (the 2-process run is tests/faults/test_ddp.py, slow)."""

import pytest
from conftest import compose_cfg
from pytorch_lightning.utilities import rank_zero_only

from lmcot.artifacts import artifact
from lmcot.evaluate import evaluate
from lmcot.teacher import run_teacher, teacher_path

pytestmark = pytest.mark.faults
TINY = ["debug=smoke", "student=tiny_llama", "data.num_train=4"]


@pytest.fixture
def rank_one(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)


def test_other_ranks_do_not_evaluate(tmp_path, rank_one):
    cfg = compose_cfg(tmp_path, *TINY)
    assert evaluate(cfg) == {}
    assert not list(tmp_path.rglob("*.json*"))


def test_other_ranks_read_the_teacher_file_and_never_write_it(tmp_path, monkeypatch):
    cfg = compose_cfg(tmp_path, *TINY, config_name="train")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with pytest.raises(RuntimeError, match=r"lacks 4 of 4 training questions, and only rank zero"):
        run_teacher(cfg)
    assert not (tmp_path / "cache" / "teacher").exists()  # no lock, no manifest, no rows
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    run_teacher(cfg)
    before = teacher_path(cfg).read_bytes()
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert run_teacher(cfg) == {}
    assert teacher_path(cfg).read_bytes() == before


def test_other_ranks_take_no_artifact_lock(tmp_path, rank_one):
    art = artifact(compose_cfg(tmp_path, *TINY, config_name="train"), "teacher")
    with art.lock():
        art.write_manifest()
    assert not art.dir.parent.exists()
