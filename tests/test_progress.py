"""Progress off a terminal goes to the log (count, elapsed < ETA, rate); on one, to a bar."""

import io
import logging
import sys
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

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
    assert len(lines) == 4  # closing repeats the last count: dropped


def test_a_logged_bar_prints_only_on_updates():
    """tqdm's monitor thread refreshes a bar whose adaptive ``miniters`` grew past 1 when 10 s
    pass without a print: in a log, the same count again with nothing new."""
    with progress(3, "distill", "batch") as bar:
        bar.update(1)
        assert bar.miniters == 1 and not bar.dynamic_miniters  # what the monitor checks


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


class Linear(pl.LightningModule):
    """Five batches an epoch; raises at global step ``crash_at`` (a killed run)."""

    def __init__(self, crash_at: int = -1):
        super().__init__()
        self.layer, self.crash_at = torch.nn.Linear(2, 1), crash_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.crash_at:
            raise RuntimeError("killed")
        loss = self.layer(batch).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, model, max_epochs=2):
    last = tmp_path / "last.ckpt"
    trainer = pl.Trainer(
        max_epochs=max_epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=[LogProgress("distill"), ModelCheckpoint(dirpath=tmp_path, save_top_k=0,
                                                           save_last=True, every_n_train_steps=1)],
    )  # fmt: skip
    data = DataLoader(torch.randn(5, 2), batch_size=1)
    trainer.fit(model, data, ckpt_path=last if last.exists() else None)


def test_training_progress_counts_batches_over_all_epochs_and_resumes(caplog, monkeypatch,
                                                                      tmp_path):  # fmt: skip
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    with pytest.raises(RuntimeError, match="killed"):
        fit(tmp_path, Linear(crash_at=7))
    killed = logged(caplog)
    assert killed[0] == "distill: 0/10 [00:00<?, ?batch/s]" and killed[-1].startswith(
        "distill: 7/10"
    )
    assert "train/loss=" in killed[-1]  # the bar's metrics ride along
    caplog.clear()
    fit(tmp_path, Linear())  # resumed from the last checkpoint, in its second epoch
    resumed = logged(caplog)
    assert resumed[0].startswith("distill: 7/10") and resumed[-1].startswith("distill: 10/10")


def test_unbounded_epochs_log_a_count_and_a_rate_without_eta(caplog, monkeypatch, tmp_path):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    callback = LogProgress("distill")
    trainer = SimpleNamespace(
        num_training_batches=5,
        max_epochs=-1,
        is_global_zero=True,
        progress_bar_metrics={},
        fit_loop=pl.Trainer(logger=False).fit_loop,
    )
    callback.on_train_start(trainer, None)
    assert (callback.bar.n, callback.bar.total) == (0, None)
    callback.on_train_end(trainer, None)


def test_training_progress_stays_off_a_terminal_and_off_other_ranks(monkeypatch):
    callback = LogProgress("refine", unit="step")
    callback.on_train_start(SimpleNamespace(is_global_zero=False), None)
    assert callback.bar is None
    monkeypatch.setattr(sys, "stderr", Terminal())  # Lightning draws its own bar there
    callback.on_train_start(SimpleNamespace(is_global_zero=True), None)
    assert callback.bar is None
