"""Experiment loggers: built from ``conf/logger/``, and never allowed to kill a run; and the
training progress a log file gets when no terminal shows Lightning's bar.

Loggers are Lightning's. The training stages hand them to the ``Trainer`` wrapped in
:class:`GuardedLogger`, since the Trainer calls them inside ``fit`` where an exception would end
training; the evaluation stage calls them directly through ``log_safely``.
"""

import logging
import math
import os
import sys

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from tqdm import tqdm

from lmcot.progress import on_terminal, progress

log = logging.getLogger(__name__)


def wandb_logger(tags: list[str] | tuple = (), quiet: bool = True, **kwargs) -> WandbLogger:
    """A ``WandbLogger`` that stays offline unless the environment asks for online.

    Online needs ``WANDB_MODE=online`` or an API key in ``WANDB_API_KEY``; the key is read by
    wandb from the environment and never passes through our config. The run is tagged with
    the config's group choices (``student=flan_t5_large``, ...), so W&B's UI filters by them.
    ``quiet``: wandb's own switch for its non-essential output (version banner, the history and
    summary panel at the end); where the run's files go, and its warnings, still show.
    """
    if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
        # wandb's argument, not the environment variable: with WANDB_MODE=offline in the
        # environment, importing transformers' integrations prints "Running in WANDB offline mode"
        kwargs.setdefault("mode", "offline")
    if quiet:
        kwargs.setdefault("settings", {"quiet": True})
    logger = WandbLogger(tags=[*tags, *choice_tags()], **kwargs)
    # Lightning passes anonymous=None to wandb.init, which wandb warns is a setting without
    # effect; left out, wandb.init gets what it would get from a plain call
    init = getattr(logger, "_wandb_init", {})
    if "anonymous" in init and init["anonymous"] is None:
        del init["anonymous"]
    return logger


def choice_tags() -> list[str]:
    """``group=choice`` for every config group this run chose (Hydra's own groups left out)."""
    if not HydraConfig.initialized():
        return []
    choices = HydraConfig.get().runtime.choices
    return [f"{group}={choice}" for group, choice in choices.items()
            if choice and not group.startswith("hydra")]  # fmt: skip


def hparams(cfg: DictConfig) -> dict:
    """The resolved run config as a plain dict, without Hydra's own node (tests compose it in).

    Secrets never appear here: configs only name environment variables, never hold keys.
    """
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items_ex(resolve=False)
        if key != "hydra"
    }


def instantiate_loggers(cfg: DictConfig | None, stage: str | None = None) -> list[Logger]:
    """Build every logger of the ``logger`` group; one that fails to start is skipped.

    ``stage`` fills the ``job_type`` of loggers that have one (W&B: one run per stage of a job).
    """
    finish_open_wandb_run()
    loggers = []
    for name, node in (cfg or {}).items():
        try:
            job_type = {"job_type": stage} if "job_type" in node else {}
            loggers.append(instantiate(node, **job_type))
        except Exception as e:  # a logger is never worth losing a run for
            log.warning("logger %s could not start and is skipped: %s", name, e)
    return loggers


def finish_open_wandb_run() -> None:
    """Finish a W&B run an earlier stage of this process left open (the training stages leave
    theirs to the Trainer, which never finishes it), so each stage logs to its own run rather
    than Lightning's ``WandbLogger`` reusing the open one under the earlier stage's job type."""
    wandb = sys.modules.get("wandb")  # never imported: no run can be open
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish()
        except Exception as e:
            log.warning("wandb.finish of the previous stage's run failed: %s", e)


def log_safely(loggers: list[Logger], method: str, *args, **kwargs) -> None:
    """Call ``logger.<method>(*args, **kwargs)`` on every logger that has it, never raising."""
    for logger in loggers:
        fn = getattr(logger, method, None)
        if fn is None:
            continue
        try:
            fn(*args, **kwargs)
        except Exception as e:
            log.warning("%s.%s failed and is skipped: %s", type(logger).__name__, method, e)


class GuardedLogger(Logger):
    """A Lightning logger that delegates to ``logger`` and logs-and-skips its exceptions.

    Args:
        logger: the logger to guard (its own ``rank_zero_only`` rules still apply inside).
    """

    def __init__(self, logger: Logger):
        super().__init__()
        self.wrapped = logger

    @property
    def name(self):
        return self.wrapped.name

    @property
    def version(self):
        return self.wrapped.version

    @property
    def save_dir(self):
        return self.wrapped.save_dir

    @property
    def root_dir(self):
        return self.wrapped.root_dir

    @property
    def log_dir(self):
        return self.wrapped.log_dir

    @property
    def experiment(self):
        return self.wrapped.experiment

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        log_safely([self.wrapped], "log_metrics", metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        log_safely([self.wrapped], "log_hyperparams", params, *args, **kwargs)

    def log_graph(self, model, input_array=None) -> None:
        log_safely([self.wrapped], "log_graph", model, input_array)

    def save(self) -> None:
        log_safely([self.wrapped], "save")

    def finalize(self, status: str) -> None:
        log_safely([self.wrapped], "finalize", status)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        log_safely([self.wrapped], "after_save_checkpoint", checkpoint_callback)


def guarded(loggers: list[Logger]) -> list[Logger]:
    """``loggers`` as a ``Trainer`` should get them: each wrapped in :class:`GuardedLogger`."""
    return [GuardedLogger(lg) for lg in loggers]


def finish(loggers: list[Logger]) -> None:
    """Flush and close every logger (W&B writes its offline run here)."""
    log_safely(loggers, "finalize", "success")
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        try:
            wandb.finish()
        except Exception as e:
            log.warning("wandb.finish failed: %s", e)


class LogProgress(pl.Callback):
    """Training progress of a Lightning stage in the log, when no terminal shows its bar.

    Counts training batches over all epochs (micro-batches where gradients accumulate; a resumed
    run starts where its checkpoint was; no total, so no ETA, when the epochs are unbounded),
    with the bar's metrics (e.g. the loss) as a postfix.
    """

    def __init__(self, stage: str, unit: str = "batch"):
        self.stage, self.unit = stage, unit
        self.bar: tqdm | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if on_terminal() or not trainer.is_global_zero:
            return
        per_epoch, epochs = trainer.num_training_batches, trainer.max_epochs or -1
        total = per_epoch * epochs if epochs > 0 and math.isfinite(per_epoch) else None
        done = trainer.fit_loop.epoch_loop.batch_progress.total.ready  # restored on a resume
        self.bar = progress(total, self.stage, self.unit, initial=done)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is not None:
            metrics = {k: f"{float(v):.3g}" for k, v in trainer.progress_bar_metrics.items()}
            self.bar.set_postfix(metrics, refresh=False)
            self.bar.update(1)
            if self.bar.n == self.bar.total:  # its last line: before the closing validation
                self.on_train_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)
