"""Read-only and full disks: an error naming the directory before any work where it can be
checked, and no corrupted artifact where the disk fills up mid-write."""

import errno
import json
import os
import subprocess
import sys

import pytest
from conftest import compose_cfg
from harness import REPO, env
from hydra.utils import instantiate

import lmcot.artifacts
import lmcot.export
import lmcot.lm.hf
import lmcot.results
import lmcot.teacher
from lmcot.artifacts import artifact
from lmcot.data.synthetic import load as synthetic
from lmcot.methods import Prediction
from lmcot.teacher import RationaleStore, SupportingFactsTeacher, fill
from train import train

pytestmark = pytest.mark.faults
TINY = ["debug=smoke", "student=tiny_llama"]


def refuse(*args, **kwargs):
    raise AssertionError("work started before the directories were checked")


@pytest.fixture
def no_work(monkeypatch):
    monkeypatch.setattr(lmcot.lm.hf.HFModel, "__init__", refuse)
    monkeypatch.setattr("lmcot.data.synthetic.load", refuse)


def test_cache_dir_under_a_file_fails_at_start(tmp_path, no_work):
    (tmp_path / "afile").write_text("")
    cache = tmp_path / "afile" / "cache"
    cfg = compose_cfg(tmp_path, *TINY, f"paths.cache_dir={cache}", config_name="train")
    with pytest.raises(OSError, match=f"paths.cache_dir={cache} cannot be written"):
        train(cfg)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o555")
def test_read_only_output_dir_fails_at_start(tmp_path, no_work):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        cfg = compose_cfg(tmp_path, *TINY, f"paths.output_dir={out}", config_name="train")
        with pytest.raises(OSError, match=f"paths.output_dir={out} cannot be written"):
            train(cfg)
    finally:
        out.chmod(0o755)


def test_full_disk_is_reported_at_start(tmp_path, no_work, monkeypatch):
    real_fsync = os.fsync

    def full(fd):  # the probe's block does not fit
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    cfg = compose_cfg(tmp_path, *TINY, config_name="train")
    with pytest.raises(
        OSError, match=r"paths.output_dir=.* cannot be written \(the disk is full\)"
    ):
        train(cfg)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not list(tmp_path.rglob(".lmcot-write-probe-*"))


def test_run_dir_under_a_file_names_it(tmp_path):
    """Hydra makes the run directory before any of our code runs: its own error names it."""
    (tmp_path / "afile").write_text("")
    run_dir, cache = tmp_path / "afile" / "run", tmp_path / "c"
    cmd = [sys.executable, str(REPO / "evaluate.py"), "debug=smoke", f"hydra.run.dir={run_dir}",
           f"paths.cache_dir={cache}"]  # fmt: skip
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert str(tmp_path / "afile") in done.stdout + done.stderr
    assert not (tmp_path / "c").exists()  # nothing started


def cut_writes(monkeypatch, module, after_bytes: int):
    """``open`` in ``module`` gives files whose writes stop after ``after_bytes`` with ENOSPC,
    the way a filling disk cuts a write: what fit is on disk, the rest raises."""
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.left = f, after_bytes

        def write(self, text):
            self.f.write(text[: self.left])
            self.f.flush()
            if len(text) > self.left:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(text)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def opener(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Full(f) if "r" not in mode else f

    monkeypatch.setattr(module, "open", opener, raising=False)


def test_full_disk_during_a_teacher_append_keeps_earlier_rows(tmp_path, monkeypatch):
    examples = synthetic(num_examples=6, split="train", num_train=6)
    store = RationaleStore(tmp_path / "r.jsonl")
    teacher = SupportingFactsTeacher(chunk_size=2)
    fill(store, teacher, examples[:4])
    before = (tmp_path / "r.jsonl").read_bytes()
    cut_writes(monkeypatch, lmcot.teacher, after_bytes=50)  # mid-row of the next chunk
    with pytest.raises(OSError, match="No space left"):
        fill(store, teacher, examples)
    monkeypatch.undo()
    assert (tmp_path / "r.jsonl").read_bytes().startswith(before)
    again = RationaleStore(tmp_path / "r.jsonl")  # drops the cut row, keeps the rest
    assert again.done_ids() == {ex.id for ex in examples[:4]}
    fill(again, teacher, examples)
    rows = again.rows()
    assert sorted(r["id"] for r in rows) == sorted(ex.id for ex in examples)


def test_full_disk_during_export_leaves_no_usable_student(tmp_path, monkeypatch):
    cfg = compose_cfg(tmp_path, *TINY, config_name="train")
    student = instantiate(cfg.student)
    art = artifact(cfg, "distill")
    real_save = student.model.save_pretrained

    def save_then_fill(path, **kw):
        real_save(path, **kw)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(student.model, "save_pretrained", save_then_fill)
    with pytest.raises(OSError):
        lmcot.export.export(student, art, {"m": 1.0})
    assert not art.done and not art.student.exists()
    monkeypatch.setattr(student.model, "save_pretrained", real_save)
    lmcot.export.export(student, art, {"m": 1.0})
    assert art.done


def test_full_disk_while_writing_results_keeps_the_previous_ones(tmp_path, monkeypatch):
    pred = Prediction("1", "standard", None, prediction="a", gold=["a"], em=1.0, f1=1.0)
    lmcot.results.write(tmp_path, {"methods": {"standard": {"em": 1.0}}}, [pred])
    cut_writes(monkeypatch, lmcot.artifacts, after_bytes=10)  # where results are written
    with pytest.raises(OSError, match="No space left"):
        lmcot.results.write(tmp_path, {"methods": {"standard": {"em": 0.0}}}, [pred, pred])
    assert json.loads((tmp_path / "results.json").read_text())["methods"]["standard"]["em"] == 1.0
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl", "results.json"]
