"""The console the run's tables print to.

Off a terminal (``train.log``, a SLURM ``.out``, ``nohup``) rich assumes 80 columns and wraps
a cell such as ``0.350 [0.200, 0.500]`` over two lines; a log should hold each row on one line,
so there the console is as wide as a table needs (up to :data:`LOG_WIDTH`). A terminal keeps
its own width.
"""

from rich.console import Console

LOG_WIDTH = 240  # columns of a table written to a file; wider rows still wrap


def console() -> Console:
    """A console for printing tables: the terminal's, or a wide one off a terminal."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=LOG_WIDTH)
