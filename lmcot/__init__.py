"""lmcot: LM-guided chain-of-thought (Lee et al., LREC-COLING 2024) as a research toolkit."""

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _gguf_model(package: str, gguf_file: str, model_dir: str) -> str:
    from lmcot.lm.gguf import dequantized_copy  # imports transformers: only when resolved

    return dequantized_copy(package, gguf_file, model_dir)


# configs name shipped offline models as ${gguf_model:PACKAGE,FILE,${paths.model_dir}}
OmegaConf.register_new_resolver("gguf_model", _gguf_model, replace=True)


def _job_dirname(overrides: str) -> str:
    """A sweep job's directory name from its overrides: readable, one path component.

    >>> _job_dirname("data.path=/d/dev.json,seed=1")
    'data.path=%d%dev.json,seed=1'
    """
    name = overrides.replace("/", "%") or "defaults"
    if len(name) > 200:  # file systems cap a name at 255 bytes
        import hashlib

        name = f"{name[:180]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name


# sweeps/*.yaml name each job's directory ${job_dirname:${hydra.job.override_dirname}}
OmegaConf.register_new_resolver("job_dirname", _job_dirname, replace=True)
