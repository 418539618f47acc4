"""Train the small LM and evaluate it: the stages of ``stages``, in order.

python train.py
python train.py data=hotpotqa student=flan_t5_large reader=openai reader.model=...
"""

import hydra
from omegaconf import DictConfig

from lmcot import memory, preflight
from lmcot.distill import run_distill
from lmcot.evaluate import evaluate
from lmcot.refine import run_refine
from lmcot.tasks import task_wrapper
from lmcot.teacher import run_teacher

STAGES = {
    "teacher": run_teacher,
    "distill": run_distill,
    "refine": run_refine,
    "evaluate": evaluate,
}


def train(cfg: DictConfig) -> dict[str, float]:
    preflight.check(cfg, STAGES)  # bad keys and unwritable dirs fail here, before any model
    metrics = {}
    for stage in cfg.stages:  # each stage is idempotent and reuses its artifacts
        metrics |= STAGES[stage](cfg)
        memory.release()  # what the stage freed goes back to the OS before the next one
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = task_wrapper(train)(cfg) or {}  # a failed multirun job returns None
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
