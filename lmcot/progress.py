"""Progress with rate and ETA on every loop a user waits on, on a terminal and in a log file.

On a terminal: tqdm bars (Lightning draws its own over training). Off a terminal (a SLURM
``.out`` file, ``nohup``, CI) a bar is redrawn with carriage returns nobody sees and Lightning's
rich bar draws nothing, so hours of training would leave no trace. There the same tqdm state
(count, elapsed, ETA, rate) goes to the log as a line at most every :data:`LOG_EVERY_S` seconds
and once more at the end, for loops that last longer than that (shorter ones stay silent, or
every model call would add lines); Hydra writes it to the run's ``train.log`` too. Training
loops get the same through :class:`lmcot.loggers.LogProgress`.
"""

import logging
import os
import sys

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_EVERY_S = 30.0  # seconds between progress lines in a log
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def on_terminal() -> bool:
    """Whether a person watches stderr (where tqdm and Lightning draw their bars)."""
    return sys.stderr.isatty()


class _LogLines:
    """A file for tqdm that turns each redraw into a log record; blank redraws, and a redraw at
    the count of the last line (a bar closed right after it printed), are dropped."""

    def __init__(self):
        self.last_count = ""

    def write(self, text: str) -> int:
        line = text.strip("\r\n ")
        count = line.split(" [", 1)[0]  # "desc: n/total"
        if line and count != self.last_count:
            log.info(line)
            self.last_count = count
        return len(text)

    def flush(self) -> None:
        pass


def progress(total: int | None, desc: str, unit: str, initial: int = 0) -> tqdm:
    """A progress bar over ``total`` units: drawn on a terminal, logged off one.

    Quiet when there is nothing to do, or with ``TQDM_DISABLE=1`` (tqdm's own switch, which it
    ignores once ``disable`` is passed, so it is read here).
    """
    if total == initial or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true"):
        return tqdm(total=total, initial=initial, disable=True)
    if on_terminal():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False)
    # miniters=1: tqdm's monitor thread re-prints a bar with adaptive miniters whenever 10 s
    # pass without a print, which in a log repeats the last line with nothing new
    return tqdm(
        total=total, initial=initial, desc=desc, unit=unit, file=_LogLines(), disable=False,
        position=0, delay=LOG_EVERY_S, mininterval=LOG_EVERY_S, miniters=1, bar_format=LOG_FORMAT,
    )  # fmt: skip
