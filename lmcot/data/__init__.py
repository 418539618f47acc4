"""Data sources: original HotpotQA / 2WikiMultiHopQA files, the hub, the synthetic generator."""

from lmcot.data.example import Example

__all__ = ["Example"]
