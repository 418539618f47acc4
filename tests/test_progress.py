"""Progress off a terminal goes to the log (count, elapsed < ETA, rate); on one, to a bar."""

import io
import logging
import sys
from types import SimpleNamespace

import pytest

from lmcot import progress as progress_module
from lmcot.loggers import LogProgress
from lmcot.progress import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lmcot.progress"]


def run(total: int, desc: str = "teacher") -> None:
    with progress(total, desc, "question") as bar:
        for _ in range(total):
            bar.update(1)


def test_a_loop_longer_than_the_interval_logs_count_eta_and_rate(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    run(3)
    lines = logged(caplog)
    assert lines[0] == "teacher: 0/3 [00:00<?, ?question/s]"
    assert lines[-1].startswith("teacher: 3/3 [00:00<00:00, ") and "question" in lines[-1]


def test_a_short_loop_logs_nothing(caplog):
    caplog.set_level(logging.INFO)
    run(3)  # well under LOG_EVERY_S: every model call would otherwise add lines
    assert logged(caplog) == []


def test_tqdm_disable_silences_the_log_too(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    run(3)
    assert logged(caplog) == []


def test_a_terminal_gets_a_bar_and_no_log_lines(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(sys, "stderr", Terminal())
    run(3)
    assert logged(caplog) == [] and "teacher: " in sys.stderr.getvalue()


def trainer(**kw) -> SimpleNamespace:
    fields = dict(num_training_batches=5, max_epochs=3, current_epoch=0, is_global_zero=True,
                  progress_bar_metrics={"train/loss": 0.25})  # fmt: skip
    return SimpleNamespace(**(fields | kw))


@pytest.mark.parametrize(
    "kw,start,total",
    [
        ({}, 0, 15),
        ({"current_epoch": 2}, 10, 15),  # resumed in its third epoch
        ({"max_epochs": -1}, 0, None),  # unbounded: a count and a rate, no ETA
    ],
)
def test_training_progress_counts_batches_over_all_epochs(caplog, monkeypatch, kw, start, total):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    callback, t = LogProgress("distill"), trainer(**kw)
    callback.on_train_start(t, None)
    assert (callback.bar.n, callback.bar.total) == (start, total)
    callback.on_train_batch_end(t, None, None, None, 0)
    callback.on_train_end(t, None)
    assert callback.bar is None
    assert logged(caplog)[-1].startswith(f"distill: {start + 1}")
    assert "train/loss=0.25" in logged(caplog)[-1]


def test_training_progress_stays_off_a_terminal_and_off_other_ranks(monkeypatch):
    callback = LogProgress("refine", unit="step")
    callback.on_train_start(trainer(is_global_zero=False), None)
    assert callback.bar is None
    monkeypatch.setattr(sys, "stderr", Terminal())  # Lightning draws its own bar there
    callback.on_train_start(trainer(), None)
    assert callback.bar is None
