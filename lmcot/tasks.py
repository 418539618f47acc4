"""What every entry point does around its stage: seed, log a crash, say where outputs went."""

import functools
import logging

from omegaconf import DictConfig
from pytorch_lightning import seed_everything

log = logging.getLogger(__name__)


def task_wrapper(task):
    """Seed from ``cfg.seed``, run ``task(cfg)``, log any exception, always print the output dir.

    The exception is re-raised, so a single run fails loudly; in a multirun Hydra records the
    failed job and the output dir says where its partial artifacts (cache, JSONL) are.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig):
        seed_everything(cfg.seed, workers=True, verbose=False)
        try:
            return task(cfg)
        except Exception:
            log.exception("%s failed", task.__name__)
            raise
        finally:
            log.info("output dir: %s", cfg.paths.output_dir)

    return wrapped
