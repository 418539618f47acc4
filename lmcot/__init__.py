"""lmcot: LM-guided chain-of-thought (Lee et al., LREC-COLING 2024) as a research toolkit."""

__version__ = "0.1.0"
