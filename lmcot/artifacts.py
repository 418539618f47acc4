"""Where each stage keeps what it made, keyed by the config that made it.

Runs get fresh timestamped Hydra directories, but a stage's artifacts (teacher JSONL, student
checkpoints) live under ``paths.cache_dir`` in a directory named by a hash of the config nodes
that determine them. The same command therefore finds and reuses them, and a killed multirun
restarted with the same command continues where it stopped.
"""

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_hash(*nodes) -> str:
    """First 12 hex digits of the SHA-256 of ``nodes`` (config nodes resolved, or plain values).

    >>> config_hash({"lr": 1e-4}, 3) == config_hash(OmegaConf.create({"lr": 1e-4}), 3)
    True
    """
    plain = [
        OmegaConf.to_container(n, resolve=True) if OmegaConf.is_config(n) else n for n in nodes
    ]
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def distill_dir(cfg: DictConfig) -> Path:
    """Checkpoints and exported student of the distillation stage for this config."""
    from lmcot.teacher import teacher_path  # the student depends on its teacher's rationales

    digest = config_hash(str(teacher_path(cfg)), cfg.student, cfg.distill, cfg.trainer, cfg.seed)
    return Path(cfg.paths.cache_dir) / "distill" / digest


def refine_dir(cfg: DictConfig) -> Path:
    """Checkpoints and exported student of the RL refinement stage for this config."""
    digest = config_hash(distill_dir(cfg).name, cfg.refine, cfg.reward, cfg.seed)
    return Path(cfg.paths.cache_dir) / "refine" / digest


# stage name -> the directory holding that stage's exported student (``<dir>/student``)
STUDENT_DIRS = {"distill": distill_dir, "refine": refine_dir}


def student_dir(cfg: DictConfig, stage: str) -> Path:
    """The exported (plain ``from_pretrained``) student that ``stage`` produced."""
    if stage not in STUDENT_DIRS:
        raise ValueError(f"no stage {stage!r} produces a student; known: {sorted(STUDENT_DIRS)}")
    return STUDENT_DIRS[stage](cfg) / "student"
