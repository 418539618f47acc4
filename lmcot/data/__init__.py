"""Data sources: original HotpotQA / 2WikiMultiHopQA files, the hub, the synthetic generator."""

from lmcot.data.example import Example
from lmcot.data.validate import DataError

__all__ = ["DataError", "Example"]
