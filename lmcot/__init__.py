"""lmcot: LM-guided chain-of-thought (Lee et al., LREC-COLING 2024) as a research toolkit."""

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _gguf_model(package: str, gguf_file: str, model_dir: str) -> str:
    from lmcot.lm.gguf import dequantized_copy  # imports transformers: only when resolved

    return dequantized_copy(package, gguf_file, model_dir)


# configs name shipped offline models as ${gguf_model:PACKAGE,FILE,${paths.model_dir}}
OmegaConf.register_new_resolver("gguf_model", _gguf_model, replace=True)
