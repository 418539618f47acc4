"""Library noise off the terminal, one message at a time.

A run's terminal should hold its stages, progress (with rate and ETA), the result tables and
where files went. The libraries under it add adverts, device banners, deprecations that only
their own maintainers can act on, and warnings about choices lmcot makes on purpose. Each is
listed here with where it comes from and why it says nothing about the run; it is dropped by
its message (a warning also by its category, a log record also by its logger), so any other
warning of the same category and any other record of the same logger still shows.

:func:`quiet_libraries` installs the filters; :func:`lmcot.tasks.task_wrapper` calls it at the
start of every entry point's job, after Hydra has set up logging.
"""

import logging
import re
import warnings

# (category, regex matched at the start of the message) of Python warnings
WARNINGS = (
    # torch.utils._pytree deprecates LeafSpec; Lightning's utilities/_pytree.py still builds one
    # in every fit (Lightning's code, not ours)
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # transformers' PreTrainedModel.is_gradient_checkpointing, renamed; peft's PeftModel reads it
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # Lightning's fit loop (PossibleUserWarning): the refine stage keeps the student in eval
    # mode on purpose, so that dropout is off (lmcot/refine.py)
    (UserWarning, r"Found \d+ module\(s\) in eval mode at the start of training"),
    # Lightning's ModelCheckpoint under manual optimisation (refine's `last` checkpoint): it holds
    # the state after the step, which is what resuming from it needs
    (
        UserWarning,
        r"Using ModelCheckpoint with manual optimization and every_n_train_steps, but no",
    ),
)

# logger -> regexes matched at the start of a record's message; other records of it still show
RECORDS = {
    # Lightning's rank_zero_info, at every Trainer and every fit
    "pytorch_lightning.utilities.rank_zero": (
        r"💡 Tip: For seamless cloud",  # adverts for litlogger and litmodels
        r"(GPU|TPU|HPU) available: ",  # the device banner; a GPU left unused is still warned of
        r"Using (16bit|bfloat16) Automatic Mixed Precision",  # results.json records `precision`
        r"Loading `train_dataloader` to estimate number of stepping batches",
        r"`Trainer.fit` stopped: `max_(epochs|steps)=",  # the normal end of a stage's training
    ),
    # Lightning's CUDA accelerator, at every Trainer on a GPU
    "pytorch_lightning.accelerators.cuda": (r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: ",),
    # sentence-transformers, each time the embedding reward scorer loads MiniLM
    "sentence_transformers.base.model": (r"Loading SentenceTransformer model from ",),
}


class DropMessages(logging.Filter):
    """Drops the records whose message starts with a match of one of ``patterns``."""

    def __init__(self, patterns: tuple[str, ...]):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.match(record.getMessage()) is None


def quiet_libraries() -> None:
    """Filter the messages of :data:`WARNINGS` and :data:`RECORDS`; calling it again adds none."""
    for category, message in WARNINGS:  # an identical filter is replaced, not repeated
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, patterns in RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(patterns))
